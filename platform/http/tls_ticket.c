/*
 * tls_ticket.c - TLS session tickets (RFC 5077) that every collector
 * instance behind a load balancer accepts: a store that reconnects resumes
 * its session with an abbreviated handshake (no certificate sent or
 * verified, no key exchange) wherever the balancer sends it.
 *
 * mbedTLS's own ticket module (ssl_ticket.c) draws its keys at random in each
 * process and rotates them on its own clock: a ticket is then good only on
 * the instance that issued it. Here the keys come from a secret the
 * instances share (ticket_key_file) and the clock: the key of window w
 * (window = the ticket lifetime) is HKDF-SHA256(secret, w), so every
 * instance derives the same key for the same window without talking to the
 * others, and rotation needs no one. A ticket is accepted under the key of
 * its window while that window or the next one lasts, and only within its
 * lifetime of being issued. Without a key file the secret is drawn at
 * start: resumption then works on this process only, until it restarts.
 *
 * A ticket: window (4 bytes, big-endian) | nonce (12) | AES-256-GCM of
 * [issued, 8 bytes big-endian seconds | trust (16) | mbedtls_ssl_session_save()]
 * | tag (16); the window and the nonce are the additional data. The session
 * holds the client's certificate (MBEDTLS_SSL_KEEP_PEER_CERTIFICATE), but
 * not the chain it came with; trust is the digest of the CA certificates and
 * CRLs it was checked against. A ticket sealed under other ones (another
 * instance's CRL, a CRL published since, another CA file) is refused, and
 * the client makes a full handshake, where its whole chain is checked under
 * ours: a device revoked since is refused there. Under the same ones that
 * check would only repeat the first handshake's (expiry is checked at every
 * request). A ticket without a client certificate is refused where one is
 * required.
 *
 * Whoever reads the key file can derive every window's key, past and
 * future, and open any ticket recorded (its session's master secret): the
 * file is a secret like a private key. Changing it needs every instance
 * restarted (it is read at start), and every instance must share
 * ticket_lifetime too, or their windows differ.
 */
#include "http_int.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/gcm.h>
#include <mbedtls/hkdf.h>
#include <mbedtls/md.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TICKET_WINDOW_BYTES 4
#define TICKET_NONCE_BYTES 12
#define TICKET_TAG_BYTES 16
#define TICKET_ISSUED_BYTES 8
#define TICKET_PREFIX_BYTES (TICKET_ISSUED_BYTES + HTTP__TLS_TRUST_BYTES)
#define TICKET_HEAD_BYTES (TICKET_WINDOW_BYTES + TICKET_NONCE_BYTES)
/* Seconds a ticket's issue time may lie ahead of our clock (instances' clocks differ a little). */
#define TICKET_CLOCK_SKEW_S 300

/* The ticket that the handshake running on this thread accepted (1) or not (0). */
static _Thread_local int ticket_accepted;

static void ticket_put_be(unsigned char *out, uint64_t value, int bytes)
{
  for (int i = bytes - 1; i >= 0; i--) {
    out[i] = (unsigned char)(value & 0xff);
    value >>= 8;
  }
}

static uint64_t ticket_get_be(const unsigned char *in, int bytes)
{
  uint64_t value = 0;
  for (int i = 0; i < bytes; i++)
    value = value << 8 | in[i];
  return value;
}

/* The AES-256 key of window `window`, into key[32]. Returns 0 or an mbedTLS error. */
static int ticket_key(const struct http__tls_ticket *t, uint32_t window, unsigned char key[32])
{
  static const unsigned char salt[] = "pos http session ticket v1";
  unsigned char info[TICKET_WINDOW_BYTES];

  ticket_put_be(info, window, TICKET_WINDOW_BYTES);
  return mbedtls_hkdf(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), salt, sizeof(salt) - 1,
                      t->secret, t->secret_len, info, sizeof(info), key, 32);
}

static uint32_t ticket_window(const struct http__tls_ticket *t, time_t now)
{
  return (uint32_t)((uint64_t)now / t->lifetime_s);
}

/*
 * Seals (GCM encrypt) or opens (decrypt and authenticate) the ticket at
 * `ticket`, in place: its head (window and nonce) is the additional data,
 * `len` bytes of content follow it, then the tag. Returns 0 or an mbedTLS
 * error (MBEDTLS_ERR_GCM_AUTH_FAILED: not sealed by a key of ours).
 */
static int ticket_crypt(const struct http__tls_ticket *t, uint32_t window, int seal,
                        unsigned char *ticket, size_t len)
{
  unsigned char key[32];
  unsigned char *content = ticket + TICKET_HEAD_BYTES, *tag = content + len;
  const unsigned char *nonce = ticket + TICKET_WINDOW_BYTES;
  mbedtls_gcm_context gcm;
  int rc = ticket_key(t, window, key);

  if (rc != 0)
    return rc;
  mbedtls_gcm_init(&gcm);
  rc = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 256);
  if (rc == 0 && seal)
    rc =
        mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, len, nonce, TICKET_NONCE_BYTES, ticket,
                                  TICKET_HEAD_BYTES, content, content, TICKET_TAG_BYTES, tag);
  else if (rc == 0)
    rc = mbedtls_gcm_auth_decrypt(&gcm, len, nonce, TICKET_NONCE_BYTES, ticket, TICKET_HEAD_BYTES,
                                  tag, TICKET_TAG_BYTES, content, content);
  mbedtls_gcm_free(&gcm);
  mbedtls_platform_zeroize(key, sizeof(key));
  return rc;
}

int http__tls_ticket_init(struct http__tls_ticket *t, const char *key_file, uint32_t lifetime_s,
                          mbedtls_ctr_drbg_context *drbg, char *err, size_t err_size)
{
  struct stat st;
  ssize_t got;
  int fd, rc;

  memset(t, 0, sizeof(*t));
  t->lifetime_s = lifetime_s ? lifetime_s : HTTP_TLS_TICKET_LIFETIME_DEFAULT_S;
  t->drbg = drbg;
  if (key_file == NULL || key_file[0] == '\0') {
    rc = mbedtls_ctr_drbg_random(drbg, t->secret, HTTP__TLS_TICKET_SECRET_MIN);
    if (rc != 0) {
      snprintf(err, err_size,
               "tls: drawing a session ticket key failed (mbedTLS error -0x%04x); set "
               "ticket_key_file, or session_tickets = false",
               (unsigned)-rc);
      return -1;
    }
    t->secret_len = HTTP__TLS_TICKET_SECRET_MIN;
    t->enabled = 1;
    return 0;
  }
  fd = open(key_file, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    snprintf(err, err_size,
             "tls ticket_key_file %s does not exist; create it with 'head -c 32 /dev/urandom > "
             "%s; chmod 600 %s' and give every collector instance the same file",
             key_file, key_file, key_file);
    return -1;
  }
  if (fd < 0) {
    snprintf(err, err_size,
             "tls ticket_key_file %s: %s; it must be readable by the collector's user (and by "
             "no one else)",
             key_file, strerror(errno));
    return -1;
  }
  if (fstat(fd, &st) != 0) {
    snprintf(err, err_size, "tls ticket_key_file %s: %s", key_file, strerror(errno));
    close(fd);
    return -1;
  }
  if ((st.st_mode & 077) != 0) {
    close(fd);
    snprintf(err, err_size,
             "tls ticket_key_file %s can be read by its group or others (mode %03o): whoever "
             "reads it can decrypt session tickets; chmod 600 %s (mounted from a secret: "
             "mode 0400 there)",
             key_file, (unsigned)(st.st_mode & 0777), key_file);
    return -1;
  }
  got = read(fd, t->secret, sizeof(t->secret));
  close(fd);
  if (got < (ssize_t)HTTP__TLS_TICKET_SECRET_MIN) {
    snprintf(err, err_size,
             "tls ticket_key_file %s holds %zd bytes, fewer than the %d random bytes a ticket "
             "key needs: 'head -c 32 /dev/urandom > %s'",
             key_file, got < 0 ? (ssize_t)0 : got, HTTP__TLS_TICKET_SECRET_MIN, key_file);
    return -1;
  }
  t->secret_len = (size_t)got;
  t->enabled = 1;
  return 0;
}

void http__tls_ticket_free(struct http__tls_ticket *t)
{
  mbedtls_platform_zeroize(t->secret, sizeof(t->secret));
  t->secret_len = 0;
  t->enabled = 0;
}

/* mbedtls_ssl_ticket_write_t: seals `session` into start[0..end). */
int http__tls_ticket_write(void *p_ticket, const mbedtls_ssl_session *session, unsigned char *start,
                           const unsigned char *end, size_t *tlen, uint32_t *lifetime)
{
  const struct http__tls_ticket_conf *tc = p_ticket;
  const struct http__tls_ticket *t = tc->ticket;
  time_t now = time(NULL);
  uint32_t window = ticket_window(t, now);
  unsigned char *plain = start + TICKET_HEAD_BYTES;
  size_t room, saved = 0;
  int rc;

  *tlen = 0;
  if (end - start < TICKET_HEAD_BYTES + TICKET_PREFIX_BYTES + TICKET_TAG_BYTES)
    return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
  room = (size_t)(end - plain) - TICKET_PREFIX_BYTES - TICKET_TAG_BYTES;
  rc = mbedtls_ssl_session_save(session, plain + TICKET_PREFIX_BYTES, room, &saved);
  if (rc == 0) {
    ticket_put_be(start, window, TICKET_WINDOW_BYTES);
    rc = mbedtls_ctr_drbg_random(t->drbg, start + TICKET_WINDOW_BYTES, TICKET_NONCE_BYTES);
  }
  if (rc == 0) {
    ticket_put_be(plain, (uint64_t)now, TICKET_ISSUED_BYTES);
    memcpy(plain + TICKET_ISSUED_BYTES, tc->trust, HTTP__TLS_TRUST_BYTES);
    rc = ticket_crypt(t, window, 1, start, TICKET_PREFIX_BYTES + saved);
  }
  if (rc != 0) {
    /* The session (its master secret) is not left in the clear in mbedTLS's buffer. */
    mbedtls_platform_zeroize(start, (size_t)(end - start));
    return rc;
  }
  *tlen = TICKET_HEAD_BYTES + TICKET_PREFIX_BYTES + saved + TICKET_TAG_BYTES;
  *lifetime = t->lifetime_s;
  return 0;
}

/* mbedtls_ssl_ticket_parse_t: opens buf[0..len) (in place) into `session`. */
int http__tls_ticket_parse(void *p_ticket, mbedtls_ssl_session *session, unsigned char *buf,
                           size_t len)
{
  const struct http__tls_ticket_conf *tc = p_ticket;
  const struct http__tls_ticket *t = tc->ticket;
  time_t now = time(NULL);
  uint32_t window_now = ticket_window(t, now), window;
  unsigned char *plain = buf + TICKET_HEAD_BYTES;
  size_t plain_len;
  uint64_t issued;
  int rc;

  ticket_accepted = 0;
  if (len < TICKET_HEAD_BYTES + TICKET_PREFIX_BYTES + TICKET_TAG_BYTES)
    return MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
  plain_len = len - TICKET_HEAD_BYTES - TICKET_TAG_BYTES;
  window = (uint32_t)ticket_get_be(buf, TICKET_WINDOW_BYTES);
  /*
   * This window's key or the one before it; or the next one, from an
   * instance whose clock has just crossed into it (its issue time is checked
   * below, with the same allowance). Anything else is retired, or not ours.
   */
  if (window != window_now && window + 1 != window_now && window != window_now + 1)
    return MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
  rc = ticket_crypt(t, window, 0, buf, plain_len);
  if (rc == MBEDTLS_ERR_GCM_AUTH_FAILED)
    return MBEDTLS_ERR_SSL_INVALID_MAC;
  if (rc != 0)
    goto out;
  issued = ticket_get_be(plain, TICKET_ISSUED_BYTES);
  rc = MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
  if (issued > (uint64_t)now + TICKET_CLOCK_SKEW_S ||
      (issued < (uint64_t)now && (uint64_t)now - issued > t->lifetime_s))
    goto out;
  /* Checked under other CA certificates or CRLs: a full handshake checks it under ours. */
  if (memcmp(plain + TICKET_ISSUED_BYTES, tc->trust, HTTP__TLS_TRUST_BYTES) != 0)
    goto out;
  rc = mbedtls_ssl_session_load(session, plain + TICKET_PREFIX_BYTES,
                                plain_len - TICKET_PREFIX_BYTES);
  if (rc == 0 && tc->require_cert && session->peer_cert == NULL)
    rc = MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
  if (rc == 0)
    ticket_accepted = 1;
out:
  mbedtls_platform_zeroize(plain, plain_len);
  return rc;
}

int http__tls_ticket_take_accepted(void)
{
  int accepted = ticket_accepted;
  ticket_accepted = 0;
  return accepted;
}
