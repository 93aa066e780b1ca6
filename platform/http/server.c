/*
 * server.c - HTTP/1.1 server on libuv + llhttp, optionally over TLS (tls.c).
 *
 * One connection is a uv_tcp_t, a uv_timer_t and an llhttp parser. Bytes go
 * socket -> (TLS decrypt) -> parser; when the parser completes a message it
 * pauses, the request becomes an exchange and goes to the handler. Until the
 * handler responds the connection parses nothing more: bytes that arrive
 * meanwhile (a pipelined request) wait in the connection's stash, up to
 * HTTP_STASH_LIMIT, after which the server stops reading. It keeps reading
 * up to that limit so that a client that hangs up is noticed: the
 * connection is closed and the exchange orphaned, so a later respond is a
 * no-op that frees it.
 *
 * Connection states:
 *
 *   HANDSHAKE --> OPEN --(last response queued, or a limit hit)--> DRAINING
 *   DRAINING --(writes flushed, FIN sent)--> LINGER --(EOF or timer)--> CLOSED
 *
 * Any state can go straight to CLOSED (errors, http_server_close). LINGER
 * reads and discards what the client still sends, so that closing does not
 * reset the connection before the client has read our error response.
 *
 * Lifetimes: a connection is reference counted: one reference while its
 * handles are open, one per outstanding exchange. The server is freed when
 * the listener and every connection handle are closed; an orphaned exchange
 * can outlive the server (it never touches it again).
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <llhttp.h>
#include <mbedtls/x509_crt.h>

#include "http_int.h"
#include "platform/http_server.h"
#include "platform/log.h"

#define HTTP_MOD "http"
/* Bytes a connection buffers while an exchange is pending before it stops reading. */
#define HTTP_STASH_LIMIT (64u * 1024u)
/* Plaintext decrypted per mbedtls_ssl_read(): one TLS record at most. */
#define HTTP_TLS_PLAIN_CHUNK (16u * 1024u)
/* Unsent response bytes on a connection before the server stops reading requests. */
#define HTTP_WRITE_QUEUE_LIMIT (1024u * 1024u)
/* How long a closing connection waits for the client to read and hang up. */
#define HTTP_LINGER_MS 2000u
/* Largest response body accepted from a handler (uv_buf_t lengths are unsigned int). */
#define HTTP_MAX_RESPONSE_BODY ((size_t)1 << 30)
#define HTTP_LISTEN_BACKLOG 511
/* One socket read, shared by all connections of a server. */
#define HTTP_READ_BUF_SIZE (64u * 1024u)
/* Default deadline for the handshake and the first request's headers. */
#define HTTP_FIRST_REQUEST_TIMEOUT_MS 10000u
/* Refused connections are logged at most this often (a flood would flood the log). */
#define HTTP_REFUSAL_LOG_INTERVAL_MS 1000u
/*
 * A connection keeps the buffers of its last request and response for the
 * next one (no malloc per request on a keep-alive connection), up to this
 * capacity each: a 1-sale POST and its answer fit many times over, and an
 * idle connection holds little.
 */
#define HTTP_REUSE_MAX (16u * 1024u)
/* A keep-alive connection idle this long gives its buffers back (see conn_shed). */
#define HTTP_SHED_MS 1000u
/* Default handshake_backlog_ms, and a step's cost assumed before one is measured (a full
 * mutual-TLS handshake's first step, about half of its ~8.5 ms). */
#define HTTP_HS_BACKLOG_MS 2000u
#define HTTP_HS_STEP_GUESS_US 5000u
/* A response buffer is made at least this large, so that the next one fits it. */
#define HTTP_WRITE_MIN (512u)

enum conn_state { CONN_HANDSHAKE, CONN_OPEN, CONN_DRAINING, CONN_LINGER, CONN_CLOSED };

enum conn_timer {
  TIMER_NONE,
  TIMER_FIRST, /* from accept to the first request's headers */
  TIMER_SHED,  /* idle for HTTP_SHED_MS: shed the buffers, then TIMER_IDLE */
  TIMER_IDLE,
  TIMER_REQUEST,
  TIMER_DRAIN,
  TIMER_LINGER
};

/* A growable byte buffer. */
struct http_bytes {
  char *data;
  size_t length;
  size_t capacity;
};

struct http_conn {
  uv_tcp_t tcp;  /* data = this */
  uv_timer_t timer; /* data = this; one timer, its meaning in timer_kind */
  uv_shutdown_t shutdown_req;
  struct http_server *server; /* NULL once both handles are closed */
  struct http_conn *prev;
  struct http_conn *next;
  int refs;         /* 1 while handles are open, +1 per outstanding exchange */
  int handles_open; /* tcp and timer */
  enum conn_state state;
  enum conn_timer timer_kind;
  int reading;      /* uv_read_start() is in effect */
  int in_feed;      /* the parser (and maybe the handler) is on the stack */
  int pumping;
  int peer_eof;
  int counted;      /* counts toward max_connections */
  int unproven;     /* the first request's headers are not in yet (TIMER_FIRST runs) */
  unsigned writes_pending;
  char peer[64];
  char peer_ip[INET6_ADDRSTRLEN]; /* counted against max_connections_per_ip */
  llhttp_t parser;
  /* The request being read. */
  int in_message;
  struct http_bytes head; /* "url\0name\0value\0name\0value\0..." */
  size_t head_bytes;      /* counted against max_header_bytes */
  unsigned header_count;
  struct http_bytes body;
  int reject_status; /* set by a parser callback that refuses the request */
  char reject_error[320];
  const char *reject_extra; /* static extra header lines for the refusal, or NULL */
  /* Received and not yet parsed: stash.data[stash_offset..stash.length). */
  struct http_bytes stash;
  size_t stash_offset;
  struct http_exchange *exchange; /* handed to the handler, not yet answered */
  struct http__tls_conn *tls;     /* NULL for plain HTTP */
  /* Reused from request to request (each up to HTTP_REUSE_MAX). */
  struct http_write *spare_write; /* a write buffer whose write completed */
  struct http_bytes view_head;    /* conn_check_headers()'s copy of the head */
  struct http_exchange *slot;     /* exchange_slot when it is free, else NULL */
  struct http_hs_step *hs;        /* the TLS handshake's step in progress, or NULL */
  unsigned hs_steps;              /* handshake steps run so far */
};

/*
 * One step of a connection's TLS handshake: mbedTLS given the ciphertext
 * buffered so far, on the loop or on a pool thread. Its records go to `out`
 * and are written after it. While a step is on the pool (or waiting for a
 * thread) the connection is not read and its tls is the step's: the loop
 * does not touch it; the step holds a connection reference, so closing it
 * meanwhile is safe. Allocated per step: an open connection carries none.
 */
struct http_hs_step {
  uv_work_t work; /* data = this */
  struct http_conn *conn;
  struct http_server *server; /* conn->server is NULL once the connection closed */
  struct http_hs_step *next;  /* in server->hs_waiting */
  struct http_bytes out;
  int rc;           /* enum http__tls_result */
  uint64_t cost_ns; /* the step's time on its thread */
  char reason[700];
};

struct http_exchange {
  struct http_conn *conn; /* holds a reference */
  size_t head_capacity;   /* of head and body, given back to the connection */
  size_t body_capacity;
  int orphaned;           /* the connection closed: respond only frees */
  int keep_alive;
  int head_request;
  const char *method;     /* static string from llhttp */
  char *head;             /* taken from the connection; see http_conn.head */
  size_t head_length;
  size_t url_size; /* the URL's length with its NUL, before exchange_split_url() */
  unsigned header_count;
  const char *path;
  const char *query;
  char *body; /* NUL-terminated; never NULL */
  size_t body_length;
  char peer[64];
};

struct http_write {
  uv_write_t req;
  struct http_conn *conn;
  size_t length;
  size_t capacity; /* of data */
  char data[];
};

/* A connection and the one exchange it can have pending, in one block. */
struct http_conn_block {
  struct http_conn conn;
  struct http_exchange exchange_slot;
};

struct http_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int listener_open;
  struct http_server_config config; /* config.tls is NULL: see tls */
  char listen_host[64];
  int port;
  http_handler_fn handler;
  void *handler_arg;
  struct http__tls *tls;
  llhttp_settings_t settings;
  struct http_conn *conns; /* every connection with open handles */
  unsigned active_conns;   /* counted toward max_connections */
  uint64_t refusal_logged_ms; /* uv_now() of the last refusal logged */
  unsigned refusals_unlogged; /* refusals since then, not logged one by one */
  int closing;
  /* Handshake steps on libuv's thread pool: at most handshake_threads at once,
   * the rest waiting, a handshake under way's next step before any first step (each
   * holding a connection reference). */
  unsigned hs_running;
  unsigned hs_waiting_count;
  struct http_hs_step *hs_waiting; /* steps of handshakes under way first, then first steps */
  struct http_hs_step *hs_waiting_tail;
  struct http_hs_step *hs_waiting_cont_tail; /* the last step of a handshake under way */
  uint64_t hs_step_us;                       /* a step's cost, a moving average */
  uint64_t hs_busy_ms; /* uv_now() of the last connection refused as busy (logging) */
  unsigned hs_busy_unlogged;
  void (*closed_cb)(void *arg);
  void *closed_arg;
  char read_buf[HTTP_READ_BUF_SIZE]; /* shared: each read is consumed before the next */
};

static void conn_close(struct http_conn *conn);
static void conn_pump(struct http_conn *conn);
static void conn_update_reading(struct http_conn *conn);
static void conn_finish(struct http_conn *conn);
static void conn_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* ---- small helpers ---------------------------------------------------- */

static const char *status_reason(int status)
{
  switch (status) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 206: return "Partial Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 406: return "Not Acceptable";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 412: return "Precondition Failed";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 422: return "Unprocessable Content";
  case 425: return "Too Early";
  case 426: return "Upgrade Required";
  case 428: return "Precondition Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  case 507: return "Insufficient Storage";
  default: return "Unknown";
  }
}

/* Copies `text` into `out` as the inside of a JSON string (no quotes). */
static void json_escape(const char *text, char *out, size_t out_size)
{
  size_t used = 0;

  if (out_size == 0)
    return;
  for (const char *p = text; *p; p++) {
    unsigned char c = (unsigned char)*p;
    char esc[8];
    size_t esc_len;
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      esc_len = 2;
    } else if (c < 0x20 || c == 0x7f) {
      snprintf(esc, sizeof(esc), "\\u%04x", c);
      esc_len = 6;
    } else {
      esc[0] = (char)c;
      esc_len = 1;
    }
    if (used + esc_len + 1 > out_size)
      break;
    memcpy(out + used, esc, esc_len);
    used += esc_len;
  }
  out[used] = '\0';
}

/* Makes room for `extra` more bytes, growing geometrically but never past `limit` total. */
static int bytes_reserve(struct http_bytes *bytes, size_t extra, size_t limit)
{
  size_t needed;
  size_t capacity;
  char *grown;
  int rc = -1;

  if (extra > limit || bytes->length > limit - extra)
    goto out;
  needed = bytes->length + extra;
  if (needed <= bytes->capacity) {
    rc = 0;
    goto out;
  }
  capacity = bytes->capacity ? bytes->capacity : 256;
  while (capacity < needed)
    capacity = capacity > limit / 2 ? limit : capacity * 2;
  grown = realloc(bytes->data, capacity);
  if (grown == NULL)
    goto out;
  bytes->data = grown;
  bytes->capacity = capacity;
  rc = 0;
out:
  return rc;
}

static int bytes_append(struct http_bytes *bytes, const char *data, size_t length, size_t limit)
{
  if (bytes_reserve(bytes, length, limit) != 0)
    return -1;
  if (length > 0)
    memcpy(bytes->data + bytes->length, data, length);
  bytes->length += length;
  return 0;
}

static void bytes_free(struct http_bytes *bytes)
{
  free(bytes->data);
  bytes->data = NULL;
  bytes->length = 0;
  bytes->capacity = 0;
}

/*
 * Gives a request's buffer (data, capacity) back to the connection's empty
 * `bytes` for the next request, or frees it: when `bytes` already has one,
 * or when it is over HTTP_REUSE_MAX.
 */
static void bytes_give_back(struct http_bytes *bytes, char *data, size_t capacity)
{
  if (bytes->data != NULL || capacity > HTTP_REUSE_MAX) {
    free(data);
    return;
  }
  bytes->data = data;
  bytes->length = 0;
  bytes->capacity = data != NULL ? capacity : 0;
}

/* Appends `length` bytes at `p`; returns the end. */
static char *put_bytes(char *p, const char *text, size_t length)
{
  memcpy(p, text, length);
  return p + length;
}

/* Appends `text`; returns the end. */
static char *put_text(char *p, const char *text) { return put_bytes(p, text, strlen(text)); }

/* Appends `value` in decimal (at most 20 characters); returns the end. */
static char *put_decimal(char *p, uint64_t value)
{
  char digits[20];
  size_t count = 0;

  do {
    digits[count++] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (count > 0)
    *p++ = digits[--count];
  return p;
}

/* Writes "ip:port" into `out` and the bare address into `ip` (INET6_ADDRSTRLEN bytes). */
static void format_peer(const struct sockaddr_storage *addr, char *out, size_t out_size,
                        char *ip)
{
  snprintf(out, out_size, "unknown");
  snprintf(ip, INET6_ADDRSTRLEN, "unknown");
  if (addr->ss_family == AF_INET) {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)addr;
    if (uv_ip4_name(in4, ip, INET6_ADDRSTRLEN) == 0)
      snprintf(out, out_size, "%s:%u", ip, (unsigned)ntohs(in4->sin_port));
  } else if (addr->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
    if (uv_ip6_name(in6, ip, INET6_ADDRSTRLEN) == 0)
      snprintf(out, out_size, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
  }
}

/* ---- lifetime ---------------------------------------------------------- */

static void server_maybe_free(struct http_server *server)
{
  void (*closed_cb)(void *arg);
  void *closed_arg;

  if (!server->closing || server->listener_open || server->conns != NULL ||
      server->hs_running > 0 || server->hs_waiting != NULL)
    return;
  closed_cb = server->closed_cb;
  closed_arg = server->closed_arg;
  http__tls_release(server->tls);
  log_info(HTTP_MOD, "closed", "addr=%s:%d", server->listen_host, server->port);
  free(server);
  if (closed_cb != NULL)
    closed_cb(closed_arg);
}

static void conn_unref(struct http_conn *conn)
{
  assert(conn->refs > 0);
  if (--conn->refs > 0)
    return;
  assert(conn->handles_open == 0 && conn->exchange == NULL);
  http__tls_conn_destroy(conn->tls);
  bytes_free(&conn->head);
  bytes_free(&conn->body);
  bytes_free(&conn->stash);
  bytes_free(&conn->view_head);
  free(conn->spare_write);
  free(conn); /* the http_conn_block it begins */
}

/*
 * Ends an exchange: its head and body buffers go back to the connection
 * for the next request, its slot is free again, and its reference to the
 * connection is dropped (which may free the connection).
 */
static void exchange_free(struct http_exchange *exchange)
{
  struct http_conn *conn = exchange->conn;

  bytes_give_back(&conn->head, exchange->head, exchange->head_capacity);
  bytes_give_back(&conn->body, exchange->body, exchange->body_capacity);
  exchange->head = NULL;
  exchange->body = NULL;
  exchange->conn = NULL;
  assert(conn->slot == NULL);
  conn->slot = exchange;
  conn_unref(conn);
}

static void conn_on_handle_closed(uv_handle_t *handle)
{
  struct http_conn *conn = handle->data;
  struct http_server *server = conn->server;

  assert(conn->handles_open > 0);
  if (--conn->handles_open > 0)
    return;
  if (conn->prev != NULL)
    conn->prev->next = conn->next;
  else
    server->conns = conn->next;
  if (conn->next != NULL)
    conn->next->prev = conn->prev;
  conn->server = NULL;
  conn_unref(conn);
  server_maybe_free(server);
}

/*
 * Closes both handles now; queued writes are cancelled. A pending exchange
 * is orphaned. Idempotent.
 */
static void conn_close(struct http_conn *conn)
{
  if (conn->state == CONN_CLOSED)
    return;
  conn->state = CONN_CLOSED;
  if (conn->exchange != NULL) {
    conn->exchange->orphaned = 1;
    conn->exchange = NULL;
  }
  if (conn->counted) {
    conn->server->active_conns--;
    conn->counted = 0;
  }
  conn->reading = 0;
  conn->timer_kind = TIMER_NONE;
  uv_timer_stop(&conn->timer);
  uv_close((uv_handle_t *)&conn->timer, conn_on_handle_closed);
  uv_close((uv_handle_t *)&conn->tcp, conn_on_handle_closed);
}

/* ---- timers ------------------------------------------------------------ */

static void conn_on_timer(uv_timer_t *timer);

static void conn_arm(struct http_conn *conn, enum conn_timer kind, uint64_t timeout_ms)
{
  assert(conn->state != CONN_CLOSED);
  conn->timer_kind = kind;
  uv_timer_start(&conn->timer, conn_on_timer, timeout_ms, 0);
}

static void conn_disarm(struct http_conn *conn)
{
  conn->timer_kind = TIMER_NONE;
  uv_timer_stop(&conn->timer);
}

/* ---- writing ----------------------------------------------------------- */

/* Keeps `write_req` (done with) as the connection's spare, or frees it. */
static void write_release(struct http_conn *conn, struct http_write *write_req)
{
  if (conn->spare_write == NULL && write_req->capacity <= HTTP_REUSE_MAX &&
      conn->state != CONN_CLOSED) {
    conn->spare_write = write_req;
    return;
  }
  free(write_req);
}

static void conn_on_write(uv_write_t *req, int status)
{
  struct http_write *write_req = req->data;
  struct http_conn *conn = write_req->conn;

  write_release(conn, write_req);
  assert(conn->writes_pending > 0);
  conn->writes_pending--;
  if (conn->state == CONN_CLOSED)
    return;
  if (status < 0) {
    log_debug(HTTP_MOD, "write_failed", "peer=%s error=%s", conn->peer, uv_err_name(status));
    conn_close(conn);
    return;
  }
  if (conn->state == CONN_DRAINING && conn->writes_pending == 0) {
    conn_finish(conn);
    return;
  }
  conn_update_reading(conn);
}

/*
 * A write buffer of at least `length` bytes: the connection's spare when it
 * is large enough (no malloc on a keep-alive connection), else a new one.
 */
static struct http_write *write_alloc(struct http_conn *conn, size_t length)
{
  struct http_write *write_req = conn->spare_write;
  size_t capacity = length < HTTP_WRITE_MIN ? HTTP_WRITE_MIN : length;

  if (write_req != NULL && write_req->capacity >= length) {
    conn->spare_write = NULL;
  } else {
    if (length > UINT_MAX - sizeof(*write_req))
      return NULL;
    write_req = malloc(sizeof(*write_req) + capacity);
    if (write_req == NULL)
      return NULL;
    write_req->capacity = capacity;
  }
  write_req->conn = conn;
  write_req->length = length;
  write_req->req.data = write_req;
  return write_req;
}

/*
 * Sends `write_req` on the socket; takes it. Returns 0 or -1. When nothing
 * is queued before it, the bytes are written at once (uv_try_write), and a
 * write the socket takes whole is done on return: a response of a keep-alive
 * exchange then costs one write(2), where uv_write would also re-arm the
 * socket's poll (an epoll_ctl per response, for nothing, as it drains).
 * What the socket does not take is queued, in order, as before (libuv's
 * uv_try_write also refuses while writes are queued).
 */
static int conn_submit(struct http_conn *conn, struct http_write *write_req)
{
  uv_buf_t buf = uv_buf_init(write_req->data, (unsigned)write_req->length);
  int rc;

  if (conn->writes_pending == 0 && conn->tcp.write_queue_size == 0) {
    rc = uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1);
    if (rc == (int)buf.len) {
      write_release(conn, write_req);
      return 0;
    }
    if (rc > 0) {
      buf.base += rc;
      buf.len -= (unsigned)rc;
    } else if (rc != UV_EAGAIN) {
      log_debug(HTTP_MOD, "write_failed", "peer=%s error=%s", conn->peer, uv_err_name(rc));
      write_release(conn, write_req);
      return -1;
    }
  }
  rc = uv_write(&write_req->req, (uv_stream_t *)&conn->tcp, &buf, 1, conn_on_write);
  if (rc != 0) {
    log_debug(HTTP_MOD, "write_failed", "peer=%s error=%s", conn->peer, uv_err_name(rc));
    write_release(conn, write_req);
    return -1;
  }
  conn->writes_pending++;
  return 0;
}

/* The TLS layer's send function: queues one record of ciphertext. */
static int conn_send_ciphertext(void *send_arg, const unsigned char *data, size_t length)
{
  struct http_conn *conn = send_arg;
  struct http_write *write_req;

  /* During a handshake step, maybe on a worker thread: memory only, no libuv, no state. */
  if (conn->hs != NULL)
    return bytes_append(&conn->hs->out, (const char *)data, length, HTTP__TLS_MAX_BUFFERED);
  if (conn->state == CONN_CLOSED)
    return -1;
  write_req = write_alloc(conn, length);
  if (write_req == NULL)
    return -1;
  memcpy(write_req->data, data, length);
  return conn_submit(conn, write_req);
}

/*
 * Sends `write_req` (plaintext, taken) to the peer: as is, or through TLS.
 * Returns 0 or -1 (the caller closes the connection).
 */
static int conn_send(struct http_conn *conn, struct http_write *write_req)
{
  char reason[200];
  int rc;

  if (conn->tls == NULL) {
    rc = conn_submit(conn, write_req);
    goto out;
  }
  rc = http__tls_conn_write(conn->tls, write_req->data, write_req->length, reason,
                            sizeof(reason));
  if (rc != 0)
    log_warn(HTTP_MOD, "tls_write_failed", "peer=%s reason=\"%s\"", conn->peer, reason);
  write_release(conn, write_req);
out:
  return rc;
}

/*
 * Builds and sends a whole response: the head written with memcpy and
 * integer formatting (no printf: this runs for every sale), the body copied
 * after it into one write buffer. `body` may be NULL when body_length is 0.
 * Returns 0 or -1 (nothing usable was queued).
 */
static int conn_send_response(struct http_conn *conn, int status, const char *content_type,
                              const char *extra_headers, const void *body, size_t body_length,
                              int keep_alive, int head_request)
{
  struct http_write *write_req;
  const char *reason = status_reason(status);
  size_t type_length = content_type ? strlen(content_type) : 0;
  size_t extra_length = extra_headers ? strlen(extra_headers) : 0;
  /* Status line, Content-Length, Connection and the blank line: 160 bytes are plenty. */
  size_t head_cap = 160 + type_length + extra_length;
  int no_body = status == 204 || status == 304 || (status >= 100 && status < 200);
  size_t content_length = body_length;
  char *p;

  /* HEAD gets the headers a GET would get, and no body. */
  if (no_body || head_request)
    body_length = 0;
  if (status < 0 || body_length > SIZE_MAX - head_cap)
    return -1;
  write_req = write_alloc(conn, head_cap + body_length);
  if (write_req == NULL)
    return -1;
  p = put_bytes(write_req->data, "HTTP/1.1 ", 9);
  p = put_decimal(p, (uint64_t)status);
  *p++ = ' ';
  p = put_text(p, reason);
  p = put_bytes(p, "\r\n", 2);
  if (content_type != NULL) {
    p = put_bytes(p, "Content-Type: ", 14);
    p = put_bytes(p, content_type, type_length);
    p = put_bytes(p, "\r\n", 2);
  }
  if (!no_body) {
    p = put_bytes(p, "Content-Length: ", 16);
    p = put_decimal(p, content_length);
    p = put_bytes(p, "\r\n", 2);
  }
  p = put_text(p, keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
  if (extra_length > 0)
    p = put_bytes(p, extra_headers, extra_length);
  p = put_bytes(p, "\r\n", 2);
  assert((size_t)(p - write_req->data) <= head_cap);
  if (body_length > 0)
    p = put_bytes(p, body, body_length);
  write_req->length = (size_t)(p - write_req->data);
  return conn_send(conn, write_req);
}

/*
 * The server answers by itself (a limit was hit, the request is malformed
 * or too slow) and closes: {"error": "..."} with Connection: close.
 */
static void conn_reject(struct http_conn *conn, int status, const char *error,
                        const char *extra_headers)
{
  char quoted[400];
  char escaped[480];
  char body[520];
  int length;

  assert(conn->state == CONN_OPEN && conn->exchange == NULL);
  log_info(HTTP_MOD, "request_rejected", "peer=%s status=%d error=%s", conn->peer, status,
           log_quote(error, quoted, sizeof(quoted)));
  json_escape(error, escaped, sizeof(escaped));
  length = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", escaped);
  if (length < 0 || (size_t)length >= sizeof(body))
    length = snprintf(body, sizeof(body), "{\"error\":\"request rejected\"}");
  if (conn_send_response(conn, status, "application/json", extra_headers, body, (size_t)length,
                         0, 0) != 0) {
    conn_close(conn);
    return;
  }
  conn_finish(conn);
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
  struct http_conn *conn = req->data;

  /* UV_ECANCELED: the handle closed first; nothing left to do. */
  if (status < 0 && conn->state == CONN_LINGER)
    conn_close(conn);
}

/*
 * Ends the connection gracefully: no more requests; once every queued
 * write is flushed, send FIN (after a TLS close_notify) and linger until
 * the client hangs up. Called again by the write callback as writes drain.
 */
static void conn_finish(struct http_conn *conn)
{
  int rc;

  if (conn->state == CONN_CLOSED || conn->state == CONN_LINGER)
    return;
  assert(conn->hs == NULL); /* the session is the step's: only conn_close may run */
  if (conn->state != CONN_DRAINING) {
    conn->state = CONN_DRAINING;
    if (conn->tls != NULL)
      http__tls_conn_close_notify(conn->tls);
    /* A client that never reads would keep the writes queued forever. */
    conn_arm(conn, TIMER_DRAIN, conn->server->config.request_timeout_ms);
    conn_update_reading(conn);
  }
  if (conn->writes_pending > 0)
    return;
  if (conn->peer_eof) {
    conn_close(conn);
    return;
  }
  conn->shutdown_req.data = conn;
  rc = uv_shutdown(&conn->shutdown_req, (uv_stream_t *)&conn->tcp, conn_on_shutdown);
  if (rc != 0) {
    conn_close(conn);
    return;
  }
  conn->state = CONN_LINGER;
  conn_arm(conn, TIMER_LINGER, conn->server->config.request_timeout_ms < HTTP_LINGER_MS
                                   ? conn->server->config.request_timeout_ms
                                   : HTTP_LINGER_MS);
  conn_update_reading(conn);
}

/* ---- request parsing ---------------------------------------------------- */

/* Records why a parser callback refused the request; the caller answers after llhttp returns. */
static int conn_refuse(struct http_conn *conn, int status, const char *fmt, ...)
    LOG_PRINTF(3, 4);

static int conn_refuse(struct http_conn *conn, int status, const char *fmt, ...)
{
  va_list ap;

  if (conn->reject_status == 0) {
    conn->reject_status = status;
    va_start(ap, fmt);
    vsnprintf(conn->reject_error, sizeof(conn->reject_error), fmt, ap);
    va_end(ap);
  }
  return HPE_USER;
}

/* Appends request-line or header bytes, enforcing max_header_bytes. */
static int conn_head_append(struct http_conn *conn, const char *data, size_t length,
                            size_t overhead)
{
  size_t limit = conn->server->config.max_header_bytes;

  if (length + overhead > limit || conn->head_bytes > limit - length - overhead)
    return conn_refuse(conn, 431, "request line and headers exceed max_header_bytes (%zu bytes)",
                       limit);
  conn->head_bytes += length + overhead;
  /* Stored bytes never exceed what was counted, plus one NUL per string. */
  if (bytes_append(&conn->head, data, length, 2 * limit + 64) != 0)
    return conn_refuse(conn, 503, "out of memory reading the request headers");
  return 0;
}

static int on_message_begin(llhttp_t *parser)
{
  struct http_conn *conn = parser->data;

  conn->in_message = 1;
  conn->head.length = 0;
  conn->head_bytes = 0;
  conn->header_count = 0;
  conn->body.length = 0;
  /* The first request's headers stay under TIMER_FIRST, armed at accept. */
  if (!conn->unproven)
    conn_arm(conn, TIMER_REQUEST, conn->server->config.request_timeout_ms);
  return 0;
}

static int on_method(llhttp_t *parser, const char *at, size_t length)
{
  struct http_conn *conn = parser->data;
  size_t limit = conn->server->config.max_header_bytes;

  (void)at;
  /* Counted, not stored: llhttp names the method for us. */
  if (length > limit || conn->head_bytes > limit - length)
    return conn_refuse(conn, 431, "request line and headers exceed max_header_bytes (%zu bytes)",
                       limit);
  conn->head_bytes += length;
  return 0;
}

static int on_url(llhttp_t *parser, const char *at, size_t length)
{
  return conn_head_append(parser->data, at, length, 0);
}

static int on_header_field(llhttp_t *parser, const char *at, size_t length)
{
  return conn_head_append(parser->data, at, length, 0);
}

static int on_header_value(llhttp_t *parser, const char *at, size_t length)
{
  return conn_head_append(parser->data, at, length, 0);
}

/* Ends the URL or a header name: the NUL stands for the separator on the wire. */
static int on_string_complete(llhttp_t *parser)
{
  return conn_head_append(parser->data, "", 1, 1) == 0 ? 0 : -1;
}

static int on_header_value_complete(llhttp_t *parser)
{
  struct http_conn *conn = parser->data;

  if (conn_head_append(conn, "", 1, 2) != 0)
    return -1;
  conn->header_count++;
  return 0;
}

/*
 * Finds a header in a "url\0name\0value\0..." block by case-insensitive
 * name. The URL is skipped by `url_size` (its length with the NUL), not by
 * looking for a NUL: exchange_split_url() adds NULs inside it.
 */
static const char *head_find(const char *head, size_t head_length, size_t url_size,
                             unsigned header_count, const char *name)
{
  const char *end = head + head_length;
  const char *p = head;

  if (head == NULL || url_size > head_length)
    return NULL;
  p += url_size;
  for (unsigned i = 0; i < header_count && p < end; i++) {
    const char *field = p;
    const char *value;
    p += strnlen(p, (size_t)(end - p)) + 1;
    if (p >= end)
      break;
    value = p;
    p += strnlen(p, (size_t)(end - p)) + 1;
    if (strcasecmp(field, name) == 0)
      return value;
  }
  return NULL;
}

static void exchange_split_url(struct http_exchange *exchange);
static const char *response_problem(int status, const char *content_type,
                                    const char *extra_headers, const void *body,
                                    size_t body_length);

/*
 * Runs the server's on-headers hook on a view of the request whose headers
 * just completed. Returns 0 to go on, or -1 with the request refused (the
 * caller answers once llhttp returns, and the body is never read).
 */
static int conn_check_headers(struct http_conn *conn)
{
  http_headers_fn hook = conn->server->config.on_headers;
  struct http_exchange view;
  struct http_refusal refusal;
  static char no_body[1];
  int status;

  if (hook == NULL)
    return 0;
  if (conn->head.length == 0) {
    conn_refuse(conn, 400, "request without a URL");
    return -1;
  }
  memset(&view, 0, sizeof(view));
  memset(&refusal, 0, sizeof(refusal));
  /*
   * A copy: exchange_split_url() writes NULs into the URL it splits. Into
   * the connection's buffer, kept for the next request.
   */
  conn->view_head.length = 0;
  if (bytes_append(&conn->view_head, conn->head.data, conn->head.length, SIZE_MAX) != 0) {
    conn_refuse(conn, 503, "out of memory reading the request headers");
    return -1;
  }
  view.head = conn->view_head.data;
  view.head_length = conn->head.length;
  view.url_size = strnlen(view.head, view.head_length) + 1;
  view.header_count = conn->header_count;
  view.method = llhttp_method_name((llhttp_method_t)conn->parser.method);
  view.body = no_body;
  view.conn = conn;
  memcpy(view.peer, conn->peer, sizeof(view.peer));
  exchange_split_url(&view);
  status = hook(&view, conn->server->handler_arg, &refusal);
  if (conn->view_head.capacity > HTTP_REUSE_MAX)
    bytes_free(&conn->view_head);
  if (status == 0)
    return 0;
  if (status < 400 || status > 599) {
    log_error(HTTP_MOD, "bad_refusal", "peer=%s status=%d problem=\"on_headers returned a "
              "status outside 400-599\"", conn->peer, status);
    status = 500;
    snprintf(refusal.error, sizeof(refusal.error), "internal error: bad refusal from handler");
    refusal.extra_headers = NULL;
  }
  if (refusal.extra_headers != NULL &&
      response_problem(status, NULL, refusal.extra_headers, NULL, 0) != NULL)
    refusal.extra_headers = NULL;
  refusal.error[sizeof(refusal.error) - 1] = '\0';
  conn_refuse(conn, status, "%s", refusal.error[0] ? refusal.error : "request refused");
  conn->reject_extra = refusal.extra_headers;
  return -1;
}

static int on_headers_complete(llhttp_t *parser)
{
  struct http_conn *conn = parser->data;
  size_t max_body = conn->server->config.max_body_bytes;
  const char *expect;
  static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";
  struct http_write *write_req;
  int has_body;

  if (conn->unproven) {
    /* The headers are in: from now on the connection is judged like any other. */
    conn->unproven = 0;
    conn_arm(conn, TIMER_REQUEST, conn->server->config.request_timeout_ms);
  }
  if (parser->method == HTTP_CONNECT) {
    conn_refuse(conn, 400, "CONNECT is not supported");
    return -1;
  }
  /* Before the body is reserved, read, or invited with 100 Continue. */
  if (conn_check_headers(conn) != 0)
    return -1;
  /* We speak HTTP/1.1 only; an Upgrade offer may be ignored (RFC 9110 7.8). */
  parser->upgrade = 0;
  if ((parser->flags & F_CONTENT_LENGTH) && parser->content_length > max_body) {
    conn_refuse(conn, 413, "request body of %" PRIu64 " bytes exceeds max_body_bytes (%zu bytes)",
                parser->content_length, max_body);
    return -1;
  }
  if ((parser->flags & F_CONTENT_LENGTH) && parser->content_length > 0) {
    if (bytes_reserve(&conn->body, (size_t)parser->content_length + 1, max_body + 1) != 0) {
      conn_refuse(conn, 503, "out of memory for a %" PRIu64 "-byte request body",
                  parser->content_length);
      return -1;
    }
  }
  has_body = (parser->flags & F_CHUNKED) ||
             ((parser->flags & F_CONTENT_LENGTH) && parser->content_length > 0);
  expect = NULL;
  if (conn->head.data != NULL)
    expect = head_find(conn->head.data, conn->head.length,
                       strnlen(conn->head.data, conn->head.length) + 1, conn->header_count,
                       "expect");
  if (has_body && expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
      parser->http_major == 1 && parser->http_minor >= 1) {
    /* The body is within the limit: tell the client to send it rather than make it wait. */
    write_req = write_alloc(conn, sizeof(continue_line) - 1);
    if (write_req == NULL) {
      conn_refuse(conn, 503, "out of memory sending 100 Continue");
      return -1;
    }
    memcpy(write_req->data, continue_line, sizeof(continue_line) - 1);
    if (conn_send(conn, write_req) != 0) {
      conn_refuse(conn, 503, "could not send 100 Continue");
      return -1;
    }
  }
  return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t length)
{
  struct http_conn *conn = parser->data;
  size_t max_body = conn->server->config.max_body_bytes;

  /* Chunked bodies have no length up front: this is where they are caught. */
  if (length > max_body || conn->body.length > max_body - length)
    return conn_refuse(conn, 413, "request body exceeds max_body_bytes (%zu bytes)", max_body);
  /* +1 keeps room for the NUL added at the end. */
  if (bytes_reserve(&conn->body, length + 1, max_body + 1) != 0)
    return conn_refuse(conn, 503, "out of memory reading the request body");
  memcpy(conn->body.data + conn->body.length, at, length);
  conn->body.length += length;
  return 0;
}

/* Splits the URL at '?' and '#', in place; skips "scheme://host" of an absolute URL. */
static void exchange_split_url(struct http_exchange *exchange)
{
  char *url = exchange->head;
  char *scheme_end;
  char *mark;

  exchange->query = "";
  scheme_end = strstr(url, "://");
  if (scheme_end != NULL && strchr(url, '/') == scheme_end + 1) {
    mark = strchr(scheme_end + 3, '/');
    url = mark != NULL ? mark : (char *)"/";
  }
  mark = strchr(url, '#');
  if (mark != NULL)
    *mark = '\0';
  mark = strchr(url, '?');
  if (mark != NULL) {
    *mark = '\0';
    exchange->query = mark + 1;
  }
  exchange->path = url;
}

/*
 * After http_server_reload_tls(), checks that the connection's client
 * certificate still verifies against the current CA and CRL: a keep-alive
 * connection can stay open for days, and revoking a device must cut it off
 * without waiting for it to reconnect. Returns 0, or -1 with the request
 * refused (403) and the refusal logged.
 */
static int conn_recheck_client_cert(struct http_conn *conn)
{
  const struct mbedtls_x509_crt *peer_cert;
  char reason[200];
  char subject[160];
  char quoted_reason[240];
  char quoted_subject[200];

  if (conn->tls == NULL)
    return 0;
  if (http__tls_conn_recheck(conn->tls, reason, sizeof(reason)) == HTTP__TLS_OK)
    return 0;
  peer_cert = http__tls_conn_peer_cert(conn->tls);
  if (peer_cert == NULL || mbedtls_x509_dn_gets(subject, sizeof(subject), &peer_cert->subject) < 0)
    snprintf(subject, sizeof(subject), "unknown");
  log_warn(HTTP_MOD, "client_cert_no_longer_valid", "peer=%s subject=%s reason=%s action=closed",
           conn->peer, log_quote(subject, quoted_subject, sizeof(quoted_subject)),
           log_quote(reason, quoted_reason, sizeof(quoted_reason)));
  if (conn->server->config.on_tls_refused)
    conn->server->config.on_tls_refused(http__tls_conn_refusal(conn->tls, 1),
                                        conn->server->handler_arg);
  conn_refuse(conn, 403, "the client certificate is no longer accepted: %s", reason);
  return -1;
}

static int on_message_complete(llhttp_t *parser)
{
  struct http_conn *conn = parser->data;
  struct http_exchange *exchange;

  assert(conn->exchange == NULL);
  conn->in_message = 0;
  /* Before the exchange exists: a refused request never reaches the handler. */
  if (conn_recheck_client_cert(conn) != 0)
    return -1;
  /* The URL always ends in a NUL (on_url_complete); the body gets one here. */
  if (conn->head.length == 0 || bytes_reserve(&conn->body, 1, SIZE_MAX) != 0) {
    conn_refuse(conn, 503, "out of memory for the request");
    return -1;
  }
  /* One exchange at a time: it lives in the connection's block, no allocation. */
  exchange = conn->slot;
  assert(exchange != NULL);
  conn->slot = NULL;
  memset(exchange, 0, sizeof(*exchange));
  /*
   * The request's buffers move to the exchange (the handler may keep it
   * past the next read); exchange_free() gives them back for the next one.
   */
  conn->body.data[conn->body.length] = '\0';
  exchange->body = conn->body.data;
  exchange->body_length = conn->body.length;
  exchange->body_capacity = conn->body.capacity;
  conn->body.data = NULL;
  conn->body.length = 0;
  conn->body.capacity = 0;
  exchange->head = conn->head.data;
  exchange->head_length = conn->head.length;
  exchange->head_capacity = conn->head.capacity;
  exchange->url_size = strnlen(conn->head.data, conn->head.length) + 1;
  exchange->header_count = conn->header_count;
  conn->head.data = NULL;
  conn->head.length = 0;
  conn->head.capacity = 0;
  exchange->method = llhttp_method_name((llhttp_method_t)parser->method);
  exchange->head_request = parser->method == HTTP_HEAD;
  /* Must be read here: llhttp clears the flags once this callback returns. */
  exchange->keep_alive = llhttp_should_keep_alive(parser);
  exchange_split_url(exchange);
  memcpy(exchange->peer, conn->peer, sizeof(exchange->peer));
  exchange->conn = conn;
  conn->refs++;
  conn->exchange = exchange;
  /* The request timeout does not run while the handler works. */
  conn_disarm(conn);
  return HPE_PAUSED;
}

/*
 * Runs the parser over `data`, handing each complete request to the
 * handler. Stops early when an exchange is pending or the connection stops
 * being OPEN. Returns how many bytes were consumed.
 */
static size_t conn_feed(struct http_conn *conn, const char *data, size_t length)
{
  struct http_server *server = conn->server;
  size_t offset = 0;
  llhttp_errno_t err;
  const char *reason;
  char error[300];

  assert(conn->state == CONN_OPEN && conn->exchange == NULL);
  conn->in_feed++;
  while (offset < length && conn->state == CONN_OPEN && conn->exchange == NULL) {
    err = llhttp_execute(&conn->parser, data + offset, length - offset);
    if (err == HPE_OK) {
      offset = length;
      break;
    }
    if (err == HPE_PAUSED && conn->exchange != NULL) {
      offset = (size_t)(llhttp_get_error_pos(&conn->parser) - data);
      /*
       * The handler may respond right here; then conn_next_request()
       * resumes the parser and this loop carries on with the next
       * pipelined request, without recursing.
       */
      server->handler(conn->exchange, server->handler_arg);
      continue;
    }
    offset = length;
    if (conn->state != CONN_OPEN)
      break;
    if (conn->reject_status != 0) {
      conn_reject(conn, conn->reject_status, conn->reject_error, conn->reject_extra);
    } else {
      reason = llhttp_get_error_reason(&conn->parser);
      snprintf(error, sizeof(error), "malformed HTTP request: %s (%s)",
               reason ? reason : "unknown error", llhttp_errno_name(err));
      conn_reject(conn, 400, error, NULL);
    }
  }
  conn->in_feed--;
  return offset;
}

/* After a keep-alive response: ready the parser for the next request. */
static void conn_next_request(struct http_conn *conn)
{
  assert(conn->state == CONN_OPEN && conn->exchange == NULL);
  conn->reject_status = 0;
  conn->reject_extra = NULL;
  conn->in_message = 0;
  llhttp_resume(&conn->parser);
  if (conn->server->config.idle_timeout_ms > HTTP_SHED_MS)
    conn_arm(conn, TIMER_SHED, HTTP_SHED_MS);
  else
    conn_arm(conn, TIMER_IDLE, conn->server->config.idle_timeout_ms);
  conn_pump(conn);
  /* A keep-alive connection mostly waits: it keeps no empty read buffer meanwhile. */
  if (conn->tls)
    http__tls_conn_trim(conn->tls);
}

/*
 * Stashes bytes that cannot be parsed yet (plain HTTP). Returns 0, or -1
 * (out of memory, or over the cap, which conn_update_reading() prevents).
 */
static int conn_stash(struct http_conn *conn, const char *data, size_t length)
{
  size_t unparsed = conn->stash.length - conn->stash_offset;

  /*
   * Drop the bytes already parsed first. A client pipelining large
   * requests may never let the stash run empty, so without this the
   * parsed bytes would pile up in front and count against the cap below.
   */
  if (conn->stash_offset > 0) {
    if (unparsed > 0)
      memmove(conn->stash.data, conn->stash.data + conn->stash_offset, unparsed);
    conn->stash.length = unparsed;
    conn->stash_offset = 0;
  }
  /*
   * Reading stops once HTTP_STASH_LIMIT bytes are unparsed, so one more
   * read is the most that can arrive on top of them.
   */
  return bytes_append(&conn->stash, data, length, HTTP_STASH_LIMIT + HTTP_READ_BUF_SIZE);
}

/*
 * Parses what is stashed (and, for TLS, decrypts what is buffered) until an
 * exchange is pending, input runs out or the connection stops being OPEN;
 * then starts or stops reading to match. A no-op while the parser is
 * already on the stack for this connection.
 */
static void conn_pump(struct http_conn *conn)
{
  char reason[200];
  size_t consumed;
  int got;

  if (conn->in_feed || conn->pumping)
    return;
  conn->pumping = 1;
  while (conn->state == CONN_OPEN && conn->exchange == NULL) {
    if (conn->stash_offset < conn->stash.length) {
      consumed = conn_feed(conn, conn->stash.data + conn->stash_offset,
                           conn->stash.length - conn->stash_offset);
      conn->stash_offset += consumed;
      if (conn->stash_offset == conn->stash.length) {
        conn->stash.length = 0;
        conn->stash_offset = 0;
        if (conn->tls == NULL)
          bytes_free(&conn->stash);
      }
      continue;
    }
    if (conn->tls == NULL)
      break;
    /* The stash is empty: decrypt the next record into it. */
    if (bytes_reserve(&conn->stash, HTTP_TLS_PLAIN_CHUNK, HTTP_TLS_PLAIN_CHUNK) != 0) {
      conn_close(conn);
      break;
    }
    got = http__tls_conn_read(conn->tls, conn->stash.data, HTTP_TLS_PLAIN_CHUNK, reason,
                              sizeof(reason));
    if (got > 0) {
      conn->stash.length = (size_t)got;
      conn->stash_offset = 0;
      continue;
    }
    if (got == HTTP__TLS_WANT_READ)
      break;
    if (got == HTTP__TLS_CLOSED) {
      conn->peer_eof = 1;
      if (conn->in_message)
        conn_close(conn);
      else
        conn_finish(conn);
      break;
    }
    log_warn(HTTP_MOD, "tls_read_failed", "peer=%s reason=\"%s\"", conn->peer, reason);
    conn_close(conn);
  }
  conn->pumping = 0;
  conn_update_reading(conn);
}

/* Reads while there is room to buffer and a reason to read. */
static void conn_update_reading(struct http_conn *conn)
{
  size_t buffered = conn->stash.length - conn->stash_offset;
  int want = 0;
  int rc;

  if (conn->state == CONN_CLOSED)
    return;
  if (conn->tls != NULL && conn->hs == NULL)
    buffered += http__tls_conn_buffered(conn->tls);
  switch (conn->state) {
  case CONN_HANDSHAKE:
    /* Not while a worker has the session: what it reads must not change under it. */
    want = !conn->peer_eof && conn->hs == NULL && buffered < HTTP_STASH_LIMIT &&
           conn->tcp.write_queue_size < HTTP_WRITE_QUEUE_LIMIT;
    break;
  case CONN_OPEN:
    /*
     * While an exchange is pending we still read (up to the stash limit)
     * so that a client hanging up is noticed; we do not parse.
     */
    want = !conn->peer_eof && buffered < HTTP_STASH_LIMIT &&
           conn->tcp.write_queue_size < HTTP_WRITE_QUEUE_LIMIT;
    break;
  case CONN_LINGER:
    want = !conn->peer_eof;
    break;
  case CONN_DRAINING:
  case CONN_CLOSED:
    want = 0;
    break;
  }
  if (want && !conn->reading) {
    rc = uv_read_start((uv_stream_t *)&conn->tcp, conn_on_alloc, conn_on_read);
    if (rc != 0) {
      log_debug(HTTP_MOD, "read_failed", "peer=%s error=%s", conn->peer, uv_err_name(rc));
      conn_close(conn);
      return;
    }
    conn->reading = 1;
  } else if (!want && conn->reading) {
    uv_read_stop((uv_stream_t *)&conn->tcp);
    conn->reading = 0;
  }
}

/* ---- reading ----------------------------------------------------------- */

static void conn_on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
  struct http_conn *conn = handle->data;

  (void)suggested;
  /* Each read is consumed (parsed, stashed or decrypted) before the next alloc. */
  *buf = uv_buf_init(conn->server->read_buf, sizeof(conn->server->read_buf));
}

/* The client sent FIN (or close_notify). */
static void conn_on_eof(struct http_conn *conn)
{
  conn->peer_eof = 1;
  switch (conn->state) {
  case CONN_OPEN:
    if (conn->exchange != NULL) {
      /* The handler is still working: its respond becomes a no-op. */
      log_info(HTTP_MOD, "client_gone", "peer=%s pending=%s", conn->peer, conn->exchange->path);
      conn_close(conn);
    } else if (conn->in_message || conn->stash_offset < conn->stash.length) {
      log_debug(HTTP_MOD, "client_gone", "peer=%s partial_request=1", conn->peer);
      conn_close(conn);
    } else {
      /* Flush what is queued, then close. */
      conn_finish(conn);
    }
    break;
  case CONN_HANDSHAKE:
  case CONN_DRAINING:
  case CONN_LINGER:
  case CONN_CLOSED:
    conn_close(conn);
    break;
  }
}

/* Ends a step: the connection is the loop's again. */
static void step_free(struct http_hs_step *step)
{
  struct http_conn *conn = step->conn;

  conn->hs = NULL;
  bytes_free(&step->out);
  free(step);
  conn_unref(conn);
}

/*
 * What a handshake step left: its records written, then the connection
 * reads on (the step wants more), fails (logged, counted, drained so that
 * the alert reaches the client) or is open for requests. Loop thread.
 */
static void conn_handshake_stepped(struct http_conn *conn, const struct http_hs_step *step)
{
  struct http_write *write_req;
  char quoted[760];

  assert(conn->hs == NULL);
  if (conn->state == CONN_CLOSED)
    return;
  if (step->out.length > 0) {
    write_req = write_alloc(conn, step->out.length);
    if (write_req == NULL) {
      conn_close(conn);
      return;
    }
    memcpy(write_req->data, step->out.data, step->out.length);
    if (conn_submit(conn, write_req) != 0) {
      conn_close(conn);
      return;
    }
  }
  if (step->rc == HTTP__TLS_WANT_READ) {
    conn_update_reading(conn);
    return;
  }
  if (step->rc != HTTP__TLS_OK) {
    log_warn(HTTP_MOD, "tls_handshake_failed", "peer=%s reason=%s", conn->peer,
             log_quote(step->reason, quoted, sizeof(quoted)));
    if (conn->server->config.on_tls_refused)
      conn->server->config.on_tls_refused(http__tls_conn_refusal(conn->tls, 0),
                                          conn->server->handler_arg);
    /* Drain so that mbedTLS's alert reaches the client before we close. */
    conn_finish(conn);
    return;
  }
  if (conn->server->config.on_tls_handshake)
    conn->server->config.on_tls_handshake(http__tls_conn_resumed(conn->tls),
                                          conn->server->handler_arg);
  /* TIMER_FIRST keeps running: the first request's headers are still to come. */
  conn->state = CONN_OPEN;
  conn_pump(conn); /* a resuming client may have sent its request with its Finished */
}

/* mbedTLS with the ciphertext buffered so far. Any thread. */
static void step_run(struct http_hs_step *step)
{
  uint64_t start = uv_hrtime();

  step->rc = http__tls_conn_handshake(step->conn->tls, step->reason, sizeof(step->reason));
  step->cost_ns = uv_hrtime() - start;
}

static void step_on_work(uv_work_t *req) { step_run(req->data); }

/* Takes the step off the connection, acts on it, frees it. Loop thread. */
static void step_done(struct http_hs_step *step)
{
  step->conn->hs = NULL;
  conn_handshake_stepped(step->conn, step);
  step_free(step); /* drops the step's reference to the connection last */
}

static void step_on_worked(uv_work_t *req, int status);

/* Puts waiting steps on the thread pool while fewer than handshake_threads run. */
static void server_start_handshakes(struct http_server *server)
{
  struct http_hs_step *step;
  int rc;

  while (server->hs_running < server->config.handshake_threads && server->hs_waiting != NULL) {
    step = server->hs_waiting;
    server->hs_waiting = step->next;
    server->hs_waiting_count--;
    if (server->hs_waiting == NULL)
      server->hs_waiting_tail = NULL;
    if (server->hs_waiting_cont_tail == step)
      server->hs_waiting_cont_tail = NULL;
    if (step->conn->state == CONN_CLOSED) {
      step_free(step);
      continue;
    }
    rc = uv_queue_work(server->loop, &step->work, step_on_work, step_on_worked);
    if (rc != 0) {
      log_error(HTTP_MOD, "tls_handshake_failed", "peer=%s reason=\"thread pool: %s\"",
                step->conn->peer, uv_strerror(rc));
      conn_close(step->conn);
      step_free(step);
      continue;
    }
    server->hs_running++;
  }
}

static void step_on_worked(uv_work_t *req, int status)
{
  struct http_hs_step *step = req->data;
  struct http_server *server = step->server;

  (void)status; /* never cancelled: nothing calls uv_cancel() */
  assert(server->hs_running > 0);
  server->hs_running--;
  /* An average over the last few dozen steps: resumed ones are cheap, full ones not. */
  if (server->hs_step_us == 0)
    server->hs_step_us = HTTP_HS_STEP_GUESS_US;
  server->hs_step_us = (server->hs_step_us * 31 + step->cost_ns / 1000) / 32;
  step_done(step);
  server_start_handshakes(server);
  server_maybe_free(server);
}

/*
 * Ciphertext came during the handshake: a step runs at once on the loop
 * (handshake_threads 0) or on a pool thread, where a full handshake's 8 ms
 * of mbedTLS arithmetic holds up no other connection and a crowd's
 * handshakes use every core. Steps wait their turn, those of handshakes
 * under way before first steps; the connection is not read meanwhile.
 */
static void conn_on_handshake_data(struct http_conn *conn)
{
  struct http_server *server = conn->server;
  struct http_hs_step *step;

  assert(conn->state == CONN_HANDSHAKE && conn->hs == NULL);
  step = calloc(1, sizeof(*step));
  if (step == NULL) {
    log_error(HTTP_MOD, "tls_handshake_failed", "peer=%s reason=\"out of memory\"", conn->peer);
    conn_close(conn);
    return;
  }
  step->work.data = step;
  step->conn = conn;
  step->server = server;
  conn->refs++;
  conn->hs = step;
  if (server->config.handshake_threads == 0) {
    conn->hs_steps++;
    step_run(step);
    step_done(step);
    return;
  }
  if (conn->hs_steps++ > 0) {
    /* A handshake under way goes before the first steps: finishing one is worth more than
     * starting another whose client may give up waiting. */
    struct http_hs_step **at =
        server->hs_waiting_cont_tail ? &server->hs_waiting_cont_tail->next : &server->hs_waiting;
    step->next = *at;
    *at = step;
    server->hs_waiting_cont_tail = step;
    if (step->next == NULL)
      server->hs_waiting_tail = step;
  } else {
    if (server->hs_waiting_tail != NULL)
      server->hs_waiting_tail->next = step;
    else
      server->hs_waiting = step;
    server->hs_waiting_tail = step;
  }
  server->hs_waiting_count++;
  server_start_handshakes(server);
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
  struct http_conn *conn = stream->data;
  size_t length = nread > 0 ? (size_t)nread : 0;
  size_t consumed;

  if (nread == 0 || conn->state == CONN_CLOSED)
    return;
  if (nread < 0) {
    if (nread != UV_EOF)
      log_debug(HTTP_MOD, "read_failed", "peer=%s error=%s", conn->peer, uv_err_name((int)nread));
    conn_on_eof(conn);
    return;
  }
  if (conn->state == CONN_LINGER || conn->state == CONN_DRAINING)
    return; /* discarded: we are closing and will not parse it */

  if (conn->tls != NULL) {
    assert(conn->hs == NULL); /* not read while a step has the session */
    if (http__tls_conn_feed(conn->tls, buf->base, length) != 0) {
      log_warn(HTTP_MOD, "tls_buffer_full", "peer=%s buffered=%zu", conn->peer,
               http__tls_conn_buffered(conn->tls));
      conn_close(conn);
      return;
    }
    if (conn->state == CONN_HANDSHAKE)
      conn_on_handshake_data(conn);
    if (conn->state == CONN_OPEN)
      conn_pump(conn);
    else
      conn_update_reading(conn);
    return;
  }

  /* Plain HTTP: parse straight from the read buffer when nothing is waiting. */
  consumed = 0;
  if (conn->exchange == NULL && conn->stash_offset == conn->stash.length)
    consumed = conn_feed(conn, buf->base, length);
  if (conn->state == CONN_OPEN && consumed < length &&
      conn_stash(conn, buf->base + consumed, length - consumed) != 0) {
    log_warn(HTTP_MOD, "stash_failed", "peer=%s bytes=%zu", conn->peer, length - consumed);
    conn_close(conn);
    return;
  }
  conn_pump(conn);
}

/*
 * A new connection did not get its first request's headers in within
 * first_request_timeout_ms: a half-sent request is told so (408); a
 * connection that sent nothing, or stalled in the TLS handshake, is closed.
 */
static void conn_on_first_request_timeout(struct http_conn *conn)
{
  const struct http_server_config *config = &conn->server->config;
  char error[200];

  if (conn->state == CONN_OPEN && conn->exchange == NULL && conn->in_message) {
    snprintf(error, sizeof(error),
             "request headers not received within first_request_timeout_ms (%" PRIu64
             " ms) of connecting",
             config->first_request_timeout_ms);
    conn_reject(conn, 408, error, NULL);
    return;
  }
  log_debug(HTTP_MOD, "first_request_timeout",
            "peer=%s state=%s first_request_timeout_ms=%" PRIu64 " action=closed", conn->peer,
            conn->state == CONN_HANDSHAKE ? "tls_handshake" : "no_request",
            config->first_request_timeout_ms);
  conn_close(conn);
}

/*
 * A keep-alive connection that has waited HTTP_SHED_MS for its next request
 * keeps nothing it does not need while it waits, which is most of its life
 * (a store sends a batch every few minutes): the buffers a request burst
 * reuses (up to 16 KiB each: head, body, plaintext, response) are freed,
 * and the pages of mbedTLS's record buffers given back. Between two
 * requests of a burst they stay, with no malloc per request.
 */
static void conn_shed(struct http_conn *conn)
{
  if (conn->state != CONN_OPEN || conn->exchange != NULL || conn->in_message ||
      conn->stash_offset != conn->stash.length)
    return;
  bytes_free(&conn->head);
  bytes_free(&conn->body);
  bytes_free(&conn->stash);
  conn->stash_offset = 0;
  bytes_free(&conn->view_head);
  free(conn->spare_write);
  conn->spare_write = NULL;
  if (conn->tls != NULL) {
    http__tls_conn_trim(conn->tls);
    http__tls_conn_idle(conn->tls);
  }
}

static void conn_on_timer(uv_timer_t *timer)
{
  struct http_conn *conn = timer->data;
  const struct http_server_config *config = &conn->server->config;
  enum conn_timer kind = conn->timer_kind;
  char error[160];

  conn->timer_kind = TIMER_NONE;
  switch (kind) {
  case TIMER_FIRST:
    conn_on_first_request_timeout(conn);
    break;
  case TIMER_SHED:
    conn_shed(conn);
    conn_arm(conn, TIMER_IDLE, config->idle_timeout_ms - HTTP_SHED_MS);
    break;
  case TIMER_IDLE:
    log_debug(HTTP_MOD, "idle_timeout", "peer=%s idle_timeout_ms=%" PRIu64, conn->peer,
              config->idle_timeout_ms);
    conn_close(conn);
    break;
  case TIMER_REQUEST:
    if (conn->state == CONN_OPEN && conn->exchange == NULL) {
      snprintf(error, sizeof(error),
               "request not received within request_timeout_ms (%" PRIu64 " ms)",
               config->request_timeout_ms);
      conn_reject(conn, 408, error, NULL);
    } else {
      log_warn(HTTP_MOD, "tls_handshake_timeout", "peer=%s request_timeout_ms=%" PRIu64,
               conn->peer, config->request_timeout_ms);
      conn_close(conn);
    }
    break;
  case TIMER_DRAIN:
    log_info(HTTP_MOD, "write_timeout", "peer=%s unsent_writes=%u", conn->peer,
             conn->writes_pending);
    conn_close(conn);
    break;
  case TIMER_LINGER:
  case TIMER_NONE:
    conn_close(conn);
    break;
  }
}

/* ---- accepting ---------------------------------------------------------- */

/*
 * Logs a refused connection with the counts, at most once per
 * HTTP_REFUSAL_LOG_INTERVAL_MS: under a flood one line a second says how
 * many were refused since the last.
 */
static void server_log_refusal(struct http_server *server, const struct http_conn *conn,
                               const char *why, unsigned same_ip)
{
  uint64_t now = uv_now(server->loop);

  if (server->refusal_logged_ms != 0 &&
      now - server->refusal_logged_ms < HTTP_REFUSAL_LOG_INTERVAL_MS) {
    server->refusals_unlogged++;
    return;
  }
  log_warn(HTTP_MOD, "connection_refused",
           "peer=%s reason=%s active=%u max_connections=%u from_this_ip=%u "
           "max_connections_per_ip=%u refused_unlogged=%u tls=%s",
           conn->peer, why, server->active_conns, server->config.max_connections, same_ip,
           server->config.max_connections_per_ip, server->refusals_unlogged,
           server->tls != NULL ? "on" : "off");
  server->refusal_logged_ms = now;
  server->refusals_unlogged = 0;
}

/*
 * Refuses a connection just accepted (not counted). Plain HTTP gets an
 * answer before any request is read, so the client knows to come back
 * rather than seeing a bare reset; over TLS nothing can be said before a
 * handshake, which is exactly the work being refused, so it is closed.
 */
static void server_refuse(struct http_server *server, struct http_conn *conn, int status,
                          const char *error)
{
  char body[256];
  int length;

  if (server->tls != NULL) {
    conn_close(conn);
    return;
  }
  length = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", error);
  if (length < 0 || (size_t)length >= sizeof(body) ||
      conn_send_response(conn, status, "application/json", "Retry-After: 1\r\n", body,
                         (size_t)length, 0, 0) != 0) {
    conn_close(conn);
    return;
  }
  conn_finish(conn);
}

/*
 * Decides whether a just-accepted connection may stay. Over
 * max_connections_per_ip it is refused (429); over max_connections the
 * oldest connection that has not yet sent its first request's headers is
 * closed to make room, and only when there is none is the new one refused
 * (503). Returns 0 when admitted, -1 when refused (handled and logged).
 */
static int server_admit(struct http_server *server, struct http_conn *conn)
{
  struct http_conn *oldest_unproven = NULL;
  unsigned same_ip = 0;
  char quoted[80];

  /* The list is newest first, so the last unproven one seen is the oldest. */
  for (struct http_conn *other = server->conns; other != NULL; other = other->next) {
    if (other == conn || !other->counted)
      continue;
    if (strcmp(other->peer_ip, conn->peer_ip) == 0)
      same_ip++;
    if (other->unproven && other->exchange == NULL)
      oldest_unproven = other;
  }
  if (server->config.max_connections_per_ip > 0 &&
      same_ip >= server->config.max_connections_per_ip) {
    server_log_refusal(server, conn, "max_connections_per_ip", same_ip);
    server_refuse(server, conn, 429,
                  "too many connections from your address; retry after closing some");
    return -1;
  }
  if (server->active_conns < server->config.max_connections)
    return 0;
  if (oldest_unproven == NULL) {
    server_log_refusal(server, conn, "max_connections", same_ip);
    server_refuse(server, conn, 503, "the server is at max_connections; retry shortly");
    return -1;
  }
  /* Debug only: under a flood of idle sockets this happens once per connection. */
  log_debug(HTTP_MOD, "unproven_connection_evicted", "peer=%s for=%s active=%u",
            oldest_unproven->peer, log_quote(conn->peer, quoted, sizeof(quoted)),
            server->active_conns);
  conn_close(oldest_unproven);
  return 0;
}

/*
 * Over TLS with handshake threads: a new connection is closed at once while
 * the handshakes waiting for a thread would take longer than
 * handshake_backlog_ms to get one. A crowd arriving faster than the cores
 * can shake hands would otherwise wait ever longer, give up unanswered after
 * the collector spent its CPU on them, and come back at once to do it again;
 * closed before any work, they come back after their backoff, and those
 * admitted are answered in time. Logged at most once a second, with the
 * count. Returns 0 when admitted, -1 when closed.
 */
static int server_admit_handshake(struct http_server *server, struct http_conn *conn)
{
  uint64_t backlog_ms = server->config.handshake_backlog_ms ? server->config.handshake_backlog_ms
                                                            : HTTP_HS_BACKLOG_MS;
  uint64_t step_us = server->hs_step_us ? server->hs_step_us : HTTP_HS_STEP_GUESS_US;
  uint64_t now = uv_now(server->loop);
  uint64_t wait_ms;

  if (server->tls == NULL || server->config.handshake_threads == 0)
    return 0;
  wait_ms = (uint64_t)server->hs_waiting_count * step_us / 1000 / server->config.handshake_threads;
  if (wait_ms <= backlog_ms)
    return 0;
  if (server->hs_busy_ms != 0 && now - server->hs_busy_ms < HTTP_REFUSAL_LOG_INTERVAL_MS) {
    server->hs_busy_unlogged++;
  } else {
    log_warn(HTTP_MOD, "connection_refused",
             "peer=%s reason=handshake_backlog waiting=%u step_us=%" PRIu64 " wait_ms=%" PRIu64
             " handshake_backlog_ms=%" PRIu64 " refused_unlogged=%u "
             "action=\"closed before its handshake; the client comes back after its backoff\"",
             conn->peer, server->hs_waiting_count, step_us, wait_ms, backlog_ms,
             server->hs_busy_unlogged);
    server->hs_busy_ms = now;
    server->hs_busy_unlogged = 0;
  }
  if (server->config.on_tls_refused)
    server->config.on_tls_refused("busy", server->handler_arg);
  conn_close(conn);
  return -1;
}

static void server_on_connection(uv_stream_t *listener, int status)
{
  struct http_server *server = listener->data;
  struct http_conn_block *block;
  struct http_conn *conn;
  struct sockaddr_storage addr;
  int addr_len = (int)sizeof(addr);
  char err[200];
  int rc;

  if (status < 0) {
    log_warn(HTTP_MOD, "accept_failed", "addr=%s:%d error=%s", server->listen_host,
             server->port, uv_strerror(status));
    return;
  }
  block = calloc(1, sizeof(*block));
  if (block == NULL) {
    log_error(HTTP_MOD, "accept_failed", "addr=%s:%d error=\"out of memory\"",
              server->listen_host, server->port);
    return;
  }
  conn = &block->conn;
  conn->slot = &block->exchange_slot;
  rc = uv_tcp_init(server->loop, &conn->tcp);
  if (rc != 0) {
    log_error(HTTP_MOD, "accept_failed", "addr=%s:%d error=%s", server->listen_host,
              server->port, uv_strerror(rc));
    free(conn);
    return;
  }
  uv_timer_init(server->loop, &conn->timer);
  conn->tcp.data = conn;
  conn->timer.data = conn;
  conn->handles_open = 2;
  conn->refs = 1;
  conn->server = server;
  conn->state = CONN_OPEN;
  snprintf(conn->peer, sizeof(conn->peer), "unknown");
  conn->next = server->conns;
  if (server->conns != NULL)
    server->conns->prev = conn;
  server->conns = conn;

  rc = uv_accept(listener, (uv_stream_t *)&conn->tcp);
  if (rc != 0) {
    log_warn(HTTP_MOD, "accept_failed", "addr=%s:%d error=%s", server->listen_host,
             server->port, uv_strerror(rc));
    conn_close(conn);
    return;
  }
  if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&addr, &addr_len) == 0)
    format_peer(&addr, conn->peer, sizeof(conn->peer), conn->peer_ip);
  if (server_admit(server, conn) != 0 || server_admit_handshake(server, conn) != 0)
    return;
  conn->counted = 1;
  conn->unproven = 1;
  server->active_conns++;
  (void)uv_tcp_nodelay(&conn->tcp, 1);
  llhttp_init(&conn->parser, HTTP_REQUEST, &server->settings);
  conn->parser.data = conn;
  if (server->tls != NULL) {
    conn->tls = http__tls_conn_create(server->tls, conn_send_ciphertext, conn, err, sizeof(err));
    if (conn->tls == NULL) {
      log_error(HTTP_MOD, "accept_failed", "peer=%s error=\"%s\"", conn->peer, err);
      conn_close(conn);
      return;
    }
    conn->state = CONN_HANDSHAKE;
  }
  conn_arm(conn, TIMER_FIRST, server->config.first_request_timeout_ms);
  conn_update_reading(conn);
}

/* ---- public API --------------------------------------------------------- */

static int server_check_config(const struct http_server_config *config, char *err,
                               size_t err_size)
{
  int rc = -1;

  if (config->listen_host == NULL || config->listen_host[0] == '\0') {
    snprintf(err, err_size, "http server: listen_host is empty; give an IP such as 127.0.0.1");
    goto out;
  }
  if (strlen(config->listen_host) >= sizeof(((struct http_server *)0)->listen_host)) {
    snprintf(err, err_size, "http server: listen_host \"%.40s...\" is too long for an IP address",
             config->listen_host);
    goto out;
  }
  if (config->port < 0 || config->port > 65535) {
    snprintf(err, err_size, "http server: port %d is out of range (0-65535)", config->port);
    goto out;
  }
  if (config->max_header_bytes < 64 || config->max_header_bytes > (size_t)64 * 1024 * 1024) {
    snprintf(err, err_size, "http server: max_header_bytes %zu is out of range (64 to 64 MiB)",
             config->max_header_bytes);
    goto out;
  }
  if (config->max_body_bytes == 0 || config->max_body_bytes > HTTP_MAX_RESPONSE_BODY) {
    snprintf(err, err_size, "http server: max_body_bytes %zu is out of range (1 to 1 GiB)",
             config->max_body_bytes);
    goto out;
  }
  if (config->idle_timeout_ms == 0 || config->request_timeout_ms == 0) {
    snprintf(err, err_size,
             "http server: idle_timeout_ms (%" PRIu64 ") and request_timeout_ms (%" PRIu64
             ") must both be above 0",
             config->idle_timeout_ms, config->request_timeout_ms);
    goto out;
  }
  if (config->max_connections == 0) {
    snprintf(err, err_size, "http server: max_connections must be at least 1");
    goto out;
  }
  if (config->first_request_timeout_ms > config->request_timeout_ms) {
    snprintf(err, err_size,
             "http server: first_request_timeout_ms (%" PRIu64
             ") is above request_timeout_ms (%" PRIu64 "); it is meant to be the shorter one",
             config->first_request_timeout_ms, config->request_timeout_ms);
    goto out;
  }
  rc = 0;
out:
  return rc;
}

/* Binds and listens with plain sockets so a failure leaves no libuv handle behind. */
static int server_bind(struct http_server *server, int *fd_out, char *err, size_t err_size)
{
  struct sockaddr_storage addr;
  socklen_t addr_len;
  int fd = -1;
  int one = 1;
  int parse_rc;
  int saved_errno;
  int rc = -1;

  memset(&addr, 0, sizeof(addr));
  if (strchr(server->listen_host, ':') != NULL) {
    parse_rc = uv_ip6_addr(server->listen_host, server->config.port,
                           (struct sockaddr_in6 *)&addr);
    addr_len = sizeof(struct sockaddr_in6);
  } else {
    parse_rc = uv_ip4_addr(server->listen_host, server->config.port,
                           (struct sockaddr_in *)&addr);
    addr_len = sizeof(struct sockaddr_in);
  }
  if (parse_rc != 0) {
    snprintf(err, err_size,
             "listen %s:%d: listen_host is not a numeric IPv4 or IPv6 address (names are not "
             "resolved); use e.g. 127.0.0.1, 0.0.0.0 or ::1",
             server->listen_host, server->config.port);
    goto out;
  }
  fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, err_size, "listen %s:%d: socket: %s", server->listen_host,
             server->config.port, strerror(errno));
    goto out;
  }
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, (struct sockaddr *)&addr, addr_len) != 0) {
    saved_errno = errno;
    snprintf(err, err_size, "listen %s:%d: %s%s", server->listen_host, server->config.port,
             strerror(saved_errno),
             saved_errno == EADDRINUSE
                 ? "; is another process (or another instance) on this port?"
                 : "");
    goto out;
  }
  if (listen(fd, HTTP_LISTEN_BACKLOG) != 0) {
    snprintf(err, err_size, "listen %s:%d: %s", server->listen_host, server->config.port,
             strerror(errno));
    goto out;
  }
  addr_len = sizeof(addr);
  if (getsockname(fd, (struct sockaddr *)&addr, &addr_len) != 0) {
    snprintf(err, err_size, "listen %s:%d: getsockname: %s", server->listen_host,
             server->config.port, strerror(errno));
    goto out;
  }
  server->port = addr.ss_family == AF_INET6
                     ? ntohs(((struct sockaddr_in6 *)&addr)->sin6_port)
                     : ntohs(((struct sockaddr_in *)&addr)->sin_port);
  *fd_out = fd;
  fd = -1;
  rc = 0;
out:
  if (fd >= 0)
    close(fd);
  return rc;
}

static void server_on_listener_closed(uv_handle_t *handle)
{
  struct http_server *server = handle->data;

  server->listener_open = 0;
  server_maybe_free(server);
}

/*
 * Creates the server and starts accepting. See http_server.h. `config` is
 * borrowed (copied, with its TLS file names); `handler_arg` is borrowed
 * for the server's life. `listen_host` must be a numeric address. Call on
 * the loop's thread, before or while the loop runs. In the rare case that
 * libuv refuses the bound socket after the listener handle exists, NULL is
 * returned and the half-built server is freed once the loop runs.
 */
http_server *http_server_create(uv_loop_t *loop, const struct http_server_config *config,
                                http_handler_fn handler, void *handler_arg, char *err,
                                size_t err_size)
{
  struct http_server *server = NULL;
  http_server *result = NULL;
  int fd = -1;
  int rc;

  if (loop == NULL || config == NULL || handler == NULL) {
    snprintf(err, err_size, "http server: loop, config and handler are required");
    goto out;
  }
  if (server_check_config(config, err, err_size) != 0)
    goto out;
  server = calloc(1, sizeof(*server));
  if (server == NULL) {
    snprintf(err, err_size, "http server: out of memory");
    goto out;
  }
  server->loop = loop;
  server->config = *config;
  server->config.tls = NULL;
  if (server->config.first_request_timeout_ms == 0)
    server->config.first_request_timeout_ms =
        config->request_timeout_ms < HTTP_FIRST_REQUEST_TIMEOUT_MS ? config->request_timeout_ms
                                                                   : HTTP_FIRST_REQUEST_TIMEOUT_MS;
  snprintf(server->listen_host, sizeof(server->listen_host), "%s", config->listen_host);
  server->config.listen_host = server->listen_host;
  server->handler = handler;
  server->handler_arg = handler_arg;

  llhttp_settings_init(&server->settings);
  server->settings.on_message_begin = on_message_begin;
  server->settings.on_method = on_method;
  server->settings.on_url = on_url;
  server->settings.on_url_complete = on_string_complete;
  server->settings.on_header_field = on_header_field;
  server->settings.on_header_field_complete = on_string_complete;
  server->settings.on_header_value = on_header_value;
  server->settings.on_header_value_complete = on_header_value_complete;
  server->settings.on_headers_complete = on_headers_complete;
  server->settings.on_body = on_body;
  server->settings.on_message_complete = on_message_complete;

  /* Certificates first: a bad file is the likelier mistake, and binds nothing. */
  if (config->tls != NULL) {
    server->tls = http__tls_create(config->tls, err, err_size);
    if (server->tls == NULL)
      goto out;
  }
  if (server_bind(server, &fd, err, err_size) != 0)
    goto out;
  rc = uv_tcp_init(loop, &server->listener);
  if (rc != 0) {
    snprintf(err, err_size, "listen %s:%d: uv_tcp_init: %s", server->listen_host, server->port,
             uv_strerror(rc));
    goto out;
  }
  server->listener.data = server;
  server->listener_open = 1;
  rc = uv_tcp_open(&server->listener, fd);
  if (rc == 0) {
    fd = -1; /* the handle owns it now */
    rc = uv_listen((uv_stream_t *)&server->listener, HTTP_LISTEN_BACKLOG, server_on_connection);
  }
  if (rc != 0) {
    snprintf(err, err_size, "listen %s:%d: %s", server->listen_host, server->port,
             uv_strerror(rc));
    /* The handle exists: it can only be freed from its close callback. */
    server->closing = 1;
    uv_close((uv_handle_t *)&server->listener, server_on_listener_closed);
    server = NULL;
    goto out;
  }
  log_info(HTTP_MOD, "listening", "addr=%s:%d tls=%s client_cert=%s", server->listen_host,
           server->port, config->tls ? "on" : "off",
           config->tls == NULL || config->tls->ca_file == NULL ? "none"
           : config->tls->require_client_cert                  ? "required"
                                                               : "optional");
  result = server;
  server = NULL;
out:
  if (fd >= 0)
    close(fd);
  if (server != NULL) {
    http__tls_release(server->tls);
    free(server);
  }
  return result;
}

/* The bound port. Any thread once created (it never changes). */
int http_server_port(const http_server *server)
{
  return server != NULL ? server->port : -1;
}

/*
 * Swaps in a freshly read CA/CRL: new handshakes use it, and open
 * connections have their client certificate re-checked against it on their
 * next request (conn_recheck_client_cert). See http_server.h. Loop thread.
 */
void http_server_tls_status(const http_server *server, struct http_tls_status *out)
{
  memset(out, 0, sizeof(*out));
  if (server != NULL && server->tls != NULL)
    http__tls_status(server->tls, out);
}

int http_server_reload_tls(http_server *server, char *err, size_t err_size)
{
  char quoted[512];
  int rc = -1;

  if (server == NULL || server->tls == NULL) {
    snprintf(err, err_size, "http server: TLS is not configured, nothing to reload");
    goto out;
  }
  if (server->closing) {
    snprintf(err, err_size, "http server: closing, not reloading TLS");
    goto out;
  }
  rc = http__tls_reload(server->tls, err, err_size);
  if (rc != 0) {
    log_warn(HTTP_MOD, "tls_reload_failed", "addr=%s:%d error=%s action=kept_old_files",
             server->listen_host, server->port, log_quote(err, quoted, sizeof(quoted)));
    goto out;
  }
  log_info(HTTP_MOD, "tls_reloaded", "addr=%s:%d", server->listen_host, server->port);
out:
  return rc;
}

/*
 * Closes the listener and every connection; frees the server from the last
 * close callback and then calls `closed_cb(arg)`. See http_server.h. A NULL
 * server, or a second call, does nothing (closed_cb is not called). Loop
 * thread; may be called from inside the handler.
 */
void http_server_close(http_server *server, void (*closed_cb)(void *arg), void *arg)
{
  struct http_hs_step *step;
  struct http_conn *conn;

  if (server == NULL || server->closing)
    return;
  server->closing = 1;
  server->closed_cb = closed_cb;
  server->closed_arg = arg;
  uv_close((uv_handle_t *)&server->listener, server_on_listener_closed);
  for (conn = server->conns; conn != NULL; conn = conn->next)
    conn_close(conn);
  /* Every connection is closed: the waiting handshake steps are dropped; the running ones
   * end on their own, and the server is freed after the last (server_maybe_free). */
  while ((step = server->hs_waiting) != NULL) {
    server->hs_waiting = step->next;
    step_free(step);
  }
  server->hs_waiting_tail = NULL;
  server->hs_waiting_cont_tail = NULL;
  server->hs_waiting_count = 0;
}

/* The request method, e.g. "GET". Borrowed for the exchange's life. */
const char *http_exchange_method(const http_exchange *exchange)
{
  return exchange->method;
}

/* The URL path without query or fragment. Borrowed for the exchange's life. */
const char *http_exchange_path(const http_exchange *exchange)
{
  return exchange->path;
}

/* The query string after '?', or "". Borrowed for the exchange's life. */
const char *http_exchange_query(const http_exchange *exchange)
{
  return exchange->query;
}

/* The first header called `name` (any case), or NULL. Borrowed for the exchange's life. */
const char *http_exchange_header(const http_exchange *exchange, const char *name)
{
  return head_find(exchange->head, exchange->head_length, exchange->url_size,
                   exchange->header_count, name);
}

/* The request body, NUL-terminated; `length` (may be NULL) gets its size. Borrowed. */
const char *http_exchange_body(const http_exchange *exchange, size_t *length)
{
  if (length != NULL)
    *length = exchange->body_length;
  return exchange->body;
}

/* The client's address as "ip:port" ("[ip6]:port"). Borrowed for the exchange's life. */
const char *http_exchange_peer(const http_exchange *exchange)
{
  return exchange->peer;
}

void http_exchange_close_after(http_exchange *exchange)
{
  if (exchange)
    exchange->keep_alive = 0;
}

/*
 * The client certificate, only when one was sent and verified; NULL for
 * plain HTTP. Borrowed: valid until the exchange is responded to, even if
 * the client has gone away.
 */
const struct mbedtls_x509_crt *http_exchange_peer_cert(const http_exchange *exchange)
{
  return exchange->conn->tls != NULL ? http__tls_conn_peer_cert(exchange->conn->tls) : NULL;
}

/* Checks what the handler passed; returns NULL or what is wrong with it. */
static const char *response_problem(int status, const char *content_type,
                                    const char *extra_headers, const void *body,
                                    size_t body_length)
{
  size_t extra_length;

  if (status < 200 || status > 599)
    return "status is outside 200-599";
  if (content_type != NULL && strpbrk(content_type, "\r\n") != NULL)
    return "content_type contains CR or LF";
  if (body == NULL && body_length > 0)
    return "body is NULL with a non-zero length";
  if (body_length > HTTP_MAX_RESPONSE_BODY)
    return "body is over 1 GiB";
  if (extra_headers != NULL) {
    extra_length = strlen(extra_headers);
    if (extra_length > 0 && (extra_length < 2 || extra_headers[extra_length - 2] != '\r' ||
                             extra_headers[extra_length - 1] != '\n'))
      return "extra_headers does not end in \\r\\n";
    if (strstr(extra_headers, "\r\n\r\n") != NULL || extra_headers[0] == '\r')
      return "extra_headers contains an empty line";
  }
  return NULL;
}

/*
 * Sends the response and frees `exchange` (taken). See http_server.h.
 * Returns 0 when queued; -1 when the client had gone (nothing sent) or
 * the response could not be queued (the connection is closed). A
 * malformed response (bad status, CR/LF in content_type, extra_headers
 * not ending in CRLF) is logged and replaced by a 500. Loop thread.
 */
int http_exchange_respond(http_exchange *exchange, int status, const char *content_type,
                          const char *extra_headers, const void *body, size_t body_length)
{
  struct http_conn *conn;
  const char *problem;
  char error_body[160];
  int keep_alive;
  int sent;
  int rc = -1;

  if (exchange == NULL)
    goto out;
  conn = exchange->conn;
  if (exchange->orphaned) {
    log_debug(HTTP_MOD, "response_dropped", "peer=%s status=%d reason=client_gone",
              exchange->peer, status);
    goto out;
  }
  assert(conn->exchange == exchange && conn->state == CONN_OPEN);
  conn->exchange = NULL;
  problem = response_problem(status, content_type, extra_headers, body, body_length);
  if (problem != NULL) {
    log_error(HTTP_MOD, "bad_response", "peer=%s path=%s status=%d problem=\"%s\"",
              exchange->peer, exchange->path, status, problem);
    status = 500;
    content_type = "application/json";
    extra_headers = NULL;
    body_length = (size_t)snprintf(error_body, sizeof(error_body),
                                   "{\"error\":\"internal error: bad response from handler\"}");
    body = error_body;
  }
  keep_alive = exchange->keep_alive && !conn->peer_eof && !conn->server->closing;
  sent = conn_send_response(conn, status, content_type, extra_headers, body, body_length,
                            keep_alive, exchange->head_request);
  /*
   * The response is copied out: the exchange ends before the next request
   * is parsed (conn_next_request may do it right away and needs its slot
   * and buffers). The connection is open, so its handles keep it alive.
   */
  exchange_free(exchange);
  exchange = NULL;
  if (sent != 0) {
    conn_close(conn);
    goto out;
  }
  if (keep_alive)
    conn_next_request(conn);
  else
    conn_finish(conn);
  rc = 0;
out:
  if (exchange != NULL)
    exchange_free(exchange);
  return rc;
}
