/*
 * metrics_http.c - /metrics and /healthz on a plain-HTTP operator listener,
 * on the platform HTTP server.
 */
#include "platform/metrics_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/http_server.h"

struct metrics_http {
  http_server *server;
  struct metrics_http_config config;
};

static void metrics_http_text(http_exchange *exchange, int status, const char *text,
                              const char *extra_headers)
{
  http_exchange_respond(exchange, status, "text/plain; charset=utf-8", extra_headers, text,
                        strlen(text));
}

static void metrics_http_metrics(metrics_http *m, http_exchange *exchange)
{
  size_t length = 0;
  char *text;

  if (m->config.refresh)
    m->config.refresh(m->config.arg);
  text = metrics_render(m->config.registry, &length);
  if (!text) {
    metrics_http_text(exchange, 503, "out of memory while rendering the metrics\n",
                      "Retry-After: 5\r\n");
    return;
  }
  http_exchange_respond(exchange, 200, METRICS_CONTENT_TYPE, NULL, text, length);
  free(text);
}

/* /healthz (`ready` 0) or /readyz (1): the callback's answer, with its reason. */
static void metrics_http_health(metrics_http *m, http_exchange *exchange, int ready)
{
  metrics_health_fn fn = ready && m->config.ready ? m->config.ready : m->config.health;
  char reason[512] = "";
  char body[600];

  if (!fn || fn(m->config.arg, reason, sizeof(reason))) {
    metrics_http_text(exchange, 200, ready ? "ready\n" : "ok\n", NULL);
    return;
  }
  snprintf(body, sizeof(body), "%s: %s\n", ready ? "not ready" : "unhealthy",
           reason[0] ? reason : "(no reason given)");
  metrics_http_text(exchange, 503, body, NULL);
}

static void metrics_http_route(http_exchange *exchange, void *arg)
{
  metrics_http *m = arg;
  const char *method = http_exchange_method(exchange);
  const char *path = http_exchange_path(exchange);
  int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

  if (strcmp(path, "/metrics") == 0 && get)
    metrics_http_metrics(m, exchange);
  else if (strcmp(path, "/healthz") == 0 && get)
    metrics_http_health(m, exchange, 0);
  else if (strcmp(path, "/readyz") == 0 && get)
    metrics_http_health(m, exchange, 1);
  else if (strcmp(path, "/metrics") == 0 || strcmp(path, "/healthz") == 0 ||
           strcmp(path, "/readyz") == 0)
    metrics_http_text(exchange, 405, "use GET\n", "Allow: GET, HEAD\r\n");
  else
    metrics_http_text(exchange, 404,
                      "no such endpoint: the operator listener serves GET /metrics, "
                      "GET /healthz and GET /readyz\n",
                      NULL);
}

/* No request here carries a body worth reading. */
static int metrics_http_on_headers(const http_exchange *request, void *arg,
                                   struct http_refusal *refusal)
{
  const char *length = http_exchange_header(request, "Content-Length");
  (void)arg;
  if (http_exchange_header(request, "Transfer-Encoding") != NULL ||
      (length != NULL && strtoull(length, NULL, 10) > 0)) {
    snprintf(refusal->error, sizeof(refusal->error),
             "the operator listener takes no request body");
    return 413;
  }
  return 0;
}

metrics_http *metrics_http_start(uv_loop_t *loop, const struct metrics_http_config *config,
                                 char *err, size_t err_size)
{
  struct http_server_config server_config = {
      .listen_host = config->listen_host,
      .port = config->port,
      .max_header_bytes = 8 * 1024,
      .max_body_bytes = 1024,
      .idle_timeout_ms = 60000,
      .request_timeout_ms = 10000,
      .max_connections = 16,
      .tls = NULL,
      .on_headers = metrics_http_on_headers,
  };
  metrics_http *m = calloc(1, sizeof(*m));

  if (!m) {
    snprintf(err, err_size, "out of memory starting the operator listener");
    return NULL;
  }
  m->config = *config;
  m->server = http_server_create(loop, &server_config, metrics_http_route, m, err, err_size);
  if (!m->server) {
    free(m);
    return NULL;
  }
  return m;
}

int metrics_http_port(const metrics_http *server) { return http_server_port(server->server); }

static void metrics_http_closed(void *arg) { free(arg); }

void metrics_http_close(metrics_http *server)
{
  if (!server)
    return;
  http_server_close(server->server, metrics_http_closed, server);
}
