/*
 * fuzz_http.c - the HTTP request path of platform/http as it runs in both
 * programs: the real http_server (llhttp callbacks, header and body limits,
 * keep-alive, pipelining, the stash, error answers, connection states) on a
 * libuv loop, fed the fuzzer's bytes over a real loopback TCP connection.
 *
 * POST /v1/sales goes to the agent's real POS API (agent/ingest/http/
 * sales_api.c: Bearer token, JSON contract, a SQLite journal in a temporary
 * directory, the answer after the commit), routed as agent/main.c does;
 * other paths are answered by the target itself.
 *
 * One server lives for the whole run, with small limits so that 413, 431
 * and the stash limit are reachable from small inputs. Each input is one
 * connection: a libuv client on the same loop connects, writes the bytes,
 * half-closes (FIN) and reads until the server closes. The input's first
 * byte picks how the handler answers (bits 0-1: at once, from a later loop
 * turn, with extra headers, or not until the client is gone) and when the
 * client half-closes (bit 2: at once, or after the first answer or
 * FUZZ_HOLD_MS: the server drops a pending exchange when the client hangs
 * up, so a sale's 201 is seen only with this bit), which is what the
 * server's state machine depends on; the rest is the bytes sent.
 *
 * The iteration ends only when every handle but the listener is closed
 * (uv_walk), so each connection is wholly torn down before the next one
 * and LeakSanitizer sees anything the server forgot to free. Every byte the
 * server sends back must start with an HTTP/1.1 status line.
 *
 * Only 127.0.0.1 is used. The terminal tokens are in corpus/http seeds and
 * dict/http.dict, so the fuzzer gets past authentication.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "ingest/http/sales_api.h"
#include "journal/journal.h"
#include "platform/http_server.h"
#include "platform/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

enum fuzz_mode { MODE_NOW, MODE_LATER, MODE_HEADERS, MODE_HOLD, MODE_COUNT };

struct fuzz_client {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
  char *sent;          /* owned until write_cb */
  size_t sent_len;
  size_t received;     /* response bytes read */
  char first[64];      /* the first bytes of the answer */
  uv_timer_t fin_timer; /* FIN after an answer or this, when wait_answer */
  int wait_answer;
  int fin_sent;
  int closed;           /* handles closed: tcp and fin_timer */
};

struct fuzz_deferred {
  uv_timer_t timer;
  http_exchange *exchange;
};

/* A till's token and a hub token, as in a terminals file. */
#define FUZZ_TOKENS "T1 0123456789abcdef0123456789abcdef\n* fedcba9876543210fedcba9876543210\n"

static uv_loop_t fuzz_loop;
static http_server *fuzz_server;
static journal *fuzz_journal;
static sales_api *fuzz_sales;
static char fuzz_dir[128];
/* FUZZ_HTTP_VERBOSE=1: print each answer's status line (to debug a reproducer). */
static int fuzz_verbose;
static int fuzz_port;
static enum fuzz_mode fuzz_mode;
/* Exchanges held in MODE_HOLD, answered when fuzz_hold_timer fires (by then
 * the client has usually hung up) or once the client is gone. */
static http_exchange *fuzz_held[64];
static size_t fuzz_held_count;
static uv_timer_t fuzz_hold_timer;
#define FUZZ_HOLD_MS 20

static void fuzz_fail(const char *what)
{
  fprintf(stderr, "fuzz-http: %s\n", what);
  abort();
}

/* Reads everything a handler may read, then answers. */
static void fuzz_answer(http_exchange *exchange, int with_headers)
{
  static const char *const names[] = {"content-type", "Content-Length", "authorization",
                                      "Transfer-Encoding", "Connection", "x-fuzz", "host"};
  char body[512];
  size_t body_len = 0, header_bytes = 0;
  const char *request_body = http_exchange_body(exchange, &body_len);
  const char *method = http_exchange_method(exchange);
  const char *path = http_exchange_path(exchange);
  const char *query = http_exchange_query(exchange);
  int status = 200, len;

  if (!method || !path || !query || !request_body || request_body[body_len] != '\0' ||
      !http_exchange_peer(exchange))
    fuzz_fail("an exchange without method, path, query, body or peer");
  if (http_exchange_peer_cert(exchange))
    fuzz_fail("a client certificate on plain HTTP");
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    const char *value = http_exchange_header(exchange, names[i]);
    if (value)
      header_bytes += strlen(value);
  }
  /* Route as the programs do: by exact path, then by method. */
  if (strcmp(path, "/v1/sales") == 0 || strcmp(path, "/v1/batches") == 0)
    status = strcmp(method, "POST") == 0 ? 201 : 405;
  else if (strcmp(path, "/status.json") != 0 && strcmp(path, "/healthz") != 0)
    status = 404;
  len = snprintf(body, sizeof(body), "%s %.200s %.200s %zu %zu", method, path, query, body_len,
                 header_bytes);
  if (len < 0 || (size_t)len >= sizeof(body))
    len = (int)sizeof(body) - 1;
  http_exchange_respond(exchange, status, "text/plain", with_headers ?
                        "Retry-After: 5\r\nX-Fuzz: 1\r\n" : NULL, body, (size_t)len);
}

static void fuzz_answer_held(void)
{
  for (size_t i = 0; i < fuzz_held_count; i++)
    fuzz_answer(fuzz_held[i], 0);
  fuzz_held_count = 0;
}

static void fuzz_hold_expired(uv_timer_t *timer) { fuzz_answer_held(); }

static void fuzz_deferred_closed(uv_handle_t *handle) { free(handle->data); }

static void fuzz_deferred_fire(uv_timer_t *timer)
{
  struct fuzz_deferred *deferred = timer->data;
  fuzz_answer(deferred->exchange, 0);
  uv_close((uv_handle_t *)&deferred->timer, fuzz_deferred_closed);
}

static void fuzz_handler(http_exchange *exchange, void *arg)
{
  struct fuzz_deferred *deferred;

  /* As agent/main.c routes it. */
  if (strcmp(http_exchange_path(exchange), "/v1/sales") == 0) {
    if (strcmp(http_exchange_method(exchange), "POST") == 0)
      sales_api_handle(fuzz_sales, exchange);
    else
      sales_api_respond_error(exchange, 405, "use POST to submit sales", NULL,
                              "Allow: POST\r\n");
    return;
  }
  switch (fuzz_mode) {
  case MODE_LATER:
    deferred = calloc(1, sizeof(*deferred));
    if (!deferred)
      abort();
    deferred->exchange = exchange;
    deferred->timer.data = deferred;
    uv_timer_init(&fuzz_loop, &deferred->timer);
    uv_timer_start(&deferred->timer, fuzz_deferred_fire, 0, 0);
    break;
  case MODE_HOLD:
    if (fuzz_held_count < sizeof(fuzz_held) / sizeof(fuzz_held[0])) {
      fuzz_held[fuzz_held_count++] = exchange;
      break;
    }
    fuzz_answer(exchange, 0);
    break;
  case MODE_HEADERS:
    fuzz_answer(exchange, 1);
    break;
  case MODE_NOW:
  default:
    fuzz_answer(exchange, 0);
    break;
  }
}

/* Removes the journal's directory when libFuzzer exits. */
static void fuzz_cleanup(void)
{
  static const char *const names[] = {"terminals", "journal.db", "journal.db-wal",
                                      "journal.db-shm"};
  char path[192];
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    snprintf(path, sizeof(path), "%s/%s", fuzz_dir, names[i]);
    unlink(path);
  }
  rmdir(fuzz_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  struct http_server_config config = {
      .listen_host = "127.0.0.1",
      .port = 0,
      .max_header_bytes = 2048,
      .max_body_bytes = 4096,
      .idle_timeout_ms = 2000,
      .request_timeout_ms = 2000,
      .max_connections = 8,
      .tls = NULL,
  };
  char err[256], path[192];
  const char *tmp = getenv("TMPDIR");
  FILE *tokens;

  log_set_level(LOG_ERROR);
  fuzz_verbose = getenv("FUZZ_HTTP_VERBOSE") != NULL;
  if (uv_loop_init(&fuzz_loop) != 0)
    fuzz_fail("uv_loop_init failed");
  /* /dev/shm when there is one: the journal fsyncs every commit. */
  snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/fuzz-http.XXXXXX",
           access("/dev/shm", W_OK) == 0 ? "/dev/shm" : tmp ? tmp : "/tmp");
  if (!mkdtemp(fuzz_dir))
    fuzz_fail("cannot make a temporary directory for the journal");
  atexit(fuzz_cleanup);
  snprintf(path, sizeof(path), "%s/terminals", fuzz_dir);
  tokens = fopen(path, "w");
  if (!tokens || fputs(FUZZ_TOKENS, tokens) < 0 || fclose(tokens) != 0)
    fuzz_fail("cannot write the terminal tokens file");
  {
    struct journal_options journal_options = {.max_bytes = 64 * 1024 * 1024,
                                              .group_commit_max = 64,
                                              .busy_timeout_ms = 1000};
    struct sales_api_options sales_options = {.tokens_path = path,
                                              .max_sales_per_request = 8};
    char db[192];
    snprintf(db, sizeof(db), "%s/journal.db", fuzz_dir);
    journal_options.path = db;
    fuzz_journal = journal_open(&fuzz_loop, &journal_options, err, sizeof(err));
    if (!fuzz_journal)
      fuzz_fail(err);
    fuzz_sales = sales_api_create(fuzz_journal, &sales_options, err, sizeof(err));
    if (!fuzz_sales)
      fuzz_fail(err);
  }
  fuzz_server = http_server_create(&fuzz_loop, &config, fuzz_handler, NULL, err, sizeof(err));
  if (!fuzz_server) {
    fprintf(stderr, "fuzz-http: %s\n", err);
    abort();
  }
  fuzz_port = http_server_port(fuzz_server);
  uv_timer_init(&fuzz_loop, &fuzz_hold_timer);
  return 0;
}

static void fuzz_count_handle(uv_handle_t *handle, void *arg)
{
  (*(unsigned *)arg)++;
}

static unsigned fuzz_handles(void)
{
  unsigned count = 0;
  uv_walk(&fuzz_loop, fuzz_count_handle, &count);
  return count;
}

static void fuzz_client_closed(uv_handle_t *handle)
{
  struct fuzz_client *client = handle->data;
  client->closed++;
}

static void fuzz_client_shut(uv_shutdown_t *req, int status) {}

/* Half-closes the client's side once; the server sees EOF. */
static void fuzz_client_fin(struct fuzz_client *client)
{
  if (client->fin_sent || uv_is_closing((uv_handle_t *)&client->tcp))
    return;
  client->fin_sent = 1;
  uv_timer_stop(&client->fin_timer);
  uv_shutdown(&client->shutdown_req, (uv_stream_t *)&client->tcp, fuzz_client_shut);
}

static void fuzz_client_fin_due(uv_timer_t *timer) { fuzz_client_fin(timer->data); }

static void fuzz_client_close(struct fuzz_client *client)
{
  if (uv_is_closing((uv_handle_t *)&client->tcp))
    return;
  uv_close((uv_handle_t *)&client->tcp, fuzz_client_closed);
  uv_close((uv_handle_t *)&client->fin_timer, fuzz_client_closed);
}

static void fuzz_client_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
  static char space[64 * 1024];
  buf->base = space;
  buf->len = sizeof(space);
}

static void fuzz_client_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
  struct fuzz_client *client = stream->data;

  if (nread > 0) {
    size_t room = sizeof(client->first) - 1;
    if (client->received < room) {
      size_t take = (size_t)nread < room - client->received ? (size_t)nread
                                                              : room - client->received;
      memcpy(client->first + client->received, buf->base, take);
    }
    client->received += (size_t)nread;
    if (client->wait_answer)
      fuzz_client_fin(client);
    return;
  }
  if (nread < 0)
    fuzz_client_close(client);
}

static void fuzz_client_written(uv_write_t *req, int status)
{
  struct fuzz_client *client = req->data;
  free(client->sent);
  client->sent = NULL;
  if (status != 0 || client->fin_sent)
    return;
  if (client->wait_answer)
    uv_timer_start(&client->fin_timer, fuzz_client_fin_due, FUZZ_HOLD_MS, 0);
  else
    fuzz_client_fin(client);
}

static void fuzz_client_connected(uv_connect_t *req, int status)
{
  struct fuzz_client *client = req->data;
  uv_buf_t buf = uv_buf_init(client->sent, 0);

  if (status != 0)
    fuzz_fail("cannot connect to the server on 127.0.0.1");
  uv_read_start((uv_stream_t *)&client->tcp, fuzz_client_alloc, fuzz_client_read);
  buf.len = (unsigned)client->sent_len;
  if (buf.len == 0) {
    fuzz_client_fin(client);
    return;
  }
  uv_write(&client->write_req, (uv_stream_t *)&client->tcp, &buf, 1, fuzz_client_written);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static unsigned baseline;
  struct fuzz_client client;
  struct sockaddr_in addr;

  if (size == 0 || size > 64 * 1024)
    return 0;
  if (baseline == 0)
    baseline = fuzz_handles();
  fuzz_mode = (enum fuzz_mode)(data[0] % MODE_COUNT);
  memset(&client, 0, sizeof(client));
  client.wait_answer = (data[0] >> 2) & 1;
  client.tcp.data = &client;
  client.connect_req.data = &client;
  client.shutdown_req.data = &client;
  client.sent = malloc(size);
  if (!client.sent)
    return 0;
  memcpy(client.sent, data + 1, size - 1);
  client.sent_len = size - 1;
  client.write_req.data = &client;
  uv_ip4_addr("127.0.0.1", fuzz_port, &addr);
  uv_tcp_init(&fuzz_loop, &client.tcp);
  uv_timer_init(&fuzz_loop, &client.fin_timer);
  client.fin_timer.data = &client;
  uv_tcp_connect(&client.connect_req, &client.tcp, (const struct sockaddr *)&addr,
                 fuzz_client_connected);
  if (fuzz_mode == MODE_HOLD)
    uv_timer_start(&fuzz_hold_timer, fuzz_hold_expired, FUZZ_HOLD_MS, 0);
  while (client.closed < 2)
    uv_run(&fuzz_loop, UV_RUN_ONCE);
  /* The client is gone: answer what was held (a respond on an orphaned
   * exchange only frees it), then wait for the server to close its side. */
  uv_timer_stop(&fuzz_hold_timer);
  fuzz_answer_held();
  while (fuzz_handles() > baseline || sales_api_pending(fuzz_sales) > 0)
    uv_run(&fuzz_loop, UV_RUN_ONCE);
  free(client.sent);
  if (client.received > 0 && strncmp(client.first, "HTTP/1.1 ", client.received < 9 ?
                                     client.received : 9) != 0)
    fuzz_fail("the server answered something that is not an HTTP/1.1 status line");
  if (fuzz_verbose)
    fprintf(stderr, "fuzz-http: mode %d, %zu bytes sent, %zu answered: %.*s\n", (int)fuzz_mode,
            size - 1, client.received, (int)strcspn(client.first, "\r\n"), client.first);
  return 0;
}
