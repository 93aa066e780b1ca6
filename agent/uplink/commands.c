/*
 * commands.c - head-office commands as they come back in every BatchAck
 * and HeartbeatAck: each is recorded in the journal (on flash) before it is
 * acted on, so that a reboot neither loses nor repeats it; a known
 * command_id is never started again; one that arrives CANCELLED stops it.
 * Heartbeats report every command the journal knows that is not finished,
 * and those finished in the last 24 hours, and one goes out at once when a
 * command is recorded and when one finishes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/clock.h"
#include "platform/log.h"
#include "uplink/uplink_int.h"

/* One command operation on the journal, alive until its done(). */
struct uplink_command_op {
  struct journal_op op;
  struct journal_command command;
  uplink *u;
};

/* 1 if this command in this state was submitted lately; else remembers it. */
static int uplink_command_seen(uplink *u, const char *command_id, int state)
{
  size_t slots = sizeof(u->handled_commands) / sizeof(u->handled_commands[0]);
  char key[sizeof(u->handled_commands[0])];

  snprintf(key, sizeof(key), "%d:%s", state, command_id);
  for (size_t i = 0; i < slots; i++) {
    if (strcmp(u->handled_commands[i], key) == 0)
      return 1;
  }
  snprintf(u->handled_commands[u->handled_next], sizeof(u->handled_commands[0]), "%s", key);
  u->handled_next = (u->handled_next + 1) % (unsigned)slots;
  return 0;
}

/* Forgets a command submitted lately: the next answer bringing it records it again. */
static void uplink_command_forget(uplink *u, const char *command_id, int state)
{
  size_t slots = sizeof(u->handled_commands) / sizeof(u->handled_commands[0]);
  char key[sizeof(u->handled_commands[0])];

  snprintf(key, sizeof(key), "%d:%s", state, command_id);
  for (size_t i = 0; i < slots; i++) {
    if (strcmp(u->handled_commands[i], key) == 0)
      u->handled_commands[i][0] = '\0';
  }
}

/* After the command was recorded (or found known): acts on it once. */
static void uplink_on_command_recorded(uplink *u, struct uplink_command_op *c)
{
  const struct journal_command *cmd = &c->command;
  char quoted[160];

  if (c->op.error) {
    uplink_command_forget(u, cmd->command_id,
                          cmd->state == JOURNAL_COMMAND_CANCELLED ? JOURNAL_COMMAND_CANCELLED
                                                                  : JOURNAL_COMMAND_RUNNING);
    log_error("uplink", "command_not_recorded",
              "command_id=%s error=%s reason=%s; it is recorded when the collector sends it "
              "again, and not acted on before", cmd->command_id, journal_strerror(c->op.error),
              log_quote(c->op.message, quoted, sizeof(quoted)));
    return;
  }
  if (!c->op.command_changed)
    return; /* known: never run twice */
  log_info("uplink", "command_recorded",
           "command_id=%s kind=%s state=%s issued_by=%s from_ms=%" PRId64 " to_ms=%" PRId64
           " total_sales=%llu",
           cmd->command_id, cmd->kind == JOURNAL_COMMAND_RESYNC ? "resync" : "push_now",
           journal_command_state_name(cmd->state),
           log_quote(cmd->issued_by, quoted, sizeof(quoted)), cmd->from_ms, cmd->to_ms,
           (unsigned long long)cmd->total_sales);
  if (cmd->state == JOURNAL_COMMAND_CANCELLED) {
    if (cmd->kind == JOURNAL_COMMAND_RESYNC)
      uplink__replay_cancelled(u, cmd->command_id);
  } else if (cmd->kind == JOURNAL_COMMAND_PUSH_NOW) {
    uplink_push_now(u, "head_office");
  } else {
    uplink__replay_kick(u);
  }
  uplink__heartbeat_soon(u);
}

static void uplink_on_command_op(struct journal_op *op)
{
  struct uplink_command_op *c = op->user;
  uplink *u = c->u;

  u->command_ops--;
  if (u->closing) {
    free(c);
    uplink__maybe_free(u);
    return;
  }
  if (op->kind == JOURNAL_OP_COMMAND) {
    uplink_on_command_recorded(u, c);
  } else if (op->error) {
    char quoted[300];
    log_error("uplink", "command_state_not_recorded", "command_id=%s state=%s reason=%s",
              c->command.command_id, journal_strerror(op->error),
              log_quote(op->message, quoted, sizeof(quoted)));
  } else if (op->command_changed) {
    char quoted[300];
    log_info("uplink", "command_finished", "command_id=%s state=%s done_sales=%llu message=%s",
             c->command.command_id, journal_command_state_name(c->command.state),
             (unsigned long long)c->command.done_sales,
             log_quote(c->command.message, quoted, sizeof(quoted)));
    uplink__heartbeat_soon(u);
    if (c->command.kind == JOURNAL_COMMAND_RESYNC)
      uplink__replay_kick(u); /* the next resync, if one waits */
  }
  free(c);
}

/* Queues a command operation; 0 or -1 (logged). */
static int uplink_command_submit(uplink *u, enum journal_op_kind kind,
                                 const struct journal_command *command)
{
  struct uplink_command_op *c = calloc(1, sizeof(*c));
  int rc;

  if (!c)
    return -1;
  c->command = *command;
  c->u = u;
  c->op.kind = kind;
  c->op.command = &c->command;
  c->op.reason = u->identity.device_id; /* named in a resync's INCOMPLETE message */
  c->op.done = uplink_on_command_op;
  c->op.user = c;
  rc = journal_submit_op(u->journal, &c->op);
  if (rc) {
    log_error("uplink", "command_not_queued", "command_id=%s error=%s", command->command_id,
              journal_strerror(rc));
    free(c);
    return -1;
  }
  u->command_ops++;
  return 0;
}

void uplink__commands(uplink *u, size_t n_commands, Pos__V1__Command **commands)
{
  for (size_t i = 0; i < n_commands; i++) {
    const Pos__V1__Command *command = commands[i];
    struct journal_command c, known;
    char quoted[160];

    if (!command->command_id || !command->command_id[0] ||
        strlen(command->command_id) > JOURNAL_COMMAND_ID_MAX) {
      log_warn("uplink", "command", "command_id=%s reason=\"ignored: no command_id, or longer "
               "than %d characters\"",
               log_quote(command->command_id ? command->command_id : "", quoted, sizeof(quoted)),
               JOURNAL_COMMAND_ID_MAX);
      continue;
    }
    memset(&c, 0, sizeof(c));
    snprintf(c.command_id, sizeof(c.command_id), "%s", command->command_id);
    snprintf(c.issued_by, sizeof(c.issued_by), "%s", command->issued_by ? command->issued_by : "");
    c.issued_ms = command->issued_ms;
    c.state = command->state == POS__V1__COMMAND_STATE__COMMAND_STATE_CANCELLED
                  ? JOURNAL_COMMAND_CANCELLED
                  : JOURNAL_COMMAND_RUNNING;
    if (command->command_case == POS__V1__COMMAND__COMMAND_PUSH_NOW) {
      c.kind = JOURNAL_COMMAND_PUSH_NOW;
    } else if (command->command_case == POS__V1__COMMAND__COMMAND_RESYNC && command->resync) {
      c.kind = JOURNAL_COMMAND_RESYNC;
      c.from_ms = command->resync->from_business_time_ms;
      c.to_ms = command->resync->to_business_time_ms;
    } else {
      if (!uplink_command_seen(u, c.command_id, 0))
        log_warn("uplink", "command", "command_id=%s kind=unknown reason=\"ignored: this agent "
                 "knows resync and push-now only\"", c.command_id);
      continue;
    }
    /* Known here, and not a cancel of one still running: nothing to do. */
    if (journal_find_command(u->journal, c.command_id, &known) &&
        (c.state != JOURNAL_COMMAND_CANCELLED || journal_command_finished(known.state)))
      continue;
    if (uplink_command_seen(u, c.command_id, c.state))
      continue;
    if (uplink_command_submit(u, JOURNAL_OP_COMMAND, &c))
      uplink_command_forget(u, c.command_id, c.state);
  }
}

void uplink__command_finish(uplink *u, const char *command_id, int state, const char *message)
{
  struct journal_command c;

  if (u->closing)
    return;
  memset(&c, 0, sizeof(c));
  snprintf(c.command_id, sizeof(c.command_id), "%s", command_id);
  c.state = state;
  snprintf(c.message, sizeof(c.message), "%s", message ? message : "");
  uplink_command_submit(u, JOURNAL_OP_COMMAND_STATE, &c);
}

/* Finishes every running push-now command: those with nothing unsent
 * older than them DONE (problem NULL), or all FAILED with `problem`. */
static void uplink_push_commands_finish(uplink *u, const char *problem)
{
  struct journal_command *list = NULL;
  struct journal_stats stats;
  size_t count = journal_get_commands(u->journal, &list);

  journal_get_stats(u->journal, &stats);
  for (size_t i = 0; i < count; i++) {
    if (list[i].kind != JOURNAL_COMMAND_PUSH_NOW || list[i].state != JOURNAL_COMMAND_RUNNING)
      continue;
    if (problem)
      uplink__command_finish(u, list[i].command_id, JOURNAL_COMMAND_FAILED, problem);
    else if (stats.acked_last_seq >= list[i].upto_seq)
      uplink__command_finish(u, list[i].command_id, JOURNAL_COMMAND_DONE, "");
  }
  free(list);
}

void uplink__commands_push_ended(uplink *u) { uplink_push_commands_finish(u, NULL); }

void uplink__commands_push_failed(uplink *u, const char *problem)
{
  uplink_push_commands_finish(u, problem && problem[0] ? problem : "the push cannot go on");
}

void uplink__commands_resume(uplink *u)
{
  struct journal_command *list = NULL;
  size_t count = journal_get_commands(u->journal, &list);
  int push = 0;

  for (size_t i = 0; i < count; i++) {
    if (list[i].state != JOURNAL_COMMAND_RUNNING)
      continue;
    log_info("uplink", "command_resumed", "command_id=%s kind=%s", list[i].command_id,
             list[i].kind == JOURNAL_COMMAND_RESYNC ? "resync" : "push_now");
    if (list[i].kind == JOURNAL_COMMAND_PUSH_NOW)
      push = 1;
  }
  free(list);
  if (push)
    uplink_push_now(u, "head_office");
  uplink__replay_kick(u);
}

void uplink__reports_clear(struct uplink_reports *storage)
{
  free(storage->commands);
  free(storage->reports);
  free(storage->report_ptrs);
  memset(storage, 0, sizeof(*storage));
}

static Pos__V1__CommandState uplink_state_proto(int state)
{
  return (Pos__V1__CommandState)state; /* enum journal_command_state mirrors it */
}

void uplink__commands_report(uplink *u, Pos__V1__Heartbeat *heartbeat,
                             struct uplink_reports *storage)
{
  size_t count = journal_get_commands(u->journal, &storage->commands);
  const struct journal_command *resync = NULL;

  storage->reports = calloc(count ? count : 1, sizeof(*storage->reports));
  storage->report_ptrs = calloc(count ? count : 1, sizeof(*storage->report_ptrs));
  if (!storage->reports || !storage->report_ptrs)
    count = 0; /* out of memory: this heartbeat reports none */
  for (size_t i = 0; i < count; i++) {
    const struct journal_command *c = &storage->commands[i];
    Pos__V1__CommandReport *r = &storage->reports[i];
    pos__v1__command_report__init(r);
    r->command_id = (char *)(uintptr_t)c->command_id;
    r->state = uplink_state_proto(c->state);
    r->done_sales = c->done_sales;
    r->total_sales = c->total_sales;
    r->available_from_ms = c->available_from_ms;
    r->message = (char *)(uintptr_t)c->message;
    r->updated_ms = c->updated_ms;
    storage->report_ptrs[i] = r;
    /* The old field carries the running resync, else the newest one. */
    if (c->kind == JOURNAL_COMMAND_RESYNC &&
        (!resync || (c->state == JOURNAL_COMMAND_RUNNING &&
                     resync->state != JOURNAL_COMMAND_RUNNING)))
      resync = c;
  }
  heartbeat->command_reports = storage->report_ptrs;
  heartbeat->n_command_reports = count;
  if (resync) {
    pos__v1__resync_progress__init(&storage->progress);
    storage->progress.resync_id = (char *)(uintptr_t)resync->command_id;
    storage->progress.replayed_sales = resync->done_sales;
    storage->progress.total_sales = resync->total_sales;
    storage->progress.done = journal_command_finished(resync->state);
    heartbeat->resync = &storage->progress;
  }
}
