/*
 * enrol_key.c - the device's private key: made here, written only here
 * (mode 0600 from its first byte), never sent; see enrol.h.
 */
#include "enrol/enrol.h"

#include <stdio.h>
#include <string.h>

#include <mbedtls/ecp.h>
#include <mbedtls/platform_util.h>

#include "platform/tls.h"

/* See enrol.h. */
int enrol_key_generate(mbedtls_pk_context *key, mbedtls_ctr_drbg_context *drbg, char *err,
                       size_t err_size)
{
  char text[200];
  int rc;

  rc = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
  if (rc == 0)
    rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key),
                             mbedtls_ctr_drbg_random, drbg);
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "cannot make a new P-256 device key: %s", text);
    return -1;
  }
  return 0;
}

/* See enrol.h. */
int enrol_key_write(mbedtls_pk_context *key, const char *path, char *err, size_t err_size)
{
  /* A P-256 key in PEM (SEC1) is about 230 bytes. */
  unsigned char pem[1024];
  char text[200];
  int rc;

  rc = mbedtls_pk_write_key_pem(key, pem, sizeof(pem));
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "cannot encode the device key for %s: %s", path, text);
    return -1;
  }
  rc = enrol_file_write_atomic(path, pem, strlen((const char *)pem), 0600, err, err_size);
  /* The private key should not linger on the stack. */
  mbedtls_platform_zeroize(pem, sizeof(pem));
  return rc;
}
