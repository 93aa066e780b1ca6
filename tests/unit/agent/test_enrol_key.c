/*
 * test_enrol_key.c - the device key (agent/enrol/enrol.h): made on the
 * device as P-256, written as PEM with mode 0600 from its creation, whole
 * or not at all; errors name the file and the reason.
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
#include <mbedtls/ecp.h>

#include "enrol/enrol.h"
#include "platform/tls.h"

static char dir[64];
static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;

static int group_setup(void **state)
{
  char err[256];
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/test_enrol_key_XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  mbedtls_entropy_init(&entropy);
  mbedtls_ctr_drbg_init(&drbg);
  return tls_seed(&entropy, &drbg, "test_enrol_key", err, sizeof(err));
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

/* Files in the test directory other than `keep`: leftovers. */
static int others_in_dir(const char *keep)
{
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  assert_non_null(d);
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, keep))
      n++;
  closedir(d);
  return n;
}

/* A new key is P-256, reads back as the same key, and is 0600 even under a
 * umask that would allow more; no temporary file stays behind. */
static void a_new_key_is_p256_private_and_reads_back(void **state)
{
  mbedtls_pk_context key, read_back;
  char path[128], err[256];
  struct stat st;
  mode_t old_umask;

  (void)state;
  mbedtls_pk_init(&key);
  mbedtls_pk_init(&read_back);
  snprintf(path, sizeof(path), "%s/uplink.key", dir);
  assert_int_equal(enrol_key_generate(&key, &drbg, err, sizeof(err)), 0);
  assert_int_equal(mbedtls_pk_get_type(&key), MBEDTLS_PK_ECKEY);
  assert_int_equal(mbedtls_pk_ec(key)->grp.id, MBEDTLS_ECP_DP_SECP256R1);
  old_umask = umask(0);
  assert_int_equal(enrol_key_write(&key, path, err, sizeof(err)), 0);
  umask(old_umask);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0600);
  assert_int_equal(others_in_dir("uplink.key"), 0);
  assert_int_equal(mbedtls_pk_parse_keyfile(&read_back, path, NULL), 0);
  assert_int_equal(mbedtls_pk_check_pair(&key, &read_back), 0);
  mbedtls_pk_free(&read_back);
  mbedtls_pk_free(&key);
}

/* Replacing a key that someone left world-readable: the new file is 0600
 * (a new inode, never the old one's mode), and two keys differ. */
static void a_key_replaces_an_old_file_with_its_own_mode(void **state)
{
  mbedtls_pk_context first, second, read_back;
  char path[128], err[256];
  struct stat st;
  FILE *old;

  (void)state;
  mbedtls_pk_init(&first);
  mbedtls_pk_init(&second);
  mbedtls_pk_init(&read_back);
  snprintf(path, sizeof(path), "%s/replace.key", dir);
  old = fopen(path, "w");
  assert_non_null(old);
  fputs("old\n", old);
  fclose(old);
  assert_int_equal(chmod(path, 0644), 0);
  assert_int_equal(enrol_key_generate(&first, &drbg, err, sizeof(err)), 0);
  assert_int_equal(enrol_key_generate(&second, &drbg, err, sizeof(err)), 0);
  assert_int_not_equal(mbedtls_pk_check_pair(&first, &second), 0);
  assert_int_equal(enrol_key_write(&second, path, err, sizeof(err)), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0600);
  assert_int_equal(mbedtls_pk_parse_keyfile(&read_back, path, NULL), 0);
  assert_int_equal(mbedtls_pk_check_pair(&second, &read_back), 0);
  unlink(path);
  mbedtls_pk_free(&read_back);
  mbedtls_pk_free(&second);
  mbedtls_pk_free(&first);
}

/* A directory that does not exist: the message names the file, the
 * system's reason and what to check; nothing is left. */
static void a_write_that_fails_says_where_and_why(void **state)
{
  mbedtls_pk_context key;
  char path[128], err[512];

  (void)state;
  mbedtls_pk_init(&key);
  snprintf(path, sizeof(path), "%s/missing/uplink.key", dir);
  assert_int_equal(enrol_key_generate(&key, &drbg, err, sizeof(err)), 0);
  assert_int_equal(enrol_key_write(&key, path, err, sizeof(err)), -1);
  if (!strstr(err, path) || !strstr(err, "No such file or directory") ||
      !strstr(err, "check that its directory exists"))
    fail_msg("message: %s", err);
  mbedtls_pk_free(&key);
}

/* The writer's temporary file left by a process with our pid (a reboot
 * reuses pids) does not stop the next write. */
static void a_stale_temporary_file_does_not_block(void **state)
{
  char path[128], tmp[160], err[256];
  FILE *stale;
  struct stat st;

  (void)state;
  snprintf(path, sizeof(path), "%s/stale.crt", dir);
  snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
  stale = fopen(tmp, "w");
  assert_non_null(stale);
  fclose(stale);
  assert_int_equal(enrol_file_write_atomic(path, "cert\n", 5, 0644, err, sizeof(err)), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, 5);
  assert_int_not_equal(stat(tmp, &st), 0);
  unlink(path);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_new_key_is_p256_private_and_reads_back),
      cmocka_unit_test(a_key_replaces_an_old_file_with_its_own_mode),
      cmocka_unit_test(a_write_that_fails_says_where_and_why),
      cmocka_unit_test(a_stale_temporary_file_does_not_block),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
