/*
 * enrol_driver.h - runs enrolment and renewal on the agent's libuv loop
 * with the building blocks of enrol.h:
 *
 *   - no usable device certificate and key (missing, unreadable, not a
 *     pair) or an expired certificate, and a token in [enrol] token_file:
 *     POST simpleenroll to [enrol] url with the token (no client
 *     certificate; the server checked against uplink.ca), install the
 *     pair, delete the token file, tell the uplink (it sends at once);
 *   - a usable certificate: POST simplereenroll to [uplink] url over mutual
 *     TLS with the current pair at the time enrol_schedule_next() gives
 *     (renew_at of the lifetime, plus the device's jitter), install,
 *     plan the next one;
 *   - failures back off from retry_floor, doubling up to retry_max; a
 *     refused token waits for a new token file; each change of state is
 *     logged once, saying what to do;
 *   - an expired certificate cannot renew itself: said once
 *     (event=certificate_expired; the uplink logs
 *     event=device_certificate_expired when it next connects) and the token
 *     file read again at each look, so that a new token is used without a
 *     restart;
 *   - a renewal the collector refuses (a decommissioned store) is said once
 *     (event=renewal_refused) and asked again no sooner than the back-off,
 *     while the current certificate keeps being used until it expires.
 *
 * Installs run on the loop thread inside the request's callback, so no
 * uplink connection reads the files half-way through (enrol.h, enrol_install).
 *
 * Threading: every function on the loop thread.
 */
#ifndef AGENT_ENROL_DRIVER_H
#define AGENT_ENROL_DRIVER_H

#include <stdint.h>
#include <uv.h>

struct enrol_driver_options {
  const char *enrol_url;  /* EST listener for a first enrolment; "" = none */
  const char *uplink_url; /* collector base URL: renewal (simplereenroll) goes there */
  const char *token_file; /* one-time token; "" = none */
  const char *cert_file;  /* uplink.cert, written by installs */
  const char *key_file;   /* uplink.key, written by installs */
  const char *ca_file;    /* uplink.ca; "" = the system's */
  const char *store_id;
  const char *device_id;
  double renew_at;        /* fraction of the lifetime, in (0, 1) */
  int64_t retry_floor_ms;
  int64_t retry_max_ms;
  int64_t connect_timeout_ms;
  int64_t request_timeout_ms;
  /* Called (may be NULL) after a new pair is installed: the uplink's next
   * connection uses it. */
  void (*installed)(void *arg, int first_enrolment);
  void *installed_arg;
};

enum enrol_driver_state {
  ENROL_DRIVER_WAITING = 0,    /* renewal planned at next_attempt_ms */
  ENROL_DRIVER_ATTEMPTING,     /* a request is under way */
  ENROL_DRIVER_BACKING_OFF,    /* the last attempt failed; next at next_attempt_ms */
  ENROL_DRIVER_NEEDS_TOKEN,    /* no usable certificate, and no usable token */
  ENROL_DRIVER_EXPIRED,        /* the certificate expired, and no usable token */
  ENROL_DRIVER_REFUSED,        /* the collector refused the last renewal; next at next_attempt_ms */
};

/* "waiting", "attempting", "backing_off", "needs_token", "expired", "refused". */
const char *enrol_driver_state_name(enum enrol_driver_state state);

struct enrol_driver_status {
  enum enrol_driver_state state;
  int64_t next_attempt_ms;   /* 0 = none planned */
  int64_t not_after_ms;      /* the installed certificate's; 0 = none */
  int64_t last_attempt_ms;   /* 0 = none this run */
  int64_t last_success_ms;   /* 0 = none this run */
  unsigned failures;         /* in a row since the last success */
  int renewal_refused;       /* the last renewal was refused (e.g. a decommissioned store) */
  char last_result[512];     /* "renewed", "enrolled", or what went wrong; "" = none */
};

typedef struct enrol_driver enrol_driver;

/*
 * Starts the driver on `loop`: its first look at the files happens at
 * once, from the loop. Option strings are copied. Returns it, or NULL with
 * `err` set (out of memory, no random source, an HTTP client that cannot
 * be made).
 */
enrol_driver *enrol_driver_create(uv_loop_t *loop, const struct enrol_driver_options *options,
                                  char *err, size_t err_size);

/* Copies the driver's state for the status page. `d` may be NULL (zeroes). */
void enrol_driver_get_status(const enrol_driver *d, struct enrol_driver_status *status);

/*
 * Abandons a request in flight (its key stays pending on disk for the next
 * run: enrol.h), closes the timer and the clients, frees the driver from
 * the loop. `d` may be NULL.
 */
void enrol_driver_close(enrol_driver *d);

#endif
