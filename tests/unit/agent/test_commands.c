/*
 * test_commands.c - head-office commands and replay batches in the journal
 * (schema v6), through the journal's operations on a real file: a command
 * recorded survives kill -9 and is never started again; replay batches
 * cover exactly the rows of [from, to) once, the same rows after a restart;
 * retention keeps what a running resync has yet to send; a resync from
 * before what the journal holds ends INCOMPLETE saying from when.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "journal/journal.h"
#include "journal_fixture.h"
#include "proto/codec.h"
#include "uplink/batcher.h"

#define MINUTE_MS (60LL * 1000)
#define DAY_MS (24LL * 60 * MINUTE_MS)
/* 2026-11-21T00:00:00Z: sale i is at BASE_MS + i minutes. */
#define BASE_MS 1795219200000LL

struct fixture {
  struct jf_fixture jf;
  struct batcher_identity identity;
};

/* Every inventory delta quantity of the replay batches decoded so far. */
static int64_t replay_cans;

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  jf_setup(&f->jf, "test_commands");
  assert_int_equal(batcher_identity_init(&f->identity, "S001", "D1", 3), 0);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  jf_teardown(&f->jf);
  free(f);
  return 0;
}

static journal *open_journal(struct fixture *f) { return jf_open_journal(&f->jf, 0, 64); }

/* The test's own recipe: a COLA-33 is one can. */
static int cola_explode(const void *recipes, const char *sku, int64_t qty,
                        int64_t business_time_ms, stock_emit_fn emit, void *arg)
{
  (void)recipes;
  (void)business_time_ms;
  if (strcmp(sku, "COLA-33") != 0)
    return 0;
  emit(arg, "CAN", "piece", qty * 1000);
  return 1;
}

static journal *open_journal_with_stock(struct fixture *f)
{
  struct journal_options options = {.path = f->jf.path,
                                     .group_commit_max = 64,
                                     .busy_timeout_ms = 1000,
                                     .explode = cola_explode};
  char err[512];
  journal *j = journal_open(&f->jf.loop, &options, err, sizeof(err));
  if (!j)
    fail_msg("journal_open: %s", err);
  return j;
}

/* Sales i = 0..count-1, sale i at BASE_MS + i minutes, one line each. */
static void add_timed_sales(struct fixture *f, journal *j, size_t count)
{
  for (size_t at = 0; at < count; at += 32) {
    struct sale sales[32];
    struct jf_write w;
    size_t n = count - at < 32 ? count - at : 32;
    for (size_t i = 0; i < n; i++) {
      char id[32];
      snprintf(id, sizeof(id), "S-%zu", at + i);
      jf_sale_init(&sales[i], id, SALE_CHANNEL_POS, "");
      sales[i].business_time_ms = BASE_MS + (int64_t)(at + i) * MINUTE_MS;
      sales[i].line_count = 1;
      sales[i].lines = calloc(1, sizeof(*sales[i].lines));
      snprintf(sales[i].lines[0].sku, sizeof(sales[i].lines[0].sku), "COLA-33");
      sales[i].lines[0].qty = 1;
      sales[i].lines[0].unit_price = 300;
      sales[i].total = 300;
    }
    jf_write_and_wait(&f->jf, j, &w, sales, n);
    assert_int_equal(w.write.error, JOURNAL_OK);
    for (size_t i = 0; i < n; i++)
      sale_clear(&sales[i]);
  }
}

/* Runs a command op on `c` and returns its error; *changed = command_changed. */
static int command_op(struct fixture *f, journal *j, enum journal_op_kind kind,
                      struct journal_command *c, int64_t batch_seq, int *changed)
{
  struct jf_op w;
  memset(&w, 0, sizeof(w));
  w.op.kind = kind;
  w.op.command = c;
  w.op.batch_seq = batch_seq;
  w.op.reason = "D1";
  w.op.max_sales = 7;
  w.op.max_bytes = 1 << 20;
  w.op.pack = batcher_pack;
  w.op.pack_arg = &f->identity;
  jf_run_op(&f->jf, j, &w);
  if (changed)
    *changed = w.op.command_changed;
  journal_op_clear(&w.op);
  return w.op.error;
}

static void resync_command(struct journal_command *c, const char *id, int64_t from, int64_t to)
{
  memset(c, 0, sizeof(*c));
  snprintf(c->command_id, sizeof(c->command_id), "%s", id);
  snprintf(c->issued_by, sizeof(c->issued_by), "alice");
  c->kind = JOURNAL_COMMAND_RESYNC;
  c->state = JOURNAL_COMMAND_RUNNING;
  c->from_ms = from;
  c->to_ms = to;
}

/* Replay batch `batch_seq`, decoded: checks kind, resync_id and that every
 * sale is in [from, to); adds its seqs to seen[]. Returns its sale count,
 * or -1 when every row was cut. */
static int replay_one(struct fixture *f, journal *j, struct journal_command *c, int64_t batch_seq,
                      unsigned *seen, size_t seen_size, struct journal_batch *out)
{
  struct proto_limits limits = {PROTO_DEFAULT_MAX_COMPRESSED, PROTO_DEFAULT_MAX_DECODED,
                                PROTO_DEFAULT_MAX_SALES};
  Pos__V1__Batch *decoded = NULL;
  struct jf_op w;
  char err[256];
  int count;

  memset(&w, 0, sizeof(w));
  w.op.kind = JOURNAL_OP_REPLAY_BATCH;
  w.op.command = c;
  w.op.batch_seq = batch_seq;
  w.op.max_sales = 7;
  w.op.max_bytes = 1 << 20;
  w.op.pack = batcher_pack;
  w.op.pack_arg = &f->identity;
  jf_run_op(&f->jf, j, &w);
  if (w.op.error)
    fail_msg("replay batch %lld: %s", (long long)batch_seq, w.op.message);
  if (w.op.batch.batch_seq == 0)
    return -1;
  assert_int_equal(w.op.batch.batch_seq, batch_seq);
  if (proto_batch_unpack(w.op.batch.body, w.op.batch.body_len, &limits, &decoded, err,
                         sizeof(err)))
    fail_msg("replay batch %lld does not decode: %s", (long long)batch_seq, err);
  assert_int_equal(decoded->envelope->kind, POS__V1__BATCH_KIND__BATCH_KIND_REPLAY);
  assert_string_equal(decoded->envelope->resync_id, c->command_id);
  assert_int_equal(decoded->envelope->batch_seq, batch_seq);
  assert_true(decoded->n_sales <= 7);
  for (size_t i = 0; i < decoded->n_sales; i++) {
    const Pos__V1__Sale *sale = decoded->sales[i];
    assert_true(sale->business_time_ms >= c->from_ms);
    assert_true(c->to_ms == 0 || sale->business_time_ms < c->to_ms);
    assert_true(sale->seq < seen_size);
    seen[sale->seq]++;
  }
  count = (int)decoded->n_sales;
  /* The inventory deltas of the rows it covers, like a live batch's. */
  for (size_t i = 0; i < decoded->n_inventory_deltas; i++) {
    const Pos__V1__InventoryDelta *d = decoded->inventory_deltas[i];
    assert_int_equal(d->first_seq, decoded->envelope->first_seq);
    assert_int_equal(d->last_seq, decoded->envelope->last_seq);
    replay_cans += d->quantity_milli;
  }
  if (out) {
    *out = w.op.batch;
    out->body = NULL;
  }
  pos__v1__batch__free_unpacked(decoded, NULL);
  journal_op_clear(&w.op);
  return count;
}

static void a_command_recorded_survives_kill_9_and_is_not_run_again(void **state)
{
  struct fixture *f = *state;
  struct journal_command c, found;
  int changed = 0, status = 0;
  pid_t child;
  journal *j;

  j = open_journal(f);
  add_timed_sales(f, j, 10);
  jf_close_journal(&f->jf, j);
  child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    /* Records the command, then dies as kill -9 would: no close at all. */
    struct jf_fixture mine;
    memset(&mine, 0, sizeof(mine));
    memcpy(mine.dir, f->jf.dir, sizeof(mine.dir));
    memcpy(mine.path, f->jf.path, sizeof(mine.path));
    uv_loop_init(&mine.loop);
    j = jf_open_journal(&mine, 0, 64);
    resync_command(&c, "resync-20261126T031500Z-a1b2c3", BASE_MS, 0);
    {
      struct jf_op w;
      memset(&w, 0, sizeof(w));
      w.op.kind = JOURNAL_OP_COMMAND;
      w.op.command = &c;
      w.op.reason = "D1";
      jf_run_op(&mine, j, &w);
      if (w.op.error || !w.op.command_changed)
        _exit(3);
    }
    kill(getpid(), SIGKILL);
    _exit(4);
  }
  assert_int_equal(waitpid(child, &status, 0), child);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  j = open_journal(f);
  assert_true(journal_find_command(j, "resync-20261126T031500Z-a1b2c3", &found));
  assert_int_equal(found.state, JOURNAL_COMMAND_RUNNING);
  assert_int_equal(found.kind, JOURNAL_COMMAND_RESYNC);
  assert_int_equal(found.total_sales, 10);
  assert_string_equal(found.issued_by, "alice");
  /* The collector sends it again (it stays pending until it hears): known. */
  resync_command(&c, "resync-20261126T031500Z-a1b2c3", BASE_MS, 0);
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, &changed), JOURNAL_OK);
  assert_int_equal(changed, 0);
  /* Finished, then sent again after a restart: still not run again. */
  c.state = JOURNAL_COMMAND_DONE;
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND_STATE, &c, 0, &changed), JOURNAL_OK);
  assert_int_equal(changed, 1);
  jf_close_journal(&f->jf, j);
  j = open_journal(f);
  resync_command(&c, "resync-20261126T031500Z-a1b2c3", BASE_MS, 0);
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, &changed), JOURNAL_OK);
  assert_int_equal(changed, 0);
  assert_int_equal(c.state, JOURNAL_COMMAND_DONE);
  /* A cancel of a finished command changes nothing; of a running one, stops it. */
  c.state = JOURNAL_COMMAND_CANCELLED;
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, &changed), JOURNAL_OK);
  assert_int_equal(changed, 0);
  resync_command(&c, "resync-20261126T031600Z-000001", BASE_MS, 0);
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, &changed), JOURNAL_OK);
  c.state = JOURNAL_COMMAND_CANCELLED;
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, &changed), JOURNAL_OK);
  assert_int_equal(changed, 1);
  assert_int_equal(c.state, JOURNAL_COMMAND_CANCELLED);
  assert_int_equal(jf_query_int(&f->jf, "PRAGMA user_version"), 6);
  jf_close_journal(&f->jf, j);
}

static void replay_batches_cover_the_range_once_and_resume_after_a_restart(void **state)
{
  struct fixture *f = *state;
  struct journal_command c;
  struct journal_batch third, third_again;
  unsigned seen[128] = {0};
  int64_t batch_seq = 1;
  int total = 0, n;
  journal *j = open_journal(f);

  add_timed_sales(f, j, 60);
  /* [10 min, 40 min): sales 10..39, seqs 11..40. */
  resync_command(&c, "resync-a", BASE_MS + 10 * MINUTE_MS, BASE_MS + 40 * MINUTE_MS);
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, NULL), JOURNAL_OK);
  assert_int_equal(c.total_sales, 30);
  add_timed_sales(f, j, 0); /* nothing: rows after the start are never replayed */
  for (; batch_seq <= 2; batch_seq++) {
    n = replay_one(f, j, &c, batch_seq, seen, 128, NULL);
    assert_true(n > 0);
    total += n;
    assert_int_equal(command_op(f, j, JOURNAL_OP_REPLAY_ACK, &c, batch_seq, NULL), JOURNAL_OK);
  }
  assert_int_equal(c.done_sales, (uint64_t)total);
  /* Batch 3 is cut (its range recorded), then the agent stops before its ack. */
  n = replay_one(f, j, &c, 3, seen, 128, &third);
  assert_true(n > 0);
  jf_close_journal(&f->jf, j);

  j = open_journal(f);
  assert_true(journal_find_command(j, "resync-a", &c));
  assert_int_equal(c.replay_acked_batch_seq, 2);
  /* Resumed at the first batch not acknowledged: the same rows. */
  memset(seen, 0, sizeof(seen));
  n = replay_one(f, j, &c, 3, seen, 128, &third_again);
  assert_int_equal(third_again.first_seq, third.first_seq);
  assert_int_equal(third_again.last_seq, third.last_seq);
  assert_int_equal(third_again.sale_count, third.sale_count);
  /* seen[] counted batch 3 once more: start the count over from batch 1. */
  memset(seen, 0, sizeof(seen));
  total = 0;
  for (batch_seq = 1;; batch_seq++) {
    n = replay_one(f, j, &c, batch_seq, seen, 128, NULL);
    if (n < 0)
      break;
    total += n;
    assert_int_equal(command_op(f, j, JOURNAL_OP_REPLAY_ACK, &c, batch_seq, NULL), JOURNAL_OK);
  }
  assert_int_equal(total, 30);
  for (int64_t seq = 1; seq <= 60; seq++)
    assert_int_equal(seen[seq], seq >= 11 && seq <= 40 ? 1 : 0);
  assert_int_equal(c.done_sales, 30);
  c.state = JOURNAL_COMMAND_DONE;
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND_STATE, &c, 0, NULL), JOURNAL_OK);
  assert_int_equal(c.state, JOURNAL_COMMAND_DONE);
  jf_close_journal(&f->jf, j);
}

/* Seals every sale into live batches and acknowledges them at `acked_ms`. */
static void send_everything(struct fixture *f, journal *j, int64_t acked_ms)
{
  for (int64_t batch_seq = 1;; batch_seq++) {
    struct jf_op w;
    memset(&w, 0, sizeof(w));
    w.op.kind = JOURNAL_OP_NEXT_BATCH;
    w.op.batch_seq = batch_seq;
    w.op.seal_upto_seq = INT64_MAX;
    w.op.max_sales = 16;
    w.op.max_bytes = 1 << 20;
    w.op.pack = batcher_pack;
    w.op.pack_arg = &f->identity;
    jf_run_op(&f->jf, j, &w);
    assert_int_equal(w.op.error, JOURNAL_OK);
    journal_op_clear(&w.op);
    if (w.op.batch.batch_seq == 0)
      break;
    memset(&w, 0, sizeof(w));
    w.op.kind = JOURNAL_OP_ACK;
    w.op.batch_seq = batch_seq;
    w.op.now_ms = acked_ms;
    jf_run_op(&f->jf, j, &w);
    assert_int_equal(w.op.error, JOURNAL_OK);
  }
}

static uint64_t retention(struct fixture *f, journal *j, int64_t now_ms)
{
  struct jf_op w;
  memset(&w, 0, sizeof(w));
  w.op.kind = JOURNAL_OP_RETENTION;
  w.op.now_ms = now_ms;
  w.op.retention_ms = 90 * DAY_MS;
  jf_run_op(&f->jf, j, &w);
  assert_int_equal(w.op.error, JOURNAL_OK);
  return w.op.sales_changed;
}

static void retention_keeps_the_rows_a_running_resync_has_not_sent(void **state)
{
  struct fixture *f = *state;
  struct journal_command c;
  unsigned seen[128] = {0};
  journal *j = open_journal(f);

  add_timed_sales(f, j, 64);
  send_everything(f, j, BASE_MS);
  resync_command(&c, "resync-held", BASE_MS, 0);
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, NULL), JOURNAL_OK);
  assert_int_equal(c.total_sales, 64);
  /* Batches 1 and 2 of the replay acknowledged: 14 sales sent. */
  for (int64_t batch_seq = 1; batch_seq <= 2; batch_seq++) {
    assert_true(replay_one(f, j, &c, batch_seq, seen, 128, NULL) > 0);
    assert_int_equal(command_op(f, j, JOURNAL_OP_REPLAY_ACK, &c, batch_seq, NULL), JOURNAL_OK);
  }
  /* A year later: retention may delete only live batches wholly below
   * what the replay has sent (seq 14): the first live batch, 16 sales, is
   * not (it holds seqs 1..16), so nothing goes. */
  retention(f, j, BASE_MS + 365 * DAY_MS);
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM sales"), 64);
  for (int64_t batch_seq = 3;; batch_seq++) {
    int n = replay_one(f, j, &c, batch_seq, seen, 128, NULL);
    if (n < 0)
      break;
    assert_int_equal(command_op(f, j, JOURNAL_OP_REPLAY_ACK, &c, batch_seq, NULL), JOURNAL_OK);
  }
  for (int64_t seq = 1; seq <= 64; seq++)
    assert_int_equal(seen[seq], 1);
  c.state = JOURNAL_COMMAND_DONE;
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND_STATE, &c, 0, NULL), JOURNAL_OK);
  /* Finished: retention goes on as before. */
  assert_int_equal(retention(f, j, BASE_MS + 365 * DAY_MS), 64);
  jf_close_journal(&f->jf, j);
}

static void a_resync_older_than_the_journal_holds_ends_incomplete_saying_from_when(void **state)
{
  struct fixture *f = *state;
  struct journal_command c;
  struct journal_stats stats;
  unsigned seen[256] = {0};
  journal *j = open_journal(f);

  add_timed_sales(f, j, 32);
  send_everything(f, j, BASE_MS);
  assert_int_equal(retention(f, j, BASE_MS + 100 * DAY_MS), 32);
  add_timed_sales(f, j, 0);
  {
    /* Newer sales: 32 more, at BASE_MS + (i) minutes with new ids. */
    struct sale sales[8];
    struct jf_write w;
    for (size_t i = 0; i < 8; i++) {
      char id[32];
      snprintf(id, sizeof(id), "NEW-%zu", i);
      jf_sale_init(&sales[i], id, SALE_CHANNEL_POS, "");
      sales[i].business_time_ms = BASE_MS + 100 * DAY_MS + (int64_t)i * MINUTE_MS;
      sales[i].line_count = 1;
      sales[i].lines = calloc(1, sizeof(*sales[i].lines));
      snprintf(sales[i].lines[0].sku, sizeof(sales[i].lines[0].sku), "COLA-33");
      sales[i].lines[0].qty = 1;
      sales[i].lines[0].unit_price = 300;
      sales[i].total = 300;
    }
    jf_write_and_wait(&f->jf, j, &w, sales, 8);
    assert_int_equal(w.write.error, JOURNAL_OK);
    for (size_t i = 0; i < 8; i++)
      sale_clear(&sales[i]);
  }
  journal_get_stats(j, &stats);
  assert_true(stats.sales_deleted);
  assert_int_equal(stats.oldest_sale_business_ms, BASE_MS + 100 * DAY_MS);
  resync_command(&c, "resync-old", BASE_MS, 0);
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, NULL), JOURNAL_OK);
  assert_int_equal(c.total_sales, 8);
  assert_int_equal(c.available_from_ms, BASE_MS + 100 * DAY_MS);
  for (int64_t batch_seq = 1;; batch_seq++) {
    int n = replay_one(f, j, &c, batch_seq, seen, 256, NULL);
    if (n < 0)
      break;
    assert_int_equal(command_op(f, j, JOURNAL_OP_REPLAY_ACK, &c, batch_seq, NULL), JOURNAL_OK);
  }
  assert_int_equal(c.done_sales, 8);
  c.state = JOURNAL_COMMAND_DONE;
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND_STATE, &c, 0, NULL), JOURNAL_OK);
  assert_int_equal(c.state, JOURNAL_COMMAND_INCOMPLETE);
  assert_non_null(
      strstr(c.message, "sales before 2027-03-01T00:00:00Z are no longer on device D1"));
  assert_non_null(strstr(c.message, "90 days' retention"));
  /* The reason is the journal's for good: after a restart too. */
  jf_close_journal(&f->jf, j);
  j = open_journal(f);
  journal_get_stats(j, &stats);
  assert_true(stats.sales_deleted);
  assert_true(journal_find_command(j, "resync-old", &c));
  assert_int_equal(c.state, JOURNAL_COMMAND_INCOMPLETE);
  jf_close_journal(&f->jf, j);
}

/* Issue 10: a replay batch carries the inventory deltas of the rows it
 * covers (those in [from, to)), exactly as a live batch does. */
static void replay_batches_carry_the_deltas_of_the_rows_they_cover(void **state)
{
  struct fixture *f = *state;
  struct journal_command c;
  unsigned seen[128] = {0};
  journal *j = open_journal_with_stock(f);

  add_timed_sales(f, j, 50);
  resync_command(&c, "resync-stock", BASE_MS + 10 * MINUTE_MS, BASE_MS + 40 * MINUTE_MS);
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, NULL), JOURNAL_OK);
  replay_cans = 0;
  for (int64_t batch_seq = 1;; batch_seq++) {
    if (replay_one(f, j, &c, batch_seq, seen, 128, NULL) < 0)
      break;
    assert_int_equal(command_op(f, j, JOURNAL_OP_REPLAY_ACK, &c, batch_seq, NULL), JOURNAL_OK);
  }
  /* 30 sales of one can each, consumed: -30 cans. */
  assert_int_equal(replay_cans, -30 * 1000);
  jf_close_journal(&f->jf, j);
}

/* A running resync stays known (reported, resumed, holding retention) however
 * many newer commands finish after it: the list once kept the 16 newest only. */
static void a_running_resync_stays_known_behind_many_newer_finished_commands(void **state)
{
  struct fixture *f = *state;
  struct journal_command c, found;
  journal *j = open_journal(f);

  add_timed_sales(f, j, 10);
  resync_command(&c, "resync-first", BASE_MS, 0);
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, NULL), JOURNAL_OK);
  for (int i = 0; i < 20; i++) {
    memset(&c, 0, sizeof(c));
    snprintf(c.command_id, sizeof(c.command_id), "push-%02d", i);
    c.kind = JOURNAL_COMMAND_PUSH_NOW;
    c.state = JOURNAL_COMMAND_RUNNING;
    assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, NULL), JOURNAL_OK);
    c.state = JOURNAL_COMMAND_DONE;
    assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND_STATE, &c, 0, NULL), JOURNAL_OK);
  }
  assert_true(journal_find_command(j, "resync-first", &found));
  assert_int_equal(found.state, JOURNAL_COMMAND_RUNNING);
  assert_true(journal_find_command(j, "push-19", &found));
  jf_close_journal(&f->jf, j);
  j = open_journal(f);
  assert_true(journal_find_command(j, "resync-first", &found));
  assert_int_equal(found.state, JOURNAL_COMMAND_RUNNING);
  jf_close_journal(&f->jf, j);
}

/* After kill -9 the journal skips the seqs it had reserved (no row ever
 * has them): a push-now waits for the last row the journal holds, not for
 * the skip target, which no acknowledgement reaches before a new sale. */
static void a_push_now_after_kill_9_waits_for_rows_that_exist(void **state)
{
  struct fixture *f = *state;
  struct journal_command c;
  struct journal_stats stats;
  int status = 0;
  pid_t child = fork();
  journal *j;

  assert_true(child >= 0);
  if (child == 0) {
    /* Journals 10 sales, then dies as kill -9 would: no close at all. */
    struct fixture *mine = calloc(1, sizeof(*mine));
    if (!mine)
      _exit(3);
    memcpy(mine->jf.dir, f->jf.dir, sizeof(mine->jf.dir));
    memcpy(mine->jf.path, f->jf.path, sizeof(mine->jf.path));
    uv_loop_init(&mine->jf.loop);
    j = jf_open_journal(&mine->jf, 0, 64);
    add_timed_sales(mine, j, 10);
    kill(getpid(), SIGKILL);
    _exit(4);
  }
  assert_int_equal(waitpid(child, &status, 0), child);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  j = open_journal(f);
  journal_get_stats(j, &stats);
  assert_true(stats.last_seq > 10); /* the reserved seqs are skipped */
  memset(&c, 0, sizeof(c));
  snprintf(c.command_id, sizeof(c.command_id), "push-after-kill");
  c.kind = JOURNAL_COMMAND_PUSH_NOW;
  c.state = JOURNAL_COMMAND_RUNNING;
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, NULL), JOURNAL_OK);
  assert_int_equal(c.upto_seq, 10);
  jf_close_journal(&f->jf, j);
}

/* A packer that takes none of the sales: as if the first alone were over the caps. */
static int pack_none(void *pack_arg, const struct journal_seal_input *in, uint8_t **body,
                     size_t *body_len, size_t *used)
{
  (void)pack_arg;
  (void)in;
  *body = malloc(1);
  *body_len = 1;
  *used = 0;
  return 0;
}

/* A sale too big for any replay batch is said as such, not as rows that
 * were edited or deleted (what the resync once FAILED with). */
static void a_sale_over_the_replay_caps_is_named_as_such(void **state)
{
  struct fixture *f = *state;
  struct journal_command c;
  struct jf_op w;
  journal *j = open_journal(f);

  add_timed_sales(f, j, 3);
  resync_command(&c, "resync-big", BASE_MS, 0);
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, NULL), JOURNAL_OK);
  memset(&w, 0, sizeof(w));
  w.op.kind = JOURNAL_OP_REPLAY_BATCH;
  w.op.command = &c;
  w.op.batch_seq = 1;
  w.op.max_sales = 7;
  w.op.max_bytes = 64;
  w.op.pack = pack_none;
  jf_run_op(&f->jf, j, &w);
  assert_int_not_equal(w.op.error, JOURNAL_OK);
  if (!strstr(w.op.message, "sale seq 1 alone is larger than a replay batch may be"))
    fail_msg("unexpected message: %s", w.op.message);
  assert_null(strstr(w.op.message, "edited or deleted"));
  journal_op_clear(&w.op);
  jf_close_journal(&f->jf, j);
}

/* One replay operation; *c is where the journal says the resync stands.
 * Returns the batch's sale count, or -1 when the operation cut none. */
static int replay_op(struct fixture *f, journal *j, struct journal_command *c, int64_t batch_seq,
                     unsigned *seen, size_t seen_size)
{
  struct jf_op w;
  int sales;

  memset(&w, 0, sizeof(w));
  w.op.kind = JOURNAL_OP_REPLAY_BATCH;
  w.op.command = c;
  w.op.batch_seq = batch_seq;
  w.op.max_sales = 7;
  w.op.max_bytes = 1 << 20;
  w.op.pack = batcher_pack;
  w.op.pack_arg = &f->identity;
  jf_run_op(&f->jf, j, &w);
  if (w.op.error)
    fail_msg("replay batch %lld: %s", (long long)batch_seq, w.op.message);
  journal_op_clear(&w.op);
  if (w.op.batch.batch_seq == 0)
    return -1;
  sales = (int)w.op.batch.sale_count;
  for (int64_t seq = w.op.batch.first_seq; seq <= w.op.batch.last_seq; seq++) {
    assert_true(seq < (int64_t)seen_size);
    if (seq > 11990) /* the resync's sales, one a minute from sale S-11990 on */
      seen[seq]++;
  }
  return sales;
}

/* A resync of recent sales in a big journal: no operation scans more than
 * JOURNAL_REPLAY_SCAN_ROWS seqs (the writer, and the sales behind it, once
 * waited for scans of the whole table); every sale is replayed once and
 * counted all the same. */
static void no_replay_operation_scans_more_than_a_window_of_the_journal(void **state)
{
  struct fixture *f = *state;
  struct journal_command c;
  static unsigned seen[12100];
  int64_t batch_seq = 1, cut_before;
  unsigned batches = 0;
  journal *j = open_journal(f);

  memset(seen, 0, sizeof(seen));
  add_timed_sales(f, j, 12000);
  resync_command(&c, "resync-recent", BASE_MS + 11990 * MINUTE_MS, 0);
  assert_int_equal(command_op(f, j, JOURNAL_OP_COMMAND, &c, 0, NULL), JOURNAL_OK);
  assert_int_equal(c.upto_seq, 12000);
  for (;;) {
    int n;
    cut_before = c.replay_cut_seq;
    n = replay_op(f, j, &c, batch_seq, seen, 12100);
    assert_true(c.replay_cut_seq - cut_before <= JOURNAL_REPLAY_SCAN_ROWS);
    if (n < 0 && c.replay_cut_seq >= c.upto_seq)
      break;
    if (n < 0)
      continue;
    batches++;
    assert_int_equal(command_op(f, j, JOURNAL_OP_REPLAY_ACK, &c, batch_seq, NULL), JOURNAL_OK);
    batch_seq++;
  }
  assert_int_equal(batches, 2); /* 10 sales, 7 a batch */
  for (int seq = 11991; seq <= 12000; seq++)
    assert_int_equal(seen[seq], 1);
  assert_int_equal(c.done_sales, 10);
  assert_int_equal(c.total_sales, 10);
  jf_close_journal(&f->jf, j);
}

/* meta sales_deleted keeps the first reason sales were deleted for: a
 * retention chunk after a full disk's pruning once overwrote "full". */
static void the_first_reason_sales_were_deleted_for_stays(void **state)
{
  struct fixture *f = *state;
  sqlite3 *db = NULL;
  journal *j = open_journal(f);

  add_timed_sales(f, j, 32);
  send_everything(f, j, BASE_MS);
  jf_close_journal(&f->jf, j);
  /* As a full disk's pruning leaves it. */
  assert_int_equal(sqlite3_open(f->jf.path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "INSERT INTO meta(key, value) VALUES('sales_deleted',"
                                    " 'full') ON CONFLICT(key) DO UPDATE SET value = 'full'",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  j = open_journal(f);
  assert_int_equal(retention(f, j, BASE_MS + 100 * DAY_MS), 32);
  jf_close_journal(&f->jf, j);
  assert_int_equal(
      jf_query_int(&f->jf, "SELECT value = 'full' FROM meta WHERE key = 'sales_deleted'"), 1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(a_command_recorded_survives_kill_9_and_is_not_run_again,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          replay_batches_cover_the_range_once_and_resume_after_a_restart, setup, teardown),
      cmocka_unit_test_setup_teardown(retention_keeps_the_rows_a_running_resync_has_not_sent,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          a_resync_older_than_the_journal_holds_ends_incomplete_saying_from_when, setup,
          teardown),
      cmocka_unit_test_setup_teardown(replay_batches_carry_the_deltas_of_the_rows_they_cover,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          a_running_resync_stays_known_behind_many_newer_finished_commands, setup, teardown),
      cmocka_unit_test_setup_teardown(a_push_now_after_kill_9_waits_for_rows_that_exist, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_sale_over_the_replay_caps_is_named_as_such, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          no_replay_operation_scans_more_than_a_window_of_the_journal, setup, teardown),
      cmocka_unit_test_setup_teardown(the_first_reason_sales_were_deleted_for_stays, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
