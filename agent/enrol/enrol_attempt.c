/*
 * enrol_attempt.c - one enrolment or renewal from the new key to the
 * installed pair, around the uplink's HTTP request; see enrol.h.
 */
#include "enrol/enrol.h"
#include "enrol/enrol_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mbedtls/ecp.h>
#include <mbedtls/platform_util.h>

#include "platform/tls.h"

/*
 * The pending key of an attempt that did not finish, into attempt->key:
 * 1 when there is one to reuse (a P-256 key that is not the live one), 0
 * when a new key is needed (none, unreadable, or already live).
 */
static int attempt_load_pending(struct enrol_attempt *attempt, const char *key_path)
{
  mbedtls_pk_context live;
  int usable;

  if (mbedtls_pk_parse_keyfile(&attempt->key, attempt->pending_path, NULL) != 0 ||
      mbedtls_pk_get_type(&attempt->key) != MBEDTLS_PK_ECKEY ||
      mbedtls_pk_ec(attempt->key)->grp.id != MBEDTLS_ECP_DP_SECP256R1) {
    mbedtls_pk_free(&attempt->key);
    mbedtls_pk_init(&attempt->key);
    return 0;
  }
  /* Installed, but the pending file outlived the install (a stop between
   * the two): a renewal needs a new key, not the live one again. */
  mbedtls_pk_init(&live);
  usable = !(mbedtls_pk_parse_keyfile(&live, key_path, NULL) == 0 &&
             enrol__same_pubkey(&live, &attempt->key));
  mbedtls_pk_free(&live);
  if (!usable) {
    mbedtls_pk_free(&attempt->key);
    mbedtls_pk_init(&attempt->key);
  }
  return usable;
}

/* See enrol.h. */
int enrol_attempt_start(struct enrol_attempt *attempt, enum enrol_est_op op,
                        const char *base_url, const char *store_id, const char *device_id,
                        const char *token, const char *key_path, mbedtls_ctr_drbg_context *drbg,
                        char *err, size_t err_size)
{
  unsigned char *csr = NULL;
  size_t csr_len = 0;
  int rc = 0, n;

  memset(attempt, 0, sizeof(*attempt));
  mbedtls_pk_init(&attempt->key);
  if (op != ENROL_EST_ENROL && op != ENROL_EST_REENROL) {
    snprintf(err, err_size, "an enrolment attempt is simpleenroll or simplereenroll");
    return -1;
  }
  if (key_path) {
    n = snprintf(attempt->pending_path, sizeof(attempt->pending_path), "%s.pending", key_path);
    if (n < 0 || (size_t)n >= sizeof(attempt->pending_path)) {
      snprintf(err, err_size, "the device key's path %s is too long", key_path);
      return -1;
    }
    attempt->reused = attempt_load_pending(attempt, key_path);
  }
  if (!attempt->reused) {
    rc = enrol_key_generate(&attempt->key, drbg, err, err_size);
    /* On disk before the request leaves: the answer may be lost. */
    if (rc == 0 && attempt->pending_path[0])
      rc = enrol_key_write(&attempt->key, attempt->pending_path, err, err_size);
  }
  /* The CSR checks the ids; copied only once known to fit. */
  if (rc == 0)
    rc = enrol_csr_write(&attempt->key, store_id, device_id, drbg, &csr, &csr_len, err,
                         err_size);
  if (rc == 0) {
    snprintf(attempt->store_id, sizeof(attempt->store_id), "%s", store_id);
    snprintf(attempt->device_id, sizeof(attempt->device_id), "%s", device_id);
    rc = enrol_est_request_build(op, base_url, store_id, device_id, token, csr, csr_len,
                                 &attempt->request, err, err_size);
  }
  free(csr);
  return rc;
}

/* See enrol.h. */
int enrol_attempt_finish(struct enrol_attempt *attempt, long status, const char *body,
                         size_t body_len, int64_t retry_after_s, int64_t now_s,
                         const char *cert_path, const char *key_path,
                         struct enrol_est_outcome *outcome, int64_t *not_after, char *err,
                         size_t err_size)
{
  struct enrol_answer answer;
  /* A P-256 key in PEM (SEC1) is about 230 bytes. */
  unsigned char key_pem[1024];
  char text[200];
  int rc;

  enrol_est_answer_classify(status, body, body_len, retry_after_s, now_s, outcome);
  if (outcome->verdict != ENROL_EST_ISSUED) {
    snprintf(err, err_size, "%s", outcome->message);
    return -1;
  }
  if (enrol_answer_read(body, body_len, &attempt->key, attempt->store_id, attempt->device_id,
                        now_s, &answer, err, err_size) != 0)
    return -1;
  rc = mbedtls_pk_write_key_pem(&attempt->key, key_pem, sizeof(key_pem));
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "cannot encode the new device key: %s", text);
    rc = -1;
  } else {
    rc = enrol_install(cert_path, key_path, answer.cert_pem, (const char *)key_pem, err,
                       err_size);
  }
  if (rc == 0 && not_after)
    *not_after = answer.not_after;
  /* Installed: the pending key is the live one now. Left behind by a
   * failed unlink, the next start sees that and makes a new key. */
  if (rc == 0 && attempt->pending_path[0])
    (void)unlink(attempt->pending_path);
  mbedtls_platform_zeroize(key_pem, sizeof(key_pem));
  enrol_answer_free(&answer);
  return rc;
}

/* See enrol.h. */
void enrol_attempt_free(struct enrol_attempt *attempt)
{
  if (!attempt)
    return;
  /* mbedtls_pk_free() zeroizes the key's memory. */
  mbedtls_pk_free(&attempt->key);
  enrol_est_request_free(&attempt->request);
  memset(attempt, 0, sizeof(*attempt));
}
