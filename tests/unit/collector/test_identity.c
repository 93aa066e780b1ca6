/*
 * test_identity.c - identities from real certificates made at test time
 * by tests/tools/pki.sh, and from SAN URIs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mbedtls/x509_crt.h>

#include "server/identity.h"

static char pki_dir[64];

static int make_pki(void **state)
{
  char cmd[256];
  (void)state;
  snprintf(pki_dir, sizeof(pki_dir), "/tmp/test_identity_XXXXXX");
  if (!mkdtemp(pki_dir))
    return -1;
  snprintf(cmd, sizeof(cmd), "bash %s/tests/tools/pki.sh init %s", POS_SOURCE_DIR, pki_dir);
  return system(cmd) == 0 ? 0 : -1;
}

static int remove_pki(void **state)
{
  char cmd[128];
  (void)state;
  snprintf(cmd, sizeof(cmd), "rm -rf %s", pki_dir);
  return system(cmd) == 0 ? 0 : -1;
}

static int identity_of(const char *name, struct identity *id, char *err, size_t err_size)
{
  mbedtls_x509_crt crt;
  char path[128];
  int rc;
  mbedtls_x509_crt_init(&crt);
  snprintf(path, sizeof(path), "%s/%s.crt", pki_dir, name);
  assert_int_equal(mbedtls_x509_crt_parse_file(&crt, path), 0);
  rc = identity_from_cert(&crt, id, err, err_size);
  mbedtls_x509_crt_free(&crt);
  return rc;
}

static void device_certificate_names_store_and_device(void **state)
{
  struct identity id;
  char err[256];
  (void)state;
  assert_int_equal(identity_of("device-S001-D1", &id, err, sizeof(err)), 0);
  assert_int_equal(id.kind, IDENTITY_DEVICE);
  assert_string_equal(id.store_id, "S001");
  assert_string_equal(id.device_id, "D1");
}

/* pki.sh made "expired" with notAfter 2020-02-01T00:00:00Z: the fleet view's cert_not_after. */
static void certificate_expiry_in_epoch_ms(void **state)
{
  mbedtls_x509_crt crt;
  char path[128];
  (void)state;
  mbedtls_x509_crt_init(&crt);
  snprintf(path, sizeof(path), "%s/expired.crt", pki_dir);
  assert_int_equal(mbedtls_x509_crt_parse_file(&crt, path), 0);
  assert_int_equal(identity_cert_not_after_ms(&crt), 1580515200000LL);
  mbedtls_x509_crt_free(&crt);
  assert_int_equal(identity_cert_not_after_ms(NULL), 0);
}

static void admin_certificate_names_the_admin(void **state)
{
  struct identity id;
  char err[256];
  (void)state;
  assert_int_equal(identity_of("admin", &id, err, sizeof(err)), 0);
  assert_int_equal(id.kind, IDENTITY_ADMIN);
  assert_string_equal(id.admin, "hq-ops");
}

static void server_certificate_has_no_identity(void **state)
{
  struct identity id;
  char err[256];
  (void)state;
  assert_int_equal(identity_of("server", &id, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "urn:pos:store"));
}

static void malformed_uris_are_refused(void **state)
{
  struct identity id;
  char err[256];
  const char *bad[] = {
      "urn:pos:store:S001",          "urn:pos:store::device:D1", "urn:pos:store:S001:device:",
      "urn:pos:store:S 1:device:D1", "urn:pos:admin:",           "urn:pos:kiosk:K1",
  };
  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    if (identity_from_uri(bad[i], strlen(bad[i]), &id, err, sizeof(err)) != -1)
      fail_msg("\"%s\" was accepted", bad[i]);
  }
  assert_int_equal(identity_from_uri("urn:pos:store:S-9.x:device:POS_2", 32, &id, err,
                                     sizeof(err)),
                   0);
  assert_string_equal(id.store_id, "S-9.x");
  assert_string_equal(id.device_id, "POS_2");
}

static void no_certificate_is_no_identity(void **state)
{
  struct identity id;
  char err[256];
  (void)state;
  assert_int_equal(identity_from_cert(NULL, &id, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "no client certificate"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(device_certificate_names_store_and_device),
      cmocka_unit_test(admin_certificate_names_the_admin),
      cmocka_unit_test(certificate_expiry_in_epoch_ms),
      cmocka_unit_test(server_certificate_has_no_identity),
      cmocka_unit_test(malformed_uris_are_refused),
      cmocka_unit_test(no_certificate_is_no_identity),
  };
  return cmocka_run_group_tests(tests, make_pki, remove_pki);
}
