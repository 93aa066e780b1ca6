/*
 * status_actions.c - POST /actions/push behind the manager's password.
 */
#include "status/status_actions.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "platform/log.h"

#define STATUS_PASSWORD_MAX 256

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

static int status_base64_value(char c)
{
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+')
    return 62;
  if (c == '/')
    return 63;
  return -1;
}

/* Decodes standard base64 (with padding) into `out`, NUL-terminated.
 * Returns the length, or -1 (not base64, or too long). */
static int status_actions_base64_decode(const char *in, size_t in_len, char *out,
                                        size_t out_size)
{
  size_t n = 0;
  if (in_len % 4 != 0)
    return -1;
  for (size_t i = 0; i < in_len; i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; k++) {
      char c = in[i + (size_t)k];
      if (c == '=' && i + 4 == in_len && k >= 2) {
        v[k] = 0;
        pad++;
        continue;
      }
      if (pad)
        return -1; /* data after padding */
      v[k] = status_base64_value(c);
      if (v[k] < 0)
        return -1;
    }
    if (n + 3 - (size_t)pad >= out_size)
      return -1;
    out[n++] = (char)(v[0] << 2 | v[1] >> 4);
    if (pad < 2)
      out[n++] = (char)((v[1] & 0xf) << 4 | v[2] >> 2);
    if (pad < 1)
      out[n++] = (char)((v[2] & 0x3) << 6 | v[3]);
  }
  out[n] = '\0';
  return (int)n;
}

/* Compares in time independent of where the strings differ. */
static int status_secret_equal(const char *expected, const char *given, size_t given_len)
{
  size_t expected_len = strlen(expected);
  unsigned char diff = (unsigned char)(expected_len != given_len);
  for (size_t i = 0; i < given_len; i++)
    diff |= (unsigned char)(expected[i % (expected_len ? expected_len : 1)] ^ given[i]);
  return diff == 0;
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

int status_actions_check_manager(const char *password_file, const char *authorization,
                                 struct http_refusal *refusal)
{
  char password[STATUS_PASSWORD_MAX + 2];
  char decoded[2 * STATUS_PASSWORD_MAX + 8];
  char why[400];
  const char *given;
  int decoded_len = -1;

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
  if (authorization && strncasecmp(authorization, "Basic ", 6) == 0) {
    const char *token = authorization + 6;
    size_t len;
    while (*token == ' ')
      token++;
    len = strlen(token);
    while (len > 0 && token[len - 1] == ' ')
      len--;
    decoded_len = status_actions_base64_decode(token, len, decoded, sizeof(decoded));
  }
  given = decoded_len >= 0 ? memchr(decoded, ':', (size_t)decoded_len) : NULL;
  if (!given ||
      !status_secret_equal(password, given + 1, (size_t)(decoded + decoded_len - (given + 1)))) {
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
