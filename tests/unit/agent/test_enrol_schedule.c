/*
 * test_enrol_schedule.c - when the device renews (agent/enrol/enrol.h):
 * at two thirds of the lifetime with a spread that keeps 2,000 devices
 * enrolled the same day apart, never faster than the floor after a
 * failure, backing off to the cap, still trying before expiry, and an
 * expired certificate told apart.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "enrol/enrol.h"

#define DAY 86400
#define T0 1795000000 /* a notBefore, seconds since the epoch */

static struct enrol_schedule_policy policy;

static int setup(void **state)
{
  (void)state;
  enrol_schedule_defaults(&policy);
  return 0;
}

static int64_t next_at(int64_t nb, int64_t na, int64_t now, uint64_t seed, unsigned failures,
                       int64_t last)
{
  int64_t next = 0;
  assert_int_equal(enrol_schedule_next(&policy, nb, na, now, seed, failures, last, &next),
                   ENROL_SCHEDULE_WAIT);
  return next;
}

/* The test lifetime: two minutes, renewal at about 80 s (2/3,
 * spread by 10% of 120 s: 74..86 s), for any device. */
static void a_two_minute_certificate_renews_at_about_80_s(void **state)
{
  char device[16];
  (void)state;
  policy.floor_s = 10;
  for (int i = 0; i < 200; i++) {
    int64_t next;
    snprintf(device, sizeof(device), "D%d", i);
    next = next_at(T0, T0 + 120, T0 + 1, enrol_schedule_seed("S001", device), 0, 0);
    if (next < T0 + 74 || next > T0 + 86)
      fail_msg("device %s renews at %lld s", device, (long long)(next - T0));
  }
}

/* A one-year certificate: two thirds of the year, spread by at most the
 * 7-day cap (not 10% of a year), the same answer for the same inputs. */
static void a_year_certificate_renews_at_two_thirds(void **state)
{
  int64_t na = T0 + 365 * DAY, target = T0 + (365 * DAY * 2) / 3, next;
  uint64_t seed = enrol_schedule_seed("S0042", "till-1");
  (void)state;
  next = next_at(T0, na, T0 + DAY, seed, 0, 0);
  assert_true(next >= target - 7 * DAY / 2 - 1 && next <= target + 7 * DAY / 2 + 1);
  assert_int_equal(next_at(T0, na, T0 + DAY, seed, 0, 0), next);
  /* Past the renewal time (the device was off): now. */
  assert_int_equal(next_at(T0, na, target + 8 * DAY, seed, 0, 0), target + 8 * DAY);
}

/* 2,000 stores enrolled in the same minute: their renewals spread over the
 * week of jitter, no minute with more than a handful. Without the jitter
 * all 2,000 would fall in one minute. */
static void two_thousand_devices_enrolled_together_spread_out(void **state)
{
  enum { DEVICES = 2000, MINUTES = 7 * 24 * 60 };
  static unsigned short per_minute[MINUTES + 2];
  int64_t na = T0 + 365 * DAY, low = INT64_MAX, high = 0;
  int64_t start = T0 + (365 * DAY * 2) / 3 - 7 * DAY / 2;
  unsigned busiest = 0;
  char store[16];

  (void)state;
  memset(per_minute, 0, sizeof(per_minute));
  for (int i = 0; i < DEVICES; i++) {
    int64_t next;
    snprintf(store, sizeof(store), "S%04d", i);
    next = next_at(T0 + i % 60, na + i % 60, T0 + 3600, enrol_schedule_seed(store, "D1"), 0, 0);
    low = next < low ? next : low;
    high = next > high ? next : high;
    assert_true(next >= start - 60 && next - start < (int64_t)MINUTES * 60 + 60);
    per_minute[(next - start + 60) / 60]++;
  }
  for (int m = 0; m < MINUTES + 2; m++)
    busiest = per_minute[m] > busiest ? per_minute[m] : busiest;
  if (high - low < 6 * DAY || busiest > 6)
    fail_msg("renewals span %lld s, busiest minute %u devices", (long long)(high - low), busiest);
}

/* Failures back off from the floor, doubling, up to the 6 h cap, never
 * sooner than now + floor; with the seed's tenth on top (capped). */
static void failures_back_off_from_the_floor_to_the_cap(void **state)
{
  int64_t na = T0 + 365 * DAY, now = T0 + 250 * DAY, previous = 0;
  uint64_t seed = enrol_schedule_seed("S0001", "D1");
  (void)state;
  for (unsigned failures = 1; failures <= 12; failures++) {
    int64_t delay = next_at(T0, na, now, seed, failures, now) - now;
    int64_t plain = failures >= 7 ? 6 * 3600 : (int64_t)600 << (failures - 1);
    if (delay < plain || delay > plain + plain / 10 || delay > 6 * 3600 || delay < previous)
      fail_msg("after %u failures: %lld s", failures, (long long)delay);
    previous = delay;
  }
  /* The last attempt long ago (the device was off): due now. */
  assert_int_equal(next_at(T0, na, now, seed, 1, now - 5000), now);
}

/* A failed renewal is tried again when the time it was given comes: asked
 * again at that time (as the driver's timer does), the schedule says "now".
 * It said "now + floor" each time it was asked, so a renewal that failed
 * once was never tried again. */
static void a_failed_renewal_is_retried_when_its_time_comes(void **state)
{
  int64_t now = T0 + 20 * DAY, na = T0 + 30 * DAY;
  (void)state;
  for (unsigned failures = 1; failures < 12; failures++) {
    int64_t last = now, next = next_at(T0, na, now, 5, failures, last);
    assert_true(next > now);
    assert_int_equal(next_at(T0, na, next, 5, failures, last), next);
    now = next;
  }
  /* Near the expiry too (the halfway rule). */
  na = now + 3000;
  assert_int_equal(next_at(T0, na, now + 1500, 5, 9, now), now + 1500);
}

/* After a failure the next attempt is never before the last attempt +
 * floor, even when the certificate is about to expire or the floor is long. */
static void never_faster_than_the_floor_after_a_failure(void **state)
{
  int64_t now = T0 + 1000;
  (void)state;
  for (unsigned failures = 1; failures < 40; failures++) {
    for (int64_t left = 1; left < 4 * DAY; left = left * 3 + 7) {
      int64_t next = next_at(T0, now + left, now, 7, failures, now - 1);
      assert_true(next >= now - 1 + policy.floor_s);
    }
  }
  /* And without failures, a floor after the last attempt too, even when
   * it reaches the expiry: the floor is what stops a loop. */
  assert_int_equal(next_at(T0, T0 + 3000, T0 + 2500, 7, 0, T0 + 2400), T0 + 3000);
  assert_int_equal(next_at(T0, T0 + 30 * DAY, T0 + 25 * DAY, 7, 0, T0 + 25 * DAY - 60),
                   T0 + 25 * DAY - 60 + 600);
}

/* A back-off that would pass the expiry tries before it instead. */
static void a_failing_device_still_tries_before_expiry(void **state)
{
  int64_t now = T0 + 300 * DAY, na = now + 3600, next;
  (void)state;
  next = next_at(T0, na, now, 99, 9, now); /* back-off would be 6 h */
  assert_int_equal(next, now + 1800);     /* halfway from the last attempt */
  assert_true(next < na);
  assert_true(next >= now + policy.floor_s);
}

/* Expired: it cannot renew itself; a certificate that is never valid has
 * no schedule. */
static void an_expired_certificate_needs_a_new_token(void **state)
{
  int64_t next = 0;
  (void)state;
  assert_int_equal(enrol_schedule_next(&policy, T0, T0 + 120, T0 + 120, 1, 0, 0, &next),
                   ENROL_SCHEDULE_EXPIRED);
  assert_int_equal(next, T0 + 120);
  assert_int_equal(enrol_schedule_next(&policy, T0, T0 + 120, T0 + 9999, 1, 5, T0, &next),
                   ENROL_SCHEDULE_EXPIRED);
  assert_int_equal(enrol_schedule_next(&policy, T0, T0, T0, 1, 0, 0, &next),
                   ENROL_SCHEDULE_INVALID);
  assert_int_not_equal(enrol_schedule_seed("S1", "D12"), enrol_schedule_seed("S1D", "12"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(a_two_minute_certificate_renews_at_about_80_s, setup),
      cmocka_unit_test_setup(a_year_certificate_renews_at_two_thirds, setup),
      cmocka_unit_test_setup(two_thousand_devices_enrolled_together_spread_out, setup),
      cmocka_unit_test_setup(failures_back_off_from_the_floor_to_the_cap, setup),
      cmocka_unit_test_setup(a_failed_renewal_is_retried_when_its_time_comes, setup),
      cmocka_unit_test_setup(never_faster_than_the_floor_after_a_failure, setup),
      cmocka_unit_test_setup(a_failing_device_still_tries_before_expiry, setup),
      cmocka_unit_test_setup(an_expired_certificate_needs_a_new_token, setup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
