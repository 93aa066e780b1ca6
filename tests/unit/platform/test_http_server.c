/*
 * test_http_server.c - the HTTP(S) server over real loopback sockets.
 *
 * Each test runs a server on its own libuv loop in a background thread and
 * talks to it from the test thread with libcurl (or a raw socket, for bytes
 * curl would never send). Stopping the loop goes through a uv_async; every
 * test ends with uv_loop_close() == 0. TLS tests make a throwaway PKI with
 * the openssl CLI in a mkdtemp directory (removed afterwards); without
 * openssl they are skipped.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <mbedtls/x509_crt.h>
#include <uv.h>

#include "platform/http_server.h"
#include "platform/log.h"

/* ---- the server under test, on its own thread ---------------------------- */

enum handler_mode {
  MODE_ECHO,  /* respond at once: body echoed, or "METHOD path query" */
  MODE_DEFER, /* respond from a uv_timer after defer_ms */
  MODE_CERT,  /* respond with the client certificate's subject */
};

struct test_server {
  uv_loop_t loop;
  uv_async_t wake;
  pthread_t thread;
  http_server *server;
  int port;
  enum handler_mode mode;
  uint64_t defer_ms;
  atomic_int handled;          /* handler calls */
  atomic_int respond_failures; /* http_exchange_respond() returned -1 */
  atomic_int closed;           /* closed_cb calls */
  atomic_int headers_checked;  /* on_headers hook calls */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int stop_requested;
  int (*call_fn)(struct test_server *ts); /* run on the loop thread */
  int call_result;
  int call_done;
  char subject[256];
  char err[512];
  int running; /* started and not yet stopped */
};

struct deferred {
  uv_timer_t timer;
  http_exchange *exchange;
  struct test_server *ts;
};

static void count_respond(struct test_server *ts, int rc)
{
  if (rc != 0)
    atomic_fetch_add(&ts->respond_failures, 1);
}

static void deferred_on_close(uv_handle_t *handle)
{
  free(handle->data);
}

static void deferred_on_timer(uv_timer_t *timer)
{
  struct deferred *deferred = timer->data;
  const char *path = http_exchange_path(deferred->exchange);

  count_respond(deferred->ts, http_exchange_respond(deferred->exchange, 200, "text/plain", NULL,
                                                    path, strlen(path)));
  uv_close((uv_handle_t *)&deferred->timer, deferred_on_close);
}

static void test_handler(http_exchange *exchange, void *arg)
{
  struct test_server *ts = arg;
  char body[512];
  char extra[256];
  const char *request_body;
  const char *test_header;
  size_t request_length;
  int length;

  atomic_fetch_add(&ts->handled, 1);
  switch (ts->mode) {
  case MODE_ECHO:
    request_body = http_exchange_body(exchange, &request_length);
    test_header = http_exchange_header(exchange, "x-test");
    snprintf(extra, sizeof(extra), "X-Echo: %s\r\nX-Peer: %s\r\n", test_header ? test_header : "-",
             http_exchange_peer(exchange));
    if (request_length > 0) {
      count_respond(ts, http_exchange_respond(exchange, 200, "application/octet-stream", extra,
                                              request_body, request_length));
    } else {
      length = snprintf(body, sizeof(body), "%s %s %s", http_exchange_method(exchange),
                        http_exchange_path(exchange), http_exchange_query(exchange));
      count_respond(ts, http_exchange_respond(exchange, 200, "text/plain", extra, body,
                                              (size_t)length));
    }
    break;
  case MODE_DEFER: {
    struct deferred *deferred = calloc(1, sizeof(*deferred));
    assert_non_null(deferred);
    deferred->exchange = exchange;
    deferred->ts = ts;
    deferred->timer.data = deferred;
    uv_timer_init(&ts->loop, &deferred->timer);
    uv_timer_start(&deferred->timer, deferred_on_timer, ts->defer_ms, 0);
    break;
  }
  case MODE_CERT: {
    const struct mbedtls_x509_crt *cert = http_exchange_peer_cert(exchange);
    pthread_mutex_lock(&ts->lock);
    if (cert != NULL)
      mbedtls_x509_dn_gets(ts->subject, sizeof(ts->subject), &cert->subject);
    else
      snprintf(ts->subject, sizeof(ts->subject), "no-cert");
    length = snprintf(body, sizeof(body), "%s", ts->subject);
    pthread_mutex_unlock(&ts->lock);
    count_respond(ts, http_exchange_respond(exchange, 200, "text/plain", NULL, body,
                                            (size_t)length));
    break;
  }
  }
}

/* The on-headers hook of the tests: POSTs need "Authorization: yes". */
static int test_on_headers(const http_exchange *request, void *arg, struct http_refusal *refusal)
{
  struct test_server *ts = arg;
  const char *authorization = http_exchange_header(request, "authorization");
  size_t body_length = 99;

  atomic_fetch_add(&ts->headers_checked, 1);
  /* The view has the request line and headers, and no body yet. */
  assert_string_equal(http_exchange_body(request, &body_length), "");
  assert_int_equal(body_length, 0);
  if (strcmp(http_exchange_method(request), "POST") != 0 ||
      (authorization != NULL && strcmp(authorization, "yes") == 0))
    return 0;
  snprintf(refusal->error, sizeof(refusal->error), "no entry to %s?%s without a token",
           http_exchange_path(request), http_exchange_query(request));
  refusal->extra_headers = "WWW-Authenticate: Bearer realm=\"test\"\r\n";
  return 401;
}

static void on_server_closed(void *arg)
{
  struct test_server *ts = arg;
  atomic_fetch_add(&ts->closed, 1);
}

static void on_wake(uv_async_t *async)
{
  struct test_server *ts = async->data;

  pthread_mutex_lock(&ts->lock);
  if (ts->call_fn != NULL) {
    ts->call_result = ts->call_fn(ts);
    ts->call_fn = NULL;
    ts->call_done = 1;
    pthread_cond_broadcast(&ts->cond);
  }
  if (ts->stop_requested) {
    http_server_close(ts->server, on_server_closed, ts);
    ts->server = NULL;
    uv_close((uv_handle_t *)&ts->wake, NULL);
  }
  pthread_mutex_unlock(&ts->lock);
}

static void *server_thread(void *arg)
{
  struct test_server *ts = arg;
  uv_run(&ts->loop, UV_RUN_DEFAULT);
  return NULL;
}

static void default_config(struct http_server_config *config)
{
  memset(config, 0, sizeof(*config));
  config->listen_host = "127.0.0.1";
  config->port = 0;
  config->max_header_bytes = 8192;
  config->max_body_bytes = 64 * 1024;
  config->idle_timeout_ms = 5000;
  config->request_timeout_ms = 5000;
  config->max_connections = 16;
}

static void server_start(struct test_server *ts, const struct http_server_config *config,
                         enum handler_mode mode, uint64_t defer_ms)
{
  memset(ts, 0, sizeof(*ts));
  ts->mode = mode;
  ts->defer_ms = defer_ms;
  pthread_mutex_init(&ts->lock, NULL);
  pthread_cond_init(&ts->cond, NULL);
  assert_int_equal(uv_loop_init(&ts->loop), 0);
  assert_int_equal(uv_async_init(&ts->loop, &ts->wake, on_wake), 0);
  ts->wake.data = ts;
  ts->server = http_server_create(&ts->loop, config, test_handler, ts, ts->err, sizeof(ts->err));
  if (ts->server == NULL)
    fail_msg("http_server_create: %s", ts->err);
  ts->port = http_server_port(ts->server);
  assert_true(ts->port > 0);
  assert_int_equal(pthread_create(&ts->thread, NULL, server_thread, ts), 0);
  ts->running = 1;
}

/* Runs `fn` on the loop thread and returns its result. */
static int server_call(struct test_server *ts, int (*fn)(struct test_server *ts))
{
  int result;

  pthread_mutex_lock(&ts->lock);
  ts->call_fn = fn;
  ts->call_done = 0;
  uv_async_send(&ts->wake);
  while (!ts->call_done)
    pthread_cond_wait(&ts->cond, &ts->lock);
  result = ts->call_result;
  pthread_mutex_unlock(&ts->lock);
  return result;
}

static void server_stop(struct test_server *ts)
{
  ts->running = 0;
  pthread_mutex_lock(&ts->lock);
  ts->stop_requested = 1;
  pthread_mutex_unlock(&ts->lock);
  uv_async_send(&ts->wake);
  assert_int_equal(pthread_join(ts->thread, NULL), 0);
  assert_int_equal(atomic_load(&ts->closed), 1);
  assert_int_equal(uv_loop_close(&ts->loop), 0);
  pthread_cond_destroy(&ts->cond);
  pthread_mutex_destroy(&ts->lock);
}

/* Per test: the server's state, and a stop even when an assertion failed midway. */
static int test_setup(void **state)
{
  *state = calloc(1, sizeof(struct test_server));
  return *state != NULL ? 0 : -1;
}

static int test_teardown(void **state)
{
  struct test_server *ts = *state;

  if (ts->running)
    server_stop(ts);
  free(ts);
  return 0;
}

static void sleep_ms(unsigned ms)
{
  struct timespec delay = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  nanosleep(&delay, NULL);
}

static void wait_for_count(atomic_int *counter, int expected, unsigned timeout_ms)
{
  for (unsigned waited = 0; atomic_load(counter) < expected && waited < timeout_ms; waited += 10)
    sleep_ms(10);
  assert_int_equal(atomic_load(counter), expected);
}

/* ---- libcurl client ----------------------------------------------------- */

struct reply {
  CURLcode rc;
  long status;
  long num_connects;
  char body[128 * 1024];
  size_t body_length;
  char headers[8192];
  size_t headers_length;
};

static size_t reply_body(char *data, size_t size, size_t count, void *arg)
{
  struct reply *reply = arg;
  size_t length = size * count;

  if (length > sizeof(reply->body) - 1 - reply->body_length)
    return 0;
  memcpy(reply->body + reply->body_length, data, length);
  reply->body_length += length;
  reply->body[reply->body_length] = '\0';
  return length;
}

static size_t reply_header(char *data, size_t size, size_t count, void *arg)
{
  struct reply *reply = arg;
  size_t length = size * count;

  if (length > sizeof(reply->headers) - 1 - reply->headers_length)
    return 0;
  memcpy(reply->headers + reply->headers_length, data, length);
  reply->headers_length += length;
  reply->headers[reply->headers_length] = '\0';
  return length;
}

static void curl_base(CURL *curl, const char *url, struct reply *reply)
{
  memset(reply, 0, sizeof(*reply));
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, reply_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, reply);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, reply_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, reply);
}

static void curl_run(CURL *curl, struct reply *reply)
{
  reply->rc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply->status);
  curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &reply->num_connects);
}

static void url_for(char *url, size_t url_size, const char *scheme, int port, const char *path)
{
  snprintf(url, url_size, "%s://127.0.0.1:%d%s", scheme, port, path);
}

/* ---- raw sockets --------------------------------------------------------- */

/* Connects from `source` (a loopback address such as "127.0.0.2"), or any when NULL. */
static int raw_connect_from(int port, const char *source)
{
  struct sockaddr_in addr;
  struct timeval timeout = {.tv_sec = 5, .tv_usec = 0};
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  assert_true(fd >= 0);
  if (source != NULL) {
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, source, &addr.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
  }
  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

static int raw_connect(int port)
{
  return raw_connect_from(port, NULL);
}

static void raw_send(int fd, const char *data, size_t length)
{
  while (length > 0) {
    ssize_t sent = send(fd, data, length, MSG_NOSIGNAL);
    assert_true(sent > 0);
    data += sent;
    length -= (size_t)sent;
  }
}

/* Reads until EOF (or reset, or the 5 s receive timeout). Returns the byte count. */
static size_t raw_read_all(int fd, char *out, size_t out_size)
{
  size_t used = 0;

  while (used < out_size - 1) {
    ssize_t got = recv(fd, out + used, out_size - 1 - used, 0);
    if (got <= 0)
      break;
    used += (size_t)got;
  }
  out[used] = '\0';
  return used;
}

/* Case-insensitive strstr (strcasestr is a GNU extension). */
static const char *find_ci(const char *haystack, const char *needle)
{
  size_t needle_length = strlen(needle);

  for (const char *p = haystack; *p; p++) {
    if (strncasecmp(p, needle, needle_length) == 0)
      return p;
  }
  return NULL;
}

/* Reads one response with a Content-Length. Returns its length, or 0. */
static size_t raw_read_response(int fd, char *out, size_t out_size)
{
  size_t used = 0;

  while (used < out_size - 1) {
    ssize_t got = recv(fd, out + used, out_size - 1 - used, 0);
    const char *end;
    const char *length_header;
    if (got <= 0)
      return 0;
    used += (size_t)got;
    out[used] = '\0';
    end = strstr(out, "\r\n\r\n");
    length_header = find_ci(out, "content-length:");
    if (end != NULL && length_header != NULL) {
      size_t body = strtoul(length_header + 15, NULL, 10);
      if (used >= (size_t)(end + 4 - out) + body)
        return used;
    }
  }
  return 0;
}

/* ---- plain HTTP tests ---------------------------------------------------- */

static void test_get_and_post_echo(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct reply *reply = malloc(sizeof(*reply));
  struct curl_slist *headers = NULL;
  char url[128];
  static const char payload[] = "sale\0with\0NULs and text";
  CURL *curl = curl_easy_init();

  default_config(&config);
  server_start(ts, &config, MODE_ECHO, 0);

  url_for(url, sizeof(url), "http", ts->port, "/hello/world?store=42&x=1#frag");
  curl_base(curl, url, reply);
  headers = curl_slist_append(headers, "X-Test: abc def");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 200);
  assert_string_equal(reply->body, "GET /hello/world store=42&x=1");
  assert_non_null(strstr(reply->headers, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(reply->headers, "Content-Type: text/plain\r\n"));
  assert_non_null(strstr(reply->headers, "Connection: keep-alive\r\n"));
  assert_non_null(strstr(reply->headers, "X-Echo: abc def\r\n"));
  assert_non_null(strstr(reply->headers, "X-Peer: 127.0.0.1:"));

  url_for(url, sizeof(url), "http", ts->port, "/v1/sales");
  curl_base(curl, url, reply);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)(sizeof(payload) - 1));
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 200);
  assert_int_equal(reply->body_length, sizeof(payload) - 1);
  assert_memory_equal(reply->body, payload, sizeof(payload) - 1);

  /* HEAD: the headers a GET gets, no body. */
  url_for(url, sizeof(url), "http", ts->port, "/head");
  curl_base(curl, url, reply);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, NULL);
  curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 200);
  assert_int_equal(reply->body_length, 0);
  assert_non_null(strstr(reply->headers, "Content-Length: 11\r\n"));

  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 3);
  assert_int_equal(atomic_load(&ts->respond_failures), 0);
  free(reply);
}

static void test_chunked_post_echo(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  char response[4096];
  static const char request[] = "POST /chunked HTTP/1.1\r\nHost: x\r\n"
                                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  int fd;

  default_config(&config);
  server_start(ts, &config, MODE_ECHO, 0);
  fd = raw_connect(ts->port);
  raw_send(fd, request, sizeof(request) - 1);
  raw_read_all(fd, response, sizeof(response));
  close(fd);
  assert_non_null(strstr(response, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(response, "Connection: close\r\n"));
  assert_non_null(strstr(response, "\r\n\r\nhello world"));
  server_stop(ts);
}

static void test_keep_alive_reuses_connection(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct reply *reply = malloc(sizeof(*reply));
  char url[128];
  CURL *curl = curl_easy_init();

  default_config(&config);
  server_start(ts, &config, MODE_ECHO, 0);
  url_for(url, sizeof(url), "http", ts->port, "/one");
  curl_base(curl, url, reply);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->num_connects, 1);

  url_for(url, sizeof(url), "http", ts->port, "/two");
  curl_base(curl, url, reply);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 200);
  assert_string_equal(reply->body, "GET /two ");
  /* 0 new connections: the second request went over the first one. */
  assert_int_equal(reply->num_connects, 0);

  curl_easy_cleanup(curl);
  server_stop(ts);
  free(reply);
}

static void test_connection_close_and_http10_honoured(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  char response[4096];
  static const char close_request[] = "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  static const char http10_request[] = "GET /old HTTP/1.0\r\n\r\n";
  static const char http10_keep[] = "GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
  int fd;

  default_config(&config);
  server_start(ts, &config, MODE_ECHO, 0);

  /* raw_read_all returns only at EOF: the server must close. */
  fd = raw_connect(ts->port);
  raw_send(fd, close_request, sizeof(close_request) - 1);
  raw_read_all(fd, response, sizeof(response));
  close(fd);
  assert_non_null(strstr(response, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(response, "Connection: close\r\n"));

  fd = raw_connect(ts->port);
  raw_send(fd, http10_request, sizeof(http10_request) - 1);
  raw_read_all(fd, response, sizeof(response));
  close(fd);
  assert_non_null(strstr(response, "Connection: close\r\n"));
  assert_non_null(strstr(response, "GET /old "));

  /* HTTP/1.0 with an explicit keep-alive stays open. */
  fd = raw_connect(ts->port);
  raw_send(fd, http10_keep, sizeof(http10_keep) - 1);
  assert_true(raw_read_response(fd, response, sizeof(response)) > 0);
  assert_non_null(strstr(response, "Connection: keep-alive\r\n"));
  raw_send(fd, http10_keep, sizeof(http10_keep) - 1);
  assert_true(raw_read_response(fd, response, sizeof(response)) > 0);
  close(fd);

  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 4);
}

static void test_pipelined_requests_answered_in_order(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  char response[8192];
  static const char requests[] = "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                                 "GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
                                 "GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  enum handler_mode modes[] = {MODE_ECHO, MODE_DEFER};
  char *first;
  char *second;
  char *third;
  int fd;

  default_config(&config);
  for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
    server_start(ts, &config, modes[i], 20);
    fd = raw_connect(ts->port);
    raw_send(fd, requests, sizeof(requests) - 1);
    raw_read_all(fd, response, sizeof(response));
    close(fd);
    first = strstr(response, "/first");
    second = strstr(response, "/second");
    third = strstr(response, "/third");
    assert_non_null(first);
    assert_non_null(second);
    assert_non_null(third);
    assert_true(first < second && second < third);
    server_stop(ts);
    assert_int_equal(atomic_load(&ts->handled), 3);
  }
}

/*
 * Regression: the stash of pipelined bytes was compacted only once fully
 * parsed, and its cap counted bytes already parsed, so a client sending
 * many large requests back to back had its connection dropped mid-request.
 */
static void test_pipelined_large_posts_not_dropped(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  enum { POSTS = 8, BODY = 40000 };
  size_t request_cap = POSTS * (BODY + 128);
  char *requests = malloc(request_cap);
  char *response = malloc(64 * 1024);
  char *body = malloc(BODY);
  char path[16];
  const char *previous;
  const char *found;
  size_t used = 0;
  int fd;

  assert_non_null(requests);
  assert_non_null(response);
  assert_non_null(body);
  memset(body, 'x', BODY);
  for (int i = 0; i < POSTS; i++) {
    used += (size_t)snprintf(requests + used, request_cap - used,
                             "POST /p%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n", i,
                             BODY, i == POSTS - 1 ? "Connection: close\r\n" : "");
    memcpy(requests + used, body, BODY);
    used += BODY;
  }
  default_config(&config);
  server_start(ts, &config, MODE_DEFER, 5);
  fd = raw_connect(ts->port);
  /* Responses are small, so sending everything first cannot deadlock. */
  raw_send(fd, requests, used);
  raw_read_all(fd, response, 64 * 1024);
  close(fd);
  previous = response;
  for (int i = 0; i < POSTS; i++) {
    snprintf(path, sizeof(path), "\r\n/p%d", i);
    found = strstr(previous, path);
    if (found == NULL)
      fail_msg("response %d of %d missing; got:\n%s", i, POSTS, response);
    previous = found;
  }
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), POSTS);
  assert_int_equal(atomic_load(&ts->respond_failures), 0);
  free(body);
  free(response);
  free(requests);
}

/* A response larger than the socket takes at once (the client's receive
 * buffer is small and it reads late) goes out whole, and the pipelined
 * request's response after it, not into the middle of it: the server
 * writes at once only when nothing is queued before (conn_submit). */
static void test_large_response_to_a_slow_reader_whole_and_in_order(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  enum { BODY = 4 * 1024 * 1024 };
  static const char head[] = "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n";
  static const char second[] = "GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  size_t response_cap = BODY + 4096, used;
  char *body = malloc(BODY);
  char *response = malloc(response_cap);
  const char *start, *after;
  int fd, small = 64 * 1024;

  assert_non_null(body);
  assert_non_null(response);
  for (size_t i = 0; i < BODY; i++)
    body[i] = (char)('a' + (i * 7 + i / 4096) % 26);
  default_config(&config);
  config.max_body_bytes = BODY;
  server_start(ts, &config, MODE_ECHO, 0);
  fd = raw_connect(ts->port);
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  raw_send(fd, head, sizeof(head) - 1);
  raw_send(fd, body, BODY);
  raw_send(fd, second, sizeof(second) - 1);
  usleep(200 * 1000); /* the server's first write finds the socket full */
  used = raw_read_all(fd, response, response_cap);
  close(fd);
  start = strstr(response, "\r\n\r\n");
  assert_non_null(start);
  assert_non_null(strstr(response, "Content-Length: 4194304\r\n"));
  start += 4;
  assert_true(used >= (size_t)(start - response) + BODY);
  assert_memory_equal(start, body, BODY);
  after = start + BODY;
  assert_true(strncmp(after, "HTTP/1.1 200 OK\r\n", 17) == 0);
  assert_non_null(strstr(after, "GET /after"));
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 2);
  assert_int_equal(atomic_load(&ts->respond_failures), 0);
  free(response);
  free(body);
}

static void test_deferred_response(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct reply *reply = malloc(sizeof(*reply));
  char url[128];
  CURL *curl = curl_easy_init();
  uint64_t started;

  default_config(&config);
  /* The request timeout must not run while the handler works. */
  config.request_timeout_ms = 100;
  server_start(ts, &config, MODE_DEFER, 300);
  url_for(url, sizeof(url), "http", ts->port, "/later");
  started = uv_hrtime();
  curl_base(curl, url, reply);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 200);
  assert_string_equal(reply->body, "/later");
  assert_true((uv_hrtime() - started) / 1000000 >= 250);

  /* Still keep-alive after a deferred response. */
  url_for(url, sizeof(url), "http", ts->port, "/again");
  curl_base(curl, url, reply);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_string_equal(reply->body, "/again");
  assert_int_equal(reply->num_connects, 0);

  curl_easy_cleanup(curl);
  server_stop(ts);
  free(reply);
}

static void test_body_over_limit_is_413(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct reply *reply = malloc(sizeof(*reply));
  char url[128];
  char *big = malloc(4096);
  char *chunked = malloc(4096);
  size_t length;
  char response[4096];
  CURL *curl = curl_easy_init();
  int fd;

  default_config(&config);
  config.max_body_bytes = 1024;
  server_start(ts, &config, MODE_ECHO, 0);

  /* Content-Length over the limit: refused before the body is read. */
  memset(big, 'x', 4096);
  url_for(url, sizeof(url), "http", ts->port, "/v1/sales");
  curl_base(curl, url, reply);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, big);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 4096L);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 413);
  assert_non_null(strstr(reply->headers, "Connection: close\r\n"));
  assert_non_null(strstr(reply->headers, "Content-Type: application/json\r\n"));
  assert_non_null(strstr(reply->body, "{\"error\":\"request body of 4096 bytes exceeds "
                                      "max_body_bytes (1024 bytes)\"}"));

  /* Exactly at the limit is fine. */
  curl_base(curl, url, reply);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 1024L);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 200);
  assert_int_equal(reply->body_length, 1024);

  /* Chunked: caught while streaming. */
  length = (size_t)snprintf(chunked, 4096, "%s",
                            "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 3; i++) {
    length += (size_t)snprintf(chunked + length, 4096 - length, "200\r\n");
    memset(chunked + length, 'y', 0x200);
    length += 0x200;
    length += (size_t)snprintf(chunked + length, 4096 - length, "\r\n");
  }
  fd = raw_connect(ts->port);
  raw_send(fd, chunked, length);
  raw_read_all(fd, response, sizeof(response));
  close(fd);
  assert_non_null(strstr(response, "HTTP/1.1 413 Content Too Large\r\n"));
  assert_non_null(strstr(response, "request body exceeds max_body_bytes (1024 bytes)"));

  curl_easy_cleanup(curl);
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 1);
  free(big);
  free(chunked);
  free(reply);
}

static void test_expect_100_continue(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct reply *reply = malloc(sizeof(*reply));
  struct curl_slist *headers = NULL;
  char url[128];
  size_t size = 100 * 1024;
  char *big = malloc(size);
  CURL *curl = curl_easy_init();
  uint64_t started;

  default_config(&config);
  config.max_body_bytes = 2 * size;
  server_start(ts, &config, MODE_ECHO, 0);
  memset(big, 'z', size);
  /* curl waits a second for "100 Continue" before sending the body anyway. */
  headers = curl_slist_append(headers, "Expect: 100-continue");
  url_for(url, sizeof(url), "http", ts->port, "/big");
  curl_base(curl, url, reply);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, big);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)size);
  started = uv_hrtime();
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 200);
  assert_int_equal(reply->body_length, size);
  assert_memory_equal(reply->body, big, size);
  assert_non_null(strstr(reply->headers, "HTTP/1.1 100 Continue\r\n"));
  assert_true((uv_hrtime() - started) / 1000000 < 900);

  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  server_stop(ts);
  free(big);
  free(reply);
}

static void test_headers_over_limit_is_431(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct reply *reply = malloc(sizeof(*reply));
  struct curl_slist *headers = NULL;
  char url[128];
  char *big_header = malloc(9000);
  CURL *curl = curl_easy_init();

  default_config(&config);
  config.max_header_bytes = 4096;
  server_start(ts, &config, MODE_ECHO, 0);
  memcpy(big_header, "X-Big: ", 7);
  memset(big_header + 7, 'a', 8000);
  big_header[8007] = '\0';
  headers = curl_slist_append(headers, big_header);
  url_for(url, sizeof(url), "http", ts->port, "/");
  curl_base(curl, url, reply);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 431);
  assert_non_null(strstr(reply->body, "max_header_bytes (4096 bytes)"));

  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 0);
  free(big_header);
  free(reply);
}

static void test_garbage_is_400(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  char response[4096];
  int fd;

  default_config(&config);
  server_start(ts, &config, MODE_ECHO, 0);
  fd = raw_connect(ts->port);
  static const char garbage[] = "\x16\x03\x01 this is not HTTP\r\n\r\n";
  raw_send(fd, garbage, sizeof(garbage) - 1);
  raw_read_all(fd, response, sizeof(response));
  close(fd);
  assert_non_null(strstr(response, "HTTP/1.1 400 Bad Request\r\n"));
  assert_non_null(strstr(response, "Connection: close\r\n"));
  assert_non_null(strstr(response, "{\"error\":\"malformed HTTP request: "));
  /* llhttp's own reason is passed on. */
  assert_non_null(strstr(response, "HPE_INVALID_METHOD"));
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 0);
}

static void test_slow_request_is_408(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  char response[4096];
  static const char partial[] = "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc";
  uint64_t started;
  int fd;

  default_config(&config);
  config.request_timeout_ms = 200;
  server_start(ts, &config, MODE_ECHO, 0);
  fd = raw_connect(ts->port);
  started = uv_hrtime();
  raw_send(fd, partial, sizeof(partial) - 1);
  raw_read_all(fd, response, sizeof(response));
  close(fd);
  assert_true((uv_hrtime() - started) / 1000000 >= 150);
  assert_non_null(strstr(response, "HTTP/1.1 408 Request Timeout\r\n"));
  assert_non_null(strstr(response, "request_timeout_ms (200 ms)"));
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 0);
}

static void test_idle_connection_closed(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  char response[4096];
  static const char request[] = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  uint64_t started;
  int fd;

  default_config(&config);
  config.idle_timeout_ms = 200;
  server_start(ts, &config, MODE_ECHO, 0);
  fd = raw_connect(ts->port);
  raw_send(fd, request, sizeof(request) - 1);
  assert_true(raw_read_response(fd, response, sizeof(response)) > 0);
  started = uv_hrtime();
  /* Nothing more is sent: the server closes without a word. */
  assert_int_equal(raw_read_all(fd, response, sizeof(response)), 0);
  assert_true((uv_hrtime() - started) / 1000000 >= 150);
  assert_true((uv_hrtime() - started) / 1000000 < 4000);
  close(fd);
  server_stop(ts);
}

static void test_max_connections(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  char response[4096];
  static const char request[] = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  int fds[2];
  int extra;
  int served = 0;

  default_config(&config);
  config.max_connections = 2;
  server_start(ts, &config, MODE_ECHO, 0);
  for (int i = 0; i < 2; i++) {
    fds[i] = raw_connect(ts->port);
    raw_send(fds[i], request, sizeof(request) - 1);
    assert_true(raw_read_response(fds[i], response, sizeof(response)) > 0);
  }
  /*
   * A third is refused at once with a 503 that says why; the two others
   * have been served (they are not unproven idle sockets), so neither is
   * closed to make room.
   */
  extra = raw_connect(ts->port);
  send(extra, request, sizeof(request) - 1, MSG_NOSIGNAL);
  raw_read_all(extra, response, sizeof(response));
  assert_non_null(strstr(response, "HTTP/1.1 503 Service Unavailable\r\n"));
  assert_non_null(strstr(response, "Retry-After: 1\r\n"));
  assert_non_null(strstr(response, "max_connections"));
  close(extra);

  /* Once one hangs up there is room again. */
  close(fds[0]);
  for (int attempt = 0; attempt < 50 && !served; attempt++) {
    extra = raw_connect(ts->port);
    send(extra, request, sizeof(request) - 1, MSG_NOSIGNAL);
    /* Until the server has seen the hang-up, the answer is the 503. */
    served = raw_read_response(extra, response, sizeof(response)) > 0 &&
             strstr(response, "HTTP/1.1 200 OK\r\n") != NULL;
    close(extra);
    if (!served)
      sleep_ms(20);
  }
  assert_true(served);
  close(fds[1]);
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 3);
}

/* Opens `count` connections that never send a byte. */
static void open_idle(int *fds, int count, int port, const char *source)
{
  for (int i = 0; i < count; i++)
    fds[i] = raw_connect_from(port, source);
}

static void close_all(int *fds, int count)
{
  for (int i = 0; i < count; i++)
    close(fds[i]);
}

/*
 * Issue 7 item 12: connections that never sent a byte held every slot
 * until idle_timeout, and the next client was closed at accept. Now the
 * oldest such connection makes room, at once, whatever the timeouts.
 */
static void test_idle_connections_do_not_lock_out_clients(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct reply *reply = malloc(sizeof(*reply));
  char url[128];
  int idle[64];
  CURL *curl = curl_easy_init();

  default_config(&config);
  config.max_connections = 16;
  config.idle_timeout_ms = 60000;
  config.request_timeout_ms = 60000;
  config.first_request_timeout_ms = 60000; /* no timer helps: only eviction can */
  server_start(ts, &config, MODE_ECHO, 0);
  open_idle(idle, 64, ts->port, NULL);
  url_for(url, sizeof(url), "http", ts->port, "/v1/batches");
  for (int i = 0; i < 3; i++) {
    curl_base(curl, url, reply);
    curl_easy_setopt(curl, CURLOPT_FORBID_REUSE, 1L);
    curl_run(curl, reply);
    assert_int_equal(reply->rc, CURLE_OK);
    assert_int_equal(reply->status, 200);
    assert_string_equal(reply->body, "GET /v1/batches ");
  }
  close_all(idle, 64);
  curl_easy_cleanup(curl);
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 3);
  free(reply);
}

/* A connection that sends nothing is closed after first_request_timeout, not idle_timeout. */
static void test_silent_connection_closed_at_first_request_timeout(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  char response[4096];
  static const char partial[] = "GET /slow HTTP/1.1\r\nHost: x\r\n";
  uint64_t started;
  int fd;

  default_config(&config);
  config.idle_timeout_ms = 30000;
  config.request_timeout_ms = 30000;
  config.first_request_timeout_ms = 200;
  server_start(ts, &config, MODE_ECHO, 0);
  started = uv_hrtime();
  fd = raw_connect(ts->port);
  assert_int_equal(raw_read_all(fd, response, sizeof(response)), 0);
  assert_true((uv_hrtime() - started) / 1000000 >= 150);
  assert_true((uv_hrtime() - started) / 1000000 < 4000);
  close(fd);

  /* Headers begun but not finished: told so with a 408. */
  fd = raw_connect(ts->port);
  raw_send(fd, partial, sizeof(partial) - 1);
  raw_read_all(fd, response, sizeof(response));
  close(fd);
  assert_non_null(strstr(response, "HTTP/1.1 408 Request Timeout\r\n"));
  assert_non_null(strstr(response, "first_request_timeout_ms (200 ms)"));
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 0);
}

/* One address cannot take more than max_connections_per_ip; others are still served. */
static void test_connections_per_ip_limited(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct reply *reply = malloc(sizeof(*reply));
  char response[4096];
  char url[128];
  int idle[4];
  int extra;
  CURL *curl = curl_easy_init();

  default_config(&config);
  config.max_connections_per_ip = 4;
  server_start(ts, &config, MODE_ECHO, 0);
  open_idle(idle, 4, ts->port, "127.0.0.2");
  extra = raw_connect_from(ts->port, "127.0.0.2");
  raw_read_all(extra, response, sizeof(response));
  close(extra);
  assert_non_null(strstr(response, "HTTP/1.1 429 Too Many Requests\r\n"));
  assert_non_null(strstr(response, "too many connections from your address"));

  url_for(url, sizeof(url), "http", ts->port, "/other");
  curl_base(curl, url, reply);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 200);
  close_all(idle, 4);
  curl_easy_cleanup(curl);
  server_stop(ts);
  free(reply);
}

/*
 * Issue 7 item 8: a request the on-headers hook refuses is answered as soon
 * as its headers are in, and its body is never waited for nor buffered:
 * here the body is never sent at all, so only an early answer can come back
 * (otherwise the request would time out with 408).
 */
static void test_on_headers_refuses_before_the_body(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  char response[4096];
  static const char unauthorized[] =
      "POST /v1/sales?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n"
      "Expect: 100-continue\r\n\r\n";
  static const char authorized[] = "POST /v1/sales HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\n"
                                   "Content-Length: 5\r\n\r\nhello";
  int fd;

  default_config(&config);
  config.on_headers = test_on_headers;
  server_start(ts, &config, MODE_ECHO, 0);
  fd = raw_connect(ts->port);
  raw_send(fd, unauthorized, sizeof(unauthorized) - 1);
  raw_read_all(fd, response, sizeof(response));
  close(fd);
  assert_non_null(strstr(response, "HTTP/1.1 401 Unauthorized\r\n"));
  assert_null(strstr(response, "100 Continue"));
  assert_non_null(strstr(response, "WWW-Authenticate: Bearer realm=\"test\"\r\n"));
  assert_non_null(strstr(response, "Connection: close\r\n"));
  assert_non_null(strstr(response, "{\"error\":\"no entry to /v1/sales?x=1 without a token\"}"));

  fd = raw_connect(ts->port);
  raw_send(fd, authorized, sizeof(authorized) - 1);
  assert_true(raw_read_response(fd, response, sizeof(response)) > 0);
  close(fd);
  assert_non_null(strstr(response, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(response, "\r\n\r\nhello"));
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->headers_checked), 2);
  assert_int_equal(atomic_load(&ts->handled), 1);
}

/* Reads exactly `length` bytes (NUL-terminated in `out`). Returns the count read. */
static size_t raw_read_exact(int fd, char *out, size_t out_size, size_t length)
{
  size_t used = 0;

  assert_true(length < out_size);
  while (used < length) {
    ssize_t got = recv(fd, out + used, length - used, 0);
    if (got <= 0)
      break;
    used += (size_t)got;
  }
  out[used] = '\0';
  return used;
}

/* Sends `request` and asserts that the next bytes on `fd` are exactly `expected`. */
static void expect_answer(int fd, const char *request, size_t request_length,
                          const char *expected, size_t expected_length)
{
  static char got[2 * 48 * 1024];

  raw_send(fd, request, request_length);
  assert_int_equal(raw_read_exact(fd, got, sizeof(got), expected_length), expected_length);
  assert_memory_equal(got, expected, expected_length);
}

/*
 * The response head and body are written without printf into buffers the
 * connection reuses (the spare write buffer, the request's head and body
 * buffers, the exchange): the bytes on the wire must be exactly what they
 * always were, on one keep-alive connection through small, large (over the
 * reuse cap) and small-again responses, HEAD, pipelining, Connection: close
 * and the server's own refusal.
 */
static void test_response_bytes_exact_on_a_reused_connection(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct sockaddr_in local;
  socklen_t local_length = sizeof(local);
  char peer[64], expected[1024], request[1024];
  static char big_request[48 * 1024], big_expected[48 * 1024];
  enum { BIG = 40000 };
  size_t request_length, expected_length;
  int fd;

  default_config(&config);
  config.on_headers = test_on_headers;
  server_start(ts, &config, MODE_ECHO, 0);
  fd = raw_connect(ts->port);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&local, &local_length), 0);
  snprintf(peer, sizeof(peer), "127.0.0.1:%u", (unsigned)ntohs(local.sin_port));

  /* A small POST, echoed. */
  request_length = (size_t)snprintf(request, sizeof(request),
                                    "POST /small HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\n"
                                    "X-Test: one\r\nContent-Length: 3\r\n\r\nabc");
  expected_length = (size_t)snprintf(expected, sizeof(expected),
                                     "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                     "Content-Length: 3\r\nConnection: keep-alive\r\n"
                                     "X-Echo: one\r\nX-Peer: %s\r\n\r\nabc", peer);
  expect_answer(fd, request, request_length, expected, expected_length);

  /* A body over the reuse cap, both ways; then small ones again on the same connection. */
  request_length = (size_t)snprintf(big_request, sizeof(big_request),
                                    "POST /big HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\n"
                                    "Content-Length: %d\r\n\r\n", BIG);
  memset(big_request + request_length, 'b', BIG);
  request_length += BIG;
  expected_length = (size_t)snprintf(big_expected, sizeof(big_expected),
                                     "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                     "Content-Length: %d\r\nConnection: keep-alive\r\n"
                                     "X-Echo: -\r\nX-Peer: %s\r\n\r\n", BIG, peer);
  memset(big_expected + expected_length, 'b', BIG);
  expected_length += BIG;
  expect_answer(fd, big_request, request_length, big_expected, expected_length);

  request_length = (size_t)snprintf(request, sizeof(request), "GET /get?q=1 HTTP/1.1\r\n"
                                    "Host: x\r\n\r\n");
  expected_length = (size_t)snprintf(expected, sizeof(expected),
                                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                     "Content-Length: 12\r\nConnection: keep-alive\r\n"
                                     "X-Echo: -\r\nX-Peer: %s\r\n\r\nGET /get q=1", peer);
  expect_answer(fd, request, request_length, expected, expected_length);

  /* HEAD: the headers a GET would get (its Content-Length), no body. */
  request_length =
      (size_t)snprintf(request, sizeof(request), "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n");
  expected_length = (size_t)snprintf(expected, sizeof(expected),
                                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                     "Content-Length: 8\r\nConnection: keep-alive\r\n"
                                     "X-Echo: -\r\nX-Peer: %s\r\n\r\n", peer);
  expect_answer(fd, request, request_length, expected, expected_length);

  /* Two pipelined in one send, the second closing: both answers, in order, then EOF. */
  request_length = (size_t)snprintf(request, sizeof(request),
                                    "POST /p1 HTTP/1.1\r\nHost: x\r\nAuthorization: yes\r\n"
                                    "Content-Length: 2\r\n\r\np1"
                                    "GET /p2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  expected_length = (size_t)snprintf(expected, sizeof(expected),
                                     "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                     "Content-Length: 2\r\nConnection: keep-alive\r\n"
                                     "X-Echo: -\r\nX-Peer: %s\r\n\r\np1"
                                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                     "Content-Length: 8\r\nConnection: close\r\n"
                                     "X-Echo: -\r\nX-Peer: %s\r\n\r\nGET /p2 ", peer, peer);
  expect_answer(fd, request, request_length, expected, expected_length);
  assert_int_equal(raw_read_all(fd, request, sizeof(request)), 0);
  close(fd);

  /* The server's own refusal (the on-headers hook): JSON, extra header, close. */
  fd = raw_connect(ts->port);
  request_length = (size_t)snprintf(request, sizeof(request),
                                    "POST /v1/sales?x=1 HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Length: 5\r\n\r\n");
  expected_length = (size_t)snprintf(
      expected, sizeof(expected),
      "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 53\r\n"
      "Connection: close\r\nWWW-Authenticate: Bearer realm=\"test\"\r\n\r\n"
      "{\"error\":\"no entry to /v1/sales?x=1 without a token\"}");
  expect_answer(fd, request, request_length, expected, expected_length);
  close(fd);

  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 6);
  assert_int_equal(atomic_load(&ts->respond_failures), 0);
}

static void test_client_gone_while_pending(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct reply *reply = malloc(sizeof(*reply));
  char url[128];
  static const char request[] = "POST /pending HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
  CURL *curl = curl_easy_init();
  int fd;
  int fd_open;

  default_config(&config);
  server_start(ts, &config, MODE_DEFER, 300);

  /* The client hangs up while the handler works: respond is a no-op. */
  fd = raw_connect(ts->port);
  raw_send(fd, request, sizeof(request) - 1);
  wait_for_count(&ts->handled, 1, 2000);
  close(fd);
  wait_for_count(&ts->respond_failures, 1, 2000);

  /* The server carries on. */
  url_for(url, sizeof(url), "http", ts->port, "/after");
  curl_base(curl, url, reply);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_string_equal(reply->body, "/after");

  /* Pending when the server closes: respond comes after the server is freed. */
  fd_open = raw_connect(ts->port);
  raw_send(fd_open, request, sizeof(request) - 1);
  wait_for_count(&ts->handled, 3, 2000);
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->respond_failures), 2);
  close(fd_open);
  curl_easy_cleanup(curl);
  free(reply);
}

static void test_create_reports_errors(void **state)
{
  (void)state;
  uv_loop_t loop;
  struct http_server_config config;
  struct http_tls_config tls = {.cert_file = "/nonexistent/server.crt",
                                .key_file = "/nonexistent/server.key"};
  char err[512];
  http_server *first;
  http_server *second;

  assert_int_equal(uv_loop_init(&loop), 0);
  default_config(&config);
  first = http_server_create(&loop, &config, test_handler, NULL, err, sizeof(err));
  assert_non_null(first);

  config.port = http_server_port(first);
  second = http_server_create(&loop, &config, test_handler, NULL, err, sizeof(err));
  assert_null(second);
  assert_non_null(strstr(err, "listen 127.0.0.1:"));
  assert_non_null(strstr(err, "in use"));

  config.port = 0;
  config.listen_host = "localhost";
  assert_null(http_server_create(&loop, &config, test_handler, NULL, err, sizeof(err)));
  assert_non_null(strstr(err, "not a numeric"));

  config.listen_host = "127.0.0.1";
  config.max_connections = 0;
  assert_null(http_server_create(&loop, &config, test_handler, NULL, err, sizeof(err)));
  assert_non_null(strstr(err, "max_connections"));

  default_config(&config);
  config.tls = &tls;
  assert_null(http_server_create(&loop, &config, test_handler, NULL, err, sizeof(err)));
  assert_non_null(strstr(err, "/nonexistent/server.crt"));

  assert_int_equal(http_server_reload_tls(first, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "not configured"));

  http_server_close(first, NULL, NULL);
  http_server_close(NULL, NULL, NULL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- TLS ------------------------------------------------------------------ */

static char pki_dir[64];
static int pki_ready;

static void pki_path(char *out, size_t out_size, const char *name)
{
  snprintf(out, out_size, "%s/%s", pki_dir, name);
}

/*
 * A CA; a server certificate for 127.0.0.1; a good client (store-0042), a
 * client (store-0666) revoked in crl.pem; and crl-empty.pem, made before
 * the revocation.
 */
static int pki_create(void)
{
  static const char script[] =
      "set -e\n"
      "cat > ca.cnf <<EOF\n"
      "[ca]\n"
      "default_ca = CA_default\n"
      "[CA_default]\n"
      "database = index.txt\n"
      "new_certs_dir = .\n"
      "certificate = ca.crt\n"
      "private_key = ca.key\n"
      "serial = serial\n"
      "crlnumber = crlnumber\n"
      "default_md = sha256\n"
      "default_crl_days = 7\n"
      "policy = any\n"
      "unique_subject = no\n"
      "[any]\n"
      "commonName = supplied\n"
      "EOF\n"
      "touch index.txt; echo 01 > crlnumber; echo 1000 > serial\n"
      "openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\\n"
      "  -keyout ca.key -out ca.crt -days 2 -subj '/CN=POS Test CA' \\\n"
      "  -addext 'basicConstraints=critical,CA:TRUE' \\\n"
      "  -addext 'keyUsage=critical,keyCertSign,cRLSign'\n"
      "gen() {\n"
      "  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\\n"
      "    -keyout $1.key -out $1.csr -subj \"/CN=$2\"\n"
      "  printf '%s\\n' \"$3\" \"$4\" > $1.ext\n"
      "  openssl x509 -req -in $1.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \\\n"
      "    -sha256 -extfile $1.ext -out $1.crt\n"
      "}\n"
      "gen server localhost 'subjectAltName=IP:127.0.0.1,DNS:localhost' "
      "'extendedKeyUsage=serverAuth'\n"
      "gen client store-0042 'extendedKeyUsage=clientAuth' 'keyUsage=digitalSignature'\n"
      "gen revoked store-0666 'extendedKeyUsage=clientAuth' 'keyUsage=digitalSignature'\n"
      "openssl ca -config ca.cnf -gencrl -out crl-empty.pem\n"
      "openssl ca -config ca.cnf -revoke revoked.crt\n"
      "openssl ca -config ca.cnf -gencrl -out crl.pem\n"
      "cp crl-empty.pem crl-active.pem\n"
      /* The same revocation in a CRL long past its nextUpdate. */
      "openssl ca -config ca.cnf -gencrl -crl_lastupdate 20200101000000Z \\\n"
      "  -crl_nextupdate 20200201000000Z -out crl-expired.pem\n"
      "cp server.crt server-active.crt; cp server.key server-active.key\n"
      /* Another CA, with its CRL and a server certificate; and a forger: a
       * CA of our CA's name with another key, and its CRL. */
      "ca_in() {\n"
      "  mkdir $1 && cp ca.cnf $1/ && (cd $1 && touch index.txt && echo 01 > crlnumber &&\n"
      "    echo 1000 > serial &&\n"
      "    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \\\n"
      "      -keyout ca.key -out ca.crt -days 2 -subj \"/CN=$2\" \\\n"
      "      -addext 'basicConstraints=critical,CA:TRUE' \\\n"
      "      -addext 'keyUsage=critical,keyCertSign,cRLSign' &&\n"
      "    openssl ca -config ca.cnf -gencrl -out ../$3)\n"
      "}\n"
      "ca_in other 'Somebody Else CA' crl-other-ca.pem\n"
      "ca_in forger 'POS Test CA' crl-forged.pem\n"
      "(cd other && gen server localhost 'subjectAltName=IP:127.0.0.1,DNS:localhost' "
      "'extendedKeyUsage=serverAuth')\n";
  char path[128];
  char command[256];
  FILE *file;

  if (system("openssl version >/dev/null 2>&1") != 0)
    return -1;
  snprintf(pki_dir, sizeof(pki_dir), "/tmp/pos-http-pki-XXXXXX");
  if (mkdtemp(pki_dir) == NULL)
    return -1;
  pki_path(path, sizeof(path), "make-pki.sh");
  file = fopen(path, "w");
  if (file == NULL)
    return -1;
  fputs(script, file);
  fclose(file);
  snprintf(command, sizeof(command), "cd '%s' && sh make-pki.sh >openssl.log 2>&1", pki_dir);
  if (system(command) != 0) {
    fprintf(stderr, "PKI generation failed; see %s/openssl.log\n", pki_dir);
    return -1;
  }
  return 0;
}

static void pki_remove(void)
{
  char command[128];

  if (pki_dir[0] == '\0')
    return;
  snprintf(command, sizeof(command), "rm -rf '%s'", pki_dir);
  if (system(command) != 0)
    fprintf(stderr, "could not remove %s\n", pki_dir);
  pki_dir[0] = '\0';
}

struct tls_files {
  char ca[128];
  char cert[128];
  char key[128];
  char crl[128];
  char client_cert[128];
  char client_key[128];
  char revoked_cert[128];
  char revoked_key[128];
  struct http_tls_config tls;
};

static void tls_files_init(struct tls_files *files, int require_client_cert, const char *crl)
{
  pki_path(files->ca, sizeof(files->ca), "ca.crt");
  pki_path(files->cert, sizeof(files->cert), "server.crt");
  pki_path(files->key, sizeof(files->key), "server.key");
  pki_path(files->client_cert, sizeof(files->client_cert), "client.crt");
  pki_path(files->client_key, sizeof(files->client_key), "client.key");
  pki_path(files->revoked_cert, sizeof(files->revoked_cert), "revoked.crt");
  pki_path(files->revoked_key, sizeof(files->revoked_key), "revoked.key");
  memset(&files->tls, 0, sizeof(files->tls));
  files->tls.cert_file = files->cert;
  files->tls.key_file = files->key;
  files->tls.ca_file = files->ca;
  files->tls.require_client_cert = require_client_cert;
  if (crl != NULL) {
    pki_path(files->crl, sizeof(files->crl), crl);
    files->tls.crl_file = files->crl;
  }
}

/* One HTTPS request on `curl` (a new handle: a new handshake). */
static void tls_request_on(CURL *curl, const struct tls_files *files, int port,
                           const char *client_cert, const char *client_key, struct reply *reply)
{
  char url[128];

  url_for(url, sizeof(url), "https", port, "/v1/sales");
  curl_base(curl, url, reply);
  curl_easy_setopt(curl, CURLOPT_CAINFO, files->ca);
  if (client_cert != NULL) {
    curl_easy_setopt(curl, CURLOPT_SSLCERT, client_cert);
    curl_easy_setopt(curl, CURLOPT_SSLKEY, client_key);
  }
  curl_run(curl, reply);
}

static void tls_request(const struct tls_files *files, int port, const char *client_cert,
                        const char *client_key, struct reply *reply)
{
  CURL *curl = curl_easy_init();

  tls_request_on(curl, files, port, client_cert, client_key, reply);
  curl_easy_cleanup(curl);
}

static void test_tls_client_cert_accepted(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, "crl.pem");
  default_config(&config);
  config.tls = &files.tls;
  server_start(ts, &config, MODE_CERT, 0);
  tls_request(&files, ts->port, files.client_cert, files.client_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 200);
  assert_string_equal(reply->body, "CN=store-0042");
  server_stop(ts);
  assert_string_equal(ts->subject, "CN=store-0042");
  free(reply);
}

static void test_tls_without_client_cert_refused(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, NULL);
  default_config(&config);
  config.tls = &files.tls;
  server_start(ts, &config, MODE_CERT, 0);
  tls_request(&files, ts->port, NULL, NULL, reply);
  assert_int_not_equal(reply->rc, CURLE_OK);
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 0);
  free(reply);
}

static void test_tls_optional_client_cert(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));

  if (!pki_ready)
    skip();
  /* Not required: no certificate is fine, and then there is no peer cert. */
  tls_files_init(&files, 0, NULL);
  default_config(&config);
  config.tls = &files.tls;
  server_start(ts, &config, MODE_CERT, 0);
  tls_request(&files, ts->port, NULL, NULL, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_string_equal(reply->body, "no-cert");
  tls_request(&files, ts->port, files.client_cert, files.client_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_string_equal(reply->body, "CN=store-0042");
  server_stop(ts);
  free(reply);
}

static void test_tls_revoked_client_cert_refused(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, "crl.pem");
  default_config(&config);
  config.tls = &files.tls;
  server_start(ts, &config, MODE_CERT, 0);
  tls_request(&files, ts->port, files.revoked_cert, files.revoked_key, reply);
  assert_int_not_equal(reply->rc, CURLE_OK);
  tls_request(&files, ts->port, files.client_cert, files.client_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 1);
  free(reply);
}

/* A client on its own thread: one HTTPS request (a full handshake). */
struct tls_client {
  pthread_t thread;
  const struct tls_files *files;
  int port;
  int revoked; /* presents the revoked certificate */
  struct reply *reply;
};

static void *tls_client_main(void *arg)
{
  struct tls_client *client = arg;

  tls_request(client->files, client->port,
              client->revoked ? client->files->revoked_cert : client->files->client_cert,
              client->revoked ? client->files->revoked_key : client->files->client_key,
              client->reply);
  return NULL;
}

/* `count` clients at once, every fourth with the revoked certificate when `revoked` is set. */
static void tls_clients_start(struct tls_client *clients, int count, const struct tls_files *files,
                              int port, int revoked)
{
  for (int i = 0; i < count; i++) {
    clients[i].files = files;
    clients[i].port = port;
    clients[i].revoked = revoked && i % 4 == 3;
    clients[i].reply = calloc(1, sizeof(*clients[i].reply));
    assert_non_null(clients[i].reply);
    assert_int_equal(pthread_create(&clients[i].thread, NULL, tls_client_main, &clients[i]), 0);
  }
}

/*
 * Handshakes on pool threads (handshake_threads 2, fewer than the clients,
 * so that some wait their turn): every client at once, each answered as on
 * the loop: the good certificate's subject seen, the revoked one refused.
 */
static void test_tls_handshakes_on_pool_threads(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct tls_client clients[12];
  int good = 0;

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, "crl.pem");
  default_config(&config);
  config.tls = &files.tls;
  config.handshake_threads = 2;
  server_start(ts, &config, MODE_CERT, 0);
  tls_clients_start(clients, 12, &files, ts->port, 1);
  for (int i = 0; i < 12; i++) {
    assert_int_equal(pthread_join(clients[i].thread, NULL), 0);
    if (clients[i].revoked) {
      assert_int_not_equal(clients[i].reply->rc, CURLE_OK);
    } else {
      assert_int_equal(clients[i].reply->rc, CURLE_OK);
      assert_int_equal(clients[i].reply->status, 200);
      assert_string_equal(clients[i].reply->body, "CN=store-0042");
      good++;
    }
    free(clients[i].reply);
  }
  server_stop(ts);
  assert_int_equal(good, 9);
  assert_int_equal(atomic_load(&ts->handled), 9);
}

/*
 * The server closed while handshakes run on the pool and more wait for a
 * thread: it closes (its loop ends with nothing left on it, nothing leaked
 * under ASan), each client answered or cut off, none left hanging.
 */
static void test_tls_close_with_handshakes_in_flight(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct tls_client clients[16];

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, NULL);
  default_config(&config);
  config.tls = &files.tls;
  config.handshake_threads = 1;
  server_start(ts, &config, MODE_CERT, 0);
  tls_clients_start(clients, 16, &files, ts->port, 0);
  sleep_ms(30); /* a full handshake is ~10 ms of the server's CPU: most still wait */
  server_stop(ts);
  for (int i = 0; i < 16; i++) {
    assert_int_equal(pthread_join(clients[i].thread, NULL), 0);
    if (clients[i].reply->rc == CURLE_OK && !clients[i].revoked)
      assert_int_equal(clients[i].reply->status, 200);
    free(clients[i].reply);
  }
}

static int reload_on_loop(struct test_server *ts)
{
  return http_server_reload_tls(ts->server, ts->err, sizeof(ts->err));
}

static void test_tls_reload_picks_up_new_crl(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));
  char command[512];
  char moved[160];
  CURL *established = curl_easy_init();

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, "crl-active.pem");
  default_config(&config);
  config.tls = &files.tls;
  server_start(ts, &config, MODE_CERT, 0);
  /* Not revoked yet; this connection stays open across the reload. */
  tls_request_on(established, &files, ts->port, files.revoked_cert, files.revoked_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_string_equal(reply->body, "CN=store-0666");

  snprintf(command, sizeof(command), "cp '%s/crl.pem' '%s'", pki_dir, files.crl);
  assert_int_equal(system(command), 0);
  assert_int_equal(server_call(ts, reload_on_loop), 0);
  /* New handshakes see the new CRL (established connections: see the next test). */
  tls_request(&files, ts->port, files.revoked_cert, files.revoked_key, reply);
  assert_int_not_equal(reply->rc, CURLE_OK);

  /* A reload that fails keeps the old CA/CRL. */
  snprintf(moved, sizeof(moved), "%s.moved", files.crl);
  assert_int_equal(rename(files.crl, moved), 0);
  assert_int_equal(server_call(ts, reload_on_loop), -1);
  assert_non_null(strstr(ts->err, files.crl));
  tls_request(&files, ts->port, files.client_cert, files.client_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  tls_request(&files, ts->port, files.revoked_cert, files.revoked_key, reply);
  assert_int_not_equal(reply->rc, CURLE_OK);
  assert_int_equal(rename(moved, files.crl), 0);

  server_stop(ts);
  curl_easy_cleanup(established);
  free(reply);
}

/*
 * Regression: a reloaded CRL reached new handshakes only, so a device whose
 * certificate was revoked kept uploading over its keep-alive connection.
 */
static void test_tls_reload_revokes_open_connections(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));
  char command[512];
  CURL *revoked = curl_easy_init();
  CURL *good = curl_easy_init();

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, "crl-active.pem");
  /* Start from the CRL without the revocation (another test may have swapped it). */
  snprintf(command, sizeof(command), "cp '%s/crl-empty.pem' '%s'", pki_dir, files.crl);
  assert_int_equal(system(command), 0);
  default_config(&config);
  config.tls = &files.tls;
  server_start(ts, &config, MODE_CERT, 0);
  /* Both connections are set up before the revocation and stay open. */
  tls_request_on(revoked, &files, ts->port, files.revoked_cert, files.revoked_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_string_equal(reply->body, "CN=store-0666");
  tls_request_on(good, &files, ts->port, files.client_cert, files.client_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_string_equal(reply->body, "CN=store-0042");

  snprintf(command, sizeof(command), "cp '%s/crl.pem' '%s'", pki_dir, files.crl);
  assert_int_equal(system(command), 0);
  assert_int_equal(server_call(ts, reload_on_loop), 0);

  /* The revoked device's next request, on the same connection, is refused. */
  tls_request_on(revoked, &files, ts->port, files.revoked_cert, files.revoked_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->num_connects, 0);
  assert_int_equal(reply->status, 403);
  assert_non_null(strstr(reply->body, "\"error\":\"the client certificate is no longer accepted"));
  assert_non_null(strstr(reply->body, "revoked"));
  assert_non_null(strstr(reply->headers, "Connection: close\r\n"));
  /* ...and that connection is gone: a new one fails the handshake. */
  tls_request_on(revoked, &files, ts->port, files.revoked_cert, files.revoked_key, reply);
  assert_int_not_equal(reply->rc, CURLE_OK);

  /* A device still in good standing carries on over its old connection, twice. */
  for (int i = 0; i < 2; i++) {
    tls_request_on(good, &files, ts->port, files.client_cert, files.client_key, reply);
    assert_int_equal(reply->rc, CURLE_OK);
    assert_int_equal(reply->num_connects, 0);
    assert_int_equal(reply->status, 200);
    assert_string_equal(reply->body, "CN=store-0042");
  }

  server_stop(ts);
  /* Two before the reload, two good ones after; the refused request never reached it. */
  assert_int_equal(atomic_load(&ts->handled), 4);
  curl_easy_cleanup(good);
  curl_easy_cleanup(revoked);
  free(reply);
}

/* Copies PKI file `from` over `to` (both in the PKI directory). */
static void pki_copy(const char *from, const char *to)
{
  char command[512];

  snprintf(command, sizeof(command), "cp '%s/%s' '%s/%s'", pki_dir, from, pki_dir, to);
  assert_int_equal(system(command), 0);
}

/*
 * Issue 13: a CRL that is expired, from another CA or not signed by ours is
 * refused on reload, with the reason, and the CRL in use stays: the good
 * client keeps connecting and the revoked one stays out.
 */
static void test_tls_reload_refuses_a_bad_crl(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));
  static const struct {
    const char *file, *says;
  } bad[] = {
      {"crl-expired.pem", "expired at 2020-02-01 00:00:00 UTC"},
      {"crl-other-ca.pem", "is not a CA of ca_file"},
      {"crl-forged.pem", "signature does not verify"},
  };

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, "crl-active.pem");
  pki_copy("crl.pem", "crl-active.pem");
  default_config(&config);
  config.tls = &files.tls;
  server_start(ts, &config, MODE_CERT, 0);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    pki_copy(bad[i].file, "crl-active.pem");
    assert_int_equal(server_call(ts, reload_on_loop), -1);
    if (strstr(ts->err, bad[i].says) == NULL || strstr(ts->err, files.crl) == NULL)
      fail_msg("reloading %s: \"%s\" does not say \"%s\"", bad[i].file, ts->err, bad[i].says);
    tls_request(&files, ts->port, files.client_cert, files.client_key, reply);
    assert_int_equal(reply->rc, CURLE_OK);
    assert_string_equal(reply->body, "CN=store-0042");
    tls_request(&files, ts->port, files.revoked_cert, files.revoked_key, reply);
    assert_int_not_equal(reply->rc, CURLE_OK);
  }
  server_stop(ts);
  pki_copy("crl-empty.pem", "crl-active.pem");
  free(reply);
}

/*
 * An expired CRL never refuses a client (mbedTLS's default refuses every
 * certificate once its CRL expires: every store at once): at start it is
 * taken, its revocations still apply, and the good client is served.
 */
static void test_tls_expired_crl_locks_no_one_out(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));
  struct http_tls_status status;

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, "crl-expired.pem");
  default_config(&config);
  config.tls = &files.tls;
  server_start(ts, &config, MODE_CERT, 0);
  tls_request(&files, ts->port, files.client_cert, files.client_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_string_equal(reply->body, "CN=store-0042");
  tls_request(&files, ts->port, files.revoked_cert, files.revoked_key, reply);
  assert_int_not_equal(reply->rc, CURLE_OK);
  http_server_tls_status(ts->server, &status);
  assert_int_equal(status.generation, 1);
  assert_int_equal(status.crl_next_update, 1580515200); /* 2020-02-01 00:00:00 UTC */
  assert_true(status.cert_not_after > time(NULL));
  server_stop(ts);
  free(reply);
}

/* The last reason on_tls_refused was called with, and how many times. */
static char last_tls_refusal[32];
static atomic_int tls_refusals;
static atomic_int tls_busy; /* of them, "busy" */

static void count_tls_refusal(const char *reason, void *arg)
{
  (void)arg;
  snprintf(last_tls_refusal, sizeof(last_tls_refusal), "%s", reason);
  atomic_fetch_add(&tls_refusals, 1);
  if (strcmp(reason, "busy") == 0)
    atomic_fetch_add(&tls_busy, 1);
}

/*
 * More handshake steps waiting for the one thread than handshake_backlog_ms
 * allows: a new connection is closed before any handshake work, counted as
 * refused "busy"; those admitted are answered. Bursts of 16 clients at once
 * until one is closed (a loaded machine may spread a burst out).
 */
static void test_tls_busy_handshakes_closed_at_once(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct tls_client clients[16];
  int answered = 0;

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, NULL);
  default_config(&config);
  config.tls = &files.tls;
  config.max_connections = 64;
  config.handshake_threads = 1;
  config.handshake_backlog_ms = 1;
  config.on_tls_refused = count_tls_refusal;
  atomic_store(&tls_busy, 0);
  server_start(ts, &config, MODE_CERT, 0);
  for (int burst = 0; burst < 5 && atomic_load(&tls_busy) == 0; burst++) {
    tls_clients_start(clients, 16, &files, ts->port, 0);
    for (int i = 0; i < 16; i++) {
      assert_int_equal(pthread_join(clients[i].thread, NULL), 0);
      if (clients[i].reply->rc == CURLE_OK) {
        assert_int_equal(clients[i].reply->status, 200);
        assert_string_equal(clients[i].reply->body, "CN=store-0042");
        answered++;
      }
      free(clients[i].reply);
    }
  }
  server_stop(ts);
  assert_true(atomic_load(&tls_busy) > 0);
  assert_true(answered > 0);
  assert_int_equal(atomic_load(&ts->handled), answered);
}

/*
 * A client certificate that expires while its keep-alive connection is
 * open is refused at its next request (403, closed), not served until the
 * connection happens to drop; each refusal is counted with its reason.
 */
static void test_tls_cert_expiring_on_an_open_connection_refused(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));
  char command[1024], cert[160], key[160];
  CURL *curl = curl_easy_init();
  time_t expires = time(NULL) + 4;

  if (!pki_ready)
    skip();
  /* Valid from a minute ago to 4 s from now. */
  snprintf(command, sizeof(command),
           "cd '%s' && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout soon.key -out soon.csr -subj /CN=store-0777 >>openssl.log 2>&1 && "
           "openssl ca -batch -config ca.cnf -extfile client.ext -in soon.csr -out soon.crt "
           "-startdate $(date -u -d @%lld +%%Y%%m%%d%%H%%M%%SZ) "
           "-enddate $(date -u -d @%lld +%%Y%%m%%d%%H%%M%%SZ) >>openssl.log 2>&1",
           pki_dir, (long long)expires - 60, (long long)expires);
  assert_int_equal(system(command), 0);
  pki_path(cert, sizeof(cert), "soon.crt");
  pki_path(key, sizeof(key), "soon.key");
  tls_files_init(&files, 1, "crl-active.pem");
  pki_copy("crl-empty.pem", "crl-active.pem");
  default_config(&config);
  config.tls = &files.tls;
  config.idle_timeout_ms = 60000; /* the connection outlives the certificate */
  config.on_tls_refused = count_tls_refusal;
  atomic_store(&tls_refusals, 0);
  server_start(ts, &config, MODE_CERT, 0);
  tls_request_on(curl, &files, ts->port, cert, key, reply);
  if (reply->rc != CURLE_OK)
    fail_msg("the short-lived certificate was refused at once (a slow machine?): %d", reply->rc);
  assert_string_equal(reply->body, "CN=store-0777");
  while (time(NULL) <= expires + 1)
    usleep(100 * 1000);
  tls_request_on(curl, &files, ts->port, cert, key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->num_connects, 0);
  assert_int_equal(reply->status, 403);
  assert_non_null(strstr(reply->body, "no longer accepted"));
  assert_non_null(strstr(reply->body, "expired"));
  /* A new handshake with it fails too. */
  tls_request_on(curl, &files, ts->port, cert, key, reply);
  assert_int_not_equal(reply->rc, CURLE_OK);
  server_stop(ts);
  assert_int_equal(atomic_load(&tls_refusals), 2);
  assert_string_equal(last_tls_refusal, "expired");
  assert_int_equal(atomic_load(&ts->handled), 1);
  curl_easy_cleanup(curl);
  free(reply);
}

/*
 * SIGHUP's reload takes a renewed server certificate and key; a key that
 * does not match its certificate is refused and the pair in use stays.
 */
static void test_tls_reload_takes_a_new_server_cert(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, NULL);
  pki_path(files.cert, sizeof(files.cert), "server-active.crt");
  pki_path(files.key, sizeof(files.key), "server-active.key");
  pki_copy("server.crt", "server-active.crt");
  pki_copy("server.key", "server-active.key");
  default_config(&config);
  config.tls = &files.tls;
  server_start(ts, &config, MODE_CERT, 0);
  tls_request(&files, ts->port, files.client_cert, files.client_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  /* Half a pair: refused, the old one serves on. */
  pki_copy("other/server.crt", "server-active.crt");
  assert_int_equal(server_call(ts, reload_on_loop), -1);
  assert_non_null(strstr(ts->err, "does not match"));
  tls_request(&files, ts->port, files.client_cert, files.client_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  /* The whole pair (from a CA this client does not trust: so it shows). */
  pki_copy("other/server.key", "server-active.key");
  assert_int_equal(server_call(ts, reload_on_loop), 0);
  tls_request(&files, ts->port, files.client_cert, files.client_key, reply);
  assert_int_equal(reply->rc, CURLE_PEER_FAILED_VERIFICATION);
  server_stop(ts);
  free(reply);
}

/* Requests on one keep-alive TLS connection, before and after it sat idle. */
static void test_tls_keep_alive_and_post(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));
  char url[128];
  char *payload = malloc(40000);
  CURL *curl = curl_easy_init();

  if (!pki_ready)
    skip();
  tls_files_init(&files, 0, NULL);
  default_config(&config);
  config.tls = &files.tls;
  server_start(ts, &config, MODE_ECHO, 0);
  /* Larger than one TLS record both ways. */
  for (size_t i = 0; i < 40000; i++)
    payload[i] = (char)('a' + i % 26);
  url_for(url, sizeof(url), "https", ts->port, "/v1/sales");
  for (int i = 0; i < 3; i++) {
    /* The third after the connection was idle past the server's 1 s: its buffers and the
     * pages of mbedTLS's record buffers were given back, and the session goes on. */
    if (i == 2)
      sleep_ms(1500);
    curl_base(curl, url, reply);
    curl_easy_setopt(curl, CURLOPT_CAINFO, files.ca);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 40000L);
    curl_run(curl, reply);
    assert_int_equal(reply->rc, CURLE_OK);
    assert_int_equal(reply->status, 200);
    assert_int_equal(reply->body_length, 40000);
    assert_memory_equal(reply->body, payload, 40000);
    assert_int_equal(reply->num_connects, i == 0 ? 1 : 0);
  }
  curl_easy_cleanup(curl);
  server_stop(ts);
  free(payload);
  free(reply);
}

/* What a large echo's reader compares as the bytes arrive. */
struct echo_check {
  const char *expected;
  size_t length;
  size_t offset;
  int mismatch;
};

static size_t echo_check_body(char *data, size_t size, size_t count, void *arg)
{
  struct echo_check *check = arg;
  size_t length = size * count;

  if (length > check->length - check->offset ||
      memcmp(check->expected + check->offset, data, length) != 0)
    check->mismatch = 1;
  else
    check->offset += length;
  return length;
}

/* Over TLS a 4 MiB answer is 256 records queued one after the other; the
 * socket takes the first ones at once and the rest wait their turn: each
 * arrives whole and in order (a record written at once while earlier ones
 * are queued would break the stream, and curl would fail or see other
 * bytes). The client reads at 16 MB/s, so the socket is full for a while. */
static void test_tls_large_response_whole_and_in_order(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));
  struct echo_check check = {0};
  enum { BODY = 4 * 1024 * 1024 };
  char *payload = malloc(BODY);
  char url[128];
  CURL *curl = curl_easy_init();

  if (!pki_ready)
    skip();
  assert_non_null(payload);
  for (size_t i = 0; i < BODY; i++)
    payload[i] = (char)('a' + (i * 7 + i / 16384) % 26);
  check.expected = payload;
  check.length = BODY;
  tls_files_init(&files, 0, NULL);
  default_config(&config);
  config.tls = &files.tls;
  config.max_body_bytes = BODY;
  server_start(ts, &config, MODE_ECHO, 0);
  url_for(url, sizeof(url), "https", ts->port, "/big");
  curl_base(curl, url, reply);
  curl_easy_setopt(curl, CURLOPT_CAINFO, files.ca);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)BODY);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, echo_check_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &check);
  curl_easy_setopt(curl, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)16 * 1024 * 1024);
  curl_run(curl, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 200);
  assert_false(check.mismatch);
  assert_int_equal(check.offset, BODY);
  curl_easy_cleanup(curl);
  server_stop(ts);
  free(payload);
  free(reply);
}

/* Item 12 over TLS: sockets stuck before or in the handshake do not keep a device out. */
static void test_tls_idle_connections_do_not_lock_out_clients(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  struct reply *reply = malloc(sizeof(*reply));
  static const char half_hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
  int idle[48];

  if (!pki_ready)
    skip();
  tls_files_init(&files, 1, NULL);
  default_config(&config);
  config.tls = &files.tls;
  config.max_connections = 16;
  config.idle_timeout_ms = 60000;
  config.request_timeout_ms = 60000;
  config.first_request_timeout_ms = 60000;
  server_start(ts, &config, MODE_CERT, 0);
  open_idle(idle, 48, ts->port, NULL);
  /* Half of them start a ClientHello and stall in the handshake. */
  for (int i = 0; i < 48; i += 2)
    send(idle[i], half_hello, sizeof(half_hello) - 1, MSG_NOSIGNAL);
  tls_request(&files, ts->port, files.client_cert, files.client_key, reply);
  assert_int_equal(reply->rc, CURLE_OK);
  assert_int_equal(reply->status, 200);
  assert_string_equal(reply->body, "CN=store-0042");
  close_all(idle, 48);
  server_stop(ts);
  free(reply);
}

static void test_tls_port_refuses_plain_http(void **state)
{
  struct test_server *ts = *state;
  struct http_server_config config;
  struct tls_files files;
  char response[4096];
  static const char request[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  int fd;

  if (!pki_ready)
    skip();
  tls_files_init(&files, 0, NULL);
  default_config(&config);
  config.tls = &files.tls;
  server_start(ts, &config, MODE_ECHO, 0);
  fd = raw_connect(ts->port);
  raw_send(fd, request, sizeof(request) - 1);
  raw_read_all(fd, response, sizeof(response));
  close(fd);
  /* At most a TLS alert comes back, never an HTTP response. */
  assert_null(strstr(response, "HTTP/1.1"));
  server_stop(ts);
  assert_int_equal(atomic_load(&ts->handled), 0);
}

static int group_setup(void **state)
{
  (void)state;
  /* As the agent and the collector do: a client that hangs up mid-handshake
   * (it refused our certificate) must not kill the server. */
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  pki_ready = pki_create() == 0;
  if (!pki_ready)
    fprintf(stderr, "openssl CLI unavailable or failed: TLS tests will be skipped\n");
  return 0;
}

static int group_teardown(void **state)
{
  (void)state;
  pki_remove();
  curl_global_cleanup();
  return 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_get_and_post_echo, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_chunked_post_echo, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_keep_alive_reuses_connection, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_connection_close_and_http10_honoured, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_pipelined_requests_answered_in_order, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_large_response_whole_and_in_order, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_large_response_to_a_slow_reader_whole_and_in_order,
                                      test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_pipelined_large_posts_not_dropped, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_deferred_response, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_body_over_limit_is_413, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_expect_100_continue, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_headers_over_limit_is_431, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_garbage_is_400, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_slow_request_is_408, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_idle_connection_closed, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_max_connections, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_idle_connections_do_not_lock_out_clients, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_silent_connection_closed_at_first_request_timeout,
                                      test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_connections_per_ip_limited, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_on_headers_refuses_before_the_body, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_client_gone_while_pending, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_response_bytes_exact_on_a_reused_connection, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_create_reports_errors, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_client_cert_accepted, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_without_client_cert_refused, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_optional_client_cert, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_revoked_client_cert_refused, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_handshakes_on_pool_threads, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_close_with_handshakes_in_flight, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_busy_handshakes_closed_at_once, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_reload_picks_up_new_crl, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_reload_revokes_open_connections, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_reload_refuses_a_bad_crl, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_expired_crl_locks_no_one_out, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_cert_expiring_on_an_open_connection_refused,
                                      test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_reload_takes_a_new_server_cert, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_keep_alive_and_post, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_idle_connections_do_not_lock_out_clients, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_tls_port_refuses_plain_http, test_setup, test_teardown),
  };

  /* TEST_FILTER=test_tls_* runs a subset (cmocka's glob). */
  if (getenv("TEST_FILTER") != NULL)
    cmocka_set_test_filter(getenv("TEST_FILTER"));
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
