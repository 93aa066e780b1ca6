/*
 * test_pkcs7.c - EST's certs-only PKCS#7 (platform/pkcs7.h) against
 * OpenSSL's: what we write, `openssl pkcs7 -print_certs` reads (the
 * interop issue 13 asks for), and what `openssl crl2pkcs7` writes, we read.
 * The certificates are made at test time by the openssl CLI.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "platform/pkcs7.h"

static char dir[64];

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

static int group_setup(void **state)
{
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/test_pkcs7_XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  /* A CA and a device certificate it issued: a chain of two. */
  return in_dir("openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout ca.key -out ca.crt -days 2 -subj '/CN=POS Test Issuing CA' && "
                "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout dev.key -out dev.csr -subj '/CN=S001 D1' && "
                "openssl x509 -req -in dev.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
                "-days 2 -out dev.crt && cat dev.crt ca.crt > chain.pem") == 0
             ? 0
             : -1;
}

static int group_teardown(void **state)
{
  char command[128];
  (void)state;
  snprintf(command, sizeof(command), "rm -rf '%s'", dir);
  return system(command) == 0 ? 0 : -1;
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

/* What we write, OpenSSL reads: both certificates, in order. */
static void openssl_reads_what_we_write(void **state)
{
  mbedtls_x509_crt chain;
  char path[128], err[256], *text = NULL, *printed;
  size_t len;

  (void)state;
  mbedtls_x509_crt_init(&chain);
  path_of(path, sizeof(path), "chain.pem");
  assert_int_equal(mbedtls_x509_crt_parse_file(&chain, path), 0);
  assert_int_equal(pkcs7_certs_only_write_base64(&chain, &text, err, sizeof(err)), 0);
  /* EST's body: base64 in lines, no PEM armour. */
  assert_null(strstr(text, "-----"));
  write_file("ours.b64", text, strlen(text));
  assert_int_equal(in_dir("base64 -d ours.b64 > ours.p7 && "
                          "openssl pkcs7 -inform DER -in ours.p7 -print_certs -noout "
                          "> ours.printed"),
                   0);
  printed = read_file("ours.printed", &len);
  if (!strstr(printed, "subject=CN = S001 D1") || !strstr(printed, "POS Test Issuing CA") ||
      strstr(printed, "S001 D1") > strstr(printed, "subject=CN = POS Test Issuing CA"))
    fail_msg("openssl pkcs7 -print_certs printed: %s", printed);
  free(printed);
  free(text);
  mbedtls_x509_crt_free(&chain);
}

/* What OpenSSL writes (crl2pkcs7 -nocrl: the usual certs-only), we read,
 * as DER and as base64 in lines. */
static void we_read_what_openssl_writes(void **state)
{
  mbedtls_x509_crt chain;
  char err[256], name[200];
  char *der, *b64;
  size_t der_len, b64_len;

  (void)state;
  assert_int_equal(in_dir("openssl crl2pkcs7 -nocrl -certfile chain.pem -outform DER "
                          "-out theirs.p7 && base64 -w 76 theirs.p7 > theirs.b64"),
                   0);
  der = read_file("theirs.p7", &der_len);
  b64 = read_file("theirs.b64", &b64_len);
  for (int as_base64 = 0; as_base64 < 2; as_base64++) {
    mbedtls_x509_crt_init(&chain);
    assert_int_equal(pkcs7_certs_only_parse(as_base64 ? (unsigned char *)b64
                                                      : (unsigned char *)der,
                                            as_base64 ? b64_len : der_len, as_base64, &chain,
                                            err, sizeof(err)),
                     2);
    assert_true(mbedtls_x509_dn_gets(name, sizeof(name), &chain.subject) > 0);
    assert_string_equal(name, "CN=S001 D1");
    assert_non_null(chain.next);
    assert_true(mbedtls_x509_dn_gets(name, sizeof(name), &chain.next->subject) > 0);
    assert_string_equal(name, "CN=POS Test Issuing CA");
    mbedtls_x509_crt_free(&chain);
  }
  free(der);
  free(b64);
}

/* A round trip through our own writer and reader keeps the bytes. */
static void a_round_trip_keeps_each_certificate(void **state)
{
  mbedtls_x509_crt chain, back;
  unsigned char *der = NULL;
  size_t len = 0;
  char path[128], err[256];

  (void)state;
  mbedtls_x509_crt_init(&chain);
  mbedtls_x509_crt_init(&back);
  path_of(path, sizeof(path), "chain.pem");
  assert_int_equal(mbedtls_x509_crt_parse_file(&chain, path), 0);
  assert_int_equal(pkcs7_certs_only_write(&chain, &der, &len, err, sizeof(err)), 0);
  assert_int_equal(pkcs7_certs_only_parse(der, len, 0, &back, err, sizeof(err)), 2);
  assert_int_equal(back.raw.len, chain.raw.len);
  assert_memory_equal(back.raw.p, chain.raw.p, chain.raw.len);
  assert_int_equal(back.next->raw.len, chain.next->raw.len);
  assert_memory_equal(back.next->raw.p, chain.next->raw.p, chain.next->raw.len);
  free(der);
  mbedtls_x509_crt_free(&chain);
  mbedtls_x509_crt_free(&back);
}

/* Bad input: a clear error, nothing added. */
static void bad_input_says_what_is_wrong(void **state)
{
  mbedtls_x509_crt chain;
  unsigned char *der = NULL;
  size_t len = 0;
  char err[256];
  static const unsigned char not_pkcs7[] = {0x30, 0x03, 0x02, 0x01, 0x01};
  static const char not_base64[] = "this is not base64 at all!";

  (void)state;
  mbedtls_x509_crt_init(&chain);
  assert_int_equal(pkcs7_certs_only_parse(not_pkcs7, sizeof(not_pkcs7), 0, &chain, err,
                                          sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "not a certs-only PKCS#7"));
  assert_int_equal(pkcs7_certs_only_parse((const unsigned char *)not_base64,
                                          strlen(not_base64), 1, &chain, err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "not valid base64"));
  assert_int_equal(chain.raw.len, 0);
  assert_int_equal(pkcs7_certs_only_write(&chain, &der, &len, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "no certificate"));
  mbedtls_x509_crt_free(&chain);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(openssl_reads_what_we_write),
      cmocka_unit_test(we_read_what_openssl_writes),
      cmocka_unit_test(a_round_trip_keeps_each_certificate),
      cmocka_unit_test(bad_input_says_what_is_wrong),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
