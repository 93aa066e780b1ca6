/*
 * backoff.h - retry delays: exponential with jitter between a floor and a
 * cap, Retry-After taken as a minimum with jitter on top, and the random
 * jitter of push intervals, so that 2,000 stores that lost the collector at
 * the same moment (or were all told "Retry-After: 30" by it) do not come
 * back in step. No delay handed out here is a fixed number.
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
 * try: with ceiling = min(max, min * 2^(failures-1)), uniform in
 * [ceiling / 2, ceiling] ("equal jitter"): the first retry lands in
 * [min/2, min], every later one is spread too, and the delays still grow
 * with each consecutive failure. Never 0.
 */
uint64_t backoff_next(struct backoff *b);

/*
 * A failure with the server's Retry-After (`retry_after_ms`; 0 = none or
 * "0"): counts it like backoff_next and returns at least retry_after_ms,
 * plus a random part of up to half of it, and never less than what
 * backoff_next would have said, so consecutive busy answers keep backing
 * off further.
 */
uint64_t backoff_after(struct backoff *b, uint64_t retry_after_ms);

/*
 * A failure a person must fix: counts it and returns the cap plus a random
 * part of up to a quarter of it (retries of such batches are rare, but
 * must not arrive in step either).
 */
uint64_t backoff_at_cap(struct backoff *b);

/* After a success: the next failure starts from the floor again. */
void backoff_reset(struct backoff *b);

/* Uniform in [0, bound]. */
uint64_t backoff_random(struct backoff *b, uint64_t bound);

#endif
