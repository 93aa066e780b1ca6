/*
 * enrol_schedule.c - when the device renews its certificate: a pure
 * function of the certificate's validity, the clock and the failures so
 * far; see enrol.h.
 */
#include "enrol/enrol.h"

#define SCHEDULE_DAY_S 86400

/* See enrol.h. */
void enrol_schedule_defaults(struct enrol_schedule_policy *policy)
{
  policy->renew_at = 2.0 / 3.0;
  policy->jitter = 0.10;
  policy->jitter_cap_s = 7 * SCHEDULE_DAY_S;
  policy->floor_s = 600;
  policy->backoff_cap_s = 6 * 3600;
}

/* A well-mixed 64-bit value from `x` (splitmix64's finaliser). */
static uint64_t schedule_mix(uint64_t x)
{
  x += 0x9e3779b97f4a7c15u;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
  return x ^ (x >> 31);
}

/* A number in [0, 1) drawn from the device's seed and what it is for. */
static double schedule_draw(uint64_t seed, uint64_t salt)
{
  return (double)(schedule_mix(seed ^ schedule_mix(salt)) >> 11) * (1.0 / 9007199254740992.0);
}

/* See enrol.h. FNV-1a over "<store>/<device>". */
uint64_t enrol_schedule_seed(const char *store_id, const char *device_id)
{
  uint64_t hash = 0xcbf29ce484222325u;

  for (const char *p = store_id; *p; p++)
    hash = (hash ^ (unsigned char)*p) * 0x100000001b3u;
  hash = (hash ^ '/') * 0x100000001b3u;
  for (const char *p = device_id; *p; p++)
    hash = (hash ^ (unsigned char)*p) * 0x100000001b3u;
  return hash;
}

/* The delay after `failures` failures in a row: the floor doubled each
 * time up to the cap, plus up to a tenth from the seed (still capped). */
static int64_t schedule_backoff(const struct enrol_schedule_policy *policy, uint64_t seed,
                                unsigned failures)
{
  int64_t delay = policy->floor_s > 0 ? policy->floor_s : 1;

  for (unsigned i = 1; i < failures && delay < policy->backoff_cap_s; i++)
    delay *= 2;
  if (delay > policy->backoff_cap_s)
    delay = policy->backoff_cap_s;
  /* A fleet that failed together (a collector outage) spreads its retries. */
  delay += (int64_t)((double)delay * 0.1 * schedule_draw(seed, 0x6261636bu + failures));
  if (delay > policy->backoff_cap_s)
    delay = policy->backoff_cap_s;
  return delay;
}

/* See enrol.h. */
enum enrol_schedule_state enrol_schedule_next(const struct enrol_schedule_policy *policy,
                                              int64_t not_before, int64_t not_after,
                                              int64_t now_s, uint64_t seed, unsigned failures,
                                              int64_t last_attempt_s, int64_t *next_s)
{
  int64_t lifetime, next;
  double spread;

  if (not_after <= not_before) {
    *next_s = now_s;
    return ENROL_SCHEDULE_INVALID;
  }
  /* An expired certificate cannot authenticate its own re-enrolment:
   * only a new enrolment token can bring the device back. */
  if (now_s >= not_after) {
    *next_s = not_after;
    return ENROL_SCHEDULE_EXPIRED;
  }
  lifetime = not_after - not_before;
  if (failures == 0) {
    spread = (double)lifetime * policy->jitter;
    if (spread > (double)policy->jitter_cap_s)
      spread = (double)policy->jitter_cap_s;
    /* not_before in the draw: each certificate of the device gets its own
     * place, so two devices that collide once do not collide for ever. */
    next = not_before + (int64_t)((double)lifetime * policy->renew_at +
                                  (schedule_draw(seed, (uint64_t)not_before) - 0.5) * spread);
    if (next >= not_after)
      next = not_after - 1;
    if (next < not_before)
      next = not_before;
    if (last_attempt_s > 0 && next < last_attempt_s + policy->floor_s)
      next = last_attempt_s + policy->floor_s;
    if (next < now_s)
      next = now_s;
  } else {
    /* Everything counts from the last attempt, never from now: the driver
     * asks again when the time it was given comes, and a time counted from
     * now would move away each time it is asked (the retry never came). */
    int64_t last = last_attempt_s > 0 ? last_attempt_s : now_s;
    int64_t floor_s = policy->floor_s > 0 ? policy->floor_s : 1;
    next = last + schedule_backoff(policy, seed, failures);
    /* A back-off that would pass the expiry tries halfway there instead,
     * so a device that keeps failing still has chances before it expires. */
    if (next >= not_after)
      next = last + (not_after - last) / 2;
    /* Never faster than the floor after a failure, whatever the above. */
    if (next < last + floor_s)
      next = last + floor_s;
    /* Due already (the device was off since): now. */
    if (next < now_s)
      next = now_s;
  }
  *next_s = next;
  return ENROL_SCHEDULE_WAIT;
}
