/*
 * status_password.c - PBKDF2-HMAC-SHA256 password lines (mbedTLS).
 */
#include "status/status_password.h"

#include <errno.h>
#include <inttypes.h>
#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define STATUS_SALT_BYTES 16
#define STATUS_HASH_BYTES 32
/* Lower bound for a stored line: fewer rounds are refused, not trusted. */
#define STATUS_PASSWORD_MIN_ITERATIONS 10000
#define STATUS_PASSWORD_MAX_ITERATIONS 10000000

/* The last line and password that matched: SHA-256(line NUL password). */
static unsigned char status_remembered[32];
static int status_remembered_set;

static int status_pbkdf2(const char *password, size_t len, const unsigned char *salt,
                         size_t salt_len, unsigned iterations, unsigned char *out)
{
  mbedtls_md_context_t md;
  int rc;
  mbedtls_md_init(&md);
  rc = mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
  if (rc == 0)
    rc = mbedtls_pkcs5_pbkdf2_hmac(&md, (const unsigned char *)password, len, salt, salt_len,
                                   iterations, STATUS_HASH_BYTES, out);
  mbedtls_md_free(&md);
  return rc;
}

int status_password_hash(const char *password, size_t len, unsigned iterations, char *out,
                         size_t out_size, char *why, size_t why_size)
{
  unsigned char salt[STATUS_SALT_BYTES], hash[STATUS_HASH_BYTES];
  unsigned char salt64[32], hash64[48];
  size_t salt64_len = 0, hash64_len = 0;
  int rc = -1;

  if (getrandom(salt, sizeof(salt), 0) != (ssize_t)sizeof(salt)) {
    snprintf(why, why_size, "no random salt from the kernel: %s", strerror(errno));
    goto out;
  }
  if (status_pbkdf2(password, len, salt, sizeof(salt), iterations, hash) ||
      mbedtls_base64_encode(salt64, sizeof(salt64), &salt64_len, salt, sizeof(salt)) ||
      mbedtls_base64_encode(hash64, sizeof(hash64), &hash64_len, hash, sizeof(hash))) {
    snprintf(why, why_size, "PBKDF2 failed (mbedTLS)");
    goto out;
  }
  if ((size_t)snprintf(out, out_size, STATUS_PASSWORD_PREFIX "%u$%s$%s", iterations,
                       (const char *)salt64, (const char *)hash64) >= out_size) {
    snprintf(why, why_size, "the line does not fit");
    goto out;
  }
  rc = 0;
out:
  mbedtls_platform_zeroize(hash, sizeof(hash));
  return rc;
}

/* Compares in time independent of where the strings differ. */
static int status_equal(const unsigned char *a, size_t a_len, const unsigned char *b,
                        size_t b_len)
{
  unsigned char diff = (unsigned char)(a_len != b_len);
  for (size_t i = 0; i < b_len; i++)
    diff |= (unsigned char)(a[a_len ? i % a_len : 0] ^ b[i]);
  return diff == 0;
}

/* SHA-256(line NUL given): what is remembered of a match. */
static void status_fingerprint(const char *line, const char *given, size_t given_len,
                               unsigned char out[32])
{
  mbedtls_sha256_context sha;
  mbedtls_sha256_init(&sha);
  mbedtls_sha256_starts_ret(&sha, 0);
  mbedtls_sha256_update_ret(&sha, (const unsigned char *)line, strlen(line) + 1);
  mbedtls_sha256_update_ret(&sha, (const unsigned char *)given, given_len);
  mbedtls_sha256_finish_ret(&sha, out);
  mbedtls_sha256_free(&sha);
}

/* Splits "pbkdf2-sha256$N$salt$hash". 0, or -1 with `why`. */
static int status_parse_line(const char *line, unsigned *iterations, unsigned char *salt,
                             size_t *salt_len, unsigned char *hash, size_t *hash_len, char *why,
                             size_t why_size)
{
  const char *p = line + strlen(STATUS_PASSWORD_PREFIX), *salt64, *hash64;
  char *end;
  unsigned long n;

  errno = 0;
  n = strtoul(p, &end, 10);
  if (errno || end == p || *end != '$' || n < STATUS_PASSWORD_MIN_ITERATIONS ||
      n > STATUS_PASSWORD_MAX_ITERATIONS) {
    snprintf(why, why_size, "its iteration count is not a number from %d to %d",
             STATUS_PASSWORD_MIN_ITERATIONS, STATUS_PASSWORD_MAX_ITERATIONS);
    return -1;
  }
  salt64 = end + 1;
  hash64 = strchr(salt64, '$');
  if (!hash64 ||
      mbedtls_base64_decode(salt, STATUS_SALT_BYTES * 2, salt_len,
                            (const unsigned char *)salt64, (size_t)(hash64 - salt64)) ||
      *salt_len < 8 ||
      mbedtls_base64_decode(hash, STATUS_HASH_BYTES, hash_len, (const unsigned char *)hash64 + 1,
                            strlen(hash64 + 1)) ||
      *hash_len != STATUS_HASH_BYTES) {
    snprintf(why, why_size, "its salt or hash is not base64 of the right length");
    return -1;
  }
  *iterations = (unsigned)n;
  return 0;
}

int status_password_check(const char *line, const char *given, size_t given_len, char *why,
                          size_t why_size)
{
  unsigned char salt[STATUS_SALT_BYTES * 2], stored[STATUS_HASH_BYTES];
  unsigned char computed[STATUS_HASH_BYTES], fingerprint[32];
  size_t salt_len = 0, stored_len = 0;
  unsigned iterations = 0;
  int rc = 0;

  if (strncmp(line, STATUS_PASSWORD_PREFIX, strlen(STATUS_PASSWORD_PREFIX)) != 0)
    return status_equal((const unsigned char *)line, strlen(line),
                        (const unsigned char *)given, given_len);
  if (status_parse_line(line, &iterations, salt, &salt_len, stored, &stored_len, why,
                        why_size))
    return -1;
  status_fingerprint(line, given, given_len, fingerprint);
  if (status_remembered_set && status_equal(status_remembered, 32, fingerprint, 32))
    return 1;
  if (status_pbkdf2(given, given_len, salt, salt_len, iterations, computed)) {
    snprintf(why, why_size, "PBKDF2 failed (mbedTLS)");
    return -1;
  }
  rc = status_equal(stored, sizeof(stored), computed, sizeof(computed));
  if (rc) {
    memcpy(status_remembered, fingerprint, sizeof(fingerprint));
    status_remembered_set = 1;
  }
  mbedtls_platform_zeroize(computed, sizeof(computed));
  return rc;
}

int status_password_cli(FILE *in, FILE *out, FILE *err)
{
  char password[STATUS_PASSWORD_LINE_MAX * 2], line[STATUS_PASSWORD_LINE_MAX], why[200];
  size_t len;
  int rc = 1;

  if (!fgets(password, sizeof(password), in)) {
    fprintf(err, "pos-agent --hash-password: give the password on standard input, e.g.\n"
                 "  read -rs PW && printf '%%s\\n' \"$PW\" | pos-agent --hash-password "
                 "> /etc/pos-agent/manager-password\n");
    goto out;
  }
  len = strcspn(password, "\r\n");
  password[len] = '\0';
  if (len == 0 || (len == sizeof(password) - 1)) {
    fprintf(err, "pos-agent --hash-password: the password must be 1 to %zu characters on one "
                 "line\n", sizeof(password) - 2);
    goto out;
  }
  if (status_password_hash(password, len, STATUS_PASSWORD_ITERATIONS, line, sizeof(line), why,
                           sizeof(why))) {
    fprintf(err, "pos-agent --hash-password: %s\n", why);
    goto out;
  }
  fprintf(out, "%s\n", line);
  rc = fflush(out) == 0 ? 0 : 1;
out:
  mbedtls_platform_zeroize(password, sizeof(password));
  return rc;
}
