/*
 * est_ca.c - the issuing CA of EST enrolment (est_ca.h), with mbedTLS's
 * certificate writer. Every certificate issued is verified against the CA
 * before it is handed out: what a device receives always chains.
 */
#include "enrol/est_ca.h"
#include "server/identity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_csr.h>
#include <mbedtls/x509_crt.h>

#include "platform/tls.h"

/* notBefore is set back so that a device clock a little behind the CA's
 * does not find its new certificate not yet valid: by 5 minutes, but never
 * by more than a tenth of the lifetime. A device plans its renewal from
 * notBefore (renew_at of notAfter - notBefore), so a fixed 5 minutes would
 * put a 1-minute test certificate past its renewal time when issued; a
 * tenth keeps a short lifetime's renewal where it was asked for, and a
 * lifetime of an hour or more gets the full 5 minutes. */
#define EST_CA_BACKDATE_MAX_S 300
#define EST_CA_BACKDATE_SHARE 10

struct est_ca {
  mbedtls_x509_crt chain; /* the CA's certificate first */
  mbedtls_pk_context key;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  char issuer[512]; /* the CA's subject, as mbedtls_x509write_crt_set_issuer_name takes it */
  int64_t not_after_s;
};

/* "YYYYMMDDhhmmss", as mbedtls_x509write_crt_set_validity takes it. */
static void est_ca_time_text(int64_t at, char out[16])
{
  time_t t = (time_t)at;
  struct tm tm;
  if (!gmtime_r(&t, &tm) || strftime(out, 16, "%Y%m%d%H%M%S", &tm) != 14)
    snprintf(out, 16, "20000101000000");
}

est_ca *est_ca_load(const char *cert_file, const char *key_file, char *err, size_t err_size)
{
  est_ca *ca = calloc(1, sizeof(*ca));

  if (!ca) {
    snprintf(err, err_size, "out of memory loading the issuing CA");
    return NULL;
  }
  mbedtls_x509_crt_init(&ca->chain);
  mbedtls_pk_init(&ca->key);
  mbedtls_entropy_init(&ca->entropy);
  mbedtls_ctr_drbg_init(&ca->drbg);
  if (tls_seed(&ca->entropy, &ca->drbg, "pos-est-ca", err, err_size) != 0 ||
      tls_load_identity(&ca->chain, &ca->key, cert_file, key_file, "the issuing CA certificate",
                        "the issuing CA key", err, err_size) != 0)
    goto fail;
  if (!ca->chain.ca_istrue ||
      mbedtls_x509_crt_check_key_usage(&ca->chain, MBEDTLS_X509_KU_KEY_CERT_SIGN) != 0) {
    snprintf(err, err_size,
             "the issuing CA certificate %s is not a CA that may sign certificates (it needs "
             "basicConstraints CA:TRUE and, if it has keyUsage, keyCertSign)",
             cert_file);
    goto fail;
  }
  if (mbedtls_x509_dn_gets(ca->issuer, sizeof(ca->issuer), &ca->chain.subject) < 0) {
    snprintf(err, err_size, "the issuing CA certificate %s: its subject cannot be read",
             cert_file);
    goto fail;
  }
  ca->not_after_s = tls_x509_time_s(&ca->chain.valid_to);
  if (mbedtls_x509_time_is_past(&ca->chain.valid_to)) {
    snprintf(err, err_size, "the issuing CA certificate %s has expired", cert_file);
    goto fail;
  }
  return ca;
fail:
  est_ca_free(ca);
  return NULL;
}

void est_ca_free(est_ca *ca)
{
  if (!ca)
    return;
  mbedtls_x509_crt_free(&ca->chain);
  mbedtls_pk_free(&ca->key);
  mbedtls_ctr_drbg_free(&ca->drbg);
  mbedtls_entropy_free(&ca->entropy);
  free(ca);
}

const mbedtls_x509_crt *est_ca_chain(const est_ca *ca) { return &ca->chain; }

/* The request's signature, made with the key it carries: the device holds
 * that key. */
static int est_ca_csr_signed(const mbedtls_x509_csr *csr, char *err, size_t err_size)
{
  if (tls_verify_signed(&csr->cri, csr->sig_md, csr->sig_pk, csr->sig_opts, &csr->pk,
                        &csr->sig) != 0) {
    snprintf(err, err_size,
             "the certificate request's signature does not match its public key: it was "
             "damaged, or made without the private key (or its algorithm is not supported)");
    return -1;
  }
  return 0;
}

/* The key of a request: EC of at least 256 bits or RSA of at least 2048. */
static int est_ca_key_ok(const mbedtls_pk_context *pk, char *err, size_t err_size)
{
  mbedtls_pk_type_t type = mbedtls_pk_get_type(pk);
  size_t bits = mbedtls_pk_get_bitlen(pk);

  if ((type == MBEDTLS_PK_ECKEY && bits >= 256) || (type == MBEDTLS_PK_RSA && bits >= 2048))
    return 0;
  snprintf(err, err_size,
           "the certificate request's key (%s, %zu bits) is refused: use EC P-256 or larger, "
           "or RSA of 2048 bits or more",
           mbedtls_pk_get_name(pk), bits);
  return -1;
}

/* The subjectAltName extension's value naming `uri`, written at the end of
 * buf (mbedTLS's ASN.1 writer). Returns its length, or an mbedTLS error. */
static int est_ca_san(unsigned char *buf, size_t size, const char *uri)
{
  unsigned char *p = buf + size;
  size_t len = 0;
  int rc;

  if ((rc = mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)uri, strlen(uri))) < 0)
    return rc;
  len += (size_t)rc;
  if ((rc = mbedtls_asn1_write_len(&p, buf, len)) < 0)
    return rc;
  len += (size_t)rc;
  /* uniformResourceIdentifier [6] IMPLICIT IA5String */
  if ((rc = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6)) < 0)
    return rc;
  len += (size_t)rc;
  if ((rc = mbedtls_asn1_write_len(&p, buf, len)) < 0)
    return rc;
  len += (size_t)rc;
  if ((rc = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0)
    return rc;
  return (int)(len + (size_t)rc);
}

/* The extKeyUsage extension's value, client authentication only, as above. */
static int est_ca_eku(unsigned char *buf, size_t size)
{
  unsigned char *p = buf + size;
  size_t len = 0;
  int rc;

  if ((rc = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_CLIENT_AUTH,
                                   MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH))) < 0)
    return rc;
  len += (size_t)rc;
  if ((rc = mbedtls_asn1_write_len(&p, buf, len)) < 0)
    return rc;
  len += (size_t)rc;
  if ((rc = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0)
    return rc;
  return (int)(len + (size_t)rc);
}

int est_ca_issue(est_ca *ca, const unsigned char *csr_der, size_t csr_len, const char *store_id,
                 const char *device_id, int64_t now_s, int64_t lifetime_s, unsigned char **der,
                 size_t *der_len, char *err, size_t err_size)
{
  mbedtls_x509_csr csr;
  mbedtls_x509write_cert crt;
  mbedtls_x509_crt issued;
  mbedtls_mpi serial;
  unsigned char serial_bytes[16], san[256], eku[32];
  unsigned char *buf = NULL;
  const size_t buf_size = 4096;
  char subject[2 * IDENTITY_ID_MAX + 8], uri[2 * IDENTITY_ID_MAX + 32], from[16], to[16], text[200];
  int64_t until, backdate_s;
  int rc, len, result = -1;
  uint32_t flags = 0;

  mbedtls_x509_csr_init(&csr);
  mbedtls_x509write_crt_init(&crt);
  mbedtls_x509_crt_init(&issued);
  mbedtls_mpi_init(&serial);
  if (!identity_id_valid(store_id, strlen(store_id)) ||
      !identity_id_valid(device_id, strlen(device_id))) {
    snprintf(err, err_size, "store and device ids are 1 to %d of A-Z a-z 0-9 . _ -",
             IDENTITY_ID_MAX);
    goto out;
  }
  if (lifetime_s <= 0) {
    snprintf(err, err_size, "a certificate's lifetime must be positive");
    goto out;
  }
  rc = mbedtls_x509_csr_parse_der(&csr, csr_der, csr_len);
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "the certificate request is not a PKCS#10 request: %s", text);
    goto out;
  }
  if (est_ca_csr_signed(&csr, err, err_size) || est_ca_key_ok(&csr.pk, err, err_size))
    goto out;
  until = now_s + lifetime_s;
  if (until > ca->not_after_s)
    until = ca->not_after_s;
  backdate_s = lifetime_s / EST_CA_BACKDATE_SHARE;
  if (backdate_s > EST_CA_BACKDATE_MAX_S)
    backdate_s = EST_CA_BACKDATE_MAX_S;
  est_ca_time_text(now_s - backdate_s, from);
  est_ca_time_text(until, to);
  snprintf(subject, sizeof(subject), "CN=%s %s", store_id, device_id);
  snprintf(uri, sizeof(uri), "urn:pos:store:%s:device:%s", store_id, device_id);
  buf = malloc(buf_size);
  if (!buf) {
    snprintf(err, err_size, "out of memory issuing a certificate");
    goto out;
  }
  /* A random positive serial of 127 bits (RFC 5280: at most 20 octets). */
  rc = mbedtls_ctr_drbg_random(&ca->drbg, serial_bytes, sizeof(serial_bytes));
  serial_bytes[0] &= 0x7f;
  if (rc != 0 || mbedtls_mpi_read_binary(&serial, serial_bytes, sizeof(serial_bytes)) != 0) {
    snprintf(err, err_size, "the CA's random generator failed");
    goto out;
  }
  mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
  mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
  mbedtls_x509write_crt_set_subject_key(&crt, &csr.pk);
  mbedtls_x509write_crt_set_issuer_key(&crt, &ca->key);
  {
    int san_len = est_ca_san(san, sizeof(san), uri);
    int eku_len = est_ca_eku(eku, sizeof(eku));
    if (san_len < 0 || eku_len < 0 ||
        (rc = mbedtls_x509write_crt_set_serial(&crt, &serial)) != 0 ||
        (rc = mbedtls_x509write_crt_set_validity(&crt, from, to)) != 0 ||
        (rc = mbedtls_x509write_crt_set_issuer_name(&crt, ca->issuer)) != 0 ||
        (rc = mbedtls_x509write_crt_set_subject_name(&crt, subject)) != 0 ||
        (rc = mbedtls_x509write_crt_set_basic_constraints(&crt, 0, -1)) != 0 ||
        (rc = mbedtls_x509write_crt_set_key_usage(&crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE)) !=
            0 ||
        (rc = mbedtls_x509write_crt_set_subject_key_identifier(&crt)) != 0 ||
        (rc = mbedtls_x509write_crt_set_authority_key_identifier(&crt)) != 0 ||
        (rc = mbedtls_x509write_crt_set_extension(
             &crt, MBEDTLS_OID_SUBJECT_ALT_NAME, MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0,
             san + sizeof(san) - san_len, (size_t)san_len)) != 0 ||
        (rc = mbedtls_x509write_crt_set_extension(
             &crt, MBEDTLS_OID_EXTENDED_KEY_USAGE,
             MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0, eku + sizeof(eku) - eku_len,
             (size_t)eku_len)) != 0) {
      snprintf(err, err_size, "setting up the certificate failed (mbedTLS error -0x%04x)",
               (unsigned)(rc < 0 ? -rc : rc));
      goto out;
    }
  }
  len = mbedtls_x509write_crt_der(&crt, buf, buf_size, mbedtls_ctr_drbg_random, &ca->drbg);
  if (len < 0) {
    tls_error_text(len, text, sizeof(text));
    snprintf(err, err_size, "signing the certificate failed: %s", text);
    goto out;
  }
  memmove(buf, buf + buf_size - (size_t)len, (size_t)len);
  /* What is handed out chains to the CA, or is not handed out. */
  rc = mbedtls_x509_crt_parse_der(&issued, buf, (size_t)len);
  if (rc == 0)
    rc = mbedtls_x509_crt_verify(&issued, &ca->chain, NULL, NULL, &flags, NULL, NULL);
  if (rc != 0) {
    if (flags)
      tls_verify_text(flags, text, sizeof(text));
    else
      tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "the certificate issued does not verify against the CA: %s", text);
    goto out;
  }
  *der = buf;
  *der_len = (size_t)len;
  buf = NULL;
  result = 0;
out:
  free(buf);
  mbedtls_mpi_free(&serial);
  mbedtls_x509_crt_free(&issued);
  mbedtls_x509write_crt_free(&crt);
  mbedtls_x509_csr_free(&csr);
  return result;
}
