/*
 * The uplink's HTTP client (agent/uplink/http.c) against real servers on
 * loopback, on one libuv loop: a scripted HTTP/1.1 server (llhttp reads the
 * requests; each mode answers the way a collector or a proxy in front of it
 * may: keep-alive, closing a kept-alive connection as the next request
 * arrives, half an answer, too large an answer, no answer) and the
 * platform's own HTTPS server with mutual TLS and the test PKI.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <llhttp.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <pthread.h>
#include <uv.h>

#include "platform/http_server.h"
#include "uplink/http.h"

enum mode {
  MODE_OK,             /* 200 with keep-alive, every time */
  MODE_DROP_SECOND,    /* the first connection's second request: closed unanswered */
  MODE_PARTIAL_SECOND, /* the first connection's second request: half an answer, closed */
  MODE_SILENT_SECOND,  /* the first connection's second request: never answered, kept open */
  MODE_BIG,            /* 200 with 100,000 bytes */
  MODE_SILENT,         /* never answers */
  MODE_HEADERS,        /* 503 with Retry-After, Content-Type and Content-Encoding */
  MODE_TRAILING,       /* 200 with keep-alive and, in the same write, bytes after it */
};

struct server {
  uv_tcp_t listener;
  int port;
  enum mode mode;
  int connections;
  int requests;
  char target[256]; /* the last request's target, as sent */
};

struct server_conn {
  uv_tcp_t tcp;
  llhttp_t parser;
  struct server *server;
  int index;         /* 0 for the server's first connection */
  int requests_here; /* on this connection */
  char buf[4096];
};

static llhttp_settings_t server_settings;

struct fixture {
  uv_loop_t loop;
  struct server server;
  uplink_http *http;
  struct uplink_http_options options;
  char url[128];
  int done;
  char dir[64];
};

static void free_on_close(uv_handle_t *handle)
{
  free(handle);
}

static void free_write(uv_write_t *write, int status)
{
  (void)status;
  free(write->data);
  free(write);
}

static void free_shutdown(uv_shutdown_t *shutdown, int status)
{
  (void)status;
  free(shutdown);
}

static void server_send(struct server_conn *conn, const char *text, size_t len)
{
  uv_write_t *write = malloc(sizeof(*write));
  char *copy = malloc(len);
  uv_buf_t buf;

  assert_non_null(write);
  assert_non_null(copy);
  memcpy(copy, text, len);
  write->data = copy;
  buf = uv_buf_init(copy, (unsigned)len);
  assert_int_equal(uv_write(write, (uv_stream_t *)&conn->tcp, &buf, 1, free_write), 0);
}

static void server_close(struct server_conn *conn)
{
  if (!uv_is_closing((uv_handle_t *)&conn->tcp))
    uv_close((uv_handle_t *)&conn->tcp, free_on_close);
}

static int server_on_request(llhttp_t *parser)
{
  static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                           "Content-Length: 2\r\n\r\nok";
  static const char partial[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab";
  static const char headers[] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
                                "Content-Type: application/x-protobuf\r\n"
                                "Content-Encoding: identity\r\nContent-Length: 0\r\n\r\n";
  /* A second answer nobody asked for, glued to the first. */
  static const char trailing[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                                 "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad";
  struct server_conn *conn = parser->data;
  struct server *server = conn->server;
  char *big;

  server->requests++;
  conn->requests_here++;
  if (conn->index == 0 && conn->requests_here == 2 && server->mode == MODE_DROP_SECOND) {
    server_close(conn);
  } else if (conn->index == 0 && conn->requests_here == 2 &&
             server->mode == MODE_PARTIAL_SECOND) {
    server_send(conn, partial, sizeof(partial) - 1);
    uv_shutdown_t *shutdown = malloc(sizeof(*shutdown));
    assert_non_null(shutdown);
    uv_shutdown(shutdown, (uv_stream_t *)&conn->tcp, free_shutdown);
  } else if (conn->index == 0 && conn->requests_here == 2 &&
             server->mode == MODE_SILENT_SECOND) {
    /* Like a connection a NAT forgot: the request goes nowhere. */
  } else if (server->mode == MODE_BIG) {
    big = malloc(100100);
    assert_non_null(big);
    int n = snprintf(big, 200, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
    memset(big + n, 'x', 100000);
    server_send(conn, big, (size_t)n + 100000);
    free(big);
  } else if (server->mode == MODE_TRAILING) {
    server_send(conn, trailing, sizeof(trailing) - 1);
  } else if (server->mode == MODE_HEADERS) {
    server_send(conn, headers, sizeof(headers) - 1);
  } else if (server->mode != MODE_SILENT) {
    server_send(conn, ok, sizeof(ok) - 1);
  }
  return 0;
}

static int server_on_url(llhttp_t *parser, const char *at, size_t len)
{
  struct server_conn *conn = parser->data;
  size_t have = strlen(conn->server->target);

  if (len > sizeof(conn->server->target) - 1 - have)
    len = sizeof(conn->server->target) - 1 - have;
  memcpy(conn->server->target + have, at, len);
  conn->server->target[have + len] = '\0';
  return 0;
}

static int server_on_message_begin(llhttp_t *parser)
{
  struct server_conn *conn = parser->data;

  conn->server->target[0] = '\0';
  return 0;
}

static void server_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
  struct server_conn *conn = handle->data;
  (void)suggested;
  *buf = uv_buf_init(conn->buf, sizeof(conn->buf));
}

static void server_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
  struct server_conn *conn = stream->data;

  if (nread < 0) {
    server_close(conn);
    return;
  }
  /* Silent: whatever comes (a request, a ClientHello) is left unanswered. */
  if (conn->server->mode == MODE_SILENT)
    return;
  if (nread > 0 && !uv_is_closing((uv_handle_t *)&conn->tcp) &&
      llhttp_execute(&conn->parser, buf->base, (size_t)nread) != HPE_OK)
    server_close(conn);
}

static void server_on_connection(uv_stream_t *listener, int status)
{
  struct server *server = listener->data;
  struct server_conn *conn = calloc(1, sizeof(*conn));

  assert_int_equal(status, 0);
  assert_non_null(conn);
  uv_tcp_init(listener->loop, &conn->tcp);
  conn->tcp.data = conn;
  conn->server = server;
  conn->index = server->connections++;
  llhttp_init(&conn->parser, HTTP_REQUEST, &server_settings);
  conn->parser.data = conn;
  assert_int_equal(uv_accept(listener, (uv_stream_t *)&conn->tcp), 0);
  uv_read_start((uv_stream_t *)&conn->tcp, server_alloc, server_on_read);
}

/* Listens on `host` (a loopback address). Returns 0, or -1 when the
 * address cannot be bound (no IPv6 here). */
static int server_start(struct fixture *f, const char *host, enum mode mode)
{
  struct sockaddr_storage addr;
  int len = sizeof(addr);
  int v6 = strchr(host, ':') != NULL;

  server_settings.on_message_complete = server_on_request;
  server_settings.on_message_begin = server_on_message_begin;
  server_settings.on_url = server_on_url;
  f->server.mode = mode;
  uv_tcp_init(&f->loop, &f->server.listener);
  f->server.listener.data = &f->server;
  if (v6)
    uv_ip6_addr(host, 0, (struct sockaddr_in6 *)&addr);
  else
    uv_ip4_addr(host, 0, (struct sockaddr_in *)&addr);
  if (uv_tcp_bind(&f->server.listener, (struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&f->server.listener, 16, server_on_connection) != 0)
    return -1;
  uv_tcp_getsockname(&f->server.listener, (struct sockaddr *)&addr, &len);
  f->server.port = ntohs(v6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                            : ((struct sockaddr_in *)&addr)->sin_port);
  snprintf(f->url, sizeof(f->url), v6 ? "http://[%s]:%d/v1/batches" : "http://%s:%d/v1/batches",
           host, f->server.port);
  return 0;
}

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->options.cert_file = f->options.key_file = f->options.ca_file = "";
  f->options.connect_timeout_ms = 5000;
  f->options.request_timeout_ms = 10000;
  f->options.max_response_bytes = 65536;
  *state = f;
  return 0;
}

/* The scripted server's connections are the handles that are their own
 * data (the handle first in a heap struct). */
static void close_walk(uv_handle_t *handle, void *arg)
{
  if (!uv_is_closing(handle))
    uv_close(handle, handle->data == handle && handle != arg ? free_on_close : NULL);
}

static int teardown(void **state)
{
  struct fixture *f = *state;

  uplink_http_close(f->http, NULL, NULL);
  /* The scripted server's listener and connections. */
  uv_walk(&f->loop, close_walk, &f->server.listener);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  if (f->dir[0]) {
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
      print_message("  %s failed\n", cmd);
  }
  free(f);
  return 0;
}

static void on_done(struct uplink_http_request *req)
{
  struct fixture *f = req->user;
  f->done++;
}

static void on_guard(uv_timer_t *timer)
{
  fail_msg("no answer from the client within 30 s");
  (void)timer;
}

/* Sends one request to `url` and runs the loop until done() is called. */
static void request(struct fixture *f, const char *url, struct uplink_http_request *req)
{
  char err[256];
  int before = f->done;
  uv_timer_t guard;

  if (!f->http) {
    f->http = uplink_http_create(&f->loop, &f->options, err, sizeof(err));
    if (!f->http)
      fail_msg("uplink_http_create: %s", err);
  }
  memset(req, 0, sizeof(*req));
  req->url = url;
  req->content_type = "application/x-protobuf";
  req->body = (const uint8_t *)"hello";
  req->body_len = 5;
  req->done = on_done;
  req->user = f;
  if (uplink_http_start(f->http, req) != 0)
    fail_msg("uplink_http_start: %s", req->error);
  uv_timer_init(&f->loop, &guard);
  uv_timer_start(&guard, on_guard, 30000, 0);
  while (f->done == before)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  print_message("  %s: failed=%d status=%ld error=%s\n", url, req->failed, req->status,
                req->error);
}

/* req was answered (no failure) with `status` and, unless NULL, exactly
 * `body`; then cleared for the next request. */
static void assert_answered(struct uplink_http_request *req, long status, const char *body)
{
  assert_int_equal(req->failed, 0);
  assert_int_equal(req->status, status);
  if (body) {
    assert_int_equal(req->response_len, strlen(body));
    assert_memory_equal(req->response, body, strlen(body));
  }
  uplink_http_request_clear(req);
}

static void test_keepalive_reuses_the_connection(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;

  assert_int_equal(server_start(f, "127.0.0.1", MODE_OK), 0);
  for (int i = 0; i < 3; i++) {
    request(f, f->url, &req);
    assert_answered(&req, 200, "ok");
  }
  assert_int_equal(f->server.requests, 3);
  assert_int_equal(f->server.connections, 1);
}

static void test_kept_alive_connection_closed_by_the_collector_is_retried_once(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;

  assert_int_equal(server_start(f, "127.0.0.1", MODE_DROP_SECOND), 0);
  request(f, f->url, &req);
  assert_int_equal(req.status, 200);
  uplink_http_request_clear(&req);
  /* Sent on the kept-alive connection, which the server closes unanswered:
   * sent again on a fresh one, and answered there. */
  request(f, f->url, &req);
  assert_answered(&req, 200, NULL);
  assert_int_equal(f->server.connections, 2);
  assert_int_equal(f->server.requests, 3);
}

static void test_kept_alive_connection_silent_until_the_timeout_is_retried_once(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;

  f->options.request_timeout_ms = 1000;
  assert_int_equal(server_start(f, "127.0.0.1", MODE_SILENT_SECOND), 0);
  request(f, f->url, &req);
  assert_int_equal(req.status, 200);
  uplink_http_request_clear(&req);
  /* Unanswered on the kept-alive connection until the timeout: sent again
   * on a fresh one, and answered there. */
  request(f, f->url, &req);
  assert_answered(&req, 200, NULL);
  assert_int_equal(f->server.connections, 2);
  assert_int_equal(f->server.requests, 3);
}

static void test_half_answered_request_is_not_sent_again(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;
  char where[64];

  assert_int_equal(server_start(f, "127.0.0.1", MODE_PARTIAL_SECOND), 0);
  request(f, f->url, &req);
  assert_int_equal(req.status, 200);
  uplink_http_request_clear(&req);
  request(f, f->url, &req);
  assert_int_equal(req.failed, 1);
  snprintf(where, sizeof(where), "127.0.0.1:%d: ", f->server.port);
  assert_non_null(strstr(req.error, where));
  assert_non_null(strstr(req.error, "in the middle of its answer"));
  uplink_http_request_clear(&req);
  assert_int_equal(f->server.connections, 1);
  assert_int_equal(f->server.requests, 2);
}

static void test_bytes_after_the_answer_keep_the_connection_from_reuse(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;

  assert_int_equal(server_start(f, "127.0.0.1", MODE_TRAILING), 0);
  for (int i = 0; i < 2; i++) {
    request(f, f->url, &req);
    assert_answered(&req, 200, "ok");
  }
  /* What came after the first answer could have been read as the second
   * request's answer: that connection was not used again. */
  assert_int_equal(f->server.requests, 2);
  assert_int_equal(f->server.connections, 2);
}

static void test_answer_larger_than_max_response_bytes_fails(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;

  assert_int_equal(server_start(f, "127.0.0.1", MODE_BIG), 0);
  request(f, f->url, &req);
  assert_int_equal(req.failed, 1);
  assert_non_null(strstr(req.error, "larger than 65536 bytes"));
  assert_null(req.response);
  uplink_http_request_clear(&req);
}

static void test_silent_server_times_out(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;

  f->options.request_timeout_ms = 300;
  assert_int_equal(server_start(f, "127.0.0.1", MODE_SILENT), 0);
  request(f, f->url, &req);
  assert_int_equal(req.failed, 1);
  assert_non_null(strstr(req.error, "timed out"));
  assert_non_null(strstr(req.error, "request_timeout_ms = 300 ms"));
  uplink_http_request_clear(&req);
  /* A fresh connection's silence is not retried. */
  assert_int_equal(f->server.connections, 1);
}

static void test_silent_tls_handshake_times_out_on_connect_timeout(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;
  char url[64];

  /* A server that accepts and never answers the ClientHello. */
  f->options.connect_timeout_ms = 300;
  assert_int_equal(server_start(f, "127.0.0.1", MODE_SILENT), 0);
  if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) != 0) {
    print_message("  no system CA bundle for uplink.ca = \"\": skipped\n");
    return;
  }
  snprintf(url, sizeof(url), "https://127.0.0.1:%d/", f->server.port);
  request(f, url, &req);
  assert_int_equal(req.failed, 1);
  assert_non_null(strstr(req.error, "timed out in the TLS handshake"));
  assert_non_null(strstr(req.error, "connect_timeout_ms = 300 ms"));
}

static void test_refused_connection_says_so(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;
  char url[64];

  /* A port nobody listens on: bound by the scripted server, then closed. */
  assert_int_equal(server_start(f, "127.0.0.1", MODE_OK), 0);
  uv_close((uv_handle_t *)&f->server.listener, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  uv_tcp_init(&f->loop, &f->server.listener); /* closed again by teardown */
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/", f->server.port);
  request(f, url, &req);
  assert_int_equal(req.failed, 1);
  assert_non_null(strstr(req.error, "cannot connect: connection refused"));
  uplink_http_request_clear(&req);
}

static void test_answer_headers_are_read(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;
  char why[64];

  assert_int_equal(server_start(f, "127.0.0.1", MODE_HEADERS), 0);
  request(f, f->url, &req);
  assert_int_equal(req.failed, 0);
  assert_int_equal(req.status, 503);
  assert_int_equal(req.retry_after_s, 7);
  assert_string_equal(req.response_type, "application/x-protobuf");
  assert_string_equal(req.response_encoding, "identity");
  assert_int_equal(uplink_http_answer_is_protobuf(&req, why, sizeof(why)), 1);
  uplink_http_request_clear(&req);
}

/* uplink_http_start() refuses `url` at once, with `what` in the error. */
static void expect_bad_url(struct fixture *f, const char *url, const char *what)
{
  struct uplink_http_request req;
  char err[256];

  if (!f->http) {
    f->http = uplink_http_create(&f->loop, &f->options, err, sizeof(err));
    assert_non_null(f->http);
  }
  memset(&req, 0, sizeof(req));
  req.url = url;
  req.content_type = "application/x-protobuf";
  req.done = on_done;
  req.user = f;
  if (uplink_http_start(f->http, &req) == 0)
    fail_msg("%s was accepted", url);
  print_message("  %s\n", req.error);
  if (!strstr(req.error, what) || strncmp(req.error, "uplink.url http", 15) != 0 ||
      !strstr(req.error, "is not a URL this client can use"))
    fail_msg("expected \"%s\" in: %s", what, req.error);
}

static void test_numeric_hosts_not_in_dotted_quad_form_are_refused(void **state)
{
  static const char *const hosts[] = {"127.1", "0x7f.0.0.1", "2130706433", "010.0.0.1",
                                      "127.0.0.01", "0177.0.0.1"};
  struct fixture *f = *state;
  struct uplink_http_request req;
  char url[128];

  /* Each would reach 127.0.0.1 by getaddrinfo() while TLS checked the text
   * as a DNS name. */
  for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
    snprintf(url, sizeof(url), "https://%s:8443/v1/batches", hosts[i]);
    expect_bad_url(f, url, "dotted-quad");
  }
  /* The dotted quad and names that merely start with digits still work. */
  assert_int_equal(server_start(f, "127.0.0.1", MODE_OK), 0);
  request(f, f->url, &req);
  assert_int_equal(req.status, 200);
  uplink_http_request_clear(&req);
  snprintf(url, sizeof(url), "http://localhost:%d/v1/batches", f->server.port);
  request(f, url, &req);
  assert_int_equal(req.status, 200);
  uplink_http_request_clear(&req);
}

static void test_url_query_is_sent_and_fragment_dropped(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;
  char url[128];

  assert_int_equal(server_start(f, "127.0.0.1", MODE_OK), 0);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d?x=1", f->server.port);
  request(f, url, &req);
  assert_int_equal(req.status, 200);
  assert_string_equal(f->server.target, "/?x=1");
  uplink_http_request_clear(&req);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/batches?seq=2#part", f->server.port);
  request(f, url, &req);
  assert_int_equal(req.status, 200);
  assert_string_equal(f->server.target, "/v1/batches?seq=2");
  uplink_http_request_clear(&req);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d#part", f->server.port);
  request(f, url, &req);
  assert_int_equal(req.status, 200);
  assert_string_equal(f->server.target, "/");
  uplink_http_request_clear(&req);
}

static void test_malformed_urls_are_refused_with_a_reason(void **state)
{
  struct fixture *f = *state;

  /* No header injection through the URL. */
  expect_bad_url(f, "http://127.0.0.1:8080/v1\r\nX-Injected: 1", "control character (0x0d)");
  expect_bad_url(f, "http://127.0.0.1:8080/v1 batches", "space or control character (0x20)");
  expect_bad_url(f, "http://127.0.0.1\t:8080/", "(0x09)");
  /* Only ":port" after an IPv6 address. */
  expect_bad_url(f, "http://[::1]x:8080/", "after the ']'");
  expect_bad_url(f, "http://[::1]8080/", "after the ']'");
  expect_bad_url(f, "http://[::1/", "no ']'");
  expect_bad_url(f, "http://127.0.0.1:80a/", "port is not a number");
}

static void test_ipv6_loopback(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;

  if (server_start(f, "::1", MODE_OK) != 0) {
    print_message("  no IPv6 loopback here: skipped\n");
    return;
  }
  request(f, f->url, &req);
  assert_int_equal(req.status, 200);
  uplink_http_request_clear(&req);
}

/* ---- mutual TLS against the platform's server ------------------------------------- */

struct tls_server {
  char peers[4][64];
  int requests;
};

static void tls_handle(http_exchange *exchange, void *arg)
{
  struct tls_server *server = arg;
  if (server->requests < 4)
    snprintf(server->peers[server->requests], sizeof(server->peers[0]), "%s",
             http_exchange_peer(exchange));
  server->requests++;
  http_exchange_respond(exchange, 200, "application/x-protobuf", NULL, "tls", 3);
}

struct pki {
  char cert[128], key[128], ca[128], other_ca[128], server_cert[128], server_key[128];
  struct http_tls_config tls;
};

/* The test PKI (tests/tools/pki.sh) in a temporary directory. Returns 0,
 * or -1 when it cannot be made (no openssl): the test is then skipped. */
static int make_pki(struct fixture *f, struct pki *pki)
{
  char cmd[512];

  snprintf(f->dir, sizeof(f->dir), "/tmp/uplink-http-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(cmd, sizeof(cmd), "bash %s/tests/tools/pki.sh init %s/pki >%s/pki.log 2>&1",
           POS_SOURCE_DIR, f->dir, f->dir);
  if (system(cmd) != 0) {
    print_message("  pki.sh failed (openssl missing?): skipped\n");
    return -1;
  }
  snprintf(pki->cert, sizeof(pki->cert), "%s/pki/device-S001-D1.crt", f->dir);
  snprintf(pki->key, sizeof(pki->key), "%s/pki/device-S001-D1.key", f->dir);
  snprintf(pki->ca, sizeof(pki->ca), "%s/pki/ca.crt", f->dir);
  snprintf(pki->other_ca, sizeof(pki->other_ca), "%s/pki/other-ca/ca.crt", f->dir);
  snprintf(pki->server_cert, sizeof(pki->server_cert), "%s/pki/server.crt", f->dir);
  snprintf(pki->server_key, sizeof(pki->server_key), "%s/pki/server.key", f->dir);
  pki->tls =
      (struct http_tls_config){pki->server_cert, pki->server_key, pki->ca, NULL, 1, 1, NULL, 0};
  f->options.cert_file = pki->cert;
  f->options.key_file = pki->key;
  f->options.ca_file = pki->ca;
  return 0;
}

/* The platform's HTTPS server (mutual TLS) on `host`, or NULL if that
 * address cannot be bound. */
static http_server *tls_server_start(struct fixture *f, struct pki *pki, const char *host,
                                     struct tls_server *seen)
{
  struct http_server_config config = {.listen_host = host,
                                      .max_header_bytes = 16 * 1024,
                                      .max_body_bytes = 1 << 20,
                                      .idle_timeout_ms = 60000,
                                      .request_timeout_ms = 60000,
                                      .max_connections = 16,
                                      .tls = &pki->tls};
  char err[256];

  return http_server_create(&f->loop, &config, tls_handle, seen, err, sizeof(err));
}

/* A failed request to `url` with a fresh client whose error holds `what`. */
static void expect_refusal(struct fixture *f, const char *url, const char *what)
{
  struct uplink_http_request req;

  uplink_http_close(f->http, NULL, NULL);
  f->http = NULL;
  request(f, url, &req);
  assert_int_equal(req.failed, 1);
  if (!strstr(req.error, what))
    fail_msg("expected \"%s\" in: %s", what, req.error);
}

static void test_mutual_tls_keeps_the_connection(void **state)
{
  struct fixture *f = *state;
  struct tls_server seen = {0};
  struct uplink_http_request req;
  struct pki pki;
  http_server *server;
  char url[128];

  if (make_pki(f, &pki) != 0)
    return;
  server = tls_server_start(f, &pki, "127.0.0.1", &seen);
  assert_non_null(server);
  /* By IP address (checked against the certificate's IP SAN), twice on one connection. */
  snprintf(url, sizeof(url), "https://127.0.0.1:%d/v1/batches", http_server_port(server));
  for (int i = 0; i < 2; i++) {
    request(f, url, &req);
    assert_answered(&req, 200, "tls");
  }
  assert_int_equal(seen.requests, 2);
  assert_string_equal(seen.peers[0], seen.peers[1]);
  /* By name (a DNS SAN), which resolves to ::1 and 127.0.0.1: the refused
   * address is passed over. */
  snprintf(url, sizeof(url), "https://localhost:%d/v1/batches", http_server_port(server));
  request(f, url, &req);
  assert_int_equal(req.status, 200);
  uplink_http_request_clear(&req);
  http_server_close(server, NULL, NULL);
}

static void test_tls_refusals_say_why(void **state)
{
  struct fixture *f = *state;
  struct tls_server seen = {0};
  struct pki pki;
  http_server *server, *server6;
  char url[128];

  if (make_pki(f, &pki) != 0)
    return;
  server = tls_server_start(f, &pki, "127.0.0.1", &seen);
  assert_non_null(server);
  snprintf(url, sizeof(url), "https://127.0.0.1:%d/v1/batches", http_server_port(server));
  /* A collector certificate from a CA we do not trust. */
  f->options.ca_file = pki.other_ca;
  expect_refusal(f, url, "TLS: the collector's certificate is not trusted");
  /* No device certificate: the collector refuses the handshake. */
  f->options.ca_file = pki.ca;
  f->options.cert_file = f->options.key_file = "";
  expect_refusal(f, url, "no device certificate is configured");
  f->options.cert_file = pki.cert;
  f->options.key_file = pki.key;
  /* An address the certificate does not carry (::1), when there is IPv6. */
  server6 = tls_server_start(f, &pki, "::1", &seen);
  if (server6) {
    snprintf(url, sizeof(url), "https://[::1]:%d/v1/batches", http_server_port(server6));
    expect_refusal(f, url, "TLS: hostname mismatch");
    http_server_close(server6, NULL, NULL);
  }
  http_server_close(server, NULL, NULL);
}

/* ---- a raw TLS server: answers as scripted, then ends as told --------------------- */

/* One connection on its own thread (blocking mbedTLS sockets): the
 * handshake (no client certificate asked), the request read, `answer`
 * written, then the connection ended with or without close_notify. */
struct raw_tls {
  const char *cert, *key;
  const char *answer;
  int close_notify;
  mbedtls_net_context listen;
  char port[8];
  pthread_t thread;
  int handshakes;
};

static void *raw_tls_run(void *arg)
{
  struct raw_tls *raw = arg;
  mbedtls_net_context client;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  mbedtls_ssl_config conf;
  mbedtls_ssl_context ssl;
  mbedtls_x509_crt cert;
  mbedtls_pk_context key;
  unsigned char buf[4096];
  size_t got = 0;
  int rc;

  mbedtls_net_init(&client);
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  mbedtls_ssl_config_init(&conf);
  mbedtls_ssl_init(&ssl);
  mbedtls_x509_crt_init(&cert);
  mbedtls_pk_init(&key);
  if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, NULL, 0) != 0 ||
      mbedtls_x509_crt_parse_file(&cert, raw->cert) != 0 ||
      mbedtls_pk_parse_keyfile(&key, raw->key, NULL) != 0 ||
      mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                  MBEDTLS_SSL_PRESET_DEFAULT) != 0)
    goto out;
  mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
  mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_NONE);
  if (mbedtls_ssl_conf_own_cert(&conf, &cert, &key) != 0 || mbedtls_ssl_setup(&ssl, &conf) != 0)
    goto out;
  if (mbedtls_net_accept(&raw->listen, &client, NULL, 0, NULL) != 0)
    goto out;
  mbedtls_ssl_set_bio(&ssl, &client, mbedtls_net_send, mbedtls_net_recv, NULL);
  if (mbedtls_ssl_handshake(&ssl) != 0)
    goto out;
  raw->handshakes++;
  /* The request: headers and the 5-byte body "hello". */
  while (got < sizeof(buf) - 1) {
    rc = mbedtls_ssl_read(&ssl, buf + got, sizeof(buf) - 1 - got);
    if (rc <= 0)
      goto out;
    got += (size_t)rc;
    buf[got] = '\0';
    if (strstr((char *)buf, "\r\n\r\nhello"))
      break;
  }
  for (size_t done = 0; done < strlen(raw->answer); done += (size_t)rc) {
    rc = mbedtls_ssl_write(&ssl, (const unsigned char *)raw->answer + done,
                           strlen(raw->answer) - done);
    if (rc <= 0)
      goto out;
  }
  if (raw->close_notify)
    (void)mbedtls_ssl_close_notify(&ssl);
out:
  mbedtls_net_free(&client); /* a plain TCP close */
  mbedtls_pk_free(&key);
  mbedtls_x509_crt_free(&cert);
  mbedtls_ssl_free(&ssl);
  mbedtls_ssl_config_free(&conf);
  mbedtls_ctr_drbg_free(&drbg);
  mbedtls_entropy_free(&entropy);
  return NULL;
}

/* Listens on 127.0.0.1 (a free port found by the scripted server's
 * listener) and serves one connection on a thread. */
static void raw_tls_start(struct fixture *f, struct raw_tls *raw)
{
  assert_int_equal(server_start(f, "127.0.0.1", MODE_SILENT), 0);
  snprintf(raw->port, sizeof(raw->port), "%d", f->server.port);
  uv_close((uv_handle_t *)&f->server.listener, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  uv_tcp_init(&f->loop, &f->server.listener); /* closed again by teardown */
  mbedtls_net_init(&raw->listen);
  assert_int_equal(mbedtls_net_bind(&raw->listen, "127.0.0.1", raw->port, MBEDTLS_NET_PROTO_TCP),
                   0);
  assert_int_equal(pthread_create(&raw->thread, NULL, raw_tls_run, raw), 0);
}

static void raw_tls_stop(struct raw_tls *raw)
{
  pthread_join(raw->thread, NULL);
  mbedtls_net_free(&raw->listen);
}

static void test_tls_answer_cut_by_tcp_close_without_close_notify_fails(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;
  struct raw_tls raw = {0};
  struct pki pki;
  char url[128];

  if (make_pki(f, &pki) != 0)
    return;
  /* No Content-Length, not chunked: the answer ends with the connection. */
  raw.cert = pki.server_cert;
  raw.key = pki.server_key;
  raw.answer = "HTTP/1.1 200 OK\r\n\r\npart";
  raw.close_notify = 0;
  raw_tls_start(f, &raw);
  snprintf(url, sizeof(url), "https://127.0.0.1:%s/v1/batches", raw.port);
  request(f, url, &req);
  raw_tls_stop(&raw);
  assert_int_equal(raw.handshakes, 1);
  assert_int_equal(req.failed, 1);
  assert_null(req.response);
  if (!strstr(req.error, "without TLS close_notify"))
    fail_msg("expected a cut-off answer to be refused: %s", req.error);
  uplink_http_request_clear(&req);
  /* The same answer ended by close_notify is whole. */
  raw.close_notify = 1;
  raw.handshakes = 0;
  raw_tls_start(f, &raw);
  snprintf(url, sizeof(url), "https://127.0.0.1:%s/v1/batches", raw.port);
  request(f, url, &req);
  raw_tls_stop(&raw);
  assert_answered(&req, 200, "part");
}

/* One more collector certificate from the test CA, made now:
 * DIR/pki/NAME.{crt,key}, subject CN=`cn`, subjectAltName `san` (NULL for
 * none), valid for 30 days or (`expired`) only in January 2020. Returns 0
 * or -1 (openssl failed). */
static int make_server_cert(struct fixture *f, const char *name, const char *cn,
                            const char *san, int expired)
{
  char cmd[2048];

  snprintf(cmd, sizeof(cmd),
           "set -e; cd %s/pki; "
           "openssl ecparam -name prime256v1 -genkey -noout -out %s.key 2>/dev/null; "
           "openssl req -new -key %s.key -subj '/CN=%s' -out %s.csr 2>/dev/null; "
           "printf '[leaf]\nbasicConstraints = critical, CA:false\n"
           "keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n%s%s\n' "
           ">%s.ext; "
           "openssl ca -batch -config ca/ca.cnf -extfile %s.ext -extensions leaf %s "
           "-in %s.csr -out %s.crt >>%s/pki.log 2>&1",
           f->dir, name, name, cn, name, san ? "subjectAltName = " : "", san ? san : "", name,
           name, expired ? "-startdate 20200101000000Z -enddate 20200201000000Z" : "", name,
           name, f->dir);
  if (system(cmd) != 0) {
    print_message("  making %s failed: see %s/pki.log\n", name, f->dir);
    return -1;
  }
  return 0;
}

/* https://127.0.0.1 against a collector presenting DIR/pki/NAME.crt:
 * refused, with `what` in the error. */
static void expect_collector_cert_refused(struct fixture *f, struct pki *pki, const char *name,
                                          const char *what)
{
  struct tls_server seen = {0};
  struct pki other = *pki;
  char cert[160], key[160], url[128];
  http_server *server;

  snprintf(cert, sizeof(cert), "%s/pki/%s.crt", f->dir, name);
  snprintf(key, sizeof(key), "%s/pki/%s.key", f->dir, name);
  other.tls.cert_file = cert;
  other.tls.key_file = key;
  server = tls_server_start(f, &other, "127.0.0.1", &seen);
  assert_non_null(server);
  snprintf(url, sizeof(url), "https://127.0.0.1:%d/v1/batches", http_server_port(server));
  expect_refusal(f, url, what);
  assert_int_equal(seen.requests, 0);
  http_server_close(server, NULL, NULL);
}

static void test_ip_address_not_in_an_ip_san_is_refused(void **state)
{
  struct fixture *f = *state;
  struct pki pki;

  if (make_pki(f, &pki) != 0)
    return;
  /* The address only as the subject's CN, as a DNS name, or another address. */
  if (make_server_cert(f, "cn-only", "127.0.0.1", NULL, 0) != 0 ||
      make_server_cert(f, "dns-san", "collector.test", "DNS:127.0.0.1", 0) != 0 ||
      make_server_cert(f, "other-ip", "collector.test", "IP:127.0.0.2", 0) != 0)
    fail_msg("cannot make the test certificates");
  expect_collector_cert_refused(f, &pki, "cn-only", "TLS: hostname mismatch");
  expect_collector_cert_refused(f, &pki, "dns-san", "TLS: hostname mismatch");
  expect_collector_cert_refused(f, &pki, "other-ip", "TLS: hostname mismatch");
}

static void test_expired_collector_certificate_names_the_device_clock(void **state)
{
  struct fixture *f = *state;
  struct pki pki;

  if (make_pki(f, &pki) != 0)
    return;
  if (make_server_cert(f, "expired-server", "collector.test", "IP:127.0.0.1", 1) != 0)
    fail_msg("cannot make the test certificate");
  expect_collector_cert_refused(f, &pki, "expired-server",
                                "certificate expired at 2020-02-01T00:00:00Z and this device's "
                                "clock says ");
}

/* TLS session resumption against a server that offers it (openssl
 * s_server: session tickets and a session cache; the collector's tickets
 * are tested in e2e_collector_tls_resume). s_server -www answers no POST: each request times out after
 * its handshake, and its connection is closed, so the second request needs
 * a new connection, which resumes the first one's session. After two
 * connections s_server exits and counts its session cache hits. */
static void test_tls_session_is_resumed(void **state)
{
  struct fixture *f = *state;
  struct uplink_http_request req;
  struct pki pki;
  char cmd[1024], url[128], log_path[160], pid_path[160], text[8192];
  FILE *file;
  size_t len = 0;
  int port, pid = 0;

  if (make_pki(f, &pki) != 0)
    return;
  assert_int_equal(server_start(f, "127.0.0.1", MODE_SILENT), 0);
  port = f->server.port; /* a free port: freed for s_server */
  uv_close((uv_handle_t *)&f->server.listener, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  uv_tcp_init(&f->loop, &f->server.listener); /* closed again by teardown */
  snprintf(log_path, sizeof(log_path), "%s/s_server.log", f->dir);
  snprintf(pid_path, sizeof(pid_path), "%s/s_server.pid", f->dir);
  snprintf(cmd, sizeof(cmd),
           "openssl s_server -accept 127.0.0.1:%d -tls1_2 -cert %s -key %s -CAfile %s "
           "-Verify 1 -www -naccept 2 >%s 2>&1 </dev/null & echo $! >%s",
           port, pki.server_cert, pki.server_key, pki.ca, log_path, pid_path);
  assert_int_equal(system(cmd), 0);
  file = fopen(pid_path, "r");
  assert_non_null(file);
  assert_int_equal(fscanf(file, "%d", &pid), 1);
  fclose(file);
  for (int waited = 0; waited < 100; waited++) {
    file = fopen(log_path, "r");
    len = file ? fread(text, 1, sizeof(text) - 1, file) : 0;
    if (file)
      fclose(file);
    text[len] = '\0';
    if (strstr(text, "ACCEPT"))
      break;
    usleep(100 * 1000);
  }
  f->options.request_timeout_ms = 1500;
  snprintf(url, sizeof(url), "https://127.0.0.1:%d/v1/batches", port);
  for (int i = 0; i < 2; i++) {
    request(f, url, &req);
    assert_int_equal(req.failed, 1);
    assert_non_null(strstr(req.error, "timed out"));
  }
  for (int waited = 0; waited < 100 && kill(pid, 0) == 0; waited++)
    usleep(100 * 1000);
  kill(pid, SIGTERM);
  file = fopen(log_path, "r");
  assert_non_null(file);
  len = fread(text, 1, sizeof(text) - 1, file);
  fclose(file);
  text[len] = '\0';
  if (!strstr(text, "   1 session cache hits"))
    fail_msg("the second connection did not resume the session; s_server said:\n%s", text);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_keepalive_reuses_the_connection, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_kept_alive_connection_closed_by_the_collector_is_retried_once, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_kept_alive_connection_silent_until_the_timeout_is_retried_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_half_answered_request_is_not_sent_again, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          test_bytes_after_the_answer_keep_the_connection_from_reuse, setup, teardown),
      cmocka_unit_test_setup_teardown(test_answer_larger_than_max_response_bytes_fails, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_silent_server_times_out, setup, teardown),
      cmocka_unit_test_setup_teardown(test_silent_tls_handshake_times_out_on_connect_timeout,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_refused_connection_says_so, setup, teardown),
      cmocka_unit_test_setup_teardown(test_answer_headers_are_read, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_numeric_hosts_not_in_dotted_quad_form_are_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_url_query_is_sent_and_fragment_dropped, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_malformed_urls_are_refused_with_a_reason, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_ipv6_loopback, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mutual_tls_keeps_the_connection, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tls_refusals_say_why, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tls_session_is_resumed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ip_address_not_in_an_ip_san_is_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_expired_collector_certificate_names_the_device_clock,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_tls_answer_cut_by_tcp_close_without_close_notify_fails, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
