/*
 * enrol_answer.c - reading the collector's answer to an enrolment: EST's
 * certs-only PKCS#7, whose first certificate must be this device's, for
 * the key it just made; see enrol.h.
 */
#include "enrol/enrol.h"
#include "enrol/enrol_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/asn1.h>
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

/* See enrol_int.h. */
int enrol__same_pubkey(mbedtls_pk_context *a, mbedtls_pk_context *b)
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

/*
 * Finds the subjectAltName extension's GeneralNames in `crt`'s extensions.
 * (mbedTLS 2.28 lists no URI in crt->subject_alt_names, so the extensions
 * are walked with its ASN.1 reader.) Returns 0 with [*p, *end), or -1.
 */
static int answer_find_san(const mbedtls_x509_crt *crt, unsigned char **p,
                           const unsigned char **end)
{
  unsigned char *at = crt->v3_ext.p;
  const unsigned char *stop = at + crt->v3_ext.len;
  size_t len;

  if (!at || crt->v3_ext.len == 0)
    return -1;
  /* v3_ext starts at the [3] EXPLICIT wrapper or at its SEQUENCE. */
  if (*at == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 3) &&
      mbedtls_asn1_get_tag(&at, stop, &len,
                           MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 3) != 0)
    return -1;
  if (mbedtls_asn1_get_tag(&at, stop, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
    return -1;
  stop = at + len;
  while (at < stop) {
    const unsigned char *ext_end;
    mbedtls_x509_buf oid;
    int critical = 0;
    if (mbedtls_asn1_get_tag(&at, stop, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
      return -1;
    ext_end = at + len;
    if (mbedtls_asn1_get_tag(&at, ext_end, &oid.len, MBEDTLS_ASN1_OID))
      return -1;
    oid.p = at;
    at += oid.len;
    (void)mbedtls_asn1_get_bool(&at, ext_end, &critical); /* optional */
    if (mbedtls_asn1_get_tag(&at, ext_end, &len, MBEDTLS_ASN1_OCTET_STRING))
      return -1;
    if (MBEDTLS_OID_CMP(MBEDTLS_OID_SUBJECT_ALT_NAME, &oid) == 0) {
      if (mbedtls_asn1_get_tag(&at, ext_end, &len,
                               MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
        return -1;
      *p = at;
      *end = at + len;
      return 0;
    }
    at = (unsigned char *)ext_end;
  }
  return -1;
}

/*
 * Whether `crt` names `uri` as the collector identifies a device: its
 * subjectAltName has the URI, and no other urn:pos: URI (the collector
 * refuses a certificate with two). The subject is not looked at: the
 * collector's CA writes its own ("CN=<store> <device>").
 */
static int answer_names_uri(const mbedtls_x509_crt *crt, const char *uri)
{
  const unsigned char *end;
  unsigned char *p;
  size_t uri_len = strlen(uri);
  int found = 0;

  if (answer_find_san(crt, &p, &end) != 0)
    return 0;
  while (p < end) {
    unsigned char tag = *p++;
    size_t len;
    if (mbedtls_asn1_get_len(&p, end, &len) != 0)
      return 0;
    if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6) && len >= 8 && memcmp(p, "urn:pos:", 8) == 0) {
      if (len != uri_len || memcmp(p, uri, len) != 0)
        return 0;
      found = 1;
    }
    p += len;
  }
  return found;
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
  char why[300], after[40], now[40], uri[32 + 2 * ENROL_ID_MAX];
  int rc = -1;

  memset(answer, 0, sizeof(*answer));
  mbedtls_x509_crt_init(&chain);
  if (pkcs7_certs_only_parse((const unsigned char *)body, len, 1, &chain, why, sizeof(why)) < 0) {
    snprintf(err, err_size, "the collector's EST answer is not a certificate: %s", why);
    goto out;
  }
  snprintf(uri, sizeof(uri), "urn:pos:store:%s:device:%s", store_id, device_id);
  if (!answer_names_uri(&chain, uri)) {
    snprintf(err, err_size,
             "the collector's EST answer is not for this device: its certificate's "
             "subjectAltName does not name %s (and no other urn:pos: URI); check agent.store_id "
             "and agent.device_id against the enrolment token's",
             uri);
    goto out;
  }
  /* A certificate for another key would lock the device out at its next
   * connection; and it could only come from a confused or hostile server. */
  if (!enrol__same_pubkey(&chain.pk, key)) {
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
