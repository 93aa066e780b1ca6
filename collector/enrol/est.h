/*
 * est.h - the collector's EST service (RFC 7030) for device certificates:
 *
 *   GET  /.well-known/est/cacerts          the issuing CA chain (no credentials)
 *   POST /.well-known/est/simpleenroll     a new device: a one-time token from
 *        head office (HTTP Basic, user "<store_id>/<device_id>", password the
 *        token) and a PKCS#10 request; the token is marked used in Kafka
 *        before the certificate is answered
 *   POST /.well-known/est/simplereenroll   renewal: the device's current,
 *        valid certificate (mutual TLS) and a request for its new key
 *
 * Requests and answers are base64 DER (Content-Transfer-Encoding: base64);
 * certificates come back as a certs-only PKCS#7 (application/pkcs7-mime),
 * so any EST client can enrol. The certificate names the store and device
 * of the token or of the current certificate, never what the request asks.
 * Every refusal is plain text that says what to do.
 */
#ifndef COLLECTOR_ENROL_EST_H
#define COLLECTOR_ENROL_EST_H

#include <stdint.h>

#include "control/control.h"
#include "enrol/est_ca.h"
#include "platform/http_server.h"

#define EST_PATH_PREFIX "/.well-known/est/"

typedef struct est est;

struct est_options {
  int64_t cert_lifetime_s; /* of the certificates issued */
};

/* `ctl` and `ca` are borrowed and must outlive the service. NULL when out of memory. */
est *est_create(control *ctl, est_ca *ca, const struct est_options *options);
void est_destroy(est *e);

/*
 * Answers a request whose path starts with EST_PATH_PREFIX (404 for another
 * EST operation). `e` may be NULL: 404 saying this collector does not enrol.
 * Loop thread.
 */
void est_handle(est *e, http_exchange *exchange);

/* The handler of the EST listener (`arg` is the est): EST paths only. */
void est_listener_handle(http_exchange *exchange, void *arg);

#endif
