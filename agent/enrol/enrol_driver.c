/*
 * enrol_driver.c - enrolment and renewal on the agent's loop (see
 * enrol_driver.h): when to ask, what to send, what to do with the answer.
 */
#include "enrol/enrol_driver.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>

#include "enrol/enrol.h"
#include "platform/clock.h"
#include "platform/log.h"
#include "platform/tls.h"
#include "uplink/http.h"

/* The files are looked at again at least this often while waiting: a pair
 * or a token put there by hand is noticed without a restart. */
#define ENROL_DRIVER_RECHECK_MS 60000
/* The token file is looked at this often while there is no pair to renew
 * with: the installer or a person may write it any time, and reading a
 * small file is cheap; attempts themselves still keep to the back-off. */
#define ENROL_DRIVER_TOKEN_POLL_MS 5000
/* An EST answer is a few kilobytes (a certificate or two in base64). */
#define ENROL_DRIVER_MAX_RESPONSE 65536
/* "<id>.<secret>" is 49 characters; room for a longer token format. */
#define ENROL_DRIVER_TOKEN_MAX 256

/* What a token file was when its token last failed: a new token is a new file. */
struct enrol_driver_file_id {
  int present;
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
};

struct enrol_driver {
  uv_loop_t *loop;
  uv_timer_t timer;
  uplink_http *http_enrol; /* no client certificate: a device that has none */
  uplink_http *http_renew; /* the device's pair: simplereenroll is over mutual TLS */
  int handles_open;        /* the timer and the clients, until their close callbacks */
  int closing;

  char *enrol_url, *uplink_url, *token_file, *cert_file, *key_file;
  char *store_id, *device_id;
  struct enrol_schedule_policy policy;
  uint64_t seed;
  void (*installed)(void *arg, int first_enrolment);
  void *installed_arg;

  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;

  int attempt_active;
  enum enrol_est_op op;
  struct enrol_attempt attempt;
  struct uplink_http_request req;
  char headers[1024]; /* holds the token's Authorization: wiped after each attempt */

  unsigned failures;       /* in a row, enrolment and renewal alike */
  int64_t last_attempt_s;  /* 0 = none */
  int64_t retry_after_s;   /* the collector's Retry-After, as a time; 0 = none */
  int token_refused;       /* the token in failed_token was refused: wait for another */
  int renewal_refused;     /* the collector refused the last renewal (not a network failure) */
  struct enrol_driver_file_id failed_token; /* the token file when its token last failed */

  struct enrol_driver_status status;
  char logged[768]; /* the last state logged, so that each change is logged once */
};

const char *enrol_driver_state_name(enum enrol_driver_state state)
{
  switch (state) {
  case ENROL_DRIVER_WAITING:
    return "waiting";
  case ENROL_DRIVER_ATTEMPTING:
    return "attempting";
  case ENROL_DRIVER_BACKING_OFF:
    return "backing_off";
  case ENROL_DRIVER_NEEDS_TOKEN:
    return "needs_token";
  case ENROL_DRIVER_EXPIRED:
    return "expired";
  case ENROL_DRIVER_REFUSED:
    return "refused";
  }
  return "unknown";
}

static void driver_decide(enrol_driver *d);
static void driver_on_timer(uv_timer_t *timer);

/*
 * Logs `event` at `level` when it, or what it says, differs from the last
 * line this driver logged; else at debug. A renewal failing every six
 * hours for a week says so once, and again when something changes.
 */
static void driver_log_change(enrol_driver *d, enum log_level level, const char *event,
                              const char *key, const char *fmt, ...) LOG_PRINTF(5, 6);

static void driver_log_change(enrol_driver *d, enum log_level level, const char *event,
                              const char *key, const char *fmt, ...)
{
  char seen[sizeof(d->logged)], line[1536];
  va_list args;

  snprintf(seen, sizeof(seen), "%s|%s", event, key);
  if (strcmp(seen, d->logged) == 0)
    level = LOG_DEBUG;
  else
    snprintf(d->logged, sizeof(d->logged), "%s", seen);
  va_start(args, fmt);
  vsnprintf(line, sizeof(line), fmt, args);
  va_end(args);
  log_event(level, "enrol", event, "%s", line);
}

static void driver_file_id(const char *path, struct enrol_driver_file_id *id)
{
  struct stat st;

  memset(id, 0, sizeof(*id));
  if (!path[0] || stat(path, &st) != 0)
    return;
  id->present = 1;
  id->dev = st.st_dev;
  id->ino = st.st_ino;
  id->size = st.st_size;
  id->mtime = st.st_mtim;
}

static int driver_file_id_same(const struct enrol_driver_file_id *a,
                               const struct enrol_driver_file_id *b)
{
  return a->present == b->present && a->dev == b->dev && a->ino == b->ino &&
         a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
         a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/*
 * The token in the token file, surrounding white space dropped. Returns 0
 * with `token` set, or -1 with `why` (no file configured, none there, empty,
 * too long). The caller wipes `token`.
 */
static int driver_token_read(const enrol_driver *d, char *token, size_t token_size, char *why,
                             size_t why_size)
{
  FILE *file;
  size_t len, start = 0;

  token[0] = '\0';
  if (!d->token_file[0] || !d->enrol_url[0]) {
    snprintf(why, why_size, "no enrolment token is configured ([enrol] url and token_file)");
    return -1;
  }
  file = fopen(d->token_file, "r");
  if (!file) {
    snprintf(why, why_size, "no enrolment token: [enrol] token_file %s cannot be read (%s)",
             d->token_file, strerror(errno));
    return -1;
  }
  len = fread(token, 1, token_size - 1, file);
  fclose(file);
  token[len] = '\0';
  while (len > 0 && strchr(" \t\r\n", token[len - 1]))
    token[--len] = '\0';
  while (start < len && strchr(" \t\r\n", token[start]))
    start++;
  memmove(token, token + start, len - start + 1);
  if (!token[0] || len >= token_size - 1) {
    mbedtls_platform_zeroize(token, token_size);
    snprintf(why, why_size, "[enrol] token_file %s %s", d->token_file,
             len ? "is longer than any enrolment token" : "is empty");
    return -1;
  }
  return 0;
}

/*
 * The installed pair, if it can be used: both files read, a matching pair.
 * Returns 0 with its validity in seconds, or -1 with `why`.
 */
static int driver_identity(const enrol_driver *d, int64_t *not_before, int64_t *not_after,
                           char *why, size_t why_size)
{
  mbedtls_x509_crt cert;
  mbedtls_pk_context key;
  int rc;

  mbedtls_x509_crt_init(&cert);
  mbedtls_pk_init(&key);
  rc = tls_load_identity(&cert, &key, d->cert_file, d->key_file, "uplink.cert", "uplink.key",
                         why, why_size);
  if (rc == 0) {
    *not_before = tls_x509_time_s(&cert.valid_from);
    *not_after = tls_x509_time_s(&cert.valid_to);
  }
  mbedtls_pk_free(&key);
  mbedtls_x509_crt_free(&cert);
  return rc == 0 ? 0 : -1;
}

/* Plans driver_decide() in `delay_ms` (at most ENROL_DRIVER_RECHECK_MS). */
static void driver_arm(enrol_driver *d, int64_t delay_ms)
{
  if (delay_ms < 0)
    delay_ms = 0;
  if (delay_ms > ENROL_DRIVER_RECHECK_MS)
    delay_ms = ENROL_DRIVER_RECHECK_MS;
  uv_timer_start(&d->timer, driver_on_timer, (uint64_t)delay_ms, 0);
}

/* Back-off after `failures` failed enrolments: the floor, doubling, capped. */
static int64_t driver_enrol_backoff_s(const enrol_driver *d)
{
  int64_t delay = d->policy.floor_s;
  for (unsigned i = 1; i < d->failures && delay < d->policy.backoff_cap_s; i++)
    delay *= 2;
  return delay < d->policy.backoff_cap_s ? delay : d->policy.backoff_cap_s;
}

static void driver_on_done(struct uplink_http_request *req);

/*
 * Counts a failed attempt (or one that could not start), says so once per
 * change, and plans the next look.
 */
static void driver_failed(enrol_driver *d, enum enrol_est_op op, int refused, const char *why,
                          const char *action)
{
  char quoted[700], quoted_action[400];
  const char *event;

  /* A refusal is head office's decision, not a fault: a line of its own,
   * so that whoever reads the log (or greps a fleet's) tells them apart. */
  d->renewal_refused = op == ENROL_EST_REENROL && refused;
  event = op == ENROL_EST_ENROL ? "enrol_failed"
          : d->renewal_refused  ? "renewal_refused"
                                : "renew_failed";
  d->failures++;
  snprintf(d->status.last_result, sizeof(d->status.last_result), "%.500s", why);
  driver_log_change(d, LOG_ERROR, event, why,
                    "failures=%u reason=%s action=%s", d->failures,
                    log_quote(why, quoted, sizeof(quoted)),
                    log_quote(action, quoted_action, sizeof(quoted_action)));
}

/* Starts an attempt of `op`; on a failure to start, counts it and returns -1. */
static int driver_attempt(enrol_driver *d, enum enrol_est_op op, int64_t now_s)
{
  char token[ENROL_DRIVER_TOKEN_MAX], err[768];
  const char *base = op == ENROL_EST_ENROL ? d->enrol_url : d->uplink_url;
  int rc, n;

  assert(!d->attempt_active);
  d->last_attempt_s = now_s;
  d->status.last_attempt_ms = now_s * 1000;
  d->retry_after_s = 0;
  if (op == ENROL_EST_ENROL) {
    driver_file_id(d->token_file, &d->failed_token);
    if (driver_token_read(d, token, sizeof(token), err, sizeof(err)) != 0) {
      driver_failed(d, op, 0, err, "write the token from 'posctl enrol-token' into token_file");
      return -1;
    }
  } else {
    token[0] = '\0';
  }
  rc = enrol_attempt_start(&d->attempt, op, base, d->store_id, d->device_id,
                           op == ENROL_EST_ENROL ? token : NULL, d->key_file, &d->drbg, err,
                           sizeof(err));
  mbedtls_platform_zeroize(token, sizeof(token));
  if (rc != 0) {
    enrol_attempt_free(&d->attempt);
    driver_failed(d, op, 0, err,
                  "check [agent] store_id/device_id, the URL and the key's directory");
    return -1;
  }
  n = snprintf(d->headers, sizeof(d->headers), "Content-Transfer-Encoding: %s\r\n",
               d->attempt.request.transfer_encoding ? d->attempt.request.transfer_encoding
                                                    : "base64");
  if (d->attempt.request.authorization && n > 0 && (size_t)n < sizeof(d->headers))
    snprintf(d->headers + n, sizeof(d->headers) - (size_t)n, "Authorization: %s\r\n",
             d->attempt.request.authorization);
  memset(&d->req, 0, sizeof(d->req));
  d->req.url = d->attempt.request.url;
  d->req.content_type = d->attempt.request.content_type;
  d->req.headers = d->headers;
  d->req.accept = "application/pkcs7-mime";
  d->req.body = (const uint8_t *)d->attempt.request.body;
  d->req.body_len = d->attempt.request.body_len;
  d->req.done = driver_on_done;
  d->req.user = d;
  d->op = op;
  if (uplink_http_start(op == ENROL_EST_ENROL ? d->http_enrol : d->http_renew, &d->req) != 0) {
    snprintf(err, sizeof(err), "%s", d->req.error);
    mbedtls_platform_zeroize(d->headers, sizeof(d->headers));
    enrol_attempt_free(&d->attempt);
    driver_failed(d, op, 0, err, "retried after the back-off");
    return -1;
  }
  d->attempt_active = 1;
  d->status.state = ENROL_DRIVER_ATTEMPTING;
  log_info("enrol", op == ENROL_EST_ENROL ? "enrolling" : "renewing", "url=%s key=%s",
           d->attempt.request.url, d->attempt.reused ? "pending" : "new");
  return 0;
}

static void driver_on_done(struct uplink_http_request *req)
{
  enrol_driver *d = req->user;
  struct enrol_est_outcome outcome;
  enum enrol_est_op op = d->op;
  int64_t now_s = clock_wall_ms() / 1000, not_after = 0;
  char err[768], when[32];
  int rc;

  assert(d->attempt_active);
  d->attempt_active = 0;
  /* Installed here, on the loop thread between the uplink's connections. */
  rc = enrol_attempt_finish(&d->attempt, req->failed ? 0 : req->status,
                            (const char *)req->response, req->response_len, req->retry_after_s,
                            now_s, d->cert_file, d->key_file, &outcome, &not_after, err,
                            sizeof(err));
  if (rc != 0 && req->failed)
    snprintf(err, sizeof(err), "no answer: %s", req->error);
  uplink_http_request_clear(req);
  mbedtls_platform_zeroize(d->headers, sizeof(d->headers));
  enrol_attempt_free(&d->attempt);
  if (d->closing)
    return;
  if (rc == 0) {
    d->failures = 0;
    d->token_refused = 0;
    d->renewal_refused = 0;
    d->status.last_success_ms = now_s * 1000;
    snprintf(d->status.last_result, sizeof(d->status.last_result), "%s",
             op == ENROL_EST_ENROL ? "enrolled" : "renewed");
    d->logged[0] = '\0';
    clock_format_utc(not_after * 1000, when, sizeof(when));
    log_info("enrol", op == ENROL_EST_ENROL ? "enrolled" : "renewed", "cert=%s not_after=%s",
             d->cert_file, when);
    /* Spent: the collector takes a token once. */
    if (op == ENROL_EST_ENROL && unlink(d->token_file) != 0 && errno != ENOENT)
      log_warn("enrol", "token_file_kept", "path=%s reason=\"%s\" action=\"delete it: the token "
               "is spent\"", d->token_file, strerror(errno));
    if (d->installed)
      d->installed(d->installed_arg, op == ENROL_EST_ENROL);
  } else {
    const char *action;
    int refused = outcome.verdict == ENROL_EST_REFUSED;
    if (outcome.verdict == ENROL_EST_RETRY_AT && outcome.retry_at_s > 0)
      d->retry_after_s = outcome.retry_at_s;
    if (op == ENROL_EST_ENROL && outcome.verdict == ENROL_EST_REFUSED) {
      d->token_refused = 1;
      action = "head office issues a new token (posctl enrol-token --store S --device D) "
               "and writes it to [enrol] token_file: the agent tries it when the file changes";
    } else if (outcome.verdict == ENROL_EST_REFUSED) {
      action = "head office refuses to renew this certificate (see its words; a "
               "decommissioned store is not renewed): sales are still sent with the current "
               "certificate until it expires; asked again after the back-off; if the store is "
               "in service, head office undoes the decommission or issues a new token";
    } else {
      action = "retried after the back-off (sales are kept in the journal meanwhile)";
    }
    driver_failed(d, op, refused, err, action);
  }
  driver_decide(d);
}

/* The state of things and what to do next: an attempt now, or a wait. */
static void driver_decide(enrol_driver *d)
{
  int64_t now_ms = clock_wall_ms(), now_s = now_ms / 1000;
  int64_t not_before = 0, not_after = 0, next_s = 0;
  char why[600], quoted[700], when[32];
  int usable, expired;

  if (d->closing || d->attempt_active)
    return;
  usable = driver_identity(d, &not_before, &not_after, why, sizeof(why)) == 0;
  expired = usable && now_s >= not_after;
  d->status.not_after_ms = usable ? not_after * 1000 : 0;

  if (usable && !expired) {
    enum enrol_schedule_state state;
    d->token_refused = 0;
    state = enrol_schedule_next(&d->policy, not_before, not_after, now_s, d->seed, d->failures,
                                d->last_attempt_s, &next_s);
    if (state == ENROL_SCHEDULE_INVALID) {
      driver_log_change(d, LOG_ERROR, "certificate_invalid", d->cert_file,
                        "cert=%s reason=\"its validity ends before it begins: nothing to plan\" "
                        "action=\"install a valid certificate, or enrol again with a token\"",
                        d->cert_file);
      d->status.state = ENROL_DRIVER_NEEDS_TOKEN;
      d->status.next_attempt_ms = 0;
      driver_arm(d, ENROL_DRIVER_RECHECK_MS);
      return;
    }
    if (d->retry_after_s > next_s && d->retry_after_s < not_after)
      next_s = d->retry_after_s;
    if (next_s <= now_s) {
      if (driver_attempt(d, ENROL_EST_REENROL, now_s) == 0)
        return;
      driver_decide(d);
      return;
    }
    d->status.state = !d->failures         ? ENROL_DRIVER_WAITING
                      : d->renewal_refused ? ENROL_DRIVER_REFUSED
                                           : ENROL_DRIVER_BACKING_OFF;
    d->status.next_attempt_ms = next_s * 1000;
    if (!d->failures) {
      clock_format_utc(next_s * 1000, when, sizeof(when));
      driver_log_change(d, LOG_INFO, "renewal_planned", when, "at=%s not_after_s=%lld", when,
                        (long long)not_after);
    }
    /* Looked at again at the expiry too, when that comes first: the state
     * (and the page) says "expired" from that moment, not at the next try. */
    driver_arm(d, (next_s < not_after ? next_s : not_after) * 1000 - now_ms);
    return;
  }

  /* No pair to renew with: only a token can help. The uplink says
   * event=device_certificate_expired once per certificate when it next
   * connects (uplink/http_tls.c); the line here says what enrolment will do. */
  if (expired) {
    clock_format_utc(not_after * 1000, when, sizeof(when));
    snprintf(why, sizeof(why),
             "the device certificate %.300s expired at %s: it cannot renew itself", d->cert_file,
             when);
  }
  {
    struct enrol_driver_file_id token_now;
    char token[ENROL_DRIVER_TOKEN_MAX], token_why[600];
    int have_token = driver_token_read(d, token, sizeof(token), token_why, sizeof(token_why)) == 0;
    int token_new;

    mbedtls_platform_zeroize(token, sizeof(token));
    driver_file_id(d->token_file, &token_now);
    token_new = !driver_file_id_same(&token_now, &d->failed_token);
    if (have_token && (token_new || !d->token_refused)) {
      int64_t due_s = d->failures && !token_new ? d->last_attempt_s + driver_enrol_backoff_s(d)
                                                : now_s;
      if (!token_new && d->retry_after_s > due_s)
        due_s = d->retry_after_s;
      if (due_s <= now_s) {
        if (token_new)
          d->failures = 0;
        if (driver_attempt(d, ENROL_EST_ENROL, now_s) == 0)
          return;
        driver_decide(d);
        return;
      }
      d->status.state = ENROL_DRIVER_BACKING_OFF;
      d->status.next_attempt_ms = due_s * 1000;
      /* A new token file cuts the wait short: looked at meanwhile. */
      driver_arm(d, due_s * 1000 - now_ms < ENROL_DRIVER_TOKEN_POLL_MS ? due_s * 1000 - now_ms
                                                                       : ENROL_DRIVER_TOKEN_POLL_MS);
      return;
    }
    d->status.state = expired ? ENROL_DRIVER_EXPIRED : ENROL_DRIVER_NEEDS_TOKEN;
    d->status.next_attempt_ms = 0;
    /* An expired certificate has a line of its own: the one state a device
     * cannot leave without head office, and unattended devices are watched
     * through their logs. */
    if (!d->token_refused)
      driver_log_change(
          d, LOG_ERROR, expired ? "certificate_expired" : "needs_token", why,
          "reason=%s token=%s action=%s",
          log_quote(why, quoted, sizeof(quoted)), have_token ? "present" : "none",
          d->enrol_url[0]
              ? "\"head office issues a token (posctl enrol-token --store S --device D) into "
                "[enrol] token_file; the agent enrols when it appears (sales are kept meanwhile)\""
              : "\"install a device certificate and key, or set [enrol] url and token_file\"");
    /* Looked at again soon: the installer may write the token any time. */
    driver_arm(d, ENROL_DRIVER_TOKEN_POLL_MS);
  }
}

static void driver_on_timer(uv_timer_t *timer)
{
  driver_decide(timer->data);
}

static void driver_free(enrol_driver *d)
{
  mbedtls_ctr_drbg_free(&d->drbg);
  mbedtls_entropy_free(&d->entropy);
  free(d->enrol_url);
  free(d->uplink_url);
  free(d->token_file);
  free(d->cert_file);
  free(d->key_file);
  free(d->store_id);
  free(d->device_id);
  free(d);
}

static void driver_handle_closed(enrol_driver *d)
{
  if (--d->handles_open == 0)
    driver_free(d);
}

static void driver_on_timer_closed(uv_handle_t *handle)
{
  driver_handle_closed(handle->data);
}

static void driver_on_http_closed(void *arg)
{
  driver_handle_closed(arg);
}

enrol_driver *enrol_driver_create(uv_loop_t *loop, const struct enrol_driver_options *options,
                                  char *err, size_t err_size)
{
  struct uplink_http_options http = {
      .cert_file = "",
      .key_file = "",
      .ca_file = options->ca_file ? options->ca_file : "",
      .connect_timeout_ms = options->connect_timeout_ms,
      .request_timeout_ms = options->request_timeout_ms,
      .max_response_bytes = ENROL_DRIVER_MAX_RESPONSE,
      .log_module = "enrol",
  };
  enrol_driver *d = calloc(1, sizeof(*d));

  if (!d) {
    snprintf(err, err_size, "enrolment: out of memory");
    return NULL;
  }
  d->loop = loop;
  mbedtls_entropy_init(&d->entropy);
  mbedtls_ctr_drbg_init(&d->drbg);
  d->enrol_url = strdup(options->enrol_url ? options->enrol_url : "");
  d->uplink_url = strdup(options->uplink_url ? options->uplink_url : "");
  d->token_file = strdup(options->token_file ? options->token_file : "");
  d->cert_file = strdup(options->cert_file);
  d->key_file = strdup(options->key_file);
  d->store_id = strdup(options->store_id);
  d->device_id = strdup(options->device_id);
  if (!d->enrol_url || !d->uplink_url || !d->token_file || !d->cert_file || !d->key_file ||
      !d->store_id || !d->device_id) {
    snprintf(err, err_size, "enrolment: out of memory");
    goto fail;
  }
  if (tls_seed(&d->entropy, &d->drbg, "pos-agent enrol", err, err_size) != 0)
    goto fail;
  enrol_schedule_defaults(&d->policy);
  d->policy.renew_at = options->renew_at;
  d->policy.floor_s = options->retry_floor_ms / 1000 > 0 ? options->retry_floor_ms / 1000 : 1;
  d->policy.backoff_cap_s = options->retry_max_ms / 1000 > d->policy.floor_s
                                ? options->retry_max_ms / 1000
                                : d->policy.floor_s;
  d->seed = enrol_schedule_seed(d->store_id, d->device_id);
  d->installed = options->installed;
  d->installed_arg = options->installed_arg;
  d->http_enrol = uplink_http_create(loop, &http, err, err_size);
  if (!d->http_enrol)
    goto fail;
  http.cert_file = d->cert_file;
  http.key_file = d->key_file;
  d->http_renew = uplink_http_create(loop, &http, err, err_size);
  if (!d->http_renew) {
    /* Freed from the loop; the driver with it. */
    d->handles_open = 1;
    d->closing = 1;
    uplink_http_close(d->http_enrol, driver_on_http_closed, d);
    return NULL;
  }
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  d->handles_open = 3;
  d->status.state = ENROL_DRIVER_WAITING;
  /* The first look from the loop, once the agent is up. */
  uv_timer_start(&d->timer, driver_on_timer, 0, 0);
  return d;

fail:
  driver_free(d);
  return NULL;
}

void enrol_driver_get_status(const enrol_driver *d, struct enrol_driver_status *status)
{
  if (!d) {
    memset(status, 0, sizeof(*status));
    return;
  }
  *status = d->status;
  status->failures = d->failures;
  status->renewal_refused = d->renewal_refused;
}

void enrol_driver_close(enrol_driver *d)
{
  if (!d || d->closing)
    return;
  d->closing = 1;
  if (d->attempt_active) {
    uplink_http_cancel(d->op == ENROL_EST_ENROL ? d->http_enrol : d->http_renew, &d->req);
    uplink_http_request_clear(&d->req);
    mbedtls_platform_zeroize(d->headers, sizeof(d->headers));
    enrol_attempt_free(&d->attempt);
    d->attempt_active = 0;
  }
  uv_timer_stop(&d->timer);
  uv_close((uv_handle_t *)&d->timer, driver_on_timer_closed);
  uplink_http_close(d->http_enrol, driver_on_http_closed, d);
  uplink_http_close(d->http_renew, driver_on_http_closed, d);
}
