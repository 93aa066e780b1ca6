/*
 * enrol_csr.c - the PKCS#10 certificate request the device sends to EST's
 * simpleenroll and simplereenroll; see enrol.h.
 */
#include "enrol/enrol.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/base64.h>
#include <mbedtls/oid.h>
#include <mbedtls/x509_csr.h>

#include "platform/tls.h"

/* A P-256 request with our names is about 400 bytes. */
#define ENROL_CSR_MAX 2048

/* See enrol.h. */
int enrol_id_valid(const char *id)
{
  size_t n = 0;

  for (const char *p = id; *p; p++, n++)
    if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-')
      return 0;
  return n >= 1 && n <= ENROL_ID_MAX;
}

/*
 * Writes the subjectAltName extension's value, a GeneralNames holding one
 * uniformResourceIdentifier (RFC 5280 4.2.1.6: [6] IMPLICIT IA5String),
 * backwards from `*p` as mbedTLS's ASN.1 writers do. Returns its length, or
 * a negative mbedTLS error. (mbedTLS 2.28 writes SANs for no CSR.)
 */
static int csr_san_uri(unsigned char **p, unsigned char *start, const char *uri)
{
  size_t len = 0;
  int ret; /* the name MBEDTLS_ASN1_CHK_ADD uses */

  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_raw_buffer(p, start, (const unsigned char *)uri,
                                                          strlen(uri)));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(p, start, len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(p, start, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(p, start, len));
  MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(p, start,
                                                   MBEDTLS_ASN1_CONSTRUCTED |
                                                       MBEDTLS_ASN1_SEQUENCE));
  return (int)len;
}

/* See enrol.h. */
int enrol_csr_write(mbedtls_pk_context *key, const char *store_id, const char *device_id,
                    mbedtls_ctr_drbg_context *drbg, unsigned char **der, size_t *der_len,
                    char *err, size_t err_size)
{
  mbedtls_x509write_csr csr;
  char uri[32 + 2 * ENROL_ID_MAX], subject[sizeof(uri) + 8], text[200];
  unsigned char san[sizeof(uri) + 16], *san_start;
  unsigned char *buf = NULL;
  const char *step = "";
  int rc = 0, len;

  *der = NULL;
  *der_len = 0;
  if (!enrol_id_valid(store_id) || !enrol_id_valid(device_id)) {
    snprintf(err, err_size,
             "cannot make a certificate request for store \"%.64s\" device \"%.64s\": ids are "
             "1-64 characters [A-Za-z0-9._-]; check agent.store_id and agent.device_id",
             store_id, device_id);
    return -1;
  }
  snprintf(uri, sizeof(uri), "urn:pos:store:%s:device:%s", store_id, device_id);
  /* The ids' characters need no escaping in mbedTLS's subject syntax. */
  snprintf(subject, sizeof(subject), "CN=%s", uri);
  mbedtls_x509write_csr_init(&csr);
  mbedtls_x509write_csr_set_md_alg(&csr, MBEDTLS_MD_SHA256);
  mbedtls_x509write_csr_set_key(&csr, key);
  step = "subject";
  rc = mbedtls_x509write_csr_set_subject_name(&csr, subject);
  if (rc == 0) {
    step = "subjectAltName";
    san_start = san + sizeof(san);
    len = csr_san_uri(&san_start, san, uri);
    rc = len < 0 ? len
                 : mbedtls_x509write_csr_set_extension(
                       &csr, MBEDTLS_OID_SUBJECT_ALT_NAME,
                       MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), san_start, (size_t)len);
  }
  if (rc == 0) {
    step = "key usage";
    rc = mbedtls_x509write_csr_set_key_usage(&csr, MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
  }
  if (rc == 0) {
    step = "signature";
    buf = malloc(ENROL_CSR_MAX);
    if (!buf) {
      snprintf(err, err_size, "cannot make a certificate request: out of memory");
      rc = -1;
      goto out;
    }
    /* mbedTLS writes the DER at the end of the buffer. */
    len = mbedtls_x509write_csr_der(&csr, buf, ENROL_CSR_MAX, mbedtls_ctr_drbg_random, drbg);
    rc = len < 0 ? len : 0;
  }
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "cannot make the certificate request for %s (%s): %s", uri, step,
             text);
    rc = -1;
    goto out;
  }
  memmove(buf, buf + ENROL_CSR_MAX - len, (size_t)len);
  *der = buf;
  *der_len = (size_t)len;
  buf = NULL;
out:
  free(buf);
  mbedtls_x509write_csr_free(&csr);
  return rc;
}

/* See enrol.h. */
char *enrol_base64(const unsigned char *data, size_t len)
{
  size_t size = 4 * ((len + 2) / 3) + 1, written = 0;
  unsigned char *text = malloc(size);

  if (!text)
    return NULL;
  if (mbedtls_base64_encode(text, size, &written, data, len) != 0) {
    free(text);
    return NULL;
  }
  return (char *)text;
}
