/*
 * routes.c - the collector's HTTP API over mutual TLS: who is calling,
 * what they sent, and the answer the wire protocol defines.
 */
#include "server/routes.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "platform/clock.h"
#include "platform/log.h"
#include "proto/codec.h"
#include "server/admin.h"
#include "server/collector_metrics.h"
#include "server/identity.h"

/* Batches of one store that may wait behind the one in progress; more are answered 503. */
#define ROUTES_MAX_QUEUED_PER_STORE 8

struct routes_store;

/*
 * A batch body on its way to the ingest: decompressed, counted and decoded
 * on a libuv worker (uv_queue_work), then checked against the certificate
 * and handed to the ingest on the loop. It lives until the batch is
 * answered, whatever the answer.
 */
struct routes_decode {
  uv_work_t work;
  routes *routes;
  struct routes_store *store;
  struct routes_decode *next; /* the next batch of the same store, in arrival order */
  http_exchange *exchange;
  struct identity id;
  const uint8_t *body; /* the exchange's, which lives until it is answered */
  size_t body_len;
  struct proto_limits limits;
  Pos__V1__Batch *batch; /* the worker's result, with rc and err */
  int rc;
  char err[256];
  uint64_t arrived_ns; /* uv_hrtime() when the request was read whole */
  unsigned delay_ms;   /* test hook, 0 otherwise */
};

/*
 * A store with a batch in progress (being decoded, or with the ingest until
 * it is answered). Its later batches wait here, in arrival order, and the
 * next one is decoded only once the previous one is answered: the ingest
 * sees a store's batches in the order they came, as it did when they were
 * decoded on the loop (batch 6 decoded before batch 5 would be a gap).
 */
struct routes_store {
  struct routes_store *prev, *next;
  char store_id[IDENTITY_ID_MAX + 1];
  struct routes_decode *head, *tail; /* head: the batch in progress */
  unsigned queued;                   /* behind the head */
};

struct routes {
  uv_loop_t *loop;
  ingest *ingest;
  est *est; /* NULL: no enrolment */
  control *control;
  struct routes_options options;
  struct routes_store *stores; /* those with a batch in progress */
  unsigned decoding;           /* uv_queue_work requests not yet back on the loop */
  int closing;                 /* routes_close: nothing more reaches the ingest */
  unsigned test_decode_delay_ms;
  size_t test_decode_delay_bytes;
};

/* A batch waiting for Kafka. */
struct routes_pending {
  const routes *routes;
  struct routes_decode *decode; /* a batch's: released once it is answered */
  http_exchange *exchange;
  uint8_t journal_id[16];
  char store_id[IDENTITY_ID_MAX + 1];
  char device_id[IDENTITY_ID_MAX + 1];
  uint64_t batch_seq;
  int heartbeat;
  uint8_t *heartbeat_copy; /* the heartbeat as produced, for the fleet view once accepted */
  size_t heartbeat_copy_len;
  char admin[IDENTITY_ID_MAX + 1]; /* rebase: who approved it */
  uint64_t started_ns;             /* uv_hrtime() when the request was read whole */
};

/* A refusal's reason for the metrics, from its status: a word, never the
 * message (whose text varies). */
static const char *routes_status_reason(int status)
{
  switch (status) {
  case 400:
    return "bad_request";
  case 403:
    return "forbidden";
  case 404:
    return "no_such_endpoint";
  case 405:
    return "method_not_allowed";
  case 409:
    return "batch_seq_gap";
  case 413:
    return "too_large";
  case 415:
    return "unsupported_media_type";
  case 503:
    return "unavailable";
  }
  return "other";
}

static void routes_respond_text(http_exchange *exchange, int status, const char *message,
                                const char *extra_headers)
{
  char body[512];
  int len = snprintf(body, sizeof(body), "%s\n", message);
  collector_metrics_refusal(status, routes_status_reason(status));
  if (len < 0 || (size_t)len >= sizeof(body))
    len = (int)sizeof(body) - 1;
  http_exchange_respond(exchange, status, "text/plain; charset=utf-8", extra_headers, body,
                        (size_t)len);
}

/* Answers with a packed BatchAck (200 and 409 carry one; so do errors, for their message). */
static void routes_respond_ack(http_exchange *exchange, int status, Pos__V1__BatchAck *ack,
                               const char *extra_headers)
{
  size_t len = pos__v1__batch_ack__get_packed_size(ack);
  uint8_t *packed = malloc(len ? len : 1);
  const ProtobufCEnumValue *code =
      protobuf_c_enum_descriptor_get_value(&pos__v1__batch_ack_code__descriptor, ack->code);

  /* The ack's code names the reason when it has one (IDENTITY_MISMATCH, ...). */
  if (status >= 400)
    collector_metrics_refusal(status, ack->code && code ? code->name
                                                        : routes_status_reason(status));
  if (!packed) {
    routes_respond_text(exchange, 503, "collector out of memory", "Retry-After: 5\r\n");
    return;
  }
  pos__v1__batch_ack__pack(ack, packed);
  http_exchange_respond(exchange, status, "application/x-protobuf", extra_headers, packed, len);
  free(packed);
}

/* Fills the caller's identity and returns 0, or answers 403 and returns -1. */
static int routes_identify(http_exchange *exchange, struct identity *id)
{
  char err[256];
  if (identity_from_cert(http_exchange_peer_cert(exchange), id, err, sizeof(err)) == 0)
    return 0;
  log_warn("server", "refused", "peer=%s status=403 reason=\"%s\"", http_exchange_peer(exchange),
           err);
  routes_respond_text(exchange, 403, err, NULL);
  return -1;
}

static void routes_decode_release(routes *r, struct routes_decode *d);

static void routes_on_batch_done(void *arg, const struct ingest_result *result)
{
  struct routes_pending *pending = arg;
  Pos__V1__BatchAck ack = POS__V1__BATCH_ACK__INIT;

  collector_metrics_batch(pending->store_id, pending->started_ns, result);
  Pos__V1__Limits limits = POS__V1__LIMITS__INIT;
  char journal_hex[33];
  char retry[48];

  proto_journal_id_format(pending->journal_id, journal_hex);
  ack.journal_id.data = pending->journal_id;
  ack.journal_id.len = sizeof(pending->journal_id);
  ack.acked_batch_seq = result->acked_batch_seq;
  ack.limits = &limits;
  /* Tell the agent our limits, so it can size its batches to them. */
  limits.max_batch_bytes = pending->routes->options.max_body_bytes;
  limits.max_batch_decoded_bytes = pending->routes->options.max_decoded_bytes;
  limits.max_sales_per_batch = (uint32_t)pending->routes->options.max_sales_per_batch;
  /* And the zstd dictionaries we decode: the agent uses one only then. */
  proto_limits_advertise_dictionaries(&limits);
  switch (result->outcome) {
  case INGEST_ACCEPTED:
  case INGEST_DUPLICATE:
    ack.duplicate = result->outcome == INGEST_DUPLICATE;
    /* Head office's commands ride on every 200 (spec10.md). */
    control_batch_seen(pending->routes->control, pending->store_id, pending->device_id);
    ack.n_commands = control_ack_commands(pending->routes->control, pending->store_id,
                                          pending->device_id, &ack.commands);
    log_info("server", "batch_acked",
             "store=%s journal=%s batch_seq=%llu produced=%u dead_lettered=%u skipped=%u "
             "duplicate=%d",
             pending->store_id, journal_hex, (unsigned long long)pending->batch_seq,
             result->produced, result->dead_lettered, result->skipped, ack.duplicate);
    routes_respond_ack(pending->exchange, 200, &ack, NULL);
    control_ack_free(ack.commands, ack.n_commands);
    break;
  case INGEST_REFUSED:
    ack.code = (Pos__V1__BatchAckCode)result->code;
    ack.message = (char *)(uintptr_t)result->message;
    log_warn("server", "batch_refused", "store=%s journal=%s batch_seq=%llu status=403 code=%d "
             "reason=\"%s\"", pending->store_id, journal_hex,
             (unsigned long long)pending->batch_seq, result->code, result->message);
    routes_respond_ack(pending->exchange, 403, &ack, NULL);
    break;
  case INGEST_GAP:
    /* After a collector restart expected_batch_seq may be at or below what
     * was acknowledged before it: the log cannot say whether its newest
     * batch was produced whole (pos.proto, BatchAck). */
    ack.code = (Pos__V1__BatchAckCode)result->code;
    ack.expected_batch_seq = result->expected_batch_seq;
    ack.message = (char *)(uintptr_t)result->message;
    log_warn("server", "batch_gap", "store=%s journal=%s batch_seq=%llu expected=%llu",
             pending->store_id, journal_hex, (unsigned long long)pending->batch_seq,
             (unsigned long long)result->expected_batch_seq);
    routes_respond_ack(pending->exchange, 409, &ack, NULL);
    break;
  case INGEST_UNAVAILABLE:
  default:
    ack.code = (Pos__V1__BatchAckCode)result->code;
    ack.message = (char *)(uintptr_t)result->message;
    /* Another instance's store: the agent's retry must open a new connection, which the load
     * balancer may send to the owner (on this one it would reach this instance again). */
    if (result->code == POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_ANOTHER_INSTANCE)
      http_exchange_close_after(pending->exchange);
    snprintf(retry, sizeof(retry), "Retry-After: %d\r\n",
             result->retry_after_s > 0 ? result->retry_after_s : 5);
    /* Another instance's store is the fleet's routine, not a trouble. */
    log_event(ack.code ? LOG_INFO : LOG_WARN, "server", "batch_unavailable",
              "store=%s journal=%s batch_seq=%llu reason=\"%s\"", pending->store_id, journal_hex,
              (unsigned long long)pending->batch_seq, result->message);
    routes_respond_ack(pending->exchange, 503, &ack, retry);
    break;
  }
  /* Answered: the store's next batch may be decoded now. */
  routes_decode_release(pending->decode->routes, pending->decode);
  free(pending);
}

static int routes_is_protobuf(http_exchange *exchange)
{
  const char *type = http_exchange_header(exchange, "Content-Type");
  return type && strncasecmp(type, "application/x-protobuf", 22) == 0;
}

/* 403 for a batch whose envelope names another store or device than the certificate: a
 * BatchAck with BATCH_ACK_CODE_IDENTITY_MISMATCH, so that the agent need not read prose. */
static void routes_refuse_identity(http_exchange *exchange, int batch, const char *message)
{
  Pos__V1__BatchAck ack = POS__V1__BATCH_ACK__INIT;

  if (!batch) {
    routes_respond_text(exchange, 403, message, NULL);
    return;
  }
  ack.code = POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_IDENTITY_MISMATCH;
  ack.message = (char *)(uintptr_t)message;
  routes_respond_ack(exchange, 403, &ack, NULL);
}

/*
 * The device is the certificate's, never the body's: a body naming another
 * device is answered 403 (returns -1); an empty one gets the certificate's
 * (*device_id, owned by the protobuf message, is replaced; in `batch`, a
 * pooled batch, with proto_batch_set_string; NULL for a heartbeat). 0 on success.
 */
static int routes_device_from_cert(http_exchange *exchange, const struct identity *id,
                                   char **device_id, Pos__V1__Batch *batch)
{
  char message[320];
  char *copy;

  if (*device_id && (*device_id)[0] && strcmp(*device_id, id->device_id) != 0) {
    snprintf(message, sizeof(message),
             "the certificate is for device %s of store %s but the body names device %.64s",
             id->device_id, id->store_id, *device_id);
    log_warn("server", "refused", "peer=%s store=%s device=%s status=403 reason=\"%s\"",
             http_exchange_peer(exchange), id->store_id, id->device_id, message);
    routes_refuse_identity(exchange, batch != NULL, message);
    return -1;
  }
  if (batch) {
    if (proto_batch_set_string(batch, device_id, id->device_id) == 0)
      return 0;
    routes_respond_text(exchange, 503, "collector out of memory", "Retry-After: 5\r\n");
    return -1;
  }
  copy = strdup(id->device_id);
  if (!copy) {
    routes_respond_text(exchange, 503, "collector out of memory", "Retry-After: 5\r\n");
    return -1;
  }
  if (*device_id && *device_id != protobuf_c_empty_string)
    free(*device_id);
  *device_id = copy;
  return 0;
}

/* Frees a decode and its batch (if any); it must be out of its store's queue. */
static void routes_decode_free(struct routes_decode *d)
{
  if (d->batch)
    proto_batch_free(d->batch);
  free(d);
}

/* Worker thread: the body's zstd frames, the census of its wire bytes, the unpack and the
 * ingest's look at each sale (ingest_prepare_batch). */
static void routes_decode_work(uv_work_t *work)
{
  struct routes_decode *d = work->data;

#ifdef POS_TESTING
  if (d->delay_ms) {
    struct timespec delay = {(time_t)(d->delay_ms / 1000), (long)(d->delay_ms % 1000) * 1000000L};
    nanosleep(&delay, NULL);
  }
#endif
  d->rc = proto_batch_unpack_pooled(d->body, d->body_len, &d->limits, &d->batch, d->err,
                                    sizeof(d->err));
  /* What the ingest needs of each sale, while the sales are in this core's cache. */
  if (d->rc == 0)
    (void)ingest_prepare_batch(d->batch, d->id.store_id);
}

static void routes_decode_after(uv_work_t *work, int status);

/* Sends the store's batch in progress to a worker. Loop thread. */
static void routes_decode_start(routes *r, struct routes_decode *d)
{
  int rc;

  assert(d->store->head == d);
#ifdef POS_TESTING
  if (r->test_decode_delay_ms && d->body_len >= r->test_decode_delay_bytes) {
    d->delay_ms = r->test_decode_delay_ms;
    log_warn("server", "test_hook", "decode_delayed store=%s delay_ms=%u body_bytes=%zu",
             d->id.store_id, d->delay_ms, d->body_len);
  }
#endif
  d->work.data = d;
  rc = uv_queue_work(r->loop, &d->work, routes_decode_work, routes_decode_after);
  if (rc == 0) {
    r->decoding++;
    return;
  }
  /* libuv refuses only bad arguments; decode here rather than drop the batch. */
  routes_decode_work(&d->work);
  r->decoding++;
  routes_decode_after(&d->work, 0);
}

/*
 * A batch of the store was answered (d, the store's head): the next one
 * that waits is decoded now, or, once the routes are closing, answered 503
 * with every other one that waits. Frees d. Loop thread.
 */
static void routes_decode_release(routes *r, struct routes_decode *d)
{
  struct routes_store *store = d->store;

  assert(store->head == d);
  store->head = d->next;
  routes_decode_free(d);
  while (store->head && r->closing) {
    d = store->head;
    store->head = d->next;
    store->queued--;
    routes_respond_text(d->exchange, 503, "the collector is shutting down", "Retry-After: 5\r\n");
    routes_decode_free(d);
  }
  if (store->head) {
    store->queued--;
    routes_decode_start(r, store->head);
    return;
  }
  if (store->prev)
    store->prev->next = store->next;
  else
    r->stores = store->next;
  if (store->next)
    store->next->prev = store->prev;
  free(store);
}

/* A batch's refusal before the ingest: answered, then the store's next batch goes. */
static void routes_decode_refuse(routes *r, struct routes_decode *d, int status,
                                 const char *message)
{
  log_warn("server", "batch_refused", "peer=%s store=%s device=%s status=%d reason=\"%s\"",
           http_exchange_peer(d->exchange), d->id.store_id, d->id.device_id, status, message);
  routes_respond_text(d->exchange, status, message, status == 503 ? "Retry-After: 5\r\n" : NULL);
  routes_decode_release(r, d);
}

/*
 * Loop thread, once the worker has decoded d's body (status 0) or libuv
 * cancelled it: the checks against the certificate, then the ingest. While
 * the routes are closing (routes_close) the batch goes no further: it was
 * never acknowledged, so the agent sends it again.
 */
static void routes_decode_after(uv_work_t *work, int status)
{
  struct routes_decode *d = work->data;
  routes *r = d->routes;
  const struct identity *id = &d->id;
  Pos__V1__Batch *batch = d->batch;
  struct routes_pending *pending;

  assert(r->decoding > 0);
  r->decoding--;
  if (status != 0 || r->closing) {
    routes_respond_text(d->exchange, 503, "the collector is shutting down", "Retry-After: 5\r\n");
    routes_decode_release(r, d);
    return;
  }
  if (d->rc) {
    int code = d->rc == PROTO_ETOOBIG || d->rc == PROTO_ETOOMANY ? 413
               : d->rc == PROTO_ENOMEM                          ? 503
                                                                : 400;
    if (d->rc == PROTO_EENVELOPE && strstr(d->err, "sales, over the limit"))
      code = 413;
    routes_decode_refuse(r, d, code, d->err);
    return;
  }
  if (strcmp(batch->envelope->store_id, id->store_id) != 0) {
    char message[256];
    snprintf(message, sizeof(message),
             "the certificate is for store %s but the batch is for store %s", id->store_id,
             batch->envelope->store_id);
    log_warn("server", "batch_refused", "peer=%s store=%s device=%s status=403 reason=\"%s\"",
             http_exchange_peer(d->exchange), id->store_id, id->device_id, message);
    routes_refuse_identity(d->exchange, 1, message);
    routes_decode_release(r, d);
    return;
  }
  if (routes_device_from_cert(d->exchange, id, &batch->envelope->device_id, batch)) {
    routes_decode_release(r, d);
    return;
  }
  pending = calloc(1, sizeof(*pending));
  if (!pending) {
    routes_decode_refuse(r, d, 503, "collector out of memory");
    return;
  }
  pending->routes = r;
  pending->decode = d;
  pending->exchange = d->exchange;
  memcpy(pending->journal_id, batch->envelope->journal_id.data, sizeof(pending->journal_id));
  snprintf(pending->store_id, sizeof(pending->store_id), "%s", id->store_id);
  snprintf(pending->device_id, sizeof(pending->device_id), "%s", id->device_id);
  pending->batch_seq = batch->envelope->batch_seq;
  pending->started_ns = d->arrived_ns;
  d->batch = NULL; /* the ingest's now */
  ingest_submit_batch(r->ingest, id->store_id, batch, routes_on_batch_done, pending);
}

/* The store's entry among those with a batch in progress, or NULL. */
static struct routes_store *routes_store_find(const routes *r, const char *store_id)
{
  for (struct routes_store *store = r->stores; store; store = store->next)
    if (strcmp(store->store_id, store_id) == 0)
      return store;
  return NULL;
}

/*
 * POST /v1/batches: the body goes to a worker to be decoded (the loop
 * only serves connections and Kafka), behind any batch of the same store
 * still in progress.
 */
static void routes_batches(routes *r, http_exchange *exchange, const struct identity *id)
{
  const char *encoding = http_exchange_header(exchange, "Content-Encoding");
  struct routes_store *store;
  struct routes_decode *d;
  char message[256];

  if (!routes_is_protobuf(exchange) || !encoding || strcasecmp(encoding, "zstd") != 0) {
    routes_respond_text(exchange, 415,
                        "a batch is sent as Content-Type: application/x-protobuf with "
                        "Content-Encoding: zstd",
                        NULL);
    return;
  }
  store = routes_store_find(r, id->store_id);
  if (store && store->queued >= ROUTES_MAX_QUEUED_PER_STORE) {
    snprintf(message, sizeof(message),
             "%u batches of store %s already wait behind the one in progress; retry later",
             store->queued, id->store_id);
    log_warn("server", "batch_refused", "peer=%s store=%s device=%s status=503 reason=\"%s\"",
             http_exchange_peer(exchange), id->store_id, id->device_id, message);
    routes_respond_text(exchange, 503, message, "Retry-After: 5\r\n");
    return;
  }
  d = calloc(1, sizeof(*d));
  if (!store && d) {
    store = calloc(1, sizeof(*store));
    if (store) {
      snprintf(store->store_id, sizeof(store->store_id), "%s", id->store_id);
      store->next = r->stores;
      if (r->stores)
        r->stores->prev = store;
      r->stores = store;
    }
  }
  if (!d || !store) {
    free(d);
    routes_respond_text(exchange, 503, "collector out of memory", "Retry-After: 5\r\n");
    return;
  }
  d->routes = r;
  d->store = store;
  d->exchange = exchange;
  d->arrived_ns = uv_hrtime();
  d->id = *id;
  d->body = (const uint8_t *)http_exchange_body(exchange, &d->body_len);
  d->limits = (struct proto_limits){r->options.max_body_bytes, r->options.max_decoded_bytes,
                                    r->options.max_sales_per_batch};
  if (store->head) {
    store->tail->next = d;
    store->tail = d;
    store->queued++;
    return;
  }
  store->head = store->tail = d;
  routes_decode_start(r, d);
}

static void routes_on_heartbeat_done(void *arg, const struct ingest_result *result)
{
  struct routes_pending *pending = arg;
  collector_metrics_heartbeat(pending->store_id, result->outcome);
  if (result->outcome == INGEST_ACCEPTED || result->outcome == INGEST_DUPLICATE) {
    Pos__V1__HeartbeatAck ack = POS__V1__HEARTBEAT_ACK__INIT;
    Pos__V1__Heartbeat *copy =
        pos__v1__heartbeat__unpack(NULL, pending->heartbeat_copy_len, pending->heartbeat_copy);
    size_t len;
    uint8_t *packed;
    /* The fleet view and the commands take its reports before the ack
     * says which commands are still to do. */
    if (copy)
      control_heartbeat(pending->routes->control, copy);
    /* The device compares this with its own clock to spot drift. */
    ack.server_clock_ms = clock_wall_ms();
    ack.n_commands = control_ack_commands(pending->routes->control, pending->store_id,
                                          pending->device_id, &ack.commands);
    len = pos__v1__heartbeat_ack__get_packed_size(&ack);
    packed = malloc(len ? len : 1);
    if (packed) {
      pos__v1__heartbeat_ack__pack(&ack, packed);
      http_exchange_respond(pending->exchange, 200, "application/x-protobuf", NULL, packed, len);
      free(packed);
    } else {
      routes_respond_text(pending->exchange, 503, "collector out of memory",
                          "Retry-After: 5\r\n");
    }
    control_ack_free(ack.commands, ack.n_commands);
  } else {
    routes_respond_text(pending->exchange, 503, result->message, "Retry-After: 10\r\n");
  }
  free(pending->heartbeat_copy);
  free(pending);
}

/*
 * What the collector adds to a heartbeat before it is produced: the
 * certificate's expiry and the time it came (set again by the ingest, a
 * moment later), and the store of the certificate; a packed copy is kept
 * for the fleet view (without one the view misses this heartbeat only).
 */
static void routes_heartbeat_complete(Pos__V1__Heartbeat *heartbeat, http_exchange *exchange,
                                      const struct identity *id, struct routes_pending *pending)
{
  char *store = NULL;

  heartbeat->cert_not_after_ms = identity_cert_not_after_ms(http_exchange_peer_cert(exchange));
  heartbeat->received_ms = clock_wall_ms();
  if (!heartbeat->store_id || !heartbeat->store_id[0]) {
    store = strdup(id->store_id);
    if (store) {
      if (heartbeat->store_id && heartbeat->store_id != protobuf_c_empty_string)
        free(heartbeat->store_id);
      heartbeat->store_id = store;
    }
  }
  pending->heartbeat_copy_len = pos__v1__heartbeat__get_packed_size(heartbeat);
  pending->heartbeat_copy = malloc(pending->heartbeat_copy_len + 1);
  if (pending->heartbeat_copy)
    pos__v1__heartbeat__pack(heartbeat, pending->heartbeat_copy);
  else
    pending->heartbeat_copy_len = 0;
}

static void routes_heartbeat(routes *r, http_exchange *exchange, const struct identity *id)
{
  size_t body_len;
  const uint8_t *body = (const uint8_t *)http_exchange_body(exchange, &body_len);
  Pos__V1__Heartbeat *heartbeat;
  struct routes_pending *pending;

  const char *encoding = http_exchange_header(exchange, "Content-Encoding");
  uint8_t *decoded = NULL;

  if (!routes_is_protobuf(exchange) ||
      (encoding && strcasecmp(encoding, "zstd") != 0 && strcasecmp(encoding, "identity") != 0)) {
    routes_respond_text(exchange, 415, "a heartbeat is sent as Content-Type: "
                        "application/x-protobuf, plain or with Content-Encoding: zstd", NULL);
    return;
  }
  if (body_len > r->options.max_heartbeat_bytes) {
    routes_respond_text(exchange, 413, "heartbeat too large", NULL);
    return;
  }
  /* Like a batch, a heartbeat may come zstd-compressed; the limit holds
   * for what it decompresses to. */
  if (encoding && strcasecmp(encoding, "zstd") == 0) {
    size_t decoded_len = 0;
    int rc = proto_zstd_decompress(body, body_len, r->options.max_heartbeat_bytes, &decoded,
                                   &decoded_len);
    if (rc) {
      routes_respond_text(exchange, rc == PROTO_EBOMB ? 413 : rc == PROTO_ENOMEM ? 503 : 400,
                          rc == PROTO_EBOMB ? "heartbeat decompresses to more than the limit"
                                            : "heartbeat body is not a zstd frame",
                          rc == PROTO_ENOMEM ? "Retry-After: 5\r\n" : NULL);
      return;
    }
    body = decoded;
    body_len = decoded_len;
  }
  heartbeat = pos__v1__heartbeat__unpack(NULL, body_len, body);
  free(decoded);
  if (!heartbeat) {
    routes_respond_text(exchange, 400, "body is not a pos.v1.Heartbeat protobuf", NULL);
    return;
  }
  if (heartbeat->store_id[0] && strcmp(heartbeat->store_id, id->store_id) != 0) {
    pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
    routes_respond_text(exchange, 403, "the heartbeat names another store than the certificate",
                        NULL);
    return;
  }
  if (routes_device_from_cert(exchange, id, &heartbeat->device_id, NULL)) {
    pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
    return;
  }
  pending = calloc(1, sizeof(*pending));
  if (!pending) {
    pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
    routes_respond_text(exchange, 503, "collector out of memory", "Retry-After: 5\r\n");
    return;
  }
  pending->routes = r;
  pending->exchange = exchange;
  pending->heartbeat = 1;
  snprintf(pending->store_id, sizeof(pending->store_id), "%s", id->store_id);
  snprintf(pending->device_id, sizeof(pending->device_id), "%s", id->device_id);
  routes_heartbeat_complete(heartbeat, exchange, id, pending);
  ingest_submit_heartbeat(r->ingest, id->store_id, heartbeat, routes_on_heartbeat_done, pending);
}

static void routes_on_rebase_done(void *arg, const struct ingest_result *result)
{
  struct routes_pending *pending = arg;
  char hex[33], body[512];
  int len;

  proto_journal_id_format(pending->journal_id, hex);
  if (result->outcome != INGEST_ACCEPTED) {
    routes_respond_text(pending->exchange, 503, result->message, "Retry-After: 5\r\n");
    free(pending);
    return;
  }
  log_warn("server", "rebase_approved",
           "admin=%s store=%s journal=%s from_batch_seq=%" PRIu64 " acked_before=%" PRIu64
           " acked_after=%" PRIu64,
           pending->admin, pending->store_id, hex, pending->batch_seq,
           result->previous_acked_batch_seq, result->acked_batch_seq);
  len = snprintf(body, sizeof(body),
                 "{\"store_id\": \"%s\", \"journal_id\": \"%s\", \"from_batch_seq\": %" PRIu64
                 ", \"acked_batch_seq_before\": %" PRIu64 ", \"acked_batch_seq_after\": %" PRIu64
                 ", \"approved_by\": \"%s\"}\n",
                 pending->store_id, hex, pending->batch_seq, result->previous_acked_batch_seq,
                 result->acked_batch_seq, pending->admin);
  if (len < 0 || (size_t)len >= sizeof(body))
    len = 0;
  http_exchange_respond(pending->exchange, 200, "application/json", NULL, body, (size_t)len);
  free(pending);
}

/* Reads {"store_id", "journal_id" (32 hex), "from_batch_seq"} into pending. 0, or -1 with err. */
static int routes_rebase_parse(const char *body, size_t body_len, struct routes_pending *pending,
                               char *err, size_t err_size)
{
  json_error_t error;
  json_t *root = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, &error);
  json_t *store, *journal, *from;
  int rc = -1;

  if (!root) {
    snprintf(err, err_size, "body is not JSON: %s (line %d, column %d)", error.text, error.line,
             error.column);
    return -1;
  }
  store = json_object_get(root, "store_id");
  journal = json_object_get(root, "journal_id");
  from = json_object_get(root, "from_batch_seq");
  if (!json_is_object(root) || json_object_size(root) != 3 || !json_is_string(store) ||
      !json_is_string(journal) || !json_is_integer(from)) {
    snprintf(err, err_size, "the body must be {\"store_id\": \"S\", \"journal_id\": \"<32 hex>\", "
             "\"from_batch_seq\": N} and nothing else");
  } else if (json_string_length(store) == 0 || json_string_length(store) > IDENTITY_ID_MAX ||
             strchr(json_string_value(store), '/')) {
    snprintf(err, err_size, "store_id must be 1-%d characters without '/'", IDENTITY_ID_MAX);
  } else if (json_string_length(journal) != 32 ||
             proto_journal_id_parse(json_string_value(journal), pending->journal_id)) {
    snprintf(err, err_size, "journal_id must be 32 hex digits");
  } else if (json_integer_value(from) < 1) {
    snprintf(err, err_size, "from_batch_seq must be 1 or more");
  } else {
    snprintf(pending->store_id, sizeof(pending->store_id), "%s", json_string_value(store));
    pending->batch_seq = (uint64_t)json_integer_value(from);
    rc = 0;
  }
  json_decref(root);
  return rc;
}

/*
 * POST /v1/admin/rebase (admin certificates only): head office approves
 * that a journal's next batch may be from_batch_seq (pos.proto, Rebase).
 * Answered 200 once the approval is in pos.control.v1 and applied.
 */
static void routes_rebase(routes *r, http_exchange *exchange, const struct identity *id)
{
  size_t body_len;
  const char *body = http_exchange_body(exchange, &body_len);
  struct routes_pending *pending = calloc(1, sizeof(*pending));
  char err[256];

  if (!pending) {
    routes_respond_text(exchange, 503, "collector out of memory", "Retry-After: 5\r\n");
    return;
  }
  if (routes_rebase_parse(body ? body : "", body_len, pending, err, sizeof(err))) {
    log_warn("server", "rebase_refused", "peer=%s admin=%s status=400 reason=\"%s\"",
             http_exchange_peer(exchange), id->admin, err);
    routes_respond_text(exchange, 400, err, NULL);
    free(pending);
    return;
  }
  pending->routes = r;
  pending->exchange = exchange;
  snprintf(pending->admin, sizeof(pending->admin), "%s", id->admin);
  ingest_submit_rebase(r->ingest, id->admin, pending->store_id, pending->journal_id,
                       pending->batch_seq, routes_on_rebase_done, pending);
}

static const char routes_not_admin[] =
    "{\"error\": \"only head-office admin certificates (urn:pos:admin:<name>) may use the admin "
    "API; this is a store device certificate\"}\n";

void routes_handle(http_exchange *exchange, void *arg)
{
  routes *r = arg;
  const char *method = http_exchange_method(exchange);
  const char *path = http_exchange_path(exchange);
  struct identity id;

  if (strcmp(path, "/healthz") == 0) {
    /* Ready once batches are taken and head office's commands are known. */
    if (!ingest_ready(r->ingest))
      routes_respond_text(exchange, 503, "rebuilding exactly-once state from Kafka",
                          "Retry-After: 5\r\n");
    else if (!control_ready(r->control))
      routes_respond_text(exchange, 503, "loading commands and fleet state from Kafka",
                          "Retry-After: 2\r\n");
    else
      routes_respond_text(exchange, 200, "ok", NULL);
    return;
  }
  if (strncmp(path, EST_PATH_PREFIX, strlen(EST_PATH_PREFIX)) == 0) {
    est_handle(r->est, exchange);
    return;
  }
  if (routes_identify(exchange, &id))
    return;
  if (strcmp(path, "/v1/admin/rebase") == 0) {
    if (strcmp(method, "POST") != 0) {
      routes_respond_text(exchange, 405, "use POST", "Allow: POST\r\n");
    } else if (id.kind != IDENTITY_ADMIN) {
      log_warn("server", "refused", "peer=%s store=%s device=%s path=%s status=403 reason=\"not "
               "an admin certificate\"", http_exchange_peer(exchange), id.store_id, id.device_id,
               path);
      routes_respond_text(exchange, 403, "only admin certificates may approve a rebase", NULL);
    } else {
      routes_rebase(r, exchange, &id);
    }
    return;
  }
  if (strncmp(path, "/v1/admin/", 10) == 0) {
    if (id.kind != IDENTITY_ADMIN) {
      log_warn("server", "refused", "peer=%s store=%s device=%s path=%s status=403 reason=\"not "
               "an admin certificate\"", http_exchange_peer(exchange), id.store_id, id.device_id,
               path);
      http_exchange_respond(exchange, 403, "application/json", NULL,
                            routes_not_admin, sizeof(routes_not_admin) - 1);
      collector_metrics_refusal(403, "forbidden");
      return;
    }
    admin_handle(r->control, exchange, &id);
    return;
  }
  if (strcmp(path, "/v1/batches") == 0 || strcmp(path, "/v1/heartbeat") == 0) {
    if (strcmp(method, "POST") != 0) {
      routes_respond_text(exchange, 405, "use POST", "Allow: POST\r\n");
      return;
    }
    if (id.kind != IDENTITY_DEVICE) {
      log_warn("server", "refused", "peer=%s admin=%s path=%s status=403 reason=\"not a store "
               "device certificate\"", http_exchange_peer(exchange), id.admin, path);
      routes_respond_text(exchange, 403, "only store device certificates may send batches and "
                          "heartbeats", NULL);
      return;
    }
    if (path[4] == 'b')
      routes_batches(r, exchange, &id);
    else
      routes_heartbeat(r, exchange, &id);
    return;
  }
  routes_respond_text(exchange, 404, "no such endpoint: POST /v1/batches, POST /v1/heartbeat, "
                      "/v1/admin/...", NULL);
}

/* Test hooks from the environment (test builds only), logged when set. */
static void routes_test_hooks(routes *r)
{
#ifndef POS_TESTING
  (void)r;
#else
  const char *delay = getenv("POS_TEST_DECODE_DELAY_MS");
  const char *bytes = getenv("POS_TEST_DECODE_DELAY_BYTES");
  unsigned long value;
  char *end;

  if (delay && delay[0]) {
    value = strtoul(delay, &end, 10);
    if (*end == '\0' && value >= 1 && value <= 600000) {
      r->test_decode_delay_ms = (unsigned)value;
      log_warn("server", "test_hook", "POS_TEST_DECODE_DELAY_MS=%lu", value);
    }
  }
  if (bytes && bytes[0]) {
    value = strtoul(bytes, &end, 10);
    if (*end == '\0') {
      r->test_decode_delay_bytes = value;
      log_warn("server", "test_hook", "POS_TEST_DECODE_DELAY_BYTES=%lu", value);
    }
  }
#endif
}

routes *routes_create(uv_loop_t *loop, ingest *in, control *ctl,
                      const struct routes_options *options)
{
  routes *r = calloc(1, sizeof(*r));
  if (!r)
    return NULL;
  r->loop = loop;
  r->ingest = in;
  r->control = ctl;
  r->options = *options;
  routes_test_hooks(r);
  return r;
}

void routes_close(routes *r)
{
  if (!r)
    return;
  r->closing = 1;
  /* What waits behind a batch in progress is answered now; the batches in
   * progress are answered when their decode comes back or by the ingest. */
  for (struct routes_store *store = r->stores; store; store = store->next) {
    while (store->head && store->head->next) {
      struct routes_decode *d = store->head->next;
      store->head->next = d->next;
      store->queued--;
      routes_respond_text(d->exchange, 503, "the collector is shutting down",
                          "Retry-After: 5\r\n");
      routes_decode_free(d);
    }
    if (store->head)
      store->tail = store->head;
  }
}

void routes_set_est(routes *r, est *e) { r->est = e; }

unsigned routes_decoding(const routes *r) { return r ? r->decoding : 0; }

void routes_destroy(routes *r)
{
  if (!r)
    return;
  /* uv_run has returned: no decode is on a worker, and the ingest, gone,
   * answered everything it held. What is left was never answered. */
  assert(r->decoding == 0);
  while (r->stores) {
    struct routes_store *store = r->stores;
    r->stores = store->next;
    while (store->head) {
      struct routes_decode *d = store->head;
      store->head = d->next;
      routes_decode_free(d);
    }
    free(store);
  }
  free(r);
}
