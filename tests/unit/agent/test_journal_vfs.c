/*
 * test_journal_vfs.c - the journal's VFS (journal_vfs.c) gathers a
 * commit's WAL frames into one write; what it gathers must always be what
 * SQLite believes written. Two ways it was not, each seen corrupting a
 * database in a review's reproduction: a flush that failed outside a sync
 * dropped frames a cache spill had written, and frames of a transaction
 * rolled back were written later, over another writer's.
 *
 * Each case runs on a real database in WAL mode with a tiny page cache (so
 * that a large statement spills frames into the WAL before its commit) and
 * checks it from a separate connection of the system's VFS, as the sqlite3
 * CLI would: integrity_check and the rows that must be there.
 */
#define _GNU_SOURCE /* O_DIRECT */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
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

#include "journal/journal_int.h"
#include "wal_writes.h"

struct vfs_case {
  char dir[64];
  char path[96];
};

static int setup(void **state)
{
  struct vfs_case *c = calloc(1, sizeof(*c));
  assert_non_null(c);
  snprintf(c->dir, sizeof(c->dir), "/tmp/test_journal_vfs_XXXXXX");
  assert_non_null(mkdtemp(c->dir));
  snprintf(c->path, sizeof(c->path), "%s/journal.db", c->dir);
  assert_int_equal(journal__vfs_register(), SQLITE_OK);
  *state = c;
  return 0;
}

static int teardown(void **state)
{
  struct vfs_case *c = *state;
  char file[128];
  const char *suffixes[] = {"", "-wal", "-shm"};

  for (size_t i = 0; i < 3; i++) {
    snprintf(file, sizeof(file), "%s%s", c->path, suffixes[i]);
    unlink(file);
  }
  rmdir(c->dir);
  free(c);
  return 0;
}

static int exec(sqlite3 *db, const char *sql)
{
  return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* A journal-like database on the journal's VFS: 2,000 rows of 200 bytes,
 * and a page cache of 20 pages, so that a statement touching a few hundred
 * rows spills frames into the WAL before its transaction ends. */
static sqlite3 *open_spilling(const struct vfs_case *c)
{
  sqlite3 *db = NULL;

  assert_int_equal(sqlite3_open_v2(c->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                   JOURNAL_VFS_NAME),
                   SQLITE_OK);
  assert_int_equal(exec(db, "PRAGMA page_size=1024; PRAGMA journal_mode=WAL;"
                            "PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=0;"
                            "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);"
                            "CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB);"
                            "INSERT INTO t WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL "
                            "SELECT n + 1 FROM s WHERE n < 2000) SELECT n, randomblob(200) FROM s;"
                            "PRAGMA cache_size=20;"),
                   SQLITE_OK);
  return db;
}

/* integrity_check is "ok" and the tables hold these rows, read by a
 * connection of the system's VFS. */
static void assert_sound(const struct vfs_case *c, int t_rows, int b_rows)
{
  sqlite3 *db = NULL;
  sqlite3_stmt *stmt = NULL;

  assert_int_equal(sqlite3_open_v2(c->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "ok");
  sqlite3_finalize(stmt);
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT (SELECT count(*) FROM t), (SELECT count(*) "
                                          "FROM b)", -1, &stmt, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(stmt, 0), t_rows);
  assert_int_equal(sqlite3_column_int(stmt, 1), b_rows);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

/* A statement that reads back pages spilled earlier in the transaction
 * makes the gathered frames go out; the disk is full: that statement fails,
 * the transaction goes on (SQLite rolls back the statement only) and
 * commits once there is room, whole. */
static void a_failed_flush_keeps_the_spilled_frames(void **state)
{
  struct vfs_case *c = *state;
  sqlite3 *db = open_spilling(c);

  assert_int_equal(exec(db, "BEGIN"), SQLITE_OK);
  assert_int_equal(exec(db, "UPDATE t SET v = randomblob(210) WHERE id <= 150"), SQLITE_OK);
  atomic_store(&wal_writes_fail, 1);
  assert_int_not_equal(exec(db, "UPDATE t SET v = randomblob(210) WHERE id <= 100"), SQLITE_OK);
  atomic_store(&wal_writes_fail, 0);
  assert_int_equal(exec(db, "INSERT INTO b VALUES(1, 'after')"), SQLITE_OK);
  assert_int_equal(exec(db, "COMMIT"), SQLITE_OK);
  assert_sound(c, 2000, 1);
  sqlite3_close(db);
  assert_sound(c, 2000, 1);
}

/* Frames a rolled-back transaction spilled are never written: another
 * writer (here a connection of the system's VFS, as an operator's sqlite3
 * would be) commits at those offsets of the WAL meanwhile. */
static void frames_of_a_rolled_back_transaction_are_dropped(void **state)
{
  struct vfs_case *c = *state;
  sqlite3 *db = open_spilling(c);
  sqlite3 *other = NULL;

  assert_int_equal(exec(db, "BEGIN; INSERT INTO t WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL "
                            "SELECT n + 1 FROM s WHERE n < 300) "
                            "SELECT n + 100000, randomblob(300) FROM s"),
                   SQLITE_OK);
  assert_int_equal(exec(db, "ROLLBACK"), SQLITE_OK);
  assert_int_equal(sqlite3_open_v2(c->path, &other, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  assert_int_equal(exec(other, "INSERT INTO b WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL "
                               "SELECT n + 1 FROM s WHERE n < 400) SELECT n, randomblob(300) FROM s"),
                   SQLITE_OK);
  assert_sound(c, 2000, 400);
  assert_int_equal(exec(db, "INSERT INTO t VALUES(999999, 'x')"), SQLITE_OK);
  assert_sound(c, 2001, 400);
  sqlite3_close(other);
  sqlite3_close(db);
  assert_sound(c, 2001, 400);
}

/* A database of two small tables, a and b, on the journal's VFS (`vfs`, or the
 * system's: NULL), its WAL emptied. */
static sqlite3 *open_small(const struct vfs_case *c, const char *vfs)
{
  sqlite3 *db = NULL;

  assert_int_equal(sqlite3_open_v2(c->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
                   SQLITE_OK);
  assert_int_equal(exec(db, "PRAGMA page_size=1024; PRAGMA journal_mode=WAL;"
                            "PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=0;"
                            "CREATE TABLE IF NOT EXISTS a(id INTEGER PRIMARY KEY, v TEXT);"
                            "CREATE TABLE IF NOT EXISTS b(id INTEGER PRIMARY KEY, v TEXT);"),
                   SQLITE_OK);
  return db;
}

/* Table a has a_rows rows and b b_rows, each with its own text (table
 * "a" or "b", id and a filler of `wide` digits), as the system's
 * VFS reads them from a copy of the files (what a power cut would leave:
 * the copy's WAL is what was written to the file, whoever wrote it). */
static void assert_rows(const struct vfs_case *c, int a_rows, int b_rows, int wide)
{
  char copy[128], from[128], to[160];
  const char *suffixes[] = {"", "-wal"};
  sqlite3 *db = NULL;
  sqlite3_stmt *stmt = NULL;

  snprintf(copy, sizeof(copy), "%s/copy.db", c->dir);
  for (size_t i = 0; i < 2; i++) {
    FILE *in, *out;
    char chunk[4096];
    size_t n;
    snprintf(from, sizeof(from), "%s%s", c->path, suffixes[i]);
    snprintf(to, sizeof(to), "%s%s", copy, suffixes[i]);
    in = fopen(from, "rb");
    assert_non_null(in);
    out = fopen(to, "wb");
    assert_non_null(out);
    while ((n = fread(chunk, 1, sizeof(chunk), in)) > 0)
      assert_int_equal(fwrite(chunk, 1, n, out), n);
    fclose(in);
    fclose(out);
  }
  assert_int_equal(sqlite3_open_v2(copy, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  for (int t = 0; t < 2; t++) {
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT count(*), coalesce(sum(v = printf('%s %%04d %%0%dd', id, "
             "id)), 0) FROM %s", t ? "b" : "a", wide, t ? "b" : "a");
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(stmt, 0), t ? b_rows : a_rows);
    assert_int_equal(sqlite3_column_int(stmt, 1), t ? b_rows : a_rows);
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  for (size_t i = 0; i < 3; i++) {
    snprintf(to, sizeof(to), "%s%s", copy, i == 2 ? "-shm" : suffixes[i]);
    unlink(to);
  }
}

static void insert_row(sqlite3 *db, const char *table, int id, int wide)
{
  char sql[160];
  snprintf(sql, sizeof(sql), "INSERT INTO %s VALUES(%d, printf('%s %%04d %%0%dd', %d, %d))",
           table, id, table, wide, id, id);
  assert_int_equal(exec(db, sql), SQLITE_OK);
}

/* Direct writes keep the block a commit ends in, to begin the next one's
 * write with; another writer (an operator's sqlite3) starts the log again
 * meanwhile and ends its frames at that very offset (each commit here is
 * one frame: a row added to its table's only page): the block kept is not
 * the file's any more, and written back it would cut that writer's frame
 * (a power cut then loses that commit and every one after it). Its log's
 * salts say so. */
static void a_log_started_again_by_another_writer_is_kept(void **state)
{
  struct vfs_case *c = *state;
  sqlite3 *db = open_small(c, JOURNAL_VFS_NAME);
  sqlite3 *other = open_small(c, NULL);
  int a_rows = 0, b_rows = 0;

  for (int round = 0; round < 8; round++) {
    assert_int_equal(exec(db, "PRAGMA wal_checkpoint(TRUNCATE)"), SQLITE_OK);
    insert_row(db, "a", ++a_rows, 8);
    assert_int_equal(exec(other, "PRAGMA wal_checkpoint(RESTART)"), SQLITE_OK);
    insert_row(other, "b", ++b_rows, 8);
    insert_row(db, "a", ++a_rows, 8);
    assert_rows(c, a_rows, b_rows, 8);
  }
  sqlite3_close(other);
  sqlite3_close(db);
}

/* /proc/self/io's write_bytes, or -1 without task I/O accounting. */
static long long write_bytes(void)
{
  FILE *io = fopen("/proc/self/io", "r");
  char line[128];
  long long bytes = -1;

  if (io == NULL)
    return -1;
  while (fgets(line, sizeof(line), io))
    if (strncmp(line, "write_bytes:", 12) == 0)
      bytes = strtoll(line + 12, NULL, 10);
  fclose(io);
  return bytes;
}

/* Whether statx tells the direct I/O alignment of `fd`'s file. */
static int statx_gives_dio_alignment(int fd)
{
#ifdef STATX_DIOALIGN
  struct statx st;
  return statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) == 0 &&
         (st.stx_mask & STATX_DIOALIGN) && st.stx_dio_offset_align > 0;
#else
  (void)fd;
  return 0;
#endif
}

/* A commit of one small row costs the disk its frames' bytes, rounded to
 * the disk's blocks, not a page-cache page dirtied again by each fsynced
 * commit (4 KiB at least, most of it written already): issue 12, item 3.
 * Skipped where the file system takes no direct writes (tmpfs). */
static void a_small_commit_writes_less_than_a_page(void **state)
{
  struct vfs_case *c = *state;
  sqlite3 *db = open_small(c, JOURNAL_VFS_NAME);
  char wal[128];
  int probe;
  long long before, after;
  const int commits = 200;

  snprintf(wal, sizeof(wal), "%s-wal", c->path);
  insert_row(db, "b", 1, 300);
  /* The journal's VFS writes direct only where statx gives the alignment
   * (not under every emulator, e.g. qemu-user): the same question here. */
  probe = open(wal, O_WRONLY | O_DIRECT);
  if (probe < 0 || write_bytes() < 0 || !statx_gives_dio_alignment(probe)) {
    if (probe >= 0)
      close(probe);
    sqlite3_close(db);
    skip();
  }
  close(probe);
  before = write_bytes();
  for (int id = 2; id <= commits + 1; id++)
    insert_row(db, "b", id, 300);
  after = write_bytes();
  print_message("write_bytes per commit of one row of about 320 bytes: %lld\n",
                (after - before) / commits);
  assert_true((after - before) / commits < 4096);
  assert_rows(c, 0, commits + 1, 300);
  sqlite3_close(db);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(a_log_started_again_by_another_writer_is_kept, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_small_commit_writes_less_than_a_page, setup, teardown),
      cmocka_unit_test_setup_teardown(a_failed_flush_keeps_the_spilled_frames, setup, teardown),
      cmocka_unit_test_setup_teardown(frames_of_a_rolled_back_transaction_are_dropped, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
