/*
 * spool_csv.h - the spool's CSV files: lines of text in, validated sales
 * out, one sale at a time.
 *
 * The layout (README.md, "Sales as files", for POS integrators):
 * - The first row that is not blank is a header naming the columns, in any
 *   order, by the POS contract's field names. Sale columns: sale_id, kind,
 *   original_sale_id, terminal_id, cashier_id, channel, delivery_partner,
 *   business_time, currency, total. Line columns: sku, qty, unit_price,
 *   discount, promo_id, tax. Payment columns: payment_method,
 *   payment_amount. Required: sale_id, kind, terminal_id, business_time,
 *   currency, total, sku, qty, unit_price, payment_method, payment_amount.
 *   An unknown or repeated name is an error.
 * - Then one row per line of a sale. The rows of a sale are consecutive
 *   and share its sale_id; the sale columns are repeated on each of its
 *   rows, identical. Row i of a sale holds its line i (sku .. tax) and its
 *   payment i (payment_method, payment_amount); the line or the payment
 *   columns are all empty on the rows past the sale's last line or last
 *   payment, and a row with neither is an error. An empty cell is an absent
 *   field. Every row has as many cells as the header has columns.
 * - CSV as platform/csv.h splits it: one record per physical line (a
 *   quoted field never spans lines), "" for a quote inside quotes, blanks
 *   around an unquoted cell dropped, cells of at most SPOOL_CSV_CELL_MAX
 *   bytes. Blank lines (and rows of nothing but commas) are skipped; a
 *   UTF-8 byte order mark before the header is skipped.
 * - Each sale then goes through sale_read() (agent/sale/sale_check.h) as
 *   text (SALE_SYNTAX_TEXT): the same rules, fields ("lines[1].qty") and
 *   messages as the HTTP API's 400 for the same sale in JSON. A sale_id
 *   whose rows come back after another sale's is an error.
 *
 * Memory: one sale's rows (rows past SALE_LINES_MAX are counted, not
 * kept, so that sale_read names how many lines there are), plus 16 bytes
 * per sale of the file to recognise a sale_id that comes back.
 */
#ifndef AGENT_SPOOL_CSV_H
#define AGENT_SPOOL_CSV_H

#include <stddef.h>

#include "sale/sale.h"
#include "sale/sale_check.h"

#define SPOOL_CSV_CELL_MAX 256   /* bytes of one cell, unquoted */
#define SPOOL_CSV_LINE_MAX 16384 /* a caller's line buffer this large takes every valid row */

enum spool_csv_status {
  SPOOL_CSV_SALE = 1,    /* a sale is complete: *sale holds it */
  SPOOL_CSV_OK = 0,      /* the line is taken; no sale complete yet */
  SPOOL_CSV_EINVAL = -1, /* the file is wrong: the error says where and what */
  SPOOL_CSV_ENOMEM = -2, /* the agent ran out of memory: the file may be fine, retry later */
};

struct spool_csv_error {
  /* The file's line (1-based): the first row of the sale for a rule of the
   * POS contract, the row itself for a problem of the CSV (the header's row
   * for the header), the line after the last for a problem at the end. */
  unsigned long row;
  char column[48]; /* the CSV column at fault ("total"; its number in a header), or "" */
  /* field: the contract's path ("lines[1].qty") when a rule of the contract
   * is broken, "" for the CSV's own problems; message: what is wrong and
   * what is expected, for a contract rule exactly the HTTP API's. */
  struct sale_error sale;
  /* All of it, for a person: "row 14: lines[1].qty: \"qty\" is 0; expected
   * 1 to 100000", "row 7, column total: ...". Printable UTF-8. */
  char text[640];
};

struct spool_csv;

/* A decoder for one file. NULL when memory ran out. Destroy with
 * spool_csv_destroy (NULL does nothing). Not shared between threads. */
struct spool_csv *spool_csv_create(void);
void spool_csv_destroy(struct spool_csv *decoder);

/*
 * Takes the file's next physical line: `line` (borrowed, `length` bytes,
 * its line end LF or CRLF may be included) is line `line_no` (1-based,
 * increasing) of the file. When this row starts another sale, the sale
 * before it is complete: SPOOL_CSV_SALE with *sale (zeroed here) holding
 * it, which the caller owns (sale_clear). SPOOL_CSV_OK: the line is taken
 * (a header, a blank line, a row of a sale still being read). Otherwise
 * the first problem, with *sale empty and *error (required) set; the
 * decoder then answers every call with that same problem.
 */
int spool_csv_feed(struct spool_csv *decoder, const char *line, size_t length,
                   unsigned long line_no, struct sale *sale, struct spool_csv_error *error);

/*
 * The end of the file: SPOOL_CSV_SALE with the last sale in *sale (caller
 * owns it), SPOOL_CSV_OK when there is none (a file of a header only holds
 * no sales), or the first problem (a file without a header, the last
 * sale's rules) as spool_csv_feed. Call once; then only destroy.
 */
int spool_csv_finish(struct spool_csv *decoder, struct sale *sale, struct spool_csv_error *error);

#endif
