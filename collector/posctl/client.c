/*
 * client.c - posctl's requests to the admin API (client.h).
 */
#include "posctl/client.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How long a 503's Retry-After may make posctl wait before asking again. */
#define CLIENT_RETRY_AFTER_MAX_S 10
/* Connecting (TCP and TLS) gives up after this: an unreachable collector says so soon. */
#define CLIENT_CONNECT_TIMEOUT_S 10

int posctl_exit_for_status(long status)
{
  if (status >= 200 && status <= 299)
    return POSCTL_EXIT_OK;
  if (status >= 400 && status <= 499)
    return POSCTL_EXIT_REFUSED;
  return POSCTL_EXIT_UNREACHABLE;
}

int posctl_exit_for_state(const char *state)
{
  if (!state)
    return POSCTL_EXIT_FAILED;
  if (strcmp(state, "pending") == 0 || strcmp(state, "running") == 0)
    return -1;
  if (strcmp(state, "done") == 0)
    return POSCTL_EXIT_OK;
  if (strcmp(state, "incomplete") == 0)
    return POSCTL_EXIT_INCOMPLETE;
  return POSCTL_EXIT_FAILED;
}

void posctl_answer_clear(struct posctl_answer *answer)
{
  json_decref(answer->json);
  memset(answer, 0, sizeof(*answer));
}

int posctl_append_escaped(char *out, size_t out_size, const char *text)
{
  static const char hex[] = "0123456789ABCDEF";
  size_t used = strlen(out);
  for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
    int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~';
    if (used + (plain ? 1 : 3) >= out_size)
      return -1;
    if (plain) {
      out[used++] = (char)*p;
    } else {
      out[used++] = '%';
      out[used++] = hex[*p >> 4];
      out[used++] = hex[*p & 15];
    }
  }
  out[used] = '\0';
  return 0;
}

struct client_body {
  char *data;
  size_t len;
  int too_large;
};

static size_t client_on_data(char *data, size_t size, size_t count, void *user)
{
  struct client_body *body = user;
  size_t len = size * count;
  char *grown;
  if (body->len + len > POSCTL_ANSWER_MAX) {
    body->too_large = 1;
    return 0; /* curl stops the transfer with CURLE_WRITE_ERROR */
  }
  grown = realloc(body->data, body->len + len + 1);
  if (!grown)
    return 0;
  memcpy(grown + body->len, data, len);
  body->data = grown;
  body->len += len;
  body->data[body->len] = '\0';
  return len;
}

/* The collector's error text from a refusal's body: its JSON "error", else its first line. */
static void client_error_text(const struct client_body *body, long status, char *out,
                              size_t out_size, int *was_json)
{
  json_t *json = body->len ? json_loadb(body->data, body->len, 0, NULL) : NULL;
  const json_t *error = json_object_get(json, "error");
  *was_json = json != NULL;
  if (json_is_string(error)) {
    snprintf(out, out_size, "%s", json_string_value(error));
  } else if (body->len) {
    size_t len = strcspn(body->data, "\r\n");
    snprintf(out, out_size, "%.*s", (int)(len > 300 ? 300 : len), body->data);
  }
  if (!out[0])
    snprintf(out, out_size, "HTTP %ld with no explanation", status);
  json_decref(json);
}

/* A transfer that failed before an answer: which exit code and what to say. */
static int client_transfer_failed(const struct posctl_target *target, CURLcode code,
                                  const char *curl_error, const struct client_body *body,
                                  struct posctl_answer *answer)
{
  const char *reason = curl_error[0] ? curl_error : curl_easy_strerror(code);
  switch (code) {
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CRL_BADFILE:
    snprintf(answer->message, sizeof(answer->message),
             "cannot use the client certificate, key or CA (cert %s, key %s, ca %s): %s; check "
             "--cert, --key and --ca", target->cert, target->key, target->ca ? target->ca : "-",
             reason);
    return POSCTL_EXIT_USAGE;
  case CURLE_WRITE_ERROR:
    if (body->too_large) {
      snprintf(answer->message, sizeof(answer->message),
               "the collector's answer is larger than %u MiB: is %s the collector?",
               POSCTL_ANSWER_MAX >> 20, target->url);
      return POSCTL_EXIT_UNREACHABLE;
    }
    break;
  default:
    break;
  }
  snprintf(answer->message, sizeof(answer->message),
           "cannot reach the collector at %s: %s; check --url and that the collector runs",
           target->url, reason);
  return POSCTL_EXIT_UNREACHABLE;
}

/* What a non-2xx answer means for people, and its exit code. */
static int client_refusal(const char *method, const char *path, const struct client_body *body,
                          long status, struct posctl_answer *answer)
{
  char *text = answer->error;
  int was_json = 0, rc = posctl_exit_for_status(status);
  client_error_text(body, status, text, sizeof(answer->error), &was_json);
  if (rc == POSCTL_EXIT_REFUSED && status == 404 && !was_json)
    snprintf(answer->message, sizeof(answer->message), "the collector refused: %s (it has no %s "
             "%.*s: an older collector without the admin API?)", text, method,
             (int)strcspn(path, "?"), path);
  else if (rc == POSCTL_EXIT_REFUSED && status == 403)
    snprintf(answer->message, sizeof(answer->message), "the collector refused: %s (posctl needs "
             "an admin certificate, SAN URI urn:pos:admin:<name>: check --cert)", text);
  else if (rc == POSCTL_EXIT_REFUSED)
    snprintf(answer->message, sizeof(answer->message), "the collector refused: %s", text);
  else
    snprintf(answer->message, sizeof(answer->message), "the collector could not answer "
             "(HTTP %ld): %s; try again later", status, text);
  return rc;
}

/* One transfer. Sets *retry_after_s from a Retry-After header (0 when none). */
static int client_once(const struct posctl_target *target, const char *method, const char *path,
                       const char *body_text, struct posctl_answer *answer, long *retry_after_s)
{
  char url[4096], curl_error[CURL_ERROR_SIZE] = "";
  struct client_body body = {0};
  struct curl_slist *headers = NULL;
  size_t base_len = strlen(target->url);
  curl_off_t retry_after = 0;
  json_error_t json_error;
  CURLcode code;
  int rc;
  CURL *curl = curl_easy_init();

  *retry_after_s = 0;
  while (base_len > 0 && target->url[base_len - 1] == '/')
    base_len--;
  snprintf(url, sizeof(url), "%.*s%s", (int)base_len, target->url, path);
  if (!curl) {
    snprintf(answer->message, sizeof(answer->message), "out of memory starting a request");
    return POSCTL_EXIT_UNREACHABLE;
  }
  headers = curl_slist_append(headers, "Accept: application/json");
  if (body_text)
    headers = curl_slist_append(headers, "Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
  curl_easy_setopt(curl, CURLOPT_SSLCERT, target->cert);
  curl_easy_setopt(curl, CURLOPT_SSLKEY, target->key);
  if (target->ca)
    curl_easy_setopt(curl, CURLOPT_CAINFO, target->ca);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, (long)CLIENT_CONNECT_TIMEOUT_S);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, target->timeout_s);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "posctl/" POS_VERSION);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_error);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, client_on_data);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  if (body_text) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body_text);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
  }
  code = curl_easy_perform(curl);
  if (code != CURLE_OK) {
    rc = client_transfer_failed(target, code, curl_error, &body, answer);
    /* A collector restarting or a network blip, not a certificate or URL to fix. */
    answer->no_answer = code == CURLE_COULDNT_CONNECT || code == CURLE_OPERATION_TIMEDOUT ||
                        code == CURLE_GOT_NOTHING || code == CURLE_SEND_ERROR ||
                        code == CURLE_RECV_ERROR;
    goto out;
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer->status);
  if (curl_easy_getinfo(curl, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK && retry_after > 0)
    *retry_after_s = (long)retry_after;
  rc = posctl_exit_for_status(answer->status);
  if (rc != POSCTL_EXIT_OK) {
    rc = client_refusal(method, path, &body, answer->status, answer);
    goto out;
  }
  answer->json = json_loadb(body.data ? body.data : "", body.len, JSON_REJECT_DUPLICATES,
                            &json_error);
  if (!answer->json) {
    snprintf(answer->message, sizeof(answer->message), "the collector's answer to %s %s is not "
             "JSON (%d:%d: %s): is %s the collector?", method, path, json_error.line,
             json_error.column, json_error.text, target->url);
    rc = POSCTL_EXIT_UNREACHABLE;
  }
out:
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  free(body.data);
  return rc;
}

int posctl_request(const struct posctl_target *target, const char *method, const char *path,
                   const json_t *body, int retries, struct posctl_answer *answer)
{
  char *body_text = NULL;
  int rc, attempt;
  memset(answer, 0, sizeof(*answer));
  if (body) {
    body_text = json_dumps(body, JSON_COMPACT);
    if (!body_text) {
      snprintf(answer->message, sizeof(answer->message), "out of memory writing the request");
      return POSCTL_EXIT_UNREACHABLE;
    }
  } else if (strcmp(method, "GET") != 0) {
    body_text = strdup("{}");
  }
  for (attempt = 0;; attempt++) {
    long retry_after_s = 0;
    int idempotent = strcmp(method, "GET") == 0 || (body && json_object_get(body, "request_id"));
    rc = client_once(target, method, path, body_text, answer, &retry_after_s);
    /* Only what changes nothing when repeated is asked again: a GET, or a POST with a
     * request_id (the collector returns the command that request_id made). A 503 says the
     * collector will answer soon (it is loading its commands, or Kafka was slow); a POST is
     * also resent when no answer came, as it may not have arrived. */
    if (rc != POSCTL_EXIT_UNREACHABLE || !idempotent || attempt >= retries ||
        (answer->status != 503 && (!answer->no_answer || strcmp(method, "GET") == 0)) ||
        (strcmp(method, "GET") == 0 && retry_after_s <= 0))
      break;
    if (retry_after_s <= 0)
      retry_after_s = attempt < 2 ? 1L << attempt : CLIENT_RETRY_AFTER_MAX_S / 2;
    if (retry_after_s > CLIENT_RETRY_AFTER_MAX_S)
      retry_after_s = CLIENT_RETRY_AFTER_MAX_S;
    if (answer->status == 503)
      fprintf(stderr, "posctl: the collector is not ready (503: %s); asking again in %ld s "
              "(%d of %d)\n", answer->error, retry_after_s, attempt + 1, retries);
    else
      fprintf(stderr, "posctl: no answer from the collector (%s); asking again with the same "
              "request_id in %ld s (%d of %d)\n", answer->message, retry_after_s, attempt + 1,
              retries);
    sleep((unsigned)retry_after_s);
    answer->status = 0;
    answer->no_answer = 0;
    answer->message[0] = '\0';
    answer->error[0] = '\0';
  }
  if (rc == POSCTL_EXIT_UNREACHABLE && answer->status == 503 && attempt > 0) {
    size_t used = strlen(answer->message);
    snprintf(answer->message + used, sizeof(answer->message) - used,
             " (still so after %d tries)", attempt + 1);
  }
  free(body_text);
  return rc;
}
