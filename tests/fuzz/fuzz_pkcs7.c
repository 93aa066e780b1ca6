/*
 * fuzz_pkcs7.c - an EST answer (a certs-only PKCS#7, RFC 7030) into
 * pkcs7_certs_only_parse: the agent reads the collector's /simpleenroll,
 * /simplereenroll and /cacerts answers with it, and its ASN.1 walking is
 * ours (mbedTLS 2.28 has no PKCS#7), so an answer from a wrong or hostile
 * server must be refused, never read past its end.
 *
 * The first byte picks DER (even) or base64 (odd); the rest is the answer,
 * copied into a buffer of exactly its length so that a read past it is
 * caught by ASan. Besides crashes, leaks and undefined behaviour, it aborts
 * when a promise of platform/pkcs7.h is broken: a refusal adds nothing and
 * says why; an answer read gives at least one certificate, and writing
 * those back gives DER that reads back to the same certificates.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/pkcs7.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_fail(const char *what)
{
  fprintf(stderr, "fuzz-pkcs7: %s\n", what);
  abort();
}

static size_t fuzz_count(const mbedtls_x509_crt *chain)
{
  size_t n = 0;
  for (const mbedtls_x509_crt *c = chain; c && c->raw.len; c = c->next)
    n++;
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  mbedtls_x509_crt chain, again;
  unsigned char *copy, *der = NULL;
  size_t der_len = 0;
  char err[256] = "";
  int is_base64, n;

  if (size < 1)
    return 0;
  is_base64 = data[0] & 1;
  copy = malloc(size - 1 ? size - 1 : 1);
  if (!copy)
    return 0;
  memcpy(copy, data + 1, size - 1);
  mbedtls_x509_crt_init(&chain);
  n = pkcs7_certs_only_parse(copy, size - 1, is_base64, &chain, err, sizeof(err));
  if (n < 0) {
    if (!err[0])
      fuzz_fail("a refusal without a reason");
    if (fuzz_count(&chain) != 0)
      fuzz_fail("a refusal added certificates");
  } else {
    if (n < 1 || (size_t)n != fuzz_count(&chain))
      fuzz_fail("the count returned is not the certificates added");
    if (pkcs7_certs_only_write(&chain, &der, &der_len, err, sizeof(err)) != 0)
      fuzz_fail("certificates read do not write back");
    mbedtls_x509_crt_init(&again);
    if (pkcs7_certs_only_parse(der, der_len, 0, &again, err, sizeof(err)) != n)
      fuzz_fail("what was written does not read back");
    for (const mbedtls_x509_crt *a = &chain, *b = &again; a && a->raw.len; a = a->next, b = b->next) {
      if (!b || a->raw.len != b->raw.len || memcmp(a->raw.p, b->raw.p, a->raw.len) != 0)
        fuzz_fail("a certificate changed on the way back");
    }
    mbedtls_x509_crt_free(&again);
    free(der);
  }
  mbedtls_x509_crt_free(&chain);
  free(copy);
  return 0;
}
