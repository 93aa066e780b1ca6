/*
 * journal_int.h - the journal's insides, shared by journal.c (open,
 * migrations, the writer thread, sale writes) and journal_batch.c (the
 * uplink's operations). For the journal's own files only.
 */
#ifndef AGENT_JOURNAL_INT_H
#define AGENT_JOURNAL_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <uv.h>

#include "inventory/recipes.h"
#include "journal/journal.h"
#include "platform/metrics.h"

/* Retention deletes at most this many batches per transaction, so sale
 * writes never wait long behind it. */
#define JOURNAL_RETENTION_CHUNK 64
/* At most this many sales deleted per transaction (see journal_delete_acked). */
#define JOURNAL_PRUNE_SALES 128

/*
 * Group commit on a slow fsync (journal.c, the writer loop). Clients
 * answered by one commit come back during the next one's fsync, so a
 * writer that takes only what is queued when a commit ends splits a crowd
 * of clients into two cohorts that alternate, each with its own fsync. So,
 * as PostgreSQL's commit_delay/commit_siblings do, before a commit the
 * writer holds it briefly for the writes it knows are coming: as many as
 * were active lately (the most seen in the last one to two windows), for
 * at most half a commit's time (JOURNAL_HOLD_SHARE) and never more than
 * JOURNAL_HOLD_MAX_US, and only when commits take JOURNAL_HOLD_MIN_COMMIT_US
 * or more (a fast disk gains nothing). A lone client (one write active) is
 * never held: it commits at once, as with group_commit_max = 1.
 */
#define JOURNAL_HOLD_MIN_COMMIT_US 1000
#define JOURNAL_HOLD_MAX_US 10000
#define JOURNAL_HOLD_SHARE 0.5
#define JOURNAL_COHORT_WINDOW_MS 1000u

/*
 * A lone write is committed on the loop thread itself (journal_submit),
 * not handed to the writer thread and its answer handed back: at one sale
 * per POST those two hand-offs (a futex wake, the writer's wake-up and
 * sleep, the loop's wake-up by the uv_async) were most of the CPU left
 * besides the commit (issue 12, item 1). Only when nothing else is going
 * on: the writer idle (waiting for work, nothing queued, no operation),
 * no other write of this journal in flight, and the cohort (above) has
 * seen no two writes active in the last one to two windows, so a crowd of
 * clients keeps its group commits (one inline commit would split it). The
 * loop waits for that commit's fsync, during which it answers nobody; so
 * only while commits take at most this long on average: a store's eMMC
 * (about 5 ms) is in, a lone terminal there waits no longer than through
 * the writer and the others notice no more than a few ms; a disk in
 * trouble (fsyncs of tens of ms or seconds, a worn or full flash) is out
 * after its first slow commit (the average then stays up for dozens of
 * commits), so the status page and the other terminals are not held
 * behind it.
 */
#define JOURNAL_INLINE_MAX_COMMIT_US 10000.0

/* Seqs are reserved in the high-water mark file this many at a time, so
 * its fsync is paid once per range, not once per sale. After an unclean
 * stop the unused rest of a range is skipped, never handed out. */
#define JOURNAL_SEQ_RANGE 1024

/*
 * The seq high-water mark, kept in a small file beside the database
 * (PATH-hwm) and never in its WAL, so that a WAL that lost its tail (cut,
 * deleted, a restored copy) cannot take this record with it. Two 512-byte
 * slots, each with a generation and a SHA-256; the newest valid one wins.
 *   reserved   upper bound of every seq ever handed out: written and
 *              fsynced (both slots) before a seq above the last one is used;
 *   committed  lower bound of the highest seq committed: written (one slot,
 *              no fsync) after each commit and before the POS is answered,
 *              so it survives kill -9; power loss may leave it behind,
 *              which is harmless (it only ever says "at least"). That
 *              slot goes to the runtime directory (tmpfs) when there is
 *              one: at a store's pace the kernel would otherwise write the
 *              file's page back to flash after every sale;
 *   acked_*    lower bounds of the collector's acknowledgement, written and
 *              fsynced after the journal recorded it;
 *   sealed_batch_seq  lower bound of the highest batch sealed: written and
 *              fsynced after a seal commits, before the batch can be sent
 *              (and lowered before an unseal commits). A database that
 *              lacks a batch it may have sent lost its tail: the collector
 *              may hold that batch, so its number must never be sealed
 *              again with other content.
 * Writer thread only once the journal is open.
 */
/* A text buffer reused from write to write. */
struct journal_text {
  char *data;
  size_t len;
  size_t cap;
};

struct journal_hwm {
  int fd; /* -1 = none */
  char *path;
  /* The per-commit slot's home off flash, when systemd gives the agent a
   * runtime directory (journal_hwm.c): -1 / NULL = none, the slot goes to
   * PATH-hwm as before. */
  int runtime_fd;
  char *runtime_path;
  uint64_t generation;
  char journal_id[33]; /* "" = no valid slot was read */
  int64_t reserved;
  int64_t committed;
  int64_t acked_batch_seq;
  int64_t acked_last_seq;
  int64_t sealed_batch_seq;
  int write_failed; /* the last write failed (logged once) */
};

/* What the journal measures (journal_metrics.c), in the process's registry:
 * set at open, before the writer starts; updated from the writer thread. */
struct journal_metrics {
  metrics_series *commit_seconds;   /* one group commit, BEGIN to COMMIT */
  metrics_series *commit_writes;    /* sales and adjustments in it */
  metrics_series *hold_seconds;     /* a commit held for the writes coming */
  metrics_series *sales;            /* sales journaled (new rows, not duplicates) */
  metrics_series *adjustments;      /* inventory adjustments journaled */
  metrics_series *seal_seconds;     /* sealing one batch */
  metrics_series *seal_sales;       /* sales in a sealed batch */
  metrics_family *write_errors;     /* label error: journal_strerror() */
};

/* Registers the journal's metrics and fills `m`. Loop thread, at open. */
void journal__metrics_init(struct journal_metrics *m);

/* Counts a write the journal refused with `error` (JOURNAL_E*; a
 * conflict is the POS's, not counted). Any thread. */
void journal__count_refusal(journal *j, int error);

/* A monotonic clock in seconds, finer than clock_mono_ms(): for durations. */
double journal__seconds(void);

/* Writes `v` in decimal (no sign for >= 0) to `out`, which has room for 21
 * bytes; returns the length (no NUL written). Any thread. */
size_t journal__format_i64(char *out, int64_t v);

/* Sets `out` to the sale's lines (payments) as the compact JSON that
 * json_dumps(JSON_COMPACT | JSON_PRESERVE_ORDER) makes of them: the bytes the
 * journal's `lines` (`payments`) column has always held, which older agents
 * and the tools read. `out` is reused (grown, never shrunk; NUL-terminated);
 * the caller frees out->data once. 0, or -1 out of memory. Writer thread. */
int journal__lines_json(const struct sale *sale, struct journal_text *out);
int journal__payments_json(const struct sale *sale, struct journal_text *out);

/* The oldest reader of a journal that holds (or is about to hold) compact
 * sale rows (JOURNAL_SCHEMA_V8): agents before schema 8 read JSON rows only. */
#define JOURNAL_COMPACT_READER 8

/* The oldest reader of a journal that holds (or is about to hold) slim
 * sale rows (JOURNAL_SCHEMA_V9, journal.row_format = slim): compact rows
 * whose content_hash is its first JOURNAL_SLIM_HASH_BYTES bytes and whose
 * business_time is '' when sale_time_format prints it again. */
#define JOURNAL_SLIM_READER 9
#define JOURNAL_SLIM_HASH_BYTES 16

/* Records, inside the caller's transaction, that the journal holds compact
 * rows (slim = 0: meta row_format 'compact', oldest reader 8) or slim rows
 * (slim = 1: 'slim', oldest reader 9), raising the oldest reader if it was
 * below (logged once, event=rows_compact or rows_slim, with `cause`).
 * Writes nothing when both are so already. SQLite's code, with `err`. */
int journal__mark_rows(journal *j, int slim, const char *cause, char *err, size_t err_size);

/* Whether a slim row may store the sale's business_time as '': its text is
 * exactly what sale_time_format prints of business_time_ms and the offset.
 * Any thread. */
int journal__time_is_canonical(const struct sale *sale);

/* A row's business_time as the POS sent it into `out` (size bytes): the
 * stored text, or, when a slim row stored '', the canonical text of
 * business_time_ms and utc_offset_min. Every reader of the column goes
 * through it. 0, or -1 when it does not fit (a damaged row). Any thread. */
int journal__sale_time(const char *stored, int64_t ms, int32_t offset_min, char *out,
                       size_t size);

/* A range of rows in clock_pending (schema v7), as held in memory. */
struct journal_clock_range {
  int64_t first_seq, last_seq;
  int64_t wall_minus_boot_ms;
  int64_t first_boot_ms; /* CLOCK_BOOTTIME of its first row (this boot only) */
  int this_boot;
};

/* The wall clock's trust (journal_clock.c). Writer thread once open (the
 * opening thread before); what people see is copied to stats under lock. */
struct journal_clock {
  char boot_id[40];          /* "" = unknown: no range is ever repaired */
  int state;                 /* enum journal_clock_state */
  int64_t build_ms;
  int64_t trusted_ms;        /* newest received_ms read off a trusted clock */
  struct journal_clock_range *ranges; /* seq order */
  size_t count, capacity;
  /* The range the open transaction wrote (staged = 1), kept in `ranges`
   * only once it commits. */
  struct journal_clock_range staged_range;
  int staged, staged_extends;
  int open_range;            /* the last range may be extended by the next rows */
  int64_t forget_below;      /* ranges below it deleted in the open transaction; 0 = none */
  uint64_t check_due_ms;     /* monotonic: look at the clock again; 0 = no need */
  /* The collector's clock less CLOCK_BOOTTIME (journal_clock_reference),
   * copied from the journal's reference_* under its lock. */
  int64_t reference_offset_ms;
  int reference_known;
  int differs_logged; /* collector_differs said for this stretch */
  /* What meta clock_reference holds for this boot (saved_known = 1). */
  int64_t saved_offset_ms;
  int saved_known;
};

struct journal {
  sqlite3 *db;
  struct journal_clock clock;
  struct journal_metrics metrics;
  char *path;
  unsigned group_commit_max;
  int64_t retention_ms;
  /* Of the options, what opening the database again needs (a new journal). */
  int64_t busy_timeout_ms;
  int64_t max_bytes;

  /* Prepared once at open, reset after each use; used by the writer only. */
  sqlite3_stmt *insert_sale;
  sqlite3_stmt *find_sale;
  sqlite3_stmt *begin;
  sqlite3_stmt *commit;
  sqlite3_stmt *rollback;
  sqlite3_stmt *savepoint;
  sqlite3_stmt *release;
  sqlite3_stmt *rollback_to;
  sqlite3_stmt *page_count;
  sqlite3_stmt *set_meta;
  sqlite3_stmt *oldest_unsent;
  sqlite3_stmt *unsealed;
  sqlite3_stmt *has_unsealed;
  sqlite3_stmt *insert_batch;
  sqlite3_stmt *get_batch;
  sqlite3_stmt *attempt_batch;
  sqlite3_stmt *ack_batches;
  sqlite3_stmt *sales_in_batches;
  sqlite3_stmt *acked_above;
  sqlite3_stmt *count_from_seq;
  sqlite3_stmt *delete_unacked_from;
  sqlite3_stmt *expired_batches;
  sqlite3_stmt *delete_batch_sales;
  sqlite3_stmt *delete_batch;
  /* Inventory (schema v5). */
  sqlite3_stmt *insert_adjustment;
  sqlite3_stmt *find_adjustment;
  sqlite3_stmt *bump_seq;
  sqlite3_stmt *start_seq;
  sqlite3_stmt *row_deltas;
  sqlite3_stmt *base_add;
  sqlite3_stmt *delete_batch_adjustments;
  sqlite3_stmt *original_time;
  sqlite3_stmt *insert_name;
  sqlite3_stmt *put_progress;    /* ingest_progress (schema v10) */
  sqlite3_stmt *delete_progress;
  int64_t page_size;
  int64_t max_pages;      /* journal.max_size in pages; 0 = no limit */
  int64_t sale_max_pages; /* what sales may fill; the rest is the uplink's reserve */
  int64_t seal_max_pages; /* what sealing may fill; the rest is for acknowledgements */
  int64_t page_limit_now; /* max_page_count in force on the connection */
  /* Writer thread only: when page_count was last read for stats (journal__seconds;
   * 0 = never). A PRAGMA re-prepares on every step, so it is read at most once a
   * second, not per commit. */
  double page_count_read_at;
  /* Writer thread only: the lines and payments JSON of the sale being inserted,
   * reused from sale to sale (journal__lines_json). */
  struct journal_text lines_text;
  struct journal_text payments_text;
  /* Writer thread only: new sale rows are compact (schema 8: the lines and
   * payments as sale_items_pack makes them, into items_buf, reused). */
  int compact_rows;
  /* Writer thread only: new sale rows are slim (schema 9, compact too). */
  int slim_rows;
  uint8_t *items_buf;
  size_t items_cap;
  /* Writer thread only: a row's encoded deltas (journal__encode_deltas). */
  uint8_t *deltas_buf;
  size_t deltas_cap;

  struct journal_hwm hwm;
  /* The disk reserve (journal.c): PATH-reserve, held while it exists.
   * Writer thread once open. */
  char *reserve_path;
  int reserve_held;
  uint64_t reserve_bytes; /* its size, set at open */
  uint64_t room_bytes;    /* its file system's size, or max_size if smaller; 0 unknown */
  /* The WAL's checkpoint interval in pages, set at open by the room. */
  int64_t wal_pages;
  /* Writer thread only: seqs up to this were reserved before an unclean
   * stop; the next transaction moves the seq counter past them. 0 = none. */
  int64_t skip_to;
  /* Writer thread only: the seq counter (sqlite_sequence 'sales') is
   * reserved ahead, so that a sale's row is the only row a small commit
   * writes (issue 12: AUTOINCREMENT alone rewrites the counter's page in
   * every commit). seq_next is the next seq the open transaction hands
   * out; seq_bound the counter as committed: every seq at or below it is
   * covered, and a group going past it moves the counter to the seq
   * high-water mark's reserve (one page write per JOURNAL_SEQ_RANGE seqs),
   * with meta seq_reserved saying the counter is a reserve, not the last
   * seq (JOURNAL_SQL_COUNTS). */
  int64_t seq_next;
  int64_t seq_bound;
  int64_t seq_bound_pending;
#ifdef JOURNAL_FAULT_HOOKS
  /* journal_fault_rollback_to: set under lock before the writes it is
   * meant for are queued (the queue's lock orders it before the writer). */
  unsigned fault_rollback_to_nth;
  int fault_rollback_to_rc;
#endif

  /* Inventory: what sales consume (options), and on-hand = the base stored
   * at the sealing cursor + the deltas of every row after it, kept on the
   * writer thread (read by any thread under its own lock). */
  stock_explode_fn explode;
  const void *recipes;
  /* The recipes stored in the database, loaded at open and swapped by
   * JOURNAL_OP_RECIPES (writer thread); what `recipes` points to unless
   * the options named a set of their own. */
  struct recipes *recipes_owned;
  int recipes_from_db;
  /* Set at open when the stored stock does not read back (stats
   * stock_error): no deltas are computed or written from then on. */
  int stock_broken;
  int refunds_restock;
  struct stock stock;
  /* Writer thread only: the names the stored deltas refer to (table
   * stock_names), and how many of them are committed (those above were
   * added by the open transaction, forgotten if it is rolled back). */
  struct stock_names names;
  size_t names_committed;
  /* Writer thread only: deltas applied to `stock` by the group's open
   * transaction, undone if it is rolled back (whole, or one write's). */
  struct journal_staged {
    struct stock_deltas deltas;
  } *staged;
  size_t staged_count, staged_capacity;
  /* Writer thread (the opening one at open): where the kept stock figures
   * (meta stock_kept, journal_stock.c) stand. kept_at is stats.last_seq
   * when they were written, kept_moved the rows sealed or unsealed since:
   * JOURNAL_STOCK_KEEP_ROWS of both and they are written again. kept_stale:
   * the stored ones are older than memory (written at a clean stop). */
  int64_t stock_kept_at, stock_kept_moved;
  int stock_kept_stale, stock_keep_failing;
  /* Writer thread: the deltas a seal or an unseal moves out of or back
   * into pending, applied to `stock` once its transaction committed. */
  struct stock_deltas stock_moving;
  /* Writer thread: the unmapped items per SKU of the rows not sealed (the
   * first STOCK_UNMAPPED_SKUS_MAX SKUs), which the kept figures list: an
   * open shows those per SKU, as when it read the rows. */
  struct stock_deltas unmapped_pending;

  /* Writer thread only: the journal was found full (new sales refused). */
  int full;
  uint64_t full_checked_ms;

  pthread_t writer;
  int writer_started;
  /* Guarded by lock: the writer waits for work (its wait loop, nothing
   * taken); the loop thread commits a lone write itself (journal_submit),
   * during which the writer keeps off everything that is "writer thread
   * only"; and the writer waits for that commit to end (then signalled). */
  int writer_waiting;
  int inline_active;
  int writer_parked;
  /* Loop thread only: writes submitted and not yet delivered (done()). */
  size_t in_flight;

  /* Guarded by lock: the queues, the finished lists, the counters. */
  pthread_mutex_t lock;
  pthread_cond_t wake; /* on CLOCK_MONOTONIC, for the retention timeout */
  struct journal_write *queue_head, *queue_tail;
  size_t queued_writes; /* in queue_head..queue_tail */
  size_t queued_sales;  /* their sales (and adjustments) */
  struct journal_write *done_head, *done_tail;
  struct journal_op *op_head, *op_tail;
  struct journal_op *op_done_head, *op_done_tail;
  int stopping;
  struct journal_stats stats;
  /* journal_clock_reference: the collector's clock less CLOCK_BOOTTIME. */
  int64_t reference_offset_ms;
  int reference_known;

  /* Guarded by lock: who group commit expects (see JOURNAL_HOLD_*), kept
   * by the writer and by journal_submit (writes in flight, inline commits). */
  struct journal_cohort {
    double commit_ema_us;     /* a commit's duration, moving average; 0 = none yet */
    size_t window_max;        /* most writes active at a commit's end, this window */
    size_t previous_max;      /* the same for the window before */
    uint64_t window_start_ms; /* monotonic */
  } cohort;

  /* Writer thread only: when retention runs next (monotonic ms). */
  uint64_t retention_due_ms;

  /* Guarded by lock: the recent commands (journal_get_commands), newest
   * first, as stored; kept by the command operations (writer thread). */
  struct journal_command *commands; /* malloc'd; freed by journal_close */
  size_t command_count;
  /* Writer thread (or opening): the first row a running resync has yet to
   * send; retention and pruning delete nothing from it on. 0 = none. */
  int64_t replay_hold_seq;
  /* Opening or writer thread: meta sales_deleted ("retention", "full", "" = never). */
  char sales_deleted_why[16];
  int64_t retention_used_ms; /* writer thread: the retention last run with; 0 = none yet */
  /* Writer thread: stats.oldest_sale_business_ms was last read (monotonic
   * ms), and sales were deleted since (it may be too old). */
  uint64_t oldest_checked_ms;
  int oldest_stale;

  uv_async_t done_async; /* lives inside the journal; freed in its close_cb */
};

/* Maps an SQLite result code to a journal_error. */
int journal__map_sqlite(int sqlite_rc);

/* One int64 from `sql` with ?1 (and ?2, if it has one) bound into *out.
 * SQLite's code. Writer thread, or the opening thread. */
int journal__query_int(journal *j, const char *sql, int64_t a, int64_t b, int64_t *out);

/* Writes the kept count of sales (meta sales_counted: `count` rows at or
 * below seq `upto`, the lowest `lowest`). SQLite's code. Writer thread, or
 * the opening thread. */
int journal__counted_set(journal *j, int64_t count, int64_t upto, int64_t lowest);

/* Steps a statement that returns no rows and resets it: SQLITE_OK or the
 * extended error code. Writer thread. */
int journal__step_done(journal *j, sqlite3_stmt *stmt);

/* Sets PRAGMA max_page_count to `pages` unless it is 0 or already so.
 * SQLITE_OK or an error code. Writer thread (or the opening thread). */
int journal__set_page_limit(journal *j, int64_t pages);

/* 1 if sales may be taken again: free disk or freed pages, and with
 * journal.max_size room below the sales' limit. Writer thread. */
int journal__has_room(journal *j);

/* The disk is full: gives the disk reserve back and checkpoints the WAL
 * into the database file, so that an operation that failed with
 * JOURNAL_EFULL may be tried once more. 1 if either made room, else 0.
 * Logs the free space and the WAL's size. Writer thread. */
int journal__make_room(journal *j);

/* Looks again whether a full journal (j->full) has room for sales: prunes
 * acknowledged history if it has none, and clears the latch (and the
 * status page's "full") once it has. Called by the group commit at most
 * once a second, and by every acknowledgement while full: the ack is what
 * makes the room, so the POS must not wait for the next look. Writer
 * thread. */
void journal__full_recheck(journal *j);

/* The journal's SQLite VFS (journal_vfs.c): the system's, with the WAL's
 * writes of a commit gathered into one write. */
#define JOURNAL_VFS_NAME "pos-journal"

/* Registers JOURNAL_VFS_NAME once per process (not as the default).
 * SQLITE_OK, or SQLite's error. Any thread. */
int journal__vfs_register(void);

/* The WAL's checkpoint interval, in pages, for a journal with `room_bytes`
 * of room (its file system's size, or journal.max_size if smaller; 0 =
 * unknown): a 64th of the room, between 128 and 2048 pages. Pure. */
int64_t journal__wal_pages_for(uint64_t room_bytes, int64_t page_size);

/* The disk reserve's size for a WAL of `wal_pages`: enough for a checkpoint
 * to copy the whole WAL into the database file, 256 KiB at least. Pure. */
uint64_t journal__reserve_bytes_for(int64_t wal_pages, int64_t page_size);

/* Makes the disk reserve file if it is missing and the disk has room for
 * it and more. 0 or -errno. Writer thread (or the opening thread). */
int journal__reserve_ensure(journal *j);

/* Gives the disk reserve back (deletes the file) and latches the journal
 * full for sales (journal__latch_full). 1 if it was held, 0 if not,
 * -errno. Writer thread. */
int journal__reserve_release(journal *j);

/* Sales are refused as "journal full" (j->full, the status page's "full")
 * until journal__full_recheck finds room again. Writer thread. */
void journal__latch_full(journal *j);

/* On a full journal: deletes the oldest acknowledged batches and their
 * sales (at most JOURNAL_RETENTION_CHUNK batches and JOURNAL_PRUNE_SALES
 * sales), before retention would, in a transaction of its own, logging it
 * with `why`. Returns batches plus sales deleted (> 0: room was made), or
 * a negative journal_error. Writer thread. */
int journal__prune_acked(journal *j, const char *why);

/* Runs `op` in its own transaction(s) on the writer thread, filling its
 * outputs and updating the counters. */
void journal__run_op(journal *j, struct journal_op *op);

/* One retention pass of at most JOURNAL_RETENTION_CHUNK batches, as of
 * `now_ms`. Returns 1 if more may be due, 0 when done, or a negative
 * journal_error (with `message` set). Writer thread. */
int journal__retention_chunk(journal *j, int64_t now_ms, int64_t retention_ms,
                             uint64_t *sales_deleted, uint64_t *batches_deleted,
                             char *message, size_t message_size);

/* Reads the uplink's cursor (meta) and the unsent counters into j->stats.
 * On the opening thread, before the writer starts. Returns 0 or -1. */
int journal__load_batch_stats(journal *j);

/* ---- head-office commands and replay (journal_command.c) ------------------- */

/* Reads the commands (journal_get_commands), the retention hold, meta
 * sales_deleted and the oldest sale's business time into the journal. 0 or
 * -1. Opening thread, or the writer while it holds j->lock (a new journal):
 * it takes no lock itself. */
int journal__commands_load(journal *j);

/* JOURNAL_OP_COMMAND, _COMMAND_STATE, _REPLAY_BATCH, _REPLAY_ACK. Writer thread. */
void journal__command_op(journal *j, struct journal_op *op, int64_t now_ms);

/* After sales were deleted (committed): the oldest business time held,
 * and "sales were deleted", into the counters. Writer thread. */
void journal__sales_deleted(journal *j);

/* One row of JOURNAL_SQL_UNSEALED's columns into `out`: -1 when it does
 * not read back. */
int journal__read_sale(sqlite3_stmt *stmt, struct journal_seal_sale *out);

/* Frees `count` sales read by journal__read_sale and the array. */
void journal__free_seal_sales(struct journal_seal_sale *sales, size_t count);

/* ---- inventory (journal_stock.c) ------------------------------------------- */

/* The next seq of the open transaction: sales and adjustments share one
 * counter, reserved ahead for the group (journal.c, journal_cover_seqs). */
int64_t journal__take_seq(journal *j);
/* Inside the open transaction: meta `key` set to `value`. */
int journal__set_meta_int(journal *j, const char *key, int64_t value);

/* Inside the open transaction: journals adjustment `a` (seq from the
 * sales' counter) with its deltas, a count's being its variance against
 * on-hand now. SQLITE_OK with `result` filled (stored or duplicate),
 * SQLITE_CONSTRAINT for a conflict (*conflict_seq), or an error. */
int journal__insert_adjustment(journal *j, const struct stock_adjustment *a, int64_t received_ms,
                               struct journal_item_result *result, int64_t *conflict_seq);

/* A sale's deltas, computed and encoded for its row: *blob (NULL when none;
 * else j->deltas_buf, valid until the next encode) and the decoded list in
 * *deltas. SQLITE_OK or SQLITE_NOMEM. */
int journal__sale_deltas(journal *j, const struct sale *sale, struct stock_deltas *deltas,
                         const uint8_t **blob, size_t *blob_len);

/* A row's deltas in their stored form (*blob NULL when none, else
 * j->deltas_buf, reused: valid until the next encode), giving each new
 * (material, unit) its number in the open transaction. SQLITE_OK or an
 * error. Writer thread. */
int journal__encode_deltas(journal *j, const struct stock_deltas *deltas, const uint8_t **blob,
                           size_t *blob_len);

/* Reads table stock_names into j->names. SQLITE_OK or an error. */
int journal__names_load(journal *j);

/* Applies a stored row's deltas to on-hand and remembers them, so that
 * journal__unstage can take them back. `deltas` is taken (emptied). */
int journal__stage(journal *j, struct stock_deltas *deltas);

/* Takes back every delta staged from index `from` on (a rolled-back write
 * or group). */
void journal__unstage(journal *j, size_t from);

/* The unmapped items of `d` times `sign` into j->unmapped_pending (1: rows
 * journaled or unsealed, -1: sealed or rolled back). Writer thread. */
void journal__unmapped_pending_add(journal *j, const struct stock_deltas *d, int sign);

/* The group committed: its staged deltas stay. */
void journal__staged_commit(journal *j);

/* Loads the stored recipes (unless the options gave a set) and the units
 * of their materials into on-hand. 0 or -1 with `err`. Opening thread. */
int journal__recipes_open(journal *j, char *err, size_t err_size);

/* JOURNAL_OP_RECIPES: applies op->recipes_update in one transaction and
 * swaps the set in force. Writer thread. */
void journal__recipes_op(journal *j, struct journal_op *op);

/*
 * Inside the transaction that imports the sales of the journal moved aside
 * (attached as "previous") above `after_seq`, after them: its recipes, its
 * adjustments above `after_seq` (new seqs after the carried sales), and a
 * stored base such that on-hand stays what it was (old base less the
 * deltas of rows in (after_seq, old sealing cursor], which are sent again);
 * then on-hand and the recipes in force are read back from the new file.
 * Sets j->stats' recipe counters directly (the caller holds j->lock or no
 * writer runs). SQLITE_OK or an error (the caller rolls back).
 */
int journal__stock_import_previous(journal *j, int64_t after_seq);

/* On-hand and the consumption pending at open: the kept figures brought
 * to the journal as it is (the rows journaled, sealed or unsealed since
 * they were written), or, when they cannot be (missing, written before
 * rows were deleted or the base changed otherwise), the stored base plus
 * the deltas of every row above the sealing cursor, once, then kept.
 * SQLITE_OK or an error. Opening thread. */
int journal__stock_rebuild(journal *j);

/* Rows journaled, sealed, unsealed or acknowledged before the kept figures
 * are written again: about what an open reads at most after kill -9. */
#define JOURNAL_STOCK_KEEP_ROWS 1024

/* Inside the open transaction: the kept count of sales (meta
 * sales_counted) moved forward to count the rows up to `upto`, if one is
 * kept. SQLite's code. Writer thread. */
int journal__counted_keep(journal *j, int64_t upto);

/* The sales above the acknowledged prefix (stats.acked_last_seq, read
 * first): the figure the writer kept (journal__stock_keep_due) and the
 * rows journaled or acknowledged since, a rowid range each; counted in
 * full when there is none, or rows it would need were deleted. SQLite's
 * code. Opening thread. */
int journal__count_unsent(journal *j, uint64_t *unsent);

/* Writes the kept figures (stock, and the counts of sales held and not
 * acknowledged) in a transaction of their own when JOURNAL_STOCK_KEEP_ROWS
 * rows were journaled, sealed, unsealed or acknowledged since they were
 * last written, or (force: a clean stop) when anything changed.
 * A failure is logged once and refuses nothing: the figures stored stay
 * right, an open reads more rows. Writer thread, between transactions. */
void journal__stock_keep_due(journal *j, int force);

/* Reads the rows above `after_seq` (to `upto_seq`) with their deltas, seq
 * order, for a seal. SQLITE_OK with *rows (caller frees with
 * journal__free_rows) or an error. Writer thread. */
int journal__read_rows(journal *j, int64_t after_seq, int64_t upto_seq,
                       struct journal_seal_row **rows, size_t *count);
void journal__free_rows(struct journal_seal_row *rows, size_t count);

/* The same from `stmt` (bound by the caller; columns seq, business_time_ms,
 * deltas), which is reset afterwards. Writer thread. */
int journal__read_rows_stmt(journal *j, sqlite3_stmt *stmt, struct journal_seal_row **rows,
                            size_t *count);

/* Inside the seal's transaction: adds `d` (a sealed batch's deltas,
 * aggregated) to the stored base, or subtracts it (sign -1, an unseal). */
int journal__base_add(journal *j, const struct stock_deltas *d, int sign);

/* ---- opening (journal.c) ------------------------------------------------ */

/* sqlite3_exec of `sql`; on failure `err` (may be NULL with size 0) says
 * what failed on `path`. The SQLite result code. */
int journal__exec(sqlite3 *db, const char *sql, char *err, size_t err_size, const char *path);

/* Opens j->path: pragmas, size limit, migrations, statements, counters.
 * 0; JOURNAL_ECORRUPT when SQLite finds the file damaged or not a
 * database; or another journal_error; `err` says what failed. */
int journal__open_db(journal *j, const struct journal_options *options, char *err,
                     size_t err_size);

/* Finalizes the statements and closes the connection; j->db = NULL. */
void journal__close_db(journal *j);

/* Reads the counters (and meta reset_*) into j->stats. 0 or -1 with `err`. */
int journal__load_stats(journal *j, char *err, size_t err_size);

/* Reads meta reset_* into j->stats. */
void journal__load_reset(journal *j);

/* ---- opening a journal that may have lost sales (journal_recover.c) ------- */

/* journal__open_db, then the check against the high-water mark: a damaged
 * database is refused (or moved aside with new_journal_if_damaged), one
 * that lost sales is moved aside for a new journal. 0 or a negative
 * journal_error / -1 with `err`. Opening thread. */
int journal__open_checked(journal *j, const struct journal_options *options, char *err,
                          size_t err_size);

/* JOURNAL_OP_NEW_JOURNAL: moves the database aside and starts a new journal
 * in its place with the unacknowledged sales carried over. Writer thread;
 * holds j->lock while the database is swapped (readers of the counters
 * wait, never see a half-opened journal). */
void journal__new_journal(journal *j, struct journal_op *op);

/* ---- the high-water mark (journal_hwm.c) ---------------------------------- */

/* Opens (creating) PATH-hwm and reads its newest valid slot into j->hwm.
 * Returns 1 when the file holds a valid record, 0 when it is new, empty or
 * unreadable (*damaged = 1 for the latter), or -1 with `err`. */
int journal__hwm_open(journal *j, int *damaged, char *err, size_t err_size);

/* Writes j->hwm: `sync` = both slots and fdatasync (the record must be
 * durable before the caller goes on), else the next slot only. 0 or -errno.
 * The writer thread, or the opening/closing thread while no writer runs. */
int journal__hwm_write(journal *j, int sync);

/* Closes the file. */
void journal__hwm_close(journal *j);

/* ---- the wall clock (journal_clock.c) ------------------------------------ */

/* Reads clock_pending and the newest trusted received_ms, judges the clock
 * now, logs its state when not OK, and fills the stats' clock fields. 0 or
 * -1 with `err`. Opening thread, or the writer while it holds j->lock (a
 * new journal): it takes no lock itself. */
int journal__clock_load(journal *j, char *err, size_t err_size);

/* Before a group is journaled at wall time `wall_ms`: judges the clock
 * (one log line per change of state) and, when it just became trusted (or
 * the collector's time is known), repairs this boot's pending rows in a
 * transaction of its own. Returns the time to stamp the group with:
 * `wall_ms`, or the collector's time when the clock is wrong and that is
 * known. Writer thread. */
int64_t journal__clock_before_group(journal *j, int64_t wall_ms);

/* The best time known now, for what counts from the present (retention):
 * the wall clock when it is trusted; the collector's time when it is not
 * and that is known; else the wall clock, which is then behind the true
 * time (a clock before the build or set back), so that less is deleted,
 * never more. Writer thread. */
int64_t journal__clock_now(journal *j);

/* Inside the group's transaction, after its rows: while the clock is not
 * trusted, the rows the group stored go to clock_pending. SQLITE_OK or an
 * error (the group fails whole: a row must not lose its flag). Writer. */
int journal__clock_stamp(journal *j, const struct journal_write *group, int64_t wall_ms);

/* After the group's transaction: `committed` keeps what stamp staged. */
void journal__clock_settle(journal *j, int committed, int64_t wall_ms);

/* 1 when the writer should call journal__clock_tick now; *deadline_ms
 * (monotonic) lowered to the next check when one is due later. Writer. */
int journal__clock_due(journal *j, uint64_t now_mono_ms, uint64_t *deadline_ms);

/* A periodic look at the clock (every second while it is wrong or rows
 * wait, every 5 s otherwise): repairs once it is trusted. Writer thread. */
void journal__clock_tick(journal *j);

/* The highest seq a new live batch may take: rows of this boot waiting
 * for the clock are held (they would go out with wrong times) for at most
 * JOURNAL_CLOCK_HOLD_MS. INT64_MAX when nothing is held. Writer thread. */
int64_t journal__clock_seal_limit(journal *j);

/* Inside a transaction that deleted rows: the clock_pending ranges (or
 * their parts) below the oldest row still held are deleted, so that they
 * are not counted or walked for ever. SQLITE_OK or an error. Writer thread. */
int journal__clock_forget_deleted(journal *j);

/* After that transaction: `committed` makes memory follow the file (the
 * ranges trimmed there, the counters); else nothing changes. */
void journal__clock_forgotten(journal *j, int committed);

/* 1 if row `seq` is pending in clock_pending (any boot). Writer thread. */
int journal__clock_untrusted(const journal *j, int64_t seq);

/* Frees the ranges. */
void journal__clock_free(journal *j);

#endif
