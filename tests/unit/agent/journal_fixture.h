/*
 * journal_fixture.h - what the journal, batcher and uplink tests share: a
 * temporary directory and a loop, a journal on journal.db in it, sales
 * written and journal operations run to completion on that loop, and
 * queries on the file through a connection of their own.
 *
 * The helpers fail the running cmocka test on an error.
 */
#ifndef TESTS_UNIT_AGENT_JOURNAL_FIXTURE_H
#define TESTS_UNIT_AGENT_JOURNAL_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "journal/journal.h"

struct jf_fixture {
  char dir[64];
  char path[96]; /* dir/journal.db, not created here */
  uv_loop_t loop;
  int compact_rows; /* jf_open_journal: journal_options.compact_rows */
  int slim_rows;    /* jf_open_journal: journal_options.slim_rows */
};

/* Makes /tmp/NAME_XXXXXX and starts the loop. */
void jf_setup(struct jf_fixture *f, const char *name);

/* Closes the loop (everything on it must be closed) and removes the directory. */
void jf_teardown(struct jf_fixture *f);

/* Opens f->path with `max_bytes` (0 = no limit) and `group_commit_max`,
 * a 1 s busy timeout and no retention. */
journal *jf_open_journal(struct jf_fixture *f, int64_t max_bytes, unsigned group_commit_max);

/* Closes `j` and runs the loop until its close is done. */
void jf_close_journal(struct jf_fixture *f, journal *j);

/* Zeroes `sale` and fills in what every test sale has: `sale_id`, a plain
 * sale from terminal T1 by `cashier_id` ("" = none) on `channel`, at
 * 2026-11-21T18:42:05+01:00, in EUR. Lines, payments and total are the caller's. */
void jf_sale_init(struct sale *sale, const char *sale_id, enum sale_channel channel,
                  const char *cashier_id);

/* A write and room for the results of up to 64 sales. */
struct jf_write {
  struct journal_write write;
  struct journal_item_result results[64];
  int done;
};

/* Submits `count` sales (at most 64) without waiting. */
void jf_submit(journal *j, struct jf_write *w, const struct sale *sales, size_t count);
/* The same, allowing done() from inside journal_submit (done_in_submit), as
 * the sales API does. */
void jf_submit_done_in_submit(journal *j, struct jf_write *w, const struct sale *sales,
                              size_t count);

/* Runs the loop until `w` is done. */
void jf_wait(struct jf_fixture *f, struct jf_write *w);

void jf_write_and_wait(struct jf_fixture *f, journal *j, struct jf_write *w,
                       const struct sale *sales, size_t count);

/* Builds a valid sale `sale_id` with `lines` lines. */
typedef void jf_make_sale_fn(struct sale *sale, const char *sale_id, size_t lines);

/* Journals `count` sales named PREFIX-i (PREFIX cut to 16 characters), made
 * by `make_sale` with `lines` lines each, 64 to a write; each write must succeed. */
void jf_add_sales(struct jf_fixture *f, journal *j, const char *prefix, size_t count,
                  size_t lines, jf_make_sale_fn *make_sale);

/* A journal operation and whether it is done. */
struct jf_op {
  struct journal_op op;
  int done;
};

/* Submits w->op, as the caller filled it in, and runs the loop until it is
 * done. The caller checks w->op.error and clears w->op. */
void jf_run_op(struct jf_fixture *f, journal *j, struct jf_op *w);

/* Runs one query on f->path with a separate read-only connection, as the
 * sqlite3 CLI would; the first column of its first row, or -1 without a row. */
int64_t jf_query_int(struct jf_fixture *f, const char *sql);

#endif
