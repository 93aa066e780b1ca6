/*
 * status_today.h - today's sales for the status page, kept in memory: count
 * and total, by channel and by hour, the most sold items, refunds and voids.
 * "Today" is the business day in the store's time zone: a sale counts on the
 * local date of its business_time (with the offset the POS sent), today
 * being the device's local date (the device runs in the store's zone).
 *
 * Fed with every newly journaled sale (status_today_add, from the POS API's
 * completion) and rebuilt once at start from the journal's newest rows
 * (status_today_load), so serving the page never scans the journal.
 *
 * Threading: every function on the loop thread (no lock); the rebuild of
 * status_today_load_start reads on a thread of its own, into an aggregate of
 * its own.
 */
#ifndef AGENT_STATUS_TODAY_H
#define AGENT_STATUS_TODAY_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "sale/sale.h"

typedef struct status_today status_today;

/* A new, empty aggregate; NULL when out of memory. */
status_today *status_today_create(void);

/* Frees it; `today` may be NULL. */
void status_today_free(status_today *today);

/*
 * Stops a rebuild in progress (status_today_load_start) and waits for its
 * thread, the loop still running: before the journal closes, whose last
 * checkpoint waits for every reader of the database. `today` may be NULL.
 */
void status_today_stop(status_today *today);

/*
 * Counts `sale` (just stored, not a duplicate) if its business day is
 * today; a new day starts the aggregate over. `now_ms` is the wall clock.
 */
void status_today_add(status_today *today, const struct sale *sale, int64_t now_ms);

/*
 * Rebuilds from the journal at `db_path` (opened read-only beside the
 * writer: WAL readers do not block it), reading rows newest first and
 * stopping at the first received two days before today began. 0, or -1
 * with `err` set (the page then shows only what comes in from now on).
 */
int status_today_load(status_today *today, const char *db_path, int64_t now_ms, char *err,
                      size_t err_size);

/*
 * status_today_load of the rows at or below `upto_seq` (the journal's last
 * seq at open), on a thread of its own, so that the agent takes sales while
 * it reads (a busy store's two days are tens of thousands of rows); the
 * result is added on the loop thread (`loop`) to what came in meanwhile.
 * Until then the page shows only the sales taken since the start. 0, or -1
 * when the thread cannot start (nothing started: load synchronously).
 * status_today_free stops a rebuild still running (within a thousand
 * SQLite steps) and waits for its thread.
 */
int status_today_load_start(status_today *today, uv_loop_t *loop, const char *db_path,
                            int64_t upto_seq, int64_t now_ms);

/*
 * The "today" object of /status.json: {date, currency, currency_exponent,
 * sales, total_minor, by_channel [{channel, count, total_minor}], by_hour
 * [24 x {count, total_minor}], top_items [{sku, qty}] (10 at most), refunds,
 * refunds_minor, voids, voids_minor}. New reference, or NULL.
 */
json_t *status_today_json(status_today *today, int64_t now_ms);

#endif
