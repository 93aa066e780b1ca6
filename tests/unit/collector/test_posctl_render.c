/*
 * test_posctl_render.c - posctl's readable output: aligned tables, and the
 * admin API's answers (fixtures of its JSON shapes in posctl_fixtures/)
 * rendered for people, compared whole, at a fixed "now".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "posctl/format.h"
#include "posctl/render.h"
#include "posctl/table.h"

#define FIXTURES POS_SOURCE_DIR "/tests/unit/collector/posctl_fixtures/"

/* Every fixture's "now": 2026-11-26T03:20:00Z. */
#define NOW_MS INT64_C(1795663200000)

static json_t *fixture(const char *name)
{
  char path[512];
  json_error_t error;
  json_t *json;
  snprintf(path, sizeof(path), "%s%s", FIXTURES, name);
  json = json_load_file(path, JSON_REJECT_DUPLICATES, &error);
  if (!json)
    print_error("%s:%d:%d: %s\n", path, error.line, error.column, error.text);
  assert_non_null(json);
  return json;
}

/* An output stream into memory; `finish` returns what was written (caller frees). */
struct capture {
  char *text;
  size_t len;
  FILE *out;
};

static void capture_start(struct capture *c)
{
  c->text = NULL;
  c->len = 0;
  c->out = open_memstream(&c->text, &c->len);
  assert_non_null(c->out);
}

static char *capture_finish(struct capture *c)
{
  fclose(c->out);
  return c->text;
}

static void assert_text(const char *actual, const char *expected)
{
  if (strcmp(actual, expected) != 0)
    print_error("expected:\n%s\nactual:\n%s\n", expected, actual);
  assert_string_equal(actual, expected);
}

static void a_table_aligns_columns_and_leaves_no_trailing_blanks(void **state)
{
  static const struct posctl_column columns[] = {{"STORE", 0}, {"UNSENT", 1}, {"NOTE", 0}};
  struct capture c;
  posctl_table *table = posctl_table_create(columns, 3);
  char *text;
  (void)state;
  assert_int_equal(posctl_table_add(table, "S001"), 0);
  posctl_table_add(table, "3");
  posctl_table_add(table, "");
  posctl_table_add(table, "Zürich-Enge");
  posctl_table_addf(table, "%s", "12,345");
  posctl_table_add(table, "two words");
  posctl_table_add(table, "S3");
  assert_int_equal(posctl_table_rows(table), 3);
  capture_start(&c);
  posctl_table_print(table, c.out);
  text = capture_finish(&c);
  /* Widths count characters, so the UTF-8 name lines up; a missing cell is "-". */
  assert_text(text, "STORE        UNSENT  NOTE\n"
                    "S001              3  -\n"
                    "Zürich-Enge  12,345  two words\n"
                    "S3                -  -\n");
  free(text);
  posctl_table_destroy(table);
  posctl_table_destroy(NULL);
}

static void stores_show_contact_backlog_drift_cert_versions_resync_and_lag(void **state)
{
  json_t *answer = fixture("stores.json");
  struct capture c;
  char *text;
  (void)state;
  capture_start(&c);
  assert_int_equal(posctl_render_stores(c.out, answer, NOW_MS, 0), 0);
  text = capture_finish(&c);
  assert_text(text,
      "STORE  LAST CONTACT  DEVICES  UNSENT  OLDEST UNSENT  CLOCK DRIFT  CERT LEFT  AGENT"
      "        RESYNC       LAGGING\n"
      "S001            42s        2       3             2m        +2.5s        12d  0.1.0,0.2.0"
      "  running 61%  no\n"
      "S002             2h        1   1,312             2h          -1m    expired  0.1.0      "
      "  -            yes\n"
      "S003          never        0       -              -            -          -  -          "
      "  -            yes\n"
      "\n"
      "3 stores, 2 lagging\n");
  free(text);
  json_decref(answer);
}

static void stores_lagging_says_by_how_much_or_that_none_is(void **state)
{
  json_t *answer = json_pack("{s:s, s:[]}", "now", "2026-11-26T03:20:00Z", "stores");
  struct capture c;
  char *text;
  (void)state;
  capture_start(&c);
  assert_int_equal(posctl_render_stores(c.out, answer, NOW_MS, 1800), 0);
  text = capture_finish(&c);
  assert_text(text, "no store is lagging by 30m: every store was in contact and had nothing "
                    "unsent older than 30m\n");
  free(text);
  json_decref(answer);
  answer = fixture("stores.json");
  capture_start(&c);
  assert_int_equal(posctl_render_stores(c.out, answer, NOW_MS, 1800), 0);
  text = capture_finish(&c);
  assert_non_null(strstr(text, "\n3 stores lagging by 30m\n"));
  free(text);
  json_decref(answer);
}

static void stores_list_each_distinct_agent_version_once(void **state)
{
  json_t *answer = json_pack("{s:[{s:s, s:[{s:s}, {s:s}, {s:s}]}]}", "stores", "store_id", "S1",
                             "devices", "agent_version", "0.1.0-rc1", "agent_version", "0.1.0",
                             "agent_version", "0.1.0-rc1");
  struct capture c;
  char *text;
  (void)state;
  capture_start(&c);
  assert_int_equal(posctl_render_stores(c.out, answer, NOW_MS, 0), 0);
  text = capture_finish(&c);
  assert_non_null(strstr(text, "  0.1.0-rc1,0.1.0  "));
  free(text);
  json_decref(answer);
}

static void one_store_shows_each_device_and_its_commands(void **state)
{
  json_t *answer = fixture("store.json");
  struct capture c;
  char *text;
  (void)state;
  capture_start(&c);
  assert_int_equal(posctl_render_store(c.out, answer, NOW_MS), 0);
  text = capture_finish(&c);
  assert_text(text,
      "store            S001\n"
      "last contact     2026-11-26T03:19:18Z (42s ago)\n"
      "unsent sales     3 (oldest 2m)\n"
      "lagging          no\n"
      "open commands    1\n"
      "last resync      resync-20261126T031500Z-a1b2c3, running, sales replayed "
      "12,345/20,000 (61%)\n"
      "\n"
      "device till-1\n"
      "  last heartbeat   2026-11-26T03:19:18Z (42s ago)\n"
      "  last batch       2026-11-26T03:05:00Z (15m ago)\n"
      "  agent            0.1.0 (firmware 2026.10)\n"
      "  unsent sales     3 (oldest 2m)\n"
      "  journal          120,000 sales, last seq 250000, oldest sale 2026-08-28T00:00:00Z "
      "(older ones deleted)\n"
      "  clock drift      -150ms\n"
      "  certificate      expires 2027-09-23T00:00:00Z (301 days left)\n"
      "  disk free        1.5 GiB\n"
      "\n"
      "device till-2\n"
      "  last heartbeat   2026-11-26T03:18:00Z (2m ago)\n"
      "  last batch       none since the collector started\n"
      "  agent            0.2.0 (firmware 2026.11)\n"
      "  unsent sales     0\n"
      "  journal          8,000 sales, last seq 8000, oldest sale 2026-09-01T00:00:00Z\n"
      "  clock drift      +2.5s\n"
      "  certificate      expires 2026-12-08T00:00:00Z (12 days left)\n"
      "  disk free        500.0 MiB\n"
      "\n"
      "commands\n"
      "COMMAND                         STORE  KIND    STATE                      PROGRESS  RANGE"
      "                                       ISSUED  BY\n"
      "resync-20261126T031500Z-a1b2c3  S001   resync  running         12,345/20,000 (61%)  "
      "from 2026-11-01T00:00:00Z                   5m ago  alice\n"
      "resync-20261120T010000Z-beef99  S001   resync  done     1,250,000/1,250,000 (100%)  "
      "2026-10-01T00:00:00Z..2026-10-02T00:00:00Z  6d ago  bob\n");
  free(text);
  json_decref(answer);
}

static void a_device_without_a_heartbeat_says_what_is_not_known(void **state)
{
  json_t *answer = json_pack("{s:{s:s, s:s, s:i, s:[{s:s, s:n, s:s}]}}", "store", "store_id",
                             "S001", "last_contact", "2026-11-26T03:19:58Z", "unsent_sales", 0,
                             "devices", "device_id", "D1", "last_heartbeat", "last_batch",
                             "2026-11-26T03:19:58Z");
  struct capture c;
  char *text;
  (void)state;
  capture_start(&c);
  assert_int_equal(posctl_render_store(c.out, answer, NOW_MS), 0);
  text = capture_finish(&c);
  assert_text(text,
      "store            S001\n"
      "last contact     2026-11-26T03:19:58Z (2s ago)\n"
      "unsent sales     0\n"
      "lagging          no\n"
      "\n"
      "device D1\n"
      "  last heartbeat   never\n"
      "  last batch       2026-11-26T03:19:58Z (2s ago)\n"
      "  (no heartbeat since the collector started: versions, backlog and journal not known)\n");
  free(text);
  json_decref(answer);
}

static void commands_list_progress_range_and_who_newest_first(void **state)
{
  json_t *answer = fixture("commands.json");
  struct capture c;
  char *text;
  (void)state;
  capture_start(&c);
  assert_int_equal(posctl_render_commands(c.out, json_object_get(answer, "commands"), NOW_MS,
                                          "none"), 0);
  text = capture_finish(&c);
  assert_text(text,
      "COMMAND                           STORE  KIND      STATE                      PROGRESS  "
      "RANGE                                       ISSUED  BY\n"
      "push-now-20261126T031900Z-cafe01  S002   push-now  pending                           -  "
      "-                                           1m ago  alice\n"
      "resync-20261126T031500Z-a1b2c3    S001   resync    running         12,345/20,000 (61%)  "
      "from 2026-11-01T00:00:00Z                   5m ago  alice\n"
      "resync-20261120T010000Z-beef99    S001   resync    done     1,250,000/1,250,000 (100%)  "
      "2026-10-01T00:00:00Z..2026-10-02T00:00:00Z  6d ago  bob\n");
  free(text);
  json_decref(answer);
}

static void no_commands_prints_the_message_not_an_empty_table(void **state)
{
  json_t *empty = json_array();
  struct capture c;
  char *text;
  (void)state;
  capture_start(&c);
  assert_int_equal(posctl_render_commands(c.out, empty, NOW_MS, "no open commands"), 0);
  text = capture_finish(&c);
  assert_text(text, "no open commands\n");
  free(text);
  json_decref(empty);
}

static void an_incomplete_resync_says_what_history_is_missing_per_device(void **state)
{
  json_t *command = fixture("command_incomplete.json");
  struct capture c;
  char *text;
  (void)state;
  capture_start(&c);
  assert_int_equal(posctl_render_command(c.out, command, NOW_MS), 0);
  text = capture_finish(&c);
  assert_text(text,
      "command          resync-20261125T220000Z-0f0f0f\n"
      "store            S002\n"
      "kind             resync\n"
      "range            from 2026-06-01T00:00:00Z to 2026-09-01T00:00:00Z\n"
      "state            incomplete\n"
      "sales replayed   4,100/4,100 (100%)\n"
      "issued           2026-11-25T22:00:00Z (5h ago) by bob\n"
      "updated          2026-11-25T22:40:00Z (4h ago) by device:D1\n"
      "targets          D1\n"
      "message          sales before 2026-08-28T00:00:00Z are no longer on device D1\n"
      "\n"
      "DEVICE  STATE       REPLAYED  TOTAL  AVAILABLE FROM        UPDATED  MESSAGE\n"
      "D1      incomplete     4,100  4,100  2026-08-28T00:00:00Z   4h ago  sales before "
      "2026-08-28T00:00:00Z are no longer on device D1 (deleted after 90 days' retention); "
      "replayed 2026-08-28T00:00:00Z to 2026-09-01T00:00:00Z\n");
  free(text);
  json_decref(command);
}

static void a_running_resync_without_an_end_says_up_to_the_newest_sale(void **state)
{
  json_t *command = fixture("command_running.json");
  struct capture c;
  char *text;
  (void)state;
  capture_start(&c);
  assert_int_equal(posctl_render_command(c.out, command, NOW_MS), 0);
  text = capture_finish(&c);
  assert_non_null(strstr(text, "range            from 2026-11-01T00:00:00Z to the newest sale "
                               "when the device starts it\n"));
  assert_non_null(strstr(text, "sales replayed   12,345/20,000 (61%)\n"));
  assert_non_null(strstr(text, "till-1  running    12,345  15,000  -               30s ago  -\n"));
  free(text);
  json_decref(command);
}

static void missing_fields_show_as_dashes_and_a_wrong_answer_is_refused(void **state)
{
  json_t *sparse = json_pack("{s:s, s:[{s:s}]}", "now", "2026-11-26T03:20:00Z", "stores",
                             "store_id", "S9");
  json_t *not_stores = json_pack("{s:[]}", "commands");
  struct capture c;
  char *text;
  (void)state;
  capture_start(&c);
  assert_int_equal(posctl_render_stores(c.out, sparse, NOW_MS, 0), 0);
  assert_int_equal(posctl_render_stores(c.out, not_stores, NOW_MS, 0), -1);
  assert_int_equal(posctl_render_store(c.out, not_stores, NOW_MS), -1);
  assert_int_equal(posctl_render_command(c.out, NULL, NOW_MS), -1);
  assert_int_equal(posctl_render_commands(c.out, not_stores, NOW_MS, "none"), -1);
  text = capture_finish(&c);
  assert_non_null(strstr(text, "S9            never        0       -              -            -"
                               "          -  -      -       no\n"));
  free(text);
  json_decref(sparse);
  json_decref(not_stores);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_table_aligns_columns_and_leaves_no_trailing_blanks),
      cmocka_unit_test(stores_show_contact_backlog_drift_cert_versions_resync_and_lag),
      cmocka_unit_test(stores_lagging_says_by_how_much_or_that_none_is),
      cmocka_unit_test(stores_list_each_distinct_agent_version_once),
      cmocka_unit_test(one_store_shows_each_device_and_its_commands),
      cmocka_unit_test(a_device_without_a_heartbeat_says_what_is_not_known),
      cmocka_unit_test(commands_list_progress_range_and_who_newest_first),
      cmocka_unit_test(no_commands_prints_the_message_not_an_empty_table),
      cmocka_unit_test(an_incomplete_resync_says_what_history_is_missing_per_device),
      cmocka_unit_test(a_running_resync_without_an_end_says_up_to_the_newest_sale),
      cmocka_unit_test(missing_fields_show_as_dashes_and_a_wrong_answer_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
