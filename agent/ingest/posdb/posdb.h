/*
 * posdb.h - sales from the POS vendor's own SQLite database.
 *
 * Some tills cannot call the agent's API: they write every sale into their
 * own database. The tailer reads the new sales from it by a watermark (an
 * INTEGER column of the sales table that grows with every new sale, indexed: an id
 * or a rowid), each with its lines and payments, read-only and in short
 * read transactions (the vendor is never locked out; a vendor transaction
 * that holds the database is waited out up to busy_wait, then the next
 * poll tries again). Every sale goes through the same rules as the API's
 * (agent/sale/sale_check.h) and is journaled with the watermark in the same
 * transaction, so a restart goes on from exactly there: nothing read twice
 * into the journal, nothing skipped. A row that is not a valid sale is
 * logged and counted on /status.json with its watermark and the problem,
 * and skipped: the tail never stops on one bad row.
 *
 * The mapping says which column holds which field of the POS contract (or
 * a constant, written 'EUR' in quotes, for what the vendor does not keep).
 * The sales are assumed to be written by the vendor in one transaction
 * each (a sale with its lines), as SQLite's single writer commits them in
 * watermark order.
 */
#ifndef AGENT_POSDB_H
#define AGENT_POSDB_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "journal/journal.h"

/* The fields a mapping gives, in the POS contract's names. */
enum posdb_field {
  /* the sales table */
  POSDB_SALE_ID = 0,
  POSDB_KIND,
  POSDB_ORIGINAL_SALE_ID,
  POSDB_TERMINAL_ID,
  POSDB_CASHIER_ID,
  POSDB_CHANNEL,
  POSDB_DELIVERY_PARTNER,
  POSDB_BUSINESS_TIME,
  POSDB_CURRENCY,
  POSDB_TOTAL,
  /* the lines table */
  POSDB_SKU,
  POSDB_QTY,
  POSDB_UNIT_PRICE,
  POSDB_DISCOUNT,
  POSDB_PROMO_ID,
  POSDB_TAX,
  /* the payments table, or the sales table when there is none */
  POSDB_METHOD,
  POSDB_AMOUNT,
  POSDB_FIELD_COUNT
};

/* The contract's name of a field ("sale_id", "method"). */
const char *posdb_field_name(enum posdb_field field);

struct posdb_options {
  const char *path;     /* the vendor's database file */
  int64_t poll_ms;      /* between looks when nothing new came */
  int64_t busy_wait_ms; /* how long one read waits for the vendor's writer */
  size_t batch_sales;   /* most sales per read transaction */
  int money_minor;      /* integer money columns hold minor units (1250 = 12.50 EUR) */
  const char *sales_table;
  const char *watermark; /* INTEGER column of sales_table */
  const char *sale_key;  /* column of sales_table the lines and payments refer to */
  const char *lines_table;
  const char *lines_sale_key; /* column of lines_table holding the sale's key */
  const char *lines_order;    /* column of lines_table giving the lines' order; "" = rowid */
  const char *payments_table; /* "" = one payment, from columns of sales_table */
  const char *payments_sale_key;
  /* Per field: a column of its table, a constant in single quotes, or ""
   * (not kept: the field is absent). */
  const char *map[POSDB_FIELD_COUNT];
};

struct posdb_status {
  int enabled;
  int state;                /* 0 idle, 1 reading, 2 waiting for the journal */
  char last_error[256];     /* why the last read failed ("" = it did not) */
  int64_t watermark;        /* the last one journaled */
  int64_t last_poll_ms;     /* wall clock of the last read that came back */
  uint64_t sales_read;      /* valid sales read and journaled (duplicates included) */
  uint64_t sales_stored;    /* of which new in the journal */
  uint64_t rows_rejected;   /* rows that were not valid sales, skipped */
  int64_t vendor_watermark; /* the newest sale's in the vendor's table at the last read */
  int64_t caught_up_ms;     /* wall clock of the last read that found nothing more */
  int64_t last_rejected_watermark;
  char last_rejected[400]; /* "watermark 17 (sale key 17): lines[0].qty: ..." */
};

typedef struct posdb posdb;

/*
 * Starts tailing on `loop` into `j` (borrowed: outlives the tailer). The
 * strings of `options` are copied. The first read starts at once, from the
 * watermark the journal holds for source "posdb". Returns the tailer, or
 * NULL with `err` set (only for what no retry can mend: a mapping that
 * names no column, a bad identifier). A database that does not exist yet
 * or does not match the mapping is reported on the status and retried.
 */
posdb *posdb_start(uv_loop_t *loop, journal *j, const struct posdb_options *options, char *err,
                   size_t err_size);

/* Copies the status. Loop thread. */
void posdb_get_status(posdb *tailer, struct posdb_status *status);

/*
 * Stops: no new read starts; `done(arg)` is called on the loop thread once
 * a read or journal write in flight has finished and the timer is closed;
 * then posdb_destroy may free the tailer. Call before the journal closes.
 */
void posdb_stop(posdb *tailer, void (*done)(void *arg), void *arg);

void posdb_destroy(posdb *tailer);

#endif
