/*
 * replay.c - the replay lane: a resync's replay batches (kind REPLAY, its
 * resync_id, batch_seq 1, 2, ... per resync), cut from the journal by
 * business time, at most JOURNAL_REPLAY_MAX_SALES sales each, one in
 * flight, on a transfer of their own beside the live lane's: a live batch
 * never waits behind a replay. Where a resync stands is the journal's
 * (commands and replay_batches): after kill -9 or a reboot it goes on at
 * the first replay batch not acknowledged, with the same rows.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/clock.h"
#include "platform/log.h"
#include "proto/codec.h"
#include "uplink/uplink_int.h"

static void uplink_replay_on_op(struct journal_op *op);
static void uplink_replay_on_answer(struct uplink_http_request *req);

static int uplink_replay_running(const uplink *u) { return u->replay.command.command_id[0]; }

static void uplink_replay_free_sending(uplink *u)
{
  free(u->replay.sending.body);
  memset(&u->replay.sending, 0, sizeof(u->replay.sending));
}

static void uplink_replay_on_timer(uv_timer_t *timer)
{
  uplink *u = timer->data;
  u->replay.waiting = 0;
  if (!u->closing)
    uplink__replay_kick(u);
}

/* A failure: said (once per message), and the resync goes on after a backoff. */
static void uplink_replay_retry(uplink *u, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void uplink_replay_retry(uplink *u, const char *fmt, ...)
{
  char message[sizeof(u->replay.last_error)];
  uint64_t delay = backoff_next(&u->replay.backoff);
  va_list args;

  va_start(args, fmt);
  vsnprintf(message, sizeof(message), fmt, args);
  va_end(args);
  if (strcmp(message, u->replay.last_error) != 0) {
    char quoted[400];
    log_warn("uplink", "replay_retry", "resync_id=%s batch_seq=%" PRId64 " retry_in_ms=%" PRIu64
             " reason=%s", u->replay.command.command_id, u->replay.next_batch_seq, delay,
             log_quote(message, quoted, sizeof(quoted)));
    snprintf(u->replay.last_error, sizeof(u->replay.last_error), "%s", message);
  }
  uplink_replay_free_sending(u);
  u->replay.waiting = 1;
  uv_timer_start(&u->replay.timer, uplink_replay_on_timer, delay, 0);
}

static void uplink_replay_submit(uplink *u, enum journal_op_kind kind, int64_t batch_seq)
{
  struct journal_op *op = &u->replay.op;
  int rc;

  memset(op, 0, sizeof(*op));
  op->kind = kind;
  op->batch_seq = batch_seq;
  u->replay.op_command = u->replay.command;
  op->command = &u->replay.op_command;
  op->max_sales = u->max_sales < JOURNAL_REPLAY_MAX_SALES ? u->max_sales
                                                          : JOURNAL_REPLAY_MAX_SALES;
  op->max_bytes = u->max_bytes;
  op->max_decoded_bytes = u->max_decoded;
  op->pack = batcher_pack;
  op->pack_arg = &u->identity;
  op->done = uplink_replay_on_op;
  op->user = u;
  rc = journal_submit_op(u->journal, op);
  if (rc) {
    if (rc != JOURNAL_ECLOSED)
      uplink_replay_retry(u, "the journal cannot queue work: %s", journal_strerror(rc));
    return;
  }
  u->replay.op_busy = 1;
}

/* Every row of the range was cut and every batch acknowledged: finished. */
static void uplink_replay_finished(uplink *u)
{
  const struct journal_command *c = &u->replay.command;
  log_info("uplink", "resync_replayed",
           "resync_id=%s batches=%" PRId64 " sales=%llu total_sales=%llu", c->command_id,
           c->replay_acked_batch_seq, (unsigned long long)c->done_sales,
           (unsigned long long)c->total_sales);
  uplink__command_finish(u, c->command_id, JOURNAL_COMMAND_DONE, "");
  memset(&u->replay.command, 0, sizeof(u->replay.command));
  backoff_reset(&u->replay.backoff);
}

static void uplink_replay_send(uplink *u)
{
  struct uplink_http_request *req = &u->replay.req;

  memset(req, 0, sizeof(*req));
  req->url = u->batches_url;
  req->content_type = "application/x-protobuf";
  req->content_encoding = "zstd";
  req->body = u->replay.sending.body;
  req->body_len = u->replay.sending.body_len;
  req->done = uplink_replay_on_answer;
  req->user = u;
  if (uplink_http_start(u->http, req)) {
    uplink_replay_retry(u, "the request cannot start: %s", req->error);
    return;
  }
  u->replay.req_busy = 1;
  u->replay.sent_ms = uv_now(u->loop);
  u->replay.sent_sales = u->replay.sending.sale_count;
  log_debug("uplink", "replay_sending", "resync_id=%s batch_seq=%" PRId64 " sales=%u bytes=%zu",
            u->replay.command.command_id, u->replay.sending.batch_seq,
            u->replay.sending.sale_count, u->replay.sending.body_len);
}

/* With [uplink] replay_rate, how long the next replay batch waits so that
 * the one just acknowledged took its share of a second per replay_rate
 * sales, counted from when it was posted; 0 without a cap. */
static uint64_t uplink_replay_pause_ms(const uplink *u)
{
  uint64_t share, spent;

  if (u->replay_rate <= 0 || u->replay.sent_sales == 0)
    return 0;
  share = (uint64_t)u->replay.sent_sales * 1000u / (uint64_t)u->replay_rate;
  spent = uv_now(u->loop) - u->replay.sent_ms;
  return share > spent ? share - spent : 0;
}

static void uplink_replay_on_op(struct journal_op *op)
{
  uplink *u = op->user;

  u->replay.op_busy = 0;
  if (u->closing) {
    journal_op_clear(op);
    uplink__maybe_free(u);
    return;
  }
  if (u->replay.cancelled) {
    /* Cancelled while the journal worked on it: what it made is dropped. */
    journal_op_clear(op);
    u->replay.cancelled = 0;
    memset(&u->replay.command, 0, sizeof(u->replay.command));
    uplink__replay_kick(u);
    return;
  }
  if (!op->error)
    u->replay.command = u->replay.op_command; /* where the journal says it stands */
  if (op->error) {
    journal_op_clear(op);
    if (op->error == JOURNAL_EINVAL) {
      /* Not running any more (cancelled meanwhile): the next one, if any. */
      memset(&u->replay.command, 0, sizeof(u->replay.command));
      uplink__replay_kick(u);
      return;
    }
    if (op->error == JOURNAL_ECORRUPT || op->error == JOURNAL_ENOTFOUND) {
      /* Rows that no longer read back as recorded: no retry brings them
       * back. Said to head office as the resync's failure. */
      log_error("uplink", "resync_failed", "resync_id=%s reason=\"%s\"",
                u->replay.command.command_id, op->message);
      uplink__command_finish(u, u->replay.command.command_id, JOURNAL_COMMAND_FAILED,
                             op->message);
      memset(&u->replay.command, 0, sizeof(u->replay.command));
      return;
    }
    uplink_replay_retry(u, "%s", op->message);
    return;
  }
  if (op->kind == JOURNAL_OP_REPLAY_ACK) {
    uint64_t pause;
    u->replay.last_error[0] = '\0';
    backoff_reset(&u->replay.backoff);
    u->replay.next_batch_seq = op->batch_seq + 1;
    pause = uplink_replay_pause_ms(u);
    if (pause) {
      /* replay_rate: the next batch waits its turn (the timer kicks it). */
      u->replay.waiting = 1;
      uv_timer_start(&u->replay.timer, uplink_replay_on_timer, pause, 0);
      return;
    }
    uplink_replay_submit(u, JOURNAL_OP_REPLAY_BATCH, u->replay.next_batch_seq);
    return;
  }
  if (op->batch.batch_seq == 0) {
    if (u->replay.command.replay_cut_seq < u->replay.command.upto_seq)
      /* A window of the journal without rows of this resync: the next one
       * (an operation of its own, so that sales are journaled between). */
      uplink_replay_submit(u, JOURNAL_OP_REPLAY_BATCH, op->batch_seq);
    else if (u->replay.command.replay_acked_batch_seq >= u->replay.command.replay_batch_seq)
      uplink_replay_finished(u);
    else /* a batch below the last cut is unacknowledged: from there */
      uplink_replay_submit(u, JOURNAL_OP_REPLAY_BATCH,
                           u->replay.command.replay_acked_batch_seq + 1);
    return;
  }
  uplink_replay_free_sending(u);
  u->replay.sending = op->batch;
  op->batch.body = NULL;
  uplink_replay_send(u);
}

/* 400, 403, 413: an answer no resend changes (the collector cannot read
 * the batch, this device may not send it, it is over the collector's
 * limit). Retrying would hold retention for good: the resync FAILS with
 * what the collector said, and the next one (if any) goes on. */
static void uplink_replay_refused(uplink *u, int64_t batch_seq, const char *detail)
{
  char message[sizeof(u->replay.command.message)], quoted[600];

  snprintf(message, sizeof(message),
           "the collector refused replay batch %" PRId64 " of this resync: %.300s; nothing more "
           "of it is sent (head office may issue a new resync)",
           batch_seq, detail);
  log_error("uplink", "resync_failed", "resync_id=%s batch_seq=%" PRId64 " reason=%s",
            u->replay.command.command_id, batch_seq, log_quote(message, quoted, sizeof(quoted)));
  uplink_replay_free_sending(u);
  uplink__command_finish(u, u->replay.command.command_id, JOURNAL_COMMAND_FAILED, message);
  memset(&u->replay.command, 0, sizeof(u->replay.command));
  backoff_reset(&u->replay.backoff);
  u->replay.last_error[0] = '\0';
}

/* 409: the collector's resync stream expects another batch. */
static void uplink_replay_conflict(uplink *u, const Pos__V1__BatchAck *ack)
{
  int64_t ours = u->replay.sending.batch_seq;
  int64_t expected = ack ? (int64_t)ack->expected_batch_seq : 0;

  if (expected <= 0 || expected == ours) {
    uplink_replay_retry(u, "409 without a usable expected_batch_seq");
    return;
  }
  log_warn("uplink", "replay_resume", "resync_id=%s sent=%" PRId64 " expected=%" PRId64,
           u->replay.command.command_id, ours, expected);
  uplink_replay_free_sending(u);
  if (expected > ours) {
    /* The collector holds everything below `expected` (clamped by the
     * journal to what was cut). */
    uplink_replay_submit(u, JOURNAL_OP_REPLAY_ACK, expected - 1);
    return;
  }
  u->replay.next_batch_seq = expected;
  uplink_replay_submit(u, JOURNAL_OP_REPLAY_BATCH, expected);
}

/* The ack names our journal: another journal's answer acknowledges nothing of ours. */
static int uplink_replay_ack_is_ours(const uplink *u, const Pos__V1__BatchAck *ack)
{
  uint8_t ours[16];
  return proto_journal_id_parse(u->identity_journal_id, ours) == 0 &&
         ack->journal_id.len == 16 && memcmp(ack->journal_id.data, ours, 16) == 0;
}

static void uplink_replay_on_answer(struct uplink_http_request *req)
{
  uplink *u = req->user;
  Pos__V1__BatchAck *ack = NULL;
  int64_t batch_seq = u->replay.sending.batch_seq;
  char why[160], detail[520];

  u->replay.req_busy = 0;
  if (u->closing) {
    uplink_http_request_clear(req);
    return;
  }
  if (req->failed) {
    snprintf(detail, sizeof(detail), "%s", req->error);
    uplink_http_request_clear(req);
    uplink_replay_retry(u, "POST /v1/batches (replay): %s", detail);
    return;
  }
  if ((req->status == 200 || req->status == 409) &&
      uplink_http_answer_is_protobuf(req, why, sizeof(why)))
    ack = pos__v1__batch_ack__unpack(NULL, req->response_len, req->response);
  if (req->status == 400 || req->status == 403 || req->status == 413) {
    char text[320];
    uplink__answer_text(req, text, sizeof(text));
    snprintf(detail, sizeof(detail), "%ld%s%s", req->status, text[0] ? ": " : "", text);
  } else {
    snprintf(detail, sizeof(detail), "%ld", req->status);
  }
  uplink_http_request_clear(req);
  if (req->status == 400 || req->status == 403 || req->status == 413) {
    uplink_replay_refused(u, batch_seq, detail);
  } else if (ack && !uplink_replay_ack_is_ours(u, ack)) {
    uplink_replay_retry(u, "POST /v1/batches (replay): %s for another journal than ours (%s)",
                        detail, u->identity_journal_id);
  } else if (req->status == 200 && ack && ack->acked_batch_seq >= (uint64_t)batch_seq) {
    uplink__commands(u, ack->n_commands, ack->commands);
    uplink_replay_free_sending(u);
    uplink_replay_submit(u, JOURNAL_OP_REPLAY_ACK, batch_seq);
  } else if (req->status == 409 && ack) {
    uplink_replay_conflict(u, ack);
  } else {
    uplink_replay_retry(u, "POST /v1/batches (replay): %s without an acknowledgement", detail);
  }
  if (ack)
    pos__v1__batch_ack__free_unpacked(ack, NULL);
}

void uplink__replay_kick(uplink *u)
{
  struct journal_command *list = NULL;
  const struct journal_command *oldest = NULL;
  size_t count;

  if (u->closing || u->replay.op_busy || u->replay.req_busy || u->replay.waiting)
    return;
  if (uplink_replay_running(u)) {
    uplink_replay_submit(u, JOURNAL_OP_REPLAY_BATCH, u->replay.next_batch_seq);
    return;
  }
  /* The journal's list holds every unfinished command, however old: the
   * oldest running resync (first recorded) goes first. */
  count = journal_get_commands(u->journal, &list);
  for (size_t i = 0; i < count; i++) {
    if (list[i].kind == JOURNAL_COMMAND_RESYNC && list[i].state == JOURNAL_COMMAND_RUNNING &&
        (!oldest || list[i].recorded_ms <= oldest->recorded_ms))
      oldest = &list[i];
  }
  if (oldest)
    u->replay.command = *oldest;
  free(list);
  if (!uplink_replay_running(u))
    return;
  u->replay.next_batch_seq = u->replay.command.replay_acked_batch_seq + 1;
  log_info("uplink", "resync", "resync_id=%s from_ms=%" PRId64 " to_ms=%" PRId64
           " next_batch_seq=%" PRId64 " total_sales=%llu done_sales=%llu",
           u->replay.command.command_id, u->replay.command.from_ms, u->replay.command.to_ms,
           u->replay.next_batch_seq, (unsigned long long)u->replay.command.total_sales,
           (unsigned long long)u->replay.command.done_sales);
  uplink_replay_submit(u, JOURNAL_OP_REPLAY_BATCH, u->replay.next_batch_seq);
}

void uplink__replay_cancelled(uplink *u, const char *resync_id)
{
  if (!uplink_replay_running(u) || strcmp(u->replay.command.command_id, resync_id) != 0)
    return;
  log_warn("uplink", "resync_cancelled", "resync_id=%s done_sales=%llu",
           resync_id, (unsigned long long)u->replay.command.done_sales);
  if (u->replay.req_busy) {
    uplink_http_cancel(u->http, &u->replay.req);
    u->replay.req_busy = 0;
  }
  uplink_replay_free_sending(u);
  if (u->replay.waiting) {
    uv_timer_stop(&u->replay.timer);
    u->replay.waiting = 0;
  }
  if (u->replay.op_busy) {
    /* The journal's writer reads the command now: dropped when it is done. */
    u->replay.cancelled = 1;
    return;
  }
  memset(&u->replay.command, 0, sizeof(u->replay.command));
  uplink__replay_kick(u);
}

void uplink__replay_init(uplink *u)
{
  u->replay.backoff = u->backoff;
  uv_timer_init(u->loop, &u->replay.timer);
  u->replay.timer.data = u;
  u->open_handles++;
}

static void uplink_replay_on_closed(uv_handle_t *handle)
{
  uplink *u = handle->data;
  u->open_handles--;
  uplink__maybe_free(u);
}

void uplink__replay_close(uplink *u)
{
  if (u->replay.req_busy) {
    uplink_http_cancel(u->http, &u->replay.req);
    u->replay.req_busy = 0;
  }
  uv_timer_stop(&u->replay.timer);
  uv_close((uv_handle_t *)&u->replay.timer, uplink_replay_on_closed);
}
