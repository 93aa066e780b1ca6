/*
 * commands.c - a head-office command's life cycle (control.h): issued,
 * reported on by its target devices, cancelled; each change of state
 * produced again, whole, to pos.control.v1.
 *
 * A command's record in Kafka and its state in memory may differ for a
 * moment: `recorded_state` is what Kafka acknowledged, and at most one
 * record of a command is in flight (`recording`), so that two records of one
 * key never race. A state Kafka did not take is produced again at the
 * store's next heartbeat.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "control/control_int.h"
#include "platform/clock.h"
#include "platform/log.h"

enum control_purpose {
  CONTROL_OP_ISSUE = 1,
  CONTROL_OP_CANCEL,
  CONTROL_OP_STATE,
  CONTROL_OP_PRUNE,
  CONTROL_OP_REISSUE /* a retry of an issue whose first record Kafka did not acknowledge */
};

/* Pruning looks at every command: at most this often (or keep_finished, if shorter). */
#define CONTROL_PRUNE_INTERVAL_MS 60000

/* One record of pos.control.v1 waiting for Kafka. */
struct control_op {
  control *c;
  enum control_purpose purpose;
  char command_id[CONTROL_COMMAND_ID_MAX + 1];
  struct control_command *fresh; /* ISSUE: the command, put in the map once recorded */
  int state;                     /* the state the record holds */
  int targets;                   /* STATE: the record carries changed targets */
  char admin[CONTROL_ID_MAX + 1];
  control_done_fn done;
  void *arg;
};

const char *control_state_name(int state)
{
  switch (state) {
  case POS__V1__COMMAND_STATE__COMMAND_STATE_PENDING:
    return "pending";
  case POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING:
    return "running";
  case POS__V1__COMMAND_STATE__COMMAND_STATE_DONE:
    return "done";
  case POS__V1__COMMAND_STATE__COMMAND_STATE_INCOMPLETE:
    return "incomplete";
  case POS__V1__COMMAND_STATE__COMMAND_STATE_FAILED:
    return "failed";
  case POS__V1__COMMAND_STATE__COMMAND_STATE_CANCELLED:
    return "cancelled";
  }
  return "unknown";
}

int control_state_final(int state)
{
  return state >= POS__V1__COMMAND_STATE__COMMAND_STATE_DONE &&
         state <= POS__V1__COMMAND_STATE__COMMAND_STATE_CANCELLED;
}

void control__command_free(struct control_command *command)
{
  if (!command)
    return;
  free(command->targets);
  free(command->reports);
  free(command);
}

struct control_command *control__command_find(const struct control_map *map,
                                              const char *command_id)
{
  struct control_command *command;

  if (!map->commands)
    return NULL;
  command = map->commands[control__hash(command_id) % map->bucket_count];
  while (command && strcmp(command->command_id, command_id) != 0)
    command = command->next_by_id;
  return command;
}

void control__command_remove(struct control_map *map, const char *command_id)
{
  struct control_command **link, *command;
  struct control_store *store;

  if (!map->commands)
    return;
  link = &map->commands[control__hash(command_id) % map->bucket_count];
  while (*link && strcmp((*link)->command_id, command_id) != 0)
    link = &(*link)->next_by_id;
  command = *link;
  if (!command)
    return;
  *link = command->next_by_id;
  map->command_count--;
  store = control__store_find(map, command->store_id);
  for (size_t i = 0; store && i < store->command_count; i++) {
    if (store->commands[i] == command) {
      memmove(&store->commands[i], &store->commands[i + 1],
              (store->command_count - i - 1) * sizeof(*store->commands));
      store->command_count--;
      break;
    }
  }
  control__command_free(command);
}

int control__command_put(struct control_map *map, struct control_command *command)
{
  struct control_store *store;
  size_t bucket, at;

  control__command_remove(map, command->command_id);
  store = control__store_get(map, command->store_id);
  if (!store ||
      map->command_count >= (map->max_commands ? map->max_commands : CONTROL_MAX_COMMANDS))
    goto fail;
  if (store->command_count == store->command_capacity) {
    size_t capacity = store->command_capacity ? 2 * store->command_capacity : 8;
    struct control_command **grown = realloc(store->commands, capacity * sizeof(*grown));
    if (!grown)
      goto fail;
    store->commands = grown;
    store->command_capacity = capacity;
  }
  /* Kept in the order issued: ids of one second differ by their random tail. */
  at = store->command_count;
  while (at > 0 && store->commands[at - 1]->issued_ms > command->issued_ms)
    at--;
  memmove(&store->commands[at + 1], &store->commands[at],
          (store->command_count - at) * sizeof(*store->commands));
  store->commands[at] = command;
  store->command_count++;
  bucket = control__hash(command->command_id) % map->bucket_count;
  command->next_by_id = map->commands[bucket];
  map->commands[bucket] = command;
  map->command_count++;
  return 0;
fail:
  control__command_free(command);
  return -1;
}

/* Copies at most `size` - 1 bytes of `text` (may be NULL). */
static void control_copy(char *out, size_t size, const char *text)
{
  snprintf(out, size, "%s", text ? text : "");
}

static int control_report_from_proto(struct control_report *report,
                                     const Pos__V1__CommandReport *proto, const char *device_id)
{
  control_copy(report->device_id, sizeof(report->device_id), device_id);
  report->state = (int)proto->state;
  report->done_sales = proto->done_sales;
  report->total_sales = proto->total_sales;
  report->available_from_ms = proto->available_from_ms;
  report->updated_ms = proto->updated_ms;
  control_copy(report->message, sizeof(report->message), proto->message);
  return 0;
}

struct control_command *control__command_from_proto(const Pos__V1__Command *proto)
{
  struct control_command *command;

  if ((proto->command_case != POS__V1__COMMAND__COMMAND_RESYNC &&
       proto->command_case != POS__V1__COMMAND__COMMAND_PUSH_NOW) ||
      !proto->command_id || !proto->command_id[0] ||
      strlen(proto->command_id) > CONTROL_COMMAND_ID_MAX || !proto->store_id ||
      !proto->store_id[0] || strlen(proto->store_id) > CONTROL_ID_MAX)
    return NULL;
  command = calloc(1, sizeof(*command));
  if (!command)
    return NULL;
  command->targets = calloc(proto->n_target_devices + 1, sizeof(*command->targets));
  command->reports = calloc(proto->n_reports + 1, sizeof(*command->reports));
  if (!command->targets || !command->reports) {
    control__command_free(command);
    return NULL;
  }
  control_copy(command->command_id, sizeof(command->command_id), proto->command_id);
  control_copy(command->store_id, sizeof(command->store_id), proto->store_id);
  command->kind = proto->command_case == POS__V1__COMMAND__COMMAND_RESYNC ? CONTROL_RESYNC
                                                                          : CONTROL_PUSH_NOW;
  if (command->kind == CONTROL_RESYNC) {
    command->from_ms = proto->resync->from_business_time_ms;
    command->to_ms = proto->resync->to_business_time_ms;
  }
  command->issued_ms = proto->issued_ms;
  control_copy(command->issued_by, sizeof(command->issued_by), proto->issued_by);
  control_copy(command->request_id, sizeof(command->request_id), proto->request_id);
  command->state = (int)proto->state;
  command->recorded_state = command->state;
  command->updated_ms = proto->updated_ms;
  control_copy(command->updated_by, sizeof(command->updated_by), proto->updated_by);
  for (size_t i = 0; i < proto->n_target_devices && i < CONTROL_MAX_TARGETS; i++)
    control_copy(command->targets[command->target_count++], CONTROL_ID_MAX + 1,
                 proto->target_devices[i]);
  for (size_t i = 0; i < proto->n_reports && i < CONTROL_MAX_TARGETS; i++)
    control_report_from_proto(&command->reports[command->report_count++], proto->reports[i],
                              proto->reports[i]->device_id);
  return command;
}

/* The protobuf of a command (strings borrowed from it). */
struct control_proto {
  Pos__V1__Command command;
  Pos__V1__Resync resync;
  Pos__V1__PushNow push_now;
};

static void control_proto_fill(struct control_proto *p, const struct control_command *command)
{
  pos__v1__command__init(&p->command);
  pos__v1__resync__init(&p->resync);
  pos__v1__push_now__init(&p->push_now);
  p->command.command_id = (char *)command->command_id;
  p->command.store_id = (char *)command->store_id;
  p->command.issued_ms = command->issued_ms;
  p->command.issued_by = (char *)command->issued_by;
  p->command.request_id = (char *)command->request_id;
  if (command->kind == CONTROL_RESYNC) {
    p->resync.resync_id = (char *)command->command_id;
    p->resync.from_business_time_ms = command->from_ms;
    p->resync.to_business_time_ms = command->to_ms;
    p->command.command_case = POS__V1__COMMAND__COMMAND_RESYNC;
    p->command.resync = &p->resync;
  } else {
    p->command.command_case = POS__V1__COMMAND__COMMAND_PUSH_NOW;
    p->command.push_now = &p->push_now;
  }
  p->command.state = (Pos__V1__CommandState)command->state;
  p->command.updated_ms = command->updated_ms;
  p->command.updated_by = (char *)command->updated_by;
}

/* The control.v1 value of `command` with its targets and reports; NULL when out of memory. */
static uint8_t *control_pack(const struct control_command *command, size_t *len)
{
  struct control_proto p;
  char **targets = calloc(command->target_count + 1, sizeof(*targets));
  Pos__V1__CommandReport *reports = calloc(command->report_count + 1, sizeof(*reports));
  Pos__V1__CommandReport **report_ptrs = calloc(command->report_count + 1, sizeof(*report_ptrs));
  uint8_t *value = NULL;

  if (!targets || !reports || !report_ptrs)
    goto out;
  control_proto_fill(&p, command);
  for (size_t i = 0; i < command->target_count; i++)
    targets[i] = (char *)command->targets[i];
  for (size_t i = 0; i < command->report_count; i++) {
    const struct control_report *r = &command->reports[i];
    pos__v1__command_report__init(&reports[i]);
    reports[i].command_id = (char *)command->command_id;
    reports[i].device_id = (char *)r->device_id;
    reports[i].state = (Pos__V1__CommandState)r->state;
    reports[i].done_sales = r->done_sales;
    reports[i].total_sales = r->total_sales;
    reports[i].available_from_ms = r->available_from_ms;
    reports[i].message = (char *)r->message;
    reports[i].updated_ms = r->updated_ms;
    report_ptrs[i] = &reports[i];
  }
  p.command.target_devices = targets;
  p.command.n_target_devices = command->target_count;
  p.command.reports = report_ptrs;
  p.command.n_reports = command->report_count;
  *len = pos__v1__command__get_packed_size(&p.command);
  value = malloc(*len + 1);
  if (value)
    pos__v1__command__pack(&p.command, value);
out:
  free(targets);
  free(reports);
  free(report_ptrs);
  return value;
}

static void control_op_done(void *arg, const struct ingest_result *result);

/*
 * Produces `command` as it is now, for `op` (taken). Returns 0 (op's
 * completion runs later, or at once when Kafka refused it), or -1 out of
 * memory (op freed, nothing produced).
 */
static int control_record(control *c, const struct control_command *command,
                          struct control_op *op)
{
  char key[CONTROL_ID_MAX + CONTROL_COMMAND_ID_MAX + 16];
  size_t len = 0;
  uint8_t *value = control_pack(command, &len);

  if (!value) {
    free(op);
    return -1;
  }
  op->c = c;
  op->state = command->state;
  control_copy(op->command_id, sizeof(op->command_id), command->command_id);
  snprintf(key, sizeof(key), "%s/command/%s", command->store_id, command->command_id);
  ingest_submit_control(c->ingest, key, value, len, control_op_done, op);
  return 0;
}

/* Records a state Kafka does not hold yet, unless a record of it is in flight. */
static void control_commit(control *c, struct control_command *command)
{
  int targets = command->unrecorded_targets;
  struct control_op *op;

  if (command->recording ||
      (command->state == command->recorded_state && !command->unrecorded_targets))
    return;
  op = calloc(1, sizeof(*op));
  if (!op)
    return;
  op->purpose = CONTROL_OP_STATE;
  op->targets = targets;
  command->recording = 1;
  command->unrecorded_targets = 0;
  if (control_record(c, command, op)) {
    command->recording = 0;
    command->unrecorded_targets = targets;
  }
}

static void control_op_issued(control *c, struct control_op *op, int ok, const char *message)
{
  struct control_command *command = op->fresh;
  char id[CONTROL_COMMAND_ID_MAX + 1];
  char text[600];

  if (op->purpose == CONTROL_OP_REISSUE) {
    command = control__command_find(&c->map, op->command_id);
    if (command)
      command->recording = 0;
    if (!ok || !command) {
      snprintf(text, sizeof(text), "%s; retrying the same request with the same request_id is "
               "safe", ok ? "the command went away while it was recorded" : message);
      op->done(op->arg, 503, NULL, text);
      return;
    }
    command->recorded_state = op->state;
    control_commit(c, command);
    op->done(op->arg, 200, command, NULL);
    return;
  }

  control_copy(id, sizeof(id), command->command_id);
  if (!ok && command->request_id[0]) {
    /* The record may still land (the producer keeps trying): the command is kept,
     * unrecorded, so that a retry with the same request_id finds it, and the store's next
     * heartbeat records it again. */
    command->recorded_state = POS__V1__COMMAND_STATE__COMMAND_STATE_UNSPECIFIED;
    if (control__command_put(&c->map, command) == 0)
      log_warn("control", "command_unconfirmed", "command=%s store=%s request_id=%s", id,
               control__command_find(&c->map, id)->store_id,
               control__command_find(&c->map, id)->request_id);
  } else if (!ok) {
    control__command_free(command);
  }
  if (!ok) {
    snprintf(text, sizeof(text), "%s; the command may have been recorded all the same: "
             "retrying the same request with the same request_id is safe (it returns that "
             "command, never a second one)", message ? message : "Kafka did not acknowledge");
    op->done(op->arg, 503, NULL, text);
    return;
  }
  command->recorded_state = command->state;
  if (control__command_put(&c->map, command)) {
    op->done(op->arg, 503, NULL, "the command is recorded in Kafka but the collector is out of "
             "memory or holds its limit of commands: it takes effect at the collector's next "
             "start");
    return;
  }
  log_info("control", "command_issued", "command=%s store=%s issued_by=%s targets=%zu", id,
           command->store_id, command->issued_by, command->target_count);
  op->done(op->arg, 201, control__command_find(&c->map, id), NULL);
}

static void control_op_cancelled(control *c, struct control_op *op, int ok, const char *message)
{
  struct control_command *command = control__command_find(&c->map, op->command_id);
  char text[160];

  if (command)
    command->recording = 0;
  if (!ok || !command) {
    op->done(op->arg, 503, NULL, ok ? "the command went away while it was cancelled" : message);
    if (command)
      control_commit(c, command);
    return;
  }
  command->recorded_state = op->state;
  if (control_state_final(command->state)) {
    /* A report finished it while the cancel was on its way: Kafka holds
     * CANCELLED now, so the finished state is recorded again after it. */
    snprintf(text, sizeof(text), "the command finished (%s) before the cancel took effect",
             control_state_name(command->state));
    control_commit(c, command);
    op->done(op->arg, 409, NULL, text);
    return;
  }
  command->state = POS__V1__COMMAND_STATE__COMMAND_STATE_CANCELLED;
  command->recorded_state = command->state;
  command->updated_ms = clock_wall_ms();
  control_copy(command->updated_by, sizeof(command->updated_by), op->admin);
  log_warn("control", "command_cancelled", "command=%s store=%s cancelled_by=%s",
           command->command_id, command->store_id, op->admin);
  op->done(op->arg, 200, command, NULL);
}

/* A record of control_record is in Kafka, or is not (the ingest's answer). */
static void control_op_done(void *arg, const struct ingest_result *result)
{
  struct control_op *op = arg;
  control *c = op->c;
  int ok = result->outcome == INGEST_ACCEPTED;
  struct control_command *command;

  if (!ok)
    log_warn("control", "record_failed", "command=%s reason=\"%s\"", op->command_id,
             result->message);
  if (op->purpose == CONTROL_OP_PRUNE) {
    /* Gone from memory already; a tombstone Kafka did not take only means the command is
     * read back at the next start, and pruned again then. */
  } else if (op->purpose == CONTROL_OP_ISSUE || op->purpose == CONTROL_OP_REISSUE) {
    control_op_issued(c, op, ok, result->message);
  } else if (op->purpose == CONTROL_OP_CANCEL) {
    control_op_cancelled(c, op, ok, result->message);
  } else {
    command = control__command_find(&c->map, op->command_id);
    if (command) {
      command->recording = 0;
      if (!ok && op->targets)
        command->unrecorded_targets = 1;
      if (ok) {
        command->recorded_state = op->state;
        /* The state moved on while this record was in flight. */
        control_commit(c, command);
      }
    }
  }
  free(op);
}

/* Whether `command` may be dropped at `now`: finished long enough, Kafka holds that, and no
 * device still runs it (a cancelled one a device reports running is still carried in acks). */
static int control_prunable(const control *c, const struct control_command *command,
                            int64_t now)
{
  if (!control_state_final(command->state) || command->recording ||
      command->recorded_state != command->state || command->unrecorded_targets ||
      now - command->updated_ms < c->keep_finished_ms)
    return 0;
  for (size_t r = 0; r < command->report_count; r++) {
    if (command->reports[r].state == POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING)
      return command->state != POS__V1__COMMAND_STATE__COMMAND_STATE_CANCELLED;
  }
  return 1;
}

/* Deletes `command` from pos.control.v1 (a null value, same key) and from memory. */
static void control_drop(control *c, struct control_command *command)
{
  char key[CONTROL_ID_MAX + CONTROL_COMMAND_ID_MAX + 16];
  char id[CONTROL_COMMAND_ID_MAX + 1];
  struct control_op *op = calloc(1, sizeof(*op));

  if (!op)
    return;
  op->c = c;
  op->purpose = CONTROL_OP_PRUNE;
  control_copy(op->command_id, sizeof(op->command_id), command->command_id);
  control_copy(id, sizeof(id), command->command_id);
  snprintf(key, sizeof(key), "%s/command/%s", command->store_id, command->command_id);
  log_info("control", "command_pruned", "command=%s store=%s state=%s updated_ms=%" PRId64,
           command->command_id, command->store_id, control_state_name(command->state),
           command->updated_ms);
  ingest_submit_control(c->ingest, key, NULL, 0, control_op_done, op);
  control__command_remove(&c->map, id);
}

void control__prune(control *c, int force)
{
  int64_t now = clock_wall_ms();
  int64_t interval = CONTROL_PRUNE_INTERVAL_MS;

  if (c->keep_finished_ms <= 0 || !c->ready)
    return;
  if (c->keep_finished_ms < interval)
    interval = c->keep_finished_ms;
  if (!force && now - c->last_prune_ms < interval)
    return;
  c->last_prune_ms = now;
  for (size_t b = 0; b < c->map.bucket_count; b++) {
    for (struct control_store *s = c->map.stores[b]; s; s = s->next) {
      /* Backwards: removing a command shifts only those after it. */
      for (size_t i = s->command_count; i-- > 0;) {
        if (control_prunable(c, s->commands[i], now))
          control_drop(c, s->commands[i]);
      }
    }
  }
}

/* "resync-20261126T031500Z-a1b2c3". */
static void control_make_id(control *c, enum control_kind kind, int64_t now_ms, char *out,
                            size_t size)
{
  time_t seconds = (time_t)(now_ms / 1000);
  unsigned char random[3] = {0};
  struct tm tm;
  char stamp[24];

  gmtime_r(&seconds, &tm);
  strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
  if (uv_random(NULL, NULL, random, sizeof(random), 0, NULL) != 0) {
    /* No entropy source: the serial still keeps ids of this run apart. */
    unsigned mix = ++c->serial * 2654435761u ^ (unsigned)now_ms;
    random[0] = (unsigned char)mix;
    random[1] = (unsigned char)(mix >> 8);
    random[2] = (unsigned char)(mix >> 16);
  }
  snprintf(out, size, "%s-%s-%02x%02x%02x", kind == CONTROL_RESYNC ? "resync" : "push-now",
           stamp, random[0], random[1], random[2]);
}

void control_format_time(int64_t ms, char out[32])
{
  time_t seconds = (time_t)(ms / 1000);
  struct tm tm;

  if (ms <= 0 || !gmtime_r(&seconds, &tm)) {
    snprintf(out, 32, "-");
    return;
  }
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Targets of a new command and the warnings they deserve. 0, or 400 with `err`. */
static int control_targets(control *c, const struct control_request *request,
                           struct control_command *command, char (*warnings)[300],
                           size_t *warning_count, char *err, size_t err_size)
{
  const struct control_store *store = control__store_find(&c->map, request->store_id);
  int64_t now = clock_wall_ms();
  char from[32];

  if (request->device_id && request->device_id[0]) {
    if (!store || !control__device_find(store, request->device_id)) {
      snprintf(err, err_size, "device %.64s is not a known device of store %.64s (no heartbeat "
               "from it): leave device_id out, or name one of the store's devices",
               request->device_id, request->store_id);
      return 400;
    }
    control_copy(command->targets[command->target_count++], CONTROL_ID_MAX + 1,
                 request->device_id);
  } else {
    for (size_t i = 0; store && i < store->device_count; i++) {
      const Pos__V1__Heartbeat *hb = store->devices[i].heartbeat;
      if (hb && now - hb->received_ms < CONTROL_TARGET_AGE_MS &&
          command->target_count < CONTROL_MAX_TARGETS)
        control_copy(command->targets[command->target_count++], CONTROL_ID_MAX + 1,
                     store->devices[i].device_id);
    }
  }
  if (!store && warnings && *warning_count < 8)
    snprintf(warnings[(*warning_count)++], 300, "store %.64s was never seen by the collector: "
             "the command waits for the first of its devices to report", request->store_id);
  for (size_t i = 0; command->kind == CONTROL_RESYNC && i < command->target_count; i++) {
    const struct control_device *device = control__device_find(store, command->targets[i]);
    const Pos__V1__Heartbeat *hb = device ? device->heartbeat : NULL;
    if (!hb || !hb->sales_deleted || hb->oldest_sale_business_ms <= request->from_ms ||
        !warnings || *warning_count >= 8)
      continue;
    control_format_time(hb->oldest_sale_business_ms, from);
    snprintf(warnings[(*warning_count)++], 300, "device %.64s holds sales from %s on; sales "
             "before %s were deleted and will not be replayed", device->device_id, from, from);
  }
  return 0;
}

/*
 * A request whose request_id the store already has a command of: answers that command
 * (control.h). 0 when `done` was or will be called, an HTTP status with `err`, or 1 when
 * the store has no command of that request_id.
 */
static int control_issue_again(control *c, const struct control_request *request,
                               control_done_fn done, void *arg, char *err, size_t err_size)
{
  const struct control_store *store = control__store_find(&c->map, request->store_id);
  struct control_command *command = NULL;
  struct control_op *op;

  for (size_t i = 0; store && i < store->command_count && !command; i++) {
    if (strcmp(store->commands[i]->request_id, request->request_id) == 0)
      command = store->commands[i];
  }
  if (!command)
    return 1;
  if (command->kind != request->kind) {
    snprintf(err, err_size, "request_id %s was already used for %s of store %s: use a new "
             "request_id for a new request", request->request_id, command->command_id,
             command->store_id);
    return 409;
  }
  if (command->recorded_state != POS__V1__COMMAND_STATE__COMMAND_STATE_UNSPECIFIED) {
    done(arg, 200, command, NULL);
    return 0;
  }
  if (command->recording) {
    snprintf(err, err_size, "command %s of this request_id is being recorded in Kafka; retry "
             "the same request in a second", command->command_id);
    return 503;
  }
  op = calloc(1, sizeof(*op));
  if (!op) {
    snprintf(err, err_size, "the collector is out of memory; retry later");
    return 503;
  }
  op->purpose = CONTROL_OP_REISSUE;
  op->done = done;
  op->arg = arg;
  command->recording = 1;
  if (control_record(c, command, op)) {
    command->recording = 0;
    snprintf(err, err_size, "the collector is out of memory; retry later");
    return 503;
  }
  return 0;
}

int control_issue(control *c, const struct control_request *request, control_done_fn done,
                  void *arg, char (*warnings)[300], size_t *warning_count, char *err,
                  size_t err_size)
{
  struct control_command *command = NULL;
  struct control_op *op = NULL;
  int64_t now = clock_wall_ms();
  int status = 503;

  if (warning_count)
    *warning_count = 0;
  if (!c->ready) {
    snprintf(err, err_size, "loading commands and fleet state from Kafka; retry shortly");
    return 503;
  }
  if (request->request_id && request->request_id[0]) {
    status = control_issue_again(c, request, done, arg, err, err_size);
    if (status != 1)
      return status;
    status = 503;
  }
  control__prune(c, 0);
  if (c->map.command_count >= c->max_commands) {
    snprintf(err, err_size, "the collector holds %zu commands, its limit: no new command until "
             "finished ones are dropped (after [control] keep_finished, %" PRId64 " h; lower it "
             "and restart the collector to drop more now)", c->map.command_count,
             c->keep_finished_ms / 3600000);
    log_warn("control", "command_refused", "store=%.64s reason=\"%zu commands held, the "
             "limit\"", request->store_id, c->map.command_count);
    return 503;
  }
  command = calloc(1, sizeof(*command));
  op = calloc(1, sizeof(*op));
  if (command) {
    command->targets = calloc(CONTROL_MAX_TARGETS, sizeof(*command->targets));
    command->reports = calloc(1, sizeof(*command->reports));
  }
  if (!command || !op || !command->targets || !command->reports) {
    snprintf(err, err_size, "the collector is out of memory; retry later");
    goto fail;
  }
  command->kind = request->kind;
  control_copy(command->store_id, sizeof(command->store_id), request->store_id);
  command->from_ms = request->from_ms;
  command->to_ms = request->to_ms;
  command->issued_ms = command->updated_ms = now;
  control_copy(command->issued_by, sizeof(command->issued_by), request->admin);
  control_copy(command->updated_by, sizeof(command->updated_by), request->admin);
  control_copy(command->request_id, sizeof(command->request_id), request->request_id);
  command->state = POS__V1__COMMAND_STATE__COMMAND_STATE_PENDING;
  status = control_targets(c, request, command, warnings, warning_count, err, err_size);
  if (status)
    goto fail;
  /* Kept for the command's life: only the slots used (one at least, for a first reporter). */
  {
    size_t slots = command->target_count ? command->target_count : 1;
    char(*targets)[CONTROL_ID_MAX + 1] = realloc(command->targets, slots * sizeof(*targets));
    if (targets)
      command->targets = targets;
  }
  do
    control_make_id(c, request->kind, now, command->command_id, sizeof(command->command_id));
  while (control__command_find(&c->map, command->command_id));
  op->purpose = CONTROL_OP_ISSUE;
  op->fresh = command;
  op->done = done;
  op->arg = arg;
  if (control_record(c, command, op)) {
    op = NULL;
    snprintf(err, err_size, "the collector is out of memory; retry later");
    status = 503;
    goto fail;
  }
  return 0;
fail:
  control__command_free(command);
  free(op);
  return status;
}

int control_cancel(control *c, const char *command_id, const char *admin, control_done_fn done,
                   void *arg, char *err, size_t err_size)
{
  struct control_command *command;
  struct control_command copy;
  struct control_op *op;

  if (!c->ready) {
    snprintf(err, err_size, "loading commands and fleet state from Kafka; retry shortly");
    return 503;
  }
  command = control__command_find(&c->map, command_id);
  if (!command) {
    snprintf(err, err_size, "no command %.100s (GET /v1/admin/commands?state=all lists them)",
             command_id);
    return 404;
  }
  if (control_state_final(command->state)) {
    snprintf(err, err_size, "command %s is %s already: only a pending or running command can "
             "be cancelled", command->command_id, control_state_name(command->state));
    return 409;
  }
  if (command->recording) {
    snprintf(err, err_size, "command %s is being recorded in Kafka; retry in a second",
             command->command_id);
    return 503;
  }
  op = calloc(1, sizeof(*op));
  if (!op) {
    snprintf(err, err_size, "the collector is out of memory; retry later");
    return 503;
  }
  /* The record says CANCELLED; memory follows once Kafka has it. */
  copy = *command;
  copy.state = POS__V1__COMMAND_STATE__COMMAND_STATE_CANCELLED;
  copy.updated_ms = clock_wall_ms();
  control_copy(copy.updated_by, sizeof(copy.updated_by), admin);
  op->purpose = CONTROL_OP_CANCEL;
  op->done = done;
  op->arg = arg;
  control_copy(op->admin, sizeof(op->admin), admin);
  command->recording = 1;
  if (control_record(c, &copy, op)) {
    command->recording = 0;
    snprintf(err, err_size, "the collector is out of memory; retry later");
    return 503;
  }
  return 0;
}

/* Where all targets' reports put the command (spec10.md, life cycle). */
static int control_aggregate(const struct control_command *command)
{
  size_t finals = 0, reported = 0;
  int failed = 0, incomplete = 0, cancelled = 0;

  for (size_t t = 0; t < command->target_count; t++) {
    for (size_t r = 0; r < command->report_count; r++) {
      const struct control_report *report = &command->reports[r];
      if (strcmp(report->device_id, command->targets[t]) != 0)
        continue;
      reported++;
      if (control_state_final(report->state))
        finals++;
      failed |= report->state == POS__V1__COMMAND_STATE__COMMAND_STATE_FAILED;
      incomplete |= report->state == POS__V1__COMMAND_STATE__COMMAND_STATE_INCOMPLETE;
      cancelled |= report->state == POS__V1__COMMAND_STATE__COMMAND_STATE_CANCELLED;
    }
  }
  if (command->target_count > 0 && finals == command->target_count) {
    if (failed)
      return POS__V1__COMMAND_STATE__COMMAND_STATE_FAILED;
    if (incomplete)
      return POS__V1__COMMAND_STATE__COMMAND_STATE_INCOMPLETE;
    return cancelled ? POS__V1__COMMAND_STATE__COMMAND_STATE_CANCELLED
                     : POS__V1__COMMAND_STATE__COMMAND_STATE_DONE;
  }
  return reported ? POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING
                  : POS__V1__COMMAND_STATE__COMMAND_STATE_PENDING;
}

/* Takes one device's report of `command` (its store's device). */
static void control_apply_report(struct control_command *command, const char *device_id,
                                 const Pos__V1__CommandReport *proto)
{
  struct control_report *report = NULL;
  size_t t = 0;
  int state;

  /* A command issued before any device was seen goes to the first that reports it. */
  if (command->target_count == 0) {
    control_copy(command->targets[0], CONTROL_ID_MAX + 1, device_id);
    command->target_count = 1;
    command->unrecorded_targets = 1;
  }
  while (t < command->target_count && strcmp(command->targets[t], device_id) != 0)
    t++;
  if (t == command->target_count)
    return;
  for (size_t r = 0; r < command->report_count && !report; r++) {
    if (strcmp(command->reports[r].device_id, device_id) == 0)
      report = &command->reports[r];
  }
  if (!report) {
    struct control_report *grown =
        realloc(command->reports, (command->report_count + 1) * sizeof(*grown));
    if (!grown)
      return;
    command->reports = grown;
    report = &grown[command->report_count++];
  }
  control_report_from_proto(report, proto, device_id);
  if (control_state_final(command->state))
    return;
  state = control_aggregate(command);
  if (state == command->state)
    return;
  log_info("control", "command_state", "command=%s store=%s state=%s previous=%s device=%s "
           "done_sales=%" PRIu64 " total_sales=%" PRIu64, command->command_id,
           command->store_id, control_state_name(state), control_state_name(command->state),
           device_id, proto->done_sales, proto->total_sales);
  command->state = state;
  command->updated_ms = clock_wall_ms();
  snprintf(command->updated_by, sizeof(command->updated_by), "device:%s", device_id);
}

void control__take_reports(control *c, const Pos__V1__Heartbeat *heartbeat)
{
  const char *store_id = heartbeat->store_id ? heartbeat->store_id : "";
  const char *device_id = heartbeat->device_id ? heartbeat->device_id : "";

  for (size_t i = 0; i < heartbeat->n_command_reports; i++) {
    const Pos__V1__CommandReport *report = heartbeat->command_reports[i];
    struct control_command *command =
        report->command_id ? control__command_find(&c->map, report->command_id) : NULL;
    if (command && strcmp(command->store_id, store_id) == 0)
      control_apply_report(command, device_id, report);
  }
}

void control__commit_store(control *c, const struct control_store *store)
{
  for (size_t i = 0; store && i < store->command_count; i++)
    control_commit(c, store->commands[i]);
}

void control_heartbeat(control *c, Pos__V1__Heartbeat *heartbeat)
{
  const char *store_id = heartbeat->store_id ? heartbeat->store_id : "";
  const char *device_id = heartbeat->device_id ? heartbeat->device_id : "";

  if (c->ready)
    control__take_reports(c, heartbeat);
  if (control__fleet_take(&c->map, store_id, device_id, heartbeat))
    log_warn("control", "fleet_not_updated", "store=%.64s device=%.64s reason=\"out of memory "
             "or over %u stores\"", store_id, device_id, CONTROL_MAX_STORES);
  /* Record what changed, and what Kafka did not take the last time. */
  if (c->ready) {
    control__commit_store(c, control__store_find(&c->map, store_id));
    control__prune(c, 0);
  }
}

/* Whether an ack to `device_id` carries `command` (control.h). */
static int control_for_device(const struct control_command *command, const char *device_id)
{
  int target = command->target_count == 0;

  for (size_t t = 0; t < command->target_count && !target; t++)
    target = strcmp(command->targets[t], device_id) == 0;
  if (command->state == POS__V1__COMMAND_STATE__COMMAND_STATE_PENDING ||
      command->state == POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING)
    return target;
  if (command->state != POS__V1__COMMAND_STATE__COMMAND_STATE_CANCELLED)
    return 0;
  for (size_t r = 0; r < command->report_count; r++) {
    if (strcmp(command->reports[r].device_id, device_id) == 0)
      return command->reports[r].state == POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING;
  }
  return 0;
}

/*
 * A command issued while no device of its store was known gets, as its only
 * target, the first device an ack delivers it to: delivered to every device
 * of the store, the others would run it unseen and never be cancelled. The
 * target is recorded in pos.control.v1 so that a restart keeps it.
 */
static void control_claim_untargeted(control *c, struct control_store *store,
                                     const char *device_id)
{
  for (size_t i = 0; i < store->command_count; i++) {
    struct control_command *command = store->commands[i];
    if (command->target_count != 0 ||
        command->state != POS__V1__COMMAND_STATE__COMMAND_STATE_PENDING)
      continue;
    control_copy(command->targets[0], CONTROL_ID_MAX + 1, device_id);
    command->target_count = 1;
    command->unrecorded_targets = 1;
    log_info("control", "command_target", "command=%s store=%s device=%s reason=\"no device "
             "was known when issued: the first delivered to is its target\"",
             command->command_id, command->store_id, device_id);
    control_commit(c, command);
  }
}

size_t control_ack_commands(control *c, const char *store_id, const char *device_id,
                            Pos__V1__Command ***out)
{
  struct control_store *store = c->ready ? control__store_find(&c->map, store_id) : NULL;
  struct control_proto *protos;
  size_t count = 0;

  *out = NULL;
  if (store && device_id && device_id[0])
    control_claim_untargeted(c, store, device_id);
  for (size_t i = 0; store && i < store->command_count; i++)
    count += (size_t)control_for_device(store->commands[i], device_id);
  if (count == 0)
    return 0;
  /* One block: the pointer array, then the messages it points at. */
  *out = calloc(1, count * (sizeof(**out) + sizeof(*protos)));
  if (!*out)
    return 0;
  protos = (struct control_proto *)(void *)(*out + count);
  count = 0;
  for (size_t i = 0; i < store->command_count; i++) {
    if (!control_for_device(store->commands[i], device_id))
      continue;
    control_proto_fill(&protos[count], store->commands[i]);
    (*out)[count] = &protos[count].command;
    count++;
  }
  return count;
}

void control_ack_free(Pos__V1__Command **commands, size_t count)
{
  (void)count;
  free(commands);
}

const struct control_command *control_find_command(const control *c, const char *command_id)
{
  return control__command_find(&c->map, command_id);
}

const struct control_store *control_find_store(const control *c, const char *store_id)
{
  return control__store_find(&c->map, store_id);
}

static int control_store_cmp(const void *a, const void *b)
{
  const struct control_store *x = *(const struct control_store *const *)a;
  const struct control_store *y = *(const struct control_store *const *)b;
  return strcmp(x->store_id, y->store_id);
}

const struct control_store **control_stores(const control *c, size_t *count)
{
  const struct control_store **stores;
  size_t n = 0;

  *count = 0;
  if (c->map.store_count == 0)
    return NULL;
  stores = calloc(c->map.store_count, sizeof(*stores));
  if (!stores)
    return NULL;
  for (size_t b = 0; b < c->map.bucket_count; b++) {
    for (const struct control_store *s = c->map.stores[b]; s && n < c->map.store_count;
         s = s->next)
      stores[n++] = s;
  }
  qsort(stores, n, sizeof(*stores), control_store_cmp);
  *count = n;
  return stores;
}
