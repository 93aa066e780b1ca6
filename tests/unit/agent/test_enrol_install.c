/*
 * test_enrol_install.c - a renewed key and certificate installed over the
 * live ones (agent/enrol/enrol.h): the sequence is stopped after each of
 * its steps, as a power cut would, and recovery must leave a matching pair
 * (the old one before the commit point, the new one from it on) and no
 * leftover file; the modes are the key's 0600 and the certificate's 0644.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <dirent.h>

#include "enrol/enrol.h"
#include "platform/tls.h"

static char dir[64];
static char cert_path[128], key_path[128];
static char *old_cert, *old_key, *new_cert, *new_key;

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

static void write_path(const char *path, const char *text)
{
  FILE *file = fopen(path, "wb");
  assert_non_null(file);
  fputs(text, file);
  fclose(file);
}

static int group_setup(void **state)
{
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/test_enrol_install_XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  snprintf(cert_path, sizeof(cert_path), "%s/uplink.cert", dir);
  snprintf(key_path, sizeof(key_path), "%s/uplink.key", dir);
  /* Two pairs: the one the device has, and the renewed one. */
  if (in_dir("for n in old new; do openssl req -x509 -newkey ec "
             "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $n.key -out $n.crt -days 2 "
             "-subj /CN=urn:pos:store:S001:device:D1; done") != 0)
    return -1;
  old_cert = read_name("old.crt");
  old_key = read_name("old.key");
  new_cert = read_name("new.crt");
  new_key = read_name("new.key");
  return old_cert && old_key && new_cert && new_key ? 0 : -1;
}

static int group_teardown(void **state)
{
  char command[128];
  (void)state;
  free(old_cert);
  free(old_key);
  free(new_cert);
  free(new_key);
  snprintf(command, sizeof(command), "rm -rf '%s'", dir);
  return system(command) == 0 ? 0 : -1;
}

/* The device's live files are the old pair, nothing else is there. */
static void live_old_pair(void)
{
  char err[256];
  assert_int_equal(in_dir("rm -f uplink.*"), 0);
  assert_int_equal(enrol_file_write_atomic(key_path, old_key, strlen(old_key), 0600, err,
                                           sizeof(err)),
                   0);
  assert_int_equal(enrol_file_write_atomic(cert_path, old_cert, strlen(old_cert), 0644, err,
                                           sizeof(err)),
                   0);
}

/* Files named uplink.* other than the two live ones. */
static int leftovers(void)
{
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  assert_non_null(d);
  while ((e = readdir(d)) != NULL)
    if (!strncmp(e->d_name, "uplink.", 7) && strcmp(e->d_name, "uplink.cert") &&
        strcmp(e->d_name, "uplink.key"))
      n++;
  closedir(d);
  return n;
}

/* The live files: a pair that the uplink's loader accepts, and which. */
static int live_pair_is_new(void)
{
  mbedtls_x509_crt cert;
  mbedtls_pk_context key;
  char err[512], *cert_text, *key_text;
  int is_new;

  mbedtls_x509_crt_init(&cert);
  mbedtls_pk_init(&key);
  if (tls_load_identity(&cert, &key, cert_path, key_path, "cert", "key", err, sizeof(err)) != 0)
    fail_msg("the live pair does not work: %s", err);
  mbedtls_pk_free(&key);
  mbedtls_x509_crt_free(&cert);
  cert_text = read_path(cert_path);
  key_text = read_path(key_path);
  is_new = strcmp(cert_text, new_cert) == 0;
  assert_int_equal(strcmp(key_text, is_new ? new_key : old_key), 0);
  if (!is_new)
    assert_string_equal(cert_text, old_cert);
  free(cert_text);
  free(key_text);
  return is_new;
}

static void assert_modes(void)
{
  struct stat st;
  assert_int_equal(stat(key_path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(stat(cert_path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0644);
}

/* Stopped after each step: recovery leaves a working pair, old before the
 * commit (both new files staged, step 2), new from it on, and nothing else. The test fails if
 * recovery leaves the live key and certificate of different pairs. */
static void a_stop_after_any_step_leaves_a_matching_pair(void **state)
{
  static const enum enrol_recover_outcome expected[ENROL_INSTALL_STEPS + 1] = {
      ENROL_RECOVER_CLEAN, ENROL_RECOVER_ROLLED_BACK, ENROL_RECOVER_COMPLETED,
      ENROL_RECOVER_COMPLETED, ENROL_RECOVER_CLEAN};
  enum enrol_recover_outcome outcome;
  char err[512];
  mode_t old_umask = umask(022);

  (void)state;
  for (int stop_after = 0; stop_after <= ENROL_INSTALL_STEPS; stop_after++) {
    live_old_pair();
    for (int step = 1; step <= stop_after; step++)
      assert_int_equal(enrol_install_step(cert_path, key_path, new_cert, new_key,
                                          (enum enrol_install_step)step, err, sizeof(err)),
                       0);
    if (enrol_install_recover(cert_path, key_path, &outcome, err, sizeof(err)) != 0)
      fail_msg("stopped after step %d: %s", stop_after, err);
    assert_int_equal(outcome, expected[stop_after]);
    assert_int_equal(live_pair_is_new(), stop_after >= ENROL_INSTALL_STAGE_CERT);
    assert_int_equal(leftovers(), 0);
    assert_modes();
    /* Recovery twice is recovery once (a power cut during recovery). */
    assert_int_equal(enrol_install_recover(cert_path, key_path, &outcome, err, sizeof(err)), 0);
    assert_int_equal(outcome, ENROL_RECOVER_CLEAN);
    assert_int_equal(live_pair_is_new(), stop_after >= ENROL_INSTALL_STAGE_CERT);
  }
  umask(old_umask);
}

/* Stopped inside a write (the temporary file not yet renamed), or with a
 * staged file that is not a certificate: thrown away, the old pair stays. */
static void half_written_files_are_thrown_away(void **state)
{
  enum enrol_recover_outcome outcome;
  char path[160], err[512];

  (void)state;
  live_old_pair();
  snprintf(path, sizeof(path), "%s.new.tmp.4242", key_path);
  write_path(path, "a key file cut short by a crash");
  snprintf(path, sizeof(path), "%s.tmp.17", cert_path);
  write_path(path, "-----BEGIN CERT");
  assert_int_equal(enrol_install_recover(cert_path, key_path, &outcome, err, sizeof(err)), 0);
  assert_int_equal(outcome, ENROL_RECOVER_CLEAN);
  assert_int_equal(leftovers(), 0);
  assert_false(live_pair_is_new());

  assert_int_equal(enrol_install_step(cert_path, key_path, new_cert, new_key,
                                      ENROL_INSTALL_STAGE_KEY, err, sizeof(err)),
                   0);
  snprintf(path, sizeof(path), "%s.new", cert_path);
  write_path(path, "not a certificate\n");
  assert_int_equal(enrol_install_recover(cert_path, key_path, &outcome, err, sizeof(err)), 0);
  assert_int_equal(outcome, ENROL_RECOVER_ROLLED_BACK);
  assert_int_equal(leftovers(), 0);
  assert_false(live_pair_is_new());
}

/* The whole install: the new pair live, with its modes; a pair that does
 * not match is refused and changes nothing; the first install (nothing
 * live yet) works too. */
static void an_install_replaces_the_pair_or_changes_nothing(void **state)
{
  enum enrol_recover_outcome outcome;
  char err[512];
  mode_t old_umask = umask(022);

  (void)state;
  live_old_pair();
  assert_int_equal(enrol_install(cert_path, key_path, new_cert, old_key, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "not a matching pair"));
  assert_false(live_pair_is_new());
  assert_int_equal(enrol_install(cert_path, key_path, new_cert, new_key, err, sizeof(err)), 0);
  assert_true(live_pair_is_new());
  assert_modes();
  assert_int_equal(leftovers(), 0);

  assert_int_equal(in_dir("rm -f uplink.*"), 0);
  assert_int_equal(enrol_install_recover(cert_path, key_path, &outcome, err, sizeof(err)), 0);
  assert_int_equal(enrol_install(cert_path, key_path, new_cert, new_key, err, sizeof(err)), 0);
  assert_true(live_pair_is_new());
  umask(old_umask);
}

/* Live files that do not match and cannot be mended: recovery says so,
 * and what to do. */
static void a_live_pair_that_does_not_match_is_reported(void **state)
{
  char err[512];

  (void)state;
  live_old_pair();
  assert_int_equal(enrol_file_write_atomic(key_path, new_key, strlen(new_key), 0600, err,
                                           sizeof(err)),
                   0);
  assert_int_equal(enrol_install_recover(cert_path, key_path, NULL, err, sizeof(err)), -1);
  if (!strstr(err, "does not match") || !strstr(err, "new enrolment token"))
    fail_msg("message: %s", err);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_stop_after_any_step_leaves_a_matching_pair),
      cmocka_unit_test(half_written_files_are_thrown_away),
      cmocka_unit_test(an_install_replaces_the_pair_or_changes_nothing),
      cmocka_unit_test(a_live_pair_that_does_not_match_is_reported),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
