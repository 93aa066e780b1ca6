/*
 * http_tls.c - the uplink's TLS identity on mbedTLS 2.28, and what a failed
 * handshake means in words a person fixing a store's uplink uses.
 *
 * The files are read when the first TLS connection needs them and reread
 * when one of them changes (a device certificate renewed in place takes
 * effect on the next connection, as it did with libcurl, which read them
 * per connection). A config is reference counted: a connection keeps the
 * one it was set up with.
 */
#include "uplink/http_int.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <mbedtls/asn1.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>

#include "platform/clock.h"
#include "platform/log.h"
#include "platform/tls.h"

/* Where Debian (ca-certificates) keeps the system's CAs. */
#define UPLINK_HTTP_SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"
#define UPLINK_HTTP_SYSTEM_CA_DIR "/etc/ssl/certs"

struct uplink_http_tls_file {
  char *path; /* "" = not used */
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
};

struct uplink_http_tls {
  int refs;
  struct uplink_http_tls_file files[3]; /* cert, key, CA */
  int has_cert;
  mbedtls_ssl_config conf;
  mbedtls_ecp_group_id curves[TLS_CURVES_MAX]; /* conf's, cheapest first */
  mbedtls_x509_crt cert;
  mbedtls_x509_crt ca;
  mbedtls_pk_context key;
  int expired_logged; /* device_certificate_expired said for this certificate */
};

static void tls_file_note(struct uplink_http_tls_file *file)
{
  struct stat st;

  if (!file->path[0] || stat(file->path, &st) != 0) {
    memset(&st, 0, sizeof(st));
  }
  file->dev = st.st_dev;
  file->ino = st.st_ino;
  file->size = st.st_size;
  file->mtime = st.st_mtim;
}

/* See http_int.h. */
int uplink_http__tls_stale(const struct uplink_http_tls *tls)
{
  struct uplink_http_tls_file now;

  for (int i = 0; i < 3; i++) {
    now = tls->files[i];
    tls_file_note(&now);
    if (now.dev != tls->files[i].dev || now.ino != tls->files[i].ino ||
        now.size != tls->files[i].size || now.mtime.tv_sec != tls->files[i].mtime.tv_sec ||
        now.mtime.tv_nsec != tls->files[i].mtime.tv_nsec)
      return 1;
  }
  return 0;
}

/* See http_int.h. */
void uplink_http__tls_ref(struct uplink_http_tls *tls)
{
  if (tls)
    tls->refs++;
}

/* See http_int.h. */
void uplink_http__tls_unref(struct uplink_http_tls *tls)
{
  if (!tls || --tls->refs > 0)
    return;
  mbedtls_ssl_config_free(&tls->conf);
  mbedtls_x509_crt_free(&tls->cert);
  mbedtls_x509_crt_free(&tls->ca);
  mbedtls_pk_free(&tls->key);
  for (int i = 0; i < 3; i++)
    free(tls->files[i].path);
  free(tls);
}

/* See http_int.h. */
const mbedtls_ssl_config *uplink_http__tls_conf(const struct uplink_http_tls *tls)
{
  return &tls->conf;
}

/* See http_int.h. */
int uplink_http__tls_has_cert(const struct uplink_http_tls *tls)
{
  return tls->has_cert;
}

/* See http_int.h. */
int uplink_http__tls_own_expired(struct uplink_http_tls *tls, const char *log_module, char *out,
                                 size_t out_size)
{
  char when[32], now[32];

  if (!tls->has_cert || !mbedtls_x509_time_is_past(&tls->cert.valid_to))
    return 0;
  clock_format_utc(tls_x509_time_s(&tls->cert.valid_to) * 1000, when, sizeof(when));
  clock_format_utc(clock_wall_ms(), now, sizeof(now));
  snprintf(out, out_size,
           "this device's certificate (uplink.cert %s) expired at %s (the device clock says %s): "
           "a device cannot renew an expired certificate itself; head office must enrol it "
           "again with a new enrolment token (or install a new certificate and key)",
           tls->files[0].path, when, now);
  /* Once per certificate, apart from the uplink's errors: the line a
   * person searching the log for why a store stopped sending finds. */
  if (!tls->expired_logged) {
    char quoted[400];
    log_error(log_module, "device_certificate_expired", "cert=%s not_after=%s action=%s",
              tls->files[0].path, when,
              log_quote("head office must enrol this device again (a new enrolment token), or "
                        "install a new certificate and key",
                        quoted, sizeof(quoted)));
    tls->expired_logged = 1;
  }
  return 1;
}

/* The device certificate and key: both or neither, and a matching pair. */
static int tls_conf_identity(struct uplink_http_tls *tls, const char *cert_file,
                             const char *key_file, char *err, size_t err_size)
{
  char text[200];
  int rc = -1;
  int parsed;

  if (!cert_file[0] && !key_file[0])
    return 0;
  if (!cert_file[0] || !key_file[0]) {
    snprintf(err, err_size, "uplink.cert and uplink.key go together: set both or neither");
    goto out;
  }
  if (tls_load_identity(&tls->cert, &tls->key, cert_file, key_file,
                        "the device certificate (uplink.cert)", "the device key (uplink.key)",
                        err, err_size) != 0)
    goto out;
  parsed = mbedtls_ssl_conf_own_cert(&tls->conf, &tls->cert, &tls->key);
  if (parsed != 0) {
    tls_error_text(parsed, text, sizeof(text));
    snprintf(err, err_size, "the device certificate cannot be used (uplink.cert %s): %s",
             cert_file, text);
    goto out;
  }
  tls->has_cert = 1;
  rc = 0;
out:
  return rc;
}

/* The CAs the collector's certificate must chain to: the file, or the system's. */
static int tls_load_ca(struct uplink_http_tls *tls, const char *ca_file, char *err,
                       size_t err_size)
{
  char text[200];
  int parsed;

  if (ca_file[0]) {
    parsed = mbedtls_x509_crt_parse_file(&tls->ca, ca_file);
    if (parsed == 0)
      return 0;
    if (parsed > 0)
      snprintf(text, sizeof(text), "%d certificate(s) could not be parsed", parsed);
    else
      tls_error_text(parsed, text, sizeof(text));
    snprintf(err, err_size,
             "the CA file cannot be used (uplink.ca %s): %s; check that it is a readable PEM "
             "CA bundle", ca_file, text);
    return -1;
  }
  /* A system bundle may hold a certificate mbedTLS cannot parse: the
   * others still count (a positive result says how many were skipped). */
  parsed = mbedtls_x509_crt_parse_file(&tls->ca, UPLINK_HTTP_SYSTEM_CA_FILE);
  if (parsed < 0)
    parsed = mbedtls_x509_crt_parse_path(&tls->ca, UPLINK_HTTP_SYSTEM_CA_DIR);
  if (parsed < 0 || tls->ca.version == 0) {
    snprintf(err, err_size,
             "uplink.ca is empty and the system's CAs (%s) cannot be read: set uplink.ca to "
             "the CA file that issued the collector's certificate, or install "
             "ca-certificates", UPLINK_HTTP_SYSTEM_CA_FILE);
    return -1;
  }
  return 0;
}

/* See http_int.h. */
struct uplink_http_tls *uplink_http__tls_load(const char *cert_file, const char *key_file,
                                              const char *ca_file,
                                              mbedtls_ctr_drbg_context *drbg, char *err,
                                              size_t err_size)
{
  struct uplink_http_tls *tls = calloc(1, sizeof(*tls));
  struct uplink_http_tls *result = NULL;
  const char *paths[3] = {cert_file, key_file, ca_file};
  char text[200];
  int rc;

  if (!tls) {
    snprintf(err, err_size, "out of memory loading the TLS settings");
    return NULL;
  }
  tls->refs = 1;
  mbedtls_ssl_config_init(&tls->conf);
  mbedtls_x509_crt_init(&tls->cert);
  mbedtls_x509_crt_init(&tls->ca);
  mbedtls_pk_init(&tls->key);
  for (int i = 0; i < 3; i++) {
    tls->files[i].path = strdup(paths[i]);
    if (!tls->files[i].path) {
      snprintf(err, err_size, "out of memory loading the TLS settings");
      goto out;
    }
    /* Noted before reading: a change while we read shows as stale next time. */
    tls_file_note(&tls->files[i]);
  }
  rc = mbedtls_ssl_config_defaults(&tls->conf, MBEDTLS_SSL_IS_CLIENT,
                                   MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "TLS: setting the client's defaults: %s", text);
    goto out;
  }
  mbedtls_ssl_conf_rng(&tls->conf, mbedtls_ctr_drbg_random, drbg);
  /* TLS 1.2 is the floor: SSL 3.0, TLS 1.0 and 1.1 are refused. */
  mbedtls_ssl_conf_min_version(&tls->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                               MBEDTLS_SSL_MINOR_VERSION_3);
  tls_curve_order(tls->curves);
  mbedtls_ssl_conf_curves(&tls->conf, tls->curves);
  mbedtls_ssl_conf_authmode(&tls->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  mbedtls_ssl_conf_session_tickets(&tls->conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
  if (tls_conf_identity(tls, cert_file, key_file, err, err_size) != 0 ||
      tls_load_ca(tls, ca_file, err, err_size) != 0)
    goto out;
  mbedtls_ssl_conf_ca_chain(&tls->conf, &tls->ca, NULL);
  result = tls;
  tls = NULL;
out:
  uplink_http__tls_unref(tls);
  return result;
}

/* See http_int.h. */
void uplink_http__tls_note_init(struct uplink_http_tls_note *note, const char *host)
{
  memset(note, 0, sizeof(*note));
  if (inet_pton(AF_INET, host, note->ip) == 1) {
    note->host_is_ip = 1;
    note->ip_len = 4;
  } else if (inet_pton(AF_INET6, host, note->ip) == 1) {
    note->host_is_ip = 1;
    note->ip_len = 16;
  }
}

/* Whether the certificate names this IP address (subjectAltName iPAddress). */
static int tls_names_ip(const mbedtls_x509_crt *crt, const struct uplink_http_tls_note *note)
{
  const mbedtls_x509_sequence *san;

  if (!(crt->ext_types & MBEDTLS_X509_EXT_SUBJECT_ALT_NAME))
    return 0;
  for (san = &crt->subject_alt_names; san; san = san->next) {
    if (san->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && san->buf.len == note->ip_len &&
        memcmp(san->buf.p, note->ip, note->ip_len) == 0)
      return 1;
  }
  return 0;
}

/* See http_int.h. Called for each certificate of the chain, root first. */
int uplink_http__tls_verify(void *arg, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
  struct uplink_http_tls_note *note = arg;

  if (depth == 0 && note->host_is_ip && !tls_names_ip(crt, note))
    *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
  /* The leaf's dates win over a CA's: the leaf comes last. */
  if (*flags & MBEDTLS_X509_BADCERT_FUTURE) {
    note->future = 1;
    note->valid_from = crt->valid_from;
  }
  if (*flags & MBEDTLS_X509_BADCERT_EXPIRED) {
    note->expired = 1;
    note->valid_to = crt->valid_to;
  }
  return 0;
}

static void tls_time_text(const mbedtls_x509_time *t, char *out, size_t out_size)
{
  snprintf(out, out_size, "%04d-%02d-%02dT%02d:%02d:%02dZ", t->year, t->mon, t->day, t->hour,
           t->min, t->sec);
}

/* A certificate refused by verification: the clock first, it explains the rest. */
static void tls_explain_verify(uint32_t flags, const struct uplink_http_tls_note *note,
                               const char *host, char *out, size_t out_size)
{
  char when[32], now[32], detail[400];

  clock_format_utc(clock_wall_ms(), now, sizeof(now));
  tls_verify_text(flags, detail, sizeof(detail));
  if (note->future) {
    tls_time_text(&note->valid_from, when, sizeof(when));
    snprintf(out, out_size,
             "TLS: the collector's certificate is valid from %s but this device's clock says "
             "%s: set the device clock (NTP, or the RTC); the certificate cannot be checked "
             "until then", when, now);
  } else if (note->expired) {
    tls_time_text(&note->valid_to, when, sizeof(when));
    snprintf(out, out_size,
             "TLS: the collector's certificate expired at %s and this device's clock says %s: "
             "if the device clock is wrong set it (NTP, or the RTC); if it is right, the "
             "collector needs a renewed certificate", when, now);
  } else if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) {
    snprintf(out, out_size,
             "TLS: hostname mismatch: the collector's certificate is not issued for %s: put "
             "a name the certificate carries in uplink.url, or reissue the certificate with "
             "this name (%s)", host, detail);
  } else if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED) {
    snprintf(out, out_size,
             "TLS: the collector's certificate is not trusted: it does not chain to a CA in "
             "uplink.ca (the system's CAs when empty): check uplink.ca (%s)", detail);
  } else {
    snprintf(out, out_size, "TLS: the collector's certificate was refused: %s", detail);
  }
}

/* See http_int.h. */
void uplink_http__tls_explain(int rc, const mbedtls_ssl_context *ssl,
                              const struct uplink_http_tls_note *note, const char *host,
                              int has_cert, char *out, size_t out_size)
{
  char text[200];
  size_t len;

  if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
    tls_explain_verify(mbedtls_ssl_get_verify_result(ssl), note, host, out, out_size);
    return;
  }
  if (rc == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) {
    snprintf(out, out_size,
             "TLS handshake failed: the collector refused it (fatal alert): check that the "
             "collector trusts the device certificate (uplink.cert), and that it has not "
             "expired or been revoked");
  } else {
    tls_error_text(rc, text, sizeof(text));
    snprintf(out, out_size, "TLS handshake failed: %s", text);
  }
  len = strlen(out);
  if (!has_cert && len < out_size)
    snprintf(out + len, out_size - len, " (no device certificate is configured: uplink.cert)");
}
