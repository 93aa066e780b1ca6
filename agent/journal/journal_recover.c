/*
 * journal_recover.c - opening a journal that may have lost what it had
 * written, or may be damaged: the database is checked against the seq
 * high-water mark kept beside it (journal_hwm.c), and a journal that lost
 * sales it had handed out, or that SQLite cannot read, is moved aside
 * (kept, never deleted) for a new journal with a new journal_id, so that no
 * seq is ever handed out twice under one journal_id. Runs on the opening
 * thread, before the writer starts; and on the writer thread when the
 * collector says the journal_id is another device's (JOURNAL_OP_NEW_JOURNAL:
 * a cloned disk), which moves it aside the same way.
 */
#include <errno.h>
#include <pthread.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "journal/journal_int.h"
#include "journal/journal_sql.h"
#include "platform/clock.h"
#include "platform/disk.h"
#include "platform/log.h"

/* Renames j->path and its -wal and -shm files to PATH.damaged-<UTC time>
 * (never deleted: a person may want to look at them) and fsyncs the
 * directory. 0, with the new name in `aside`, or -1 with `err`. */
static int journal_move_aside(journal *j, char *aside, size_t aside_size, char *err,
                              size_t err_size)
{
  static const char *const suffixes[] = {"", "-wal", "-shm"};
  char stamp[32];
  time_t now = time(NULL);
  struct tm tm;

  gmtime_r(&now, &tm);
  strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
  for (int n = 0;; n++) {
    if (n == 0)
      snprintf(aside, aside_size, "%s.damaged-%s", j->path, stamp);
    else
      snprintf(aside, aside_size, "%s.damaged-%s-%d", j->path, stamp, n);
    if (access(aside, F_OK) != 0)
      break;
  }
  for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
    char from[PATH_MAX + 8], to[PATH_MAX + 48];
    snprintf(from, sizeof(from), "%s%s", j->path, suffixes[i]);
    snprintf(to, sizeof(to), "%s%s", aside, suffixes[i]);
    if (rename(from, to) != 0 && !(errno == ENOENT && i > 0)) {
      snprintf(err, err_size, "journal %s cannot be moved aside to %s: %s", from, to,
               strerror(errno));
      return -1;
    }
  }
  disk_fsync_parent(j->path);
  return 0;
}

/* Records why this journal was started (meta reset_*) and loads it into
 * the counters. On the opening thread, before the writer starts. */
static int journal_record_reset(journal *j, const char *previous_id, uint64_t missing,
                                const char *reason)
{
  char text[32];
  const char *keys[4] = {"reset_previous_journal_id", "reset_ms", "reset_sales_missing",
                         "reset_reason"};
  const char *values[4] = {previous_id, NULL, NULL, reason};
  char ms[32];
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_SET_META, -1, &stmt, NULL);

  snprintf(ms, sizeof(ms), "%lld", (long long)clock_wall_ms());
  snprintf(text, sizeof(text), "%llu", (unsigned long long)missing);
  values[1] = ms;
  values[2] = text;
  if (rc == SQLITE_OK)
    rc = journal__exec(j->db, "BEGIN IMMEDIATE", NULL, 0, j->path);
  for (int i = 0; rc == SQLITE_OK && i < 4; i++) {
    sqlite3_bind_text(stmt, 1, keys[i], -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, values[i], -1, SQLITE_STATIC);
    rc = journal__step_done(j, stmt);
  }
  if (rc == SQLITE_OK)
    rc = journal__exec(j->db, "COMMIT", NULL, 0, j->path);
  else if (!sqlite3_get_autocommit(j->db))
    sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_finalize(stmt);
  if (rc == SQLITE_OK)
    journal__load_reset(j);
  return rc;
}

/* One statement of the import, `after_seq` as ?1 and the previous
 * journal's id as ?2 where it has one. */
static int journal_import_step(journal *j, const char *sql, int64_t after_seq,
                               const char *previous_id)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, sql, -1, &stmt, NULL);

  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(stmt, 1, after_seq);
    if (sqlite3_bind_parameter_count(stmt) >= 2)
      sqlite3_bind_text(stmt, 2, previous_id, -1, SQLITE_STATIC);
    rc = journal__step_done(j, stmt);
  }
  sqlite3_finalize(stmt);
  return rc;
}

/* In the import's transaction: the previous journal's clock_pending
 * ranges onto the new seqs (an older journal has none). */
static int journal_import_clock(journal *j, int64_t after_seq)
{
  sqlite3_stmt *stmt = NULL;
  int present = 0;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_PREVIOUS_HAS_CLOCK, -1, &stmt, NULL);

  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
      present = sqlite3_column_int(stmt, 0) > 0;
    rc = rc == SQLITE_ROW ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  if (rc == SQLITE_OK && present)
    rc = journal_import_step(j, JOURNAL_SQL_IMPORT_CLOCK_SALES, after_seq, NULL);
  if (rc == SQLITE_OK && present)
    rc = journal_import_step(j, JOURNAL_SQL_IMPORT_CLOCK_ADJUSTMENTS, after_seq, NULL);
  return rc;
}

/* The oldest reader (user_version) of the journal attached as "previous";
 * when it cannot be read, JOURNAL_SLIM_READER: its rows are taken to be slim, so that no
 * older agent is let at them (all it costs is a rollback). */
static int64_t journal_pragma_previous_reader(journal *j)
{
  sqlite3_stmt *stmt = NULL;
  int64_t reader = JOURNAL_SLIM_READER;

  if (sqlite3_prepare_v2(j->db, "PRAGMA previous.user_version", -1, &stmt, NULL) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW)
    reader = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return reader;
}

/* Copies the sales of the journal `previous_id` moved aside to `aside`
 * with a seq above `after_seq` (those the collector is not known to hold)
 * into this new journal, in seq order, in one transaction, with where
 * each was before (table carried): the previous journal may have sent
 * some of them, and the collector skips those; and which of them were
 * read off a wrong clock (clock_pending). 0 with *imported, or an
 * SQLite error. On the opening thread. */
static int journal_import_previous(journal *j, const char *aside, const char *previous_id,
                                   int64_t after_seq, uint64_t *imported)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_ATTACH_PREVIOUS, -1, &stmt, NULL);

  *imported = 0;
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, aside, -1, SQLITE_STATIC);
    rc = journal__step_done(j, stmt);
  }
  sqlite3_finalize(stmt);
  stmt = NULL;
  if (rc != SQLITE_OK)
    return rc;
  rc = journal__exec(j->db, "BEGIN IMMEDIATE", NULL, 0, j->path);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_IMPORT_PREVIOUS, -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(stmt, 1, after_seq);
    rc = journal__step_done(j, stmt);
    if (rc == SQLITE_OK)
      *imported = (uint64_t)sqlite3_changes(j->db);
  }
  sqlite3_finalize(stmt);
  if (rc == SQLITE_OK)
    rc = journal_import_step(j, JOURNAL_SQL_IMPORT_CARRIED, after_seq, previous_id);
  if (rc == SQLITE_OK)
    rc = journal_import_step(j, JOURNAL_SQL_IMPORT_ORIGIN, after_seq, previous_id);
  /* Inventory: recipes, unsent adjustments and on-hand come along. */
  if (rc == SQLITE_OK)
    rc = journal__stock_import_previous(j, after_seq);
  if (rc == SQLITE_OK)
    rc = journal_import_step(j, JOURNAL_SQL_IMPORT_CARRIED_ADJUSTMENTS, after_seq, previous_id);
  if (rc == SQLITE_OK)
    rc = journal_import_step(j, JOURNAL_SQL_IMPORT_ORIGIN_ADJUSTMENTS, after_seq, previous_id);
  if (rc == SQLITE_OK)
    rc = journal_import_clock(j, after_seq);
  if (rc == SQLITE_OK)
    rc = journal__exec(j->db, JOURNAL_SQL_SET_CARRIED_LAST, NULL, 0, j->path);
  /* The rows came as they were: compact (slim) ones make this journal so. */
  int64_t previous_reader = rc == SQLITE_OK ? journal_pragma_previous_reader(j) : 0;
  if (rc == SQLITE_OK && previous_reader >= JOURNAL_COMPACT_READER) {
    char err[512];
    int slim = previous_reader >= JOURNAL_SLIM_READER;
    rc = journal__mark_rows(j, slim,
                            slim ? "slim rows carried over from the previous journal"
                                 : "compact rows carried over from the previous journal",
                            err, sizeof(err));
    if (rc != SQLITE_OK)
      log_error("journal", "mark_compact_failed", "path=%s reason=\"%s\"", j->path, err);
  }
  if (rc == SQLITE_OK)
    rc = journal__exec(j->db, "COMMIT", NULL, 0, j->path);
  else if (!sqlite3_get_autocommit(j->db))
    sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_exec(j->db, JOURNAL_SQL_DETACH_PREVIOUS, NULL, NULL, NULL);
  return rc;
}

/* What the high-water mark says about the database just opened. */
enum journal_hwm_verdict {
  JOURNAL_HWM_OK = 0,   /* consistent; seqs above the reserve go on */
  JOURNAL_HWM_LOST = 1, /* the database lacks sales or acknowledgements it had */
};

/* Makes the high-water mark describe the database as it is now (exactly:
 * nothing is in flight while no writer runs) and writes it durably. */
static int journal_hwm_reset(journal *j)
{
  int created = j->hwm.generation == 0;
  int rc;
  memcpy(j->hwm.journal_id, j->stats.journal_id, sizeof(j->hwm.journal_id));
  j->hwm.reserved = j->hwm.committed = j->stats.last_seq;
  j->hwm.acked_batch_seq = j->stats.acked_batch_seq;
  j->hwm.acked_last_seq = j->stats.acked_last_seq;
  j->hwm.sealed_batch_seq = j->stats.last_batch_seq;
  rc = journal__hwm_write(j, 1);
  if (rc == 0 && created)
    rc = disk_fsync_parent(j->hwm.path);
  return rc;
}

/*
 * Checks the database against the high-water mark kept beside it. Returns
 * JOURNAL_HWM_OK (seqs reserved but maybe unused are skipped: j->skip_to),
 * JOURNAL_HWM_LOST with `reason` and *missing set, or -1 with `err`.
 */
static int journal_check_hwm(journal *j, char *reason, size_t reason_size, uint64_t *missing,
                             char *err, size_t err_size)
{
  int damaged = 0;
  int found = journal__hwm_open(j, &damaged, err, err_size);
  const struct journal_stats *db = &j->stats;

  *missing = 0;
  if (found < 0)
    return -1;
  if (damaged)
    log_error("journal", "hwm_damaged",
              "path=%s reason=\"the seq high-water mark does not read back; it is made again "
              "from the database, which is trusted as it is\"",
              j->hwm.path);
  if (found && strcmp(j->hwm.journal_id, db->journal_id) != 0) {
    /* Another journal handed out seqs here: the database was deleted,
     * replaced or restored. Its own journal_id keeps seqs apart, so no seq
     * is reused, but the sales of the other one are gone from this file. */
    int64_t unsent = j->hwm.committed - j->hwm.acked_last_seq;
    *missing = unsent > 0 ? (uint64_t)unsent : 0;
    snprintf(reason, reason_size,
             "the database %s holds journal %s, but journal %s handed out seqs up to %lld "
             "beside it (%llu of them not acknowledged by the collector): the database file "
             "was deleted, replaced or restored",
             j->path, db->journal_id, j->hwm.journal_id, (long long)j->hwm.committed,
             (unsigned long long)*missing);
    log_error("journal", "journal_replaced", "path=%s previous_journal_id=%s journal_id=%s "
              "sales_missing=%llu", j->path, j->hwm.journal_id, db->journal_id,
              (unsigned long long)*missing);
    if (journal_record_reset(j, j->hwm.journal_id, *missing, reason) != SQLITE_OK)
      log_error("journal", "reset_not_recorded", "path=%s sqlite=\"%s\"", j->path,
                sqlite3_errmsg(j->db));
    found = 0;
  }
  if (!found) {
    if (journal_hwm_reset(j)) {
      snprintf(err, err_size, "journal %s: its seq high-water mark %s cannot be written: %s",
               j->path, j->hwm.path, strerror(errno));
      return -1;
    }
    return JOURNAL_HWM_OK;
  }
  if (db->last_seq < j->hwm.committed || db->acked_batch_seq < j->hwm.acked_batch_seq ||
      db->acked_last_seq < j->hwm.acked_last_seq || db->last_batch_seq < j->hwm.sealed_batch_seq) {
    int64_t lost = j->hwm.committed - db->last_seq;
    *missing = lost > 0 ? (uint64_t)lost : 0;
    snprintf(reason, reason_size,
             "journal %s lost sales or batches it had handed out: the database ends at seq %lld "
             "(batch %lld sealed, %lld acknowledged), but seqs up to %lld were handed out, "
             "batch %lld sealed (it may have been sent) and batch %lld (seq %lld) "
             "acknowledged; its WAL was cut or deleted, or an older copy restored",
             db->journal_id, (long long)db->last_seq, (long long)db->last_batch_seq,
             (long long)db->acked_batch_seq, (long long)j->hwm.committed,
             (long long)j->hwm.sealed_batch_seq, (long long)j->hwm.acked_batch_seq,
             (long long)j->hwm.acked_last_seq);
    return JOURNAL_HWM_LOST;
  }
  if (db->last_seq < j->hwm.reserved) {
    /* An unclean stop: seqs up to the reserve may have been handed out
     * (the WAL that held them may be gone with no trace); never again. */
    log_warn("journal", "seqs_skipped",
             "path=%s last_seq=%lld skip_to=%lld reason=\"seqs reserved before an unclean "
             "stop are never handed out again\"",
             j->path, (long long)db->last_seq, (long long)j->hwm.reserved);
    j->skip_to = j->hwm.reserved;
    j->stats.last_seq = j->hwm.reserved;
  }
  return JOURNAL_HWM_OK;
}

/* The last step of every new journal: its reason kept in meta (status page,
 * heartbeat), the stats read again (the high-water mark is made from them),
 * and the seq high-water mark started again for the new journal_id. 0, or
 * -1 with `err` set. */
static int journal_finish_reset(journal *j, const char *previous_id, uint64_t missing,
                                const char *reason, char *err, size_t err_size)
{
  if (journal_record_reset(j, previous_id, missing, reason) != SQLITE_OK) {
    snprintf(err, err_size, "journal %s: cannot record the new journal's start: %s", j->path,
             sqlite3_errmsg(j->db));
    return -1;
  }
  if (journal__load_stats(j, err, err_size))
    return -1;
  if (journal_hwm_reset(j)) {
    snprintf(err, err_size, "journal %s: its seq high-water mark %s cannot be written: %s",
             j->path, j->hwm.path, strerror(errno));
    return -1;
  }
  return 0;
}

/* The answer to a damaged database: refuse with what to do, or (when the
 * operator said so) move it aside and start a new journal. */
static int journal_open_damaged(journal *j, const struct journal_options *options, char *err,
                                size_t err_size)
{
  char found[384], aside[PATH_MAX + 32], reason[512];
  int damaged = 0;

  snprintf(found, sizeof(found), "%s", err);
  journal__close_db(j);
  if (!options->new_journal_if_damaged) {
    snprintf(err, err_size,
             "journal %s is damaged and the agent will not write to it (%s). To start a new "
             "journal and keep this file for forensics, set journal.new_journal_if_damaged = "
             "true and restart: the file is renamed %s.damaged-<UTC time>, never deleted, and "
             "a new journal_id is made; sales in it that were not sent stay in that file. Or "
             "restore the file from a backup",
             j->path, found, j->path);
    return -1;
  }
  if (journal_move_aside(j, aside, sizeof(aside), err, err_size))
    return -1;
  memset(&j->stats, 0, sizeof(j->stats));
  j->full = 0;
  if (journal__open_db(j, options, err, err_size))
    return -1;
  /* What the high-water mark knew of the old journal is what is missing. */
  if (journal__hwm_open(j, &damaged, err, err_size) < 0)
    return -1;
  snprintf(reason, sizeof(reason),
           "the database was damaged (%.200s) and was moved aside to %.200s; a new journal was "
           "started (journal.new_journal_if_damaged)",
           found, aside);
  log_error("journal", "journal_damaged", "path=%s moved_to=%s previous_journal_id=%s "
            "journal_id=%s", j->path, aside, j->hwm.journal_id[0] ? j->hwm.journal_id : "-",
            j->stats.journal_id);
  {
    int64_t unsent = j->hwm.committed - j->hwm.acked_last_seq;
    return journal_finish_reset(j, j->hwm.journal_id[0] ? j->hwm.journal_id : "unknown",
                                unsent > 0 ? (uint64_t)unsent : 0, reason, err, err_size);
  }
}

/* The database lost sales it had handed out (`lost`; at least `missing`
 * of them), or its journal_id is another device's (not `lost`): never reuse its seqs under that
 * journal_id. The file is moved aside, a new journal (new journal_id)
 * takes its sales the collector is not known to hold, and the reason stays
 * in the new journal's meta, for the status page and heartbeat. On the
 * opening thread, or the writer's with j->lock held. */
static int journal_start_new(journal *j, const struct journal_options *options, int lost,
                             const char *what, uint64_t missing, char *err, size_t err_size)
{
  char aside[PATH_MAX + 32], reason[1200], previous_id[33], missing_text[64] = "";
  int64_t after = j->stats.acked_last_seq > j->hwm.acked_last_seq ? j->stats.acked_last_seq
                                                                  : j->hwm.acked_last_seq;
  uint64_t imported = 0;
  int rc;

  memcpy(previous_id, j->stats.journal_id, sizeof(previous_id));
  journal__close_db(j);
  if (journal_move_aside(j, aside, sizeof(aside), err, err_size))
    return -1;
  memset(&j->stats, 0, sizeof(j->stats));
  j->full = 0;
  j->skip_to = 0;
  if (journal__open_db(j, options, err, err_size))
    return -1;
  rc = journal_import_previous(j, aside, previous_id, after, &imported);
  if (rc != SQLITE_OK) {
    snprintf(err, err_size, "journal %s: cannot copy the unsent sales of %s into the new "
             "journal: %s; both files are kept", j->path, aside, sqlite3_errmsg(j->db));
    return -1;
  }
  if (lost)
    snprintf(missing_text, sizeof(missing_text), " At least %llu sales are missing.",
             (unsigned long long)missing);
  snprintf(reason, sizeof(reason),
           "%.600s.%s Seqs are never reused: a new journal was started, the old file kept as "
           "%.200s; its %llu sales above seq %lld (not acknowledged) are sent under the new "
           "journal",
           what, missing_text, aside, (unsigned long long)imported, (long long)after);
  log_error("journal", lost ? "journal_lost_sales" : "journal_restarted",
            "path=%s previous_journal_id=%s journal_id=%s sales_missing=%llu moved_to=%s "
            "sales_carried_over=%llu",
            j->path, previous_id, j->stats.journal_id, (unsigned long long)missing, aside,
            (unsigned long long)imported);
  return journal_finish_reset(j, previous_id, missing, reason, err, err_size);
}

void journal__new_journal(journal *j, struct journal_op *op)
{
  struct journal_options options = {0};
  char err[sizeof(op->message)] = "";

  options.path = j->path;
  options.max_bytes = j->max_bytes;
  options.busy_timeout_ms = j->busy_timeout_ms;
  options.compact_rows = j->compact_rows;
  options.slim_rows = j->slim_rows;
  /* The counters are swapped with the database: readers wait (a few ms,
   * once in a device's life) rather than see a half-opened journal. */
  pthread_mutex_lock(&j->lock);
  if (journal_start_new(j, &options, 0, op->reason ? op->reason : "a new journal was asked for",
                        0, err, sizeof(err))) {
    op->error = JOURNAL_EIO;
    snprintf(op->message, sizeof(op->message), "%s", err);
    if (!j->db) {
      /* Nothing open: the writer cannot go on without a database, and
       * every sale is in the file kept aside or in the old one. */
      pthread_mutex_unlock(&j->lock);
      log_error("journal", "no_journal", "path=%s reason=\"%s\"", j->path, err);
      abort();
    }
  }
  j->stats.write_failing = j->full;
  pthread_mutex_unlock(&j->lock);
}

int journal__open_checked(journal *j, const struct journal_options *options, char *err,
                          size_t err_size)
{
  char reason[600];
  uint64_t missing = 0;
  int rc = journal__open_db(j, options, err, err_size);

  if (rc == JOURNAL_ECORRUPT)
    return journal_open_damaged(j, options, err, err_size);
  if (rc)
    return rc;
  rc = journal_check_hwm(j, reason, sizeof(reason), &missing, err, err_size);
  if (rc == JOURNAL_HWM_LOST)
    rc = journal_start_new(j, options, 1, reason, missing, err, err_size);
  return rc;
}
