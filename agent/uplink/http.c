/*
 * http.c - libcurl's multi socket interface driven by libuv.
 *
 * curl owns the sockets; we own one uv_poll_t per socket curl asks us to
 * watch (kept with curl_multi_assign) and one uv_timer_t for curl's single
 * timeout. When libuv reports a socket ready or the timer fires we call
 * curl_multi_socket_action and then collect finished transfers with
 * curl_multi_info_read. No curl function is called from inside a curl
 * callback.
 */
#include "uplink/http.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "platform/log.h"

struct uplink_http_socket {
  uv_poll_t poll; /* first: the close callback gets this pointer back */
  curl_socket_t fd;
  uplink_http *http;
  struct uplink_http_socket *prev, *next; /* every socket still open */
  int closing;
};

struct uplink_http {
  uv_loop_t *loop;
  CURLM *multi;
  CURLSH *share;
  uv_timer_t timer;
  char *cert_file, *key_file, *ca_file;
  int64_t connect_timeout_ms, request_timeout_ms;
  size_t max_response_bytes;
  struct uplink_http_request *active; /* started, not finished */
  struct uplink_http_socket *sockets;
  unsigned open_handles;              /* the timer and the polls not yet closed */
  int closing;
  void (*closed)(void *arg);
  void *closed_arg;
};

static int uplink_http_global_done;

/* ---- handles and their lifetimes ------------------------------------------- */

static void uplink_http_maybe_free(uplink_http *http)
{
  void (*closed)(void *) = http->closed;
  void *arg = http->closed_arg;
  if (!http->closing || http->open_handles)
    return;
  free(http->cert_file);
  free(http->key_file);
  free(http->ca_file);
  free(http);
  if (closed)
    closed(arg);
}

static void uplink_http_on_handle_closed(uv_handle_t *handle)
{
  uplink_http *http = handle->data;
  if (handle->type == UV_POLL) {
    struct uplink_http_socket *sock = (struct uplink_http_socket *)handle;
    free(sock);
  }
  http->open_handles--;
  uplink_http_maybe_free(http);
}

static void uplink_http_socket_close(uplink_http *http, struct uplink_http_socket *sock)
{
  if (sock->closing)
    return;
  sock->closing = 1;
  if (sock->prev)
    sock->prev->next = sock->next;
  else
    http->sockets = sock->next;
  if (sock->next)
    sock->next->prev = sock->prev;
  uv_poll_stop(&sock->poll);
  uv_close((uv_handle_t *)&sock->poll, uplink_http_on_handle_closed);
}

static void uplink_http_unlink(uplink_http *http, struct uplink_http_request *req)
{
  for (struct uplink_http_request **at = &http->active; *at; at = &(*at)->next_active) {
    if (*at == req) {
      *at = req->next_active;
      break;
    }
  }
  req->next_active = NULL;
}

/* Detaches the easy handle from the multi and frees it. */
static void uplink_http_release(uplink_http *http, struct uplink_http_request *req)
{
  if (req->easy) {
    curl_multi_remove_handle(http->multi, req->easy);
    curl_easy_cleanup(req->easy);
    req->easy = NULL;
  }
  curl_slist_free_all(req->headers);
  req->headers = NULL;
  uplink_http_unlink(http, req);
}

/* ---- finished transfers ------------------------------------------------------- */

/* "host:port" of `url`, for error messages that say what failed on what. */
static void uplink_http_authority(const char *url, char *out, size_t out_size)
{
  CURLU *parsed = curl_url();
  char *host = NULL, *port = NULL;
  if (parsed && curl_url_set(parsed, CURLUPART_URL, url, 0) == CURLUE_OK &&
      curl_url_get(parsed, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(parsed, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK)
    snprintf(out, out_size, "%s:%s", host, port);
  else
    snprintf(out, out_size, "%s", url);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(parsed);
}

/* What went wrong, in words a person fixing a store's uplink uses. */
static const char *uplink_http_what(CURLcode code)
{
  switch (code) {
  case CURLE_COULDNT_RESOLVE_HOST:
    return "cannot resolve the host name";
  case CURLE_COULDNT_CONNECT:
    return "cannot connect (refused or unreachable)";
  case CURLE_OPERATION_TIMEDOUT:
    return "timed out";
  case CURLE_SSL_CONNECT_ERROR:
    return "TLS handshake failed";
  case CURLE_PEER_FAILED_VERIFICATION:
    return "TLS handshake failed: the collector's certificate is not trusted (uplink.ca)";
  case CURLE_SSL_CERTPROBLEM:
    return "the device certificate or key cannot be used (uplink.cert, uplink.key)";
  case CURLE_SSL_CACERT_BADFILE:
    return "the CA file cannot be read (uplink.ca)";
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
    return "connection lost (a refused client certificate looks like this too)";
  case CURLE_GOT_NOTHING:
    return "the collector closed the connection without answering";
  case CURLE_WRITE_ERROR:
    return "answer too large";
  default:
    return curl_easy_strerror(code);
  }
}

static void uplink_http_set_error(struct uplink_http_request *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void uplink_http_set_error(struct uplink_http_request *req, const char *fmt, ...)
{
  va_list args;
  va_start(args, fmt);
  vsnprintf(req->error, sizeof(req->error), fmt, args);
  va_end(args);
}

/* Notes the answer's Content-Type and Content-Encoding (the last ones, if
 * repeated), so that an answer is read only as what it says it is. */
static void uplink_http_answer_headers(struct uplink_http_request *req)
{
  struct curl_header *encoding = NULL;
  char *type = NULL;

  if (curl_easy_getinfo(req->easy, CURLINFO_CONTENT_TYPE, &type) == CURLE_OK && type)
    snprintf(req->response_type, sizeof(req->response_type), "%s", type);
  if (curl_easy_header(req->easy, "Content-Encoding", 0, CURLH_HEADER, -1, &encoding) ==
          CURLHE_OK &&
      encoding->value)
    snprintf(req->response_encoding, sizeof(req->response_encoding), "%s", encoding->value);
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

static void uplink_http_finish(uplink_http *http, struct uplink_http_request *req,
                               CURLcode result)
{
  char authority[300];

  if (result == CURLE_OK && !req->overflow) {
    long status = 0;
    curl_off_t retry_after = 0;
    curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
    if (curl_easy_getinfo(req->easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
        retry_after > 0)
      req->retry_after_s = (int64_t)retry_after;
    req->status = status;
    req->failed = 0;
    uplink_http_answer_headers(req);
  } else {
    size_t len = strlen(req->curl_error);
    while (len > 0 && (req->curl_error[len - 1] == ' ' || req->curl_error[len - 1] == '\n'))
      req->curl_error[--len] = '\0';
    uplink_http_authority(req->url, authority, sizeof(authority));
    req->failed = 1;
    /* A long message is cut: it is for people. */
    if (req->overflow)
      uplink_http_set_error(req, "%s: the answer is larger than %zu bytes", authority,
                            http->max_response_bytes);
    else if (req->curl_error[0] && strcmp(req->curl_error, uplink_http_what(result)) != 0)
      uplink_http_set_error(req, "%s: %s: %s", authority, uplink_http_what(result),
                            req->curl_error);
    else
      uplink_http_set_error(req, "%s: %s", authority, uplink_http_what(result));
    if ((result == CURLE_SSL_CONNECT_ERROR || result == CURLE_RECV_ERROR ||
         result == CURLE_SEND_ERROR) &&
        !http->cert_file[0] && strncmp(req->url, "https:", 6) == 0) {
      len = strlen(req->error);
      snprintf(req->error + len, sizeof(req->error) - len,
               " (no device certificate is configured: uplink.cert)");
    }
  }
  uplink_http_release(http, req);
}

static void uplink_http_check_done(uplink_http *http)
{
  struct uplink_http_request *finished = NULL, **tail = &finished;
  CURLMsg *msg;
  int left;

  /* Collect first, call back after: a callback may start another request
   * or close the client, neither of which may happen while we walk curl's
   * message queue. */
  while ((msg = curl_multi_info_read(http->multi, &left))) {
    struct uplink_http_request *req = NULL;
    if (msg->msg != CURLMSG_DONE)
      continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&req);
    if (!req)
      continue;
    uplink_http_finish(http, req, msg->data.result);
    *tail = req;
    tail = &req->next_active;
  }
  while (finished && !http->closing) {
    struct uplink_http_request *req = finished;
    finished = req->next_active;
    req->next_active = NULL;
    req->done(req);
  }
}

/* ---- curl's callbacks: what to watch, when to wake --------------------------------- */

static void uplink_http_on_poll(uv_poll_t *handle, int status, int events)
{
  struct uplink_http_socket *sock = (struct uplink_http_socket *)handle;
  uplink_http *http = sock->http;
  int flags = 0, running = 0;

  if (status < 0)
    flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  /* sock may be closed (and later freed) by the socket callback inside
   * this call: read what we need first. */
  curl_multi_socket_action(http->multi, sock->fd, flags, &running);
  uplink_http_check_done(http);
}

static int uplink_http_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                                 void *socketp)
{
  uplink_http *http = userp;
  struct uplink_http_socket *sock = socketp;
  int events = 0;

  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (sock) {
      /* While closing, the multi handle is being torn down: leave it be. */
      if (!http->closing)
        curl_multi_assign(http->multi, fd, NULL);
      uplink_http_socket_close(http, sock);
    }
    return 0;
  }
  if (http->closing)
    return 0;
  if (!sock) {
    sock = calloc(1, sizeof(*sock));
    if (!sock)
      return -1;
    if (uv_poll_init_socket(http->loop, &sock->poll, fd) != 0) {
      free(sock);
      return -1;
    }
    sock->fd = fd;
    sock->http = http;
    sock->poll.data = http;
    sock->next = http->sockets;
    if (sock->next)
      sock->next->prev = sock;
    http->sockets = sock;
    http->open_handles++;
    curl_multi_assign(http->multi, fd, sock);
  }
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  uv_poll_start(&sock->poll, events, uplink_http_on_poll);
  return 0;
}

static void uplink_http_on_timeout(uv_timer_t *timer)
{
  uplink_http *http = timer->data;
  int running = 0;
  curl_multi_socket_action(http->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  uplink_http_check_done(http);
}

static int uplink_http_on_timer(CURLM *multi, long timeout_ms, void *userp)
{
  uplink_http *http = userp;
  (void)multi;
  if (http->closing)
    return 0;
  if (timeout_ms < 0)
    uv_timer_stop(&http->timer);
  else
    uv_timer_start(&http->timer, uplink_http_on_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

static size_t uplink_http_on_data(char *data, size_t size, size_t nmemb, void *userp)
{
  struct uplink_http_request *req = userp;
  size_t len = size * nmemb;
  uplink_http *http = req->http;

  if (req->response_len + len > http->max_response_bytes) {
    req->overflow = 1;
    return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
  }
  if (req->response_len + len > req->response_cap) {
    size_t cap = req->response_cap ? req->response_cap : 1024;
    uint8_t *grown;
    while (cap < req->response_len + len)
      cap *= 2;
    grown = realloc(req->response, cap);
    if (!grown)
      return 0;
    req->response = grown;
    req->response_cap = cap;
  }
  memcpy(req->response + req->response_len, data, len);
  req->response_len += len;
  return len;
}

/* ---- the API -------------------------------------------------------------------- */

uplink_http *uplink_http_create(uv_loop_t *loop, const struct uplink_http_options *options,
                                char *err, size_t err_size)
{
  uplink_http *http;

  if (!uplink_http_global_done) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      snprintf(err, err_size, "libcurl cannot be initialised");
      return NULL;
    }
    uplink_http_global_done = 1;
  }
  http = calloc(1, sizeof(*http));
  if (!http) {
    snprintf(err, err_size, "out of memory");
    return NULL;
  }
  http->loop = loop;
  http->cert_file = strdup(options->cert_file ? options->cert_file : "");
  http->key_file = strdup(options->key_file ? options->key_file : "");
  http->ca_file = strdup(options->ca_file ? options->ca_file : "");
  http->connect_timeout_ms = options->connect_timeout_ms;
  http->request_timeout_ms = options->request_timeout_ms;
  http->max_response_bytes = options->max_response_bytes ? options->max_response_bytes : 65536;
  http->multi = curl_multi_init();
  http->share = curl_share_init();
  if (!http->cert_file || !http->key_file || !http->ca_file || !http->multi || !http->share) {
    snprintf(err, err_size, "out of memory creating the HTTP client");
    goto fail;
  }
  /* One loop thread: the share needs no locks. It keeps TLS sessions
   * (a resumed handshake is cheaper on the device) and DNS answers. */
  curl_share_setopt(http->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  curl_share_setopt(http->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
  curl_multi_setopt(http->multi, CURLMOPT_SOCKETFUNCTION, uplink_http_on_socket);
  curl_multi_setopt(http->multi, CURLMOPT_SOCKETDATA, http);
  curl_multi_setopt(http->multi, CURLMOPT_TIMERFUNCTION, uplink_http_on_timer);
  curl_multi_setopt(http->multi, CURLMOPT_TIMERDATA, http);
  if (uv_timer_init(loop, &http->timer) != 0) {
    snprintf(err, err_size, "cannot create the HTTP client's timer");
    goto fail;
  }
  http->timer.data = http;
  http->open_handles = 1;
  return http;
fail:
  if (http->multi)
    curl_multi_cleanup(http->multi);
  if (http->share)
    curl_share_cleanup(http->share);
  free(http->cert_file);
  free(http->key_file);
  free(http->ca_file);
  free(http);
  return NULL;
}

int uplink_http_start(uplink_http *http, struct uplink_http_request *req)
{
  CURL *easy;
  struct curl_slist *headers = NULL;
  char line[160];

  req->failed = 0;
  req->status = 0;
  req->retry_after_s = -1;
  req->response = NULL;
  req->response_len = req->response_cap = 0;
  req->response_type[0] = req->response_encoding[0] = '\0';
  req->overflow = 0;
  req->error[0] = req->curl_error[0] = '\0';
  req->http = http;
  req->next_active = NULL;
  req->easy = req->headers = NULL;
  if (http->closing) {
    snprintf(req->error, sizeof(req->error), "the uplink is closing");
    return -1;
  }
  easy = curl_easy_init();
  if (!easy)
    goto nomem;
  req->easy = easy;
  snprintf(line, sizeof(line), "Content-Type: %s", req->content_type);
  headers = curl_slist_append(headers, line);
  if (req->content_encoding) {
    snprintf(line, sizeof(line), "Content-Encoding: %s", req->content_encoding);
    headers = headers ? curl_slist_append(headers, line) : NULL;
  }
  headers = headers ? curl_slist_append(headers, "Accept: application/x-protobuf") : NULL;
  /* No "Expect: 100-continue" round trip (and its one-second stall) for
   * larger bodies: the collector reads whole requests. */
  headers = headers ? curl_slist_append(headers, "Expect:") : NULL;
  if (!headers)
    goto nomem;
  req->headers = headers;

  curl_easy_setopt(easy, CURLOPT_URL, req->url);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
  curl_easy_setopt(easy, CURLOPT_SHARE, http->share);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "https,http");
  curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, "pos-agent/" POS_VERSION);
  curl_easy_setopt(easy, CURLOPT_POST, 1L);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, (const char *)req->body);
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, uplink_http_on_data);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->curl_error);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)http->connect_timeout_ms);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)http->request_timeout_ms);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  /* Mutual TLS: TLS 1.2 at least, the collector verified against our CA
   * (name and chain), our device certificate presented. */
  curl_easy_setopt(easy, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
  if (http->cert_file[0]) {
    curl_easy_setopt(easy, CURLOPT_SSLCERT, http->cert_file);
    curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM");
  }
  if (http->key_file[0]) {
    curl_easy_setopt(easy, CURLOPT_SSLKEY, http->key_file);
    curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM");
  }
  if (http->ca_file[0])
    curl_easy_setopt(easy, CURLOPT_CAINFO, http->ca_file);

  if (curl_multi_add_handle(http->multi, easy) != CURLM_OK)
    goto nomem;
  req->next_active = http->active;
  http->active = req;
  return 0;
nomem:
  curl_slist_free_all(headers);
  req->headers = NULL;
  if (easy)
    curl_easy_cleanup(easy);
  req->easy = NULL;
  snprintf(req->error, sizeof(req->error), "out of memory starting a request to %s", req->url);
  return -1;
}

void uplink_http_cancel(uplink_http *http, struct uplink_http_request *req)
{
  if (!req->easy)
    return;
  uplink_http_release(http, req);
  uplink_http_request_clear(req);
}

void uplink_http_request_clear(struct uplink_http_request *req)
{
  if (!req)
    return;
  free(req->response);
  req->response = NULL;
  req->response_len = req->response_cap = 0;
}

void uplink_http_close(uplink_http *http, void (*closed)(void *arg), void *arg)
{
  if (!http)
    return;
  if (http->closing)
    return;
  http->closing = 1;
  http->closed = closed;
  http->closed_arg = arg;
  while (http->active)
    uplink_http_cancel(http, http->active);
  /* Closes the cached connections; curl tells us to forget their sockets. */
  curl_multi_cleanup(http->multi);
  http->multi = NULL;
  curl_share_cleanup(http->share);
  http->share = NULL;
  while (http->sockets)
    uplink_http_socket_close(http, http->sockets);
  uv_timer_stop(&http->timer);
  uv_close((uv_handle_t *)&http->timer, uplink_http_on_handle_closed);
}
