/*
 * http.h - HTTP/1.1 requests to the collector on the agent's libuv loop:
 * our own small client on libuv (sockets, timers, name resolution in
 * libuv's thread pool with uv_getaddrinfo), mbedTLS (TLS) and llhttp
 * (parsing the answers). Nothing here blocks the loop.
 *
 * Every request is a POST of a borrowed body, over mutual TLS when the URL
 * is https (the device certificate and key, the server verified against the
 * CA file or the system's CAs, its name or IP address checked), TLS 1.2 or
 * newer, with keep-alive: an idle connection is reused for the next request
 * to the same host and port, and a TLS session is resumed on a new
 * connection when the collector offers that. A request sent on a reused
 * connection that the collector had already closed, with nothing of it
 * answered, is sent once more on a fresh connection.
 *
 * Threading: everything on the loop thread.
 */
#ifndef AGENT_UPLINK_HTTP_H
#define AGENT_UPLINK_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct uplink_http_options {
  const char *cert_file; /* PEM client certificate; "" = none */
  const char *key_file;  /* PEM private key; "" = none */
  const char *ca_file;   /* PEM CAs for the server certificate; "" = the system's */
  int64_t connect_timeout_ms;
  int64_t request_timeout_ms;
  size_t max_response_bytes; /* a longer answer fails the request */
  /* mod= of the client's log lines; NULL = "uplink". Borrowed for the
   * client's life (a string literal): the enrolment driver's clients say
   * "enrol", so that a reload after a renewal is not read as the uplink's. */
  const char *log_module;
};

typedef struct uplink_http uplink_http;

struct uplink_http_request {
  /* In: borrowed until done() is called (or the request is cancelled). */
  const char *url;
  const char *content_type;
  const char *content_encoding; /* NULL = none */
  const char *headers;          /* NULL, or more header lines, each ending in "\r\n" */
  const char *accept;           /* NULL = application/x-protobuf */
  const uint8_t *body;
  size_t body_len;
  void (*done)(struct uplink_http_request *req); /* on the loop thread */
  void *user;

  /* Out, valid in done() until uplink_http_request_clear(). */
  int failed;            /* 1: no HTTP answer (network, TLS, timeout); see error */
  long status;           /* HTTP status when !failed */
  int64_t retry_after_s; /* Retry-After in seconds, -1 = none */
  uint8_t *response;     /* the answer's body (owned; freed by _clear) */
  size_t response_len;
  char response_type[96];     /* its Content-Type; "" = none (cut if longer) */
  char response_encoding[32]; /* its Content-Encoding; "" = none (cut if longer) */
  char error[512];       /* with failed: "host:port: what went wrong: detail" */

  /* The client's own. */
  struct uplink_http_request *next_active;
  uplink_http *http;
  void *conn;           /* the connection carrying it, or NULL */
  uint64_t deadline_ms; /* uv_now() by which the whole answer must be in */
  int retried;          /* already sent again on a fresh connection */
  size_t response_cap;
  int overflow;
};

/*
 * Creates the client on `loop`. Returns it, or NULL with `err` set. The
 * option strings are copied.
 */
uplink_http *uplink_http_create(uv_loop_t *loop, const struct uplink_http_options *options,
                                char *err, size_t err_size);

/*
 * Starts `req` (its Out fields are reset). Returns 0, and req->done will be
 * called on the loop thread; or -1 (out of memory, or closing) with
 * req->error set, and done is never called.
 */
int uplink_http_start(uplink_http *http, struct uplink_http_request *req);

/* Abandons a started request: done() will not be called. */
void uplink_http_cancel(uplink_http *http, struct uplink_http_request *req);

/*
 * Whether a finished request's answer is a protobuf we can read as it is:
 * Content-Type application/x-protobuf and no Content-Encoding (or
 * "identity"; we never ask for another). Returns 1, or 0 with `why` saying
 * what the answer is instead ("Content-Type text/html").
 */
int uplink_http_answer_is_protobuf(const struct uplink_http_request *req, char *why,
                                   size_t why_size);

/* Frees what a finished request holds (the response). `req` may be NULL. */
void uplink_http_request_clear(struct uplink_http_request *req);

/*
 * Abandons every request, closes every connection and handle, frees the
 * client, then calls `closed` (may be NULL) from the loop. `http` may be NULL.
 */
void uplink_http_close(uplink_http *http, void (*closed)(void *arg), void *arg);

#endif
