/*
 * tls.c - mbedTLS helpers shared by the collector's server and the agent's
 * uplink; see platform/tls.h.
 */
#include "platform/tls.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>

/* See tls.h. */
int tls_verify_signed(const mbedtls_x509_buf *tbs, mbedtls_md_type_t md, mbedtls_pk_type_t sig_pk,
                      const void *sig_opts, const mbedtls_pk_context *pk,
                      const mbedtls_x509_buf *sig)
{
  const mbedtls_md_info_t *info = mbedtls_md_info_from_type(md);
  unsigned char hash[MBEDTLS_MD_MAX_SIZE];
  int rc;

  if (info == NULL)
    return MBEDTLS_ERR_X509_UNKNOWN_SIG_ALG;
  rc = mbedtls_md(info, tbs->p, tbs->len, hash);
  if (rc != 0)
    return rc;
  return mbedtls_pk_verify_ext(sig_pk, sig_opts, (mbedtls_pk_context *)pk, md, hash,
                               mbedtls_md_get_size(info), sig->p, sig->len);
}

/* See tls.h. */
int64_t tls_x509_time_s(const mbedtls_x509_time *t)
{
  struct tm tm;
  time_t at;

  if (t->year == 0)
    return 0;
  memset(&tm, 0, sizeof(tm));
  tm.tm_year = t->year - 1900;
  tm.tm_mon = t->mon - 1;
  tm.tm_mday = t->day;
  tm.tm_hour = t->hour;
  tm.tm_min = t->min;
  tm.tm_sec = t->sec;
  at = timegm(&tm);
  return at == (time_t)-1 ? 0 : (int64_t)at;
}

/* See tls.h. */
void tls_curve_order(mbedtls_ecp_group_id *out)
{
  static const mbedtls_ecp_group_id preferred[] = {
      MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP384R1,
      MBEDTLS_ECP_DP_SECP521R1};
  const mbedtls_ecp_group_id *known = mbedtls_ecp_grp_id_list();
  size_t n = 0;

  for (size_t i = 0; i < sizeof(preferred) / sizeof(preferred[0]); i++) {
    for (size_t k = 0; known[k] != MBEDTLS_ECP_DP_NONE; k++) {
      if (known[k] == preferred[i]) {
        out[n++] = preferred[i];
        break;
      }
    }
  }
  for (size_t k = 0; known[k] != MBEDTLS_ECP_DP_NONE && n + 1 < TLS_CURVES_MAX; k++) {
    size_t i = 0;
    while (i < n && out[i] != known[k])
      i++;
    if (i == n)
      out[n++] = known[k];
  }
  out[n] = MBEDTLS_ECP_DP_NONE;
}

/* See tls.h. */
void tls_error_text(int rc, char *out, size_t out_size)
{
  char text[160];

  mbedtls_strerror(rc, text, sizeof(text));
  snprintf(out, out_size, "%s (-0x%04x)", text, (unsigned)-rc);
}

/* See tls.h. */
void tls_verify_text(uint32_t flags, char *out, size_t out_size)
{
  char info[512];
  size_t used = 0;
  const char *line, *end;

  if (out_size == 0)
    return;
  out[0] = info[0] = '\0';
  if (flags != 0 && flags != (uint32_t)-1)
    (void)mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
  for (line = info; *line != '\0' && used < out_size; line = *end ? end + 1 : end) {
    end = strchr(line, '\n');
    if (end == NULL)
      end = line + strlen(line);
    if (end > line)
      used += (size_t)snprintf(out + used, out_size - used, "%s%.*s", used > 0 ? "; " : "",
                               (int)(end - line), line);
  }
  if (out[0] == '\0')
    snprintf(out, out_size, "no verify flags");
}

/* See tls.h. */
int tls_seed(mbedtls_entropy_context *entropy, mbedtls_ctr_drbg_context *drbg,
             const char *personalization, char *err, size_t err_size)
{
  char text[200];
  int rc;

  rc = mbedtls_ctr_drbg_seed(drbg, mbedtls_entropy_func, entropy,
                             (const unsigned char *)personalization, strlen(personalization));
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "TLS: cannot seed the random generator: %s", text);
    return -1;
  }
  return 0;
}

/* See tls.h. */
int tls_load_identity(mbedtls_x509_crt *cert, mbedtls_pk_context *key, const char *cert_file,
                      const char *key_file, const char *cert_name, const char *key_name,
                      char *err, size_t err_size)
{
  char text[200];
  int rc;

  rc = mbedtls_x509_crt_parse_file(cert, cert_file);
  if (rc != 0) {
    if (rc > 0)
      snprintf(text, sizeof(text), "%d certificate(s) could not be parsed", rc);
    else
      tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "%s %s: %s; check it is a readable PEM certificate chain",
             cert_name, cert_file, text);
    return -1;
  }
  rc = mbedtls_pk_parse_keyfile(key, key_file, NULL);
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "%s %s: %s; check it is a readable, unencrypted PEM key", key_name,
             key_file, text);
    return -1;
  }
  rc = mbedtls_pk_check_pair(&cert->pk, key);
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "%s %s does not match %s %s: %s", key_name, key_file, cert_name,
             cert_file, text);
    return -1;
  }
  return 0;
}
