/*
 * test_posctl_client.c - the exit codes a script can trust (HTTP status
 * and command state to exit code), where posctl finds its settings
 * (flags, $POSCTL_CONFIG, ~/.config/posctl.conf; flags win), and what it
 * says when the collector cannot be reached (a real loopback port nobody
 * listens on).
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

#include <arpa/inet.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "posctl/client.h"
#include "posctl/settings.h"

static void exit_codes_have_the_numbers_the_help_documents(void **state)
{
  (void)state;
  assert_int_equal(POSCTL_EXIT_OK, 0);
  assert_int_equal(POSCTL_EXIT_REFUSED, 1);
  assert_int_equal(POSCTL_EXIT_USAGE, 2);
  assert_int_equal(POSCTL_EXIT_UNREACHABLE, 3);
  assert_int_equal(POSCTL_EXIT_INCOMPLETE, 4);
  assert_int_equal(POSCTL_EXIT_FAILED, 5);
  assert_int_equal(POSCTL_EXIT_TIMEOUT, 6);
  assert_int_equal(POSCTL_EXIT_LAGGING, 10);
  assert_int_equal(POSCTL_EXIT_INTERRUPTED, 130);
}

static void a_4xx_is_refused_and_a_5xx_is_unreachable(void **state)
{
  (void)state;
  assert_int_equal(posctl_exit_for_status(200), POSCTL_EXIT_OK);
  assert_int_equal(posctl_exit_for_status(201), POSCTL_EXIT_OK);
  assert_int_equal(posctl_exit_for_status(400), POSCTL_EXIT_REFUSED);
  assert_int_equal(posctl_exit_for_status(403), POSCTL_EXIT_REFUSED);
  assert_int_equal(posctl_exit_for_status(404), POSCTL_EXIT_REFUSED);
  assert_int_equal(posctl_exit_for_status(409), POSCTL_EXIT_REFUSED);
  assert_int_equal(posctl_exit_for_status(500), POSCTL_EXIT_UNREACHABLE);
  assert_int_equal(posctl_exit_for_status(503), POSCTL_EXIT_UNREACHABLE);
  /* Not an answer of the admin API at all (a redirect, nothing). */
  assert_int_equal(posctl_exit_for_status(302), POSCTL_EXIT_UNREACHABLE);
  assert_int_equal(posctl_exit_for_status(0), POSCTL_EXIT_UNREACHABLE);
}

static void only_done_exits_0_and_an_unknown_state_never_does(void **state)
{
  (void)state;
  assert_int_equal(posctl_exit_for_state("pending"), -1);
  assert_int_equal(posctl_exit_for_state("running"), -1);
  assert_int_equal(posctl_exit_for_state("done"), POSCTL_EXIT_OK);
  assert_int_equal(posctl_exit_for_state("incomplete"), POSCTL_EXIT_INCOMPLETE);
  assert_int_equal(posctl_exit_for_state("failed"), POSCTL_EXIT_FAILED);
  assert_int_equal(posctl_exit_for_state("cancelled"), POSCTL_EXIT_FAILED);
  assert_int_equal(posctl_exit_for_state("paused"), POSCTL_EXIT_FAILED);
  assert_int_equal(posctl_exit_for_state(NULL), POSCTL_EXIT_FAILED);
}

static void ids_are_escaped_in_paths(void **state)
{
  char path[64] = "/v1/admin/stores/";
  char small[24] = "/v1/admin/stores/";
  (void)state;
  assert_int_equal(posctl_append_escaped(path, sizeof(path), "S 001/../x?y"), 0);
  assert_string_equal(path, "/v1/admin/stores/S%20001%2F..%2Fx%3Fy");
  assert_int_equal(posctl_append_escaped(small, sizeof(small), "0123456789"), -1);
}

/* ---- settings ---------------------------------------------------------------------- */

static char dir[64];

static int make_dir(void **state)
{
  (void)state;
  snprintf(dir, sizeof(dir), "/tmp/test_posctl_XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  /* No user's or machine's own posctl.conf may answer for these tests' HOME. */
  setenv("HOME", dir, 1);
  unsetenv("POSCTL_CONFIG");
  return 0;
}

static int remove_dir(void **state)
{
  char cmd[128];
  (void)state;
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *relative, const char *text)
{
  char path[256];
  FILE *f;
  snprintf(path, sizeof(path), "%s/%s", dir, relative);
  f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void an_explicit_config_file_is_read_with_paths_from_its_directory(void **state)
{
  char config[128], expected[256], err[1024] = "";
  struct posctl_flags flags = {0};
  struct posctl_settings s;
  (void)state;
  write_file("admin.crt", "cert");
  write_file("admin.key", "key");
  write_file("a.conf", "[posctl]\nurl = https://127.0.0.1:8443\ncert = admin.crt\n"
                       "key = admin.key\n");
  snprintf(config, sizeof(config), "%s/a.conf", dir);
  flags.config = config;
  if (posctl_settings_load(&flags, &s, err, sizeof(err)))
    print_error("%s\n", err);
  assert_string_equal(err, "");
  assert_string_equal(s.url, "https://127.0.0.1:8443");
  snprintf(expected, sizeof(expected), "%s/admin.crt", dir);
  assert_string_equal(s.cert, expected);
  assert_null(s.ca);
  assert_string_equal(s.config_path, config);
  posctl_settings_free(&s);
  posctl_settings_free(NULL);
}

static void flags_win_over_the_file(void **state)
{
  char config[128], cert[128], err[1024] = "";
  struct posctl_flags flags = {0};
  struct posctl_settings s;
  (void)state;
  write_file("other.crt", "cert");
  snprintf(config, sizeof(config), "%s/a.conf", dir);
  snprintf(cert, sizeof(cert), "%s/other.crt", dir);
  setenv("POSCTL_CONFIG", config, 1);
  flags.url = "https://127.0.0.2:9443/";
  flags.cert = cert;
  assert_int_equal(posctl_settings_load(&flags, &s, err, sizeof(err)), 0);
  assert_string_equal(s.url, "https://127.0.0.2:9443/");
  assert_string_equal(s.cert, cert);
  assert_non_null(strstr(s.key, "/admin.key"));
  posctl_settings_free(&s);
  unsetenv("POSCTL_CONFIG");
}

static void the_home_config_is_found_when_nothing_names_one(void **state)
{
  char config_dir[128], err[1024] = "";
  struct posctl_flags flags = {0};
  struct posctl_settings s;
  (void)state;
  snprintf(config_dir, sizeof(config_dir), "%s/.config", dir);
  mkdir(config_dir, 0700);
  write_file(".config/posctl.conf", "[posctl]\nurl = https://127.0.0.3:1\ncert = ../admin.crt\n"
                                    "key = ../admin.key\nca = ../admin.crt\n");
  assert_int_equal(posctl_settings_load(&flags, &s, err, sizeof(err)), 0);
  assert_string_equal(s.url, "https://127.0.0.3:1");
  assert_non_null(strstr(s.ca, "/.config/../admin.crt"));
  posctl_settings_free(&s);
}

static void settings_errors_say_what_and_where(void **state)
{
  char config[128], err[1024];
  struct posctl_flags flags = {0};
  struct posctl_settings s;
  (void)state;
  flags.config = "/nonexistent/posctl.conf";
  assert_int_equal(posctl_settings_load(&flags, &s, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "config file /nonexistent/posctl.conf (--config) does not exist"));
  posctl_settings_free(&s);

  write_file("typo.conf", "[posctl]\nurl = https://x:1\nkye = a\n");
  snprintf(config, sizeof(config), "%s/typo.conf", dir);
  flags.config = config;
  assert_int_equal(posctl_settings_load(&flags, &s, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "typo.conf:3"));
  assert_non_null(strstr(err, "kye"));
  posctl_settings_free(&s);

  write_file("http.conf", "[posctl]\nurl = http://127.0.0.1:1\ncert = admin.crt\n"
                          "key = admin.key\n");
  snprintf(config, sizeof(config), "%s/http.conf", dir);
  assert_int_equal(posctl_settings_load(&flags, &s, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "must start with https://"));
  posctl_settings_free(&s);

  write_file("nokey.conf", "[posctl]\nurl = https://127.0.0.1:1\ncert = admin.crt\n"
                           "key = missing.key\n");
  snprintf(config, sizeof(config), "%s/nokey.conf", dir);
  assert_int_equal(posctl_settings_load(&flags, &s, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "cannot read the key file"));
  assert_non_null(strstr(err, "missing.key (from "));
  posctl_settings_free(&s);

  write_file("nourl.conf", "[posctl]\ncert = admin.crt\nkey = admin.key\n");
  snprintf(config, sizeof(config), "%s/nourl.conf", dir);
  assert_int_equal(posctl_settings_load(&flags, &s, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "no collector URL: give --url"));
  posctl_settings_free(&s);
}

/* ---- requests --------------------------------------------------------------------- */

/* A loopback port that was just free: bound, read back, closed. */
static int free_port(void)
{
  struct sockaddr_in addr;
  socklen_t len = sizeof(addr);
  int fd = socket(AF_INET, SOCK_STREAM, 0), port;
  assert_true(fd >= 0);
  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
  port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

static void an_unreachable_collector_exits_3_naming_the_url_and_what_to_check(void **state)
{
  char url[64];
  struct posctl_target target = {url, "/nonexistent.crt", "/nonexistent.key", NULL, 5};
  struct posctl_answer answer;
  (void)state;
  snprintf(url, sizeof(url), "https://127.0.0.1:%d", free_port());
  assert_int_equal(posctl_request(&target, "GET", "/v1/admin/stores", NULL, 3, &answer),
                   POSCTL_EXIT_UNREACHABLE);
  assert_int_equal(answer.status, 0);
  assert_null(answer.json);
  if (!strstr(answer.message, "check --url and that the collector runs"))
    print_error("message: %s\n", answer.message);
  assert_non_null(strstr(answer.message, "cannot reach the collector at "));
  assert_non_null(strstr(answer.message, url));
  assert_non_null(strstr(answer.message, "; check --url and that the collector runs"));
  posctl_answer_clear(&answer);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(exit_codes_have_the_numbers_the_help_documents),
      cmocka_unit_test(a_4xx_is_refused_and_a_5xx_is_unreachable),
      cmocka_unit_test(only_done_exits_0_and_an_unknown_state_never_does),
      cmocka_unit_test(ids_are_escaped_in_paths),
      cmocka_unit_test(an_explicit_config_file_is_read_with_paths_from_its_directory),
      cmocka_unit_test(flags_win_over_the_file),
      cmocka_unit_test(the_home_config_is_found_when_nothing_names_one),
      cmocka_unit_test(settings_errors_say_what_and_where),
      cmocka_unit_test(an_unreachable_collector_exits_3_naming_the_url_and_what_to_check),
  };
  int rc;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  rc = cmocka_run_group_tests(tests, make_dir, remove_dir);
  curl_global_cleanup();
  return rc;
}
