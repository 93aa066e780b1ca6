/*
 * status_password.h - the store manager's password, as kept in
 * [api] manager_password_file: one line
 *
 *   pbkdf2-sha256$<iterations>$<salt, base64>$<hash, base64>
 *
 * made by `pos-agent --hash-password` (PBKDF2-HMAC-SHA256, mbedTLS, a
 * 16-byte random salt, a 32-byte hash). A file written before hashes
 * existed holds the password itself on its first line: that keeps working
 * (the agent logs once that it should be converted, and how), so no store
 * is locked out by an upgrade.
 */
#ifndef AGENT_STATUS_PASSWORD_H
#define AGENT_STATUS_PASSWORD_H

#include <stddef.h>
#include <stdio.h>

/* PBKDF2 rounds for new hashes. Checking costs about 30-60 ms of one core on
 * a store device; a successful check is remembered (status_password_check),
 * so the status page pays it once, not at every action. */
#define STATUS_PASSWORD_ITERATIONS 100000
#define STATUS_PASSWORD_PREFIX "pbkdf2-sha256$"
#define STATUS_PASSWORD_LINE_MAX 160

/*
 * Writes the password file line for `password` (`len` bytes) into `out`
 * with a fresh random salt. 0, or -1 with `why` set (no randomness, out of
 * room). Any thread.
 */
int status_password_hash(const char *password, size_t len, unsigned iterations, char *out,
                         size_t out_size, char *why, size_t why_size);

/*
 * Does `given` (`given_len` bytes) match `line` (the file's first line,
 * without its newline)? 1 yes, 0 no, -1 the line starts like a hash but is
 * not one (`why` says what is wrong with it). A line that does not start
 * with STATUS_PASSWORD_PREFIX is a plain-text password, compared in
 * constant time. A hash that matched is remembered (its SHA-256 with the
 * password), so checking the same password against the same line again
 * costs one SHA-256. Loop thread (the memory is not locked).
 */
int status_password_check(const char *line, const char *given, size_t given_len, char *why,
                          size_t why_size);

/*
 * `pos-agent --hash-password`: reads the password from the first line of
 * `in` (a terminal, a pipe), prints the line for the password file on
 * `out`, errors on `err`. Returns the process exit status.
 */
int status_password_cli(FILE *in, FILE *out, FILE *err);

#endif
