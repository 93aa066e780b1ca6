/*
 * tls.c - mbedTLS 2.28 over memory buffers for the HTTP server.
 *
 * The server owns the socket; this file owns the TLS state. Ciphertext comes
 * in through http__tls_conn_feed() and leaves through the send function the
 * server gave us, so mbedTLS's bio callbacks never block and never see a
 * file descriptor. See http_int.h for the reference counting.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>

#include "http_int.h"
#include "platform/tls.h"

/* What every config shares: the files' names and the RNG. */
struct http__tls {
  int refs; /* the server's, plus one per config */
  char *cert_file;
  char *key_file;
  char *ca_file; /* NULL: client certificates are not requested */
  char *crl_file;
  int require_client_cert;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  struct http__tls_conf *current; /* used by new sessions */
  unsigned long last_generation;  /* of the newest config built */
  struct http__tls_ticket ticket; /* session tickets, when enabled */
};

/* One generation of the files as of the last (re)load: our certificate and
 * key (renewed certificates take effect on SIGHUP), the CA and the CRL. */
struct http__tls_conf {
  int refs; /* the server's while current, plus one per session */
  struct http__tls *tls;
  mbedtls_ssl_config ssl_conf;
  mbedtls_ecp_group_id curves[TLS_CURVES_MAX]; /* ssl_conf's, cheapest first */
  mbedtls_x509_crt cert;
  mbedtls_pk_context key;
  mbedtls_x509_crt ca;
  mbedtls_x509_crl crl;
  int has_ca;
  int has_crl;
  time_t crl_next_update;   /* the earliest nextUpdate of the CRLs; 0: none */
  time_t cert_not_after;    /* our own certificate's */
  unsigned long generation; /* 1 for the first config, +1 per reload */
  /* The ticket callbacks' context: with the SHA-256 of the CA certificates and CRLs (DER)
   * this config checks client certificates against, sealed in its tickets. */
  struct http__tls_ticket_conf ticket;
};

struct http__tls_conn {
  mbedtls_ssl_context ssl;
  struct http__tls_conf *conf;
  http__tls_send_fn send;
  void *send_arg;
  int handshake_done;
  int resumed; /* the handshake accepted a session ticket */
  /* The config generation whose CA and CRL last accepted the client certificate. */
  unsigned long checked_generation;
  /* Why http__tls_conn_recheck last refused it (MBEDTLS_X509_BADCERT_*). */
  uint32_t recheck_flags;
  /* Ciphertext not yet consumed by mbedTLS: in[in_start..in_end). */
  unsigned char *in;
  size_t in_start;
  size_t in_end;
  size_t in_cap;
};

static char *tls_strdup_or_null(const char *text, int *failed)
{
  char *copy;

  if (text == NULL)
    return NULL;
  copy = strdup(text);
  if (copy == NULL)
    *failed = 1;
  return copy;
}

static void tls_unref(struct http__tls *tls)
{
  if (tls == NULL)
    return;
  assert(tls->refs > 0);
  if (--tls->refs > 0)
    return;
  http__tls_ticket_free(&tls->ticket);
  mbedtls_ctr_drbg_free(&tls->drbg);
  mbedtls_entropy_free(&tls->entropy);
  free(tls->cert_file);
  free(tls->key_file);
  free(tls->ca_file);
  free(tls->crl_file);
  free(tls);
}

/* conf->ticket.trust: the CA chain's and the CRLs' DER, hashed. */
static void tls_conf_trust(struct http__tls_conf *conf)
{
  mbedtls_sha256_context sha;
  unsigned char digest[32];

  mbedtls_sha256_init(&sha);
  mbedtls_sha256_starts_ret(&sha, 0);
  for (const mbedtls_x509_crt *ca = conf->has_ca ? &conf->ca : NULL; ca && ca->raw.len;
       ca = ca->next)
    mbedtls_sha256_update_ret(&sha, ca->raw.p, ca->raw.len);
  mbedtls_sha256_update_ret(&sha, (const unsigned char *)"|", 1);
  for (const mbedtls_x509_crl *crl = conf->has_crl ? &conf->crl : NULL; crl && crl->raw.len;
       crl = crl->next)
    mbedtls_sha256_update_ret(&sha, crl->raw.p, crl->raw.len);
  mbedtls_sha256_finish_ret(&sha, digest);
  mbedtls_sha256_free(&sha);
  memcpy(conf->ticket.trust, digest, sizeof(conf->ticket.trust));
}

static void tls_conf_unref(struct http__tls_conf *conf)
{
  if (conf == NULL)
    return;
  assert(conf->refs > 0);
  if (--conf->refs > 0)
    return;
  mbedtls_ssl_config_free(&conf->ssl_conf);
  mbedtls_x509_crl_free(&conf->crl);
  mbedtls_x509_crt_free(&conf->ca);
  mbedtls_pk_free(&conf->key);
  mbedtls_x509_crt_free(&conf->cert);
  tls_unref(conf->tls);
  free(conf);
}

/* "2026-12-01 00:00:00 UTC" */
static void tls_time_text(time_t when, char *out, size_t out_size)
{
  struct tm tm;

  if (gmtime_r(&when, &tm) == NULL || strftime(out, out_size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
    snprintf(out, out_size, "%lld", (long long)when);
}

/*
 * The verification callback of every handshake and re-check: a CRL past its
 * nextUpdate (or, with a clock behind, not yet valid) does not refuse a
 * client. mbedTLS's default refuses every certificate once the CRL it has
 * expires, which would refuse every store at once on the day the CRL job
 * fails; its revocations still count, and the expiry is the operator's to
 * see (http_server_tls_status, the collector's metrics and logs).
 */
static int tls_verify_cb(void *arg, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
  (void)arg;
  (void)crt;
  (void)depth;
  *flags &= ~(uint32_t)(MBEDTLS_X509_BADCRL_EXPIRED | MBEDTLS_X509_BADCRL_FUTURE);
  return 0;
}

/*
 * Checks every CRL in conf->crl before it is used: issued by a CA of
 * ca_file that may sign CRLs, its signature good, its nextUpdate not passed
 * (unless `allow_expired`: at start, an expired CRL's revocations are better
 * than none). Sets conf->crl_next_update. Returns 0, or -1 with `err` set.
 */
static int tls_crl_check(struct http__tls *tls, struct http__tls_conf *conf, int allow_expired,
                         char *err, size_t err_size)
{
  char issuer[256], text[200], when[40];

  conf->crl_next_update = 0;
  for (const mbedtls_x509_crl *crl = &conf->crl; crl != NULL && crl->version != 0;
       crl = crl->next) {
    const mbedtls_x509_crt *ca;
    time_t next_update = (time_t)tls_x509_time_s(&crl->next_update);
    int rc;

    if (mbedtls_x509_dn_gets(issuer, sizeof(issuer), &crl->issuer) < 0)
      snprintf(issuer, sizeof(issuer), "(unreadable)");
    for (ca = &conf->ca; ca != NULL && ca->version != 0; ca = ca->next)
      if (ca->subject_raw.len == crl->issuer_raw.len &&
          memcmp(ca->subject_raw.p, crl->issuer_raw.p, crl->issuer_raw.len) == 0)
        break;
    if (ca == NULL || ca->version == 0) {
      snprintf(err, err_size,
               "tls crl_file %s: the CRL is issued by \"%s\", which is not a CA of ca_file %s; "
               "use the CRL of the CA that issues the devices' certificates",
               tls->crl_file, issuer, tls->ca_file);
      return -1;
    }
    if (mbedtls_x509_crt_check_key_usage(ca, MBEDTLS_X509_KU_CRL_SIGN) != 0) {
      snprintf(err, err_size,
               "tls crl_file %s: its issuer \"%s\" may not sign CRLs (no cRLSign key usage)",
               tls->crl_file, issuer);
      return -1;
    }
    rc = tls_verify_signed(&crl->tbs, crl->sig_md, crl->sig_pk, crl->sig_opts, &ca->pk,
                           &crl->sig);
    if (rc != 0) {
      tls_error_text(rc, text, sizeof(text));
      snprintf(err, err_size,
               "tls crl_file %s: its signature does not verify with the key of \"%s\" (%s); "
               "the file is damaged or was not signed by that CA",
               tls->crl_file, issuer, text);
      return -1;
    }
    if (next_update != 0 && next_update <= time(NULL) && !allow_expired) {
      tls_time_text(next_update, when, sizeof(when));
      snprintf(err, err_size,
               "tls crl_file %s: the CRL of \"%s\" expired at %s (its nextUpdate); publish a "
               "new CRL from the CA and send SIGHUP again",
               tls->crl_file, issuer, when);
      return -1;
    }
    if (next_update != 0 && (conf->crl_next_update == 0 || next_update < conf->crl_next_update))
      conf->crl_next_update = next_update;
  }
  return 0;
}

/*
 * Builds a config from the files named in `tls`, rereading our certificate
 * and key, the CA and the CRL (checked: tls_crl_check, `first` allowing an
 * expired one). Returns it with one reference, or NULL with `err` set.
 */
static struct http__tls_conf *tls_conf_create(struct http__tls *tls, int first, char *err,
                                              size_t err_size)
{
  struct http__tls_conf *conf = NULL;
  struct http__tls_conf *result = NULL;
  char text[200];
  int rc;
  int authmode;

  conf = calloc(1, sizeof(*conf));
  if (conf == NULL) {
    snprintf(err, err_size, "tls: out of memory building the TLS config");
    goto out;
  }
  conf->refs = 1;
  conf->tls = tls;
  tls->refs++;
  /* Numbered even if it fails to build: generations only need to be distinct. */
  conf->generation = ++tls->last_generation;
  mbedtls_ssl_config_init(&conf->ssl_conf);
  mbedtls_x509_crt_init(&conf->cert);
  mbedtls_pk_init(&conf->key);
  mbedtls_x509_crt_init(&conf->ca);
  mbedtls_x509_crl_init(&conf->crl);

  if (tls_load_identity(&conf->cert, &conf->key, tls->cert_file, tls->key_file, "tls cert_file",
                        "tls key_file", err, err_size) != 0)
    goto out;
  conf->cert_not_after = (time_t)tls_x509_time_s(&conf->cert.valid_to);
  if (tls->ca_file != NULL) {
    rc = mbedtls_x509_crt_parse_file(&conf->ca, tls->ca_file);
    if (rc < 0) {
      tls_error_text(rc, text, sizeof(text));
      snprintf(err, err_size, "tls ca_file %s: %s; check it is a readable PEM CA bundle",
               tls->ca_file, text);
      goto out;
    }
    if (rc > 0) {
      snprintf(err, err_size,
               "tls ca_file %s: %d certificate(s) could not be parsed; fix or remove them",
               tls->ca_file, rc);
      goto out;
    }
    conf->has_ca = 1;
  }
  if (tls->crl_file != NULL) {
    rc = mbedtls_x509_crl_parse_file(&conf->crl, tls->crl_file);
    if (rc != 0) {
      tls_error_text(rc, text, sizeof(text));
      snprintf(err, err_size, "tls crl_file %s: %s; check it is a readable PEM CRL",
               tls->crl_file, text);
      goto out;
    }
    conf->has_crl = 1;
    if (tls_crl_check(tls, conf, first, err, err_size) != 0)
      goto out;
  }

  rc = mbedtls_ssl_config_defaults(&conf->ssl_conf, MBEDTLS_SSL_IS_SERVER,
                                   MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "tls: setting config defaults: %s", text);
    goto out;
  }
  mbedtls_ssl_conf_rng(&conf->ssl_conf, mbedtls_ctr_drbg_random, &tls->drbg);
  /* TLS 1.2 is the floor: SSL 3.0, TLS 1.0 and 1.1 are refused. */
  mbedtls_ssl_conf_min_version(&conf->ssl_conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                               MBEDTLS_SSL_MINOR_VERSION_3);
  tls_curve_order(conf->curves);
  mbedtls_ssl_conf_curves(&conf->ssl_conf, conf->curves);
  rc = mbedtls_ssl_conf_own_cert(&conf->ssl_conf, &conf->cert, &conf->key);
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "tls: using cert_file %s: %s", tls->cert_file, text);
    goto out;
  }
  if (conf->has_ca) {
    mbedtls_ssl_conf_ca_chain(&conf->ssl_conf, &conf->ca, conf->has_crl ? &conf->crl : NULL);
    mbedtls_ssl_conf_verify(&conf->ssl_conf, tls_verify_cb, NULL);
    authmode = tls->require_client_cert ? MBEDTLS_SSL_VERIFY_REQUIRED : MBEDTLS_SSL_VERIFY_OPTIONAL;
  } else {
    authmode = MBEDTLS_SSL_VERIFY_NONE;
  }
  mbedtls_ssl_conf_authmode(&conf->ssl_conf, authmode);
  tls_conf_trust(conf);
  conf->ticket.ticket = &tls->ticket;
  conf->ticket.require_cert = authmode == MBEDTLS_SSL_VERIFY_REQUIRED;
  if (tls->ticket.enabled)
    mbedtls_ssl_conf_session_tickets_cb(&conf->ssl_conf, http__tls_ticket_write,
                                        http__tls_ticket_parse, &conf->ticket);
  result = conf;
  conf = NULL;
out:
  tls_conf_unref(conf);
  return result;
}

/*
 * Loads the identity and the first config. See http_int.h. Loop thread
 * (or before the loop runs).
 */
struct http__tls *http__tls_create(const struct http_tls_config *config, char *err,
                                   size_t err_size)
{
  struct http__tls *tls = NULL;
  struct http__tls *result = NULL;
  int failed = 0;
  static const char personalization[] = "pos-http-server";

  if (config->cert_file == NULL || config->key_file == NULL) {
    snprintf(err, err_size, "tls: cert_file and key_file are both required");
    goto out;
  }
  if (config->require_client_cert && config->ca_file == NULL) {
    snprintf(err, err_size,
             "tls: require_client_cert needs ca_file (the CA client certificates chain to)");
    goto out;
  }
  if (config->crl_file != NULL && config->ca_file == NULL) {
    snprintf(err, err_size, "tls: crl_file %s needs ca_file as well", config->crl_file);
    goto out;
  }

  tls = calloc(1, sizeof(*tls));
  if (tls == NULL) {
    snprintf(err, err_size, "tls: out of memory");
    goto out;
  }
  tls->refs = 1;
  mbedtls_entropy_init(&tls->entropy);
  mbedtls_ctr_drbg_init(&tls->drbg);
  tls->cert_file = tls_strdup_or_null(config->cert_file, &failed);
  tls->key_file = tls_strdup_or_null(config->key_file, &failed);
  tls->ca_file = tls_strdup_or_null(config->ca_file, &failed);
  tls->crl_file = tls_strdup_or_null(config->crl_file, &failed);
  tls->require_client_cert = config->require_client_cert ? 1 : 0;
  if (failed) {
    snprintf(err, err_size, "tls: out of memory");
    goto out;
  }

  if (tls_seed(&tls->entropy, &tls->drbg, personalization, err, err_size) != 0)
    goto out;
  if (config->session_tickets &&
      http__tls_ticket_init(&tls->ticket, config->ticket_key_file, config->ticket_lifetime_s,
                            &tls->drbg, err, err_size) != 0)
    goto out;
  tls->current = tls_conf_create(tls, 1, err, err_size);
  if (tls->current == NULL)
    goto out;
  result = tls;
  tls = NULL;
out:
  tls_unref(tls);
  return result;
}

/* Swaps in freshly read files. See http_int.h. Loop thread. */
int http__tls_reload(struct http__tls *tls, char *err, size_t err_size)
{
  struct http__tls_conf *conf;
  int rc = -1;

  conf = tls_conf_create(tls, 0, err, err_size);
  if (conf == NULL)
    goto out;
  /* Sessions already set up keep their reference to the old config. */
  tls_conf_unref(tls->current);
  tls->current = conf;
  rc = 0;
out:
  return rc;
}

/* See http_int.h. Loop thread. */
void http__tls_status(const struct http__tls *tls, struct http_tls_status *out)
{
  memset(out, 0, sizeof(*out));
  if (tls == NULL || tls->current == NULL)
    return;
  out->generation = tls->current->generation;
  out->crl_next_update = tls->current->crl_next_update;
  out->cert_not_after = tls->current->cert_not_after;
}

/* Drops the server's reference. See http_int.h. Loop thread. */
void http__tls_release(struct http__tls *tls)
{
  struct http__tls_conf *conf;

  if (tls == NULL)
    return;
  conf = tls->current;
  tls->current = NULL;
  /* The config holds a reference to `tls`, so this order frees both when idle. */
  tls_unref(tls);
  tls_conf_unref(conf);
}

static int tls_bio_send(void *ctx, const unsigned char *data, size_t length)
{
  struct http__tls_conn *conn = ctx;

  /* mbedTLS writes one record at a time, at most ~16 KiB: int is enough. */
  if (conn->send(conn->send_arg, data, length) != 0)
    return MBEDTLS_ERR_NET_SEND_FAILED;
  return (int)length;
}

static int tls_bio_recv(void *ctx, unsigned char *out, size_t size)
{
  struct http__tls_conn *conn = ctx;
  size_t available = conn->in_end - conn->in_start;

  if (available == 0)
    return MBEDTLS_ERR_SSL_WANT_READ;
  if (size > available)
    size = available;
  if (size > (size_t)1 << 30)
    size = (size_t)1 << 30;
  memcpy(out, conn->in + conn->in_start, size);
  conn->in_start += size;
  return (int)size;
}

/* Creates a session on the current config. See http_int.h. Loop thread. */
struct http__tls_conn *http__tls_conn_create(struct http__tls *tls, http__tls_send_fn send,
                                             void *send_arg, char *err, size_t err_size)
{
  struct http__tls_conn *conn;
  struct http__tls_conn *result = NULL;
  char text[200];
  int rc;

  assert(tls->current != NULL);
  conn = calloc(1, sizeof(*conn));
  if (conn == NULL) {
    snprintf(err, err_size, "tls: out of memory for a session");
    goto out;
  }
  mbedtls_ssl_init(&conn->ssl);
  conn->conf = tls->current;
  conn->conf->refs++;
  conn->checked_generation = conn->conf->generation;
  conn->send = send;
  conn->send_arg = send_arg;
  rc = mbedtls_ssl_setup(&conn->ssl, &conn->conf->ssl_conf);
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size, "tls: setting up a session: %s", text);
    goto out;
  }
  mbedtls_ssl_set_bio(&conn->ssl, conn, tls_bio_send, tls_bio_recv, NULL);
  result = conn;
  conn = NULL;
out:
  http__tls_conn_destroy(conn);
  return result;
}

/* Frees a session. See http_int.h. */
void http__tls_conn_destroy(struct http__tls_conn *conn)
{
  if (conn == NULL)
    return;
  /* mbedtls_ssl_free() still reads the config, so drop our reference after it. */
  mbedtls_ssl_free(&conn->ssl);
  tls_conf_unref(conn->conf);
  free(conn->in);
  free(conn);
}

/* Buffers ciphertext. See http_int.h. */
int http__tls_conn_feed(struct http__tls_conn *conn, const char *data, size_t length)
{
  size_t buffered = conn->in_end - conn->in_start;
  size_t needed;
  size_t new_cap;
  unsigned char *grown;
  int rc = -1;

  if (length > HTTP__TLS_MAX_BUFFERED || buffered > HTTP__TLS_MAX_BUFFERED - length)
    goto out;
  needed = buffered + length;
  if (conn->in_end + length > conn->in_cap) {
    /* Slide the unread bytes to the front before growing. */
    if (buffered > 0 && conn->in_start > 0)
      memmove(conn->in, conn->in + conn->in_start, buffered);
    conn->in_start = 0;
    conn->in_end = buffered;
    if (needed > conn->in_cap) {
      new_cap = conn->in_cap ? conn->in_cap : 16384;
      while (new_cap < needed)
        new_cap *= 2;
      grown = realloc(conn->in, new_cap);
      if (grown == NULL)
        goto out;
      conn->in = grown;
      conn->in_cap = new_cap;
    }
  }
  memcpy(conn->in + conn->in_end, data, length);
  conn->in_end += length;
  rc = 0;
out:
  return rc;
}

/* Frees the ciphertext buffer when it holds nothing. See http_int.h. */
void http__tls_conn_trim(struct http__tls_conn *conn)
{
  if (conn->in_start != conn->in_end)
    return;
  free(conn->in);
  conn->in = NULL;
  conn->in_start = conn->in_end = conn->in_cap = 0;
}

/* Bytes at the start of a record buffer that an idle session keeps: counter, header, IV. */
#define TLS_IDLE_KEEP 64

/* The whole pages of buf[TLS_IDLE_KEEP..length) back to the kernel; the block stays ours. */
static void tls_release_pages(unsigned char *buf, size_t length)
{
  static uintptr_t page;
  uintptr_t start, end;

  if (page == 0)
    page = (uintptr_t)sysconf(_SC_PAGESIZE);
  if (buf == NULL || length <= TLS_IDLE_KEEP || page == 0)
    return;
  start = ((uintptr_t)buf + TLS_IDLE_KEEP + page - 1) & ~(page - 1);
  end = ((uintptr_t)buf + length) & ~(page - 1);
  if (end > start)
    (void)madvise((void *)start, end - start, MADV_DONTNEED);
}

/* Gives an idle session's record buffer pages back. See http_int.h. Loop thread. */
void http__tls_conn_idle(struct http__tls_conn *conn)
{
  const mbedtls_ssl_context *ssl = &conn->ssl;

  if (!conn->handshake_done || conn->in_start != conn->in_end || ssl->in_offt != NULL ||
      ssl->in_left != 0 || ssl->out_left != 0 || ssl->keep_current_message)
    return;
#if defined(MBEDTLS_SSL_RENEGOTIATION)
  /* Off in our config (mbedTLS's default): a renegotiation would keep state between records.
   * 0 is MBEDTLS_SSL_INITIAL_HANDSHAKE (ssl_internal.h, not a public header). */
  if (ssl->renego_status != 0)
    return;
#endif
  /* Each buffer is at least its content length long (plus header and expansion). */
  tls_release_pages(ssl->in_buf, MBEDTLS_SSL_IN_CONTENT_LEN);
  tls_release_pages(ssl->out_buf, MBEDTLS_SSL_OUT_CONTENT_LEN);
}

/* Bytes of ciphertext waiting. See http_int.h. */
size_t http__tls_conn_buffered(const struct http__tls_conn *conn)
{
  return conn->in_end - conn->in_start;
}

/* Advances the handshake. See http_int.h. */
int http__tls_conn_handshake(struct http__tls_conn *conn, char *reason, size_t reason_size)
{
  char text[200];
  char info[512];
  int result = HTTP__TLS_OK;
  int rc;

  if (conn->handshake_done)
    goto out;
  (void)http__tls_ticket_take_accepted();
  rc = mbedtls_ssl_handshake(&conn->ssl);
  /* The ticket is parsed within this call, on this thread, when the client offers one; it
   * was sealed under the CA and CRLs of this connection's config, or it was refused. */
  if (http__tls_ticket_take_accepted())
    conn->resumed = 1;
  if (rc == 0) {
    conn->handshake_done = 1;
    goto out;
  }
  if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
    result = HTTP__TLS_WANT_READ;
    goto out;
  }

  result = HTTP__TLS_FAILED;
  tls_error_text(rc, text, sizeof(text));
  if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
    tls_verify_text(mbedtls_ssl_get_verify_result(&conn->ssl), info, sizeof(info));
    snprintf(reason, reason_size, "%s: %s", text, info);
  } else {
    snprintf(reason, reason_size, "%s", text);
  }
out:
  return result;
}

/* Decrypts application data. See http_int.h. */
int http__tls_conn_read(struct http__tls_conn *conn, char *out, size_t size, char *reason,
                        size_t reason_size)
{
  int rc;

  assert(conn->handshake_done);
  rc = mbedtls_ssl_read(&conn->ssl, (unsigned char *)out, size);
  if (rc > 0)
    goto out;
  if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
    rc = HTTP__TLS_WANT_READ;
  } else if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || rc == 0) {
    rc = HTTP__TLS_CLOSED;
  } else {
    tls_error_text(rc, reason, reason_size);
    rc = HTTP__TLS_FAILED;
  }
out:
  return rc;
}

/* Encrypts and queues application data. See http_int.h. */
int http__tls_conn_write(struct http__tls_conn *conn, const void *data, size_t length,
                         char *reason, size_t reason_size)
{
  const unsigned char *next = data;
  int written;
  int rc = -1;

  assert(conn->handshake_done);
  while (length > 0) {
    /* Our send callback never returns WANT_WRITE, so each call makes progress. */
    written = mbedtls_ssl_write(&conn->ssl, next, length);
    if (written <= 0) {
      if (written == 0)
        snprintf(reason, reason_size, "mbedtls_ssl_write wrote nothing");
      else
        tls_error_text(written, reason, reason_size);
      goto out;
    }
    next += written;
    length -= (size_t)written;
  }
  rc = 0;
out:
  return rc;
}

/* Queues close_notify. See http_int.h. */
void http__tls_conn_close_notify(struct http__tls_conn *conn)
{
  if (conn->handshake_done)
    (void)mbedtls_ssl_close_notify(&conn->ssl);
}

/* The class of MBEDTLS_X509_BADCERT_* flags, most telling first. */
static const char *tls_refusal_class(uint32_t flags)
{
  if (flags & MBEDTLS_X509_BADCERT_REVOKED)
    return "revoked";
  if (flags & MBEDTLS_X509_BADCERT_EXPIRED)
    return "expired";
  if (flags & MBEDTLS_X509_BADCERT_FUTURE)
    return "not_yet_valid";
  if (flags & MBEDTLS_X509_BADCERT_MISSING)
    return "no_certificate";
  if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
    return "not_trusted";
  return "other_certificate";
}

/* See http_int.h. */
const char *http__tls_conn_refusal(const struct http__tls_conn *conn, int rechecked)
{
  uint32_t flags;

  if (rechecked)
    return tls_refusal_class(conn->recheck_flags);
  flags = mbedtls_ssl_get_verify_result(&conn->ssl);
  /* -1: no certificate was verified (the handshake failed before). */
  if (flags == 0 || flags == (uint32_t)-1)
    return "handshake";
  return tls_refusal_class(flags);
}

/* The verified client certificate. See http_int.h. */
/* See http_int.h. */
int http__tls_conn_resumed(const struct http__tls_conn *conn) { return conn->resumed; }

const struct mbedtls_x509_crt *http__tls_conn_peer_cert(const struct http__tls_conn *conn)
{
  if (conn == NULL || !conn->handshake_done)
    return NULL;
  /* With VERIFY_OPTIONAL a bad certificate gets through the handshake: hide it. */
  if (mbedtls_ssl_get_verify_result(&conn->ssl) != 0)
    return NULL;
  return mbedtls_ssl_get_peer_cert(&conn->ssl);
}

/* Re-verifies the client certificate after a reload. See http_int.h. Loop thread. */
int http__tls_conn_recheck(struct http__tls_conn *conn, char *reason, size_t reason_size)
{
  struct http__tls_conf *current = conn->conf->tls->current;
  const mbedtls_x509_crt *peer_cert;
  char text[200];
  uint32_t flags = 0;
  int result = HTTP__TLS_OK;
  int rc;

  /* NULL current: the server is closing and will close this connection itself. */
  if (current == NULL)
    goto out;
  /* Only a certificate the handshake accepted is re-checked: no certificate, nothing to revoke. */
  peer_cert = http__tls_conn_peer_cert(conn);
  /* A keep-alive connection may outlive its certificate: every request. */
  if (peer_cert != NULL && mbedtls_x509_time_is_past(&peer_cert->valid_to)) {
    conn->recheck_flags = MBEDTLS_X509_BADCERT_EXPIRED;
    tls_time_text((time_t)tls_x509_time_s(&peer_cert->valid_to), text, sizeof(text));
    snprintf(reason, reason_size, "The certificate validity has expired (at %s)", text);
    result = HTTP__TLS_FAILED;
    goto out;
  }
  if (current->generation == conn->checked_generation)
    goto out;
  if (peer_cert != NULL && current->has_ca) {
    /*
     * The same check the handshake made (default profile, CA, CRL), with
     * the current files. verify() does not modify the certificate; the
     * cast only satisfies the 2.28 prototype.
     */
    rc = mbedtls_x509_crt_verify((mbedtls_x509_crt *)peer_cert, &current->ca,
                                 current->has_crl ? &current->crl : NULL, NULL, &flags,
                                 tls_verify_cb, NULL);
    if (rc != 0) {
      conn->recheck_flags = flags;
      if (flags != 0) {
        tls_verify_text(flags, reason, reason_size);
      } else {
        tls_error_text(rc, text, sizeof(text));
        snprintf(reason, reason_size, "%s", text);
      }
      result = HTTP__TLS_FAILED;
      goto out;
    }
  }
  conn->checked_generation = current->generation;
out:
  return result;
}
