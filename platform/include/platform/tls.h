/*
 * tls.h - mbedTLS 2.28 helpers both programs share: the collector's HTTPS
 * server (platform/http/tls.c) and the agent's uplink client
 * (agent/uplink/http_tls.c). Errors in words a person can act on, the
 * random generator, and a certificate with its key read from PEM files.
 *
 * Threading: no state of their own; each call works on what it is given.
 */
#ifndef PLATFORM_TLS_H
#define PLATFORM_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

/* An X.509 time (UTC) as seconds since the epoch; 0 for an absent one. */
int64_t tls_x509_time_s(const mbedtls_x509_time *t);

/*
 * Verifies a signature over `tbs` (a CRL's or a request's signed part) made
 * with algorithm `md`/`sig_pk`/`sig_opts` by the key `pk`. Returns 0 or an
 * mbedTLS error.
 */
int tls_verify_signed(const mbedtls_x509_buf *tbs, mbedtls_md_type_t md, mbedtls_pk_type_t sig_pk,
                      const void *sig_opts, const mbedtls_pk_context *pk,
                      const mbedtls_x509_buf *sig);

/* Room for tls_curve_order's list (mbedTLS 2.28 knows 13 curves). */
#define TLS_CURVES_MAX 24

/*
 * The elliptic curves for the ECDHE key exchange (and peer keys), cheapest
 * first, into out[TLS_CURVES_MAX] ended by MBEDTLS_ECP_DP_NONE, for
 * mbedtls_ssl_conf_curves (which keeps the pointer: `out` must live as
 * long as the config). P-256, the curve of our certificates, then X25519
 * (the same cost), P-384 and P-521, then whatever else the library offers.
 * mbedTLS's default order puts P-521 first, and a mbedTLS server picks by
 * its own order: every full handshake paid P-521 on both sides (2.6 ms of
 * CPU each, against 1.2 for P-256).
 */
void tls_curve_order(mbedtls_ecp_group_id *out);

/* mbedTLS's text for error `rc` (negative) and its code: "text (-0x7780)". */
void tls_error_text(int rc, char *out, size_t out_size);

/*
 * mbedtls_x509_crt_verify_info()'s lines for certificate verification
 * `flags` joined with "; " into one line, or "no verify flags".
 */
void tls_verify_text(uint32_t flags, char *out, size_t out_size);

/*
 * Seeds `drbg` from `entropy` (both initialised by the caller, who frees
 * them). Returns 0, or -1 with `err` set.
 */
int tls_seed(mbedtls_entropy_context *entropy, mbedtls_ctr_drbg_context *drbg,
             const char *personalization, char *err, size_t err_size);

/*
 * Reads the PEM certificate chain `cert_file` into `cert` and the
 * unencrypted PEM key `key_file` into `key` (both initialised by the
 * caller, who frees them) and checks that they belong together. The
 * messages name the files by `cert_name` and `key_name` (the settings a
 * person edits: "uplink.cert", "tls cert_file"). Returns 0, or -1 with
 * `err` saying which file and what to check.
 */
int tls_load_identity(mbedtls_x509_crt *cert, mbedtls_pk_context *key, const char *cert_file,
                      const char *key_file, const char *cert_name, const char *key_name,
                      char *err, size_t err_size);

#endif
