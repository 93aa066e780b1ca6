/*
 * enrol_answer.c - reading the collector's answer to an enrolment: EST's
 * certs-only PKCS#7, whose first certificate must be this device's, for
 * the key it just made; see enrol.h.
 */
#include "enrol/enrol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/x509_crt.h>

#include "platform/clock.h"
#include "platform/pkcs7.h"
#include "platform/tls.h"

#define ENROL_PEM_BEGIN "-----BEGIN CERTIFICATE-----\n"
#define ENROL_PEM_END "-----END CERTIFICATE-----\n"
/* A public key in DER: P-256 is 91 bytes, RSA-4096 about 550. */
#define ENROL_PUBKEY_MAX 1024

/* Whether `a` and `b` are the same public key (their DER compared). */
static int answer_same_pubkey(mbedtls_pk_context *a, mbedtls_pk_context *b)
{
  unsigned char der_a[ENROL_PUBKEY_MAX], der_b[ENROL_PUBKEY_MAX];
  int len_a, len_b;

  /* Written at the end of each buffer. */
  len_a = mbedtls_pk_write_pubkey_der(a, der_a, sizeof(der_a));
  len_b = mbedtls_pk_write_pubkey_der(b, der_b, sizeof(der_b));
  return len_a > 0 && len_a == len_b &&
         memcmp(der_a + sizeof(der_a) - len_a, der_b + sizeof(der_b) - len_b, (size_t)len_a) ==
             0;
}

/* The subject's common name, or "" (at most out_size - 1 bytes). */
static void answer_subject_cn(const mbedtls_x509_crt *crt, char *out, size_t out_size)
{
  out[0] = '\0';
  for (const mbedtls_x509_name *name = &crt->subject; name; name = name->next) {
    if (name->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &name->oid) == 0) {
      size_t n = name->val.len < out_size - 1 ? name->val.len : out_size - 1;
      memcpy(out, name->val.p, n);
      out[n] = '\0';
      return;
    }
  }
}

/* The chain as PEM, in its order (malloc'd), or NULL when out of memory. */
static char *answer_chain_pem(const mbedtls_x509_crt *chain, int *count)
{
  size_t size = 1, used = 0, written;
  char *pem;

  *count = 0;
  /* PEM is 4/3 of the DER plus a line break per 64 characters and armour. */
  for (const mbedtls_x509_crt *crt = chain; crt && crt->raw.len; crt = crt->next)
    size += crt->raw.len * 3 / 2 + 128;
  pem = malloc(size);
  if (!pem)
    return NULL;
  for (const mbedtls_x509_crt *crt = chain; crt && crt->raw.len; crt = crt->next) {
    if (mbedtls_pem_write_buffer(ENROL_PEM_BEGIN, ENROL_PEM_END, crt->raw.p, crt->raw.len,
                                 (unsigned char *)pem + used, size - used, &written) != 0) {
      free(pem);
      return NULL;
    }
    used += written - 1; /* written counts the NUL */
    (*count)++;
  }
  pem[used] = '\0';
  return pem;
}

/* See enrol.h. */
int enrol_answer_read(const char *body, size_t len, mbedtls_pk_context *key, const char *store_id,
                      const char *device_id, int64_t now_s, struct enrol_answer *answer, char *err,
                      size_t err_size)
{
  mbedtls_x509_crt chain;
  char why[300], after[40], now[40], uri[32 + 2 * ENROL_ID_MAX], cn[sizeof(uri) + 1];
  int rc = -1;

  memset(answer, 0, sizeof(*answer));
  mbedtls_x509_crt_init(&chain);
  if (pkcs7_certs_only_parse((const unsigned char *)body, len, 1, &chain, why, sizeof(why)) < 0) {
    snprintf(err, err_size, "the collector's EST answer is not a certificate: %s", why);
    goto out;
  }
  snprintf(uri, sizeof(uri), "urn:pos:store:%s:device:%s", store_id, device_id);
  answer_subject_cn(&chain, cn, sizeof(cn));
  if (strcmp(cn, uri) != 0) {
    snprintf(err, err_size,
             "the collector's EST answer names \"%s\", not this device (%s); check agent.store_id "
             "and agent.device_id against the enrolment token's",
             cn, uri);
    goto out;
  }
  /* A certificate for another key would lock the device out at its next
   * connection; and it could only come from a confused or hostile server. */
  if (!answer_same_pubkey(&chain.pk, key)) {
    snprintf(err, err_size,
             "the collector's EST answer certifies another key than the one this device just "
             "made for %s; nothing installed",
             uri);
    goto out;
  }
  answer->not_before = tls_x509_time_s(&chain.valid_from);
  answer->not_after = tls_x509_time_s(&chain.valid_to);
  if (answer->not_after <= answer->not_before) {
    snprintf(err, err_size,
             "the collector's EST answer has a certificate that is never valid (notAfter is not "
             "after notBefore); check the collector's issuing CA settings");
    goto out;
  }
  if (answer->not_after <= now_s) {
    clock_format_utc(answer->not_after * 1000, after, sizeof(after));
    clock_format_utc(now_s * 1000, now, sizeof(now));
    snprintf(err, err_size,
             "the collector's EST answer has a certificate that already expired (at %s; the "
             "device clock says %s); check the device clock and the collector's",
             after, now);
    goto out;
  }
  answer->cert_pem = answer_chain_pem(&chain, &answer->cert_count);
  if (!answer->cert_pem) {
    snprintf(err, err_size, "cannot keep the collector's EST answer: out of memory");
    goto out;
  }
  rc = 0;
out:
  if (rc != 0)
    memset(answer, 0, sizeof(*answer));
  mbedtls_x509_crt_free(&chain);
  return rc;
}

/* See enrol.h. */
void enrol_answer_free(struct enrol_answer *answer)
{
  if (!answer)
    return;
  free(answer->cert_pem);
  memset(answer, 0, sizeof(*answer));
}
