/*
 * test_admin_input.c - what the admin API takes as a time and a duration
 * (server/admin.h): RFC 3339 with Z or an offset, fractions, plain dates;
 * and what it refuses, so that a typo never becomes a resync from 1970.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "server/admin.h"

static void times_in_utc_offsets_and_dates(void **state)
{
  int64_t ms = -1;
  (void)state;
  assert_int_equal(admin_parse_time("1970-01-01", &ms), 0);
  assert_int_equal(ms, 0);
  assert_int_equal(admin_parse_time("2026-11-26T03:00:00Z", &ms), 0);
  assert_int_equal(ms, 1795662000000LL);
  assert_int_equal(admin_parse_time("2026-11-26T04:00:00+01:00", &ms), 0);
  assert_int_equal(ms, 1795662000000LL);
  assert_int_equal(admin_parse_time("2026-11-25T22:30:00-04:30", &ms), 0);
  assert_int_equal(ms, 1795662000000LL);
  assert_int_equal(admin_parse_time("2026-11-26T03:00:00.25Z", &ms), 0);
  assert_int_equal(ms, 1795662000250LL);
  assert_int_equal(admin_parse_time("2024-02-29", &ms), 0);
  assert_int_equal(ms, 1709164800000LL);
  assert_int_equal(admin_parse_time("2026-11-26T03:00Z", &ms), 0);
  assert_int_equal(ms, 1795662000000LL);
}

static void times_without_a_zone_or_malformed_are_refused(void **state)
{
  int64_t ms = 0;
  const char *bad[] = {"",          "yesterday",           "2026-11-26T03:00:00",
                       "2026-13-01", "2026-11-26T25:00:00Z", "2026-11-26T03:00:00+1",
                       "26-11-2026", "2026-11-26Z",          "2026-11-26T03:00:00Zjunk",
                       "1969-12-31", "2026-11-26T03:00:00.Z", "2026-02-29",
                       "2026-04-31"};
  (void)state;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    if (admin_parse_time(bad[i], &ms) != -1)
      fail_msg("\"%s\" was taken as a time (%lld)", bad[i], (long long)ms);
  }
  assert_int_equal(admin_parse_time(NULL, &ms), -1);
}

static void durations_with_units(void **state)
{
  int64_t ms = 0;
  (void)state;
  assert_int_equal(admin_parse_duration("90s", &ms), 0);
  assert_int_equal(ms, 90000);
  assert_int_equal(admin_parse_duration("30m", &ms), 0);
  assert_int_equal(ms, 1800000);
  assert_int_equal(admin_parse_duration("2h", &ms), 0);
  assert_int_equal(ms, 7200000);
  assert_int_equal(admin_parse_duration("7d", &ms), 0);
  assert_int_equal(ms, 604800000);
  assert_int_equal(admin_parse_duration("45", &ms), 0);
  assert_int_equal(ms, 45000);
  assert_int_equal(admin_parse_duration("soon", &ms), -1);
  assert_int_equal(admin_parse_duration("30x", &ms), -1);
  assert_int_equal(admin_parse_duration("-5m", &ms), -1);
  assert_int_equal(admin_parse_duration("", &ms), -1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(times_in_utc_offsets_and_dates),
      cmocka_unit_test(times_without_a_zone_or_malformed_are_refused),
      cmocka_unit_test(durations_with_units),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
