/*
 * collector_metrics.h - what the collector measures for its operators, and
 * its health, served by the operator listener ([operator] in the
 * configuration: GET /metrics and GET /healthz, plain HTTP on 127.0.0.1 by
 * default, apart from the mutual-TLS API).
 *
 * One per process (the collector has one ingest): collector_metrics_init()
 * registers the families in the process's registry; before it, every call
 * here does nothing, so the routes work unmeasured in unit tests.
 * Everything runs on the loop thread.
 */
#ifndef COLLECTOR_SERVER_COLLECTOR_METRICS_H
#define COLLECTOR_SERVER_COLLECTOR_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "ingest/ingest.h"
#include "platform/http_server.h"

/*
 * Registers the collector's metrics. `in` is borrowed (its readiness is
 * the health's first condition) and must outlive the operator listener;
 * `unhealthy_after_ms` is how long batches may be answered 503 (Kafka not
 * taking them) before /healthz says so. Returns 0, or -1 when out of memory.
 */
int collector_metrics_init(ingest *in, int64_t unhealthy_after_ms);

/* Forgets `in` (set before ingest_destroy): /healthz then says stopping. */
void collector_metrics_detach(void);

/* A request refused with `status` (>= 400) for `reason`, a short word. */
void collector_metrics_refusal(int status, const char *reason);

/*
 * A batch answered: its outcome, the sales and deltas produced, and the
 * time since its request was read whole (`started_ns`, uv_hrtime()) to the
 * last delivery report. `store_id` counts in the stores seen.
 */
void collector_metrics_batch(const char *store_id, uint64_t started_ns,
                             const struct ingest_result *result);

/* A heartbeat from `store_id` answered with `outcome`. */
void collector_metrics_heartbeat(const char *store_id, enum ingest_outcome outcome);

/* The metrics_refresh_fn of the operator listener (`arg` unused). */
/* Days from now (the wall clock) to `when`, negative once past. */
double collector_days_until(time_t when);

/* The server whose TLS files' expiry the metrics show (NULL: none). */
void collector_metrics_server(const http_server *server);

/* Counts a connection refused for its TLS handshake or certificate
 * (http_server_config's on_tls_refused). */
void collector_metrics_tls_refusal(const char *reason, void *arg);
/* Counts a TLS handshake completed on the API: `resumed` from a session ticket, else full. */
void collector_metrics_tls_handshake(int resumed, void *arg);

/* Counts an EST request answered `status` (est.c). Loop thread. */
void collector_metrics_est(const char *op, int status);

void collector_metrics_refresh(void *arg);

/*
 * The metrics_health_fn: unhealthy while the exactly-once state is being
 * rebuilt from Kafka, or when batches have been answered 503 for longer than
 * unhealthy_after with none accepted since.
 */
int collector_metrics_health(void *arg, char *reason, size_t reason_size);

/*
 * The metrics_health_fn of /readyz, a load balancer's check: ready when the
 * instance takes stores (ingest_takes_stores: also during a hand-over, which
 * /healthz counts as not healthy) and Kafka takes its batches.
 */
int collector_metrics_ready(void *arg, char *reason, size_t reason_size);

#endif
