/*
 * uploader.c - the batch state machine: when to push, what to send next,
 * and what each answer of the collector means (uplink.h has the table).
 *
 *            push (interval, SIGUSR1, action, command)
 *   IDLE ───────────────────────────────────────────────► SENDING
 *    ▲     nothing left to seal or send                      │  ▲
 *    └───────────────────────────────────────────────────────┘  │ retry timer,
 *                                   failure                  │  │ push now
 *                                                            ▼  │
 *                                                        BACKING_OFF
 *
 * SENDING is a loop of: JOURNAL_OP_NEXT_BATCH(cursor) on the writer thread
 * (load the stored batch, or seal the next one), POST it, then
 * JOURNAL_OP_ACK (or UNSEAL after a 413), and again with the next cursor.
 * At most one batch is in flight and at most one journal op pending, so
 * batches reach the collector in batch_seq order.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "platform/clock.h"
#include "platform/log.h"
#include "proto/codec.h"
#include "uplink/uplink_int.h"

const char *uplink_state_name(enum uplink_state state)
{
  switch (state) {
  case UPLINK_OFF:
    return "off";
  case UPLINK_IDLE:
    return "idle";
  case UPLINK_SENDING:
    return "sending";
  case UPLINK_BACKING_OFF:
    return "backing_off";
  }
  return "?";
}

/* Logs how many repeats of the last error of `log` were not logged, if any. */
static void uplink_error_flush(struct uplink_error_log *log)
{
  char quoted[600];

  if (!log->suppressed)
    return;
  log_info("uplink", "error_repeated", "count=%u reason=%s", log->suppressed,
           log_quote(log->last, quoted, sizeof(quoted)));
  log->suppressed = 0;
}

/* Records `fmt` in the status and logs it through `log`'s rate limit. */
static void uplink_error_v(uplink *u, struct uplink_error_log *log, int loud, const char *fmt,
                           va_list args) __attribute__((format(printf, 4, 0)));

static void uplink_error_v(uplink *u, struct uplink_error_log *log, int loud, const char *fmt,
                           va_list args)
{
  char message[sizeof(u->status.last_error)];
  char quoted[600];
  uint64_t now = uv_now(u->loop);
  unsigned suppressed = 0;
  int same;

  vsnprintf(message, sizeof(message), fmt, args);
  memcpy(u->status.last_error, message, sizeof(message));
  u->status.last_error_ms = clock_wall_ms();
  if (log == &u->batch_log)
    u->status.last_error_needs_person = loud;
  /* A failure that lasts repeats the same line at every retry and every
   * heartbeat (a batch was once resent 4,632 times in 3.5 minutes, four
   * lines each): say it once, then again every UPLINK_ERROR_REPEAT_MS with
   * the number of repeats in between, so the log on flash says something
   * new when something new happens. It is always in the status. */
  same = strcmp(message, log->last) == 0;
  if (same && log->logged_ms && now < log->logged_ms + UPLINK_ERROR_REPEAT_MS) {
    log->suppressed++;
    log->was_logged = 0;
    log_debug("uplink", "error", "repeated=1 reason=%s", log_quote(message, quoted, sizeof(quoted)));
    return;
  }
  if (same) {
    suppressed = log->suppressed;
    log->suppressed = 0;
  } else {
    uplink_error_flush(log);
  }
  memcpy(log->last, message, sizeof(message));
  log->logged_ms = now ? now : 1;
  log->was_logged = 1;
  if (suppressed)
    log_event(loud ? LOG_ERROR : LOG_WARN, "uplink", "error", "reason=%s repeated_since_logged=%u",
              log_quote(message, quoted, sizeof(quoted)), suppressed);
  else
    log_event(loud ? LOG_ERROR : LOG_WARN, "uplink", "error", "reason=%s",
              log_quote(message, quoted, sizeof(quoted)));
}

void uplink__error(uplink *u, int loud, const char *fmt, ...)
{
  va_list args;
  if (!u->status.failing_since_ms)
    u->status.failing_since_ms = clock_wall_ms();
  va_start(args, fmt);
  uplink_error_v(u, &u->batch_log, loud, fmt, args);
  va_end(args);
}

void uplink__heartbeat_error(uplink *u, int loud, const char *fmt, ...)
{
  va_list args;
  va_start(args, fmt);
  uplink_error_v(u, &u->heartbeat_log, loud, fmt, args);
  va_end(args);
}

void uplink__error_settled(struct uplink_error_log *log)
{
  uplink_error_flush(log);
  log->logged_ms = 0;
}

static void uplink_on_op(struct journal_op *op);
static void uplink_on_batch_answer(struct uplink_http_request *req);
static void uplink_on_push_timer(uv_timer_t *timer);

/* ---- scheduling ----------------------------------------------------------------- */

static void uplink_free_sending(uplink *u)
{
  free(u->sending.body);
  memset(&u->sending, 0, sizeof(u->sending));
}

/* Waits `delay_ms`, then resumes the push where it stopped. */
static void uplink_retry_in(uplink *u, uint64_t delay_ms)
{
  assert(u->state == UPLINK_SENDING);
  uplink_free_sending(u);
  u->state = UPLINK_BACKING_OFF;
  u->status.next_push_ms = clock_wall_ms() + (int64_t)delay_ms;
  uv_timer_start(&u->push_timer, uplink_on_push_timer, delay_ms, 0);
  /* Said with the error that caused it, and like it, not at every repeat. */
  log_event(u->batch_log.was_logged ? LOG_INFO : LOG_DEBUG, "uplink", "backing_off",
            "retry_in_ms=%" PRIu64 " batch_seq=%" PRId64 " failures=%u%s", delay_ms,
            u->ack_pending ? u->ack_pending : u->cursor, u->backoff.failures,
            u->ack_pending ? " retrying=recording_the_ack" : "");
}

/* A failure that may pass by itself: back off exponentially. */
static void uplink_backoff(uplink *u) { uplink_retry_in(u, backoff_next(&u->backoff)); }

/* A failure a person must fix: try again, but only every backoff_max (and
 * a random part more, so a fleet refused together does not retry together). */
static void uplink_backoff_max(uplink *u)
{
  /* A push head office asked for cannot end by itself: it says why. */
  uplink__commands_push_failed(u, u->status.last_error);
  uplink_retry_in(u, backoff_at_cap(&u->backoff));
}

/* The caps a new batch is sealed with: the configured ones as lowered by
 * the collector and 413s, and for now by a full disk. */
static size_t uplink_max_sales(const uplink *u)
{
  return u->full_max_sales && u->full_max_sales < u->max_sales ? u->full_max_sales : u->max_sales;
}

static size_t uplink_max_bytes(const uplink *u)
{
  return u->full_max_bytes && u->full_max_bytes < u->max_bytes ? u->full_max_bytes : u->max_bytes;
}

/* The next push after interval plus a random part of the jitter. */
static void uplink_schedule_next(uplink *u, uint64_t delay_ms)
{
  u->state = UPLINK_IDLE;
  u->status.next_push_ms = clock_wall_ms() + (int64_t)delay_ms;
  uv_timer_start(&u->push_timer, uplink_on_push_timer, delay_ms, 0);
}

static uint64_t uplink_interval_with_jitter(uplink *u)
{
  return (uint64_t)u->interval_ms + backoff_random(&u->backoff, (uint64_t)u->jitter_ms);
}

/* ---- journal operations --------------------------------------------------------- */

static void uplink_submit(uplink *u, enum journal_op_kind kind, int64_t batch_seq)
{
  struct journal_op *op = &u->op;
  int rc;

  assert(!u->op_busy);
  memset(op, 0, sizeof(*op));
  op->kind = kind;
  op->batch_seq = batch_seq;
  op->done = uplink_on_op;
  op->user = u;
  if (kind == JOURNAL_OP_NEXT_BATCH) {
    op->seal_upto_seq = u->push_target_seq;
    op->max_sales = uplink_max_sales(u);
    op->max_bytes = uplink_max_bytes(u);
    op->max_decoded_bytes = u->max_decoded;
    op->pack = batcher_pack;
    op->pack_arg = &u->identity;
  }
  if (kind == JOURNAL_OP_NEW_JOURNAL)
    op->reason = u->new_journal_reason;
  rc = journal_submit_op(u->journal, op);
  if (rc) {
    if (rc == JOURNAL_ECLOSED)
      return; /* shutting down: nothing more to do */
    uplink__error(u, 1, "journal %s: cannot queue work: %s", u->journal_path,
                  journal_strerror(rc));
    uplink_backoff(u);
    return;
  }
  u->op_busy = 1;
}

/* Sends batch `cursor`, sealing it first if it is new. */
static void uplink_next(uplink *u)
{
  assert(u->state == UPLINK_SENDING);
  uplink_submit(u, JOURNAL_OP_NEXT_BATCH, u->cursor);
}

/* Goes on where the push stopped: records an acknowledgement the journal
 * could not save yet (the collector has that batch: sending it again would
 * only fetch the same answer), else sends batch `cursor`. */
static void uplink_resume(uplink *u)
{
  assert(u->state == UPLINK_SENDING);
  if (u->ack_pending)
    uplink_submit(u, JOURNAL_OP_ACK, u->ack_pending);
  else
    uplink_next(u);
}

static void uplink_begin_push(uplink *u, const char *why);

static void uplink_push_done(uplink *u)
{
  u->state = UPLINK_IDLE;
  uplink__commands_push_ended(u);
  if (u->push_again) {
    u->push_again = 0;
    uplink_begin_push(u, "queued");
    return;
  }
  uplink_schedule_next(u, uplink_interval_with_jitter(u));
}

static void uplink_begin_push(uplink *u, const char *why)
{
  struct journal_stats stats;

  journal_get_stats(u->journal, &stats);
  uv_timer_stop(&u->push_timer);
  u->status.next_push_ms = 0;
  if (stats.last_seq > u->push_target_seq)
    u->push_target_seq = stats.last_seq;
  log_info("uplink", "push", "why=%s batch_seq=%" PRId64 " unsent=%llu", why, u->cursor,
           (unsigned long long)stats.sales_unsent);
  u->state = UPLINK_SENDING;
  uplink_resume(u);
}

/* ---- sending -------------------------------------------------------------------- */

static void uplink_count_error(uplink *u, const char *reason)
{
  metrics_inc(metrics_series1(u->metrics.errors, reason));
}

/* Counts an answer to POST /v1/batches: its latency when it is a 200, else
 * the reason it failed, in words bounded for a label. */
static void uplink_count_answer(uplink *u, const struct uplink_http_request *req,
                                const Pos__V1__BatchAck *ack)
{
  char reason[48];
  long status = req->status;

  if (!req->failed && status == 200) {
    metrics_observe(u->metrics.ack_seconds,
                    (double)(uv_hrtime() - u->send_started_ns) / 1e9);
    return;
  }
  if (req->failed)
    snprintf(reason, sizeof(reason), "network");
  else if (status == 503 && ack &&
           ack->code == POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_ANOTHER_INSTANCE)
    snprintf(reason, sizeof(reason), "another_instance");
  else if (status == 429 || status == 503)
    snprintf(reason, sizeof(reason), "collector_busy");
  else if (status == 409)
    snprintf(reason, sizeof(reason), "batch_seq_conflict");
  else if (status == 413)
    snprintf(reason, sizeof(reason), "too_large");
  else if (status == 403)
    snprintf(reason, sizeof(reason), "forbidden");
  else if (status == 408 || status >= 500)
    snprintf(reason, sizeof(reason), "collector_error_%ld", status);
  else
    snprintf(reason, sizeof(reason), "refused_%ld", status >= 100 && status < 600 ? status : 0);
  uplink_count_error(u, reason);
}

static void uplink_send(uplink *u)
{
  struct uplink_http_request *req = &u->batch_req;

  memset(req, 0, sizeof(*req));
  req->url = u->batches_url;
  req->content_type = "application/x-protobuf";
  req->content_encoding = "zstd";
  req->body = u->sending.body;
  req->body_len = u->sending.body_len;
  req->done = uplink_on_batch_answer;
  req->user = u;
  u->status.last_attempt_ms = clock_wall_ms();
  u->status.batches_sent++;
  metrics_inc(u->metrics.batches_sent);
  u->send_started_ns = uv_hrtime();
  if (uplink_http_start(u->http, req)) {
    uplink_count_error(u, "request_not_started");
    uplink__error(u, 1, "POST %s batch %" PRId64 ": %s", u->batches_url, u->sending.batch_seq,
                  req->error);
    uplink_backoff(u);
    return;
  }
  u->batch_busy = 1;
  log_debug("uplink", "batch_sending",
            "batch_seq=%" PRId64 " sales=%u bytes=%zu attempt=%" PRId64,
            u->sending.batch_seq, u->sending.sale_count, u->sending.body_len,
            u->sending.attempts);
}

/* ---- a stall only head office can end --------------------------------------------- */

/*
 * NEXT_BATCH found no batch `cursor`: if retention deleted it (it is below
 * the oldest batch held), the collector lost the state that acknowledged
 * it and asks for what this device cannot send any more. Nothing the agent
 * can do alone fixes that, and skipping ahead by itself would hide a gap
 * from head office: it says so (log, status, heartbeat), resends its oldest
 * held batch every backoff_max, and keeps taking sales. The collector
 * accepts that batch once head office approved a rebase. Returns 1 when
 * handled so, 0 when the batch was never sealed (another problem).
 */
static int uplink_on_batch_gone(uplink *u, const struct journal_op *op)
{
  struct uplink_status *status = &u->status;
  struct journal_stats stats;
  int64_t held, expected;

  journal_get_stats(u->journal, &stats);
  held = op->oldest_batch_seq ? op->oldest_batch_seq : stats.last_batch_seq + 1;
  if (op->batch_seq > stats.last_batch_seq || held <= op->batch_seq)
    return 0;
  /* What the collector asked for; the cursor is the batch found missing,
   * the same unless retention deleted our oldest batch during the stall. */
  expected = u->asked_batch_seq ? u->asked_batch_seq : op->batch_seq;
  if (!status->stalled_expected_batch_seq)
    status->stalled_since_ms = clock_wall_ms();
  status->stalled_expected_batch_seq = expected;
  status->oldest_held_batch_seq = held;
  snprintf(status->problem, sizeof(status->problem),
           "expected_batch_deleted: the collector expects batch %" PRId64 " of journal %s, "
           "which this device deleted after retention; the oldest batch it holds is %"
           PRId64 ". Sales are still taken and kept. Head office must approve a rebase at the "
           "collector (it then accepts batch %" PRId64 " as the next one); batch %" PRId64
           " is offered again every %" PRId64 " s",
           expected, u->identity_journal_id, held, held, held, u->backoff_max_ms / 1000);
  uplink__error(u, 1, "%s", status->problem);
  u->cursor = held;
  uplink_backoff_max(u);
  return 1;
}

/* A batch was accepted: a stall, if any, is over. */
static void uplink_stall_clear(uplink *u, int64_t accepted_batch_seq)
{
  struct uplink_status *status = &u->status;

  u->asked_batch_seq = 0;
  if (!status->stalled_expected_batch_seq)
    return;
  log_warn("uplink", "stall_cleared",
           "accepted_batch_seq=%" PRId64 " had_expected_batch_seq=%" PRId64
           " reason=\"the collector accepted a batch again (a rebase approved by head "
           "office)\"",
           accepted_batch_seq, status->stalled_expected_batch_seq);
  status->stalled_expected_batch_seq = 0;
  status->oldest_held_batch_seq = 0;
  status->stalled_since_ms = 0;
  status->problem[0] = '\0';
}

/* The journal recorded that batches up to `batch_seq` are acknowledged:
 * only now is the attempt a success (the backoff starts over, the repeats
 * of the last error are counted out), and the push goes on. */
static void uplink_on_ack_saved(uplink *u, int64_t batch_seq)
{
  struct journal_batch *acked = &u->acking;

  u->ack_pending = 0;
  u->status.failing_since_ms = 0;
  backoff_reset(&u->backoff);
  u->reroutes = 0;
  uplink__error_settled(&u->batch_log);
  if (u->status.identity_mismatch_ms) {
    log_warn("uplink", "identity_mismatch_cleared", "reason=\"the collector accepts this "
             "device's batches again\"");
    u->status.identity_mismatch_ms = 0;
    u->status.problem[0] = '\0';
  }
  if (acked->batch_seq) {
    uplink_stall_clear(u, acked->batch_seq);
    u->status.last_ack_ms = clock_wall_ms();
    u->status.last_ack_batch_seq = acked->batch_seq;
    u->status.batches_acked++;
    metrics_inc(u->metrics.batches_acked);
    log_info("uplink", "batch_acked",
             "batch_seq=%" PRId64 " first_seq=%" PRId64 " last_seq=%" PRId64
             " sales=%u bytes=%zu attempt=%" PRId64 " duplicate=%d",
             acked->batch_seq, acked->first_seq, acked->last_seq, acked->sale_count,
             acked->body_len, acked->attempts, u->acking_duplicate);
  }
  memset(acked, 0, sizeof(*acked));
  if (u->full_max_sales || u->full_max_bytes) {
    /* Batches go out again, so the disk may have room again (retention,
     * someone cleaning up): back to full-size batches rather than single
     * sales for good; a disk still full halves them again. */
    u->full_max_sales = u->full_max_bytes = 0;
    log_info("uplink", "limit", "max_batch_sales=%zu max_batch_bytes=%zu source=restored",
             u->max_sales, u->max_bytes);
  }
  u->cursor = batch_seq + 1;
  uplink_next(u);
}

/* The journal started a new journal_id after a 403 that said ours is
 * another device's: send its batches (the carried-over sales) from 1. */
static void uplink_on_new_journal(uplink *u, const struct journal_op *op)
{
  struct journal_stats stats;

  if (op->error) {
    uplink__error(u, 1, "journal %s: a new journal could not be started after the collector "
                  "said ours belongs to another device: %s; retried every %" PRId64 " ms",
                  u->journal_path, op->message, u->backoff_max_ms);
    uplink_backoff_max(u);
    return;
  }
  journal_get_stats(u->journal, &stats);
  log_warn("uplink", "new_journal",
           "previous_journal_id=%s journal_id=%s sales_unsent=%llu reason=\"this device runs a "
           "copy of another device's disk; its unacknowledged sales go under the new journal\"",
           u->identity_journal_id, stats.journal_id, (unsigned long long)stats.sales_unsent);
  memcpy(u->identity_journal_id, stats.journal_id, sizeof(u->identity_journal_id));
  u->status.journals_restarted++;
  u->ack_pending = 0;
  u->asked_batch_seq = 0;
  u->status.stalled_expected_batch_seq = 0;
  u->status.oldest_held_batch_seq = 0;
  u->status.stalled_since_ms = 0;
  u->status.identity_mismatch_ms = 0;
  u->status.problem[0] = '\0';
  u->push_target_seq = stats.last_seq;
  u->cursor = stats.acked_batch_seq + 1;
  backoff_reset(&u->backoff);
  uplink_next(u);
}

static void uplink_on_op(struct journal_op *op)
{
  uplink *u = op->user;

  u->op_busy = 0;
  if (u->closing) {
    journal_op_clear(op);
    uplink__maybe_free(u);
    return;
  }
  assert(u->state == UPLINK_SENDING);
  switch (op->kind) {
  case JOURNAL_OP_NEXT_BATCH:
    if (op->error) {
      struct journal_stats stats;
      journal_op_clear(op);
      journal_get_stats(u->journal, &stats);
      if (op->error == JOURNAL_EFULL && stats.last_batch_seq < u->cursor &&
          uplink_max_sales(u) > 1) {
        /* No room even in the uplink's reserve for sealing a new batch this
         * big: try smaller ones, which need less, until an acknowledgement.
         * (Only sealing can find the disk full: a stored batch is resent
         * whatever the disk says.) */
        size_t sales = uplink_max_sales(u), bytes = uplink_max_bytes(u);
        u->full_max_sales = sales / 2;
        u->full_max_bytes = bytes / 2 >= UPLINK_MIN_BATCH_BYTES ? bytes / 2 : bytes;
        uplink__error(u, 1, "batch %" PRId64 ": %s; sealing at most %zu sales until a batch "
                      "is acknowledged", u->cursor, op->message, u->full_max_sales);
        uplink_backoff(u);
      } else if (op->error == JOURNAL_ENOTFOUND && uplink_on_batch_gone(u, op)) {
        /* Stalled until head office approves a rebase; said and scheduled. */
      } else if (op->error == JOURNAL_ENOTFOUND) {
        /* The collector wants a batch we never made: no retry can fix
         * that; a person must look. */
        uplink__error(u, 1, "batch %" PRId64 " cannot be sent: %s", u->cursor, op->message);
        uplink_backoff_max(u);
      } else {
        uplink__error(u, 1, "batch %" PRId64 ": %s", u->cursor, op->message);
        uplink_backoff(u);
      }
      return;
    }
    if (op->batch.batch_seq == 0) {
      uplink_push_done(u);
      return;
    }
    /* Take the batch (and its body) out of the op: it lives until answered. */
    uplink_free_sending(u);
    u->sending = op->batch;
    op->batch.body = NULL;
    uplink_send(u);
    return;
  case JOURNAL_OP_ACK:
    if (op->error) {
      /* The collector has the batch; what failed is saving that here. It
       * is a failure like any other: the backoff grows, and the retry
       * records the ack again instead of resending the batch. */
      uplink__error(u, 1, "batch %" PRId64 " was acknowledged by the collector but journal %s "
                    "cannot record that: %s; recording it is retried (the batch is not resent)",
                    op->batch_seq, u->journal_path, op->message);
      uplink_backoff(u);
      return;
    }
    uplink_on_ack_saved(u, op->batch_seq);
    return;
  case JOURNAL_OP_UNSEAL:
    if (op->error) {
      uplink__error(u, 1, "splitting batch %" PRId64 ": %s", op->batch_seq, op->message);
      uplink_backoff_max(u);
      return;
    }
    uplink_next(u);
    return;
  case JOURNAL_OP_NEW_JOURNAL:
    uplink_on_new_journal(u, op);
    return;
  case JOURNAL_OP_RETENTION:
  case JOURNAL_OP_RECIPES: /* never the uplink's */
  case JOURNAL_OP_COMMAND: /* commands.c's and replay.c's own */
  case JOURNAL_OP_COMMAND_STATE:
  case JOURNAL_OP_REPLAY_BATCH:
  case JOURNAL_OP_REPLAY_ACK:
    break;
  }
}

void uplink__answer_text(const struct uplink_http_request *req, char *out, size_t out_size)
{
  Pos__V1__BatchAck *ack = NULL;
  size_t n = 0;
  char kind[160];

  out[0] = '\0';
  if (!uplink_http_answer_is_protobuf(req, kind, sizeof(kind)) && req->status == 200) {
    n = (size_t)snprintf(out, out_size, "%s%s", kind, req->response_len ? ": " : "");
    if (n >= out_size)
      return;
  } else if (req->response_len) {
    ack = pos__v1__batch_ack__unpack(NULL, req->response_len, req->response);
  }
  if (req->response_len == 0)
    return;
  if (ack && ack->message && ack->message[0]) {
    snprintf(out, out_size, "%s", ack->message);
    pos__v1__batch_ack__free_unpacked(ack, NULL);
    return;
  }
  if (ack)
    pos__v1__batch_ack__free_unpacked(ack, NULL);
  for (size_t i = 0; i < req->response_len && n + 1 < out_size && n < 300; i++) {
    unsigned char c = req->response[i];
    out[n++] = (char)(c >= 0x20 && c < 0x7f ? c : ' ');
  }
  while (n > 0 && out[n - 1] == ' ')
    n--;
  out[n] = '\0';
}

/* Lowers the caps to what the collector says it accepts (never above the
 * configured ones), and takes its decoded limit as it is, and the zstd
 * dictionary both know (none from a collector that lists none: an older
 * one, or one rolled back): batches sealed from now on use it. */
static void uplink_apply_limits(uplink *u, const Pos__V1__Limits *limits)
{
  uint32_t dict_id;

  if (!limits)
    return;
  dict_id = proto_zstd_dictionary_choose(limits->zstd_dictionaries,
                                         limits->n_zstd_dictionaries);
  if (dict_id != batcher_dictionary(&u->identity)) {
    batcher_use_dictionary(&u->identity, dict_id);
    log_info("uplink", "limit", "zstd_dictionary=%" PRIu32 " source=collector", dict_id);
  }
  if (limits->max_batch_decoded_bytes &&
      (uint64_t)(size_t)limits->max_batch_decoded_bytes == limits->max_batch_decoded_bytes &&
      limits->max_batch_decoded_bytes != u->max_decoded) {
    u->max_decoded = (size_t)limits->max_batch_decoded_bytes;
    log_info("uplink", "limit", "max_batch_decoded_bytes=%zu source=collector", u->max_decoded);
  }
  if (limits->max_batch_bytes && limits->max_batch_bytes < u->max_bytes) {
    u->max_bytes = (size_t)limits->max_batch_bytes;
    log_info("uplink", "limit", "max_batch_bytes=%zu source=collector", u->max_bytes);
  }
  if (limits->max_sales_per_batch && limits->max_sales_per_batch < u->max_sales) {
    u->max_sales = limits->max_sales_per_batch;
    log_info("uplink", "limit", "max_batch_sales=%zu source=collector", u->max_sales);
  }
}

/* The ack names our journal (an ack without a journal_id names none). */
static int uplink_ack_journal_matches(uplink *u, const Pos__V1__BatchAck *ack)
{
  uint8_t ours[16];
  if (proto_journal_id_parse(u->identity_journal_id, ours))
    return 0;
  return ack->journal_id.len == 16 && memcmp(ack->journal_id.data, ours, 16) == 0;
}

/* The journal an ack names, for error messages. */
static void uplink_ack_journal_text(const Pos__V1__BatchAck *ack, char out[33])
{
  if (ack->journal_id.len == 16)
    proto_journal_id_format(ack->journal_id.data, out);
  else
    snprintf(out, 33, "%s", ack->journal_id.len ? "(malformed)" : "(none)");
}

/*
 * Test builds only (POS_TESTING): POS_TEST_DIE_BEFORE_ACK=1 makes the agent
 * die (exit status 137, as after kill -9) the moment a batch is
 * acknowledged, before the journal records it: the collector has produced
 * the batch and the agent does not know. The e2e tests of a journal that
 * loses its tail with a batch in flight need that moment every time.
 */
static void uplink_test_die_before_ack(int64_t batch_seq)
{
#ifdef POS_TESTING
  const char *die = getenv("POS_TEST_DIE_BEFORE_ACK");
  if (die && strcmp(die, "1") == 0) {
    log_warn("uplink", "test_hook", "POS_TEST_DIE_BEFORE_ACK=1 batch_seq=%" PRId64, batch_seq);
    _exit(137);
  }
#else
  (void)batch_seq;
#endif
}

/*
 * A 200 counts only with a BatchAck that names our journal and acknowledges
 * at least the batch sent: anything less (a proxy's 200, a body cut short,
 * another journal's ack) is a failed attempt, retried with backoff, so that
 * a sale is never marked sent on a guess. An ack beyond every batch this
 * journal sealed cannot be true of it: stop and say so, as for a 409.
 */
static void uplink_on_ok(uplink *u, Pos__V1__BatchAck *ack, const char *text)
{
  int64_t batch_seq = u->sending.batch_seq;
  struct journal_stats stats;
  char theirs[33];

  if (!ack) {
    uplink__error(u, 1, "POST %s batch %" PRId64 ": 200 without a readable BatchAck%s%s; "
                  "not counted as acknowledged, will retry",
                  u->batches_url, batch_seq, text[0] ? ": " : "", text);
    uplink_backoff(u);
    return;
  }
  if (!uplink_ack_journal_matches(u, ack)) {
    uplink_ack_journal_text(ack, theirs);
    uplink__error(u, 1, "POST %s batch %" PRId64 ": 200 acknowledging journal %s, not ours (%s); "
                  "not counted as acknowledged, will retry",
                  u->batches_url, batch_seq, theirs, u->identity_journal_id);
    uplink_backoff(u);
    return;
  }
  if (ack->acked_batch_seq < (uint64_t)batch_seq) {
    uplink__error(u, 1, "POST %s batch %" PRId64 ": 200 acknowledging batches up to %llu only; "
                  "not counted as acknowledged, will retry",
                  u->batches_url, batch_seq, (unsigned long long)ack->acked_batch_seq);
    uplink_backoff(u);
    return;
  }
  journal_get_stats(u->journal, &stats);
  if (ack->acked_batch_seq > (uint64_t)stats.last_batch_seq) {
    uplink__error(u, 1, "POST %s batch %" PRId64 ": the collector acknowledged batches up to "
                  "%llu but journal %s has sealed batches up to %" PRId64 " only (was the "
                  "journal restored from a backup?); nothing is marked sent; a person must look",
                  u->batches_url, batch_seq, (unsigned long long)ack->acked_batch_seq,
                  stats.journal_id, stats.last_batch_seq);
    uplink_backoff_max(u);
    return;
  }
  uplink_test_die_before_ack(batch_seq);
  uplink_apply_limits(u, ack->limits);
  uplink__commands(u, ack->n_commands, ack->commands);
  log_debug("uplink", "batch_answered", "batch_seq=%" PRId64 " duplicate=%d", batch_seq,
            (int)ack->duplicate);
  /* Not a success yet: that is when the journal has the ack on flash (the
   * backoff used to be reset here, so an ack the disk could not take was
   * retried from backoff_min for ever). Only the batch sent is recorded:
   * if the collector has more, the next ones are answered as duplicates,
   * and nothing is marked sent that was not. */
  u->acking = u->sending;
  u->acking.body = NULL;
  u->acking_duplicate = (int)ack->duplicate;
  u->ack_pending = batch_seq;
  uplink_free_sending(u);
  uplink_submit(u, JOURNAL_OP_ACK, batch_seq);
}

static void uplink_on_conflict(uplink *u, Pos__V1__BatchAck *ack, const char *text)
{
  int64_t ours = u->sending.batch_seq;
  int64_t expected = ack ? (int64_t)ack->expected_batch_seq : 0;
  struct journal_stats stats;

  if (!ack || expected <= 0 || expected == ours || !uplink_ack_journal_matches(u, ack)) {
    uplink__error(u, 1, "POST %s batch %" PRId64 ": 409 without a usable expected_batch_seq%s%s",
                  u->batches_url, ours, text[0] ? ": " : "", text);
    uplink_backoff_max(u);
    return;
  }
  journal_get_stats(u->journal, &stats);
  if (expected > ours) {
    /* The collector already has everything below `expected`. */
    if (expected - 1 > stats.last_batch_seq) {
      uplink__error(u, 1,
                    "POST %s: the collector expects batch %" PRId64 " but journal %s has "
                    "sealed batches up to %" PRId64 " only (was the journal restored from a "
                    "backup?); a person must look",
                    u->batches_url, expected, stats.journal_id, stats.last_batch_seq);
      uplink_backoff_max(u);
      return;
    }
    log_warn("uplink", "resume", "sent=%" PRId64 " expected=%" PRId64
             " reason=\"the collector has these batches already\"", ours, expected);
    uplink_free_sending(u);
    u->ack_pending = expected - 1;
    uplink_submit(u, JOURNAL_OP_ACK, expected - 1);
    return;
  }
  if (expected == u->status.stalled_expected_batch_seq &&
      expected < u->status.oldest_held_batch_seq) {
    /* Still the stall: the collector wants the batch deleted here, and head
     * office has not approved a rebase yet. Offer the oldest batch held
     * again after backoff_max; the error repeats (rate-limited). */
    uplink__error(u, 1, "%s", u->status.problem);
    uplink_free_sending(u);
    u->cursor = u->status.oldest_held_batch_seq;
    uplink_backoff_max(u);
    return;
  }
  /* The collector lacks batches we hold as acknowledged (its state was
   * rebuilt from less): resend the stored ones from there, unchanged. If
   * retention deleted the batch asked for, NEXT_BATCH says so and the
   * stall above begins. */
  u->asked_batch_seq = expected;
  log_warn("uplink", "resume", "sent=%" PRId64 " expected=%" PRId64
           " reason=\"the collector is missing earlier batches; resending them\"", ours,
           expected);
  uplink_free_sending(u);
  u->cursor = expected;
  uplink_next(u);
}

static void uplink_on_too_large(uplink *u, const char *text)
{
  int64_t batch_seq = u->sending.batch_seq;
  size_t sales = u->sending.sale_count, bytes = u->sending.body_len;

  if (u->sending.acked_ms) {
    uplink__error(u, 1, "POST %s batch %" PRId64 ": 413 for a batch the collector "
                  "acknowledged before; it cannot be split%s%s",
                  u->batches_url, batch_seq, text[0] ? ": " : "", text);
    uplink_backoff_max(u);
    return;
  }
  if (sales <= 1) {
    uplink__error(u, 1, "POST %s batch %" PRId64 ": 413: one sale is larger than the "
                  "collector accepts; raise the collector's limit%s%s",
                  u->batches_url, batch_seq, text[0] ? ": " : "", text);
    uplink_backoff_max(u);
    return;
  }
  /* The collector never accepted it: seal its sales again, half as big. */
  u->max_sales = sales / 2;
  if (bytes / 2 < u->max_bytes)
    u->max_bytes = bytes / 2 > UPLINK_MIN_BATCH_BYTES ? bytes / 2 : UPLINK_MIN_BATCH_BYTES;
  log_warn("uplink", "batch_too_large",
           "batch_seq=%" PRId64 " sales=%zu bytes=%zu max_batch_sales=%zu max_batch_bytes=%zu",
           batch_seq, sales, bytes, u->max_sales, u->max_bytes);
  uplink_free_sending(u);
  uplink_submit(u, JOURNAL_OP_UNSEAL, batch_seq);
}

/* The decoded limit a 400 names: the collector passes on what the codec
 * says of a batch over it ("body decompresses to more than N bytes").
 * 0 = none named. */
static size_t uplink_decoded_limit_named(const char *text)
{
  static const char phrase[] = "decompresses to more than ";
  const char *at = strstr(text, phrase);
  unsigned long long limit;
  char *end;

  if (!at)
    return 0;
  at += sizeof(phrase) - 1;
  if (*at < '0' || *at > '9')
    return 0;
  errno = 0;
  limit = strtoull(at, &end, 10);
  if (errno || end == at || limit == 0 || (unsigned long long)(size_t)limit != limit)
    return 0;
  return (size_t)limit;
}

/* Does the batch in flight decompress to more than `limit` bytes? Our
 * bodies declare their size in the zstd frame, so this is usually
 * answered from the header alone. */
static int uplink_sending_over_decoded(const uplink *u, size_t limit)
{
  uint8_t *decoded = NULL;
  size_t decoded_len = 0;
  int rc = proto_zstd_decompress(u->sending.body, u->sending.body_len, limit, &decoded,
                                 &decoded_len);
  free(decoded);
  return rc == PROTO_EBOMB;
}

/*
 * 400 and the other answers a person must act on. One of them need not
 * wait for a person: a batch that decompresses beyond the collector's
 * decoded limit (sealed before that limit was known, or under a larger
 * one) is refused with 400 however often it is resent. If it was never
 * acknowledged, it is unsealed and its sales sealed again within the limit,
 * like after a 413; nothing is dropped. So is one compressed with a zstd
 * dictionary, refused by a collector rolled back to before it.
 */
static void uplink_on_refused(uplink *u, long status, const char *text)
{
  int64_t batch_seq = u->sending.batch_seq;
  size_t named = status == 400 ? uplink_decoded_limit_named(text) : 0;
  uint32_t dict_id;

  if (named && named != u->max_decoded) {
    u->max_decoded = named;
    log_info("uplink", "limit", "max_batch_decoded_bytes=%zu source=collector_400", named);
  }
  if (status == 400 && !u->sending.acked_ms && uplink_sending_over_decoded(u, u->max_decoded)) {
    if (u->sending.sale_count <= 1) {
      uplink__error(u, 1, "POST %s batch %" PRId64 ": 400: its one sale decodes to more than "
                    "the collector's limit of %zu bytes; raise the collector's "
                    "max_decoded_bytes (the batch is kept and resent every %" PRId64 " ms)%s%s",
                    u->batches_url, batch_seq, u->max_decoded, u->backoff_max_ms,
                    text[0] ? ": " : "", text);
      uplink_backoff_max(u);
      return;
    }
    log_warn("uplink", "batch_over_decoded_limit",
             "batch_seq=%" PRId64 " sales=%u bytes=%zu max_batch_decoded_bytes=%zu "
             "reason=\"400: the batch decompresses beyond the collector's limit; it was never "
             "acknowledged, so its sales are sealed again in batches within the limit\"",
             batch_seq, u->sending.sale_count, u->sending.body_len, u->max_decoded);
    uplink_free_sending(u);
    uplink_submit(u, JOURNAL_OP_UNSEAL, batch_seq);
    return;
  }
  dict_id = status == 400 ? proto_zstd_dictionary_of(u->sending.body, u->sending.body_len) : 0;
  if (dict_id != PROTO_ZSTD_DICT_NONE && !u->sending.acked_ms) {
    /* Sealed with a dictionary the collector listed, and now it cannot
     * read it: the collector was rolled back to one without it. The batch
     * was never produced: its sales are sealed again without the
     * dictionary, which is used again only once an ack lists it. (A 400
     * for another reason comes back for the batch without the dictionary,
     * and goes to a person then.) */
    batcher_use_dictionary(&u->identity, PROTO_ZSTD_DICT_NONE);
    log_warn("uplink", "batch_dictionary_refused",
             "batch_seq=%" PRId64 " zstd_dictionary=%" PRIu32 " reason=\"400: the collector "
             "cannot read a batch compressed with the zstd dictionary it listed before (rolled "
             "back?); it was never acknowledged, so its sales are sealed again without it\" "
             "collector=\"%s\"",
             batch_seq, dict_id, text);
    uplink_free_sending(u);
    uplink_submit(u, JOURNAL_OP_UNSEAL, batch_seq);
    return;
  }
  /* 400 (the collector cannot read our batch), 403 (wrong store, revoked
   * certificate) and the like do not pass by themselves. */
  uplink__error(u, 1, "POST %s batch %" PRId64 ": %ld%s%s; a person must act (the batch is "
                "kept and resent every %" PRId64 " ms)",
                u->batches_url, batch_seq, status, text[0] ? ": " : "", text,
                u->backoff_max_ms);
  uplink_backoff_max(u);
}

/*
 * 403 BATCH_ACK_CODE_JOURNAL_OF_ANOTHER_DEVICE for our journal: the
 * collector saw this journal_id first from another device of the store.
 * This device runs a copy of that one's disk (a cloned or restored image),
 * so the seqs under that journal_id are the other device's and resending
 * can never succeed. The honest answer is a journal of our own: the
 * journal moves the file aside and starts a new journal_id with every sale
 * not acknowledged to this device; nothing is dropped.
 */
static void uplink_on_journal_of_another_device(uplink *u, const char *text)
{
  if (u->status.journals_restarted >= UPLINK_MAX_NEW_JOURNALS) {
    /* A new random journal_id cannot belong to another device: a collector
     * that keeps saying so needs a person, not yet another journal. */
    uplink__error(u, 1, "POST %s batch %" PRId64 ": 403: the collector says journal %s belongs "
                  "to another device, after %u new journals this run; not starting another "
                  "(a person must look at the collector); resent every %" PRId64 " ms: %s",
                  u->batches_url, u->sending.batch_seq, u->identity_journal_id,
                  u->status.journals_restarted, u->backoff_max_ms, text);
    uplink_backoff_max(u);
    return;
  }
  snprintf(u->new_journal_reason, sizeof(u->new_journal_reason),
           "the collector says journal %s belongs to another device of store %s, not this "
           "device %s (%.300s): this device is a clone of another's disk (or a restored "
           "image), so the seqs under that journal are the other device's",
           u->identity_journal_id, u->identity.store_id, u->identity.device_id, text);
  uplink__error(u, 1, "POST %s batch %" PRId64 ": 403: %s; starting a new journal",
                u->batches_url, u->sending.batch_seq, u->new_journal_reason);
  uplink_free_sending(u);
  uplink_submit(u, JOURNAL_OP_NEW_JOURNAL, 0);
}

/* Does the batch in flight name the store and device configured now? 1
 * yes, 0 no, -1 unreadable (then it is left as it is). */
static int uplink_sending_names_us(const uplink *u)
{
  struct proto_limits limits = {SIZE_MAX, u->max_decoded > PROTO_DEFAULT_MAX_DECODED
                                               ? u->max_decoded
                                               : PROTO_DEFAULT_MAX_DECODED,
                                PROTO_DEFAULT_MAX_SALES};
  Pos__V1__Batch *batch = NULL;
  char err[160];
  int rc = -1;

  if (proto_batch_unpack(u->sending.body, u->sending.body_len, &limits, &batch, err,
                         sizeof(err)) != 0)
    return -1;
  if (batch->envelope && batch->envelope->store_id && batch->envelope->device_id)
    rc = strcmp(batch->envelope->store_id, u->identity.store_id) == 0 &&
         strcmp(batch->envelope->device_id, u->identity.device_id) == 0;
  pos__v1__batch__free_unpacked(batch, NULL);
  return rc;
}

/*
 * 403 BATCH_ACK_CODE_IDENTITY_MISMATCH: the batch names another store or
 * device than the certificate. A batch sealed under an earlier
 * configuration (since fixed) and never acknowledged is unsealed and its
 * sales sealed again under the identity configured now, like after a 413.
 * Otherwise certificate and configuration disagree: only a person can fix
 * that; it is an uplink problem (status, heartbeat) until a batch is
 * accepted again, and the batch is offered every backoff_max.
 */
static void uplink_on_identity_mismatch(uplink *u, const char *text)
{
  int64_t batch_seq = u->sending.batch_seq;

  if (!u->sending.acked_ms && uplink_sending_names_us(u) == 0) {
    log_warn("uplink", "batch_resealed",
             "batch_seq=%" PRId64 " store_id=%s device_id=%s reason=\"sealed under another "
             "store or device than configured now and refused for it (403 identity "
             "mismatch); never acknowledged, so its sales are sealed again\"",
             batch_seq, u->identity.store_id, u->identity.device_id);
    uplink_free_sending(u);
    uplink_submit(u, JOURNAL_OP_UNSEAL, batch_seq);
    return;
  }
  if (!u->status.identity_mismatch_ms)
    u->status.identity_mismatch_ms = clock_wall_ms();
  snprintf(u->status.problem, sizeof(u->status.problem),
           "identity_mismatch: the collector refused batch %" PRId64 " because this device's "
           "certificate names another store or device than its configuration (store_id=%s "
           "device_id=%s): fix [agent] store_id and device_id, or install this device's own "
           "certificate, and restart the agent; sales are still taken and kept, the batch is "
           "offered again every %" PRId64 " s",
           batch_seq, u->identity.store_id, u->identity.device_id, u->backoff_max_ms / 1000);
  uplink__error(u, 1, "%s (the collector: %s)", u->status.problem, text);
  uplink_backoff_max(u);
}

/*
 * 503 BATCH_ACK_CODE_ANOTHER_INSTANCE: collectors run as a fleet behind a
 * load balancer, and the one this connection reached does not write this
 * store's partition. It closed the connection: the next try opens a new one,
 * which the balancer may send to the owner. Not an overload, so the first
 * UPLINK_REROUTE_TRIES in a row wait only the Retry-After and up to a second
 * more (a balancer with N instances needs about N tries); then one failure
 * is counted and backed off (the owner may be gone, the group rebalancing),
 * and the quick tries start again: the waits between rounds grow.
 */
static void uplink_on_another_instance(uplink *u, int64_t retry_after_s, const char *text)
{
  uint64_t delay_ms;

  if (u->reroutes < UPLINK_REROUTE_TRIES) {
    u->reroutes++;
    delay_ms = retry_after_s > 0 && retry_after_s < 10 ? (uint64_t)retry_after_s * 1000u : 0;
    delay_ms += 100 + backoff_random(&u->backoff, 1000);
    log_info("uplink", "rerouting",
             "batch_seq=%" PRId64 " try=%u retry_in_ms=%" PRIu64 " reason=\"%s\"",
             u->sending.batch_seq, u->reroutes, delay_ms, text);
    uplink_retry_in(u, delay_ms);
    return;
  }
  uplink__error(u, 0,
                "POST %s batch %" PRId64 ": 503, %u tries in a row reached collector instances "
                "that do not write this store (the owner down, the group rebalancing, or "
                "[uplink] url naming one instance instead of the load balancer?): %s",
                u->batches_url, u->sending.batch_seq, u->reroutes, text);
  u->reroutes = 0; /* after this wait, as many quick tries again */
  uplink_backoff(u);
}

static void uplink_on_batch_answer(struct uplink_http_request *req)
{
  uplink *u = req->user;
  Pos__V1__BatchAck *ack = NULL;
  char text[320];
  long status = req->status;
  int64_t batch_seq = u->sending.batch_seq;
  int64_t retry_after_s = req->retry_after_s;

  u->batch_busy = 0;
  if (u->closing) {
    uplink_http_request_clear(req);
    return;
  }
  assert(u->state == UPLINK_SENDING);
  if (req->failed) {
    uplink_count_answer(u, req, NULL);
    uplink__error(u, 0, "POST /v1/batches batch %" PRId64 ": %s", batch_seq, req->error);
    uplink_http_request_clear(req);
    uplink_backoff(u);
    return;
  }
  /* An answer is read as a BatchAck only if it says it is one: a proxy's or
   * a captive portal's page is never taken for an acknowledgement. */
  if ((status == 200 || status == 409 || status == 403 || status == 503) &&
      uplink_http_answer_is_protobuf(req, text, sizeof(text)))
    ack = pos__v1__batch_ack__unpack(NULL, req->response_len, req->response);
  uplink_count_answer(u, req, ack);
  uplink__answer_text(req, text, sizeof(text));
  uplink_http_request_clear(req);

  if (status == 200) {
    uplink_on_ok(u, ack, text);
  } else if (status == 409) {
    uplink_on_conflict(u, ack, text);
  } else if (status == 403 && ack &&
             ack->code == POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_JOURNAL_OF_ANOTHER_DEVICE &&
             uplink_ack_journal_matches(u, ack)) {
    uplink_on_journal_of_another_device(u, text);
  } else if (status == 403 && ack &&
             ack->code == POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_IDENTITY_MISMATCH) {
    uplink_on_identity_mismatch(u, text);
  } else if (status == 413) {
    uplink_on_too_large(u, text);
  } else if (status == 503 && ack &&
             ack->code == POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_ANOTHER_INSTANCE) {
    uplink_on_another_instance(u, retry_after_s, text);
  } else if (status == 429 || status == 503) {
    /* Retry-After is a minimum, not an appointment: every store the
     * collector turned away in the same second was told the same number.
     * Jitter goes on top, and consecutive busy answers keep backing off. */
    uint64_t retry_after_ms = 0;
    if (retry_after_s > 0)
      retry_after_ms = retry_after_s >= (int64_t)(UPLINK_MAX_RETRY_AFTER_MS / 1000u)
                           ? UPLINK_MAX_RETRY_AFTER_MS
                           : (uint64_t)retry_after_s * 1000u;
    uplink__error(u, 0, "POST %s batch %" PRId64 ": %ld, the collector is busy%s%s",
                  u->batches_url, batch_seq, status, text[0] ? ": " : "", text);
    uplink_retry_in(u, backoff_after(&u->backoff, retry_after_ms));
  } else if (status == 408 || status >= 500) {
    uplink__error(u, 0, "POST %s batch %" PRId64 ": %ld%s%s", u->batches_url, batch_seq,
                  status, text[0] ? ": " : "", text);
    uplink_backoff(u);
  } else {
    uplink_on_refused(u, status, text);
  }
  if (ack)
    pos__v1__batch_ack__free_unpacked(ack, NULL);
}

/* ---- timers and the API ------------------------------------------------------------ */

static void uplink_on_push_timer(uv_timer_t *timer)
{
  uplink *u = timer->data;
  if (u->closing)
    return;
  u->status.next_push_ms = 0;
  if (u->state == UPLINK_IDLE) {
    uplink_begin_push(u, u->status.batches_sent || u->started ? "interval" : "start");
    u->started = 1;
  } else if (u->state == UPLINK_BACKING_OFF) {
    u->state = UPLINK_SENDING;
    uplink_resume(u);
  }
}

void uplink_push_now(uplink *u, const char *why)
{
  if (!u || u->closing)
    return;
  switch (u->state) {
  case UPLINK_IDLE:
  case UPLINK_BACKING_OFF:
    uplink_begin_push(u, why);
    break;
  case UPLINK_SENDING:
    log_info("uplink", "push", "why=%s queued=1", why);
    u->push_again = 1;
    break;
  case UPLINK_OFF:
    break;
  }
}

void uplink_get_status(const uplink *u, struct uplink_status *status)
{
  *status = u->status;
  status->state = u->state;
  status->consecutive_failures = u->backoff.failures;
  status->max_batch_sales = uplink_max_sales(u);
  status->max_batch_bytes = uplink_max_bytes(u);
}

static void uplink_on_handle_closed(uv_handle_t *handle)
{
  uplink *u = handle->data;
  u->open_handles--;
  uplink__maybe_free(u);
}

static void uplink_on_http_closed(void *arg)
{
  uplink *u = arg;
  u->open_handles--;
  uplink__maybe_free(u);
}

void uplink__maybe_free(uplink *u)
{
  if (!u->closing || u->open_handles || u->op_busy || u->replay.op_busy || u->command_ops)
    return;
  uplink_free_sending(u);
  free(u->replay.sending.body);
  free(u->heartbeat_body);
  free(u->url);
  free(u->batches_url);
  free(u->heartbeat_url);
  free(u->journal_path);
  free(u);
}

/* "https://host:port" + path, without a doubled slash. */
static char *uplink_join(const char *base, const char *path)
{
  size_t len = strlen(base);
  char *joined;
  while (len > 0 && base[len - 1] == '/')
    len--;
  joined = malloc(len + strlen(path) + 1);
  if (!joined)
    return NULL;
  memcpy(joined, base, len);
  memcpy(joined + len, path, strlen(path) + 1);
  return joined;
}

/* Latency buckets in seconds: a LAN round trip is milliseconds, a batch the
 * collector holds until Kafka acknowledged it can take produce_timeout. */
static const double uplink_ack_buckets[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                            2.5,  5,     10,   20,  30,   60};

static void uplink_metrics_init(struct uplink_metrics *m)
{
  metrics_registry *r = metrics_global();

  m->ack_seconds = metrics_series1(
      metrics_histogram(r, "pos_agent_batch_ack_seconds",
                        "Time from posting a batch to the collector's 200 acknowledging it, "
                        "in seconds.",
                        NULL, uplink_ack_buckets,
                        sizeof(uplink_ack_buckets) / sizeof(uplink_ack_buckets[0])),
      NULL);
  m->batches_sent = metrics_series1(
      metrics_counter(r, "pos_agent_batches_sent_total",
                      "Batch posts attempted (a retry of the same batch counts again).", NULL),
      NULL);
  m->batches_acked = metrics_series1(
      metrics_counter(r, "pos_agent_batches_acked_total",
                      "Batches the collector acknowledged, recorded in the journal.", NULL),
      NULL);
  m->errors = metrics_counter(
      r, "pos_agent_uplink_errors_total",
      "Batch posts that failed, by reason (network, collector_busy, another_instance, "
      "batch_seq_conflict, too_large, forbidden, collector_error_<status>, "
      "refused_<status>, request_not_started).",
      "reason");
}

/* The firmware's name and version, from os-release, for heartbeats. */
static void uplink_read_firmware_version(char *out, size_t out_size)
{
  FILE *file = fopen("/etc/os-release", "r");
  char line[256];
  out[0] = '\0';
  if (!file)
    return;
  while (fgets(line, sizeof(line), file)) {
    char *value;
    if (strncmp(line, "PRETTY_NAME=", 12) != 0)
      continue;
    value = line + 12;
    value[strcspn(value, "\r\n")] = '\0';
    if (value[0] == '"') {
      value++;
      value[strcspn(value, "\"")] = '\0';
    }
    if (snprintf(out, out_size, "%s", value) >= (int)out_size)
      out[out_size - 1] = '\0'; /* a long name is cut; it is for people */
    break;
  }
  fclose(file);
}

uplink *uplink_create(uv_loop_t *loop, journal *j, const struct uplink_options *options,
                      char *err, size_t err_size)
{
  struct uplink_http_options http_options = {
      options->cert_file,          options->key_file,
      options->ca_file,            options->connect_timeout_ms,
      options->request_timeout_ms, UPLINK_MAX_RESPONSE,
      "uplink",
  };
  struct journal_stats stats;
  uplink *u;

  if (!options->url || !options->url[0]) {
    snprintf(err, err_size, "the uplink needs [uplink] url");
    return NULL;
  }
  u = calloc(1, sizeof(*u));
  if (!u) {
    snprintf(err, err_size, "out of memory");
    return NULL;
  }
  u->loop = loop;
  uplink_metrics_init(&u->metrics);
  u->journal = j;
  u->url = strdup(options->url);
  u->batches_url = uplink_join(options->url, "/v1/batches");
  u->heartbeat_url = uplink_join(options->url, "/v1/heartbeat");
  u->journal_path = strdup(options->journal_path ? options->journal_path : "");
  if (!u->url || !u->batches_url || !u->heartbeat_url || !u->journal_path) {
    snprintf(err, err_size, "out of memory");
    goto fail;
  }
  if (batcher_identity_init(&u->identity, options->store_id ? options->store_id : "",
                            options->device_id ? options->device_id : "",
                            options->zstd_level)) {
    snprintf(err, err_size, "[agent] store_id and device_id must be at most %d characters",
             BATCHER_ID_MAX);
    goto fail;
  }
  journal_get_stats(j, &stats);
  memcpy(u->identity_journal_id, stats.journal_id, sizeof(u->identity_journal_id));
  uplink_read_firmware_version(u->firmware_version, sizeof(u->firmware_version));
  u->interval_ms = options->interval_ms;
  u->jitter_ms = options->jitter_ms;
  u->heartbeat_interval_ms = options->heartbeat_interval_ms;
  u->replay_rate = options->replay_rate > 0 ? options->replay_rate : 0;
  u->backoff_max_ms = options->backoff_max_ms;
  u->config_max_sales = u->max_sales = options->max_batch_sales ? options->max_batch_sales : 1;
  u->config_max_bytes = u->max_bytes = options->max_batch_bytes;
  u->max_decoded = PROTO_DEFAULT_MAX_DECODED;
  backoff_init(&u->backoff, (uint64_t)options->backoff_min_ms, (uint64_t)options->backoff_max_ms,
               options->random_seed);
  u->cursor = stats.acked_batch_seq + 1;

  u->http = uplink_http_create(loop, &http_options, err, err_size);
  if (!u->http)
    goto fail;
  u->open_handles = 1;
  uv_timer_init(loop, &u->push_timer);
  uv_timer_init(loop, &u->heartbeat_timer);
  u->push_timer.data = u->heartbeat_timer.data = u;
  u->open_handles += 2;

  log_info("uplink", "started",
           "url=%s interval_ms=%" PRId64 " jitter_ms=%" PRId64 " heartbeat_interval_ms=%" PRId64
           " next_batch_seq=%" PRId64 " unsent=%llu",
           u->url, u->interval_ms, u->jitter_ms, u->heartbeat_interval_ms, u->cursor,
           (unsigned long long)stats.sales_unsent);
  /* The first push (whatever was left unsent before a restart) after a
   * random part of the jitter, so a whole chain powering up at once does
   * not arrive in the same second. */
  uplink_schedule_next(u, backoff_random(&u->backoff, (uint64_t)u->jitter_ms));
  uplink__heartbeat_start(u, 1000 + backoff_random(&u->backoff, 4000));
  uplink__replay_init(u);
  /* What head office asked before a restart goes on (never from scratch). */
  uplink__commands_resume(u);
  return u;
fail:
  free(u->url);
  free(u->batches_url);
  free(u->heartbeat_url);
  free(u->journal_path);
  free(u);
  return NULL;
}

void uplink_close(uplink *u)
{
  if (!u || u->closing)
    return;
  u->closing = 1;
  log_info("uplink", "stopping", "state=%s", uplink_state_name(u->state));
  /* A batch in flight is abandoned: it is stored, and the next run resends
   * it byte for byte; the collector answers a duplicate if it got it. */
  if (u->batch_busy) {
    uplink_http_cancel(u->http, &u->batch_req);
    u->batch_busy = 0;
  }
  if (u->heartbeat_busy) {
    uplink_http_cancel(u->http, &u->heartbeat_req);
    u->heartbeat_busy = 0;
  }
  uplink__replay_close(u);
  uplink_http_close(u->http, uplink_on_http_closed, u);
  u->http = NULL;
  uv_timer_stop(&u->push_timer);
  uv_timer_stop(&u->heartbeat_timer);
  uv_close((uv_handle_t *)&u->push_timer, uplink_on_handle_closed);
  uv_close((uv_handle_t *)&u->heartbeat_timer, uplink_on_handle_closed);
}
