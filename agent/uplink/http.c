/*
 * http.c - the uplink's HTTP/1.1 client: libuv sockets, mbedTLS over
 * memory buffers, llhttp for the answers.
 *
 * One connection carries one request at a time (no pipelining). Its life:
 * RESOLVING (uv_getaddrinfo, in libuv's thread pool) -> CONNECTING (each
 * address in turn until one accepts) -> HANDSHAKE (https only) -> EXCHANGE
 * (the request written, the answer parsed) -> IDLE (kept for the next
 * request to the same host and port when the answer allows keep-alive) or
 * CLOSING. Ciphertext read from the socket is buffered and handed to
 * mbedTLS through its receive callback; what mbedTLS sends is copied into a
 * uv_write. mbedTLS never sees a file descriptor, so nothing blocks.
 *
 * Callbacks to the user (done) are called last in whatever libuv callback
 * finished the request, and nothing touches the connection after them: a
 * done() may start the next request on the same connection, or close the
 * client.
 */
#define _XOPEN_SOURCE 700 /* strptime */
#include "uplink/http.h"

#include <arpa/inet.h>
#include <llhttp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>

#include "platform/log.h"
#include "platform/tls.h"
#include "uplink/http_int.h"

#define UPLINK_HTTP_READ_BYTES 16384
#define UPLINK_HTTP_IDLE_MAX 4        /* idle connections kept */
#define UPLINK_HTTP_IDLE_MS 50000     /* an idle connection is closed after this */
#define UPLINK_HTTP_SESSIONS 4        /* TLS sessions kept for resumption */
#define UPLINK_HTTP_MAX_CIPHERTEXT (256u * 1024u)

enum uplink_http_state {
  HTTP_RESOLVING,
  HTTP_CONNECTING,
  HTTP_HANDSHAKE,
  HTTP_EXCHANGE,
  HTTP_IDLE,
  HTTP_CLOSING,
};

/* Which answer header a value belongs to. */
enum uplink_http_header {
  HEADER_OTHER,
  HEADER_TYPE,
  HEADER_ENCODING,
  HEADER_RETRY_AFTER,
};

struct uplink_http_session {
  char key[300]; /* "host:port" */
  mbedtls_ssl_session session;
  int valid;
};

struct uplink_http_conn {
  uplink_http *http;
  struct uplink_http_conn *next; /* every connection not yet freed */
  enum uplink_http_state state;
  int tls;
  char host[256];     /* as resolved and verified: no brackets */
  char port[8];
  char authority[300]; /* "host:port" as in the URL: for errors, Host and the pool */
  uv_getaddrinfo_t resolve;
  struct addrinfo *addrs, *addr_next;
  char connect_error[160]; /* why the last address refused */
  uv_tcp_t *tcp;          /* the current socket (a new one per address tried) */
  uv_connect_t connect;
  uv_timer_t timer;
  unsigned pending; /* open handles and libuv requests in flight */
  unsigned writing; /* writes queued, not yet done */
  uint64_t connect_deadline_ms;
  /* TLS */
  struct uplink_http_tls *tls_conf;
  mbedtls_ssl_context ssl;
  int ssl_ready;
  int handshake_done;
  struct uplink_http_tls_note note;
  unsigned char *cipher; /* read, not yet taken by mbedTLS: cipher[start..end) */
  size_t cipher_start, cipher_end, cipher_cap;
  /* HTTP */
  llhttp_t parser;
  struct uplink_http_request *req;
  int reused;
  size_t answered; /* bytes of the answer received */
  int complete;
  int trailing; /* bytes came after the whole answer: not reused */
  enum uplink_http_header header;
  size_t value_len;
  char field[32];
  size_t field_len;
  char retry_after[64];
  char read_buf[UPLINK_HTTP_READ_BYTES];
};

struct uplink_http {
  uv_loop_t *loop;
  uv_timer_t timer; /* only to call `closed` from the loop */
  char *cert_file, *key_file, *ca_file;
  const char *log_module; /* options->log_module, or "uplink" */
  int64_t connect_timeout_ms, request_timeout_ms;
  size_t max_response_bytes;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  struct uplink_http_tls *tls; /* loaded by the first https request */
  struct uplink_http_session sessions[UPLINK_HTTP_SESSIONS];
  unsigned session_next;
  struct uplink_http_conn *conns;
  struct uplink_http_request *active; /* started, not finished */
  unsigned live; /* connections not yet freed, plus the timer */
  int closing;
  int trailing_logged; /* bytes after an answer were logged once */
  void (*closed)(void *arg);
  void *closed_arg;
};

/* What a URL says. */
struct uplink_http_url {
  int tls;
  char host[256];
  char port[8];
  char authority[300];
  const char *path; /* into the URL's text: path and query, up to `path_len` */
  size_t path_len;  /* 0: the URL has none, "/" is sent */
};

static llhttp_settings_t uplink_http_parser_settings;

static void conn_close(struct uplink_http_conn *conn);
static int conn_read_plain(struct uplink_http_conn *conn, const char *data, size_t len);
static void conn_on_timer(uv_timer_t *timer);
static int http_open(uplink_http *http, struct uplink_http_request *req,
                     const struct uplink_http_url *url);
static int http_parse_url(const char *text, struct uplink_http_url *url, char *why,
                          size_t why_size);
static unsigned http_idle_count(const uplink_http *http);

/* ---- lifetimes --------------------------------------------------------------------- */

static void http_maybe_free(uplink_http *http)
{
  void (*closed)(void *) = http->closed;
  void *arg = http->closed_arg;

  if (!http->closing || http->live)
    return;
  for (unsigned i = 0; i < UPLINK_HTTP_SESSIONS; i++)
    mbedtls_ssl_session_free(&http->sessions[i].session);
  uplink_http__tls_unref(http->tls);
  mbedtls_ctr_drbg_free(&http->drbg);
  mbedtls_entropy_free(&http->entropy);
  free(http->cert_file);
  free(http->key_file);
  free(http->ca_file);
  free(http);
  if (closed)
    closed(arg);
}

static void conn_maybe_free(struct uplink_http_conn *conn)
{
  uplink_http *http = conn->http;

  if (conn->state != HTTP_CLOSING || conn->pending)
    return;
  for (struct uplink_http_conn **at = &http->conns; *at; at = &(*at)->next) {
    if (*at == conn) {
      *at = conn->next;
      break;
    }
  }
  if (conn->addrs)
    uv_freeaddrinfo(conn->addrs);
  if (conn->ssl_ready)
    mbedtls_ssl_free(&conn->ssl);
  uplink_http__tls_unref(conn->tls_conf);
  free(conn->cipher);
  free(conn);
  http->live--;
  http_maybe_free(http);
}

static void conn_on_closed(uv_handle_t *handle)
{
  struct uplink_http_conn *conn = handle->data;

  if (handle->type == UV_TCP)
    free(handle);
  conn->pending--;
  conn_maybe_free(conn);
}

static void http_unlink(uplink_http *http, struct uplink_http_request *req)
{
  for (struct uplink_http_request **at = &http->active; *at; at = &(*at)->next_active) {
    if (*at == req) {
      *at = req->next_active;
      break;
    }
  }
  req->next_active = NULL;
}

/* Closes the connection (its request, if any, must have been taken off). */
static void conn_close(struct uplink_http_conn *conn)
{
  if (conn->state == HTTP_CLOSING)
    return;
  if (conn->req) {
    conn->req->conn = NULL;
    conn->req = NULL;
  }
  if (conn->state == HTTP_RESOLVING)
    uv_cancel((uv_req_t *)&conn->resolve); /* its callback still comes */
  /* A polite end (best effort: the socket takes a small alert at once),
   * so that the collector logs no truncated connection. */
  if (conn->handshake_done)
    (void)mbedtls_ssl_close_notify(&conn->ssl);
  conn->state = HTTP_CLOSING;
  uv_timer_stop(&conn->timer);
  uv_close((uv_handle_t *)&conn->timer, conn_on_closed);
  if (conn->tcp) {
    uv_close((uv_handle_t *)conn->tcp, conn_on_closed);
    conn->tcp = NULL;
  }
  conn_maybe_free(conn);
}

/* ---- finishing a request ------------------------------------------------------------- */

static int64_t conn_retry_after(const char *value)
{
  char *end;
  long long seconds;
  struct tm tm;

  while (*value == ' ')
    value++;
  if (!*value)
    return -1;
  seconds = strtoll(value, &end, 10);
  if (end != value && (*end == '\0' || *end == ' '))
    return seconds >= 0 ? (int64_t)seconds : -1;
  /* The other form is an HTTP-date (RFC 9110 IMF-fixdate). */
  memset(&tm, 0, sizeof(tm));
  end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (!end)
    return -1;
  seconds = (long long)timegm(&tm) - (long long)time(NULL);
  return seconds > 0 ? (int64_t)seconds : 0;
}

/*
 * Ends the connection's request: with the answer parsed (`fmt` NULL), or
 * failed with "authority: " and `fmt`'s text. The connection goes idle
 * (a whole answer that allows keep-alive) or is closed; then done() is
 * called. The caller must not touch the connection afterwards.
 */
static void conn_finish(struct uplink_http_conn *conn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void conn_finish(struct uplink_http_conn *conn, const char *fmt, ...)
{
  uplink_http *http = conn->http;
  struct uplink_http_request *req = conn->req;
  va_list args;
  int n;

  conn->req = NULL;
  req->conn = NULL;
  http_unlink(http, req);
  if (fmt) {
    req->failed = 1;
    n = snprintf(req->error, sizeof(req->error), "%s: ", conn->authority);
    va_start(args, fmt);
    if (n > 0 && (size_t)n < sizeof(req->error))
      vsnprintf(req->error + n, sizeof(req->error) - (size_t)n, fmt, args);
    va_end(args);
    /* A failed request holds no answer (half of one is no answer). */
    free(req->response);
    req->response = NULL;
    req->response_len = req->response_cap = 0;
    conn_close(conn);
  } else {
    req->failed = 0;
    req->status = (long)llhttp_get_status_code(&conn->parser);
    req->retry_after_s = conn_retry_after(conn->retry_after);
    /* Kept for the next request only when clean: nothing of this exchange
     * still being written (an early answer), nothing unread after it. */
    if (llhttp_should_keep_alive(&conn->parser) && !http->closing && !conn->trailing &&
        conn->cipher_end == conn->cipher_start && conn->writing == 0 &&
        http_idle_count(http) < UPLINK_HTTP_IDLE_MAX) {
      conn->state = HTTP_IDLE;
      uv_timer_start(&conn->timer, conn_on_timer, UPLINK_HTTP_IDLE_MS, 0);
    } else {
      conn_close(conn);
    }
  }
  if (!http->closing)
    req->done(req);
}

/*
 * The connection ended before a whole answer (`what`). A request on a
 * reused connection of which nothing was answered is sent again, once, on
 * a fresh connection: the collector may have closed the idle connection
 * as we wrote. Otherwise the request fails. The caller must not touch the
 * connection afterwards.
 */
static void conn_broken(struct uplink_http_conn *conn, const char *what)
{
  uplink_http *http = conn->http;
  struct uplink_http_request *req = conn->req;
  struct uplink_http_url url;
  char own[400];

  if (!req) {
    conn_close(conn);
    return;
  }
  if (conn->reused && conn->answered == 0 && !req->retried) {
    req->retried = 1;
    memset(&url, 0, sizeof(url));
    url.tls = conn->tls;
    memcpy(url.host, conn->host, sizeof(url.host));
    memcpy(url.port, conn->port, sizeof(url.port));
    memcpy(url.authority, conn->authority, sizeof(url.authority));
    conn->req = NULL;
    req->conn = NULL;
    conn_close(conn);
    log_debug(http->log_module, "http_retry", "peer=%s reason=\"%s\"", url.authority, what);
    if (http_open(http, req, &url) == 0)
      return;
    http_unlink(http, req);
    req->failed = 1;
    if (!http->closing)
      req->done(req); /* http_open set req->error */
    return;
  }
  if (conn->state == HTTP_HANDSHAKE &&
      uplink_http__tls_own_expired(conn->tls_conf, http->log_module, own, sizeof(own)))
    conn_finish(conn, "the collector closed the connection during the TLS handshake (%s): %s",
                what, own);
  else if (conn->state == HTTP_HANDSHAKE && !uplink_http__tls_has_cert(conn->tls_conf))
    conn_finish(conn,
                "the collector closed the connection during the TLS handshake (%s): no device "
                "certificate is configured (uplink.cert, uplink.key), and the collector "
                "requires one", what);
  else if (conn->state == HTTP_HANDSHAKE)
    conn_finish(conn,
                "the collector closed the connection during the TLS handshake (%s): it may "
                "have refused the device certificate (uplink.cert): check that the collector "
                "trusts its CA and that it has not expired or been revoked", what);
  else if (conn->answered == 0)
    conn_finish(conn, "the collector closed the connection without answering (%s)", what);
  else
    conn_finish(conn, "the collector closed the connection in the middle of its answer (%s)",
                what);
}

/* ---- llhttp: the answer ------------------------------------------------------------ */

static struct uplink_http_conn *conn_of(llhttp_t *parser)
{
  return parser->data;
}

static int conn_on_header_field(llhttp_t *parser, const char *at, size_t len)
{
  struct uplink_http_conn *conn = conn_of(parser);
  size_t room = sizeof(conn->field) - 1 - conn->field_len;

  if (len > room)
    len = room; /* a name this long is none we read */
  memcpy(conn->field + conn->field_len, at, len);
  conn->field_len += len;
  conn->field[conn->field_len] = '\0';
  return 0;
}

static int conn_on_header_field_complete(llhttp_t *parser)
{
  struct uplink_http_conn *conn = conn_of(parser);
  struct uplink_http_request *req = conn->req;

  conn->header = HEADER_OTHER;
  /* A repeated header: the last one counts, so each starts afresh. */
  if (strcasecmp(conn->field, "Content-Type") == 0) {
    conn->header = HEADER_TYPE;
    req->response_type[0] = '\0';
  } else if (strcasecmp(conn->field, "Content-Encoding") == 0) {
    conn->header = HEADER_ENCODING;
    req->response_encoding[0] = '\0';
  } else if (strcasecmp(conn->field, "Retry-After") == 0) {
    conn->header = HEADER_RETRY_AFTER;
    conn->retry_after[0] = '\0';
  }
  conn->field_len = 0;
  conn->value_len = 0;
  return 0;
}

static int conn_on_header_value(llhttp_t *parser, const char *at, size_t len)
{
  struct uplink_http_conn *conn = conn_of(parser);
  char *out = NULL;
  size_t size = 0;

  if (conn->header == HEADER_TYPE) {
    out = conn->req->response_type;
    size = sizeof(conn->req->response_type);
  } else if (conn->header == HEADER_ENCODING) {
    out = conn->req->response_encoding;
    size = sizeof(conn->req->response_encoding);
  } else if (conn->header == HEADER_RETRY_AFTER) {
    out = conn->retry_after;
    size = sizeof(conn->retry_after);
  }
  if (!out)
    return 0;
  /* Cut if longer: these are read as a type, an encoding, a delay. */
  if (len > size - 1 - conn->value_len)
    len = size - 1 - conn->value_len;
  memcpy(out + conn->value_len, at, len);
  conn->value_len += len;
  out[conn->value_len] = '\0';
  return 0;
}

static int conn_on_body(llhttp_t *parser, const char *at, size_t len)
{
  struct uplink_http_conn *conn = conn_of(parser);
  struct uplink_http_request *req = conn->req;
  size_t cap;
  uint8_t *grown;

  if (req->response_len + len > conn->http->max_response_bytes) {
    req->overflow = 1;
    return -1;
  }
  if (req->response_len + len > req->response_cap) {
    cap = req->response_cap ? req->response_cap : 1024;
    while (cap < req->response_len + len)
      cap *= 2;
    grown = realloc(req->response, cap);
    if (!grown)
      return -1;
    req->response = grown;
    req->response_cap = cap;
  }
  memcpy(req->response + req->response_len, at, len);
  req->response_len += len;
  return 0;
}

static int conn_on_message_complete(llhttp_t *parser)
{
  struct uplink_http_conn *conn = conn_of(parser);

  /* 1xx answers are not the answer: llhttp reports them as messages too. */
  if (llhttp_get_status_code(parser) < 200)
    return 0;
  conn->complete = 1;
  return HPE_PAUSED; /* nothing after the answer is read as part of it */
}

static void conn_parser_reset(struct uplink_http_conn *conn)
{
  llhttp_init(&conn->parser, HTTP_RESPONSE, &uplink_http_parser_settings);
  conn->parser.data = conn;
  conn->answered = 0;
  conn->complete = 0;
  conn->trailing = 0;
  conn->field_len = conn->value_len = 0;
  conn->header = HEADER_OTHER;
  conn->retry_after[0] = '\0';
}

/* Notes `len` bytes after a whole answer (once per client in the log: a
 * misbehaving peer would otherwise fill it). */
static void conn_trailing(struct uplink_http_conn *conn, size_t len)
{
  conn->trailing = 1;
  if (conn->http->trailing_logged)
    return;
  conn->http->trailing_logged = 1;
  log_warn(conn->http->log_module, "http_bytes_after_answer",
           "peer=%s bytes=%zu reason=\"the collector (or a proxy) sent more than its answer; "
           "the connection is closed instead of reused (logged once)\"",
           conn->authority, len);
}

/* Plaintext of the answer. Returns 1 when the request ended (the
 * connection must not be touched), else 0. */
static int conn_read_plain(struct uplink_http_conn *conn, const char *data, size_t len)
{
  struct uplink_http_request *req = conn->req;
  llhttp_errno_t err;

  if (conn->state != HTTP_EXCHANGE || !req) {
    /* Bytes nobody asked for (on an idle connection): it cannot be reused. */
    conn_close(conn);
    return 1;
  }
  conn->answered += len;
  err = llhttp_execute(&conn->parser, data, len);
  if (conn->complete) {
    /* Paused at the answer's end: anything after it belongs to no request
     * (a confused proxy, an answer longer than it said). It is not read as
     * the next answer: the connection is closed after this one. */
    size_t extra = 0;
    if (err == HPE_PAUSED && llhttp_get_error_pos(&conn->parser) < data + len)
      extra = len - (size_t)(llhttp_get_error_pos(&conn->parser) - data);
    if (conn->tls)
      extra += mbedtls_ssl_get_bytes_avail(&conn->ssl);
    if (extra)
      conn_trailing(conn, extra);
    conn_finish(conn, NULL);
    return 1;
  }
  if (err == HPE_OK)
    return 0;
  if (req->overflow)
    conn_finish(conn, "the answer is larger than %zu bytes (status %d)",
                conn->http->max_response_bytes, llhttp_get_status_code(&conn->parser));
  else if (err == HPE_USER)
    conn_finish(conn, "out of memory reading the answer");
  else
    conn_finish(conn, "the answer is not valid HTTP/1.1: %s (%s)", llhttp_errno_name(err),
                llhttp_get_error_reason(&conn->parser));
  return 1;
}

/* The peer closed its side (`what`; `clean`: by close_notify, or plain
 * http's end of stream): an answer read to the end of the connection is
 * complete; otherwise the request is broken. On TLS only close_notify ends
 * such an answer: a bare TCP close may be anyone cutting it short. */
static void conn_on_eof(struct uplink_http_conn *conn, const char *what, int clean)
{
  if (conn->state == HTTP_EXCHANGE && conn->req && conn->answered > 0 &&
      llhttp_message_needs_eof(&conn->parser)) {
    if (!clean) {
      conn_broken(conn, "connection closed without TLS close_notify: the answer may be cut "
                        "short");
      return;
    }
    /* on_message_complete pauses the parser: `complete` says it ended. */
    (void)llhttp_finish(&conn->parser);
    if (conn->complete) {
      conn_finish(conn, NULL);
      return;
    }
  }
  conn_broken(conn, what);
}

/* ---- writing ------------------------------------------------------------------------ */

struct conn_write {
  uv_write_t req;
  struct uplink_http_conn *conn;
  char data[];
};

static void conn_on_written(uv_write_t *write, int status)
{
  struct conn_write *w = (struct conn_write *)write;
  struct uplink_http_conn *conn = w->conn;

  free(w);
  conn->pending--;
  conn->writing--;
  if (status < 0 && status != UV_ECANCELED && conn->state != HTTP_CLOSING && conn->req) {
    conn_broken(conn, uv_strerror(status));
    return;
  }
  conn_maybe_free(conn);
}

/* Writes `len` bytes to the socket: at once as far as the socket takes
 * them, the rest copied and queued. Returns 0 or -1 (the connection cannot
 * take them). */
static int conn_write(struct uplink_http_conn *conn, const void *data, size_t len)
{
  struct conn_write *w;
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
  int sent;

  if (conn->state == HTTP_CLOSING || !conn->tcp)
    return -1;
  /* With writes already queued this says UV_EAGAIN: the order is kept. */
  sent = uv_try_write((uv_stream_t *)conn->tcp, &buf, 1);
  if (sent == (int)len)
    return 0;
  if (sent < 0 && sent != UV_EAGAIN)
    return -1;
  if (sent < 0)
    sent = 0;
  w = malloc(sizeof(*w) + len - (size_t)sent);
  if (!w)
    return -1;
  w->conn = conn;
  memcpy(w->data, (const char *)data + sent, len - (size_t)sent);
  buf = uv_buf_init(w->data, (unsigned)(len - (size_t)sent));
  if (uv_write(&w->req, (uv_stream_t *)conn->tcp, &buf, 1, conn_on_written) != 0) {
    free(w);
    return -1;
  }
  conn->pending++;
  conn->writing++;
  return 0;
}

static int conn_bio_send(void *ctx, const unsigned char *data, size_t len)
{
  struct uplink_http_conn *conn = ctx;

  if (conn_write(conn, data, len) != 0)
    return MBEDTLS_ERR_NET_SEND_FAILED;
  return (int)len; /* mbedTLS hands over one record (< 17 KiB) at a time */
}

static int conn_bio_recv(void *ctx, unsigned char *out, size_t size)
{
  struct uplink_http_conn *conn = ctx;
  size_t available = conn->cipher_end - conn->cipher_start;

  if (available == 0)
    return MBEDTLS_ERR_SSL_WANT_READ;
  if (size > available)
    size = available;
  memcpy(out, conn->cipher + conn->cipher_start, size);
  conn->cipher_start += size;
  return (int)size;
}

/* Writes the request (headers, then the body). Returns 0, or -1 when the
 * connection cannot take it (broken). */
static int conn_send_request(struct uplink_http_conn *conn)
{
  struct uplink_http_request *req = conn->req;
  struct uplink_http_url url;
  const char *path = "/";
  size_t path_len = 1;
  char why[200];
  size_t head_len, total;
  char *wire;
  int n, rc = -1;

  /* The path as the URL spells it (query included); the URL parsed when
   * the request started. */
  if (http_parse_url(req->url, &url, why, sizeof(why)) == 0 && url.path_len) {
    path = url.path;
    path_len = url.path_len;
  }
  head_len = 512 + path_len + strlen(conn->authority) + strlen(req->content_type) +
             (req->content_encoding ? strlen(req->content_encoding) : 0) +
             (req->headers ? strlen(req->headers) : 0);
  wire = malloc(head_len + req->body_len);
  if (!wire)
    return -1;
  n = snprintf(wire, head_len,
               "POST %s%.*s HTTP/1.1\r\nHost: %s\r\nUser-Agent: pos-agent/" POS_VERSION
               "\r\nContent-Type: %s\r\n%s%s%s%sAccept: %s\r\n"
               "Content-Length: %zu\r\n\r\n",
               path[0] == '/' ? "" : "/", (int)path_len, path, conn->authority,
               req->content_type,
               req->content_encoding ? "Content-Encoding: " : "",
               req->content_encoding ? req->content_encoding : "",
               req->content_encoding ? "\r\n" : "", req->headers ? req->headers : "",
               req->accept ? req->accept : "application/x-protobuf", req->body_len);
  if (n < 0 || (size_t)n >= head_len)
    goto out;
  if (req->body_len)
    memcpy(wire + n, req->body, req->body_len);
  total = (size_t)n + req->body_len;
  if (!conn->tls) {
    rc = conn_write(conn, wire, total);
    goto out;
  }
  for (size_t done = 0; done < total;) {
    /* Our send callback takes every record, so each call makes progress. */
    int written = mbedtls_ssl_write(&conn->ssl, (unsigned char *)wire + done, total - done);
    if (written <= 0)
      goto out;
    done += (size_t)written;
  }
  rc = 0;
out:
  free(wire);
  return rc;
}

/* Starts the exchange on a connected (and, for https, handshaken)
 * connection. The caller must not touch the connection afterwards. */
static void conn_exchange(struct uplink_http_conn *conn)
{
  conn->state = HTTP_EXCHANGE;
  conn_parser_reset(conn);
  if (conn_send_request(conn) != 0)
    conn_broken(conn, "the request could not be written");
}

/* ---- TLS ---------------------------------------------------------------------------- */

static struct uplink_http_session *http_session(uplink_http *http, const char *key, int create)
{
  struct uplink_http_session *slot;

  for (unsigned i = 0; i < UPLINK_HTTP_SESSIONS; i++) {
    if (strcmp(http->sessions[i].key, key) == 0)
      return &http->sessions[i];
  }
  if (!create)
    return NULL;
  slot = &http->sessions[http->session_next++ % UPLINK_HTTP_SESSIONS];
  mbedtls_ssl_session_free(&slot->session);
  mbedtls_ssl_session_init(&slot->session);
  slot->valid = 0;
  snprintf(slot->key, sizeof(slot->key), "%s", key);
  return slot;
}

/* Advances the handshake; when it is done, keeps the session for the next
 * connection and sends the request. The caller must not touch the
 * connection afterwards. */
static void conn_handshake(struct uplink_http_conn *conn)
{
  uplink_http *http = conn->http;
  struct uplink_http_session *slot;
  char why[400];
  int rc = mbedtls_ssl_handshake(&conn->ssl);

  if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
    return;
  if (rc != 0) {
    slot = http_session(http, conn->authority, 0);
    if (slot)
      slot->valid = 0;
    uplink_http__tls_explain(rc, &conn->ssl, &conn->note, conn->host,
                             uplink_http__tls_has_cert(conn->tls_conf), why, sizeof(why));
    /* Refused by the collector (not the collector's certificate refused
     * here) with an expired device certificate: that is why, and only head
     * office can end it. */
    if (rc != MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
      char own[400];
      if (uplink_http__tls_own_expired(conn->tls_conf, conn->http->log_module, own,
                                       sizeof(own))) {
        conn_finish(conn, "TLS handshake refused by the collector: %s", own);
        return;
      }
    }
    conn_finish(conn, "%s", why);
    return;
  }
  conn->handshake_done = 1;
  slot = http_session(http, conn->authority, 1);
  mbedtls_ssl_session_free(&slot->session);
  mbedtls_ssl_session_init(&slot->session);
  slot->valid = mbedtls_ssl_get_session(&conn->ssl, &slot->session) == 0;
  conn_exchange(conn);
}

/* Decrypts what was read. The caller must not touch the connection afterwards. */
static void conn_read_tls(struct uplink_http_conn *conn)
{
  unsigned char plain[UPLINK_HTTP_READ_BYTES];
  char why[200];
  int rc;

  if (conn->state == HTTP_HANDSHAKE) {
    conn_handshake(conn);
    return;
  }
  for (;;) {
    rc = mbedtls_ssl_read(&conn->ssl, plain, sizeof(plain));
    if (rc > 0) {
      if (conn_read_plain(conn, (const char *)plain, (size_t)rc))
        return;
      continue;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
      return;
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
      /* 0 is mbedTLS's "the transport ended without close_notify". */
      conn_on_eof(conn, rc == 0 ? "end of stream" : "TLS close_notify", rc != 0);
      return;
    }
    tls_error_text(rc, why, sizeof(why));
    conn_broken(conn, why);
    return;
  }
}

static int conn_tls_setup(struct uplink_http_conn *conn)
{
  struct uplink_http_session *slot = http_session(conn->http, conn->authority, 0);

  mbedtls_ssl_init(&conn->ssl);
  conn->ssl_ready = 1;
  if (mbedtls_ssl_setup(&conn->ssl, uplink_http__tls_conf(conn->tls_conf)) != 0)
    return -1;
  /* An IP address is checked against the certificate by our verify
   * callback (mbedTLS 2.28 would compare it with DNS names only). */
  if (!conn->note.host_is_ip && mbedtls_ssl_set_hostname(&conn->ssl, conn->host) != 0)
    return -1;
  mbedtls_ssl_set_verify(&conn->ssl, uplink_http__tls_verify, &conn->note);
  mbedtls_ssl_set_bio(&conn->ssl, conn, conn_bio_send, conn_bio_recv, NULL);
  /* Resuming costs the device one round trip and no public-key work. */
  if (slot && slot->valid)
    (void)mbedtls_ssl_set_session(&conn->ssl, &slot->session);
  return 0;
}

static int conn_buffer_cipher(struct uplink_http_conn *conn, const char *data, size_t len)
{
  size_t buffered = conn->cipher_end - conn->cipher_start;
  size_t cap;
  unsigned char *grown;

  if (buffered + len > UPLINK_HTTP_MAX_CIPHERTEXT)
    return -1;
  if (conn->cipher_start > 0) {
    memmove(conn->cipher, conn->cipher + conn->cipher_start, buffered);
    conn->cipher_start = 0;
    conn->cipher_end = buffered;
  }
  if (buffered + len > conn->cipher_cap) {
    cap = conn->cipher_cap ? conn->cipher_cap : UPLINK_HTTP_READ_BYTES;
    while (cap < buffered + len)
      cap *= 2;
    grown = realloc(conn->cipher, cap);
    if (!grown)
      return -1;
    conn->cipher = grown;
    conn->cipher_cap = cap;
  }
  memcpy(conn->cipher + conn->cipher_end, data, len);
  conn->cipher_end += len;
  return 0;
}

/* ---- the socket ---------------------------------------------------------------------- */

static void conn_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
  struct uplink_http_conn *conn = handle->data;

  (void)suggested;
  *buf = uv_buf_init(conn->read_buf, sizeof(conn->read_buf));
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
  struct uplink_http_conn *conn = stream->data;

  if (nread == 0 || conn->state == HTTP_CLOSING)
    return;
  if (nread < 0) {
    if (conn->state == HTTP_IDLE)
      conn_close(conn);
    else if (nread == UV_EOF)
      conn_on_eof(conn, "end of stream", !conn->tls);
    else
      conn_broken(conn, uv_strerror((int)nread));
    return;
  }
  if (!conn->tls) {
    conn_read_plain(conn, buf->base, (size_t)nread);
    return;
  }
  if (conn->state == HTTP_IDLE || conn_buffer_cipher(conn, buf->base, (size_t)nread) != 0) {
    /* An idle TLS connection that hears from the peer is being closed by
     * it (close_notify); too much unread ciphertext is an abuse. */
    conn_broken(conn, "too much unread data");
    return;
  }
  conn_read_tls(conn);
}

static void conn_connect_next(struct uplink_http_conn *conn);

static void conn_on_connect(uv_connect_t *connect, int status)
{
  struct uplink_http_conn *conn = connect->data;

  conn->pending--;
  if (conn->state == HTTP_CLOSING) {
    conn_maybe_free(conn);
    return;
  }
  if (status < 0) {
    snprintf(conn->connect_error, sizeof(conn->connect_error), "%s", uv_strerror(status));
    uv_close((uv_handle_t *)conn->tcp, conn_on_closed);
    conn->tcp = NULL;
    conn_connect_next(conn);
    return;
  }
  uv_tcp_nodelay(conn->tcp, 1);
  uv_tcp_keepalive(conn->tcp, 1, 60);
  if (uv_read_start((uv_stream_t *)conn->tcp, conn_alloc, conn_on_read) != 0) {
    conn_finish(conn, "cannot read from the connection");
    return;
  }
  if (!conn->tls) {
    conn_exchange(conn);
    return;
  }
  conn->state = HTTP_HANDSHAKE;
  if (conn_tls_setup(conn) != 0) {
    conn_finish(conn, "TLS: cannot set up a session (out of memory?)");
    return;
  }
  conn_handshake(conn); /* sends the ClientHello */
}

/* Tries the next address; when none is left, the request fails with why
 * the last one refused. */
static void conn_connect_next(struct uplink_http_conn *conn)
{
  struct addrinfo *addr = conn->addr_next;
  int rc;

  if (!addr) {
    conn_finish(conn, "cannot connect: %s (is the collector running and listening there?)",
                conn->connect_error[0] ? conn->connect_error : "no address to connect to");
    return;
  }
  conn->addr_next = addr->ai_next;
  conn->tcp = malloc(sizeof(*conn->tcp));
  if (!conn->tcp || uv_tcp_init(conn->http->loop, conn->tcp) != 0) {
    free(conn->tcp);
    conn->tcp = NULL;
    conn_finish(conn, "cannot create a socket");
    return;
  }
  conn->tcp->data = conn;
  conn->pending++;
  conn->connect.data = conn;
  rc = uv_tcp_connect(&conn->connect, conn->tcp, addr->ai_addr, conn_on_connect);
  if (rc != 0) {
    snprintf(conn->connect_error, sizeof(conn->connect_error), "%s", uv_strerror(rc));
    uv_close((uv_handle_t *)conn->tcp, conn_on_closed);
    conn->tcp = NULL;
    conn_connect_next(conn);
    return;
  }
  conn->pending++;
}

static void conn_on_resolved(uv_getaddrinfo_t *resolve, int status, struct addrinfo *addrs)
{
  struct uplink_http_conn *conn = resolve->data;

  conn->pending--;
  conn->addrs = addrs;
  if (conn->state == HTTP_CLOSING) {
    conn_maybe_free(conn);
    return;
  }
  if (status < 0) {
    conn_finish(conn, "cannot resolve the host name: %s (check uplink.url and the device's DNS)",
                uv_strerror(status));
    return;
  }
  conn->state = HTTP_CONNECTING;
  conn->addr_next = addrs;
  conn_connect_next(conn);
}

static void conn_on_timer(uv_timer_t *timer)
{
  struct uplink_http_conn *conn = timer->data;
  uplink_http *http = conn->http;
  uint64_t now = uv_now(http->loop);

  if (conn->state == HTTP_IDLE) {
    conn_close(conn);
    return;
  }
  if (!conn->req)
    return;
  if (conn->state < HTTP_EXCHANGE && now >= conn->connect_deadline_ms) {
    conn_finish(conn, "timed out %s (no %s within uplink.connect_timeout_ms = %lld ms)",
                conn->state == HTTP_RESOLVING    ? "resolving the host name"
                : conn->state == HTTP_CONNECTING ? "connecting"
                                                 : "in the TLS handshake",
                conn->state == HTTP_HANDSHAKE ? "finished handshake" : "connection",
                (long long)http->connect_timeout_ms);
    return;
  }
  if (now >= conn->req->deadline_ms && conn->state == HTTP_EXCHANGE && conn->reused &&
      conn->answered == 0 && !conn->req->retried) {
    /* Nothing of the answer on a kept-alive connection: it may have died
     * silently (a NAT or proxy forgot it). Sent again, once, on a fresh
     * connection with a fresh deadline. Safe because every request the
     * uplink makes is idempotent: a batch (live or replay) is acknowledged
     * by its sequence number, and the collector takes a batch it has
     * already once; a heartbeat is a snapshot of the device's state and
     * its command reports are states keyed by command_id; commands that
     * come back in either answer are recorded by command_id, never started
     * twice (agent/uplink/uploader.c, replay.c, heartbeat.c, commands.c). */
    conn->req->deadline_ms = now + (uint64_t)http->request_timeout_ms;
    conn_broken(conn, "no answer on a kept-alive connection within uplink.request_timeout_ms");
    return;
  }
  if (now >= conn->req->deadline_ms) {
    conn_finish(conn, "timed out: %s within uplink.request_timeout_ms = %lld ms",
                conn->answered ? "the answer was not complete" : "no answer",
                (long long)http->request_timeout_ms);
    return;
  }
  /* Woken for the connect deadline before the request's: wait for that. */
  uv_timer_start(&conn->timer, conn_on_timer, conn->req->deadline_ms - now, 0);
}

/* Arms the connection's timer for the request's next deadline. */
static void conn_arm(struct uplink_http_conn *conn)
{
  uint64_t now = uv_now(conn->http->loop);
  uint64_t at = conn->req->deadline_ms;

  if (conn->state < HTTP_EXCHANGE && conn->connect_deadline_ms < at)
    at = conn->connect_deadline_ms;
  uv_timer_start(&conn->timer, conn_on_timer, at > now ? at - now : 0, 0);
}

/* ---- connections for requests -------------------------------------------------------- */

/* Whether `host` is written the way only inet_aton() reads IPv4 addresses
 * (127.1, 0x7f.0.0.1, 2130706433, 010.0.0.1): numbers only, yet not the
 * dotted quad inet_pton() takes. getaddrinfo() would connect to the
 * address, while TLS would check the text as a DNS name. */
static int http_host_is_odd_number(const char *host)
{
  unsigned char ip[4];

  if (host[0] < '0' || host[0] > '9' || strspn(host, "0123456789abcdefABCDEFxX.") < strlen(host))
    return 0;
  for (const char *dot = strchr(host, '.'); dot; dot = strchr(dot + 1, '.')) {
    if (dot[1] && (dot[1] < '0' || dot[1] > '9'))
      return 0; /* a label of letters: a DNS name */
  }
  return inet_pton(AF_INET, host, ip) != 1;
}

/* The authority's host and port (`rest`..`end`) into `url`. Returns 0, or
 * -1 with `why` set. */
static int http_parse_authority(const char *rest, const char *end, struct uplink_http_url *url,
                                char *why, size_t why_size)
{
  const char *host_end, *host, *port;
  size_t host_len;

  if (rest[0] == '[') { /* an IPv6 address */
    host_end = memchr(rest, ']', (size_t)(end - rest));
    if (!host_end) {
      snprintf(why, why_size, "no ']' after the '[' of an IPv6 address");
      return -1;
    }
    if (host_end + 1 < end && host_end[1] != ':') {
      snprintf(why, why_size, "after the ']' of an IPv6 address only ':port' may follow");
      return -1;
    }
    host = rest + 1;
    host_len = (size_t)(host_end - host);
    port = host_end + 1 < end ? host_end + 2 : NULL;
  } else {
    host_end = memchr(rest, ':', (size_t)(end - rest));
    if (!host_end)
      host_end = end;
    host = rest;
    host_len = (size_t)(host_end - rest);
    port = host_end < end ? host_end + 1 : NULL;
  }
  if (host_len == 0 || host_len >= sizeof(url->host)) {
    snprintf(why, why_size, host_len ? "the host name is too long" : "no host");
    return -1;
  }
  memcpy(url->host, host, host_len);
  if (http_host_is_odd_number(url->host)) {
    snprintf(why, why_size,
             "the host %.64s is a number but not a dotted-quad IPv4 address: write the address "
             "in dotted-quad form (like 192.0.2.10) or use a DNS name", url->host);
    return -1;
  }
  if (port && ((size_t)(end - port) == 0 || (size_t)(end - port) >= sizeof(url->port) ||
               strspn(port, "0123456789") < (size_t)(end - port))) {
    snprintf(why, why_size, "the port is not a number");
    return -1;
  }
  if (port)
    memcpy(url->port, port, (size_t)(end - port));
  else
    snprintf(url->port, sizeof(url->port), "%s", url->tls ? "443" : "80");
  return 0;
}

/*
 * Splits an http:// or https:// URL: host (an IPv6 address in brackets),
 * optional port, path and query (sent as they are), #fragment dropped. No
 * user info, no spaces or control characters (they would end up in the
 * request's first line). Returns 0, or -1 with `why` saying what is wrong.
 */
static int http_parse_url(const char *text, struct uplink_http_url *url, char *why,
                          size_t why_size)
{
  const char *rest, *end, *fragment;
  size_t authority_len;

  memset(url, 0, sizeof(*url));
  for (const char *at = text; *at; at++) {
    if ((unsigned char)*at <= ' ' || *at == 0x7f) {
      snprintf(why, why_size, "a space or control character (0x%02x) at offset %zu",
               (unsigned)(unsigned char)*at, (size_t)(at - text));
      return -1;
    }
  }
  if (strncasecmp(text, "https://", 8) == 0) {
    url->tls = 1;
    rest = text + 8;
  } else if (strncasecmp(text, "http://", 7) == 0) {
    rest = text + 7;
  } else {
    snprintf(why, why_size, "not http:// or https://");
    return -1;
  }
  end = rest + strcspn(rest, "/?#");
  authority_len = (size_t)(end - rest);
  if (authority_len >= sizeof(url->authority) || memchr(rest, '@', authority_len)) {
    snprintf(why, why_size, authority_len >= sizeof(url->authority)
                                ? "the host and port are too long"
                                : "a user name ('@') is not supported");
    return -1;
  }
  if (http_parse_authority(rest, end, url, why, why_size) != 0)
    return -1;
  snprintf(url->authority, sizeof(url->authority), "%.*s", (int)authority_len, rest);
  /* No ':' after the host (after the ']' of an IPv6 address): no port in the URL. */
  if (!strchr(url->authority + (rest[0] == '[' ? strcspn(url->authority, "]") : 0), ':')) {
    size_t n = strlen(url->authority);
    snprintf(url->authority + n, sizeof(url->authority) - n, ":%s", url->port);
  }
  fragment = end + strcspn(end, "#");
  url->path = end;
  url->path_len = (size_t)(fragment - end);
  return 0;
}

/* The TLS settings, (re)read when first needed or when a file changed. */
static int http_tls_current(uplink_http *http, char *err, size_t err_size)
{
  struct uplink_http_tls *tls;

  if (http->tls && !uplink_http__tls_stale(http->tls))
    return 0;
  tls = uplink_http__tls_load(http->cert_file, http->key_file, http->ca_file, &http->drbg, err,
                              err_size);
  if (!tls)
    return -1;
  if (http->tls)
    log_info(http->log_module, "tls_reloaded", "reason=\"a certificate, key or CA file changed\"");
  uplink_http__tls_unref(http->tls);
  http->tls = tls;
  /* Sessions of the old identity are not resumed with the new one. */
  for (unsigned i = 0; i < UPLINK_HTTP_SESSIONS; i++)
    http->sessions[i].valid = 0;
  return 0;
}

/* Opens a new connection for `req`. Returns 0, or -1 with req->error set
 * (done is not called). */
static int http_open(uplink_http *http, struct uplink_http_request *req,
                     const struct uplink_http_url *url)
{
  struct uplink_http_conn *conn;
  struct addrinfo hints;
  char why[400];
  int rc;

  if (url->tls && http_tls_current(http, why, sizeof(why)) != 0) {
    snprintf(req->error, sizeof(req->error), "%.200s: %.300s", url->authority, why);
    return -1;
  }
  conn = calloc(1, sizeof(*conn));
  if (!conn) {
    snprintf(req->error, sizeof(req->error), "%s: out of memory", url->authority);
    return -1;
  }
  conn->http = http;
  conn->tls = url->tls;
  memcpy(conn->host, url->host, sizeof(conn->host));
  memcpy(conn->port, url->port, sizeof(conn->port));
  memcpy(conn->authority, url->authority, sizeof(conn->authority));
  uplink_http__tls_note_init(&conn->note, conn->host);
  if (url->tls) {
    conn->tls_conf = http->tls;
    uplink_http__tls_ref(conn->tls_conf);
  }
  uv_timer_init(http->loop, &conn->timer);
  conn->timer.data = conn;
  conn->resolve.data = conn;
  conn->pending = 1; /* the timer */
  conn->next = http->conns;
  http->conns = conn;
  http->live++;
  conn->state = HTTP_RESOLVING;
  conn->connect_deadline_ms = uv_now(http->loop) + (uint64_t)http->connect_timeout_ms;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  rc = uv_getaddrinfo(http->loop, &conn->resolve, conn_on_resolved, conn->host, conn->port,
                      &hints);
  if (rc != 0) {
    snprintf(req->error, sizeof(req->error), "%s: cannot resolve the host name: %s",
             url->authority, uv_strerror(rc));
    conn->state = HTTP_CONNECTING; /* no resolution in flight to cancel */
    conn_close(conn);
    return -1;
  }
  conn->pending++;
  conn->req = req;
  req->conn = conn;
  conn_arm(conn);
  return 0;
}

static unsigned http_idle_count(const uplink_http *http)
{
  unsigned idle = 0;

  for (const struct uplink_http_conn *conn = http->conns; conn; conn = conn->next)
    idle += conn->state == HTTP_IDLE;
  return idle;
}

/* An idle connection to the same place, taken out of the pool, or NULL. */
static struct uplink_http_conn *http_take_idle(uplink_http *http,
                                               const struct uplink_http_url *url)
{
  for (struct uplink_http_conn *conn = http->conns; conn; conn = conn->next) {
    if (conn->state != HTTP_IDLE || conn->tls != url->tls ||
        strcmp(conn->authority, url->authority) != 0)
      continue;
    /* Set up with a certificate since replaced: not reused. */
    if (conn->tls && conn->tls_conf != http->tls) {
      conn_close(conn);
      continue;
    }
    return conn;
  }
  return NULL;
}

/* ---- the API -------------------------------------------------------------------------- */

uplink_http *uplink_http_create(uv_loop_t *loop, const struct uplink_http_options *options,
                                char *err, size_t err_size)
{
  static const char personalization[] = "pos-agent uplink";
  uplink_http *http = calloc(1, sizeof(*http));

  if (!http) {
    snprintf(err, err_size, "out of memory creating the HTTP client");
    return NULL;
  }
  uplink_http_parser_settings.on_header_field = conn_on_header_field;
  uplink_http_parser_settings.on_header_field_complete = conn_on_header_field_complete;
  uplink_http_parser_settings.on_header_value = conn_on_header_value;
  uplink_http_parser_settings.on_body = conn_on_body;
  uplink_http_parser_settings.on_message_complete = conn_on_message_complete;
  http->loop = loop;
  http->cert_file = strdup(options->cert_file ? options->cert_file : "");
  http->key_file = strdup(options->key_file ? options->key_file : "");
  http->ca_file = strdup(options->ca_file ? options->ca_file : "");
  http->log_module = options->log_module ? options->log_module : "uplink";
  http->connect_timeout_ms = options->connect_timeout_ms;
  http->request_timeout_ms = options->request_timeout_ms;
  http->max_response_bytes = options->max_response_bytes ? options->max_response_bytes : 65536;
  mbedtls_entropy_init(&http->entropy);
  mbedtls_ctr_drbg_init(&http->drbg);
  for (unsigned i = 0; i < UPLINK_HTTP_SESSIONS; i++)
    mbedtls_ssl_session_init(&http->sessions[i].session);
  if (!http->cert_file || !http->key_file || !http->ca_file) {
    snprintf(err, err_size, "out of memory creating the HTTP client");
    goto fail;
  }
  if (tls_seed(&http->entropy, &http->drbg, personalization, err, err_size) != 0)
    goto fail;
  uv_timer_init(loop, &http->timer);
  http->timer.data = http;
  http->live = 1;
  return http;
fail:
  http->closing = 1;
  http->live = 0;
  http_maybe_free(http);
  return NULL;
}

int uplink_http_start(uplink_http *http, struct uplink_http_request *req)
{
  struct uplink_http_url url;
  struct uplink_http_conn *conn;
  char url_why[200];
  int shown = 0;

  req->failed = 0;
  req->status = 0;
  req->retry_after_s = -1;
  req->response = NULL;
  req->response_len = req->response_cap = 0;
  req->response_type[0] = req->response_encoding[0] = '\0';
  req->overflow = 0;
  req->retried = 0;
  req->error[0] = '\0';
  req->http = http;
  req->next_active = NULL;
  req->conn = NULL;
  if (http->closing) {
    snprintf(req->error, sizeof(req->error), "the uplink is closing");
    return -1;
  }
  if (http_parse_url(req->url, &url, url_why, sizeof(url_why)) != 0) {
    /* Shown up to a control character: the error goes to logs. */
    while (shown < 200 && (unsigned char)req->url[shown] > ' ' && req->url[shown] != 0x7f)
      shown++;
    snprintf(req->error, sizeof(req->error),
             "uplink.url %.*s%s is not a URL this client can use: %s (expected http:// or "
             "https://, a host, an optional port, a path)",
             shown, req->url, req->url[shown] ? "..." : "", url_why);
    return -1;
  }
  req->deadline_ms = uv_now(http->loop) + (uint64_t)http->request_timeout_ms;
  if (url.tls && http_tls_current(http, req->error, sizeof(req->error)) != 0) {
    char why[sizeof(req->error)];
    memcpy(why, req->error, sizeof(why));
    snprintf(req->error, sizeof(req->error), "%.200s: %.300s", url.authority, why);
    return -1;
  }
  conn = http_take_idle(http, &url);
  if (conn) {
    conn->req = req;
    conn->reused = 1;
    req->conn = conn;
    conn->state = HTTP_EXCHANGE;
    conn_parser_reset(conn);
    if (conn_send_request(conn) == 0) {
      req->next_active = http->active;
      http->active = req;
      conn_arm(conn);
      return 0;
    }
    /* It died under us: a fresh connection instead, done() not called here. */
    conn->req = NULL;
    req->conn = NULL;
    conn_close(conn);
  }
  if (http_open(http, req, &url) != 0)
    return -1;
  req->next_active = http->active;
  http->active = req;
  return 0;
}

void uplink_http_cancel(uplink_http *http, struct uplink_http_request *req)
{
  struct uplink_http_conn *conn = req->conn;
  int active = 0;

  for (struct uplink_http_request *r = http->active; r; r = r->next_active)
    active |= r == req;
  if (!active)
    return;
  http_unlink(http, req);
  /* Half an exchange cannot be resumed: the connection goes with it. */
  if (conn)
    conn_close(conn);
  req->conn = NULL;
  uplink_http_request_clear(req);
}

int uplink_http_answer_is_protobuf(const struct uplink_http_request *req, char *why,
                                   size_t why_size)
{
  static const char protobuf[] = "application/x-protobuf";
  size_t n = sizeof(protobuf) - 1;
  const char *type = req->response_type;

  if (req->response_encoding[0] && strcasecmp(req->response_encoding, "identity") != 0) {
    snprintf(why, why_size, "Content-Encoding %s", req->response_encoding);
    return 0;
  }
  /* "application/x-protobuf", maybe with parameters ("; charset=..."). */
  if (strncasecmp(type, protobuf, n) != 0 || (type[n] && type[n] != ';' && type[n] != ' ')) {
    snprintf(why, why_size, "Content-Type %s", type[0] ? type : "(none)");
    return 0;
  }
  return 1;
}

void uplink_http_request_clear(struct uplink_http_request *req)
{
  if (!req)
    return;
  free(req->response);
  req->response = NULL;
  req->response_len = req->response_cap = 0;
}

static void http_on_timer_closed(uv_handle_t *handle)
{
  uplink_http *http = handle->data;

  http->live--;
  http_maybe_free(http);
}

void uplink_http_close(uplink_http *http, void (*closed)(void *arg), void *arg)
{
  if (!http || http->closing)
    return;
  http->closing = 1;
  http->closed = closed;
  http->closed_arg = arg;
  while (http->active)
    uplink_http_cancel(http, http->active);
  for (struct uplink_http_conn *conn = http->conns; conn; conn = conn->next)
    conn_close(conn);
  /* Closed last, so `closed` is called from the loop even with no connection. */
  uv_close((uv_handle_t *)&http->timer, http_on_timer_closed);
}
