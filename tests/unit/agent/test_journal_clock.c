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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <uv.h>

#include "journal/journal.h"
#include "journal_fixture.h"
#include "uplink/batcher.h"

#define HOUR_MS (60LL * 60 * 1000)

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

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(
          retention_counts_on_the_collectors_time_when_the_device_clock_differs, setup,
          teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
