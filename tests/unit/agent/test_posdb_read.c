/*
 * test_posdb_read.c - reading sales out of a POS vendor's SQLite database.
 *
 * Each test writes a vendor database of its own (a receipts table, an
 * items table, sometimes a tenders table), maps it the way a firmware
 * engineer would in agent.conf, and reads it: the sales must be the ones a
 * terminal would have posted as JSON (the same content hash), a bad row
 * must come back with the same field and message the POS API gives, and a
 * vendor holding its database must be waited for, then reported.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "ingest/http/sale_json.h"
#include "ingest/posdb/posdb_int.h"
#include "sale/sale.h"
#include "sale_example.h"

struct fixture {
  char dir[64];
  char path[96];
  sqlite3 *vendor;
  struct posdb_options options;
};

static void vendor_exec(struct fixture *fx, const char *sql)
{
  char *message = NULL;
  if (sqlite3_exec(fx->vendor, sql, NULL, NULL, &message) != SQLITE_OK)
    fail_msg("vendor SQL failed: %s: %s", sql, message ? message : "?");
}

static int setup(void **state)
{
  struct fixture *fx = calloc(1, sizeof(*fx));

  assert_non_null(fx);
  snprintf(fx->dir, sizeof(fx->dir), "/tmp/posdb-test-XXXXXX");
  assert_non_null(mkdtemp(fx->dir));
  snprintf(fx->path, sizeof(fx->path), "%s/vendor.db", fx->dir);
  assert_int_equal(sqlite3_open(fx->path, &fx->vendor), SQLITE_OK);
  /* A vendor's own layout: money in cents, no kind or currency column. */
  vendor_exec(fx, "CREATE TABLE receipts (id INTEGER PRIMARY KEY, receipt_no TEXT, till TEXT,"
                  " clerk TEXT, ts TEXT, total_cents INTEGER, pay_method TEXT);"
                  "CREATE TABLE items (receipt_id INTEGER, line_no INTEGER, plu TEXT, qty,"
                  " price_cents, tax_cents INTEGER);");
  fx->options = (struct posdb_options){
      .path = fx->path,
      .poll_ms = 1000,
      .busy_wait_ms = 200,
      .batch_sales = 100,
      .money_minor = 1,
      .sales_table = "receipts",
      .watermark = "id",
      .sale_key = "id",
      .lines_table = "items",
      .lines_sale_key = "receipt_id",
      .lines_order = "line_no",
      .payments_table = "",
      .payments_sale_key = "",
  };
  for (int f = 0; f < POSDB_FIELD_COUNT; f++)
    fx->options.map[f] = "";
  fx->options.map[POSDB_SALE_ID] = "receipt_no";
  fx->options.map[POSDB_KIND] = "'sale'";
  fx->options.map[POSDB_TERMINAL_ID] = "till";
  fx->options.map[POSDB_CASHIER_ID] = "clerk";
  fx->options.map[POSDB_BUSINESS_TIME] = "ts";
  fx->options.map[POSDB_CURRENCY] = "'EUR'";
  fx->options.map[POSDB_TOTAL] = "total_cents";
  fx->options.map[POSDB_SKU] = "plu";
  fx->options.map[POSDB_QTY] = "qty";
  fx->options.map[POSDB_UNIT_PRICE] = "price_cents";
  fx->options.map[POSDB_TAX] = "tax_cents";
  fx->options.map[POSDB_METHOD] = "pay_method";
  fx->options.map[POSDB_AMOUNT] = "total_cents";
  *state = fx;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *fx = *state;
  char command[160];

  sqlite3_close(fx->vendor);
  snprintf(command, sizeof(command), "rm -rf %s", fx->dir);
  assert_int_equal(system(command), 0);
  free(fx);
  return 0;
}

/* A receipt of `lines` lines of PIZZA at 12.50 + 1.00 tax each, paid by card. */
static void add_receipt(struct fixture *fx, int id, const char *receipt_no, int lines,
                        const char *qty_sql)
{
  char sql[512];

  snprintf(sql, sizeof(sql),
           "INSERT INTO receipts VALUES (%d, '%s', 'T1', 'E042', '2026-11-21T18:42:05+01:00', "
           "%d, 'card')",
           id, receipt_no, lines * 1350);
  vendor_exec(fx, sql);
  for (int i = 0; i < lines; i++) {
    /* Inserted last line first: the mapping's order column puts them right. */
    snprintf(sql, sizeof(sql), "INSERT INTO items VALUES (%d, %d, 'PIZZA-%d', %s, 1250, 100)", id,
             lines - i, lines - i, qty_sql);
    vendor_exec(fx, sql);
  }
}

/* The JSON a terminal would have posted for add_receipt's receipt. */
static void receipt_json(const char *receipt_no, int lines, char *out, size_t size)
{
  size_t used = (size_t)snprintf(out, size,
                                 "{\"sale_id\":\"%s\",\"kind\":\"sale\",\"terminal_id\":\"T1\","
                                 "\"cashier_id\":\"E042\",\"business_time\":"
                                 "\"2026-11-21T18:42:05+01:00\",\"currency\":\"EUR\",\"lines\":[",
                                 receipt_no);
  for (int i = 1; i <= lines; i++)
    used += (size_t)snprintf(out + used, size - used,
                             "%s{\"sku\":\"PIZZA-%d\",\"qty\":1,\"unit_price\":\"12.50\","
                             "\"tax\":\"1.00\"}",
                             i > 1 ? "," : "", i);
  snprintf(out + used, size - used,
           "],\"payments\":[{\"method\":\"card\",\"amount\":\"%d.%02d\"}],\"total\":\"%d.%02d\"}",
           lines * 1350 / 100, lines * 1350 % 100, lines * 1350 / 100, lines * 1350 % 100);
}

static void assert_same_as_json(const struct sale *sale, const char *json)
{
  struct sale *parsed = NULL;
  struct sale_error error;
  size_t count = 0;
  int is_array = 0;
  uint8_t a[32], b[32];

  if (sale_json_parse(json, strlen(json), 1, &parsed, &count, &is_array, &error))
    fail_msg("the JSON of the test is wrong: %s: %s", error.field, error.message);
  assert_int_equal(sale_content_hash(sale, a), 0);
  assert_int_equal(sale_content_hash(parsed, b), 0);
  assert_memory_equal(a, b, sizeof(a));
  sale_array_free(parsed, count);
}

static void test_receipts_read_as_the_sales_a_terminal_would_post(void **state)
{
  struct fixture *fx = *state;
  struct posdb_reader *reader;
  struct posdb_batch batch;
  char err[512], json[2048];

  add_receipt(fx, 1, "R-1", 1, "1");
  add_receipt(fx, 2, "R-2", 3, "1");
  add_receipt(fx, 5, "R-5", 2, "1");
  reader = posdb_reader_open(&fx->options, err, sizeof(err));
  if (!reader)
    fail_msg("%s", err);
  assert_int_equal(posdb_reader_read(reader, INT64_MIN, &batch, err, sizeof(err)), 0);
  assert_int_equal(batch.count, 3);
  assert_int_equal(batch.rejected_count, 0);
  assert_int_equal(batch.last_watermark, 5);
  assert_false(batch.full);
  receipt_json("R-1", 1, json, sizeof(json));
  assert_same_as_json(&batch.sales[0], json);
  receipt_json("R-2", 3, json, sizeof(json));
  assert_same_as_json(&batch.sales[1], json);
  assert_string_equal(batch.sales[1].lines[0].sku, "PIZZA-1"); /* in line_no order */
  assert_int_equal(batch.sale_watermarks[2], 5);
  posdb_batch_clear(&batch);

  /* Above a watermark: only what came after it; a batch stops at its size. */
  add_receipt(fx, 6, "R-6", 1, "1");
  add_receipt(fx, 7, "R-7", 1, "1");
  assert_int_equal(posdb_reader_read(reader, 5, &batch, err, sizeof(err)), 0);
  assert_int_equal(batch.count, 2);
  assert_string_equal(batch.sales[0].sale_id, "R-6");
  posdb_batch_clear(&batch);
  posdb_reader_close(reader);
  fx->options.batch_sales = 2;
  reader = posdb_reader_open(&fx->options, err, sizeof(err));
  assert_non_null(reader);
  assert_int_equal(posdb_reader_read(reader, INT64_MIN, &batch, err, sizeof(err)), 0);
  assert_int_equal(batch.count, 2);
  assert_true(batch.full);
  assert_int_equal(batch.last_watermark, 2);
  assert_int_equal(batch.newest_watermark, 7);
  posdb_batch_clear(&batch);
  assert_int_equal(posdb_reader_read(reader, 7, &batch, err, sizeof(err)), 0);
  assert_int_equal(batch.count, 0);
  assert_int_equal(batch.last_watermark, 0);
  posdb_batch_clear(&batch);
  posdb_reader_close(reader);
}

static void test_a_bad_row_gets_the_api_error_and_the_rest_is_read(void **state)
{
  struct fixture *fx = *state;
  struct posdb_reader *reader;
  struct posdb_batch batch;
  struct sale *parsed = NULL;
  struct sale_error json_error;
  size_t count = 0;
  int is_array = 0;
  char err[512], json[2048];
  static const struct {
    const char *qty_sql;
    const char *field;
    const char *message; /* NULL: the same as JSON's with that qty */
  } cases[] = {
      {"0", "lines[0].qty", NULL},
      {"'2.5'", "lines[0].qty", "\"qty\" \"2.5\" must be a whole number like 2"},
      {"2.5", "lines[0].qty", "\"qty\" must be a whole number like 2, not a floating-point number"},
      {"NULL", "lines[0].qty", "\"qty\" is required: a whole number like 2"},
  };

  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char receipt_no[16];
    snprintf(receipt_no, sizeof(receipt_no), "R-%zu", i + 10);
    add_receipt(fx, (int)i + 10, receipt_no, 1, cases[i].qty_sql);
  }
  add_receipt(fx, 20, "R-20", 1, "1");
  /* Money as a REAL is refused, never rounded. */
  vendor_exec(fx, "INSERT INTO receipts VALUES (21, 'R-21', 'T1', 'E042', "
                  "'2026-11-21T18:42:05+01:00', 13.5, 'card');"
                  "INSERT INTO items VALUES (21, 1, 'PIZZA', 1, 1250, 100);"
                  "INSERT INTO receipts VALUES (22, 'R-22', 'T1', 'E042', "
                  "'2026-11-21T18:42:05', 1350, 'card');"
                  "INSERT INTO items VALUES (22, 1, 'PIZZA', 1, 1250, 100);");
  reader = posdb_reader_open(&fx->options, err, sizeof(err));
  assert_non_null(reader);
  assert_int_equal(posdb_reader_read(reader, INT64_MIN, &batch, err, sizeof(err)), 0);
  assert_int_equal(batch.count, 1);
  assert_string_equal(batch.sales[0].sale_id, "R-20");
  assert_int_equal(batch.rejected_count, 6);
  assert_int_equal(batch.last_watermark, 22);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    assert_int_equal(batch.rejected[i].watermark, (int64_t)i + 10);
    assert_string_equal(batch.rejected[i].error.field, cases[i].field);
    if (cases[i].message) {
      assert_string_equal(batch.rejected[i].error.message, cases[i].message);
      continue;
    }
    receipt_json("R-x", 1, json, sizeof(json));
    {
      char *qty = strstr(json, "\"qty\":1");
      assert_non_null(qty);
      qty[6] = '0';
    }
    assert_int_equal(
        sale_json_parse(json, strlen(json), 1, &parsed, &count, &is_array, &json_error), -1);
    assert_string_equal(batch.rejected[i].error.message, json_error.message);
  }
  /* (the payment's amount is the same column, and is read before the total) */
  assert_string_equal(batch.rejected[4].error.field, "payments[0].amount");
  assert_string_equal(batch.rejected[4].error.message,
                      "\"amount\" must be a decimal string like \"12.50\", not a floating-point "
                      "number");
  assert_string_equal(batch.rejected[5].error.field, "business_time");
  assert_non_null(strstr(batch.rejected[5].error.message, "needs a UTC offset"));
  assert_string_equal(batch.rejected[5].sale_key, "22");
  posdb_batch_clear(&batch);
  posdb_reader_close(reader);
}

static void test_a_mapping_that_does_not_fit_says_what_to_fix(void **state)
{
  struct fixture *fx = *state;
  struct posdb_options options = fx->options;
  char err[512];

  options.map[POSDB_QTY] = "amount";
  assert_null(posdb_reader_open(&options, err, sizeof(err)));
  assert_non_null(strstr(err, "[posdb.lines] qty = \"amount\""));
  assert_non_null(strstr(err, "it has: receipt_id, line_no, plu, qty, price_cents, tax_cents"));

  options = fx->options;
  options.lines_table = "lines";
  assert_null(posdb_reader_open(&options, err, sizeof(err)));
  assert_non_null(strstr(err, "[posdb.lines] table = \"lines\": no such table"));

  options = fx->options;
  options.watermark = "ts";
  assert_null(posdb_reader_open(&options, err, sizeof(err)));
  assert_non_null(strstr(err, "must be an INTEGER column"));

  options = fx->options;
  options.map[POSDB_SKU] = "plu; DROP TABLE items";
  assert_null(posdb_reader_open(&options, err, sizeof(err)));
  assert_non_null(strstr(err, "[posdb.lines] sku = \"plu; DROP TABLE items\": is not a plain SQL "
                              "column name"));

  options = fx->options;
  options.map[POSDB_CURRENCY] = "'EUR";
  assert_null(posdb_reader_open(&options, err, sizeof(err)));
  assert_non_null(strstr(err, "a constant is written in single quotes"));

  options = fx->options;
  options.path = "/nonexistent/vendor.db";
  assert_null(posdb_reader_open(&options, err, sizeof(err)));
  assert_non_null(strstr(err, "cannot open the POS database read-only"));
}

/* Payments in a table of their own; several per sale. */
static void test_payments_from_their_own_table(void **state)
{
  struct fixture *fx = *state;
  struct posdb_reader *reader;
  struct posdb_batch batch;
  char err[512];

  vendor_exec(fx, "CREATE TABLE tenders (receipt_id INTEGER, kind TEXT, cents INTEGER);");
  add_receipt(fx, 1, "R-1", 2, "1");
  vendor_exec(fx, "INSERT INTO tenders VALUES (1, 'cash', 700), (1, 'card', 2000);");
  fx->options.payments_table = "tenders";
  fx->options.payments_sale_key = "receipt_id";
  fx->options.map[POSDB_METHOD] = "kind";
  fx->options.map[POSDB_AMOUNT] = "cents";
  reader = posdb_reader_open(&fx->options, err, sizeof(err));
  if (!reader)
    fail_msg("%s", err);
  assert_int_equal(posdb_reader_read(reader, INT64_MIN, &batch, err, sizeof(err)), 0);
  assert_int_equal(batch.count, 1);
  assert_int_equal(batch.sales[0].payment_count, 2);
  assert_string_equal(batch.sales[0].payments[0].method, "cash");
  assert_int_equal(batch.sales[0].payments[1].amount, 2000);
  posdb_batch_clear(&batch);
  posdb_reader_close(reader);
}

/* The vendor's writer holding the database: waited for up to busy_wait,
 * then a read error that says so (the tailer tries again later). */
static void test_a_vendor_holding_its_database_is_waited_for(void **state)
{
  struct fixture *fx = *state;
  struct posdb_reader *reader;
  struct posdb_batch batch;
  char err[512];

  add_receipt(fx, 1, "R-1", 1, "1");
  reader = posdb_reader_open(&fx->options, err, sizeof(err));
  assert_non_null(reader);
  vendor_exec(fx, "BEGIN EXCLUSIVE; INSERT INTO receipts (id, receipt_no) VALUES (2, 'R-2')");
  assert_int_equal(posdb_reader_read(reader, INT64_MIN, &batch, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "busy_wait"));
  assert_int_equal(batch.count, 0);
  vendor_exec(fx, "ROLLBACK");
  assert_int_equal(posdb_reader_read(reader, INT64_MIN, &batch, err, sizeof(err)), 0);
  assert_int_equal(batch.count, 1);
  posdb_batch_clear(&batch);
  posdb_reader_close(reader);
}

/*
 * Every rule of the POS contract through the database: a vendor that keeps
 * every field (text money, money = decimal), one field broken per receipt,
 * and the same error the POS API gives for the same sale in JSON.
 */
static const char contract_json[] = SALE_EXAMPLE_JSON;

struct contract_case {
  enum sale_part part;
  const char *key;
  const char *value; /* NULL: left out (NULL in the database) */
};

static const struct contract_case contract_cases[] = {
    {SALE_PART_SALE, "sale_id", "R 1"},
    {SALE_PART_SALE, "sale_id",
     "R-0123456789012345678901234567890123456789012345678901234567890123"},
    {SALE_PART_SALE, "kind", "gift"},
    {SALE_PART_SALE, "kind", "refund"},
    {SALE_PART_SALE, "original_sale_id", "R-0"},
    {SALE_PART_SALE, "terminal_id", NULL},
    {SALE_PART_SALE, "cashier_id", ""},
    {SALE_PART_SALE, "channel", "web"},
    {SALE_PART_SALE, "delivery_partner", "Riders"},
    {SALE_PART_SALE, "business_time", "2026-11-21T18:42:05"},
    {SALE_PART_SALE, "business_time", "2026-11-21 18:42:05+01:00"},
    {SALE_PART_SALE, "business_time", "1999-12-31T23:59:59Z"},
    {SALE_PART_SALE, "currency", "XYZ"},
    {SALE_PART_SALE, "currency", "eur"},
    {SALE_PART_SALE, "total", "26.31"},
    {SALE_PART_SALE, "total", "26,30"},
    {SALE_PART_SALE, "total", NULL},
    {SALE_PART_LINE, "sku", NULL},
    {SALE_PART_LINE, "unit_price", "12.505"},
    {SALE_PART_LINE, "unit_price", "-12.50"},
    {SALE_PART_LINE, "unit_price", "1e1"},
    {SALE_PART_LINE, "discount", "30.00"},
    {SALE_PART_LINE, "tax", "+2.30"},
    {SALE_PART_LINE, "promo_id", "TPR\t42"},
    {SALE_PART_PAYMENT, "method", NULL},
    {SALE_PART_PAYMENT, "amount", "0.00"},
    {SALE_PART_PAYMENT, "amount", "20.00"},
};

static void test_every_contract_rule_gives_the_api_error(void **state)
{
  struct fixture *fx = *state;
  size_t count = sizeof(contract_cases) / sizeof(contract_cases[0]);
  struct posdb_options options = fx->options;
  struct posdb_reader *reader;
  struct posdb_batch batch;
  char err[512];

  vendor_exec(fx, "CREATE TABLE sales (id INTEGER PRIMARY KEY, sale_id, kind, original_sale_id,"
                  " terminal_id, cashier_id, channel, delivery_partner, business_time, currency,"
                  " total, method, amount);"
                  "CREATE TABLE lines (sale INTEGER, sku, qty, unit_price, discount, promo_id,"
                  " tax);");
  for (size_t i = 0; i < count; i++) {
    const struct contract_case *c = &contract_cases[i];
    const char *sale_columns[] = {"sale_id",    "kind",    "original_sale_id", "terminal_id",
                                  "cashier_id", "channel", "delivery_partner", "business_time",
                                  "currency",   "total",   "method",           "amount"};
    const char *sale_values[] = {"T1-000123", "sale",  NULL,   "T1",
                                 "E042",      "pos",   NULL,   "2026-11-21T18:42:05+01:00",
                                 "EUR",       "26.30", "card", "26.30"};
    const char *line_columns[] = {"sku", "qty", "unit_price", "discount", "promo_id", "tax"};
    const char *line_values[] = {"PIZZA-MARG-L", "2", "12.50", "1.00", "TPR-42", "2.30"};
    char sql[2048];
    size_t used;

    for (size_t k = 0; k < 12; k++)
      if ((c->part == SALE_PART_SALE && strcmp(sale_columns[k], c->key) == 0) ||
          (c->part == SALE_PART_PAYMENT && strcmp(sale_columns[k], c->key) == 0))
        sale_values[k] = c->value;
    for (size_t k = 0; k < 6; k++)
      if (c->part == SALE_PART_LINE && strcmp(line_columns[k], c->key) == 0)
        line_values[k] = c->value;
    used = (size_t)snprintf(sql, sizeof(sql), "INSERT INTO sales VALUES (%zu", i + 1);
    for (size_t k = 0; k < 12; k++) {
      char *quoted =
          sale_values[k] ? sqlite3_mprintf(", %Q", sale_values[k]) : sqlite3_mprintf(", NULL");
      used += (size_t)snprintf(sql + used, sizeof(sql) - used, "%s", quoted);
      sqlite3_free(quoted);
    }
    used +=
        (size_t)snprintf(sql + used, sizeof(sql) - used, "); INSERT INTO lines VALUES (%zu", i + 1);
    for (size_t k = 0; k < 6; k++) {
      /* qty as the INTEGER a till stores */
      char *quoted = !line_values[k] ? sqlite3_mprintf(", NULL")
                     : k == 1        ? sqlite3_mprintf(", %s", line_values[k])
                                     : sqlite3_mprintf(", %Q", line_values[k]);
      used += (size_t)snprintf(sql + used, sizeof(sql) - used, "%s", quoted);
      sqlite3_free(quoted);
    }
    snprintf(sql + used, sizeof(sql) - used, ");");
    vendor_exec(fx, sql);
  }
  options.money_minor = 0;
  options.sales_table = "sales";
  options.lines_table = "lines";
  options.lines_sale_key = "sale";
  options.lines_order = "";
  for (int f = 0; f < POSDB_FIELD_COUNT; f++)
    options.map[f] = posdb_field_name((enum posdb_field)f);
  reader = posdb_reader_open(&options, err, sizeof(err));
  if (!reader)
    fail_msg("%s", err);
  assert_int_equal(posdb_reader_read(reader, INT64_MIN, &batch, err, sizeof(err)), 0);
  assert_int_equal(batch.count, 0);
  assert_int_equal(batch.rejected_count, count);
  for (size_t i = 0; i < count; i++) {
    const struct contract_case *c = &contract_cases[i];
    json_error_t json_error;
    json_t *json = json_loads(contract_json, 0, &json_error);
    json_t *object = c->part == SALE_PART_SALE ? json
                     : c->part == SALE_PART_LINE
                         ? json_array_get(json_object_get(json, "lines"), 0)
                         : json_array_get(json_object_get(json, "payments"), 0);
    struct sale *parsed = NULL;
    struct sale_error api;
    size_t parsed_count = 0;
    int is_array = 0;
    char *body;

    if (c->value)
      json_object_set_new(object, c->key, json_string(c->value));
    else
      json_object_del(object, c->key);
    body = json_dumps(json, 0);
    assert_int_equal(
        sale_json_parse(body, strlen(body), 1, &parsed, &parsed_count, &is_array, &api), -1);
    if (strcmp(api.field, batch.rejected[i].error.field) != 0 ||
        strcmp(api.message, batch.rejected[i].error.message) != 0)
      fail_msg("%s = %s: POS database %s: %s; API %s: %s", c->key, c->value ? c->value : "(none)",
               batch.rejected[i].error.field, batch.rejected[i].error.message, api.field,
               api.message);
    free(body);
    json_decref(json);
  }
  posdb_batch_clear(&batch);
  posdb_reader_close(reader);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_receipts_read_as_the_sales_a_terminal_would_post, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_a_bad_row_gets_the_api_error_and_the_rest_is_read, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_a_mapping_that_does_not_fit_says_what_to_fix, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_payments_from_their_own_table, setup, teardown),
      cmocka_unit_test_setup_teardown(test_a_vendor_holding_its_database_is_waited_for, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_every_contract_rule_gives_the_api_error, setup,
                                      teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
