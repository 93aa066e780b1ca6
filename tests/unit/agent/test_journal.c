/*
 * test_journal.c - the journal against a real SQLite file: durability
 * settings, seq assignment, idempotency, all-or-nothing writes, group
 * commit (and its cohorts on a slow disk), a full journal, reopening and
 * schema versions.
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include <dlfcn.h>
#include <errno.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <uv.h>

#include "journal/journal.h"
#include "journal_fixture.h"
#include "platform/metrics.h"
#include "wal_writes.h"

/* A store device's slow flash: while set, every fdatasync of this process
 * (SQLite's on the WAL, the high-water mark's) first sleeps this long. This
 * executable's fdatasync is the one libsqlite3 calls, as it would be an
 * LD_PRELOAD shim's (tests/tools/fsync_shim.c). */
static atomic_long slow_sync_us;
/* A disk that fails its syncs: while set, every fdatasync fails with EIO. */
static atomic_int failing_sync;

int fdatasync(int fd)
{
  int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  long delay = atomic_load(&slow_sync_us);

  if (delay > 0)
    usleep((useconds_t)delay);
  if (atomic_load(&failing_sync)) {
    errno = EIO;
    return -1;
  }
  return real ? real(fd) : -1;
}

/* A value of the process's metrics as /metrics shows it (a histogram's
 * NAME_count, say); *found = 0 when the series is not there. */
static double metric_value(const char *name, int *found)
{
  size_t length = 0;
  char *text = metrics_render(metrics_global(), &length);
  char key[128];
  const char *at;
  double value = 0;

  assert_non_null(text);
  snprintf(key, sizeof(key), "\n%s ", name);
  at = strstr(text, key);
  *found = at != NULL;
  if (at)
    value = strtod(at + strlen(key), NULL);
  free(text);
  return value;
}

static int setup(void **state)
{
  struct jf_fixture *f = calloc(1, sizeof(*f));
  /* A test that failed half-way leaves the next one a working disk. */
  atomic_store(&failing_sync, 0);
  jf_setup(f, "test_journal");
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  jf_teardown(*state);
  free(*state);
  return 0;
}

/* A valid two-line sale; `variant` changes its content but not its id. */
static void make_sale(struct sale *sale, const char *sale_id, int variant)
{
  jf_sale_init(sale, sale_id, SALE_CHANNEL_POS, "E042");
  sale->line_count = 2;
  sale->lines = calloc(2, sizeof(*sale->lines));
  snprintf(sale->lines[0].sku, sizeof(sale->lines[0].sku), "PIZZA-MARG-L");
  sale->lines[0].qty = 2 + variant;
  sale->lines[0].unit_price = 1250;
  sale->lines[0].discount = 100;
  snprintf(sale->lines[0].promo_id, sizeof(sale->lines[0].promo_id), "TPR-42");
  sale->lines[0].tax = 230;
  snprintf(sale->lines[1].sku, sizeof(sale->lines[1].sku), "COLA-33");
  sale->lines[1].qty = 1;
  sale->lines[1].unit_price = 300;
  sale->total = (2 + variant) * 1250 - 100 + 230 + 300;
  sale->payment_count = 1;
  sale->payments = calloc(1, sizeof(*sale->payments));
  snprintf(sale->payments[0].method, sizeof(sale->payments[0].method), "card");
  sale->payments[0].amount = sale->total;
}

static void opens_in_wal_with_a_journal_id(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 64);
  struct journal_stats stats;
  journal_get_stats(j, &stats);
  assert_int_equal(strlen(stats.journal_id), 32);
  assert_int_equal(stats.sales_journaled, 0);
  assert_int_equal(stats.last_seq, 0);
  jf_close_journal(f, j);
  assert_int_equal(jf_query_int(f, "PRAGMA user_version"), 6);
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM meta WHERE key='journal_id' AND "
                                   "length(value)=32"),
                   1);
  {
    sqlite3 *db;
    sqlite3_stmt *stmt;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "wal");
    sqlite3_finalize(stmt);
    sqlite3_close(db);
  }
}

static void sales_get_increasing_seqs_and_columns(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 64);
  struct sale sales[3];
  struct jf_write p;
  make_sale(&sales[0], "T1-1", 0);
  make_sale(&sales[1], "T1-2", 0);
  make_sale(&sales[2], "T1-3", 1);
  jf_write_and_wait(f, j, &p, sales, 3);
  assert_int_equal(p.write.error, 0);
  assert_int_equal(p.results[0].seq, 1);
  assert_int_equal(p.results[1].seq, 2);
  assert_int_equal(p.results[2].seq, 3);
  assert_int_equal(p.results[2].outcome, JOURNAL_STORED);
  jf_close_journal(f, j);
  assert_int_equal(jf_query_int(f, "SELECT total_minor FROM sales WHERE sale_id='T1-3'"),
                   3 * 1250 - 100 + 230 + 300);
  assert_int_equal(jf_query_int(f, "SELECT json_extract(lines,'$[0].unit_price') FROM sales "
                                   "WHERE seq=1"),
                   1250);
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM sales WHERE seq=1 AND "
                                   "json_extract(lines,'$[0].promo_id')='TPR-42' AND "
                                   "json_extract(lines,'$[1].promo_id') IS NULL AND "
                                   "channel='pos' AND kind='sale' AND cashier_id='E042' AND "
                                   "original_sale_id IS NULL AND utc_offset_min=60"),
                   1);
  for (int i = 0; i < 3; i++)
    sale_clear(&sales[i]);
}

static void retry_is_a_duplicate_and_other_content_a_conflict(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 64);
  struct sale first, same, changed, fresh;
  struct sale pair[2];
  struct jf_write p;
  make_sale(&first, "T1-7", 0);
  make_sale(&same, "T1-7", 0);
  make_sale(&changed, "T1-7", 1);
  make_sale(&fresh, "T1-8", 0);

  jf_write_and_wait(f, j, &p, &first, 1);
  assert_int_equal(p.results[0].seq, 1);

  jf_write_and_wait(f, j, &p, &same, 1);
  assert_int_equal(p.write.error, 0);
  assert_int_equal(p.results[0].outcome, JOURNAL_DUPLICATE);
  assert_int_equal(p.results[0].seq, 1);

  /* A write holding a new sale and a conflicting one keeps neither. */
  pair[0] = fresh;
  pair[1] = changed;
  jf_write_and_wait(f, j, &p, pair, 2);
  assert_int_equal(p.write.error, JOURNAL_ECONFLICT);
  assert_int_equal(p.write.conflict_index, 1);
  assert_int_equal(p.write.conflict_seq, 1);
  assert_non_null(strstr(p.write.message, "T1-7"));
  jf_close_journal(f, j);
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM sales"), 1);
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM sales WHERE sale_id='T1-8'"), 0);
  sale_clear(&first);
  sale_clear(&same);
  sale_clear(&changed);
  sale_clear(&fresh);
}

static void a_conflict_does_not_undo_the_rest_of_its_group(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 1024);
  struct sale base, conflicting, others[20];
  struct jf_write p_base, p_conflict, p_others[20];
  struct journal_stats stats;
  char id[16];

  make_sale(&base, "G-0", 0);
  jf_write_and_wait(f, j, &p_base, &base, 1);
  make_sale(&conflicting, "G-0", 1);
  /* Queue many writes at once so the writer takes them as one group. */
  for (int i = 0; i < 20; i++) {
    snprintf(id, sizeof(id), "G-%d", i + 1);
    make_sale(&others[i], id, 0);
  }
  for (int i = 0; i < 10; i++)
    jf_submit(j, &p_others[i], &others[i], 1);
  jf_submit(j, &p_conflict, &conflicting, 1);
  for (int i = 10; i < 20; i++)
    jf_submit(j, &p_others[i], &others[i], 1);
  for (int i = 0; i < 20; i++) {
    jf_wait(f, &p_others[i]);
    assert_int_equal(p_others[i].write.error, 0);
  }
  jf_wait(f, &p_conflict);
  assert_int_equal(p_conflict.write.error, JOURNAL_ECONFLICT);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.sales_journaled, 21);
  assert_int_equal(stats.last_seq, 21);
  /* Fewer commits than writes: they were grouped (one fsync for many). */
  assert_true(stats.commits < 21);
  jf_close_journal(f, j);
  assert_int_equal(jf_query_int(f, "SELECT count(DISTINCT seq) FROM sales"), 21);
  sale_clear(&base);
  sale_clear(&conflicting);
  for (int i = 0; i < 20; i++)
    sale_clear(&others[i]);
}

/* Issue 12 item 2: on a slow fsync a crowd of clients shared its fsyncs
 * in two alternating halves: the writer took only what was queued when a
 * commit ended, and the clients that commit answered came back during the
 * next one's fsync, for a commit of their own after it (6 sales per fsync
 * with 16 clients, not 16). Now the writer holds a commit, briefly, for the
 * clients it knows are coming back. Eight clients, each writing again as
 * soon as it is answered, the second half a moment after the first (as
 * requests that take longer to parse would): their writes share commits
 * whole, not in halves. */
#define COHORT_CLIENTS 8
#define COHORT_ROUNDS 12
static void a_returning_cohort_joins_the_next_commit(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 1024);
  static struct sale sales[COHORT_CLIENTS][COHORT_ROUNDS];
  static struct jf_write writes[COHORT_CLIENTS];
  int round[COHORT_CLIENTS] = {0}, busy = COHORT_CLIENTS;
  struct journal_stats before, after;
  char id[32];

  for (int c = 0; c < COHORT_CLIENTS; c++)
    for (int r = 0; r < COHORT_ROUNDS; r++) {
      snprintf(id, sizeof(id), "K-%d-%d", c, r);
      make_sale(&sales[c][r], id, 0);
    }
  journal_get_stats(j, &before);
  atomic_store(&slow_sync_us, 20000);
  for (int c = 0; c < COHORT_CLIENTS; c++) {
    if (c == COHORT_CLIENTS / 2)
      usleep(1000);
    jf_submit(j, &writes[c], &sales[c][0], 1);
  }
  while (busy > 0) {
    int late = 0;
    uv_run(&f->loop, UV_RUN_ONCE);
    for (int c = 0; c < COHORT_CLIENTS; c++) {
      if (!writes[c].done || round[c] == COHORT_ROUNDS)
        continue;
      assert_int_equal(writes[c].write.error, 0);
      if (++round[c] == COHORT_ROUNDS) {
        busy--;
        continue;
      }
      if (c >= COHORT_CLIENTS / 2 && !late++)
        usleep(1000);
      jf_submit(j, &writes[c], &sales[c][round[c]], 1);
    }
  }
  atomic_store(&slow_sync_us, 0);
  journal_get_stats(j, &after);
  assert_int_equal(after.sales_journaled - before.sales_journaled, COHORT_CLIENTS * COHORT_ROUNDS);
  /* In halves, 2 commits a round; whole, 1 (a busy machine may split a
   * few). */
  assert_in_range(after.commits - before.commits, COHORT_ROUNDS,
                  COHORT_ROUNDS + COHORT_ROUNDS / 2);
  jf_close_journal(f, j);
  for (int c = 0; c < COHORT_CLIENTS; c++)
    for (int r = 0; r < COHORT_ROUNDS; r++)
      sale_clear(&sales[c][r]);
}

/* Issue 12 item 2: one client must never be slower with group commit than
 * with a transaction per sale: a lone write on a slow disk is committed at
 * once, never held for a crowd that is not there. */
static void a_lone_write_commits_without_waiting(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 1024);
  int found = 0;
  double held = metric_value("pos_agent_journal_commit_hold_seconds_count", &found);
  struct sale sale;
  struct jf_write w;
  char id[32];

  atomic_store(&slow_sync_us, 20000);
  for (int i = 0; i < 8; i++) {
    snprintf(id, sizeof(id), "L-%d", i);
    make_sale(&sale, id, 0);
    jf_write_and_wait(f, j, &w, &sale, 1);
    assert_int_equal(w.write.error, 0);
    sale_clear(&sale);
  }
  atomic_store(&slow_sync_us, 0);
  /* Not one commit held (the series is there: a renamed one would make
   * this pass for nothing). */
  assert_true(metric_value("pos_agent_journal_commit_hold_seconds_count", &found) == held);
  assert_true(found);
  jf_close_journal(f, j);
}

/* Issue 12 item 1: a lone write (the writer idle, no other write in
 * flight) is committed on the loop thread itself, without the two thread
 * hand-offs; its answer still comes through the loop, never from inside
 * journal_submit (the HTTP side counts the request as pending after
 * submitting it), and the sale is on disk for another connection. */
static void a_lone_write_is_committed_on_the_loop_thread(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 1024);
  struct journal_stats before, after;
  struct sale sale;
  struct jf_write w;
  char id[32], sql[96];

  make_sale(&sale, "I-0", 0);
  jf_write_and_wait(f, j, &w, &sale, 1);
  assert_int_equal(w.write.error, 0);
  sale_clear(&sale);
  usleep(20000); /* the writer back to waiting for work */
  journal_get_stats(j, &before);
  for (int i = 1; i <= 10; i++) {
    snprintf(id, sizeof(id), "I-%d", i);
    make_sale(&sale, id, 0);
    jf_submit(j, &w, &sale, 1);
    assert_false(w.done);
    jf_wait(f, &w);
    assert_int_equal(w.write.error, 0);
    assert_int_equal(w.results[0].outcome, JOURNAL_STORED);
    assert_int_equal(w.results[0].seq, i + 1);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM sales WHERE sale_id = 'I-%d'", i);
    assert_int_equal(jf_query_int(f, sql), 1);
    sale_clear(&sale);
  }
  journal_get_stats(j, &after);
  assert_int_equal(after.commits - before.commits, 10);
  assert_int_equal(after.sales_journaled - before.sales_journaled, 10);
  assert_int_equal(after.last_seq, 11);
  /* All of them but one the loop might find the writer not yet asleep for. */
  assert_true(after.commits_inline - before.commits_inline >= 9);
  jf_close_journal(f, j);
}

/* A caller that allows it (done_in_submit, as the sales API does) has a
 * lone write answered from inside journal_submit, journaled; with another
 * write in flight the same kind of write is queued for the writer and
 * answered later, from the loop, in order. */
static void a_lone_write_may_be_answered_inside_submit(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 1024);
  struct sale sales[4];
  struct jf_write w, first, second;
  struct journal_stats before, after;
  char id[32];
  int answered_in_submit = 0;

  for (int i = 0; i < 4; i++) {
    snprintf(id, sizeof(id), "N-%d", i);
    make_sale(&sales[i], id, 0);
  }
  jf_write_and_wait(f, j, &w, &sales[0], 1);
  /* The writer may not be back to waiting at once: a few tries. */
  for (int tries = 0; tries < 50 && !answered_in_submit; tries++) {
    usleep(20000);
    journal_get_stats(j, &before);
    jf_submit_done_in_submit(j, &w, &sales[1], 1);
    answered_in_submit = w.done;
    jf_wait(f, &w);
    assert_int_equal(w.write.error, 0);
    journal_get_stats(j, &after);
    if (answered_in_submit)
      assert_int_equal(after.commits_inline - before.commits_inline, 1);
  }
  assert_true(answered_in_submit);
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM sales WHERE sale_id = 'N-1'"), 1);
  /* Two at once: the second finds the first in flight and waits its turn. */
  jf_submit(j, &first, &sales[2], 1);
  jf_submit_done_in_submit(j, &second, &sales[3], 1);
  assert_false(second.done);
  jf_wait(f, &second);
  assert_true(first.done);
  assert_int_equal(second.write.error, 0);
  assert_int_equal(second.results[0].outcome, JOURNAL_STORED);
  jf_close_journal(f, j);
  for (int i = 0; i < 4; i++)
    sale_clear(&sales[i]);
}

/* But writes that arrive together still share commits through the writer:
 * at most the first of them is committed inline (the others find it in
 * flight), and a write right after such a crowd is not committed inline
 * either, since its clients are known to be active and one inline commit
 * would split their next group in two. */
static void writes_arriving_together_still_share_commits(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 1024);
  struct sale sales[21];
  struct jf_write writes[21];
  struct journal_stats before, after;
  char id[32];

  for (int i = 0; i < 21; i++) {
    snprintf(id, sizeof(id), "C-%d", i);
    make_sale(&sales[i], id, 0);
  }
  jf_write_and_wait(f, j, &writes[0], &sales[0], 1);
  usleep(20000);
  journal_get_stats(j, &before);
  for (int i = 1; i <= 20; i++)
    jf_submit(j, &writes[i], &sales[i], 1);
  for (int i = 1; i <= 20; i++) {
    jf_wait(f, &writes[i]);
    assert_int_equal(writes[i].write.error, 0);
    assert_int_equal(writes[i].results[0].outcome, JOURNAL_STORED);
  }
  journal_get_stats(j, &after);
  assert_int_equal(after.sales_journaled - before.sales_journaled, 20);
  assert_true(after.commits_inline - before.commits_inline <= 1);
  assert_true(after.commits - before.commits < 20);
  before = after;
  jf_write_and_wait(f, j, &writes[0], &sales[0], 1); /* a retry: a duplicate */
  assert_int_equal(writes[0].results[0].outcome, JOURNAL_DUPLICATE);
  journal_get_stats(j, &after);
  assert_int_equal(after.commits_inline, before.commits_inline);
  jf_close_journal(f, j);
  for (int i = 0; i < 21; i++)
    sale_clear(&sales[i]);
}

/* A lone write whose commit fails on the loop thread is answered exactly as
 * the writer thread answers the same failure (a retryable error that says
 * to resend), never taken for journaled; the journal takes sales again
 * once the disk does. */
static void a_failed_inline_commit_answers_as_the_writer_does(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 1024);
  struct sale sales[4];
  struct jf_write lone, first, second;
  struct journal_stats before, after;
  char id[32];

  for (int i = 0; i < 4; i++) {
    snprintf(id, sizeof(id), "E-%d", i);
    make_sale(&sales[i], id, 0);
  }
  /* The seqs' range reserved (its own fsync) before the disk fails. */
  jf_write_and_wait(f, j, &lone, &sales[0], 1);
  assert_int_equal(lone.write.error, 0);
  atomic_store(&failing_sync, 1);
  /* On a busy machine the writer may not be back to waiting after one
   * pause (the write then fails through it): a few tries. */
  for (int tries = 0; tries < 50; tries++) {
    usleep(20000);
    journal_get_stats(j, &before);
    jf_submit(j, &lone, &sales[1], 1);
    assert_false(lone.done);
    jf_wait(f, &lone);
    journal_get_stats(j, &after);
    if (after.commits_inline != before.commits_inline)
      break;
  }
  assert_int_equal(after.commits_inline - before.commits_inline, 1);
  assert_int_equal(lone.write.error, JOURNAL_EIO);
  assert_non_null(strstr(lone.write.message, "resend"));
  /* The same failure through the writer: the second write finds the first
   * in flight and is queued. */
  before = after;
  jf_submit(j, &first, &sales[2], 1);
  jf_submit(j, &second, &sales[2 + 1], 1);
  jf_wait(f, &first);
  jf_wait(f, &second);
  journal_get_stats(j, &after);
  assert_true(after.commits_inline - before.commits_inline <= 1);
  assert_int_equal(second.write.error, lone.write.error);
  assert_string_equal(second.write.message, lone.write.message);
  assert_int_equal(first.write.error, JOURNAL_EIO);
  assert_int_equal(after.commits, before.commits);
  assert_int_equal(after.write_failing, 1);
  atomic_store(&failing_sync, 0);
  /* Resent once the disk works: journaled (or found journaled). */
  jf_write_and_wait(f, j, &lone, &sales[1], 1);
  assert_int_equal(lone.write.error, 0);
  jf_close_journal(f, j);
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM sales WHERE sale_id = 'E-1'"), 1);
  for (int i = 0; i < 4; i++)
    sale_clear(&sales[i]);
}

/* A commit's WAL frames (two pwrites each in SQLite: header, then page)
 * reach the file in one write (journal_vfs.c), and the sale is there for
 * another connection as soon as it is answered. */
static void a_commit_writes_its_wal_frames_at_once(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 1024);
  struct sale sale;
  struct jf_write w;
  int writes;

  make_sale(&sale, "V-1", 0);
  jf_write_and_wait(f, j, &w, &sale, 1); /* the WAL's header is written once */
  assert_int_equal(w.write.error, 0);
  sale_clear(&sale);
  make_sale(&sale, "V-2", 0);
  atomic_store(&wal_writes_seen, 0);
  atomic_store(&wal_writes_counting, 1);
  jf_write_and_wait(f, j, &w, &sale, 1);
  atomic_store(&wal_writes_counting, 0);
  assert_int_equal(w.write.error, 0);
  sale_clear(&sale);
  writes = atomic_load(&wal_writes_seen);
  print_message("wal writes: %d\n", writes);
  assert_int_equal(writes, 1);
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM sales WHERE sale_id = 'V-2'"), 1);
  jf_close_journal(f, j);
}

/* Journals `count` sales named PREFIX-i, `per_write` to a write, and
 * answers the size of the WAL file afterwards (before any close, which
 * checkpoints it). */
static long long wal_bytes_after(struct jf_fixture *f, journal *j, const char *prefix, int count,
                                 int per_write)
{
  struct sale sales[64];
  struct jf_write w;
  char id[32], wal[160];
  struct stat st;

  for (int done = 0; done < count; done += per_write) {
    for (int i = 0; i < per_write; i++) {
      snprintf(id, sizeof(id), "%s-%d", prefix, done + i);
      make_sale(&sales[i], id, 0);
    }
    jf_write_and_wait(f, j, &w, sales, (size_t)per_write);
    assert_int_equal(w.write.error, 0);
    for (int i = 0; i < per_write; i++)
      sale_clear(&sales[i]);
  }
  snprintf(wal, sizeof(wal), "%s-wal", f->path);
  assert_int_equal(stat(wal, &st), 0);
  return (long long)st.st_size;
}

/* With room (this test's file system holds gigabytes), the WAL is
 * checkpointed every 8192 pages, not every 128: each checkpoint costs three
 * fsyncs and copies again every page the commits keep rewriting, which is
 * what a store device's flash pays for (issue 12). 1,024 sales, 64 to a
 * commit, write several hundred pages: a WAL checkpointed every 128 pages
 * is reused from its start long before that. */
static void a_journal_with_room_checkpoints_seldom(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 1024);
  long long wal = wal_bytes_after(f, j, "R", 1024, 64);

  assert_true(wal > 300LL * (1024 + 24));
  jf_close_journal(f, j);
}

/* But a journal limited to 256 KiB keeps the short interval: a WAL of 2
 * MiB beside it would be eight times the journal, and the disk reserve is
 * sized for the short one (see the full-disk tests). */
static void a_small_journal_keeps_a_short_wal(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 256 * 1024, 1024);
  long long wal = wal_bytes_after(f, j, "S", 384, 32);

  assert_true(wal <= (128LL + 64) * (1024 + 24));
  jf_close_journal(f, j);
}

/* Frames at the start of the WAL file PATH that belong to its current log
 * (their salt is the header's); -1 when there is no WAL file. */
static int wal_current_frames(const char *path)
{
  unsigned char header[32], frame[24];
  FILE *file = fopen(path, "rb");
  long page;
  int frames = 0;

  if (!file)
    return -1;
  if (fread(header, 1, sizeof(header), file) != sizeof(header)) {
    fclose(file);
    return 0;
  }
  page = ((long)header[8] << 24) | ((long)header[9] << 16) | ((long)header[10] << 8) | header[11];
  while (fseek(file, 32 + (long)frames * (page + 24), SEEK_SET) == 0 &&
         fread(frame, 1, sizeof(frame), file) == sizeof(frame) &&
         memcmp(frame + 8, header + 16, 8) == 0)
    frames++;
  fclose(file);
  return frames;
}

/* A clean stop keeps the WAL's size (a commit that grows the file also
 * commits the file system's journal: issue 12 item 3) but starts its log
 * again, so the next open reads a few frames, not the hundreds a long
 * interval leaves there. The sales are in the database either way. */
static void a_clean_stop_keeps_the_wal_and_restarts_its_log(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 1024);
  long long before = wal_bytes_after(f, j, "K", 512, 64);
  char wal[160];
  struct stat st;
  int frames;

  snprintf(wal, sizeof(wal), "%s-wal", f->path);
  assert_true(wal_current_frames(wal) > 100);
  jf_close_journal(f, j);
  assert_int_equal(stat(wal, &st), 0);
  assert_true((long long)st.st_size >= before);
  frames = wal_current_frames(wal);
  print_message("wal %lld bytes, %d frames of the current log after a clean stop\n",
                (long long)st.st_size, frames);
  assert_true(frames >= 0 && frames <= 16);
  j = jf_open_journal(f, 0, 1024);
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM sales WHERE sale_id LIKE 'K-%'"), 512);
  jf_close_journal(f, j);
}

/* Nor is a commit held once what is queued fills it (group_commit_max
 * sales): the writes still to come could not join it. Four clients, each
 * writing group_commit_max sales at a time, again as soon as answered. */
static void a_full_commit_is_never_held(void **state)
{
  struct jf_fixture *f = *state;
  enum { CLIENTS = 4, ROUNDS = 5, SALES = 8 };
  journal *j = jf_open_journal(f, 0, SALES);
  static struct sale sales[CLIENTS][ROUNDS][SALES];
  static struct jf_write writes[CLIENTS];
  int round[CLIENTS] = {0}, busy = CLIENTS, found = 0;
  double held = metric_value("pos_agent_journal_commit_hold_seconds_count", &found);
  struct journal_stats stats;
  char id[32];

  for (int c = 0; c < CLIENTS; c++)
    for (int r = 0; r < ROUNDS; r++)
      for (int i = 0; i < SALES; i++) {
        snprintf(id, sizeof(id), "F-%d-%d-%d", c, r, i);
        make_sale(&sales[c][r][i], id, 0);
      }
  atomic_store(&slow_sync_us, 20000);
  for (int c = 0; c < CLIENTS; c++)
    jf_submit(j, &writes[c], sales[c][0], SALES);
  while (busy > 0) {
    uv_run(&f->loop, UV_RUN_ONCE);
    for (int c = 0; c < CLIENTS; c++) {
      if (!writes[c].done || round[c] == ROUNDS)
        continue;
      assert_int_equal(writes[c].write.error, 0);
      if (++round[c] == ROUNDS)
        busy--;
      else
        jf_submit(j, &writes[c], sales[c][round[c]], SALES);
    }
  }
  atomic_store(&slow_sync_us, 0);
  assert_true(metric_value("pos_agent_journal_commit_hold_seconds_count", &found) == held);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.sales_journaled, CLIENTS * ROUNDS * SALES);
  jf_close_journal(f, j);
  for (int c = 0; c < CLIENTS; c++)
    for (int r = 0; r < ROUNDS; r++)
      for (int i = 0; i < SALES; i++)
        sale_clear(&sales[c][r][i]);
}

/* Issue 7 item 13: a ROLLBACK TO that fails (a disk error) used to be
 * ignored: the refused write's first sales stayed in the group's
 * transaction and were committed while its POS was told "409". Now the
 * whole group is aborted and every request in it answered with a
 * retryable error; nothing of any of them is journaled. */
static void a_failed_rollback_to_aborts_the_whole_group(void **state)
{
#ifdef JOURNAL_FAULT_HOOKS
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 1024);
  struct sale base, refused[2], others[10];
  struct jf_write p_base, p_refused, p_others[10];
  char id[16];

  make_sale(&base, "F-0", 0);
  jf_write_and_wait(f, j, &p_base, &base, 1);
  /* An array whose first sale is new and whose second conflicts with F-0. */
  make_sale(&refused[0], "F-NEW", 0);
  make_sale(&refused[1], "F-0", 1);
  for (int i = 0; i < 10; i++) {
    snprintf(id, sizeof(id), "F-%d", i + 1);
    make_sale(&others[i], id, 0);
  }
  journal_fault_rollback_to(j, 1, SQLITE_IOERR_WRITE);
  for (int i = 0; i < 5; i++)
    jf_submit(j, &p_others[i], &others[i], 1);
  jf_submit(j, &p_refused, refused, 2);
  for (int i = 5; i < 10; i++)
    jf_submit(j, &p_others[i], &others[i], 1);
  jf_wait(f, &p_refused);
  /* Retryable (503), not a conflict: the POS resends, nothing is lost. */
  assert_int_equal(p_refused.write.error, JOURNAL_EIO);
  assert_non_null(strstr(p_refused.write.message, "resend"));
  for (int i = 0; i < 10; i++)
    jf_wait(f, &p_others[i]);
  jf_close_journal(f, j);
  /* Nothing of the refused array, and each other write all or nothing
   * as it was answered. */
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM sales WHERE sale_id = 'F-NEW'"), 0);
  for (int i = 0; i < 10; i++) {
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM sales WHERE sale_id = 'F-%d'", i + 1);
    assert_int_equal(jf_query_int(f, sql), p_others[i].write.error == 0 ? 1 : 0);
  }
  sale_clear(&base);
  sale_clear(&refused[0]);
  sale_clear(&refused[1]);
  for (int i = 0; i < 10; i++)
    sale_clear(&others[i]);
#else
  (void)state;
  skip(); /* fault hooks are compiled into test builds only (no NDEBUG) */
#endif
}

/* A body as incompressible as a real one is after zstd: 48 bytes a sale,
 * as many sales as fit in->max_bytes. */
static int pack_random(void *arg, const struct journal_seal_input *in, uint8_t **body,
                       size_t *body_len, size_t *used)
{
  size_t count = in->count;
  (void)arg;
  while (count > 1 && count * 48 > in->max_bytes)
    count--;
  *body = malloc(count * 48);
  if (!*body)
    return JOURNAL_ENOMEM;
  for (size_t i = 0; i < count * 48; i++)
    (*body)[i] = (uint8_t)rand();
  *body_len = count * 48;
  *used = count;
  return 0;
}

/* Journals `count` sales PREFIX-n, 16 to a write; each must be taken. */
static void fill_sales(struct jf_fixture *f, journal *j, const char *prefix, size_t count)
{
  for (size_t done = 0; done < count;) {
    struct sale sales[16];
    struct jf_write w;
    size_t n = count - done < 16 ? count - done : 16;
    char id[48];
    for (size_t i = 0; i < n; i++) {
      snprintf(id, sizeof(id), "%s-%zu", prefix, done + i);
      make_sale(&sales[i], id, 0);
    }
    jf_write_and_wait(f, j, &w, sales, n);
    for (size_t i = 0; i < n; i++)
      sale_clear(&sales[i]);
    assert_int_equal(w.write.error, 0);
    done += n;
  }
}

/* Fills `j` with single-sale writes PREFIX-n until the first refusal, which
 * must be JOURNAL_EFULL. Returns how many were taken. */
static size_t fill_until_full(struct jf_fixture *f, journal *j, const char *prefix)
{
  size_t taken = 0;
  for (;;) {
    struct sale sales[16];
    struct jf_write w;
    char id[48];
    for (size_t i = 0; i < 16; i++) {
      snprintf(id, sizeof(id), "%s-%zu", prefix, taken + i);
      make_sale(&sales[i], id, 0);
    }
    jf_write_and_wait(f, j, &w, sales, 16);
    for (size_t i = 0; i < 16; i++)
      sale_clear(&sales[i]);
    if (w.write.error) {
      assert_int_equal(w.write.error, JOURNAL_EFULL);
      return taken;
    }
    taken += 16;
  }
}

/* What the uplink does with a backlog: seal the next batch, "send" it, and
 * record the collector's acknowledgement, until nothing is left; on
 * JOURNAL_EFULL while sealing it halves the batch, as the uplink does.
 * Returns the sales sealed. Every acknowledgement must be recorded. */
static uint64_t drain_backlog(struct jf_fixture *f, journal *j)
{
  struct journal_stats stats;
  uint64_t sent = 0;
  size_t max_sales = 500;
  int64_t batch_seq;

  journal_get_stats(j, &stats);
  batch_seq = stats.acked_batch_seq + 1;
  for (;;) {
    struct jf_op next, ack;
    memset(&next, 0, sizeof(next));
    next.op.kind = JOURNAL_OP_NEXT_BATCH;
    next.op.batch_seq = batch_seq;
    next.op.seal_upto_seq = INT64_MAX;
    next.op.max_sales = max_sales;
    next.op.max_bytes = 64 * 1024;
    next.op.pack = pack_random;
    jf_run_op(f, j, &next);
    if (next.op.error == JOURNAL_EFULL && max_sales > 1) {
      max_sales /= 2;
      continue;
    }
    if (next.op.error)
      fail_msg("sealing batch %lld: %s", (long long)batch_seq, next.op.message);
    if (next.op.batch.batch_seq == 0) {
      journal_op_clear(&next.op);
      return sent;
    }
    sent += next.op.batch.sale_count;
    journal_op_clear(&next.op);
    memset(&ack, 0, sizeof(ack));
    ack.op.kind = JOURNAL_OP_ACK;
    ack.op.batch_seq = batch_seq;
    jf_run_op(f, j, &ack);
    if (ack.op.error)
      fail_msg("recording the acknowledgement of batch %lld: %s", (long long)batch_seq,
               ack.op.message);
    batch_seq++;
  }
}

/* Copies file `from` to `to` (a snapshot of the journal's files). */
static void copy_file(const char *from, const char *to)
{
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "cp -f '%s' '%s'", from, to);
  assert_int_equal(system(cmd), 0);
}

/* Issue 7 item 11: an older copy of the database (here: taken before the
 * collector's acknowledgement) put back in place used to be opened as if
 * nothing happened, and its seqs handed out again under the same
 * journal_id. The high-water mark beside it knows the acknowledgement and
 * the seqs: a new journal is started, the old file kept, and only the sales
 * the collector has not acknowledged are carried over. */
static void a_restored_older_copy_starts_a_new_journal_and_keeps_the_old(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 64);
  struct journal_stats before, after;
  struct jf_op next, ack;
  char snap_db[160], snap_wal[160], wal[160], shm[160];
  int64_t acked_count;

  snprintf(snap_db, sizeof(snap_db), "%s.snap", f->path);
  snprintf(snap_wal, sizeof(snap_wal), "%s.snap-wal", f->path);
  snprintf(wal, sizeof(wal), "%s-wal", f->path);
  snprintf(shm, sizeof(shm), "%s-shm", f->path);
  fill_sales(f, j, "O", 40);
  memset(&next, 0, sizeof(next));
  next.op.kind = JOURNAL_OP_NEXT_BATCH;
  next.op.batch_seq = 1;
  next.op.seal_upto_seq = INT64_MAX;
  next.op.max_sales = 25;
  next.op.max_bytes = 64 * 1024;
  next.op.pack = pack_random;
  jf_run_op(f, j, &next);
  assert_int_equal(next.op.error, 0);
  acked_count = next.op.batch.sale_count;
  journal_op_clear(&next.op);
  /* The older copy: everything journaled, the acknowledgement not yet. */
  copy_file(f->path, snap_db);
  copy_file(wal, snap_wal);
  memset(&ack, 0, sizeof(ack));
  ack.op.kind = JOURNAL_OP_ACK;
  ack.op.batch_seq = 1;
  jf_run_op(f, j, &ack);
  assert_int_equal(ack.op.error, 0);
  journal_get_stats(j, &before);
  jf_close_journal(f, j);

  copy_file(snap_db, f->path);
  copy_file(snap_wal, wal);
  unlink(shm);
  j = jf_open_journal(f, 0, 64);
  journal_get_stats(j, &after);
  assert_string_not_equal(after.journal_id, before.journal_id);
  assert_string_equal(after.previous_journal_id, before.journal_id);
  assert_non_null(strstr(after.reset_reason, "never reused"));
  assert_true(after.reset_ms > 0);
  /* Carried over: what the collector had not acknowledged, nothing else. */
  assert_int_equal(after.sales_journaled, 40 - acked_count);
  assert_int_equal(after.sales_unsent, 40 - acked_count);
  assert_int_equal(after.last_seq, 40 - acked_count);
  jf_close_journal(f, j);
  /* The old file is kept beside it. */
  {
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls '%s'.damaged-* >/dev/null 2>&1", f->path);
    assert_int_equal(system(cmd), 0);
  }
  /* A clean reopen keeps the new journal and its reason. */
  j = jf_open_journal(f, 0, 64);
  journal_get_stats(j, &before);
  assert_string_equal(before.journal_id, after.journal_id);
  assert_string_equal(before.previous_journal_id, after.previous_journal_id);
  jf_close_journal(f, j);
}

/* Issue 7 item 4: a device running a copy of another device's disk is told
 * by the collector that its journal_id is the other device's. The journal
 * starts a new journal in place, on its writer thread, while open: the old
 * file is kept, every sale not acknowledged to this device (sealed in a
 * batch or not) is carried over in seq order, new seqs and batches start
 * at 1, the reason is kept, and sales are taken on the new journal. */
static void a_new_journal_in_place_carries_over_what_was_not_acknowledged(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 64);
  struct journal_stats before, after;
  struct jf_op op;
  int64_t acked_count;

  fill_sales(f, j, "N", 30);
  memset(&op, 0, sizeof(op));
  op.op.kind = JOURNAL_OP_NEXT_BATCH;
  op.op.batch_seq = 1;
  op.op.seal_upto_seq = INT64_MAX;
  op.op.max_sales = 10;
  op.op.max_bytes = 64 * 1024;
  op.op.pack = pack_random;
  jf_run_op(f, j, &op);
  assert_int_equal(op.op.error, 0);
  acked_count = op.op.batch.sale_count;
  journal_op_clear(&op.op);
  memset(&op, 0, sizeof(op));
  op.op.kind = JOURNAL_OP_ACK;
  op.op.batch_seq = 1;
  jf_run_op(f, j, &op);
  assert_int_equal(op.op.error, 0);
  /* Batch 2 is sealed but never acknowledged: its sales go over too. */
  memset(&op, 0, sizeof(op));
  op.op.kind = JOURNAL_OP_NEXT_BATCH;
  op.op.batch_seq = 2;
  op.op.seal_upto_seq = INT64_MAX;
  op.op.max_sales = 10;
  op.op.max_bytes = 64 * 1024;
  op.op.pack = pack_random;
  jf_run_op(f, j, &op);
  assert_int_equal(op.op.error, 0);
  journal_op_clear(&op.op);
  journal_get_stats(j, &before);

  memset(&op, 0, sizeof(op));
  op.op.kind = JOURNAL_OP_NEW_JOURNAL;
  op.op.reason = "the collector says journal X belongs to device D1: this device is a clone";
  jf_run_op(f, j, &op);
  assert_int_equal(op.op.error, 0);
  journal_get_stats(j, &after);
  assert_string_not_equal(after.journal_id, before.journal_id);
  assert_string_equal(after.previous_journal_id, before.journal_id);
  assert_non_null(strstr(after.reset_reason, "this device is a clone"));
  assert_int_equal(after.sales_missing, 0);
  assert_int_equal(after.sales_journaled, 30 - acked_count);
  assert_int_equal(after.sales_unsent, 30 - acked_count);
  assert_int_equal(after.last_seq, 30 - acked_count);
  assert_int_equal(after.last_batch_seq, 0);
  assert_int_equal(after.acked_batch_seq, 0);
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM sales WHERE sale_id = 'N-0'"), 0);
  assert_int_equal(jf_query_int(f, "SELECT seq FROM sales WHERE sale_id = 'N-29'"),
                   30 - acked_count);
  {
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls '%s'.damaged-* >/dev/null 2>&1", f->path);
    assert_int_equal(system(cmd), 0);
  }
  /* Sales go on under the new journal, and a reopen keeps it (the
   * high-water mark was made for it: no loss is seen). */
  fill_sales(f, j, "M", 3);
  journal_get_stats(j, &after);
  assert_int_equal(after.last_seq, 33 - acked_count);
  jf_close_journal(f, j);
  j = jf_open_journal(f, 0, 64);
  journal_get_stats(j, &before);
  assert_string_equal(before.journal_id, after.journal_id);
  assert_string_equal(before.previous_journal_id, after.previous_journal_id);
  assert_int_equal(before.last_seq, 33 - acked_count);
  jf_close_journal(f, j);
}

/* Issue 7 item 9: with journal.max_size set, sealed batch bodies ate the
 * uplink's reserve, and then neither sealing nor recording an
 * acknowledgement fitted: the backlog sat unsent for good. Sending must
 * always be possible on a full journal, and make room as it goes: every
 * sale is sent, none lost, and sales are taken again. */
static void a_full_journal_sends_its_whole_backlog_and_takes_sales_again(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 256 * 1024, 64);
  struct journal_stats stats;
  size_t taken = fill_until_full(f, j, "B");
  uint64_t sent;
  int accepted = 0;

  assert_true(taken > 100);
  sent = drain_backlog(f, j);
  journal_get_stats(j, &stats);
  assert_int_equal(sent, taken);
  assert_int_equal(stats.sales_unsent, 0);
  assert_int_equal(stats.acked_last_seq, stats.last_seq);
  /* Room again: new sales are taken (the full latch looks again within a
   * second), and sent in their turn. */
  for (int tries = 0; tries < 100 && !accepted; tries++) {
    struct sale sale;
    struct jf_write w;
    make_sale(&sale, "B-AFTER", 0);
    jf_write_and_wait(f, j, &w, &sale, 1);
    sale_clear(&sale);
    if (w.write.error == 0)
      accepted = 1;
    else
      usleep(50 * 1000);
  }
  assert_true(accepted);
  taken = fill_until_full(f, j, "C");
  assert_true(taken > 100);
  sent = drain_backlog(f, j);
  assert_int_equal(sent, taken + 1);
  jf_close_journal(f, j);
  /* Nothing was left unsent, and nothing acknowledged was kept past need. */
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM batches WHERE acked_ms IS NULL"), 0);
}

/* The fault harness's full_max_size row: the backlog drained, yet the POS
 * got 503 "journal full" for the next sales: the latch looked again only a
 * second after the last refusal, and the acknowledgements that made the
 * room did not clear it. The first sale after the last acknowledgement
 * must be taken, and the status page must no longer say full. */
static void a_drained_full_journal_takes_the_next_sale_at_once(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 256 * 1024, 64);
  struct journal_stats stats;
  struct sale sale;
  struct jf_write w;
  size_t taken = fill_until_full(f, j, "D");

  assert_true(taken > 100);
  assert_int_equal(drain_backlog(f, j), taken);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.full, 0);
  make_sale(&sale, "D-AFTER", 0);
  jf_write_and_wait(f, j, &w, &sale, 1);
  sale_clear(&sale);
  if (w.write.error)
    fail_msg("the first sale after the backlog drained was refused: %s", w.write.message);
  assert_true(w.results[0].seq > (int64_t)taken);
  jf_close_journal(f, j);
}

/* Opens the journal again: its last seq is `last_seq`, and sale `sale_id`
 * takes the next one. */
static void reopened_goes_on_from(struct jf_fixture *f, int64_t last_seq, const char *sale_id)
{
  journal *j = jf_open_journal(f, 0, 64);
  struct journal_stats stats;
  struct sale sale;
  struct jf_write p;

  journal_get_stats(j, &stats);
  assert_int_equal(stats.last_seq, last_seq);
  make_sale(&sale, sale_id, 0);
  jf_write_and_wait(f, j, &p, &sale, 1);
  assert_int_equal(p.write.error, 0);
  assert_int_equal(p.results[0].seq, last_seq + 1);
  sale_clear(&sale);
  jf_close_journal(f, j);
}

static void a_full_journal_refuses_and_keeps_what_it_has(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 64 * 1024, 64);
  struct sale sale;
  struct jf_write p;
  struct journal_stats stats;
  int stored = 0;
  char id[32];

  for (int i = 0; i < 5000; i++) {
    snprintf(id, sizeof(id), "FULL-%d", i);
    make_sale(&sale, id, 0);
    jf_write_and_wait(f, j, &p, &sale, 1);
    sale_clear(&sale);
    if (p.write.error) {
      assert_int_equal(p.write.error, JOURNAL_EFULL);
      assert_non_null(strstr(p.write.message, "full"));
      break;
    }
    stored++;
  }
  assert_true(stored > 10 && stored < 5000);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.write_failing, 1);
  jf_close_journal(f, j);
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM sales"), stored);
  assert_int_equal(jf_query_int(f, "SELECT count(*) FROM pragma_integrity_check WHERE "
                                   "integrity_check='ok'"),
                   1);

  /* With room again, sales are accepted and seqs go on from where they were. */
  reopened_goes_on_from(f, stored, "AFTER-FULL");
}

static void reopening_keeps_the_id_and_never_reuses_a_seq(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 64);
  struct journal_stats before, after;
  struct sale sale;
  struct jf_write p;

  make_sale(&sale, "R-1", 0);
  jf_write_and_wait(f, j, &p, &sale, 1);
  sale_clear(&sale);
  journal_get_stats(j, &before);
  jf_close_journal(f, j);

  /* Even if the newest row is deleted by hand, its seq is not given again. */
  assert_int_equal(jf_query_int(f, "SELECT 1"), 1);
  {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM sales WHERE sale_id='R-1'", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
  }
  j = jf_open_journal(f, 0, 64);
  journal_get_stats(j, &after);
  assert_string_equal(before.journal_id, after.journal_id);
  assert_int_equal(after.last_seq, 1);
  make_sale(&sale, "R-2", 0);
  jf_write_and_wait(f, j, &p, &sale, 1);
  assert_int_equal(p.results[0].seq, 2);
  sale_clear(&sale);
  jf_close_journal(f, j);
}

/* The page numbers of the WAL frames of `path` from byte `from` on (the
 * frames a test's commits appended): *count of them, at most `max`. */
static void wal_frame_pages(const char *path, long from, uint32_t *pages, size_t max,
                            size_t *count)
{
  char wal[128];
  unsigned char header[32], frame[24];
  uint32_t page_size;
  FILE *file;

  snprintf(wal, sizeof(wal), "%s-wal", path);
  file = fopen(wal, "rb");
  assert_non_null(file);
  assert_int_equal(fread(header, 1, sizeof(header), file), sizeof(header));
  page_size = (uint32_t)header[8] << 24 | (uint32_t)header[9] << 16 |
              (uint32_t)header[10] << 8 | header[11];
  assert_true(page_size >= 512 && page_size <= 65536);
  *count = 0;
  if (from < (long)sizeof(header))
    from = (long)sizeof(header);
  while (*count < max && fseek(file, from, SEEK_SET) == 0 &&
         fread(frame, 1, sizeof(frame), file) == sizeof(frame)) {
    pages[(*count)++] = (uint32_t)frame[0] << 24 | (uint32_t)frame[1] << 16 |
                        (uint32_t)frame[2] << 8 | frame[3];
    from += (long)sizeof(frame) + (long)page_size;
  }
  fclose(file);
}

static long wal_size(const char *path)
{
  char wal[128];
  struct stat st;
  snprintf(wal, sizeof(wal), "%s-wal", path);
  return stat(wal, &st) == 0 ? (long)st.st_size : 0;
}

/* Issue 12, item 3: a sale's commit does not write the seq counter
 * (sqlite_sequence) again: it is reserved ahead, once per range, and the
 * seqs still follow one another, across a restart too. A counter moved by
 * an agent from before the reserve (AUTOINCREMENT's exact last seq) is
 * taken as the last seq. */
static void the_seq_counter_is_reserved_ahead_not_written_per_sale(void **state)
{
  struct jf_fixture *f = *state;
  journal *j = jf_open_journal(f, 0, 64);
  struct sale sale;
  struct jf_write p;
  char id[16];
  int64_t counter, counter_root;
  uint32_t pages[64];
  size_t count;
  long before;

  for (int i = 1; i <= 3; i++) {
    snprintf(id, sizeof(id), "Q-%d", i);
    make_sale(&sale, id, 0);
    jf_write_and_wait(f, j, &p, &sale, 1);
    assert_int_equal(p.results[0].seq, i);
    sale_clear(&sale);
  }
  counter = jf_query_int(f, "SELECT seq FROM sqlite_sequence WHERE name = 'sales'");
  assert_true(counter > 3);
  assert_int_equal(jf_query_int(f, "SELECT CAST(value AS INTEGER) FROM meta"
                                   " WHERE key = 'seq_reserved'"),
                   counter);
  counter_root = jf_query_int(f, "SELECT rootpage FROM sqlite_schema"
                                 " WHERE name = 'sqlite_sequence'");
  assert_true(counter_root > 1);

  before = wal_size(f->path);
  make_sale(&sale, "Q-4", 0);
  jf_write_and_wait(f, j, &p, &sale, 1);
  assert_int_equal(p.results[0].seq, 4);
  sale_clear(&sale);
  wal_frame_pages(f->path, before, pages, 64, &count);
  assert_true(count >= 1); /* the sale's own pages */
  for (size_t i = 0; i < count; i++)
    assert_int_not_equal(pages[i], (uint32_t)counter_root);
  assert_int_equal(jf_query_int(f, "SELECT seq FROM sqlite_sequence WHERE name = 'sales'"),
                   counter);
  jf_close_journal(f, j);

  reopened_goes_on_from(f, 4, "Q-5");

  {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE sqlite_sequence SET seq = 40 WHERE name = 'sales'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
  }
  reopened_goes_on_from(f, 40, "Q-6");
}

static void a_newer_schema_is_refused(void **state)
{
  struct jf_fixture *f = *state;
  struct journal_options options = {
      .path = f->path, .group_commit_max = 64, .busy_timeout_ms = 1000};
  char err[512];
  sqlite3 *db;
  journal *j = jf_open_journal(f, 0, 64);
  jf_close_journal(f, j);
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  {
    int error = 0;
    assert_null(journal_open_coded(&f->loop, &options, &error, err, sizeof(err)));
    assert_int_equal(error, JOURNAL_ESCHEMA);
  }
  assert_non_null(strstr(err, "oldest reader is schema 99"));
  assert_non_null(strstr(err, f->path));
}

/* Schemas 7 and 8 are additive: the oldest reader stays 6 (the agents
 * released before read it; compact rows, which raise it, are an option),
 * the newest step is in meta. */
static void an_additive_step_keeps_the_oldest_reader(void **state)
{
  struct jf_fixture *f = *state;
  struct journal_compat compat;
  char err[512];
  journal *j;

  /* No journal yet: any agent may start one, and asking makes none. */
  assert_int_equal(journal_compat_read(f->path, &compat, err, sizeof(err)), 0);
  assert_int_equal(compat.present, 0);
  assert_int_equal(access(f->path, F_OK), -1);
  j = jf_open_journal(f, 0, 64);
  jf_close_journal(f, j);
  assert_int_equal(jf_query_int(f, "PRAGMA user_version"), 6);
  assert_int_equal(jf_query_int(f, "SELECT value FROM meta WHERE key = 'schema_version'"), 10);
  assert_int_equal(journal_compat_read(f->path, &compat, err, sizeof(err)), 0);
  assert_int_equal(compat.present, 1);
  assert_int_equal(compat.schema_version, 10);
  assert_int_equal(compat.oldest_reader, 6);
  assert_string_equal(compat.oldest_reader_agent, POS_VERSION);
}

/* A journal a newer agent wrote, whose oldest reader is this agent's
 * schema or older: taken as it is (a rollback keeps taking sales). */
static void a_newer_journal_this_agent_reads_is_taken(void **state)
{
  struct jf_fixture *f = *state;
  sqlite3 *db;
  journal *j = jf_open_journal(f, 0, 64);
  jf_close_journal(f, j);
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "UPDATE meta SET value = '11' WHERE key = 'schema_version'",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  j = jf_open_journal(f, 0, 64);
  assert_non_null(j);
  jf_close_journal(f, j);
  assert_int_equal(jf_query_int(f, "SELECT value FROM meta WHERE key = 'schema_version'"), 11);
  assert_int_equal(jf_query_int(f, "PRAGMA user_version"), 6);
}

static void a_file_that_is_not_a_database_is_refused(void **state)
{
  struct jf_fixture *f = *state;
  struct journal_options options = {
      .path = f->path, .group_commit_max = 64, .busy_timeout_ms = 1000};
  char err[512];
  FILE *file = fopen(f->path, "w");
  fputs("this is not a database, it is a shopping list: flour, tomatoes, basil\n", file);
  fclose(file);
  assert_null(journal_open(&f->loop, &options, err, sizeof(err)));
  assert_non_null(strstr(err, f->path));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(opens_in_wal_with_a_journal_id, setup, teardown),
      cmocka_unit_test_setup_teardown(sales_get_increasing_seqs_and_columns, setup, teardown),
      cmocka_unit_test_setup_teardown(retry_is_a_duplicate_and_other_content_a_conflict, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_conflict_does_not_undo_the_rest_of_its_group, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_returning_cohort_joins_the_next_commit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_lone_write_commits_without_waiting, setup, teardown),
      cmocka_unit_test_setup_teardown(a_full_commit_is_never_held, setup, teardown),
      cmocka_unit_test_setup_teardown(a_lone_write_is_committed_on_the_loop_thread, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(writes_arriving_together_still_share_commits, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_lone_write_may_be_answered_inside_submit, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_failed_inline_commit_answers_as_the_writer_does, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_failed_rollback_to_aborts_the_whole_group, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          a_full_journal_sends_its_whole_backlog_and_takes_sales_again, setup, teardown),
      cmocka_unit_test_setup_teardown(
          a_restored_older_copy_starts_a_new_journal_and_keeps_the_old, setup, teardown),
      cmocka_unit_test_setup_teardown(a_drained_full_journal_takes_the_next_sale_at_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_full_journal_refuses_and_keeps_what_it_has, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(the_seq_counter_is_reserved_ahead_not_written_per_sale,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(reopening_keeps_the_id_and_never_reuses_a_seq, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          a_new_journal_in_place_carries_over_what_was_not_acknowledged, setup, teardown),
      cmocka_unit_test_setup_teardown(a_commit_writes_its_wal_frames_at_once, setup, teardown),
      cmocka_unit_test_setup_teardown(a_journal_with_room_checkpoints_seldom, setup, teardown),
      cmocka_unit_test_setup_teardown(a_clean_stop_keeps_the_wal_and_restarts_its_log, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_small_journal_keeps_a_short_wal, setup, teardown),
      cmocka_unit_test_setup_teardown(a_newer_schema_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(an_additive_step_keeps_the_oldest_reader, setup, teardown),
      cmocka_unit_test_setup_teardown(a_newer_journal_this_agent_reads_is_taken, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_file_that_is_not_a_database_is_refused, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
