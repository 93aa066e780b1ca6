/*
 * test_status_today.c - today's sales in memory: the business day of each
 * sale in its own offset, a new day starting over, top items ranked, and a
 * stop that does not wait for the rebuild of the figures from the journal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "platform/clock.h"
#include "status/status_today.h"

/* 2026-11-26T12:00:00Z; the tests run with TZ=UTC. */
#define NOON_MS 1795694400000LL
#define HOUR_MS (3600 * 1000LL)

static void make_sale(struct sale *sale, struct sale_line *line, const char *sku, int64_t qty,
                      int64_t business_time_ms, int32_t offset_min)
{
  memset(sale, 0, sizeof(*sale));
  memset(line, 0, sizeof(*line));
  snprintf(line->sku, sizeof(line->sku), "%s", sku);
  line->qty = qty;
  sale->kind = SALE_KIND_SALE;
  sale->channel = SALE_CHANNEL_POS;
  sale->business_time_ms = business_time_ms;
  sale->utc_offset_minutes = offset_min;
  snprintf(sale->currency, sizeof(sale->currency), "EUR");
  sale->currency_exponent = 2;
  sale->line_count = 1;
  sale->lines = line;
  sale->total = 1000 * qty;
}

static int64_t get_int(json_t *today, const char *key)
{
  return json_integer_value(json_object_get(today, key));
}

static void a_new_day_starts_over(void **state)
{
  status_today *today = status_today_create();
  struct sale sale;
  struct sale_line line;
  json_t *j;
  (void)state;

  assert_non_null(today);
  make_sale(&sale, &line, "PIZZA", 2, NOON_MS, 0);
  status_today_add(today, &sale, NOON_MS);
  j = status_today_json(today, NOON_MS + HOUR_MS);
  assert_string_equal(json_string_value(json_object_get(j, "date")), "2026-11-26");
  assert_int_equal(get_int(j, "sales"), 1);
  assert_int_equal(get_int(j, "total_minor"), 2000);
  json_decref(j);
  j = status_today_json(today, NOON_MS + 13 * HOUR_MS);
  assert_string_equal(json_string_value(json_object_get(j, "date")), "2026-11-27");
  assert_int_equal(get_int(j, "sales"), 0);
  assert_int_equal(json_array_size(json_object_get(j, "top_items")), 0);
  json_decref(j);
  status_today_free(today);
}

static void the_business_day_is_the_sales_own(void **state)
{
  status_today *today = status_today_create();
  struct sale sale;
  struct sale_line line;
  json_t *j;
  (void)state;

  /* 01:30 UTC on the 27th is 23:30 on the 26th at -02:00: today's. */
  make_sale(&sale, &line, "COLA", 1, NOON_MS + 13 * HOUR_MS + HOUR_MS / 2, -120);
  status_today_add(today, &sale, NOON_MS);
  /* 23:30 UTC on the 26th is 00:30 on the 27th at +01:00: not today's. */
  make_sale(&sale, &line, "BEER", 1, NOON_MS + 11 * HOUR_MS + HOUR_MS / 2, 60);
  status_today_add(today, &sale, NOON_MS);
  j = status_today_json(today, NOON_MS);
  assert_int_equal(get_int(j, "sales"), 1);
  assert_int_equal(json_integer_value(json_object_get(
                       json_array_get(json_object_get(j, "by_hour"), 23), "count")),
                   1);
  assert_string_equal(json_string_value(json_object_get(
                          json_array_get(json_object_get(j, "top_items"), 0), "sku")),
                      "COLA");
  json_decref(j);
  status_today_free(today);
}

/* Sells `count` SKUs at noon, SKU-<i> (`digits` wide) in a quantity of i + 1. */
static void sell_numbered_skus(status_today *today, int count, int digits)
{
  struct sale sale;
  struct sale_line line;
  char sku[16];

  for (int i = 0; i < count; i++) {
    snprintf(sku, sizeof(sku), "SKU-%0*d", digits, i);
    make_sale(&sale, &line, sku, i + 1, NOON_MS, 0);
    status_today_add(today, &sale, NOON_MS);
  }
}

static void top_items_are_ranked_by_quantity(void **state)
{
  status_today *today = status_today_create();
  json_t *j, *top;
  (void)state;

  sell_numbered_skus(today, 15, 2);
  j = status_today_json(today, NOON_MS);
  top = json_object_get(j, "top_items");
  assert_int_equal(json_array_size(top), 10);
  assert_string_equal(json_string_value(json_object_get(json_array_get(top, 0), "sku")),
                      "SKU-14");
  assert_int_equal(json_integer_value(json_object_get(json_array_get(top, 9), "qty")), 6);
  json_decref(j);
  status_today_free(today);
}

/* The SKU table grows as SKUs come: a SKU counted before it grew is still
 * found after, SKUs past the 1,024th are counted but not ranked, and a new
 * day starts with none. */
static void the_sku_table_grows_to_its_limit(void **state)
{
  status_today *today = status_today_create();
  struct sale sale;
  struct sale_line line;
  json_t *j, *top;
  (void)state;

  sell_numbered_skus(today, 1100, 4);
  make_sale(&sale, &line, "SKU-0000", 5000, NOON_MS, 0);
  status_today_add(today, &sale, NOON_MS);
  j = status_today_json(today, NOON_MS);
  top = json_object_get(j, "top_items");
  assert_int_equal(json_array_size(top), 10);
  assert_string_equal(json_string_value(json_object_get(json_array_get(top, 0), "sku")),
                      "SKU-0000");
  assert_int_equal(json_integer_value(json_object_get(json_array_get(top, 0), "qty")), 5001);
  /* SKU-1023 is the last one ranked; SKU-1024 to SKU-1099 are not. */
  assert_string_equal(json_string_value(json_object_get(json_array_get(top, 1), "sku")),
                      "SKU-1023");
  assert_int_equal(get_int(j, "sales"), 1101);
  json_decref(j);

  make_sale(&sale, &line, "PIZZA", 1, NOON_MS + 24 * HOUR_MS, 0);
  status_today_add(today, &sale, NOON_MS + 24 * HOUR_MS);
  j = status_today_json(today, NOON_MS + 24 * HOUR_MS);
  top = json_object_get(j, "top_items");
  assert_int_equal(json_array_size(top), 1);
  assert_string_equal(json_string_value(json_object_get(json_array_get(top, 0), "sku")), "PIZZA");
  json_decref(j);
  status_today_free(today);
}

static double seconds_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A file with the sales table's columns the rebuild reads: `rows` sales
 * received now (all of them in its two days). */
static void make_sales_file(const char *path, int rows)
{
  sqlite3 *db = NULL;
  char sql[1024], *err = NULL;
  int64_t now_ms = clock_wall_ms();

  snprintf(sql, sizeof(sql),
           "CREATE TABLE sales(seq INTEGER PRIMARY KEY, kind TEXT, channel TEXT,"
           " business_time_ms INTEGER, utc_offset_min INTEGER, currency TEXT,"
           " currency_exponent INTEGER, total_minor INTEGER, lines TEXT, payments TEXT,"
           " received_ms INTEGER);"
           "CREATE TABLE clock_pending(first_seq INTEGER PRIMARY KEY, last_seq INTEGER,"
           " boot_id TEXT, wall_minus_boot_ms INTEGER);"
           "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
           " INSERT INTO sales SELECT i, 'sale', 'pos', %lld, 0, 'EUR', 2, 1000,"
           " '[{\"sku\":\"PIZZA\",\"qty\":1,\"unit_price\":1000,\"discount\":0,\"tax\":0}]',"
           " '[]', %lld FROM n;",
           rows, (long long)now_ms, (long long)now_ms);
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
    fail_msg("%s", err);
  sqlite3_close(db);
}

static void a_stop_does_not_wait_for_the_rebuild_of_the_figures(void **state)
{
  char dir[] = "/tmp/test_status_today_XXXXXX", path[64], err[512];
  status_today *today;
  uv_loop_t loop;
  double started, read_all, freed;

  (void)state;
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/journal.db", dir);
  make_sales_file(path, 200000);
  /* What the whole read costs here. */
  today = status_today_create();
  started = seconds_now();
  assert_int_equal(status_today_load(today, path, clock_wall_ms(), err, sizeof(err)), 0);
  read_all = seconds_now() - started;
  status_today_free(today);

  assert_int_equal(uv_loop_init(&loop), 0);
  today = status_today_create();
  assert_int_equal(status_today_load_start(today, &loop, path, INT64_MAX, clock_wall_ms()), 0);
  usleep(20000);
  started = seconds_now();
  status_today_free(today);
  freed = seconds_now() - started;
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  if (freed > read_all / 4)
    fail_msg("the stop waited %.3f s; the whole read takes %.3f s", freed, read_all);

  /* The agent's stop tells it earlier, the loop still running (before the
   * journal's last checkpoint, which would wait for this reader). */
  assert_int_equal(uv_loop_init(&loop), 0);
  today = status_today_create();
  assert_int_equal(status_today_load_start(today, &loop, path, INT64_MAX, clock_wall_ms()), 0);
  usleep(20000);
  started = seconds_now();
  status_today_stop(today);
  freed = seconds_now() - started;
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  status_today_free(today);
  assert_int_equal(uv_loop_close(&loop), 0);
  if (freed > read_all / 4)
    fail_msg("status_today_stop waited %.3f s; the whole read takes %.3f s", freed, read_all);
  unlink(path);
  rmdir(dir);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_new_day_starts_over),
      cmocka_unit_test(the_business_day_is_the_sales_own),
      cmocka_unit_test(top_items_are_ranked_by_quantity),
      cmocka_unit_test(the_sku_table_grows_to_its_limit),
      cmocka_unit_test(a_stop_does_not_wait_for_the_rebuild_of_the_figures),
  };
  setenv("TZ", "UTC", 1);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
