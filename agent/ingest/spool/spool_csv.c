/*
 * spool_csv.c - the spool's CSV layout into sales (see spool_csv.h).
 *
 * This file knows the layout only: the header, rows grouped into sales,
 * the sale columns repeated on each row, row i holding line i and payment
 * i. The rows of one sale are kept until a row of another sale (or the end
 * of the file) says it is complete; then sale_read() reads it through a
 * text source and applies every rule of the POS contract, so a CSV sale
 * and the same sale in JSON give the same struct sale or the same error.
 */
#include "ingest/spool/spool_csv.h"

#include "platform/csv.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCV_FIELDS_ON_LINE 32 /* cells split on a line: enough to name a header's extra columns */
#define SCV_ROWS_KEPT SALE_LINES_MAX /* at least SALE_PAYMENTS_MAX too */
#define SCV_QUOTE_MAX 40             /* bytes of a cell echoed back in a message */

/* The columns, in the order of the contract. */
enum scv_column {
  SCV_SALE_ID,
  SCV_KIND,
  SCV_ORIGINAL_SALE_ID,
  SCV_TERMINAL_ID,
  SCV_CASHIER_ID,
  SCV_CHANNEL,
  SCV_DELIVERY_PARTNER,
  SCV_BUSINESS_TIME,
  SCV_CURRENCY,
  SCV_TOTAL,
  SCV_SKU, /* the first line column */
  SCV_QTY,
  SCV_UNIT_PRICE,
  SCV_DISCOUNT,
  SCV_PROMO_ID,
  SCV_TAX,
  SCV_PAYMENT_METHOD, /* the first payment column */
  SCV_PAYMENT_AMOUNT,
  SCV_COLUMNS
};

#define SCV_SALE_COLUMNS SCV_SKU
#define SCV_ROW_COLUMNS (SCV_COLUMNS - SCV_SKU) /* the line and payment columns a row keeps */

struct scv_column_info {
  const char *name;  /* in the header */
  enum sale_part part;
  const char *field; /* the contract's name in its part */
  int required;
};

static const struct scv_column_info scv_columns[SCV_COLUMNS] = {
    {"sale_id", SALE_PART_SALE, "sale_id", 1},
    {"kind", SALE_PART_SALE, "kind", 1},
    {"original_sale_id", SALE_PART_SALE, "original_sale_id", 0},
    {"terminal_id", SALE_PART_SALE, "terminal_id", 1},
    {"cashier_id", SALE_PART_SALE, "cashier_id", 0},
    {"channel", SALE_PART_SALE, "channel", 0},
    {"delivery_partner", SALE_PART_SALE, "delivery_partner", 0},
    {"business_time", SALE_PART_SALE, "business_time", 1},
    {"currency", SALE_PART_SALE, "currency", 1},
    {"total", SALE_PART_SALE, "total", 1},
    {"sku", SALE_PART_LINE, "sku", 1},
    {"qty", SALE_PART_LINE, "qty", 1},
    {"unit_price", SALE_PART_LINE, "unit_price", 1},
    {"discount", SALE_PART_LINE, "discount", 0},
    {"promo_id", SALE_PART_LINE, "promo_id", 0},
    {"tax", SALE_PART_LINE, "tax", 0},
    {"payment_method", SALE_PART_PAYMENT, "method", 1},
    {"payment_amount", SALE_PART_PAYMENT, "amount", 1},
};

static const char scv_columns_text[] =
    "sale_id, kind, original_sale_id, terminal_id, cashier_id, channel, delivery_partner, "
    "business_time, currency, total, sku, qty, unit_price, discount, promo_id, tax, "
    "payment_method, payment_amount";
static const char scv_required_text[] =
    "sale_id, kind, terminal_id, business_time, currency, total, sku, qty, unit_price, "
    "payment_method, payment_amount";

/* A kept row of a sale: its line and payment cells, in the arena. */
struct scv_row {
  size_t offset[SCV_ROW_COLUMNS];
  size_t length[SCV_ROW_COLUMNS]; /* 0: empty, the field is absent */
};

/* A sale already read: its sale_id's hash and first row. */
struct scv_seen {
  uint64_t hash; /* 0: a free slot */
  unsigned long row;
};

struct spool_csv {
  struct csv_row *cells;
  int status;                   /* SPOOL_CSV_OK, or the problem every call repeats */
  struct spool_csv_error error; /* that problem */
  int started;                  /* a line was fed (the BOM is looked for on the first) */
  unsigned long last_line;      /* the last line fed */
  int finished;

  /* The header. */
  int have_header;
  unsigned long header_row;
  size_t header_count;
  int column_at[SCV_FIELDS_ON_LINE]; /* the column of each cell of a row */
  int position[SCV_COLUMNS];         /* the cell of each column, -1 when it is not in the file */

  /* The sale being read: its rows since first_row. */
  int pending;
  unsigned long first_row;
  char sale_cells[SCV_SALE_COLUMNS][SPOOL_CSV_CELL_MAX + 1];
  size_t sale_lengths[SCV_SALE_COLUMNS];
  struct scv_row *rows; /* the first SCV_ROWS_KEPT of them */
  size_t rows_kept, rows_capacity;
  size_t line_count, payment_count;
  unsigned long lines_ended, payments_ended; /* the first row without one, 0 while none */
  char *arena;
  size_t arena_used, arena_capacity;

  /* The sales read: to refuse a sale_id that comes back. */
  struct scv_seen *seen;
  size_t seen_count, seen_capacity;

  /* Where sale_read is. */
  enum sale_part part;
  size_t part_index;
};

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

/* Makes decoder->error's text from its row, column, field and message. */
static void scv_error_text(struct spool_csv_error *error)
{
  sale_text_sanitize(error->column);
  sale_text_sanitize(error->sale.field);
  sale_text_sanitize(error->sale.message);
  if (error->column[0])
    snprintf(error->text, sizeof(error->text), "row %lu, column %s: %s", error->row,
             error->column, error->sale.message);
  else if (error->sale.field[0])
    snprintf(error->text, sizeof(error->text), "row %lu: %s: %s", error->row, error->sale.field,
             error->sale.message);
  else
    snprintf(error->text, sizeof(error->text), "row %lu: %s", error->row, error->sale.message);
}

static int scv_fail_status(struct spool_csv *decoder, int status, unsigned long row,
                           const char *column, const char *format, ...)
    __attribute__((format(printf, 5, 6)));

/* Records the decoder's problem (a CSV one: no contract field) and returns `status`. */
static int scv_fail_status(struct spool_csv *decoder, int status, unsigned long row,
                           const char *column, const char *format, ...)
{
  struct spool_csv_error *error = &decoder->error;
  va_list args;

  memset(error, 0, sizeof(*error));
  error->row = row;
  snprintf(error->column, sizeof(error->column), "%s", column ? column : "");
  va_start(args, format);
  vsnprintf(error->sale.message, sizeof(error->sale.message), format, args);
  va_end(args);
  scv_error_text(error);
  decoder->status = status;
  return status;
}

#define scv_fail(decoder, row, column, ...)                                                        \
  scv_fail_status((decoder), SPOOL_CSV_EINVAL, (row), (column), __VA_ARGS__)

static int scv_out_of_memory(struct spool_csv *decoder, unsigned long row)
{
  return scv_fail_status(decoder, SPOOL_CSV_ENOMEM, row, NULL,
                         "the agent ran out of memory reading the sale of this row; the file is "
                         "kept, retry later");
}

/* At most SCV_QUOTE_MAX bytes of `text`, for a message. */
static const char *scv_quote(const char *text, char *out, size_t out_size)
{
  if (strlen(text) > SCV_QUOTE_MAX)
    snprintf(out, out_size, "%.*s...", SCV_QUOTE_MAX, text);
  else
    snprintf(out, out_size, "%s", text);
  return out;
}

/* ------------------------------------------------------------------------ */
/* The header                                                               */

static int scv_read_header(struct spool_csv *decoder, unsigned long row)
{
  size_t count = csv_row_count(decoder->cells);
  char quoted[SCV_QUOTE_MAX + 8];

  for (size_t c = 0; c < SCV_COLUMNS; c++)
    decoder->position[c] = -1;
  for (size_t i = 0; i < count; i++) {
    const char *name = csv_row_field(decoder->cells, i, NULL);
    char number[24];
    int column = 0;

    snprintf(number, sizeof(number), "%zu", i + 1);
    if (name[0] == '\0')
      return scv_fail(decoder, row, number,
                      "the header names no column here; name every column (allowed: %s)",
                      scv_columns_text);
    while (column < SCV_COLUMNS && strcmp(scv_columns[column].name, name) != 0)
      column++;
    if (column == SCV_COLUMNS)
      return scv_fail(decoder, row, scv_quote(name, quoted, sizeof(quoted)),
                      "unknown column (allowed: %s)", scv_columns_text);
    if (decoder->position[column] >= 0)
      return scv_fail(decoder, row, name,
                      "the header names %s twice (columns %d and %zu); name each column once",
                      name, decoder->position[column] + 1, i + 1);
    decoder->position[column] = (int)i;
    decoder->column_at[i] = column;
  }
  for (int column = 0; column < SCV_COLUMNS; column++) {
    if (scv_columns[column].required && decoder->position[column] < 0)
      return scv_fail(decoder, row, scv_columns[column].name,
                      "the header has no column %s; the required columns are %s",
                      scv_columns[column].name, scv_required_text);
  }
  decoder->have_header = 1;
  decoder->header_row = row;
  decoder->header_count = count;
  return SPOOL_CSV_OK;
}

/* ------------------------------------------------------------------------ */
/* The sale being read                                                      */

/* The cell of `column` on the row just split ("" when the file has no such column). */
static const char *scv_cell(const struct spool_csv *decoder, int column, size_t *length)
{
  if (decoder->position[column] < 0) {
    *length = 0;
    return "";
  }
  return csv_row_field(decoder->cells, (size_t)decoder->position[column], length);
}

static uint64_t scv_hash(const char *text)
{
  uint64_t hash = 0xcbf29ce484222325ULL; /* FNV-1a */

  for (; *text; text++) {
    hash ^= (unsigned char)*text;
    hash *= 0x100000001b3ULL;
  }
  return hash ? hash : 1;
}

/* The first row of an earlier sale with this id's hash, or 0. Hashes only
 * (16 bytes a sale, whatever the ids' length): two different ids of one
 * file share a 64-bit hash with odds far below those of a disk error. */
static unsigned long scv_seen_row(const struct spool_csv *decoder, const char *sale_id)
{
  uint64_t hash = scv_hash(sale_id);
  size_t mask = decoder->seen_capacity - 1;

  if (decoder->seen_capacity == 0)
    return 0;
  for (size_t slot = hash & mask; decoder->seen[slot].hash; slot = (slot + 1) & mask) {
    if (decoder->seen[slot].hash == hash)
      return decoder->seen[slot].row;
  }
  return 0;
}

/* Remembers a sale read; -1 when memory ran out. The table stays at most half full. */
static int scv_seen_add(struct spool_csv *decoder, const char *sale_id, unsigned long row)
{
  uint64_t hash = scv_hash(sale_id);
  size_t mask;
  size_t slot;

  if ((decoder->seen_count + 1) * 2 > decoder->seen_capacity) {
    size_t capacity = decoder->seen_capacity ? decoder->seen_capacity * 2 : 64;
    struct scv_seen *seen = calloc(capacity, sizeof(*seen));
    if (!seen)
      return -1;
    for (size_t i = 0; i < decoder->seen_capacity; i++) {
      if (!decoder->seen[i].hash)
        continue;
      for (slot = decoder->seen[i].hash & (capacity - 1); seen[slot].hash;
           slot = (slot + 1) & (capacity - 1))
        ;
      seen[slot] = decoder->seen[i];
    }
    free(decoder->seen);
    decoder->seen = seen;
    decoder->seen_capacity = capacity;
  }
  mask = decoder->seen_capacity - 1;
  for (slot = hash & mask; decoder->seen[slot].hash; slot = (slot + 1) & mask)
    ;
  decoder->seen[slot].hash = hash;
  decoder->seen[slot].row = row;
  decoder->seen_count++;
  return 0;
}

/* Copies `length` bytes and a NUL into the arena at *offset; -1 out of memory. */
static int scv_arena_put(struct spool_csv *decoder, const char *text, size_t length,
                         size_t *offset)
{
  if (decoder->arena_used + length + 1 > decoder->arena_capacity) {
    size_t capacity = decoder->arena_capacity ? decoder->arena_capacity : 4096;
    char *arena;
    while (capacity < decoder->arena_used + length + 1)
      capacity *= 2;
    arena = realloc(decoder->arena, capacity);
    if (!arena)
      return -1;
    decoder->arena = arena;
    decoder->arena_capacity = capacity;
  }
  *offset = decoder->arena_used;
  memcpy(decoder->arena + decoder->arena_used, text, length);
  decoder->arena[decoder->arena_used + length] = '\0';
  decoder->arena_used += length + 1;
  return 0;
}

/* The first non-empty column of `first`..`last` on the row just split, or -1. */
static int scv_first_filled(const struct spool_csv *decoder, int first, int last)
{
  for (int column = first; column <= last; column++) {
    size_t length = 0;
    scv_cell(decoder, column, &length);
    if (length > 0)
      return column;
  }
  return -1;
}

/* Starts a sale at this row: its sale columns, as the row has them. */
static void scv_start_sale(struct spool_csv *decoder, unsigned long row)
{
  decoder->pending = 1;
  decoder->first_row = row;
  decoder->rows_kept = 0;
  decoder->line_count = 0;
  decoder->payment_count = 0;
  decoder->lines_ended = 0;
  decoder->payments_ended = 0;
  decoder->arena_used = 0;
  for (int column = 0; column < SCV_SALE_COLUMNS; column++) {
    size_t length = 0;
    const char *text = scv_cell(decoder, column, &length);
    memcpy(decoder->sale_cells[column], text, length + 1);
    decoder->sale_lengths[column] = length;
  }
}

/* The sale columns of a further row of the sale: the same as its first row's. */
static int scv_check_sale_columns(struct spool_csv *decoder, unsigned long row)
{
  char here[SCV_QUOTE_MAX + 8], there[SCV_QUOTE_MAX + 8];

  for (int column = 0; column < SCV_SALE_COLUMNS; column++) {
    size_t length = 0;
    const char *text = scv_cell(decoder, column, &length);
    if (length == decoder->sale_lengths[column] &&
        memcmp(text, decoder->sale_cells[column], length) == 0)
      continue;
    return scv_fail(decoder, row, scv_columns[column].name,
                    "\"%s\" differs from the sale's first row (row %lu), which has \"%s\"; "
                    "repeat the sale's columns unchanged on each of its rows",
                    scv_quote(text, here, sizeof(here)), decoder->first_row,
                    scv_quote(decoder->sale_cells[column], there, sizeof(there)));
  }
  return SPOOL_CSV_OK;
}

/* Adds the row just split to the sale: its line and its payment, if any. */
static int scv_add_row(struct spool_csv *decoder, unsigned long row)
{
  int line_column = scv_first_filled(decoder, SCV_SKU, SCV_TAX);
  int payment_column = scv_first_filled(decoder, SCV_PAYMENT_METHOD, SCV_PAYMENT_AMOUNT);

  if (line_column < 0 && payment_column < 0)
    return scv_fail(decoder, row, NULL,
                    "the row has neither a line (sku, qty, unit_price, discount, promo_id, tax) "
                    "nor a payment (payment_method, payment_amount); a sale's row i holds its "
                    "line i and its payment i, so remove the empty row");
  if (line_column >= 0 && decoder->lines_ended)
    return scv_fail(decoder, row, scv_columns[line_column].name,
                    "a line of the sale after row %lu, which has none; put the sale's lines on "
                    "its first rows, one per row (rows past the last line leave sku .. tax "
                    "empty)",
                    decoder->lines_ended);
  if (payment_column >= 0 && decoder->payments_ended)
    return scv_fail(decoder, row, scv_columns[payment_column].name,
                    "a payment of the sale after row %lu, which has none; put the sale's "
                    "payments on its first rows, one per row (rows past the last payment leave "
                    "payment_method and payment_amount empty)",
                    decoder->payments_ended);
  if (line_column >= 0)
    decoder->line_count++;
  else
    decoder->lines_ended = row;
  if (payment_column >= 0)
    decoder->payment_count++;
  else
    decoder->payments_ended = row;

  /* Rows past SALE_LINES_MAX are counted above, not kept: the sale has too
   * many lines (or payments), and sale_read says so from the counts. */
  if (decoder->rows_kept == SCV_ROWS_KEPT)
    return SPOOL_CSV_OK;
  if (decoder->rows_kept == decoder->rows_capacity) {
    size_t capacity = decoder->rows_capacity ? decoder->rows_capacity * 4 : 4;
    struct scv_row *rows;
    if (capacity > SCV_ROWS_KEPT)
      capacity = SCV_ROWS_KEPT;
    rows = realloc(decoder->rows, capacity * sizeof(*rows));
    if (!rows)
      return scv_out_of_memory(decoder, row);
    decoder->rows = rows;
    decoder->rows_capacity = capacity;
  }
  for (int column = SCV_SKU; column < SCV_COLUMNS; column++) {
    struct scv_row *kept = &decoder->rows[decoder->rows_kept];
    size_t length = 0;
    const char *text = scv_cell(decoder, column, &length);
    kept->length[column - SCV_SKU] = length;
    kept->offset[column - SCV_SKU] = 0;
    if (length > 0 && scv_arena_put(decoder, text, length, &kept->offset[column - SCV_SKU]))
      return scv_out_of_memory(decoder, row);
  }
  decoder->rows_kept++;
  return SPOOL_CSV_OK;
}

/* ------------------------------------------------------------------------ */
/* The sale as sale_read() asks for it                                      */

static void scv_source_enter(void *state, enum sale_part part, size_t index,
                             struct sale_value *object)
{
  struct spool_csv *decoder = state;

  decoder->part = part;
  decoder->part_index = index;
  /* Only kept rows are asked for: sale_read refuses a count above the
   * maximum before it reads an element. */
  object->type = part == SALE_PART_SALE || index < decoder->rows_kept ? SALE_VALUE_OBJECT
                                                                      : SALE_VALUE_ABSENT;
}

static void scv_text(struct sale_value *value, const char *text, size_t length)
{
  if (length == 0) {
    value->type = SALE_VALUE_ABSENT;
    return;
  }
  value->type = SALE_VALUE_TEXT;
  value->text = text;
  value->length = length;
}

static void scv_source_get(void *state, const char *key, struct sale_value *value)
{
  struct spool_csv *decoder = state;

  value->type = SALE_VALUE_ABSENT;
  if (decoder->part == SALE_PART_SALE && strcmp(key, "lines") == 0) {
    value->type = SALE_VALUE_ARRAY;
    value->count = decoder->line_count;
    return;
  }
  if (decoder->part == SALE_PART_SALE && strcmp(key, "payments") == 0) {
    value->type = SALE_VALUE_ARRAY;
    value->count = decoder->payment_count;
    return;
  }
  for (int column = 0; column < SCV_COLUMNS; column++) {
    if (scv_columns[column].part != decoder->part || strcmp(scv_columns[column].field, key) != 0)
      continue;
    if (decoder->part == SALE_PART_SALE) {
      scv_text(value, decoder->sale_cells[column], decoder->sale_lengths[column]);
    } else if (decoder->part_index < decoder->rows_kept) {
      const struct scv_row *kept = &decoder->rows[decoder->part_index];
      scv_text(value, decoder->arena + kept->offset[column - SCV_SKU],
               kept->length[column - SCV_SKU]);
    }
    return;
  }
}

/* Unknown columns are refused at the header: every field asked about is known. */
static const struct sale_source scv_sale_source = {
    .syntax = SALE_SYNTAX_TEXT,
    .enter = scv_source_enter,
    .get = scv_source_get,
    .check_fields = NULL,
};

/* Reads the pending sale into *sale through the rules: SPOOL_CSV_SALE, or a problem. */
static int scv_complete_sale(struct spool_csv *decoder, struct sale *sale)
{
  struct sale_check check;
  struct spool_csv_error *error = &decoder->error;

  memset(&check, 0, sizeof(check));
  memset(error, 0, sizeof(*error));
  check.error = &error->sale;
  decoder->pending = 0;
  if (sale_read(&scv_sale_source, decoder, &check, sale)) {
    sale_clear(sale);
    error->row = decoder->first_row;
    scv_error_text(error);
    decoder->status = SPOOL_CSV_EINVAL;
    return SPOOL_CSV_EINVAL;
  }
  if (scv_seen_add(decoder, sale->sale_id, decoder->first_row)) {
    sale_clear(sale);
    return scv_out_of_memory(decoder, decoder->first_row);
  }
  return SPOOL_CSV_SALE;
}

/* ------------------------------------------------------------------------ */
/* Rows                                                                     */

/* The cells of a data row, the header's number of them. */
static int scv_check_cell_count(struct spool_csv *decoder, unsigned long row)
{
  size_t count = csv_row_count(decoder->cells);

  if (count < decoder->header_count)
    return scv_fail(decoder, row, scv_columns[decoder->column_at[count]].name,
                    "missing: the row has %zu cells but the header (row %lu) names %zu "
                    "columns; leave a cell empty with nothing between its commas",
                    count, decoder->header_row, decoder->header_count);
  if (count > decoder->header_count)
    return scv_fail(decoder, row, NULL,
                    "the row has %zu cells but the header (row %lu) names %zu columns; quote a "
                    "cell that contains a comma",
                    count, decoder->header_row, decoder->header_count);
  return SPOOL_CSV_OK;
}

/* A row of a sale: the same sale as the rows before it, or the next one. */
static int scv_read_row(struct spool_csv *decoder, unsigned long row, struct sale *sale)
{
  size_t id_length = 0;
  const char *sale_id;
  unsigned long seen_at;
  int status = SPOOL_CSV_OK;
  int rc;
  char quoted[SCV_QUOTE_MAX + 8];

  rc = scv_check_cell_count(decoder, row);
  if (rc)
    return rc;
  sale_id = scv_cell(decoder, SCV_SALE_ID, &id_length);
  if (decoder->pending && id_length == decoder->sale_lengths[SCV_SALE_ID] &&
      memcmp(sale_id, decoder->sale_cells[SCV_SALE_ID], id_length) == 0) {
    rc = scv_check_sale_columns(decoder, row);
    return rc ? rc : scv_add_row(decoder, row);
  }
  /* Another sale: the one before is complete, and its problem, on an
   * earlier row, comes first. */
  if (decoder->pending) {
    status = scv_complete_sale(decoder, sale);
    if (status < 0)
      return status;
  }
  seen_at = id_length > 0 ? scv_seen_row(decoder, sale_id) : 0;
  if (seen_at) {
    sale_clear(sale);
    return scv_fail(decoder, row, "sale_id",
                    "rows of sale %s must be consecutive; it also appears at row %lu",
                    scv_quote(sale_id, quoted, sizeof(quoted)), seen_at);
  }
  scv_start_sale(decoder, row);
  rc = scv_add_row(decoder, row);
  if (rc) {
    sale_clear(sale);
    return rc;
  }
  return status;
}

/* ------------------------------------------------------------------------ */
/* The decoder                                                              */

struct spool_csv *spool_csv_create(void)
{
  struct spool_csv *decoder = calloc(1, sizeof(*decoder));

  if (!decoder)
    return NULL;
  decoder->cells = csv_row_create(SCV_FIELDS_ON_LINE, SPOOL_CSV_CELL_MAX);
  if (!decoder->cells) {
    free(decoder);
    return NULL;
  }
  return decoder;
}

void spool_csv_destroy(struct spool_csv *decoder)
{
  if (!decoder)
    return;
  csv_row_destroy(decoder->cells);
  free(decoder->rows);
  free(decoder->arena);
  free(decoder->seen);
  free(decoder);
}

/* The decoder's problem, for the caller. */
static int scv_answer(struct spool_csv *decoder, int status, struct sale *sale,
                      struct spool_csv_error *error)
{
  if (status < 0) {
    sale_clear(sale);
    *error = decoder->error;
  }
  return status;
}

/* A line the tokenizer refused, named by the header's column when there is one. */
static int scv_split_failed(struct spool_csv *decoder, unsigned long row,
                            const struct csv_error *csv_error)
{
  char number[24];

  if (csv_error->status == CSV_EFIELDS && decoder->have_header)
    return scv_fail(decoder, row, NULL,
                    "the row has %zu cells but the header (row %lu) names %zu columns; quote a "
                    "cell that contains a comma",
                    csv_error->fields_on_line, decoder->header_row, decoder->header_count);
  if (csv_error->status == CSV_EFIELDS)
    return scv_fail(decoder, row, NULL,
                    "the header has %zu columns; a sales file has at most %d, each a field of "
                    "the POS contract named once",
                    csv_error->fields_on_line, SCV_COLUMNS);
  if (decoder->have_header && csv_error->field <= decoder->header_count)
    return scv_fail(decoder, row, scv_columns[decoder->column_at[csv_error->field - 1]].name,
                    "%s", csv_error->message);
  snprintf(number, sizeof(number), "%zu", csv_error->field);
  return scv_fail(decoder, row, number, "%s", csv_error->message);
}

int spool_csv_feed(struct spool_csv *decoder, const char *line, size_t length,
                   unsigned long line_no, struct sale *sale, struct spool_csv_error *error)
{
  struct csv_error csv_error;
  int status;

  memset(sale, 0, sizeof(*sale));
  if (decoder->status < 0)
    return scv_answer(decoder, decoder->status, sale, error);
  if (decoder->finished)
    return scv_answer(decoder,
                      scv_fail(decoder, line_no, NULL,
                               "internal error: a line after the end of the file"),
                      sale, error);
  /* A UTF-8 byte order mark, as spreadsheet programs write it, is not data. */
  if (!decoder->started && length >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
    line += 3;
    length -= 3;
  }
  decoder->started = 1;
  decoder->last_line = line_no;
  if (csv_line_is_empty(line, length))
    return SPOOL_CSV_OK;
  if (csv_split(decoder->cells, line, length, &csv_error) != CSV_OK)
    return scv_answer(decoder, scv_split_failed(decoder, line_no, &csv_error), sale, error);
  if (!decoder->have_header)
    status = scv_read_header(decoder, line_no);
  else
    status = scv_read_row(decoder, line_no, sale);
  return scv_answer(decoder, status, sale, error);
}

int spool_csv_finish(struct spool_csv *decoder, struct sale *sale, struct spool_csv_error *error)
{
  int status = SPOOL_CSV_OK;

  memset(sale, 0, sizeof(*sale));
  if (decoder->status < 0)
    return scv_answer(decoder, decoder->status, sale, error);
  decoder->finished = 1;
  if (!decoder->have_header)
    status = scv_fail(decoder, decoder->last_line + 1, NULL,
                      "the file has no header row; the first row names the columns (required: "
                      "%s)",
                      scv_required_text);
  else if (decoder->pending)
    status = scv_complete_sale(decoder, sale);
  return scv_answer(decoder, status, sale, error);
}
