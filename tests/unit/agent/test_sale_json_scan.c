/*
 * test_sale_json_scan.c - the one-pass JSON scanner of the POS contract
 * (agent/ingest/http/sale_json_scan.c) against jansson.
 *
 * The scanner may hand any body back to jansson, but what it takes must be
 * what jansson (json_loadb, JSON_REJECT_DUPLICATES) accepts, and read the
 * same: every case here compares the two tapes value by value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "ingest/http/sale_json.h"
#include "ingest/http/sale_json_int.h"
#include "sale/sale.h"
#include "sale_example.h"

static const char valid_sale_text[] = SALE_EXAMPLE_JSON;

/*
 * Scans `body` and parses it with jansson. Returns the scanner's status; if
 * the scanner took the body, jansson must have too, into an equal tape.
 */
static int scan_and_compare(const char *body, size_t length)
{
  struct sale_json_tape scanned, reference;
  json_error_t json_error;
  json_t *root;
  int rc;

  sale_json__tape_init(&scanned);
  sale_json__tape_init(&reference);
  rc = sale_json__scan(&scanned, body, length);
  root = json_loadb(body, length, JSON_REJECT_DUPLICATES, &json_error);
  if (rc == SALE_JSON_SCAN_OK) {
    if (!root)
      fail_msg("the scanner took a body jansson refuses (%s): %.*s", json_error.text,
               (int)length, body);
    assert_int_equal(sale_json__tape_from_json(&reference, root), 0);
    root = NULL;
    assert_int_equal(sale_json__tape_diff(&scanned, &reference), -1);
  } else {
    /* A fallback is always safe; the tape must be empty again. */
    assert_int_equal(scanned.count, 0);
  }
  json_decref(root);
  sale_json__tape_release(&scanned);
  sale_json__tape_release(&reference);
  return rc;
}

static int scan_text(const char *body) { return scan_and_compare(body, strlen(body)); }

static void test_scanner_takes_a_plain_sale(void **state)
{
  struct sale_json_tape tape;
  const struct sale_json_value *lines, *qty;

  (void)state;
  assert_int_equal(scan_text(valid_sale_text), SALE_JSON_SCAN_OK);

  sale_json__tape_init(&tape);
  assert_int_equal(sale_json__scan(&tape, valid_sale_text, strlen(valid_sale_text)), 0);
  assert_int_equal(tape.values[0].type, SALE_JSON_OBJECT);
  assert_int_equal(tape.values[0].count, 10);
  assert_int_equal(tape.values[0].next, tape.count);
  lines = sale_json__object_get(&tape, &tape.values[0], "lines");
  assert_non_null(lines);
  assert_int_equal(lines->type, SALE_JSON_ARRAY);
  assert_int_equal(lines->count, 1);
  qty = sale_json__object_get(&tape, lines + 1, "qty");
  assert_non_null(qty);
  assert_int_equal(qty->type, SALE_JSON_INTEGER);
  assert_int_equal(qty->as.integer, 2);
  assert_string_equal(sale_json__object_get(&tape, &tape.values[0], "total")->as.text, "26.30");
  assert_null(sale_json__object_get(&tape, &tape.values[0], "tota"));
  /* No allocation for a one-sale body: both buffers are inside the tape. */
  assert_ptr_equal(tape.values, tape.values_inline);
  assert_ptr_equal(tape.text, tape.text_inline);
  sale_json__tape_release(&tape);
}

static void test_scanner_takes_what_jansson_reads_the_same(void **state)
{
  static const char *const bodies[] = {
      "{}", "[]", " \t\r\n[ ]\n", "[{}]", "[[],[[]],{}]", "{\"a\":{}}",
      "{\"a\":-0}", "{\"a\":0,\"b\":-1,\"c\":123456789012345678,\"d\":-123456789012345678}",
      "{\"a\":true,\"b\":false,\"c\":null}", "[true,false,null,1,\"x\"]",
      "{\"\":\"\"}", "{\"a\":\"\",\"aa\":\"a\"}", "{\"caf\xc3\xa9\":\"\xe2\x82\xac 5\"}",
      "{\"s\":\"\xf0\x9f\x8d\x95 \xc2\x80 \xef\xbf\xbf\"}", "[\"/ \x7f\"]",
      "{\"a\" : [ 1 , 2 ] , \"b\" : { \"c\" : \"d\" } }",
      /* Escapes, decoded in place (issue 12 review: .NET writes '+' as \u002B,
       * Python's json.dumps every non-ASCII character as \uXXXX). */
      "{\"a\":\"b\\\"c\"}", "[\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"]", "[\"\\\\\\\\\"]",
      "{\"t\":\"2026-11-21T18:42:05\\u002B01:00\"}",
      "[\"\\u00e9\\u00E9\\u20ac\\uffff\\u0001\\u007f\"]",
      "[\"\\ud83c\\udf55\\uDBFF\\uDFFF\\ud800\\udc00\"]", "[\"\\u0022\\u005c\\u0041x\"]",
      "{\"s\\u0061le_id\":\"x\",\"sale_id2\":1}", "{\"a\":\"\\u00e9\",\"\\u00e9\":\"a\"}",
      "[\"caf\xc3\xa9 \\u00e9 \xe2\x82\xac\\n\"]", "{\"\\\"\":1}", "[\"\\u0080\\u07FF\\u0800\"]",
  };

  (void)state;
  for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
    if (scan_text(bodies[i]) != SALE_JSON_SCAN_OK)
      fail_msg("the scanner handed back a plain body: %s", bodies[i]);
  }
}

static void test_scanner_hands_back_what_it_does_not_take(void **state)
{
  static const char *const bodies[] = {
      "", "   ", "1", "\"x\"", "null", "{\"a\":1}x", "{\"a\":1}}", "{\"a\":1,}", "[1,]",
      "[1 2]", "{\"a\" 1}", "{a:1}", "{\"a\":01}", "{\"a\":-}", "{\"a\":1.5}", "{\"a\":1e3}",
      "{\"a\":1E3}", "{\"a\":1234567890123456789}", "{\"a\":\"\\u0000\"}",
      /* Escapes jansson refuses, and a duplicate key once decoded. */
      "[\"\\x\"]", "[\"\\u00g0\"]", "[\"\\u12\"]", "[\"\\u\"]", "[\"\\\"]", "[\"\\",
      "[\"\\ud800\"]", "[\"\\ud800x\"]", "[\"\\ud800\\u0041\"]", "[\"\\udc00\\ud800\"]",
      "[\"\\udfff\"]", "[\"\\ud800\\udbff\"]", "[\"\\ud800\\n\"]", "[\"\\U0041\"]", "[\"\\'\"]",
      "{\"a\":1,\"\\u0061\":2}", "{\"\\u00e9\":1,\"\xc3\xa9\":2}", "[\"a\\u0000b\"]",
      "{\"a\":\"tab\there\"}", "{\"a\":\"\xc3\"}", "{\"a\":\"\xc0\xaf\"}",
      "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xf4\x90\x80\x80\"}", "{\"a\":\"\xff\"}",
      "{\"a\":1,\"a\":2}", "{\"a\":1,\"b\":{\"c\":1},\"a\":3}", "{\"a\":tru}", "{\"a\":truex}",
      "{\"a\":nul}", "[true1]", "{\"a\":\"unterminated", "[", "{", "{\"a\":", "\xef\xbb\xbf{}",
      "{\"a\":[1,2}", "[{]}", "{\"a\":-01}",
  };

  (void)state;
  for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
    if (scan_text(bodies[i]) != SALE_JSON_SCAN_FALLBACK)
      fail_msg("the scanner took a body it should hand to jansson: %s", bodies[i]);
  }
  /* A NUL byte inside a string, and one between values. */
  assert_int_equal(scan_and_compare("{\"a\":\"x\0y\"}", 11), SALE_JSON_SCAN_FALLBACK);
  assert_int_equal(scan_and_compare("{\"a\":1}\0", 8), SALE_JSON_SCAN_FALLBACK);
  /* No body at all (issue 12 review: memcpy from NULL was undefined). */
  {
    struct sale_json_tape tape;
    sale_json__tape_init(&tape);
    assert_int_equal(sale_json__scan(&tape, NULL, 0), SALE_JSON_SCAN_FALLBACK);
    assert_int_equal(tape.count, 0);
    sale_json__tape_release(&tape);
  }
  /* The body ends before its closing quote even though a quote follows in memory. */
  assert_int_equal(scan_and_compare("{\"a\":\"bc\"}", 7), SALE_JSON_SCAN_FALLBACK);
}

static void test_scanner_limits_fall_back(void **state)
{
  char deep[2 * (SALE_JSON_SCAN_DEPTH_MAX + 1) + 1];
  char wide[16 * (SALE_JSON_SCAN_KEYS_MAX + 2)];
  size_t used = 0;

  (void)state;
  /* Nesting to the scanner's depth is taken; one deeper goes to jansson. */
  memset(deep, '[', SALE_JSON_SCAN_DEPTH_MAX);
  memset(deep + SALE_JSON_SCAN_DEPTH_MAX, ']', SALE_JSON_SCAN_DEPTH_MAX);
  assert_int_equal(scan_and_compare(deep, 2 * SALE_JSON_SCAN_DEPTH_MAX), SALE_JSON_SCAN_OK);
  memset(deep, '[', SALE_JSON_SCAN_DEPTH_MAX + 1);
  memset(deep + SALE_JSON_SCAN_DEPTH_MAX + 1, ']', SALE_JSON_SCAN_DEPTH_MAX + 1);
  assert_int_equal(scan_and_compare(deep, 2 * (SALE_JSON_SCAN_DEPTH_MAX + 1)),
                   SALE_JSON_SCAN_FALLBACK);

  /* More keys in one object than the linear duplicate check is for. */
  wide[used++] = '{';
  for (int i = 0; i <= SALE_JSON_SCAN_KEYS_MAX; i++)
    used += (size_t)snprintf(wide + used, sizeof(wide) - used, "%s\"k%d\":%d", i ? "," : "", i,
                             i);
  wide[used++] = '}';
  assert_int_equal(scan_and_compare(wide, used), SALE_JSON_SCAN_FALLBACK);
}

static void test_scanner_grows_past_its_inline_buffers(void **state)
{
  size_t capacity = 200 * sizeof(valid_sale_text) + 16;
  char *body = malloc(capacity);
  size_t used = 0;
  struct sale_json_tape tape;

  (void)state;
  assert_non_null(body);
  body[used++] = '[';
  for (int i = 0; i < 200; i++) {
    if (i)
      body[used++] = ',';
    memcpy(body + used, valid_sale_text, strlen(valid_sale_text));
    used += strlen(valid_sale_text);
  }
  body[used++] = ']';
  assert_int_equal(scan_and_compare(body, used), SALE_JSON_SCAN_OK);

  sale_json__tape_init(&tape);
  assert_int_equal(sale_json__scan(&tape, body, used), SALE_JSON_SCAN_OK);
  assert_int_equal(tape.values[0].count, 200);
  assert_true(tape.count > SALE_JSON_TAPE_INLINE);
  sale_json__tape_release(&tape);
  free(body);
}

/* Parses `body` as one sale and returns its content hash in hex. */
static void content_hash_hex(const char *body, char hex[65])
{
  struct sale *sales = NULL;
  size_t count = 0;
  int is_array = 0;
  struct sale_error error;
  uint8_t hash[32];

  if (sale_json_parse(body, strlen(body), 1, &sales, &count, &is_array, &error) != 0)
    fail_msg("%s: %s", error.field, error.message);
  assert_int_equal(count, 1);
  assert_int_equal(sale_content_hash(&sales[0], hash), 0);
  for (int i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02x", hash[i]);
  sale_array_free(sales, count);
}

/*
 * The content hash is what the journal dedupes retries by: the same sale
 * must hash the same after sale_content_hash stopped allocating (stack
 * messages, the packed bytes streamed into SHA-256). The figures are those
 * of the code before that change (734e4f8), for a small sale and for one
 * past the stack buffers (20 lines, 5 payments).
 */
static void test_content_hash_unchanged_without_allocations(void **state)
{
  char hex[65], wide[4096];
  size_t used = 0;

  (void)state;
  content_hash_hex(valid_sale_text, hex);
  assert_string_equal(hex, "32ba351059665696ed02f60756585b0bd5ff0843b6954a279eb6e4a65d0d9cf8");

  used += (size_t)snprintf(wide + used, sizeof(wide) - used,
                           "{\"sale_id\":\"T1-000200\",\"kind\":\"sale\",\"terminal_id\":\"T1\","
                           "\"business_time\":\"2026-11-21T18:42:05Z\",\"currency\":\"EUR\","
                           "\"lines\":[");
  for (int i = 0; i < 20; i++)
    used += (size_t)snprintf(wide + used, sizeof(wide) - used,
                             "%s{\"sku\":\"SKU-%d\",\"qty\":1,\"unit_price\":\"1.00\"}",
                             i ? "," : "", i);
  used += (size_t)snprintf(wide + used, sizeof(wide) - used, "],\"payments\":[");
  for (int i = 0; i < 5; i++)
    used += (size_t)snprintf(wide + used, sizeof(wide) - used,
                             "%s{\"method\":\"card\",\"amount\":\"4.00\"}", i ? "," : "");
  snprintf(wide + used, sizeof(wide) - used, "],\"total\":\"20.00\"}");
  content_hash_hex(wide, hex);
  assert_string_equal(hex, "42cfc1840fb2623f8d553c1edb46bad43a0dd43093ef69648abc7e5970effc68");
}

static size_t jansson_allocations;

/* Puts jansson's own allocator back, also when an assert ended the test early. */
static int restore_jansson_allocator(void **state)
{
  (void)state;
  json_set_alloc_funcs(malloc, free);
  return 0;
}

static void *counting_malloc(size_t size)
{
  jansson_allocations++;
  return malloc(size);
}

/*
 * Issue 12: jansson made a node per value and copied every key and string,
 * about 60 allocations for one small sale. A plain body must not reach
 * jansson's allocator at all, nor one escaped the way encoders do by default
 * (issue 12 review: .NET's \u002B for '+', Python's \uXXXX for non-ASCII,
 * even in a key); both read the same as the plain body.
 */
static void test_plain_sale_parses_without_jansson_allocations(void **state)
{
  static const char escaped_text[] =
      "{\"s\\u0061le_id\": \"T1-000123\", \"kind\": \"sale\", \"terminal_id\": \"\\u0054\\u0031\","
      " \"cashier_id\": \"E042\", \"channel\": \"pos\","
      " \"business_time\": \"2026-11-21T18:42:05\\u002B01:00\", \"currency\": \"EUR\","
      " \"lines\": [{\"sku\": \"PIZZA\\u002dMARG\\/L\", \"qty\": 2, \"unit_price\": \"12.50\","
      " \"discount\": \"1.00\", \"promo_id\": \"TPR-42\", \"tax\": \"2.30\"}],"
      " \"payments\": [{\"method\": \"card\", \"amount\": \"26.30\"}],"
      " \"total\": \"26.30\"}";
  static const char unescaped_text[] =
      "{\"sale_id\": \"T1-000123\", \"kind\": \"sale\", \"terminal_id\": \"T1\","
      " \"cashier_id\": \"E042\", \"channel\": \"pos\","
      " \"business_time\": \"2026-11-21T18:42:05+01:00\", \"currency\": \"EUR\","
      " \"lines\": [{\"sku\": \"PIZZA-MARG/L\", \"qty\": 2, \"unit_price\": \"12.50\","
      " \"discount\": \"1.00\", \"promo_id\": \"TPR-42\", \"tax\": \"2.30\"}],"
      " \"payments\": [{\"method\": \"card\", \"amount\": \"26.30\"}],"
      " \"total\": \"26.30\"}";
  char plain_hash[65], escaped_hash[65], unescaped_hash[65];

  (void)state;
  json_set_alloc_funcs(counting_malloc, free);
  jansson_allocations = 0;
  content_hash_hex(valid_sale_text, plain_hash);
  content_hash_hex(escaped_text, escaped_hash);
  content_hash_hex(unescaped_text, unescaped_hash);
  assert_int_equal(jansson_allocations, 0);
  assert_string_equal(escaped_hash, unescaped_hash);
  assert_int_equal(scan_text(escaped_text), SALE_JSON_SCAN_OK);
}

/* `[0,0,...,0,TAIL]` with `zeros` zeros. */
static char *huge_array(size_t zeros, const char *tail, size_t *length)
{
  size_t tail_length = strlen(tail);
  char *body = malloc(1 + zeros * 2 + tail_length + 2);

  assert_non_null(body);
  body[0] = '[';
  for (size_t i = 0; i < zeros; i++)
    memcpy(body + 1 + i * 2, "0,", 2);
  memcpy(body + 1 + zeros * 2, tail, tail_length);
  memcpy(body + 1 + zeros * 2 + tail_length, "]", 2);
  *length = 1 + zeros * 2 + tail_length + 1;
  return body;
}

/* Peak RSS in kB of a child that runs `run(body, length)`. */
static long child_peak_kb(void (*run)(const char *, size_t), const char *body, size_t length)
{
  struct rusage usage;
  int status = 0;
  pid_t pid = fork();

  assert_true(pid >= 0);
  if (pid == 0) {
    run(body, length);
    _exit(0);
  }
  assert_int_equal(wait4(pid, &status, 0, &usage), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return usage.ru_maxrss;
}

/* The floor both children start from (the parent's pages, an emulator's own). */
static void run_nothing(const char *body, size_t length)
{
  (void)body;
  (void)length;
}

static void run_jansson_only(const char *body, size_t length)
{
  json_error_t json_error;
  json_t *root = json_loadb(body, length, JSON_REJECT_DUPLICATES, &json_error);

  if (!root || json_array_size(root) == 0)
    _exit(3);
  json_decref(root);
}

static void run_sale_json_parse(const char *body, size_t length)
{
  struct sale_error error;
  struct sale *sales = NULL;
  size_t count = 0;

  if (sale_json_parse(body, length, 100, &sales, &count, NULL, &error) == 0 ||
      strstr(error.message, "sales; at most 100 are accepted per request") == NULL)
    _exit(4);
}

/*
 * Issue 12 review: a body jansson has to read (an escape) with far more
 * sales than allowed was flattened onto a tape before its size was checked,
 * so jansson's tree and the tape were in memory at once (161 MB for 4 MiB,
 * where jansson alone took 88). The size is checked on jansson's tree now:
 * the peak is jansson's own, give or take, never tree plus tape.
 */
static void test_oversized_fallback_array_is_refused_before_flattening(void **state)
{
  size_t length;
  /* The fraction sends it to jansson (the review's "\u0041" did until the
   * scanner decoded escapes). */
  char *body = huge_array(1000000, "0.5", &length);
  long floor_kb, jansson_kb, parse_kb;

  (void)state;
  floor_kb = child_peak_kb(run_nothing, body, length);
  jansson_kb = child_peak_kb(run_jansson_only, body, length) - floor_kb;
  parse_kb = child_peak_kb(run_sale_json_parse, body, length) - floor_kb;
  free(body);
  /* A tape of a million values is 24 MB on top of jansson's ~40. */
  if (parse_kb > jansson_kb + jansson_kb / 4)
    fail_msg("parsing peaked at %ld kB; jansson alone at %ld kB", parse_kb, jansson_kb);
}

/*
 * The same body without the fraction is the scanner's: it reads the array to
 * its end but keeps only max_sales elements, so the peak is the body's copy,
 * far below jansson's tree (and below a tape of a million values).
 */
static void test_oversized_plain_array_is_refused_without_a_tape_its_size(void **state)
{
  size_t length;
  char *body = huge_array(1000000, "0", &length);
  long floor_kb, jansson_kb, parse_kb;

  (void)state;
  floor_kb = child_peak_kb(run_nothing, body, length);
  jansson_kb = child_peak_kb(run_jansson_only, body, length) - floor_kb;
  parse_kb = child_peak_kb(run_sale_json_parse, body, length) - floor_kb;
  free(body);
  if (parse_kb > jansson_kb / 2)
    fail_msg("parsing peaked at %ld kB; jansson alone at %ld kB", parse_kb, jansson_kb);
}

/*
 * Issue 12 review: a 100-sale POST grew its tape from 256 values by
 * doubling, copying it five times. The tape is sized from the body's length
 * up front now: at most that one allocation.
 */
static void test_hundred_sale_body_is_scanned_without_regrowing(void **state)
{
  size_t one = strlen(valid_sale_text);
  size_t length = 0;
  char *body = malloc(100 * (one + 1) + 2);
  struct sale_json_tape tape;

  (void)state;
  assert_non_null(body);
  body[length++] = '[';
  for (int i = 0; i < 100; i++) {
    if (i)
      body[length++] = ',';
    memcpy(body + length, valid_sale_text, one);
    length += one;
  }
  body[length++] = ']';
  assert_int_equal(scan_and_compare(body, length), SALE_JSON_SCAN_OK);
  sale_json__tape_init(&tape);
  assert_int_equal(sale_json__scan(&tape, body, length), SALE_JSON_SCAN_OK);
  assert_int_equal(tape.values[0].count, 100);
  assert_true(tape.grows <= 1);
  assert_true(tape.capacity <= 2 * tape.count);
  sale_json__tape_release(&tape);
  free(body);
}

/*
 * A top-level array past the tape's top_max (sale_json_parse's max_sales)
 * is still read to its end, so that a syntax error there keeps jansson's
 * text, and counted; but only its first top_max elements stay on the tape.
 */
static void test_scanner_counts_but_drops_elements_past_top_max(void **state)
{
  static const char *const refused[] = {"[1,2,3,x]", "[1,2,3,{\"a\":1,\"a\":2}]", "[1,2,3,1.5]"};
  static const char body[] = "[{\"a\":1},[2],\"3\",{\"b\":[4,5]},6]";
  struct sale_json_tape tape;

  (void)state;
  sale_json__tape_init(&tape);
  tape.top_max = 2;
  assert_int_equal(sale_json__scan(&tape, body, strlen(body)), SALE_JSON_SCAN_OK);
  assert_int_equal(tape.values[0].count, 5);
  assert_int_equal(tape.count, 6); /* the array, {"a":1} (3 values), [2] (2 values) */
  assert_int_equal(tape.values[0].next, tape.count);
  sale_json__tape_release(&tape);
  for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
    tape.top_max = 2;
    assert_int_equal(sale_json__scan(&tape, refused[i], strlen(refused[i])),
                     SALE_JSON_SCAN_FALLBACK);
    sale_json__tape_release(&tape);
  }
  tape.top_max = 0;
  assert_int_equal(sale_json__scan(&tape, "[1,2]", 5), SALE_JSON_SCAN_OK);
  assert_int_equal(tape.values[0].count, 2);
  assert_int_equal(tape.count, 1);
  sale_json__tape_release(&tape);
}


int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scanner_takes_a_plain_sale),
      cmocka_unit_test(test_scanner_takes_what_jansson_reads_the_same),
      cmocka_unit_test(test_scanner_hands_back_what_it_does_not_take),
      cmocka_unit_test(test_scanner_limits_fall_back),
      cmocka_unit_test(test_scanner_grows_past_its_inline_buffers),
      cmocka_unit_test(test_content_hash_unchanged_without_allocations),
      cmocka_unit_test_teardown(test_plain_sale_parses_without_jansson_allocations,
                                restore_jansson_allocator),
      cmocka_unit_test(test_oversized_fallback_array_is_refused_before_flattening),
      cmocka_unit_test(test_oversized_plain_array_is_refused_without_a_tape_its_size),
      cmocka_unit_test(test_hundred_sale_body_is_scanned_without_regrowing),
      cmocka_unit_test(test_scanner_counts_but_drops_elements_past_top_max),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
