/*
 * test_sale_json.c - the POS contract, one test per rule.
 *
 * Most cases start from a valid sale (the example of ARCHITECTURE.md), break
 * one thing with jansson, and check that the parse fails with exactly the
 * offending field path and a message naming the problem.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "ingest/http/sale_json.h"
#include "sale/sale.h"
#include "sale_example.h"

#define MAX_SALES 10

static const char valid_sale_text[] = SALE_EXAMPLE_JSON;

/* A fresh valid sale object to break; the caller decrefs it. */
static json_t *valid_sale(void)
{
  json_error_t json_error;
  json_t *sale = json_loads(valid_sale_text, 0, &json_error);

  assert_non_null(sale);
  return sale;
}

static json_t *line0(json_t *sale) { return json_array_get(json_object_get(sale, "lines"), 0); }

static json_t *payment0(json_t *sale)
{
  return json_array_get(json_object_get(sale, "payments"), 0);
}

/* Parses `text`, expects failure with `field` and `needle` in the message. */
static void expect_text_error(const char *text, size_t max_sales, const char *field,
                              const char *needle)
{
  struct sale_error error;
  struct sale *sales = (struct sale *)1;
  size_t count = 99;
  int is_array = -1;
  int rc = sale_json_parse(text, strlen(text), max_sales, &sales, &count, &is_array, &error);

  if (rc == 0 || strcmp(error.field, field) != 0 || !strstr(error.message, needle))
    print_error("body: %.300s\nfield: \"%s\" (want \"%s\")\nmessage: %s\n(want \"%s\")\n", text,
                error.field, field, error.message, needle);
  assert_int_equal(rc, -1);
  assert_string_equal(error.field, field);
  assert_non_null(strstr(error.message, needle));
  assert_null(sales);
  assert_int_equal(count, 0);
}

/* Dumps `body` (taking it), expects failure with `field` and `needle`. */
static void expect_error(json_t *body, const char *field, const char *needle)
{
  char *text = json_dumps(body, JSON_COMPACT);

  assert_non_null(text);
  json_decref(body);
  expect_text_error(text, MAX_SALES, field, needle);
  free(text);
}

/* Dumps `body` (taking it), expects success with one sale, which the caller frees. */
static struct sale *expect_one(json_t *body)
{
  struct sale_error error;
  struct sale *sales = NULL;
  size_t count = 0;
  int is_array = -1;
  char *text = json_dumps(body, JSON_COMPACT);
  int rc;

  assert_non_null(text);
  json_decref(body);
  rc = sale_json_parse(text, strlen(text), MAX_SALES, &sales, &count, &is_array, &error);
  if (rc != 0)
    print_error("body: %.300s\nfield: \"%s\" message: %s\n", text, error.field, error.message);
  free(text);
  assert_int_equal(rc, 0);
  assert_int_equal(count, 1);
  assert_int_equal(is_array, 0);
  assert_non_null(sales);
  return sales;
}

static void set_text(json_t *object, const char *key, const char *value)
{
  assert_int_equal(json_object_set_new(object, key, json_string(value)), 0);
}

/* ------------------------------------------------------------------------ */

static void test_valid_single_sale_parses_field_for_field(void **state)
{
  struct sale *sale = expect_one(valid_sale());

  (void)state;
  assert_string_equal(sale->sale_id, "T1-000123");
  assert_int_equal(sale->kind, SALE_KIND_SALE);
  assert_string_equal(sale->original_sale_id, "");
  assert_string_equal(sale->terminal_id, "T1");
  assert_string_equal(sale->cashier_id, "E042");
  assert_int_equal(sale->channel, SALE_CHANNEL_POS);
  assert_string_equal(sale->delivery_partner, "");
  assert_string_equal(sale->business_time, "2026-11-21T18:42:05+01:00");
  assert_int_equal(sale->business_time_ms, 1795282925000LL);
  assert_int_equal(sale->utc_offset_minutes, 60);
  assert_string_equal(sale->currency, "EUR");
  assert_int_equal(sale->currency_exponent, 2);
  assert_int_equal(sale->line_count, 1);
  assert_string_equal(sale->lines[0].sku, "PIZZA-MARG-L");
  assert_int_equal(sale->lines[0].qty, 2);
  assert_int_equal(sale->lines[0].unit_price, 1250);
  assert_int_equal(sale->lines[0].discount, 100);
  assert_string_equal(sale->lines[0].promo_id, "TPR-42");
  assert_int_equal(sale->lines[0].tax, 230);
  assert_int_equal(sale->payment_count, 1);
  assert_string_equal(sale->payments[0].method, "card");
  assert_int_equal(sale->payments[0].amount, 2630);
  assert_int_equal(sale->total, 2630);
  sale_array_free(sale, 1);
}

static void test_optional_fields_default(void **state)
{
  json_t *body = valid_sale();
  struct sale *sale;

  (void)state;
  json_object_del(body, "cashier_id");
  json_object_del(body, "channel");
  json_object_del(line0(body), "discount");
  json_object_del(line0(body), "promo_id");
  json_object_del(line0(body), "tax");
  set_text(body, "total", "25.00");
  set_text(payment0(body), "amount", "25");
  sale = expect_one(body);
  assert_string_equal(sale->cashier_id, "");
  assert_int_equal(sale->channel, SALE_CHANNEL_POS);
  assert_int_equal(sale->lines[0].discount, 0);
  assert_string_equal(sale->lines[0].promo_id, "");
  assert_int_equal(sale->lines[0].tax, 0);
  assert_int_equal(sale->payments[0].amount, 2500);
  sale_array_free(sale, 1);
}

static void test_array_form(void **state)
{
  json_t *body = json_array();
  json_t *second = valid_sale();
  struct sale_error error;
  struct sale *sales = NULL;
  size_t count = 0;
  int is_array = 0;
  char *text;

  (void)state;
  set_text(second, "sale_id", "T1-000124");
  set_text(second, "channel", "delivery");
  set_text(second, "delivery_partner", "Lieferando");
  json_array_append_new(body, valid_sale());
  json_array_append_new(body, second);
  text = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  assert_int_equal(sale_json_parse(text, strlen(text), MAX_SALES, &sales, &count, &is_array,
                                   &error),
                   0);
  free(text);
  assert_int_equal(count, 2);
  assert_int_equal(is_array, 1);
  assert_string_equal(sales[0].sale_id, "T1-000123");
  assert_string_equal(sales[1].sale_id, "T1-000124");
  assert_int_equal(sales[1].channel, SALE_CHANNEL_DELIVERY);
  assert_string_equal(sales[1].delivery_partner, "Lieferando");
  assert_int_equal(sales[1].total, 2630);
  sale_array_free(sales, count);
}

static void test_body_not_nul_terminated(void **state)
{
  size_t length = strlen(valid_sale_text);
  char *copy = malloc(length);
  struct sale_error error;
  struct sale *sales = NULL;
  size_t count = 0;
  int is_array = 0;

  (void)state;
  assert_non_null(copy);
  memcpy(copy, valid_sale_text, length);
  assert_int_equal(sale_json_parse(copy, length, 1, &sales, &count, &is_array, &error), 0);
  assert_int_equal(count, 1);
  sale_array_free(sales, count);
  free(copy);
}

/* ---- money ------------------------------------------------------------- */

static void test_money_json_number_rejected(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  json_object_set_new(line0(body), "unit_price", json_real(12.5));
  expect_error(body, "lines[0].unit_price",
               "\"unit_price\" must be a decimal string like \"12.50\", not a JSON number");

  body = valid_sale();
  json_object_set_new(body, "total", json_integer(26));
  expect_error(body, "total", "not a JSON number");

  body = valid_sale();
  json_object_set_new(payment0(body), "amount", json_real(26.3));
  expect_error(body, "payments[0].amount", "not a JSON number");
}

static void test_money_too_many_decimals_rejected(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(line0(body), "discount", "1.005");
  expect_error(body, "lines[0].discount", "EUR has 2 decimals; \"1.005\" has 3");
}

static void test_money_jpy_decimal_rejected(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(body, "currency", "JPY");
  set_text(line0(body), "unit_price", "1.5");
  expect_error(body, "lines[0].unit_price", "JPY has no decimals; \"1.5\" has 1");
}

static void test_money_bhd_three_decimals_ok(void **state)
{
  json_t *body = valid_sale();
  struct sale *sale;

  (void)state;
  set_text(body, "currency", "BHD");
  set_text(line0(body), "unit_price", "1.234");
  set_text(line0(body), "discount", "0.5");
  set_text(line0(body), "tax", "0");
  set_text(body, "total", "1.968");
  set_text(payment0(body), "amount", "1.968");
  sale = expect_one(body);
  assert_int_equal(sale->currency_exponent, 3);
  assert_int_equal(sale->lines[0].unit_price, 1234);
  assert_int_equal(sale->lines[0].discount, 500);
  assert_int_equal(sale->total, 1968);
  sale_array_free(sale, 1);
}

static void test_money_malformed_rejected(void **state)
{
  static const struct {
    const char *value;
    const char *needle;
  } cases[] = {
      {"12,50", "thousands separators"}, {"1 000.00", "spaces"}, {"1e3", "exponent"},
      {"+1.00", "'+'"},                  {".50", "digit before"}, {"5.", "digit after"},
      {"", "is empty"},                  {"12.50 EUR", "thousands separators"},
      {"abc", "only digits"},            {"1.2.3", "only digits"}, {"-", "digit"},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    json_t *body = valid_sale();
    set_text(line0(body), "unit_price", cases[i].value);
    expect_error(body, "lines[0].unit_price", cases[i].needle);
  }
}

static void test_money_negative_rejected(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(line0(body), "tax", "-2.30");
  expect_error(body, "lines[0].tax", "must not be negative");
  body = valid_sale();
  set_text(body, "total", "-26.30");
  expect_error(body, "total", "must not be negative");
}

static void test_parse_money_unit(void **state)
{
  long long minor = 0;
  const char *why = NULL;

  (void)state;
  assert_int_equal(sale_parse_money("12.5", 2, &minor, &why), 0);
  assert_int_equal(minor, 1250);
  assert_int_equal(sale_parse_money("-1.5", 2, &minor, &why), 0);
  assert_int_equal(minor, -150);
  assert_int_equal(sale_parse_money("0", 2, &minor, &why), 0);
  assert_int_equal(minor, 0);
  assert_int_equal(sale_parse_money("007.10", 2, &minor, &why), 0);
  assert_int_equal(minor, 710);
  assert_int_equal(sale_parse_money("1250", 0, &minor, &why), 0);
  assert_int_equal(minor, 1250);
  assert_int_equal(sale_parse_money("9223372036854775807", 0, &minor, &why), 0);
  assert_int_equal(minor, INT64_MAX);
  assert_int_equal(sale_parse_money("92233720368547758.07", 2, &minor, &why), 0);
  assert_int_equal(minor, INT64_MAX);
  assert_int_equal(sale_parse_money("92233720368547758.08", 2, &minor, &why), -1);
  assert_string_equal(why, "is too large");
  assert_int_equal(sale_parse_money("92233720368547758", 3, &minor, &why), -1);
  assert_string_equal(why, "is too large");
  assert_int_equal(sale_parse_money("1.005", 2, &minor, &why), -1);
  assert_non_null(strstr(why, "more decimals"));
  assert_int_equal(sale_parse_money("1.5", 0, &minor, &why), -1);
  assert_int_equal(sale_parse_money("+1", 2, &minor, &why), -1);
  assert_int_equal(sale_parse_money("1e2", 2, &minor, &why), -1);
  assert_int_equal(sale_parse_money("", 2, &minor, &why), -1);
}

static void test_money_overflow_rejected(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(line0(body), "unit_price", "99999999999999999999.00");
  expect_error(body, "lines[0].unit_price", "too large");

  /* Each value fits, the product does not. */
  body = valid_sale();
  json_object_set_new(line0(body), "qty", json_integer(100000));
  set_text(line0(body), "unit_price", "92233720368547758.07");
  expect_error(body, "lines[0].unit_price", "qty x unit_price is too large");

  /* Each line fits, the sum does not. */
  body = valid_sale();
  json_object_set_new(line0(body), "qty", json_integer(1));
  set_text(line0(body), "unit_price", "92233720368547758.00");
  json_object_del(line0(body), "discount");
  json_object_del(line0(body), "tax");
  json_array_append(json_object_get(body, "lines"), line0(body));
  expect_error(body, "lines[1]", "add up to more than");

  /* Each payment fits, the sum does not. */
  body = valid_sale();
  set_text(payment0(body), "amount", "92233720368547758.00");
  json_array_append(json_object_get(body, "payments"), payment0(body));
  expect_error(body, "payments[1].amount", "add up to more than");

  /* The line's own amount: qty x unit_price + tax. */
  body = valid_sale();
  json_object_set_new(line0(body), "qty", json_integer(1));
  set_text(line0(body), "unit_price", "92233720368547758.00");
  set_text(line0(body), "tax", "92233720368547758.00");
  expect_error(body, "lines[0].tax", "too large");
}

/* ---- JSON shape -------------------------------------------------------- */

static void test_duplicate_keys_rejected(void **state)
{
  (void)state;
  expect_text_error("{\"sale_id\": \"A\", \"sale_id\": \"B\"}", MAX_SALES, "", "duplicate");
  expect_text_error("{\"lines\": [{\"qty\": 1, \"qty\": 2}]}", MAX_SALES, "", "duplicate");
}

static void test_unknown_field_rejected(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(body, "store_id", "S1");
  expect_error(body, "store_id", "unknown field");

  body = valid_sale();
  set_text(line0(body), "price", "12.50");
  expect_error(body, "lines[0].price", "unknown field");

  body = valid_sale();
  set_text(payment0(body), "tip", "1.00");
  expect_error(body, "payments[0].tip", "unknown field");
}

static void test_missing_required_field(void **state)
{
  static const char *const required[] = {"sale_id",  "kind",  "terminal_id", "business_time",
                                         "currency", "lines", "payments",    "total"};

  (void)state;
  for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
    json_t *body = valid_sale();
    json_object_del(body, required[i]);
    expect_error(body, required[i], "is required");
  }
  static const char *const line_required[] = {"sku", "qty", "unit_price"};
  for (size_t i = 0; i < sizeof(line_required) / sizeof(line_required[0]); i++) {
    json_t *body = valid_sale();
    char field[64];
    json_object_del(line0(body), line_required[i]);
    snprintf(field, sizeof(field), "lines[0].%s", line_required[i]);
    expect_error(body, field, "is required");
  }
  static const char *const payment_required[] = {"method", "amount"};
  for (size_t i = 0; i < sizeof(payment_required) / sizeof(payment_required[0]); i++) {
    json_t *body = valid_sale();
    char field[64];
    json_object_del(payment0(body), payment_required[i]);
    snprintf(field, sizeof(field), "payments[0].%s", payment_required[i]);
    expect_error(body, field, "is required");
  }
}

static void test_wrong_types_named(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  json_object_set_new(body, "sale_id", json_integer(123));
  expect_error(body, "sale_id", "must be a string like \"T1-000123\", not a JSON number");

  body = valid_sale();
  json_object_set_new(body, "lines", json_object());
  expect_error(body, "lines", "must be an array of lines, not a JSON object");

  body = valid_sale();
  json_object_set_new(body, "payments", json_string("card"));
  expect_error(body, "payments", "not a string");

  body = valid_sale();
  json_object_set_new(body, "cashier_id", json_null());
  expect_error(body, "cashier_id", "not null; leave the field out");

  body = valid_sale();
  json_object_set_new(body, "kind", json_true());
  expect_error(body, "kind", "not a boolean");

  body = valid_sale();
  json_array_set_new(json_object_get(body, "lines"), 0, json_string("PIZZA"));
  expect_error(body, "lines[0]", "each line must be a JSON object, not a string");

  body = valid_sale();
  json_array_set_new(json_object_get(body, "payments"), 0, json_array());
  expect_error(body, "payments[0]", "each payment must be a JSON object, not an array");
}

static void test_qty_must_be_json_integer(void **state)
{
  (void)state;
  /* jansson keeps 2.0 a real, as the POS sent it. */
  expect_text_error("{\"sale_id\": \"T1-1\", \"kind\": \"sale\", \"terminal_id\": \"T1\","
                    " \"business_time\": \"2026-11-21T18:42:05Z\", \"currency\": \"EUR\","
                    " \"lines\": [{\"sku\": \"X\", \"qty\": 2.0, \"unit_price\": \"1.00\"}],"
                    " \"payments\": [{\"method\": \"cash\", \"amount\": \"2.00\"}],"
                    " \"total\": \"2.00\"}",
                    MAX_SALES, "lines[0].qty", "must be a JSON integer like 2");

  json_t *body = valid_sale();
  set_text(line0(body), "qty", "2");
  expect_error(body, "lines[0].qty", "not a string");
}

static void test_qty_range(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  json_object_set_new(line0(body), "qty", json_integer(0));
  expect_error(body, "lines[0].qty", "\"qty\" is 0; expected 1 to 100000");
  body = valid_sale();
  json_object_set_new(line0(body), "qty", json_integer(-3));
  expect_error(body, "lines[0].qty", "expected 1 to 100000");
  body = valid_sale();
  json_object_set_new(line0(body), "qty", json_integer(100001));
  expect_error(body, "lines[0].qty", "expected 1 to 100000");
}

/* ---- sums --------------------------------------------------------------- */

static void test_total_mismatch(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(line0(body), "tax", "1.30");
  expect_error(body, "total", "total is 26.30 but the lines add up to 25.30");
}

static void test_payments_mismatch(void **state)
{
  json_t *body = valid_sale();
  json_t *cash = json_object();

  (void)state;
  set_text(payment0(body), "amount", "20.00");
  set_text(cash, "method", "cash");
  set_text(cash, "amount", "5.00");
  json_array_append_new(json_object_get(body, "payments"), cash);
  expect_error(body, "payments", "the payments add up to 25.00 but total is 26.30");
}

static void test_payment_amount_must_be_positive(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(payment0(body), "amount", "0.00");
  expect_error(body, "payments[0].amount", "must be more than zero");
}

static void test_discount_above_line_price(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(line0(body), "discount", "25.01");
  expect_error(body, "lines[0].discount",
               "\"discount\" 25.01 is more than qty x unit_price = 25.00");
}

/* A sale that costs nothing (a free pizza, a staff meal) has no payments. */
static void test_a_free_sale_needs_no_payment(void **state)
{
  json_t *body = valid_sale();
  json_t *line = json_array_get(json_object_get(body, "lines"), 0);
  struct sale *sale;

  (void)state;
  set_text(line, "discount", "25.00");
  set_text(line, "tax", "0.00");
  set_text(body, "total", "0.00");
  json_object_set_new(body, "payments", json_array());
  sale = expect_one(body);
  assert_int_equal(sale->total, 0);
  assert_int_equal(sale->payment_count, 0);
  sale_array_free(sale, 1);
}

static void test_lines_and_payments_bounds(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  json_object_set_new(body, "lines", json_array());
  expect_error(body, "lines", "\"lines\" is empty");

  body = valid_sale();
  json_object_set_new(body, "payments", json_array());
  expect_error(body, "payments", "\"payments\" is empty: a sale of 26.30 needs at least one");

  body = valid_sale();
  for (int i = 0; i < SALE_LINES_MAX; i++)
    json_array_append(json_object_get(body, "lines"), line0(body));
  expect_error(body, "lines", "has 501 lines; at most 500");

  body = valid_sale();
  for (int i = 0; i < SALE_PAYMENTS_MAX; i++)
    json_array_append(json_object_get(body, "payments"), payment0(body));
  expect_error(body, "payments", "has 51 payments; at most 50");
}

/* ---- time --------------------------------------------------------------- */

static void test_time_without_offset(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(body, "business_time", "2026-11-21T18:42:05");
  expect_error(body, "business_time", "needs a UTC offset such as +01:00 or Z");
}

static void test_time_feb29_non_leap_year(void **state)
{
  json_t *body = valid_sale();
  struct sale *sale;

  (void)state;
  set_text(body, "business_time", "2026-02-29T12:00:00Z");
  expect_error(body, "business_time", "February 29 of a year that is not a leap year");

  body = valid_sale();
  set_text(body, "business_time", "2100-02-29T12:00:00Z");
  expect_error(body, "business_time", "not a leap year");

  body = valid_sale();
  set_text(body, "business_time", "2028-02-29T23:59:59.999999999-05:30");
  sale = expect_one(body);
  assert_int_equal(sale->business_time_ms, 1835501399999LL);
  assert_int_equal(sale->utc_offset_minutes, -330);
  sale_array_free(sale, 1);
}

static void test_time_year_bounds(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(body, "business_time", "1999-12-31T23:59:59Z");
  expect_error(body, "business_time", "year 1999; expected 2000 to 2100");
  body = valid_sale();
  set_text(body, "business_time", "2101-01-01T00:00:00Z");
  expect_error(body, "business_time", "year 2101");
}

static void test_time_other_errors_in_sale(void **state)
{
  static const struct {
    const char *value;
    const char *needle;
  } cases[] = {
      {"2026-11-21 18:42:05+01:00", "'T', not a space"},
      {"2026-11-21", "needs a time of day"},
      {"2026-13-01T00:00:00Z", "month outside 01-12"},
      {"2026-04-31T00:00:00Z", "day that does not exist"},
      {"2026-11-21T24:00:00Z", "hour outside 00-23"},
      {"2026-11-21T23:60:00Z", "minute outside 00-59"},
      {"2026-12-31T23:59:60Z", "leap second"},
      {"2026-11-21T18:42:05+18:01", "beyond +-18:00"},
      {"2026-11-21T18:42:05+0100", "not +hh:mm"},
      {"2026-11-21T18:42:05.Z", "digits after the '.'"},
      {"2026-11-21T18:42:05.1234567890Z", "more than 9 digits"},
      {"2026-11-21T18:42:05Zjunk", "text after the UTC offset"},
      {"21.11.2026 18:42", "not in the form"},
      {"2026-11-21T18:42:05.123456789+01:00.........", "at most 40"},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    json_t *body = valid_sale();
    set_text(body, "business_time", cases[i].value);
    expect_error(body, "business_time", cases[i].needle);
  }
}

static void test_parse_time_unit(void **state)
{
  long long ms = -1;
  int offset = -1;
  const char *why = NULL;

  (void)state;
  assert_int_equal(sale_parse_time("1970-01-01T00:00:00Z", &ms, &offset, &why), 0);
  assert_int_equal(ms, 0);
  assert_int_equal(offset, 0);
  assert_int_equal(sale_parse_time("1970-01-01t00:00:00.5z", &ms, &offset, &why), 0);
  assert_int_equal(ms, 500);
  /* Truncated, never rounded. */
  assert_int_equal(sale_parse_time("2026-11-21T18:42:05.0079+01:00", &ms, &offset, &why), 0);
  assert_int_equal(ms, 1795282925007LL);
  assert_int_equal(sale_parse_time("2000-01-01T00:00:00+14:00", &ms, &offset, &why), 0);
  assert_int_equal(ms, 946634400000LL);
  assert_int_equal(offset, 840);
  assert_int_equal(sale_parse_time("2100-12-31T23:59:59-12:00", &ms, &offset, &why), 0);
  assert_int_equal(ms, 4134023999000LL);
  assert_int_equal(offset, -720);
  assert_int_equal(sale_parse_time("2026-11-21T18:42:05-18:00", &ms, &offset, &why), 0);
  assert_int_equal(offset, -1080);
  assert_int_equal(sale_parse_time("0000-01-01T00:00:00Z", &ms, &offset, &why), 0);
  assert_int_equal(ms, -62167219200000LL);
  assert_int_equal(sale_parse_time("2026-11-21T18:42:05", &ms, &offset, &why), -1);
  assert_string_equal(why, "needs a UTC offset such as +01:00 or Z");
  assert_int_equal(sale_parse_time("2026-11-21T18:42:05+19:00", &ms, &offset, &why), -1);
  assert_int_equal(sale_parse_time("2026-11-21T18:42:05+01:60", &ms, &offset, &why), -1);
  assert_int_equal(sale_parse_time("", &ms, &offset, &why), -1);
}

/* ---- ids and text ------------------------------------------------------- */

static void test_ids_bad_chars_or_too_long(void **state)
{
  char id64[SALE_ID_MAX + 1], id65[SALE_ID_MAX + 2];
  json_t *body = valid_sale();
  struct sale *sale;

  (void)state;
  set_text(body, "sale_id", "T1 000123");
  expect_error(body, "sale_id", "has ' ' at byte 2; only A-Z a-z 0-9 . _ : - are allowed");

  body = valid_sale();
  set_text(body, "sale_id", "T1/000123");
  expect_error(body, "sale_id", "'/'");

  body = valid_sale();
  set_text(body, "sale_id", "T1-\xc3\xa9");
  expect_error(body, "sale_id", "byte 0xc3");

  body = valid_sale();
  set_text(body, "sale_id", "");
  expect_error(body, "sale_id", "is empty");

  memset(id65, 'a', sizeof(id65) - 1);
  id65[sizeof(id65) - 1] = '\0';
  body = valid_sale();
  set_text(body, "sale_id", id65);
  expect_error(body, "sale_id", "is 65 bytes long; at most 64");

  memset(id64, 'b', sizeof(id64) - 1);
  id64[sizeof(id64) - 1] = '\0';
  body = valid_sale();
  set_text(body, "sale_id", id64);
  sale = expect_one(body);
  assert_string_equal(sale->sale_id, id64);
  sale_array_free(sale, 1);
}

static void test_text_fields(void **state)
{
  char long_text[SALE_TEXT_MAX + 2];
  json_t *body = valid_sale();
  struct sale *sale;

  (void)state;
  set_text(line0(body), "sku", "PIZZA\nMARG");
  expect_error(body, "lines[0].sku", "control character U+000A at byte 5");

  body = valid_sale();
  set_text(body, "terminal_id", "T1\xc2\x85");
  expect_error(body, "terminal_id", "control character U+0085");

  memset(long_text, 'x', sizeof(long_text) - 1);
  long_text[sizeof(long_text) - 1] = '\0';
  body = valid_sale();
  set_text(payment0(body), "method", long_text);
  expect_error(body, "payments[0].method", "is 65 bytes long; at most 64");

  body = valid_sale();
  set_text(body, "cashier_id", "");
  expect_error(body, "cashier_id", "is empty");

  /* Printable UTF-8 beyond ASCII is fine in text fields. */
  body = valid_sale();
  set_text(line0(body), "sku", "PIZZA-CAPRICCIOSA-\xc3\xa0-\xe2\x82\xac");
  sale = expect_one(body);
  assert_string_equal(sale->lines[0].sku, "PIZZA-CAPRICCIOSA-\xc3\xa0-\xe2\x82\xac");
  sale_array_free(sale, 1);
}

static void test_invalid_utf8_rejected(void **state)
{
  (void)state;
  /* jansson refuses it before we see it; the error is about the body. */
  expect_text_error("{\"sale_id\": \"T1-\xff\"}", MAX_SALES, "", "not valid JSON");
}

/* ---- kind, channel, currency -------------------------------------------- */

static void test_refund_without_original_sale_id(void **state)
{
  json_t *body = valid_sale();
  struct sale *sale;

  (void)state;
  set_text(body, "kind", "refund");
  expect_error(body, "original_sale_id", "is required for a refund");

  body = valid_sale();
  set_text(body, "kind", "void");
  expect_error(body, "original_sale_id", "is required for a void");

  body = valid_sale();
  set_text(body, "kind", "refund");
  set_text(body, "original_sale_id", "T1-000123");
  expect_error(body, "original_sale_id", "own sale_id");

  body = valid_sale();
  set_text(body, "original_sale_id", "T1-000100");
  expect_error(body, "original_sale_id", "only for refunds and voids");

  body = valid_sale();
  set_text(body, "kind", "refund");
  set_text(body, "original_sale_id", "T1-000100");
  sale = expect_one(body);
  assert_int_equal(sale->kind, SALE_KIND_REFUND);
  assert_string_equal(sale->original_sale_id, "T1-000100");
  sale_array_free(sale, 1);
}

static void test_kind_and_channel_values(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(body, "kind", "SALE");
  expect_error(body, "kind", "expected \"sale\", \"refund\" or \"void\"");
  body = valid_sale();
  set_text(body, "channel", "web");
  expect_error(body, "channel", "expected \"pos\", \"online\", \"delivery\" or \"pickup\"");
}

static void test_delivery_partner_with_channel_pos(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(body, "delivery_partner", "Lieferando");
  expect_error(body, "delivery_partner", "only for \"channel\": \"delivery\"");

  body = valid_sale();
  json_object_del(body, "channel");
  set_text(body, "delivery_partner", "Lieferando");
  expect_error(body, "delivery_partner", "channel is \"pos\"");
}

static void test_currency_rules(void **state)
{
  json_t *body = valid_sale();

  (void)state;
  set_text(body, "currency", "eur");
  expect_error(body, "currency", "3 uppercase letters");
  body = valid_sale();
  set_text(body, "currency", "EURO");
  expect_error(body, "currency", "3 uppercase letters");
  body = valid_sale();
  set_text(body, "currency", "XYZ");
  expect_error(body, "currency", "not an active ISO 4217 currency code");
  body = valid_sale();
  set_text(body, "currency", "HRK"); /* withdrawn 2023 */
  expect_error(body, "currency", "not an active ISO 4217");
}

static void test_currency_table(void **state)
{
  static const struct {
    const char *code;
    int exponent;
  } cases[] = {
      {"AED", 2}, {"BHD", 3}, {"BIF", 0}, {"CLF", 4}, {"CLP", 0}, {"EUR", 2}, {"GBP", 2},
      {"IQD", 3}, {"ISK", 0}, {"JOD", 3}, {"JPY", 0}, {"KRW", 0}, {"KWD", 3}, {"LYD", 3},
      {"OMR", 3}, {"PYG", 0}, {"TND", 3}, {"UGX", 0}, {"USD", 2}, {"UYW", 4}, {"VND", 0},
      {"XAF", 0}, {"XOF", 0}, {"XPF", 0}, {"ZWL", 2}, {"CHF", 2}, {"MXN", 2}, {"SEK", 2},
      {"XAU", -1}, {"XXX", -1}, {"ABC", -1}, {"eur", -1}, {"EU", -1}, {"EURO", -1}, {"", -1},
  };

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    if (sale_currency_exponent(cases[i].code) != cases[i].exponent)
      print_error("currency %s\n", cases[i].code);
    assert_int_equal(sale_currency_exponent(cases[i].code), cases[i].exponent);
  }
  assert_int_equal(sale_currency_exponent(NULL), -1);
}

/* ---- arrays ------------------------------------------------------------- */

static void test_empty_array(void **state)
{
  (void)state;
  expect_text_error("[]", MAX_SALES, "", "empty array");
  expect_text_error(" [ ] ", MAX_SALES, "", "array of 1 to 10 sales");
}

static void test_array_over_max(void **state)
{
  json_t *body = json_array();
  char *text;

  (void)state;
  for (int i = 0; i < 3; i++) {
    json_t *sale = valid_sale();
    char id[32];
    snprintf(id, sizeof(id), "T1-%d", i);
    set_text(sale, "sale_id", id);
    json_array_append_new(body, sale);
  }
  text = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  expect_text_error(text, 2, "", "has 3 sales; at most 2 are accepted per request");
  free(text);
}

static void test_duplicate_sale_id_within_array(void **state)
{
  json_t *body = json_array();

  (void)state;
  json_array_append_new(body, valid_sale());
  json_array_append_new(body, valid_sale());
  expect_error(body, "[1].sale_id", "\"T1-000123\" is also used by [0]");
}

static void test_array_errors_prefixed(void **state)
{
  json_t *body = json_array();
  json_t *second = valid_sale();

  (void)state;
  set_text(second, "sale_id", "T1-000124");
  json_object_set_new(line0(second), "qty", json_string("2"));
  json_array_append_new(body, valid_sale());
  json_array_append_new(body, second);
  expect_error(body, "[1].lines[0].qty", "must be a JSON integer");

  body = json_array();
  json_array_append_new(body, valid_sale());
  json_array_append_new(body, json_integer(5));
  expect_error(body, "[1]", "each sale must be a JSON object, not a JSON number");

  body = json_array();
  second = valid_sale();
  set_text(second, "sale_id", "T1-000124");
  set_text(second, "total", "1.00");
  json_array_append_new(body, valid_sale());
  json_array_append_new(body, second);
  expect_error(body, "[1].total", "total is 1.00 but the lines add up to 26.30");
}

/* ---- garbage ------------------------------------------------------------ */

static void test_garbage_json(void **state)
{
  char *deep;
  size_t depth = 100000;

  (void)state;
  expect_text_error("", MAX_SALES, "", "empty");
  expect_text_error("{\"sale_id\": ", MAX_SALES, "", "not valid JSON (line 1, column");
  expect_text_error("{} trailing", MAX_SALES, "", "not valid JSON");
  expect_text_error("\"just a string\"", MAX_SALES, "", "not valid JSON");
  expect_text_error("{'sale_id': 'x'}", MAX_SALES, "", "not valid JSON");
  expect_text_error("{\"sale_id\": \"a\\u0000b\"}", MAX_SALES, "", "not valid JSON");
  expect_text_error("null", MAX_SALES, "", "not valid JSON");

  /* A hundred thousand open brackets: jansson stops at its depth limit. */
  deep = malloc(depth + 1);
  assert_non_null(deep);
  memset(deep, '[', depth);
  deep[depth] = '\0';
  expect_text_error(deep, MAX_SALES, "", "not valid JSON");
  free(deep);

  /* Nested but within jansson's limit: a type error on the field. */
  expect_text_error("{\"sale_id\": {\"a\": {\"b\": {\"c\": [[[[1]]]]}}}}", MAX_SALES, "sale_id",
                    "not a JSON object");
  /* The sale itself must be an object, even inside an array of arrays. */
  expect_text_error("[[{}]]", MAX_SALES, "[0]", "not an array");
}

static void test_error_text_is_sanitised(void **state)
{
  struct sale_error error;
  struct sale *sales = NULL;
  size_t count = 0;
  int is_array = 0;
  /* An unknown key with a newline and a long multi-byte tail to truncate. */
  const char *body = "{\"bad\\nkey!\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                     "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                     "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                     "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                     "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                     "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                     "\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
                     "\": 1}";
  json_t *field;

  (void)state;
  assert_int_equal(sale_json_parse(body, strlen(body), 1, &sales, &count, &is_array, &error), -1);
  assert_null(strchr(error.field, '\n'));
  assert_int_equal(strncmp(error.field, "bad?key!", 8), 0);
  /* Still valid UTF-8 after truncation: jansson can put it in a response. */
  field = json_string(error.field);
  assert_non_null(field);
  json_decref(field);
  assert_non_null(strstr(error.message, "unknown field"));
}

static void test_null_error_and_outputs_tolerated(void **state)
{
  struct sale *sales = NULL;
  size_t count = 0;

  (void)state;
  assert_int_equal(sale_json_parse("[]", 2, 1, &sales, &count, NULL, NULL), -1);
  assert_null(sales);
  assert_int_equal(sale_json_parse(NULL, 0, 1, &sales, &count, NULL, NULL), -1);
  assert_int_equal(sale_json_parse(valid_sale_text, strlen(valid_sale_text), 1, &sales, &count,
                                   NULL, NULL),
                   0);
  sale_array_free(sales, count);
}

/* sale_time_format prints what the POS contract's examples send, and those
 * texts (only those) parse back to the same time: a slim journal row
 * stores business_time as '' exactly when the text is this. */
static void test_time_format_canonical_round_trip(void **state)
{
  static const char *const canonical[] = {
      "2026-03-01T12:00:00+01:00", "2026-11-21T18:42:05+01:00", "2026-03-01T11:00:00Z",
      "2026-03-01T11:00:00.250Z",  "2026-03-01T11:00:00.005-05:30", "1970-01-01T00:00:00Z",
      "1969-12-31T23:59:59.999Z",  "2024-02-29T23:59:59+14:00", "2000-03-01T00:00:00-12:00",
      "9999-12-31T23:59:59.999Z"};
  static const char *const other[] = {"2026-03-01T11:00:00+00:00", "2026-03-01T11:00:00.5Z",
                                      "2026-03-01T11:00:00.000Z", "2026-03-01t11:00:00Z",
                                      "2026-03-01T11:00:00z", "2026-03-01T11:00:00.2501Z",
                                      "2026-03-01T11:00:00-00:00"};
  char buf[SALE_TIME_TEXT_MAX + 1];
  long long ms;
  int offset;
  const char *why = NULL;
  (void)state;

  for (size_t i = 0; i < sizeof(canonical) / sizeof(canonical[0]); i++) {
    assert_int_equal(sale_parse_time(canonical[i], &ms, &offset, &why), 0);
    assert_int_equal(sale_time_format(ms, offset, buf, sizeof(buf)), (int)strlen(canonical[i]));
    assert_string_equal(buf, canonical[i]);
  }
  for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
    assert_int_equal(sale_parse_time(other[i], &ms, &offset, &why), 0);
    assert_true(sale_time_format(ms, offset, buf, sizeof(buf)) > 0);
    assert_string_not_equal(buf, other[i]);
  }
  /* Too small a buffer, or a year a POS cannot send: -1, never a cut text. */
  assert_int_equal(sale_time_format(0, 60, buf, 25), -1);
  assert_int_equal(sale_time_format(0, 60, buf, 26), 25);
  assert_int_equal(sale_time_format(-62167219200001LL, 0, buf, sizeof(buf)), -1);
  assert_int_equal(sale_time_format(253402300800000LL, 0, buf, sizeof(buf)), -1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_single_sale_parses_field_for_field),
      cmocka_unit_test(test_time_format_canonical_round_trip),
      cmocka_unit_test(test_optional_fields_default),
      cmocka_unit_test(test_array_form),
      cmocka_unit_test(test_body_not_nul_terminated),
      cmocka_unit_test(test_money_json_number_rejected),
      cmocka_unit_test(test_money_too_many_decimals_rejected),
      cmocka_unit_test(test_money_jpy_decimal_rejected),
      cmocka_unit_test(test_money_bhd_three_decimals_ok),
      cmocka_unit_test(test_money_malformed_rejected),
      cmocka_unit_test(test_money_negative_rejected),
      cmocka_unit_test(test_parse_money_unit),
      cmocka_unit_test(test_money_overflow_rejected),
      cmocka_unit_test(test_duplicate_keys_rejected),
      cmocka_unit_test(test_unknown_field_rejected),
      cmocka_unit_test(test_missing_required_field),
      cmocka_unit_test(test_wrong_types_named),
      cmocka_unit_test(test_qty_must_be_json_integer),
      cmocka_unit_test(test_qty_range),
      cmocka_unit_test(test_total_mismatch),
      cmocka_unit_test(test_payments_mismatch),
      cmocka_unit_test(test_payment_amount_must_be_positive),
      cmocka_unit_test(test_discount_above_line_price),
      cmocka_unit_test(test_lines_and_payments_bounds),
      cmocka_unit_test(test_a_free_sale_needs_no_payment),
      cmocka_unit_test(test_time_without_offset),
      cmocka_unit_test(test_time_feb29_non_leap_year),
      cmocka_unit_test(test_time_year_bounds),
      cmocka_unit_test(test_time_other_errors_in_sale),
      cmocka_unit_test(test_parse_time_unit),
      cmocka_unit_test(test_ids_bad_chars_or_too_long),
      cmocka_unit_test(test_text_fields),
      cmocka_unit_test(test_invalid_utf8_rejected),
      cmocka_unit_test(test_refund_without_original_sale_id),
      cmocka_unit_test(test_kind_and_channel_values),
      cmocka_unit_test(test_delivery_partner_with_channel_pos),
      cmocka_unit_test(test_currency_rules),
      cmocka_unit_test(test_currency_table),
      cmocka_unit_test(test_empty_array),
      cmocka_unit_test(test_array_over_max),
      cmocka_unit_test(test_duplicate_sale_id_within_array),
      cmocka_unit_test(test_array_errors_prefixed),
      cmocka_unit_test(test_garbage_json),
      cmocka_unit_test(test_error_text_is_sanitised),
      cmocka_unit_test(test_null_error_and_outputs_tolerated),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
