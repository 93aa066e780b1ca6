/*
 * client.h - posctl's requests to the collector's admin API: HTTPS with
 * the admin's client certificate (libcurl), JSON both ways (jansson), and
 * the exit codes a script can trust.
 *
 * Every function is for posctl's one thread. curl_global_init() must have
 * been called before the first request (posctl's main does).
 */
#ifndef POSCTL_CLIENT_H
#define POSCTL_CLIENT_H

#include <jansson.h>
#include <stddef.h>

/* posctl's exit codes (documented in every --help and collector/README.md). */
enum posctl_exit {
  POSCTL_EXIT_OK = 0,          /* done (for --wait: finished DONE) */
  POSCTL_EXIT_REFUSED = 1,     /* the collector refused (4xx), or no such thing */
  POSCTL_EXIT_USAGE = 2,       /* usage or configuration error */
  POSCTL_EXIT_UNREACHABLE = 3, /* connect, TLS, 5xx after retries */
  POSCTL_EXIT_INCOMPLETE = 4,  /* --wait: finished INCOMPLETE (history missing) */
  POSCTL_EXIT_FAILED = 5,      /* --wait: FAILED or CANCELLED */
  POSCTL_EXIT_TIMEOUT = 6,     /* --wait: --timeout reached first */
  POSCTL_EXIT_LAGGING = 10,    /* stores --lagging, certificates: at least one listed */
  POSCTL_EXIT_INTERRUPTED = 130, /* --wait: Ctrl-C (the shell's 128 + SIGINT) */
};

/*
 * The exit code for an HTTP status: 2xx 0, 4xx 1 (refused), anything else
 * 3 (the collector could not answer: 5xx, or not an HTTP answer we know).
 */
int posctl_exit_for_status(long status);

/*
 * The exit code for a command's state once --wait sees it: "done" 0,
 * "incomplete" 4, "failed" and "cancelled" 5; -1 for "pending" and
 * "running" (not finished: keep waiting). A state posctl does not know is
 * taken as finished and not done (5), so that a script never reads 0 for it.
 */
int posctl_exit_for_state(const char *state);

/* Where the collector is and who we are (all borrowed strings). */
struct posctl_target {
  const char *url;  /* "https://collector:8443", no trailing slash needed */
  const char *cert; /* the admin's certificate (PEM) */
  const char *key;  /* its private key (PEM) */
  const char *ca;   /* the CA the collector's certificate must chain to; NULL = system */
  long timeout_s;   /* per request */
};

/* Largest answer body kept (the whole fleet: 2,000+ stores fit many times over). */
#define POSCTL_ANSWER_MAX (64u * 1024u * 1024u)

/* One request's outcome. */
struct posctl_answer {
  long status;          /* HTTP status; 0 when no answer came */
  json_t *json;         /* the parsed 2xx body (owned; posctl_answer_clear frees it) */
  char message[1024];   /* for people, when the exit code is not 0 */
  char error[512];      /* a refusal's own text (its JSON "error"), "" when none */
  int no_answer;        /* the transfer failed in a way worth another try (connect, time out) */
};

/*
 * Sends `method` `path` (e.g. "/v1/admin/stores?lagging=30m"; the caller
 * escapes ids in it) with `body` (borrowed, NULL for none) as JSON. A GET
 * answered 503 with Retry-After is sent again after that many seconds
 * (capped at 10), up to `retries` more times. A POST is resent only when its
 * body has a "request_id" (the collector then returns the command it made,
 * never a second one): on a 503, or when no answer came, up to `retries`
 * more times, after Retry-After or 1, 2, then 5 s (posctl: 10 times, about
 * 45 s). Returns the exit code: 0 with `answer->json` set to the 2xx
 * answer's JSON; otherwise 1, 2 or 3 with
 * `answer->message` saying what went wrong and what to do:
 *   3 "cannot reach the collector at URL: <curl's reason>; check --url and that the collector runs"
 *   1 "the collector refused: <its error>"
 *   2 the client certificate, key or CA file cannot be used
 * `answer` is overwritten; clear it with posctl_answer_clear.
 */
int posctl_request(const struct posctl_target *target, const char *method, const char *path,
                   const json_t *body, int retries, struct posctl_answer *answer);

/* Frees what `answer` holds; it can be reused. */
void posctl_answer_clear(struct posctl_answer *answer);

/*
 * Appends `text` URL-escaped (RFC 3986 unreserved characters kept) to
 * `out` (holding a NUL-terminated string of at most out_size - 1 bytes).
 * Returns 0, or -1 when it does not fit.
 */
int posctl_append_escaped(char *out, size_t out_size, const char *text);

#endif
