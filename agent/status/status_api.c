/*
 * status_api.c - GET /status.json.
 */
#include "status/status_api.h"

#include <jansson.h>
#include <mbedtls/x509_crt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "platform/clock.h"
#include "platform/disk.h"
#include "platform/tls.h"
#include "status/status_verdict.h"

/* An RFC 3339 time, or null for 0 ("never"). */
static json_t *status_time(int64_t epoch_ms)
{
  char text[40];
  if (epoch_ms <= 0)
    return json_null();
  return json_string(clock_format_utc(epoch_ms, text, sizeof(text)));
}

static const char *status_command_kind(int kind)
{
  return kind == JOURNAL_COMMAND_RESYNC ? "resync" : "push-now";
}

/* One head-office command as the journal holds it. */
static json_t *status_command(const struct journal_command *c)
{
  json_t *item = json_object();
  if (!item)
    return NULL;
  json_object_set_new(item, "command_id", json_string(c->command_id));
  json_object_set_new(item, "kind", json_string(status_command_kind(c->kind)));
  json_object_set_new(item, "state", json_string(journal_command_state_name(c->state)));
  json_object_set_new(item, "issued_by", json_string(c->issued_by));
  json_object_set_new(item, "issued_at", status_time(c->issued_ms));
  json_object_set_new(item, "recorded", status_time(c->recorded_ms));
  json_object_set_new(item, "updated", status_time(c->updated_ms));
  if (c->kind == JOURNAL_COMMAND_RESYNC) {
    json_object_set_new(item, "from", status_time(c->from_ms));
    json_object_set_new(item, "to", status_time(c->to_ms));
    json_object_set_new(item, "replayed_sales", json_integer((json_int_t)c->done_sales));
    json_object_set_new(item, "total_sales", json_integer((json_int_t)c->total_sales));
    json_object_set_new(item, "available_from", status_time(c->available_from_ms));
  }
  json_object_set_new(item, "message", json_string(c->message));
  return item;
}

/* "resync": the running resync, else the newest one (null if none);
 * "commands": the recent commands, newest first, as heartbeats report them. */
static void status_add_commands(json_t *body, journal *j)
{
  struct journal_command *list = NULL;
  const struct journal_command *resync = NULL;
  json_t *commands = json_array();
  size_t count = journal_get_commands(j, &list);

  for (size_t i = 0; i < count; i++) {
    if (commands)
      json_array_append_new(commands, status_command(&list[i]));
    if (list[i].kind == JOURNAL_COMMAND_RESYNC &&
        (!resync || (list[i].state == JOURNAL_COMMAND_RUNNING &&
                     resync->state != JOURNAL_COMMAND_RUNNING)))
      resync = &list[i];
  }
  if (resync) {
    int finished = journal_command_finished(resync->state);
    json_object_set_new(
        body, "resync",
        json_pack("{s:s, s:s, s:o, s:o, s:I, s:I, s:o, s:o, s:o, s:s}", "resync_id",
                  resync->command_id, "state", journal_command_state_name(resync->state),
                  "from", status_time(resync->from_ms), "to", status_time(resync->to_ms),
                  "replayed_sales", (json_int_t)resync->done_sales, "total_sales",
                  (json_int_t)resync->total_sales, "started", status_time(resync->recorded_ms),
                  "finished", finished ? status_time(resync->updated_ms) : json_null(),
                  "available_from", status_time(resync->available_from_ms), "message",
                  resync->message));
  } else {
    json_object_set_new(body, "resync", json_null());
  }
  json_object_set_new(body, "commands", commands ? commands : json_array());
  free(list);
}

/* "uplink_problem": null, or a stall only head office can end: what the
 * collector asks for, what the device still holds, and what to do; or a
 * certificate that disagrees with the configuration (identity_mismatch). */
static void status_add_uplink_problem(json_t *body, const struct uplink_status *link)
{
  json_t *problem;

  if (link->identity_mismatch_ms > 0 && link->stalled_expected_batch_seq <= 0) {
    problem = json_pack("{s:s, s:o, s:s, s:s}", "code", "identity_mismatch", "since",
                        status_time(link->identity_mismatch_ms), "message", link->problem,
                        "action",
                        "the device certificate and [agent] store_id/device_id disagree: fix "
                        "the configuration or install this device's certificate, then restart "
                        "the agent. Until then sales are still taken and kept here.");
    json_object_set_new(body, "uplink_problem", problem ? problem : json_null());
    return;
  }
  if (link->stalled_expected_batch_seq <= 0) {
    json_object_set_new(body, "uplink_problem", json_null());
    return;
  }
  problem = json_pack(
      "{s:s, s:I, s:I, s:o, s:s, s:s}", "code", "expected_batch_deleted", "expected_batch_seq",
      (json_int_t)link->stalled_expected_batch_seq, "oldest_held_batch_seq",
      (json_int_t)link->oldest_held_batch_seq, "since", status_time(link->stalled_since_ms),
      "message", link->problem, "action",
      "head office must approve a rebase at the collector; it then accepts the oldest batch "
      "this device holds as the next one. Until then sales are still taken and kept here.");
  json_object_set_new(body, "uplink_problem", problem ? problem : json_null());
}

/* The uplink's part of the answer (fields added to `body`). */
static void status_add_uplink(json_t *body, const struct journal_stats *stats,
                              const struct status_api_options *options,
                              const struct uplink_status *status)
{
  struct uplink_status link = *status;
  int64_t now = clock_wall_ms();
  int64_t unacked = stats->last_batch_seq - stats->acked_batch_seq;

  json_object_set_new(body, "uplink_state", json_string(uplink_state_name(link.state)));
  json_object_set_new(body, "uplink_url",
                      options->uplink_url && options->uplink_url[0]
                          ? json_string(options->uplink_url)
                          : json_null());
  json_object_set_new(body, "last_push_attempt", status_time(link.last_attempt_ms));
  /* The journal remembers acknowledgements across restarts; the uplink only
   * since it started. */
  if (stats->acked_batch_seq > 0)
    json_object_set_new(body, "last_ack",
                        json_pack("{s:o, s:I}", "time", status_time(stats->last_ack_ms),
                                  "batch_seq", (json_int_t)stats->acked_batch_seq));
  else
    json_object_set_new(body, "last_ack", json_null());
  json_object_set_new(body, "next_push", status_time(link.next_push_ms));
  json_object_set_new(body, "batches_unacked", json_integer(unacked > 0 ? unacked : 0));
  json_object_set_new(body, "oldest_unsent_age_s",
                      stats->oldest_unsent_ms > 0 && stats->sales_unsent > 0
                          ? json_integer(now > stats->oldest_unsent_ms
                                             ? (now - stats->oldest_unsent_ms) / 1000
                                             : 0)
                          : json_null());
  json_object_set_new(body, "last_uplink_error",
                      link.last_error_ms ? json_string(link.last_error) : json_null());
  json_object_set_new(body, "last_uplink_error_at", status_time(link.last_error_ms));
  /* 0 once an attempt succeeded (the ack on flash); growing while it fails. */
  json_object_set_new(body, "uplink_consecutive_failures",
                      json_integer((json_int_t)link.consecutive_failures));
  json_object_set_new(body, "last_heartbeat", status_time(link.last_heartbeat_ms));
  status_add_uplink_problem(body, &link);
}

/* "stock": on-hand per material, with its low-stock flag and what sales
 * consumed lately, and the sale lines no recipe covered. */
static void status_add_stock(json_t *body, journal *j)
{
  struct stock_material *materials = NULL;
  struct stock_unmapped *skus = NULL;
  size_t count = 0, sku_count = 0;
  int64_t unmapped_items_milli = 0;
  json_t *stock = json_object(), *list = json_array(), *unmapped = json_array();

  if (!stock || !list || !unmapped ||
      stock_snapshot(journal_stock(j), &materials, &count, &skus, &sku_count,
                     &unmapped_items_milli))
    goto out;
  for (size_t i = 0; i < count; i++) {
    const struct stock_material *m = &materials[i];
    json_t *item = json_pack(
        "{s:s, s:s, s:I, s:o, s:b, s:I, s:I}", "material_id", m->material_id, "unit", m->unit,
        "on_hand_milli", (json_int_t)m->on_hand_milli, "low_stock_milli",
        m->low_stock_milli >= 0 ? json_integer(m->low_stock_milli) : json_null(), "low_stock",
        m->low_stock_milli >= 0 && m->on_hand_milli <= m->low_stock_milli,
        "consumed_unsent_milli", (json_int_t)m->consumed_pending_milli,
        "consumed_last_batch_milli", (json_int_t)m->consumed_last_batch_milli);
    json_array_append_new(list, item);
  }
  /* What the recipe file is missing: items sold of SKUs without a recipe
   * (their sales were taken; their stock is not tracked). */
  for (size_t i = 0; i < sku_count; i++) {
    if (skus[i].items_milli > 0)
      json_array_append_new(unmapped, json_pack("{s:s, s:I}", "sku", skus[i].sku, "items",
                                                (json_int_t)(skus[i].items_milli / 1000)));
  }
  {
    struct journal_stats stats;
    char loaded[40];
    journal_get_stats(j, &stats);
    json_object_set_new(stock, "recipes",
                        json_pack("{s:I, s:I, s:o, s:o}", "skus_in_force",
                                  (json_int_t)stats.recipes_in_force, "versions",
                                  (json_int_t)stats.recipe_versions, "loaded",
                                  stats.recipes_loaded_ms
                                      ? json_string(clock_format_utc(stats.recipes_loaded_ms,
                                                                     loaded, sizeof(loaded)))
                                      : json_null(),
                                  "error",
                                  stats.recipes_error[0] ? json_string(stats.recipes_error)
                                                         : json_null()));
  }
  {
    struct journal_stats stats;
    journal_get_stats(j, &stats);
    json_object_set_new(stock, "error",
                        stats.stock_error[0] ? json_string(stats.stock_error) : json_null());
  }
  json_object_set_new(stock, "materials", list);
  json_object_set_new(stock, "unmapped_items", json_integer(unmapped_items_milli / 1000));
  json_object_set_new(stock, "unmapped_skus", unmapped);
  list = unmapped = NULL;
  json_object_set_new(body, "stock", stock);
  stock = NULL;
out:
  free(materials);
  free(skus);
  json_decref(stock);
  json_decref(list);
  json_decref(unmapped);
}

/* An X.509 time as epoch milliseconds (UTC), or 0. */
static int64_t status_x509_ms(const mbedtls_x509_time *t)
{
  return tls_x509_time_s(t) * 1000;
}

/* See status_api.h. Parsed at each request: a renewed certificate shows at
 * once, and a PEM certificate parses in well under a millisecond. */
void status_cert_validity(const char *path, int64_t *not_before_ms, int64_t *not_after_ms)
{
  mbedtls_x509_crt crt;
  *not_before_ms = *not_after_ms = 0;
  if (!path || !path[0])
    return;
  mbedtls_x509_crt_init(&crt);
  if (mbedtls_x509_crt_parse_file(&crt, path) == 0) {
    *not_before_ms = status_x509_ms(&crt.valid_from);
    *not_after_ms = status_x509_ms(&crt.valid_to);
  }
  mbedtls_x509_crt_free(&crt);
}

/* A batch's round trip on store internet, for the drain estimate: sealing,
 * upload of up to max_batch_bytes and the collector's Kafka acks. A rough
 * figure on purpose: the page says "about". */
#define STATUS_SECONDS_PER_BATCH 2

/* "journal_max_bytes", "drain_estimate_s" and "today": what the page adds
 * to the backlog figures, and today's sales. */
static void status_add_backlog(json_t *body, const struct journal_stats *stats,
                               const struct status_api_options *options,
                               const struct uplink_status *link)
{
  json_t *today = options->today ? status_today_json(options->today, clock_wall_ms()) : NULL;
  size_t per_batch = link->max_batch_sales ? link->max_batch_sales : 0;

  json_object_set_new(body, "journal_max_bytes",
                      options->journal_max_bytes
                          ? json_integer((json_int_t)options->journal_max_bytes)
                          : json_null());
  /* Batches go back to back once the link works (uplink.h). */
  json_object_set_new(body, "drain_estimate_s",
                      options->uplink && per_batch
                          ? json_integer((json_int_t)((stats->sales_unsent + per_batch - 1) /
                                                      per_batch * STATUS_SECONDS_PER_BATCH))
                          : json_null());
  json_object_set_new(body, "today", today ? today : json_null());
}

/* "verdict" and "device": the answer the manager looks for first, and what
 * runs here. */
static void status_add_verdict(json_t *body, const struct journal_stats *stats,
                               const struct status_api_options *options,
                               const struct uplink_status *link)
{
  struct status_verdict verdict;
  struct status_verdict_input in = {
      .now_ms = clock_wall_ms(),
      .journal = stats,
      .link = options->uplink ? link : NULL,
      .interval_ms = options->interval_ms,
      .jitter_ms = options->jitter_ms,
  };
  int64_t days_left = 0;

  status_cert_validity(options->cert_file, &in.cert_not_before_ms, &in.cert_not_after_ms);
  status_verdict_judge(&in, &verdict);
  json_object_set_new(
      body, "verdict",
      json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "state",
                status_verdict_state_name(verdict.state), "code", verdict.code, "headline",
                verdict.headline, "reason", verdict.reason, "action",
                verdict.action[0] ? json_string(verdict.action) : json_null(), "since",
                status_time(verdict.since_ms)));
  /* Whole days left, rounded down: a certificate that expired a minute ago
   * has -1 (C's division would round it up to 0, "0 days left"). */
  if (in.cert_not_after_ms > 0) {
    int64_t left_ms = in.cert_not_after_ms - in.now_ms, day_ms = 24 * 3600 * 1000LL;
    days_left = left_ms >= 0 ? left_ms / day_ms : -((-left_ms + day_ms - 1) / day_ms);
  }
  json_object_set_new(
      body, "device",
      json_pack("{s:s, s:I, s:o, s:o, s:o}", "version", POS_VERSION, "uptime_s",
                (json_int_t)(options->started_ms > 0 && in.now_ms > options->started_ms
                                 ? (in.now_ms - options->started_ms) / 1000
                                 : 0),
                "certificate_not_after", status_time(in.cert_not_after_ms),
                "certificate_days_left",
                in.cert_not_after_ms > 0 ? json_integer(days_left) : json_null(),
                /* Whole seconds, rounded toward zero: what a person compares. */
                "clock_skew_s",
                options->uplink && link->clock_skew_known
                    ? json_integer((json_int_t)(link->clock_skew_ms / 1000))
                    : json_null()));
}

/* "enrolment": when the device certificate is renewed next, and how the
 * last attempt went; null when the agent does not renew. "state" is
 * "expired" when only a new token can help, "refused" when head office
 * refused the last renewal (renewal_refused stays true, in "attempting" too,
 * until a renewal succeeds). */
static void status_add_enrolment(json_t *body, const struct status_api_options *options)
{
  struct enrol_driver_status enrol;
  json_t *object;

  if (!options->enrol) {
    json_object_set_new(body, "enrolment", json_null());
    return;
  }
  enrol_driver_get_status(options->enrol, &enrol);
  object = json_pack("{s:s, s:o, s:o, s:o, s:I, s:o, s:b}", "state",
                     enrol_driver_state_name(enrol.state), "next_attempt",
                     status_time(enrol.next_attempt_ms), "last_attempt",
                     status_time(enrol.last_attempt_ms), "last_success",
                     status_time(enrol.last_success_ms), "failures",
                     (json_int_t)enrol.failures, "last_result",
                     enrol.last_result[0] ? json_string(enrol.last_result) : json_null(),
                     "renewal_refused", enrol.renewal_refused);
  json_object_set_new(body, "enrolment", object ? object : json_null());
}

/* "sources.posdb": the POS database tailer, null when it is off. */
static json_t *status_posdb_json(posdb *tailer)
{
  static const char *const states[] = {"idle", "reading", "journaling"};
  struct posdb_status st;

  if (!tailer)
    return json_null();
  posdb_get_status(tailer, &st);
  return json_pack("{s:s, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o}", "state",
                   states[st.state >= 0 && st.state <= 2 ? st.state : 0], "watermark",
                   (json_int_t)st.watermark, "sales_read", (json_int_t)st.sales_read,
                   "sales_stored", (json_int_t)st.sales_stored, "rows_rejected",
                   (json_int_t)st.rows_rejected, "vendor_watermark",
                   st.last_poll_ms && st.vendor_watermark != INT64_MIN
                       ? json_integer(st.vendor_watermark)
                       : json_null(), "last_poll",
                   status_time(st.last_poll_ms), "caught_up", status_time(st.caught_up_ms),
                   "last_error", st.last_error[0] ? json_string(st.last_error) : json_null(),
                   "last_rejected",
                   st.last_rejected[0] ? json_string(st.last_rejected) : json_null());
}

/* "sources": the ingest sources besides POST /v1/sales (status_api.h). */
static void status_add_sources(json_t *body, const struct status_api_options *options)
{
  struct spool_stats files;
  json_t *sources = json_object(), *object = NULL;

  if (!sources)
    return;
  if (options->spool) {
    spool_get_stats(options->spool, &files);
    object = json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}", "dir", files.dir, "files_pending",
        (json_int_t)files.files_pending, "files_done", (json_int_t)files.files_done,
        "files_failed", (json_int_t)files.files_failed, "sales_ingested",
        (json_int_t)files.sales_ingested, "sales_duplicate", (json_int_t)files.sales_duplicate,
        "current",
        files.current_file[0] && files.current_phase
            ? json_pack("{s:s, s:s, s:I}", "file", files.current_file, "phase",
                        files.current_phase, "line", (json_int_t)files.current_line)
            : json_null(),
        "last_failure",
        files.last_failure_file[0]
            ? json_pack("{s:s, s:s, s:o}", "file", files.last_failure_file, "reason",
                        files.last_failure, "at", status_time(files.last_failure_ms))
            : json_null(),
        "last_error", files.last_error[0] ? json_string(files.last_error) : json_null());
  }
  json_object_set_new(sources, "spool", object ? object : json_null());
  object = status_posdb_json(options->posdb);
  json_object_set_new(sources, "posdb", object ? object : json_null());
  json_object_set_new(body, "sources", sources);
}

/* "device.clock": the wall clock as the journal judges it, and a message
 * a store manager understands when it is wrong. */
static json_t *status_clock_json(const struct journal_stats *stats)
{
  static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char message[256] = "";
  time_t seconds = (time_t)(stats->clock_wall_ms / 1000);
  struct tm utc;

  if (stats->clock_state != JOURNAL_CLOCK_OK && gmtime_r(&seconds, &utc))
    snprintf(message, sizeof(message),
             "This device's clock is wrong (says %d %s %d%s). Sales are kept; their times "
             "will be corrected when the clock is set.",
             utc.tm_mday, months[utc.tm_mon % 12], utc.tm_year + 1900,
             stats->clock_state == JOURNAL_CLOCK_BEHIND_JOURNAL
                 ? ", earlier than sales it already took"
             : stats->clock_state == JOURNAL_CLOCK_DIFFERS_FROM_COLLECTOR
                 ? ", not the time head office has"
                 : "");
  return json_pack("{s:s, s:o, s:o, s:I, s:I, s:I, s:o}", "state",
                   journal_clock_state_name(stats->clock_state), "device_time",
                   status_time(stats->clock_wall_ms), "build_time",
                   status_time(stats->clock_build_ms), "pending_rows",
                   (json_int_t)stats->clock_pending_rows, "unrepaired_rows",
                   (json_int_t)stats->clock_unrepaired_rows, "repaired_rows",
                   (json_int_t)stats->clock_repaired_rows, "message",
                   message[0] ? json_string(message) : json_null());
}

void status_api_handle_json(journal *j, const struct status_api_options *options,
                            http_exchange *exchange)
{
  struct journal_stats stats;
  struct uplink_status link;
  uint64_t disk_free = 0;
  char received[40];
  json_t *body;
  char *text = NULL;

  journal_get_stats(j, &stats);
  memset(&link, 0, sizeof(link));
  if (options->uplink)
    uplink_get_status(options->uplink, &link);
  else
    link.state = UPLINK_OFF;
  /* statvfs is one cheap syscall; asking every time keeps the figure live. */
  if (disk_free_bytes(options->journal_path, &disk_free))
    disk_free = 0;
  body = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:b}", "version", POS_VERSION,
                   "store_id", options->store_id, "device_id", options->device_id,
                   "journal_id", stats.journal_id, "sales_journaled",
                   (json_int_t)stats.sales_journaled, "sales_unsent",
                   (json_int_t)stats.sales_unsent, "last_seq", (json_int_t)stats.last_seq,
                   "disk_free_bytes", (json_int_t)disk_free, "journal_bytes",
                   (json_int_t)stats.database_bytes, "journal_writable", !stats.write_failing);
  if (body) {
    json_object_set_new(body, "last_sale_received",
                        stats.last_received_ms
                            ? json_string(clock_format_utc(stats.last_received_ms, received,
                                                           sizeof(received)))
                            : json_null());
    json_object_set_new(body, "journal_error",
                        stats.write_failing ? json_string(stats.last_error) : json_null());
    json_object_set_new(body, "journal_full", json_boolean(stats.full));
    /* A journal started after the one before it lost sales: loud, and kept
     * until a person has looked (it is history, not a passing state). */
    json_object_set_new(
        body, "journal_reset",
        stats.previous_journal_id[0]
            ? json_pack("{s:s, s:s, s:I, s:s}", "previous_journal_id",
                        stats.previous_journal_id, "at",
                        clock_format_utc(stats.reset_ms, received, sizeof(received)),
                        "sales_missing", (json_int_t)stats.sales_missing, "reason",
                        stats.reset_reason)
            : json_null());
    status_add_verdict(body, &stats, options, &link);
    {
      json_t *clock = status_clock_json(&stats);
      json_t *device = json_object_get(body, "device");
      if (device && clock)
        json_object_set_new(device, "clock", clock);
      else
        json_decref(clock);
    }
    status_add_backlog(body, &stats, options, &link);
    status_add_enrolment(body, options);
    status_add_sources(body, options);
    status_add_uplink(body, &stats, options, &link);
    status_add_stock(body, j);
    status_add_commands(body, j);
    text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
  }
  if (text)
    http_exchange_respond(exchange, 200, "application/json", "Cache-Control: no-store\r\n", text,
                          strlen(text));
  else
    http_exchange_respond(exchange, 500, "application/json", NULL,
                          "{\"error\":\"out of memory\"}", strlen("{\"error\":\"out of memory\"}"));
  free(text);
  json_decref(body);
}
