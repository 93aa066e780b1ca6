/*
 * test_enrol_est.c - the EST requests the device sends and how it reads
 * the collector's status codes (agent/enrol/enrol.h), without a server:
 * the paths of RFC 7030, the headers the collector expects, the token only
 * in the Authorization header, and refusals told apart from "try later".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mbedtls/base64.h>

#include "enrol/enrol.h"

/* Nothing is sent: the URLs are only built (loopback, the port of [enrol]). */
#define EST_URL "https://127.0.0.1:8444"

static const unsigned char csr[] = {0x30, 0x82, 0x01, 0x0a, 0xde, 0xad, 0xbe, 0xef, 0x00};

/* simpleenroll: the path, the headers, the credentials "<store>/<device>:<token>"
 * in Basic, and the body as base64 of the DER on one line. */
static void an_enrolment_request_carries_the_token_and_the_csr(void **state)
{
  struct enrol_est_request req;
  unsigned char decoded[256];
  size_t decoded_len;
  char err[256];

  (void)state;
  assert_int_equal(enrol_est_request_build(ENROL_EST_ENROL, "https://collector.test:8443/", "S001",
                                           "D1", "tok:en-123", csr, sizeof(csr), &req, err,
                                           sizeof(err)),
                   0);
  assert_string_equal(req.url, "https://collector.test:8443/.well-known/est/simpleenroll");
  assert_string_equal(req.method, "POST");
  assert_string_equal(req.content_type, "application/pkcs10");
  assert_string_equal(req.transfer_encoding, "base64");
  assert_non_null(req.authorization);
  assert_memory_equal(req.authorization, "Basic ", 6);
  assert_int_equal(mbedtls_base64_decode(decoded, sizeof(decoded), &decoded_len,
                                         (const unsigned char *)req.authorization + 6,
                                         strlen(req.authorization) - 6),
                   0);
  assert_int_equal(decoded_len, strlen("S001/D1:tok:en-123"));
  assert_memory_equal(decoded, "S001/D1:tok:en-123", decoded_len);
  assert_int_equal(req.body_len, strlen(req.body));
  assert_null(strchr(req.body, '\n'));
  assert_int_equal(mbedtls_base64_decode(decoded, sizeof(decoded), &decoded_len,
                                         (const unsigned char *)req.body, req.body_len),
                   0);
  assert_int_equal(decoded_len, sizeof(csr));
  assert_memory_equal(decoded, csr, sizeof(csr));
  enrol_est_request_free(&req);
  enrol_est_request_free(&req);
}

/* simplereenroll: the same body over mutual TLS, no token; cacerts: a GET. */
static void renewal_and_cacerts_carry_no_token(void **state)
{
  struct enrol_est_request req;
  char err[256];

  (void)state;
  assert_int_equal(enrol_est_request_build(ENROL_EST_REENROL, EST_URL "/pos", "S001", "D1",
                                           "unused", csr, sizeof(csr), &req, err, sizeof(err)),
                   0);
  assert_string_equal(req.url, EST_URL "/pos/.well-known/est/simplereenroll");
  assert_string_equal(req.method, "POST");
  assert_null(req.authorization);
  assert_non_null(req.body);
  enrol_est_request_free(&req);
  assert_int_equal(enrol_est_request_build(ENROL_EST_CACERTS, EST_URL, NULL, NULL, NULL,
                                           NULL, 0, &req, err, sizeof(err)),
                   0);
  assert_string_equal(req.url, EST_URL "/.well-known/est/cacerts");
  assert_string_equal(req.method, "GET");
  assert_null(req.body);
  assert_null(req.content_type);
  enrol_est_request_free(&req);
}

/* A bad URL, id or token is refused with what to fix, and the token is
 * never repeated in the message (it goes to logs). */
static void bad_input_is_refused_without_repeating_the_token(void **state)
{
  struct enrol_est_request req;
  char err[256];

  (void)state;
  assert_int_equal(enrol_est_request_build(ENROL_EST_ENROL, "collector.test", "S001", "D1",
                                           "secret-1", csr, sizeof(csr), &req, err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "https://"));
  assert_int_equal(enrol_est_request_build(ENROL_EST_ENROL, EST_URL, "S001", "D1",
                                           "secret\r\nX-Evil: 1", csr, sizeof(csr), &req, err,
                                           sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "not one line"));
  assert_null(strstr(err, "secret"));
  assert_int_equal(enrol_est_request_build(ENROL_EST_ENROL, EST_URL, "S001", "D1", "",
                                           csr, sizeof(csr), &req, err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "empty"));
  assert_int_equal(enrol_est_request_build(ENROL_EST_ENROL, EST_URL, "S 1", "D1",
                                           "secret-1", csr, sizeof(csr), &req, err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "agent.store_id"));
  assert_null(strstr(err, "secret"));
  assert_null(req.body);
  assert_null(req.authorization);
}

/* 200 issues; 401/403/400 are refusals a retry cannot cure, with the
 * collector's words; 503 and 202 wait for Retry-After (capped at a day);
 * 409, no answer and other 5xx retry; 404 is not EST. */
static void answers_are_told_apart(void **state)
{
  struct enrol_est_outcome out;
  static const char used[] = "enrolment token already used\n";
  char long_body[600];
  const char *quoted;

  (void)state;
  enrol_est_answer_classify(200, "MIIB", 4, -1, 1000, &out);
  assert_int_equal(out.verdict, ENROL_EST_ISSUED);
  enrol_est_answer_classify(401, used, sizeof(used) - 1, -1, 1000, &out);
  assert_int_equal(out.verdict, ENROL_EST_REFUSED);
  if (!strstr(out.message, "HTTP 401") ||
      !strstr(out.message, "\"enrolment token already used\""))
    fail_msg("message: %s", out.message);
  /* Without the collector's words, ours say what to do. */
  enrol_est_answer_classify(403, NULL, 0, -1, 1000, &out);
  assert_int_equal(out.verdict, ENROL_EST_REFUSED);
  assert_non_null(strstr(out.message, "new enrolment token"));
  enrol_est_answer_classify(400, "", 0, -1, 1000, &out);
  assert_int_equal(out.verdict, ENROL_EST_REFUSED);
  assert_non_null(strstr(out.message, "agent.store_id"));
  /* The collector's 409: the token is being used by another request. */
  enrol_est_answer_classify(409, "in use", 6, -1, 1000, &out);
  assert_int_equal(out.verdict, ENROL_EST_RETRY_AT);
  enrol_est_answer_classify(503, "busy", 4, 120, 1000, &out);
  assert_int_equal(out.verdict, ENROL_EST_RETRY_AT);
  assert_int_equal(out.retry_at_s, 1120);
  enrol_est_answer_classify(202, "", 0, 10 * 86400, 1000, &out);
  assert_int_equal(out.verdict, ENROL_EST_RETRY_AT);
  assert_int_equal(out.retry_at_s, 1000 + 86400);
  enrol_est_answer_classify(0, NULL, 0, -1, 1000, &out);
  assert_int_equal(out.verdict, ENROL_EST_RETRY_AT);
  assert_int_equal(out.retry_at_s, 0);
  enrol_est_answer_classify(502, NULL, 0, 30, 1000, &out);
  assert_int_equal(out.verdict, ENROL_EST_RETRY_AT);
  assert_int_equal(out.retry_at_s, 0);
  enrol_est_answer_classify(404, "<html>Not found</html>", 22, -1, 1000, &out);
  assert_int_equal(out.verdict, ENROL_EST_UNEXPECTED);
  assert_non_null(strstr(out.message, "enrolment URL"));
  /* The collector's words go into log lines: one line, no quotes, bounded. */
  memset(long_body, 'x', sizeof(long_body));
  memcpy(long_body, "a\"b\nc\x01" "d", 7);
  enrol_est_answer_classify(403, long_body, sizeof(long_body), -1, 1000, &out);
  assert_null(strchr(out.message, '\n'));
  assert_non_null(strstr(out.message, "\"a b c dxxx"));
  /* The quoted reason: 300 characters at most. */
  quoted = strchr(out.message, '"') + 1;
  assert_int_equal((size_t)(strchr(quoted, '"') - quoted), 300);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(an_enrolment_request_carries_the_token_and_the_csr),
      cmocka_unit_test(renewal_and_cacerts_carry_no_token),
      cmocka_unit_test(bad_input_is_refused_without_repeating_the_token),
      cmocka_unit_test(answers_are_told_apart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
