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
 */
#ifndef AGENT_JOURNAL_H
#define AGENT_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sale/sale.h"

enum journal_error {
  JOURNAL_OK = 0,
  JOURNAL_ENOMEM = -1,    /* out of memory */
  JOURNAL_EFULL = -2,     /* disk full or journal.max_size reached */
  JOURNAL_EBUSY = -3,     /* the database is locked by another process */
  JOURNAL_EIO = -4,       /* the disk failed a read, write or fsync */
  JOURNAL_ECORRUPT = -5,  /* the database file is damaged */
  JOURNAL_ECLOSED = -6,   /* the journal is closing */
  JOURNAL_ECONFLICT = -7, /* a sale_id is journaled with other content */
  JOURNAL_ESCHEMA = -8,   /* the database was made by a newer agent */
};

/* A short description of `code`, e.g. "disk full". */
const char *journal_strerror(int code);

struct journal_options {
  const char *path;          /* database file; its directory is created */
  int64_t max_bytes;         /* 0 = no limit but the disk's */
  unsigned group_commit_max; /* most sales per transaction; 1 = one per sale */
  int64_t busy_timeout_ms;
};

typedef struct journal journal;

enum journal_outcome { JOURNAL_STORED = 0, JOURNAL_DUPLICATE = 1 };

struct journal_item_result {
  int64_t seq;
  enum journal_outcome outcome;
};

struct journal_write {
  /* In: borrowed by the journal until done() is called. */
  const struct sale *sales;
  size_t count;
  struct journal_item_result *results; /* count entries, filled on success */
  void (*done)(struct journal_write *write); /* called on the loop thread */
  void *user;

  /* Out, valid in done(). */
  int error;              /* JOURNAL_OK or a journal_error */
  size_t conflict_index;  /* with JOURNAL_ECONFLICT: which sale */
  int64_t conflict_seq;   /* with JOURNAL_ECONFLICT: the seq already holding that sale_id */
  char message[256];      /* with an error: what happened, for people */

  struct journal_write *next; /* the journal's queue link */
};

struct journal_stats {
  char journal_id[33];       /* 32 hex digits */
  uint64_t sales_journaled;
  uint64_t sales_unsent;     /* not yet acknowledged by the collector */
  int64_t last_seq;          /* 0 when empty */
  int64_t last_received_ms;  /* 0 when empty */
  uint64_t database_bytes;
  uint64_t commits;          /* transactions committed since open */
  int write_failing;         /* the last write failed */
  char last_error[256];      /* why, while write_failing */
};

/*
 * Opens (creating and migrating as needed) the journal at options->path and
 * starts its writer thread; completions are delivered on `loop`. Returns
 * the journal, or NULL with `err` saying what failed on which file and what
 * to do. Call on the loop thread.
 */
journal *journal_open(uv_loop_t *loop, const struct journal_options *options, char *err,
                      size_t err_size);

/*
 * Queues `write`. Returns 0, and write->done will be called on the loop
 * thread; or JOURNAL_ECLOSED/JOURNAL_ENOMEM and done is never called. Call
 * on the loop thread.
 */
int journal_submit(journal *j, struct journal_write *write);

/* Copies the current counters. Any thread. */
void journal_get_stats(journal *j, struct journal_stats *stats);

/*
 * Finishes every queued write (their done() callbacks run before this
 * returns), stops the writer, closes the database and frees the journal
 * once its loop handle is closed (run the loop afterwards). Call on the
 * loop thread. `j` may be NULL.
 */
void journal_close(journal *j);

#endif
