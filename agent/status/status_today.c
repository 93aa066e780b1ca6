/*
 * status_today.c - today's sales, in memory.
 */
#include "status/status_today.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "platform/clock.h"
#include "platform/log.h"

/* Distinct SKUs counted one by one; beyond, their quantities are not ranked
 * (a store sells a few hundred SKUs at most). */
#define STATUS_TODAY_MAX_SKUS 1024
#define STATUS_TODAY_TOP 10
#define STATUS_TODAY_CHANNELS 5 /* enum sale_channel 1..4 */

struct status_today_loader;

struct status_today_item {
  char sku[SALE_TEXT_MAX + 1];
  int64_t qty;
};

struct status_today_sum {
  int64_t count;
  int64_t total_minor;
};

struct status_today {
  int day; /* yyyymmdd of the day counted; 0 = none yet */
  char currency[4];
  unsigned currency_exponent;
  struct status_today_sum sales, refunds, voids;
  struct status_today_sum by_channel[STATUS_TODAY_CHANNELS];
  struct status_today_sum by_hour[24];
  struct status_today_item *items; /* grown on demand up to STATUS_TODAY_MAX_SKUS */
  size_t item_count, item_capacity;
  int64_t unranked_qty; /* items of SKUs beyond STATUS_TODAY_MAX_SKUS */
  struct status_today_loader *loader; /* status_today_load_start's, until merged */
};

/* The rebuild of status_today_load_start: a thread reads the journal into
 * `loaded` while the loop takes sales into the live aggregate; `done` hands
 * the result to the loop, which merges it. */
struct status_today_loader {
  uv_async_t done;
  pthread_t thread;
  status_today *live, *loaded;
  char *db_path;
  int64_t upto_seq, now_ms;
  int rc, joined;
  /* Set by status_today_free: the read ends at its next few rows. */
  atomic_int stop;
  char err[512];
};

status_today *status_today_create(void)
{
  /* The SKU table grows as SKUs come (status_today_add_item), up to
   * STATUS_TODAY_MAX_SKUS as before. Made whole here (80 kB, cleared) it
   * was resident from the start, in the live figures and in the loader's
   * copy, for a store's few hundred SKUs at most (a few kB). Measured on a
   * fresh agent 2 s after its first sale: 1,128 -> 1,072 kB of anonymous
   * RSS (issue 12, item 7: idle RSS at most 6 MB; tests/bench/rss_bench.sh). */
  return calloc(1, sizeof(status_today));
}

static void status_today_loader_free(uv_handle_t *handle)
{
  struct status_today_loader *loader = handle->data;
  status_today_free(loader->loaded);
  free(loader->db_path);
  free(loader);
}

/* The loader's thread joined and its handle closed (on the loop thread). */
static void status_today_loader_end(struct status_today_loader *loader)
{
  if (!loader->joined)
    pthread_join(loader->thread, NULL);
  loader->joined = 1;
  if (loader->live)
    loader->live->loader = NULL;
  loader->live = NULL;
  uv_close((uv_handle_t *)&loader->done, status_today_loader_free);
}

void status_today_stop(status_today *today)
{
  if (!today || !today->loader)
    return;
  atomic_store(&today->loader->stop, 1);
  /* Its handle closes on the loop's next turn. */
  status_today_loader_end(today->loader);
}

void status_today_free(status_today *today)
{
  if (!today)
    return;
  if (today->loader) {
    /* Stopped before the rebuild ended: it is told to stop, waited for (it
     * reads, it never writes) and its handle closed before the loop is.
     * Not told, a stop waited for the whole read: 7 s with a million rows
     * received in the last two days (issue 12 item 4). */
    uv_loop_t *loop = today->loader->done.loop;
    atomic_store(&today->loader->stop, 1);
    status_today_loader_end(today->loader);
    uv_run(loop, UV_RUN_NOWAIT);
  }
  free(today->items);
  free(today);
}

/* The device's local date of `now_ms`, as yyyymmdd. */
static int status_today_local_day(int64_t now_ms)
{
  time_t t = (time_t)(now_ms / 1000);
  struct tm tm;
  if (!localtime_r(&t, &tm))
    return 0;
  return (tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday;
}

/* A sale's business date (yyyymmdd) and hour, in its own offset. */
static int status_today_sale_day(int64_t business_time_ms, int32_t offset_min, int *hour)
{
  time_t t = (time_t)(business_time_ms / 1000 + (int64_t)offset_min * 60);
  struct tm tm;
  if (!gmtime_r(&t, &tm))
    return -1;
  *hour = tm.tm_hour;
  return (tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday;
}

/* Starts over when the day changed. */
static void status_today_roll(status_today *today, int day)
{
  struct status_today_item *items = today->items;
  size_t capacity = today->item_capacity;
  struct status_today_loader *loader = today->loader;
  if (today->day == day)
    return;
  memset(today, 0, sizeof(*today));
  today->items = items; /* kept, emptied: item_count is 0 */
  today->item_capacity = capacity;
  today->loader = loader;
  today->day = day;
}

static void status_today_add_item(status_today *today, const char *sku, int64_t qty)
{
  for (size_t i = 0; i < today->item_count; i++) {
    if (strcmp(today->items[i].sku, sku) == 0) {
      today->items[i].qty += qty;
      return;
    }
  }
  if (today->item_count == today->item_capacity) {
    size_t capacity = today->item_capacity ? 2 * today->item_capacity : 16;
    struct status_today_item *grown;
    if (capacity > STATUS_TODAY_MAX_SKUS)
      capacity = STATUS_TODAY_MAX_SKUS;
    /* Full (or no memory to grow): counted, not ranked, as a SKU past the
     * limit always was. */
    grown = capacity > today->item_capacity
                ? realloc(today->items, capacity * sizeof(*grown))
                : NULL;
    if (!grown) {
      today->unranked_qty += qty;
      return;
    }
    today->items = grown;
    today->item_capacity = capacity;
  }
  snprintf(today->items[today->item_count].sku, sizeof(today->items[0].sku), "%s", sku);
  today->items[today->item_count++].qty = qty;
}

/* Counts one row, whatever it came from. */
static void status_today_count(status_today *today, int today_day, enum sale_kind kind,
                               enum sale_channel channel, int64_t business_time_ms,
                               int32_t offset_min, const char *currency, unsigned exponent,
                               int64_t total)
{
  int hour = 0, day = status_today_sale_day(business_time_ms, offset_min, &hour);

  status_today_roll(today, today_day);
  if (day != today_day)
    return;
  if (!today->currency[0]) {
    snprintf(today->currency, sizeof(today->currency), "%s", currency);
    today->currency_exponent = exponent;
  }
  if (kind == SALE_KIND_REFUND) {
    today->refunds.count++;
    today->refunds.total_minor += total;
    return;
  }
  if (kind == SALE_KIND_VOID) {
    today->voids.count++;
    today->voids.total_minor += total;
    return;
  }
  today->sales.count++;
  today->sales.total_minor += total;
  if ((int)channel > 0 && (int)channel < STATUS_TODAY_CHANNELS) {
    today->by_channel[channel].count++;
    today->by_channel[channel].total_minor += total;
  }
  today->by_hour[hour].count++;
  today->by_hour[hour].total_minor += total;
}

/* 1 when a sale of `business_time_ms` at `offset_min` falls on today. */
static int status_today_is_today(int today_day, int64_t business_time_ms, int32_t offset_min)
{
  int hour;
  return status_today_sale_day(business_time_ms, offset_min, &hour) == today_day;
}

void status_today_add(status_today *today, const struct sale *sale, int64_t now_ms)
{
  int day = status_today_local_day(now_ms);
  if (!today)
    return;
  status_today_count(today, day, sale->kind, sale->channel, sale->business_time_ms,
                     sale->utc_offset_minutes, sale->currency, sale->currency_exponent,
                     sale->total);
  if (sale->kind != SALE_KIND_SALE ||
      !status_today_is_today(day, sale->business_time_ms, sale->utc_offset_minutes))
    return;
  for (size_t i = 0; i < sale->line_count; i++)
    status_today_add_item(today, sale->lines[i].sku, sale->lines[i].qty);
}

/* The enum of a stored kind or channel name (sale_*_name), or 0. */
static int status_today_kind(const char *name)
{
  for (int k = SALE_KIND_SALE; k <= SALE_KIND_VOID; k++)
    if (strcmp(sale_kind_name((enum sale_kind)k), name) == 0)
      return k;
  return 0;
}

static int status_today_channel(const char *name)
{
  for (int c = SALE_CHANNEL_POS; c <= SALE_CHANNEL_PICKUP; c++)
    if (strcmp(sale_channel_name((enum sale_channel)c), name) == 0)
      return c;
  return 0;
}

/* Adds the items of a stored row's lines: JSON text (journal__lines_json),
 * or a compact row's BLOB (sale_items_pack, schema 8). */
static void status_today_add_lines(status_today *today, sqlite3_stmt *stmt, int column)
{
  json_error_t error;
  json_t *lines = NULL;
  size_t i;
  json_t *line;

  if (sqlite3_column_type(stmt, column) == SQLITE_BLOB) {
    struct sale items = {0};
    const void *blob = sqlite3_column_blob(stmt, column);
    if (blob && sale_items_unpack(blob, (size_t)sqlite3_column_bytes(stmt, column), &items) == 0)
      for (i = 0; i < items.line_count; i++)
        status_today_add_item(today, items.lines[i].sku, items.lines[i].qty);
    sale_clear(&items);
    return;
  }
  if (sqlite3_column_text(stmt, column))
    lines = json_loads((const char *)sqlite3_column_text(stmt, column), 0, &error);

  json_array_foreach(lines, i, line)
  {
    const char *sku = json_string_value(json_object_get(line, "sku"));
    json_t *qty = json_object_get(line, "qty");
    if (sku && json_is_integer(qty))
      status_today_add_item(today, sku, json_integer_value(qty));
  }
  json_decref(lines);
}

/* Two days before the local day began: rows received earlier cannot belong
 * to today (a POS sends a sale within hours of making it). */
static int64_t status_today_oldest_received(int64_t now_ms)
{
  time_t t = (time_t)(now_ms / 1000);
  struct tm tm;
  if (!localtime_r(&t, &tm))
    return 0;
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  tm.tm_isdst = -1;
  return ((int64_t)mktime(&tm) - 2 * 86400) * 1000;
}

/* The first seq of the clock_pending range holding `seq` (rows read off a
 * clock never set, of a boot that ended first), or 0: the scan jumps past
 * the whole range in one primary-key lookup instead of reading its rows. */
static int64_t status_today_range_start(sqlite3 *db, int64_t seq)
{
  static const char sql[] = "SELECT first_seq FROM clock_pending WHERE first_seq <= ?1 AND "
                            "last_seq >= ?1 ORDER BY first_seq DESC LIMIT 1";
  sqlite3_stmt *stmt = NULL;
  int64_t first = 0;

  if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK) {
    sqlite3_bind_int64(stmt, 1, seq);
    if (sqlite3_step(stmt) == SQLITE_ROW)
      first = sqlite3_column_int64(stmt, 0);
  }
  sqlite3_finalize(stmt);
  return first;
}

/* SQLite's progress handler: nonzero interrupts the statement. */
static int status_today_stopped(void *stop) { return atomic_load((atomic_int *)stop); }

/* status_today_load of the rows at or below `upto_seq`; `stop` (NULL:
 * none) set interrupts it. */
static int status_today_load_upto(status_today *today, const char *db_path, int64_t upto_seq,
                                  int64_t now_ms, atomic_int *stop, char *err, size_t err_size)
{
  static const char sql[] =
      "SELECT kind, channel, business_time_ms, utc_offset_min, currency, currency_exponent, "
      "total_minor, lines, received_ms, seq FROM sales WHERE seq <= ?1 ORDER BY seq DESC";
  int day = status_today_local_day(now_ms), rc = -1, step;
  int64_t oldest = status_today_oldest_received(now_ms), build_ms = clock_build_epoch_ms();
  sqlite3 *db = NULL;
  sqlite3_stmt *stmt = NULL;

  if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
      sqlite3_busy_timeout(db, 2000) != SQLITE_OK ||
      sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
    snprintf(err, err_size, "journal %s: cannot read today's sales: %s", db_path,
             db ? sqlite3_errmsg(db) : "out of memory");
    goto out;
  }
  if (stop)
    sqlite3_progress_handler(db, 1000, status_today_stopped, stop);
  status_today_roll(today, day);
  sqlite3_bind_int64(stmt, 1, upto_seq);
  while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
    int kind = status_today_kind((const char *)sqlite3_column_text(stmt, 0));
    int channel = status_today_channel((const char *)sqlite3_column_text(stmt, 1));
    int64_t business_ms = sqlite3_column_int64(stmt, 2);
    int32_t offset = (int32_t)sqlite3_column_int(stmt, 3);
    const char *currency = (const char *)sqlite3_column_text(stmt, 4);

    /* A row read off a clock before the build (a boot without a clock
     * that ended before it was set: never repaired) says nothing of when
     * it came; it must not end the scan before the rows of today. Its
     * range is passed at once (a day without a clock is thousands of rows).
     * A row before the build in no such range came when it says (an
     * earlier release took it): it is read as any other, and ends the scan
     * when older than two days. Skipping those too read the whole journal
     * on every start while the build was less than two days old (6 s at a
     * million sales, before the first sale was taken). */
    if (sqlite3_column_int64(stmt, 8) < build_ms) {
      int64_t first = status_today_range_start(db, sqlite3_column_int64(stmt, 9));
      if (first > 0) {
        sqlite3_reset(stmt);
        sqlite3_bind_int64(stmt, 1, first - 1);
        continue;
      }
    }
    if (sqlite3_column_int64(stmt, 8) < oldest)
      break;
    if (!kind || !currency)
      continue;
    status_today_count(today, day, (enum sale_kind)kind, (enum sale_channel)channel,
                       business_ms, offset, currency, (unsigned)sqlite3_column_int(stmt, 5),
                       sqlite3_column_int64(stmt, 6));
    if (kind == SALE_KIND_SALE && status_today_is_today(day, business_ms, offset))
      status_today_add_lines(today, stmt, 7);
  }
  if (step != SQLITE_ROW && step != SQLITE_DONE) {
    snprintf(err, err_size, "journal %s: reading today's sales stopped: %s", db_path,
             sqlite3_errmsg(db));
    goto out;
  }
  rc = 0;
out:
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return rc;
}

int status_today_load(status_today *today, const char *db_path, int64_t now_ms, char *err,
                      size_t err_size)
{
  return status_today_load_upto(today, db_path, INT64_MAX, now_ms, NULL, err, err_size);
}

/* Adds what the loader read to what the loop counted meanwhile (rows of
 * seqs above upto_seq: never both). A day that ended during the read
 * leaves the older figures out. */
static void status_today_merge(status_today *into, const status_today *from)
{
  struct status_today_sum *to_sums[] = {&into->sales, &into->refunds, &into->voids};
  const struct status_today_sum *from_sums[] = {&from->sales, &from->refunds, &from->voids};

  if (!from->day || (into->day && into->day > from->day))
    return;
  status_today_roll(into, from->day);
  if (!into->currency[0] && from->currency[0]) {
    memcpy(into->currency, from->currency, sizeof(into->currency));
    into->currency_exponent = from->currency_exponent;
  }
  for (size_t i = 0; i < 3; i++) {
    to_sums[i]->count += from_sums[i]->count;
    to_sums[i]->total_minor += from_sums[i]->total_minor;
  }
  for (size_t i = 0; i < STATUS_TODAY_CHANNELS; i++) {
    into->by_channel[i].count += from->by_channel[i].count;
    into->by_channel[i].total_minor += from->by_channel[i].total_minor;
  }
  for (size_t i = 0; i < 24; i++) {
    into->by_hour[i].count += from->by_hour[i].count;
    into->by_hour[i].total_minor += from->by_hour[i].total_minor;
  }
  for (size_t i = 0; i < from->item_count; i++)
    status_today_add_item(into, from->items[i].sku, from->items[i].qty);
  into->unranked_qty += from->unranked_qty;
}

static void *status_today_loader_main(void *arg)
{
  struct status_today_loader *loader = arg;
  loader->rc = status_today_load_upto(loader->loaded, loader->db_path, loader->upto_seq,
                                      loader->now_ms, &loader->stop, loader->err,
                                      sizeof(loader->err));
  uv_async_send(&loader->done);
  return NULL;
}

static void status_today_loader_done(uv_async_t *handle)
{
  struct status_today_loader *loader = handle->data;
  char quoted[600];

  if (loader->rc)
    log_warn("status", "today_not_loaded", "reason=%s",
             log_quote(loader->err, quoted, sizeof(quoted)));
  else if (loader->live)
    status_today_merge(loader->live, loader->loaded);
  status_today_loader_end(loader);
}

int status_today_load_start(status_today *today, uv_loop_t *loop, const char *db_path,
                            int64_t upto_seq, int64_t now_ms)
{
  struct status_today_loader *loader = calloc(1, sizeof(*loader));

  if (!today || today->loader || !loader || !(loader->db_path = strdup(db_path)) ||
      !(loader->loaded = status_today_create()) ||
      uv_async_init(loop, &loader->done, status_today_loader_done) != 0) {
    if (loader) {
      status_today_free(loader->loaded);
      free(loader->db_path);
    }
    free(loader);
    return -1;
  }
  loader->done.data = loader;
  loader->live = today;
  loader->upto_seq = upto_seq;
  loader->now_ms = now_ms;
  /* The rebuild must not keep a stopping agent's loop running. */
  uv_unref((uv_handle_t *)&loader->done);
  if (pthread_create(&loader->thread, NULL, status_today_loader_main, loader) != 0) {
    loader->joined = 1;
    loader->live = NULL;
    uv_close((uv_handle_t *)&loader->done, status_today_loader_free);
    return -1;
  }
  today->loader = loader;
  return 0;
}

static int status_today_by_qty(const void *a, const void *b)
{
  const struct status_today_item *x = a, *y = b;
  if (x->qty != y->qty)
    return x->qty < y->qty ? 1 : -1;
  return strcmp(x->sku, y->sku);
}

static json_t *status_today_sum_json(const char *name, const char *value,
                                     const struct status_today_sum *sum)
{
  return name ? json_pack("{s:s, s:I, s:I}", name, value, "count", (json_int_t)sum->count,
                          "total_minor", (json_int_t)sum->total_minor)
              : json_pack("{s:I, s:I}", "count", (json_int_t)sum->count, "total_minor",
                          (json_int_t)sum->total_minor);
}

json_t *status_today_json(status_today *today, int64_t now_ms)
{
  struct status_today_item *top = malloc((today->item_count + 1) * sizeof(*top));
  json_t *body = NULL, *channels = json_array(), *hours = json_array(), *items = json_array();
  char date[16];
  int day = status_today_local_day(now_ms);

  if (!top || !channels || !hours || !items) {
    json_decref(channels);
    json_decref(hours);
    json_decref(items);
    goto out;
  }
  status_today_roll(today, day);
  snprintf(date, sizeof(date), "%04d-%02d-%02d", day / 10000, day / 100 % 100, day % 100);
  for (int c = SALE_CHANNEL_POS; c < STATUS_TODAY_CHANNELS; c++)
    json_array_append_new(channels, status_today_sum_json("channel",
                                                          sale_channel_name((enum sale_channel)c),
                                                          &today->by_channel[c]));
  for (int h = 0; h < 24; h++)
    json_array_append_new(hours, status_today_sum_json(NULL, NULL, &today->by_hour[h]));
  if (today->item_count) { /* items is NULL until the first SKU */
    memcpy(top, today->items, today->item_count * sizeof(top[0]));
    qsort(top, today->item_count, sizeof(top[0]), status_today_by_qty);
  }
  for (size_t i = 0; i < today->item_count && i < STATUS_TODAY_TOP; i++)
    json_array_append_new(items, json_pack("{s:s, s:I}", "sku", top[i].sku, "qty",
                                           (json_int_t)top[i].qty));
  body = json_pack("{s:s, s:s, s:i, s:I, s:I, s:o, s:o, s:o, s:I, s:I, s:I, s:I}", "date", date,
                   "currency", today->currency, "currency_exponent",
                   (int)today->currency_exponent, "sales", (json_int_t)today->sales.count,
                   "total_minor", (json_int_t)today->sales.total_minor, "by_channel", channels,
                   "by_hour", hours, "top_items", items, "refunds",
                   (json_int_t)today->refunds.count, "refunds_minor",
                   (json_int_t)today->refunds.total_minor, "voids",
                   (json_int_t)today->voids.count, "voids_minor",
                   (json_int_t)today->voids.total_minor);
out:
  free(top);
  return body;
}
