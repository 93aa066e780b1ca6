/*
 * pkcs7.c - EST's certs-only PKCS#7 (pkcs7.h), with mbedTLS's ASN.1 writer
 * and reader. The shape, RFC 5652 with RFC 7030's "certs-only" use:
 *
 *   ContentInfo ::= SEQUENCE {
 *     contentType id-signedData,
 *     content [0] EXPLICIT SignedData }
 *   SignedData ::= SEQUENCE {
 *     version 1,
 *     digestAlgorithms SET {} (empty),
 *     encapContentInfo SEQUENCE { eContentType id-data } (no content),
 *     certificates [0] IMPLICIT SET OF Certificate,
 *     signerInfos SET {} (empty) }
 *
 * The reader takes what other EST servers send of that shape: a
 * SignedData's certificates, whatever its digest algorithms and signer
 * infos (not checked: EST's answer is trusted for what the TLS connection
 * it came over is, and the certificate is checked against the CA).
 */
#include "platform/pkcs7.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/asn1.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/base64.h>

/* 1.2.840.113549.1.7.2 and 1.2.840.113549.1.7.1 */
static const char pkcs7_oid_signed_data[] = "\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02";
static const char pkcs7_oid_data[] = "\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01";
#define PKCS7_OID_LEN (sizeof(pkcs7_oid_data) - 1)

#define PKCS7_SEQUENCE (MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)
#define PKCS7_SET (MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SET)
#define PKCS7_CONTEXT_0 (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_ASN1_CONSTRUCTED | 0)

/* Adds what one mbedtls_asn1_write_* call wrote to `acc`, or returns its error. */
#define PKCS7_WRITE(acc, call)                                                                \
  do {                                                                                        \
    int written_ = (call);                                                                    \
    if (written_ < 0)                                                                         \
      return written_;                                                                        \
    (acc) += (size_t)written_;                                                                \
  } while (0)

/* Writes `count` certificates of `list` as a ContentInfo, backwards from *p
 * (mbedTLS's ASN.1 writer). Returns the length written or an mbedTLS error. */
static int pkcs7_write_der(unsigned char **p, unsigned char *start,
                           const mbedtls_x509_crt *const *list, size_t count)
{
  size_t signed_len = 0, len = 0, total;

  /* signerInfos, empty */
  PKCS7_WRITE(signed_len, mbedtls_asn1_write_len(p, start, 0));
  PKCS7_WRITE(signed_len, mbedtls_asn1_write_tag(p, start, PKCS7_SET));
  /* certificates [0] IMPLICIT: written last first, read in chain order */
  for (size_t i = count; i-- > 0;)
    PKCS7_WRITE(len, mbedtls_asn1_write_raw_buffer(p, start, list[i]->raw.p, list[i]->raw.len));
  PKCS7_WRITE(len, mbedtls_asn1_write_len(p, start, len));
  PKCS7_WRITE(len, mbedtls_asn1_write_tag(p, start, PKCS7_CONTEXT_0));
  signed_len += len;
  /* encapContentInfo: id-data, no content */
  len = 0;
  PKCS7_WRITE(len, mbedtls_asn1_write_oid(p, start, pkcs7_oid_data, PKCS7_OID_LEN));
  PKCS7_WRITE(len, mbedtls_asn1_write_len(p, start, len));
  PKCS7_WRITE(len, mbedtls_asn1_write_tag(p, start, PKCS7_SEQUENCE));
  signed_len += len;
  /* digestAlgorithms, empty; version 1 */
  PKCS7_WRITE(signed_len, mbedtls_asn1_write_len(p, start, 0));
  PKCS7_WRITE(signed_len, mbedtls_asn1_write_tag(p, start, PKCS7_SET));
  PKCS7_WRITE(signed_len, mbedtls_asn1_write_int(p, start, 1));
  PKCS7_WRITE(signed_len, mbedtls_asn1_write_len(p, start, signed_len));
  PKCS7_WRITE(signed_len, mbedtls_asn1_write_tag(p, start, PKCS7_SEQUENCE));
  /* ContentInfo */
  total = signed_len;
  PKCS7_WRITE(total, mbedtls_asn1_write_len(p, start, total));
  PKCS7_WRITE(total, mbedtls_asn1_write_tag(p, start, PKCS7_CONTEXT_0));
  PKCS7_WRITE(total, mbedtls_asn1_write_oid(p, start, pkcs7_oid_signed_data, PKCS7_OID_LEN));
  PKCS7_WRITE(total, mbedtls_asn1_write_len(p, start, total));
  PKCS7_WRITE(total, mbedtls_asn1_write_tag(p, start, PKCS7_SEQUENCE));
  return (int)total;
}

int pkcs7_certs_only_write(const mbedtls_x509_crt *chain, unsigned char **der, size_t *len,
                           char *err, size_t err_size)
{
  const mbedtls_x509_crt **list = NULL;
  unsigned char *buf = NULL, *p;
  size_t count = 0, size = 64;
  int written, rc = -1;

  for (const mbedtls_x509_crt *c = chain; c && c->raw.len; c = c->next) {
    count++;
    size += c->raw.len + 8;
  }
  if (count == 0) {
    snprintf(err, err_size, "no certificate to put in the PKCS#7");
    return -1;
  }
  list = malloc(count * sizeof(*list));
  buf = malloc(size);
  if (!list || !buf) {
    snprintf(err, err_size, "out of memory writing a PKCS#7 of %zu certificates", count);
    goto out;
  }
  count = 0;
  for (const mbedtls_x509_crt *c = chain; c && c->raw.len; c = c->next)
    list[count++] = c;
  p = buf + size;
  written = pkcs7_write_der(&p, buf, list, count);
  if (written < 0) {
    snprintf(err, err_size, "writing a PKCS#7: mbedTLS error -0x%04x", (unsigned)-written);
    goto out;
  }
  memmove(buf, p, (size_t)written);
  *der = buf;
  *len = (size_t)written;
  buf = NULL;
  rc = 0;
out:
  free(list);
  free(buf);
  return rc;
}

int pkcs7_certs_only_write_base64(const mbedtls_x509_crt *chain, char **text, char *err,
                                  size_t err_size)
{
  unsigned char *der = NULL, *flat = NULL;
  size_t der_len = 0, flat_len = 0, at = 0;
  char *out = NULL;
  int rc = -1;

  if (pkcs7_certs_only_write(chain, &der, &der_len, err, err_size))
    return -1;
  flat = malloc(der_len / 3 * 4 + 8);
  if (!flat || mbedtls_base64_encode(flat, der_len / 3 * 4 + 8, &flat_len, der, der_len) != 0)
    goto oom;
  /* Lines of 64, as PEM and most EST servers do. */
  out = malloc(flat_len + flat_len / 64 + 2);
  if (!out)
    goto oom;
  for (size_t i = 0; i < flat_len; i += 64) {
    size_t n = flat_len - i < 64 ? flat_len - i : 64;
    memcpy(out + at, flat + i, n);
    at += n;
    out[at++] = '\n';
  }
  out[at] = '\0';
  *text = out;
  out = NULL;
  rc = 0;
  goto out;
oom:
  snprintf(err, err_size, "out of memory writing a PKCS#7 in base64");
out:
  free(out);
  free(flat);
  free(der);
  return rc;
}

static int pkcs7_parse_der_into(unsigned char *p, const unsigned char *end,
                                mbedtls_x509_crt *chain, char *err, size_t err_size);

/* Reads one tag's header at *p; 0, or -1 with `err` naming `what`. */
static int pkcs7_expect(unsigned char **p, const unsigned char *end, size_t *len, int tag,
                        const char *what, char *err, size_t err_size)
{
  if (mbedtls_asn1_get_tag(p, end, len, tag) == 0)
    return 0;
  snprintf(err, err_size, "not a certs-only PKCS#7: %s is missing or malformed", what);
  return -1;
}

static int pkcs7_parse_der(unsigned char *p, const unsigned char *end, mbedtls_x509_crt *chain,
                           char *err, size_t err_size)
{
  mbedtls_x509_crt scratch;
  int added, was_empty = chain->raw.len == 0;

  /* Every certificate is read into a chain of our own first: a PKCS#7 refused half-way
   * adds nothing to the caller's (fuzz-pkcs7 found the first certificates left in it). */
  mbedtls_x509_crt_init(&scratch);
  added = pkcs7_parse_der_into(p, end, &scratch, err, err_size);
  for (const mbedtls_x509_crt *c = &scratch; added > 0 && c && c->raw.len; c = c->next) {
    if (mbedtls_x509_crt_parse_der(chain, c->raw.p, c->raw.len) != 0) {
      snprintf(err, err_size, "out of memory reading the PKCS#7's certificates");
      if (was_empty) {
        mbedtls_x509_crt_free(chain);
        mbedtls_x509_crt_init(chain);
      }
      added = -1;
    }
  }
  mbedtls_x509_crt_free(&scratch);
  return added;
}

static int pkcs7_parse_der_into(unsigned char *p, const unsigned char *end,
                                mbedtls_x509_crt *chain, char *err, size_t err_size)
{
  const unsigned char *signed_end, *certs_end;
  size_t len;
  int version, added = 0;

  if (pkcs7_expect(&p, end, &len, PKCS7_SEQUENCE, "the ContentInfo", err, err_size) ||
      pkcs7_expect(&p, end, &len, MBEDTLS_ASN1_OID, "its content type", err, err_size))
    return -1;
  if (len != PKCS7_OID_LEN || memcmp(p, pkcs7_oid_signed_data, len) != 0) {
    snprintf(err, err_size, "not a certs-only PKCS#7: its content type is not signedData");
    return -1;
  }
  p += len;
  if (pkcs7_expect(&p, end, &len, PKCS7_CONTEXT_0, "the content", err, err_size) ||
      pkcs7_expect(&p, end, &len, PKCS7_SEQUENCE, "the SignedData", err, err_size))
    return -1;
  signed_end = p + len;
  if (mbedtls_asn1_get_int(&p, signed_end, &version) != 0) {
    snprintf(err, err_size, "not a certs-only PKCS#7: the SignedData's version is malformed");
    return -1;
  }
  if (pkcs7_expect(&p, signed_end, &len, PKCS7_SET, "the digest algorithms", err, err_size))
    return -1;
  p += len;
  if (pkcs7_expect(&p, signed_end, &len, PKCS7_SEQUENCE, "the encapsulated content", err,
                   err_size))
    return -1;
  p += len;
  if (mbedtls_asn1_get_tag(&p, signed_end, &len, PKCS7_CONTEXT_0) != 0) {
    snprintf(err, err_size, "the PKCS#7 carries no certificate");
    return -1;
  }
  certs_end = p + len;
  while (p < certs_end) {
    unsigned char *cert = p;
    int rc;
    if (pkcs7_expect(&p, certs_end, &len, PKCS7_SEQUENCE, "a certificate", err, err_size))
      return -1;
    rc = mbedtls_x509_crt_parse_der(chain, cert, (size_t)(p - cert) + len);
    if (rc != 0) {
      snprintf(err, err_size, "certificate %d of the PKCS#7 does not parse: mbedTLS error -0x%04x",
               added + 1, (unsigned)-rc);
      return -1;
    }
    p += len;
    added++;
  }
  if (added == 0) {
    snprintf(err, err_size, "the PKCS#7 carries no certificate");
    return -1;
  }
  return added;
}

int pkcs7_base64_decode(const unsigned char *text, size_t len, unsigned char **der,
                        size_t *der_len)
{
  unsigned char *flat = malloc(len ? len : 1), *out = malloc(len / 4 * 3 + 4);
  size_t flat_len = 0, out_len = 0;

  if (!flat || !out)
    goto fail;
  for (size_t i = 0; i < len; i++)
    if (text[i] != '\n' && text[i] != '\r' && text[i] != ' ' && text[i] != '\t')
      flat[flat_len++] = text[i];
  if (mbedtls_base64_decode(out, len / 4 * 3 + 4, &out_len, flat, flat_len) != 0 || out_len == 0)
    goto fail;
  free(flat);
  *der = out;
  *der_len = out_len;
  return 0;
fail:
  free(flat);
  free(out);
  return -1;
}

int pkcs7_certs_only_parse(const unsigned char *data, size_t len, int is_base64,
                           mbedtls_x509_crt *chain, char *err, size_t err_size)
{
  unsigned char *der = NULL;
  size_t der_len = len;
  int rc = -1;

  if (is_base64) {
    if (pkcs7_base64_decode(data, len, &der, &der_len) != 0) {
      snprintf(err, err_size, "the PKCS#7 is not valid base64 (or is empty)");
      goto out;
    }
  } else {
    der = malloc(len ? len : 1);
    if (!der) {
      snprintf(err, err_size, "out of memory reading a PKCS#7 of %zu bytes", len);
      goto out;
    }
    memcpy(der, data, len);
  }
  rc = pkcs7_parse_der(der, der + der_len, chain, err, err_size);
out:
  free(der);
  return rc;
}
