/*
 * backoff.h - retry delays: exponential with full jitter between a floor
 * and a cap, and the random jitter of push intervals, so that 2,000 stores
 * that lost the collector at the same moment do not come back in step.
 */
#ifndef AGENT_UPLINK_BACKOFF_H
#define AGENT_UPLINK_BACKOFF_H

#include <stdint.h>

struct backoff {
  uint64_t min_ms;
  uint64_t max_ms;
  unsigned failures; /* consecutive, since the last reset */
  uint64_t rng;      /* xorshift state; never 0 */
};

/* Sets the bounds (max below min is raised to min) and seeds the generator
 * from the kernel (or `seed` when not 0, for tests). */
void backoff_init(struct backoff *b, uint64_t min_ms, uint64_t max_ms, uint64_t seed);

/*
 * Counts one more failure and returns how long to wait before the next
 * try: uniform in [min, min(max, min * 2^(failures-1))], i.e. "full
 * jitter" above the floor.
 */
uint64_t backoff_next(struct backoff *b);

/* After a success: the next failure starts from the floor again. */
void backoff_reset(struct backoff *b);

/* Uniform in [0, bound]. */
uint64_t backoff_random(struct backoff *b, uint64_t bound);

#endif
