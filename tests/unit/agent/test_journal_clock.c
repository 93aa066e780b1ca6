/*
 * test_journal_clock.c - the journal's handling of a wrong wall clock
 * (clock_pending, schema v7) against a real journal in a temporary
 * directory: retention's time, repairs that leave sealed rows alone,
 * ranges carried into a new journal and ranges cleaned with the rows.
 *
 * The device clock here is the machine's (right); a wrong one is made by
 * giving the journal a collector's time far from it, or by writing
 * clock_pending ranges into the file while the journal is closed, as a
 * journal of an earlier boot or an earlier process would have left them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <uv.h>

#include "journal/journal.h"
#include "journal_fixture.h"
#include "uplink/batcher.h"

#define HOUR_MS (60LL * 60 * 1000)

/* What the kernel says of the clock's synchronisation, as this test
 * chooses: adjtimex() is the system's, replaced here (the executable's
 * definition wins over the C library's), as the power-loss shim replaces
 * fsync. 0 = unsynchronised (STA_UNSYNC), as a clock no NTP disciplines. */
static int kernel_synced;

int adjtimex(struct timex *tx)
{
  memset(tx, 0, sizeof(*tx));
  tx->status = kernel_synced ? 0 : STA_UNSYNC;
  return kernel_synced ? TIME_OK : TIME_ERROR;
}

struct fixture {
  struct jf_fixture jf;
  struct batcher_identity identity;
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  jf_setup(&f->jf, "test_journal_clock");
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

static int64_t wall_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t boot_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void this_boot_id(char *out, size_t out_size)
{
  FILE *file = fopen("/proc/sys/kernel/random/boot_id", "r");
  assert_non_null(file);
  assert_non_null(fgets(out, (int)out_size, file));
  fclose(file);
  out[strcspn(out, "\n")] = '\0';
}

static void make_sale(struct sale *sale, const char *sale_id, size_t lines)
{
  (void)lines;
  jf_sale_init(sale, sale_id, SALE_CHANNEL_POS, "E042");
  sale->line_count = 1;
  sale->lines = calloc(1, sizeof(*sale->lines));
  snprintf(sale->lines[0].sku, sizeof(sale->lines[0].sku), "PIZZA-MARG-L");
  sale->lines[0].qty = 1;
  sale->lines[0].unit_price = 1250;
  sale->total = 1250;
  sale->payment_count = 1;
  sale->payments = calloc(1, sizeof(*sale->payments));
  snprintf(sale->payments[0].method, sizeof(sale->payments[0].method), "card");
  sale->payments[0].amount = sale->total;
}

/* Runs one operation to completion; fails the test on an error. */
static void run_op(struct fixture *f, journal *j, struct jf_op *w, enum journal_op_kind kind,
                   int64_t batch_seq, size_t max_sales, int64_t now_ms, int64_t retention_ms)
{
  memset(w, 0, sizeof(*w));
  w->op.kind = kind;
  w->op.batch_seq = batch_seq;
  w->op.seal_upto_seq = INT64_MAX;
  w->op.max_sales = max_sales;
  w->op.max_bytes = 1024 * 1024;
  w->op.pack = batcher_pack;
  w->op.pack_arg = &f->identity;
  w->op.now_ms = now_ms;
  w->op.retention_ms = retention_ms;
  jf_run_op(&f->jf, j, w);
  if (w->op.error)
    fail_msg("operation %d: %s", (int)kind, w->op.message);
}

/* Seals batch `batch_seq` of at most `max_sales` sales. */
static void seal(struct fixture *f, journal *j, int64_t batch_seq, size_t max_sales)
{
  struct jf_op w;
  run_op(f, j, &w, JOURNAL_OP_NEXT_BATCH, batch_seq, max_sales, 0, 0);
  assert_int_equal(w.op.batch.batch_seq, batch_seq);
  journal_op_clear(&w.op);
}

/* Runs `sql` on the closed journal's file with a connection of its own. */
static void exec_sql(struct fixture *f, const char *sql)
{
  sqlite3 *db;
  char *error = NULL;
  assert_int_equal(sqlite3_open(f->jf.path, &db), SQLITE_OK);
  if (sqlite3_exec(db, sql, NULL, NULL, &error) != SQLITE_OK)
    fail_msg("%s: %s", sql, error);
  sqlite3_close(db);
}

/* ---- the tests --------------------------------------------------------------------- */

/* Issue 11 review, item 1: retention was switched off while the device
 * clock differed from the collector's, for ever on a store whose clock
 * drifts; it must count on the collector's time instead. */
static void retention_counts_on_the_collectors_time_when_the_device_clock_differs(void **state)
{
  struct fixture *f = *state;
  journal *j = jf_open_journal(&f->jf, 0, 64);
  struct jf_op w;
  int64_t collector;

  /* The device clock 3 hours behind the collector's. */
  jf_add_sales(&f->jf, j, "A", 4, 1, make_sale);
  collector = wall_ms() + 3 * HOUR_MS;
  journal_clock_reference(j, collector, boot_ms());
  seal(f, j, 1, 10);
  /* Acknowledged 2 hours ago by the collector's clock. */
  run_op(f, j, &w, JOURNAL_OP_ACK, 1, 0, collector - 2 * HOUR_MS, 0);
  run_op(f, j, &w, JOURNAL_OP_RETENTION, 0, 0, 0, 1 * HOUR_MS);
  assert_int_equal(w.op.batches_changed, 1);
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM sales"), 0);

  /* The device clock 3 hours ahead: the same acknowledgement 2 hours ago
   * by the device's clock is 1 hour in the collector's future. */
  jf_add_sales(&f->jf, j, "B", 4, 1, make_sale);
  collector = wall_ms() - 3 * HOUR_MS;
  journal_clock_reference(j, collector, boot_ms());
  seal(f, j, 2, 10);
  run_op(f, j, &w, JOURNAL_OP_ACK, 2, 0, wall_ms() - 2 * HOUR_MS, 0);
  run_op(f, j, &w, JOURNAL_OP_RETENTION, 0, 0, 0, 1 * HOUR_MS);
  assert_int_equal(w.op.batches_changed, 0);
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM sales"), 4);
  jf_close_journal(&f->jf, j);
}

/* Adds a range of this boot to the closed journal: rows [first, last]
 * read off a clock `behind_ms` behind the right one. */
static void add_range(struct fixture *f, int64_t first, int64_t last, int64_t behind_ms)
{
  char boot[64], sql[256];
  this_boot_id(boot, sizeof(boot));
  snprintf(sql, sizeof(sql),
           "INSERT INTO clock_pending VALUES(%lld, %lld, '%s', %lld)", (long long)first,
           (long long)last, boot, (long long)(wall_ms() - boot_ms() - behind_ms));
  exec_sql(f, sql);
}

/* Issue 11 review, item 2: a repair rewrote received_ms of rows already
 * sealed into a batch (the hold ran out, the batch went out flagged), so
 * that a resync would replay them with other times than the live batch
 * carried. Only rows above the sealing cursor are repaired; the sealed
 * part of the range stays, flagged. */
static void a_repair_leaves_rows_already_sealed_as_they_went_out(void **state)
{
  struct fixture *f = *state;
  journal *j = jf_open_journal(&f->jf, 0, 64);
  struct journal_stats stats;
  int64_t sealed_sum, moved;

  jf_add_sales(&f->jf, j, "A", 20, 1, make_sale);
  seal(f, j, 1, 10); /* seqs 1..10 */
  jf_close_journal(&f->jf, j);
  /* Rows 5..15 came while the clock was an hour behind, in this boot. */
  add_range(f, 5, 15, HOUR_MS);
  sealed_sum = jf_query_int(&f->jf, "SELECT sum(received_ms) FROM sales WHERE seq <= 10");
  moved = jf_query_int(&f->jf, "SELECT sum(received_ms) FROM sales WHERE seq BETWEEN 11 AND 15");

  j = jf_open_journal(&f->jf, 0, 64);
  /* The clock is right: the writer repairs before the next sale. */
  jf_add_sales(&f->jf, j, "B", 1, 1, make_sale);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_repaired_rows, 5);
  assert_int_equal(stats.clock_pending_rows, 0);
  assert_int_equal(stats.clock_unrepaired_rows, 6);
  jf_close_journal(&f->jf, j);

  assert_int_equal(jf_query_int(&f->jf, "SELECT sum(received_ms) FROM sales WHERE seq <= 10"),
                   sealed_sum);
  moved = jf_query_int(&f->jf, "SELECT sum(received_ms) FROM sales WHERE seq BETWEEN 11 AND 15") -
          moved;
  assert_true(moved > 5 * (HOUR_MS - 60000) && moved < 5 * (HOUR_MS + 60000));
  /* The sealed part stays a range of its own: replays flag it. */
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM clock_pending"), 1);
  assert_int_equal(jf_query_int(&f->jf, "SELECT first_seq * 100 + last_seq FROM clock_pending"),
                   510);
  /* And a later open repairs nothing more. */
  j = jf_open_journal(&f->jf, 0, 64);
  jf_add_sales(&f->jf, j, "C", 1, 1, make_sale);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_repaired_rows, 0);
  assert_int_equal(stats.clock_unrepaired_rows, 6);
  jf_close_journal(&f->jf, j);
  assert_int_equal(jf_query_int(&f->jf, "SELECT sum(received_ms) FROM sales WHERE seq <= 10"),
                   sealed_sum);
}

/* The sale_ids, in seq order, of the rows `sql` selects (a WHERE on s). */
static void sale_ids(struct fixture *f, const char *where, char *out, size_t out_size)
{
  sqlite3 *db;
  sqlite3_stmt *stmt;
  char sql[512];
  snprintf(sql, sizeof(sql),
           "SELECT group_concat(sale_id) FROM (SELECT sale_id FROM sales s WHERE %s ORDER BY "
           "seq)", where);
  assert_int_equal(sqlite3_open_v2(f->jf.path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
  snprintf(out, out_size, "%s",
           sqlite3_column_text(stmt, 0) ? (const char *)sqlite3_column_text(stmt, 0) : "");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

#define IN_A_RANGE                                                            \
  "EXISTS (SELECT 1 FROM clock_pending c WHERE s.seq BETWEEN c.first_seq AND c.last_seq)"

/* Issue 11 review, item 3: rows carried into a new journal (a cloned disk,
 * lost sales) lost their clock flags: clock_pending was not carried. */
static void rows_carried_into_a_new_journal_keep_their_clock_flags(void **state)
{
  struct fixture *f = *state;
  journal *j = jf_open_journal(&f->jf, 0, 64);
  struct journal_stats stats;
  struct jf_op w;
  char before[512], after[512];

  jf_add_sales(&f->jf, j, "A", 20, 1, make_sale);
  seal(f, j, 1, 10);
  run_op(f, j, &w, JOURNAL_OP_ACK, 1, 0, 0, 0); /* 1..10 acknowledged: not carried */
  jf_close_journal(&f->jf, j);
  /* Rows 8..15 came in a boot that ended before the clock was set. */
  exec_sql(f, "INSERT INTO clock_pending VALUES(8, 15, 'an-earlier-boot', -1700000000000)");
  sale_ids(f, "s.seq BETWEEN 11 AND 15", before, sizeof(before));

  j = jf_open_journal(&f->jf, 0, 64);
  memset(&w, 0, sizeof(w));
  w.op.kind = JOURNAL_OP_NEW_JOURNAL;
  w.op.reason = "a test: this journal_id is another device's";
  jf_run_op(&f->jf, j, &w);
  assert_int_equal(w.op.error, 0);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_unrepaired_rows, 5);
  jf_close_journal(&f->jf, j);

  sale_ids(f, IN_A_RANGE, after, sizeof(after));
  assert_string_equal(after, before);
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM clock_pending WHERE boot_id = "
                                        "'an-earlier-boot' AND wall_minus_boot_ms = "
                                        "-1700000000000"),
                   1);
}

/* Issue 11 review, item 4: clock_pending ranges were never cleaned: rows
 * deleted by retention stayed counted as unrepaired, for ever. */
static void ranges_go_with_the_rows_retention_deletes(void **state)
{
  struct fixture *f = *state;
  journal *j = jf_open_journal(&f->jf, 0, 64);
  struct journal_stats stats;
  struct jf_op w;
  int64_t now = wall_ms();

  jf_add_sales(&f->jf, j, "A", 20, 1, make_sale);
  jf_close_journal(&f->jf, j);
  exec_sql(f, "INSERT INTO clock_pending VALUES(3, 12, 'an-earlier-boot', -1700000000000)");

  j = jf_open_journal(&f->jf, 0, 64);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_unrepaired_rows, 10);
  seal(f, j, 1, 10); /* 1..10 */
  run_op(f, j, &w, JOURNAL_OP_ACK, 1, 0, now - 10 * HOUR_MS, 0);
  run_op(f, j, &w, JOURNAL_OP_RETENTION, 0, 0, now, HOUR_MS);
  assert_int_equal(w.op.sales_changed, 10);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_unrepaired_rows, 2);
  seal(f, j, 2, 10); /* 11..20 */
  run_op(f, j, &w, JOURNAL_OP_ACK, 2, 0, now - 10 * HOUR_MS, 0);
  run_op(f, j, &w, JOURNAL_OP_RETENTION, 0, 0, now, HOUR_MS);
  assert_int_equal(w.op.sales_changed, 10);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_unrepaired_rows, 0);
  jf_close_journal(&f->jf, j);
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM clock_pending"), 0);

  /* Trimmed on disk too: a range reaching past the deleted rows keeps
   * only its rows still held. */
  j = jf_open_journal(&f->jf, 0, 64);
  jf_add_sales(&f->jf, j, "B", 20, 1, make_sale); /* 21..40 */
  jf_close_journal(&f->jf, j);
  exec_sql(f, "INSERT INTO clock_pending VALUES(25, 34, 'an-earlier-boot', -1700000000000)");
  j = jf_open_journal(&f->jf, 0, 64);
  seal(f, j, 3, 10); /* 21..30 */
  run_op(f, j, &w, JOURNAL_OP_ACK, 3, 0, now - 10 * HOUR_MS, 0);
  run_op(f, j, &w, JOURNAL_OP_RETENTION, 0, 0, now, HOUR_MS);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_unrepaired_rows, 4);
  jf_close_journal(&f->jf, j);
  assert_int_equal(jf_query_int(&f->jf, "SELECT first_seq * 100 + last_seq FROM clock_pending"),
                   3134);
}

/* Issue 11 review, item 6: the collector's clock overrode every device's:
 * a collector 2 minutes off put every NTP-synchronised store in
 * differs_from_collector and stamped its sales with the collector's time. */
static void a_synchronised_device_clock_is_kept_against_a_drifting_collector(void **state)
{
  struct fixture *f = *state;
  journal *j = jf_open_journal(&f->jf, 0, 64);
  struct journal_stats stats;
  int64_t before;

  kernel_synced = 1;
  journal_clock_reference(j, wall_ms() + HOUR_MS, boot_ms()); /* the collector an hour ahead */
  before = wall_ms();
  jf_add_sales(&f->jf, j, "A", 1, 1, make_sale);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_state, JOURNAL_CLOCK_OK);
  /* Stamped with the device's clock, not the collector's. */
  assert_true(stats.last_received_ms >= before && stats.last_received_ms < before + HOUR_MS / 2);

  /* Not synchronised: the collector's time is the better one. */
  kernel_synced = 0;
  jf_add_sales(&f->jf, j, "B", 1, 1, make_sale);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_state, JOURNAL_CLOCK_DIFFERS_FROM_COLLECTOR);
  assert_true(stats.last_received_ms >= before + HOUR_MS / 2);
  jf_close_journal(&f->jf, j);
}

/* The newest row read off a trusted clock is found past the pending rows
 * above it (item 4: by seq lookups from the ranges in memory, not a walk
 * over every pending row). */
static void the_newest_trusted_row_is_found_past_pending_ones(void **state)
{
  struct fixture *f = *state;
  journal *j = jf_open_journal(&f->jf, 0, 64);
  struct journal_stats stats;
  int64_t ahead = wall_ms() + 24 * HOUR_MS;
  char sql[256];

  jf_add_sales(&f->jf, j, "A", 12, 1, make_sale);
  jf_close_journal(&f->jf, j);
  /* 5 right (a day ahead: the clock is now behind them); 6..7 and
   * 9..12 pending and two days ahead; 8 right but older. */
  snprintf(sql, sizeof(sql),
           "UPDATE sales SET received_ms = CASE WHEN seq = 5 THEN %lld WHEN seq = 8 THEN %lld "
           "WHEN seq > 5 THEN %lld ELSE received_ms END",
           (long long)ahead, (long long)(ahead - HOUR_MS), (long long)(ahead + 24 * HOUR_MS));
  exec_sql(f, sql);
  exec_sql(f, "INSERT INTO clock_pending VALUES(6, 7, 'an-earlier-boot', 0), "
              "(9, 12, 'an-earlier-boot', 0)");
  j = jf_open_journal(&f->jf, 0, 64);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_trusted_ms, ahead - HOUR_MS);
  assert_int_equal(stats.clock_state, JOURNAL_CLOCK_BEHIND_JOURNAL);
  assert_int_equal(stats.clock_unrepaired_rows, 6);
  jf_close_journal(&f->jf, j);
}

/* Issue 11 review, item 7: the collector's time was forgotten when the
 * agent restarted: until the first heartbeat answered, a wrong clock
 * stamped sales again (and flagged them) though the collector's time was
 * known in this boot. */
static void the_collectors_time_is_kept_across_a_restart_in_the_same_boot(void **state)
{
  struct fixture *f = *state;
  journal *j = jf_open_journal(&f->jf, 0, 64);
  struct journal_stats stats;
  int64_t before;

  journal_clock_reference(j, wall_ms() + HOUR_MS, boot_ms()); /* an hour ahead */
  jf_add_sales(&f->jf, j, "A", 1, 1, make_sale);
  jf_close_journal(&f->jf, j);

  j = jf_open_journal(&f->jf, 0, 64);
  before = wall_ms();
  jf_add_sales(&f->jf, j, "B", 1, 1, make_sale);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_state, JOURNAL_CLOCK_DIFFERS_FROM_COLLECTOR);
  assert_true(stats.last_received_ms >= before + HOUR_MS / 2);
  jf_close_journal(&f->jf, j);

  /* Another boot's is not this boot's (CLOCK_BOOTTIME started again):
   * forgotten; the device clock is then judged by the journal alone, an
   * hour behind the rows stamped with the collector's time. */
  exec_sql(f, "UPDATE meta SET value = 'another-boot 3600000' WHERE key = 'clock_reference'");
  j = jf_open_journal(&f->jf, 0, 64);
  jf_add_sales(&f->jf, j, "C", 1, 1, make_sale);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.clock_state, JOURNAL_CLOCK_BEHIND_JOURNAL);
  jf_close_journal(&f->jf, j);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(
          retention_counts_on_the_collectors_time_when_the_device_clock_differs, setup,
          teardown),
      cmocka_unit_test_setup_teardown(a_repair_leaves_rows_already_sealed_as_they_went_out, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(rows_carried_into_a_new_journal_keep_their_clock_flags,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(ranges_go_with_the_rows_retention_deletes, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          a_synchronised_device_clock_is_kept_against_a_drifting_collector, setup, teardown),
      cmocka_unit_test_setup_teardown(the_newest_trusted_row_is_found_past_pending_ones, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          the_collectors_time_is_kept_across_a_restart_in_the_same_boot, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
