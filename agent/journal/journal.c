/*
 * journal.c - the durable sale journal: open/migrate, the writer thread and
 * its group commit, the operation queue, and completion delivery back to the
 * loop. The operations themselves are in journal_batch.c.
 */
#include "journal/journal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "inventory/recipes.h"
#include "journal/journal_int.h"
#include "journal/journal_sql.h"
#include "platform/clock.h"
#include "platform/disk.h"
#include "platform/log.h"
#include "platform/systemd.h"
#include "proto/codec.h"

#define JOURNAL_SCHEMA_VERSION 10

static const char *const journal_migrations[JOURNAL_SCHEMA_VERSION] = {
    JOURNAL_SCHEMA_V1,
    JOURNAL_SCHEMA_V2,
    JOURNAL_SCHEMA_V3,
    JOURNAL_SCHEMA_V4,
    JOURNAL_SCHEMA_V5,
    JOURNAL_SCHEMA_V6,
    JOURNAL_SCHEMA_V7,
    JOURNAL_SCHEMA_V8,
    JOURNAL_SCHEMA_V9,
    JOURNAL_SCHEMA_V10,
};

/* SQL of other modules that a step also runs, in its transaction: the
 * recipe tables are the recipes module's (part of v5). */
static const char *const journal_migrations_extra[JOURNAL_SCHEMA_VERSION] = {
    NULL, NULL, NULL, NULL, recipes_schema_sql, NULL, NULL, NULL, NULL, NULL,
};

/* The journal full: new sales are refused (duplicates still answered) until
 * there is room again, checked at most this often. Without this latch a
 * full journal would take one small sale and refuse the next big one by the
 * luck of page boundaries; a POS is better served by a clear "full" until
 * space is back. Room means this many bytes free on the disk (a quarter
 * of a smaller file system: a 1 MiB one never has 1 MiB free), and with
 * journal.max_size at least 1/64 of it (2 pages at least) free below the
 * sales' limit. */
#define JOURNAL_FULL_CHECK_MS 1000u
#define JOURNAL_FULL_RESUME_DISK_BYTES (1024u * 1024u)
/* Freed pages inside the database that let sales in again on a full disk. */
#define JOURNAL_FULL_RESUME_FREE_BYTES (64u * 1024u)

/* The disk reserve: a file of at least this size (more with a long WAL:
 * journal__reserve_bytes_for) beside the database (PATH-reserve),
 * allocated while there is room and given back when sealing or recording an
 * acknowledgement finds the disk 100% full, so that the backlog can always
 * start to drain (each acknowledgement then frees more). Made again once
 * the disk has room. */
#define JOURNAL_DISK_RESERVE_BYTES (256 * 1024)

/* The WAL's checkpoint interval in pages, chosen at open by the room the
 * journal has (journal__wal_pages_for): a checkpoint copies every page the
 * WAL holds into the database file and fsyncs both, so the longer the
 * interval, the fewer syncs per sale (the commits' own, shared by the
 * cohort, are then nearly all) and the fewer times a page written by every
 * commit (the index leaves the terminals append to, the table's interior
 * and first pages) is copied again: with a store device's 5 ms fsync and 16
 * terminals, 128 pages gave 9.5 sales per fsync and 4,700 bytes to flash
 * per sale, 2048 pages 15.0 and 3,145 (tests/bench/journal_bench.sh, 1 KiB
 * pages then). With 512-byte pages and compact rows, one terminal, 20 s:
 * 2048 pages 3,129 bytes per sale, 4096 3,100, 8192 2,980. Those count
 * what the agent writes; what a journaling file system adds was larger
 * while the WAL was deleted at each stop and grew again after each start
 * (every commit that grows it commits ext4's journal too: 1,500 sales
 * from a start cost 11,388 bytes each at 2048 pages, 27,607 at 8192). The
 * WAL now keeps its size across stops (journal_wal_rewind), so it grows
 * once in a device's life, and the disk's own count (BENCH_FS=ext4,
 * 10,000 sales then a clean restart, then one terminal, 5 ms fsync, 20 s,
 * same run) is 3,301 bytes per sale at 2048 pages and 3,096 at 8192 with
 * compact rows (4,066 and 3,774 with JSON rows), 2,452 and 2,260 at four
 * terminals. The cost: a WAL of 4.4 MB, and the disk reserve with it.
 * The WAL is at most 1/JOURNAL_WAL_ROOM_SHARE of the room, so a small file
 * system or journal.max_size keeps the short interval, and the disk
 * reserve grows with it (journal__reserve_bytes_for). */
#define JOURNAL_WAL_PAGES_MIN 128
#define JOURNAL_WAL_PAGES_MAX 8192
#define JOURNAL_WAL_ROOM_SHARE 64
/* A WAL frame's header, before each page. */
#define JOURNAL_WAL_FRAME_HEADER 24

/* Retention runs this long after open (not at once: start-up is busy
 * enough), then every hour. */
#define JOURNAL_RETENTION_FIRST_MS (60u * 1000u)
#define JOURNAL_RETENTION_EVERY_MS (60u * 60u * 1000u)

const char *journal_strerror(int code)
{
  switch (code) {
  case JOURNAL_OK:
    return "ok";
  case JOURNAL_ENOMEM:
    return "out of memory";
  case JOURNAL_EFULL:
    return "journal disk full";
  case JOURNAL_EBUSY:
    return "journal database locked";
  case JOURNAL_EIO:
    return "journal disk I/O error";
  case JOURNAL_ECORRUPT:
    return "journal database damaged";
  case JOURNAL_ECLOSED:
    return "journal closing";
  case JOURNAL_ECONFLICT:
    return "sale_id already journaled with different content";
  case JOURNAL_ESCHEMA:
    return "journal needs a newer agent";
  case JOURNAL_ENOTFOUND:
    return "no such batch in the journal";
  case JOURNAL_EINVAL:
    return "operation contradicts the journal's state";
  case JOURNAL_ENOSPACE:
    return "not enough free disk for the journal's upgrade";
  }
  return "unknown journal error";
}

int journal__map_sqlite(int sqlite_rc)
{
  switch (sqlite_rc & 0xff) {
  case SQLITE_NOMEM:
    return JOURNAL_ENOMEM;
  case SQLITE_FULL:
    return JOURNAL_EFULL;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return JOURNAL_EBUSY;
  case SQLITE_CORRUPT:
  case SQLITE_NOTADB:
    return JOURNAL_ECORRUPT;
  default:
    return JOURNAL_EIO;
  }
}

int journal__exec(sqlite3 *db, const char *sql, char *err, size_t err_size,
                        const char *path)
{
  char *message = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &message);
  if (rc != SQLITE_OK) {
    snprintf(err, err_size, "journal %s: %s failed: %s", path, sql,
             message ? message : sqlite3_errstr(rc));
    sqlite3_free(message);
  }
  return rc;
}

/* Runs a PRAGMA that answers one value and checks the answer. */
static int journal_pragma_expect(sqlite3 *db, const char *sql, const char *expected,
                                 char *err, size_t err_size, const char *path)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_step(stmt);
  if (rc != SQLITE_ROW) {
    snprintf(err, err_size, "journal %s: %s failed: %s", path, sql, sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    return -1;
  }
  if (expected && strcmp((const char *)sqlite3_column_text(stmt, 0), expected) != 0) {
    snprintf(err, err_size, "journal %s: %s answered \"%s\", expected \"%s\"", path, sql,
             sqlite3_column_text(stmt, 0), expected);
    sqlite3_finalize(stmt);
    return -1;
  }
  sqlite3_finalize(stmt);
  return 0;
}

static int64_t journal_pragma_int(sqlite3 *db, const char *sql)
{
  sqlite3_stmt *stmt = NULL;
  int64_t value = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW)
    value = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return value;
}

/* A journal_id: 128 random bits as 32 hex digits, made once per database. */
static int journal_new_id(char out[33])
{
  uint8_t bytes[16];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    got += (size_t)n;
  }
  proto_journal_id_format(bytes, out);
  return 0;
}

/* A fresh database gets its identity in the same transaction as its
 * tables, so there is never a journal without a journal_id. */
static int journal_insert_identity(journal *j, char *err, size_t err_size)
{
  char id[33];
  char insert[160];
  if (journal_new_id(id)) {
    snprintf(err, err_size, "journal %s: no random bytes for the journal id: %s", j->path,
             strerror(errno));
    return -1;
  }
  snprintf(insert, sizeof(insert),
           "INSERT INTO meta(key, value) VALUES('journal_id', '%s'),"
           "('created_ms', '%lld')",
           id, (long long)clock_wall_ms());
  return journal__exec(j->db, insert, err, err_size, j->path) ? -1 : 0;
}

/* ---- schema versions ------------------------------------------------------
 *
 * PRAGMA user_version is the journal's oldest reader: the oldest schema
 * whose agent can still read and write it. meta schema_version is the
 * newest step applied (absent on journals of the agents before this rule:
 * equal to user_version), meta oldest_reader_agent the pos-agent version
 * that raised the oldest reader (for the message that says what to
 * install). An additive step (a new table or index, a column with a
 * default) leaves user_version where it was, so an agent rolled back to the
 * version before still opens the journal and takes sales: what it writes is
 * valid for the newer agent (new columns default, new tables miss rows).
 */

/* Steps an agent of the schema before them reads through. Steps 1 to 6
 * count as not additive: the agents released with them read user_version
 * as "the schema applied" and run every step above it, so a journal past
 * step 6 must say 6 or more to them. Missing entries read 0: a new step is
 * taken for one that raises the oldest reader unless marked here. */
static const unsigned char journal_step_additive[JOURNAL_SCHEMA_VERSION] = {
    0, 0, 0, 0, 0, 0, 1, 1, 1, 1,
};

/* Steps that rewrite a whole table before READY: schema 3's DROP COLUMN
 * rewrites every sale row (journals of the first releases). Free space is
 * checked first and systemd's start timeout is pushed out while it runs. A
 * new step must never be one: a rewrite belongs after READY, in batches. */
static const unsigned char journal_step_rewrites[JOURNAL_SCHEMA_VERSION] = {
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
};

/* While a rewriting step runs, EXTEND_TIMEOUT_USEC is sent every this
 * often, each pushing TimeoutStartSec= out by this much from now. */
#define JOURNAL_EXTEND_EVERY_MS 5000u
#define JOURNAL_EXTEND_USEC (60ull * 1000 * 1000)
/* SQLite virtual machine instructions between two looks at the clock. */
#define JOURNAL_PROGRESS_OPS 100000
/* Room beyond the database's used pages that a rewrite must find free. */
#define JOURNAL_REWRITE_MARGIN_BYTES (4u * 1024u * 1024u)

/* Reads user_version and the meta keys of the versions into `out`. 0, or
 * -1 with `err`. Any connection, read-only ones too. */
static int journal_read_versions(sqlite3 *db, const char *path, struct journal_compat *out,
                                 char *err, size_t err_size)
{
  static const char *const keys[] = {"schema_version", "oldest_reader_agent"};
  sqlite3_stmt *stmt = NULL;
  int64_t user_version = journal_pragma_int(db, "PRAGMA user_version");
  int rc = -1;

  memset(out, 0, sizeof(*out));
  out->present = 1;
  out->agent_schema = JOURNAL_SCHEMA_VERSION;
  if (user_version < 0) {
    snprintf(err, err_size, "journal %s: cannot read its schema version: %s", path,
             sqlite3_errmsg(db));
    goto out;
  }
  out->oldest_reader = out->schema_version = user_version;
  if (user_version == 0) {
    rc = 0; /* a new, empty database */
    goto out;
  }
  if (sqlite3_prepare_v2(db, JOURNAL_SQL_GET_META, -1, &stmt, NULL) != SQLITE_OK) {
    snprintf(err, err_size, "journal %s: cannot read its meta table: %s", path,
             sqlite3_errmsg(db));
    goto out;
  }
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    sqlite3_bind_text(stmt, 1, keys[i], -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0)) {
      if (i == 0 && sqlite3_column_int64(stmt, 0) > user_version)
        out->schema_version = sqlite3_column_int64(stmt, 0);
      else if (i == 1)
        snprintf(out->oldest_reader_agent, sizeof(out->oldest_reader_agent), "%s",
                 (const char *)sqlite3_column_text(stmt, 0));
    }
    sqlite3_reset(stmt);
  }
  rc = 0;
out:
  sqlite3_finalize(stmt);
  return rc;
}

int journal_compat_read(const char *path, struct journal_compat *out, char *err,
                        size_t err_size)
{
  sqlite3 *db = NULL;
  struct stat st;
  int rc = -1;

  memset(out, 0, sizeof(*out));
  out->agent_schema = JOURNAL_SCHEMA_VERSION;
  if (stat(path, &st) != 0) {
    if (errno == ENOENT)
      rc = 0; /* no journal yet: any agent may start one */
    else
      snprintf(err, err_size, "journal %s: %s", path, strerror(errno));
    goto out;
  }
  /* Read-only: the file is never created, migrated or written, whoever
   * runs this (the preinst runs it as root while the agent may be
   * running). */
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
      SQLITE_OK) {
    snprintf(err, err_size, "journal %s cannot be opened read-only: %s", path,
             db ? sqlite3_errmsg(db) : "out of memory");
    goto out;
  }
  sqlite3_busy_timeout(db, 5000);
  rc = journal_read_versions(db, path, out, err, err_size);
out:
  sqlite3_close(db);
  return rc;
}

/* Sets user_version and meta schema_version (and, when the oldest reader
 * was raised now, oldest_reader_agent), inside the caller's transaction. */
static int journal_write_versions(journal *j, int64_t schema_version, int64_t oldest_reader,
                                  int raised, char *err, size_t err_size)
{
  sqlite3_stmt *stmt = NULL;
  char sql[64], value[32];
  int rc = -1;

  snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long)oldest_reader);
  if (journal__exec(j->db, sql, err, err_size, j->path))
    goto out;
  if (sqlite3_prepare_v2(j->db, JOURNAL_SQL_SET_META, -1, &stmt, NULL) != SQLITE_OK)
    goto failed;
  snprintf(value, sizeof(value), "%lld", (long long)schema_version);
  sqlite3_bind_text(stmt, 1, "schema_version", -1, SQLITE_STATIC);
  sqlite3_bind_text(stmt, 2, value, -1, SQLITE_STATIC);
  if (sqlite3_step(stmt) != SQLITE_DONE)
    goto failed;
  sqlite3_reset(stmt);
  if (raised) {
    sqlite3_bind_text(stmt, 1, "oldest_reader_agent", -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, POS_VERSION, -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) != SQLITE_DONE)
      goto failed;
  }
  rc = 0;
  goto out;
failed:
  snprintf(err, err_size, "journal %s: cannot record its schema version: %s", j->path,
           sqlite3_errmsg(j->db));
out:
  sqlite3_finalize(stmt);
  return rc;
}

/* The row formats a journal may hold (meta row_format), each with the
 * oldest reader it needs: 'compact' (schema 8) and 'slim' (schema 9, which
 * also holds compact rows). */
static const char *journal_rows_name(int slim) { return slim ? "slim" : "compact"; }
static int journal_rows_reader(int slim)
{
  return slim ? JOURNAL_SLIM_READER : JOURNAL_COMPACT_READER;
}

/* Whether the journal is marked for compact (slim: slim) rows already:
 * oldest reader high enough and meta row_format saying so ('slim' counts as
 * compact too). 1, 0, or -1 with `err`; `v` is set. Read only. */
static int journal_rows_marked(journal *j, int slim, struct journal_compat *v, char *err,
                               size_t err_size)
{
  sqlite3_stmt *stmt = NULL;
  int marked = 0;

  if (journal_read_versions(j->db, j->path, v, err, err_size))
    return -1;
  if (v->oldest_reader < journal_rows_reader(slim))
    return 0;
  if (sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_META, -1, &stmt, NULL) == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, "row_format", -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0)) {
      const char *format = (const char *)sqlite3_column_text(stmt, 0);
      marked = strcmp(format, "slim") == 0 || (!slim && strcmp(format, "compact") == 0);
    }
  }
  sqlite3_finalize(stmt);
  return marked;
}

int journal__mark_rows(journal *j, int slim, const char *cause, char *err, size_t err_size)
{
  struct journal_compat v;
  sqlite3_stmt *stmt = NULL;
  int reader = journal_rows_reader(slim);
  int rc = journal_rows_marked(j, slim, &v, err, err_size);

  if (rc < 0)
    return SQLITE_ERROR;
  if (rc > 0)
    return SQLITE_OK; /* marked before: nothing to write */
  rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_SET_META, -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, "row_format", -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, journal_rows_name(slim), -1, SQLITE_STATIC);
    rc = journal__step_done(j, stmt);
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_OK) {
    snprintf(err, err_size, "journal %s: cannot record its row format: %s", j->path,
             sqlite3_errmsg(j->db));
    return rc;
  }
  if (v.oldest_reader >= reader)
    return SQLITE_OK;
  if (journal_write_versions(j, v.schema_version, reader, 1, err, err_size))
    return SQLITE_ERROR;
  if (slim)
    log_info("journal", "rows_slim", "path=%s oldest_reader=%d was=%lld cause=\"%s\" "
             "reason=\"slim sale rows (a 16-byte content hash, business_time kept only when "
             "it is not the canonical text): agents of journal schema %d and older no longer "
             "read this journal\"", j->path, reader, (long long)v.oldest_reader, cause,
             reader - 1);
  else
    log_info("journal", "rows_compact", "path=%s oldest_reader=%d was=%lld cause=\"%s\" "
             "reason=\"compact sale rows: agents of journal schema %d and older no longer read "
             "this journal\"", j->path, reader, (long long)v.oldest_reader, cause, reader - 1);
  return SQLITE_OK;
}

/* journal.row_format compact (slim): before the first such row, the
 * journal records it (one transaction); then every new sale row is so. */
static int journal_use_rows(journal *j, int slim, char *err, size_t err_size)
{
  struct journal_compat v;
  int marked = journal_rows_marked(j, slim, &v, err, err_size);

  if (marked < 0)
    return JOURNAL_EIO;
  /* Every start after the first: read only, no write transaction at all
   * (nothing to change; a restart on a full disk should not depend on
   * SQLite finding that an upsert of the same value dirties no page). */
  if (!marked) {
    if (journal__exec(j->db, "BEGIN IMMEDIATE", err, err_size, j->path))
      return JOURNAL_EIO;
    if (journal__mark_rows(j, slim,
                           slim ? "journal.row_format = slim"
                                : "journal.row_format = compact (or compact_rows = true)",
                           err, err_size) != SQLITE_OK ||
        journal__exec(j->db, "COMMIT", err, err_size, j->path)) {
      sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
      return JOURNAL_EIO;
    }
  }
  j->compact_rows = 1;
  j->slim_rows = slim;
  return 0;
}

/* A fresh database is made in one transaction, all steps at once: its
 * schema pages reach the WAL once, not once per step (a WAL of 128 pages,
 * a small disk's, would otherwise start its life half full). */
static int journal_create_schema(journal *j, char *err, size_t err_size)
{
  int64_t oldest_reader = 0;

  if (journal__exec(j->db, "BEGIN IMMEDIATE", err, err_size, j->path))
    return JOURNAL_EIO;
  for (int step = 0; step < JOURNAL_SCHEMA_VERSION; step++) {
    if (journal__exec(j->db, journal_migrations[step], err, err_size, j->path))
      goto fail;
    if (journal_migrations_extra[step] &&
        journal__exec(j->db, journal_migrations_extra[step], err, err_size, j->path))
      goto fail;
    if (step == 0 && journal_insert_identity(j, err, err_size))
      goto fail;
    if (!journal_step_additive[step])
      oldest_reader = step + 1;
  }
  if (journal_write_versions(j, JOURNAL_SCHEMA_VERSION, oldest_reader, 1, err, err_size) ||
      journal__exec(j->db, "COMMIT", err, err_size, j->path))
    goto fail;
  log_info("journal", "created", "path=%s schema_version=%d oldest_reader=%lld", j->path,
           JOURNAL_SCHEMA_VERSION, (long long)oldest_reader);
  return 0;
fail:
  sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
  return JOURNAL_EIO;
}

/* Before a step that rewrites a table: the WAL will hold a copy of it
 * until the checkpoint, so the disk must have room for the database's used
 * pages (the table is part of them) and a margin. JOURNAL_ENOSPACE with
 * `err` saying what to do when it does not: the journal is not touched. */
static int journal_rewrite_fits(journal *j, int version, char *err, size_t err_size)
{
  int64_t used_pages = journal_pragma_int(j->db, "PRAGMA page_count") -
                       journal_pragma_int(j->db, "PRAGMA freelist_count");
  uint64_t need = (uint64_t)(used_pages > 0 ? used_pages : 0) * (uint64_t)j->page_size +
                  JOURNAL_REWRITE_MARGIN_BYTES;
  uint64_t free_bytes = 0;
  int rc = disk_free_bytes(j->path, &free_bytes);

  if (rc) {
    /* Cannot tell: try. A disk that fills rolls the step back whole. */
    log_warn("journal", "free_space_unknown", "path=%s error=\"%s\"", j->path, strerror(-rc));
    return 0;
  }
  if (free_bytes >= need)
    return 0;
  snprintf(err, err_size,
           "journal %s: its upgrade to schema %d rewrites the sales table and needs about "
           "%llu MiB free on the journal's disk, which has %llu MiB free: free space there "
           "(or move the journal to a larger disk and set journal.path), then start the agent "
           "again; the journal is unchanged and keeps its sales",
           j->path, version, (unsigned long long)(need >> 20),
           (unsigned long long)(free_bytes >> 20));
  return JOURNAL_ENOSPACE;
}

/* SQLite's progress handler while a table is rewritten: systemd's start
 * timeout is pushed out as long as the rewrite makes progress. */
static int journal_on_rewrite_progress(void *arg)
{
  uint64_t *next_ms = arg;
  uint64_t now_ms = clock_mono_ms();

  if (now_ms >= *next_ms) {
    systemd_notify_extend_timeout(JOURNAL_EXTEND_USEC);
    *next_ms = now_ms + JOURNAL_EXTEND_EVERY_MS;
  }
  return 0; /* go on */
}

/* Applies step v->schema_version + 1 in its own transaction (an upgrade
 * interrupted keeps each step done) and moves `v` with it. */
static int journal_migrate_step(journal *j, struct journal_compat *v, char *err,
                                size_t err_size)
{
  int step = (int)v->schema_version;
  int additive = journal_step_additive[step];
  int64_t oldest_reader = additive || v->oldest_reader > step + 1 ? v->oldest_reader : step + 1;
  uint64_t started_ms = clock_mono_ms(), next_ms = 0;
  int rc;

  if (journal_step_rewrites[step]) {
    char status[160];
    rc = journal_rewrite_fits(j, step + 1, err, err_size);
    if (rc)
      return rc;
    snprintf(status, sizeof(status), "upgrading the journal to schema %d: rewriting its sales "
             "table (sales are taken once it is done)", step + 1);
    systemd_notify_status(status);
    log_info("journal", "rewriting", "path=%s schema_version=%d table=sales", j->path, step + 1);
    sqlite3_progress_handler(j->db, JOURNAL_PROGRESS_OPS, journal_on_rewrite_progress,
                             &next_ms);
  }
  rc = JOURNAL_EIO;
  if (journal__exec(j->db, "BEGIN IMMEDIATE", err, err_size, j->path))
    goto out;
  if (journal__exec(j->db, journal_migrations[step], err, err_size, j->path) ||
      (journal_migrations_extra[step] &&
       journal__exec(j->db, journal_migrations_extra[step], err, err_size, j->path)) ||
      journal_write_versions(j, step + 1, oldest_reader, oldest_reader != v->oldest_reader, err,
                             err_size) ||
      journal__exec(j->db, "COMMIT", err, err_size, j->path)) {
    sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
    goto out;
  }
  v->schema_version = step + 1;
  v->oldest_reader = oldest_reader;
  rc = 0;
out:
  if (journal_step_rewrites[step]) {
    sqlite3_progress_handler(j->db, 0, NULL, NULL);
    /* The WAL holds the whole table now: copy it back and give the disk
     * its room again before the day's sales come. */
    systemd_notify_extend_timeout(JOURNAL_EXTEND_USEC);
    if (rc == 0) {
      sqlite3_exec(j->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
      /* Done: systemctl status must not say "upgrading" for days. */
      systemd_notify_status("");
    }
  }
  if (rc == 0)
    log_info("journal", "migrated", "path=%s schema_version=%d oldest_reader=%lld additive=%s "
             "ms=%llu", j->path, step + 1, (long long)oldest_reader, additive ? "yes" : "no",
             (unsigned long long)(clock_mono_ms() - started_ms));
  return rc;
}

/* Says which agent a journal needs, for an agent that cannot read it. */
static void journal_needs_newer(const char *path, const struct journal_compat *v, char *err,
                                size_t err_size)
{
  char agent[96];

  if (v->oldest_reader_agent[0])
    snprintf(agent, sizeof(agent), "pos-agent %s or newer", v->oldest_reader_agent);
  else
    snprintf(agent, sizeof(agent), "a pos-agent that reads journal schema %lld",
             (long long)v->oldest_reader);
  snprintf(err, err_size,
           "journal %s needs %s: a newer agent changed it in a way this pos-agent %s (journal "
           "schema %d) cannot read (its oldest reader is schema %lld); install %s again. The "
           "journal is kept unchanged, with its sales",
           path, agent, POS_VERSION, JOURNAL_SCHEMA_VERSION, (long long)v->oldest_reader, agent);
}

/* Brings the schema to JOURNAL_SCHEMA_VERSION, or takes a newer journal
 * this agent can still read (its oldest reader is not newer than this
 * agent). JOURNAL_ESCHEMA when it cannot, JOURNAL_ENOSPACE when a rewrite
 * does not fit: both leave the file as it was. */
static int journal_migrate(journal *j, char *err, size_t err_size)
{
  struct journal_compat v;
  int rc;

  if (journal_read_versions(j->db, j->path, &v, err, err_size))
    return JOURNAL_EIO;
  if (v.oldest_reader > JOURNAL_SCHEMA_VERSION) {
    journal_needs_newer(j->path, &v, err, err_size);
    return JOURNAL_ESCHEMA;
  }
  if (v.schema_version > JOURNAL_SCHEMA_VERSION) {
    /* A rollback within the range the newer agent promised: its additions
     * stay as they are, and what this agent writes is valid for it. */
    log_warn("journal", "newer_schema", "path=%s schema_version=%lld oldest_reader=%lld "
             "agent_schema=%d reason=\"written by a newer agent; this one reads it and takes "
             "sales, the newer agent's additions are left as they are\"", j->path,
             (long long)v.schema_version, (long long)v.oldest_reader, JOURNAL_SCHEMA_VERSION);
    return 0;
  }
  if (v.schema_version == 0)
    return journal_create_schema(j, err, err_size);
  while (v.schema_version < JOURNAL_SCHEMA_VERSION) {
    rc = journal_migrate_step(j, &v, err, err_size);
    if (rc)
      return rc;
  }
  return 0;
}

static int journal_prepare(journal *j, char *err, size_t err_size)
{
  struct {
    sqlite3_stmt **stmt;
    const char *sql;
  } statements[] = {
      {&j->insert_sale, JOURNAL_SQL_INSERT_SALE},
      {&j->find_sale, JOURNAL_SQL_FIND_SALE},
      {&j->begin, JOURNAL_SQL_BEGIN},
      {&j->commit, JOURNAL_SQL_COMMIT},
      {&j->rollback, JOURNAL_SQL_ROLLBACK},
      {&j->savepoint, JOURNAL_SQL_SAVEPOINT},
      {&j->release, JOURNAL_SQL_RELEASE},
      {&j->rollback_to, JOURNAL_SQL_ROLLBACK_TO},
      {&j->page_count, JOURNAL_SQL_PAGE_COUNT},
      {&j->set_meta, JOURNAL_SQL_SET_META},
      {&j->oldest_unsent, JOURNAL_SQL_OLDEST_UNSENT},
      {&j->unsealed, JOURNAL_SQL_UNSEALED},
      {&j->has_unsealed, JOURNAL_SQL_HAS_UNSEALED},
      {&j->insert_batch, JOURNAL_SQL_INSERT_BATCH},
      {&j->get_batch, JOURNAL_SQL_GET_BATCH},
      {&j->attempt_batch, JOURNAL_SQL_ATTEMPT_BATCH},
      {&j->ack_batches, JOURNAL_SQL_ACK_BATCHES},
      {&j->sales_in_batches, JOURNAL_SQL_SALES_IN_BATCHES},
      {&j->acked_above, JOURNAL_SQL_ACKED_ABOVE},
      {&j->count_from_seq, JOURNAL_SQL_COUNT_FROM_SEQ},
      {&j->delete_unacked_from, JOURNAL_SQL_DELETE_UNACKED_FROM},
      {&j->expired_batches, JOURNAL_SQL_EXPIRED_BATCHES},
      {&j->delete_batch_sales, JOURNAL_SQL_DELETE_BATCH_SALES},
      {&j->delete_batch, JOURNAL_SQL_DELETE_BATCH},
      {&j->insert_adjustment, JOURNAL_SQL_INSERT_ADJUSTMENT},
      {&j->find_adjustment, JOURNAL_SQL_FIND_ADJUSTMENT},
      {&j->bump_seq, JOURNAL_SQL_BUMP_SEQ},
      {&j->start_seq, JOURNAL_SQL_START_SEQ},
      {&j->row_deltas, JOURNAL_SQL_ROW_DELTAS},
      {&j->base_add, JOURNAL_SQL_BASE_ADD},
      {&j->delete_batch_adjustments, JOURNAL_SQL_DELETE_BATCH_ADJUSTMENTS},
      {&j->original_time, JOURNAL_SQL_ORIGINAL_TIME},
      {&j->insert_name, JOURNAL_SQL_INSERT_NAME},
      {&j->put_progress, JOURNAL_SQL_PUT_PROGRESS},
      {&j->delete_progress, JOURNAL_SQL_DELETE_PROGRESS},
  };
  for (size_t i = 0; i < sizeof(statements) / sizeof(statements[0]); i++) {
    if (sqlite3_prepare_v3(j->db, statements[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                           statements[i].stmt, NULL) != SQLITE_OK) {
      snprintf(err, err_size, "journal %s: cannot prepare \"%s\": %s", j->path,
               statements[i].sql, sqlite3_errmsg(j->db));
      return -1;
    }
  }
  return 0;
}

/* Reads meta reset_* (why this journal was started, if after a loss) into
 * the counters; absent keys leave them empty. On the opening thread. */
void journal__load_reset(journal *j)
{
  static const char *const keys[] = {"reset_previous_journal_id", "reset_ms",
                                     "reset_sales_missing", "reset_reason"};
  sqlite3_stmt *stmt = NULL;

  j->stats.previous_journal_id[0] = '\0';
  j->stats.reset_reason[0] = '\0';
  j->stats.reset_ms = 0;
  j->stats.sales_missing = 0;
  if (sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_META, -1, &stmt, NULL) != SQLITE_OK)
    return;
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    const char *value;
    sqlite3_bind_text(stmt, 1, keys[i], -1, SQLITE_STATIC);
    if (sqlite3_step(stmt) == SQLITE_ROW && (value = (const char *)sqlite3_column_text(stmt, 0))) {
      if (i == 0)
        snprintf(j->stats.previous_journal_id, sizeof(j->stats.previous_journal_id), "%s",
                 value);
      else if (i == 1)
        j->stats.reset_ms = sqlite3_column_int64(stmt, 0);
      else if (i == 2)
        j->stats.sales_missing = (uint64_t)sqlite3_column_int64(stmt, 0);
      else
        snprintf(j->stats.reset_reason, sizeof(j->stats.reset_reason), "%s", value);
    }
    sqlite3_reset(stmt);
  }
  sqlite3_finalize(stmt);
}

/* One int64 from `sql` with ?1 (and ?2, if it has one) bound; SQLite's code. Writer
 * thread, or the opening thread. */
int journal__query_int(journal *j, const char *sql, int64_t a, int64_t b, int64_t *out)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, sql, -1, &stmt, NULL);

  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(stmt, 1, a);
    if (sqlite3_bind_parameter_count(stmt) >= 2)
      sqlite3_bind_int64(stmt, 2, b);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
      *out = sqlite3_column_int64(stmt, 0);
    rc = rc == SQLITE_ROW ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  return rc;
}

/* Counted once (the kept figure missing or stale): kept from now on, in a
 * savepoint (the opening thread, or a new journal inside the writer's
 * transaction). A journal that cannot take the write (full, read-only
 * medium) is counted again at the next start: the figure is right either
 * way. */
static void journal_keep_count(journal *j, int64_t count, int64_t upto, int64_t lowest)
{
  int rc = sqlite3_exec(j->db, "SAVEPOINT counted", NULL, NULL, NULL);

  if (rc == SQLITE_OK)
    rc = journal__counted_set(j, count, upto, lowest);
  if (rc != SQLITE_OK) {
    log_warn("journal", "count_not_kept", "path=%s reason=\"%s\" action=\"counted again at "
             "the next start\"", j->path, sqlite3_errmsg(j->db));
    sqlite3_exec(j->db, "ROLLBACK TO counted", NULL, NULL, NULL);
  }
  sqlite3_exec(j->db, "RELEASE counted", NULL, NULL, NULL);
}

/* The sales the journal holds: the kept figure (meta sales_counted, see
 * JOURNAL_SQL_SALES_COUNTED) and the rows above its seq, a rowid range;
 * counted in full only when the figure is missing (a journal of an agent
 * before it) or stale (an agent that does not keep it deleted rows since),
 * and then kept. SQLite's code. */
static int journal_count_sales(journal *j, uint64_t *sales)
{
  sqlite3_stmt *stmt = NULL;
  int64_t count = -1, upto = 0, lowest = 0, above = 0;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_SALES_COUNTED, -1, &stmt, NULL);

  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW && sqlite3_column_int64(stmt, 2) == sqlite3_column_int64(stmt, 3) &&
        sqlite3_column_int64(stmt, 0) >= 0 && sqlite3_column_int64(stmt, 1) >= 0) {
      count = sqlite3_column_int64(stmt, 0);
      upto = sqlite3_column_int64(stmt, 1);
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  stmt = NULL;
  if (rc == SQLITE_OK && count >= 0) {
    rc = journal__query_int(j, JOURNAL_SQL_SALES_IN_RANGE, upto, INT64_MAX, &above);
    count += above;
    /* Many rows above it (an agent that kept it only at seals): kept
     * now, so that the next start does not count them again. */
    if (rc == SQLITE_OK && above >= JOURNAL_STOCK_KEEP_ROWS &&
        journal__query_int(j, JOURNAL_SQL_SALES_LOWEST, j->stats.last_seq, 0, &lowest) ==
            SQLITE_OK)
      journal_keep_count(j, count, j->stats.last_seq, lowest);
  } else if (rc == SQLITE_OK) {
    rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_SALES_ALL, -1, &stmt, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      count = sqlite3_column_int64(stmt, 0);
      upto = sqlite3_column_int64(stmt, 1);
      lowest = sqlite3_column_int64(stmt, 2);
      rc = SQLITE_OK;
    } else {
      rc = rc == SQLITE_OK || rc == SQLITE_DONE ? SQLITE_ERROR : sqlite3_extended_errcode(j->db);
    }
    sqlite3_finalize(stmt);
    if (rc == SQLITE_OK && count > 0)
      log_info("journal", "sales_counted", "path=%s sales=%lld reason=\"no kept count, or rows "
               "deleted by an agent that does not keep it\"", j->path, (long long)count);
    if (rc == SQLITE_OK)
      journal_keep_count(j, count, upto, lowest);
  }
  if (rc == SQLITE_OK)
    *sales = (uint64_t)count;
  return rc;
}

/* Reads the counters the status page shows; on the opening thread only. */
int journal__load_stats(journal *j, char *err, size_t err_size)
{
  sqlite3_stmt *stmt = NULL;
  int rc = -1;

  if (sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_META, -1, &stmt, NULL) != SQLITE_OK)
    goto out;
  sqlite3_bind_text(stmt, 1, "journal_id", -1, SQLITE_STATIC);
  if (sqlite3_step(stmt) != SQLITE_ROW || sqlite3_column_bytes(stmt, 0) != 32) {
    snprintf(err, err_size,
             "journal %s has no valid journal_id in its meta table: the file is not a "
             "journal of this agent or was edited; move it aside to start a new journal",
             j->path);
    goto out;
  }
  memcpy(j->stats.journal_id, sqlite3_column_text(stmt, 0), 32);
  j->stats.journal_id[32] = '\0';
  sqlite3_finalize(stmt);
  stmt = NULL;

  /* The uplink's cursor first: "unsent" is counted from it. */
  if (journal__load_batch_stats(j))
    goto out;
  if (sqlite3_prepare_v2(j->db, JOURNAL_SQL_COUNTS, -1, &stmt, NULL) != SQLITE_OK)
    goto out;
  if (sqlite3_step(stmt) != SQLITE_ROW)
    goto out;
  j->stats.last_seq = sqlite3_column_int64(stmt, 0);
  j->stats.last_received_ms = sqlite3_column_int64(stmt, 1);
  if (journal__count_unsent(j, &j->stats.sales_unsent) != SQLITE_OK)
    goto out;
  j->seq_bound = journal_pragma_int(j->db, JOURNAL_SQL_SEQ_COUNTER);
  if (j->seq_bound < 0)
    goto out;
  if (journal_count_sales(j, &j->stats.sales_journaled) != SQLITE_OK)
    goto out;
  j->stats.database_bytes = (uint64_t)(journal_pragma_int(j->db, "PRAGMA page_count") *
                                       j->page_size);
  journal__load_reset(j);
  if (journal__commands_load(j))
    goto out;
  if (journal__clock_load(j, err, err_size))
    goto out;
  rc = 0;
out:
  if (rc && err[0] == '\0')
    snprintf(err, err_size, "journal %s: cannot read its counters: %s", j->path,
             sqlite3_errmsg(j->db));
  sqlite3_finalize(stmt);
  return rc;
}

/* ---- the writer thread ------------------------------------------------ */

int journal__step_done(journal *j, sqlite3_stmt *stmt)
{
  int rc = sqlite3_step(stmt);
  sqlite3_reset(stmt);
  return rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
}

/* Lines and payments as compact JSON, money in integer minor units, made
 * by jansson: the reference for the bytes, and the path for a text that
 * needs escaping or is not ASCII (rare; journal__lines_json takes it). */
static char *journal_lines_jansson(const struct sale *sale)
{
  json_t *lines = json_array();
  char *text;

  if (!lines)
    return NULL;
  for (size_t i = 0; i < sale->line_count; i++) {
    const struct sale_line *line = &sale->lines[i];
    json_t *item = json_pack("{s:s, s:I, s:I, s:I, s:I}", "sku", line->sku, "qty",
                             (json_int_t)line->qty, "unit_price", (json_int_t)line->unit_price,
                             "discount", (json_int_t)line->discount, "tax",
                             (json_int_t)line->tax);
    if (!item)
      goto fail;
    if (line->promo_id[0] && json_object_set_new(item, "promo_id", json_string(line->promo_id)))
      goto fail_item;
    if (json_array_append_new(lines, item))
      goto fail;
    continue;
  fail_item:
    json_decref(item);
    goto fail;
  }
  text = json_dumps(lines, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(lines);
  return text;
fail:
  json_decref(lines);
  return NULL;
}

static char *journal_payments_jansson(const struct sale *sale)
{
  json_t *payments = json_array();
  char *text;

  if (!payments)
    return NULL;
  for (size_t i = 0; i < sale->payment_count; i++) {
    json_t *item = json_pack("{s:s, s:I}", "method", sale->payments[i].method, "amount",
                             (json_int_t)sale->payments[i].amount);
    if (!item || json_array_append_new(payments, item)) {
      json_decref(payments);
      return NULL;
    }
  }
  text = json_dumps(payments, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(payments);
  return text;
}

size_t journal__format_i64(char *out, int64_t v)
{
  char digits[20];
  /* The magnitude as unsigned: -INT64_MIN does not fit an int64_t. */
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  size_t n = 0, len = 0;

  do {
    digits[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0)
    out[len++] = '-';
  while (n)
    out[len++] = digits[--n];
  return len;
}

/* 1 when json_dumps writes `text` between its quotes unchanged: printable
 * ASCII without a quote or backslash. Anything else (escapes, UTF-8) is
 * left to jansson, so its bytes stay jansson's by construction. */
static int journal_text_plain(const char *text)
{
  for (const unsigned char *c = (const unsigned char *)text; *c; c++)
    if (*c < 0x20 || *c > 0x7e || *c == '"' || *c == '\\')
      return 0;
  return 1;
}

/* Makes room for `more` bytes and a NUL after out->len. 0 or -1. */
static int journal_text_reserve(struct journal_text *out, size_t more)
{
  size_t need = out->len + more + 1, cap = out->cap ? out->cap : 256;
  char *grown;

  if (need <= out->cap)
    return 0;
  while (cap < need)
    cap *= 2;
  grown = realloc(out->data, cap);
  if (!grown)
    return -1;
  out->data = grown;
  out->cap = cap;
  return 0;
}

/* Appends (room reserved by the caller). */
static void journal_text_put(struct journal_text *out, const char *bytes, size_t len)
{
  memcpy(out->data + out->len, bytes, len);
  out->len += len;
}

static void journal_text_put_i64(struct journal_text *out, int64_t v)
{
  out->len += journal__format_i64(out->data + out->len, v);
}

/* Sets `out` to jansson's text (the fallback). 0 or -1. */
static int journal_text_set(struct journal_text *out, char *made)
{
  size_t len;
  int rc = -1;

  if (!made)
    return -1;
  len = strlen(made);
  out->len = 0;
  if (journal_text_reserve(out, len) == 0) {
    journal_text_put(out, made, len);
    out->data[out->len] = '\0';
    rc = 0;
  }
  free(made);
  return rc;
}

/* Room for one line: the keys and punctuation (< 80), 4 numbers of at most
 * 20 characters, and the two texts. */
#define JOURNAL_LINE_JSON_MAX (2 * (SALE_TEXT_MAX + 1) + 80 + 4 * 21)

int journal__lines_json(const struct sale *sale, struct journal_text *out)
{
  out->len = 0;
  for (size_t i = 0; i < sale->line_count; i++)
    if (!journal_text_plain(sale->lines[i].sku) || !journal_text_plain(sale->lines[i].promo_id))
      return journal_text_set(out, journal_lines_jansson(sale));
  if (journal_text_reserve(out, 2 + sale->line_count * JOURNAL_LINE_JSON_MAX))
    return -1;
  journal_text_put(out, "[", 1);
  for (size_t i = 0; i < sale->line_count; i++) {
    const struct sale_line *line = &sale->lines[i];
    if (i)
      journal_text_put(out, ",", 1);
    journal_text_put(out, "{\"sku\":\"", 8);
    journal_text_put(out, line->sku, strlen(line->sku));
    journal_text_put(out, "\",\"qty\":", 8);
    journal_text_put_i64(out, line->qty);
    journal_text_put(out, ",\"unit_price\":", 14);
    journal_text_put_i64(out, line->unit_price);
    journal_text_put(out, ",\"discount\":", 12);
    journal_text_put_i64(out, line->discount);
    journal_text_put(out, ",\"tax\":", 7);
    journal_text_put_i64(out, line->tax);
    if (line->promo_id[0]) {
      journal_text_put(out, ",\"promo_id\":\"", 13);
      journal_text_put(out, line->promo_id, strlen(line->promo_id));
      journal_text_put(out, "\"", 1);
    }
    journal_text_put(out, "}", 1);
  }
  journal_text_put(out, "]", 1);
  out->data[out->len] = '\0';
  return 0;
}

int journal__payments_json(const struct sale *sale, struct journal_text *out)
{
  out->len = 0;
  for (size_t i = 0; i < sale->payment_count; i++)
    if (!journal_text_plain(sale->payments[i].method))
      return journal_text_set(out, journal_payments_jansson(sale));
  if (journal_text_reserve(out, 2 + sale->payment_count * (SALE_TEXT_MAX + 1 + 40 + 21)))
    return -1;
  journal_text_put(out, "[", 1);
  for (size_t i = 0; i < sale->payment_count; i++) {
    if (i)
      journal_text_put(out, ",", 1);
    journal_text_put(out, "{\"method\":\"", 11);
    journal_text_put(out, sale->payments[i].method, strlen(sale->payments[i].method));
    journal_text_put(out, "\",\"amount\":", 11);
    journal_text_put_i64(out, sale->payments[i].amount);
    journal_text_put(out, "}", 1);
  }
  journal_text_put(out, "]", 1);
  out->data[out->len] = '\0';
  return 0;
}

static void journal_bind_optional(sqlite3_stmt *stmt, int index, const char *text)
{
  if (text[0])
    sqlite3_bind_text(stmt, index, text, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(stmt, index);
}

/*
 * Inserts one sale inside the current savepoint. Returns SQLITE_OK with the
 * result filled (stored or duplicate), SQLITE_CONSTRAINT for a conflict
 * (*conflict_seq set), or another SQLite error.
 */
static int journal_insert_sale(journal *j, const struct sale *sale, int64_t received_ms,
                               struct journal_item_result *result, int64_t *conflict_seq)
{
  uint8_t hash[32];
  struct stock_deltas deltas = {0};
  const uint8_t *deltas_blob = NULL;
  size_t deltas_len = 0, items_len = 0;
  sqlite3_stmt *ins = j->insert_sale;
  int rc;

  if (sale_content_hash(sale, hash))
    return SQLITE_NOMEM;
  if (j->compact_rows ? sale_items_pack(sale, &j->items_buf, &j->items_cap, &items_len)
                     : journal__lines_json(sale, &j->lines_text) ||
                           journal__payments_json(sale, &j->payments_text)) {
    rc = SQLITE_NOMEM;
    goto out;
  }
  /* The deltas are computed once, here, and stored in the row: no batch
   * cut, retry or re-seal computes them again. */
  rc = journal__sale_deltas(j, sale, &deltas, &deltas_blob, &deltas_len);
  if (rc != SQLITE_OK)
    goto out;
  sqlite3_bind_text(ins, 1, sale->sale_id, -1, SQLITE_STATIC);
  /* A slim row keeps 16 bytes of the hash: 128 bits tell a retry from
   * another sale under the same sale_id as surely as 256. */
  sqlite3_bind_blob(ins, 2, hash, j->slim_rows ? JOURNAL_SLIM_HASH_BYTES : (int)sizeof(hash),
                    SQLITE_STATIC);
  sqlite3_bind_text(ins, 3, sale_kind_name(sale->kind), -1, SQLITE_STATIC);
  journal_bind_optional(ins, 4, sale->original_sale_id);
  sqlite3_bind_text(ins, 5, sale->terminal_id, -1, SQLITE_STATIC);
  journal_bind_optional(ins, 6, sale->cashier_id);
  sqlite3_bind_text(ins, 7, sale_channel_name(sale->channel), -1, SQLITE_STATIC);
  journal_bind_optional(ins, 8, sale->delivery_partner);
  /* A slim row leaves out the text that business_time_ms and the offset
   * print again byte for byte (journal__sale_time reads it back). */
  if (j->slim_rows && journal__time_is_canonical(sale))
    sqlite3_bind_text(ins, 9, "", 0, SQLITE_STATIC);
  else
    sqlite3_bind_text(ins, 9, sale->business_time, -1, SQLITE_STATIC);
  sqlite3_bind_int64(ins, 10, sale->business_time_ms);
  sqlite3_bind_int(ins, 11, sale->utc_offset_minutes);
  sqlite3_bind_text(ins, 12, sale->currency, -1, SQLITE_STATIC);
  sqlite3_bind_int(ins, 13, (int)sale->currency_exponent);
  sqlite3_bind_int64(ins, 14, sale->total);
  if (j->compact_rows) {
    sqlite3_bind_blob(ins, 15, j->items_buf, (int)items_len, SQLITE_STATIC);
    sqlite3_bind_zeroblob(ins, 16, 0);
  } else {
    sqlite3_bind_text(ins, 15, j->lines_text.data, (int)j->lines_text.len, SQLITE_STATIC);
    sqlite3_bind_text(ins, 16, j->payments_text.data, (int)j->payments_text.len, SQLITE_STATIC);
  }
  sqlite3_bind_int64(ins, 17, received_ms);
  sqlite3_bind_blob(ins, 18, deltas_blob, (int)deltas_len, SQLITE_STATIC);
  sqlite3_bind_int64(ins, 19, j->seq_next);
  rc = journal__step_done(j, ins);
  sqlite3_clear_bindings(ins);
  if (rc == SQLITE_OK) {
    result->seq = journal__take_seq(j);
    result->outcome = JOURNAL_STORED;
    rc = journal__stage(j, &deltas);
    goto out;
  }
  if (rc != SQLITE_CONSTRAINT_UNIQUE)
    goto out;

  /* The sale_id is taken: a retry of the same sale, or a different sale. */
  sqlite3_bind_text(j->find_sale, 1, sale->sale_id, -1, SQLITE_STATIC);
  if (sqlite3_step(j->find_sale) != SQLITE_ROW) {
    rc = sqlite3_extended_errcode(j->db);
    if (rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE)
      rc = SQLITE_CORRUPT;
    sqlite3_reset(j->find_sale);
    goto out;
  }
  {
    int64_t seq = sqlite3_column_int64(j->find_sale, 0);
    /* Compared over what the row holds: 32 bytes (JSON and compact rows),
     * 16 (slim rows, the hash's first half); any other length is damage. */
    int stored = sqlite3_column_bytes(j->find_sale, 1);
    const void *blob = sqlite3_column_blob(j->find_sale, 1);
    int same = blob && (stored == (int)sizeof(hash) || stored == JOURNAL_SLIM_HASH_BYTES) &&
               memcmp(blob, hash, (size_t)stored) == 0;
    if (!blob || (stored != (int)sizeof(hash) && stored != JOURNAL_SLIM_HASH_BYTES)) {
      log_error("journal", "hash_damaged", "path=%s seq=%lld sale_id=%s bytes=%d reason=\"the "
                "journaled sale's content hash is neither 32 nor 16 bytes long: the row is "
                "damaged; this write is refused (503); copy the journal aside for a look and "
                "see journal.new_journal_if_damaged\"",
                j->path, (long long)seq, sale->sale_id, stored);
      sqlite3_reset(j->find_sale);
      rc = SQLITE_CORRUPT;
      goto out;
    }
    sqlite3_reset(j->find_sale);
    if (same) {
      result->seq = seq;
      result->outcome = JOURNAL_DUPLICATE;
      rc = SQLITE_OK;
    } else {
      *conflict_seq = seq;
      rc = SQLITE_CONSTRAINT;
    }
  }
out:
  sqlite3_clear_bindings(j->find_sale);
  stock_deltas_clear(&deltas);
  return rc;
}

/*
 * Undoes the current write's savepoint. SQLITE_OK, or the error of a
 * ROLLBACK TO or RELEASE that failed: then part of a refused write may
 * still be in the group's transaction, and the caller must abort the whole
 * group rather than commit it (a POS told "refused" must find nothing of
 * its request journaled).
 */
static int journal_undo_write(journal *j)
{
  int rc = SQLITE_OK;
#ifdef JOURNAL_FAULT_HOOKS
  if (j->fault_rollback_to_nth && --j->fault_rollback_to_nth == 0)
    rc = j->fault_rollback_to_rc; /* as if the disk failed it: nothing undone */
#endif
  if (rc == SQLITE_OK)
    rc = journal__step_done(j, j->rollback_to);
  if (rc == SQLITE_OK)
    rc = journal__step_done(j, j->release);
  if (rc != SQLITE_OK)
    log_error("journal", "rollback_to_failed",
              "path=%s sqlite=%d reason=\"a refused write could not be undone alone: the whole "
              "group of writes is aborted and every request in it answered 503\"",
              j->path, rc);
  return rc;
}

/* Sets (or, with no position, deletes) write->progress_source's row of
 * ingest_progress inside the write's savepoint. SQLite's code. Writer
 * thread, or the loop thread committing inline. */
static int journal_record_progress(journal *j, const struct journal_write *write,
                                   int64_t received_ms)
{
  sqlite3_stmt *stmt = write->progress_position ? j->put_progress : j->delete_progress;
  int rc;

  sqlite3_bind_text(stmt, 1, write->progress_source, -1, SQLITE_STATIC);
  if (write->progress_position) {
    sqlite3_bind_text(stmt, 2, write->progress_position, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 3, received_ms);
  }
  rc = journal__step_done(j, stmt);
  sqlite3_clear_bindings(stmt);
  return rc;
}

/*
 * Journals one write inside the open transaction, all or nothing. Returns
 * SQLITE_OK (the write succeeded, or failed on its own with a conflict or
 * a full journal, recorded in it) or an SQLite error that fails the whole
 * group (nothing of it is committed).
 */
static int journal_apply_write(journal *j, struct journal_write *write, int64_t received_ms,
                               int refuse_new)
{
  int64_t seq_from = j->seq_next;
  int rc = journal__step_done(j, j->savepoint);
  if (rc != SQLITE_OK)
    return rc;
  write->staged_from = j->staged_count;
  write->names_from = j->names.count;
  for (size_t i = 0; i < write->count; i++) {
    int64_t conflict_seq = 0;
    int undo;
    if (write->adjustments)
      rc = journal__insert_adjustment(j, &write->adjustments[i], received_ms,
                                      &write->results[i], &conflict_seq);
    else
      rc = journal_insert_sale(j, &write->sales[i], received_ms, &write->results[i],
                               &conflict_seq);
    if (rc == SQLITE_OK && refuse_new && write->results[i].outcome == JOURNAL_STORED) {
      /* Full: a retry of a journaled sale is answered, a new one is not taken. */
      journal__unstage(j, write->staged_from);
      stock_names_truncate(&j->names, write->names_from);
      undo = journal_undo_write(j);
      if (undo != SQLITE_OK)
        return undo;
      j->seq_next = seq_from;
      write->error = JOURNAL_EFULL;
      snprintf(write->message, sizeof(write->message),
               "the journal is full: %s is out of space or at journal.max_size; sales already "
               "journaled are safe; free space on the device, then resend",
               j->path);
      return SQLITE_OK;
    }
    if (rc == SQLITE_OK)
      continue;
    /* Any error but a conflict fails the whole group, which is rolled back
     * whole (SQLite may have done so already, after SQLITE_FULL). */
    if (rc != SQLITE_CONSTRAINT)
      return rc;
    /* Undo this write's earlier sales; the rest of the group is unaffected. */
    journal__unstage(j, write->staged_from);
    stock_names_truncate(&j->names, write->names_from);
    undo = journal_undo_write(j);
    if (undo != SQLITE_OK)
      return undo;
    j->seq_next = seq_from;
    write->error = JOURNAL_ECONFLICT;
    write->conflict_index = i;
    write->conflict_seq = conflict_seq;
    if (write->adjustments)
      snprintf(write->message, sizeof(write->message),
               "adjustment_id %s was already journaled as seq %lld with different content; a "
               "retry must resend the same adjustment, a new one needs a new adjustment_id",
               write->adjustments[i].adjustment_id, (long long)conflict_seq);
    else
      snprintf(write->message, sizeof(write->message),
               "sale_id %s was already journaled as seq %lld with different content; a retry "
               "must resend the same sale, a new sale needs a new sale_id",
               write->sales[i].sale_id, (long long)conflict_seq);
    return SQLITE_OK;
  }
  /* The source's position goes in the write's own savepoint: kept exactly
   * when its rows are, so a restart resumes after what was journaled. */
  if (write->progress_source) {
    rc = journal_record_progress(j, write, received_ms);
    if (rc != SQLITE_OK)
      return rc;
  }
  return journal__step_done(j, j->release);
}

int journal__set_page_limit(journal *j, int64_t pages)
{
  char sql[64];
  if (pages <= 0 || pages == j->page_limit_now)
    return SQLITE_OK;
  snprintf(sql, sizeof(sql), "PRAGMA max_page_count=%lld", (long long)pages);
  if (sqlite3_exec(j->db, sql, NULL, NULL, NULL) != SQLITE_OK)
    return sqlite3_extended_errcode(j->db);
  j->page_limit_now = pages;
  return SQLITE_OK;
}

int64_t journal__wal_pages_for(uint64_t room_bytes, int64_t page_size)
{
  uint64_t pages;

  if (page_size <= 0)
    return JOURNAL_WAL_PAGES_MIN;
  pages = room_bytes / JOURNAL_WAL_ROOM_SHARE / (uint64_t)page_size;
  if (pages < JOURNAL_WAL_PAGES_MIN)
    return JOURNAL_WAL_PAGES_MIN;
  if (pages > JOURNAL_WAL_PAGES_MAX)
    return JOURNAL_WAL_PAGES_MAX;
  return (int64_t)pages;
}

uint64_t journal__reserve_bytes_for(int64_t wal_pages, int64_t page_size)
{
  uint64_t wal = (uint64_t)wal_pages * (uint64_t)(page_size + JOURNAL_WAL_FRAME_HEADER);
  uint64_t bytes = wal + 64u * 1024u;

  return bytes > JOURNAL_DISK_RESERVE_BYTES ? bytes : JOURNAL_DISK_RESERVE_BYTES;
}

/*
 * Sets the WAL's checkpoint interval, not SQLite's 1000 pages, and the disk
 * reserve that goes with it. A checkpoint must grow the database file by
 * the pages that so far live only in the WAL, so a WAL large for its disk
 * could fill it and never be checkpointed again, and then no
 * acknowledgement fits (seen on a 1 MiB file system with a 1 MiB WAL: all
 * its sales in the WAL, 9 KiB of database). Bounded by the room (the file
 * system's size, and journal.max_size when set), the database file holds
 * the data, the WAL is reused from its start after each checkpoint, and
 * the reserve given back on a full disk always lets a checkpoint catch the
 * database up. Open path, before the writer starts.
 */
static int journal_wal_configure(journal *j, const struct journal_options *options, char *err,
                                 size_t err_size)
{
  uint64_t room = 0;
  char sql[64];

  if (disk_size_bytes(j->path, &room) != 0)
    room = 0; /* unknown: the short interval */
  if (options->max_bytes > 0 && (room == 0 || (uint64_t)options->max_bytes < room))
    room = (uint64_t)options->max_bytes;
  j->room_bytes = room;
  j->wal_pages = journal__wal_pages_for(room, j->page_size);
  j->reserve_bytes = journal__reserve_bytes_for(j->wal_pages, j->page_size);
  snprintf(sql, sizeof(sql), "PRAGMA wal_autocheckpoint=%lld", (long long)j->wal_pages);
  return journal__exec(j->db, sql, err, err_size, j->path);
}

/*
 * A clean stop leaves the WAL at its size, checkpointed, with the log
 * restarted at its first frame, so that the next start neither grows the
 * file again nor reads all of it.
 *
 * Growing is what costs: each commit that makes the WAL longer changes the
 * file's size, so its fdatasync commits the file system's journal too
 * (ext4: about 25 KB a commit). Measured as the disk's own count of bytes
 * written (a loop-mounted ext4 with its journal, one terminal, 5 ms fsync,
 * compact rows), the sales after a start cost 11,388 bytes each at 2048
 * pages and 27,607 at 8192 while the WAL was deleted at every stop, about
 * 3,000 once it had its size (tests/bench/journal_bench.sh, BENCH_FS=ext4).
 * So the journal asks SQLite to keep the file (SQLITE_FCNTL_PERSIST_WAL,
 * set at open).
 *
 * Kept as it is, though, the next open would read every frame to rebuild
 * the WAL index (megabytes on a slow card, start-up is issue 12 item 4's)
 * and its first checkpoint would copy all of them again. A RESTART
 * checkpoint copies every frame into the database and waits for readers to
 * leave the WAL, so that the next transaction (the clean stop's own
 * seq_floor, or this one) writes its frames from the file's start with new
 * salts: the frames after them are of the old log, which recovery stops at.
 * Returns an SQLite code; the stop goes on whatever it says (SQLite's own
 * checkpoint at close copies what this one could not).
 * Writer thread stopped; called by journal_close only.
 */
static int journal_wal_rewind(journal *j)
{
  int log_frames = -1, copied = -1;
  int rc = sqlite3_wal_checkpoint_v2(j->db, NULL, SQLITE_CHECKPOINT_RESTART, &log_frames,
                                     &copied);

  if (rc != SQLITE_OK || copied != log_frames)
    log_warn("journal", "wal_not_rewound",
             "path=%s sqlite=%d wal_frames=%d copied=%d reason=\"a reader held the WAL at "
             "stop\" action=\"none: the next start reads the WAL whole, once\"",
             j->path, rc, log_frames, copied);
  return rc;
}

int journal__reserve_ensure(journal *j)
{
  uint64_t disk_free = 0;
  int fd, rc;

  struct stat st;

  if (j->reserve_held)
    return 0;
  /* Left by the run before (or made before an upgrade sized it larger):
   * held as it is, grown when the disk has room, never deleted here, so a
   * restart on a full disk still has it to give back. */
  if (stat(j->reserve_path, &st) == 0 && S_ISREG(st.st_mode)) {
    j->reserve_held = 1;
    if ((uint64_t)st.st_size < j->reserve_bytes && disk_free_bytes(j->path, &disk_free) == 0 &&
        disk_free >= 2u * (j->reserve_bytes - (uint64_t)st.st_size)) {
      fd = open(j->reserve_path, O_WRONLY | O_CLOEXEC);
      if (fd >= 0) {
        if (posix_fallocate(fd, 0, (off_t)j->reserve_bytes) == 0)
          (void)fsync(fd);
        close(fd);
      }
    }
    return 0;
  }
  if (disk_free_bytes(j->path, &disk_free) == 0 &&
      disk_free < 2u * j->reserve_bytes)
    return -ENOSPC;
  fd = open(j->reserve_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0)
    return -errno;
  rc = posix_fallocate(fd, 0, (off_t)j->reserve_bytes);
  if (rc == 0 && fsync(fd) != 0)
    rc = errno;
  close(fd);
  if (rc) {
    unlink(j->reserve_path);
    return -rc;
  }
  j->reserve_held = 1;
  return 0;
}

int journal__reserve_release(journal *j)
{
  if (!j->reserve_held)
    return 0;
  if (unlink(j->reserve_path) != 0 && errno != ENOENT)
    return -errno;
  j->reserve_held = 0;
  /* The room given back is the uplink's: sales taken into it (a POS still
   * posting while a seal found the disk full first) would fill it before
   * the backlog is out, and leave a WAL that no checkpoint can copy into
   * the database file for good. Sales wait until journal__has_room, which
   * makes the reserve again first. */
  journal__latch_full(j);
  log_warn("journal", "disk_reserve_used",
           "path=%s bytes=%llu reason=\"the disk is full: the journal's reserve is given back so "
           "that the backlog can be sealed and acknowledged (which frees room); new sales wait "
           "until it is made again\"",
           j->reserve_path, (unsigned long long)j->reserve_bytes);
  return 1;
}

void journal__latch_full(journal *j)
{
  j->full_checked_ms = clock_mono_ms();
  pthread_mutex_lock(&j->lock);
  j->full = 1;
  j->stats.full = 1;
  pthread_mutex_unlock(&j->lock);
}

int journal__make_room(journal *j)
{
  uint64_t before = 0, after = 0;
  int log_frames = -1, done = -1, released, rc;
  char wal[PATH_MAX];
  struct stat st;
  off_t wal_bytes = -1;

  released = journal__reserve_release(j) > 0;
  disk_free_bytes(j->path, &before);
  /* RESTART: every frame copied into the database file and the next
   * transaction writes the WAL from its start, into space it already has. */
  rc = sqlite3_wal_checkpoint_v2(j->db, NULL, SQLITE_CHECKPOINT_RESTART, &log_frames, &done);
  disk_free_bytes(j->path, &after);
  snprintf(wal, sizeof(wal), "%s-wal", j->path);
  if (stat(wal, &st) == 0)
    wal_bytes = st.st_size;
  log_warn("journal", "full_checkpoint",
           "path=%s reserve_released=%d checkpoint=\"%s\" wal_frames=%d copied=%d "
           "wal_bytes=%lld disk_free_before=%llu disk_free_after=%llu",
           j->path, released, sqlite3_errstr(rc), log_frames, done, (long long)wal_bytes,
           (unsigned long long)before, (unsigned long long)after);
  return released || (rc == SQLITE_OK && done > 0);
}

int journal__has_room(journal *j)
{
  uint64_t disk_free = 0, resume;
  int64_t free_pages = journal_pragma_int(j->db, "PRAGMA freelist_count");

  if (free_pages < 0)
    return 0;
  /* Pages freed inside the database (acknowledged sales pruned) are room
   * as good as free disk: the file never shrinks, new rows reuse them. */
  /* And the disk must have room to make the reserve again (twice its
   * size, journal__reserve_ensure), or the next full disk would find none
   * to give back: giving back a 2 MiB reserve alone frees more than 1 MiB. */
  resume = JOURNAL_FULL_RESUME_DISK_BYTES;
  if (j->room_bytes > 0 && j->room_bytes / 4 < resume)
    resume = j->room_bytes / 4;
  if (!j->reserve_held && 2u * j->reserve_bytes > resume)
    resume = 2u * j->reserve_bytes;
  if (disk_free_bytes(j->path, &disk_free) == 0 && disk_free < resume &&
      (uint64_t)(free_pages * j->page_size) < JOURNAL_FULL_RESUME_FREE_BYTES)
    return 0;
  journal__reserve_ensure(j);
  if (j->sale_max_pages > 0) {
    int64_t pages = journal_pragma_int(j->db, "PRAGMA page_count");
    int64_t wanted = j->sale_max_pages / 64 > 2 ? j->sale_max_pages / 64 : 2;
    if (pages < 0 || j->sale_max_pages - pages + free_pages < wanted)
      return 0;
  }
  return 1;
}

void journal__full_recheck(journal *j)
{
  if (!j->full)
    return;
  j->full_checked_ms = clock_mono_ms();
  /* Acknowledged sales are what a full journal can give up (they are in
   * Kafka); without them new sales would wait for retention, for days. */
  if (!journal__has_room(j))
    journal__prune_acked(j, "sales are refused");
  if (!journal__has_room(j))
    return;
  j->full = 0;
  pthread_mutex_lock(&j->lock);
  j->stats.full = 0;
  pthread_mutex_unlock(&j->lock);
  log_info("journal", "room_again", "path=%s", j->path);
}

/* Fails every write of `group` with `error` and `message`, and says so on
 * the status page. The group's transaction is already rolled back. */
static void journal_fail_group(journal *j, struct journal_write *group, int error,
                               const char *message, int sqlite_rc)
{
  for (struct journal_write *w = group; w; w = w->next) {
    w->error = error;
    snprintf(w->message, sizeof(w->message), "%s", message);
  }
  log_error("journal", "write_failed", "path=%s error=%s sqlite=%d", j->path,
            journal_strerror(error), sqlite_rc);
  journal__count_refusal(j, error);
  pthread_mutex_lock(&j->lock);
  j->stats.write_failing = 1;
  snprintf(j->stats.last_error, sizeof(j->stats.last_error), "%s", message);
  pthread_mutex_unlock(&j->lock);
}

/* The seqs `group` may take: above *base (the last one handed out, or a
 * pending skip's target), at most *needed of them. */
static void journal_group_seqs(const journal *j, const struct journal_write *group,
                               int64_t *base, int64_t *needed)
{
  *base = j->stats.last_seq > j->skip_to ? j->stats.last_seq : j->skip_to;
  *needed = 0;
  for (const struct journal_write *w = group; w; w = w->next)
    *needed += (int64_t)w->count;
}

/*
 * Makes sure every seq this group may take is below the reserve recorded
 * durably in the high-water mark, reserving the next JOURNAL_SEQ_RANGE
 * (one fsync) when not. 0, or -errno: then no seq may be handed out.
 */
static int journal_reserve_seqs(journal *j, const struct journal_write *group)
{
  int64_t base, needed;

  journal_group_seqs(j, group, &base, &needed);
  if (base + needed <= j->hwm.reserved)
    return 0;
  j->hwm.reserved = base + needed + JOURNAL_SEQ_RANGE;
  return journal__hwm_write(j, 1);
}

int64_t journal__take_seq(journal *j) { return j->seq_next++; }

/*
 * Inside the group's transaction, before its rows: the group's seqs start
 * above the last one handed out, and the counter covers all of them. When
 * it does not, it moves to the high-water mark's reserve (which
 * journal_reserve_seqs made cover the group), and meta seq_reserved says
 * so: from there on, JOURNAL_SQL_COUNTS does not take it for the last seq.
 */
static int journal_cover_seqs(journal *j, const struct journal_write *group)
{
  int64_t base, needed, reserve;
  int rc;

  journal_group_seqs(j, group, &base, &needed);
  j->seq_next = base + 1;
  j->seq_bound_pending = j->seq_bound;
  if (base + needed <= j->seq_bound)
    return SQLITE_OK;
  reserve = j->hwm.reserved > base + needed ? j->hwm.reserved : base + needed;
  sqlite3_bind_int64(j->bump_seq, 1, reserve);
  rc = journal__step_done(j, j->bump_seq);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(j->start_seq, 1, reserve);
    rc = journal__step_done(j, j->start_seq);
  }
  if (rc == SQLITE_OK)
    rc = journal__set_meta_int(j, "seq_reserved", reserve);
  if (rc == SQLITE_OK)
    j->seq_bound_pending = reserve;
  return rc;
}

/* Inside the group's transaction: the seqs reserved before an unclean stop
 * are skipped for good. The group's seqs start above j->skip_to and
 * journal_cover_seqs moves the counter past them; meta seq_floor keeps the
 * skip even if no row of the group is stored. */
static int journal_apply_skip(journal *j)
{
  return journal__set_meta_int(j, "seq_floor", j->skip_to);
}

/* The group's transaction: SQLITE_OK once committed, else the error, with
 * the transaction rolled back. */
static int journal_try_group(journal *j, struct journal_write *group, int64_t received_ms,
                             int skipping)
{
  int rc = journal__set_page_limit(j, j->sale_max_pages);
  if (rc == SQLITE_OK)
    rc = journal__step_done(j, j->begin);
  if (rc == SQLITE_OK && skipping)
    rc = journal_apply_skip(j);
  if (rc == SQLITE_OK)
    rc = journal_cover_seqs(j, group);
  for (struct journal_write *w = group; rc == SQLITE_OK && w; w = w->next)
    rc = journal_apply_write(j, w, received_ms, j->full);
  /* Rows read off a clock not trusted are recorded with them, or not at all. */
  if (rc == SQLITE_OK)
    rc = journal__clock_stamp(j, group, received_ms);
  if (rc == SQLITE_OK)
    rc = journal__step_done(j, j->commit);
  /* After SQLITE_FULL or an I/O error SQLite may already have rolled back;
   * roll back only if a transaction is still open. */
  if (rc != SQLITE_OK && !sqlite3_get_autocommit(j->db))
    journal__step_done(j, j->rollback);
  journal__clock_settle(j, rc == SQLITE_OK, received_ms);
  /* On-hand follows the transaction: kept if it committed, else taken back. */
  if (rc == SQLITE_OK) {
    journal__staged_commit(j);
    j->names_committed = j->names.count;
    j->seq_bound = j->seq_bound_pending;
  } else {
    journal__unstage(j, 0);
    stock_names_truncate(&j->names, j->names_committed);
  }
  return rc;
}

/* Commits a group of writes in one transaction: one fsync for all of them. */
static void journal_commit_group(journal *j, struct journal_write *group)
{
  int64_t received_ms;
  uint64_t stored = 0, adjusted = 0, writes = 0;
  int64_t last_seq = 0, oldest_time = 0;
  int skipping = j->skip_to > 0;
  double started, committed_at;
  int rc;

  if (j->full && clock_mono_ms() >= j->full_checked_ms + JOURNAL_FULL_CHECK_MS)
    journal__full_recheck(j);
  /* The clock judged (and a repair done, if it was just set) before the
   * group is stamped with it, or with the collector's time if it is wrong. */
  received_ms = journal__clock_before_group(j, clock_wall_ms());
  rc = journal_reserve_seqs(j, group);
  if (rc) {
    char message[256];
    snprintf(message, sizeof(message),
             "journal disk I/O error: the seq high-water mark %s cannot be written (%s); no "
             "sale is taken until it can",
             j->hwm.path, strerror(-rc));
    journal_fail_group(j, group, JOURNAL_EIO, message, SQLITE_IOERR);
    return;
  }
  started = journal__seconds();
  rc = journal_try_group(j, group, received_ms, skipping);
  if ((rc & 0xff) == SQLITE_FULL && !j->full &&
      journal__prune_acked(j, "new sales did not fit") > 0) {
    /* Acknowledged history made room: the same group once more, rather
     * than a 503 until the latch's next look. */
    for (struct journal_write *w = group; w; w = w->next) {
      w->error = JOURNAL_OK;
      w->message[0] = '\0';
    }
    rc = journal_try_group(j, group, received_ms, skipping);
  }
  if (rc != SQLITE_OK) {
    int error = journal__map_sqlite(rc);
    char message[256];
    if (error == JOURNAL_EFULL)
      journal__latch_full(j);
    if (error == JOURNAL_EFULL)
      snprintf(message, sizeof(message),
               "the journal cannot grow: %s is full or at journal.max_size; sales already "
               "journaled are safe; free space on the device, then resend",
               j->path);
    else
      snprintf(message, sizeof(message),
               "%s on %s: %s; nothing of this request was journaled, resend it",
               journal_strerror(error), j->path, sqlite3_errstr(rc));
    journal_fail_group(j, group, error, message, rc);
    return;
  }
  committed_at = journal__seconds();
  metrics_observe(j->metrics.commit_seconds, committed_at - started);
  if (skipping) {
    last_seq = j->skip_to;
    j->skip_to = 0;
  }

  for (struct journal_write *w = group; w; w = w->next) {
    if (w->error) {
      /* Refused inside a committed group (a full journal takes only retries). */
      journal__count_refusal(j, w->error);
      continue;
    }
    writes += w->count;
    for (size_t i = 0; i < w->count; i++) {
      if (w->results[i].outcome != JOURNAL_STORED)
        continue;
      stored += w->adjustments == NULL; /* the counters are of sales */
      adjusted += w->adjustments != NULL;
      if (w->sales && (oldest_time == 0 || w->sales[i].business_time_ms < oldest_time))
        oldest_time = w->sales[i].business_time_ms;
      if (w->results[i].seq > last_seq)
        last_seq = w->results[i].seq;
    }
  }
  metrics_observe(j->metrics.commit_writes, (double)writes);
  metrics_add(j->metrics.sales, (double)stored);
  metrics_add(j->metrics.adjustments, (double)adjusted);
  {
    int64_t pages = -1;
    /* For the status page and metrics only, so at most once a second: a
     * PRAGMA statement is prepared again on every step (SQLite expires it
     * after one run), which cost more than the rest of the stats. */
    if (j->page_count_read_at == 0 || committed_at - j->page_count_read_at >= 1.0) {
      j->page_count_read_at = committed_at;
      if (sqlite3_step(j->page_count) == SQLITE_ROW)
        pages = sqlite3_column_int64(j->page_count, 0);
      sqlite3_reset(j->page_count);
    }
    pthread_mutex_lock(&j->lock);
    j->stats.sales_journaled += stored;
    j->stats.sales_unsent += stored;
    if (stored && j->stats.oldest_unsent_ms == 0)
      j->stats.oldest_unsent_ms = received_ms;
    if (oldest_time && (j->stats.oldest_sale_business_ms == 0 ||
                        oldest_time < j->stats.oldest_sale_business_ms))
      j->stats.oldest_sale_business_ms = oldest_time;
    if (last_seq > j->stats.last_seq)
      j->stats.last_seq = last_seq;
    if (stored)
      j->stats.last_received_ms = received_ms;
    last_seq = j->stats.last_seq;
    if (pages >= 0)
      j->stats.database_bytes = (uint64_t)(pages * j->page_size);
    j->stats.commits++;
    j->stats.full = j->full;
    if (j->full) {
      /* Still full: only retries were answered. */
      j->stats.write_failing = 1;
      snprintf(j->stats.last_error, sizeof(j->stats.last_error),
               "the journal is full: %s is out of space or at journal.max_size; free space on "
               "the device",
               j->path);
    } else {
      j->stats.write_failing = 0;
      j->stats.last_error[0] = '\0';
    }
    pthread_mutex_unlock(&j->lock);
  }
  /* Before the POS hears of these seqs: if the WAL later loses them, the
   * next open sees that it did. No fsync: this only has to outlive the
   * process (kill -9); the WAL itself is what outlives a power cut. */
  if (last_seq > j->hwm.committed) {
    j->hwm.committed = last_seq;
    journal__hwm_write(j, 0);
  }
}

/* Waits on `wake` until `deadline_ms` (monotonic) at the latest. */
static void journal_wait_until(journal *j, uint64_t deadline_ms)
{
  struct timespec until;
  until.tv_sec = (time_t)(deadline_ms / 1000);
  until.tv_nsec = (long)(deadline_ms % 1000) * 1000000L;
  pthread_cond_timedwait(&j->wake, &j->lock, &until);
}

/* One retention pass on the writer thread (lock not held). Returns 1 when
 * more is due at once. */
static int journal_retention_pass(journal *j)
{
  uint64_t sales_deleted = 0, batches_deleted = 0;
  char message[256];
  int rc;

  /* Retention counts on the best time known (journal__clock_now): a wrong
   * device clock with the collector's time known uses that; one without it
   * is behind (before the build, set back) and deletes less. It never
   * waits for the clock: a store whose clock stays off would keep its
   * history for ever and fill the disk. */
  rc = journal__retention_chunk(j, journal__clock_now(j), j->retention_ms, &sales_deleted,
                                &batches_deleted, message, sizeof(message));
  if (rc < 0) {
    char quoted[300];
    log_error("journal", "retention_failed", "path=%s reason=%s", j->path,
              log_quote(message, quoted, sizeof(quoted)));
    return 0;
  }
  if (batches_deleted)
    log_info("journal", "retention", "path=%s batches_deleted=%llu sales_deleted=%llu", j->path,
             (unsigned long long)batches_deleted, (unsigned long long)sales_deleted);
  return rc;
}

/* Starts a new window of the cohort's count once the current one is over:
 * what the last two windows saw is who may still be active. */
static void journal_cohort_rotate(struct journal_cohort *c, uint64_t now_ms)
{
  uint64_t age = now_ms - c->window_start_ms;

  if (age < JOURNAL_COHORT_WINDOW_MS)
    return;
  /* A window that ended long ago (the writer was idle) says nothing of now. */
  c->previous_max = age < 2 * JOURNAL_COHORT_WINDOW_MS ? c->window_max : 0;
  c->window_max = 0;
  c->window_start_ms = now_ms;
}

/* After a group commit of `writes` writes that took `seconds`, with
 * `queued` writes queued meanwhile: these clients are active, and each of
 * them comes back once answered. Writer thread. */
static void journal_cohort_seen(journal *j, size_t writes, size_t queued, double seconds)
{
  struct journal_cohort *c = &j->cohort;
  double us = seconds * 1e6;

  journal_cohort_rotate(c, clock_mono_ms());
  if (writes + queued > c->window_max)
    c->window_max = writes + queued;
  c->commit_ema_us = c->commit_ema_us > 0 ? 0.8 * c->commit_ema_us + 0.2 * us : us;
}

/* How many writes were active lately: the most seen in the last one to two
 * windows. With j->lock held. */
static size_t journal_cohort_expected(journal *j)
{
  struct journal_cohort *c = &j->cohort;

  journal_cohort_rotate(c, clock_mono_ms());
  return c->window_max > c->previous_max ? c->window_max : c->previous_max;
}

/*
 * With j->lock held and a write queued: holds the commit until as many
 * writes are queued as were active lately, for at most JOURNAL_HOLD_SHARE
 * of a commit's time (JOURNAL_HOLD_MAX_US at most), so that the clients the
 * last commit answered share this commit's fsync instead of paying one of
 * their own right after it. Returns at once for a lone client, with
 * group_commit_max = 1, on a disk whose commits are fast, and when the
 * journal is stopping. The durability of what is held is not touched: its
 * answers still wait for its commit. Writer thread.
 */
static void journal_hold_for_cohort(journal *j)
{
  struct journal_cohort *c = &j->cohort;
  struct timespec until;
  size_t expected;
  double hold_us, started;
  long nsec;

  expected = journal_cohort_expected(j);
  if (expected > j->group_commit_max)
    expected = j->group_commit_max; /* at least one sale a write */
  /* Nothing to wait for: one client, all here, or a commit's worth queued. */
  if (expected <= 1 || j->queued_writes >= expected || j->queued_sales >= j->group_commit_max ||
      j->stopping || c->commit_ema_us < JOURNAL_HOLD_MIN_COMMIT_US)
    return;
  hold_us = c->commit_ema_us * JOURNAL_HOLD_SHARE;
  if (hold_us > JOURNAL_HOLD_MAX_US)
    hold_us = JOURNAL_HOLD_MAX_US;
  clock_gettime(CLOCK_MONOTONIC, &until); /* `wake` runs on CLOCK_MONOTONIC */
  nsec = until.tv_nsec + (long)(hold_us * 1000.0);
  until.tv_sec += nsec / 1000000000L;
  until.tv_nsec = nsec % 1000000000L;
  started = journal__seconds();
  /* Each journal_submit signals `wake`; ops and retention wait their turn. */
  while (j->queued_writes < expected && j->queued_sales < j->group_commit_max && !j->stopping)
    if (pthread_cond_timedwait(&j->wake, &j->lock, &until) == ETIMEDOUT)
      break;
  metrics_observe(j->metrics.hold_seconds, journal__seconds() - started);
}

static void *journal_writer_main(void *arg)
{
  journal *j = arg;

  pthread_mutex_lock(&j->lock);
  for (;;) {
    struct journal_write *group = NULL, *last = NULL;
    struct journal_op *op = NULL;
    int retention_due, clock_due, stopping;
    size_t taken = 0;

    for (;;) {
      uint64_t now, deadline = 0;
      if (j->inline_active) {
        /* The loop thread commits a lone write (journal_submit): until it
         * is done and signals, the journal's state is its, not ours. */
        j->writer_parked = 1;
        pthread_cond_wait(&j->wake, &j->lock);
        j->writer_parked = 0;
        continue;
      }
      now = clock_mono_ms();
      retention_due = j->retention_ms > 0 && now >= j->retention_due_ms;
      clock_due = journal__clock_due(j, now, &deadline);
      if (j->queue_head || j->op_head || j->stopping || retention_due || clock_due)
        break;
      if (j->retention_ms > 0 && (deadline == 0 || j->retention_due_ms < deadline))
        deadline = j->retention_due_ms;
      /* Idle: a lone write may be committed by the loop meanwhile. */
      j->writer_waiting = 1;
      if (deadline)
        journal_wait_until(j, deadline);
      else
        pthread_cond_wait(&j->wake, &j->lock);
      j->writer_waiting = 0;
    }
    if (!j->queue_head && !j->op_head && j->stopping)
      break; /* stopping, and everything queued has been done */

    /* Take every write queued now, up to group_commit_max sales (but at
     * least one write, however large), into one transaction; first, on a
     * slow disk, let the clients known to be coming back join it. */
    if (j->queue_head) {
      size_t sales;
      journal_hold_for_cohort(j);
      group = last = j->queue_head;
      sales = group->count;
      taken = 1;
      while (last->next && sales + last->next->count <= j->group_commit_max) {
        last = last->next;
        sales += last->count;
        taken++;
      }
      j->queued_writes -= taken;
      j->queued_sales -= sales;
      j->queue_head = last->next;
      if (!j->queue_head)
        j->queue_tail = NULL;
      last->next = NULL;
    }
    /* Then at most one operation, so sales never queue behind a run of
     * them: a seal reads and packs up to a batch of sales, which is the
     * longest a sale waits for the uplink. */
    if (j->op_head) {
      op = j->op_head;
      j->op_head = op->next;
      if (!j->op_head)
        j->op_tail = NULL;
      op->next = NULL;
    }
    stopping = j->stopping;
    pthread_mutex_unlock(&j->lock);

    if (group) {
      double started = journal__seconds();
      journal_commit_group(j, group);
      /* Hand the answers back before the operation runs: a sale's 201
       * does not wait for a seal. */
      pthread_mutex_lock(&j->lock);
      journal_cohort_seen(j, taken, j->queued_writes, journal__seconds() - started);
      if (j->done_tail)
        j->done_tail->next = group;
      else
        j->done_head = group;
      j->done_tail = last;
      pthread_mutex_unlock(&j->lock);
      uv_async_send(&j->done_async);
    }
    if (op) {
      journal__run_op(j, op);
      pthread_mutex_lock(&j->lock);
      if (j->op_done_tail)
        j->op_done_tail->next = op;
      else
        j->op_done_head = op;
      j->op_done_tail = op;
      pthread_mutex_unlock(&j->lock);
      uv_async_send(&j->done_async);
    }
    /* After the answers: the kept stock figures, every so many rows. */
    if (group || op)
      journal__stock_keep_due(j, 0);
    if (clock_due && !stopping)
      journal__clock_tick(j);
    if (!group && !op && retention_due && !stopping) {
      /* Idle and due: one chunk; when more is left, come back after
       * whatever was queued meanwhile. */
      if (!journal_retention_pass(j))
        j->retention_due_ms = clock_mono_ms() + JOURNAL_RETENTION_EVERY_MS;
    }
    pthread_mutex_lock(&j->lock);
  }
  pthread_mutex_unlock(&j->lock);
  /* A clean stop: the next open reads the stock figures, no row. */
  journal__stock_keep_due(j, 1);
  return NULL;
}

/* ---- the loop side ---------------------------------------------------- */

static void journal_deliver(journal *j)
{
  struct journal_write *finished;
  struct journal_op *finished_ops;

  pthread_mutex_lock(&j->lock);
  finished = j->done_head;
  j->done_head = j->done_tail = NULL;
  finished_ops = j->op_done_head;
  j->op_done_head = j->op_done_tail = NULL;
  pthread_mutex_unlock(&j->lock);
  while (finished) {
    struct journal_write *next = finished->next;
    finished->next = NULL;
    j->in_flight--;
    finished->done(finished);
    finished = next;
  }
  while (finished_ops) {
    struct journal_op *next = finished_ops->next;
    finished_ops->next = NULL;
    finished_ops->done(finished_ops);
    finished_ops = next;
  }
}

static void journal_on_done(uv_async_t *handle)
{
  journal *j = handle->data;
  journal_deliver(j);
}

/* Finalizes the statements and closes the connection; j->db = NULL. */
void journal__close_db(journal *j)
{
  sqlite3_stmt **statements[] = {
      &j->insert_sale,   &j->find_sale,        &j->begin,          &j->commit,
      &j->rollback,      &j->savepoint,        &j->release,        &j->rollback_to,
      &j->page_count,    &j->set_meta,         &j->oldest_unsent,  &j->unsealed,
      &j->has_unsealed,  &j->insert_batch,     &j->count_from_seq, &j->get_batch,
      &j->attempt_batch, &j->ack_batches,      &j->sales_in_batches, &j->acked_above,
      &j->delete_unacked_from, &j->expired_batches,
      &j->delete_batch_sales, &j->delete_batch, &j->insert_adjustment, &j->find_adjustment,
      &j->bump_seq, &j->start_seq, &j->row_deltas, &j->base_add,
      &j->delete_batch_adjustments, &j->original_time, &j->insert_name, &j->put_progress,
      &j->delete_progress};
  for (size_t i = 0; i < sizeof(statements) / sizeof(statements[0]); i++) {
    sqlite3_finalize(*statements[i]);
    *statements[i] = NULL;
  }
  if (j->db && sqlite3_close(j->db) != SQLITE_OK)
    log_error("journal", "close_failed", "path=%s sqlite=%s", j->path, sqlite3_errmsg(j->db));
  j->db = NULL;
}

static void journal_free(journal *j)
{
  journal__close_db(j);
  journal__unstage(j, 0);
  free(j->staged);
  stock_deltas_clear(&j->stock_moving);
  stock_deltas_clear(&j->unmapped_pending);
  stock_destroy(&j->stock);
  stock_names_clear(&j->names);
  recipes_free(j->recipes_owned);
  journal__hwm_close(j);
  free(j->lines_text.data);
  free(j->items_buf);
  free(j->payments_text.data);
  free(j->deltas_buf);
  journal__clock_free(j);
  free(j->reserve_path);
  free(j->commands);
  pthread_mutex_destroy(&j->lock);
  pthread_cond_destroy(&j->wake);
  free(j->path);
  free(j);
}

static void journal_on_async_closed(uv_handle_t *handle) { journal_free(handle->data); }

/* Makes the journal's directory, so a fresh device needs no set-up step. */
static int journal_make_dir(const char *path, char *err, size_t err_size)
{
  char dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  int rc;

  if (!slash || slash == path)
    return 0;
  if ((size_t)(slash - path) >= sizeof(dir)) {
    snprintf(err, err_size, "journal path %s is too long", path);
    return -1;
  }
  memcpy(dir, path, (size_t)(slash - path));
  dir[slash - path] = '\0';
  rc = disk_mkdirs(dir, 0750);
  if (rc) {
    snprintf(err, err_size, "journal directory %s cannot be created: %s", dir, strerror(-rc));
    return -1;
  }
  return 0;
}

/* Opens j->path and brings it to a usable state: pragmas, size limit,
 * migrations, counters. Returns 0; JOURNAL_ECORRUPT when SQLite finds the
 * file damaged or not a database; or another journal_error. `err` says
 * what failed in every case. */
int journal__open_db(journal *j, const struct journal_options *options, char *err,
                           size_t err_size)
{
  int rc = journal__vfs_register();

  if (rc != SQLITE_OK) {
    snprintf(err, err_size, "journal %s cannot be opened: SQLite refused the journal's file "
             "layer (%s)", j->path, sqlite3_errstr(rc));
    goto fail;
  }
  rc = sqlite3_open_v2(j->path, &j->db,
                       SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                       JOURNAL_VFS_NAME);
  if (rc != SQLITE_OK) {
    snprintf(err, err_size, "journal %s cannot be opened: %s (check the directory exists and "
             "the agent's user may write it)", j->path,
             j->db ? sqlite3_errmsg(j->db) : sqlite3_errstr(rc));
    goto fail;
  }
  sqlite3_extended_result_codes(j->db, 1);
  sqlite3_busy_timeout(j->db, (int)options->busy_timeout_ms);

  /* A sale row is a few hundred bytes and a store commits them one or a few
   * at a time, so every commit writes whole pages to the WAL: a commit of
   * one sale writes its table leaf, its sale_id index leaf and, as the file
   * grows, page 1 and an interior page. Measured at one sale per commit
   * (3,000 sales, checkpoints included, /proc/PID/io write_bytes): 4,747 B
   * per sale with 1 KiB pages, 3,879 B with 512-byte ones; the default 4 KiB
   * pages wrote about four times the 1 KiB figure. The cost: a row of
   * 300-400 B fills a 512-byte page alone, so the file is up to 1.4 times
   * larger (issue 12, item 3). Only takes effect when the database is
   * created: journals made before keep their 1 KiB pages. */
  if (journal__exec(j->db, "PRAGMA page_size=512", err, err_size, j->path))
    goto fail;
  /* WAL keeps readers (the uplink, the sqlite3 CLI) off the writer's back;
   * synchronous=FULL fsyncs the WAL at every commit, which is what makes a
   * 201 mean "on flash". */
  if (journal_pragma_expect(j->db, "PRAGMA journal_mode=WAL", "wal", err, err_size, j->path))
    goto fail;
  /* The WAL keeps its size when the last connection closes (SQLite
   * deletes it otherwise): see journal_wal_rewind. */
  {
    int persist = 1;
    sqlite3_file_control(j->db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
  }
  if (journal__exec(j->db, "PRAGMA synchronous=FULL", err, err_size, j->path) ||
      journal_pragma_expect(j->db, "PRAGMA synchronous", "2", err, err_size, j->path))
    goto fail;
  if (journal__exec(j->db, "PRAGMA foreign_keys=ON", err, err_size, j->path))
    goto fail;
  j->page_size = journal_pragma_int(j->db, "PRAGMA page_size");
  if (j->page_size <= 0) {
    snprintf(err, err_size, "journal %s is not a database (%s)", j->path, sqlite3_errmsg(j->db));
    goto fail;
  }
  if (journal_wal_configure(j, options, err, err_size))
    goto fail;
  if (options->max_bytes > 0) {
    /* Sales may fill the journal up to max_size less a reserve that only
     * the uplink's work (sealing, acknowledging) may use: a journal filled
     * by days offline can still seal and send what it holds. Migrations may
     * use the reserve too, so an upgrade never fails on a full journal. */
    int64_t reserve;
    j->max_pages = options->max_bytes / j->page_size;
    if (j->max_pages < 1)
      j->max_pages = 1;
    reserve = j->max_pages / 16 > 4 ? j->max_pages / 16 : 4;
    j->sale_max_pages = j->max_pages > 2 * reserve ? j->max_pages - reserve : j->max_pages;
    /* Of that reserve, sealing may use half: the rest is for recording
     * acknowledgements, which is what frees room, so it must always fit. */
    j->seal_max_pages = j->max_pages - (j->max_pages - j->sale_max_pages) / 2;
    j->page_limit_now = 0;
    if (journal__set_page_limit(j, j->max_pages) != SQLITE_OK) {
      snprintf(err, err_size, "journal %s: cannot set its size limit: %s", j->path,
               sqlite3_errmsg(j->db));
      goto fail;
    }
  }
  rc = journal_migrate(j, err, err_size);
  if (rc)
    goto fail;
  j->compact_rows = 0;
  j->slim_rows = 0;
  if (options->compact_rows || options->slim_rows) {
    rc = journal_use_rows(j, options->slim_rows, err, err_size);
    if (rc)
      goto fail;
  }
  if (j->sale_max_pages > 0 && !journal__has_room(j)) {
    /* Opened full (a restart does not make room): refuse new sales from the
     * first one, as before the restart. */
    j->full = 1;
    j->full_checked_ms = clock_mono_ms();
    j->stats.full = 1;
    j->stats.write_failing = 1;
    snprintf(j->stats.last_error, sizeof(j->stats.last_error),
             "the journal is full: %s is at journal.max_size; raise it or free space", j->path);
    log_warn("journal", "full", "path=%s reason=\"opened at journal.max_size\"", j->path);
  }
  if (journal_prepare(j, err, err_size) || journal__load_stats(j, err, err_size))
    goto fail;
  rc = journal__stock_rebuild(j);
  if (rc == SQLITE_CORRUPT && (sqlite3_errcode(j->db) & 0xff) != SQLITE_CORRUPT) {
    /* The database reads, but its stock does not add up (a material
     * number missing, a row's deltas that do not decode): never a reason
     * to refuse sales. They are taken without deltas; stock stops. */
    j->stock_broken = 1;
    snprintf(j->stats.stock_error, sizeof(j->stats.stock_error),
             "the stored stock does not read back (%s): sales are taken but stock is not "
             "counted and adjustments are refused; head office must look at %s",
             sqlite3_errstr(rc), j->path);
    log_error("journal", "stock_unreadable", "path=%s reason=\"%s\" action=\"sales are taken "
              "without stock; a person must look at the journal\"", j->path, sqlite3_errstr(rc));
    rc = SQLITE_OK;
  }
  if (rc != SQLITE_OK) {
    snprintf(err, err_size, "journal %s: cannot read its stock (on-hand): %s", j->path,
             sqlite3_errstr(rc));
    goto fail;
  }
  return 0;
fail:
  if (j->db) {
    int code = sqlite3_errcode(j->db) & 0xff;
    if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB)
      return JOURNAL_ECORRUPT;
  }
  return rc == SQLITE_OK || rc > 0 ? JOURNAL_EIO : rc;
}

journal *journal_open(uv_loop_t *loop, const struct journal_options *options, char *err,
                      size_t err_size)
{
  int error;
  return journal_open_coded(loop, options, &error, err, err_size);
}

journal *journal_open_coded(uv_loop_t *loop, const struct journal_options *options, int *error,
                            char *err, size_t err_size)
{
  journal *j = NULL;
  int rc;

  err[0] = '\0';
  *error = JOURNAL_ENOMEM;
  if (!sqlite3_threadsafe()) {
    snprintf(err, err_size, "the SQLite library was built without thread support");
    return NULL;
  }
  if (journal_make_dir(options->path, err, err_size))
    return NULL;
  j = calloc(1, sizeof(*j));
  if (!j || !(j->path = strdup(options->path))) {
    snprintf(err, err_size, "journal %s: out of memory", options->path);
    free(j);
    return NULL;
  }
  j->hwm.fd = -1;
  j->hwm.runtime_fd = -1;
  journal__metrics_init(&j->metrics);
  {
    size_t len = strlen(options->path) + sizeof("-reserve");
    j->reserve_path = malloc(len);
    if (!j->reserve_path) {
      snprintf(err, err_size, "journal %s: out of memory", options->path);
      free(j->path);
      free(j);
      return NULL;
    }
    snprintf(j->reserve_path, len, "%s-reserve", options->path);
  }
  j->explode = options->explode;
  j->recipes = options->recipes;
  j->refunds_restock = options->refunds_restock;
  if (stock_init(&j->stock)) {
    snprintf(err, err_size, "journal %s: out of memory", options->path);
    free(j->reserve_path);
    free(j->path);
    free(j);
    return NULL;
  }
  j->group_commit_max = options->group_commit_max ? options->group_commit_max : 1;
  j->retention_ms = options->retention_ms > 0 ? options->retention_ms : 0;
  j->busy_timeout_ms = options->busy_timeout_ms;
  j->max_bytes = options->max_bytes;
  j->retention_due_ms = clock_mono_ms() + JOURNAL_RETENTION_FIRST_MS;
  pthread_mutex_init(&j->lock, NULL);
  {
    /* The retention wait is on the monotonic clock: an NTP step must not
     * make it fire early or never. */
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&j->wake, &attr);
    pthread_condattr_destroy(&attr);
  }

  rc = journal__open_checked(j, options, err, err_size);
  /* What a person must act on (a journal for a newer agent, no room for an
   * upgrade) is told apart from what a restart may mend. */
  *error = rc < 0 ? rc : JOURNAL_EIO;
  if (rc)
    goto fail;
  rc = journal__recipes_open(j, err, err_size);
  *error = JOURNAL_EIO;
  if (rc)
    goto fail;
  rc = journal__reserve_ensure(j);
  if (rc)
    log_warn("journal", "no_disk_reserve", "path=%s error=\"%s\" reason=\"made once the disk "
             "has room\"", j->reserve_path, strerror(-rc));

  if (uv_async_init(loop, &j->done_async, journal_on_done) != 0) {
    snprintf(err, err_size, "journal %s: cannot create its loop handle", j->path);
    goto fail;
  }
  j->done_async.data = j;
  if (pthread_create(&j->writer, NULL, journal_writer_main, j) != 0) {
    snprintf(err, err_size, "journal %s: cannot start its writer thread", j->path);
    uv_close((uv_handle_t *)&j->done_async, journal_on_async_closed);
    return NULL;
  }
  j->writer_started = 1;
  log_info("journal", "opened", "path=%s journal_id=%s sales=%llu last_seq=%lld", j->path,
           j->stats.journal_id, (unsigned long long)j->stats.sales_journaled,
           (long long)j->stats.last_seq);
  if (j->stats.previous_journal_id[0]) {
    char quoted[1200];
    log_warn("journal", "started_after_loss", "previous_journal_id=%s sales_missing=%llu "
             "reason=%s", j->stats.previous_journal_id,
             (unsigned long long)j->stats.sales_missing,
             log_quote(j->stats.reset_reason, quoted, sizeof(quoted)));
  }
  *error = JOURNAL_OK;
  return j;
fail:
  if (!err[0])
    snprintf(err, err_size, "journal %s cannot be opened", j->path);
  journal_free(j);
  return NULL;
}

/* With j->lock held: 1 when a write may be committed on the loop thread
 * now (JOURNAL_INLINE_MAX_COMMIT_US says when and why). Not while the
 * journal is full: its commits may prune acknowledged history and look at
 * the disk first, which is the writer's to wait for. */
static int journal_inline_ok(journal *j)
{
  return j->writer_waiting && !j->inline_active && !j->queue_head && !j->op_head &&
         !j->stopping && !j->full && j->in_flight == 0 && journal_cohort_expected(j) <= 1 &&
         j->cohort.commit_ema_us <= JOURNAL_INLINE_MAX_COMMIT_US;
}

/* Commits `write` alone on the loop thread, as the writer would have (the
 * same journal_commit_group: the same outcome, errors included), then
 * calls its done() at once if the caller allows it (done_in_submit), else
 * hands it to journal_deliver through the uv_async as the writer does.
 * Either way nothing else is owed before it: an inline commit happens only
 * with no write in flight, so every earlier write was delivered.
 * j->inline_active is set (the writer stays off); the lock is not held. */
static void journal_commit_inline(journal *j, struct journal_write *write)
{
  double started = journal__seconds(), took;

  journal_commit_group(j, write);
  took = journal__seconds() - started;
  /* As the writer does after its groups: a store with one terminal commits
   * nearly every sale here, and its next start reads the rows since the
   * kept stock figures (journal__stock_keep_due). */
  journal__stock_keep_due(j, 0);
  pthread_mutex_lock(&j->lock);
  journal_cohort_seen(j, 1, 0, took);
  j->stats.commits_inline++;
  if (!write->done_in_submit) {
    if (j->done_tail)
      j->done_tail->next = write;
    else
      j->done_head = write;
    j->done_tail = write;
  }
  j->inline_active = 0;
  /* Only a writer that woke meanwhile (a deadline) waits for this: an idle
   * one is not woken for nothing. */
  if (j->writer_parked)
    pthread_cond_signal(&j->wake);
  pthread_mutex_unlock(&j->lock);
  if (write->done_in_submit) {
    j->in_flight--;
    write->done(write);
    return;
  }
  /* From the loop thread itself: one eventfd write, no thread woken. */
  uv_async_send(&j->done_async);
}

int journal_submit(journal *j, struct journal_write *write)
{
  assert(write->done && (write->count == 0 || write->results));
  write->error = JOURNAL_OK;
  write->message[0] = '\0';
  write->next = NULL;
  pthread_mutex_lock(&j->lock);
  if (j->stopping) {
    pthread_mutex_unlock(&j->lock);
    return JOURNAL_ECLOSED;
  }
  /* A source's chunk (progress_source: hundreds of sales from a file) is
   * the writer's to commit: on the loop thread it would hold every POS
   * waiting for an answer behind it. */
  if (!write->progress_source && journal_inline_ok(j)) {
    j->inline_active = 1;
    pthread_mutex_unlock(&j->lock);
    j->in_flight++;
    journal_commit_inline(j, write);
    return 0;
  }
  /* Another write in flight: that many clients are active now, whatever
   * the commits see (an inline commit sees only itself), so none of them
   * is committed inline until the cohort's windows forget it. */
  {
    struct journal_cohort *c = &j->cohort;
    journal_cohort_rotate(c, clock_mono_ms());
    if (j->in_flight + 1 > c->window_max)
      c->window_max = j->in_flight + 1;
  }
  j->in_flight++;
  if (j->queue_tail)
    j->queue_tail->next = write;
  else
    j->queue_head = write;
  j->queue_tail = write;
  j->queued_writes++;
  j->queued_sales += write->count;
  pthread_mutex_unlock(&j->lock);
  /* Signalled after the unlock: a writer woken while the lock is still
   * held would block on it at once (two more futex calls and a context
   * switch per sale at one sale per POST). The write is queued under the
   * lock, so a writer about to wait sees it, or is woken; journal_close
   * runs on this thread, so `j` outlives the signal. */
  pthread_cond_signal(&j->wake);
  return 0;
}

int journal_submit_op(journal *j, struct journal_op *op)
{
  assert(op->done);
  if (op->kind < JOURNAL_OP_NEXT_BATCH || op->kind > JOURNAL_OP_REPLAY_ACK ||
      (op->kind == JOURNAL_OP_RECIPES && !op->recipes_update) ||
      (op->kind >= JOURNAL_OP_COMMAND && !op->command) ||
      (op->kind == JOURNAL_OP_REPLAY_BATCH && (!op->pack || op->max_sales == 0)) ||
      (op->kind == JOURNAL_OP_NEXT_BATCH && op->seal_upto_seq > 0 &&
       (!op->pack || op->max_sales == 0)))
    return JOURNAL_EINVAL;
  op->error = JOURNAL_OK;
  op->message[0] = '\0';
  memset(&op->batch, 0, sizeof(op->batch));
  op->sealed = 0;
  op->sales_changed = op->batches_changed = 0;
  op->command_changed = 0;
  op->next = NULL;
  pthread_mutex_lock(&j->lock);
  if (j->stopping) {
    pthread_mutex_unlock(&j->lock);
    return JOURNAL_ECLOSED;
  }
  if (j->op_tail)
    j->op_tail->next = op;
  else
    j->op_head = op;
  j->op_tail = op;
  pthread_cond_signal(&j->wake);
  pthread_mutex_unlock(&j->lock);
  return 0;
}

void journal_op_clear(struct journal_op *op)
{
  if (!op)
    return;
  free(op->batch.body);
  op->batch.body = NULL;
  op->batch.body_len = 0;
}

#ifdef JOURNAL_FAULT_HOOKS
void journal_fault_rollback_to(journal *j, unsigned nth, int sqlite_rc)
{
  pthread_mutex_lock(&j->lock);
  j->fault_rollback_to_nth = nth;
  j->fault_rollback_to_rc = sqlite_rc;
  pthread_mutex_unlock(&j->lock);
}
#endif

void journal_get_stats(journal *j, struct journal_stats *stats)
{
  pthread_mutex_lock(&j->lock);
  *stats = j->stats;
  pthread_mutex_unlock(&j->lock);
}

struct stock *journal_stock(journal *j) { return &j->stock; }

void journal_close(journal *j)
{
  if (!j)
    return;
  pthread_mutex_lock(&j->lock);
  j->stopping = 1;
  pthread_cond_signal(&j->wake);
  pthread_mutex_unlock(&j->lock);
  if (j->writer_started)
    pthread_join(j->writer, NULL);
  /* The writer finished everything queued; hand out what it finished. */
  journal_deliver(j);
  if (j->writer_started) {
    journal_wal_rewind(j);
    /* The last seq in the database itself, once per run: the counter is a
     * reserve (journal_cover_seqs), so without this a newest row deleted by
     * hand would give its seq again. Written at every clean stop, even of
     * an empty journal: its transaction is the one that starts the WAL's
     * log again from the file's start (journal_wal_rewind). */
    int rc = journal__set_meta_int(j, "seq_floor", j->stats.last_seq);
    if (rc != SQLITE_OK)
      log_warn("journal", "seq_floor_not_written",
               "path=%s last_seq=%lld sqlite=%d reason=\"the next start takes the last seq "
               "from the rows and the high-water mark\"",
               j->path, (long long)j->stats.last_seq, rc);
  }
  if (j->writer_started && j->hwm.fd >= 0) {
    /* A clean stop: every seq up to last_seq is committed and none above it
     * was handed out, so the next start need skip nothing. Unless a skip
     * after an unclean stop is still pending (no sale since): then
     * stats.last_seq is the skip's target, which the database does not
     * hold yet, and the mark must not claim it was committed (the next
     * start would take the gap for lost sales); the skip stays reserved. */
    if (!j->skip_to)
      j->hwm.committed = j->stats.last_seq;
    j->hwm.reserved = j->stats.last_seq > j->skip_to ? j->stats.last_seq : j->skip_to;
    journal__hwm_write(j, 1);
  }
  log_info("journal", "closed", "path=%s last_seq=%lld", j->path, (long long)j->stats.last_seq);
  uv_close((uv_handle_t *)&j->done_async, journal_on_async_closed);
}
