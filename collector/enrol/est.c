/*
 * est.c - the EST endpoints (est.h): requests checked, the issuing CA asked
 * for a certificate, the token's use recorded in Kafka, the answer in the
 * shapes RFC 7030 gives (base64 certs-only PKCS#7).
 */
#include "enrol/est.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#include "platform/clock.h"
#include "platform/log.h"
#include "platform/pkcs7.h"
#include "server/collector_metrics.h"
#include "server/identity.h"

#define EST_MAX_CSR_BYTES (16 * 1024)
#define EST_PKCS7_TYPE "application/pkcs7-mime; smime-type=certs-only"
#define EST_BASE64_HEADER "Content-Transfer-Encoding: base64\r\n"

struct est {
  control *ctl;
  est_ca *ca;
  struct est_options options;
};

/* An enrolment waiting for Kafka to hold its token's use. */
struct est_pending {
  http_exchange *exchange;
  char *answer; /* base64 PKCS#7 of the certificate */
  char store_id[CONTROL_ID_MAX + 1], device_id[CONTROL_ID_MAX + 1];
  char serial[CONTROL_SERIAL_MAX + 1];
  char not_after[32];
  unsigned char key_sha256[32];
};

est *est_create(control *ctl, est_ca *ca, const struct est_options *options)
{
  est *e = calloc(1, sizeof(*e));
  if (!e)
    return NULL;
  e->ctl = ctl;
  e->ca = ca;
  e->options = *options;
  return e;
}

void est_destroy(est *e) { free(e); }

static void est_refuse(http_exchange *exchange, int status, const char *extra, const char *what,
                       const char *reason)
{
  char body[700];
  char quoted[760];
  int len = snprintf(body, sizeof(body), "%s\n", reason);

  log_warn("est", "refused", "peer=%s op=%s status=%d reason=%s", http_exchange_peer(exchange),
           what, status, log_quote(reason, quoted, sizeof(quoted)));
  collector_metrics_est(status == 404 || status == 405 ? "other" : what, status);
  http_exchange_respond(exchange, status, "text/plain; charset=utf-8", extra, body,
                        len < 0 ? 0 : (size_t)len >= sizeof(body) ? sizeof(body) - 1 : (size_t)len);
}

/* The body's base64 (line breaks and spaces ignored), decoded. */
static int est_decode_body(http_exchange *exchange, unsigned char **der, size_t *der_len)
{
  size_t len;
  const char *body = http_exchange_body(exchange, &len);

  if (len == 0 || len > EST_MAX_CSR_BYTES * 2)
    return -1;
  return pkcs7_base64_decode((const unsigned char *)body, len, der, der_len);
}

/* "Basic <base64 of user:password>" into its two halves. 0 or -1. */
static int est_basic_auth(const char *header, char *user, size_t user_size, char *password,
                          size_t password_size)
{
  unsigned char decoded[256];
  size_t len = 0;
  const char *colon;

  if (!header || strncasecmp(header, "Basic ", 6) != 0)
    return -1;
  header += 6;
  while (*header == ' ')
    header++;
  if (mbedtls_base64_decode(decoded, sizeof(decoded) - 1, &len, (const unsigned char *)header,
                            strlen(header)) != 0)
    return -1;
  decoded[len] = '\0';
  colon = memchr(decoded, ':', len);
  if (!colon || (size_t)(colon - (char *)decoded) >= user_size ||
      strlen(colon + 1) >= password_size)
    return -1;
  memcpy(user, decoded, (size_t)(colon - (char *)decoded));
  user[colon - (char *)decoded] = '\0';
  snprintf(password, password_size, "%s", colon + 1);
  return 0;
}

/* Issues a certificate for the request in the body; 0 with *answer (base64
 * PKCS#7), the serial, notAfter and its public key's SHA-256, or an HTTP
 * status with `err`. */
static int est_issue(est *e, http_exchange *exchange, const char *store_id, const char *device_id,
                     char **answer, char *serial, size_t serial_size, char *not_after,
                     unsigned char key_sha256[32], char *err, size_t err_size)
{
  unsigned char key_der[2600]; /* an RSA key of 16384 bits */
  int key_len;
  unsigned char *csr = NULL, *cert = NULL;
  size_t csr_len = 0, cert_len = 0;
  mbedtls_x509_crt issued;
  int status = 0;

  if (est_decode_body(exchange, &csr, &csr_len)) {
    snprintf(err, err_size, "the body must be a PKCS#10 certificate request in base64 (DER, "
             "Content-Type: application/pkcs10), at most %d bytes", EST_MAX_CSR_BYTES);
    return 400;
  }
  if (est_ca_issue(e->ca, csr, csr_len, store_id, device_id, clock_wall_ms() / 1000,
                   e->options.cert_lifetime_s, &cert, &cert_len, err, err_size)) {
    free(csr);
    return 400;
  }
  free(csr);
  mbedtls_x509_crt_init(&issued);
  if (mbedtls_x509_crt_parse_der(&issued, cert, cert_len) != 0 ||
      mbedtls_x509_serial_gets(serial, serial_size, &issued.serial) < 0 ||
      (key_len = mbedtls_pk_write_pubkey_der(&issued.pk, key_der, sizeof(key_der))) <= 0 ||
      mbedtls_sha256_ret(key_der + sizeof(key_der) - key_len, (size_t)key_len, key_sha256, 0) ||
      pkcs7_certs_only_write_base64(&issued, answer, err, err_size) != 0) {
    if (!err[0])
      snprintf(err, err_size, "the certificate issued could not be encoded; retry");
    status = 503;
  } else {
    snprintf(not_after, 32, "%04d-%02d-%02dT%02d:%02d:%02dZ", issued.valid_to.year,
             issued.valid_to.mon, issued.valid_to.day, issued.valid_to.hour,
             issued.valid_to.min, issued.valid_to.sec);
  }
  mbedtls_x509_crt_free(&issued);
  free(cert);
  return status;
}

static void est_send_certificate(http_exchange *exchange, const char *op, const char *answer)
{
  collector_metrics_est(op, 200);
  http_exchange_respond(exchange, 200, EST_PKCS7_TYPE, EST_BASE64_HEADER, answer,
                        strlen(answer));
}

static void est_on_token_used(void *arg, int status, const struct control_token *token,
                              const char *text, const char *message)
{
  struct est_pending *pending = arg;
  char reason[400];

  (void)text;
  if (status == 200) {
    log_info("est", "enrolled", "peer=%s store=%s device=%s token_id=%s serial=%s not_after=%s",
             http_exchange_peer(pending->exchange), pending->store_id, pending->device_id,
             token->token_id, pending->serial, pending->not_after);
    est_send_certificate(pending->exchange, "simpleenroll", pending->answer);
  } else {
    snprintf(reason, sizeof(reason), "the token's use could not be recorded in Kafka (%s); it "
             "is still valid: retry", message);
    est_refuse(pending->exchange, 503, "Retry-After: 10\r\n", "simpleenroll", reason);
  }
  free(pending->answer);
  free(pending);
}

/*
 * The device a used token enrolled asks again, its answer lost (a power
 * cut, a timeout): a request for the key that certificate certifies gets a
 * certificate again, with nothing recorded (the token stays used); any other
 * key is refused as the token's second use (`used` says so).
 */
static void est_repeat(est *e, http_exchange *exchange, const struct control_token *token,
                       const char *store_id, const char *device_id, const char *used)
{
  char err[600] = "", serial[CONTROL_SERIAL_MAX + 1], not_after[32], token_id[32];
  unsigned char key_sha256[32];
  char *answer = NULL;

  snprintf(token_id, sizeof(token_id), "%s", token->token_id);
  if (est_issue(e, exchange, store_id, device_id, &answer, serial, sizeof(serial), not_after,
                key_sha256, err, sizeof(err)) != 0 ||
      memcmp(key_sha256, token->public_key_sha256, sizeof(key_sha256)) != 0) {
    free(answer);
    est_refuse(exchange, 403, NULL, "simpleenroll", used);
    return;
  }
  log_info("est", "enrolled", "peer=%s store=%s device=%s token_id=%s serial=%s not_after=%s "
           "repeat=1", http_exchange_peer(exchange), store_id, device_id, token_id, serial,
           not_after);
  est_send_certificate(exchange, "simpleenroll", answer);
  free(answer);
}

static void est_simpleenroll(est *e, http_exchange *exchange)
{
  char user[2 * CONTROL_ID_MAX + 2], token_text[CONTROL_TOKEN_TEXT_MAX + 8];
  char store_id[CONTROL_ID_MAX + 1], device_id[CONTROL_ID_MAX + 1];
  char err[600] = "";
  const struct control_token *token;
  struct est_pending *pending;
  const char *slash;
  int status;

  if (est_basic_auth(http_exchange_header(exchange, "Authorization"), user, sizeof(user),
                     token_text, sizeof(token_text)) ||
      !(slash = strchr(user, '/')) || slash == user || !slash[1] ||
      (size_t)(slash - user) > CONTROL_ID_MAX || strlen(slash + 1) > CONTROL_ID_MAX) {
    est_refuse(exchange, 401, "WWW-Authenticate: Basic realm=\"pos-est\"\r\n", "simpleenroll",
               "enrolment needs head office's one-time token: HTTP Basic authentication with "
               "the user \"<store_id>/<device_id>\" and the token as the password");
    return;
  }
  memcpy(store_id, user, (size_t)(slash - user));
  store_id[slash - user] = '\0';
  snprintf(device_id, sizeof(device_id), "%s", slash + 1);
  if ((status = control_store_may_enrol(e->ctl, store_id, err, sizeof(err))) != 0) {
    est_refuse(exchange, status, status >= 500 ? "Retry-After: 5\r\n" : NULL, "simpleenroll",
               err);
    return;
  }
  status = control_token_check(e->ctl, token_text, store_id, device_id, clock_wall_ms(), &token,
                               err, sizeof(err));
  if (status == 403 && token && clock_wall_ms() < token->expires_ms) {
    est_repeat(e, exchange, token, store_id, device_id, err);
    return;
  }
  if (status) {
    est_refuse(exchange, status,
               status == 401   ? "WWW-Authenticate: Basic realm=\"pos-est\"\r\n"
               : status >= 500 ? "Retry-After: 5\r\n"
                               : NULL,
               "simpleenroll", err);
    return;
  }
  pending = calloc(1, sizeof(*pending));
  if (!pending) {
    est_refuse(exchange, 503, "Retry-After: 5\r\n", "simpleenroll", "collector out of memory");
    return;
  }
  pending->exchange = exchange;
  snprintf(pending->store_id, sizeof(pending->store_id), "%s", store_id);
  snprintf(pending->device_id, sizeof(pending->device_id), "%s", device_id);
  /* The request is checked and signed before the token is spent: a bad
   * request leaves the token usable. */
  status = est_issue(e, exchange, store_id, device_id, &pending->answer, pending->serial,
                     sizeof(pending->serial), pending->not_after, pending->key_sha256, err,
                     sizeof(err));
  if (!status)
    status = control_token_use(e->ctl, token->token_id, http_exchange_peer(exchange),
                               pending->serial, pending->key_sha256, est_on_token_used, pending,
                               err, sizeof(err));
  if (status) {
    est_refuse(exchange, status, status >= 500 ? "Retry-After: 5\r\n" : NULL, "simpleenroll",
               err);
    free(pending->answer);
    free(pending);
  }
}

static void est_simplereenroll(est *e, http_exchange *exchange)
{
  const struct mbedtls_x509_crt *current = http_exchange_peer_cert(exchange);
  char err[600] = "", serial[CONTROL_SERIAL_MAX + 1], not_after[32];
  unsigned char key_sha256[32];
  struct identity id;
  char *answer = NULL;
  int status;

  if (!current) {
    est_refuse(exchange, 403, NULL, "simplereenroll",
               "renewal needs the device's current certificate, valid and not revoked (mutual "
               "TLS); a device whose certificate expired enrols again with a new token from "
               "head office (simpleenroll)");
    return;
  }
  if (identity_from_cert(current, &id, err, sizeof(err)) != 0 || id.kind != IDENTITY_DEVICE) {
    est_refuse(exchange, 403, NULL, "simplereenroll",
               id.kind == IDENTITY_ADMIN ? "an admin certificate is not renewed over EST"
                                         : err);
    return;
  }
  status = control_store_may_enrol(e->ctl, id.store_id, err, sizeof(err));
  if (!status)
    status = est_issue(e, exchange, id.store_id, id.device_id, &answer, serial, sizeof(serial),
                       not_after, key_sha256, err, sizeof(err));
  if (status) {
    est_refuse(exchange, status, status >= 500 ? "Retry-After: 5\r\n" : NULL, "simplereenroll",
               err);
    return;
  }
  log_info("est", "renewed", "peer=%s store=%s device=%s serial=%s not_after=%s",
           http_exchange_peer(exchange), id.store_id, id.device_id, serial, not_after);
  est_send_certificate(exchange, "simplereenroll", answer);
  free(answer);
}

static void est_cacerts(est *e, http_exchange *exchange)
{
  char err[200] = "";
  char *answer = NULL;

  if (pkcs7_certs_only_write_base64(est_ca_chain(e->ca), &answer, err, sizeof(err)) != 0) {
    est_refuse(exchange, 503, "Retry-After: 5\r\n", "cacerts", err);
    return;
  }
  est_send_certificate(exchange, "cacerts", answer);
  free(answer);
}

void est_handle(est *e, http_exchange *exchange)
{
  const char *op = http_exchange_path(exchange) + strlen(EST_PATH_PREFIX);
  const char *method = http_exchange_method(exchange);
  int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;

  if (!e) {
    est_refuse(exchange, 404, NULL, op, "this collector does not enrol devices ([enrol] ca_cert "
               "and ca_key are not set)");
  } else if (strcmp(op, "cacerts") == 0) {
    if (get)
      est_cacerts(e, exchange);
    else
      est_refuse(exchange, 405, "Allow: GET\r\n", op, "use GET");
  } else if (strcmp(op, "simpleenroll") == 0 || strcmp(op, "simplereenroll") == 0) {
    if (!post)
      est_refuse(exchange, 405, "Allow: POST\r\n", op, "use POST");
    else if (op[6] == 'e')
      est_simpleenroll(e, exchange);
    else
      est_simplereenroll(e, exchange);
  } else {
    est_refuse(exchange, 404, NULL, op, "no such EST operation: GET cacerts, POST simpleenroll, "
               "POST simplereenroll");
  }
}

void est_listener_handle(http_exchange *exchange, void *arg)
{
  if (strncmp(http_exchange_path(exchange), EST_PATH_PREFIX, strlen(EST_PATH_PREFIX)) != 0) {
    est_refuse(exchange, 404, NULL, "-", "this port serves EST only (/.well-known/est/cacerts, "
               "simpleenroll, simplereenroll); batches and the admin API are on [server] port");
    return;
  }
  est_handle(arg, exchange);
}
