/*
 * journal_clock.c - rows received while the wall clock could not be
 * trusted, and their repair (schema v7, table clock_pending).
 *
 * A device without a battery-backed clock starts in 1970 until NTP (or a
 * person) sets it; a clock can also be stepped back behind what the journal
 * already holds. A sale is never refused for that: it is journaled with the
 * time that clock gave, and its seq range is recorded, in the same
 * transaction, with the boot it came in and the clock's offset from
 * CLOCK_BOOTTIME (which no one sets and which counts on through suspend).
 * Once the clock is trusted again in the same boot, every such row's
 * received_ms moves by (offset now - offset then), in one transaction, and
 * the range is dropped: the row then says when it really came. A boot that
 * ended first leaves its ranges: those rows are sent flagged.
 *
 * Trusted means: not before the build's time, and not more than
 * JOURNAL_CLOCK_BEHIND_MS behind the newest row read off a trusted clock.
 *
 * Writer thread once the journal is open; the opening thread before.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timex.h>

#include "journal/journal_int.h"
#include "journal/journal_sql.h"
#include "platform/clock.h"
#include "platform/log.h"

/* A clock this far behind the newest trusted row is wrong; less is an NTP
 * correction of a clock that ran fast, not worth flagging sales for. */
#define JOURNAL_CLOCK_BEHIND_MS (5 * 60 * 1000)
/* While the clock is wrong or rows wait, it is looked at this often; and
 * while it is right, every few seconds, so that a clock set back shows on
 * the page and in the heartbeat before the next sale (a look is one
 * clock_gettime: no disk, no SQL). */
#define JOURNAL_CLOCK_CHECK_MS 1000u
#define JOURNAL_CLOCK_IDLE_CHECK_MS 5000u
/* Rows of this boot waiting for the clock are not sealed for this long
 * after the first of them came: NTP sets a clock within a minute or two
 * of the network coming up, and a batch sealed before that would carry
 * wrong times for good. A device that gets no time at all (no network
 * time, no RTC) must still deliver its sales: after the hold they go out
 * flagged (Sale.received_ms_untrusted). 30 minutes is two default
 * uplink intervals: at most one push is late. */
#define JOURNAL_CLOCK_HOLD_MS (30 * 60 * 1000)
/* A device clock this close to the collector's agrees with it (network
 * latency and the second the collector's time is read in are far less). */
#define JOURNAL_CLOCK_REFERENCE_MS (2 * 60 * 1000)
/* Ranges whose offsets differ by less than this are one range: the offset
 * is read at two instants and moves by a millisecond or so between them. */
#define JOURNAL_CLOCK_SAME_OFFSET_MS 1000

const char *journal_clock_state_name(int state)
{
  switch (state) {
  case JOURNAL_CLOCK_OK:
    return "ok";
  case JOURNAL_CLOCK_BEFORE_BUILD:
    return "before_build";
  case JOURNAL_CLOCK_BEHIND_JOURNAL:
    return "behind_journal";
  case JOURNAL_CLOCK_DIFFERS_FROM_COLLECTOR:
    return "differs_from_collector";
  }
  return "unknown";
}

/* 1 when the kernel says the clock is synchronised (NTP, chrony or
 * systemd-timesyncd disciplines it: STA_UNSYNC clear). A read: modes 0
 * changes nothing and needs no privilege. */
static int journal_clock_kernel_synced(void)
{
  struct timex tx;

  memset(&tx, 0, sizeof(tx));
  return adjtimex(&tx) != -1 && !(tx.status & STA_UNSYNC);
}

static int journal_clock_judge(const struct journal_clock *c, int64_t wall_ms)
{
  int own = JOURNAL_CLOCK_OK;

  if (wall_ms < c->build_ms)
    own = JOURNAL_CLOCK_BEFORE_BUILD;
  else if (c->trusted_ms > 0 && wall_ms < c->trusted_ms - JOURNAL_CLOCK_BEHIND_MS)
    own = JOURNAL_CLOCK_BEHIND_JOURNAL;
  if (c->reference_known) {
    int64_t diff = wall_ms - (clock_boot_ms() + c->reference_offset_ms);
    if (diff <= JOURNAL_CLOCK_REFERENCE_MS && diff >= -JOURNAL_CLOCK_REFERENCE_MS)
      return JOURNAL_CLOCK_OK;
    /* A clock NTP disciplines, after the build and not behind the journal,
     * is right even where the collector's is not: a collector that drifts
     * must not put every store's times on its own clock. The difference
     * is reported (a log line; the heartbeat's skew), not acted on. */
    if (own == JOURNAL_CLOCK_OK && journal_clock_kernel_synced())
      return JOURNAL_CLOCK_OK;
    return wall_ms < c->build_ms ? JOURNAL_CLOCK_BEFORE_BUILD
                                 : JOURNAL_CLOCK_DIFFERS_FROM_COLLECTOR;
  }
  return own;
}

/* A synchronised device clock that differs from the collector's: said
 * once each time it starts to (the collector's clock may be the wrong one). */
static void journal_clock_log_differs(journal *j, int64_t wall_ms)
{
  int64_t diff = clock_boot_ms() + j->clock.reference_offset_ms - wall_ms;
  int differs = j->clock.state == JOURNAL_CLOCK_OK && j->clock.reference_known &&
                (diff > JOURNAL_CLOCK_REFERENCE_MS || diff < -JOURNAL_CLOCK_REFERENCE_MS);

  if (differs && !j->clock.differs_logged)
    log_warn("clock", "collector_differs",
             "collector_minus_device_ms=%" PRId64 " reason=\"the device clock is synchronised "
             "(NTP) and differs from the collector's: the device's is kept; check the "
             "collector's time source\"", diff);
  j->clock.differs_logged = differs;
}

/* The counters people see, from the ranges; the caller holds j->lock (or
 * no writer runs). */
static void journal_clock_fill(journal *j, int64_t wall_ms)
{
  uint64_t pending = 0, unrepaired = 0;

  for (size_t i = 0; i < j->clock.count; i++) {
    const struct journal_clock_range *r = &j->clock.ranges[i];
    uint64_t rows = (uint64_t)(r->last_seq - r->first_seq + 1);
    if (r->this_boot)
      pending += rows;
    else
      unrepaired += rows;
  }
  j->stats.clock_state = j->clock.state;
  j->stats.clock_build_ms = j->clock.build_ms;
  j->stats.clock_trusted_ms = j->clock.trusted_ms;
  j->stats.clock_wall_ms = wall_ms;
  j->stats.clock_pending_rows = pending;
  j->stats.clock_unrepaired_rows = unrepaired;
}

/* The same, taking j->lock: writer thread. */
static void journal_clock_publish(journal *j, int64_t wall_ms)
{
  pthread_mutex_lock(&j->lock);
  journal_clock_fill(j, wall_ms);
  pthread_mutex_unlock(&j->lock);
}

static void journal_clock_log_state(journal *j, int64_t wall_ms)
{
  char wall[32], build[32], trusted[32];

  clock_format_utc(wall_ms, wall, sizeof(wall));
  clock_format_utc(j->clock.build_ms, build, sizeof(build));
  clock_format_utc(j->clock.trusted_ms, trusted, sizeof(trusted));
  if (j->clock.state == JOURNAL_CLOCK_OK)
    log_info("clock", "trusted", "wall=%s build=%s", wall, build);
  else if (j->clock.state == JOURNAL_CLOCK_BEFORE_BUILD)
    log_warn("clock", "untrusted",
             "state=before_build wall=%s build=%s reason=\"the device clock is before this "
             "agent was built: it was never set (no RTC battery, no network time); sales are "
             "journaled and their times corrected once the clock is set in this boot\"",
             wall, build);
  else if (j->clock.state == JOURNAL_CLOCK_DIFFERS_FROM_COLLECTOR)
    log_warn("clock", "untrusted",
             "state=differs_from_collector wall=%s collector_minus_device_ms=%" PRId64
             " reason=\"the device clock is not what the collector's says: sales are "
             "journaled and their times corrected from the collector's clock\"",
             wall, clock_boot_ms() + j->clock.reference_offset_ms - wall_ms);
  else
    log_warn("clock", "untrusted",
             "state=behind_journal wall=%s newest_row=%s reason=\"the device clock is behind "
             "the newest sale already journaled: it was set back or reset; sales are "
             "journaled and their times corrected once the clock is right in this boot\"",
             wall, trusted);
}

/* The collector's time, kept in meta clock_reference ("BOOT_ID OFFSET")
 * when it is new or moved by a second or more (not at every heartbeat: a
 * write on flash), so that an agent restarted in the same boot knows it
 * before the first heartbeat answers. Outside any transaction. */
static void journal_clock_save_reference(journal *j)
{
  char value[80];
  int64_t moved = j->clock.reference_offset_ms - j->clock.saved_offset_ms;

  if (!j->clock.reference_known || !j->clock.boot_id[0] ||
      (j->clock.saved_known && llabs(moved) < JOURNAL_CLOCK_SAME_OFFSET_MS))
    return;
  snprintf(value, sizeof(value), "%s %" PRId64, j->clock.boot_id,
           j->clock.reference_offset_ms);
  sqlite3_bind_text(j->set_meta, 1, "clock_reference", -1, SQLITE_STATIC);
  sqlite3_bind_text(j->set_meta, 2, value, -1, SQLITE_TRANSIENT);
  if (journal__step_done(j, j->set_meta) == SQLITE_OK) {
    j->clock.saved_known = 1;
    j->clock.saved_offset_ms = j->clock.reference_offset_ms;
  }
}

/* meta clock_reference of this boot, if any, as the collector's time
 * known (opening thread, or the writer's with j->lock held). */
static void journal_clock_load_reference(journal *j)
{
  sqlite3_stmt *stmt = NULL;
  char boot[40];
  long long offset;

  if (!j->clock.boot_id[0] ||
      sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_META, -1, &stmt, NULL) != SQLITE_OK)
    goto out;
  sqlite3_bind_text(stmt, 1, "clock_reference", -1, SQLITE_STATIC);
  if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0) &&
      sscanf((const char *)sqlite3_column_text(stmt, 0), "%39s %lld", boot, &offset) == 2 &&
      strcmp(boot, j->clock.boot_id) == 0) {
    j->clock.saved_known = j->clock.reference_known = 1;
    j->clock.saved_offset_ms = j->clock.reference_offset_ms = offset;
    if (!j->reference_known) {
      j->reference_known = 1;
      j->reference_offset_ms = offset;
    }
  }
out:
  sqlite3_finalize(stmt);
}

/* Judges the clock at `wall_ms`; one log line when the state changed. */
static void journal_clock_assess(journal *j, int64_t wall_ms)
{
  int state;

  pthread_mutex_lock(&j->lock);
  j->clock.reference_known = j->reference_known;
  j->clock.reference_offset_ms = j->reference_offset_ms;
  pthread_mutex_unlock(&j->lock);
  journal_clock_save_reference(j);
  state = journal_clock_judge(&j->clock, wall_ms);
  /* A clock that agrees with the collector is right: rows a clock ahead
   * of it stamped earlier must not make it look behind from now on. */
  if (j->clock.reference_known && state == JOURNAL_CLOCK_OK && j->clock.trusted_ms > wall_ms)
    j->clock.trusted_ms = wall_ms;

  if (state != j->clock.state) {
    j->clock.state = state;
    journal_clock_log_state(j, wall_ms);
  }
  journal_clock_log_differs(j, wall_ms);
  journal_clock_publish(j, wall_ms);
}

static int journal_clock_append(struct journal_clock *c, const struct journal_clock_range *r)
{
  if (c->count == c->capacity) {
    size_t capacity = c->capacity ? c->capacity * 2 : 4;
    struct journal_clock_range *grown = realloc(c->ranges, capacity * sizeof(*grown));
    if (!grown)
      return -1;
    c->ranges = grown;
    c->capacity = capacity;
  }
  c->ranges[c->count++] = *r;
  return 0;
}

/* CLOCK_BOOTTIME at row `seq`'s receipt (its received_ms less the offset
 * it was read with), for the hold; now when it does not read. */
static int64_t journal_clock_row_boot_ms(journal *j, int64_t seq, int64_t offset)
{
  sqlite3_stmt *stmt = NULL;
  int64_t boot_ms = clock_boot_ms();

  if (sqlite3_prepare_v2(j->db, JOURNAL_SQL_CLOCK_ROW_TIME, -1, &stmt, NULL) == SQLITE_OK) {
    sqlite3_bind_int64(stmt, 1, seq);
    if (sqlite3_step(stmt) == SQLITE_ROW)
      boot_ms = sqlite3_column_int64(stmt, 0) - offset;
  }
  sqlite3_finalize(stmt);
  return boot_ms;
}

static int journal_clock_load_ranges(journal *j)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_CLOCK_RANGES, -1, &stmt, NULL);

  while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    const char *boot = (const char *)sqlite3_column_text(stmt, 2);
    struct journal_clock_range r = {.first_seq = sqlite3_column_int64(stmt, 0),
                                    .last_seq = sqlite3_column_int64(stmt, 1),
                                    .wall_minus_boot_ms = sqlite3_column_int64(stmt, 3)};
    r.this_boot = j->clock.boot_id[0] && boot && strcmp(boot, j->clock.boot_id) == 0;
    rc = journal_clock_append(&j->clock, &r) ? SQLITE_NOMEM : SQLITE_OK;
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  sqlite3_finalize(stmt);
  for (size_t i = 0; rc == SQLITE_OK && i < j->clock.count; i++) {
    struct journal_clock_range *r = &j->clock.ranges[i];
    if (r->this_boot)
      r->first_boot_ms = journal_clock_row_boot_ms(j, r->first_seq, r->wall_minus_boot_ms);
  }
  return rc;
}

/* The range holding `seq`, or NULL (ranges in seq order, never overlapping). */
static const struct journal_clock_range *journal_clock_find(const journal *j, int64_t seq)
{
  size_t low = 0, high = j->clock.count;

  while (low < high) {
    size_t mid = low + (high - low) / 2;
    const struct journal_clock_range *r = &j->clock.ranges[mid];
    if (seq < r->first_seq)
      high = mid;
    else if (seq > r->last_seq)
      low = mid + 1;
    else
      return r;
  }
  return NULL;
}

/* The received_ms of the newest row of `sql`'s table not in a range (read
 * off a trusted clock), raised into *newest: from the newest row back, a
 * row in a range jumps to before that range, so the work is one indexed
 * lookup per range at most, however many rows wait. */
static int journal_clock_newest_trusted(journal *j, const char *sql, int64_t *newest)
{
  sqlite3_stmt *stmt = NULL;
  int64_t seq = INT64_MAX;
  int rc = sqlite3_prepare_v2(j->db, sql, -1, &stmt, NULL);

  while (rc == SQLITE_OK) {
    const struct journal_clock_range *r;
    sqlite3_bind_int64(stmt, 1, seq);
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW)
      break;
    seq = sqlite3_column_int64(stmt, 0);
    r = journal_clock_find(j, seq);
    if (!r) {
      if (sqlite3_column_int64(stmt, 1) > *newest)
        *newest = sqlite3_column_int64(stmt, 1);
      rc = SQLITE_DONE;
      break;
    }
    seq = r->first_seq - 1;
    rc = sqlite3_reset(stmt);
  }
  sqlite3_finalize(stmt);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int journal__clock_load(journal *j, char *err, size_t err_size)
{
  int64_t wall_ms = clock_wall_ms();
  int rc;

  journal__clock_free(j);
  j->clock.build_ms = clock_build_epoch_ms();
  if (clock_boot_id(j->clock.boot_id, sizeof(j->clock.boot_id)))
    log_warn("clock", "no_boot_id", "path=/proc/sys/kernel/random/boot_id reason=\"rows "
             "received while the clock is wrong are repaired only by this process\"");
  j->clock.saved_known = 0; /* a new journal's meta has none yet */
  journal_clock_load_reference(j);
  rc = journal_clock_load_ranges(j);
  j->clock.trusted_ms = 0;
  if (rc == SQLITE_OK)
    rc = journal_clock_newest_trusted(j, JOURNAL_SQL_CLOCK_SALE_AT_OR_BEFORE, &j->clock.trusted_ms);
  if (rc == SQLITE_OK)
    rc = journal_clock_newest_trusted(j, JOURNAL_SQL_CLOCK_ADJUSTMENT_AT_OR_BEFORE,
                                      &j->clock.trusted_ms);
  if (rc != SQLITE_OK) {
    snprintf(err, err_size, "journal %s: cannot read its clock_pending table: %s", j->path,
             sqlite3_errstr(rc));
    return -1;
  }
  j->clock.state = journal_clock_judge(&j->clock, wall_ms);
  if (j->clock.state != JOURNAL_CLOCK_OK)
    journal_clock_log_state(j, wall_ms);
  /* Looked at again by the writer at once: rows of this boot may be
   * repaired now (a restart after the clock was set). */
  j->clock.check_due_ms = clock_mono_ms();
  journal_clock_fill(j, wall_ms);
  return 0;
}

void journal__clock_free(journal *j)
{
  free(j->clock.ranges);
  j->clock.ranges = NULL;
  j->clock.count = j->clock.capacity = 0;
  j->clock.staged = j->clock.open_range = 0;
}

/* Recomputes the cached times the status page shows from rows that were
 * just corrected. */
static void journal_clock_refresh_stats(journal *j)
{
  sqlite3_stmt *stmt = NULL;
  int64_t last_received = -1, oldest_unsent = -1;

  if (sqlite3_prepare_v2(j->db, JOURNAL_SQL_CLOCK_LAST_RECEIVED, -1, &stmt, NULL) ==
          SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW)
    last_received = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  pthread_mutex_lock(&j->lock);
  sqlite3_bind_int64(j->oldest_unsent, 1, j->stats.acked_last_seq);
  if (sqlite3_step(j->oldest_unsent) == SQLITE_ROW)
    oldest_unsent = sqlite3_column_int64(j->oldest_unsent, 0);
  sqlite3_reset(j->oldest_unsent);
  if (last_received >= 0)
    j->stats.last_received_ms = last_received;
  if (oldest_unsent >= 0 && j->stats.oldest_unsent_ms)
    j->stats.oldest_unsent_ms = oldest_unsent;
  pthread_mutex_unlock(&j->lock);
}

static int journal_clock_exec_range(journal *j, const char *sql, int64_t first, int64_t last,
                                    int64_t delta)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, sql, -1, &stmt, NULL);

  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(stmt, 1, first);
    if (sqlite3_bind_parameter_count(stmt) >= 2)
      sqlite3_bind_int64(stmt, 2, last);
    if (sqlite3_bind_parameter_count(stmt) >= 3)
      sqlite3_bind_int64(stmt, 3, delta);
    rc = sqlite3_step(stmt) == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  return rc;
}

/* meta sealed_last_seq: the last row in a batch (0 = none). */
static int journal_clock_sealed_last(journal *j, int64_t *sealed)
{
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_GET_META, -1, &stmt, NULL);

  *sealed = 0;
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(stmt, 1, "sealed_last_seq", -1, SQLITE_STATIC);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
      *sealed = sqlite3_column_int64(stmt, 0);
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  return rc;
}

/* One range of this boot in the repair's transaction: its rows above
 * `sealed` are corrected by `delta`; its rows at or below stay as they
 * were sealed, and their part of the range stays (trimmed to them). */
static int journal_clock_repair_range(journal *j, const struct journal_clock_range *r,
                                      int64_t sealed, int64_t delta, uint64_t *rows)
{
  int64_t first = r->first_seq > sealed ? r->first_seq : sealed + 1;
  int rc = SQLITE_OK;

  if (first <= r->last_seq) {
    rc = journal_clock_exec_range(j, JOURNAL_SQL_CLOCK_FIX_SALES, first, r->last_seq, delta);
    if (rc == SQLITE_OK)
      rc = journal_clock_exec_range(j, JOURNAL_SQL_CLOCK_FIX_ADJUSTMENTS, first, r->last_seq,
                                    delta);
    *rows += (uint64_t)(r->last_seq - first + 1);
  }
  if (rc == SQLITE_OK && r->first_seq > sealed)
    rc = journal_clock_exec_range(j, JOURNAL_SQL_CLOCK_DROP, r->first_seq, 0, 0);
  else if (rc == SQLITE_OK && r->last_seq > sealed)
    rc = journal_clock_exec_range(j, JOURNAL_SQL_CLOCK_TRIM_LAST, r->first_seq, sealed, 0);
  return rc;
}

/* After a repair committed: the ranges of this boot go, but for their
 * sealed parts, which stay (flagged for good, like a range of an ended
 * boot: no later repair may change what a batch already carried).
 * Returns the rows that stay flagged. */
static uint64_t journal_clock_keep_sealed(journal *j, int64_t sealed)
{
  uint64_t frozen = 0;
  size_t kept = 0;

  for (size_t i = 0; i < j->clock.count; i++) {
    struct journal_clock_range r = j->clock.ranges[i];
    if (r.this_boot && r.first_seq > sealed)
      continue;
    if (r.this_boot) {
      if (r.last_seq > sealed)
        r.last_seq = sealed;
      r.this_boot = 0;
      frozen += (uint64_t)(r.last_seq - r.first_seq + 1);
    }
    j->clock.ranges[kept++] = r;
  }
  j->clock.count = kept;
  return frozen;
}

/*
 * The clock is trusted: every range of this boot is corrected and dropped
 * in one transaction (all or none: a row is never corrected twice). Rows
 * already sealed into a batch (at or below meta sealed_last_seq: also
 * every row a resync replays) are not: the batch may have gone out,
 * flagged, after the hold, and a replay must carry what it carried.
 */
static void journal_clock_repair(journal *j, int64_t wall_ms)
{
  /* The device clock once it is trusted, else the collector's. */
  int64_t offset_now = j->clock.state == JOURNAL_CLOCK_OK ? wall_ms - clock_boot_ms()
                                                          : j->clock.reference_offset_ms;
  int64_t sealed = 0;
  uint64_t rows = 0, frozen;
  int rc = journal__step_done(j, j->begin);

  if (rc == SQLITE_OK)
    rc = journal_clock_sealed_last(j, &sealed);
  for (size_t i = 0; rc == SQLITE_OK && i < j->clock.count; i++) {
    const struct journal_clock_range *r = &j->clock.ranges[i];
    if (r->this_boot)
      rc = journal_clock_repair_range(j, r, sealed, offset_now - r->wall_minus_boot_ms, &rows);
  }
  if (rc == SQLITE_OK)
    rc = journal__step_done(j, j->commit);
  if (rc != SQLITE_OK) {
    if (!sqlite3_get_autocommit(j->db))
      journal__step_done(j, j->rollback);
    /* Tried again at the next check: the rows keep their flag meanwhile. */
    log_error("clock", "repair_failed", "path=%s sqlite=\"%s\" rows=%" PRIu64
              " reason=\"tried again in a second; the rows stay flagged meanwhile\"",
              j->path, sqlite3_errstr(rc), rows);
    return;
  }
  frozen = journal_clock_keep_sealed(j, sealed);
  j->clock.open_range = 0;
  log_info("clock", "repaired", "path=%s rows=%" PRIu64 " offset_ms=%" PRId64, j->path, rows,
           offset_now);
  if (frozen)
    log_warn("clock", "sealed_rows_flagged", "path=%s rows=%" PRIu64 " reason=\"these rows "
             "were sealed into batches before the clock was set: they keep the time they were "
             "sent with and go on being flagged (Sale.received_ms_untrusted)\"", j->path,
             frozen);
  journal_clock_refresh_stats(j);
  pthread_mutex_lock(&j->lock);
  j->stats.clock_repaired_rows += rows;
  pthread_mutex_unlock(&j->lock);
  journal_clock_publish(j, wall_ms);
}

static int journal_clock_waiting(const journal *j)
{
  for (size_t i = 0; i < j->clock.count; i++)
    if (j->clock.ranges[i].this_boot)
      return 1;
  return 0;
}

int64_t journal__clock_before_group(journal *j, int64_t wall_ms)
{
  journal_clock_assess(j, wall_ms);
  if ((j->clock.state == JOURNAL_CLOCK_OK || j->clock.reference_known) &&
      journal_clock_waiting(j))
    journal_clock_repair(j, wall_ms);
  /* A wrong clock while the collector's time is known: the rows take that
   * time at once (nothing to repair later, nothing held back). */
  if (j->clock.state != JOURNAL_CLOCK_OK && j->clock.reference_known)
    return clock_boot_ms() + j->clock.reference_offset_ms;
  return wall_ms;
}

int64_t journal__clock_now(journal *j)
{
  struct journal_clock c = j->clock;
  int64_t wall_ms = clock_wall_ms();

  pthread_mutex_lock(&j->lock);
  c.reference_known = j->reference_known;
  c.reference_offset_ms = j->reference_offset_ms;
  pthread_mutex_unlock(&j->lock);
  if (journal_clock_judge(&c, wall_ms) == JOURNAL_CLOCK_OK)
    return wall_ms;
  if (c.reference_known)
    return clock_boot_ms() + c.reference_offset_ms;
  /* Before the build or behind the journal: behind the true time, so
   * what is counted from it (retention) does less, never more. */
  return wall_ms;
}

void journal_clock_reference(journal *j, int64_t reference_ms, int64_t boot_ms)
{
  pthread_mutex_lock(&j->lock);
  j->reference_offset_ms = reference_ms - boot_ms;
  j->reference_known = 1;
  pthread_mutex_unlock(&j->lock);
}

int journal__clock_stamp(journal *j, const struct journal_write *group, int64_t wall_ms)
{
  struct journal_clock_range r = {0};
  const struct journal_clock_range *last = j->clock.count ? &j->clock.ranges[j->clock.count - 1]
                                                          : NULL;
  sqlite3_stmt *stmt = NULL;
  int rc;

  j->clock.staged = 0;
  /* Trusted, or stamped with the collector's time: nothing to repair. */
  if (j->clock.state == JOURNAL_CLOCK_OK || j->clock.reference_known)
    return SQLITE_OK;
  for (const struct journal_write *w = group; w; w = w->next) {
    if (w->error)
      continue;
    for (size_t i = 0; i < w->count; i++) {
      int64_t seq = w->results[i].seq;
      if (w->results[i].outcome != JOURNAL_STORED)
        continue;
      if (r.first_seq == 0 || seq < r.first_seq)
        r.first_seq = seq;
      if (seq > r.last_seq)
        r.last_seq = seq;
    }
  }
  if (r.first_seq == 0)
    return SQLITE_OK; /* only duplicates: nothing new was stamped */
  r.first_boot_ms = clock_boot_ms();
  r.wall_minus_boot_ms = wall_ms - r.first_boot_ms;
  r.this_boot = 1;
  /* Rows right after the last range, read off the same clock, extend it:
   * one range for a whole morning without a clock, not one per sale. */
  j->clock.staged_extends = j->clock.open_range && last && last->this_boot &&
                            llabs(last->wall_minus_boot_ms - r.wall_minus_boot_ms) <
                                JOURNAL_CLOCK_SAME_OFFSET_MS;
  if (j->clock.staged_extends) {
    r.first_seq = last->first_seq;
    r.wall_minus_boot_ms = last->wall_minus_boot_ms;
    r.first_boot_ms = last->first_boot_ms;
  }
  rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_CLOCK_PUT, -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(stmt, 1, r.first_seq);
    sqlite3_bind_int64(stmt, 2, r.last_seq);
    sqlite3_bind_text(stmt, 3, j->clock.boot_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 4, r.wall_minus_boot_ms);
    rc = sqlite3_step(stmt) == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  if (rc == SQLITE_OK) {
    j->clock.staged_range = r;
    j->clock.staged = 1;
  }
  return rc;
}

void journal__clock_settle(journal *j, int committed, int64_t wall_ms)
{
  if (committed && j->clock.staged) {
    if (j->clock.staged_extends)
      j->clock.ranges[j->clock.count - 1] = j->clock.staged_range;
    else if (journal_clock_append(&j->clock, &j->clock.staged_range))
      /* Out of memory: the range is on disk; the next open reads it. */
      log_error("clock", "range_not_kept", "first_seq=%" PRId64,
                j->clock.staged_range.first_seq);
    j->clock.open_range = 1;
    {
      uint64_t soon = clock_mono_ms() + JOURNAL_CLOCK_CHECK_MS;
      if (!j->clock.check_due_ms || soon < j->clock.check_due_ms)
        j->clock.check_due_ms = soon;
    }
    journal_clock_publish(j, wall_ms);
  } else if (committed && j->clock.state == JOURNAL_CLOCK_OK) {
    /* A trusted row now lies after the last range: never extend it over. */
    j->clock.open_range = 0;
    if (wall_ms > j->clock.trusted_ms)
      j->clock.trusted_ms = wall_ms;
  }
  j->clock.staged = 0;
}

int journal__clock_due(journal *j, uint64_t now_mono_ms, uint64_t *deadline_ms)
{
  if (!j->clock.check_due_ms)
    return 0;
  if (now_mono_ms >= j->clock.check_due_ms)
    return 1;
  if (*deadline_ms == 0 || j->clock.check_due_ms < *deadline_ms)
    *deadline_ms = j->clock.check_due_ms;
  return 0;
}

void journal__clock_tick(journal *j)
{
  (void)journal__clock_before_group(j, clock_wall_ms());
  /* Look again soon while the clock is wrong (the page must show when it
   * is set, with no sale to notice it) or rows wait for it. */
  if (j->clock.state != JOURNAL_CLOCK_OK || journal_clock_waiting(j))
    j->clock.check_due_ms = clock_mono_ms() + JOURNAL_CLOCK_CHECK_MS;
  else
    j->clock.check_due_ms = clock_mono_ms() + JOURNAL_CLOCK_IDLE_CHECK_MS;
}

int64_t journal__clock_seal_limit(journal *j)
{
  int64_t now_boot = clock_boot_ms();

  for (size_t i = 0; i < j->clock.count; i++) {
    const struct journal_clock_range *r = &j->clock.ranges[i];
    if (r->this_boot && now_boot - r->first_boot_ms < JOURNAL_CLOCK_HOLD_MS)
      return r->first_seq - 1;
  }
  return INT64_MAX;
}

int journal__clock_forget_deleted(journal *j)
{
  sqlite3_stmt *stmt = NULL;
  int64_t oldest = 0;
  int rc;

  /* Nothing to forget (the common case: no range at all): no SQL. */
  if (j->clock.count == 0)
    return SQLITE_OK;
  rc = sqlite3_prepare_v2(j->db, JOURNAL_SQL_CLOCK_OLDEST_HELD, -1, &stmt, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
      oldest = sqlite3_column_int64(stmt, 0);
    rc = rc == SQLITE_ROW ? SQLITE_OK : sqlite3_extended_errcode(j->db);
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_OK || oldest <= j->clock.ranges[0].first_seq)
    return rc;
  /* Only the range holding `oldest` (ranges never overlap) is trimmed: no
   * two ranges ever start at the same seq. */
  rc = journal_clock_exec_range(j, JOURNAL_SQL_CLOCK_FORGET, oldest, 0, 0);
  if (rc == SQLITE_OK)
    rc = journal_clock_exec_range(j, JOURNAL_SQL_CLOCK_FORGET_TRIM, oldest, 0, 0);
  if (rc == SQLITE_OK && oldest > j->clock.forget_below)
    j->clock.forget_below = oldest;
  return rc;
}

void journal__clock_forgotten(journal *j, int committed)
{
  int64_t oldest = j->clock.forget_below;
  size_t kept = 0;

  j->clock.forget_below = 0;
  if (!committed || oldest == 0)
    return;
  for (size_t i = 0; i < j->clock.count; i++) {
    struct journal_clock_range r = j->clock.ranges[i];
    if (r.last_seq < oldest)
      continue;
    if (r.first_seq < oldest)
      r.first_seq = oldest;
    j->clock.ranges[kept++] = r;
  }
  j->clock.count = kept;
  journal_clock_publish(j, clock_wall_ms());
}

int journal__clock_untrusted(const journal *j, int64_t seq)
{
  return journal_clock_find(j, seq) != NULL;
}
