/*
 * http_int.h - what server.c and tls.c share; nothing outside platform/http
 * may include this.
 *
 * tls.c runs TLS over memory buffers: the server feeds it the ciphertext it
 * read from the socket (http__tls_conn_feed) and gives it a send function
 * that queues ciphertext on the socket (uv_write). mbedTLS never touches a
 * file descriptor, so everything stays on the loop thread and non-blocking.
 *
 * Lifetimes are reference counted because they overlap: a connection keeps
 * the mbedtls_ssl_config it was set up with (http_server_reload_tls swaps a
 * new one in for later handshakes), and a config keeps the server's
 * certificate, key and RNG, so a connection held open by a pending
 * exchange may outlive the server that accepted it.
 *
 * Configs are numbered (generations). A connection set up under an older
 * generation keeps its session, but the server re-checks its client
 * certificate against the current CA and CRL (http__tls_conn_recheck) before
 * handing on its next request, so a reloaded CRL reaches open connections.
 */
#ifndef PLATFORM_HTTP_INT_H
#define PLATFORM_HTTP_INT_H

#include <stddef.h>

#include "platform/http_server.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ssl.h>

/* The server's TLS state: certificate, key, RNG and the current config. */
struct http__tls;
/* One connection's TLS session. */
struct http__tls_conn;

/*
 * Queues `length` bytes of ciphertext for the peer; the bytes are copied.
 * Returns 0, or -1 when they could not be queued (the connection is dead).
 */
typedef int (*http__tls_send_fn)(void *send_arg, const unsigned char *data, size_t length);

/* Results of http__tls_conn_handshake() and http__tls_conn_read(). */
enum http__tls_result {
  HTTP__TLS_OK = 0,           /* handshake done */
  HTTP__TLS_WANT_READ = -1,   /* needs more ciphertext: feed it and call again */
  HTTP__TLS_CLOSED = -2,      /* the peer sent close_notify */
  HTTP__TLS_FAILED = -3,      /* fatal; the reason was written to `reason` */
};

/* Session tickets (tls_ticket.c): the secret keys are derived from. */
#define HTTP__TLS_TICKET_SECRET_MIN 32
/* Bytes of a config's trust digest (the CA and CRLs a client certificate was checked against). */
#define HTTP__TLS_TRUST_BYTES 16
struct http__tls_ticket {
  int enabled;
  unsigned char secret[64];
  size_t secret_len;
  uint32_t lifetime_s;            /* a ticket's life, and its key's window */
  mbedtls_ctr_drbg_context *drbg; /* the nonces; the server's, used on its loop */
};

/*
 * What the ticket callbacks get as p_ticket: one per config, so that a
 * ticket is sealed with the trust digest of the config that checked its
 * certificate, and opened against the config of the connection resuming.
 */
struct http__tls_ticket_conf {
  struct http__tls_ticket *ticket;
  unsigned char trust[HTTP__TLS_TRUST_BYTES]; /* the config's CA and CRLs, hashed */
  int require_cert;                           /* the config requires a client certificate */
};

/*
 * Reads the shared secret from `key_file` (refused when it is shorter than
 * HTTP__TLS_TICKET_SECRET_MIN bytes or readable by others), or draws one
 * when `key_file` is NULL or empty. Returns 0, or -1 with `err` saying
 * what is wrong and what to do.
 */
int http__tls_ticket_init(struct http__tls_ticket *t, const char *key_file, uint32_t lifetime_s,
                          mbedtls_ctr_drbg_context *drbg, char *err, size_t err_size);
void http__tls_ticket_free(struct http__tls_ticket *t);
/*
 * mbedTLS's ticket callbacks (mbedtls_ssl_conf_session_tickets_cb), a struct
 * http__tls_ticket_conf as p_ticket. A ticket sealed under other CA
 * certificates or CRLs (another instance's, or before a reload), or without
 * a client certificate where one is required, is refused: the client then
 * makes a full handshake and its whole chain is checked.
 */
int http__tls_ticket_write(void *p_ticket, const mbedtls_ssl_session *session, unsigned char *start,
                           const unsigned char *end, size_t *tlen, uint32_t *lifetime);
int http__tls_ticket_parse(void *p_ticket, mbedtls_ssl_session *session, unsigned char *buf,
                           size_t len);
/* 1 when the last ticket parsed on this thread was accepted; clears it. */
int http__tls_ticket_take_accepted(void);

/* How much ciphertext a connection buffers before the server stops reading. */
#define HTTP__TLS_MAX_BUFFERED (256u * 1024u)

/*
 * Loads the certificate chain, key, CA and CRL named in `config` (copied)
 * and builds the first mbedtls_ssl_config. Returns the state (released with
 * http__tls_release), or NULL with `err` saying which file failed and why.
 */
struct http__tls *http__tls_create(const struct http_tls_config *config, char *err,
                                   size_t err_size);

/*
 * Rereads our certificate and key, the CA file and the CRL (checked as at
 * start, but an expired CRL is refused) into a fresh config used by
 * handshakes that start from now on. Returns 0, or -1 with `err` set and
 * the old config kept.
 */
int http__tls_reload(struct http__tls *tls, char *err, size_t err_size);

/* The current config's figures (http_server_tls_status). */
void http__tls_status(const struct http__tls *tls, struct http_tls_status *out);

/* Drops the server's reference; freed when the last connection lets go. NULL is fine. */
void http__tls_release(struct http__tls *tls);

/*
 * Starts a server-side session with the current config; `send` queues the
 * ciphertext it produces. Returns the session, or NULL (out of memory, with
 * `err` set).
 */
struct http__tls_conn *http__tls_conn_create(struct http__tls *tls, http__tls_send_fn send,
                                             void *send_arg, char *err, size_t err_size);

/* Frees the session and drops its config reference. NULL is fine. */
void http__tls_conn_destroy(struct http__tls_conn *conn);

/*
 * Appends ciphertext read from the socket. Returns 0, or -1 when more than
 * HTTP__TLS_MAX_BUFFERED bytes would be buffered (the caller should have
 * stopped reading) or memory ran out.
 */
int http__tls_conn_feed(struct http__tls_conn *conn, const char *data, size_t length);

/*
 * Frees the ciphertext buffer if it holds nothing (16 KiB of an idle
 * keep-alive connection's memory); the next feed makes a new one.
 */
void http__tls_conn_trim(struct http__tls_conn *conn);

/*
 * An idle session (handshake done, nothing buffered, half-read or unsent)
 * gives the pages of mbedTLS's two record buffers back to the kernel, all
 * but the first of each (which holds the record counters). mbedTLS 2.28
 * allocates both whole (16 KiB each) at setup and keeps them for the
 * connection's life; a page given back reads as zeros when next touched,
 * and the next record overwrites what it uses. Does nothing otherwise.
 */
void http__tls_conn_idle(struct http__tls_conn *conn);

/* Ciphertext buffered and not yet decrypted, in bytes. */
size_t http__tls_conn_buffered(const struct http__tls_conn *conn);

/*
 * Advances the handshake with the ciphertext fed so far. Returns
 * HTTP__TLS_OK once done, HTTP__TLS_WANT_READ, or HTTP__TLS_FAILED with
 * `reason` saying why (mbedTLS error text, and certificate verification
 * flags when the client certificate was refused).
 */
int http__tls_conn_handshake(struct http__tls_conn *conn, char *reason, size_t reason_size);

/*
 * Decrypts up to `size` bytes into `out`. Returns the byte count (> 0),
 * HTTP__TLS_WANT_READ, HTTP__TLS_CLOSED, or HTTP__TLS_FAILED with `reason`.
 */
int http__tls_conn_read(struct http__tls_conn *conn, char *out, size_t size, char *reason,
                        size_t reason_size);

/*
 * Encrypts all `length` bytes and hands the records to the send function.
 * Returns 0, or -1 with `reason` set.
 */
int http__tls_conn_write(struct http__tls_conn *conn, const void *data, size_t length,
                         char *reason, size_t reason_size);

/* Queues a close_notify alert (best effort). */
void http__tls_conn_close_notify(struct http__tls_conn *conn);

/*
 * Refuses a client certificate that expired since the handshake (every
 * call), and re-verifies it against the current config's CA and CRL if the
 * config was reloaded since the session last passed this check (at most
 * once per reload, so cheap to call per request). Returns HTTP__TLS_OK (still accepted, no client
 * certificate, or nothing reloaded), or HTTP__TLS_FAILED with `reason`
 * saying why, in mbedtls_x509_crt_verify_info()'s words ("The certificate
 * has been revoked (is on a CRL)"); the caller should refuse the request and
 * close. Loop thread.
 */
int http__tls_conn_recheck(struct http__tls_conn *conn, char *reason, size_t reason_size);

/*
 * Why the connection was refused, for counting (http_server_config's
 * on_tls_refused): after a failed handshake (`rechecked` 0) or a failed
 * http__tls_conn_recheck (1).
 */
const char *http__tls_conn_refusal(const struct http__tls_conn *conn, int rechecked);

/* 1 when the handshake resumed a session from a ticket sealed under this config's CA and CRLs. */
int http__tls_conn_resumed(const struct http__tls_conn *conn);

/* The client certificate if one was sent and verified, else NULL. Borrowed from the session. */
const struct mbedtls_x509_crt *http__tls_conn_peer_cert(const struct http__tls_conn *conn);

#endif
