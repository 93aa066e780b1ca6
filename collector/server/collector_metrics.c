/*
 * collector_metrics.c - the collector's metrics and health (loop thread).
 */
#include "server/collector_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "platform/clock.h"
#include "platform/metrics.h"

/* Request to last delivery report, in seconds: Kafka acks=all within a
 * data centre is milliseconds; produce_timeout (20 s) is the top. */
static const double collector_latency_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                   0.25,  0.5,    1,     2.5,  5,     10,   20,
                                                   30};

static const char *const collector_outcome_names[] = {"accepted", "duplicate", "gap",
                                                      "unavailable", "refused"};

static struct {
  int ready;
  ingest *ingest;
  int64_t unhealthy_after_ms;
  metrics_family *latency, *batches, *heartbeats, *refusals, *tls_refusals, *tls_handshakes, *est;
  metrics_series *sales_produced, *sales_dead_lettered, *sales_skipped, *deltas_produced,
      *stores_seen;
  /* Stores seen since start, sorted for bsearch: 2,000 stores is 2,000
   * short strings. */
  char **stores;
  size_t store_count, store_capacity;
  const http_server *server;    /* its TLS files' expiry (collector_metrics_server) */
  int64_t unavailable_since_ms; /* first 503 since the last accepted batch; 0 = none */
  char unavailable_reason[256];
} cm;

static const char *collector_outcome_name(enum ingest_outcome outcome)
{
  if ((unsigned)outcome < sizeof(collector_outcome_names) / sizeof(collector_outcome_names[0]))
    return collector_outcome_names[outcome];
  return "other";
}

int collector_metrics_init(ingest *in, int64_t unhealthy_after_ms)
{
  metrics_registry *r = metrics_global();
  size_t buckets = sizeof(collector_latency_buckets) / sizeof(collector_latency_buckets[0]);

  cm.ingest = in;
  cm.unhealthy_after_ms = unhealthy_after_ms;
  cm.latency = metrics_histogram(
      r, "pos_collector_batch_delivery_seconds",
      "Time from a batch request read whole to its answer, which for an accepted batch is "
      "after Kafka's last delivery report, in seconds, by outcome.",
      "outcome", collector_latency_buckets, buckets);
  cm.batches = metrics_counter(r, "pos_collector_batches_total",
                               "Batches answered, by outcome (accepted, duplicate, gap, "
                               "unavailable, refused, another_instance: a store another "
                               "instance of the fleet writes).",
                               "outcome");
  cm.heartbeats = metrics_counter(r, "pos_collector_heartbeats_total",
                                  "Heartbeats answered, by outcome.", "outcome");
  cm.refusals = metrics_counter(r, "pos_collector_refusals_total",
                                "Requests answered with an error, by HTTP status and reason.",
                                "status,reason");
  cm.tls_refusals = metrics_counter(r, "pos_collector_tls_refusals_total",
                                    "Connections refused for their TLS handshake or client "
                                    "certificate, by reason (no_certificate, expired, "
                                    "not_yet_valid, revoked, not_trusted, other_certificate, "
                                    "handshake; busy: closed before its handshake, too many "
                                    "waiting, logged once a second); each is logged with its "
                                    "peer.",
                                    "reason");
  cm.tls_handshakes = metrics_counter(r, "pos_collector_tls_handshakes_total",
                                      "TLS handshakes completed on the API, by kind: full (a "
                                      "certificate and a key exchange) or resumed (a session "
                                      "ticket accepted: the reconnect a fleet can afford).",
                                      "kind");
  cm.est = metrics_counter(r, "pos_collector_est_requests_total",
                           "EST requests (cacerts, simpleenroll, simplereenroll) by operation "
                           "and HTTP status: 200 a certificate or chain given, 401/403/409 a "
                           "token or store refused, 400 a bad request, 503 not now.",
                           "op,status");
  cm.sales_produced = metrics_series1(
      metrics_counter(r, "pos_collector_sales_produced_total",
                      "Sales produced to the sales or replay topic and acknowledged by Kafka.",
                      NULL),
      NULL);
  cm.sales_dead_lettered = metrics_series1(
      metrics_counter(r, "pos_collector_sales_dead_lettered_total",
                      "Sales that failed validation, produced to the dead-letter topic.", NULL),
      NULL);
  cm.sales_skipped = metrics_series1(
      metrics_counter(r, "pos_collector_sales_skipped_total",
                      "Sales of accepted batches already in the log (not produced again).",
                      NULL),
      NULL);
  cm.deltas_produced = metrics_series1(
      metrics_counter(r, "pos_collector_inventory_deltas_produced_total",
                      "Inventory deltas produced to the inventory-deltas topic.", NULL),
      NULL);
  cm.stores_seen = metrics_series1(
      metrics_gauge(r, "pos_collector_stores_seen",
                    "Distinct stores that sent a batch or heartbeat since the collector started.",
                    NULL),
      NULL);
  /* Counted by the ingest (ingest.c); registered here so that it shows
   * before the first error. */
  metrics_counter(r, "pos_collector_kafka_produce_errors_total",
                  "Records Kafka refused, at produce or in their delivery report, by topic and "
                  "librdkafka error (purges at shutdown or after a doubt not counted).",
                  "topic,error");
  if (!cm.latency || !cm.batches || !cm.heartbeats || !cm.refusals || !cm.tls_refusals ||
      !cm.tls_handshakes || !cm.stores_seen)
    return -1;
  cm.ready = 1;
  return 0;
}

void collector_metrics_detach(void)
{
  cm.ingest = NULL;
  cm.server = NULL;
}

static void collector_store_seen(const char *store_id)
{
  size_t lo = 0, hi = cm.store_count;
  char *copy;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int cmp = strcmp(store_id, cm.stores[mid]);
    if (cmp == 0)
      return;
    if (cmp < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  if (cm.store_count == cm.store_capacity) {
    size_t capacity = cm.store_capacity ? cm.store_capacity * 2 : 256;
    char **grown = realloc(cm.stores, capacity * sizeof(*grown));
    if (!grown)
      return;
    cm.stores = grown;
    cm.store_capacity = capacity;
  }
  copy = strdup(store_id);
  if (!copy)
    return;
  memmove(&cm.stores[lo + 1], &cm.stores[lo], (cm.store_count - lo) * sizeof(*cm.stores));
  cm.stores[lo] = copy;
  cm.store_count++;
  metrics_set(cm.stores_seen, (double)cm.store_count);
}

void collector_metrics_refusal(int status, const char *reason)
{
  char status_text[16];
  const char *values[2];

  if (!cm.ready || status < 400)
    return;
  snprintf(status_text, sizeof(status_text), "%d", status);
  values[0] = status_text;
  values[1] = reason;
  metrics_inc(metrics_series_get(cm.refusals, values));
}

void collector_metrics_tls_refusal(const char *reason, void *arg)
{
  (void)arg;
  if (cm.ready)
    metrics_inc(metrics_series1(cm.tls_refusals, reason));
}

void collector_metrics_tls_handshake(int resumed, void *arg)
{
  (void)arg;
  if (cm.ready)
    metrics_inc(metrics_series1(cm.tls_handshakes, resumed ? "resumed" : "full"));
}

void collector_metrics_est(const char *op, int status)
{
  char code[16];
  const char *values[2] = {op, code};

  if (!cm.ready)
    return;
  snprintf(code, sizeof(code), "%d", status);
  metrics_inc(metrics_series_get(cm.est, values));
}

void collector_metrics_batch(const char *store_id, uint64_t started_ns,
                             const struct ingest_result *result)
{
  const char *outcome;
  int another;

  if (!cm.ready)
    return;
  /* Another instance's store (a fleet behind a load balancer): routine, not this one failing. */
  another = result->outcome == INGEST_UNAVAILABLE &&
            result->code == POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_ANOTHER_INSTANCE;
  outcome = another ? "another_instance" : collector_outcome_name(result->outcome);
  collector_store_seen(store_id);
  metrics_inc(metrics_series1(cm.batches, outcome));
  metrics_observe(metrics_series1(cm.latency, outcome),
                  (double)(uv_hrtime() - started_ns) / 1e9);
  metrics_add(cm.sales_produced, result->produced);
  metrics_add(cm.sales_dead_lettered, result->dead_lettered);
  metrics_add(cm.sales_skipped, result->skipped);
  metrics_add(cm.deltas_produced, result->deltas_produced);
  if (result->outcome == INGEST_UNAVAILABLE && !another) {
    if (!cm.unavailable_since_ms)
      cm.unavailable_since_ms = clock_wall_ms();
    snprintf(cm.unavailable_reason, sizeof(cm.unavailable_reason), "%s", result->message);
  } else if (result->outcome == INGEST_ACCEPTED || result->outcome == INGEST_DUPLICATE) {
    cm.unavailable_since_ms = 0;
  }
}

void collector_metrics_heartbeat(const char *store_id, enum ingest_outcome outcome)
{
  if (!cm.ready)
    return;
  collector_store_seen(store_id);
  metrics_inc(metrics_series1(cm.heartbeats, collector_outcome_name(outcome)));
}

void collector_metrics_server(const http_server *server) { cm.server = server; }

double collector_days_until(time_t when)
{
  return (double)((int64_t)when * 1000 - clock_wall_ms()) / 86400000.0;
}

void collector_metrics_refresh(void *arg)
{
  metrics_registry *r = metrics_global();
  const char *version[] = {POS_VERSION};
  char reason[512]; /* unused here: the gauge is 0 or 1 */
  struct http_tls_status tls;

  /* As timestamps (Prometheus's base unit): days left are
   * (value - time()) / 86400, which an alert rule computes; the log says
   * days (tls_loaded, tls_reloaded). */
  http_server_tls_status(cm.server, &tls);
  if (tls.generation != 0)
    metrics_set(metrics_series1(
                    metrics_gauge(r, "pos_collector_tls_cert_not_after_timestamp_seconds",
                                  "When the collector's own server certificate expires (Unix "
                                  "time); a renewed one is taken on SIGHUP.",
                                  NULL),
                    NULL),
                (double)tls.cert_not_after);
  if (tls.crl_next_update != 0)
    metrics_set(metrics_series1(
                    metrics_gauge(r, "pos_collector_tls_crl_next_update_timestamp_seconds",
                                  "When the CRL in use passes its nextUpdate (Unix time). Past "
                                  "it, its revocations still apply and no store is refused for "
                                  "it: publish a new CRL and send SIGHUP.",
                                  NULL),
                    NULL),
                (double)tls.crl_next_update);

  metrics_set(metrics_series_get(metrics_gauge(r, "pos_collector_build_info",
                                               "Always 1; the collector's version as a label.",
                                               "version"),
                                 version),
              1);
  metrics_set(metrics_series1(metrics_gauge(r, "pos_collector_state_ready",
                                            "1 once the exactly-once state is rebuilt from "
                                            "Kafka (batches are taken), else 0.",
                                            NULL),
                              NULL),
              cm.ingest && ingest_ready(cm.ingest));
  if (cm.ingest)
    metrics_set(metrics_series1(metrics_gauge(r, "pos_collector_loop_late_seconds",
                                              "How late the event loop has run lately (the "
                                              "most of the last 5 to 10 s): the collector's "
                                              "CPU load. From a quarter of produce_timeout "
                                              "on, 503s name it as the wait, not Kafka.",
                                              NULL),
                                NULL),
                (double)ingest_loop_late_ms(cm.ingest) / 1000.0);
  metrics_set(metrics_series1(metrics_gauge(r, "pos_collector_healthy",
                                            "1 when /healthz says the collector can do its "
                                            "job, else 0.",
                                            NULL),
                              NULL),
              collector_metrics_health(arg, reason, sizeof(reason)));
}

/* 0 with `reason` when batches have been answered 503 for unhealthy_after, none taken since. */
static int collector_metrics_kafka_taking(char *reason, size_t reason_size);

int collector_metrics_health(void *arg, char *reason, size_t reason_size)
{
  (void)arg;

  if (!cm.ingest) {
    snprintf(reason, reason_size, "the collector is stopping");
    return 0;
  }
  if (!ingest_ready(cm.ingest)) {
    snprintf(reason, reason_size,
             "rebuilding the exactly-once state from Kafka: batches are answered 503 until it "
             "is done; if this lasts, check that Kafka is reachable");
    return 0;
  }
  return collector_metrics_kafka_taking(reason, reason_size);
}

int collector_metrics_ready(void *arg, char *reason, size_t reason_size)
{
  (void)arg;

  if (!cm.ingest) {
    snprintf(reason, reason_size, "the collector is stopping");
    return 0;
  }
  if (!ingest_takes_stores(cm.ingest, reason, reason_size))
    return 0;
  return collector_metrics_kafka_taking(reason, reason_size);
}

static int collector_metrics_kafka_taking(char *reason, size_t reason_size)
{
  int64_t now = clock_wall_ms();

  if (cm.unavailable_since_ms && cm.unhealthy_after_ms > 0 &&
      now - cm.unavailable_since_ms >= cm.unhealthy_after_ms) {
    snprintf(reason, reason_size,
             "Kafka is not taking batches: every batch for %lld s was answered 503 (more than "
             "[operator] unhealthy_after), none accepted since; last: %s",
             (long long)((now - cm.unavailable_since_ms) / 1000), cm.unavailable_reason);
    return 0;
  }
  return 1;
}
