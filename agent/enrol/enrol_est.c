/*
 * enrol_est.c - the EST requests the device sends and what their answers
 * mean (RFC 7030), as pure functions the uplink's client carries out; see
 * enrol.h.
 */
#include "enrol/enrol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/platform_util.h>

/* A Retry-After longer than this is a mistake; a day is believed. */
#define EST_RETRY_AFTER_MAX_S 86400
/* The collector's words quoted in a message (its refusals run to ~250). */
#define EST_REASON_MAX 300

static const char *const est_paths[] = {"simpleenroll", "simplereenroll", "cacerts"};

/* See enrol.h. */
int enrol_est_request_build(enum enrol_est_op op, const char *base_url, const char *store_id,
                            const char *device_id, const char *token,
                            const unsigned char *csr_der, size_t csr_len,
                            struct enrol_est_request *req, char *err, size_t err_size)
{
  size_t base_len = strlen(base_url);
  char *credentials = NULL;
  size_t credentials_len;
  int n;

  memset(req, 0, sizeof(*req));
  if (op < ENROL_EST_ENROL || op > ENROL_EST_CACERTS) {
    snprintf(err, err_size, "EST operation %d does not exist", (int)op);
    return -1;
  }
  if (strncmp(base_url, "https://", 8) != 0 && strncmp(base_url, "http://", 7) != 0) {
    snprintf(err, err_size, "EST URL \"%.200s\" must start with https:// (or http:// in tests)",
             base_url);
    return -1;
  }
  while (base_len > 0 && base_url[base_len - 1] == '/')
    base_len--;
  n = snprintf(req->url, sizeof(req->url), "%.*s/.well-known/est/%s", (int)base_len, base_url,
               est_paths[op]);
  if (n < 0 || (size_t)n >= sizeof(req->url)) {
    snprintf(err, err_size, "EST URL \"%.200s...\" is too long", base_url);
    goto fail;
  }
  if (op == ENROL_EST_CACERTS) {
    req->method = "GET";
    return 0;
  }
  req->method = "POST";
  req->content_type = "application/pkcs10";
  req->transfer_encoding = "base64";
  if (!csr_der || csr_len == 0) {
    snprintf(err, err_size, "an EST %s needs a certificate request", est_paths[op]);
    goto fail;
  }
  req->body = enrol_base64(csr_der, csr_len);
  if (!req->body)
    goto oom;
  req->body_len = strlen(req->body);
  if (op == ENROL_EST_REENROL)
    return 0;
  if (!enrol_id_valid(store_id) || !enrol_id_valid(device_id)) {
    snprintf(err, err_size,
             "cannot enrol store \"%.64s\" device \"%.64s\": ids are 1-64 characters "
             "[A-Za-z0-9._-]; check agent.store_id and agent.device_id",
             store_id, device_id);
    goto fail;
  }
  /* Basic credentials cannot carry a ':' in the user part (ours has none)
   * nor a line break anywhere (it would split the header). */
  if (!token || !token[0] || strpbrk(token, "\r\n")) {
    snprintf(err, err_size,
             "the enrolment token is %s; ask head office for a token for store %s device %s",
             !token || !token[0] ? "empty" : "not one line", store_id, device_id);
    goto fail;
  }
  credentials_len = strlen(store_id) + strlen(device_id) + strlen(token) + 2;
  credentials = malloc(credentials_len + 1);
  if (!credentials)
    goto oom;
  snprintf(credentials, credentials_len + 1, "%s/%s:%s", store_id, device_id, token);
  {
    char *encoded = enrol_base64((const unsigned char *)credentials, credentials_len);
    size_t header_len;
    if (!encoded)
      goto oom;
    header_len = strlen(encoded) + sizeof("Basic ");
    req->authorization = malloc(header_len);
    if (req->authorization)
      snprintf(req->authorization, header_len, "Basic %s", encoded);
    mbedtls_platform_zeroize(encoded, strlen(encoded));
    free(encoded);
    if (!req->authorization)
      goto oom;
  }
  mbedtls_platform_zeroize(credentials, credentials_len);
  free(credentials);
  return 0;
oom:
  snprintf(err, err_size, "cannot build the EST %s request: out of memory", est_paths[op]);
fail:
  if (credentials) {
    mbedtls_platform_zeroize(credentials, strlen(credentials));
    free(credentials);
  }
  enrol_est_request_free(req);
  return -1;
}

/* See enrol.h. */
void enrol_est_request_free(struct enrol_est_request *req)
{
  if (!req)
    return;
  if (req->authorization) {
    mbedtls_platform_zeroize(req->authorization, strlen(req->authorization));
    free(req->authorization);
  }
  free(req->body);
  memset(req, 0, sizeof(*req));
}

/* The collector's reason: printable ASCII, runs of anything else as one
 * space, at most EST_REASON_MAX characters (it goes into our log lines). */
static void est_reason(const char *body, size_t len, char *out, size_t out_size)
{
  size_t used = 0;
  int space = 1;

  for (size_t i = 0; i < len && used + 1 < out_size && used < EST_REASON_MAX; i++) {
    unsigned char c = (unsigned char)body[i];
    if (c >= 0x21 && c < 0x7f && c != '"') {
      out[used++] = (char)c;
      space = 0;
    } else if (!space) {
      out[used++] = ' ';
      space = 1;
    }
  }
  while (used > 0 && out[used - 1] == ' ')
    used--;
  out[used] = '\0';
}

/* See enrol.h. */
void enrol_est_answer_classify(long status, const char *body, size_t body_len,
                               int64_t retry_after_s, int64_t now_s,
                               struct enrol_est_outcome *outcome)
{
  char reason[EST_REASON_MAX + 1];

  memset(outcome, 0, sizeof(*outcome));
  est_reason(body ? body : "", body ? body_len : 0, reason, sizeof(reason));
  if (status == 200) {
    outcome->verdict = ENROL_EST_ISSUED;
    snprintf(outcome->message, sizeof(outcome->message), "HTTP 200: certificate issued");
    return;
  }
  if (status == 400 || status == 401 || status == 403) {
    outcome->verdict = ENROL_EST_REFUSED;
    /* The collector says what to do; our hint only when it said nothing. */
    if (reason[0])
      snprintf(outcome->message, sizeof(outcome->message),
               "HTTP %ld: the collector refused: \"%s\"", status, reason);
    else
      snprintf(outcome->message, sizeof(outcome->message),
               "HTTP %ld: the collector refused without a reason; %s", status,
               status == 400 ? "check agent.store_id and agent.device_id, and the agent's version"
                             : "ask head office for a new enrolment token for this store and "
                               "device (a token is single use and expires)");
    return;
  }
  /* 409: the token is in use by another request right now (the collector
   * is still recording its use): the same request may pass later. */
  if (status == 0 || status == 202 || status == 409 || status == 429 ||
      (status >= 500 && status <= 599)) {
    outcome->verdict = ENROL_EST_RETRY_AT;
    if ((status == 202 || status == 503 || status == 429) && retry_after_s >= 0)
      outcome->retry_at_s =
          now_s + (retry_after_s > EST_RETRY_AFTER_MAX_S ? EST_RETRY_AFTER_MAX_S : retry_after_s);
    if (status == 0)
      snprintf(outcome->message, sizeof(outcome->message),
               "no answer from the collector; trying again later");
    else
      snprintf(outcome->message, sizeof(outcome->message),
               "HTTP %ld: the collector cannot enrol now%s%s%s; trying again later", status,
               reason[0] ? ": \"" : "", reason, reason[0] ? "\"" : "");
    return;
  }
  outcome->verdict = ENROL_EST_UNEXPECTED;
  snprintf(outcome->message, sizeof(outcome->message),
           "HTTP %ld: an answer EST does not define%s%s%s; check the enrolment URL", status,
           reason[0] ? ": \"" : "", reason, reason[0] ? "\"" : "");
}
