/*
 * test_config.c - the table-driven INI configuration: defaults, types,
 * bounds, and errors that name file, line and key.
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

#include "platform/config.h"
#include "platform/log.h"

struct test_cfg {
  char *name;
  int64_t count;
  int enabled;
  int64_t interval_ms;
  int64_t max_bytes;
  int level;
};

static const struct config_key test_keys[] = {
    {"main", "name", CONFIG_STRING, "store", 0, 0, offsetof(struct test_cfg, name), "a name"},
    {"main", "count", CONFIG_INT, "3", 1, 10, offsetof(struct test_cfg, count), "a count"},
    {"main", "enabled", CONFIG_BOOL, "false", 0, 0, offsetof(struct test_cfg, enabled), "on?"},
    {"net", "interval", CONFIG_DURATION, "15m", 1000, 86400000,
     offsetof(struct test_cfg, interval_ms), "how often"},
    {"net", "max_bytes", CONFIG_SIZE, "1M", 0, 0, offsetof(struct test_cfg, max_bytes),
     "how much"},
    {"net", "level", CONFIG_LEVEL, "info", 0, 0, offsetof(struct test_cfg, level), "log"},
};
#define TEST_KEY_COUNT (sizeof(test_keys) / sizeof(test_keys[0]))

static char test_path[64];

/* Writes `text` to a fresh temporary file whose name is in test_path. */
static void write_config(const char *text)
{
  int fd;
  snprintf(test_path, sizeof(test_path), "/tmp/test_config_XXXXXX");
  fd = mkstemp(test_path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
}

static int load(const char *text, struct test_cfg *cfg, char *err, size_t err_size)
{
  int rc;
  memset(cfg, 0, sizeof(*cfg));
  write_config(text);
  rc = config_load(test_path, test_keys, TEST_KEY_COUNT, cfg, err, err_size);
  unlink(test_path);
  return rc;
}

static void defaults_apply_when_keys_are_absent(void **state)
{
  struct test_cfg cfg;
  char err[CONFIG_ERROR_MAX];
  (void)state;
  assert_int_equal(load("; nothing\n", &cfg, err, sizeof(err)), 0);
  assert_string_equal(cfg.name, "store");
  assert_int_equal(cfg.count, 3);
  assert_int_equal(cfg.enabled, 0);
  assert_int_equal(cfg.interval_ms, 15 * 60 * 1000);
  assert_int_equal(cfg.max_bytes, 1024 * 1024);
  assert_int_equal(cfg.level, LOG_INFO);
  config_free(test_keys, TEST_KEY_COUNT, &cfg);
  assert_null(cfg.name);
}

static void every_type_parses(void **state)
{
  struct test_cfg cfg;
  char err[CONFIG_ERROR_MAX];
  (void)state;
  assert_int_equal(load("[main]\nname = Roma 12\ncount = 7\nenabled = yes\n"
                        "[net]\ninterval = 90s\nmax_bytes = 4K\nlevel = debug\n",
                        &cfg, err, sizeof(err)),
                   0);
  assert_string_equal(cfg.name, "Roma 12");
  assert_int_equal(cfg.count, 7);
  assert_int_equal(cfg.enabled, 1);
  assert_int_equal(cfg.interval_ms, 90000);
  assert_int_equal(cfg.max_bytes, 4096);
  assert_int_equal(cfg.level, LOG_DEBUG);
  config_free(test_keys, TEST_KEY_COUNT, &cfg);
}

/* Asserts that loading `text` fails and the message holds each of the parts. */
static void expect_error(const char *text, const char *part1, const char *part2)
{
  struct test_cfg cfg;
  char err[CONFIG_ERROR_MAX];
  char where[96];
  assert_int_equal(load(text, &cfg, err, sizeof(err)), -1);
  snprintf(where, sizeof(where), "%s:", test_path);
  if (!strstr(err, where) || !strstr(err, part1) || (part2 && !strstr(err, part2)))
    fail_msg("error \"%s\" lacks \"%s\" / \"%s\" / \"%s\"", err, where, part1,
             part2 ? part2 : "");
  config_free(test_keys, TEST_KEY_COUNT, &cfg);
}

static void unknown_key_names_line_and_key(void **state)
{
  (void)state;
  expect_error("[main]\nname = x\ncolour = red\n", ":3: ", "unknown key colour in [main]");
}

static void unknown_section_is_an_error(void **state)
{
  (void)state;
  expect_error("[mian]\nname = x\n", ":2: ", "unknown section [mian]");
}

static void duration_without_unit_says_which_units(void **state)
{
  (void)state;
  expect_error("[net]\n\ninterval = 15\n", ":3: ", "needs a unit (ms, s, m, h, d)");
}

static void out_of_bounds_names_the_bounds(void **state)
{
  (void)state;
  expect_error("[main]\ncount = 11\n", ":2: [main] count = \"11\"", "between 1 and 10");
  expect_error("[net]\ninterval = 500ms\n", ":2: ", "between 1s and 24h");
}

static void bad_values_are_errors(void **state)
{
  (void)state;
  expect_error("[main]\ncount = abc\n", ":2: ", "a whole number");
  expect_error("[main]\ncount = 3x\n", ":2: ", "a whole number");
  expect_error("[main]\nenabled = maybe\n", ":2: ", "true or false");
  expect_error("[net]\nmax_bytes = 4T\n", ":2: ", "a size in bytes");
  expect_error("[net]\nlevel = loud\n", ":2: ", "debug, info, warn or error");
  expect_error("[net]\ninterval = 99999999999999999999h\n", ":2: ", "interval");
}

static void line_that_is_not_ini_is_an_error(void **state)
{
  (void)state;
  expect_error("[main]\nname = x\nthis is not ini\n", ":3: ", "not an INI line");
}

/* inih cuts a line longer than it reads whole in two, and reads the rest as
 * a line of its own: refused, naming the line (a fuzz-config finding). */
static void line_too_long_is_an_error(void **state)
{
  char text[400];
  (void)state;
  snprintf(text, sizeof(text), "[main]\nname = %0250d\n", 7);
  expect_error(text, ":2: ", "the line is longer than 198 characters");
}

/* A value continued on an indented line must fit on one "name = value"
 * line, as the effective config writes it back. */
static void continued_value_too_long_is_an_error(void **state)
{
  char text[400];
  (void)state;
  snprintf(text, sizeof(text), "[main]\nname = a\n  %0195d\n", 7);
  expect_error(text, ":3: ", "at most 191 fit on one line");
}

static void missing_file_says_so(void **state)
{
  struct test_cfg cfg;
  char err[CONFIG_ERROR_MAX];
  (void)state;
  memset(&cfg, 0, sizeof(cfg));
  assert_int_equal(config_load("/nonexistent/agent.conf", test_keys, TEST_KEY_COUNT, &cfg, err,
                               sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "/nonexistent/agent.conf: cannot read the config file"));
  config_free(test_keys, TEST_KEY_COUNT, &cfg);
}

static void example_lists_every_key_and_reloads(void **state)
{
  struct test_cfg cfg;
  char err[CONFIG_ERROR_MAX];
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  (void)state;
  config_write_example(out, test_keys, TEST_KEY_COUNT, "header line");
  fclose(out);
  for (size_t i = 0; i < TEST_KEY_COUNT; i++) {
    char line[64];
    snprintf(line, sizeof(line), "\n%s = %s\n", test_keys[i].name, test_keys[i].default_value);
    if (!strstr(text, line))
      fail_msg("example lacks \"%s\":\n%s", line, text);
  }
  /* The example is itself a valid config. */
  assert_int_equal(load(text, &cfg, err, sizeof(err)), 0);
  config_free(test_keys, TEST_KEY_COUNT, &cfg);
  free(text);
}

/* Writes `text` into `path`. */
static void write_file(const char *path, const char *text)
{
  FILE *file = fopen(path, "w");
  assert_non_null(file);
  assert_int_equal(fputs(text, file) >= 0, 1);
  assert_int_equal(fclose(file), 0);
}

/*
 * The profile stays the package's file; what a device is given lives in
 * "<file>.d/NAME.conf", read in name order, later files overriding.
 */
static void dropins_override_in_name_order_and_name_the_file_at_fault(void **state)
{
  char dir[] = "/tmp/test_config_dropins_XXXXXX";
  char conf[128], dropdir[160], early[200], late[200], hidden[200], other[200], bad[200];
  struct test_cfg cfg;
  char err[CONFIG_ERROR_MAX];
  (void)state;

  assert_non_null(mkdtemp(dir));
  snprintf(conf, sizeof(conf), "%s/agent.conf", dir);
  snprintf(dropdir, sizeof(dropdir), "%s.d", conf);
  snprintf(early, sizeof(early), "%s/10-site.conf", dropdir);
  snprintf(late, sizeof(late), "%s/50-provisioning.conf", dropdir);
  snprintf(hidden, sizeof(hidden), "%s/.50-provisioning.conf", dropdir);
  snprintf(other, sizeof(other), "%s/50-provisioning.conf.dpkg-old", dropdir);
  snprintf(bad, sizeof(bad), "%s/90-bad.conf", dropdir);
  write_file(conf, "[main]\nname = profile\ncount = 4\n");

  /* No directory: no drop-ins, the file alone. */
  memset(&cfg, 0, sizeof(cfg));
  assert_int_equal(config_load(conf, test_keys, TEST_KEY_COUNT, &cfg, err, sizeof(err)), 0);
  assert_int_equal(config_load_dropins(conf, test_keys, TEST_KEY_COUNT, &cfg, err,
                                       sizeof(err)), 0);
  assert_string_equal(cfg.name, "profile");
  config_free(test_keys, TEST_KEY_COUNT, &cfg);

  assert_int_equal(mkdir(dropdir, 0755), 0);
  /* Written in the opposite order to the names: the names decide. */
  write_file(late, "[main]\nname = store-0042\n");
  write_file(early, "[main]\nname = site\ncount = 5\n");
  write_file(hidden, "[main]\nname = editor-temporary\n");
  write_file(other, "[main]\nname = not-a-drop-in\n");
  memset(&cfg, 0, sizeof(cfg));
  assert_int_equal(config_load(conf, test_keys, TEST_KEY_COUNT, &cfg, err, sizeof(err)), 0);
  assert_int_equal(config_load_dropins(conf, test_keys, TEST_KEY_COUNT, &cfg, err,
                                       sizeof(err)), 0);
  assert_string_equal(cfg.name, "store-0042"); /* 50- over 10- over the profile */
  assert_int_equal(cfg.count, 5);              /* set by 10- only */
  assert_int_equal(cfg.interval_ms, 15 * 60 * 1000); /* nobody: the default */
  config_free(test_keys, TEST_KEY_COUNT, &cfg);

  write_file(bad, "[main]\n\ncount = 11\n");
  memset(&cfg, 0, sizeof(cfg));
  assert_int_equal(config_load(conf, test_keys, TEST_KEY_COUNT, &cfg, err, sizeof(err)), 0);
  assert_int_equal(config_load_dropins(conf, test_keys, TEST_KEY_COUNT, &cfg, err,
                                       sizeof(err)), -1);
  assert_non_null(strstr(err, "90-bad.conf:3: [main] count = \"11\": out of range"));
  config_free(test_keys, TEST_KEY_COUNT, &cfg);

  unlink(bad);
  unlink(early);
  unlink(late);
  unlink(hidden);
  unlink(other);
  rmdir(dropdir);
  unlink(conf);
  rmdir(dir);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(defaults_apply_when_keys_are_absent),
      cmocka_unit_test(every_type_parses),
      cmocka_unit_test(unknown_key_names_line_and_key),
      cmocka_unit_test(unknown_section_is_an_error),
      cmocka_unit_test(duration_without_unit_says_which_units),
      cmocka_unit_test(out_of_bounds_names_the_bounds),
      cmocka_unit_test(bad_values_are_errors),
      cmocka_unit_test(line_that_is_not_ini_is_an_error),
      cmocka_unit_test(line_too_long_is_an_error),
      cmocka_unit_test(continued_value_too_long_is_an_error),
      cmocka_unit_test(missing_file_says_so),
      cmocka_unit_test(example_lists_every_key_and_reloads),
      cmocka_unit_test(dropins_override_in_name_order_and_name_the_file_at_fault),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
