/*
 * commands.c - posctl's commands, one function each (posctl.h). Each asks
 * the admin API once (or follows a command with --wait), prints the
 * answer for people or as JSON, and returns the exit code.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "posctl/format.h"
#include "posctl/posctl.h"
#include "posctl/render.h"

/* A GET answered 503 with Retry-After (the collector is loading its commands, which
 * takes longer the more stores there are) is asked this often more: a minute at the
 * collector's Retry-After of 2 s. */
#define COMMANDS_GET_RETRIES 30

int64_t posctl_now_ms(void)
{
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

void posctl_print_json(const json_t *json)
{
  json_dumpf(json, stdout, JSON_INDENT(2));
  fputc('\n', stdout);
  fflush(stdout);
}

/* Prints the message of a request that did not succeed; returns its exit code. */
static int commands_failed(int rc, const struct posctl_answer *answer)
{
  fprintf(stderr, "posctl: %s\n", answer->message);
  return rc;
}

/* An answer without the member it must have: not our collector, or a bug. */
static int commands_bad_answer(const char *what, const char *path)
{
  fprintf(stderr, "posctl: the collector's answer to %s has no %s: is --url the collector's "
          "address (and is it as new as posctl)?\n", path, what);
  return POSCTL_EXIT_UNREACHABLE;
}

/* The answer's "now" when it has one (the collector's clock), else ours. */
static int64_t commands_now(const json_t *answer)
{
  const json_t *now = json_object_get(answer, "now");
  char err[256];
  int64_t ms;
  if (json_is_string(now) && posctl_parse_time(json_string_value(now), &ms, err, sizeof(err)) == 0)
    return ms;
  return posctl_now_ms();
}

static void commands_print_warnings(const json_t *answer)
{
  const json_t *warnings = json_object_get(answer, "warnings"), *warning;
  size_t i;
  json_array_foreach(warnings, i, warning)
    if (json_is_string(warning))
      fprintf(stderr, "posctl: warning: %s\n", json_string_value(warning));
}

/* After POST resync/push-now: the command issued, said for people. */
static void commands_print_issued(const json_t *command)
{
  const json_t *targets = json_object_get(command, "target_devices"), *target;
  const char *id = json_string_value(json_object_get(command, "command_id"));
  const char *kind = json_string_value(json_object_get(command, "kind"));
  const char *from = json_string_value(json_object_get(command, "from"));
  const char *to = json_string_value(json_object_get(command, "to"));
  size_t i;
  printf("%s %s issued for store %s", kind ? kind : "command", id ? id : "?",
         json_string_value(json_object_get(command, "store_id")) ?
             json_string_value(json_object_get(command, "store_id")) : "?");
  if (from)
    printf(", sales from %s to %s", from, to ? to : "the newest when the device starts it");
  printf("\nstate %s; target devices: ",
         json_string_value(json_object_get(command, "state")) ?
             json_string_value(json_object_get(command, "state")) : "?");
  if (json_array_size(targets) == 0)
    printf("none known yet (the first device of the store that reports takes it)");
  json_array_foreach(targets, i, target)
    printf("%s%s", i ? ", " : "", json_is_string(target) ? json_string_value(target) : "?");
  printf("\nfollow it: posctl command %s   (stop it: posctl cancel %s)\n", id ? id : "ID",
         id ? id : "ID");
}

/* How often a POST of a new command is resent (same request_id) on a 503 or no answer. */
#define COMMANDS_POST_RETRIES 10

/* A random request_id, one per invocation: "posctl-" and 32 hex digits. */
static void commands_request_id(char out[48])
{
  unsigned char random[16] = {0};
  FILE *source = fopen("/dev/urandom", "rb");
  size_t got = source ? fread(random, 1, sizeof(random), source) : 0;
  int n = snprintf(out, 48, "posctl-");

  if (source)
    fclose(source);
  if (got != sizeof(random)) {
    /* No entropy source: time and pid still keep two invocations apart. */
    unsigned long long mix = (unsigned long long)time(NULL) * 6364136223846793005ULL ^
                             (unsigned long long)getpid() ^ (unsigned long long)clock();
    memcpy(random, &mix, sizeof(mix));
  }
  for (size_t i = 0; i < sizeof(random); i++)
    n += snprintf(out + n, (size_t)(48 - n), "%02x", random[i]);
}

/* POSTs a new command (resync or push-now) and, with --wait, follows it. */
static int commands_issue(const struct posctl_run *run, const struct posctl_args *args,
                          const char *path, json_t *body)
{
  struct posctl_answer answer;
  const json_t *command;
  char request_id[48];
  int rc;

  /* Resending it is safe: the collector returns the command this request_id made. */
  commands_request_id(request_id);
  json_object_set_new(body, "request_id", json_string(request_id));
  rc = posctl_request(&run->target, "POST", path, body, COMMANDS_POST_RETRIES, &answer);
  const char *id;
  int64_t timeout_s = 0;
  char err[256];
  if (rc != POSCTL_EXIT_OK) {
    rc = commands_failed(rc, &answer);
    goto out;
  }
  command = json_object_get(answer.json, "command");
  id = json_string_value(json_object_get(command, "command_id"));
  if (!id) {
    rc = commands_bad_answer("\"command\" with a command_id", path);
    goto out;
  }
  commands_print_warnings(answer.json);
  if (!args->wait) {
    if (run->json)
      posctl_print_json(answer.json);
    else
      commands_print_issued(command);
    goto out;
  }
  if (!run->json)
    fprintf(stderr, "posctl: %s issued; waiting for it to finish (Ctrl-C stops waiting, not "
            "the command)\n", id);
  if (args->timeout)
    posctl_parse_duration(args->timeout, &timeout_s, err, sizeof(err));
  rc = posctl_wait(run, id, timeout_s);
out:
  posctl_answer_clear(&answer);
  return rc;
}

int posctl_cmd_resync(const struct posctl_run *run, const struct posctl_args *args)
{
  char err[256], from_text[POSCTL_TEXT_MAX], to_text[POSCTL_TEXT_MAX];
  int64_t from_ms, to_ms = 0;
  json_t *body;
  int rc;
  if (posctl_parse_time(args->from, &from_ms, err, sizeof(err)) ||
      (args->to && posctl_parse_time(args->to, &to_ms, err, sizeof(err)))) {
    fprintf(stderr, "posctl resync: %s\n", err);
    return POSCTL_EXIT_USAGE;
  }
  body = json_pack("{s:s, s:s}", "store_id", args->store, "from",
                   posctl_format_time(from_ms, from_text, sizeof(from_text)));
  if (args->to)
    json_object_set_new(body, "to", json_string(posctl_format_time(to_ms, to_text,
                                                                   sizeof(to_text))));
  if (args->device)
    json_object_set_new(body, "device_id", json_string(args->device));
  rc = commands_issue(run, args, "/v1/admin/resync", body);
  json_decref(body);
  return rc;
}

int posctl_cmd_push_now(const struct posctl_run *run, const struct posctl_args *args)
{
  json_t *body = json_pack("{s:s}", "store_id", args->store);
  int rc;
  if (args->device)
    json_object_set_new(body, "device_id", json_string(args->device));
  rc = commands_issue(run, args, "/v1/admin/push-now", body);
  json_decref(body);
  return rc;
}

/* GETs `path`; on success *answer holds the JSON. */
static int commands_get(const struct posctl_run *run, const char *path,
                        struct posctl_answer *answer)
{
  int rc = posctl_request(&run->target, "GET", path, NULL, COMMANDS_GET_RETRIES, answer);
  if (rc != POSCTL_EXIT_OK)
    commands_failed(rc, answer);
  return rc;
}

int posctl_cmd_commands(const struct posctl_run *run, const struct posctl_args *args)
{
  char path[512], empty[512];
  struct posctl_answer answer;
  int rc;
  snprintf(path, sizeof(path), "/v1/admin/commands?state=%s", args->all ? "all" : "open");
  if (args->store) {
    snprintf(path + strlen(path), sizeof(path) - strlen(path), "&store_id=");
    posctl_append_escaped(path, sizeof(path), args->store);
  }
  rc = commands_get(run, path, &answer);
  if (rc != POSCTL_EXIT_OK)
    goto out;
  if (!json_is_array(json_object_get(answer.json, "commands"))) {
    rc = commands_bad_answer("\"commands\" list", path);
    goto out;
  }
  if (run->json) {
    posctl_print_json(answer.json);
    goto out;
  }
  snprintf(empty, sizeof(empty), "no %scommands%s%s%s", args->all ? "" : "open ",
           args->store ? " for store " : "", args->store ? args->store : "",
           args->all ? "" : " ('posctl commands --all' lists finished ones too)");
  posctl_render_commands(stdout, json_object_get(answer.json, "commands"), posctl_now_ms(),
                         empty);
out:
  posctl_answer_clear(&answer);
  return rc;
}

/* GET or POST on one command: /v1/admin/commands/<id><suffix>. */
static int commands_one(const struct posctl_run *run, const char *id, const char *method,
                        const char *suffix, struct posctl_answer *answer)
{
  char path[512] = "/v1/admin/commands/";
  int rc;
  if (posctl_append_escaped(path, sizeof(path), id) ||
      strlen(path) + strlen(suffix) >= sizeof(path)) {
    memset(answer, 0, sizeof(*answer));
    fprintf(stderr, "posctl: the command id \"%.40s...\" is too long to be one\n", id);
    return POSCTL_EXIT_USAGE;
  }
  snprintf(path + strlen(path), sizeof(path) - strlen(path), "%s", suffix);
  if (strcmp(method, "GET") == 0)
    return commands_get(run, path, answer);
  rc = posctl_request(&run->target, method, path, NULL, 0, answer);
  if (rc != POSCTL_EXIT_OK)
    commands_failed(rc, answer);
  else if (!json_is_object(json_object_get(answer->json, "command")))
    rc = commands_bad_answer("\"command\" object", path);
  return rc;
}

int posctl_cmd_command(const struct posctl_run *run, const struct posctl_args *args)
{
  struct posctl_answer answer;
  int rc = commands_one(run, args->id, "GET", "", &answer);
  if (rc != POSCTL_EXIT_OK)
    goto out;
  if (run->json)
    posctl_print_json(answer.json);
  else if (posctl_render_command(stdout, json_object_get(answer.json, "command"),
                                 posctl_now_ms()))
    rc = commands_bad_answer("\"command\" object", "GET /v1/admin/commands/<id>");
out:
  posctl_answer_clear(&answer);
  return rc;
}

int posctl_cmd_cancel(const struct posctl_run *run, const struct posctl_args *args)
{
  struct posctl_answer answer;
  const json_t *command;
  int rc = commands_one(run, args->id, "POST", "/cancel", &answer);
  if (rc != POSCTL_EXIT_OK)
    goto out;
  command = json_object_get(answer.json, "command");
  if (run->json) {
    posctl_print_json(answer.json);
  } else {
    const char *store = json_string_value(json_object_get(command, "store_id"));
    const char *state = json_string_value(json_object_get(command, "state"));
    printf("%s of store %s is %s; a device that runs it stops at its next contact "
           "(what it already sent stays in Kafka)\n", args->id, store ? store : "?",
           state ? state : "?");
  }
out:
  posctl_answer_clear(&answer);
  return rc;
}

int posctl_cmd_stores(const struct posctl_run *run, const struct posctl_args *args)
{
  char path[256] = "/v1/admin/stores", text[POSCTL_TEXT_MAX], err[256];
  struct posctl_answer answer;
  const json_t *stores;
  int64_t lagging = 0;
  int rc;
  if (args->lagging) {
    posctl_parse_duration(args->lagging, &lagging, err, sizeof(err));
    snprintf(path, sizeof(path), "/v1/admin/stores?lagging=%s",
             posctl_format_duration(lagging, text, sizeof(text)));
  }
  rc = commands_get(run, path, &answer);
  if (rc != POSCTL_EXIT_OK)
    goto out;
  stores = json_object_get(answer.json, "stores");
  if (!json_is_array(stores)) {
    rc = commands_bad_answer("\"stores\" list", path);
    goto out;
  }
  if (run->json)
    posctl_print_json(answer.json);
  else
    posctl_render_stores(stdout, answer.json, commands_now(answer.json), lagging);
  /* The answer lists only the stores lagging by that much: any at all is news. */
  if (lagging > 0 && json_array_size(stores) > 0)
    rc = POSCTL_EXIT_LAGGING;
out:
  posctl_answer_clear(&answer);
  return rc;
}

int posctl_cmd_store(const struct posctl_run *run, const struct posctl_args *args)
{
  char path[512] = "/v1/admin/stores/";
  struct posctl_answer answer;
  int rc;
  if (posctl_append_escaped(path, sizeof(path), args->id)) {
    fprintf(stderr, "posctl: the store id \"%.40s...\" is too long to be one\n", args->id);
    return POSCTL_EXIT_USAGE;
  }
  rc = commands_get(run, path, &answer);
  if (rc != POSCTL_EXIT_OK)
    goto out;
  if (!json_is_object(json_object_get(answer.json, "store"))) {
    rc = commands_bad_answer("\"store\" object", path);
    goto out;
  }
  if (run->json)
    posctl_print_json(answer.json);
  else
    posctl_render_store(stdout, answer.json, commands_now(answer.json));
out:
  posctl_answer_clear(&answer);
  return rc;
}

int posctl_parse_days(const char *text, int64_t *days, char *err, size_t err_size)
{
  char *end = NULL;
  long long value;

  errno = 0;
  value = strtoll(text, &end, 10);
  if (errno || end == text || *end || value < 0 || value > 36500) {
    snprintf(err, err_size, "--expiring wants a whole number of days from 0 to 36500, not '%s'",
             text);
    return -1;
  }
  *days = value;
  return 0;
}

/* Orders devices by days left, nearest expiry first. */
static int commands_by_days_left(const void *a, const void *b)
{
  json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "cert_days_left"));
  json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "cert_days_left"));
  return x < y ? -1 : x > y;
}

int posctl_cmd_certificates(const struct posctl_run *run, const struct posctl_args *args)
{
  const char *path = "/v1/admin/stores";
  struct posctl_answer answer;
  const json_t *stores, *store, *device;
  json_t **found = NULL, *list = NULL;
  size_t i, j, count = 0, capacity = 0;
  int64_t days = 30;
  char err[256];
  int rc;

  if (args->expiring && posctl_parse_days(args->expiring, &days, err, sizeof(err)))
    return POSCTL_EXIT_USAGE; /* checked before: not reached */
  rc = commands_get(run, path, &answer);
  if (rc != POSCTL_EXIT_OK)
    goto out;
  stores = json_object_get(answer.json, "stores");
  if (!json_is_array(stores)) {
    rc = commands_bad_answer("\"stores\" list", path);
    goto out;
  }
  /* Devices without a heartbeat yet have no certificate figures: not listed. */
  json_array_foreach(stores, i, store) {
    json_array_foreach(json_object_get(store, "devices"), j, device) {
      json_t *left = json_object_get(device, "cert_days_left");
      if (!json_is_integer(left) || json_integer_value(left) > days)
        continue;
      if (count == capacity) {
        size_t grown = capacity ? capacity * 2 : 16;
        json_t **bigger = realloc(found, grown * sizeof(*found));
        if (!bigger) {
          fprintf(stderr, "posctl: out of memory\n");
          rc = POSCTL_EXIT_UNREACHABLE;
          goto out;
        }
        found = bigger;
        capacity = grown;
      }
      found[count] = json_pack("{s:O?, s:O?, s:O?, s:O}", "store_id",
                               json_object_get(store, "store_id"), "device_id",
                               json_object_get(device, "device_id"), "cert_not_after",
                               json_object_get(device, "cert_not_after"), "cert_days_left", left);
      if (!found[count]) {
        fprintf(stderr, "posctl: out of memory\n");
        rc = POSCTL_EXIT_UNREACHABLE;
        goto out;
      }
      count++;
    }
  }
  if (count > 1)
    qsort(found, count, sizeof(*found), commands_by_days_left);
  list = json_array();
  for (i = 0; i < count; i++)
    json_array_append_new(list, found[i]);
  count = json_array_size(list);
  free(found);
  found = NULL;
  if (run->json) {
    json_t *out = json_pack("{s:O, s:I, s:O}", "now", json_object_get(answer.json, "now"),
                            "expiring_days", (json_int_t)days, "devices", list);
    posctl_print_json(out);
    json_decref(out);
  } else
    posctl_render_certificates(stdout, list, days);
  /* Any listed is news, as for stores --lagging. */
  if (count > 0)
    rc = POSCTL_EXIT_LAGGING;
out:
  free(found);
  json_decref(list);
  posctl_answer_clear(&answer);
  return rc;
}

/*
 * POST /v1/admin/enrol-tokens, once: a retry after a lost answer would make
 * a second token (the first, never seen, expires unused). The token alone on
 * stdout (the API's JSON with --json), what it is for on stderr.
 */
int posctl_cmd_enrol_token(const struct posctl_run *run, const struct posctl_args *args)
{
  json_t *body = json_pack("{s:s, s:s}", "store_id", args->store, "device_id", args->device);
  struct posctl_answer answer;
  const char *token, *expires;
  int rc;

  if (args->valid_for)
    json_object_set_new(body, "valid_for", json_string(args->valid_for));
  rc = posctl_request(&run->target, "POST", "/v1/admin/enrol-tokens", body, 0, &answer);
  json_decref(body);
  if (rc != POSCTL_EXIT_OK) {
    rc = commands_failed(rc, &answer);
    goto out;
  }
  token = json_string_value(json_object_get(answer.json, "token"));
  expires = json_string_value(json_object_get(answer.json, "expires_at"));
  if (!token || !expires) {
    rc = commands_bad_answer("token and expires_at", "/v1/admin/enrol-tokens");
    goto out;
  }
  if (run->json) {
    posctl_print_json(answer.json);
  } else {
    printf("%s\n", token);
    fflush(stdout);
    fprintf(stderr, "posctl: enrolment token for device %s of store %s, usable once until %s\n",
            args->device, args->store, expires);
  }
out:
  posctl_answer_clear(&answer);
  return rc;
}

int posctl_cmd_decommission(const struct posctl_run *run, const struct posctl_args *args)
{
  char path[128];
  struct posctl_answer answer;
  json_t *body = json_object();
  int rc;

  snprintf(path, sizeof(path), "/v1/admin/stores/%s/%s", args->store,
           args->undo ? "recommission" : "decommission");
  rc = posctl_request(&run->target, "POST", path, body, COMMANDS_POST_RETRIES, &answer);
  json_decref(body);
  if (rc != POSCTL_EXIT_OK) {
    rc = commands_failed(rc, &answer);
  } else if (run->json) {
    posctl_print_json(answer.json);
  } else {
    printf("store %s %s\n", args->store,
           args->undo ? "is in service again: its devices may enrol and renew"
                      : "decommissioned: its devices get no new certificate");
  }
  posctl_answer_clear(&answer);
  return rc;
}
