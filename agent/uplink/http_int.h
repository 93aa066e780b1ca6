/*
 * http_int.h - what http.c and http_tls.c share; nothing outside
 * agent/uplink/http*.c may include this.
 *
 * http_tls.c holds the client's TLS identity (device certificate and key,
 * the CAs the collector is checked against) as one reference-counted
 * mbedtls_ssl_config, reread when one of the files changes, and turns a
 * failed handshake into words a person can act on. http.c owns sockets,
 * connections and HTTP.
 *
 * Threading: everything on the loop thread.
 */
#ifndef AGENT_UPLINK_HTTP_INT_H
#define AGENT_UPLINK_HTTP_INT_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

/* The files, read once into one client config; kept alive by every
 * connection set up with it. */
struct uplink_http_tls;

/*
 * Reads the device certificate and key (either may be "" for none; both
 * or neither), the CA file ("" = the system's CAs) and builds a client
 * config (TLS 1.2 or newer, the server verified) drawing on `drbg`
 * (borrowed; it must outlive the config). Returns it with one reference,
 * or NULL with `err` saying which file and what to do.
 */
struct uplink_http_tls *uplink_http__tls_load(const char *cert_file, const char *key_file,
                                              const char *ca_file,
                                              mbedtls_ctr_drbg_context *drbg, char *err,
                                              size_t err_size);

/* Whether a file it was read from changed since (size, mtime, inode). */
int uplink_http__tls_stale(const struct uplink_http_tls *tls);

/* Takes and drops a reference; the last drop frees. NULL is fine. */
void uplink_http__tls_ref(struct uplink_http_tls *tls);
void uplink_http__tls_unref(struct uplink_http_tls *tls);

/* The config, for mbedtls_ssl_setup(); valid while a reference is held. */
const mbedtls_ssl_config *uplink_http__tls_conf(const struct uplink_http_tls *tls);

/* Whether a device certificate is configured. */
int uplink_http__tls_has_cert(const struct uplink_http_tls *tls);

/*
 * 1 when the device certificate has expired, with what that means and what
 * to do in `out` (and, the first time for this certificate, the log line
 * mod=<log_module> event=device_certificate_expired); 0 otherwise.
 */
int uplink_http__tls_own_expired(struct uplink_http_tls *tls, const char *log_module, char *out,
                                 size_t out_size);

/*
 * What one handshake noticed about the collector's chain, filled in by
 * uplink_http__tls_verify (set with mbedtls_ssl_set_verify, `note` as its
 * context): the host's IP address when the URL names one (mbedTLS 2.28
 * matches names against DNS names only, so IP addresses in the
 * certificate are matched here), and the validity dates that failed.
 */
struct uplink_http_tls_note {
  int host_is_ip;
  unsigned char ip[16];
  size_t ip_len;
  int future; /* a certificate in the chain is not valid yet */
  mbedtls_x509_time valid_from;
  int expired; /* a certificate in the chain has expired */
  mbedtls_x509_time valid_to;
};

/* Prepares `note` for a connection to `host`. */
void uplink_http__tls_note_init(struct uplink_http_tls_note *note, const char *host);

/* mbedtls verify callback: see struct uplink_http_tls_note. */
int uplink_http__tls_verify(void *note, mbedtls_x509_crt *crt, int depth, uint32_t *flags);

/*
 * Explains a failed handshake (mbedTLS error `rc`; the verify flags of
 * `ssl`; `note`) as "TLS: what: detail: what to do" into `out`.
 */
void uplink_http__tls_explain(int rc, const mbedtls_ssl_context *ssl,
                              const struct uplink_http_tls_note *note, const char *host,
                              int has_cert, char *out, size_t out_size);

#endif
