/*
 * http_server.h - an HTTP/1.1 server on a libuv loop, parsing with llhttp,
 * optionally over TLS (mbedTLS), optionally requiring client certificates.
 *
 * The server reads one whole request (headers and body, within the size
 * limits) and hands it to the program's handler as an exchange. An optional
 * on-headers hook judges each request on its headers first, so that a
 * request refused there (no token) never has its body read. The handler
 * answers at once or later (after a journal commit, a Kafka delivery report)
 * with http_exchange_respond(); until then the connection reads nothing
 * more (no pipelining), and the request timeout does not run. Keep-alive is
 * the default for HTTP/1.1; `Connection: close` and HTTP/1.0 are honoured.
 *
 * The server answers by itself, with a JSON body {"error": "..."} and then
 * closing the connection: 400 for malformed HTTP, 413 for a body over
 * max_body_bytes, 431 for headers over max_header_bytes, 408 when a request
 * takes longer than request_timeout_ms to arrive, 403 when a client
 * certificate stops verifying after http_server_reload_tls(). Idle keep-alive
 * connections are closed after idle_timeout_ms.
 *
 * A new connection must finish its TLS handshake and send its first
 * request's headers within first_request_timeout_ms, a deadline much shorter
 * than request_timeout_ms: a connection that never sends a byte is closed
 * then, and one that sent part of its headers gets 408. Until that first
 * request's headers are in, a connection is "unproven": when a new
 * connection would go over max_connections, the oldest unproven connection
 * is closed to make room, so idle sockets can delay a real client by at most
 * first_request_timeout_ms and usually not at all. A connection over
 * max_connections_per_ip (its source address already holds that many) or
 * over max_connections with no unproven one to close is refused: plain HTTP
 * gets 429 or 503 with Retry-After and a JSON reason, TLS (where nothing can
 * be said before a handshake) is closed; refusals are logged with the counts,
 * at most once a second.
 *
 * Threading: everything here runs on the loop's thread, including the
 * handler. http_exchange_respond() must be called on that thread too.
 */
#ifndef PLATFORM_HTTP_SERVER_H
#define PLATFORM_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

struct mbedtls_x509_crt;

struct http_tls_config {
  const char *cert_file;   /* PEM server certificate chain */
  const char *key_file;    /* PEM private key */
  const char *ca_file;     /* PEM CAs that client certificates must chain to; NULL = no client certs */
  const char *crl_file;    /* PEM CRL checked against client certificates; may be NULL */
  int require_client_cert; /* 1: handshake fails without a valid client certificate */
  /* 1: issue and accept TLS session tickets, so that a client reconnecting
   * resumes its session (no certificate or key exchange again). */
  int session_tickets;
  /* The secret ticket keys are derived from, shared by every instance a
   * client may reach (at least 32 random bytes, mode 600); NULL: drawn at
   * start, good on this process only. */
  const char *ticket_key_file;
  uint32_t ticket_lifetime_s; /* a ticket's life and its key's window; 0: the default */
};

/* A session ticket's lifetime unless configured: a store reconnects every 15 minutes. */
#define HTTP_TLS_TICKET_LIFETIME_DEFAULT_S (12u * 3600u)

typedef struct http_exchange http_exchange;

/* What an on-headers hook fills in to refuse a request. */
struct http_refusal {
  char error[300];           /* the {"error": ...} text: what is wrong and what to do */
  const char *extra_headers; /* NULL, or static header lines each ending in "\r\n" */
};

/*
 * Called on the loop thread as soon as a request's headers are complete,
 * before any of its body is read or buffered, with a view of the request:
 * method, path, query, headers, peer and client certificate work on it;
 * its body is empty; it must not be kept or responded to. Return 0 to read
 * the body and hand the request to the handler, or an HTTP status (400 to
 * 599) to refuse it: the server answers that status with {"error":
 * refusal->error} and refusal->extra_headers, and closes the connection
 * without reading the body (what the client still sends is discarded).
 * This is where a request is authenticated when its body is large and its
 * sender may be anyone: a refusal costs no more than the headers.
 */
typedef int (*http_headers_fn)(const http_exchange *request, void *handler_arg,
                               struct http_refusal *refusal);

struct http_server_config {
  const char *listen_host;     /* "127.0.0.1", "0.0.0.0", "::1" */
  int port;                    /* 0 = any free port; see http_server_port() */
  size_t max_header_bytes;     /* request line + headers */
  size_t max_body_bytes;
  uint64_t idle_timeout_ms;    /* keep-alive idle time before closing */
  uint64_t request_timeout_ms; /* from first byte to whole request read */
  unsigned max_connections;
  const struct http_tls_config *tls; /* NULL = plain HTTP; copied by create */
  /* From accept to the first request's headers, TLS handshake included;
   * 0 = the smaller of 10 s and request_timeout_ms. */
  uint64_t first_request_timeout_ms;
  unsigned max_connections_per_ip; /* 0 = no limit per source address */
  http_headers_fn on_headers;      /* NULL = every request's body is read; gets handler_arg */
  /* NULL, or called (with handler_arg) for each client refused for its TLS
   * handshake or, later, its certificate: `reason` is one of no_certificate,
   * expired, not_yet_valid, revoked, not_trusted, other_certificate,
   * handshake (not about the certificate), busy (see handshake_backlog_ms). For
   * counting; it is logged. */
  void (*on_tls_refused)(const char *reason, void *handler_arg);
  /* NULL, or called (with handler_arg) for each TLS handshake completed:
   * `resumed` 1 when a session ticket was accepted (an abbreviated
   * handshake), 0 for a full one. For counting. */
  void (*on_tls_handshake)(int resumed, void *handler_arg);
  /* TLS handshakes on this many of libuv's pool threads at once (the rest wait their turn,
   * in arrival order); 0 = on the loop thread. The pool has UV_THREADPOOL_SIZE threads (4
   * by default), shared with libuv's file and DNS work: set it before the loop starts. */
  unsigned handshake_threads;
  /* With handshake_threads: a new connection is closed at once, before any handshake work,
   * while the handshakes waiting for a thread would take longer than this to get one (their
   * measured cost; on_tls_refused says "busy"), so that those admitted finish in time and the
   * rest come back later; and a handshake under way goes before new ones. 0 = 2000 ms. */
  uint64_t handshake_backlog_ms;
};

typedef struct http_server http_server;

/*
 * Called on the loop thread for every complete request. The exchange is
 * borrowed until http_exchange_respond() is called on it, exactly once,
 * now or later; after that it is gone.
 */
typedef void (*http_handler_fn)(http_exchange *exchange, void *handler_arg);

/*
 * Binds, listens and starts accepting on `loop`. For TLS, loads the
 * certificate, key, CA and CRL now, so a bad file is reported here.
 * Returns the server, or NULL with `err` saying what failed and on what
 * ("listen 127.0.0.1:8080: address already in use").
 */
http_server *http_server_create(uv_loop_t *loop, const struct http_server_config *config,
                                http_handler_fn handler, void *handler_arg, char *err,
                                size_t err_size);

/* The bound port (useful when config->port was 0). */
int http_server_port(const http_server *server);

/*
 * Rereads the server certificate and key, the CA file and the CRL (for
 * SIGHUP). New handshakes use them at once. A CRL must be issued and signed
 * by a CA of ca_file and not past its nextUpdate, at start and here; an
 * expired one is accepted at start only (its revocations are better than
 * none), and a CRL that expires while in use never refuses a client: it is
 * the operator's to see (http_server_tls_status).
 * Connections already open keep their TLS session, but the next request
 * completed on each is held back until its client certificate is verified
 * again against the new CA and CRL; one that no longer verifies (revoked,
 * or no longer chaining to a trusted CA) gets 403 with {"error": "the
 * client certificate is no longer accepted: <why>"}, is logged, and the
 * connection is closed. A request already with the handler is not affected.
 * Returns 0, or -1 with `err` set and the old CA/CRL kept (then nothing is
 * re-checked). Loop thread.
 */
int http_server_reload_tls(http_server *server, char *err, size_t err_size);

/* What the TLS files in use say about time: for metrics and status. */
struct http_tls_status {
  unsigned long generation; /* 0: no TLS; 1 at start, +1 per reload */
  time_t crl_next_update;   /* the earliest nextUpdate of the CRLs in use; 0: no CRL */
  time_t cert_not_after;    /* the server certificate's notAfter */
};

/* Fills `out` (all 0 without TLS). Loop thread. */
void http_server_tls_status(const http_server *server, struct http_tls_status *out);

/*
 * Stops accepting, closes every connection (pending exchanges are dropped:
 * a later http_exchange_respond() on them is a no-op that frees them), and
 * frees the server once every handle is closed, then calls `closed_cb`
 * (may be NULL). `server` may be NULL.
 */
void http_server_close(http_server *server, void (*closed_cb)(void *arg), void *arg);

/* The request. Strings are NUL-terminated and live as long as the exchange. */
const char *http_exchange_method(const http_exchange *exchange); /* "GET", "POST" */
const char *http_exchange_path(const http_exchange *exchange);   /* "/v1/sales", no query */
const char *http_exchange_query(const http_exchange *exchange);  /* after '?', or "" */
/* Header value by case-insensitive name, or NULL. */
const char *http_exchange_header(const http_exchange *exchange, const char *name);
/* Body bytes (NUL-terminated for convenience; may contain NULs). */
const char *http_exchange_body(const http_exchange *exchange, size_t *length);
/* Peer address as "ip:port". */
const char *http_exchange_peer(const http_exchange *exchange);
/* The verified client certificate, or NULL (plain HTTP, or none sent). Borrowed. */
const struct mbedtls_x509_crt *http_exchange_peer_cert(const http_exchange *exchange);

/*
 * The response to this exchange ends its connection ("Connection: close"):
 * the client's next request opens a new one, which a load balancer in front
 * may send to another server. Before http_exchange_respond().
 */
void http_exchange_close_after(http_exchange *exchange);

/*
 * Sends the response and ends the exchange. `content_type` may be NULL (no
 * body type); `extra_headers` is NULL or complete header lines, each ending
 * in "\r\n" ("Retry-After: 5\r\n"); `body` is copied. If the client went away
 * meanwhile, nothing is sent and the exchange is freed. Returns 0, or -1 if
 * the response could not be queued (the connection is closed).
 */
int http_exchange_respond(http_exchange *exchange, int status, const char *content_type,
                          const char *extra_headers, const void *body, size_t body_length);

#endif
