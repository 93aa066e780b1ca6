/*
 * test_posctl_format.c - what head office types into posctl (times,
 * durations) and what it reads back (ages, counts, sizes, drifts, the
 * progress bar of resync --wait).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "posctl/format.h"

static int64_t time_of(const char *text)
{
  char err[256] = "";
  int64_t ms = -1;
  int rc = posctl_parse_time(text, &ms, err, sizeof(err));
  if (rc)
    print_error("posctl_parse_time(\"%s\"): %s\n", text, err);
  assert_int_equal(rc, 0);
  return ms;
}

static void refused_time(const char *text, const char *reason)
{
  char err[256] = "";
  int64_t ms = 0;
  assert_int_equal(posctl_parse_time(text, &ms, err, sizeof(err)), -1);
  if (!strstr(err, reason))
    print_error("error for \"%s\": \"%s\" lacks \"%s\"\n", text, err, reason);
  assert_non_null(strstr(err, reason));
}

static void a_date_alone_is_midnight_utc(void **state)
{
  (void)state;
  /* 2026-11-01T00:00:00Z = 1793491200 s since the epoch. */
  assert_int_equal(time_of("2026-11-01"), INT64_C(1793491200000));
  assert_int_equal(time_of("2026-11-01T00:00:00Z"), INT64_C(1793491200000));
  assert_int_equal(time_of("2026-11-01 00:00Z"), INT64_C(1793491200000));
}

static void an_offset_is_taken_back_to_utc(void **state)
{
  (void)state;
  assert_int_equal(time_of("2026-11-26T04:00:00+01:00"), time_of("2026-11-26T03:00:00Z"));
  assert_int_equal(time_of("2026-11-25T22:30:00-04:30"), time_of("2026-11-26T03:00:00Z"));
  assert_int_equal(time_of("2026-11-26T03:00:00.250Z") - time_of("2026-11-26T03:00:00Z"), 250);
  assert_int_equal(time_of("2024-02-29"), time_of("2024-02-28") + 86400000);
}

static void a_time_without_zone_or_a_wrong_date_is_refused_saying_why(void **state)
{
  (void)state;
  refused_time("2026-11-26T03:00:00", "needs a zone: add Z for UTC");
  refused_time("2026-11-26T03:00", "needs a zone");
  refused_time("2026-02-29", "no such date");
  refused_time("2026-13-01", "no such date");
  refused_time("2026-11-26T24:00:00Z", "out of range");
  refused_time("yesterday", "is not a time");
  refused_time("2026-11-26Z", "is not a time");
  refused_time("2026-11-26T03:00:00Zjunk", "unexpected text");
  refused_time("", "is not a time");
}

static void times_are_written_rfc3339_utc(void **state)
{
  char out[POSCTL_TEXT_MAX];
  (void)state;
  assert_string_equal(posctl_format_time(time_of("2026-11-26T04:15:00+01:00"), out, sizeof(out)),
                      "2026-11-26T03:15:00Z");
  assert_string_equal(posctl_format_time(time_of("2026-11-26T03:15:00.007Z"), out, sizeof(out)),
                      "2026-11-26T03:15:00.007Z");
}

static int64_t seconds_of(const char *text)
{
  char err[256] = "";
  int64_t seconds = -1;
  int rc = posctl_parse_duration(text, &seconds, err, sizeof(err));
  if (rc)
    print_error("posctl_parse_duration(\"%s\"): %s\n", text, err);
  assert_int_equal(rc, 0);
  return seconds;
}

static void durations_need_a_unit(void **state)
{
  char err[256], out[POSCTL_TEXT_MAX];
  int64_t seconds;
  (void)state;
  assert_int_equal(seconds_of("30m"), 1800);
  assert_int_equal(seconds_of("1h30m"), 5400);
  assert_int_equal(seconds_of("4d"), 345600);
  assert_int_equal(seconds_of("45s"), 45);
  assert_int_equal(posctl_parse_duration("30", &seconds, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "needs a unit: s, m, h or d"));
  assert_int_equal(posctl_parse_duration("0m", &seconds, err, sizeof(err)), -1);
  assert_int_equal(posctl_parse_duration("-5m", &seconds, err, sizeof(err)), -1);
  assert_int_equal(posctl_parse_duration("5 m", &seconds, err, sizeof(err)), -1);
  assert_int_equal(posctl_parse_duration("5w", &seconds, err, sizeof(err)), -1);
  assert_int_equal(posctl_parse_duration("", &seconds, err, sizeof(err)), -1);
  assert_int_equal(posctl_parse_duration("99999999999999d", &seconds, err, sizeof(err)), -1);
  /* Sent to the API in its largest exact unit. */
  assert_string_equal(posctl_format_duration(1800, out, sizeof(out)), "30m");
  assert_string_equal(posctl_format_duration(5400, out, sizeof(out)), "90m");
  assert_string_equal(posctl_format_duration(90, out, sizeof(out)), "90s");
  assert_string_equal(posctl_format_duration(86400, out, sizeof(out)), "1d");
  assert_string_equal(posctl_format_duration(7200, out, sizeof(out)), "2h");
}

static void ages_are_one_unit_rounded_down(void **state)
{
  char out[POSCTL_TEXT_MAX];
  (void)state;
  assert_string_equal(posctl_format_age(0, out, sizeof(out)), "0s");
  assert_string_equal(posctl_format_age(59, out, sizeof(out)), "59s");
  assert_string_equal(posctl_format_age(60, out, sizeof(out)), "1m");
  assert_string_equal(posctl_format_age(3599, out, sizeof(out)), "59m");
  assert_string_equal(posctl_format_age(7200, out, sizeof(out)), "2h");
  assert_string_equal(posctl_format_age(4 * 86400 + 3600, out, sizeof(out)), "4d");
  /* Clocks apart: never a negative age. */
  assert_string_equal(posctl_format_age(-5, out, sizeof(out)), "0s");
}

static void counts_have_thousands_separators(void **state)
{
  char out[POSCTL_TEXT_MAX];
  (void)state;
  assert_string_equal(posctl_format_count(0, out, sizeof(out)), "0");
  assert_string_equal(posctl_format_count(999, out, sizeof(out)), "999");
  assert_string_equal(posctl_format_count(1000, out, sizeof(out)), "1,000");
  assert_string_equal(posctl_format_count(12345, out, sizeof(out)), "12,345");
  assert_string_equal(posctl_format_count(1234567, out, sizeof(out)), "1,234,567");
  assert_string_equal(posctl_format_count(-20000, out, sizeof(out)), "-20,000");
  assert_string_equal(posctl_format_count(INT64_MIN, out, sizeof(out)),
                      "-9,223,372,036,854,775,808");
}

static void sizes_drifts_and_etas_read_like_people_say_them(void **state)
{
  char out[POSCTL_TEXT_MAX];
  (void)state;
  assert_string_equal(posctl_format_bytes(512, out, sizeof(out)), "512 B");
  assert_string_equal(posctl_format_bytes(1536, out, sizeof(out)), "1.5 KiB");
  assert_string_equal(posctl_format_bytes(INT64_C(1610612736), out, sizeof(out)), "1.5 GiB");
  assert_string_equal(posctl_format_drift(0, out, sizeof(out)), "+0ms");
  assert_string_equal(posctl_format_drift(-150, out, sizeof(out)), "-150ms");
  assert_string_equal(posctl_format_drift(2500, out, sizeof(out)), "+2.5s");
  assert_string_equal(posctl_format_drift(-61000, out, sizeof(out)), "-1m");
  assert_string_equal(posctl_format_eta(42, out, sizeof(out)), "0:42");
  assert_string_equal(posctl_format_eta(725, out, sizeof(out)), "12:05");
  assert_string_equal(posctl_format_eta(3723, out, sizeof(out)), "1:02:03");
}

static void the_progress_bar_shows_counts_percent_and_eta(void **state)
{
  char out[POSCTL_PROGRESS_MAX];
  (void)state;
  assert_string_equal(posctl_progress_line("running", 12345, 20000, 42, out, sizeof(out)),
                      "[############........] 12,345/20,000 sales 61% ETA 0:42");
  assert_string_equal(posctl_progress_line("running", 0, 20000, -1, out, sizeof(out)),
                      "[....................] 0/20,000 sales 0% ETA -");
  /* Once finished, the state instead of a time left. */
  assert_string_equal(posctl_progress_line("done", 20000, 20000, -1, out, sizeof(out)),
                      "[####################] 20,000/20,000 sales 100% done");
  assert_string_equal(posctl_progress_line("incomplete", 4100, 4100, -1, out, sizeof(out)),
                      "[####################] 4,100/4,100 sales 100% incomplete");
  /* A device that counted fewer than it then sent never draws past the end. */
  assert_string_equal(posctl_progress_line("running", 25000, 20000, 0, out, sizeof(out)),
                      "[####################] 25,000/20,000 sales 100% ETA 0:00");
  /* Before the device has counted the range: the state, no made-up total. */
  assert_string_equal(posctl_progress_line("pending", 0, 0, -1, out, sizeof(out)),
                      "[....................] 0 sales, pending: waiting for the store's device");
  assert_string_equal(posctl_progress_line("running", 0, 0, -1, out, sizeof(out)),
                      "[....................] 0 sales, running");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_date_alone_is_midnight_utc),
      cmocka_unit_test(an_offset_is_taken_back_to_utc),
      cmocka_unit_test(a_time_without_zone_or_a_wrong_date_is_refused_saying_why),
      cmocka_unit_test(times_are_written_rfc3339_utc),
      cmocka_unit_test(durations_need_a_unit),
      cmocka_unit_test(ages_are_one_unit_rounded_down),
      cmocka_unit_test(counts_have_thousands_separators),
      cmocka_unit_test(sizes_drifts_and_etas_read_like_people_say_them),
      cmocka_unit_test(the_progress_bar_shows_counts_percent_and_eta),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
