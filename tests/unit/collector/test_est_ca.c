/*
 * test_est_ca.c - the EST issuing CA (collector/enrol/est_ca.h) against
 * requests made by the openssl CLI, as a foreign EST client would: what it
 * issues, `openssl verify` accepts under the CA, names the store and
 * device of the token (not what the request asks), and the collector's own
 * identity check reads back; a request whose signature is not its key's,
 * a weak key and a malformed request are refused with the reason.
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

#include "enrol/est_ca.h"
#include "platform/tls.h"
#include "server/identity.h"

static char dir[64];

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

static unsigned char *read_file(const char *name, size_t *len)
{
  char path[128];
  FILE *file;
  unsigned char *data = malloc(65536);
  path_of(path, sizeof(path), name);
  file = fopen(path, "rb");
  assert_non_null(file);
  *len = fread(data, 1, 65536, file);
  fclose(file);
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
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/test_est_ca_XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  /* The issuing CA; a device's request asking for another store's name; an
   * RSA-1024 request; and a certificate that is no CA. */
  return in_dir("openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout ca.key -out ca.crt -days 30 -subj '/CN=POS Issuing CA/O=Pizza Stores' "
                "-addext 'basicConstraints=critical,CA:TRUE' "
                "-addext 'keyUsage=critical,keyCertSign,cRLSign' && "
                "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout dev.key -outform DER -out dev.csr -subj '/CN=S999 D9' "
                "-addext 'subjectAltName=URI:urn:pos:store:S999:device:D9' && "
                "openssl req -new -newkey rsa:1024 -nodes -keyout weak.key -outform DER "
                "-out weak.csr -subj '/CN=weak' && "
                "openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout leaf.key -out leaf.crt -days 30 -subj '/CN=not a CA' "
                "-addext 'basicConstraints=critical,CA:FALSE'") == 0
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

static est_ca *load_ca(void)
{
  char cert[128], key[128], err[512];
  est_ca *ca;
  path_of(cert, sizeof(cert), "ca.crt");
  path_of(key, sizeof(key), "ca.key");
  ca = est_ca_load(cert, key, err, sizeof(err));
  if (!ca)
    fail_msg("est_ca_load: %s", err);
  return ca;
}

static void a_request_gets_the_tokens_identity_and_chains(void **state)
{
  est_ca *ca = load_ca();
  unsigned char *csr, *der = NULL;
  size_t csr_len, der_len = 0;
  char err[512];
  int64_t now = (int64_t)time(NULL);
  mbedtls_x509_crt crt;
  struct identity id;
  unsigned char *printed;
  size_t printed_len;

  (void)state;
  csr = read_file("dev.csr", &csr_len);
  if (est_ca_issue(ca, csr, csr_len, "S001", "D1", now, 3 * 86400, &der, &der_len, err,
                   sizeof(err)))
    fail_msg("est_ca_issue: %s", err);
  write_file("dev.der", der, der_len);
  /* openssl: it chains, and it names S001 D1 for client authentication. */
  assert_int_equal(in_dir("openssl x509 -inform DER -in dev.der -out dev.crt && "
                          "openssl verify -CAfile ca.crt -purpose sslclient dev.crt && "
                          "openssl x509 -in dev.crt -noout -subject -ext subjectAltName "
                          "-enddate > dev.printed"),
                   0);
  printed = read_file("dev.printed", &printed_len);
  printed[printed_len < 65535 ? printed_len : 65535] = '\0';
  if (!strstr((char *)printed, "URI:urn:pos:store:S001:device:D1") ||
      strstr((char *)printed, "S999") || !strstr((char *)printed, "subject=CN = S001 D1"))
    fail_msg("openssl x509 printed: %s", printed);
  /* The collector's identity check reads the same; the lifetime is 3 days. */
  mbedtls_x509_crt_init(&crt);
  assert_int_equal(mbedtls_x509_crt_parse_der(&crt, der, der_len), 0);
  assert_int_equal(identity_from_cert(&crt, &id, err, sizeof(err)), 0);
  assert_int_equal(id.kind, IDENTITY_DEVICE);
  assert_string_equal(id.store_id, "S001");
  assert_string_equal(id.device_id, "D1");
  assert_true(llabs(identity_cert_not_after_ms(&crt) / 1000 - (now + 3 * 86400)) <= 2);
  mbedtls_x509_crt_free(&crt);
  free(printed);
  free(csr);
  free(der);
  est_ca_free(ca);
}

/* notBefore is set back for device clocks a little behind: 5 minutes, and
 * a tenth of a short lifetime, so that a 1-minute certificate is not past
 * its renewal time (2/3 of notAfter - notBefore) when it is issued. */
static void not_before_is_set_back_at_most_a_tenth_of_the_lifetime(void **state)
{
  static const struct {
    int64_t lifetime_s, backdate_s;
  } cases[] = {{60, 6}, {120, 12}, {3000, 300}, {3 * 86400, 300}};
  est_ca *ca = load_ca();
  unsigned char *csr;
  size_t csr_len;
  char err[512];
  int64_t now = (int64_t)time(NULL);

  (void)state;
  csr = read_file("dev.csr", &csr_len);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    unsigned char *der = NULL;
    size_t der_len = 0;
    mbedtls_x509_crt crt;

    if (est_ca_issue(ca, csr, csr_len, "S001", "D1", now, cases[i].lifetime_s, &der, &der_len,
                     err, sizeof(err)))
      fail_msg("est_ca_issue for %lld s: %s", (long long)cases[i].lifetime_s, err);
    mbedtls_x509_crt_init(&crt);
    assert_int_equal(mbedtls_x509_crt_parse_der(&crt, der, der_len), 0);
    if (tls_x509_time_s(&crt.valid_from) != now - cases[i].backdate_s ||
        tls_x509_time_s(&crt.valid_to) != now + cases[i].lifetime_s)
      fail_msg("lifetime %lld s: notBefore now%+lld, notAfter now%+lld; expected now-%lld, "
               "now+%lld",
               (long long)cases[i].lifetime_s, (long long)(tls_x509_time_s(&crt.valid_from) - now),
               (long long)(tls_x509_time_s(&crt.valid_to) - now),
               (long long)cases[i].backdate_s, (long long)cases[i].lifetime_s);
    mbedtls_x509_crt_free(&crt);
    free(der);
  }
  free(csr);
  est_ca_free(ca);
}

/* A lifetime past the CA's own end stops at the CA's end. */
static void never_past_the_cas_own_expiry(void **state)
{
  est_ca *ca = load_ca();
  unsigned char *csr, *der = NULL;
  size_t csr_len, der_len = 0;
  char err[512];
  mbedtls_x509_crt crt;

  (void)state;
  csr = read_file("dev.csr", &csr_len);
  assert_int_equal(est_ca_issue(ca, csr, csr_len, "S001", "D1", (int64_t)time(NULL),
                                400 * 86400, &der, &der_len, err, sizeof(err)),
                   0);
  mbedtls_x509_crt_init(&crt);
  assert_int_equal(mbedtls_x509_crt_parse_der(&crt, der, der_len), 0);
  assert_true(identity_cert_not_after_ms(&crt) <=
              identity_cert_not_after_ms(est_ca_chain(ca)));
  mbedtls_x509_crt_free(&crt);
  free(csr);
  free(der);
  est_ca_free(ca);
}

static void bad_requests_are_refused_with_the_reason(void **state)
{
  est_ca *ca = load_ca();
  unsigned char *csr, *weak, *der = NULL;
  size_t csr_len, weak_len, der_len = 0;
  char err[512];
  int64_t now = (int64_t)time(NULL);

  (void)state;
  csr = read_file("dev.csr", &csr_len);
  weak = read_file("weak.csr", &weak_len);
  /* One bit of the signature flipped: not made with the key it carries. */
  csr[csr_len - 5] ^= 0x01;
  assert_int_equal(est_ca_issue(ca, csr, csr_len, "S001", "D1", now, 86400, &der, &der_len, err,
                                sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "signature does not match its public key"));
  assert_int_equal(est_ca_issue(ca, weak, weak_len, "S001", "D1", now, 86400, &der, &der_len,
                                err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "RSA of 2048 bits or more"));
  assert_int_equal(est_ca_issue(ca, (const unsigned char *)"not DER", 7, "S001", "D1", now,
                                86400, &der, &der_len, err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "not a PKCS#10 request"));
  csr[csr_len - 5] ^= 0x01;
  assert_int_equal(est_ca_issue(ca, csr, csr_len, "S001,O=x", "D1", now, 86400, &der, &der_len,
                                err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "store and device ids"));
  assert_null(der);
  free(csr);
  free(weak);
  est_ca_free(ca);
}

static void a_certificate_that_is_no_ca_is_refused_at_load(void **state)
{
  char cert[128], key[128], err[512];

  (void)state;
  path_of(cert, sizeof(cert), "leaf.crt");
  path_of(key, sizeof(key), "leaf.key");
  assert_null(est_ca_load(cert, key, err, sizeof(err)));
  assert_non_null(strstr(err, "is not a CA that may sign certificates"));
  path_of(key, sizeof(key), "dev.key");
  path_of(cert, sizeof(cert), "ca.crt");
  assert_null(est_ca_load(cert, key, err, sizeof(err)));
  assert_non_null(strstr(err, "does not match"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_request_gets_the_tokens_identity_and_chains),
      cmocka_unit_test(not_before_is_set_back_at_most_a_tenth_of_the_lifetime),
      cmocka_unit_test(never_past_the_cas_own_expiry),
      cmocka_unit_test(bad_requests_are_refused_with_the_reason),
      cmocka_unit_test(a_certificate_that_is_no_ca_is_refused_at_load),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
