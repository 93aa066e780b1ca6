/*
 * ingest.c - the loop side of the exactly-once path: batches in, records
 * produced, delivery reports folded into the state, acknowledgements out;
 * heartbeats; checkpoints; and the switch to a rebuild after any delivery
 * doubt. See ingest.h for the rules and ingest_int.h for the threads.
 *
 * Delivery reports reach the loop without polling: librdkafka writes a byte
 * to a pipe whenever its main queue gets events
 * (rd_kafka_queue_io_event_enable), a uv_poll_t on the pipe's read end
 * serves them with rd_kafka_poll(rk, 0). A 50 ms tick enforces deadlines
 * and, as a backstop, polls too.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "ingest/ingest_int.h"
#include "kafka/ownership.h"
#include "platform/clock.h"
#include "platform/log.h"
#include "platform/metrics.h"
#include "proto/codec.h"

#define INGEST_TICK_MS 50
/* Lateness of the tick is kept per window of this length (the most of this one and the last). */
#define INGEST_LATE_WINDOW_MS 5000
/* From this lateness on (and a quarter of produce_timeout), a 503 names the collector's CPU
 * rather than Kafka as the wait: a stall of that share of a store's wait is the
 * bottleneck, not a busy moment. */
#define INGEST_LATE_BUSY_MS 200
#define INGEST_DEFAULT_CHECKPOINT_MS 10000
#define INGEST_DEFAULT_PRODUCE_TIMEOUT_MS 10000
#define INGEST_DEFAULT_PARTITIONS 4
#define INGEST_RETRY_REBUILDING_S 2
#define INGEST_RETRY_OVERLOADED_S 1
#define INGEST_RETRY_KAFKA_S 5
#define INGEST_RETRY_ANOTHER_S 1 /* another instance's store: at once, on a new connection */
#define INGEST_LOG_LINES_PER_BATCH 5
#define INGEST_AUX_MESSAGE_TIMEOUT_MS 30000
#define INGEST_STR2(x) #x
#define INGEST_STR(x) INGEST_STR2(x)

struct ingest_batch {
  struct ingest_batch *prev, *next;
  ingest *in;
  struct ingest_journal *journal;
  Pos__V1__Batch *batch;
  char store_id[INGEST_STORE_ID_MAX + 1];
  ingest_done_fn done;
  void *arg;
  uint64_t started_ms;
  uint64_t deadline_ms;
  struct ingest_record *records;
  size_t record_count;
  size_t pending;    /* records without a delivery report */
  int producing;     /* still inside the produce loop */
  int failed;        /* a record was not produced or not delivered */
  int answered;      /* done was called (a timeout answers early) */
  unsigned waiters;  /* retries of this journal waiting for it */
  struct ingest_result result;
  char failure[200];
  /* Formatted once per batch, for every record's headers. */
  char journal_hex[33];
  char batch_seq_text[24];
  size_t batch_seq_len;
  /* A sale packed here is copied by librdkafka with its record (one
   * allocation per record, librdkafka's, instead of one more of ours). */
  uint8_t *value;
  size_t value_cap;
};

struct ingest_waiter {
  struct ingest_waiter *prev, *next;
  struct ingest_journal *journal;
  char store_id[INGEST_STORE_ID_MAX + 1];
  Pos__V1__Batch *batch;
  ingest_done_fn done;
  void *arg;
  uint64_t deadline_ms;
};

struct ingest_heartbeat {
  struct ingest_heartbeat *prev, *next;
  ingest_done_fn done;
  void *arg;
  uint64_t deadline_ms;
  int answered;
  struct ingest_record record;
};

enum ingest_checkpoint_stage { INGEST_CK_PARTS = 1, INGEST_CK_MANIFEST, INGEST_CK_TOMBSTONES };

struct ingest_rebase {
  struct ingest_rebase *prev, *next;
  ingest_done_fn done;
  void *arg;
  char approved_by[INGEST_STORE_ID_MAX + 1];
  char store_id[INGEST_STORE_ID_MAX + 1];
  uint8_t journal_id[16];
  uint64_t from_batch_seq;
  struct ingest_record record;
};

struct ingest_checkpoint {
  uint64_t generation;
  uint32_t parts;
  int32_t partition;
  uint64_t started_ms;
  size_t pending, bytes, journals, tombstones;
  int stage;         /* enum ingest_checkpoint_stage */
  int closing;       /* the manifest says closed_cleanly */
  int manifest_only; /* a new manifest for the live generation */
  int producing;     /* still inside the parts loop: a report must not advance */
  int failed;
  struct ingest_record *records; /* the parts' records, then the tombstones' */
  struct ingest_record manifest_record;
};

static void ingest_reply(ingest_done_fn done, void *arg, struct ingest_result *result)
{
  if (done)
    done(arg, result);
}

LOG_PRINTF(5, 0)
static void ingest_reply_unavailable_v(ingest_done_fn done, void *arg, int code, int retry_after_s,
                                       const char *fmt, va_list ap)
{
  struct ingest_result result;

  memset(&result, 0, sizeof(result));
  result.outcome = INGEST_UNAVAILABLE;
  result.code = code;
  result.retry_after_s = retry_after_s;
  vsnprintf(result.message, sizeof(result.message), fmt, ap);
  ingest_reply(done, arg, &result);
}

LOG_PRINTF(4, 5)
static void ingest_reply_unavailable(ingest_done_fn done, void *arg, int retry_after_s,
                                     const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  ingest_reply_unavailable_v(done, arg, 0, retry_after_s, fmt, ap);
  va_end(ap);
}

/* 503 with BATCH_ACK_CODE_ANOTHER_INSTANCE: the connection closes with it (routes.c), so the
 * agent's retry opens a new one, which the load balancer may send to the store's owner. */
LOG_PRINTF(3, 4)
static void ingest_reply_another_instance(ingest_done_fn done, void *arg, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  ingest_reply_unavailable_v(done, arg, POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_ANOTHER_INSTANCE,
                             INGEST_RETRY_ANOTHER_S, fmt, ap);
  va_end(ap);
}

/* Notes how late this tick fires: the loop was busy that long. */
static void ingest_note_lateness(ingest *in, uint64_t now)
{
  uint64_t late = in->tick_last_ms && now > in->tick_last_ms + INGEST_TICK_MS
                      ? now - in->tick_last_ms - INGEST_TICK_MS
                      : 0;

  in->tick_last_ms = now;
  if (now - in->late_window_ms >= INGEST_LATE_WINDOW_MS) {
    in->late_prev_ms = in->late_max_ms;
    in->late_max_ms = 0;
    in->late_window_ms = now;
  }
  if (late > in->late_max_ms)
    in->late_max_ms = late;
}

uint64_t ingest_loop_late_ms(const ingest *in)
{
  return in->late_max_ms > in->late_prev_ms ? in->late_max_ms : in->late_prev_ms;
}

/*
 * Writes why a batch waits (for a 503): Kafka's acknowledgements, or this
 * collector's CPU when its event loop runs late (the acknowledgements are
 * then there and not served yet; more instances or cores are the remedy,
 * not Kafka).
 */
static void ingest_wait_reason(const ingest *in, char *out, size_t out_size)
{
  uint64_t late = ingest_loop_late_ms(in);
  uint64_t busy = in->produce_timeout_ms / 4 > INGEST_LATE_BUSY_MS ? in->produce_timeout_ms / 4
                                                                   : INGEST_LATE_BUSY_MS;

  if (late >= busy)
    snprintf(out, out_size,
             "the collector is short of CPU: its event loop runs up to %" PRIu64 " ms late "
             "(more collector instances or cores are the remedy, not Kafka)",
             late);
  else
    snprintf(out, out_size, "Kafka has not acknowledged them yet");
}

static const char *ingest_kind_text(const Pos__V1__BatchEnvelope *envelope)
{
  return envelope->kind == POS__V1__BATCH_KIND__BATCH_KIND_REPLAY ? "replay" : "live";
}

static const char *ingest_resync_of(const Pos__V1__BatchEnvelope *envelope)
{
  if (envelope->kind == POS__V1__BATCH_KIND__BATCH_KIND_REPLAY && envelope->resync_id)
    return envelope->resync_id;
  return "";
}

/* ------------------------------------------------------------------------ */
/* The producer                                                              */
/* ------------------------------------------------------------------------ */

static void ingest_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque);

/* Served on the loop by rd_kafka_poll. */
static void ingest_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
  ingest *in = opaque;
  char quoted[512];

  if (err == RD_KAFKA_RESP_ERR__FATAL && rk != in->rk_aux) {
    char why[512];
    rd_kafka_resp_err_t fatal = rd_kafka_fatal_error(rk, why, sizeof(why));
    log_error("ingest", "kafka_fatal", "error=%s reason=%s action=rebuild_state",
              rd_kafka_err2name(fatal), log_quote(why, quoted, sizeof(quoted)));
    in->doubt = 1;
    return;
  }
  /* Transport errors (broker down, all brokers down) are retried by
   * librdkafka; they are worth a line, not a rebuild. */
  log_warn("ingest", "kafka_error", "error=%s reason=%s", rd_kafka_err2name(err),
           log_quote(reason, quoted, sizeof(quoted)));
}

/* 1 for the topics the aux producer writes (heartbeats, checkpoints). */
static int ingest_topic_aux(enum kafka_topic topic)
{
  return topic == KAFKA_TOPIC_STATUS || topic == KAFKA_TOPIC_STATE ||
         topic == KAFKA_TOPIC_CONTROL;
}

/*
 * The data producer (aux 0: kafka_producer_conf, idempotent and gapless) or
 * the aux producer (aux 1: acks=all, not idempotent, records fail after
 * INGEST_AUX_MESSAGE_TIMEOUT_MS). Both wake the loop through wake_fds.
 */
static rd_kafka_t *ingest_producer_make(ingest *in, int aux, char *err, size_t err_size)
{
  rd_kafka_conf_t *conf = kafka_producer_conf(in->brokers, in->kafka_debug, err, err_size);
  rd_kafka_queue_t *main_queue;
  rd_kafka_t *rk;
  char why[512], timeout[24];

  if (!conf)
    return NULL;
  snprintf(timeout, sizeof(timeout), "%" PRIu64, in->request_timeout_ms);
  if (kafka_conf_set(conf, "request.timeout.ms", timeout, err, err_size) ||
      (aux && (kafka_conf_set(conf, "enable.gapless.guarantee", "false", err, err_size) ||
               kafka_conf_set(conf, "enable.idempotence", "false", err, err_size) ||
               kafka_conf_set(conf, "message.timeout.ms",
                              INGEST_STR(INGEST_AUX_MESSAGE_TIMEOUT_MS), err, err_size) ||
               kafka_conf_set(conf, "client.id", "pos-collector-aux", err, err_size)))) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  rd_kafka_conf_set_opaque(conf, in);
  rd_kafka_conf_set_dr_msg_cb(conf, ingest_dr_cb);
  rd_kafka_conf_set_error_cb(conf, ingest_error_cb);
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, err_size, "cannot create the Kafka producer for %s: %s", in->brokers, why);
    return NULL;
  }
  main_queue = rd_kafka_queue_get_main(rk);
  rd_kafka_queue_io_event_enable(main_queue, in->wake_fds[1], "k", 1);
  rd_kafka_queue_destroy(main_queue);
  return rk;
}

rd_kafka_t *ingest__producer_new(ingest *in, char *err, size_t err_size)
{
  return ingest_producer_make(in, 0, err, err_size);
}

static int ingest_topics_open(ingest *in)
{
  for (int t = 0; t < KAFKA_TOPIC_COUNT; t++) {
    if (ingest_topic_aux((enum kafka_topic)t))
      continue;
    in->rkt[t] = rd_kafka_topic_new(in->rk, in->topics[t], NULL);
    if (!in->rkt[t])
      return -1;
  }
  return 0;
}

static int ingest_aux_topics_open(ingest *in)
{
  for (int t = 0; t < KAFKA_TOPIC_COUNT; t++) {
    if (!ingest_topic_aux((enum kafka_topic)t))
      continue;
    in->rkt_aux[t] = rd_kafka_topic_new(in->rk_aux, in->topics[t], NULL);
    if (!in->rkt_aux[t])
      return -1;
  }
  return 0;
}

static void ingest_aux_close(ingest *in)
{
  for (int t = 0; t < KAFKA_TOPIC_COUNT; t++) {
    if (in->rkt_aux[t])
      rd_kafka_topic_destroy(in->rkt_aux[t]);
    in->rkt_aux[t] = NULL;
  }
  if (in->rk_aux)
    rd_kafka_destroy(in->rk_aux);
  in->rk_aux = NULL;
}

static void ingest_topics_close(ingest *in)
{
  for (int t = 0; t < KAFKA_TOPIC_COUNT; t++) {
    if (in->rkt[t])
      rd_kafka_topic_destroy(in->rkt[t]);
    in->rkt[t] = NULL;
  }
}

/* Instrumentation: a record Kafka refused, by topic and librdkafka's error
 * name (pos_collector_kafka_produce_errors_total). Error paths only: the
 * family's lookup takes the registry's mutex. */
static void ingest_count_produce_error(const ingest *in, int topic, rd_kafka_resp_err_t err)
{
  const char *values[2] = {in->topics[topic], rd_kafka_err2name(err)};
  metrics_inc(metrics_series_get(
      metrics_counter(metrics_global(), "pos_collector_kafka_produce_errors_total",
                      "Records Kafka refused, at produce or in their delivery report, by topic "
                      "and librdkafka error (purges at shutdown or after a doubt not counted).",
                      "topic,error"),
      values));
}

/* Whose `value` is, once ingest_produce_value has it. */
enum ingest_value {
  INGEST_VALUE_TAKE,   /* malloc'd: librdkafka frees it */
  INGEST_VALUE_COPY,   /* librdkafka copies it: it stays the caller's */
  INGEST_VALUE_BORROW, /* lent until the record's delivery report: a batch's arena, which is
                        * freed only once every record of it is reported (or the producer
                        * is gone); saves a malloc, a copy and a free per sale */
};

/*
 * Produces one record. Takes `headers` in every case, and `value` as
 * `whose` says. Returns 0, or -1 with `err` set (nothing was produced).
 */
static int ingest_produce_value(ingest *in, enum kafka_topic topic, int32_t partition,
                                const char *key, uint8_t *value, size_t len,
                                enum ingest_value whose,
                                rd_kafka_headers_t *headers, struct ingest_record *record,
                                char *err, size_t err_size)
{
  rd_kafka_resp_err_t kerr;
  int aux = ingest_topic_aux(topic);
  /* Plain variables: librdkafka's V_ macros cast their argument unparenthesised. */
  rd_kafka_t *rk = aux ? in->rk_aux : in->rk;
  rd_kafka_topic_t *rkt = aux ? in->rkt_aux[topic] : in->rkt[topic];

  kerr = rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkt),
                           RD_KAFKA_V_PARTITION(partition),
                           RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(value, len),
                           RD_KAFKA_V_MSGFLAGS(whose == INGEST_VALUE_TAKE   ? RD_KAFKA_MSG_F_FREE
                                               : whose == INGEST_VALUE_COPY ? RD_KAFKA_MSG_F_COPY
                                                                            : 0),
                           RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(record),
                           RD_KAFKA_V_END);
  if (kerr) {
    ingest_count_produce_error(in, topic, kerr);
    /* On failure the value and headers are still ours. */
    if (whose == INGEST_VALUE_TAKE)
      free(value);
    if (headers)
      rd_kafka_headers_destroy(headers);
    snprintf(err, err_size, "Kafka refused a record for %.100s: %s", in->topics[topic],
             rd_kafka_err2str(kerr));
    if (kerr == RD_KAFKA_RESP_ERR__FATAL && !aux)
      in->doubt = 1;
    return -1;
  }
  record->topic = (uint8_t)topic;
  if (aux)
    in->outstanding_aux++;
  else
    in->outstanding++;
  return 0;
}

/* ingest_produce_value taking `value` (malloc'd). */
static int ingest_produce(ingest *in, enum kafka_topic topic, int32_t partition,
                          const char *key, uint8_t *value, size_t len,
                          rd_kafka_headers_t *headers, struct ingest_record *record, char *err,
                          size_t err_size)
{
  return ingest_produce_value(in, topic, partition, key, value, len, INGEST_VALUE_TAKE, headers,
                              record, err, err_size);
}

static void ingest_header(rd_kafka_headers_t *headers, const char *name, const char *value)
{
  rd_kafka_header_add(headers, name, -1, value, -1);
}

/* `value` in decimal into out[24], NUL-terminated; returns its length (no printf per record). */
static size_t ingest_u64_text(uint64_t value, char *out)
{
  char reversed[24];
  size_t n = 0;

  do {
    reversed[n++] = (char)('0' + value % 10);
    value /= 10;
  } while (value);
  for (size_t i = 0; i < n; i++)
    out[i] = reversed[n - 1 - i];
  out[n] = '\0';
  return n;
}

static void ingest_header_u64(rd_kafka_headers_t *headers, const char *name, uint64_t value)
{
  char text[24];
  size_t len = ingest_u64_text(value, text);
  rd_kafka_header_add(headers, name, -1, text, (ssize_t)len);
}

/* The headers every record of a batch carries (ARCHITECTURE.md, topics). */
static rd_kafka_headers_t *ingest_batch_headers(const struct ingest_batch *b)
{
  const Pos__V1__BatchEnvelope *envelope = b->batch->envelope;
  rd_kafka_headers_t *headers = rd_kafka_headers_new(8);

  rd_kafka_header_add(headers, "journal_id", 10, b->journal_hex, 32);
  rd_kafka_header_add(headers, "batch_seq", 9, b->batch_seq_text, (ssize_t)b->batch_seq_len);
  ingest_header(headers, "kind", ingest_kind_text(envelope));
  ingest_header(headers, "device_id", envelope->device_id ? envelope->device_id : "");
  if (b->journal->resync_id[0])
    ingest_header(headers, "resync_id", b->journal->resync_id);
  return headers;
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                   */
/* ------------------------------------------------------------------------ */

static void ingest_dispatch(ingest *in, const char *store_id, Pos__V1__Batch *batch,
                            ingest_done_fn done, void *arg);
static void ingest_check_doubt(ingest *in);
static void ingest_fleet_check(ingest *in);
static void ingest_fleet_gain(ingest *in);
static int ingest_lease_behind(const ingest *in);

static void ingest_batch_free(struct ingest_batch *b)
{
  proto_batch_free(b->batch);
  free(b->value);
  free(b->records);
  free(b);
}

/* Takes `w` out of the list of batches waiting for an in-flight attempt. */
static void ingest_waiter_unlink(ingest *in, struct ingest_waiter *w)
{
  if (w->prev)
    w->prev->next = w->next;
  else
    in->waiters_head = w->next;
  if (w->next)
    w->next->prev = w->prev;
  else
    in->waiters_tail = w->prev;
  in->waiter_count--;
}

/* Hands the retries that waited for `journal`'s batch back to dispatch, in arrival order. */
static void ingest_release_waiters(ingest *in, struct ingest_journal *journal)
{
  struct ingest_waiter *ready = NULL, **tail = &ready;

  for (struct ingest_waiter *w = in->waiters_head, *next; w; w = next) {
    next = w->next;
    if (w->journal != journal)
      continue;
    ingest_waiter_unlink(in, w);
    w->next = NULL;
    *tail = w;
    tail = &w->next;
  }
  while (ready) {
    struct ingest_waiter *w = ready;
    ready = w->next;
    ingest_dispatch(in, w->store_id, w->batch, w->done, w->arg);
    free(w);
  }
}

/* Every record of `b` has its delivery report: settle the batch. */
static void ingest_batch_finish(struct ingest_batch *b)
{
  ingest *in = b->in;
  struct ingest_journal *journal = b->journal;
  const Pos__V1__BatchEnvelope *envelope = b->batch->envelope;
  struct ingest_result result = b->result;
  char hex[33];

  assert(b->pending == 0 && !b->producing);
  assert(journal->inflight == b);
  if (b->prev)
    b->prev->next = b->next;
  else
    in->batches = b->next;
  if (b->next)
    b->next->prev = b->prev;
  in->batch_count--;
  journal->inflight = NULL;
  proto_journal_id_format(journal->journal_id, hex);

  if (!b->failed) {
    if (envelope->batch_seq > journal->accepted_batch_seq)
      journal->accepted_batch_seq = envelope->batch_seq;
    in->dirty = 1;
    result.outcome = INGEST_ACCEPTED;
    result.acked_batch_seq = journal->accepted_batch_seq;
    result.message[0] = '\0';
    log_debug("ingest", "batch_accepted",
              "store=%s journal=%s kind=%s batch_seq=%" PRIu64 " produced=%u dead_lettered=%u "
              "skipped=%u deltas_produced=%u deltas_dead_lettered=%u deltas_skipped=%u "
              "ms=%" PRIu64 "%s",
              journal->store_id, hex, ingest_kind_text(envelope), envelope->batch_seq,
              result.produced, result.dead_lettered, result.skipped, result.deltas_produced,
              result.deltas_dead_lettered, result.deltas_skipped,
              clock_mono_ms() - b->started_ms, b->answered ? " answered_late=1" : "");
  } else {
    char quoted[256];
    result.outcome = INGEST_UNAVAILABLE;
    result.acked_batch_seq = journal->accepted_batch_seq;
    result.retry_after_s = INGEST_RETRY_KAFKA_S;
    snprintf(result.message, sizeof(result.message), "%s", b->failure);
    log_warn("ingest", "batch_failed", "store=%s journal=%s batch_seq=%" PRIu64 " error=%s",
             journal->store_id, hex, envelope->batch_seq,
             log_quote(b->failure, quoted, sizeof(quoted)));
  }
  if (!b->answered) {
    b->answered = 1;
    ingest_reply(b->done, b->arg, &result);
  }
  ingest_batch_free(b);
  ingest_release_waiters(in, journal);
}

struct ingest_sale_order {
  uint64_t seq;
  size_t index;
};

static int ingest_sale_order_cmp(const void *a, const void *b)
{
  const struct ingest_sale_order *x = a, *y = b;
  if (x->seq != y->seq)
    return x->seq < y->seq ? -1 : 1;
  return x->index < y->index ? -1 : x->index > y->index;
}

/* What ingest_batch_start must know of a sale before it reads the sale itself. */
enum {
  INGEST_NOTE_NO_STORE = 1,     /* its store_id is empty: the certificate's goes in */
  INGEST_NOTE_OTHER_STORE = 2,  /* its store_id is another store's */
  INGEST_NOTE_CHECK_FAILED = 4, /* proto_sale_check refuses it */
  INGEST_NOTE_CARRIED = 8,      /* it names journals it was carried over from */
};

/*
 * A batch's sales as ingest_batch_start goes through them, worked out on a
 * decode worker (ingest_prepare_batch) where the sales were just unpacked:
 * the loop then reads a seq and a byte per sale, in two arrays, instead of
 * each sale's struct and strings (cold in the loop's cache: reading them
 * and proto_sale_check were a quarter of the loop's time per sale).
 */
struct ingest_notes {
  char store_id[INGEST_STORE_ID_MAX + 1]; /* the store they were worked out for */
  size_t count;                           /* batch->n_sales */
  size_t carried;                         /* sales with INGEST_NOTE_CARRIED */
  uint64_t *seq;                          /* each sale's seq, in batch order */
  size_t *order;  /* indexes in seq order (ties in batch order); NULL: the batch's order */
  uint8_t *flags; /* INGEST_NOTE_*, in batch order */
};

/*
 * The notes of `batch`'s sales from store `store_id`, in the batch's
 * memory when `in_batch` (a pooled batch: freed with it), else malloc'd
 * (the caller frees). NULL when out of memory. Any thread.
 */
static struct ingest_notes *ingest_notes_build(Pos__V1__Batch *batch, const char *store_id,
                                               int in_batch)
{
  size_t n = batch->n_sales, each = sizeof(uint64_t) + sizeof(size_t) + 1;
  struct ingest_notes *notes;
  struct ingest_sale_order *sorting;

  if (strlen(store_id) > INGEST_STORE_ID_MAX || n > (SIZE_MAX - sizeof(*notes)) / each)
    return NULL;
  notes = in_batch ? proto_batch_alloc(batch, sizeof(*notes) + n * each)
                   : malloc(sizeof(*notes) + n * each);
  if (!notes)
    return NULL;
  snprintf(notes->store_id, sizeof(notes->store_id), "%s", store_id);
  notes->count = n;
  notes->carried = 0;
  notes->seq = (uint64_t *)(void *)(notes + 1);
  notes->order = (size_t *)(void *)(notes->seq + n);
  notes->flags = (uint8_t *)(notes->order + n);
  for (size_t i = 0; i < n; i++) {
    const Pos__V1__Sale *sale = batch->sales[i];
    char field[64], why[200];
    uint8_t flags = 0;

    notes->seq[i] = sale->seq;
    if (!sale->store_id || !sale->store_id[0])
      flags |= INGEST_NOTE_NO_STORE;
    else if (strcmp(sale->store_id, store_id) != 0)
      flags |= INGEST_NOTE_OTHER_STORE;
    if (proto_sale_check(sale, field, sizeof(field), why, sizeof(why)))
      flags |= INGEST_NOTE_CHECK_FAILED;
    if (sale->n_carried_from) {
      flags |= INGEST_NOTE_CARRIED;
      notes->carried++;
    }
    notes->flags[i] = flags;
  }
  /* The agent sends its sales in seq order: sorted only when they are not. */
  for (size_t i = 1; i < n; i++) {
    if (notes->seq[i - 1] <= notes->seq[i])
      continue;
    sorting = malloc(n * sizeof(*sorting));
    if (!sorting) {
      if (!in_batch)
        free(notes);
      return NULL;
    }
    for (size_t j = 0; j < n; j++) {
      sorting[j].seq = notes->seq[j];
      sorting[j].index = j;
    }
    qsort(sorting, n, sizeof(*sorting), ingest_sale_order_cmp);
    for (size_t j = 0; j < n; j++)
      notes->order[j] = sorting[j].index;
    free(sorting);
    return notes;
  }
  notes->order = NULL;
  return notes;
}

int ingest_prepare_batch(Pos__V1__Batch *batch, const char *store_id)
{
  struct ingest_notes *notes;

  /* Only a pooled batch keeps a note (and memory of proto_batch_alloc). */
  if (!batch || !store_id || proto_batch_set_note(batch, NULL) != 0)
    return -1;
  notes = ingest_notes_build(batch, store_id, 1);
  if (!notes)
    return -1;
  return proto_batch_set_note(batch, notes);
}

/*
 * Produces sale `index` of the batch to the sales (or replay) topic, or to
 * the DLQ with `why`: the bytes the store sent when the batch kept them
 * and the sale is `unchanged`, else the sale packed again.
 */
static int ingest_produce_sale(ingest *in, struct ingest_batch *b, size_t index, uint64_t seq,
                               int unchanged, enum ingest_stream stream, int tracked,
                               const char *field, const char *why)
{
  struct ingest_record *record = &b->records[b->record_count];
  enum kafka_topic topic = ingest__stream_topic(b->journal, stream);
  const uint8_t *wire;
  size_t len;
  rd_kafka_headers_t *headers;
  enum ingest_value whose = INGEST_VALUE_BORROW; /* the sale's bytes in the batch's arena */

  /* Packed again into b->value, reused for the next sale: librdkafka copies it. */
  if (!unchanged || !proto_batch_sale_wire(b->batch, index, &wire, &len)) {
    Pos__V1__Sale *sale = b->batch->sales[index];
    whose = INGEST_VALUE_COPY;
    len = pos__v1__sale__get_packed_size(sale);
    if (len + 1 > b->value_cap) {
      size_t cap = len + 1 > 4096 ? 2 * (len + 1) : 4096;
      free(b->value);
      b->value_cap = 0;
      b->value = malloc(cap);
      if (!b->value) {
        snprintf(b->failure, sizeof(b->failure), "out of memory producing sale seq %" PRIu64, seq);
        return -1;
      }
      b->value_cap = cap;
    }
    pos__v1__sale__pack(sale, b->value);
    wire = b->value;
  }
  headers = ingest_batch_headers(b);
  ingest_header_u64(headers, "seq", seq);
  if (stream == INGEST_STREAM_DLQ) {
    ingest_header(headers, "reason", why);
    ingest_header(headers, "field", field);
  }
  record->owner = b;
  record->kind = INGEST_REC_BATCH;
  record->stream = (uint8_t)stream;
  record->tracked = (uint8_t)tracked;
  record->pos.seq = seq;
  record->pos.index = 0;
  if (ingest_produce_value(in, topic, RD_KAFKA_PARTITION_UA, b->store_id, (uint8_t *)wire, len,
                           whose, headers, record, b->failure, sizeof(b->failure)))
    return -1;
  b->record_count++;
  b->pending++;
  return 0;
}

/* The journal rows a batch's deltas cover (README, "Inventory deltas"). */
struct ingest_covered {
  uint64_t first_seq, last_seq; /* 0: not said */
};

/*
 * Produces delta `index` (1-based, batch order) of `b` to `stream`'s topic
 * with the batch's headers and the rows it covers. A delta that is not
 * `tracked` goes to the DLQ outside any position (header position=none),
 * with `field` and `why`.
 */
static int ingest_produce_delta(ingest *in, struct ingest_batch *b, Pos__V1__InventoryDelta *delta,
                                uint32_t index, enum ingest_stream stream, int tracked,
                                struct ingest_covered covered, const char *field, const char *why)
{
  enum kafka_topic topic = tracked ? ingest__stream_topic(b->journal, stream) : KAFKA_TOPIC_DLQ;
  struct ingest_record *record = &b->records[b->record_count];
  size_t len;
  uint8_t *value;
  rd_kafka_headers_t *headers;

  /* Downstream reads a delta on its own: make it say whose it is. */
  if ((!delta->store_id || !delta->store_id[0]) &&
      proto_batch_set_string(b->batch, &delta->store_id, b->store_id))
    goto oom;
  if (delta->journal_id.len == 0) {
    /* Lives as long as the batch (its arena when pooled; else freed with the tree). */
    uint8_t *copy = proto_batch_alloc(b->batch, 16);
    if (!copy)
      goto oom;
    memcpy(copy, b->journal->journal_id, 16);
    delta->journal_id.data = copy;
    delta->journal_id.len = 16;
  }
  len = pos__v1__inventory_delta__get_packed_size(delta);
  value = malloc(len + 1);
  if (!value)
    goto oom;
  pos__v1__inventory_delta__pack(delta, value);
  headers = ingest_batch_headers(b);
  ingest_header_u64(headers, "delta_index", index);
  if (covered.last_seq) {
    ingest_header_u64(headers, "first_seq", covered.first_seq);
    ingest_header_u64(headers, "last_seq", covered.last_seq);
  }
  if (why) {
    ingest_header(headers, "reason", why);
    ingest_header(headers, "field", field);
  }
  if (!tracked)
    ingest_header(headers, "position", "none");
  record->owner = b;
  record->kind = INGEST_REC_BATCH;
  record->stream = (uint8_t)stream;
  record->tracked = (uint8_t)tracked;
  record->pos.seq = covered.last_seq;
  record->pos.first = covered.first_seq;
  record->pos.index = index;
  if (ingest_produce(in, topic, RD_KAFKA_PARTITION_UA, b->store_id, value, len, headers, record,
                     b->failure, sizeof(b->failure)))
    return -1;
  b->record_count++;
  b->pending++;
  return 0;
oom:
  snprintf(b->failure, sizeof(b->failure), "out of memory producing inventory delta %u", index);
  return -1;
}

/* The envelope's covered rows, widened by the rows the deltas themselves name. */
static struct ingest_covered ingest_deltas_covered(const Pos__V1__Batch *batch)
{
  struct ingest_covered covered = {batch->envelope->first_seq, batch->envelope->last_seq};

  for (size_t i = 0; i < batch->n_inventory_deltas; i++) {
    const Pos__V1__InventoryDelta *delta = batch->inventory_deltas[i];
    if (delta->first_seq && (!covered.first_seq || delta->first_seq < covered.first_seq))
      covered.first_seq = delta->first_seq;
    if (delta->last_seq > covered.last_seq)
      covered.last_seq = delta->last_seq;
  }
  return covered;
}

/*
 * A sale of `batch` carried over from an earlier journal of the same device
 * (Sale.carried_from) whose row there has its deltas in the log: at or
 * below that journal's inventory position, or any row of a journal an
 * older collector positioned by batch number. The batch's deltas,
 * aggregated over its rows, would count that row's consumption again.
 * Returns that journal and sets *origin, or NULL. Live batches only.
 */
static const struct ingest_journal *
ingest_origin_deltas_in_log(ingest *in, const char *store_id, const char *device_id,
                            const Pos__V1__SaleOrigin *from)
{
  const struct ingest_journal *before =
      from->journal_id.len == 16
          ? ingest__state_find(&in->state, store_id, from->journal_id.data, "")
          : NULL;
  /* As for sales, only the same device's journal holds this row. */
  if (!before || !before->device_id || !device_id || strcmp(before->device_id, device_id) != 0)
    return NULL;
  if (from->seq <= before->streams[INGEST_STREAM_INVENTORY].seq ||
      before->legacy[INGEST_LEGACY_SLOT(INGEST_STREAM_INVENTORY)].seq != 0)
    return before;
  return NULL;
}

static const struct ingest_journal *
ingest_carried_deltas_in_log(ingest *in, const char *store_id, const char *device_id,
                             const Pos__V1__Batch *batch, const Pos__V1__SaleOrigin **origin)
{
  const Pos__V1__BatchEnvelope *envelope = batch->envelope;
  const struct ingest_journal *before;

  for (size_t i = 0; i < batch->n_sales; i++) {
    const Pos__V1__Sale *sale = batch->sales[i];
    for (size_t c = 0; c < sale->n_carried_from; c++) {
      before = ingest_origin_deltas_in_log(in, store_id, device_id, sale->carried_from[c]);
      if (before) {
        *origin = sale->carried_from[c];
        return before;
      }
    }
  }
  /* Adjustments carried over name their earlier places in the envelope. */
  for (size_t i = 0; i < envelope->n_carried_rows; i++) {
    before = ingest_origin_deltas_in_log(in, store_id, device_id, envelope->carried_rows[i]);
    if (before) {
      *origin = envelope->carried_rows[i];
      return before;
    }
  }
  return NULL;
}

/* Where delta `index` goes and why (ingest_batch_deltas). Returns 1 when the
 * log holds it already, else 0 with *stream, *tracked, *field and `why`
 * ("" for a plain delta); `carried_why` is set when carried rows are in. */
static int ingest_delta_route(const struct ingest_batch *b, const char *store_id,
                              const Pos__V1__InventoryDelta *delta, uint32_t index,
                              struct ingest_covered covered, const char *carried_why,
                              enum ingest_stream *stream, int *tracked, const char **field,
                              char *why, size_t why_size)
{
  /* Like a sale, a delta naming another store than the certificate's is
   * dead-lettered, in a stream of its own. */
  int foreign = delta->store_id && delta->store_id[0] && strcmp(delta->store_id, store_id) != 0;
  enum ingest_delta_verdict verdict;

  *stream = foreign ? INGEST_STREAM_DLQ_INVENTORY : INGEST_STREAM_INVENTORY;
  *tracked = 0;
  why[0] = '\0';
  if (covered.first_seq == 0 || covered.last_seq < covered.first_seq) {
    *field = "envelope.first_seq";
    snprintf(why, why_size, "the batch's deltas name no journal rows (envelope and delta "
             "first_seq/last_seq are %" PRIu64 "..%" PRIu64 "): they cannot be positioned",
             covered.first_seq, covered.last_seq);
    return 0;
  }
  verdict = ingest__delta_verdict(b->journal, *stream, b->batch->envelope->batch_seq,
                                  covered.first_seq, covered.last_seq, index);
  if (verdict == INGEST_DELTA_IN_LOG)
    return 1;
  if (verdict == INGEST_DELTA_STRADDLES) {
    *field = "inventory_deltas.first_seq";
    snprintf(why, why_size, "the deltas cover journal rows %" PRIu64 "..%" PRIu64 " but the "
             "log holds deltas up to row %" PRIu64 ": an aggregate cannot be split; counting "
             "it would count rows twice",
             covered.first_seq, covered.last_seq, b->journal->streams[*stream].seq);
    return 0;
  }
  if (carried_why) {
    *field = "sales.carried_from";
    snprintf(why, why_size, "%s", carried_why);
    return 0;
  }
  *tracked = 1;
  *field = foreign ? "inventory_deltas.store_id" : NULL;
  if (foreign)
    snprintf(why, why_size, "inventory delta says store %.64s but the batch comes from "
             "store %.64s", delta->store_id, store_id);
  return 0;
}

/*
 * Produces the batch's inventory deltas that the log does not hold yet
 * (ingest__delta_verdict), each to pos.inventory-deltas.v1, or to the DLQ
 * in a stream of its own when it names another store. Deltas that cannot
 * be positioned (no rows named, rows on both sides of the position, rows
 * carried over whose deltas the log holds under an earlier journal) are
 * dead-lettered outside any position: counting them could count rows
 * twice, dropping them would lose the rest. A replay's deltas go to
 * pos.inventory-deltas.replay.v1, exactly once per resync by the same rule:
 * the live topic counts each row's consumption once, from the live batches.
 */
static void ingest_batch_deltas(ingest *in, struct ingest_batch *b, const char *store_id)
{
  Pos__V1__Batch *batch = b->batch;
  const Pos__V1__BatchEnvelope *envelope = batch->envelope;
  struct ingest_covered covered = ingest_deltas_covered(batch);
  const struct ingest_journal *before;
  const Pos__V1__SaleOrigin *origin = NULL;
  unsigned logged = 0;
  char why[200], carried_why[200] = "", quoted[240], hex[33];

  if (batch->n_inventory_deltas == 0)
    return;
  /* A replay's deltas go to their own topic, positioned in the replay's
   * own stream: rows carried from an earlier journal are a live matter. */
  before = b->journal->resync_id[0]
               ? NULL
               : ingest_carried_deltas_in_log(in, store_id, envelope->device_id, batch, &origin);
  if (before) {
    proto_journal_id_format(before->journal_id, hex);
    snprintf(carried_why, sizeof(carried_why), "the deltas cover rows carried over from "
             "journal %s, whose deltas of its row %" PRIu64 " are in the log already: counting "
             "them could count that row twice", hex, origin->seq);
  }
  for (size_t i = 0; i < batch->n_inventory_deltas && !b->failed; i++) {
    Pos__V1__InventoryDelta *delta = batch->inventory_deltas[i];
    uint32_t index = (uint32_t)(i + 1);
    enum ingest_stream stream;
    const char *field;
    int tracked;

    if (ingest_delta_route(b, store_id, delta, index, covered,
                           carried_why[0] ? carried_why : NULL, &stream, &tracked, &field, why,
                           sizeof(why))) {
      b->result.deltas_skipped++;
      continue;
    }
    if (ingest_produce_delta(in, b, delta, index, stream, tracked, covered, field,
                             why[0] ? why : NULL)) {
      b->failed = 1;
      break;
    }
    if (!why[0]) {
      b->result.deltas_produced++;
      if (in->test_kill_after_delta_records &&
          ++in->test_delta_records == in->test_kill_after_delta_records) {
        /* What lands is exactly the records produced so far. */
        log_warn("ingest", "test_hook_kill", "store=%s batch_seq=%" PRIu64 " delta_index=%u",
                 store_id, envelope->batch_seq, index);
        rd_kafka_flush(in->rk, 10000);
        raise(SIGKILL);
      }
      continue;
    }
    b->result.deltas_dead_lettered++;
    if (logged++ < INGEST_LOG_LINES_PER_BATCH)
      log_event(tracked ? LOG_WARN : LOG_ERROR, "ingest", "delta_dead_lettered",
                "store=%s batch_seq=%" PRIu64 " delta_index=%u first_seq=%" PRIu64
                " last_seq=%" PRIu64 " field=%s reason=%s",
                store_id, envelope->batch_seq, index, covered.first_seq, covered.last_seq,
                field, log_quote(why, quoted, sizeof(quoted)));
  }
}

/*
 * A sale carried over into a new journal (Sale.carried_from: the journal
 * that took it first lost its tail or was a clone's) may be in the log
 * already, under a journal it had before: that journal's batch was
 * produced, and its acknowledgement never reached the agent. It is in the
 * log if its seq there is at or below either stream's position of that
 * journal: records of a journal are produced in seq order, so everything
 * below the highest one produced is in its topic (sales or DLQ). Only a
 * journal of the same device counts: a clone's device carries over from
 * the journal the other device kept, whose seqs are other sales; and a
 * journal whose device is not known is not trusted with a skip (a
 * duplicate can be seen downstream by sale_id, a loss cannot).
 * Returns the journal it is in the log under, or NULL. Live batches only.
 */
static const struct ingest_journal *ingest_carried_in_log(ingest *in, const char *store_id,
                                                          const char *device_id,
                                                          const Pos__V1__Sale *sale)
{
  for (size_t i = 0; i < sale->n_carried_from; i++) {
    const Pos__V1__SaleOrigin *origin = sale->carried_from[i];
    const struct ingest_journal *before;
    if (origin->journal_id.len != 16)
      continue;
    before = ingest__state_find(&in->state, store_id, origin->journal_id.data, "");
    if (before && before->device_id && device_id && strcmp(before->device_id, device_id) == 0 &&
        (origin->seq <= before->streams[INGEST_STREAM_SALES].seq ||
                   origin->seq <= before->streams[INGEST_STREAM_DLQ].seq))
      return before;
  }
  return NULL;
}

/* A journal a sale of `batch` was carried over from whose own batch is
 * still producing: whether the sale is in the log is not known until its
 * delivery reports are back. NULL when there is none. */
static const struct ingest_journal *ingest_carried_inflight(ingest *in, const char *store_id,
                                                            const Pos__V1__Batch *batch)
{
  const struct ingest_notes *notes = proto_batch_note(batch);

  /* The worker noted whether any sale was carried over: most batches have none. */
  if (notes && notes->count == batch->n_sales && notes->carried == 0)
    return NULL;
  for (size_t i = 0; i < batch->n_sales; i++) {
    const Pos__V1__Sale *sale = batch->sales[i];
    for (size_t c = 0; c < sale->n_carried_from; c++) {
      const Pos__V1__SaleOrigin *origin = sale->carried_from[c];
      const struct ingest_journal *before =
          origin->journal_id.len == 16
              ? ingest__state_find(&in->state, store_id, origin->journal_id.data, "")
              : NULL;
      if (before && before->inflight)
        return before;
    }
  }
  return NULL;
}

/*
 * Produces what of the batch the log does not hold yet, in seq order:
 * each sale above its stream's position, to the sales (or replay) topic
 * when it passes proto_sale_check and to the DLQ when it does not; then
 * the inventory deltas the log does not hold (ingest_batch_deltas). The journal
 * is locked (journal->inflight) until every delivery report is back.
 */
static void ingest_batch_start(ingest *in, struct ingest_journal *journal, const char *store_id,
                               Pos__V1__Batch *batch, ingest_done_fn done, void *arg)
{
  const Pos__V1__BatchEnvelope *envelope = batch->envelope;
  struct ingest_notes *notes = proto_batch_note(batch), *made = NULL;
  struct ingest_batch *b = calloc(1, sizeof(*b));
  uint64_t previous_seq = 0;
  unsigned duplicates_logged = 0, carried_logged = 0;
  char quoted[160];

  if (b)
    b->records = calloc(batch->n_sales + batch->n_inventory_deltas + 1, sizeof(*b->records));
  /* Not worked out on a worker (a batch not pooled, or its memory ran out there): here. */
  if (!notes || notes->count != batch->n_sales || strcmp(notes->store_id, store_id) != 0)
    notes = made = ingest_notes_build(batch, store_id, 0);
  if (!b || !b->records || !notes) {
    if (b)
      free(b->records);
    free(b);
    free(made);
    proto_batch_free(batch);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_OVERLOADED_S,
                             "collector out of memory starting a batch");
    return;
  }
  b->in = in;
  b->journal = journal;
  b->batch = batch;
  proto_journal_id_format(journal->journal_id, b->journal_hex);
  b->batch_seq_len = ingest_u64_text(envelope->batch_seq, b->batch_seq_text);
  snprintf(b->store_id, sizeof(b->store_id), "%s", store_id);
  b->done = done;
  b->arg = arg;
  b->started_ms = clock_mono_ms();
  b->deadline_ms = b->started_ms + in->produce_timeout_ms;
  b->producing = 1;
  b->next = in->batches;
  if (in->batches)
    in->batches->prev = b;
  in->batches = b;
  in->batch_count++;
  journal->inflight = b;

  /* Each sale is read through `notes`: its struct only when it is not plain. */
  for (size_t i = 0; i < notes->count && !b->failed; i++) {
    size_t index = notes->order ? notes->order[i] : i;
    uint64_t seq = notes->seq[index];
    unsigned flags = notes->flags[index];
    Pos__V1__Sale *sale = batch->sales[index];
    char field[64], why[200]; /* set when the sale is dead-lettered */
    enum ingest_stream stream = INGEST_STREAM_SALES;
    int tracked = 1, unchanged = 1;

    field[0] = why[0] = '\0';
    if (seq != 0 && seq == previous_seq) {
      /* The same journal row twice in one batch: produce it once. */
      if (duplicates_logged++ < INGEST_LOG_LINES_PER_BATCH)
        log_warn("ingest", "duplicate_seq_in_batch", "store=%s batch_seq=%" PRIu64 " seq=%" PRIu64,
                 store_id, envelope->batch_seq, seq);
      b->result.skipped++;
      continue;
    }
    previous_seq = seq;
    if (flags & INGEST_NOTE_NO_STORE) {
      /* The certificate says whose sale it is. */
      unchanged = 0; /* produced packed again, with the store_id */
      if (proto_batch_set_string(batch, &sale->store_id, store_id)) {
        snprintf(b->failure, sizeof(b->failure), "out of memory producing sale seq %" PRIu64, seq);
        b->failed = 1;
        break;
      }
    }
    if (flags & INGEST_NOTE_OTHER_STORE) {
      stream = INGEST_STREAM_DLQ;
      snprintf(field, sizeof(field), "store_id");
      snprintf(why, sizeof(why), "sale says store %.64s but the batch comes from store %.64s",
               sale->store_id, store_id);
    } else if (seq == 0) {
      /* Without a seq it cannot be deduplicated; dead-letter it so that
       * nothing is dropped, outside the stream's position. */
      stream = INGEST_STREAM_DLQ;
      tracked = 0;
      snprintf(field, sizeof(field), "seq");
      snprintf(why, sizeof(why), "sale has no journal seq");
    } else if ((flags & INGEST_NOTE_CHECK_FAILED) &&
               proto_sale_check(sale, field, sizeof(field), why, sizeof(why))) {
      /* Checked again here for its field and reason. */
      stream = INGEST_STREAM_DLQ;
    }
    if (tracked && seq <= journal->streams[stream].seq) {
      b->result.skipped++;
      continue;
    }
    if (tracked && (flags & INGEST_NOTE_CARRIED) && !b->journal->resync_id[0] &&
        ingest_carried_in_log(in, store_id, envelope->device_id, sale)) {
      /* Produced before, under the journal it was carried over from. */
      if (carried_logged++ < INGEST_LOG_LINES_PER_BATCH)
        log_info("ingest", "carried_sale_in_log",
                 "store=%s batch_seq=%" PRIu64 " seq=%" PRIu64 " sale_id=%s reason=\"carried "
                 "over from an earlier journal, which had it produced already\"",
                 store_id, envelope->batch_seq, seq, sale->sale_id);
      b->result.skipped++;
      continue;
    }
    if (ingest_produce_sale(in, b, index, seq, unchanged, stream, tracked, field, why)) {
      b->failed = 1;
      break;
    }
    if (stream == INGEST_STREAM_DLQ) {
      /* One line per dead letter, up to a few per batch: a batch of
       * thousands of bad sales must not flood the log. */
      if (b->result.dead_lettered++ < INGEST_LOG_LINES_PER_BATCH)
        log_warn("ingest", "sale_dead_lettered",
                 "store=%s batch_seq=%" PRIu64 " seq=%" PRIu64 " field=%s reason=%s", store_id,
                 envelope->batch_seq, seq, field, log_quote(why, quoted, sizeof(quoted)));
    } else {
      b->result.produced++;
    }
  }
  if (!b->failed)
    ingest_batch_deltas(in, b, store_id);
  free(made);
  if (b->result.dead_lettered > INGEST_LOG_LINES_PER_BATCH)
    log_warn("ingest", "sales_dead_lettered", "store=%s batch_seq=%" PRIu64 " count=%u",
             store_id, envelope->batch_seq, b->result.dead_lettered);
  b->producing = 0;
  if (b->pending == 0)
    ingest_batch_finish(b);
}

/*
 * Whether this instance writes `store_id`'s partition now (always, outside
 * a fleet, once its instance_id's lease has landed); if not, answers 503
 * saying why.
 */
static int ingest_takes_store(ingest *in, const char *store_id, ingest_done_fn done, void *arg)
{
  int32_t p;

  /* Nothing is produced before the run's first lease is in Kafka: a start that finds no lease
   * of its instance_id then knows no earlier run of it can have a request out (recovery.c). */
  if (!in->embedded && !in->lease_landed) {
    ingest_reply_unavailable(done, arg, INGEST_RETRY_OVERLOADED_S,
                             "the collector is claiming its instance_id %s in Kafka (its lease "
                             "record); retry shortly",
                             in->instance_id);
    return 0;
  }
  if (!in->fleet)
    return 1;
  if (ingest_lease_behind(in)) {
    ingest_reply_unavailable(done, arg, INGEST_RETRY_OVERLOADED_S,
                             "the collector is recording the partitions it was assigned in "
                             "Kafka (its lease); retry shortly");
    return 0;
  }
  if (in->fleet_off_reason[0]) {
    ingest_reply_unavailable(done, arg, INGEST_RETRY_KAFKA_S,
                             "this collector is in no collectors' group (%s), so it takes no "
                             "store's batches: another instance may be writing them",
                             in->fleet_off_reason);
    return 0;
  }
  if (in->fleet_releasing || in->fleet_between) {
    ingest_reply_unavailable(done, arg, INGEST_RETRY_REBUILDING_S,
                             "the collectors' group is rebalancing (an instance came or went): "
                             "this one is %s; retry shortly",
                             in->fleet_releasing ? "handing its partitions over"
                                                 : "waiting for the group's new assignment");
    return 0;
  }
  if (in->fleet_partitions == 0) {
    ingest_reply_unavailable(done, arg, INGEST_RETRY_REBUILDING_S,
                             "this collector has no partitions from the collectors' group yet "
                             "(it has just joined, or Kafka's group coordinator is not "
                             "answering); retry shortly");
    return 0;
  }
  p = ownership_store_partition(store_id, in->fleet_partitions);
  switch (in->fleet_owned[p]) {
  case INGEST_FLEET_TAKEN:
    return 1;
  case INGEST_FLEET_GAINING:
  case INGEST_FLEET_REBUILDING:
    ingest_reply_unavailable(done, arg, INGEST_RETRY_REBUILDING_S,
                             "this collector is taking over partition %" PRId32 " (store %s): "
                             "it reads what the previous owner wrote before it takes a batch; "
                             "retry shortly",
                             p, store_id);
    return 0;
  default:
    ingest_reply_another_instance(done, arg,
                                  "not this collector instance's store (not an overload): store "
                                  "%s is in partition %" PRId32 " of %s, which another instance "
                                  "writes; retry on a new connection, which the load balancer "
                                  "may send to that one",
                                  store_id, p, in->topics[KAFKA_TOPIC_SALES]);
    return 0;
  }
}

/* Decides what a batch is (duplicate, gap, wait, produce); takes `batch`. */
static void ingest_dispatch(ingest *in, const char *store_id, Pos__V1__Batch *batch,
                            ingest_done_fn done, void *arg)
{
  const Pos__V1__BatchEnvelope *envelope = batch ? batch->envelope : NULL;
  struct ingest_result result;
  struct ingest_journal *journal;
  const char *resync_id;
  char hex[33];
  size_t records;

  memset(&result, 0, sizeof(result));
  /* proto_batch_unpack has checked all of this; a batch that slipped past
   * it must not reach the log under the wrong stream. */
  if (!envelope || envelope->journal_id.len != 16 || envelope->batch_seq == 0 || !store_id ||
      !store_id[0] || strlen(store_id) > INGEST_STORE_ID_MAX ||
      (envelope->kind != POS__V1__BATCH_KIND__BATCH_KIND_LIVE &&
       envelope->kind != POS__V1__BATCH_KIND__BATCH_KIND_REPLAY) ||
      (envelope->kind == POS__V1__BATCH_KIND__BATCH_KIND_REPLAY &&
       (!envelope->resync_id || !envelope->resync_id[0] ||
        strlen(envelope->resync_id) > INGEST_RESYNC_ID_MAX))) {
    if (batch)
      proto_batch_free(batch);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_KAFKA_S,
                             "batch envelope incomplete or out of bounds (journal_id, batch_seq, "
                             "store, kind, resync_id of at most %d characters)",
                             INGEST_RESYNC_ID_MAX);
    return;
  }
  if (in->phase == INGEST_PHASE_CLOSING) {
    proto_batch_free(batch);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_OVERLOADED_S,
                             "the collector is shutting down");
    return;
  }
  if (in->phase != INGEST_PHASE_READY || in->doubt) {
    proto_batch_free(batch);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_REBUILDING_S,
                             "the collector is rebuilding its exactly-once state from Kafka "
                             "(after a start or a failed delivery); retry shortly");
    return;
  }
  if (!ingest_takes_store(in, store_id, done, arg)) {
    proto_batch_free(batch);
    return;
  }
  resync_id = ingest_resync_of(envelope);
  proto_journal_id_format(envelope->journal_id.data, hex);
  journal = ingest__state_find(&in->state, store_id, envelope->journal_id.data, resync_id);
  if (!journal) {
    if (envelope->batch_seq != 1) {
      result.outcome = INGEST_GAP;
      result.code = POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_RESUME;
      result.expected_batch_seq = 1;
      snprintf(result.message, sizeof(result.message),
               "journal %s is new to the collector: its first batch must be 1, not %" PRIu64,
               hex, envelope->batch_seq);
      proto_batch_free(batch);
      ingest_reply(done, arg, &result);
      return;
    }
    journal = ingest__state_get(&in->state, store_id, envelope->journal_id.data, resync_id);
    if (!journal) {
      proto_batch_free(batch);
      ingest_reply_unavailable(done, arg, INGEST_RETRY_KAFKA_S,
                               "the collector cannot track another journal (%zu held, out of "
                               "memory or at its limit of %u)",
                               in->state.journal_count, INGEST_MAX_JOURNALS);
      return;
    }
  }
  /* Two devices cloned from one disk image share a journal_id: their seqs
   * collide, so the second one's batches would look like duplicates and
   * never reach the log. The device that used the journal first keeps it. */
  if (ingest__journal_claim(journal, envelope->device_id) == 0 && journal->device_id &&
      envelope->device_id && strcmp(journal->device_id, envelope->device_id) != 0) {
    result.outcome = INGEST_REFUSED;
    result.code = POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_JOURNAL_OF_ANOTHER_DEVICE;
    snprintf(result.message, sizeof(result.message),
             "journal %s of store %.32s belongs to device %.32s, not %.32s (a cloned disk "
             "image?): start a new journal on this device; nothing produced",
             hex, store_id, journal->device_id, envelope->device_id);
    log_warn("ingest", "journal_of_another_device",
             "store=%s journal=%s owner=%s device=%s batch_seq=%" PRIu64, store_id, hex,
             journal->device_id, envelope->device_id, envelope->batch_seq);
    proto_batch_free(batch);
    ingest_reply(done, arg, &result);
    return;
  }
  if (journal->inflight) {
    struct ingest_batch *first = journal->inflight;
    struct ingest_waiter *w;
    if (in->waiter_count >= INGEST_MAX_WAITERS ||
        first->waiters >= INGEST_MAX_WAITERS_PER_JOURNAL) {
      proto_batch_free(batch);
      ingest_reply_unavailable(done, arg, INGEST_RETRY_KAFKA_S,
                               "batch %" PRIu64 " of journal %s is still being produced and %u "
                               "retries already wait for it",
                               first->batch->envelope->batch_seq, hex, first->waiters);
      return;
    }
    w = calloc(1, sizeof(*w));
    if (!w) {
      proto_batch_free(batch);
      ingest_reply_unavailable(done, arg, INGEST_RETRY_OVERLOADED_S,
                               "collector out of memory queueing a retry");
      return;
    }
    /* It waits for the attempt in flight; then it is decided again (and is
     * normally a duplicate). */
    w->journal = journal;
    snprintf(w->store_id, sizeof(w->store_id), "%s", store_id);
    w->batch = batch;
    w->done = done;
    w->arg = arg;
    w->deadline_ms = clock_mono_ms() + in->produce_timeout_ms;
    w->prev = in->waiters_tail;
    if (in->waiters_tail)
      in->waiters_tail->next = w;
    else
      in->waiters_head = w;
    in->waiters_tail = w;
    in->waiter_count++;
    first->waiters++;
    return;
  }
  if (envelope->batch_seq <= journal->accepted_batch_seq) {
    result.outcome = INGEST_DUPLICATE;
    result.acked_batch_seq = journal->accepted_batch_seq;
    snprintf(result.message, sizeof(result.message),
             "batch %" PRIu64 " of journal %s was accepted before: acknowledged again, nothing "
             "produced",
             envelope->batch_seq, hex);
    proto_batch_free(batch);
    ingest_reply(done, arg, &result);
    return;
  }
  if (envelope->batch_seq > journal->accepted_batch_seq + 1) {
    result.outcome = INGEST_GAP;
    result.code = POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_RESUME;
    result.acked_batch_seq = journal->accepted_batch_seq;
    result.expected_batch_seq = journal->accepted_batch_seq + 1;
    snprintf(result.message, sizeof(result.message),
             "batch %" PRIu64 " of journal %s skips ahead: the collector has accepted up to "
             "%" PRIu64 "; resume at %" PRIu64,
             envelope->batch_seq, hex, journal->accepted_batch_seq, result.expected_batch_seq);
    proto_batch_free(batch);
    ingest_reply(done, arg, &result);
    return;
  }
  records = batch->n_sales + batch->n_inventory_deltas;
  if (in->batch_count >= INGEST_MAX_BATCHES_IN_FLIGHT ||
      in->outstanding + records > INGEST_MAX_RECORDS_IN_FLIGHT) {
    char why[256];
    proto_batch_free(batch);
    ingest_wait_reason(in, why, sizeof(why));
    ingest_reply_unavailable(done, arg, INGEST_RETRY_OVERLOADED_S,
                             "collector overloaded: %u batches and %zu records are in flight "
                             "(limits %d and %u): %s",
                             in->batch_count, in->outstanding, INGEST_MAX_BATCHES_IN_FLIGHT,
                             INGEST_MAX_RECORDS_IN_FLIGHT, why);
    return;
  }
  if (!journal->resync_id[0]) {
    const struct ingest_journal *before = ingest_carried_inflight(in, store_id, batch);
    if (before) {
      char before_hex[33];
      proto_journal_id_format(before->journal_id, before_hex);
      proto_batch_free(batch);
      ingest_reply_unavailable(done, arg, INGEST_RETRY_REBUILDING_S,
                               "batch %" PRIu64 " of journal %s carries sales over from journal "
                               "%s, whose batch is still being produced; retry shortly",
                               envelope->batch_seq, hex, before_hex);
      return;
    }
  }
  ingest_batch_start(in, journal, store_id, batch, done, arg);
}

int ingest_submit_batch(ingest *in, const char *store_id, Pos__V1__Batch *batch,
                        ingest_done_fn done, void *arg)
{
  ingest_dispatch(in, store_id, batch, done, arg);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Heartbeats                                                                */
/* ------------------------------------------------------------------------ */

static void ingest_aux_submit(ingest *in, struct ingest_heartbeat *h, enum kafka_topic topic,
                              const char *key, uint8_t *value, size_t len, uint64_t deadline_ms,
                              ingest_done_fn done, void *arg);

static void ingest_heartbeat_unlink(ingest *in, struct ingest_heartbeat *h)
{
  if (h->prev)
    h->prev->next = h->next;
  else
    in->heartbeats = h->next;
  if (h->next)
    h->next->prev = h->prev;
  in->heartbeat_count--;
}

int ingest_submit_heartbeat(ingest *in, const char *store_id, Pos__V1__Heartbeat *heartbeat,
                            ingest_done_fn done, void *arg)
{
  struct ingest_heartbeat *h = NULL;
  uint8_t *value = NULL;
  size_t len;
  char key[2 * INGEST_STORE_ID_MAX + 2];

  if (!heartbeat || !store_id || !store_id[0] || strlen(store_id) > INGEST_STORE_ID_MAX) {
    if (heartbeat)
      pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_KAFKA_S, "heartbeat without a store");
    return 0;
  }
  /* Heartbeats have a producer of their own: they go on while the data
   * path rebuilds its state. */
  if (in->phase == INGEST_PHASE_CLOSING || !in->rk_aux) {
    pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_REBUILDING_S,
                             in->phase == INGEST_PHASE_CLOSING
                                 ? "the collector is shutting down"
                                 : "the collector is reconnecting to Kafka; retry shortly");
    return 0;
  }
  if (in->heartbeat_count >= INGEST_MAX_HEARTBEATS_IN_FLIGHT) {
    pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_OVERLOADED_S,
                             "collector overloaded: %u heartbeats wait for Kafka",
                             in->heartbeat_count);
    return 0;
  }
  heartbeat->received_ms = clock_wall_ms();
  if (!heartbeat->store_id || !heartbeat->store_id[0]) {
    char *copy = strdup(store_id);
    if (copy) {
      if (heartbeat->store_id && heartbeat->store_id != protobuf_c_empty_string)
        free(heartbeat->store_id);
      heartbeat->store_id = copy;
    }
  }
  len = pos__v1__heartbeat__get_packed_size(heartbeat);
  value = malloc(len + 1);
  h = calloc(1, sizeof(*h));
  if (!value || !h) {
    free(value);
    free(h);
    pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_OVERLOADED_S,
                             "collector out of memory taking a heartbeat");
    return 0;
  }
  pos__v1__heartbeat__pack(heartbeat, value);
  /* One record per device: a store's tills must not overwrite each other
   * in the compacted topic (ARCHITECTURE.md, topics). */
  snprintf(key, sizeof(key), "%s/%s", store_id,
           heartbeat->device_id ? heartbeat->device_id : "");
  pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
  ingest_aux_submit(in, h, KAFKA_TOPIC_STATUS, key, value, len,
                    clock_mono_ms() + in->produce_timeout_ms, done, arg);
  return 0;
}

/* Produces `value` (taken) under `key` through the aux producer as the record of `h` (taken),
 * answered by ingest_dr_cb (or at `deadline_ms` by the tick: UINT64_MAX for none). */
static void ingest_aux_submit(ingest *in, struct ingest_heartbeat *h, enum kafka_topic topic,
                              const char *key, uint8_t *value, size_t len, uint64_t deadline_ms,
                              ingest_done_fn done, void *arg)
{
  char err[256];

  h->done = done;
  h->arg = arg;
  h->deadline_ms = deadline_ms;
  h->record.owner = h;
  h->record.kind = INGEST_REC_HEARTBEAT;
  if (ingest_produce(in, topic, RD_KAFKA_PARTITION_UA, key, value, len, NULL, &h->record, err,
                     sizeof(err))) {
    free(h);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_KAFKA_S, "%s", err);
    return;
  }
  h->next = in->heartbeats;
  if (in->heartbeats)
    in->heartbeats->prev = h;
  in->heartbeats = h;
  in->heartbeat_count++;
}

int ingest_submit_control(ingest *in, const char *key, uint8_t *value, size_t len,
                          ingest_done_fn done, void *arg)
{
  struct ingest_heartbeat *h = NULL;

  if (in->phase == INGEST_PHASE_CLOSING || !in->rk_aux ||
      in->heartbeat_count >= INGEST_MAX_HEARTBEATS_IN_FLIGHT || !(h = calloc(1, sizeof(*h)))) {
    free(value);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_KAFKA_S,
                             "the collector cannot reach Kafka now (closing, reconnecting or "
                             "overloaded); retry shortly");
    return 0;
  }
  /* No deadline of ours: the answer waits for Kafka's, which the aux
   * producer's message timeout bounds. */
  ingest_aux_submit(in, h, KAFKA_TOPIC_CONTROL, key, value, len, UINT64_MAX, done, arg);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Rebases (pos.proto, Rebase)                                               */
/* ------------------------------------------------------------------------ */

/* Packs the control.v1 value of a rebase; NULL when out of memory. */
static uint8_t *ingest_rebase_pack(const struct ingest_rebase *rb, size_t *len)
{
  Pos__V1__Command command = POS__V1__COMMAND__INIT;
  Pos__V1__Rebase rebase = POS__V1__REBASE__INIT;
  char hex[33], command_id[INGEST_STORE_ID_MAX + 80];
  uint8_t *value;

  proto_journal_id_format(rb->journal_id, hex);
  snprintf(command_id, sizeof(command_id), "rebase-%s-%s-%" PRIu64, rb->store_id, hex,
           rb->from_batch_seq);
  rebase.journal_id.data = (uint8_t *)rb->journal_id;
  rebase.journal_id.len = 16;
  rebase.from_batch_seq = rb->from_batch_seq;
  command.command_id = command_id;
  command.store_id = (char *)rb->store_id;
  command.issued_ms = clock_wall_ms();
  command.issued_by = (char *)rb->approved_by;
  command.command_case = POS__V1__COMMAND__COMMAND_REBASE;
  command.rebase = &rebase;
  *len = pos__v1__command__get_packed_size(&command);
  value = malloc(*len + 1);
  if (value)
    pos__v1__command__pack(&command, value);
  return value;
}

int ingest_submit_rebase(ingest *in, const char *approved_by, const char *store_id,
                         const uint8_t journal_id[16], uint64_t from_batch_seq,
                         ingest_done_fn done, void *arg)
{
  struct ingest_rebase *rb;
  uint8_t *value;
  size_t len = 0;
  char key[INGEST_STORE_ID_MAX + 48], err[256];

  if (in->phase != INGEST_PHASE_READY || in->doubt || !in->rk_aux ||
      in->rebase_count >= INGEST_MAX_REBASES_IN_FLIGHT) {
    ingest_reply_unavailable(done, arg, INGEST_RETRY_REBUILDING_S,
                             "the collector is rebuilding its state or busy; retry shortly");
    return 0;
  }
  /* The store's owner applies it to the state it checks batches against. */
  if (!ingest_takes_store(in, store_id, done, arg))
    return 0;
  rb = calloc(1, sizeof(*rb));
  if (!rb || strlen(store_id) > INGEST_STORE_ID_MAX || from_batch_seq == 0 ||
      ingest__rebase_key(key, sizeof(key), store_id, journal_id)) {
    free(rb);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_OVERLOADED_S,
                             "rebase out of bounds or collector out of memory");
    return 0;
  }
  rb->done = done;
  rb->arg = arg;
  snprintf(rb->approved_by, sizeof(rb->approved_by), "%s", approved_by);
  snprintf(rb->store_id, sizeof(rb->store_id), "%s", store_id);
  memcpy(rb->journal_id, journal_id, 16);
  rb->from_batch_seq = from_batch_seq;
  rb->record.owner = rb;
  rb->record.kind = INGEST_REC_REBASE;
  value = ingest_rebase_pack(rb, &len);
  if (!value || ingest_produce(in, KAFKA_TOPIC_CONTROL, RD_KAFKA_PARTITION_UA, key, value, len,
                               NULL, &rb->record, err, sizeof(err))) {
    if (!value)
      snprintf(err, sizeof(err), "collector out of memory recording a rebase");
    free(rb);
    ingest_reply_unavailable(done, arg, INGEST_RETRY_KAFKA_S, "%s", err);
    return 0;
  }
  rb->next = in->rebases;
  if (in->rebases)
    in->rebases->prev = rb;
  in->rebases = rb;
  in->rebase_count++;
  return 0;
}

/* The rebase's record is in control.v1 (or failed): apply it, answer, free. */
static void ingest_rebase_delivered(ingest *in, struct ingest_rebase *rb, rd_kafka_resp_err_t err)
{
  struct ingest_result result;
  char hex[33];

  if (rb->prev)
    rb->prev->next = rb->next;
  else
    in->rebases = rb->next;
  if (rb->next)
    rb->next->prev = rb->prev;
  in->rebase_count--;
  memset(&result, 0, sizeof(result));
  proto_journal_id_format(rb->journal_id, hex);
  if (err) {
    ingest_reply_unavailable(rb->done, rb->arg, INGEST_RETRY_KAFKA_S,
                             "Kafka did not record the rebase: %s", rd_kafka_err2str(err));
  } else if (ingest__rebase_apply(&in->state, rb->store_id, rb->journal_id, rb->from_batch_seq,
                                  &result.previous_acked_batch_seq)) {
    ingest_reply_unavailable(rb->done, rb->arg, INGEST_RETRY_OVERLOADED_S,
                             "the rebase is recorded but the collector is out of memory: it "
                             "applies at its next rebuild");
  } else {
    struct ingest_journal *journal =
        ingest__state_find(&in->state, rb->store_id, rb->journal_id, "");
    result.outcome = INGEST_ACCEPTED;
    result.acked_batch_seq = journal ? journal->accepted_batch_seq : 0;
    in->dirty = 1;
    /* A recovery running now may have read control.v1 before this landed. */
    if (in->phase != INGEST_PHASE_READY && in->reapply_count < INGEST_MAX_REBASES_IN_FLIGHT) {
      struct ingest_rebase_applied *again = &in->reapply[in->reapply_count++];
      snprintf(again->store_id, sizeof(again->store_id), "%s", rb->store_id);
      memcpy(again->journal_id, rb->journal_id, 16);
      again->from_batch_seq = rb->from_batch_seq;
    }
    log_warn("ingest", "rebase_applied",
             "approved_by=%s store=%s journal=%s from_batch_seq=%" PRIu64
             " acked_batch_seq_before=%" PRIu64 " acked_batch_seq_after=%" PRIu64,
             rb->approved_by, rb->store_id, hex, rb->from_batch_seq,
             result.previous_acked_batch_seq, result.acked_batch_seq);
    ingest_reply(rb->done, rb->arg, &result);
  }
  free(rb);
}

/* ------------------------------------------------------------------------ */
/* Checkpoints                                                               */
/* ------------------------------------------------------------------------ */

static int32_t ingest_checkpoint_partition(const ingest *in);

/* A run's random id (getrandom; the clock and pid if the kernel cannot give one). */
static void ingest_draw_run_id(uint8_t id[INGEST_RUN_ID_BYTES])
{
  uint64_t fallback[2];

  if (getrandom(id, INGEST_RUN_ID_BYTES, 0) == INGEST_RUN_ID_BYTES)
    return;
  fallback[0] = clock_mono_ms() ^ ((uint64_t)getpid() << 32);
  fallback[1] = (uint64_t)clock_wall_ms();
  memcpy(id, fallback, INGEST_RUN_ID_BYTES);
}

/*
 * Produces this run's lease on instance_id (pos.proto, InstanceLease):
 * renewed, or `released` by a clean shutdown. One at a time: a renewal
 * whose previous one Kafka has not acknowledged yet waits for a later tick.
 * Returns 0 when a record was produced, else -1.
 */
static int ingest_lease_write(ingest *in, int released)
{
  Pos__V1__InstanceLease lease;
  char key[INGEST_TOPIC_NAME_MAX + 16], err[256];
  uint32_t *writes = NULL;
  Pos__V1__LeaseWaitedOut *waited = NULL, **waited_ptrs = NULL;
  uint8_t *value;
  size_t len;

  if (!in->lease_held || in->lease_inflight || !in->rk_aux ||
      ingest__lease_key(key, sizeof(key), in->instance_id))
    return -1;
  pos__v1__instance_lease__init(&lease);
  lease.instance_id = in->instance_id;
  lease.run_id.data = in->run_id;
  lease.run_id.len = sizeof(in->run_id);
  lease.host = in->host;
  lease.pid = (int64_t)getpid();
  lease.started_ms = in->started_wall_ms;
  lease.renewed_ms = clock_wall_ms();
  lease.renewal = ++in->lease_renewal;
  lease.renew_ms = INGEST_LEASE_RENEW_MS;
  lease.released = released ? 1 : 0;
  if (in->fleet) {
    lease.writes_known = 1;
    lease.writes_of = (uint32_t)in->fleet_partitions;
    if (in->fleet_partitions > 0) {
      writes = malloc((size_t)in->fleet_partitions * sizeof(*writes));
      if (!writes)
        return -1;
    }
    lease.writes = writes;
    for (int p = 0; p < in->fleet_partitions; p++) {
      if (in->fleet_writes[p])
        writes[lease.n_writes++] = (uint32_t)p;
    }
  }
  if (in->waited_out.count > 0) {
    waited = calloc(in->waited_out.count, sizeof(*waited));
    waited_ptrs = calloc(in->waited_out.count, sizeof(*waited_ptrs));
    if (!waited || !waited_ptrs) {
      free(waited);
      free(waited_ptrs);
      free(writes);
      return -1;
    }
    for (size_t i = 0; i < in->waited_out.count; i++) {
      const struct ingest_waited *w = &in->waited_out.items[i];
      pos__v1__lease_waited_out__init(&waited[i]);
      waited[i].instance_id = w->instance_id;
      waited[i].run_id.data = (uint8_t *)w->run_id;
      waited[i].run_id.len = sizeof(w->run_id);
      waited[i].renewal = w->renewal;
      waited[i].partitions = w->partitions;
      waited[i].n_partitions = w->n_partitions;
      waited_ptrs[i] = &waited[i];
    }
    lease.waited_out = waited_ptrs;
    lease.n_waited_out = in->waited_out.count;
  }
  len = pos__v1__instance_lease__get_packed_size(&lease);
  value = malloc(len + 1);
  if (value)
    pos__v1__instance_lease__pack(&lease, value);
  free(writes);
  free(waited);
  free(waited_ptrs);
  if (!value)
    return -1;
  in->lease_record.owner = NULL;
  in->lease_record.kind = INGEST_REC_LEASE;
  if (ingest_produce(in, KAFKA_TOPIC_STATE, ingest_checkpoint_partition(in), key, value, len, NULL,
                     &in->lease_record, err, sizeof(err))) {
    log_warn("ingest", "lease_failed", "instance=%s error=\"%s\" action=\"retried shortly\"",
             in->instance_id, err);
    return -1;
  }
  in->lease_inflight = 1;
  in->lease_inflight_epoch = in->fleet_epoch;
  if (released)
    in->lease_release_state = 1;
  return 0;
}

/* The partitions written changed (fleet_epoch moved): a lease saying so, now or at a tick. */
static void ingest_lease_soon(ingest *in)
{
  uint64_t now = clock_mono_ms();

  if (!in->lease_held || in->phase == INGEST_PHASE_CLOSING)
    return;
  if (ingest_lease_write(in, 0) == 0)
    in->lease_next_ms = now + INGEST_LEASE_RENEW_MS;
  else
    in->lease_next_ms = now; /* the one in flight first: the next tick */
}

/* 1 while the lease naming the partitions now written has not landed. */
static int ingest_lease_behind(const ingest *in)
{
  return in->fleet && in->lease_held && in->lease_landed_epoch < in->fleet_epoch;
}

/*
 * A checkpoint is written in three stages (pos.proto, IngestCheckpoint):
 *
 *   PARTS ──all acknowledged──► MANIFEST ──acknowledged──► TOMBSTONES ──► done
 *     │ a part failed              │ failed
 *     └────────────────────────────┴──► done (its parts become garbage)
 *
 * Each stage produces only after the previous one's records are all
 * acknowledged, so that a crash at any moment leaves a complete generation:
 * the old one is deleted only once the new one is complete and named.
 */
static void ingest_checkpoint_finish(ingest *in)
{
  struct ingest_checkpoint *ck = in->checkpoint;

  if (ck->failed) {
    in->dirty = 1;
    log_warn("ingest", "checkpoint_incomplete",
             "instance=%s generation=%" PRIu64 " stage=%d action=\"next checkpoint retries\"",
             in->instance_id, ck->generation, ck->stage);
  }
  free(ck->records);
  free(ck);
  in->checkpoint = NULL;
  ingest_fleet_check(in);
}

/* The instance's partition of ingest-state.v1: every record of a checkpoint
 * goes to one partition so that a reader sees its parts in order. */
static int32_t ingest_checkpoint_partition(const ingest *in)
{
  uint8_t none[16] = {0};
  if (in->state_partitions <= 0)
    return 0;
  return (int32_t)(ingest__journal_hash(in->instance_id, none, "") %
                   (uint64_t)in->state_partitions);
}

/* Produces the manifest naming ck's generation. 0 or -1 (nothing produced). */
static int ingest_checkpoint_manifest(ingest *in, struct ingest_checkpoint *ck)
{
  Pos__V1__IngestCheckpoint manifest;
  uint8_t *value;
  size_t len;
  char err[256];

  pos__v1__ingest_checkpoint__init(&manifest);
  manifest.instance_id = in->instance_id;
  manifest.created_ms = clock_wall_ms();
  manifest.generation = ck->generation;
  manifest.parts = ck->parts;
  manifest.manifest = 1;
  manifest.closed_cleanly = ck->closing;
  len = pos__v1__ingest_checkpoint__get_packed_size(&manifest);
  value = malloc(len + 1);
  if (!value)
    return -1;
  pos__v1__ingest_checkpoint__pack(&manifest, value);
  ck->stage = INGEST_CK_MANIFEST;
  ck->manifest_record.owner = ck;
  ck->manifest_record.kind = INGEST_REC_CHECKPOINT;
  if (ingest_produce(in, KAFKA_TOPIC_STATE, ck->partition, in->instance_id, value, len, NULL,
                     &ck->manifest_record, err, sizeof(err))) {
    log_error("ingest", "checkpoint_failed", "generation=%" PRIu64 " error=\"%s\"",
              ck->generation, err);
    return -1;
  }
  ck->pending++;
  return 0;
}

/* Tombstones for part keys of older generations, up to a bound per checkpoint. */
static void ingest_checkpoint_tombstones(ingest *in, struct ingest_checkpoint *ck)
{
  size_t count = in->garbage.count;
  char key[INGEST_TOPIC_NAME_MAX + 64], err[256];

  if (count > INGEST_TOMBSTONES_PER_CHECKPOINT)
    count = INGEST_TOMBSTONES_PER_CHECKPOINT;
  ck->stage = INGEST_CK_TOMBSTONES;
  free(ck->records);
  ck->records = calloc(count + 1, sizeof(*ck->records));
  if (!ck->records)
    return;
  for (size_t i = 0; i < count; i++) {
    const struct ingest_part_key *part = &in->garbage.keys[in->garbage.count - 1];
    struct ingest_record *record = &ck->records[i];
    if (ingest__checkpoint_part_key(key, sizeof(key), in->instance_id, part->generation,
                                    part->part))
      break;
    record->owner = ck;
    record->kind = INGEST_REC_CHECKPOINT;
    /* A null value: compaction deletes the key. */
    if (ingest_produce(in, KAFKA_TOPIC_STATE, part->partition, key, NULL, 0, NULL, record, err,
                       sizeof(err))) {
      log_warn("ingest", "tombstone_failed", "key=%s error=\"%s\"", key, err);
      break;
    }
    in->garbage.count--;
    ck->pending++;
    ck->tombstones++;
  }
}

/* Every record of ck's current stage is back: start the next stage or finish. */
static void ingest_checkpoint_advance(ingest *in)
{
  struct ingest_checkpoint *ck = in->checkpoint;
  int writable = !in->doubt && in->rk_aux &&
                 (in->phase == INGEST_PHASE_READY || in->phase == INGEST_PHASE_CLOSING);

  assert(ck && ck->pending == 0);
  if (ck->stage == INGEST_CK_PARTS) {
    if (ck->failed || !writable || ingest_checkpoint_manifest(in, ck)) {
      ck->failed = 1;
      for (uint32_t k = 0; k < ck->parts; k++)
        ingest__garbage_add(&in->garbage, ck->generation, k, ck->partition);
      ingest_checkpoint_finish(in);
    }
    return;
  }
  if (ck->stage == INGEST_CK_MANIFEST) {
    if (ck->failed) {
      if (!ck->manifest_only) {
        for (uint32_t k = 0; k < ck->parts; k++)
          ingest__garbage_add(&in->garbage, ck->generation, k, ck->partition);
      }
      ingest_checkpoint_finish(in);
      return;
    }
    log_info("ingest", "checkpoint",
             "instance=%s generation=%" PRIu64 " journals=%zu parts=%" PRIu32
             " bytes=%zu closed_cleanly=%d ms=%" PRIu64,
             in->instance_id, ck->generation, ck->journals, ck->parts, ck->bytes, ck->closing,
             clock_mono_ms() - ck->started_ms);
    /* The new generation is named: the one it replaces may go. */
    if (in->live_generation && in->live_generation != ck->generation) {
      for (uint32_t k = 0; k < in->live_parts; k++)
        ingest__garbage_add(&in->garbage, in->live_generation, k, in->live_partition);
    }
    in->live_generation = ck->generation;
    in->live_parts = ck->parts;
    in->live_partition = ck->partition;
    if (writable && in->garbage.count > 0)
      ingest_checkpoint_tombstones(in, ck);
    if (ck->pending == 0)
      ingest_checkpoint_finish(in);
    return;
  }
  ingest_checkpoint_finish(in);
}

/*
 * Produces the parts of a new generation holding the whole map and the
 * partition offsets it covers; the manifest and tombstones follow from the
 * delivery reports. `closing` (a clean shutdown, nothing outstanding) marks
 * the manifest closed_cleanly and, when the map has not moved since the
 * live generation, writes only a new manifest for it. Only while READY or
 * CLOSING: the map is then consistent with what the delivery reports said.
 */
static void ingest_checkpoint_write(ingest *in, int closing)
{
  struct ingest_blob *parts = NULL;
  struct ingest_checkpoint *ck;
  size_t part_count = 0;
  char err[256];

  assert(in->phase == INGEST_PHASE_READY || in->phase == INGEST_PHASE_CLOSING);
  assert(!in->checkpoint && in->rk_aux);
  ck = calloc(1, sizeof(*ck));
  if (!ck) {
    log_error("ingest", "checkpoint_failed", "error=\"out of memory\"");
    return;
  }
  ck->started_ms = clock_mono_ms();
  ck->closing = closing;
  ck->partition = ingest_checkpoint_partition(in);
  ck->journals = in->state.journal_count;
  in->checkpoint = ck;
  if (closing && !in->dirty && in->live_generation) {
    ck->manifest_only = 1;
    ck->generation = in->live_generation;
    ck->parts = in->live_parts;
    ck->partition = in->live_partition;
    if (ingest_checkpoint_manifest(in, ck))
      ck->failed = 1;
    if (ck->pending == 0)
      ingest_checkpoint_finish(in);
    return;
  }
  if (ingest__checkpoint_encode(&in->state, &in->offsets, in->topics, in->instance_id,
                                in->next_generation, clock_wall_ms(),
                                in->checkpoint_part_bytes, &parts, &part_count) ||
      !(ck->records = calloc(part_count, sizeof(*ck->records)))) {
    log_error("ingest", "checkpoint_failed",
              "journals=%zu error=\"out of memory or more than %u parts\"",
              in->state.journal_count, INGEST_MAX_CHECKPOINT_PARTS);
    for (size_t k = 0; k < part_count; k++)
      free(parts[k].data);
    free(parts);
    free(ck);
    in->checkpoint = NULL;
    return;
  }
  ck->generation = in->next_generation++;
  ck->parts = (uint32_t)part_count;
  ck->stage = INGEST_CK_PARTS;
  ck->producing = 1;
  in->dirty = 0;
  for (size_t k = 0; k < part_count; k++) {
    char key[INGEST_TOPIC_NAME_MAX + 64];
    ck->records[k].owner = ck;
    ck->records[k].kind = INGEST_REC_CHECKPOINT;
    ck->bytes += parts[k].len;
    if (ingest__checkpoint_part_key(key, sizeof(key), in->instance_id, ck->generation,
                                    (uint32_t)k) ||
        ingest_produce(in, KAFKA_TOPIC_STATE, ck->partition, key, parts[k].data, parts[k].len,
                       NULL, &ck->records[k], err, sizeof(err))) {
      log_error("ingest", "checkpoint_failed", "generation=%" PRIu64 " error=\"%s\"",
                ck->generation, err);
      for (size_t rest = k + 1; rest < part_count; rest++)
        free(parts[rest].data);
      ck->failed = 1;
      break;
    }
    ck->pending++;
    if (in->test_kill_after_checkpoint_records == k + 1) {
      /* What lands is exactly the records produced so far. */
      log_warn("ingest", "test_hook_kill", "generation=%" PRIu64 " records=%zu", ck->generation,
               k + 1);
      rd_kafka_flush(in->rk_aux, 10000);
      raise(SIGKILL);
    }
  }
  free(parts);
  ck->producing = 0;
  if (ck->pending == 0)
    ingest_checkpoint_advance(in);
}

/* ------------------------------------------------------------------------ */
/* Delivery reports                                                          */
/* ------------------------------------------------------------------------ */

static int ingest_err_is_purge(rd_kafka_resp_err_t err)
{
  return err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT;
}

/* On the loop thread, from rd_kafka_poll. */
static void ingest_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque)
{
  ingest *in = opaque;
  struct ingest_record *record = message->_private;

  int aux;

  if (!record)
    return;
  aux = ingest_topic_aux((enum kafka_topic)record->topic);
  if (aux) {
    assert(in->outstanding_aux > 0);
    in->outstanding_aux--;
  } else {
    assert(in->outstanding > 0);
    in->outstanding--;
  }
  if (message->err && !ingest_err_is_purge(message->err))
    ingest_count_produce_error(in, record->topic, message->err);
  if (!message->err && record->topic < KAFKA_DATA_TOPICS && message->offset >= 0) {
    ingest__offsets_raise(&in->offsets, record->topic, message->partition, message->offset + 1);
    in->dirty = 1;
  }
  if (message->err && aux && !ingest_err_is_purge(message->err)) {
    /* A heartbeat or a checkpoint failed: that one only (the next
     * checkpoint retries); the data path is not in doubt. */
    log_warn("ingest", "delivery_failed", "topic=%s partition=%d error=%s action=%s",
             in->topics[record->topic], (int)message->partition, rd_kafka_err2name(message->err),
             record->kind == INGEST_REC_HEARTBEAT ? "answer_503"
             : record->kind == INGEST_REC_LEASE   ? "renew_again"
                                                  : "retry_next_checkpoint");
  } else if (message->err && !ingest_err_is_purge(message->err) && !in->doubt) {
    /* With idempotence and the gapless guarantee a record that fails is
     * either fatal for the producer or a permanent refusal: either way the
     * state may no longer match the log. */
    log_error("ingest", "delivery_failed", "topic=%s partition=%d error=%s action=rebuild_state",
              in->topics[record->topic], (int)message->partition,
              rd_kafka_err2name(message->err));
    in->doubt = 1;
  }
  switch (record->kind) {
  case INGEST_REC_BATCH: {
    struct ingest_batch *b = record->owner;
    if (!message->err) {
      struct ingest_pos *pos = &b->journal->streams[record->stream];
      if (record->tracked && ingest__pos_after(record->pos, *pos))
        *pos = record->pos;
    } else if (!b->failed) {
      b->failed = 1;
      snprintf(b->failure, sizeof(b->failure),
               "Kafka did not take the batch's records (%s); the collector is rebuilding its "
               "state, retry",
               rd_kafka_err2str(message->err));
    }
    assert(b->pending > 0);
    if (--b->pending == 0 && !b->producing)
      ingest_batch_finish(b);
    break;
  }
  case INGEST_REC_HEARTBEAT: {
    struct ingest_heartbeat *h = record->owner;
    ingest_heartbeat_unlink(in, h);
    if (!h->answered) {
      if (message->err) {
        ingest_reply_unavailable(h->done, h->arg, INGEST_RETRY_KAFKA_S,
                                 "Kafka did not take the record: %s",
                                 rd_kafka_err2str(message->err));
      } else {
        struct ingest_result result;
        memset(&result, 0, sizeof(result));
        result.outcome = INGEST_ACCEPTED;
        ingest_reply(h->done, h->arg, &result);
      }
    }
    free(h);
    break;
  }
  case INGEST_REC_REBASE:
    ingest_rebase_delivered(in, record->owner, message->err);
    break;
  case INGEST_REC_LEASE:
    in->lease_inflight = 0;
    if (!message->err) {
      in->lease_landed = 1;
      in->lease_landed_epoch = in->lease_inflight_epoch;
    }
    if (ingest_lease_behind(in)) {
      in->lease_next_ms = 0; /* the partitions changed meanwhile, or it failed: again */
    } else if (in->fleet_releasing) {
      ingest_fleet_check(in);
    }
    if (in->lease_release_state == 1)
      in->lease_release_state = message->err ? 3 : 2;
    break;
  case INGEST_REC_CHECKPOINT: {
    struct ingest_checkpoint *ck = record->owner;
    if (message->err && ck->stage != INGEST_CK_TOMBSTONES)
      ck->failed = 1;
    if (--ck->pending == 0 && !ck->producing)
      ingest_checkpoint_advance(in);
    break;
  }
  default:
    break;
  }
}

/* ------------------------------------------------------------------------ */
/* The loop: wake-ups, the tick, recovery                                    */
/* ------------------------------------------------------------------------ */

/*
 * After a delivery doubt: stop taking batches, purge what librdkafka still
 * holds (its reports come back as failures), and once nothing is
 * outstanding hand the producer to a recovery thread that destroys it,
 * makes a new one and rebuilds the state from Kafka.
 */
static void ingest_check_doubt(ingest *in)
{
  if (in->phase == INGEST_PHASE_READY && in->doubt) {
    in->phase = INGEST_PHASE_DRAINING;
    log_warn("ingest", "delivery_doubt",
             "outstanding=%zu batches=%u action=\"purge, then rebuild state from Kafka\"",
             in->outstanding, in->batch_count);
    if (in->rk)
      rd_kafka_purge(in->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
                                 RD_KAFKA_PURGE_F_NON_BLOCKING);
  }
  if (in->phase == INGEST_PHASE_DRAINING && in->outstanding == 0 && in->batch_count == 0 &&
      !in->checkpoint && !in->recovery) {
    rd_kafka_t *retire = in->rk;
    assert(in->waiter_count == 0);
    ingest_topics_close(in);
    in->rk = NULL;
    in->doubt = 0;
    in->phase = INGEST_PHASE_RECOVERING;
    in->recovery_after_doubt = 1;
    if (ingest__recovery_start(in, retire, 1)) {
      log_error("ingest", "recovery_start_failed", "error=\"cannot start a thread\" retry=tick");
      in->rk = retire;
      ingest_topics_open(in);
      in->phase = INGEST_PHASE_DRAINING;
      in->recovery_after_doubt = 0;
    }
  }
  ingest_fleet_check(in);
}

static void ingest_wake_cb(uv_poll_t *handle, int status, int events)
{
  ingest *in = handle->data;
  char drain[64];

  /* Empty the pipe first: an event arriving while we serve writes a new byte. */
  while (read(in->wake_fds[0], drain, sizeof(drain)) > 0)
    ;
  if (in->rk)
    rd_kafka_poll(in->rk, 0);
  if (in->rk_aux)
    rd_kafka_poll(in->rk_aux, 0);
  ingest_check_doubt(in);
}

static void ingest_tick_cb(uv_timer_t *handle)
{
  ingest *in = handle->data;
  uint64_t now;

  ingest_note_lateness(in, clock_mono_ms());
  /* Backstop for a lost wake-up; normally there is nothing to serve. */
  if (in->rk)
    rd_kafka_poll(in->rk, 0);
  if (in->rk_aux)
    rd_kafka_poll(in->rk_aux, 0);
  now = clock_mono_ms();
  for (struct ingest_batch *b = in->batches; b; b = b->next) {
    if (!b->answered && now >= b->deadline_ms) {
      char hex[33], why[256];
      /* The batch stays in flight (librdkafka keeps retrying) and keeps its
       * journal locked, so a retry cannot produce a second copy; when it
       * lands the retry is answered as a duplicate. */
      b->answered = 1;
      proto_journal_id_format(b->journal->journal_id, hex);
      log_warn("ingest", "produce_timeout",
               "store=%s journal=%s batch_seq=%" PRIu64 " pending=%zu timeout_ms=%" PRIu64
               " loop_late_ms=%" PRIu64,
               b->journal->store_id, hex, b->batch->envelope->batch_seq, b->pending,
               in->produce_timeout_ms, ingest_loop_late_ms(in));
      ingest_wait_reason(in, why, sizeof(why));
      ingest_reply_unavailable(b->done, b->arg, INGEST_RETRY_KAFKA_S,
                               "%zu of the batch's records are not acknowledged after %" PRIu64
                               " ms: %s; the batch stays in flight, retry later",
                               b->pending, in->produce_timeout_ms, why);
    }
  }
  for (struct ingest_waiter *w = in->waiters_head, *next; w; w = next) {
    next = w->next;
    if (now < w->deadline_ms)
      continue;
    ingest_waiter_unlink(in, w);
    if (w->journal->inflight)
      w->journal->inflight->waiters--;
    proto_batch_free(w->batch);
    ingest_reply_unavailable(w->done, w->arg, INGEST_RETRY_KAFKA_S,
                             "an earlier attempt of this batch is still waiting for Kafka; retry "
                             "later");
    free(w);
    /* The callback may have changed the list: start over from the head. */
    next = in->waiters_head;
  }
  for (struct ingest_heartbeat *h = in->heartbeats; h; h = h->next) {
    if (!h->answered && now >= h->deadline_ms) {
      h->answered = 1;
      ingest_reply_unavailable(h->done, h->arg, INGEST_RETRY_KAFKA_S,
                               "Kafka has not acknowledged the heartbeat within %" PRIu64 " ms",
                               in->produce_timeout_ms);
    }
  }
  ingest_check_doubt(in);
  if (in->fleet_gain_pending)
    ingest_fleet_gain(in);
  /* Renewed every period; one that could not go now is tried again at the next tick. */
  if (in->lease_held && in->phase != INGEST_PHASE_CLOSING && now >= in->lease_next_ms &&
      ingest_lease_write(in, 0) == 0)
    in->lease_next_ms = now + INGEST_LEASE_RENEW_MS;
  if (in->phase == INGEST_PHASE_READY && !in->doubt && in->rk && !in->checkpoint && in->dirty &&
      now >= in->next_checkpoint_ms) {
    in->next_checkpoint_ms = now + in->checkpoint_interval_ms;
    ingest_checkpoint_write(in, 0);
  }
}

/* ------------------------------------------------------------------------ */
/* The fleet: which stores this instance writes (ingest.h, ingest_fleet_*)  */
/* ------------------------------------------------------------------------ */

/* "0,3,5" of the partitions in state `which`, into out. */
static const char *ingest_fleet_list(const ingest *in, int which, char *out, size_t out_size)
{
  size_t at = 0;

  out[0] = '\0';
  for (int p = 0; p < in->fleet_partitions && at + 16 < out_size; p++) {
    int n;
    if (in->fleet_owned[p] != which)
      continue;
    n = snprintf(out + at, out_size - at, "%s%d", at ? "," : "", p);
    if (n < 0)
      break;
    at += (size_t)n;
  }
  return out[0] ? out : "-";
}

/*
 * A release under way ends once nothing this instance produced is without
 * its delivery report and nothing of it waits: then (the state having moved)
 * a checkpoint, so that the next owner reads less of the log, and the
 * member may give the partitions up. A recovery after a delivery doubt is
 * waited for: the records it waits out were this instance's.
 */
static void ingest_fleet_check(ingest *in)
{
  void (*released)(void *arg) = in->fleet_released;

  if (!in->fleet_releasing || in->batch_count || in->outstanding || in->waiter_count ||
      in->rebase_count || in->checkpoint || in->doubt || in->phase == INGEST_PHASE_DRAINING ||
      (in->phase == INGEST_PHASE_RECOVERING && in->recovery_after_doubt))
    return;
  if (in->phase == INGEST_PHASE_READY && in->dirty && in->rk && in->rk_aux &&
      !in->fleet_release_checkpointed) {
    in->fleet_release_checkpointed = 1;
    ingest_checkpoint_write(in, 0);
    if (in->checkpoint)
      return; /* ingest_checkpoint_finish comes back here */
  }
  /* Every record is delivered: a lease without the partitions, in Kafka before the group may
   * give them out, tells their next owner that nothing of ours can still land. */
  if (in->lease_held) {
    int named = 0;
    for (int p = 0; p < in->fleet_partitions; p++) {
      named |= in->fleet_writes[p];
      in->fleet_writes[p] = 0;
    }
    if (named) {
      in->fleet_epoch++;
      ingest_lease_soon(in);
    }
    if (ingest_lease_behind(in)) {
      /* Its delivery report comes back here. Kafka not taking it must not hold the group's
       * rebalance: past the wait a dead instance's requests take, release anyway; the newest
       * lease then still names the partitions, and their next owner waits that out. */
      uint64_t now = clock_mono_ms(),
               wait = in->request_timeout_ms + INGEST_REQUEST_MARGIN_MS(in->request_timeout_ms);
      if (in->fleet_lease_wait_ms == 0)
        in->fleet_lease_wait_ms = now;
      if (now - in->fleet_lease_wait_ms < wait)
        return;
      log_warn("ingest", "release_lease_not_landed",
               "instance=%s ms=%" PRIu64 " action=\"released anyway: the next owner waits out "
               "this instance's requests, as its newest lease still names the partitions\"",
               in->instance_id, now - in->fleet_lease_wait_ms);
    }
    in->fleet_lease_wait_ms = 0;
  }
  in->fleet_releasing = 0;
  in->fleet_between = 1;
  in->fleet_released = NULL;
  log_info("ingest", "fleet_released", "instance=%s ms=%" PRIu64, in->instance_id,
           clock_mono_ms() - in->fleet_release_started_ms);
  if (released)
    released(in->fleet_released_arg);
}

/* Starts the recovery that takes over the partitions assigned and not held
 * (or notes it for when the recovery running is done). */
static void ingest_fleet_gain(ingest *in)
{
  uint8_t *gaining;
  int any = 0;

  if (!in->fleet || in->fleet_releasing || in->phase == INGEST_PHASE_CLOSING)
    return;
  for (int p = 0; p < in->fleet_partitions && !any; p++)
    any = in->fleet_owned[p] == INGEST_FLEET_GAINING;
  if (!any) {
    in->fleet_gain_pending = 0;
    return;
  }
  if (in->recovery || in->phase != INGEST_PHASE_READY || in->doubt) {
    in->fleet_gain_pending = 1;
    return;
  }
  in->fleet_gain_pending = 0;
  gaining = malloc((size_t)in->fleet_partitions);
  for (int p = 0; gaining && p < in->fleet_partitions; p++)
    gaining[p] = in->fleet_owned[p] == INGEST_FLEET_GAINING;
  if (!gaining ||
      ingest__recovery_start_gain(in, in->fleet_quiet_until_ms, gaining, in->fleet_partitions)) {
    free(gaining);
    log_error("ingest", "recovery_start_failed",
              "error=\"cannot start a thread, or out of memory\" retry=tick");
    in->fleet_gain_pending = 1;
    return;
  }
  free(gaining);
  for (int p = 0; p < in->fleet_partitions; p++) {
    if (in->fleet_owned[p] == INGEST_FLEET_GAINING)
      in->fleet_owned[p] = INGEST_FLEET_REBUILDING;
  }
}

/* A recovery read past records retention had dropped: the state may be behind; said once. */
static void ingest_warn_dropped(const ingest *in, const struct ingest_recovery_stats *stats)
{
  if (stats->records_dropped_unread == 0)
    return;
  log_warn("ingest", "state_missing_dropped_records",
           "instance=%s records=%" PRIu64 " risk=\"sales in them that an agent sends again are "
           "produced again\" action=\"keep the data topics' retention.ms far above [kafka] "
           "checkpoint_interval, and the collectors running\"",
           in->instance_id, stats->records_dropped_unread);
}

/* ingest__state_merge's filter: the stores of the partitions a gain rebuilt. */
static int ingest_fleet_rebuilt_store(void *arg, const char *store_id)
{
  const ingest *in = arg;

  return in->fleet_partitions > 0 &&
         in->fleet_owned[ownership_store_partition(store_id, in->fleet_partitions)] ==
             INGEST_FLEET_REBUILDING;
}

/*
 * A gain's recovery is done: its state (every instance's checkpoints and
 * the log read to its end) is merged into the loop's for the stores of the
 * partitions it rebuilt, which are taken from now on. Those of other
 * partitions are left as the loop has them: it has been writing them.
 */
static void ingest_fleet_gained(ingest *in, struct ingest_recovery *r)
{
  char list[512];
  size_t merged = 0;

  if (!in->fleet || in->fleet_partitions == 0)
    return;
  if (ingest__state_merge(&in->state, &r->state, ingest_fleet_rebuilt_store, in, &merged)) {
    /* Not taken: a retry of the recovery follows (the partitions wait as GAINING). */
    log_error("ingest", "fleet_gain_failed",
              "instance=%s reason=\"out of memory merging the "
              "state\" action=\"retry\"",
              in->instance_id);
    for (int p = 0; p < in->fleet_partitions; p++) {
      if (in->fleet_owned[p] == INGEST_FLEET_REBUILDING)
        in->fleet_owned[p] = INGEST_FLEET_GAINING;
    }
    return;
  }
  ingest_warn_dropped(in, &r->stats);
  /* What was waited out (or found waited out) now goes in every lease: a later taker of these
   * partitions need not wait for those runs again. */
  ingest__waited_free(&in->waited_out);
  in->waited_out = r->waited_new;
  memset(&r->waited_new, 0, sizeof(r->waited_new));
  ingest_lease_soon(in);
  log_info("ingest", "fleet_taken_over",
           "instance=%s partitions=%s journals=%zu other_checkpoints=%" PRIu64
           " others_running=%u others_writing=%u others_waited_out_before=%u sales_read=%" PRIu64
           " folded=%" PRIu64 " waited_ms=%" PRIu64 " ms=%" PRIu64,
           in->instance_id, ingest_fleet_list(in, INGEST_FLEET_REBUILDING, list, sizeof(list)),
           merged, r->stats.other_checkpoints, r->others_running, r->others_writing,
           r->others_covered, r->stats.records_read[KAFKA_TOPIC_SALES], r->stats.records_folded,
           r->stats.waited_ms, r->stats.elapsed_ms);
  for (int p = 0; p < in->fleet_partitions; p++) {
    if (in->fleet_owned[p] == INGEST_FLEET_REBUILDING)
      in->fleet_owned[p] = INGEST_FLEET_TAKEN;
  }
}

void ingest_fleet_enable(ingest *in) { in->fleet = 1; }

void ingest_fleet_off(ingest *in, const char *reason)
{
  if (!in->fleet)
    return;
  snprintf(in->fleet_off_reason, sizeof(in->fleet_off_reason), "%s",
           reason && reason[0] ? reason : "not joined");
  for (int p = 0; p < in->fleet_partitions; p++)
    in->fleet_owned[p] = INGEST_FLEET_NONE;
}

void ingest_fleet_release(ingest *in, int lost, void (*released)(void *arg), void *arg)
{
  char list[512];

  if (!in->fleet || in->phase == INGEST_PHASE_CLOSING) {
    if (released)
      released(arg);
    return;
  }
  log_info("ingest", "fleet_releasing", "instance=%s partitions=%s batches=%u records=%zu lost=%d",
           in->instance_id, ingest_fleet_list(in, INGEST_FLEET_TAKEN, list, sizeof(list)),
           in->batch_count, in->outstanding, lost);
  for (int p = 0; p < in->fleet_partitions; p++) {
    /* Lost: the group gave them to others already; what they wrote is not in our state. */
    in->fleet_had[p] = !lost && in->fleet_owned[p] == INGEST_FLEET_TAKEN;
    in->fleet_owned[p] = INGEST_FLEET_NONE;
  }
  /* Lost, with records out: they must not land behind the next owner's read. Purged, and
   * waited out by the recovery after the doubt, before the release completes. */
  if (lost && (in->outstanding > 0 || in->batch_count > 0) && !in->doubt) {
    log_warn("ingest", "fleet_lost_with_records_out",
             "instance=%s records=%zu action=\"purge, wait out the requests sent, then release\"",
             in->instance_id, in->outstanding);
    in->doubt = 1;
  }
  in->fleet_releasing = 1;
  in->fleet_release_checkpointed = 0;
  in->fleet_release_started_ms = clock_mono_ms();
  in->fleet_released = released;
  in->fleet_released_arg = arg;
  ingest_fleet_check(in);
}

void ingest_fleet_assign(ingest *in, const uint8_t *owned, int partitions, int rejoined)
{
  char kept[512], gained[512];
  int fresh = 0;
  uint64_t now = clock_mono_ms();
  uint64_t wait = in->request_timeout_ms + INGEST_REQUEST_MARGIN_MS(in->request_timeout_ms);

  if (!in->fleet || partitions <= 0)
    return;
  if (partitions != in->fleet_partitions) {
    uint8_t *o = calloc((size_t)partitions, 1), *h = calloc((size_t)partitions, 1);
    uint8_t *w = calloc((size_t)partitions, 1);
    if (!o || !h || !w) {
      free(o);
      free(h);
      free(w);
      log_error("ingest", "fleet_assign_failed", "instance=%s reason=\"out of memory\"",
                in->instance_id);
      return;
    }
    /* Another partition count (the topic grew): what was written is not known by number. */
    for (int p = 0; p < in->fleet_partitions; p++)
      if (in->fleet_writes[p])
        memset(w, 1, (size_t)partitions);
    free(in->fleet_owned);
    free(in->fleet_had);
    free(in->fleet_writes);
    in->fleet_owned = o;
    in->fleet_had = h;
    in->fleet_writes = w;
    in->fleet_partitions = partitions;
  }
  in->fleet_off_reason[0] = '\0';
  in->fleet_between = 0;
  for (int p = 0; p < partitions; p++) {
    uint8_t was = in->fleet_owned[p];
    if (rejoined) { /* put out of the group meanwhile: nothing held is known to be current */
      in->fleet_had[p] = 0;
      if (was == INGEST_FLEET_TAKEN)
        was = INGEST_FLEET_NONE;
    }
    if (!owned[p]) {
      in->fleet_owned[p] = INGEST_FLEET_NONE;
    } else if (was == INGEST_FLEET_TAKEN || in->fleet_had[p]) {
      in->fleet_owned[p] = INGEST_FLEET_TAKEN;
    } else if (was == INGEST_FLEET_NONE) {
      in->fleet_owned[p] = INGEST_FLEET_GAINING;
      fresh = 1;
    }
    /* GAINING and REBUILDING stay: the same assignment told again (a release
     * comes between two assignments and leaves nothing REBUILDING). */
    in->fleet_had[p] = 0;
    if (owned[p])
      in->fleet_writes[p] = 1;
  }
  /* No record of them before the lease naming them is in Kafka (ingest_takes_store). */
  in->fleet_epoch++;
  ingest_lease_soon(in);
  /* A previous owner that released the partitions has nothing in flight. One that died, or
   * lost them (cut off from the group: it notices when its own session times out, about when
   * the group moved them, and then purges what it has out), sent its last produce requests
   * about by this assignment; they land within the request timeout and its margin. The
   * recovery skips the wait when every other instance stopped cleanly. */
  if (fresh && now + wait > in->fleet_quiet_until_ms)
    in->fleet_quiet_until_ms = now + wait;
  log_info("ingest", "fleet_assigned", "instance=%s kept=%s taking_over=%s of=%d", in->instance_id,
           ingest_fleet_list(in, INGEST_FLEET_TAKEN, kept, sizeof(kept)),
           ingest_fleet_list(in, INGEST_FLEET_GAINING, gained, sizeof(gained)), partitions);
  ingest_fleet_gain(in);
}

static void ingest_recovery_cb(uv_async_t *handle)
{
  ingest *in = handle->data;
  struct ingest_recovery *r;
  const struct ingest_recovery_stats *stats;

  if (!in->recovery || in->phase == INGEST_PHASE_CLOSING)
    return;
  r = ingest__recovery_join(in);
  in->recovery_after_doubt = 0;
  if (r->rc == 0 && r->gain) {
    ingest_fleet_gained(in, r);
    ingest__recovery_free(r);
    ingest_check_doubt(in);
    ingest_fleet_gain(in);
    return;
  }
  if (r->rc) {
    /* A stop (only destroy stops it) or another collector under this instance_id. */
    if (r->clash) {
      log_error("ingest", "instance_id_in_use", "instance=%s reason=\"%s\"", in->instance_id,
                r->clash_why);
      if (in->on_fatal)
        in->on_fatal(in->fatal_arg, r->clash_why);
    }
    ingest__recovery_free(r);
    return;
  }
  if (r->producer) {
    in->rk = r->producer;
    r->producer = NULL;
    if (ingest_topics_open(in))
      log_error("ingest", "topic_handle_failed", "error=%s",
                rd_kafka_err2str(rd_kafka_last_error()));
  }
  assert(in->batch_count == 0 && in->waiter_count == 0);
  ingest__state_free(&in->state);
  in->state = r->state;
  ingest__state_init(&r->state);
  ingest__offsets_free(&in->offsets);
  in->offsets = r->offsets;
  memset(&r->offsets, 0, sizeof(r->offsets));
  in->next_generation = r->next_generation;
  in->live_generation = r->live_generation;
  in->live_parts = r->live_parts;
  in->live_partition = r->live_partition;
  ingest__garbage_free(&in->garbage);
  in->garbage = r->garbage;
  memset(&r->garbage, 0, sizeof(r->garbage));
  in->state_partitions = r->state_partitions;
  for (unsigned i = 0; i < in->reapply_count; i++)
    ingest__rebase_apply(&in->state, in->reapply[i].store_id, in->reapply[i].journal_id,
                         in->reapply[i].from_batch_seq, NULL);
  in->reapply_count = 0;
  stats = &r->stats;
  ingest_warn_dropped(in, stats);
  log_info("ingest", "recovery_done",
           "instance=%s checkpoint_generation=%" PRIu64 " checkpoint_journals=%" PRIu64
           " journals=%zu sales_read=%" PRIu64 " replay_read=%" PRIu64 " dlq_read=%" PRIu64
           " inventory_read=%" PRIu64 " inventory_replay_read=%" PRIu64 " folded=%" PRIu64
           " foreign=%" PRIu64 " manifest_generation=%" PRIu64 " leftover_parts=%" PRIu64
           " previous_closed_cleanly=%d waited_ms=%" PRIu64 " rebases=%" PRIu64
           " attempts=%d ms=%" PRIu64,
           in->instance_id, stats->checkpoint_generation, stats->checkpoint_journals,
           in->state.journal_count, stats->records_read[KAFKA_TOPIC_SALES],
           stats->records_read[KAFKA_TOPIC_REPLAY], stats->records_read[KAFKA_TOPIC_DLQ],
           stats->records_read[KAFKA_TOPIC_INVENTORY],
           stats->records_read[KAFKA_TOPIC_INVENTORY_REPLAY], stats->records_folded,
           stats->records_foreign, stats->manifest_generation, stats->leftover_parts,
           stats->previous_closed_cleanly, stats->waited_ms, stats->rebases, stats->attempts,
           stats->elapsed_ms);
  /* When the log added to the checkpoint, write the rebuilt map soon, so
   * that the next rebuild reads less; when parts of other generations are
   * left, the next checkpoint's manifest lets them be tombstoned. */
  if (stats->records_folded > 0 || in->garbage.count > 0) {
    in->dirty = 1;
    in->next_checkpoint_ms = clock_mono_ms();
  }
  ingest__recovery_free(r);
  in->phase = INGEST_PHASE_READY;
  /* The id is this run's from now on: claimed at once, then renewed from the tick. */
  if (!in->embedded && !in->lease_held) {
    in->lease_held = 1;
    in->lease_next_ms = clock_mono_ms();
    if (ingest_lease_write(in, 0) == 0)
      in->lease_next_ms += INGEST_LEASE_RENEW_MS;
  }
  if (in->rk)
    rd_kafka_poll(in->rk, 0);
  if (in->rk_aux)
    rd_kafka_poll(in->rk_aux, 0);
  ingest_check_doubt(in);
  ingest_fleet_gain(in);
  if (!in->started) {
    in->started = 1;
    if (in->on_started)
      in->on_started(in->fatal_arg);
  }
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                                */
/* ------------------------------------------------------------------------ */

static void ingest_free(ingest *in)
{
  if (in->wake_fds[0] >= 0)
    close(in->wake_fds[0]);
  if (in->wake_fds[1] >= 0)
    close(in->wake_fds[1]);
  ingest__state_free(&in->state);
  ingest__offsets_free(&in->offsets);
  ingest__garbage_free(&in->garbage);
  ingest__waited_free(&in->waited_out);
  free(in->fleet_owned);
  free(in->fleet_had);
  free(in->fleet_writes);
  free(in->brokers);
  free(in->instance_id);
  free(in->kafka_debug);
  free(in);
}

static void ingest_handle_closed(uv_handle_t *handle)
{
  ingest *in = handle->data;
  if (--in->handles_open == 0)
    ingest_free(in);
}

static void ingest_close_handles(ingest *in)
{
  uv_handle_t *handles[3] = {(uv_handle_t *)&in->wake_poll, (uv_handle_t *)&in->tick,
                             (uv_handle_t *)&in->recovery_async};
  int open = in->handles_open;

  if (open == 0) {
    ingest_free(in);
    return;
  }
  /* Handles are initialised in this order; only those are closed. */
  for (int i = 0; i < open; i++)
    uv_close(handles[i], ingest_handle_closed);
}

static char *ingest_strdup_or(const char *value, const char *fallback)
{
  return strdup(value && value[0] ? value : fallback);
}

/*
 * Test hooks from the environment, for the e2e tests of checkpoints: a part
 * size small enough that a few journals make a multi-part checkpoint, and a
 * kill between two records of one checkpoint; for the e2e test of
 * inventory deltas, a kill half-way through a batch's deltas. Each is
 * logged when set.
 */
static void ingest_test_hooks(ingest *in)
{
#ifndef POS_TESTING
  /* Builds without the tests (-DPOS_TESTS=OFF: packages, firmware) ignore
   * the environment: a collector must never kill itself on a variable. */
  (void)in;
#else
  const char *part_bytes = getenv("POS_TEST_CHECKPOINT_PART_BYTES");
  const char *kill_after = getenv("POS_TEST_KILL_AFTER_CHECKPOINT_RECORDS");
  const char *kill_after_deltas = getenv("POS_TEST_KILL_AFTER_DELTA_RECORDS");
  unsigned long value;
  char *end;

  if (part_bytes && part_bytes[0]) {
    value = strtoul(part_bytes, &end, 10);
    if (*end == '\0' && value >= 1 && value <= INGEST_CHECKPOINT_PART_BYTES) {
      in->checkpoint_part_bytes = value;
      log_warn("ingest", "test_hook", "POS_TEST_CHECKPOINT_PART_BYTES=%lu", value);
    }
  }
  if (kill_after && kill_after[0]) {
    value = strtoul(kill_after, &end, 10);
    if (*end == '\0' && value >= 1 && value <= INGEST_MAX_CHECKPOINT_PARTS) {
      in->test_kill_after_checkpoint_records = (unsigned)value;
      log_warn("ingest", "test_hook", "POS_TEST_KILL_AFTER_CHECKPOINT_RECORDS=%lu", value);
    }
  }
  if (kill_after_deltas && kill_after_deltas[0]) {
    value = strtoul(kill_after_deltas, &end, 10);
    if (*end == '\0' && value >= 1 && value <= 1000000000ul) {
      in->test_kill_after_delta_records = (unsigned)value;
      log_warn("ingest", "test_hook", "POS_TEST_KILL_AFTER_DELTA_RECORDS=%lu", value);
    }
  }
#endif
}

ingest *ingest_create(uv_loop_t *loop, const struct ingest_options *options, char *err,
                      size_t err_size)
{
  ingest *in = calloc(1, sizeof(*in));
  const char *prefix = options->topic_prefix ? options->topic_prefix : "pos.";
  int partitions =
      options->embedded_partitions > 0 ? options->embedded_partitions : INGEST_DEFAULT_PARTITIONS;
  int rc;

  if (!in) {
    snprintf(err, err_size, "out of memory creating the ingest");
    return NULL;
  }
  in->loop = loop;
  in->wake_fds[0] = in->wake_fds[1] = -1;
  in->phase = INGEST_PHASE_RECOVERING;
  in->next_generation = 1;
  in->checkpoint_interval_ms = options->checkpoint_interval_ms
                                   ? options->checkpoint_interval_ms
                                   : INGEST_DEFAULT_CHECKPOINT_MS;
  in->produce_timeout_ms =
      options->produce_timeout_ms ? options->produce_timeout_ms : INGEST_DEFAULT_PRODUCE_TIMEOUT_MS;
  in->request_timeout_ms = options->request_timeout_ms ? options->request_timeout_ms
                                                       : KAFKA_PRODUCE_REQUEST_TIMEOUT_MS;
  in->checkpoint_part_bytes = INGEST_CHECKPOINT_PART_BYTES;
  ingest_test_hooks(in);
  in->instance_id = ingest_strdup_or(options->instance_id, "pos-collector");
  in->kafka_debug = options->kafka_debug ? strdup(options->kafka_debug) : NULL;
  if (!in->instance_id || (options->kafka_debug && !in->kafka_debug)) {
    snprintf(err, err_size, "out of memory creating the ingest");
    goto fail;
  }
  if (strlen(in->instance_id) > 200) {
    snprintf(err, err_size, "instance_id \"%.40s...\" is longer than 200 characters",
             in->instance_id);
    goto fail;
  }
  /* It starts every key of the instance in ingest-state.v1 ("<id>/<generation>/<part>",
   * "<id>/lease"): a '/' could make one instance's key another's. */
  if (strchr(in->instance_id, '/')) {
    snprintf(err, err_size,
             "instance_id \"%.60s\" holds a '/': use letters, digits, '.', '_' "
             "or '-'",
             in->instance_id);
    goto fail;
  }
  in->on_fatal = options->on_fatal;
  in->on_started = options->on_started;
  in->fatal_arg = options->fatal_arg;
  in->started_wall_ms = clock_wall_ms();
  ingest_draw_run_id(in->run_id);
  if (gethostname(in->host, sizeof(in->host)) != 0)
    in->host[0] = '\0';
  in->host[sizeof(in->host) - 1] = '\0';
  for (int t = 0; t < KAFKA_TOPIC_COUNT; t++) {
    if (kafka_topic_name(prefix, (enum kafka_topic)t, in->topics[t], sizeof(in->topics[t]))) {
      snprintf(err, err_size,
               "topic prefix \"%.60s\" does not make valid Kafka topic names (use [A-Za-z0-9._-])",
               prefix);
      goto fail;
    }
  }
  if (!options->brokers || !options->brokers[0]) {
    in->embedded = kafka_embedded_start(1, partitions, prefix, err, err_size);
    if (!in->embedded)
      goto fail;
    in->brokers = strdup(kafka_embedded_bootstrap(in->embedded));
    log_info("ingest", "embedded_kafka", "bootstrap=%s partitions=%d topic_prefix=%s",
             kafka_embedded_bootstrap(in->embedded), partitions, prefix);
  } else {
    in->brokers = strdup(options->brokers);
  }
  if (!in->brokers) {
    snprintf(err, err_size, "out of memory creating the ingest");
    goto fail;
  }
  if (pipe(in->wake_fds)) {
    snprintf(err, err_size, "cannot create the Kafka wake-up pipe: %s", strerror(errno));
    in->wake_fds[0] = in->wake_fds[1] = -1;
    goto fail;
  }
  for (int i = 0; i < 2; i++) {
    fcntl(in->wake_fds[i], F_SETFL, fcntl(in->wake_fds[i], F_GETFL) | O_NONBLOCK);
    fcntl(in->wake_fds[i], F_SETFD, FD_CLOEXEC);
  }
  in->rk = ingest__producer_new(in, err, err_size);
  if (!in->rk)
    goto fail;
  in->rk_aux = ingest_producer_make(in, 1, err, err_size);
  if (!in->rk_aux)
    goto fail;
  if (ingest_topics_open(in) || ingest_aux_topics_open(in)) {
    snprintf(err, err_size, "cannot open Kafka topic handles: %s",
             rd_kafka_err2str(rd_kafka_last_error()));
    goto fail;
  }
  in->wake_poll.data = in->tick.data = in->recovery_async.data = in;
  /* handles_open counts the handles initialised so far, in this order. */
  rc = uv_poll_init(loop, &in->wake_poll, in->wake_fds[0]);
  if (!rc) {
    in->handles_open++;
    rc = uv_timer_init(loop, &in->tick);
  }
  if (!rc) {
    in->handles_open++;
    rc = uv_async_init(loop, &in->recovery_async, ingest_recovery_cb);
  }
  if (rc) {
    snprintf(err, err_size, "cannot set up libuv handles for Kafka: %s", uv_strerror(rc));
    goto fail;
  }
  in->handles_open++;
  uv_poll_start(&in->wake_poll, UV_READABLE, ingest_wake_cb);
  uv_timer_start(&in->tick, ingest_tick_cb, INGEST_TICK_MS, INGEST_TICK_MS);
  if (ingest__recovery_start(in, NULL, 0)) {
    snprintf(err, err_size, "cannot start the state recovery thread");
    goto fail;
  }
  log_info("ingest", "started",
           "brokers=%s instance=%s topic_prefix=%s checkpoint_interval_ms=%" PRIu64
           " produce_timeout_ms=%" PRIu64,
           in->brokers, in->instance_id, prefix, in->checkpoint_interval_ms,
           in->produce_timeout_ms);
  return in;
fail:
  ingest_topics_close(in);
  if (in->rk)
    rd_kafka_destroy(in->rk);
  in->rk = NULL;
  ingest_aux_close(in);
  kafka_embedded_stop(in->embedded);
  in->embedded = NULL;
  /* Handles already initialised are freed in their close callbacks. */
  ingest_close_handles(in);
  return NULL;
}

const char *ingest_bootstrap(const ingest *in) { return in->brokers; }

int ingest_ready(const ingest *in)
{
  if (in->phase != INGEST_PHASE_READY || in->doubt || (!in->embedded && !in->lease_landed))
    return 0;
  if (!in->fleet)
    return 1;
  /* In a fleet: assigned its partitions (none is fine), and none of them still being taken over. */
  if (in->fleet_partitions == 0 || in->fleet_releasing || in->fleet_between)
    return 0;
  for (int p = 0; p < in->fleet_partitions; p++) {
    if (in->fleet_owned[p] == INGEST_FLEET_GAINING || in->fleet_owned[p] == INGEST_FLEET_REBUILDING)
      return 0;
  }
  return 1;
}

int ingest_takes_stores(const ingest *in, char *reason, size_t reason_size)
{
  if (in->phase != INGEST_PHASE_READY) {
    snprintf(reason, reason_size, "%s",
             in->phase == INGEST_PHASE_RECOVERING ? "rebuilding the exactly-once state from Kafka"
             : in->phase == INGEST_PHASE_DRAINING
                 ? "waiting for Kafka to answer every record in flight (delivery in doubt)"
                 : "stopping");
    return 0;
  }
  if (!in->embedded && !in->lease_landed) {
    snprintf(reason, reason_size, "starting: claiming instance_id %s in Kafka", in->instance_id);
    return 0;
  }
  if (in->doubt) {
    snprintf(reason, reason_size,
             "Kafka lost records in flight: rebuilding the exactly-once state before taking "
             "batches again");
    return 0;
  }
  if (in->fleet && in->fleet_off_reason[0]) {
    snprintf(reason, reason_size, "in no collectors' group: %s", in->fleet_off_reason);
    return 0;
  }
  if (in->fleet && in->fleet_partitions == 0) {
    snprintf(reason, reason_size, "joining the collectors' group: no partitions yet");
    return 0;
  }
  return 1;
}

/* Waits until `deadline` for what is in flight on both producers. */
static void ingest_flush_until(ingest *in, uint64_t deadline, int checkpoint_only)
{
  while (clock_mono_ms() < deadline &&
         (checkpoint_only ? in->checkpoint != NULL
                          : in->outstanding + in->outstanding_aux > 0)) {
    uint64_t left = deadline - clock_mono_ms();
    int slice = left < 50 ? (int)left : 50;
    if (in->rk)
      rd_kafka_flush(in->rk, slice);
    if (in->rk_aux)
      rd_kafka_flush(in->rk_aux, slice);
  }
}

/* ingest_destroy's Kafka part: let what is in flight land (delivery reports
 * answer their batches), write the closing checkpoint, purge the rest and
 * destroy both producers. */
static int ingest_destroy_flush(ingest *in, int was_ready, uint64_t deadline)
{
  int clean;

  /* The instance_id is free for the next run: released before the drain, which may use up
   * the deadline (a renewal still in flight is waited for first, briefly). */
  if (in->lease_held && in->rk_aux) {
    for (int i = 0; i < 50 && in->lease_inflight && clock_mono_ms() < deadline; i++)
      rd_kafka_poll(in->rk_aux, 10);
    (void)ingest_lease_write(in, 1);
  }
  ingest_flush_until(in, deadline, 0);
  clean = in->outstanding == 0 && !in->doubt;
  /* Nothing outstanding: no record of this run can land later, which the
   * final manifest says, so that the next start need not wait. */
  if (in->rk && in->rk_aux && was_ready && !in->doubt && in->outstanding == 0 &&
      !in->checkpoint) {
    ingest_checkpoint_write(in, 1);
    ingest_flush_until(in, deadline, 1);
  }
  /* Whether the release (written first, above) reached Kafka: the next run under the id
   * then need not watch for this one. */
  if (in->lease_release_state == 1 && in->rk_aux) {
    uint64_t now = clock_mono_ms();
    for (int i = 0; i < 200 && in->lease_inflight && now < deadline; i++, now = clock_mono_ms())
      rd_kafka_poll(in->rk_aux, 10);
  }
  if (in->lease_release_state == 2)
    log_info("ingest", "lease_released", "instance=%s", in->instance_id);
  else if (in->lease_held)
    log_warn("ingest", "lease_not_released",
             "instance=%s why=\"Kafka did not acknowledge the release in time\" effect=\"the "
             "next start under this instance_id waits about 11 s to see that this run is gone\"",
             in->instance_id);
  /* Whatever is left will not be waited for: its reports come back as
   * purge failures and answer UNAVAILABLE. */
  if (in->rk)
    rd_kafka_purge(in->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  if (in->rk_aux)
    rd_kafka_purge(in->rk_aux, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  for (int i = 0; i < 100 && in->outstanding + in->outstanding_aux > 0; i++) {
    if (in->rk)
      rd_kafka_poll(in->rk, 10);
    if (in->rk_aux)
      rd_kafka_poll(in->rk_aux, 10);
  }
  if (in->outstanding + in->outstanding_aux > 0)
    log_warn("ingest", "destroy_outstanding", "records=%zu aux_records=%zu", in->outstanding,
             in->outstanding_aux);
  ingest_topics_close(in);
  if (in->rk)
    rd_kafka_destroy(in->rk);
  in->rk = NULL;
  ingest_aux_close(in);
  return clean;
}

int ingest_destroy(ingest *in, uint64_t timeout_ms)
{
  uint64_t deadline;
  int was_ready, clean;

  if (!in)
    return 1;
  deadline = clock_mono_ms() + timeout_ms;
  was_ready = in->phase == INGEST_PHASE_READY && !in->doubt; /* the fleet aside */
  in->phase = INGEST_PHASE_CLOSING;
  if (in->recovery) {
    struct ingest_recovery *r = in->recovery;
    atomic_store(&r->stop, 1);
    ingest__recovery_free(ingest__recovery_join(in));
  }
  clean = ingest_destroy_flush(in, was_ready, deadline);
  /* Anything still held (only when Kafka never answered a purge) is
   * answered and freed here; librdkafka is gone, so no report can follow. */
  while (in->waiters_head) {
    struct ingest_waiter *w = in->waiters_head;
    in->waiters_head = w->next;
    in->waiter_count--;
    proto_batch_free(w->batch);
    ingest_reply_unavailable(w->done, w->arg, INGEST_RETRY_OVERLOADED_S,
                             "the collector is shutting down");
    free(w);
  }
  in->waiters_tail = NULL;
  while (in->batches) {
    struct ingest_batch *b = in->batches;
    in->batches = b->next;
    in->batch_count--;
    b->journal->inflight = NULL;
    if (!b->answered)
      ingest_reply_unavailable(b->done, b->arg, INGEST_RETRY_OVERLOADED_S,
                               "the collector is shutting down");
    ingest_batch_free(b);
  }
  while (in->rebases) {
    struct ingest_rebase *rb = in->rebases;
    in->rebases = rb->next;
    ingest_reply_unavailable(rb->done, rb->arg, INGEST_RETRY_OVERLOADED_S,
                             "the collector is shutting down; the rebase may or may not be "
                             "recorded: send it again");
    free(rb);
  }
  while (in->heartbeats) {
    struct ingest_heartbeat *h = in->heartbeats;
    in->heartbeats = h->next;
    if (!h->answered)
      ingest_reply_unavailable(h->done, h->arg, INGEST_RETRY_OVERLOADED_S,
                               "the collector is shutting down");
    free(h);
  }
  if (in->checkpoint) {
    free(in->checkpoint->records);
    free(in->checkpoint);
    in->checkpoint = NULL;
  }
  kafka_embedded_stop(in->embedded);
  in->embedded = NULL;
  log_info("ingest", "stopped", "instance=%s", in->instance_id);
  ingest_close_handles(in);
  return clean;
}
