/*
 * render.c - the admin API's answers for people (render.h).
 */
#include "posctl/render.h"

#include <inttypes.h>
#include <string.h>

#include "posctl/format.h"
#include "posctl/table.h"

/* Width of the key column of a key/value block. */
#define RENDER_KEY_WIDTH 16

static const char *render_str(const json_t *object, const char *key)
{
  const json_t *value = json_object_get(object, key);
  return json_is_string(value) ? json_string_value(value) : NULL;
}

/* Sets *out from an integer (or real) member. Returns 0, or -1 when absent or null. */
static int render_int(const json_t *object, const char *key, int64_t *out)
{
  const json_t *value = json_object_get(object, key);
  if (json_is_integer(value)) {
    *out = (int64_t)json_integer_value(value);
    return 0;
  }
  if (json_is_real(value)) {
    *out = (int64_t)json_real_value(value);
    return 0;
  }
  return -1;
}

/* 1 for true, 0 for false, -1 when absent. */
static int render_bool(const json_t *object, const char *key)
{
  const json_t *value = json_object_get(object, key);
  return json_is_boolean(value) ? json_is_true(value) : -1;
}

char *posctl_render_ago(const char *text, int64_t now_ms, char *out, size_t out_size)
{
  char err[200], age[POSCTL_TEXT_MAX];
  int64_t ms;
  if (!text || posctl_parse_time(text, &ms, err, sizeof(err))) {
    snprintf(out, out_size, "-");
    return out;
  }
  snprintf(out, out_size, "%s ago", posctl_format_age((now_ms - ms) / 1000, age, sizeof(age)));
  return out;
}

/* "2026-11-26T03:15:00Z (3m ago)", or `none` when the time is absent. */
static char *render_when(const char *text, int64_t now_ms, const char *none, char *out,
                         size_t out_size)
{
  char ago[POSCTL_TEXT_MAX];
  if (!text) {
    snprintf(out, out_size, "%s", none);
    return out;
  }
  snprintf(out, out_size, "%s (%s)", text, posctl_render_ago(text, now_ms, ago, sizeof(ago)));
  return out;
}

static void render_kv(FILE *out, const char *indent, const char *key, const char *value)
{
  fprintf(out, "%s%-*s %s\n", indent, RENDER_KEY_WIDTH, key, value && *value ? value : "-");
}

/* A command's progress: "12,345/20,000 (61%)", or "-" before the device counted. */
static char *render_progress(const json_t *command, char *out, size_t out_size)
{
  char done[POSCTL_TEXT_MAX], total[POSCTL_TEXT_MAX];
  int64_t replayed = 0, total_sales = 0;
  render_int(command, "replayed_sales", &replayed);
  render_int(command, "total_sales", &total_sales);
  if (total_sales <= 0 && replayed <= 0) {
    snprintf(out, out_size, "-");
    return out;
  }
  posctl_format_count(replayed, done, sizeof(done));
  posctl_format_count(total_sales, total, sizeof(total));
  if (total_sales > 0)
    snprintf(out, out_size, "%s/%s (%" PRId64 "%%)", done, total,
             (replayed > total_sales ? total_sales : replayed) * 100 / total_sales);
  else
    snprintf(out, out_size, "%s/%s", done, total);
  return out;
}

/* A resync's range: "2026-11-01T00:00:00Z..2026-11-02T00:00:00Z" or "from X". */
static char *render_range(const json_t *command, char *out, size_t out_size)
{
  const char *from = render_str(command, "from"), *to = render_str(command, "to");
  if (!from)
    snprintf(out, out_size, "-");
  else if (to)
    snprintf(out, out_size, "%s..%s", from, to);
  else
    snprintf(out, out_size, "from %s", from);
  return out;
}

static const struct posctl_column render_command_columns[] = {
    {"COMMAND", 0}, {"STORE", 0},    {"KIND", 0},   {"STATE", 0},
    {"PROGRESS", 1}, {"RANGE", 0},   {"ISSUED", 1}, {"BY", 0},
};

int posctl_render_commands(FILE *out, const json_t *commands, int64_t now_ms, const char *empty)
{
  char text[POSCTL_PROGRESS_MAX];
  size_t i;
  const json_t *command;
  posctl_table *table;
  if (!json_is_array(commands))
    return -1;
  if (json_array_size(commands) == 0) {
    fprintf(out, "%s\n", empty);
    return 0;
  }
  table = posctl_table_create(render_command_columns,
                              sizeof(render_command_columns) / sizeof(render_command_columns[0]));
  if (!table)
    return -1;
  json_array_foreach(commands, i, command) {
    posctl_table_add(table, render_str(command, "command_id"));
    posctl_table_add(table, render_str(command, "store_id"));
    posctl_table_add(table, render_str(command, "kind"));
    posctl_table_add(table, render_str(command, "state"));
    posctl_table_add(table, render_progress(command, text, sizeof(text)));
    posctl_table_add(table, render_range(command, text, sizeof(text)));
    posctl_table_add(table, posctl_render_ago(render_str(command, "issued_at"), now_ms, text,
                                              sizeof(text)));
    posctl_table_add(table, render_str(command, "issued_by"));
  }
  posctl_table_print(table, out);
  posctl_table_destroy(table);
  return 0;
}

/* "till-1, till-2" from an array of strings into `out`. */
static char *render_join(const json_t *strings, char *out, size_t out_size)
{
  size_t i, used = 0;
  const json_t *item;
  out[0] = '\0';
  json_array_foreach(strings, i, item) {
    if (!json_is_string(item) || used >= out_size)
      continue;
    used += (size_t)snprintf(out + used, out_size - used, "%s%s", used ? ", " : "",
                             json_string_value(item));
  }
  return out;
}

static const struct posctl_column render_device_report_columns[] = {
    {"DEVICE", 0}, {"STATE", 0},   {"REPLAYED", 1}, {"TOTAL", 1},
    {"AVAILABLE FROM", 0}, {"UPDATED", 1}, {"MESSAGE", 0},
};

/* The command's per-device reports, one line each. */
static void render_command_devices(FILE *out, const json_t *devices, int64_t now_ms)
{
  char text[POSCTL_PROGRESS_MAX];
  int64_t n;
  size_t i;
  const json_t *device;
  posctl_table *table;
  if (!json_is_array(devices) || json_array_size(devices) == 0)
    return;
  table = posctl_table_create(render_device_report_columns,
                              sizeof(render_device_report_columns) /
                                  sizeof(render_device_report_columns[0]));
  if (!table)
    return;
  json_array_foreach(devices, i, device) {
    posctl_table_add(table, render_str(device, "device_id"));
    posctl_table_add(table, render_str(device, "state"));
    posctl_table_add(table, render_int(device, "replayed_sales", &n) ? "-" :
                                posctl_format_count(n, text, sizeof(text)));
    posctl_table_add(table, render_int(device, "total_sales", &n) ? "-" :
                                posctl_format_count(n, text, sizeof(text)));
    posctl_table_add(table, render_str(device, "available_from"));
    posctl_table_add(table, posctl_render_ago(render_str(device, "updated_at"), now_ms, text,
                                              sizeof(text)));
    posctl_table_add(table, render_str(device, "message"));
  }
  fputc('\n', out);
  posctl_table_print(table, out);
  posctl_table_destroy(table);
}

int posctl_render_command(FILE *out, const json_t *command, int64_t now_ms)
{
  char text[512], when[POSCTL_PROGRESS_MAX];
  const char *kind, *to, *by;
  if (!json_is_object(command))
    return -1;
  kind = render_str(command, "kind");
  render_kv(out, "", "command", render_str(command, "command_id"));
  render_kv(out, "", "store", render_str(command, "store_id"));
  render_kv(out, "", "kind", kind);
  if (render_str(command, "from")) {
    to = render_str(command, "to");
    snprintf(text, sizeof(text), "from %s to %s", render_str(command, "from"),
             to ? to : "the newest sale when the device starts it");
    render_kv(out, "", "range", text);
  }
  render_kv(out, "", "state", render_str(command, "state"));
  if (!kind || strcmp(kind, "resync") == 0)
    render_kv(out, "", "sales replayed", render_progress(command, text, sizeof(text)));
  by = render_str(command, "issued_by");
  render_when(render_str(command, "issued_at"), now_ms, "-", when, sizeof(when));
  snprintf(text, sizeof(text), "%s by %s", when, by ? by : "-");
  render_kv(out, "", "issued", text);
  if (render_str(command, "updated_at")) {
    by = render_str(command, "updated_by");
    render_when(render_str(command, "updated_at"), now_ms, "-", when, sizeof(when));
    snprintf(text, sizeof(text), "%s by %s", when, by ? by : "-");
    render_kv(out, "", "updated", text);
  }
  render_join(json_object_get(command, "target_devices"), text, sizeof(text));
  render_kv(out, "", "targets", *text ? text : "the first device of the store that reports");
  if (render_str(command, "message") && *render_str(command, "message"))
    render_kv(out, "", "message", render_str(command, "message"));
  render_command_devices(out, json_object_get(command, "devices"), now_ms);
  return 0;
}

/* The stores table's summary of a store's devices. */
struct render_fleet {
  int64_t drift_ms;       /* the widest drift, with its sign */
  int has_drift;
  int64_t cert_days_left; /* the nearest expiry */
  int has_cert;
  char versions[96];      /* distinct agent versions */
};

/* Whether `item` is one of the comma-separated items of `list`. */
static int render_listed(const char *list, const char *item)
{
  size_t len = strlen(item);
  for (const char *p = list; *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
    if (strncmp(p, item, len) == 0 && (p[len] == ',' || p[len] == '\0'))
      return 1;
  }
  return 0;
}

static void render_fleet_of(const json_t *devices, struct render_fleet *fleet)
{
  size_t i;
  const json_t *device;
  int64_t n;
  memset(fleet, 0, sizeof(*fleet));
  json_array_foreach(devices, i, device) {
    const char *version = render_str(device, "agent_version");
    if (!render_int(device, "clock_drift_ms", &n) &&
        (!fleet->has_drift || (n < 0 ? -n : n) > (fleet->drift_ms < 0 ? -fleet->drift_ms :
                                                                        fleet->drift_ms))) {
      fleet->drift_ms = n;
      fleet->has_drift = 1;
    }
    if (!render_int(device, "cert_days_left", &n) &&
        (!fleet->has_cert || n < fleet->cert_days_left)) {
      fleet->cert_days_left = n;
      fleet->has_cert = 1;
    }
    if (version && *version && !render_listed(fleet->versions, version)) {
      size_t used = strlen(fleet->versions);
      snprintf(fleet->versions + used, sizeof(fleet->versions) - used, "%s%s",
               used ? "," : "", version);
    }
  }
}

/* A store's resync cell: "running 61%", "done", "-". */
static char *render_resync_cell(const json_t *resync, char *out, size_t out_size)
{
  int64_t replayed = 0, total = 0;
  const char *state = render_str(resync, "state");
  if (!json_is_object(resync) || !state) {
    snprintf(out, out_size, "-");
    return out;
  }
  render_int(resync, "replayed_sales", &replayed);
  render_int(resync, "total_sales", &total);
  if (strcmp(state, "running") == 0 && total > 0)
    snprintf(out, out_size, "running %" PRId64 "%%",
             (replayed > total ? total : replayed) * 100 / total);
  else
    snprintf(out, out_size, "%s", state);
  return out;
}

static const struct posctl_column render_store_columns[] = {
    {"STORE", 0},      {"LAST CONTACT", 1}, {"DEVICES", 1}, {"UNSENT", 1},
    {"OLDEST UNSENT", 1}, {"CLOCK DRIFT", 1}, {"CERT LEFT", 1}, {"AGENT", 0},
    {"RESYNC", 0},     {"LAGGING", 0},
};

static void render_store_row(posctl_table *table, const json_t *store)
{
  char text[POSCTL_PROGRESS_MAX];
  const json_t *devices = json_object_get(store, "devices");
  struct render_fleet fleet;
  int64_t n, unsent = 0;
  render_fleet_of(devices, &fleet);
  posctl_table_add(table, render_str(store, "store_id"));
  if (!render_str(store, "last_contact") || render_int(store, "last_contact_age_s", &n))
    posctl_table_add(table, "never");
  else
    posctl_table_add(table, posctl_format_age(n, text, sizeof(text)));
  posctl_table_addf(table, "%zu", json_is_array(devices) ? json_array_size(devices) : 0);
  if (render_int(store, "unsent_sales", &unsent))
    posctl_table_add(table, "-");
  else
    posctl_table_add(table, posctl_format_count(unsent, text, sizeof(text)));
  if (unsent > 0 && !render_int(store, "oldest_unsent_age_s", &n))
    posctl_table_add(table, posctl_format_age(n, text, sizeof(text)));
  else
    posctl_table_add(table, "-");
  posctl_table_add(table, fleet.has_drift ? posctl_format_drift(fleet.drift_ms, text,
                                                                 sizeof(text)) : "-");
  if (!fleet.has_cert)
    posctl_table_add(table, "-");
  else if (fleet.cert_days_left < 0)
    posctl_table_add(table, "expired");
  else
    posctl_table_addf(table, "%" PRId64 "d", fleet.cert_days_left);
  posctl_table_add(table, fleet.versions);
  posctl_table_add(table, render_resync_cell(json_object_get(store, "resync"), text,
                                             sizeof(text)));
  posctl_table_add(table, render_bool(store, "lagging") == 1 ? "yes" : "no");
}

int posctl_render_stores(FILE *out, const json_t *answer, int64_t now_ms, int64_t lagging)
{
  const json_t *stores = json_object_get(answer, "stores"), *store;
  char by[POSCTL_TEXT_MAX];
  size_t i, count, lagging_count = 0;
  posctl_table *table;
  (void)now_ms;
  if (!json_is_array(stores))
    return -1;
  count = json_array_size(stores);
  if (lagging > 0)
    posctl_format_duration(lagging, by, sizeof(by));
  if (count == 0) {
    if (lagging > 0)
      fprintf(out, "no store is lagging by %s: every store was in contact and had nothing "
              "unsent older than %s\n", by, by);
    else
      fprintf(out, "no store has reported to this collector yet\n");
    return 0;
  }
  table = posctl_table_create(render_store_columns,
                              sizeof(render_store_columns) / sizeof(render_store_columns[0]));
  if (!table)
    return -1;
  json_array_foreach(stores, i, store) {
    render_store_row(table, store);
    if (render_bool(store, "lagging") == 1)
      lagging_count++;
  }
  posctl_table_print(table, out);
  posctl_table_destroy(table);
  if (lagging > 0)
    fprintf(out, "\n%zu store%s lagging by %s\n", count, count == 1 ? "" : "s", by);
  else
    fprintf(out, "\n%zu store%s, %zu lagging\n", count, count == 1 ? "" : "s", lagging_count);
  return 0;
}

static const struct posctl_column render_certificate_columns[] = {
    {"STORE", 0}, {"DEVICE", 0}, {"EXPIRES", 0}, {"DAYS LEFT", 1},
};

void posctl_render_certificates(FILE *out, const json_t *devices, int64_t days)
{
  size_t i, count = json_array_size(devices), expired = 0;
  const json_t *device;
  posctl_table *table;
  int64_t left = 0;

  if (count == 0) {
    fprintf(out, "no device's certificate expires within %" PRId64 " days (as of each "
            "device's last heartbeat)\n", days);
    return;
  }
  table = posctl_table_create(render_certificate_columns, sizeof(render_certificate_columns) /
                                                              sizeof(render_certificate_columns[0]));
  if (!table)
    return;
  json_array_foreach(devices, i, device) {
    posctl_table_add(table, render_str(device, "store_id") ? render_str(device, "store_id") : "-");
    posctl_table_add(table, render_str(device, "device_id") ? render_str(device, "device_id")
                                                            : "-");
    posctl_table_add(table, render_str(device, "cert_not_after")
                                ? render_str(device, "cert_not_after") : "-");
    if (!render_int(device, "cert_days_left", &left) && left < 0) {
      posctl_table_add(table, "EXPIRED");
      expired++;
    } else {
      posctl_table_addf(table, "%" PRId64, left);
    }
  }
  posctl_table_print(table, out);
  posctl_table_destroy(table);
  fprintf(out, "\n%zu device%s expiring within %" PRId64 " days, %zu expired already%s\n", count,
          count == 1 ? "" : "s", days, expired,
          expired ? ": a device with an expired certificate cannot renew it itself; it needs "
                    "a new enrolment" : "");
}

/* "3 (oldest 2m)" for a backlog, "0" when nothing waits. */
static char *render_backlog(const json_t *object, char *out, size_t out_size)
{
  char count[POSCTL_TEXT_MAX], age[POSCTL_TEXT_MAX];
  int64_t unsent, oldest;
  if (render_int(object, "unsent_sales", &unsent)) {
    snprintf(out, out_size, "-");
    return out;
  }
  posctl_format_count(unsent, count, sizeof(count));
  if (unsent > 0 && !render_int(object, "oldest_unsent_age_s", &oldest))
    snprintf(out, out_size, "%s (oldest %s)", count, posctl_format_age(oldest, age, sizeof(age)));
  else
    snprintf(out, out_size, "%s", count);
  return out;
}

/* The journal line of a device: sales held, last seq, oldest sale, full. */
static char *render_journal(const json_t *device, char *out, size_t out_size)
{
  char count[POSCTL_TEXT_MAX];
  int64_t sales = 0, last_seq = 0;
  const char *oldest = render_str(device, "oldest_sale");
  int have_sales = !render_int(device, "journaled_sales", &sales);
  render_int(device, "last_seq", &last_seq);
  snprintf(out, out_size, "%s sales, last seq %" PRId64 "%s%s%s%s",
           have_sales ? posctl_format_count(sales, count, sizeof(count)) : "-", last_seq,
           oldest ? ", oldest sale " : "", oldest ? oldest : "",
           render_bool(device, "sales_deleted") == 1 ? " (older ones deleted)" : "",
           render_bool(device, "journal_full") == 1 ? "; FULL: the device refuses sales" : "");
  return out;
}

static void render_device(FILE *out, const json_t *device, int64_t now_ms)
{
  char text[512], when[POSCTL_PROGRESS_MAX];
  const char *firmware = render_str(device, "firmware_version");
  const char *problem = render_str(device, "uplink_problem");
  const char *reset = render_str(device, "journal_reset_reason");
  int64_t n;
  fprintf(out, "\ndevice %s\n", render_str(device, "device_id") ? render_str(device, "device_id")
                                                               : "-");
  render_kv(out, "  ", "last heartbeat",
            render_when(render_str(device, "last_heartbeat"), now_ms, "never", when,
                        sizeof(when)));
  render_kv(out, "  ", "last batch",
            render_when(render_str(device, "last_batch"), now_ms, "none since the collector "
                        "started", when, sizeof(when)));
  if (!render_str(device, "last_heartbeat")) {
    /* Versions, backlog, journal and certificate come with heartbeats only. */
    fprintf(out, "  (no heartbeat since the collector started: versions, backlog and journal "
            "not known)\n");
    return;
  }
  snprintf(text, sizeof(text), "%s%s%s%s", render_str(device, "agent_version") ?
           render_str(device, "agent_version") : "-", firmware ? " (firmware " : "",
           firmware ? firmware : "", firmware ? ")" : "");
  render_kv(out, "  ", "agent", text);
  render_kv(out, "  ", "unsent sales", render_backlog(device, text, sizeof(text)));
  render_kv(out, "  ", "journal", render_journal(device, text, sizeof(text)));
  render_kv(out, "  ", "clock drift", render_int(device, "clock_drift_ms", &n) ? "-" :
            posctl_format_drift(n, text, sizeof(text)));
  if (!render_int(device, "cert_days_left", &n)) {
    snprintf(when, sizeof(when), "%s", render_str(device, "cert_not_after") ?
             render_str(device, "cert_not_after") : "-");
    if (n < 0)
      snprintf(text, sizeof(text), "EXPIRED on %s", when);
    else
      snprintf(text, sizeof(text), "expires %s (%" PRId64 " days left)", when, n);
    render_kv(out, "  ", "certificate", text);
  }
  if (!render_int(device, "disk_free_bytes", &n))
    render_kv(out, "  ", "disk free", posctl_format_bytes(n, text, sizeof(text)));
  if (problem && *problem)
    render_kv(out, "  ", "uplink problem", problem);
  if (reset && *reset)
    render_kv(out, "  ", "journal reset", reset);
}

int posctl_render_store(FILE *out, const json_t *answer, int64_t now_ms)
{
  const json_t *store = json_object_get(answer, "store"), *devices, *device, *resync;
  char text[512], when[POSCTL_PROGRESS_MAX];
  size_t i;
  int64_t n;
  if (!json_is_object(store))
    return -1;
  render_kv(out, "", "store", render_str(store, "store_id"));
  render_kv(out, "", "last contact",
            render_when(render_str(store, "last_contact"), now_ms, "never", when, sizeof(when)));
  render_kv(out, "", "unsent sales", render_backlog(store, text, sizeof(text)));
  render_kv(out, "", "lagging", render_bool(store, "lagging") == 1 ? "yes" : "no");
  if (!render_int(store, "open_commands", &n)) {
    snprintf(text, sizeof(text), "%" PRId64, n);
    render_kv(out, "", "open commands", text);
  }
  resync = json_object_get(store, "resync");
  if (json_is_object(resync)) {
    char progress[POSCTL_TEXT_MAX];
    snprintf(text, sizeof(text), "%s, %s, sales replayed %s", render_str(resync, "command_id") ?
             render_str(resync, "command_id") : "-", render_str(resync, "state") ?
             render_str(resync, "state") : "-", render_progress(resync, progress,
                                                                sizeof(progress)));
    render_kv(out, "", "last resync", text);
  }
  devices = json_object_get(store, "devices");
  json_array_foreach(devices, i, device)
    render_device(out, device, now_ms);
  if (json_is_array(json_object_get(store, "commands"))) {
    fprintf(out, "\ncommands\n");
    posctl_render_commands(out, json_object_get(store, "commands"), now_ms,
                           "none recorded for this store");
  }
  return 0;
}
