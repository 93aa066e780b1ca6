/*
 * routes.h - the collector's HTTP API (ARCHITECTURE.md, Wire protocol):
 * POST /v1/batches, POST /v1/heartbeat, GET /healthz, and for admin
 * certificates /v1/admin/... (server/admin.h; POST /v1/admin/rebase here). Every request but
 * /healthz must carry a verified client certificate whose SAN URI names
 * the caller (server/identity.h).
 */
#ifndef COLLECTOR_ROUTES_H
#define COLLECTOR_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#include "control/control.h"
#include "enrol/est.h"
#include "ingest/ingest.h"
#include "platform/http_server.h"

struct routes_options {
  size_t max_body_bytes;    /* compressed batch */
  size_t max_decoded_bytes; /* decompressed batch */
  size_t max_sales_per_batch;
  size_t max_heartbeat_bytes;
};

typedef struct routes routes;

/*
 * `loop`, `in` and `control` are borrowed; `in` must outlive the routes or
 * routes_close must be called before it goes. NULL when out of memory.
 * A batch body is decompressed and decoded on one of libuv's worker
 * threads (uv_queue_work on `loop`), everything else on the loop thread.
 * A store's batches reach the ingest in the order they came, each once the
 * one before it was answered (at most a few wait; more are answered 503).
 */
routes *routes_create(uv_loop_t *loop, ingest *in, control *ctl,
                      const struct routes_options *options);

/* EST (/.well-known/est/) on this port too: `e` borrowed, NULL = 404. */
void routes_set_est(routes *r, est *e);

/* The http_handler_fn of the collector's server; `arg` is the routes. Loop thread. */
void routes_handle(http_exchange *exchange, void *arg);

/*
 * From now on no batch reaches the ingest: those waiting behind another of
 * their store are answered 503 now, those on a worker when they come back
 * (never acknowledged, so the agent sends them again). Call it before
 * ingest_destroy; the loop must still run until routes_decoding() is 0
 * (uv_run does: each decode is an active request). `r` may be NULL. Loop thread.
 */
void routes_close(routes *r);

/* Batch bodies on a worker, not yet back on the loop. Loop thread. */
unsigned routes_decoding(const routes *r);

/* Frees the routes once uv_run has returned (no decode in flight). `r` may be NULL. */
void routes_destroy(routes *r);

#endif
