/*
 * test_spool_csv.c - the spool's CSV files (agent/ingest/spool/spool_csv.c).
 *
 * A file of sales decodes into the same struct sales as the same sales in
 * JSON through the POS API's parser (equal content hashes); a sale that
 * breaks a rule of the contract gets the JSON path's field and message,
 * at the sale's first row; the CSV's own mistakes name the row and the
 * column. Files are fed line by line, as the spool reads them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ingest/http/sale_json.h"
#include "ingest/spool/spool_csv.h"
#include "sale/sale.h"

#define DECODED_MAX 8

struct decoded {
  struct sale sales[DECODED_MAX];
  size_t count;
  unsigned long returned_at[DECODED_MAX]; /* the line that completed each sale; 0: the end */
  int status;
  struct spool_csv_error error;
};

/* Feeds `text` line by line (each with its LF), then finishes. */
static int decode(const char *text, struct decoded *out)
{
  struct spool_csv *decoder = spool_csv_create();
  const char *p = text;
  unsigned long line_no = 0;
  int rc = SPOOL_CSV_OK;
  struct sale sale;

  assert_non_null(decoder);
  memset(out, 0, sizeof(*out));
  while (*p) {
    const char *newline = strchr(p, '\n');
    size_t length = newline ? (size_t)(newline - p) + 1 : strlen(p);
    rc = spool_csv_feed(decoder, p, length, ++line_no, &sale, &out->error);
    if (rc < 0)
      break;
    if (rc == SPOOL_CSV_SALE) {
      assert_true(out->count < DECODED_MAX);
      out->returned_at[out->count] = line_no;
      out->sales[out->count++] = sale;
    }
    p += length;
  }
  if (rc >= 0) {
    rc = spool_csv_finish(decoder, &sale, &out->error);
    if (rc == SPOOL_CSV_SALE) {
      assert_true(out->count < DECODED_MAX);
      out->returned_at[out->count] = 0;
      out->sales[out->count++] = sale;
    }
  }
  /* After a problem, every call answers with it again. */
  if (rc < 0) {
    struct spool_csv_error again;
    assert_int_equal(spool_csv_finish(decoder, &sale, &again), rc);
    assert_string_equal(again.text, out->error.text);
    assert_int_equal(sale.line_count, 0);
  }
  spool_csv_destroy(decoder);
  out->status = rc < 0 ? rc : 0;
  return out->status;
}

static void decoded_free(struct decoded *decoded)
{
  for (size_t i = 0; i < decoded->count; i++)
    sale_clear(&decoded->sales[i]);
  decoded->count = 0;
}

static const char header[] =
    "sale_id,kind,original_sale_id,terminal_id,cashier_id,channel,delivery_partner,"
    "business_time,currency,total,sku,qty,unit_price,discount,promo_id,tax,payment_method,"
    "payment_amount\n";

/* ------------------------------------------------------------------------ */
/* A good file                                                              */

static const char good_csv[] =
    "\xEF\xBB\xBF"
    "total,sale_id,kind,original_sale_id,terminal_id,cashier_id,channel,delivery_partner,"
    "business_time,currency,sku,qty,unit_price,discount,promo_id,tax,payment_method,"
    "payment_amount\r\n"
    "26.30,T1-000123,sale,,T1,E042,pos,,2026-11-21T18:42:05+01:00,EUR,PIZZA-MARG-L,2,12.50,"
    "1.00,TPR-42,2.30,card,26.30\r\n"
    "\r\n"
    "41.00,T1-000124,sale,,T1,E042,delivery,\"Riders, Inc\",2026-11-21T19:00:00+01:00,EUR,"
    "PIZZA-MARG-L,1,12.50,,,,card,30.00\r\n"
    "41.00,T1-000124,sale,,T1,E042,delivery,\"Riders, Inc\",2026-11-21T19:00:00+01:00,EUR,"
    "\"COLA \"\"XL\"\"\",3,2.50,,,,cash,11.00\r\n"
    ",,,,,,,,,,,,,,,,,\r\n"
    "41.00, T1-000124 ,sale,,T1,E042,delivery,\"Riders, Inc\",2026-11-21T19:00:00+01:00,EUR,"
    "TIRAMISU,1,21.00,0.50,,0.50,,\r\n"
    "5.00,T2-000007,refund,T1-000123,T2,,pos,,2026-11-21T20:00:00Z,EUR,PIZZA-MARG-L,1,5.00,,,,"
    "card,3.00\r\n"
    "5.00,T2-000007,refund,T1-000123,T2,,pos,,2026-11-21T20:00:00Z,EUR,,,,,,,cash,2.00\r\n"
    "3600,T3-1,sale,,T3,E1,pickup,,2026-11-22T09:15:00.250+09:00,JPY,RAMEN,2,1200,,,,card,3600\n"
    "3600,T3-1,sale,,T3,E1,pickup,,2026-11-22T09:15:00.250+09:00,JPY,GYOZA,1,1000,,,,,\n"
    "3600,T3-1,sale,,T3,E1,pickup,,2026-11-22T09:15:00.250+09:00,JPY,TEA,1,200,,,,,";

static const char good_json[] =
    "[{\"sale_id\": \"T1-000123\", \"kind\": \"sale\", \"terminal_id\": \"T1\","
    " \"cashier_id\": \"E042\", \"channel\": \"pos\","
    " \"business_time\": \"2026-11-21T18:42:05+01:00\", \"currency\": \"EUR\","
    " \"lines\": [{\"sku\": \"PIZZA-MARG-L\", \"qty\": 2, \"unit_price\": \"12.50\","
    " \"discount\": \"1.00\", \"promo_id\": \"TPR-42\", \"tax\": \"2.30\"}],"
    " \"payments\": [{\"method\": \"card\", \"amount\": \"26.30\"}], \"total\": \"26.30\"},"
    " {\"sale_id\": \"T1-000124\", \"kind\": \"sale\", \"terminal_id\": \"T1\","
    " \"cashier_id\": \"E042\", \"channel\": \"delivery\", \"delivery_partner\": \"Riders, Inc\","
    " \"business_time\": \"2026-11-21T19:00:00+01:00\", \"currency\": \"EUR\","
    " \"lines\": [{\"sku\": \"PIZZA-MARG-L\", \"qty\": 1, \"unit_price\": \"12.50\"},"
    " {\"sku\": \"COLA \\\"XL\\\"\", \"qty\": 3, \"unit_price\": \"2.50\"},"
    " {\"sku\": \"TIRAMISU\", \"qty\": 1, \"unit_price\": \"21.00\", \"discount\": \"0.50\","
    " \"tax\": \"0.50\"}],"
    " \"payments\": [{\"method\": \"card\", \"amount\": \"30.00\"},"
    " {\"method\": \"cash\", \"amount\": \"11.00\"}], \"total\": \"41.00\"},"
    " {\"sale_id\": \"T2-000007\", \"kind\": \"refund\", \"original_sale_id\": \"T1-000123\","
    " \"terminal_id\": \"T2\", \"channel\": \"pos\", \"business_time\": \"2026-11-21T20:00:00Z\","
    " \"currency\": \"EUR\", \"lines\": [{\"sku\": \"PIZZA-MARG-L\", \"qty\": 1,"
    " \"unit_price\": \"5.00\"}], \"payments\": [{\"method\": \"card\", \"amount\": \"3.00\"},"
    " {\"method\": \"cash\", \"amount\": \"2.00\"}], \"total\": \"5.00\"},"
    " {\"sale_id\": \"T3-1\", \"kind\": \"sale\", \"terminal_id\": \"T3\", \"cashier_id\": \"E1\","
    " \"channel\": \"pickup\", \"business_time\": \"2026-11-22T09:15:00.250+09:00\","
    " \"currency\": \"JPY\","
    " \"lines\": [{\"sku\": \"RAMEN\", \"qty\": 2, \"unit_price\": \"1200\"},"
    " {\"sku\": \"GYOZA\", \"qty\": 1, \"unit_price\": \"1000\"},"
    " {\"sku\": \"TEA\", \"qty\": 1, \"unit_price\": \"200\"}],"
    " \"payments\": [{\"method\": \"card\", \"amount\": \"3600\"}], \"total\": \"3600\"}]";

static void test_a_good_file_gives_the_same_sales_as_json(void **state)
{
  struct decoded decoded;
  struct sale *from_json = NULL;
  struct sale_error json_error;
  size_t count = 0;
  int is_array = 0;

  (void)state;
  if (decode(good_csv, &decoded))
    fail_msg("%s", decoded.error.text);
  assert_int_equal(sale_json_parse(good_json, strlen(good_json), 10, &from_json, &count,
                                   &is_array, &json_error),
                   0);
  assert_int_equal(decoded.count, 4);
  assert_int_equal(count, 4);
  for (size_t i = 0; i < count; i++) {
    uint8_t hash_csv[32], hash_json[32];
    assert_string_equal(decoded.sales[i].sale_id, from_json[i].sale_id);
    assert_int_equal(sale_content_hash(&decoded.sales[i], hash_csv), 0);
    assert_int_equal(sale_content_hash(&from_json[i], hash_json), 0);
    assert_memory_equal(hash_csv, hash_json, sizeof(hash_csv));
    assert_int_equal(decoded.sales[i].business_time_ms, from_json[i].business_time_ms);
  }
  /* What people care about, spelled out once. */
  assert_int_equal(decoded.sales[1].line_count, 3);
  assert_int_equal(decoded.sales[1].payment_count, 2);
  assert_string_equal(decoded.sales[1].lines[1].sku, "COLA \"XL\"");
  assert_string_equal(decoded.sales[1].delivery_partner, "Riders, Inc");
  assert_int_equal(decoded.sales[1].total, 4100);
  assert_int_equal(decoded.sales[2].line_count, 1);
  assert_int_equal(decoded.sales[2].payment_count, 2);
  assert_int_equal(decoded.sales[3].total, 3600);
  /* Streaming: a sale comes out when the next one's first row is read. */
  assert_int_equal(decoded.returned_at[0], 4);
  assert_int_equal(decoded.returned_at[1], 8);
  assert_int_equal(decoded.returned_at[2], 10);
  assert_int_equal(decoded.returned_at[3], 0);
  decoded_free(&decoded);
  sale_array_free(from_json, count);
}

static void test_a_header_alone_holds_no_sales(void **state)
{
  struct decoded decoded;

  (void)state;
  assert_int_equal(decode(header, &decoded), 0);
  assert_int_equal(decoded.count, 0);
  assert_int_equal(decode("", &decoded), SPOOL_CSV_EINVAL);
  assert_int_equal(decoded.error.row, 1);
  assert_non_null(strstr(decoded.error.text, "row 1: the file has no header row"));
}

/* ------------------------------------------------------------------------ */
/* The rules of the contract: the JSON path's field and message             */

#define TEST_LINES_MAX 3
#define TEST_PAYMENTS_MAX 2

/* A sale as cells (NULL: empty, absent), written as CSV and as JSON. */
struct test_sale {
  const char *sale[10]; /* sale_id .. total, in the header's order */
  const char *lines[TEST_LINES_MAX][6];
  size_t line_count;
  const char *payments[TEST_PAYMENTS_MAX][2];
  size_t payment_count;
};

static const char *const sale_keys[10] = {
    "sale_id",          "kind",          "original_sale_id", "terminal_id", "cashier_id",
    "channel",          "delivery_partner", "business_time", "currency",    "total"};
static const char *const line_keys[6] = {"sku", "qty", "unit_price", "discount", "promo_id", "tax"};
static const char *const payment_keys[2] = {"method", "amount"};

static const struct test_sale good_sale = {
    .sale = {"T1-000200", "sale", NULL, "T1", "E042", "pos", NULL, "2026-11-21T18:42:05+01:00",
             "EUR", "28.80"},
    .lines = {{"PIZZA-MARG-L", "2", "12.50", "1.00", "TPR-42", "2.30"},
              {"COLA", "1", "2.50", NULL, NULL, NULL}},
    .line_count = 2,
    .payments = {{"card", "20.00"}, {"cash", "8.80"}},
    .payment_count = 2,
};

/* Appends printf output to a growing buffer. */
struct text {
  char *data;
  size_t length, capacity;
};

static void text_add(struct text *text, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static void text_add(struct text *text, const char *format, ...)
{
  va_list args;
  int needed;

  va_start(args, format);
  needed = vsnprintf(NULL, 0, format, args);
  va_end(args);
  assert_true(needed >= 0);
  if (text->length + (size_t)needed + 1 > text->capacity) {
    text->capacity = (text->length + (size_t)needed + 1) * 2;
    text->data = realloc(text->data, text->capacity);
    assert_non_null(text->data);
  }
  va_start(args, format);
  vsnprintf(text->data + text->length, text->capacity - text->length, format, args);
  va_end(args);
  text->length += (size_t)needed;
}

/* A cell, quoted (so that any value survives), or nothing for NULL. */
static void csv_cell(struct text *text, const char *value, int last)
{
  if (value) {
    text_add(text, "\"");
    for (const char *p = value; *p; p++)
      text_add(text, *p == '"' ? "\"\"" : "%c", *p);
    text_add(text, "\"");
  }
  text_add(text, last ? "\n" : ",");
}

static char *sale_csv(const struct test_sale *sale)
{
  struct text text = {0};
  size_t rows = sale->line_count > sale->payment_count ? sale->line_count : sale->payment_count;

  text_add(&text, "%s", header);
  for (size_t r = 0; r < rows; r++) {
    for (size_t i = 0; i < 10; i++)
      csv_cell(&text, sale->sale[i], 0);
    for (size_t i = 0; i < 6; i++)
      csv_cell(&text, r < sale->line_count ? sale->lines[r][i] : NULL, 0);
    for (size_t i = 0; i < 2; i++)
      csv_cell(&text, r < sale->payment_count ? sale->payments[r][i] : NULL, i == 1);
  }
  return text.data;
}

/* The same sale as the POS API takes it: qty a JSON integer when it is digits. */
static char *sale_json(const struct test_sale *sale)
{
  struct text text = {0};
  const char *separator = "";

  text_add(&text, "{");
  for (size_t i = 0; i < 10; i++) {
    if (!sale->sale[i])
      continue;
    text_add(&text, "%s\"%s\": \"%s\"", separator, sale_keys[i], sale->sale[i]);
    separator = ", ";
  }
  text_add(&text, "%s\"lines\": [", separator);
  for (size_t r = 0; r < sale->line_count; r++) {
    separator = "";
    text_add(&text, "%s{", r ? ", " : "");
    for (size_t i = 0; i < 6; i++) {
      const char *value = sale->lines[r][i];
      if (!value)
        continue;
      if (i == 1 && strspn(value, "-0123456789") == strlen(value))
        text_add(&text, "%s\"%s\": %s", separator, line_keys[i], value);
      else
        text_add(&text, "%s\"%s\": \"%s\"", separator, line_keys[i], value);
      separator = ", ";
    }
    text_add(&text, "}");
  }
  text_add(&text, "], \"payments\": [");
  for (size_t r = 0; r < sale->payment_count; r++) {
    text_add(&text, "%s{\"%s\": \"%s\", \"%s\": \"%s\"}", r ? ", " : "", payment_keys[0],
             sale->payments[r][0], payment_keys[1], sale->payments[r][1]);
  }
  text_add(&text, "]}");
  return text.data;
}

static void test_the_good_sale_is_good(void **state)
{
  char *csv = sale_csv(&good_sale);
  char *json = sale_json(&good_sale);
  struct decoded decoded;
  struct sale *from_json = NULL;
  struct sale_error error;
  size_t count = 0;
  uint8_t hash_csv[32], hash_json[32];

  (void)state;
  if (decode(csv, &decoded))
    fail_msg("%s", decoded.error.text);
  if (sale_json_parse(json, strlen(json), 1, &from_json, &count, NULL, &error))
    fail_msg("%s: %s", error.field, error.message);
  assert_int_equal(decoded.count, 1);
  assert_int_equal(sale_content_hash(&decoded.sales[0], hash_csv), 0);
  assert_int_equal(sale_content_hash(from_json, hash_json), 0);
  assert_memory_equal(hash_csv, hash_json, sizeof(hash_csv));
  decoded_free(&decoded);
  sale_array_free(from_json, count);
  free(csv);
  free(json);
}

/* One broken value of good_sale: part 0 the sale, 1 + r line r, 10 + r payment r. */
struct breakage {
  int part;
  size_t index;      /* the cell in that part */
  const char *value; /* NULL: empty */
  const char *field; /* the field both paths name */
};

static const struct breakage breakages[] = {
    {1, 1, "0", "lines[0].qty"},
    {2, 1, "0", "lines[1].qty"},
    {1, 2, "12.505", "lines[0].unit_price"},
    {0, 8, "XYZ", "currency"},
    {0, 9, "28.81", "total"},
    {0, 7, "2026-11-21T18:42:05", "business_time"},
    {0, 1, "gift", "kind"},
    {0, 1, "refund", "original_sale_id"},
    {0, 6, "Riders", "delivery_partner"},
    {0, 0, NULL, "sale_id"},
    {0, 3, "T1-a-terminal-name-that-is-far-longer-than-sixty-four-bytes-0123456789",
     "terminal_id"},
    {1, 0, NULL, "lines[0].sku"},
    {10, 1, "0", "payments[0].amount"},
    {11, 1, "8.00", "payments"},
};

static void test_a_broken_sale_gets_the_json_field_and_message(void **state)
{
  (void)state;
  for (size_t i = 0; i < sizeof(breakages) / sizeof(breakages[0]); i++) {
    const struct breakage *b = &breakages[i];
    struct test_sale sale = good_sale;
    char *csv, *json;
    struct decoded decoded;
    struct sale *from_json = NULL;
    struct sale_error json_error;
    size_t count = 0;
    char expected_text[640];

    if (b->part == 0)
      sale.sale[b->index] = b->value;
    else if (b->part < 10)
      sale.lines[b->part - 1][b->index] = b->value;
    else
      sale.payments[b->part - 10][b->index] = b->value;
    csv = sale_csv(&sale);
    json = sale_json(&sale);
    assert_int_equal(decode(csv, &decoded), SPOOL_CSV_EINVAL);
    assert_int_equal(sale_json_parse(json, strlen(json), 1, &from_json, &count, NULL, &json_error),
                     -1);
    if (strcmp(decoded.error.sale.field, b->field) != 0 ||
        strcmp(json_error.field, b->field) != 0 ||
        strcmp(decoded.error.sale.message, json_error.message) != 0 || decoded.error.row != 2)
      fail_msg("case %zu: CSV row %lu %s: %s; JSON %s: %s", i, decoded.error.row,
               decoded.error.sale.field, decoded.error.sale.message, json_error.field,
               json_error.message);
    snprintf(expected_text, sizeof(expected_text), "row 2: %s: %s", json_error.field,
             json_error.message);
    assert_string_equal(decoded.error.text, expected_text);
    assert_string_equal(decoded.error.column, "");
    free(csv);
    free(json);
  }
}

static void test_the_message_form(void **state)
{
  struct test_sale sale = good_sale;
  char *csv;
  struct decoded decoded;

  (void)state;
  sale.lines[1][1] = "0";
  csv = sale_csv(&sale);
  assert_int_equal(decode(csv, &decoded), SPOOL_CSV_EINVAL);
  assert_string_equal(decoded.error.text,
                      "row 2: lines[1].qty: \"qty\" is 0; expected 1 to 100000");
  free(csv);
}

/* A sale of `lines` line rows of one unit at 1.00, paid on its first row. */
static char *many_lines_csv(size_t lines)
{
  struct text text = {0};

  text_add(&text, "%s", header);
  for (size_t r = 0; r < lines; r++)
    text_add(&text, "T1-9,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,%zu.00,SKU-%zu,1,1.00,,,,%s,%s\n",
             lines, r, r == 0 ? "card" : "", r == 0 ? "1.00" : "");
  return text.data;
}

static char *many_lines_json(size_t lines)
{
  struct text text = {0};

  text_add(&text, "{\"sale_id\": \"T1-9\", \"kind\": \"sale\", \"terminal_id\": \"T1\","
                  " \"business_time\": \"2026-11-21T18:42:05Z\", \"currency\": \"EUR\","
                  " \"total\": \"%zu.00\", \"lines\": [",
           lines);
  for (size_t r = 0; r < lines; r++)
    text_add(&text, "%s{\"sku\": \"SKU-%zu\", \"qty\": 1, \"unit_price\": \"1.00\"}",
             r ? ", " : "", r);
  text_add(&text, "], \"payments\": [{\"method\": \"card\", \"amount\": \"1.00\"}]}");
  return text.data;
}

/* 501 lines, and far more rows than a sale can have: the JSON path's error,
 * at the sale's first row, without keeping the rows past the 500th. */
static void test_too_many_lines_is_the_json_error(void **state)
{
  static const size_t counts[] = {501, 2000};

  (void)state;
  for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
    char *csv = many_lines_csv(counts[i]);
    char *json = many_lines_json(counts[i]);
    struct decoded decoded;
    struct sale *from_json = NULL;
    struct sale_error json_error;
    size_t count = 0;

    assert_int_equal(decode(csv, &decoded), SPOOL_CSV_EINVAL);
    assert_int_equal(sale_json_parse(json, strlen(json), 1, &from_json, &count, NULL, &json_error),
                     -1);
    assert_string_equal(decoded.error.sale.field, "lines");
    assert_string_equal(json_error.field, "lines");
    assert_string_equal(decoded.error.sale.message, json_error.message);
    assert_int_equal(decoded.error.row, 2);
    free(csv);
    free(json);
  }
  /* And 500 is a sale (its payment short: the lines were all read). */
  {
    char *csv = many_lines_csv(500);
    struct decoded decoded;
    assert_int_equal(decode(csv, &decoded), SPOOL_CSV_EINVAL);
    assert_string_equal(decoded.error.sale.field, "payments");
    assert_string_equal(decoded.error.sale.message,
                        "the payments add up to 1.00 but total is 500.00");
    free(csv);
  }
}

/* ------------------------------------------------------------------------ */
/* The CSV's own mistakes: the row and the column                           */

static const char row_a[] =
    "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,SKU,1,3.00,,,,card,3.00\n";
static const char row_b[] =
    "T1-2,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,SKU,1,3.00,,,,card,3.00\n";

static void expect_csv_error(const char *text, unsigned long row, const char *column,
                             const char *message)
{
  struct decoded decoded;

  if (decode(text, &decoded) != SPOOL_CSV_EINVAL)
    fail_msg("no error for:\n%s", text);
  if (decoded.error.row != row || strcmp(decoded.error.column, column) != 0 ||
      decoded.error.sale.field[0] || !strstr(decoded.error.text, message))
    fail_msg("got row %lu column \"%s\" field \"%s\": %s\nexpected row %lu column \"%s\": %s",
             decoded.error.row, decoded.error.column, decoded.error.sale.field, decoded.error.text,
             row, column, message);
  decoded_free(&decoded);
}

static void test_header_mistakes_name_the_column(void **state)
{
  char text[2048];

  (void)state;
  expect_csv_error("sale_id,kind,terminal_id,business_time,currency,total,sku,unit_price,"
                   "payment_method,payment_amount\n",
                   1, "qty",
                   "row 1, column qty: the header has no column qty; the required columns are "
                   "sale_id, kind, terminal_id,");
  snprintf(text, sizeof(text), "colour,%s", header);
  expect_csv_error(text, 1, "colour",
                   "row 1, column colour: unknown column (allowed: sale_id, kind, "
                   "original_sale_id,");
  /* The whole list, not cut short, even for a long name. */
  snprintf(text, sizeof(text), "%0100d,%s", 7, header);
  expect_csv_error(text, 1, "0000000000000000000000000000000000000000...",
                   "unknown column (allowed: sale_id, kind, original_sale_id, terminal_id, "
                   "cashier_id, channel, delivery_partner, business_time, currency, total, sku, "
                   "qty, unit_price, discount, promo_id, tax, payment_method, payment_amount)");
  snprintf(text, sizeof(text), "%.*s,%s", (int)strlen(header) - 1, header, header);
  expect_csv_error(text, 1, "",
                   "row 1: the header has 36 columns; a sales file has at most 18, each a field "
                   "of the POS contract named once");
  snprintf(text, sizeof(text), "sku,%s", header);
  expect_csv_error(text, 1, "sku",
                   "row 1, column sku: the header names sku twice (columns 1 and 12)");
  expect_csv_error("sale_id,,kind\n", 1, "2", "row 1, column 2: the header names no column");
  expect_csv_error("\n\n", 3, "", "row 3: the file has no header row");
}

static void test_row_mistakes_name_the_row_and_column(void **state)
{
  char text[4096];

  (void)state;
  /* A sale column that differs from the sale's first row. */
  snprintf(text, sizeof(text), "%s%s%s", header, row_a,
           "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.01,SKU2,1,3.00,,,,,\n");
  expect_csv_error(text, 3, "total",
                   "row 3, column total: \"3.01\" differs from the sale's first row (row 2), "
                   "which has \"3.00\"");
  /* Rows of one sale apart. */
  snprintf(text, sizeof(text), "%s%s%s\n%s", header, row_a, row_b, row_a);
  expect_csv_error(text, 5, "sale_id",
                   "row 5, column sale_id: rows of sale T1-1 must be consecutive; it also "
                   "appears at row 2");
  /* A row with neither a line nor a payment. */
  snprintf(text, sizeof(text), "%s%s%s", header, row_a,
           "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,,,,,,,,\n");
  expect_csv_error(text, 3, "", "row 3: the row has neither a line");
  /* A quoted field across lines. */
  snprintf(text, sizeof(text), "%s%s%s", header,
           "T1-1,sale,,T1,,delivery,\"Riders\n", "Inc\",2026-11-21T18:42:05Z,EUR,3.00\n");
  expect_csv_error(text, 2, "delivery_partner",
                   "row 2, column delivery_partner: a quoted field is not closed before the end "
                   "of the line");
  /* A line after a row without one. */
  snprintf(text, sizeof(text), "%s%s%s%s", header,
           "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,SKU,1,1.00,,,,card,1.00\n",
           "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,,,,,,,card,1.00\n",
           "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,,2,,,,,,\n");
  expect_csv_error(text, 4, "qty", "row 4, column qty: a line of the sale after row 3");
  /* A payment after a row without one. */
  snprintf(text, sizeof(text), "%s%s%s%s", header,
           "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,SKU,1,1.00,,,,card,1.00\n",
           "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,SKU,1,1.00,,,,,\n",
           "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,SKU,1,1.00,,,,cash,2.00\n");
  expect_csv_error(text, 4, "payment_method",
                   "row 4, column payment_method: a payment of the sale after row 3");
  /* Too few and too many cells. */
  snprintf(text, sizeof(text), "%s%s", header,
           "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,SKU,1,3.00,,,,card\n");
  expect_csv_error(text, 2, "payment_amount",
                   "row 2, column payment_amount: missing: the row has 17 cells but the header "
                   "(row 1) names 18 columns");
  snprintf(text, sizeof(text), "%s%s", header,
           "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3,00,SKU,1,3.00,,,,card,3.00\n");
  expect_csv_error(text, 2, "", "row 2: the row has 19 cells but the header (row 1) names 18");
  /* A cell too long for any field, and a stray quote. */
  snprintf(text, sizeof(text), "%sT1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,%0300d,1,3.00,,,,"
                               "card,3.00\n",
           header, 7);
  expect_csv_error(text, 2, "sku", "row 2, column sku: is longer than 256 characters");
  snprintf(text, sizeof(text), "%s%s", header,
           "T1-1,sale,,T1,,,,2026-11-21T18:42:05Z,EUR,3.00,12\" pizza,1,3.00,,,,card,3.00\n");
  expect_csv_error(text, 2, "sku", "row 2, column sku: a quote inside an unquoted field");
}

/* Two sales, then the same again: the first completes when the second starts. */
static void test_consecutive_sales_stream(void **state)
{
  char text[2048];
  struct decoded decoded;

  (void)state;
  snprintf(text, sizeof(text), "%s%s%s", header, row_a, row_b);
  assert_int_equal(decode(text, &decoded), 0);
  assert_int_equal(decoded.count, 2);
  assert_int_equal(decoded.returned_at[0], 3);
  assert_int_equal(decoded.returned_at[1], 0);
  assert_string_equal(decoded.sales[0].sale_id, "T1-1");
  assert_string_equal(decoded.sales[1].sale_id, "T1-2");
  decoded_free(&decoded);
}

/* A file damaged at random (bytes cut, quotes, commas, line ends, NULs, a
 * BOM, long runs put in) either decodes or names a row of it, never a row
 * past its end, and gives back no half sale. Run under ASan by
 * scripts/test.sh --sanitize: no overrun, no leak. */
static void test_a_damaged_file_always_names_a_row(void **state)
{
  static const char pieces[][12] = {"\"", ",", "\n", "\r", " ", "\xEF\xBB\xBF", "\0",
                                    "0", "T1-000123", "\xff", ",,,,", "9999999999"};
  uint64_t random_state = 88172645463325252ULL;
  char damaged[4096];
  size_t named = 0;

  (void)state;
  for (int n = 0; n < 3000; n++) {
    size_t length = sizeof(good_csv) - 1;
    struct spool_csv *decoder = spool_csv_create();
    struct spool_csv_error error;
    struct sale sale;
    unsigned long line_no = 0;
    size_t at = 0;
    int rc = SPOOL_CSV_OK;

    assert_non_null(decoder);
    memcpy(damaged, good_csv, length);
    for (int change = 0; change < 3; change++) {
      size_t where, size;
      random_state ^= random_state << 13;
      random_state ^= random_state >> 7;
      random_state ^= random_state << 17;
      where = (size_t)(random_state >> 8) % (length + 1);
      if (random_state % 3 == 0) {
        size = where + 2 <= length ? 2 : length - where;
        memmove(damaged + where, damaged + where + size, length - where - size);
        length -= size;
        continue;
      }
      if (random_state % 3 == 1) {
        const char *piece = pieces[(random_state >> 40) % 12];
        size = piece[0] ? strlen(piece) : 1;
      } else {
        size = 250 + (random_state >> 40) % 50;
      }
      if (length + size > sizeof(damaged))
        continue;
      memmove(damaged + where + size, damaged + where, length - where);
      if (random_state % 3 == 1)
        memcpy(damaged + where, pieces[(random_state >> 40) % 12], size);
      else
        memset(damaged + where, 'y', size);
      length += size;
    }
    while (at < length && rc >= 0) {
      const char *newline = memchr(damaged + at, '\n', length - at);
      size_t line_length = newline ? (size_t)(newline - (damaged + at)) + 1 : length - at;
      rc = spool_csv_feed(decoder, damaged + at, line_length, ++line_no, &sale, &error);
      if (rc == SPOOL_CSV_SALE)
        sale_clear(&sale);
      at += line_length;
    }
    if (rc >= 0)
      rc = spool_csv_finish(decoder, &sale, &error);
    if (rc == SPOOL_CSV_SALE)
      sale_clear(&sale);
    if (rc < 0) {
      named++;
      assert_int_equal(rc, SPOOL_CSV_EINVAL);
      assert_int_equal(sale.line_count, 0);
      assert_null(sale.lines);
      if (strncmp(error.text, "row ", 4) != 0 || error.row == 0 || error.row > line_no + 1)
        fail_msg("damaged file %d of %lu lines: row %lu: %s", n, line_no, error.row, error.text);
    }
    spool_csv_destroy(decoder);
  }
  /* Most damage is found; some (a blank in a cell) is harmless. */
  assert_true(named > 2000);
}

/* README.md's example, as printed there. */
static void test_the_readme_example_is_a_sale(void **state)
{
  static const char readme[] =
      "sale_id,kind,terminal_id,business_time,currency,total,sku,qty,unit_price,discount,tax,"
      "payment_method,payment_amount\n"
      "T1-000124,sale,T1,2026-11-21T19:00:00+01:00,EUR,41.00,PIZZA-MARG-L,1,12.50,,,card,30.00\n"
      "T1-000124,sale,T1,2026-11-21T19:00:00+01:00,EUR,41.00,COLA,3,2.50,,,cash,11.00\n"
      "T1-000124,sale,T1,2026-11-21T19:00:00+01:00,EUR,41.00,TIRAMISU,1,21.00,0.50,0.50,,\n";
  struct decoded decoded;

  (void)state;
  if (decode(readme, &decoded))
    fail_msg("%s", decoded.error.text);
  assert_int_equal(decoded.count, 1);
  assert_int_equal(decoded.sales[0].line_count, 3);
  assert_int_equal(decoded.sales[0].payment_count, 2);
  assert_int_equal(decoded.sales[0].total, 4100);
  decoded_free(&decoded);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_a_good_file_gives_the_same_sales_as_json),
      cmocka_unit_test(test_a_header_alone_holds_no_sales),
      cmocka_unit_test(test_the_good_sale_is_good),
      cmocka_unit_test(test_a_broken_sale_gets_the_json_field_and_message),
      cmocka_unit_test(test_the_message_form),
      cmocka_unit_test(test_too_many_lines_is_the_json_error),
      cmocka_unit_test(test_header_mistakes_name_the_column),
      cmocka_unit_test(test_row_mistakes_name_the_row_and_column),
      cmocka_unit_test(test_consecutive_sales_stream),
      cmocka_unit_test(test_the_readme_example_is_a_sale),
      cmocka_unit_test(test_a_damaged_file_always_names_a_row),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
