/*
 * test_enrol_csr.c - the device's certificate request and the EST answer
 * (agent/enrol/enrol.h) against OpenSSL: what we send, `openssl req`
 * verifies and reads (CN and SAN URI); what an OpenSSL CA signs from it
 * and wraps as certs-only PKCS#7, we read, and we refuse an answer for
 * another key or another device.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "enrol/enrol.h"
#include "platform/tls.h"

static char dir[64];
static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;
static mbedtls_pk_context device_key;

/* Runs a shell command in the test directory; its status. */
static int in_dir(const char *command)
{
  char line[2048];
  snprintf(line, sizeof(line), "cd '%s' && (%s) >>openssl.log 2>&1", dir, command);
  return system(line);
}

static void path_of(char *out, size_t size, const char *name)
{
  snprintf(out, size, "%s/%s", dir, name);
}

static char *read_file(const char *name, size_t *len)
{
  char path[128];
  FILE *file;
  char *data = malloc(65536);
  path_of(path, sizeof(path), name);
  file = fopen(path, "rb");
  assert_non_null(file);
  *len = fread(data, 1, 65535, file);
  fclose(file);
  data[*len] = '\0';
  return data;
}

static void write_file(const char *name, const void *data, size_t len)
{
  char path[128];
  FILE *file;
  path_of(path, sizeof(path), name);
  file = fopen(path, "wb");
  assert_non_null(file);
  assert_int_equal(fwrite(data, 1, len, file), len);
  fclose(file);
}

static int group_setup(void **state)
{
  char err[256];
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/test_enrol_csr_XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  mbedtls_pk_init(&device_key);
  if (tls_seed(&entropy, &drbg, "test_enrol_csr", err, sizeof(err)) != 0 ||
      enrol_key_generate(&device_key, &drbg, err, sizeof(err)) != 0)
    return -1;
  /* An issuing CA, as the collector will have. */
  return in_dir("openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout ca.key -out ca.crt -days 2 -subj '/CN=POS Test Issuing CA'") == 0
             ? 0
             : -1;
}

static int group_teardown(void **state)
{
  char command[128];
  (void)state;
  mbedtls_pk_free(&device_key);
  mbedtls_ctr_drbg_free(&drbg);
  mbedtls_entropy_free(&entropy);
  snprintf(command, sizeof(command), "rm -rf '%s'", dir);
  return system(command) == 0 ? 0 : -1;
}

/* Writes the device's request for S001/D1 as req.der and req.b64. */
static void write_request(const char *store, const char *device)
{
  unsigned char *der = NULL;
  size_t der_len = 0;
  char err[256], *b64;

  assert_int_equal(enrol_csr_write(&device_key, store, device, &drbg, &der, &der_len, err,
                                   sizeof(err)),
                   0);
  write_file("req.der", der, der_len);
  b64 = enrol_base64(der, der_len);
  assert_non_null(b64);
  assert_null(strchr(b64, '\n'));
  write_file("req.b64", b64, strlen(b64));
  free(b64);
  free(der);
}

/* OpenSSL verifies our request's signature and reads the names we put in;
 * the base64 body decodes to the same DER. A request with one byte of its
 * signature changed fails the same check (so the check can fail). */
static void openssl_verifies_and_reads_the_request(void **state)
{
  char *text;
  size_t len;

  (void)state;
  write_request("S001", "D1");
  /* OpenSSL 3.0's req -verify exits 0 on a bad signature too: its words count. */
  assert_int_equal(in_dir("openssl req -inform DER -in req.der -verify -noout 2>&1 | "
                          "grep -q 'verify OK'"),
                   0);
  assert_int_equal(in_dir("openssl req -inform DER -in req.der -noout -text > req.txt"), 0);
  text = read_file("req.txt", &len);
  if (!strstr(text, "Subject: CN = urn:pos:store:S001:device:D1") ||
      !strstr(text, "URI:urn:pos:store:S001:device:D1") ||
      !strstr(text, "ecdsa-with-SHA256") || !strstr(text, "prime256v1") ||
      !strstr(text, "Digital Signature"))
    fail_msg("openssl req -text printed: %s", text);
  free(text);
  assert_int_equal(in_dir("base64 -d req.b64 | cmp - req.der"), 0);
  /* One bit of the last byte, inside the signature, flipped. */
  text = read_file("req.der", &len);
  text[len - 1] ^= 0x01;
  write_file("bad.der", text, len);
  free(text);
  assert_int_not_equal(in_dir("openssl req -inform DER -in bad.der -verify -noout 2>&1 | "
                              "grep -q 'verify OK'"),
                       0);
}

/* Ids that the collector would refuse, or that would change the subject's
 * meaning, are refused here with what to check. */
static void a_bad_id_is_refused(void **state)
{
  unsigned char *der = (unsigned char *)"x";
  size_t der_len = 1;
  char err[256];

  (void)state;
  assert_int_equal(enrol_csr_write(&device_key, "S001,CN=x", "D1", &drbg, &der, &der_len, err,
                                   sizeof(err)),
                   -1);
  assert_null(der);
  assert_non_null(strstr(err, "agent.store_id"));
  assert_int_equal(enrol_id_valid(""), 0);
  assert_int_equal(enrol_id_valid("a:b"), 0);
  assert_int_equal(enrol_id_valid("S-001_a.b"), 1);
}

/* The CA signs our request (its extensions copied) and answers as EST does:
 * base64 of a certs-only PKCS#7, the device certificate first. */
static char *ca_answer(size_t *len)
{
  assert_int_equal(in_dir("openssl req -inform DER -in req.der -out req.pem && "
                          "openssl x509 -req -in req.pem -CA ca.crt -CAkey ca.key "
                          "-CAcreateserial -days 1 -copy_extensions copy -out dev.crt && "
                          "openssl crl2pkcs7 -nocrl -certfile dev.crt -certfile ca.crt "
                          "-outform DER | base64 > answer.b64"),
                   0);
  return read_file("answer.b64", len);
}

/* The same, but as the collector's CA does it: its own subject
 * ("CN=<store> <device>") and the SAN URI it decides; `san` "" for none. */
static char *ca_answer_as(const char *san, size_t *len)
{
  char command[1024];
  snprintf(command, sizeof(command),
           "openssl req -inform DER -in req.der -out req.pem && "
           "printf '%s' > ext.cnf && "
           "openssl x509 -req -in req.pem -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 "
           "-subj '/CN=S001 D1' -extfile ext.cnf -out dev.crt && "
           "openssl crl2pkcs7 -nocrl -certfile dev.crt -outform DER | base64 > answer.b64",
           san[0] ? san : "keyUsage=digitalSignature\\n");
  assert_int_equal(in_dir(command), 0);
  return read_file("answer.b64", len);
}

/* The answer to our own request is read: the chain as PEM, device first,
 * with its validity; OpenSSL reads the PEM we would install. */
static void the_answer_to_our_request_is_read(void **state)
{
  struct enrol_answer answer;
  char err[512], *body, *printed;
  size_t len;
  int64_t now = (int64_t)time(NULL);

  (void)state;
  write_request("S001", "D1");
  body = ca_answer(&len);
  if (enrol_answer_read(body, len, &device_key, "S001", "D1", now, &answer, err, sizeof(err)) !=
      0)
    fail_msg("%s", err);
  assert_int_equal(answer.cert_count, 2);
  assert_true(answer.not_before <= now + 60 && answer.not_before > now - 3600);
  assert_true(answer.not_after > now + 86000 && answer.not_after <= now + 86400 + 60);
  write_file("installed.crt", answer.cert_pem, strlen(answer.cert_pem));
  assert_int_equal(in_dir("openssl x509 -in installed.crt -noout -subject > installed.txt && "
                          "openssl verify -CAfile ca.crt installed.crt"),
                   0);
  printed = read_file("installed.txt", &len);
  assert_non_null(strstr(printed, "CN = urn:pos:store:S001:device:D1"));
  free(printed);
  enrol_answer_free(&answer);
  enrol_answer_free(&answer);
  free(body);
}

/* An answer for another key (the request of another device, or a server
 * that mixed answers up) would lock the device out: refused. So is one
 * naming another device, and one read with a clock past its expiry. */
static void an_answer_for_another_key_or_device_is_refused(void **state)
{
  struct enrol_answer answer;
  mbedtls_pk_context other_key;
  char err[512], *body;
  size_t len;
  int64_t now = (int64_t)time(NULL);

  (void)state;
  mbedtls_pk_init(&other_key);
  assert_int_equal(enrol_key_generate(&other_key, &drbg, err, sizeof(err)), 0);
  write_request("S001", "D1");
  body = ca_answer(&len);
  assert_int_equal(enrol_answer_read(body, len, &other_key, "S001", "D1", now, &answer, err,
                                     sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "another key"));
  assert_null(answer.cert_pem);
  assert_int_equal(enrol_answer_read(body, len, &device_key, "S001", "D2", now, &answer, err,
                                     sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "not for this device"));
  assert_int_equal(enrol_answer_read(body, len, &device_key, "S001", "D1", now + 3 * 86400,
                                     &answer, err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "already expired"));
  assert_int_equal(enrol_answer_read("not base64!", 11, &device_key, "S001", "D1", now, &answer,
                                     err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "not a certificate"));
  free(body);
  /* The collector's way: its own subject, the URI in the SAN; read. */
  body = ca_answer_as("subjectAltName=URI:urn:pos:store:S001:device:D1\\n", &len);
  if (enrol_answer_read(body, len, &device_key, "S001", "D1", now, &answer, err, sizeof(err)) !=
      0)
    fail_msg("%s", err);
  assert_int_equal(answer.cert_count, 1);
  enrol_answer_free(&answer);
  free(body);
  /* No SAN URI, or a second urn:pos: one: the collector would refuse it. */
  body = ca_answer_as("", &len);
  assert_int_equal(enrol_answer_read(body, len, &device_key, "S001", "D1", now, &answer, err,
                                     sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "not for this device"));
  free(body);
  body = ca_answer_as("subjectAltName=URI:urn:pos:store:S001:device:D1,"
                      "URI:urn:pos:admin:root\\n",
                      &len);
  assert_int_equal(enrol_answer_read(body, len, &device_key, "S001", "D1", now, &answer, err,
                                     sizeof(err)),
                   -1);
  free(body);
  mbedtls_pk_free(&other_key);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(openssl_verifies_and_reads_the_request),
      cmocka_unit_test(a_bad_id_is_refused),
      cmocka_unit_test(the_answer_to_our_request_is_read),
      cmocka_unit_test(an_answer_for_another_key_or_device_is_refused),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
