/*
 * test_enrol_attempt.c - one enrolment from the new key to the installed
 * pair (agent/enrol/enrol.h), with an OpenSSL CA standing in for the
 * collector: what the device sends, the CA signs; what it answers, the
 * device installs (key 0600, a matching pair the uplink loads); a refusal
 * or an answer for another attempt's key changes nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "enrol/enrol.h"
#include "platform/tls.h"

static char dir[64], cert_path[128], key_path[128];
static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;

static int in_dir(const char *command)
{
  char line[2048];
  snprintf(line, sizeof(line), "cd '%s' && (%s) >>openssl.log 2>&1", dir, command);
  return system(line);
}

static char *read_path(const char *path)
{
  FILE *file = fopen(path, "rb");
  char *data;
  size_t len;
  if (!file)
    return NULL;
  data = malloc(65536);
  len = fread(data, 1, 65535, file);
  fclose(file);
  data[len] = '\0';
  return data;
}

static char *read_name(const char *name)
{
  char path[128];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  return read_path(path);
}

static void write_name(const char *name, const char *text)
{
  char path[128];
  FILE *file;
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  file = fopen(path, "wb");
  assert_non_null(file);
  fputs(text, file);
  fclose(file);
}

static int group_setup(void **state)
{
  char err[256];
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/test_enrol_attempt_XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  snprintf(cert_path, sizeof(cert_path), "%s/uplink.cert", dir);
  snprintf(key_path, sizeof(key_path), "%s/uplink.key", dir);
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  if (tls_seed(&entropy, &drbg, "test_enrol_attempt", err, sizeof(err)) != 0)
    return -1;
  /* The collector's issuing CA, and the pair the device has now. */
  return in_dir("openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout ca.key -out ca.crt -days 2 -subj '/CN=POS Test Issuing CA' && "
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout uplink.key -out uplink.cert -days 2 "
                "-subj /CN=urn:pos:store:S001:device:D1") == 0
             ? 0
             : -1;
}

static int group_teardown(void **state)
{
  char command[128];
  (void)state;
  mbedtls_ctr_drbg_free(&drbg);
  mbedtls_entropy_free(&entropy);
  snprintf(command, sizeof(command), "rm -rf '%s'", dir);
  return system(command) == 0 ? 0 : -1;
}

/* The CA signs the attempt's request as the collector would and answers
 * as EST does; the body (malloc'd). */
static char *ca_answers(const struct enrol_attempt *attempt, size_t *len)
{
  char *body;
  write_name("req.b64", attempt->request.body);
  assert_int_equal(in_dir("base64 -d req.b64 > req.der && "
                          "openssl req -inform DER -in req.der -out req.pem && "
                          "openssl x509 -req -in req.pem -CA ca.crt -CAkey ca.key "
                          "-CAcreateserial -days 1 -copy_extensions copy -out dev.crt && "
                          "openssl crl2pkcs7 -nocrl -certfile dev.crt -certfile ca.crt "
                          "-outform DER | base64 > answer.b64"),
                   0);
  body = read_name("answer.b64");
  *len = strlen(body);
  return body;
}

/* Two files' contents equal. */
static int same_files(const char *a, const char *b)
{
  char *text_a = read_path(a), *text_b = read_path(b);
  int same = text_a && text_b && strcmp(text_a, text_b) == 0;
  free(text_a);
  free(text_b);
  return same;
}

/* A renewal: the answer installs the attempt's key and the new certificate
 * (key 0600), the uplink's loader accepts them, and the schedule gets the
 * new expiry. */
static void an_issued_certificate_is_installed_with_its_key(void **state)
{
  struct enrol_attempt attempt;
  struct enrol_est_outcome outcome;
  mbedtls_x509_crt cert;
  mbedtls_pk_context key;
  char err[512], *body;
  size_t len;
  int64_t now = (int64_t)time(NULL), not_after = 0;
  struct stat st;

  (void)state;
  assert_int_equal(enrol_attempt_start(&attempt, ENROL_EST_REENROL, "https://127.0.0.1:1", "S001",
                                       "D1", NULL, key_path, &drbg, err, sizeof(err)),
                   0);
  assert_null(attempt.request.authorization);
  /* The new key is on disk, private, before the request leaves. */
  assert_int_equal(stat(attempt.pending_path, &st), 0);
  assert_int_equal(st.st_mode & 0077, 0);
  body = ca_answers(&attempt, &len);
  if (enrol_attempt_finish(&attempt, 200, body, len, -1, now, cert_path, key_path, &outcome,
                           &not_after, err, sizeof(err)) != 0)
    fail_msg("%s", err);
  assert_int_equal(outcome.verdict, ENROL_EST_ISSUED);
  assert_int_not_equal(stat(attempt.pending_path, &st), 0);
  assert_true(not_after > now + 86000 && not_after <= now + 86400 + 60);
  assert_int_equal(stat(key_path, &st), 0);
  assert_int_equal(st.st_mode & 0077, 0);
  mbedtls_x509_crt_init(&cert);
  mbedtls_pk_init(&key);
  assert_int_equal(tls_load_identity(&cert, &key, cert_path, key_path, "cert", "key", err,
                                     sizeof(err)),
                   0);
  assert_int_equal(mbedtls_pk_check_pair(&cert.pk, &attempt.key), 0);
  assert_int_equal(in_dir("openssl verify -CAfile ca.crt uplink.cert"), 0);
  mbedtls_pk_free(&key);
  mbedtls_x509_crt_free(&cert);
  free(body);
  enrol_attempt_free(&attempt);
  enrol_attempt_free(&attempt);
}

/* A refused enrolment (a used token) and an answer that certifies another
 * attempt's key leave the device's pair as it was. */
static void a_refusal_or_a_wrong_answer_changes_nothing(void **state)
{
  struct enrol_attempt first, second;
  struct enrol_est_outcome outcome;
  static const char used[] = "enrolment token already used";
  char err[512], *body;
  size_t len;
  int64_t now = (int64_t)time(NULL);

  (void)state;
  assert_int_equal(in_dir("cp uplink.cert before.cert && cp uplink.key before.key"), 0);
  assert_int_equal(enrol_attempt_start(&first, ENROL_EST_ENROL, "https://127.0.0.1:1", "S001", "D1",
                                       "tok-1", NULL, &drbg, err, sizeof(err)),
                   0);
  assert_non_null(first.request.authorization);
  assert_int_equal(enrol_attempt_start(&second, ENROL_EST_ENROL, "https://127.0.0.1:1", "S001", "D1",
                                       "tok-1", NULL, &drbg, err, sizeof(err)),
                   0);
  assert_int_equal(enrol_attempt_finish(&first, 401, used, sizeof(used) - 1, -1, now, cert_path,
                                        key_path, &outcome, NULL, err, sizeof(err)),
                   -1);
  assert_int_equal(outcome.verdict, ENROL_EST_REFUSED);
  assert_non_null(strstr(err, "already used"));
  body = ca_answers(&first, &len);
  assert_int_equal(enrol_attempt_finish(&second, 200, body, len, -1, now, cert_path, key_path,
                                        &outcome, NULL, err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "another key"));
  {
    char before[160];
    snprintf(before, sizeof(before), "%s/before.cert", dir);
    assert_true(same_files(cert_path, before));
    snprintf(before, sizeof(before), "%s/before.key", dir);
    assert_true(same_files(key_path, before));
  }
  free(body);
  enrol_attempt_free(&second);
  enrol_attempt_free(&first);
}

/* A power cut after the request left and before the answer came: the
 * next attempt asks again for the same key (so a certificate issued for
 * the lost answer is still usable, and a collector that answers a repeat
 * lets a spent token finish); once installed, the next renewal makes a new
 * key even if the pending file was left behind. */
static void an_unfinished_attempt_keeps_its_key_for_the_next(void **state)
{
  struct enrol_attempt lost, again, later;
  struct enrol_est_outcome outcome;
  char err[512], pending[160], *body;
  size_t len;
  int64_t now = (int64_t)time(NULL);

  (void)state;
  assert_int_equal(enrol_attempt_start(&lost, ENROL_EST_ENROL, "https://127.0.0.1:1", "S001", "D1",
                                       "tok-2", key_path, &drbg, err, sizeof(err)),
                   0);
  assert_false(lost.reused);
  assert_int_equal(enrol_attempt_start(&again, ENROL_EST_ENROL, "https://127.0.0.1:1", "S001", "D1",
                                       "tok-2", key_path, &drbg, err, sizeof(err)),
                   0);
  assert_true(again.reused);
  assert_int_equal(mbedtls_pk_check_pair(&lost.key, &again.key), 0);
  /* The certificate issued for the lost attempt's request installs. */
  body = ca_answers(&lost, &len);
  if (enrol_attempt_finish(&again, 200, body, len, -1, now, cert_path, key_path, &outcome, NULL,
                           err, sizeof(err)) != 0)
    fail_msg("%s", err);
  free(body);
  /* A pending file that outlived its install is the live key: not reused. */
  snprintf(pending, sizeof(pending), "%s.pending", key_path);
  assert_int_equal(link(key_path, pending), 0);
  assert_int_equal(enrol_attempt_start(&later, ENROL_EST_REENROL, "https://127.0.0.1:1", "S001", "D1",
                                       NULL, key_path, &drbg, err, sizeof(err)),
                   0);
  assert_false(later.reused);
  assert_int_not_equal(mbedtls_pk_check_pair(&again.key, &later.key), 0);
  enrol_attempt_free(&later);
  enrol_attempt_free(&again);
  enrol_attempt_free(&lost);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(an_issued_certificate_is_installed_with_its_key),
      cmocka_unit_test(a_refusal_or_a_wrong_answer_changes_nothing),
      cmocka_unit_test(an_unfinished_attempt_keeps_its_key_for_the_next),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
