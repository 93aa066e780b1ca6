/*
 * test_control.c - head-office commands (collector/control/) over a real
 * ingest and librdkafka's mock cluster: a command's life cycle from the
 * reports of its targets, and its rebuilding from pos.control.v1 at start
 * (latest record of a key wins, a null value deletes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "control/control.h"
#include "kafka/kafka.h"
#include "platform/clock.h"

#define WAIT_MS 20000

struct fixture {
  uv_loop_t loop;
  kafka_embedded *kafka;
  ingest *in;
  control *ctl;
  struct control_options options; /* of the next start_control */
};

struct answer {
  int done, status;
  char command_id[CONTROL_COMMAND_ID_MAX + 1];
  char message[256];
};

static void on_done(void *arg, int status, const struct control_command *command,
                    const char *message)
{
  struct answer *a = arg;
  a->done = 1;
  a->status = status;
  if (command)
    snprintf(a->command_id, sizeof(a->command_id), "%s", command->command_id);
  snprintf(a->message, sizeof(a->message), "%s", message ? message : "");
}

static void run_until(struct fixture *f, const int *flag)
{
  uint64_t deadline = clock_mono_ms() + WAIT_MS;
  while (!*flag && clock_mono_ms() < deadline)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_true(*flag);
}

static void start_control(struct fixture *f)
{
  struct control_request request = {.kind = CONTROL_PUSH_NOW, .store_id = "S1", .admin = "a"};
  char err[512];
  uint64_t deadline = clock_mono_ms() + WAIT_MS;
  Pos__V1__Command **acked;
  f->ctl = control_create(&f->loop, f->in, ingest_bootstrap(f->in), "pos.", NULL, &f->options,
                          err, sizeof(err));
  if (!f->ctl)
    fail_msg("control_create: %s", err);
  /* Until the loop adopted what the loader read, nothing is answered from memory. */
  assert_int_equal(control_issue(f->ctl, &request, NULL, NULL, NULL, NULL, err, sizeof(err)), 503);
  assert_non_null(strstr(err, "loading commands"));
  assert_int_equal(control_ack_commands(f->ctl, "S1", "D1", &acked), 0);
  while (!control_ready(f->ctl) && clock_mono_ms() < deadline)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_true(control_ready(f->ctl));
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  struct ingest_options options = {.topic_prefix = "pos.", .instance_id = "test-control",
                                   .checkpoint_interval_ms = 1000, .produce_timeout_ms = 5000,
                                   .request_timeout_ms = 500};
  char err[512];
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->kafka = kafka_embedded_start(1, 2, "pos.", err, sizeof(err));
  if (!f->kafka)
    fail_msg("mock cluster: %s", err);
  options.brokers = kafka_embedded_bootstrap(f->kafka);
  f->in = ingest_create(&f->loop, &options, err, sizeof(err));
  if (!f->in)
    fail_msg("ingest_create: %s", err);
  start_control(f);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  control_destroy(f->ctl);
  ingest_destroy(f->in, 5000);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  kafka_embedded_stop(f->kafka);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
  return 0;
}

static void on_heartbeat(void *arg, const struct ingest_result *result)
{
  int *done = arg;
  assert_int_equal(result->outcome, INGEST_ACCEPTED);
  *done = 1;
}

/* A heartbeat of (S1, device) reporting `command_id` in `state` with done/total sales, taken
 * by the control and, with `to_kafka`, first produced to pos.agent-status.v1 as routes.c does. */
static void report_to(struct fixture *f, int to_kafka, const char *device, const char *command_id,
                      int state, uint64_t done, uint64_t total);

static void report(struct fixture *f, const char *device, const char *command_id, int state,
                   uint64_t done, uint64_t total)
{
  report_to(f, 0, device, command_id, state, done, total);
}

static void report_to(struct fixture *f, int to_kafka, const char *device, const char *command_id,
                      int state, uint64_t done, uint64_t total)
{
  Pos__V1__Heartbeat hb = POS__V1__HEARTBEAT__INIT;
  Pos__V1__CommandReport r = POS__V1__COMMAND_REPORT__INIT;
  Pos__V1__CommandReport *reports[1] = {&r};
  uint8_t buf[512];
  size_t len;

  hb.store_id = "S1";
  hb.device_id = (char *)device;
  hb.received_ms = clock_wall_ms();
  r.command_id = (char *)command_id;
  r.state = (Pos__V1__CommandState)state;
  r.done_sales = done;
  r.total_sales = total;
  hb.command_reports = command_id ? reports : NULL;
  hb.n_command_reports = command_id ? 1 : 0;
  len = pos__v1__heartbeat__pack(&hb, buf);
  if (to_kafka) {
    int produced = 0;
    ingest_submit_heartbeat(f->in, "S1", pos__v1__heartbeat__unpack(NULL, len, buf),
                            on_heartbeat, &produced);
    run_until(f, &produced);
  }
  control_heartbeat(f->ctl, pos__v1__heartbeat__unpack(NULL, len, buf));
}

/* Runs the loop until every record of `command_id` is in Kafka. */
static void settle(struct fixture *f, const char *command_id)
{
  uint64_t deadline = clock_mono_ms() + WAIT_MS;
  const struct control_command *cmd = control_find_command(f->ctl, command_id);
  assert_non_null(cmd);
  while ((cmd->recording || cmd->recorded_state != cmd->state || cmd->unrecorded_targets) &&
         clock_mono_ms() < deadline) {
    uv_run(&f->loop, UV_RUN_ONCE);
    cmd = control_find_command(f->ctl, command_id);
  }
  assert_int_equal(cmd->recorded_state, cmd->state);
}

static void issue(struct fixture *f, enum control_kind kind, struct answer *a)
{
  struct control_request request = {.kind = kind, .store_id = "S1", .from_ms = 1000,
                                    .admin = "alice"};
  char warnings[8][300], err[256];
  size_t warning_count = 0;
  memset(a, 0, sizeof(*a));
  assert_int_equal(control_issue(f->ctl, &request, on_done, a, warnings, &warning_count, err,
                                 sizeof(err)),
                   0);
  run_until(f, &a->done);
  assert_int_equal(a->status, 201);
}

static int state_of(struct fixture *f, const char *command_id)
{
  const struct control_command *cmd = control_find_command(f->ctl, command_id);
  return cmd ? cmd->state : -1;
}

/* Two targets: running once one reports, finished only when both did, INCOMPLETE over DONE. */
static void a_command_finishes_when_every_target_reported(void **state)
{
  struct fixture *f = *state;
  struct answer a;
  size_t n;
  Pos__V1__Command **acked;

  report(f, "D1", NULL, 0, 0, 0);
  report(f, "D2", NULL, 0, 0, 0);
  issue(f, CONTROL_RESYNC, &a);
  assert_int_equal(control_find_command(f->ctl, a.command_id)->target_count, 2);
  n = control_ack_commands(f->ctl, "S1", "D2", &acked);
  assert_int_equal(n, 1);
  assert_string_equal(acked[0]->command_id, a.command_id);
  assert_string_equal(acked[0]->resync->resync_id, a.command_id);
  control_ack_free(acked, n);
  assert_int_equal(control_ack_commands(f->ctl, "S1", "D9", &acked), 0);

  report(f, "D1", a.command_id, POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING, 3, 10);
  assert_int_equal(state_of(f, a.command_id), POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING);
  report(f, "D1", a.command_id, POS__V1__COMMAND_STATE__COMMAND_STATE_DONE, 10, 10);
  assert_int_equal(state_of(f, a.command_id), POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING);
  report(f, "D2", a.command_id, POS__V1__COMMAND_STATE__COMMAND_STATE_INCOMPLETE, 4, 4);
  assert_int_equal(state_of(f, a.command_id), POS__V1__COMMAND_STATE__COMMAND_STATE_INCOMPLETE);
  assert_string_equal(control_find_command(f->ctl, a.command_id)->updated_by, "device:D2");
  /* Finished: no ack carries it, and a later report never reopens it. */
  assert_int_equal(control_ack_commands(f->ctl, "S1", "D1", &acked), 0);
  report(f, "D2", a.command_id, POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING, 4, 4);
  assert_int_equal(state_of(f, a.command_id), POS__V1__COMMAND_STATE__COMMAND_STATE_INCOMPLETE);
  settle(f, a.command_id);
}

/* At start: the latest record per key wins, and a null value deletes the command. */
static void commands_are_rebuilt_from_the_log(void **state)
{
  struct fixture *f = *state;
  struct answer done_one, deleted, pending;
  char key[200], err[512];
  rd_kafka_t *producer;
  rd_kafka_conf_t *conf;

  issue(f, CONTROL_PUSH_NOW, &done_one);
  issue(f, CONTROL_RESYNC, &deleted);
  issue(f, CONTROL_RESYNC, &pending);
  /* No device known when issued: the first that reports it becomes its target. */
  report(f, "D7", done_one.command_id, POS__V1__COMMAND_STATE__COMMAND_STATE_DONE, 0, 0);
  settle(f, done_one.command_id);
  /* Recorded running at 2 of 10; the progress to 6 is only in the device's latest heartbeat. */
  report(f, "D8", pending.command_id, POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING, 2, 10);
  settle(f, pending.command_id);
  report_to(f, 1, "D8", pending.command_id, POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING, 6, 10);
  conf = kafka_producer_conf(ingest_bootstrap(f->in), NULL, err, sizeof(err));
  assert_non_null(conf);
  producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  assert_non_null(producer);
  snprintf(key, sizeof(key), "S1/command/%s", deleted.command_id);
  assert_int_equal(rd_kafka_producev(producer, RD_KAFKA_V_TOPIC("pos.control.v1"),
                                     RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(NULL, 0),
                                     RD_KAFKA_V_END),
                   0);
  assert_int_equal(rd_kafka_flush(producer, 10000), 0);
  rd_kafka_destroy(producer);

  control_destroy(f->ctl);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  start_control(f);
  assert_int_equal(state_of(f, done_one.command_id), POS__V1__COMMAND_STATE__COMMAND_STATE_DONE);
  assert_string_equal(control_find_command(f->ctl, done_one.command_id)->targets[0], "D7");
  assert_string_equal(control_find_command(f->ctl, done_one.command_id)->issued_by, "alice");
  assert_int_equal(state_of(f, deleted.command_id), -1);
  assert_int_equal(state_of(f, pending.command_id), POS__V1__COMMAND_STATE__COMMAND_STATE_RUNNING);
  assert_int_equal(control_find_command(f->ctl, pending.command_id)->report_count, 1);
  assert_int_equal(control_find_command(f->ctl, pending.command_id)->reports[0].done_sales, 6);
  assert_non_null(control_find_store(f->ctl, "S1"));
}


/* A command issued before any device of the store was seen goes to the first device it is
 * delivered to (in an ack), only to it afterwards, and that target survives a restart. */
static void an_untargeted_command_goes_to_the_first_device_it_is_delivered_to(void **state)
{
  struct fixture *f = *state;
  struct answer a;
  size_t n;
  Pos__V1__Command **acked;
  const struct control_command *cmd;

  issue(f, CONTROL_RESYNC, &a);
  assert_int_equal(control_find_command(f->ctl, a.command_id)->target_count, 0);
  n = control_ack_commands(f->ctl, "S1", "D1", &acked);
  assert_int_equal(n, 1);
  assert_string_equal(acked[0]->command_id, a.command_id);
  control_ack_free(acked, n);
  /* D2 of the same store never gets it: it would run it unseen and never be cancelled. */
  assert_int_equal(control_ack_commands(f->ctl, "S1", "D2", &acked), 0);
  cmd = control_find_command(f->ctl, a.command_id);
  assert_int_equal(cmd->target_count, 1);
  assert_string_equal(cmd->targets[0], "D1");
  n = control_ack_commands(f->ctl, "S1", "D1", &acked);
  assert_int_equal(n, 1);
  control_ack_free(acked, n);
  /* A report of D2 (it got it from an older collector, say) does not make it a target. */
  report(f, "D2", a.command_id, POS__V1__COMMAND_STATE__COMMAND_STATE_DONE, 0, 0);
  assert_int_equal(state_of(f, a.command_id), POS__V1__COMMAND_STATE__COMMAND_STATE_PENDING);
  settle(f, a.command_id);

  control_destroy(f->ctl);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  start_control(f);
  cmd = control_find_command(f->ctl, a.command_id);
  assert_non_null(cmd);
  assert_int_equal(cmd->target_count, 1);
  assert_string_equal(cmd->targets[0], "D1");
  assert_int_equal(control_ack_commands(f->ctl, "S1", "D2", &acked), 0);
}

/* Restarts the control with `options`. */
static void restart_control(struct fixture *f, struct control_options options)
{
  control_destroy(f->ctl);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  f->options = options;
  start_control(f);
}

/* Issues one command; returns its HTTP status (201, or 503 with `err`). */
static int try_issue(struct fixture *f, struct answer *a, char *err, size_t err_size)
{
  struct control_request request = {.kind = CONTROL_PUSH_NOW, .store_id = "S1", .admin = "bob"};
  int status;
  memset(a, 0, sizeof(*a));
  status = control_issue(f->ctl, &request, on_done, a, NULL, NULL, err, err_size);
  if (status)
    return status;
  run_until(f, &a->done);
  return a->status;
}

/* Finished commands older than keep_finished are dropped from memory and tombstoned in
 * pos.control.v1 (a restart does not bring them back); open ones are kept. */
static void finished_commands_are_pruned_and_tombstoned(void **state)
{
  struct fixture *f = *state;
  struct answer finished, open, later;
  char err[512];

  restart_control(f, (struct control_options){.keep_finished_ms = 1});
  issue(f, CONTROL_PUSH_NOW, &finished);
  issue(f, CONTROL_RESYNC, &open);
  report(f, "D1", finished.command_id, POS__V1__COMMAND_STATE__COMMAND_STATE_DONE, 0, 0);
  settle(f, finished.command_id);
  uv_sleep(5);
  /* The next issue (or heartbeat) prunes. */
  assert_int_equal(try_issue(f, &later, err, sizeof(err)), 201);
  assert_int_equal(state_of(f, finished.command_id), -1);
  assert_int_equal(state_of(f, open.command_id), POS__V1__COMMAND_STATE__COMMAND_STATE_PENDING);
  /* Let the tombstone reach Kafka, then start again keeping everything: it stays deleted. */
  for (int i = 0; i < 50; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT), uv_sleep(10);
  restart_control(f, (struct control_options){0});
  assert_int_equal(state_of(f, finished.command_id), -1);
  assert_int_equal(state_of(f, open.command_id), POS__V1__COMMAND_STATE__COMMAND_STATE_PENDING);
  assert_int_equal(state_of(f, later.command_id), POS__V1__COMMAND_STATE__COMMAND_STATE_PENDING);
}

/* More commands in pos.control.v1 than memory may hold: the load skips the extra ones (it
 * does not retry forever, the admin API serves), and a new command is refused with a 503
 * that says why. */
static void the_command_cap_neither_blocks_the_load_nor_refuses_silently(void **state)
{
  struct fixture *f = *state;
  struct answer a, b;
  char err[512];

  assert_int_equal(try_issue(f, &a, err, sizeof(err)), 201);
  assert_int_equal(try_issue(f, &b, err, sizeof(err)), 201);
  restart_control(f, (struct control_options){.max_commands = 1});
  assert_true(control_ready(f->ctl));
  assert_true((state_of(f, a.command_id) == -1) != (state_of(f, b.command_id) == -1));
  assert_int_equal(try_issue(f, &a, err, sizeof(err)), 503);
  assert_non_null(strstr(err, "holds 1 commands, its limit"));
  assert_non_null(strstr(err, "keep_finished"));
}

/* Issues a resync with `request_id`; returns its HTTP status, the command id in `a`. */
static int issue_with_id(struct fixture *f, enum control_kind kind, const char *request_id,
                         struct answer *a, char *err, size_t err_size)
{
  struct control_request request = {.kind = kind, .store_id = "S1", .from_ms = 1000,
                                    .admin = "alice", .request_id = request_id};
  int status;
  memset(a, 0, sizeof(*a));
  status = control_issue(f->ctl, &request, on_done, a, NULL, NULL, err, err_size);
  if (status)
    return status;
  run_until(f, &a->done);
  return a->status;
}

/* The same request_id for the same store returns the command it made (200), never a second
 * one, also after a restart; used for another kind of command it is refused. */
static void a_repeated_request_id_returns_the_same_command(void **state)
{
  struct fixture *f = *state;
  struct answer first, again;
  char err[512];

  assert_int_equal(issue_with_id(f, CONTROL_RESYNC, "req-1", &first, err, sizeof(err)), 201);
  assert_int_equal(issue_with_id(f, CONTROL_RESYNC, "req-1", &again, err, sizeof(err)), 200);
  assert_string_equal(again.command_id, first.command_id);
  restart_control(f, (struct control_options){0});
  assert_int_equal(issue_with_id(f, CONTROL_RESYNC, "req-1", &again, err, sizeof(err)), 200);
  assert_string_equal(again.command_id, first.command_id);
  assert_int_equal(issue_with_id(f, CONTROL_PUSH_NOW, "req-1", &again, err, sizeof(err)), 409);
  assert_int_equal(issue_with_id(f, CONTROL_RESYNC, "req-2", &again, err, sizeof(err)), 201);
  assert_string_not_equal(again.command_id, first.command_id);
}

/* The id of the command of `request_id` in store S1, or "". */
static const char *first_id(struct fixture *f, const char *request_id)
{
  const struct control_store *store = control_find_store(f->ctl, "S1");
  for (size_t i = 0; store && i < store->command_count; i++) {
    if (strcmp(store->commands[i]->request_id, request_id) == 0)
      return store->commands[i]->command_id;
  }
  return "";
}

/* A command Kafka did not acknowledge is answered 503 saying a retry is safe; the retry
 * with the same request_id records the same command (same id), not a second one. */
static void a_retry_after_503_records_the_same_command(void **state)
{
  struct fixture *f = *state;
  struct answer first, again;
  char err[512];

  rd_kafka_mock_push_request_errors(kafka_embedded_cluster(f->kafka), 0 /* Produce */, 1,
                                    RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
  assert_int_equal(issue_with_id(f, CONTROL_RESYNC, "req-9", &first, err, sizeof(err)), 503);
  assert_non_null(strstr(first.message, "may have been recorded"));
  assert_non_null(strstr(first.message, "same request_id"));
  /* librdkafka may refuse the topic for a while after that error: retried as posctl does. */
  for (uint64_t deadline = clock_mono_ms() + WAIT_MS; clock_mono_ms() < deadline;) {
    if (issue_with_id(f, CONTROL_RESYNC, "req-9", &again, err, sizeof(err)) != 503)
      break;
    for (int i = 0; i < 20; i++)
      uv_run(&f->loop, UV_RUN_NOWAIT), uv_sleep(10);
  }
  assert_int_equal(again.status, 200);
  assert_string_equal(again.command_id, first_id(f, "req-9"));
  restart_control(f, (struct control_options){0});
  assert_int_equal(issue_with_id(f, CONTROL_RESYNC, "req-9", &first, err, sizeof(err)), 200);
  assert_string_equal(first.command_id, again.command_id);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(a_command_finishes_when_every_target_reported, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(commands_are_rebuilt_from_the_log, setup, teardown),
      cmocka_unit_test_setup_teardown(
          an_untargeted_command_goes_to_the_first_device_it_is_delivered_to, setup, teardown),
      cmocka_unit_test_setup_teardown(finished_commands_are_pruned_and_tombstoned, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          the_command_cap_neither_blocks_the_load_nor_refuses_silently, setup, teardown),
      cmocka_unit_test_setup_teardown(a_repeated_request_id_returns_the_same_command, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_retry_after_503_records_the_same_command, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
