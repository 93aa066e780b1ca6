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
#include "ingest/ingest.h"
#include "platform/http_server.h"

struct routes_options {
  size_t max_body_bytes;    /* compressed batch */
  size_t max_decoded_bytes; /* decompressed batch */
  size_t max_sales_per_batch;
  size_t max_heartbeat_bytes;
};

typedef struct routes routes;

/* `in` and `control` are borrowed and must outlive the routes. NULL when out of memory. */
routes *routes_create(ingest *in, control *ctl, const struct routes_options *options);

/* The http_handler_fn of the collector's server; `arg` is the routes. */
void routes_handle(http_exchange *exchange, void *arg);

void routes_destroy(routes *r);

#endif
