/*
 * journal_fixture.c - the journal tests' shared fixture (journal_fixture.h).
 */
#include "journal_fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

void jf_setup(struct jf_fixture *f, const char *name)
{
  snprintf(f->dir, sizeof(f->dir), "/tmp/%s_XXXXXX", name);
  assert_non_null(mkdtemp(f->dir));
  f->compact_rows = 0;
  f->slim_rows = 0;
  snprintf(f->path, sizeof(f->path), "%s/journal.db", f->dir);
  assert_int_equal(uv_loop_init(&f->loop), 0);
}

void jf_teardown(struct jf_fixture *f)
{
  char cmd[128];
  assert_int_equal(uv_loop_close(&f->loop), 0);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
  assert_int_equal(system(cmd), 0);
}

journal *jf_open_journal(struct jf_fixture *f, int64_t max_bytes, unsigned group_commit_max)
{
  struct journal_options options = {.path = f->path,
                                    .max_bytes = max_bytes,
                                    .group_commit_max = group_commit_max,
                                    .busy_timeout_ms = 1000,
                                    .compact_rows = f->compact_rows,
                                    .slim_rows = f->slim_rows};
  char err[512];
  journal *j = journal_open(&f->loop, &options, err, sizeof(err));
  if (!j)
    fail_msg("journal_open: %s", err);
  return j;
}

void jf_close_journal(struct jf_fixture *f, journal *j)
{
  journal_close(j);
  uv_run(&f->loop, UV_RUN_DEFAULT);
}

void jf_sale_init(struct sale *sale, const char *sale_id, enum sale_channel channel,
                  const char *cashier_id)
{
  memset(sale, 0, sizeof(*sale));
  snprintf(sale->sale_id, sizeof(sale->sale_id), "%s", sale_id);
  sale->kind = SALE_KIND_SALE;
  snprintf(sale->terminal_id, sizeof(sale->terminal_id), "T1");
  snprintf(sale->cashier_id, sizeof(sale->cashier_id), "%s", cashier_id);
  sale->channel = channel;
  snprintf(sale->business_time, sizeof(sale->business_time), "2026-11-21T18:42:05+01:00");
  sale->business_time_ms = 1763746925000LL;
  sale->utc_offset_minutes = 60;
  snprintf(sale->currency, sizeof(sale->currency), "EUR");
  sale->currency_exponent = 2;
}

static void on_write_done(struct journal_write *write)
{
  struct jf_write *w = write->user;
  w->done = 1;
}

static void jf_submit_write(journal *j, struct jf_write *w, const struct sale *sales, size_t count,
                            int done_in_submit)
{
  assert_true(count <= sizeof(w->results) / sizeof(w->results[0]));
  memset(w, 0, sizeof(*w));
  w->write.sales = sales;
  w->write.count = count;
  w->write.results = w->results;
  w->write.done = on_write_done;
  w->write.user = w;
  w->write.done_in_submit = done_in_submit;
  assert_int_equal(journal_submit(j, &w->write), 0);
}

void jf_submit(journal *j, struct jf_write *w, const struct sale *sales, size_t count)
{
  jf_submit_write(j, w, sales, count, 0);
}

void jf_submit_done_in_submit(journal *j, struct jf_write *w, const struct sale *sales,
                              size_t count)
{
  jf_submit_write(j, w, sales, count, 1);
}

void jf_wait(struct jf_fixture *f, struct jf_write *w)
{
  while (!w->done)
    uv_run(&f->loop, UV_RUN_ONCE);
}

void jf_write_and_wait(struct jf_fixture *f, journal *j, struct jf_write *w,
                       const struct sale *sales, size_t count)
{
  jf_submit(j, w, sales, count);
  jf_wait(f, w);
}

void jf_add_sales(struct jf_fixture *f, journal *j, const char *prefix, size_t count,
                  size_t lines, jf_make_sale_fn *make_sale)
{
  for (size_t done = 0; done < count;) {
    struct sale sales[64];
    struct jf_write w;
    size_t n = count - done < 64 ? count - done : 64;
    char id[48];
    for (size_t i = 0; i < n; i++) {
      snprintf(id, sizeof(id), "%.16s-%zu", prefix, done + i);
      make_sale(&sales[i], id, lines);
    }
    jf_write_and_wait(f, j, &w, sales, n);
    assert_int_equal(w.write.error, 0);
    for (size_t i = 0; i < n; i++)
      sale_clear(&sales[i]);
    done += n;
  }
}

static void on_op_done(struct journal_op *op)
{
  struct jf_op *w = op->user;
  w->done = 1;
}

void jf_run_op(struct jf_fixture *f, journal *j, struct jf_op *w)
{
  w->done = 0;
  w->op.done = on_op_done;
  w->op.user = w;
  assert_int_equal(journal_submit_op(j, &w->op), 0);
  while (!w->done)
    uv_run(&f->loop, UV_RUN_ONCE);
}

int64_t jf_query_int(struct jf_fixture *f, const char *sql)
{
  sqlite3 *db;
  sqlite3_stmt *stmt;
  int64_t value = -1;
  assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
    fail_msg("%s: %s", sql, sqlite3_errmsg(db));
  if (sqlite3_step(stmt) == SQLITE_ROW)
    value = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return value;
}
