/*
 * enrol.h - the device's side of certificate enrolment over EST (RFC 7030):
 * its own key, made on the device and never sent anywhere; the PKCS#10
 * request naming urn:pos:store:<store>:device:<device>; reading the
 * collector's certs-only PKCS#7 answer; installing a renewed key and
 * certificate so that a power cut at any instant leaves a working pair; and
 * when to renew.
 *
 * Threading: no state of its own; each call works on what it is given. The
 * file functions block on fsync, so the uplink calls them between
 * connections (see enrol_install() for why that matters).
 */
#ifndef AGENT_ENROL_H
#define AGENT_ENROL_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/pk.h>

/* Longest store or device id (the collector's rule: 1-64 of [A-Za-z0-9._-]). */
#define ENROL_ID_MAX 64

/*
 * Writes `len` bytes of `data` to `path` so that a reader, or the file
 * system after a power cut, sees either the old file or the whole new one:
 * written to "<path>.tmp.<pid>" created with O_CREAT|O_EXCL and `mode` (so
 * a key is never readable by others, not even for an instant), fsynced,
 * renamed over `path`, and the directory fsynced. The umask may take bits
 * away from `mode`, never add any. Returns 0, or -1 with `err` naming the
 * file, the system's reason and what to check (the temporary file removed).
 */
int enrol_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode,
                            char *err, size_t err_size);

/*
 * Makes a new EC P-256 key into `key` (initialised by the caller, empty,
 * freed by the caller) with `drbg` (seeded by the caller, e.g. with
 * tls_seed()). Returns 0, or -1 with `err` set.
 */
int enrol_key_generate(mbedtls_pk_context *key, mbedtls_ctr_drbg_context *drbg, char *err,
                       size_t err_size);

/*
 * Writes the private `key` as PEM to `path` with enrol_file_write_atomic()
 * and mode 0600. Returns 0, or -1 with `err` set. The PEM is wiped from
 * memory before returning.
 */
int enrol_key_write(mbedtls_pk_context *key, const char *path, char *err, size_t err_size);

/* Whether `id` is a store or device id the collector accepts: 1-64 of [A-Za-z0-9._-]. */
int enrol_id_valid(const char *id);

/*
 * Builds the PKCS#10 request for `key` (borrowed), signed with SHA-256:
 * subject CN=urn:pos:store:<store_id>:device:<device_id>, a subjectAltName
 * with that URI, and key usage digitalSignature. Returns 0 with *der
 * (malloc'd, the caller frees) and *der_len, or -1 with `err` set (an id
 * that is not valid, out of memory, a signing failure).
 */
int enrol_csr_write(mbedtls_pk_context *key, const char *store_id, const char *device_id,
                    mbedtls_ctr_drbg_context *drbg, unsigned char **der, size_t *der_len,
                    char *err, size_t err_size);

/*
 * Base64 of `len` bytes of `data` on one line, NUL-terminated (malloc'd,
 * the caller frees): the EST request body. NULL when out of memory.
 */
char *enrol_base64(const unsigned char *data, size_t len);

/* What enrol_answer_read() found in the collector's answer. */
struct enrol_answer {
  char *cert_pem;     /* the device certificate, then the rest of the chain, PEM (caller frees) */
  int64_t not_before; /* the device certificate's validity, seconds since the epoch (UTC) */
  int64_t not_after;
  int cert_count; /* certificates in cert_pem */
};

/*
 * Reads an EST enrol or re-enrol answer: `body` is the base64 certs-only
 * PKCS#7 (application/pkcs7-mime; smime-type=certs-only), whitespace
 * ignored. Checks that the first certificate is the device's: its public
 * key is that of `key` (the key the request was made with), it names
 * urn:pos:store:<store_id>:device:<device_id> as the collector reads it
 * (a subjectAltName URI, the only urn:pos: one; the subject is the CA's
 * business), its validity
 * ends after it begins and after `now_s`. Fills `answer` (cert_pem to be
 * written with enrol_file_write_atomic(), mode 0644, or enrol_install()).
 * Returns 0, or -1 with `err` saying what is wrong with the answer (answer
 * left empty).
 */
int enrol_answer_read(const char *body, size_t len, mbedtls_pk_context *key, const char *store_id,
                      const char *device_id, int64_t now_s, struct enrol_answer *answer, char *err,
                      size_t err_size);

/* Frees what enrol_answer_read() put in `answer`; an empty one is fine. */
void enrol_answer_free(struct enrol_answer *answer);

/*
 * Installing a renewed pair over the live files the uplink reads
 * (uplink.cert and uplink.key), in four steps:
 *
 *   1 ENROL_INSTALL_STAGE_KEY   "<key>.new" written (enrol_file_write_atomic, 0600)
 *   2 ENROL_INSTALL_STAGE_CERT  "<cert>.new" written (0644)
 *   3 ENROL_INSTALL_COMMIT_KEY  "<key>.new" renamed over <key>, directory fsynced
 *   4 ENROL_INSTALL_COMMIT_CERT "<cert>.new" renamed over <cert>, directory fsynced
 *
 * The commit point is the end of step 2: from then on both staged files
 * are whole, on disk (each fsynced before its rename, the directory after)
 * and a matching pair, so recovery finishes the install; before it the
 * live pair is still the old one and recovery throws the staged file away.
 * A staged file counts only if it parses and matches its partner (the
 * other staged file, or the live one after step 3). Between
 * steps 3 and 4 the live files do not match: the uplink's reader
 * (agent/uplink/http_tls.c) refuses such a pair (tls_load_identity() checks
 * it), keeps what it had loaded, and reads the files again at its next
 * connection; since the agent installs on the uplink's own loop between
 * connections, and the two renames follow each other at once, the reader
 * does not see the mixed pair in practice, and never uses it. Steps 3 and
 * 4 could go in either order: recovery checks a lone staged file against
 * the live file it would join, so either half-way state is finished.
 */
enum enrol_install_step {
  ENROL_INSTALL_STAGE_KEY = 1,
  ENROL_INSTALL_STAGE_CERT = 2,
  ENROL_INSTALL_COMMIT_KEY = 3,
  ENROL_INSTALL_COMMIT_CERT = 4,
  ENROL_INSTALL_STEPS = 4
};

/*
 * Runs one step of the install (`cert_pem`/`key_pem` are used by the two
 * stage steps only; the others may pass NULL). For tests that stop the
 * sequence after any step, and for enrol_install(). Returns 0, or -1 with
 * `err` set.
 */
int enrol_install_step(const char *cert_path, const char *key_path, const char *cert_pem,
                       const char *key_pem, enum enrol_install_step step, char *err,
                       size_t err_size);

/*
 * Installs the PEM pair: enrol_install_recover() first (so leftovers of an
 * earlier attempt never mix with this one), then the four steps. Refuses
 * (-1, nothing changed) a pair that does not match. Returns 0, or -1 with
 * `err` set; after a failure, enrol_install_recover() leaves a working pair.
 */
int enrol_install(const char *cert_path, const char *key_path, const char *cert_pem,
                  const char *key_pem, char *err, size_t err_size);

/* What enrol_install_recover() did. */
enum enrol_recover_outcome {
  ENROL_RECOVER_CLEAN = 0,     /* nothing was half done */
  ENROL_RECOVER_COMPLETED = 1, /* a committed install was finished: the new pair is live */
  ENROL_RECOVER_ROLLED_BACK = 2 /* an install that had not committed was thrown away */
};

/*
 * At start (and before each install): finishes an install that passed its
 * commit point, or removes the staged files of one that did not, and
 * removes temporary files left by enrol_file_write_atomic(). A staged file
 * counts only if it parses and matches its partner. Sets *outcome (may be
 * NULL). Returns 0 when the live pair matches or neither live file exists
 * (not enrolled yet), or -1 with `err` saying what is wrong with the live
 * files and what to do.
 */
int enrol_install_recover(const char *cert_path, const char *key_path,
                          enum enrol_recover_outcome *outcome, char *err, size_t err_size);

/* When to renew: the settings (enrol_schedule_defaults() fills them). */
struct enrol_schedule_policy {
  double renew_at;          /* fraction of the lifetime at which to renew: 2/3 */
  double jitter;            /* spread around renew_at, fraction of the lifetime: 0.10 */
  int64_t jitter_cap_s;     /* at most this spread: 7 days */
  int64_t floor_s;          /* at least this between two attempts: 10 min */
  int64_t backoff_cap_s;    /* failures back off from the floor, doubling, up to: 6 h */
};

void enrol_schedule_defaults(struct enrol_schedule_policy *policy);

/* A seed unique to the device, for the jitter: a hash of its ids. */
uint64_t enrol_schedule_seed(const char *store_id, const char *device_id);

enum enrol_schedule_state {
  ENROL_SCHEDULE_WAIT = 0,    /* renew at next_s */
  ENROL_SCHEDULE_EXPIRED = 1, /* the certificate has expired: it cannot renew itself; a new
                                 enrolment token is needed (next_s is not_after) */
  ENROL_SCHEDULE_INVALID = 2  /* not_after is not after not_before: nothing to plan */
};

/*
 * The next renewal attempt for a certificate valid from `not_before` to
 * `not_after` (seconds since the epoch), at `now_s`, `failures` attempts
 * having failed in a row since the last success (0 when none), the last
 * attempt at `last_attempt_s` (0 when none). Pure: the same inputs give the
 * same answer.
 *
 * Without failures: not_before + lifetime * renew_at, moved by up to half
 * the jitter either way (drawn from `seed` and not_before, so devices
 * enrolled the same day spread out and each certificate gets its own
 * draw); but never earlier than last_attempt_s + floor_s. A time already
 * past means "now".
 * After failures: last_attempt_s (or now) + floor_s * 2^(failures-1), at
 * most backoff_cap_s, with up to 10% of that added from the seed (so a
 * fleet that failed together does not retry together); pulled back to
 * halfway from the last attempt to not_after when it would pass it, but
 * never earlier than last_attempt_s + floor_s; a time already past means
 * "now". Counted from the last attempt, so that asking again when the
 * answer's time comes gives "now".
 */
enum enrol_schedule_state enrol_schedule_next(const struct enrol_schedule_policy *policy,
                                              int64_t not_before, int64_t not_after,
                                              int64_t now_s, uint64_t seed, unsigned failures,
                                              int64_t last_attempt_s, int64_t *next_s);

/* The EST operations the agent uses (RFC 7030 section 3.2.2). */
enum enrol_est_op {
  ENROL_EST_ENROL = 0,   /* POST simpleenroll: a new device, with its enrolment token */
  ENROL_EST_REENROL = 1, /* POST simplereenroll: renewal over mutual TLS, no token */
  ENROL_EST_CACERTS = 2  /* GET cacerts: the issuing CA chain */
};

/* An EST request as the uplink's HTTP client sends it. */
struct enrol_est_request {
  char url[1024];
  const char *method;            /* "POST" or "GET" (static) */
  const char *content_type;      /* "application/pkcs10", or NULL for GET (static) */
  const char *transfer_encoding; /* Content-Transfer-Encoding "base64", or NULL (static) */
  char *authorization;           /* "Basic ..." for ENROL_EST_ENROL, else NULL (owned) */
  char *body;                    /* base64 of the CSR's DER, or NULL for GET (owned) */
  size_t body_len;
};

/*
 * Builds the request for `op` at `base_url` (the enrolment URL for
 * ENROL_EST_ENROL, the uplink URL otherwise; "http(s)://host[:port][/path]",
 * a trailing '/' dropped) and "/.well-known/est/<op>". ENROL_EST_ENROL takes
 * the token (Authorization: Basic of "<store_id>/<device_id>:<token>");
 * the others ignore `token`. POSTs take the CSR's DER (borrowed; base64'd
 * into the body). Returns 0, or -1 with `err` set (req left empty: a bad
 * URL, id or token, out of memory). The token never appears in `err`.
 */
int enrol_est_request_build(enum enrol_est_op op, const char *base_url, const char *store_id,
                            const char *device_id, const char *token,
                            const unsigned char *csr_der, size_t csr_len,
                            struct enrol_est_request *req, char *err, size_t err_size);

/* Frees what enrol_est_request_build() put in `req` (the token wiped). */
void enrol_est_request_free(struct enrol_est_request *req);

/* What to do with the collector's EST answer. */
enum enrol_est_verdict {
  ENROL_EST_ISSUED = 0,     /* 200: read the body with enrol_answer_read() */
  ENROL_EST_REFUSED = 1,    /* 400, 401, 403: retrying the same will not help; a person must act
                               (a new token, the ids) */
  ENROL_EST_RETRY_AT = 2,   /* 202, 429 or 503 (retry_at_s from Retry-After, or the
                               schedule's back-off when absent), 409 (the token is in use by
                               another request right now), other 5xx, or no answer */
  ENROL_EST_UNEXPECTED = 3  /* anything else: a failure, back off */
};

struct enrol_est_outcome {
  enum enrol_est_verdict verdict;
  int64_t retry_at_s; /* ENROL_EST_RETRY_AT with a Retry-After: when; else 0 */
  char message[512];  /* for the log and the status: the status and the collector's words */
};

/*
 * Classifies an answer: HTTP `status` (0 when there was no answer), the
 * body (the collector's plain-text reason on refusals; its printable
 * characters, at most 300, go into the message), Retry-After in seconds
 * (-1 = none; at most a day is believed) and the clock. Pure.
 */
void enrol_est_answer_classify(long status, const char *body, size_t body_len,
                               int64_t retry_after_s, int64_t now_s,
                               struct enrol_est_outcome *outcome);

/*
 * One enrolment or renewal, for the uplink to carry out in two calls
 * around its HTTP request: enrol_attempt_start() makes the new key (kept in
 * memory only) and the request; enrol_attempt_finish() reads the answer
 * and, when a certificate for that key came back, installs the pair.
 */
struct enrol_attempt {
  mbedtls_pk_context key;            /* the new key (owned) */
  struct enrol_est_request request;  /* what to send (owned) */
  char store_id[ENROL_ID_MAX + 1];
  char device_id[ENROL_ID_MAX + 1];
  char pending_path[4096]; /* "<key>.pending", or "" when not kept on disk */
  int reused;              /* the key is a pending one from an attempt that did not finish */
};

/*
 * Starts an attempt of `op` (ENROL_EST_ENROL with `token`, or
 * ENROL_EST_REENROL): a new P-256 key and its request, built as
 * enrol_est_request_build() says. With `key_path` (the live key, may be
 * NULL), the new key is first written to "<key_path>.pending" (mode 0600,
 * atomically) and an attempt after a crash or a failure reuses that key
 * instead of making another, unless it is the live key already: so a
 * certificate the collector issued for an answer that never arrived (a
 * power cut, a timeout) still has its key on the device, and a collector
 * that answers a repeated request for the same key again (a single-use
 * token spent by the lost answer) lets the device finish. `attempt` is
 * filled (free it with enrol_attempt_free() whatever the result). Returns
 * 0, or -1 with `err`.
 */
int enrol_attempt_start(struct enrol_attempt *attempt, enum enrol_est_op op,
                        const char *base_url, const char *store_id, const char *device_id,
                        const char *token, const char *key_path, mbedtls_ctr_drbg_context *drbg,
                        char *err, size_t err_size);

/*
 * Finishes the attempt with the collector's answer (HTTP `status`, 0 for
 * none; its body; Retry-After seconds or -1): classifies it into
 * `outcome`, and on 200 reads the certificate (enrol_answer_read(), which
 * must certify this attempt's key and name this device) and installs it
 * with the key over `cert_path` and `key_path` (enrol_install()), then
 * removes the pending key, setting *not_after (may be NULL) for the next
 * schedule. Returns 0 when the new
 * pair is installed; -1 otherwise, with `err` saying why (for a refusal or
 * a retry, outcome->message).
 */
int enrol_attempt_finish(struct enrol_attempt *attempt, long status, const char *body,
                         size_t body_len, int64_t retry_after_s, int64_t now_s,
                         const char *cert_path, const char *key_path,
                         struct enrol_est_outcome *outcome, int64_t *not_after, char *err,
                         size_t err_size);

/* Frees the attempt's key (wiped) and request; a zeroed one is fine. */
void enrol_attempt_free(struct enrol_attempt *attempt);

#endif
