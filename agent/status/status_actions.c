/*
 * status_actions.c - POST /actions/push behind the manager's password.
 */
#include "status/status_actions.h"

#include <errno.h>
#include <jansson.h>
#include <mbedtls/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "platform/clock.h"
#include "platform/log.h"
#include "status/status_password.h"

#define STATUS_PASSWORD_MAX 256
/* After a wrong password against a hash, the next hash check waits this
 * long: each costs tens of milliseconds of the loop that answers the tills,
 * so guessing must not be able to take more than a small share of it. */
#define STATUS_WRONG_PASSWORD_PAUSE_MS 1000

static uint64_t status_wrong_password_ms; /* clock_mono_ms of the last wrong one; loop thread */

static void status_actions_respond(http_exchange *exchange, int status, const char *key,
                                   const char *value, const char *extra_headers)
{
  json_t *body = json_pack("{s:s}", key, value);
  char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  if (text)
    http_exchange_respond(exchange, status, "application/json", extra_headers, text,
                          strlen(text));
  else
    http_exchange_respond(exchange, 500, "application/json", NULL,
                          "{\"error\":\"out of memory\"}", strlen("{\"error\":\"out of memory\"}"));
  free(text);
  json_decref(body);
}

/* Reads the password (first line). 0, or -1 with `why` set. */
static int status_read_password(const char *path, char *out, size_t out_size, char *why,
                                size_t why_size)
{
  FILE *file = fopen(path, "r");
  if (!file) {
    snprintf(why, why_size, "the manager password file %s cannot be read: %s", path,
             strerror(errno));
    return -1;
  }
  if (!fgets(out, (int)out_size, file))
    out[0] = '\0';
  fclose(file);
  out[strcspn(out, "\r\n")] = '\0';
  if (out[0] == '\0') {
    snprintf(why, why_size, "the manager password file %s is empty", path);
    return -1;
  }
  return 0;
}

/* The password of an HTTP Basic `authorization` (any user name), decoded
 * into `decoded`: a pointer into it and its length, or NULL. */
static const char *status_basic_password(const char *authorization, char *decoded, size_t size,
                                         size_t *len)
{
  const char *token, *colon;
  size_t token_len, decoded_len = 0;

  if (!authorization || strncasecmp(authorization, "Basic ", 6) != 0)
    return NULL;
  token = authorization + 6;
  while (*token == ' ')
    token++;
  token_len = strlen(token);
  while (token_len > 0 && token[token_len - 1] == ' ')
    token_len--;
  if (mbedtls_base64_decode((unsigned char *)decoded, size - 1, &decoded_len,
                            (const unsigned char *)token, token_len) != 0)
    return NULL;
  colon = memchr(decoded, ':', decoded_len);
  if (!colon)
    return NULL;
  *len = (size_t)(decoded + decoded_len - (colon + 1));
  return colon + 1;
}

int status_actions_check_manager(const char *password_file, const char *authorization,
                                 struct http_refusal *refusal)
{
  char password[STATUS_PASSWORD_MAX + 2];
  char decoded[2 * STATUS_PASSWORD_MAX + 8];
  char why[400];
  const char *given;
  size_t given_len = 0;
  int match = 0;

  refusal->extra_headers = NULL;
  if (!password_file || !password_file[0]) {
    snprintf(refusal->error, sizeof(refusal->error),
             "manager actions are disabled on this device: set [api] manager_password_file to "
             "a file holding the manager's password");
    return 403;
  }
  if (status_read_password(password_file, password, sizeof(password), why, sizeof(why))) {
    char quoted[450];
    log_error("status", "password_unreadable", "reason=%s", log_quote(why, quoted, sizeof(quoted)));
    snprintf(refusal->error, sizeof(refusal->error), "%.290s", why);
    refusal->extra_headers = "Retry-After: 60\r\n";
    return 503;
  }
  given = status_basic_password(authorization, decoded, sizeof(decoded), &given_len);
  if (given && status_wrong_password_ms &&
      clock_mono_ms() - status_wrong_password_ms < STATUS_WRONG_PASSWORD_PAUSE_MS &&
      strncmp(password, STATUS_PASSWORD_PREFIX, strlen(STATUS_PASSWORD_PREFIX)) == 0) {
    snprintf(refusal->error, sizeof(refusal->error),
             "a wrong password was given a moment ago: try again in a second");
    refusal->extra_headers = "Retry-After: 1\r\n";
    return 429;
  }
  if (given) {
    match = status_password_check(password, given, given_len, why, sizeof(why));
    if (match < 0) {
      char quoted[450];
      log_error("status", "password_file_bad", "path=%s reason=%s", password_file,
                log_quote(why, quoted, sizeof(quoted)));
      snprintf(refusal->error, sizeof(refusal->error),
               "the manager password file %.100s is not a password line: %.100s; make it again "
               "with pos-agent --hash-password", password_file, why);
      refusal->extra_headers = "Retry-After: 60\r\n";
      return 503;
    }
  }
  if (match == 1 && strncmp(password, STATUS_PASSWORD_PREFIX, strlen(STATUS_PASSWORD_PREFIX))) {
    /* Still accepted (an upgrade must not lock the store out); said once. */
    static int said;
    if (!said)
      log_warn("status", "password_plain_text",
               "path=%s reason=\"the manager password file holds the password itself; replace "
               "it with the line pos-agent --hash-password prints\"", password_file);
    said = 1;
  }
  if (match != 1) {
    if (given && strncmp(password, STATUS_PASSWORD_PREFIX, strlen(STATUS_PASSWORD_PREFIX)) == 0)
      status_wrong_password_ms = clock_mono_ms();
    snprintf(refusal->error, sizeof(refusal->error),
             "the store manager's password is required (HTTP Basic authentication, any user "
             "name)");
    refusal->extra_headers = "WWW-Authenticate: Basic realm=\"pos-agent\", charset=\"UTF-8\"\r\n";
    return 401;
  }
  return 0;
}

void status_actions_push(const struct status_actions_options *options, http_exchange *exchange)
{
  struct http_refusal refusal;
  int status = status_actions_check_manager(options->password_file,
                                            http_exchange_header(exchange, "Authorization"),
                                            &refusal);
  if (status) {
    if (status == 401)
      log_warn("status", "unauthorized", "peer=%s path=/actions/push",
               http_exchange_peer(exchange));
    /* The status page asks for the password in its own field: a challenge
     * would make the browser open its login box over it. */
    if (status == 401 && http_exchange_header(exchange, "X-Status-Page"))
      refusal.extra_headers = NULL;
    status_actions_respond(exchange, status, "error", refusal.error, refusal.extra_headers);
    return;
  }
  if (!options->uplink) {
    status_actions_respond(exchange, 409, "error",
                           "the uplink is off ([uplink] url is empty): there is no collector "
                           "to push to",
                           NULL);
    return;
  }
  log_info("status", "action", "action=push peer=%s", http_exchange_peer(exchange));
  uplink_push_now(options->uplink, "action");
  status_actions_respond(exchange, 202, "push", "started", NULL);
}
