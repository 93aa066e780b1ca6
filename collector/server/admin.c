/*
 * admin.c - the admin API (admin.h): requests parsed with jansson, answered
 * from the control module's memory, commands answered once Kafka has them.
 * Every error is {"error": "what was wrong and what to do"}.
 */
#include "server/admin.h"

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "platform/clock.h"
#include "platform/log.h"
#include "server/collector_metrics.h"

#define ADMIN_DEFAULT_LAGGING_MS (30LL * 60 * 1000)
#define ADMIN_STORE_COMMANDS 20
#define ADMIN_MAX_WARNINGS 8

/* A command waiting for Kafka. */
struct admin_pending {
  http_exchange *exchange;
  const control *ctl;
  char admin[IDENTITY_ID_MAX + 1];
  char warnings[ADMIN_MAX_WARNINGS][300];
  size_t warning_count;
};

/* Answers `root` (taken) as JSON. */
static void admin_respond(http_exchange *exchange, int status, json_t *root, const char *extra)
{
  char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
  size_t len;

  json_decref(root);
  if (!text) {
    static const char oom[] = "{\"error\": \"collector out of memory\"}\n";
    http_exchange_respond(exchange, 503, "application/json", "Retry-After: 5\r\n", oom,
                          sizeof(oom) - 1);
    return;
  }
  len = strlen(text);
  /* json_dumps ends without a newline; curl's output reads better with one. */
  {
    char *line = realloc(text, len + 2);
    if (line) {
      text = line;
      text[len++] = '\n';
      text[len] = '\0';
    }
  }
  http_exchange_respond(exchange, status, "application/json", extra, text, len);
  free(text);
}

static void admin_error(http_exchange *exchange, int status, const char *message)
{
  /* Counted like the other refusals, under words of the admin API. */
  collector_metrics_refusal(status, status == 404   ? "admin_not_found"
                                    : status == 405 ? "method_not_allowed"
                                    : status == 409 ? "admin_command_finished"
                                    : status == 503 ? "unavailable"
                                                    : "admin_bad_request");
  admin_respond(exchange, status, json_pack("{s:s}", "error", message),
                status == 503 ? "Retry-After: 2\r\n" : status == 405 ? "Allow: GET, POST\r\n"
                                                                     : NULL);
}

/* A time as JSON: its RFC 3339 string, or null for 0. */
static json_t *admin_time(int64_t ms)
{
  char text[32];
  if (ms <= 0)
    return json_null();
  control_format_time(ms, text);
  return json_string(text);
}

static int64_t admin_days_from_civil(int y, int m, int d)
{
  /* Days since 1970-01-01 of a proleptic Gregorian date (no timegm: it is not C11). */
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static int admin_days_in_month(int y, int m)
{
  static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return days[m - 1] + (m == 2 && leap);
}

int admin_parse_time(const char *text, int64_t *ms)
{
  int y, mo, d, h = 0, mi = 0, s = 0, n = 0, oh = 0, om = 0;
  int64_t frac_ms = 0, offset_s = 0;
  const char *p;

  if (!text || sscanf(text, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
    return -1;
  p = text + n;
  if (*p == 'T' || *p == 't' || *p == ' ') {
    if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &n) != 2 || n != 5)
      return -1;
    p += 1 + n;
    if (*p == ':') {
      if (!isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2]))
        return -1;
      s = (p[1] - '0') * 10 + (p[2] - '0');
      p += 3;
      if (*p == '.') {
        int digits = 0;
        for (p++; isdigit((unsigned char)*p); p++, digits++) {
          if (digits < 3)
            frac_ms = frac_ms * 10 + (*p - '0');
        }
        if (digits == 0)
          return -1;
        for (; digits < 3; digits++)
          frac_ms *= 10;
      }
    }
    if (*p == 'Z' || *p == 'z') {
      p++;
    } else if (*p == '+' || *p == '-') {
      if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5 || oh > 23 || om > 59)
        return -1;
      offset_s = (*p == '+' ? 1 : -1) * (int64_t)(oh * 3600 + om * 60);
      p += 1 + n;
    } else {
      return -1; /* a time of day needs its zone: Z or an offset */
    }
  }
  if (*p || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > admin_days_in_month(y, mo) || h > 23 ||
      mi > 59 || s > 60)
    return -1;
  *ms = ((admin_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) - offset_s) * 1000 +
        frac_ms;
  return 0;
}

int admin_parse_duration(const char *text, int64_t *ms)
{
  char *end;
  long long value;
  int64_t unit = 1000;

  if (!text || !isdigit((unsigned char)text[0]))
    return -1;
  value = strtoll(text, &end, 10);
  if (value < 0 || value > 100LL * 365 * 86400)
    return -1;
  if (*end == 's')
    end++;
  else if (*end == 'm' && end++)
    unit = 60 * 1000;
  else if (*end == 'h' && end++)
    unit = 3600 * 1000;
  else if (*end == 'd' && end++)
    unit = 86400 * 1000;
  if (*end)
    return -1;
  *ms = (int64_t)value * unit;
  return 0;
}

/* The value of `name` in the query ("a=1&b=2") into `out`; 1 when present. */
static int admin_query(const char *query, const char *name, char *out, size_t size)
{
  size_t name_len = strlen(name);

  for (const char *p = query; p && *p;) {
    const char *amp = strchr(p, '&');
    size_t len = amp ? (size_t)(amp - p) : strlen(p);
    if (len > name_len && strncmp(p, name, name_len) == 0 && p[name_len] == '=') {
      snprintf(out, size, "%.*s", (int)(len - name_len - 1), p + name_len + 1);
      return 1;
    }
    p = amp ? amp + 1 : NULL;
  }
  return 0;
}

/* Device `device_id` of `store`, or NULL. */
static const struct control_device *admin_device(const struct control_store *store,
                                                 const char *device_id)
{
  for (size_t i = 0; store && i < store->device_count; i++) {
    if (strcmp(store->devices[i].device_id, device_id) == 0)
      return &store->devices[i];
  }
  return NULL;
}

/* A device's last heartbeat, and its age at `now`, into a command's device entry. */
static void admin_heartbeat_age(json_t *entry, const struct control_store *store,
                                const char *device_id, int64_t now)
{
  const struct control_device *device = admin_device(store, device_id);
  const Pos__V1__Heartbeat *hb = device ? device->heartbeat : NULL;

  json_object_set_new(entry, "last_heartbeat", admin_time(hb ? hb->received_ms : 0));
  json_object_set_new(entry, "last_heartbeat_age_s",
                      hb ? json_integer((json_int_t)((now - hb->received_ms) / 1000))
                         : json_null());
}

/* A target that has not reported the command yet: "pending", and since when it is silent,
 * so that a dead till holding a command up is plain to see. */
static json_t *admin_silent_target(const struct control_store *store, const char *device_id,
                                   int64_t now)
{
  json_t *entry = json_pack("{s:s, s:s, s:I, s:I, s:n, s:n}", "device_id", device_id, "state",
                            "pending", "replayed_sales", (json_int_t)0, "total_sales",
                            (json_int_t)0, "available_from", "updated_at");
  const struct control_device *device = admin_device(store, device_id);
  const Pos__V1__Heartbeat *hb = device ? device->heartbeat : NULL;
  char text[200];

  if (hb)
    snprintf(text, sizeof(text), "has not reported this command yet; last heartbeat %" PRId64
             " s ago", (now - hb->received_ms) / 1000);
  else
    snprintf(text, sizeof(text), "has not reported this command yet; no heartbeat from it");
  json_object_set_new(entry, "message", json_string(text));
  admin_heartbeat_age(entry, store, device_id, now);
  return entry;
}

/* The command object C of spec10.md; `store` (its store, may be NULL) gives its targets'
 * last heartbeats. */
static json_t *admin_command_json(const struct control_store *store,
                                  const struct control_command *cmd)
{
  json_t *root = json_object(), *targets = json_array(), *devices = json_array(), *entry;
  uint64_t replayed = 0, total = 0;
  const char *message = "";
  int64_t now = clock_wall_ms();
  size_t waiting = 0;

  json_object_set_new(root, "command_id", json_string(cmd->command_id));
  json_object_set_new(root, "store_id", json_string(cmd->store_id));
  json_object_set_new(root, "kind", json_string(cmd->kind == CONTROL_RESYNC ? "resync"
                                                                            : "push-now"));
  if (cmd->kind == CONTROL_RESYNC) {
    json_object_set_new(root, "from", admin_time(cmd->from_ms));
    json_object_set_new(root, "to", admin_time(cmd->to_ms));
  }
  json_object_set_new(root, "issued_at", admin_time(cmd->issued_ms));
  json_object_set_new(root, "issued_by", json_string(cmd->issued_by));
  json_object_set_new(root, "request_id",
                      cmd->request_id[0] ? json_string(cmd->request_id) : json_null());
  json_object_set_new(root, "state", json_string(control_state_name(cmd->state)));
  json_object_set_new(root, "updated_at", admin_time(cmd->updated_ms));
  json_object_set_new(root, "updated_by", json_string(cmd->updated_by));
  for (size_t t = 0; t < cmd->target_count; t++)
    json_array_append_new(targets, json_string(cmd->targets[t]));
  json_object_set_new(root, "target_devices", targets);
  for (size_t r = 0; r < cmd->report_count; r++) {
    const struct control_report *report = &cmd->reports[r];
    replayed += report->done_sales;
    total += report->total_sales;
    if (!message[0] && report->message[0])
      message = report->message;
    entry = json_pack("{s:s, s:s, s:I, s:I, s:o, s:s, s:o}", "device_id", report->device_id,
                      "state", control_state_name(report->state), "replayed_sales",
                      (json_int_t)report->done_sales, "total_sales",
                      (json_int_t)report->total_sales, "available_from",
                      admin_time(report->available_from_ms), "message", report->message,
                      "updated_at", admin_time(report->updated_ms));
    admin_heartbeat_age(entry, store, report->device_id, now);
    json_array_append_new(devices, entry);
  }
  /* Targets that never reported it: an open command waits for them. */
  for (size_t t = 0; t < cmd->target_count; t++) {
    size_t r = 0;
    while (r < cmd->report_count && strcmp(cmd->reports[r].device_id, cmd->targets[t]) != 0)
      r++;
    if (r < cmd->report_count)
      continue;
    json_array_append_new(devices, admin_silent_target(store, cmd->targets[t], now));
    waiting++;
  }
  json_object_set_new(root, "replayed_sales", json_integer((json_int_t)replayed));
  json_object_set_new(root, "total_sales", json_integer((json_int_t)total));
  json_object_set_new(root, "devices", devices);
  json_object_set_new(root, "devices_not_reported", json_integer((json_int_t)waiting));
  json_object_set_new(root, "message", json_string(message));
  return root;
}

static void admin_command_done(void *arg, int status, const struct control_command *command,
                               const char *message)
{
  struct admin_pending *pending = arg;
  json_t *warnings;

  if (status >= 400 || !command) {
    admin_error(pending->exchange, status >= 400 ? status : 503,
                message ? message : "the command was not recorded; retry");
    free(pending);
    return;
  }
  warnings = json_array();
  for (size_t i = 0; i < pending->warning_count; i++)
    json_array_append_new(warnings, json_string(pending->warnings[i]));
  admin_respond(pending->exchange, status,
                json_pack("{s:o, s:o}", "command",
                          admin_command_json(control_find_store(pending->ctl, command->store_id),
                                             command),
                          "warnings", warnings),
                NULL);
  free(pending);
}

/* A refused admin request: logged with who asked, then answered. */
static void admin_refuse(http_exchange *exchange, const struct identity *id, int status,
                         const char *err)
{
  log_warn("server", "admin_refused", "peer=%s admin=%s path=%s status=%d reason=\"%s\"",
           http_exchange_peer(exchange), id->admin, http_exchange_path(exchange), status, err);
  admin_error(exchange, status, err);
}

/* Reads the body of a resync or push-now into `request`. 0, or -1 with `err`. */
static int admin_parse_request(json_t *root, struct control_request *request, char *err,
                               size_t err_size)
{
  const char *key;
  json_t *value;
  int64_t now = clock_wall_ms();
  int resync = request->kind == CONTROL_RESYNC;

  if (!json_is_object(root)) {
    snprintf(err, err_size, "the body must be a JSON object: {\"store_id\": \"S\"%s}",
             resync ? ", \"from\": \"2026-11-01\"" : "");
    return -1;
  }
  json_object_foreach(root, key, value) {
    int known = strcmp(key, "store_id") == 0 || strcmp(key, "device_id") == 0 ||
                strcmp(key, "request_id") == 0 ||
                (resync && (strcmp(key, "from") == 0 || strcmp(key, "to") == 0));
    if (!known) {
      snprintf(err, err_size, "unknown field \"%.64s\": a %s takes store_id, %sdevice_id, "
               "request_id", key,
               resync ? "resync" : "push-now", resync ? "from, to, " : "");
      return -1;
    }
    if (!json_is_string(value) && !(strcmp(key, "to") == 0 && json_is_null(value)) &&
        !(strcmp(key, "device_id") == 0 && json_is_null(value))) {
      snprintf(err, err_size, "field \"%s\" must be a string", key);
      return -1;
    }
  }
  request->store_id = json_string_value(json_object_get(root, "store_id"));
  request->device_id = json_string_value(json_object_get(root, "device_id"));
  if (!request->store_id || !identity_id_valid(request->store_id, strlen(request->store_id))) {
    snprintf(err, err_size, "store_id must be 1-%d characters of A-Z a-z 0-9 . _ -",
             IDENTITY_ID_MAX);
    return -1;
  }
  request->request_id = json_string_value(json_object_get(root, "request_id"));
  /* identity_id_valid bounds it to IDENTITY_ID_MAX, which is CONTROL_REQUEST_ID_MAX. */
  if (request->request_id &&
      !identity_id_valid(request->request_id, strlen(request->request_id))) {
    snprintf(err, err_size, "request_id must be 1-%d characters of A-Z a-z 0-9 . _ - (the same "
             "request_id for the same store returns the command it made)", CONTROL_REQUEST_ID_MAX);
    return -1;
  }
  if (request->device_id && request->device_id[0] &&
      !identity_id_valid(request->device_id, strlen(request->device_id))) {
    snprintf(err, err_size, "device_id must be 1-%d characters of A-Z a-z 0-9 . _ -",
             IDENTITY_ID_MAX);
    return -1;
  }
  if (!resync)
    return 0;
  value = json_object_get(root, "from");
  if (!value || admin_parse_time(json_string_value(value), &request->from_ms)) {
    snprintf(err, err_size, "from must be a time like \"2026-11-26T03:00:00Z\", "
             "\"2026-11-26T04:00:00+01:00\" or a date \"2026-11-01\" (midnight UTC)");
    return -1;
  }
  value = json_object_get(root, "to");
  if (json_is_string(value) && admin_parse_time(json_string_value(value), &request->to_ms)) {
    snprintf(err, err_size, "to must be a time like \"2026-11-26T03:00:00Z\" or a date "
             "\"2026-11-01\", or null for no end");
    return -1;
  }
  if (request->from_ms > now) {
    snprintf(err, err_size, "from is in the future: a resync replays sales already made");
    return -1;
  }
  if (request->to_ms && request->to_ms <= request->from_ms) {
    snprintf(err, err_size, "from must be before to");
    return -1;
  }
  return 0;
}

/* POST /v1/admin/resync and /v1/admin/push-now. */
static void admin_issue(control *ctl, http_exchange *exchange, const struct identity *id,
                        enum control_kind kind)
{
  struct control_request request = {.kind = kind, .admin = id->admin};
  size_t body_len;
  const char *body = http_exchange_body(exchange, &body_len);
  struct admin_pending *pending = NULL;
  json_error_t error;
  json_t *root = json_loadb(body ? body : "", body_len, JSON_REJECT_DUPLICATES, &error);
  char err[400];
  int status = 400;

  if (!root) {
    snprintf(err, sizeof(err), "body is not JSON: %s (line %d, column %d)", error.text,
             error.line, error.column);
    goto refuse;
  }
  if (admin_parse_request(root, &request, err, sizeof(err)))
    goto refuse;
  pending = calloc(1, sizeof(*pending));
  if (!pending) {
    status = 503;
    snprintf(err, sizeof(err), "collector out of memory");
    goto refuse;
  }
  pending->exchange = exchange;
  pending->ctl = ctl;
  snprintf(pending->admin, sizeof(pending->admin), "%s", id->admin);
  status = control_issue(ctl, &request, admin_command_done, pending, pending->warnings,
                         &pending->warning_count, err, sizeof(err));
  if (status)
    goto refuse;
  json_decref(root);
  return; /* pending is the callback's now */
refuse:
  free(pending);
  json_decref(root);
  admin_refuse(exchange, id, status, err);
}

/* `arg` is the admin's exchange. */
static void admin_token_done(void *arg, int status, const struct control_token *token,
                             const char *text, const char *message)
{
  http_exchange *exchange = arg;

  if (status != 201) {
    admin_error(exchange, 503, message && message[0] ? message
                                                              : "the token was not recorded; retry");
  } else {
    admin_respond(exchange, 201,
                  json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:s}", "token", text, "token_id",
                            token->token_id, "store_id", token->store_id, "device_id",
                            token->device_id, "issued_at", admin_time(token->issued_ms),
                            "expires_at", admin_time(token->expires_ms), "issued_by",
                            token->issued_by),
                  "Cache-Control: no-store\r\n");
  }
}

/*
 * POST /v1/admin/enrol-tokens {"store_id", "device_id", "valid_for": "72h"}:
 * a one-time token for one device, answered once Kafka holds its record.
 * The answer is the only place its secret ever appears.
 */
static void admin_enrol_token(control *ctl, http_exchange *exchange, const struct identity *id)
{
  size_t body_len;
  const char *body = http_exchange_body(exchange, &body_len);
  json_error_t error;
  json_t *root = json_loadb(body ? body : "", body_len, JSON_REJECT_DUPLICATES, &error);
  const char *store_id = NULL, *device_id = NULL, *valid_for = NULL;
  int64_t valid_ms = control_token_lifetime_ms(ctl);
  char err[400];
  int status = 400;

  if (valid_ms == 0) {
    status = 404;
    snprintf(err, sizeof(err), "this collector does not enrol devices: set [enrol] ca_cert and "
             "ca_key in its configuration");
    goto refuse;
  }
  if (!root) {
    snprintf(err, sizeof(err), "body is not JSON: %s (line %d, column %d)", error.text,
             error.line, error.column);
    goto refuse;
  }
  if (json_unpack_ex(root, &error, JSON_STRICT, "{s:s, s:s, s?s}", "store_id", &store_id,
                     "device_id", &device_id, "valid_for", &valid_for) != 0) {
    snprintf(err, sizeof(err), "expected {\"store_id\": \"S001\", \"device_id\": \"D1\", "
             "\"valid_for\": \"72h\" (optional)}: %s", error.text);
    goto refuse;
  }
  if (valid_for && (admin_parse_duration(valid_for, &valid_ms) || valid_ms <= 0)) {
    snprintf(err, sizeof(err), "valid_for %s is not a duration such as 90s, 30m, 72h or 7d",
             valid_for);
    goto refuse;
  }
  status = control_token_issue(ctl, store_id, device_id, valid_ms, id->admin, admin_token_done,
                               exchange, err, sizeof(err));
  if (status)
    goto refuse;
  json_decref(root);
  return; /* answered by admin_token_done */
refuse:
  json_decref(root);
  admin_refuse(exchange, id, status, err);
}

static void admin_decommission_done(void *arg, int status, const char *message)
{
  http_exchange *exchange = arg;

  if (status != 200)
    admin_error(exchange, 503, message && message[0] ? message : "not recorded; retry");
  else
    admin_respond(exchange, 200, json_pack("{s:b}", "ok", 1), NULL);
}

/*
 * POST /v1/admin/stores/<S>/decommission {"reason": "..."} and
 * .../recommission: the store's devices get no new certificate (or again).
 */
static void admin_decommission(control *ctl, http_exchange *exchange, const struct identity *id,
                               const char *store_id, int undo)
{
  size_t body_len;
  const char *body = http_exchange_body(exchange, &body_len);
  json_error_t error;
  json_t *root = body_len ? json_loadb(body, body_len, JSON_REJECT_DUPLICATES, &error)
                          : json_object();
  const char *reason = NULL;
  char err[400];
  int status = 400;

  if (!root) {
    snprintf(err, sizeof(err), "body is not JSON: %s (line %d, column %d)", error.text,
             error.line, error.column);
    goto refuse;
  }
  if (json_unpack_ex(root, &error, JSON_STRICT, "{s?s}", "reason", &reason) != 0) {
    snprintf(err, sizeof(err), "expected {\"reason\": \"...\"} (optional): %s", error.text);
    goto refuse;
  }
  status = control_decommission(ctl, store_id, undo, id->admin, reason, admin_decommission_done,
                                exchange, err, sizeof(err));
  if (status == 409) {
    /* Asked twice (a retry after a lost answer): what was asked holds. */
    admin_respond(exchange, 200, json_pack("{s:b, s:s}", "ok", 1, "unchanged", err), NULL);
    json_decref(root);
    return;
  }
  if (status)
    goto refuse;
  json_decref(root);
  return;
refuse:
  json_decref(root);
  admin_refuse(exchange, id, status, err);
}

/* Commands of one store, newest issued first, filtered; appended to `list`. */
static void admin_store_commands(const struct control_store *store, int all, size_t max,
                                 json_t *list)
{
  size_t added = 0;
  for (size_t i = store->command_count; i-- > 0 && added < max;) {
    const struct control_command *cmd = store->commands[i];
    if (!all && control_state_final(cmd->state))
      continue;
    json_array_append_new(list, admin_command_json(store, cmd));
    added++;
  }
}

/* A command to list, and where it stands in its store's order of issue. */
struct admin_listed {
  const struct control_command *cmd;
  size_t order;
};

static int admin_newest_first(const void *a, const void *b)
{
  const struct admin_listed *x = a, *y = b;
  if (x->cmd->issued_ms != y->cmd->issued_ms)
    return x->cmd->issued_ms > y->cmd->issued_ms ? -1 : 1;
  return x->order > y->order ? -1 : x->order < y->order;
}

/* Appends the store's commands (open ones unless `all`) to *listed. 0 or -1 (memory). */
static int admin_collect(const struct control_store *store, int all, struct admin_listed **listed,
                         size_t *count, size_t *capacity)
{
  for (size_t i = 0; i < store->command_count; i++) {
    if (!all && control_state_final(store->commands[i]->state))
      continue;
    if (*count == *capacity) {
      size_t grown_capacity = *capacity ? 2 * *capacity : 64;
      struct admin_listed *grown = realloc(*listed, grown_capacity * sizeof(*grown));
      if (!grown)
        return -1;
      *listed = grown;
      *capacity = grown_capacity;
    }
    (*listed)[*count].cmd = store->commands[i];
    (*listed)[*count].order = i;
    (*count)++;
  }
  return 0;
}

/* GET /v1/admin/commands[?store_id=S][&state=open|all]. */
static void admin_list_commands(control *ctl, http_exchange *exchange)
{
  const char *query = http_exchange_query(exchange);
  char store_id[IDENTITY_ID_MAX + 2] = "", state[16] = "open";
  const struct control_store **stores = NULL;
  struct admin_listed *listed = NULL;
  size_t store_count = 0, count = 0, capacity = 0;
  int all, rc = 0;
  json_t *list;

  admin_query(query, "store_id", store_id, sizeof(store_id));
  admin_query(query, "state", state, sizeof(state));
  if (strcmp(state, "open") != 0 && strcmp(state, "all") != 0) {
    admin_error(exchange, 400, "state must be open (pending and running, the default) or all");
    return;
  }
  all = state[0] == 'a';
  if (store_id[0]) {
    const struct control_store *store = control_find_store(ctl, store_id);
    if (store)
      rc = admin_collect(store, all, &listed, &count, &capacity);
  } else {
    stores = control_stores(ctl, &store_count);
    for (size_t i = 0; i < store_count && rc == 0; i++)
      rc = admin_collect(stores[i], all, &listed, &count, &capacity);
    free(stores);
  }
  if (rc) {
    free(listed);
    admin_error(exchange, 503, "collector out of memory");
    return;
  }
  if (count)
    qsort(listed, count, sizeof(*listed), admin_newest_first);
  list = json_array();
  for (size_t i = 0; i < count; i++)
    json_array_append_new(
        list, admin_command_json(control_find_store(ctl, listed[i].cmd->store_id), listed[i].cmd));
  free(listed);
  admin_respond(exchange, 200, json_pack("{s:o}", "commands", list), NULL);
}

/* GET /v1/admin/commands/<id> and POST /v1/admin/commands/<id>/cancel. */
static void admin_command(control *ctl, http_exchange *exchange, const struct identity *id,
                          const char *rest)
{
  const char *method = http_exchange_method(exchange);
  const char *slash = strchr(rest, '/');
  char command_id[CONTROL_COMMAND_ID_MAX + 1], err[300];
  const struct control_command *cmd;
  struct admin_pending *pending;
  size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
  int status;

  if (len == 0 || len > CONTROL_COMMAND_ID_MAX ||
      (slash && strcmp(slash, "/cancel") != 0)) {
    admin_error(exchange, 404, "no such endpoint: GET /v1/admin/commands/<id>, POST "
                "/v1/admin/commands/<id>/cancel");
    return;
  }
  memcpy(command_id, rest, len);
  command_id[len] = '\0';
  if (!slash) {
    if (strcmp(method, "GET") != 0) {
      admin_error(exchange, 405, "use GET");
      return;
    }
    cmd = control_find_command(ctl, command_id);
    if (!cmd)
      admin_error(exchange, 404, "no such command (GET /v1/admin/commands?state=all lists them)");
    else
      admin_respond(exchange, 200,
                    json_pack("{s:o}", "command",
                              admin_command_json(control_find_store(ctl, cmd->store_id), cmd)),
                    NULL);
    return;
  }
  if (strcmp(method, "POST") != 0) {
    admin_error(exchange, 405, "use POST");
    return;
  }
  pending = calloc(1, sizeof(*pending));
  if (!pending) {
    admin_error(exchange, 503, "collector out of memory");
    return;
  }
  pending->exchange = exchange;
  pending->ctl = ctl;
  status = control_cancel(ctl, command_id, id->admin, admin_command_done, pending, err,
                          sizeof(err));
  if (status) {
    free(pending);
    log_warn("server", "admin_refused", "peer=%s admin=%s path=%s status=%d reason=\"%s\"",
             http_exchange_peer(exchange), id->admin, http_exchange_path(exchange), status, err);
    admin_error(exchange, status, err);
  }
}

/* One device of the store object (spec10.md, St.devices). */
static json_t *admin_device_json(const struct control_device *device, int64_t now)
{
  const Pos__V1__Heartbeat *hb = device->heartbeat;
  json_t *root = json_object();

  json_object_set_new(root, "device_id", json_string(device->device_id));
  json_object_set_new(root, "last_heartbeat", admin_time(hb ? hb->received_ms : 0));
  json_object_set_new(root, "last_batch", admin_time(device->last_batch_ms));
  if (!hb)
    return root;
  json_object_set_new(root, "agent_version", json_string(hb->agent_version));
  json_object_set_new(root, "firmware_version", json_string(hb->firmware_version));
  json_object_set_new(root, "unsent_sales", json_integer((json_int_t)hb->unsent_sales));
  json_object_set_new(root, "oldest_unsent_age_s",
                      json_integer(hb->unsent_sales ? hb->oldest_unsent_age_s +
                                                          (now - hb->received_ms) / 1000
                                                    : 0));
  json_object_set_new(root, "clock_drift_ms",
                      json_integer(hb->device_clock_ms ? hb->device_clock_ms - hb->received_ms
                                                       : 0));
  /* The device's own judgement of its clock (agents of issue 11 on): null
   * from an older agent. Sales it took while the clock was wrong are
   * corrected (pending) or carry Sale.received_ms_untrusted (unrepaired). */
  json_object_set_new(
      root, "clock",
      hb->clock_state == POS__V1__DEVICE_CLOCK_STATE__DEVICE_CLOCK_STATE_UNSPECIFIED
          ? json_null()
          : json_pack("{s:s, s:I, s:I}", "state",
                      hb->clock_state == POS__V1__DEVICE_CLOCK_STATE__DEVICE_CLOCK_STATE_OK
                          ? "ok"
                      : hb->clock_state ==
                              POS__V1__DEVICE_CLOCK_STATE__DEVICE_CLOCK_STATE_BEFORE_BUILD
                          ? "before_build"
                      : hb->clock_state ==
                              POS__V1__DEVICE_CLOCK_STATE__DEVICE_CLOCK_STATE_BEHIND_JOURNAL
                          ? "behind_journal"
                          : "differs_from_collector",
                      "pending_rows", (json_int_t)hb->clock_pending_rows, "unrepaired_rows",
                      (json_int_t)hb->clock_unrepaired_rows));
  json_object_set_new(root, "cert_not_after", admin_time(hb->cert_not_after_ms));
  json_object_set_new(root, "cert_days_left",
                      hb->cert_not_after_ms ? json_integer((hb->cert_not_after_ms - now) /
                                                           86400000)
                                            : json_null());
  json_object_set_new(root, "disk_free_bytes", json_integer((json_int_t)hb->disk_free_bytes));
  json_object_set_new(root, "journal_full", json_boolean(hb->journal_full));
  json_object_set_new(root, "uplink_problem", json_string(hb->uplink_problem));
  json_object_set_new(root, "journal_reset_reason", json_string(hb->journal_reset_reason));
  json_object_set_new(root, "oldest_sale", admin_time(hb->oldest_sale_business_ms));
  json_object_set_new(root, "sales_deleted", json_boolean(hb->sales_deleted));
  json_object_set_new(root, "journaled_sales", json_integer((json_int_t)hb->journaled_sales));
  json_object_set_new(root, "last_seq", json_integer((json_int_t)hb->last_seq));
  return root;
}

/* The store object St; *lagging says whether it is lagging by `lag_ms`. */
static json_t *admin_store_json(const struct control_store *store, int64_t now, int64_t lag_ms,
                                int *lagging)
{
  json_t *root = json_object(), *devices = json_array();
  int64_t last_contact = 0, oldest_unsent_s = 0;
  uint64_t unsent = 0;
  const struct control_command *resync = NULL;
  int open = 0;

  for (size_t i = 0; i < store->device_count; i++) {
    const struct control_device *device = &store->devices[i];
    const Pos__V1__Heartbeat *hb = device->heartbeat;
    if (device->last_batch_ms > last_contact)
      last_contact = device->last_batch_ms;
    if (hb && hb->received_ms > last_contact)
      last_contact = hb->received_ms;
    if (hb && hb->unsent_sales) {
      int64_t age = hb->oldest_unsent_age_s + (now - hb->received_ms) / 1000;
      unsent += hb->unsent_sales;
      if (age > oldest_unsent_s)
        oldest_unsent_s = age;
    }
    json_array_append_new(devices, admin_device_json(device, now));
  }
  for (size_t i = 0; i < store->command_count; i++) {
    const struct control_command *cmd = store->commands[i];
    open += !control_state_final(cmd->state);
    if (cmd->kind == CONTROL_RESYNC)
      resync = cmd; /* oldest first: the last one is the newest */
  }
  *lagging = (last_contact && now - last_contact > lag_ms) || oldest_unsent_s * 1000 > lag_ms;
  json_object_set_new(root, "store_id", json_string(store->store_id));
  json_object_set_new(root, "last_contact", admin_time(last_contact));
  json_object_set_new(root, "last_contact_age_s",
                      last_contact ? json_integer((now - last_contact) / 1000) : json_null());
  json_object_set_new(root, "unsent_sales", json_integer((json_int_t)unsent));
  json_object_set_new(root, "oldest_unsent_age_s", json_integer(oldest_unsent_s));
  json_object_set_new(root, "lagging", json_boolean(*lagging));
  json_object_set_new(root, "open_commands", json_integer(open));
  json_object_set_new(root, "resync", resync ? admin_command_json(store, resync) : json_null());
  json_object_set_new(root, "devices", devices);
  json_object_set_new(root, "decommissioned",
                      store->decommissioned_ms
                          ? json_pack("{s:o, s:s, s:s}", "at", admin_time(store->decommissioned_ms),
                                      "by", store->decommissioned_by, "reason",
                                      store->decommission_reason)
                          : json_null());
  return root;
}

/* GET /v1/admin/stores[?lagging=30m]. */
static void admin_stores(control *ctl, http_exchange *exchange)
{
  char lag_text[32];
  int64_t lag_ms = ADMIN_DEFAULT_LAGGING_MS, now = clock_wall_ms();
  int filter = admin_query(http_exchange_query(exchange), "lagging", lag_text, sizeof(lag_text));
  size_t count = 0;
  const struct control_store **stores;
  json_t *list;

  if (filter && admin_parse_duration(lag_text, &lag_ms)) {
    admin_error(exchange, 400, "lagging must be a duration like 90s, 30m, 2h or 7d");
    return;
  }
  stores = control_stores(ctl, &count);
  list = json_array();
  for (size_t i = 0; i < count; i++) {
    int lagging;
    json_t *store = admin_store_json(stores[i], now, lag_ms, &lagging);
    if (filter && !lagging)
      json_decref(store);
    else
      json_array_append_new(list, store);
  }
  free(stores);
  admin_respond(exchange, 200, json_pack("{s:o, s:o}", "now", admin_time(now), "stores", list),
                NULL);
}

/* GET /v1/admin/stores/<S>. */
static void admin_store(control *ctl, http_exchange *exchange, const char *store_id)
{
  const struct control_store *store = control_find_store(ctl, store_id);
  json_t *root, *commands;
  int lagging;

  if (!store) {
    admin_error(exchange, 404, "no such store: no device of it has reported to this collector "
                "and it has no commands");
    return;
  }
  root = admin_store_json(store, clock_wall_ms(), ADMIN_DEFAULT_LAGGING_MS, &lagging);
  commands = json_array();
  admin_store_commands(store, 1, ADMIN_STORE_COMMANDS, commands);
  json_object_set_new(root, "commands", commands);
  admin_respond(exchange, 200, json_pack("{s:o}", "store", root), NULL);
}

void admin_handle(control *ctl, http_exchange *exchange, const struct identity *id)
{
  const char *method = http_exchange_method(exchange);
  const char *path = http_exchange_path(exchange) + strlen("/v1/admin/");
  int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
  const char *action;

  if (!control_ready(ctl)) {
    admin_error(exchange, 503, "loading commands and fleet state from Kafka; retry shortly");
    return;
  }
  if (strcmp(path, "resync") == 0 || strcmp(path, "push-now") == 0) {
    if (!post)
      admin_error(exchange, 405, "use POST");
    else
      admin_issue(ctl, exchange, id, path[0] == 'r' ? CONTROL_RESYNC : CONTROL_PUSH_NOW);
  } else if (strcmp(path, "enrol-tokens") == 0) {
    if (!post)
      admin_error(exchange, 405, "use POST");
    else
      admin_enrol_token(ctl, exchange, id);
  } else if (strcmp(path, "commands") == 0 || strcmp(path, "stores") == 0) {
    if (!get)
      admin_error(exchange, 405, "use GET");
    else if (path[0] == 'c')
      admin_list_commands(ctl, exchange);
    else
      admin_stores(ctl, exchange);
  } else if (strncmp(path, "commands/", 9) == 0) {
    admin_command(ctl, exchange, id, path + 9);
  } else if (strncmp(path, "stores/", 7) == 0 && (action = strchr(path + 7, '/')) != NULL &&
             action > path + 7 && action - (path + 7) <= CONTROL_ID_MAX &&
             (strcmp(action, "/decommission") == 0 || strcmp(action, "/recommission") == 0)) {
    char store_id[CONTROL_ID_MAX + 1];
    snprintf(store_id, sizeof(store_id), "%.*s", (int)(action - (path + 7)), path + 7);
    if (!post)
      admin_error(exchange, 405, "use POST");
    else
      admin_decommission(ctl, exchange, id, store_id, action[1] == 'r');
  } else if (strncmp(path, "stores/", 7) == 0 && path[7] && !strchr(path + 7, '/')) {
    if (!get)
      admin_error(exchange, 405, "use GET");
    else
      admin_store(ctl, exchange, path + 7);
  } else {
    admin_error(exchange, 404, "no such endpoint: POST /v1/admin/resync, POST "
                "/v1/admin/push-now, POST /v1/admin/enrol-tokens, POST /v1/admin/stores/<id>/decommission "
                "(or /recommission), GET /v1/admin/commands[/<id>], POST "
                "/v1/admin/commands/<id>/cancel, GET /v1/admin/stores[/<store_id>], POST "
                "/v1/admin/rebase");
  }
}
