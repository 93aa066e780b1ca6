/*
 * journal.h - the agent's durable sale journal (SQLite, WAL, synchronous=FULL).
 *
 * One writer thread owns the database connection. Callers on the libuv loop
 * submit writes; the writer takes every write queued at that moment (up to
 * group_commit_max sales) into one transaction, so many concurrent sales
 * share one fsync, and delivers each write's completion back on the loop
 * (uv_async) only after COMMIT returned, i.e. once the sales are on flash.
 *
 * Each write is all-or-nothing (a SAVEPOINT within the group): a sale whose
 * sale_id is already journaled with the same content hash is a duplicate
 * (its first seq is returned, nothing is written); with different content it
 * is a conflict, and none of that write's sales are kept.
 *
 * The same writer thread runs the uplink's work on the journal as
 * operations (journal_submit_op): sealing unsent sales into batches, marking
 * batches acknowledged, unsealing after a 413, and retention. Sale writes go
 * first: the writer runs at most one operation between two groups of sales,
 * so taking sales never waits behind the uplink for longer than one
 * operation, and the loop never waits on SQLite at all.
 *
 * Batches (schema v2): batch_seq counts 1, 2, 3... within the journal_id; a
 * batch covers a contiguous range of seqs, sealed in seq order; its body is
 * the exact bytes sent to the collector and never changes. The batches the
 * collector acknowledged are always a prefix 1..acked_batch_seq (the uplink
 * sends batch N+1 only after N is acknowledged), so "unsent" means a seq
 * above the last seq of batch acked_batch_seq.
 */
#ifndef AGENT_JOURNAL_H
#define AGENT_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "inventory/stock.h"
#include "sale/sale.h"

struct recipes_update; /* inventory/recipes.h */

enum journal_error {
  JOURNAL_OK = 0,
  JOURNAL_ENOMEM = -1,    /* out of memory */
  JOURNAL_EFULL = -2,     /* disk full or journal.max_size reached */
  JOURNAL_EBUSY = -3,     /* the database is locked by another process */
  JOURNAL_EIO = -4,       /* the disk failed a read, write or fsync */
  JOURNAL_ECORRUPT = -5,  /* the database file is damaged */
  JOURNAL_ECLOSED = -6,   /* the journal is closing */
  JOURNAL_ECONFLICT = -7, /* a sale_id is journaled with other content */
  JOURNAL_ESCHEMA = -8,   /* only a newer agent reads the database (its oldest reader) */
  JOURNAL_ENOTFOUND = -9, /* no such batch (deleted by retention, or never sealed) */
  JOURNAL_EINVAL = -10,   /* the operation contradicts the journal's state */
  JOURNAL_ENOSPACE = -11, /* a schema upgrade needs more free disk than there is */
};

/* A short description of `code`, e.g. "disk full". */
const char *journal_strerror(int code);

struct journal_options {
  const char *path;          /* database file; its directory is created */
  int64_t max_bytes;         /* 0 = no limit but the disk's */
  unsigned group_commit_max; /* most sales per transaction; 1 = one per sale */
  int64_t busy_timeout_ms;
  /* Acknowledged sales and batches older than this are deleted, hourly, on
   * the writer thread; 0 = keep everything. Never touches unacknowledged rows. */
  int64_t retention_ms;
  /* A database SQLite finds damaged (SQLITE_CORRUPT, SQLITE_NOTADB) is
   * refused with an error saying what to do, unless this is set: then it is
   * renamed PATH.damaged-<UTC time> (never deleted, for forensics) and a
   * new journal, with a new journal_id, is started in its place. */
  int new_journal_if_damaged;
  /* Inventory (schema v5): each sale's deltas are computed in the
   * transaction that journals it, through the recipes stored in the
   * database (JOURNAL_OP_RECIPES loads them; none stored: no deltas), or,
   * when `explode` is set, through `explode` over `recipes` (borrowed,
   * immutable, read on the writer thread: tests). refunds_restock: refunds
   * and voids put back what their original consumed
   * (inventory.refunds_restock). */
  stock_explode_fn explode;
  const void *recipes;
  int refunds_restock;
  /* New sale rows in the compact form (schema 8, JOURNAL_SCHEMA_V8): the
   * journal's oldest reader becomes 8 at open, so agents before it refuse
   * the journal (journal.compact_rows). Rows already written stay as they
   * are; both forms are always read. */
  int compact_rows;
  /* New sale rows slim (schema 9, JOURNAL_SCHEMA_V9): compact, with a
   * 16-byte content hash and business_time left out when it is the
   * canonical text (sale_time_format); the oldest reader becomes 9 at open
   * (journal.row_format = slim). Implies compact_rows. */
  int slim_rows;
};

typedef struct journal journal;

enum journal_outcome { JOURNAL_STORED = 0, JOURNAL_DUPLICATE = 1 };

struct journal_item_result {
  int64_t seq;
  enum journal_outcome outcome;
};

struct journal_write {
  /* In: borrowed by the journal until done() is called. Either `sales` or
   * `adjustments` (then count is theirs): inventory adjustments share the
   * sales' seq space, so a batch covers one contiguous range of rows of
   * both kinds, and follow the same rules (idempotent by adjustment_id). */
  const struct sale *sales;
  const struct stock_adjustment *adjustments;
  size_t count;
  struct journal_item_result *results; /* count entries, filled on success */
  void (*done)(struct journal_write *write); /* called on the loop thread */
  void *user;
  /* In: 1 when done() may be called from inside journal_submit itself. A
   * lone write that journal_submit commits on the loop thread is then
   * answered at once, not on the loop's next turn through the uv_async: at
   * one sale per POST that turn is an eventfd write, an epoll_wait and a
   * read per sale. 0: done() always comes later, from the loop. */
  int done_in_submit;
  /* In, optional (borrowed like `sales`): an ingest source's name (e.g.
   * "spool") and where it has got to, its own text. When progress_source
   * is set, its row of the journal's progress table is set to
   * progress_position, or deleted when progress_position is NULL, in the
   * same transaction as this write's rows: recorded exactly when they are
   * (not on a conflict, a full journal or a failed commit). Read back with
   * journal_reader_progress. count may be 0 (the position alone). Such a
   * write is never committed on the loop thread (done_in_submit aside). */
  const char *progress_source;
  const char *progress_position;

  /* Out, valid in done(). */
  int error;              /* JOURNAL_OK or a journal_error */
  size_t conflict_index;  /* with JOURNAL_ECONFLICT: which sale or adjustment */
  int64_t conflict_seq;   /* with JOURNAL_ECONFLICT: the seq already holding that id */
  char message[256];      /* with an error: what happened, for people */

  struct journal_write *next; /* the journal's queue link */
  size_t staged_from;         /* the journal's: where this write's deltas begin */
  size_t names_from;          /* the journal's: names it may have added begin here */
};

struct journal_stats {
  char journal_id[33];       /* 32 hex digits */
  uint64_t sales_journaled;  /* rows in the journal (retention deletes old ones) */
  uint64_t sales_unsent;     /* not in a batch the collector acknowledged */
  int64_t oldest_unsent_ms;  /* received_ms of the oldest unsent sale; 0 = none */
  int64_t last_seq;          /* 0 when empty */
  int64_t last_received_ms;  /* 0 when empty */
  int64_t last_batch_seq;    /* highest batch sealed; 0 = none */
  int64_t acked_batch_seq;   /* highest batch acknowledged (all below are too) */
  int64_t acked_last_seq;    /* last seq of batch acked_batch_seq */
  int64_t last_ack_ms;       /* when acked_batch_seq was first acknowledged; 0 = never */
  uint64_t database_bytes;
  uint64_t commits;          /* transactions committed since open */
  uint64_t commits_inline;   /* of the writes since open, those committed on the loop thread
                              * (a lone write, the writer idle: journal_submit) */
  int write_failing;         /* the last write failed */
  int full;                  /* new sales are refused: disk full or at journal.max_size */
  char last_error[256];      /* why, while write_failing */
  /* Set when this journal was started because the one before it lost sales
   * it had handed out (a damaged or deleted WAL, a replaced or restored
   * database) or could not be read: kept in the database, so it stays
   * visible after restarts. previous_journal_id "" = never. */
  char previous_journal_id[33];
  int64_t reset_ms;              /* when the new journal was started */
  uint64_t sales_missing;        /* at least this many sales of the previous journal are
                                  * not in any database the agent reads */
  char reset_reason[1024];       /* what happened, where the old file is, for people */
  uint64_t recipes_in_force;     /* SKUs with a recipe version open now or later */
  uint64_t recipe_versions;      /* every stored version, closed ones included */
  int64_t recipes_loaded_ms;     /* when the set in force was last loaded; 0 = never */
  /* The stored recipes could not be read at open: sales are taken, their
   * stock is not counted until a set is loaded again. "" = none. */
  char recipes_error[512];
  /* The stored stock (material names, on-hand base, rows' deltas) did not
   * read back at open: sales are taken without deltas, adjustments are
   * refused, until a person repairs or replaces the journal. "" = none. */
  char stock_error[512];
  /* The oldest business time a sale in the journal has (0 = none), and
   * whether sales were ever deleted from it (retention, pruning on a full
   * disk) or it was started anew: a resync from before that time cannot
   * replay what is gone. */
  int64_t oldest_sale_business_ms;
  int sales_deleted;
  /* The wall clock (schema v7, journal_clock.c): enum journal_clock_state
   * as of the last write or check. While it is not OK, rows are journaled
   * all the same (a sale is never refused for the clock) and kept in
   * clock_pending until a trusted time corrects their received_ms. */
  int clock_state;
  int64_t clock_build_ms;          /* the build's time: a clock before it is wrong */
  int64_t clock_trusted_ms;        /* newest received_ms read off a trusted clock */
  int64_t clock_wall_ms;           /* what the clock said at that assessment */
  uint64_t clock_pending_rows;     /* rows of this boot waiting for the clock to be set */
  uint64_t clock_unrepaired_rows;  /* rows of boots that ended before it was: flagged */
  uint64_t clock_repaired_rows;    /* rows whose received_ms was corrected since open */
};

/* The wall clock as the journal judges it (journal_stats.clock_state). */
enum journal_clock_state {
  JOURNAL_CLOCK_OK = 0,
  JOURNAL_CLOCK_BEFORE_BUILD = 1,   /* before the build's time: never set (no RTC) */
  JOURNAL_CLOCK_BEHIND_JOURNAL = 2, /* behind the newest row already journaled */
  /* Not what the collector's clock says (journal_clock_reference), and
   * not synchronised by NTP (the kernel's STA_UNSYNC): its rows are
   * corrected from the collector's time at once. */
  JOURNAL_CLOCK_DIFFERS_FROM_COLLECTOR = 3,
};

/*
 * A trusted time: the collector's clock `reference_ms` (from a heartbeat
 * answer), read when CLOCK_BOOTTIME was `boot_ms`. From then on the device
 * clock is judged against it (it wins over the build date and the journal:
 * a clock that agrees with the collector is right even behind rows a wrong
 * clock stamped before), and rows taken while the device clock is wrong
 * are corrected from it. A device clock the kernel says NTP synchronises,
 * after the build and not behind the journal, stays trusted even when it
 * differs from the collector's (logged, not acted on). Loop thread (any
 * thread: it takes the lock).
 */
void journal_clock_reference(journal *j, int64_t reference_ms, int64_t boot_ms);

/* The state's name for status.json and logs: "ok", "before_build",
 * "behind_journal", "differs_from_collector". */
const char *journal_clock_state_name(int state);

/*
 * Opens (creating and migrating as needed) the journal at options->path and
 * starts its writer thread; completions are delivered on `loop`. Returns
 * the journal, or NULL with `err` saying what failed on which file and what
 * to do. Call on the loop thread.
 */
journal *journal_open(uv_loop_t *loop, const struct journal_options *options, char *err,
                      size_t err_size);

/*
 * journal_open, and when it returns NULL, *error (not NULL) says why: a
 * journal_error. JOURNAL_ESCHEMA (the journal's oldest reader is newer than
 * this agent) and JOURNAL_ENOSPACE (an upgrade that rewrites a table does
 * not fit on the disk) are for a person to act on; the file is left as it
 * was. Call on the loop thread.
 */
journal *journal_open_coded(uv_loop_t *loop, const struct journal_options *options, int *error,
                            char *err, size_t err_size);

/* Which agents can read a journal (see journal_compat_read). */
struct journal_compat {
  int present;             /* 0: there is no file at the path (nothing else set) */
  int64_t schema_version;  /* the newest schema step applied */
  int64_t oldest_reader;   /* the oldest schema that reads and writes it (user_version) */
  char oldest_reader_agent[64]; /* pos-agent version that set oldest_reader; "" unknown */
  int agent_schema;        /* this agent's schema */
};

/*
 * Reads the journal at `path` read-only (never created, never migrated, no
 * row written) into `out`: which schema it has and which agents can read
 * it. Not a byte untouched: SQLite opens a WAL journal's -wal and -shm
 * files, and creates them when they are absent (a clean shutdown removes
 * them): an empty -wal, a 32 KiB -shm index; run as root, it gives them
 * the journal's owner, so the agent can still open them. Returns 0 (also
 * for an absent file: out->present = 0), or -1 with `err` saying what
 * failed. Any thread; for pos-agent
 * --journal-compat and the package's preinst.
 */
int journal_compat_read(const char *path, struct journal_compat *out, char *err,
                        size_t err_size);

/*
 * Queues `write`, or commits it at once on the calling thread when it is a
 * lone write (the writer idle, no other write in flight, no crowd of
 * clients lately, commits fast: see JOURNAL_INLINE_MAX_COMMIT_US). Returns
 * 0, and write->done will be called on the loop thread, never from inside
 * this call, with the same outcome either way; or
 * JOURNAL_ECLOSED/JOURNAL_ENOMEM and done is never called. Call on the
 * loop thread.
 */
int journal_submit(journal *j, struct journal_write *write);

/* ---- readers: a connection of one's own, off the loop ------------------- */

/*
 * A read-only connection to the journal's database, for an ingest source
 * that checks its input against the journal before writing (the spool's
 * first pass) and reads back its progress: SQLite's WAL lets it read while
 * the writer commits, without waiting for it. Open, use and close it on
 * one thread at a time (any thread, the loop's included, though its reads
 * may take milliseconds: better a worker's). It sees what was committed
 * when each call starts. A journal replaced while it is open (a new
 * journal: JOURNAL_OP_NEW_JOURNAL) is not followed: open one per task.
 */
typedef struct journal_reader journal_reader;

/* Opens a reader on `j`'s database. NULL with `err` saying why. `j` is
 * only read for its path, which the reader copies. */
journal_reader *journal_reader_open(journal *j, char *err, size_t err_size);

/* Frees `r` and its connection. `r` may be NULL. */
void journal_reader_close(journal_reader *r);

/*
 * Copies the position journaled for `source` (journal_write.progress_*)
 * into `position` (NUL-terminated). Returns 1 found, 0 none,
 * JOURNAL_EINVAL when it does not fit `position_size`, or another
 * journal_error with `err` set.
 */
int journal_reader_progress(journal_reader *r, const char *source, char *position,
                            size_t position_size, char *err, size_t err_size);

/* What the journal holds under a sale's sale_id (journal_reader_find_sale). */
enum journal_sale_state {
  JOURNAL_SALE_ABSENT = 0,    /* not journaled (or deleted by retention) */
  JOURNAL_SALE_SAME = 1,      /* journaled with this content: a write would be a duplicate */
  JOURNAL_SALE_DIFFERENT = 2, /* journaled with other content: a write would conflict */
};

/*
 * Looks `sale`'s sale_id up as a write would: returns a journal_sale_state
 * with *seq the journaled row's seq (0 when absent), or a negative
 * journal_error with `err` set.
 */
int journal_reader_find_sale(journal_reader *r, const struct sale *sale, int64_t *seq, char *err,
                             size_t err_size);

/* ---- operations: the uplink's work on the journal ---------------------- */

/* A place a sale had in a journal before this one (schema v4, table
 * carried): see JOURNAL_OP_NEW_JOURNAL. */
#define JOURNAL_MAX_CARRIED 8 /* the newest places kept per sale in a batch */
struct journal_origin {
  char journal_id[33]; /* 32 hex digits */
  int64_t seq;
};

/* One sale handed to a journal_pack_fn: as the POS sent it, with what the
 * journal added. */
struct journal_seal_sale {
  struct sale sale;    /* lines and payments owned by the journal */
  int64_t seq;
  int64_t received_ms;
  /* received_ms was read off a wall clock that could not be trusted and
   * was not corrected (a boot that ended before the clock was set, or a
   * hold that ran out): the batch says so (Sale.received_ms_untrusted). */
  int received_untrusted;
  /* Set only for a sale carried over from a journal that lost its tail or
   * was a clone's: where it was before, oldest first (owned by the
   * journal). That journal may have sent it: the batch must say so. */
  struct journal_origin *carried;
  size_t carried_count;
};

/* The deltas of one journal row (sale or adjustment) of a new batch. */
struct journal_seal_row {
  int64_t seq;
  int64_t business_time_ms;
  struct stock_deltas deltas; /* owned by the journal */
};

/* What a new batch is made of, for the journal_pack_fn. All borrowed. */
struct journal_seal_input {
  const char *journal_id;                /* 32 hex digits */
  int64_t batch_seq;                     /* the new batch's number */
  int64_t created_ms;
  const struct journal_seal_sale *sales; /* the oldest unsealed sales, seq order */
  size_t count;                          /* >= 0 (0: adjustments only) */
  /* Every unsealed row (sales and adjustments) from the first on, seq
   * order, up to last_seq_all: which of them a batch of the first `used`
   * sales covers is journal_seal_covered's answer. */
  const struct journal_seal_row *rows;
  size_t row_count;                      /* >= 1 */
  /* Where rows other than sales (adjustments) among `rows` were before,
   * when they were carried over from an earlier journal (rarely any):
   * row_origin_seqs[i] is the row, row_origins[i] its earlier place. */
  const int64_t *row_origin_seqs;
  const struct journal_origin *row_origins;
  size_t row_origin_count;
  int64_t last_seq_all;                  /* the last row a batch of every sale covers */
  size_t max_bytes;                      /* cap on the packed body */
  size_t max_decoded_bytes;              /* cap on the body before compression; 0 = none */
  /* A replay batch of this resync (kind REPLAY); NULL = a live batch. */
  const char *resync_id;
};

/*
 * The rows a batch of the first `used` sales of `in` covers: from
 * rows[0].seq to *last_seq (up to the next sale not taken, or last_seq_all
 * when all are), rows[0..*row_count). The journal and the packer both use
 * this, so that the body and the stored range agree.
 */
void journal_seal_covered(const struct journal_seal_input *in, size_t used, int64_t *last_seq,
                          size_t *row_count);

/*
 * Packs the first *used sales of `in` (1 <= *used <= in->count, 0 when
 * count is 0; fewer when all of them would exceed in->max_bytes, or
 * in->max_decoded_bytes before compression), with the inventory deltas of
 * the rows they cover (journal_seal_covered), into the body sent to the
 * collector. Returns 0 with *body (malloc'd; the journal frees it) and
 * *body_len, or a negative journal_error. Runs on the writer thread, so it
 * must only read `in` and its own immutable argument.
 */
typedef int (*journal_pack_fn)(void *pack_arg, const struct journal_seal_input *in,
                               uint8_t **body, size_t *body_len, size_t *used);

/* ---- head-office commands (schema v6) ------------------------------------- */

/* journal_get_commands returns every command not finished (however many:
 * one left out would never be resumed nor reported, and would hold
 * retention for good) and at most this many of those finished in the
 * last 24 hours, the newest. */
#define JOURNAL_FINISHED_COMMANDS_MAX 16
#define JOURNAL_COMMAND_ID_MAX 95
/* Rows a replay batch holds at most (the writer is never held long). */
#define JOURNAL_REPLAY_MAX_SALES 500
/* Seqs one replay operation scans at most, to cut a batch and to count a
 * resync's sales: sales has no index on business time (flash written per
 * sale, issue 12), so a scan is bounded by a window of the seq primary key
 * instead. This bounds how long a resync holds the journal's writer (and
 * the sales waiting behind it) per operation, whatever the journal's size. */
#define JOURNAL_REPLAY_SCAN_ROWS 5000

enum journal_command_kind { JOURNAL_COMMAND_RESYNC = 1, JOURNAL_COMMAND_PUSH_NOW = 2 };

/* A command's state: the values of pos.v1.CommandState. */
enum journal_command_state {
  JOURNAL_COMMAND_RUNNING = 2,
  JOURNAL_COMMAND_DONE = 3,
  JOURNAL_COMMAND_INCOMPLETE = 4,
  JOURNAL_COMMAND_FAILED = 5,
  JOURNAL_COMMAND_CANCELLED = 6,
};

/* One command as the journal holds it. */
struct journal_command {
  char command_id[JOURNAL_COMMAND_ID_MAX + 1];
  int kind;                /* enum journal_command_kind */
  int state;               /* enum journal_command_state */
  int64_t issued_ms;       /* collector clock */
  char issued_by[64];
  int64_t recorded_ms;     /* device clock: when it was recorded here */
  int64_t updated_ms;      /* device clock: when its state last changed */
  int64_t from_ms, to_ms;  /* resync: business times [from, to); to 0 = no bound */
  /* resync: the newest row journaled when it was recorded (rows above are
   * not replayed); push-now: the last seq then (DONE once sent). */
  int64_t upto_seq;
  uint64_t done_sales;     /* resync: sales in acknowledged replay batches */
  uint64_t total_sales;    /* resync: sales in the range the journal holds */
  int64_t available_from_ms; /* resync: set when older history was deleted */
  char incomplete[512];    /* resync: the message it finishes with when INCOMPLETE */
  char message[512];       /* for people: why it failed, what is missing */
  int64_t replay_batch_seq;        /* resync: the last replay batch cut */
  int64_t replay_acked_batch_seq;  /* resync: the last one acknowledged */
  int64_t replay_cut_seq;          /* resync: rows up to here are in cut batches */
  int64_t replay_acked_seq;        /* resync: ... in acknowledged ones */
};

/* 1 for DONE, INCOMPLETE, FAILED and CANCELLED. */
int journal_command_finished(int state);

/* The state's name, lower case ("running", "done", ...). */
const char *journal_command_state_name(int state);

/*
 * Copies the commands (newest first: every one not finished, and those
 * finished lately; see JOURNAL_FINISHED_COMMANDS_MAX) into *out, an array
 * the caller frees, and returns how many (0 with *out NULL when none or
 * out of memory). Any thread.
 */
size_t journal_get_commands(journal *j, struct journal_command **out);

/* Finds command `command_id` among those journal_get_commands returns:
 * 1 with *out filled, or 0. Any thread. */
int journal_find_command(journal *j, const char *command_id, struct journal_command *out);

enum journal_op_kind {
  /* The batch numbered batch_seq: the stored one if it exists (acknowledged
   * or not; its attempts are counted up when the disk has room for that, but
   * a full disk never keeps a stored batch from being resent), else, if it
   * is the next number and an unsealed sale at or below seal_upto_seq
   * exists, a new one sealed now from up to max_sales of the oldest unsealed
   * sales (pack decides how many fit max_bytes and max_decoded_bytes).
   * batch.batch_seq == 0: nothing to send. JOURNAL_EFULL only ever comes
   * from sealing a new batch. */
  JOURNAL_OP_NEXT_BATCH = 1,
  /* Batches 1..batch_seq are acknowledged (clamped to the last sealed). */
  JOURNAL_OP_ACK,
  /* A 413 (or a 400 for a batch over the collector's decoded limit):
   * unacknowledged batches batch_seq and above are deleted and their
   * sales unsealed, to be sealed again smaller. Refused (JOURNAL_EINVAL)
   * for an acknowledged batch. */
  JOURNAL_OP_UNSEAL,
  /* Deletes acknowledged batches and their sales acknowledged before
   * now_ms - retention_ms. The journal also does this by itself hourly. */
  JOURNAL_OP_RETENTION,
  /* The collector says this journal_id belongs to another device (this
   * device runs a copy of that one's disk): the database is moved aside
   * (PATH.damaged-<UTC time>, never deleted), a new journal with a new
   * journal_id is started in its place, and every sale not acknowledged to
   * this device is carried over to it in seq order, to be sealed and sent
   * again from batch 1. `reason` (borrowed) is recorded as the journal's
   * reset_reason (status page, heartbeat). On failure the old file stays
   * or is kept aside and `message` says where. */
  JOURNAL_OP_NEW_JOURNAL,
  /* A recipe set (recipes_update, borrowed) is checked against the stored
   * versions and stored in one transaction (SCD2, recipes_apply), and the
   * set in force is reloaded from the database: later sales explode
   * through it. Refused content: JOURNAL_EINVAL with `message` naming
   * line and field, and the recipes in force stay as they were. */
  JOURNAL_OP_RECIPES,
  /* Records command op->command (command_id, kind, issued_*, from/to; its
   * state RUNNING, or CANCELLED as head office sent it), fsynced before
   * done(): command_changed = 1 when it was new, or a known one not
   * finished was cancelled; a known command is otherwise left as it is
   * (never run twice). A new resync gets its bounds (upto_seq, total_sales)
   * and, when history before `from` was deleted, available_from_ms and the
   * message it will finish with. op->command is then the stored one. */
  JOURNAL_OP_COMMAND,
  /* Sets command op->command->command_id to op->command->state and
   * ->message, unless it is finished already (command_changed = 0). A
   * resync finishing DONE becomes INCOMPLETE when its history was cut. */
  JOURNAL_OP_COMMAND_STATE,
  /* Replay batch op->batch_seq of resync op->command->command_id (must be
   * RUNNING): a batch cut before is made again from the rows of its
   * recorded seq range; the next number is cut now from the rows after the
   * last cut (business time in [from, to), seq <= upto_seq, at most
   * max_sales sales, within max_bytes/max_decoded_bytes), its range
   * recorded before done(). batch.batch_seq == 0: every row was cut. */
  JOURNAL_OP_REPLAY_BATCH,
  /* Replay batches 1..op->batch_seq of resync op->command->command_id are
   * acknowledged: done_sales and the retention hold move. */
  JOURNAL_OP_REPLAY_ACK,
};

/* A sealed batch as stored. */
struct journal_batch {
  int64_t batch_seq;  /* 0 = none */
  int64_t first_seq, last_seq;
  uint32_t sale_count;
  int64_t created_ms;
  int64_t attempts;   /* sends so far, this one included */
  int64_t acked_ms;   /* 0 = not acknowledged */
  uint8_t *body;      /* the exact bytes to send; freed by journal_op_clear */
  size_t body_len;
};

struct journal_op {
  /* In: borrowed by the journal until done() is called. */
  enum journal_op_kind kind;
  int64_t batch_seq;
  int64_t seal_upto_seq;  /* NEXT_BATCH: 0 = never seal, only load */
  size_t max_sales;       /* NEXT_BATCH: most sales in a new batch */
  size_t max_bytes;       /* NEXT_BATCH: cap on a new batch's body */
  size_t max_decoded_bytes; /* NEXT_BATCH: cap on a new batch's body before compression
                             * (the collector's decoded limit); 0 = none */
  journal_pack_fn pack;   /* NEXT_BATCH */
  void *pack_arg;
  int64_t now_ms;         /* wall clock of the operation (0 = now) */
  int64_t retention_ms;   /* RETENTION */
  const char *reason;     /* NEW_JOURNAL: why, for people */
  const struct recipes_update *recipes_update; /* RECIPES */
  void (*done)(struct journal_op *op); /* called on the loop thread */
  void *user;

  /* Out, valid in done(). */
  int error;              /* JOURNAL_OK or a journal_error */
  char message[256];      /* with an error: what happened, for people */
  struct journal_batch batch; /* NEXT_BATCH */
  int sealed;             /* NEXT_BATCH: the batch was sealed by this operation */
  int64_t oldest_batch_seq; /* NEXT_BATCH failing with JOURNAL_ENOTFOUND for a batch
                             * retention deleted: the oldest batch still stored,
                             * 0 = none (the next one sealed is the oldest) */
  uint64_t sales_changed; /* UNSEAL: sales unsealed; RETENTION: sales deleted */
  uint64_t batches_changed; /* ACK: newly acknowledged; UNSEAL, RETENTION: deleted */
  size_t recipes_stored;    /* RECIPES: versions newly stored */
  size_t recipes_unchanged; /* RECIPES: versions already stored the same */
  /* COMMAND, COMMAND_STATE, REPLAY_BATCH, REPLAY_ACK: in and out (borrowed). */
  struct journal_command *command;
  int command_changed;

  struct journal_op *next; /* the journal's queue link */
};

/*
 * Queues `op`. Returns 0, and op->done will be called on the loop thread;
 * or JOURNAL_ECLOSED/JOURNAL_EINVAL and done is never called. Call on the
 * loop thread.
 */
int journal_submit_op(journal *j, struct journal_op *op);

/* Frees what a finished op holds (the batch body). `op` may be NULL. */
void journal_op_clear(struct journal_op *op);

/* Copies the current counters. Any thread. */
void journal_get_stats(journal *j, struct journal_stats *stats);

/* On-hand per material: borrowed, lives as long as the journal; any thread
 * may stock_snapshot it or set thresholds (stock_set_thresholds). */
struct stock *journal_stock(journal *j);

/*
 * Finishes every queued write and operation (their done() callbacks run before this
 * returns), stops the writer, closes the database and frees the journal
 * once its loop handle is closed (run the loop afterwards). Call on the
 * loop thread. `j` may be NULL.
 */
void journal_close(journal *j);

/* ---- fault hooks: test builds only (not with NDEBUG) -------------------- */
#ifndef NDEBUG
#define JOURNAL_FAULT_HOOKS 1
/*
 * The nth ROLLBACK TO of a refused write from now on (1 = the next) fails
 * with `sqlite_rc` without undoing anything, as a failing disk could make
 * it; 0 = off. Call on the loop thread before submitting the writes it is
 * meant for.
 */
void journal_fault_rollback_to(journal *j, unsigned nth, int sqlite_rc);
#endif

#endif
