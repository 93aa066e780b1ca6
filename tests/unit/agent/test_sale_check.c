/*
 * test_sale_check.c - one set of rules for every ingest source.
 *
 * The same sale, and the same broken sales, read through two sources of
 * sale_read(): the POS API's JSON (sale_json_parse) and a source that
 * gives every value as text, the way a CSV row or a database's TEXT
 * columns do. A valid sale must come out the same, and each broken one with
 * the same field and the same message: the rules live once, in
 * agent/sale/sale_check.c.
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
#include "sale/sale_check.h"

#define TEXT_FIELDS_MAX 16
#define TEXT_ROWS_MAX 4

struct text_field {
  const char *key;
  const char *value; /* NULL: absent (an empty cell) */
};

/* A sale as a text source holds it: the sale's fields, and per line and
 * payment its own. */
struct text_sale {
  struct text_field sale[TEXT_FIELDS_MAX];
  struct text_field lines[TEXT_ROWS_MAX][TEXT_FIELDS_MAX];
  size_t line_count;
  struct text_field payments[TEXT_ROWS_MAX][TEXT_FIELDS_MAX];
  size_t payment_count;
};

struct text_source {
  const struct text_sale *sale;
  const struct text_field *current;
  char count_text[16];
};

static const struct text_sale valid_text_sale = {
    .sale = {{"sale_id", "T1-000123"},
             {"kind", "sale"},
             {"terminal_id", "T1"},
             {"cashier_id", "E042"},
             {"channel", "pos"},
             {"business_time", "2026-11-21T18:42:05+01:00"},
             {"currency", "EUR"},
             {"total", "26.30"}},
    .lines = {{{"sku", "PIZZA-MARG-L"},
               {"qty", "2"},
               {"unit_price", "12.50"},
               {"discount", "1.00"},
               {"promo_id", "TPR-42"},
               {"tax", "2.30"}}},
    .line_count = 1,
    .payments = {{{"method", "card"}, {"amount", "26.30"}}},
    .payment_count = 1,
};

static const char valid_json_text[] = SALE_EXAMPLE_JSON;

static void text_enter(void *state, enum sale_part part, size_t index, struct sale_value *object)
{
  struct text_source *source = state;

  object->type = SALE_VALUE_OBJECT;
  if (part == SALE_PART_SALE)
    source->current = source->sale->sale;
  else if (part == SALE_PART_LINE)
    source->current = source->sale->lines[index];
  else
    source->current = source->sale->payments[index];
}

static void text_get(void *state, const char *key, struct sale_value *value)
{
  struct text_source *source = state;

  value->type = SALE_VALUE_ABSENT;
  if (source->current == source->sale->sale &&
      (strcmp(key, "lines") == 0 || strcmp(key, "payments") == 0)) {
    value->type = SALE_VALUE_ARRAY;
    value->count = key[0] == 'l' ? source->sale->line_count : source->sale->payment_count;
    return;
  }
  for (size_t i = 0; i < TEXT_FIELDS_MAX && source->current[i].key; i++) {
    if (strcmp(source->current[i].key, key) != 0 || !source->current[i].value)
      continue;
    value->type = SALE_VALUE_TEXT;
    value->text = source->current[i].value;
    value->length = strlen(value->text);
  }
}

static const struct sale_source text_sale_source = {
    .syntax = SALE_SYNTAX_TEXT,
    .enter = text_enter,
    .get = text_get,
    .check_fields = NULL,
};

static int read_text(const struct text_sale *in, struct sale *sale, struct sale_error *error)
{
  struct text_source source = {.sale = in};
  struct sale_check check;

  memset(&check, 0, sizeof(check));
  memset(sale, 0, sizeof(*sale));
  check.error = error;
  return sale_read(&text_sale_source, &source, &check, sale);
}

/* Sets field `key` of `fields` to `value` (NULL: absent), adding it if new. */
static void text_set(struct text_field *fields, const char *key, const char *value)
{
  size_t i = 0;

  while (i < TEXT_FIELDS_MAX && fields[i].key && strcmp(fields[i].key, key) != 0)
    i++;
  assert_true(i < TEXT_FIELDS_MAX);
  fields[i].key = key;
  fields[i].value = value;
}

static void test_a_valid_sale_reads_the_same_from_both_sources(void **state)
{
  struct sale from_text, *from_json = NULL;
  struct sale_error error;
  size_t count = 0;
  int is_array = 0;
  uint8_t hash_text[32], hash_json[32];

  (void)state;
  assert_int_equal(read_text(&valid_text_sale, &from_text, &error), 0);
  assert_int_equal(sale_json_parse(valid_json_text, strlen(valid_json_text), 1, &from_json, &count,
                                   &is_array, &error),
                   0);
  assert_int_equal(count, 1);
  assert_int_equal(sale_content_hash(&from_text, hash_text), 0);
  assert_int_equal(sale_content_hash(from_json, hash_json), 0);
  assert_memory_equal(hash_text, hash_json, sizeof(hash_text));
  assert_int_equal(from_text.business_time_ms, from_json->business_time_ms);
  assert_int_equal(from_text.lines[0].qty, 2);
  assert_int_equal(from_text.total, 2630);
  sale_clear(&from_text);
  sale_array_free(from_json, count);
}

/* One broken field, the same in both sources. */
struct breakage {
  enum sale_part part;
  const char *key;
  const char *value; /* NULL: left out */
  const char *field; /* the error's field, the same for both */
};

static const struct breakage breakages[] = {
    {SALE_PART_SALE, "sale_id", "T1 0001", "sale_id"},
    {SALE_PART_SALE, "sale_id", NULL, "sale_id"},
    {SALE_PART_SALE, "kind", "gift", "kind"},
    {SALE_PART_SALE, "original_sale_id", "T1-000001", "original_sale_id"},
    {SALE_PART_SALE, "terminal_id", "", "terminal_id"},
    {SALE_PART_SALE, "channel", "web", "channel"},
    {SALE_PART_SALE, "delivery_partner", "Riders", "delivery_partner"},
    {SALE_PART_SALE, "business_time", "2026-11-21T18:42:05", "business_time"},
    {SALE_PART_SALE, "business_time", "1999-12-31T23:59:59Z", "business_time"},
    {SALE_PART_SALE, "business_time", "2026-02-29T12:00:00Z", "business_time"},
    {SALE_PART_SALE, "currency", "eur", "currency"},
    {SALE_PART_SALE, "currency", "XYZ", "currency"},
    {SALE_PART_SALE, "total", "26.31", "total"},
    {SALE_PART_SALE, "total", "26.3000", "total"},
    {SALE_PART_SALE, "total", "1e2", "total"},
    {SALE_PART_LINE, "sku", NULL, "lines[0].sku"},
    {SALE_PART_LINE, "unit_price", "12.505", "lines[0].unit_price"},
    {SALE_PART_LINE, "unit_price", "1,250.00", "lines[0].unit_price"},
    {SALE_PART_LINE, "discount", "30.00", "lines[0].discount"},
    {SALE_PART_LINE, "tax", "-1.00", "lines[0].tax"},
    {SALE_PART_LINE, "promo_id", "\x01promo", "lines[0].promo_id"},
    {SALE_PART_PAYMENT, "amount", "0", "payments[0].amount"},
    {SALE_PART_PAYMENT, "amount", "20.00", "payments"},
    {SALE_PART_PAYMENT, "method", NULL, "payments[0].method"},
};

static void test_a_broken_sale_gets_the_same_error_from_both_sources(void **state)
{
  (void)state;
  for (size_t i = 0; i < sizeof(breakages) / sizeof(breakages[0]); i++) {
    const struct breakage *b = &breakages[i];
    struct text_sale text = valid_text_sale;
    struct text_field *fields = b->part == SALE_PART_SALE   ? text.sale
                                : b->part == SALE_PART_LINE ? text.lines[0]
                                                            : text.payments[0];
    json_error_t json_error;
    json_t *json = json_loads(valid_json_text, 0, &json_error);
    json_t *object = b->part == SALE_PART_SALE ? json
                     : b->part == SALE_PART_LINE
                         ? json_array_get(json_object_get(json, "lines"), 0)
                         : json_array_get(json_object_get(json, "payments"), 0);
    struct sale from_text, *from_json = NULL;
    struct sale_error text_error, json_error_out;
    size_t count = 0;
    int is_array = 0;
    char *body;

    assert_non_null(json);
    text_set(fields, b->key, b->value);
    if (b->value)
      json_object_set_new(object, b->key, json_string(b->value));
    else
      json_object_del(object, b->key);
    body = json_dumps(json, 0);
    assert_non_null(body);

    memset(&text_error, 0, sizeof(text_error));
    assert_int_equal(read_text(&text, &from_text, &text_error), -1);
    sale_clear(&from_text);
    assert_int_equal(
        sale_json_parse(body, strlen(body), 1, &from_json, &count, &is_array, &json_error_out), -1);
    if (strcmp(text_error.field, b->field) != 0 ||
        strcmp(text_error.field, json_error_out.field) != 0 ||
        strcmp(text_error.message, json_error_out.message) != 0)
      fail_msg("%s = %s: text source %s: %s; JSON %s: %s", b->key, b->value ? b->value : "(none)",
               text_error.field, text_error.message, json_error_out.field, json_error_out.message);
    free(body);
    json_decref(json);
  }
}

/* What only text can get wrong: a quantity is read from its digits. */
static void test_a_quantity_as_text(void **state)
{
  static const struct {
    const char *qty;
    const char *message;
  } cases[] = {
      {"2.5", "\"qty\" \"2.5\" must be a whole number like 2"},
      {"+2", "\"qty\" \"+2\" must be a whole number like 2"},
      {" 2", "\"qty\" \" 2\" must be a whole number like 2"},
      {"0", "\"qty\" is 0; expected 1 to 100000"},
      {"-3", "\"qty\" is -3; expected 1 to 100000"},
      {"100001", "\"qty\" is 100001; expected 1 to 100000"},
      {"9999999999999999999", "\"qty\" \"9999999999999999999\" must be a whole number like 2"},
      {NULL, "\"qty\" is required: a whole number like 2"},
  };
  struct sale sale;
  struct sale_error error;

  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct text_sale text = valid_text_sale;
    text_set(text.lines[0], "qty", cases[i].qty);
    assert_int_equal(read_text(&text, &sale, &error), -1);
    sale_clear(&sale);
    assert_string_equal(error.field, "lines[0].qty");
    assert_string_equal(error.message, cases[i].message);
  }
  /* And the contract's range is the same as JSON's: 100000 is fine. */
  {
    struct text_sale text = valid_text_sale;
    text_set(text.lines[0], "qty", "100000");
    text_set(text.lines[0], "discount", NULL);
    text_set(text.lines[0], "tax", NULL);
    text_set(text.sale, "total", "1250000.00");
    text_set(text.payments[0], "amount", "1250000.00");
    assert_int_equal(read_text(&text, &sale, &error), 0);
    assert_int_equal(sale.lines[0].qty, 100000);
    sale_clear(&sale);
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_a_valid_sale_reads_the_same_from_both_sources),
      cmocka_unit_test(test_a_broken_sale_gets_the_same_error_from_both_sources),
      cmocka_unit_test(test_a_quantity_as_text),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
