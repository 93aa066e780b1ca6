/*
 * test_sales_answer.c - the body of POST /v1/sales's 201 and 200, written by
 * hand (sales_api_answer_write), is byte for byte what jansson's
 * json_dumps(JSON_COMPACT | JSON_PRESERVE_ORDER) made of the same answer
 * before: the POS contract's success bytes.
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

#include "ingest/http/sales_api.h"

#define MAX_SALES 40

/* The answer as the agent built it with jansson, for comparison. Caller frees. */
static char *jansson_answer(const struct sale *sales, const struct journal_item_result *results,
                            size_t count, int is_array)
{
  json_t *body, *list;
  char *text;

  if (!is_array) {
    body = json_pack("{s:I}", "seq", (json_int_t)results[0].seq);
    if (results[0].outcome == JOURNAL_DUPLICATE)
      json_object_set_new(body, "duplicate", json_true());
  } else {
    list = json_array();
    for (size_t i = 0; i < count; i++) {
      json_t *item = json_pack("{s:s, s:I}", "sale_id", sales[i].sale_id, "seq",
                               (json_int_t)results[i].seq);
      if (results[i].outcome == JOURNAL_DUPLICATE)
        json_object_set_new(item, "duplicate", json_true());
      json_array_append_new(list, item);
    }
    body = json_pack("{s:o}", "results", list);
  }
  assert_non_null(body);
  text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(body);
  assert_non_null(text);
  return text;
}

/* Asserts that the hand-written answer equals jansson's, in a buffer of just the promised size. */
static void assert_same_answer(const struct sale *sales,
                               const struct journal_item_result *results, size_t count,
                               int is_array)
{
  size_t size = SALES_API_ANSWER_SIZE(count);
  char *out = malloc(size);
  char *expected = jansson_answer(sales, results, count, is_array);
  size_t length;

  assert_non_null(out);
  length = sales_api_answer_write(out, size, sales, results, count, is_array);
  assert_int_equal(length, strlen(expected));
  assert_memory_equal(out, expected, length);
  free(expected);
  free(out);
}

static struct sale sales[MAX_SALES];
static struct journal_item_result results[MAX_SALES];

static void set_sale(size_t i, const char *sale_id, int64_t seq, enum journal_outcome outcome)
{
  snprintf(sales[i].sale_id, sizeof(sales[i].sale_id), "%s", sale_id);
  results[i].seq = seq;
  results[i].outcome = outcome;
}

static void test_single_sale_created_and_duplicate(void **state)
{
  static const int64_t seqs[] = {1, 9, 10, 99, 100, 4294967296LL, 1234567890123LL, INT64_MAX};
  (void)state;
  for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
    set_sale(0, "T1-000123", seqs[i], JOURNAL_STORED);
    assert_same_answer(sales, results, 1, 0);
    set_sale(0, "T1-000123", seqs[i], JOURNAL_DUPLICATE);
    assert_same_answer(sales, results, 1, 0);
  }
}

static void test_array_mixed_duplicates(void **state)
{
  char id[SALE_ID_MAX + 1];
  (void)state;
  for (size_t count = 1; count <= MAX_SALES; count += 13) {
    for (size_t i = 0; i < count; i++) {
      snprintf(id, sizeof(id), "POS-c0-%zu", i);
      set_sale(i, id, (int64_t)(1000 + 7 * i), i % 3 == 1 ? JOURNAL_DUPLICATE : JOURNAL_STORED);
    }
    assert_same_answer(sales, results, count, 1);
    /* A pure retry: every item a duplicate. */
    for (size_t i = 0; i < count; i++)
      results[i].outcome = JOURNAL_DUPLICATE;
    assert_same_answer(sales, results, count, 1);
  }
}

/* Every character a sale_id may hold, at the longest length allowed. */
static void test_array_every_id_character_and_longest_id(void **state)
{
  char id[SALE_ID_MAX + 1];
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-";
  (void)state;
  for (size_t i = 0; i < SALE_ID_MAX; i++)
    id[i] = alphabet[i % (sizeof(alphabet) - 1)];
  id[SALE_ID_MAX] = '\0';
  set_sale(0, id, INT64_MAX, JOURNAL_DUPLICATE);
  set_sale(1, alphabet + SALE_ID_MAX, 2, JOURNAL_STORED);
  assert_same_answer(sales, results, 2, 1);
}

/* What the writer declines (the caller then uses jansson): never a wrong byte. */
static void test_declines_what_it_cannot_write(void **state)
{
  char out[SALES_API_ANSWER_SIZE(2)];
  (void)state;
  set_sale(0, "A", 1, JOURNAL_STORED);
  set_sale(1, "B", 2, JOURNAL_STORED);
  /* Too small a buffer. */
  assert_int_equal(sales_api_answer_write(out, SALES_API_ANSWER_SIZE(2) - 1, sales, results, 2, 1),
                   0);
  /* A single answer with other than one sale. */
  assert_int_equal(sales_api_answer_write(out, sizeof(out), sales, results, 2, 0), 0);
  /* An id jansson would escape. */
  set_sale(1, "B\"Q", 2, JOURNAL_STORED);
  assert_int_equal(sales_api_answer_write(out, sizeof(out), sales, results, 2, 1), 0);
  set_sale(1, "B\\Q", 2, JOURNAL_STORED);
  assert_int_equal(sales_api_answer_write(out, sizeof(out), sales, results, 2, 1), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_sale_created_and_duplicate),
      cmocka_unit_test(test_array_mixed_duplicates),
      cmocka_unit_test(test_array_every_id_character_and_longest_id),
      cmocka_unit_test(test_declines_what_it_cannot_write),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
