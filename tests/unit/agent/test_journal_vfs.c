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
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(a_failed_flush_keeps_the_spilled_frames, setup, teardown),
      cmocka_unit_test_setup_teardown(frames_of_a_rolled_back_transaction_are_dropped, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
