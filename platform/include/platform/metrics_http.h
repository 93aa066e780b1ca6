/*
 * metrics_http.h - the operator listener: plain HTTP for Prometheus and for
 * health checks, meant for 127.0.0.1 (or a management network), never for
 * what the program serves to its own clients.
 *
 *   GET /metrics  the registry in Prometheus text format 0.0.4, after the
 *                 program's refresh callback set its gauges
 *   GET /healthz  200 "ok" when the program can do its job, else 503 with
 *                 "unhealthy: <reason and what to do>" (the health callback)
 *   GET /readyz   200 "ready" when a load balancer should send it clients, else
 *                 503 "not ready: <reason>" (the ready callback; /healthz's when
 *                 there is none)
 *
 * Everything runs on the loop thread: the callbacks too.
 */
#ifndef PLATFORM_METRICS_HTTP_H
#define PLATFORM_METRICS_HTTP_H

#include <stddef.h>
#include <uv.h>

#include "platform/metrics.h"

/*
 * Sets gauges whose value is read rather than counted (backlog, sizes)
 * just before a render. Loop thread.
 */
typedef void (*metrics_refresh_fn)(void *arg);

/*
 * Returns 1 when healthy; 0 with `reason` (NUL-terminated, at most
 * `reason_size` bytes) saying what is wrong and what to do. Loop thread.
 */
typedef int (*metrics_health_fn)(void *arg, char *reason, size_t reason_size);

struct metrics_http_config {
  const char *listen_host;     /* "127.0.0.1" */
  int port;                    /* 0 = any free port; see metrics_http_port() */
  metrics_registry *registry;  /* rendered by /metrics; borrowed */
  metrics_refresh_fn refresh;  /* may be NULL */
  metrics_health_fn health;    /* may be NULL: then /healthz says ok while the loop turns */
  metrics_health_fn ready;     /* may be NULL: then /readyz is /healthz */
  void *arg;                   /* given to the callbacks */
};

typedef struct metrics_http metrics_http;

/*
 * Binds and serves on `loop`. Returns the listener, or NULL with `err`
 * saying what failed (the address in use, ...). Loop thread.
 */
metrics_http *metrics_http_start(uv_loop_t *loop, const struct metrics_http_config *config,
                                 char *err, size_t err_size);

/* The port bound (useful with port 0). */
int metrics_http_port(const metrics_http *server);

/*
 * Stops serving and frees the listener once its handles are closed (run
 * the loop afterwards). The callbacks are not called any more. `server` may
 * be NULL. Loop thread.
 */
void metrics_http_close(metrics_http *server);

#endif
