/*
 * heartbeat.c - POST /v1/heartbeat every heartbeat_interval: a small
 * pos.v1.Heartbeat (queue depth, oldest unsent age, disk free, versions,
 * the device clock, where the journal stands) so head office sees which
 * stores are alive and how far behind they are; and the head-office
 * commands that come back in its answer (and in every BatchAck).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/clock.h"
#include "platform/disk.h"
#include "platform/log.h"
#include "proto/codec.h"
#include "uplink/uplink_int.h"

/* A device clock further than this from the collector's is logged. */
#define UPLINK_CLOCK_DRIFT_WARN_MS (5 * 60 * 1000)

static void uplink_on_heartbeat_answer(struct uplink_http_request *req);
static void uplink_heartbeat_answered(uplink *u, struct uplink_http_request *req);

static void uplink_on_heartbeat_timer(uv_timer_t *timer)
{
  uplink *u = timer->data;
  uplink__heartbeat_send(u);
}

void uplink__heartbeat_start(uplink *u, uint64_t first_ms)
{
  if (u->heartbeat_interval_ms <= 0)
    return;
  uv_timer_start(&u->heartbeat_timer, uplink_on_heartbeat_timer, first_ms,
                 (uint64_t)u->heartbeat_interval_ms);
}

void uplink__heartbeat_send(uplink *u)
{
  Pos__V1__Heartbeat heartbeat = POS__V1__HEARTBEAT__INIT;
  struct uplink_http_request *req = &u->heartbeat_req;
  struct journal_stats stats;
  uint8_t journal_id[16], previous_journal_id[16];
  uint64_t disk_free = 0;
  int64_t now = clock_wall_ms();
  struct uplink_reports *reports = NULL;
  size_t len;

  if (u->closing || u->heartbeat_busy)
    return;
  u->heartbeat_again = 0;
  journal_get_stats(u->journal, &stats);
  if (u->journal_path[0] && disk_free_bytes(u->journal_path, &disk_free))
    disk_free = 0;
  heartbeat.store_id = u->identity.store_id;
  heartbeat.device_id = u->identity.device_id;
  if (proto_journal_id_parse(stats.journal_id, journal_id) == 0) {
    heartbeat.journal_id.data = journal_id;
    heartbeat.journal_id.len = sizeof(journal_id);
  }
  heartbeat.unsent_sales = stats.sales_unsent;
  heartbeat.oldest_unsent_age_s =
      stats.oldest_unsent_ms && now > stats.oldest_unsent_ms ? (now - stats.oldest_unsent_ms) / 1000
                                                             : 0;
  heartbeat.disk_free_bytes = disk_free;
  heartbeat.agent_version = u->identity.agent_version;
  heartbeat.firmware_version = u->firmware_version;
  heartbeat.device_clock_ms = now;
  heartbeat.last_seq = (uint64_t)stats.last_seq;
  heartbeat.acked_batch_seq = (uint64_t)stats.acked_batch_seq;
  heartbeat.journaled_sales = stats.sales_journaled;
  /* A stall only head office can end travels with every heartbeat until a
   * batch is accepted again. */
  if (u->status.stalled_expected_batch_seq > 0) {
    heartbeat.stalled_expected_batch_seq = (uint64_t)u->status.stalled_expected_batch_seq;
    heartbeat.oldest_held_batch_seq = (uint64_t)u->status.oldest_held_batch_seq;
    heartbeat.uplink_problem = u->status.problem;
  } else if (u->status.identity_mismatch_ms > 0) {
    heartbeat.uplink_problem = u->status.problem; /* "identity_mismatch: " and what to fix */
  }
  if (stats.reset_ms) {
    if (proto_journal_id_parse(stats.previous_journal_id, previous_journal_id) == 0) {
      heartbeat.previous_journal_id.data = previous_journal_id;
      heartbeat.previous_journal_id.len = sizeof(previous_journal_id);
    }
    heartbeat.journal_reset_reason = stats.reset_reason;
    heartbeat.journal_reset_ms = stats.reset_ms;
    heartbeat.journal_sales_missing = stats.sales_missing;
  }
  heartbeat.journal_full = stats.full;
  heartbeat.oldest_sale_business_ms = stats.oldest_sale_business_ms;
  heartbeat.sales_deleted = stats.sales_deleted;
  /* The clock as the journal judged it (the wire's values are the
   * journal's plus one: 0 means an agent that does not judge it). */
  heartbeat.clock_state = (Pos__V1__DeviceClockState)(stats.clock_state + 1);
  heartbeat.build_time_ms = stats.clock_build_ms;
  heartbeat.clock_pending_rows = stats.clock_pending_rows;
  heartbeat.clock_unrepaired_rows = stats.clock_unrepaired_rows;
  reports = calloc(1, sizeof(*reports));
  if (reports)
    uplink__commands_report(u, &heartbeat, reports);

  free(u->heartbeat_body);
  len = pos__v1__heartbeat__get_packed_size(&heartbeat);
  u->heartbeat_body = malloc(len ? len : 1);
  if (!u->heartbeat_body) {
    if (reports)
      uplink__reports_clear(reports);
    free(reports);
    return;
  }
  pos__v1__heartbeat__pack(&heartbeat, u->heartbeat_body);
  if (reports)
    uplink__reports_clear(reports);
  free(reports);

  memset(req, 0, sizeof(*req));
  req->url = u->heartbeat_url;
  req->content_type = "application/x-protobuf";
  req->body = u->heartbeat_body;
  req->body_len = len;
  req->done = uplink_on_heartbeat_answer;
  req->user = u;
  if (uplink_http_start(u->http, req)) {
    uplink__heartbeat_error(u, 0, "POST %s: %s", u->heartbeat_url, req->error);
    return;
  }
  u->heartbeat_busy = 1;
}

/* The start of an answer's body, printable, for error messages. */
static void uplink_heartbeat_text(const struct uplink_http_request *req, char *out,
                                  size_t out_size)
{
  size_t n = 0;
  for (size_t i = 0; i < req->response_len && n + 1 < out_size; i++) {
    unsigned char c = req->response[i];
    out[n++] = (char)(c >= 0x20 && c < 0x7f ? c : ' ');
  }
  while (n > 0 && out[n - 1] == ' ')
    n--;
  out[n] = '\0';
}

void uplink__heartbeat_soon(uplink *u)
{
  if (u->closing || u->heartbeat_interval_ms <= 0)
    return;
  if (u->heartbeat_busy)
    u->heartbeat_again = 1;
  else
    uplink__heartbeat_send(u);
}

static void uplink_on_heartbeat_answer(struct uplink_http_request *req)
{
  uplink *u = req->user;

  uplink_heartbeat_answered(u, req);
  /* A command recorded or finished while this one was out. */
  if (u->heartbeat_again && !u->closing)
    uplink__heartbeat_send(u);
}

static void uplink_heartbeat_answered(uplink *u, struct uplink_http_request *req)
{
  Pos__V1__HeartbeatAck *ack;
  char kind[160];

  u->heartbeat_busy = 0;
  free(u->heartbeat_body);
  u->heartbeat_body = NULL;
  if (u->closing) {
    uplink_http_request_clear(req);
    return;
  }
  if (req->failed) {
    uplink__heartbeat_error(u, 0, "POST /v1/heartbeat: %s", req->error);
    uplink_http_request_clear(req);
    return;
  }
  if (req->status != 200) {
    char text[200];
    uplink_heartbeat_text(req, text, sizeof(text));
    /* 400 and 403 need a person (a body the collector cannot read, a
     * certificate it refuses); anything else may pass by itself. Either way
     * the next heartbeat goes at its interval: nothing is lost meanwhile. */
    uplink__heartbeat_error(u, req->status == 400 || req->status == 403, "POST %s: %ld%s%s",
                            u->heartbeat_url, req->status, text[0] ? ": " : "", text);
    uplink_http_request_clear(req);
    return;
  }
  kind[0] = '\0';
  ack = uplink_http_answer_is_protobuf(req, kind, sizeof(kind))
            ? pos__v1__heartbeat_ack__unpack(NULL, req->response_len, req->response)
            : NULL;
  if (!ack) {
    /* A 200 from something that is not the collector (a captive portal, a
     * proxy's page; an empty text/plain body would even unpack as an empty
     * HeartbeatAck): the heartbeat did not arrive, whatever the status. */
    char text[200];
    uplink_heartbeat_text(req, text, sizeof(text));
    uplink__heartbeat_error(u, 0, "POST %s: 200 without a readable HeartbeatAck (%s%s%zu bytes"
                            "%s%s); not counted as answered",
                            u->heartbeat_url, kind, kind[0] ? ", " : "", req->response_len,
                            text[0] ? ": " : "", text);
    uplink_http_request_clear(req);
    return;
  }
  uplink_http_request_clear(req);
  u->status.last_heartbeat_ms = clock_wall_ms();
  uplink__error_settled(&u->heartbeat_log);
  if (ack->server_clock_ms) {
    int64_t drift = u->status.last_heartbeat_ms - ack->server_clock_ms;
    uint64_t now = uv_now(u->loop);
    u->status.clock_skew_ms = drift;
    u->status.clock_skew_known = 1;
    /* The collector's clock is the journal's trusted time: rows taken
     * while this device's clock is wrong are corrected from it. */
    journal_clock_reference(u->journal, ack->server_clock_ms, clock_boot_ms());
    /* Every minute while the clock is off: said once per
     * UPLINK_ERROR_REPEAT_MS, not at every heartbeat. */
    if ((drift > UPLINK_CLOCK_DRIFT_WARN_MS || drift < -UPLINK_CLOCK_DRIFT_WARN_MS) &&
        (!u->drift_logged_ms || now >= u->drift_logged_ms + UPLINK_ERROR_REPEAT_MS)) {
      u->drift_logged_ms = now ? now : 1;
      log_warn("uplink", "clock_drift",
               "device_minus_collector_ms=%" PRId64
               " reason=\"the device clock is off; received times will be too\"",
               drift);
    }
  }
  uplink__commands(u, ack->n_commands, ack->commands);
  pos__v1__heartbeat_ack__free_unpacked(ack, NULL);
}
