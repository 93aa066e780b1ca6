/*
 * posdb_read.c - reading sales out of the POS vendor's SQLite database.
 *
 * Three prepared statements: the next sales above a watermark, the lines
 * of one sale, its payments. A batch is one deferred read transaction
 * (BEGIN ... COMMIT): the vendor's writer is kept out only while it lasts
 * (rollback journal), or not at all (WAL). Each sale's values are copied
 * out of SQLite into a small arena and handed to sale_read() through a
 * struct sale_source whose values are typed as SQLite has them: TEXT is
 * text, INTEGER an integer, REAL a floating-point number (refused for
 * money: never rounded), NULL absent.
 */
#include "ingest/posdb/posdb_int.h"

#include <ctype.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/codec.h"

#define POSDB_SQL_MAX 2048
#define POSDB_IDENT_MAX 64
/* A value longer than this is cut, with its full length kept: the rules
 * refuse it by its length (no field of the contract is longer than 64). */
#define POSDB_TEXT_MAX 4096
#define POSDB_ROWS_FIRST 16

static const char *const posdb_field_names[POSDB_FIELD_COUNT] = {
    "sale_id",          "kind",          "original_sale_id", "terminal_id", "cashier_id", "channel",
    "delivery_partner", "business_time", "currency",         "total",       "sku",        "qty",
    "unit_price",       "discount",      "promo_id",         "tax",         "method",     "amount",
};

const char *posdb_field_name(enum posdb_field field)
{
  return field < POSDB_FIELD_COUNT ? posdb_field_names[field] : "?";
}

/* Which table a field's column is in. */
enum posdb_table { POSDB_TABLE_SALES, POSDB_TABLE_LINES, POSDB_TABLE_PAYMENTS };

/* One value as read: SQLite's type; its text is copied into the reader's
 * arena at `offset` (value.text points there once the sale is read). */
struct posdb_cell {
  struct sale_value value;
  size_t offset;
};

/* The rows of one table for one sale: `fields` cells per row, for the
 * fields first_field..first_field + fields - 1. */
struct posdb_rows {
  struct posdb_cell *cells;
  size_t count;    /* rows read (may be more than kept: see max) */
  size_t capacity; /* rows room */
  int first_field, fields;
};

struct posdb_reader {
  struct posdb_options options; /* borrowed strings: the caller keeps them */
  sqlite3 *db;
  sqlite3_stmt *sales;    /* watermark, key, then the mapped sale columns */
  sqlite3_stmt *lines;    /* the mapped line columns */
  sqlite3_stmt *payments; /* the mapped payment columns; NULL: from the sales row */
  sqlite3_stmt *newest;   /* the sales table's highest watermark */
  /* Where each field's column is in its statement's result (-1: a
   * constant or not mapped). */
  int column_of[POSDB_FIELD_COUNT];
  /* Reused: one sale's rows, and their text. */
  struct posdb_rows sale_row, lines_rows, payment_rows;
  char *arena;
  size_t arena_used, arena_capacity;
};

/* The source sale_read() reads one sale from. */
struct posdb_source {
  const struct posdb_reader *reader;
  const struct posdb_rows *current_rows;
  const struct posdb_cell *current; /* the current row's cells */
  enum posdb_table current_table;
  unsigned exponent; /* the sale's currency's, for minor units */
  char money_text[PROTO_MONEY_TEXT_MAX];
};

static enum posdb_table posdb_field_table(const struct posdb_options *options,
                                          enum posdb_field field)
{
  if (field >= POSDB_SKU && field <= POSDB_TAX)
    return POSDB_TABLE_LINES;
  if (field >= POSDB_METHOD)
    return options->payments_table[0] ? POSDB_TABLE_PAYMENTS : POSDB_TABLE_SALES;
  return POSDB_TABLE_SALES;
}

static int posdb_is_constant(const char *map) { return map[0] == '\''; }

static int posdb_is_money(enum posdb_field field)
{
  return field == POSDB_TOTAL || field == POSDB_UNIT_PRICE || field == POSDB_DISCOUNT ||
         field == POSDB_TAX || field == POSDB_AMOUNT;
}

/* An identifier we put in SQL: [A-Za-z_][A-Za-z0-9_]*, at most 64 bytes. */
static int posdb_is_identifier(const char *name)
{
  size_t length = strlen(name);

  if (length == 0 || length > POSDB_IDENT_MAX || (name[0] >= '0' && name[0] <= '9'))
    return 0;
  for (size_t i = 0; i < length; i++) {
    char c = name[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
      return 0;
  }
  return 1;
}

/* Appends `format` to the SQL being built; -1 when it does not fit. */
__attribute__((format(printf, 3, 4))) static int posdb_sql_add(char *sql, size_t *used,
                                                               const char *format, ...)
{
  va_list args;
  int written;

  va_start(args, format);
  written = vsnprintf(sql + *used, POSDB_SQL_MAX - *used, format, args);
  va_end(args);
  if (written < 0 || (size_t)written >= POSDB_SQL_MAX - *used)
    return -1;
  *used += (size_t)written;
  return 0;
}

/*
 * Does `table` have `column`? 1, 0, or -1 when the table does not exist.
 * With `type`, the column's declared type is copied there.
 */
static int posdb_has_column(sqlite3 *db, const char *table, const char *column, char *type,
                            size_t type_size, char *columns, size_t columns_size)
{
  sqlite3_stmt *stmt = NULL;
  int found = 0, any = 0;
  size_t used = 0;

  if (sqlite3_prepare_v2(db, "SELECT name, type FROM pragma_table_info(?1)", -1, &stmt, NULL) !=
      SQLITE_OK)
    return -1;
  sqlite3_bind_text(stmt, 1, table, -1, SQLITE_STATIC);
  if (columns_size)
    columns[0] = '\0';
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(stmt, 0);
    const char *declared = (const char *)sqlite3_column_text(stmt, 1);
    any = 1;
    if (columns_size && used < columns_size) {
      int n =
          snprintf(columns + used, columns_size - used, "%s%s", used ? ", " : "", name ? name : "");
      if (n > 0)
        used += (size_t)n;
    }
    if (name && strcasecmp(name, column) == 0) {
      found = 1;
      if (type && type_size)
        snprintf(type, type_size, "%s", declared ? declared : "");
    }
  }
  sqlite3_finalize(stmt);
  return any ? found : -1;
}

/* The config's way of naming a setting, for messages. */
static const char *posdb_section_of(enum posdb_table table)
{
  return table == POSDB_TABLE_LINES      ? "posdb.lines"
         : table == POSDB_TABLE_PAYMENTS ? "posdb.payments"
                                         : "posdb.sales";
}

/* Checks that `column` of `table` exists; `what` names the setting. */
static int posdb_check_column(sqlite3 *db, const char *path, const char *section, const char *what,
                              const char *table, const char *column, char *err, size_t err_size)
{
  char columns[512];
  int has = posdb_has_column(db, table, column, NULL, 0, columns, sizeof(columns));

  if (has < 0) {
    snprintf(err, err_size, "%s: [%s] table = \"%s\": no such table in the POS database", path,
             section, table);
    return -1;
  }
  if (has == 0) {
    snprintf(err, err_size,
             "%s: [%s] %s = \"%s\": table %s has no such column (it has: %s); fix the mapping",
             path, section, what, column, table, columns);
    return -1;
  }
  return 0;
}

/* Prepares `sql`; -1 with err set. */
static int posdb_prepare(struct posdb_reader *reader, const char *sql, sqlite3_stmt **stmt,
                         char *err, size_t err_size)
{
  if (sqlite3_prepare_v3(reader->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL) == SQLITE_OK)
    return 0;
  snprintf(err, err_size, "%s: cannot read the POS database with the mapping given (%s)",
           reader->options.path, sqlite3_errmsg(reader->db));
  return -1;
}

/*
 * Builds "SELECT <first> , <the table's mapped columns> FROM table WHERE
 * <where>": each mapped column's place goes into column_of.
 */
static int posdb_build(struct posdb_reader *reader, enum posdb_table table, const char *first,
                       int first_count, const char *from, const char *tail, sqlite3_stmt **stmt,
                       char *err, size_t err_size)
{
  const struct posdb_options *o = &reader->options;
  char sql[POSDB_SQL_MAX];
  size_t used = 0;
  int column = first_count;

  if (posdb_sql_add(sql, &used, "SELECT %s", first))
    goto too_long;
  for (int f = 0; f < POSDB_FIELD_COUNT; f++) {
    if (posdb_field_table(o, (enum posdb_field)f) != table || !o->map[f][0] ||
        posdb_is_constant(o->map[f]))
      continue;
    if (posdb_sql_add(sql, &used, "%s\"%s\"", column ? ", " : "", o->map[f]))
      goto too_long;
    reader->column_of[f] = column++;
  }
  if (column == 0 && posdb_sql_add(sql, &used, "1"))
    goto too_long;
  if (posdb_sql_add(sql, &used, " FROM \"%s\" %s", from, tail))
    goto too_long;
  return posdb_prepare(reader, sql, stmt, err, err_size);
too_long:
  snprintf(err, err_size, "%s: the mapping makes a query too long for the agent", o->path);
  return -1;
}

static int posdb_check_mapping(struct posdb_reader *reader, char *err, size_t err_size)
{
  const struct posdb_options *o = &reader->options;
  char type[64] = "";
  int has;

  has = posdb_has_column(reader->db, o->sales_table, o->watermark, type, sizeof(type), NULL, 0);
  if (posdb_check_column(reader->db, o->path, "posdb.sales", "watermark", o->sales_table,
                         o->watermark, err, err_size) ||
      posdb_check_column(reader->db, o->path, "posdb.sales", "key", o->sales_table, o->sale_key,
                         err, err_size) ||
      posdb_check_column(reader->db, o->path, "posdb.lines", "sale_key", o->lines_table,
                         o->lines_sale_key, err, err_size))
    return -1;
  for (char *c = type; *c; c++)
    *c = (char)toupper((unsigned char)*c);
  if (has == 1 && !strstr(type, "INT")) {
    snprintf(err, err_size,
             "%s: [posdb.sales] watermark = \"%s\": column %s.%s is declared \"%s\"; the "
             "watermark must be an INTEGER column that grows with every new sale (an id)",
             o->path, o->watermark, o->sales_table, o->watermark, type);
    return -1;
  }
  if (o->lines_order[0] && posdb_check_column(reader->db, o->path, "posdb.lines", "order",
                                              o->lines_table, o->lines_order, err, err_size))
    return -1;
  if (o->payments_table[0] &&
      posdb_check_column(reader->db, o->path, "posdb.payments", "sale_key", o->payments_table,
                         o->payments_sale_key, err, err_size))
    return -1;
  for (int f = 0; f < POSDB_FIELD_COUNT; f++) {
    enum posdb_table table = posdb_field_table(o, (enum posdb_field)f);
    const char *name = table == POSDB_TABLE_LINES      ? o->lines_table
                       : table == POSDB_TABLE_PAYMENTS ? o->payments_table
                                                       : o->sales_table;
    if (!o->map[f][0] || posdb_is_constant(o->map[f]))
      continue;
    if (posdb_check_column(reader->db, o->path, posdb_section_of(table), posdb_field_names[f], name,
                           o->map[f], err, err_size))
      return -1;
  }
  return 0;
}

int posdb_options_check(const struct posdb_options *options, char *err, size_t err_size)
{
  const struct {
    const char *section, *name, *value;
    int optional;
  } names[] = {
      {"posdb.sales", "table", options->sales_table, 0},
      {"posdb.sales", "watermark", options->watermark, 0},
      {"posdb.sales", "key", options->sale_key, 0},
      {"posdb.lines", "table", options->lines_table, 0},
      {"posdb.lines", "sale_key", options->lines_sale_key, 0},
      {"posdb.lines", "order", options->lines_order, 1},
      {"posdb.payments", "table", options->payments_table, 1},
      {"posdb.payments", "sale_key", options->payments_sale_key, !options->payments_table[0]},
  };

  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    if (names[i].optional && !names[i].value[0])
      continue;
    if (!posdb_is_identifier(names[i].value)) {
      snprintf(err, err_size,
               "[%s] %s = \"%s\": %s; give the name of a table or column of the POS "
               "database (letters, digits and _)",
               names[i].section, names[i].name, names[i].value,
               names[i].value[0] ? "is not a plain SQL name" : "is required");
      return -1;
    }
  }
  for (int f = 0; f < POSDB_FIELD_COUNT; f++) {
    const char *map = options->map[f];
    enum posdb_table table = posdb_field_table(options, (enum posdb_field)f);
    size_t length = strlen(map);
    if (!map[0])
      continue;
    if (posdb_is_constant(map)) {
      if (length >= 2 && map[length - 1] == '\'' && !memchr(map + 1, '\'', length - 2))
        continue;
      snprintf(err, err_size,
               "[%s] %s = %s: a constant is written in single quotes, like 'EUR', with no "
               "quote inside",
               posdb_section_of(table), posdb_field_names[f], map);
      return -1;
    }
    if (!posdb_is_identifier(map)) {
      snprintf(err, err_size,
               "[%s] %s = \"%s\": is not a plain SQL column name (letters, digits and _); "
               "name a column, or give a constant in single quotes like 'EUR'",
               posdb_section_of(table), posdb_field_names[f], map);
      return -1;
    }
  }
  return 0;
}

struct posdb_reader *posdb_reader_open(const struct posdb_options *options, char *err,
                                       size_t err_size)
{
  struct posdb_reader *reader = calloc(1, sizeof(*reader));
  char first[POSDB_SQL_MAX], tail[POSDB_SQL_MAX];
  int rc;

  if (!reader) {
    snprintf(err, err_size, "out of memory opening the POS database");
    return NULL;
  }
  reader->options = *options;
  if (posdb_options_check(options, err, err_size))
    goto fail;
  for (int f = 0; f < POSDB_FIELD_COUNT; f++)
    reader->column_of[f] = -1;
  reader->sale_row.first_field = POSDB_SALE_ID;
  reader->sale_row.fields = POSDB_FIELD_COUNT;
  reader->lines_rows.first_field = POSDB_SKU;
  reader->lines_rows.fields = POSDB_TAX - POSDB_SKU + 1;
  reader->payment_rows.first_field = POSDB_METHOD;
  reader->payment_rows.fields = POSDB_AMOUNT - POSDB_METHOD + 1;
  /* Read-only: the agent never writes to the vendor's file. */
  rc = sqlite3_open_v2(options->path, &reader->db, SQLITE_OPEN_READONLY, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, err_size,
             "%s: cannot open the POS database read-only (%s); the agent tries "
             "again at every poll",
             options->path, reader->db ? sqlite3_errmsg(reader->db) : sqlite3_errstr(rc));
    goto fail;
  }
  sqlite3_busy_timeout(reader->db, (int)options->busy_wait_ms);
  if (posdb_check_mapping(reader, err, err_size))
    goto fail;
  snprintf(first, sizeof(first), "\"%s\", \"%s\"", options->watermark, options->sale_key);
  snprintf(tail, sizeof(tail), "WHERE \"%s\" > ?1 ORDER BY \"%s\" LIMIT ?2", options->watermark,
           options->watermark);
  if (posdb_build(reader, POSDB_TABLE_SALES, first, 2, options->sales_table, tail, &reader->sales,
                  err, err_size))
    goto fail;
  snprintf(first, sizeof(first), "SELECT max(\"%s\") FROM \"%s\"", options->watermark,
           options->sales_table);
  if (posdb_prepare(reader, first, &reader->newest, err, err_size))
    goto fail;
  snprintf(tail, sizeof(tail), "WHERE \"%s\" = ?1 ORDER BY %s%s%s LIMIT %d",
           options->lines_sale_key, options->lines_order[0] ? "\"" : "",
           options->lines_order[0] ? options->lines_order : "rowid",
           options->lines_order[0] ? "\"" : "", SALE_LINES_MAX + 1);
  if (posdb_build(reader, POSDB_TABLE_LINES, "", 0, options->lines_table, tail, &reader->lines, err,
                  err_size))
    goto fail;
  if (options->payments_table[0]) {
    snprintf(tail, sizeof(tail), "WHERE \"%s\" = ?1 ORDER BY rowid LIMIT %d",
             options->payments_sale_key, SALE_PAYMENTS_MAX + 1);
    if (posdb_build(reader, POSDB_TABLE_PAYMENTS, "", 0, options->payments_table, tail,
                    &reader->payments, err, err_size))
      goto fail;
  }
  return reader;
fail:
  posdb_reader_close(reader);
  return NULL;
}

void posdb_reader_close(struct posdb_reader *reader)
{
  if (!reader)
    return;
  sqlite3_finalize(reader->sales);
  sqlite3_finalize(reader->lines);
  sqlite3_finalize(reader->payments);
  sqlite3_finalize(reader->newest);
  sqlite3_close(reader->db);
  free(reader->sale_row.cells);
  free(reader->lines_rows.cells);
  free(reader->payment_rows.cells);
  free(reader->arena);
  free(reader);
}

/* Copies `length` bytes of text into the arena: the offset, or -1. */
static int posdb_arena_put(struct posdb_reader *reader, const void *text, size_t length,
                           size_t *offset)
{
  if (reader->arena_used + length + 1 > reader->arena_capacity) {
    size_t capacity = reader->arena_capacity ? reader->arena_capacity : 4096;
    char *grown;
    while (capacity < reader->arena_used + length + 1)
      capacity *= 2;
    grown = realloc(reader->arena, capacity);
    if (!grown)
      return -1;
    reader->arena = grown;
    reader->arena_capacity = capacity;
  }
  *offset = reader->arena_used;
  if (length)
    memcpy(reader->arena + reader->arena_used, text, length);
  reader->arena[reader->arena_used + length] = '\0';
  reader->arena_used += length + 1;
  return 0;
}

/* Copies the value of column `column` of `stmt` into `cell`: 0, or -1 out
 * of memory. */
static int posdb_cell_read(struct posdb_reader *reader, sqlite3_stmt *stmt, int column,
                           struct posdb_cell *cell)
{
  struct sale_value *value = &cell->value;
  const unsigned char *text;
  size_t length, kept;

  memset(value, 0, sizeof(*value));
  switch (sqlite3_column_type(stmt, column)) {
  case SQLITE_NULL:
    value->type = SALE_VALUE_ABSENT;
    return 0;
  case SQLITE_INTEGER:
    value->type = SALE_VALUE_INTEGER;
    value->integer = sqlite3_column_int64(stmt, column);
    return 0;
  case SQLITE_FLOAT:
    value->type = SALE_VALUE_NUMBER;
    return 0;
  default:
    /* TEXT, or a BLOB read as its bytes. */
    text = sqlite3_column_text(stmt, column);
    length = (size_t)sqlite3_column_bytes(stmt, column);
    kept = length > POSDB_TEXT_MAX ? POSDB_TEXT_MAX : length;
    if (posdb_arena_put(reader, text, kept, &cell->offset))
      return -1;
    value->type = SALE_VALUE_TEXT;
    /* A NUL inside (or a cut) leaves `length` longer than the text: the
     * rules refuse it, as they would a JSON "\u0000". */
    value->length = length;
    return 0;
  }
}

/* Row `row` of `rows` from the current row of `stmt` (or, for the sale's
 * own row, its constants too): 0, or -1 out of memory. */
static int posdb_row_read(struct posdb_reader *reader, enum posdb_table table, sqlite3_stmt *stmt,
                          struct posdb_rows *rows, size_t row)
{
  const struct posdb_options *o = &reader->options;
  struct posdb_cell *cells;

  if (row >= rows->capacity) {
    size_t capacity = rows->capacity ? rows->capacity * 2 : POSDB_ROWS_FIRST;
    struct posdb_cell *grown =
        realloc(rows->cells, capacity * (size_t)rows->fields * sizeof(*grown));
    if (!grown)
      return -1;
    rows->cells = grown;
    rows->capacity = capacity;
  }
  cells = &rows->cells[row * (size_t)rows->fields];
  for (int i = 0; i < rows->fields; i++) {
    int f = rows->first_field + i;
    struct posdb_cell *cell = &cells[i];
    memset(cell, 0, sizeof(*cell));
    if (posdb_field_table(o, (enum posdb_field)f) != table)
      continue;
    if (posdb_is_constant(o->map[f])) {
      /* 'EUR': the text between the quotes. */
      size_t length = strlen(o->map[f]);
      length = length >= 2 && o->map[f][length - 1] == '\'' ? length - 2 : length - 1;
      if (posdb_arena_put(reader, o->map[f] + 1, length, &cell->offset))
        return -1;
      cell->value.type = SALE_VALUE_TEXT;
      cell->value.length = length;
    } else if (reader->column_of[f] >= 0 &&
               posdb_cell_read(reader, stmt, reader->column_of[f], cell)) {
      return -1;
    }
  }
  return 0;
}

/* Points the text cells of the first `count` rows into the arena (done
 * once all rows are read: the arena may have moved while they were). */
static void posdb_rows_fix(struct posdb_reader *reader, struct posdb_rows *rows, size_t count)
{
  for (size_t i = 0; i < count * (size_t)rows->fields; i++)
    if (rows->cells[i].value.type == SALE_VALUE_TEXT)
      rows->cells[i].value.text = reader->arena + rows->cells[i].offset;
}

/* ---- the source sale_read() reads ---------------------------------------- */

static void posdb_source_enter(void *state, enum sale_part part, size_t index,
                               struct sale_value *object)
{
  struct posdb_source *source = state;
  const struct posdb_reader *reader = source->reader;

  object->type = SALE_VALUE_OBJECT;
  if (part == SALE_PART_LINE) {
    source->current_rows = &reader->lines_rows;
    source->current_table = POSDB_TABLE_LINES;
  } else if (part == SALE_PART_PAYMENT) {
    source->current_rows = &reader->payment_rows;
    source->current_table = POSDB_TABLE_PAYMENTS;
  } else {
    source->current_rows = &reader->sale_row;
    source->current_table = POSDB_TABLE_SALES;
    index = 0;
  }
  source->current = &source->current_rows->cells[index * (size_t)source->current_rows->fields];
}

static void posdb_source_get(void *state, const char *key, struct sale_value *value)
{
  struct posdb_source *source = state;
  const struct posdb_rows *rows = source->current_rows;
  const struct posdb_reader *reader = source->reader;

  value->type = SALE_VALUE_ABSENT;
  if (source->current_table == POSDB_TABLE_SALES && strcmp(key, "lines") == 0) {
    value->type = SALE_VALUE_ARRAY;
    value->count = reader->lines_rows.count;
    return;
  }
  if (source->current_table == POSDB_TABLE_SALES && strcmp(key, "payments") == 0) {
    value->type = SALE_VALUE_ARRAY;
    value->count = reader->payment_rows.count;
    return;
  }
  for (int i = 0; i < rows->fields; i++) {
    int f = rows->first_field + i;
    if (source->current_table == POSDB_TABLE_SALES && f > POSDB_TOTAL)
      break;
    if (strcmp(posdb_field_names[f], key) != 0)
      continue;
    *value = source->current[i].value;
    /* Money kept as minor units: the text the contract wants, in the
     * sale's currency (read before any money field). */
    if (value->type == SALE_VALUE_INTEGER && reader->options.money_minor &&
        posdb_is_money((enum posdb_field)f)) {
      proto_money_format(value->integer, source->exponent, source->money_text,
                         sizeof(source->money_text));
      value->type = SALE_VALUE_TEXT;
      value->text = source->money_text;
      value->length = strlen(source->money_text);
    }
    return;
  }
}

static const struct sale_source posdb_sale_source = {
    .syntax = SALE_SYNTAX_TEXT,
    .enter = posdb_source_enter,
    .get = posdb_source_get,
    .check_fields = NULL, /* the mapping names only the contract's fields */
};

/* Reads the rows of `stmt` (bound to one sale's key) into `rows`, at most
 * `max` kept, all counted. SQLITE_DONE, an error, or SQLITE_NOMEM. */
static int posdb_read_rows(struct posdb_reader *reader, enum posdb_table table, sqlite3_stmt *stmt,
                           struct posdb_rows *rows, size_t max)
{
  int rc;

  rows->count = 0;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    if (rows->count < max && posdb_row_read(reader, table, stmt, rows, rows->count)) {
      rc = SQLITE_NOMEM;
      break;
    }
    rows->count++;
  }
  sqlite3_reset(stmt);
  if (rows->count > max)
    rows->count = max; /* the rules refuse max (one past the contract's limit) */
  return rc;
}

/* Grows the batch's arrays for one more sale or rejected row. */
static int posdb_batch_room(struct posdb_batch *batch, size_t batch_sales)
{
  if (!batch->sales) {
    batch->sales = calloc(batch_sales, sizeof(*batch->sales));
    batch->sale_watermarks = calloc(batch_sales, sizeof(*batch->sale_watermarks));
    batch->rejected = calloc(batch_sales, sizeof(*batch->rejected));
    if (!batch->sales || !batch->sale_watermarks || !batch->rejected)
      return -1;
  }
  return 0;
}

/* The sales table's highest watermark (for the status's lag): max() of
 * an indexed column (an id, the rowid) is one lookup. INT64_MIN when the
 * table is empty. */
static int posdb_newest(struct posdb_reader *reader, int64_t *newest, int *rc)
{
  *rc = sqlite3_step(reader->newest);
  if (*rc == SQLITE_ROW)
    *newest = sqlite3_column_type(reader->newest, 0) == SQLITE_NULL
                  ? INT64_MIN
                  : sqlite3_column_int64(reader->newest, 0);
  sqlite3_reset(reader->newest);
  return *rc == SQLITE_ROW ? 0 : -1;
}

int posdb_reader_read(struct posdb_reader *reader, int64_t after, struct posdb_batch *batch,
                      char *err, size_t err_size)
{
  const struct posdb_options *o = &reader->options;
  int rc;
  int in_transaction = 0;

  memset(batch, 0, sizeof(*batch));
  if (posdb_batch_room(batch, o->batch_sales)) {
    snprintf(err, err_size, "out of memory reading the POS database");
    goto fail;
  }
  rc = sqlite3_exec(reader->db, "BEGIN", NULL, NULL, NULL);
  if (rc != SQLITE_OK)
    goto sqlite_fail;
  in_transaction = 1;
  sqlite3_bind_int64(reader->sales, 1, after);
  sqlite3_bind_int64(reader->sales, 2, (sqlite3_int64)o->batch_sales);
  while ((rc = sqlite3_step(reader->sales)) == SQLITE_ROW) {
    struct posdb_source source;
    struct sale_check check;
    struct sale_error error;
    struct sale *sale = &batch->sales[batch->count];
    int64_t watermark = sqlite3_column_int64(reader->sales, 0);
    const struct sale_value *currency;
    int exponent;

    batch->last_watermark = watermark;
    reader->arena_used = 0;
    if (posdb_row_read(reader, POSDB_TABLE_SALES, reader->sales, &reader->sale_row, 0)) {
      rc = SQLITE_NOMEM;
      goto sqlite_fail;
    }
    reader->sale_row.count = 1;
    sqlite3_bind_value(reader->lines, 1, sqlite3_column_value(reader->sales, 1));
    rc = posdb_read_rows(reader, POSDB_TABLE_LINES, reader->lines, &reader->lines_rows,
                         SALE_LINES_MAX + 1);
    if (rc != SQLITE_DONE)
      goto sqlite_fail;
    if (reader->payments) {
      sqlite3_bind_value(reader->payments, 1, sqlite3_column_value(reader->sales, 1));
      rc = posdb_read_rows(reader, POSDB_TABLE_PAYMENTS, reader->payments, &reader->payment_rows,
                           SALE_PAYMENTS_MAX + 1);
      if (rc != SQLITE_DONE)
        goto sqlite_fail;
    } else {
      /* One payment from the sales row, or none when both columns are
       * empty (a sale of 0). */
      struct posdb_rows *payments = &reader->payment_rows;
      const struct posdb_cell *method = &reader->sale_row.cells[POSDB_METHOD];
      const struct posdb_cell *amount = &reader->sale_row.cells[POSDB_AMOUNT];
      if (payments->capacity == 0 &&
          posdb_row_read(reader, POSDB_TABLE_PAYMENTS, NULL, payments, 0)) {
        rc = SQLITE_NOMEM;
        goto sqlite_fail;
      }
      payments->cells[0] = *method;
      payments->cells[1] = *amount;
      payments->count =
          method->value.type != SALE_VALUE_ABSENT || amount->value.type != SALE_VALUE_ABSENT;
    }
    posdb_rows_fix(reader, &reader->sale_row, 1);
    posdb_rows_fix(reader, &reader->lines_rows, reader->lines_rows.count);
    posdb_rows_fix(reader, &reader->payment_rows, reader->payment_rows.count);

    memset(&source, 0, sizeof(source));
    source.reader = reader;
    currency = &reader->sale_row.cells[POSDB_CURRENCY].value;
    exponent = currency->type == SALE_VALUE_TEXT ? sale_currency_exponent(currency->text) : -1;
    source.exponent = exponent < 0 ? 2 : (unsigned)exponent;
    memset(&check, 0, sizeof(check));
    memset(&error, 0, sizeof(error));
    check.error = &error;
    memset(sale, 0, sizeof(*sale));
    if (sale_read(&posdb_sale_source, &source, &check, sale) == 0) {
      batch->sale_watermarks[batch->count] = watermark;
      batch->count++;
    } else {
      struct posdb_rejected *rejected = &batch->rejected[batch->rejected_count++];
      const unsigned char *key = sqlite3_column_text(reader->sales, 1);
      sale_clear(sale);
      rejected->watermark = watermark;
      snprintf(rejected->sale_key, sizeof(rejected->sale_key), "%s", key ? (const char *)key : "");
      sale_text_sanitize(rejected->sale_key);
      rejected->error = error;
    }
  }
  if (rc != SQLITE_DONE)
    goto sqlite_fail;
  sqlite3_reset(reader->sales);
  batch->full = batch->count + batch->rejected_count >= o->batch_sales;
  if (posdb_newest(reader, &batch->newest_watermark, &rc))
    goto sqlite_fail;
  rc = sqlite3_exec(reader->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK)
    goto sqlite_fail;
  return 0;

sqlite_fail:
  snprintf(err, err_size, "%s: reading the POS database failed: %s%s", o->path,
           sqlite3_errmsg(reader->db),
           (rc & 0xff) == SQLITE_BUSY
               ? " (the POS held it longer than [posdb] busy_wait; trying again at the next poll)"
               : "");
fail:
  sqlite3_reset(reader->sales);
  sqlite3_reset(reader->lines);
  if (reader->payments)
    sqlite3_reset(reader->payments);
  if (in_transaction)
    sqlite3_exec(reader->db, "ROLLBACK", NULL, NULL, NULL);
  posdb_batch_clear(batch);
  return -1;
}

void posdb_batch_clear(struct posdb_batch *batch)
{
  if (!batch)
    return;
  if (batch->sales)
    for (size_t i = 0; i < batch->count; i++)
      sale_clear(&batch->sales[i]);
  free(batch->sales);
  free(batch->sale_watermarks);
  free(batch->rejected);
  memset(batch, 0, sizeof(*batch));
}
