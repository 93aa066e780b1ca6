/*
 * posdb_int.h - the POS database tailer's reading side, for posdb.c and
 * its tests only.
 *
 * A reader holds a read-only connection to the vendor's SQLite database
 * and reads the sales whose watermark is above a given one, each with its
 * lines and payments, in one short read transaction per batch, and runs
 * every sale through sale_read() (agent/sale/sale_check.h): a batch comes
 * back as validated sales and, for the rows that are not valid, what is
 * wrong with them. It never writes to the vendor's database. Any one
 * thread at a time (posdb.c uses it from libuv's thread pool).
 */
#ifndef AGENT_POSDB_INT_H
#define AGENT_POSDB_INT_H

#include <stddef.h>
#include <stdint.h>

#include "ingest/posdb/posdb.h"
#include "sale/sale.h"
#include "sale/sale_check.h"

/* A row that did not make a sale: its watermark and what was wrong. */
struct posdb_rejected {
  int64_t watermark;
  char sale_key[72];       /* the sales table's key value, as text */
  struct sale_error error; /* field ("lines[1].qty") and message */
};

struct posdb_batch {
  struct sale *sales; /* count entries, each owned (sale_array_free) */
  size_t count;
  int64_t *sale_watermarks; /* the watermark of each sale, count entries */
  struct posdb_rejected *rejected;
  size_t rejected_count;
  int64_t last_watermark;   /* the highest watermark read (valid or not); 0 = none read */
  int full;                 /* the batch stopped at its size: more rows may be waiting */
  int64_t newest_watermark; /* the sales table's highest watermark in that read;
                             * INT64_MIN: the table is empty */
};

struct posdb_reader;


/*
 * Checks the names `options` gives (tables and columns: plain SQL names;
 * constants: 'text' in single quotes) without opening anything: 0, or -1
 * with `err` naming the setting ("[posdb.lines] qty = ...").
 */
int posdb_options_check(const struct posdb_options *options, char *err, size_t err_size);

/*
 * Checks `options` against the database at options->path (tables and
 * mapped columns exist, the watermark column is an INTEGER one) and
 * prepares the reads. Returns the reader, or NULL with `err` saying what
 * is wrong and where ("[posdb.lines] qty = "amount": table sale_items has
 * no column amount (it has: ...)"). A database that cannot be opened yet
 * is an error too: the caller retries.
 */
struct posdb_reader *posdb_reader_open(const struct posdb_options *options, char *err,
                                       size_t err_size);

/*
 * Reads at most options->batch_sales sales with a watermark above `after`
 * into `batch` (zeroed first). 0, or -1 with `err` saying what failed
 * (SQLITE_BUSY past busy_wait included: the caller retries later; nothing
 * of the batch is kept then). Rows that are not valid sales are in
 * batch->rejected, not an error.
 */
int posdb_reader_read(struct posdb_reader *reader, int64_t after, struct posdb_batch *batch,
                      char *err, size_t err_size);

/* Frees what a batch holds and zeroes it. */
void posdb_batch_clear(struct posdb_batch *batch);

/* Closes the connection. NULL does nothing. */
void posdb_reader_close(struct posdb_reader *reader);

#endif
