/*
 * backoff.c - exponential backoff with jitter, Retry-After with jitter.
 */
#include "uplink/backoff.h"

#include <sys/random.h>
#include <time.h>

void backoff_init(struct backoff *b, uint64_t min_ms, uint64_t max_ms, uint64_t seed)
{
  b->min_ms = min_ms;
  b->max_ms = max_ms < min_ms ? min_ms : max_ms;
  b->failures = 0;
  b->rng = seed;
  if (!b->rng && getrandom(&b->rng, sizeof(b->rng), GRND_NONBLOCK) != (ssize_t)sizeof(b->rng)) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    b->rng = (uint64_t)ts.tv_nsec * 6364136223846793005ULL ^ (uint64_t)ts.tv_sec;
  }
  if (!b->rng)
    b->rng = 0x9e3779b97f4a7c15ULL;
}

uint64_t backoff_random(struct backoff *b, uint64_t bound)
{
  /* xorshift64*: plenty for spreading retries; nothing secret depends on it. */
  uint64_t x = b->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  b->rng = x;
  x *= 2685821657736338717ULL;
  if (bound == UINT64_MAX)
    return x;
  return x % (bound + 1);
}

uint64_t backoff_next(struct backoff *b)
{
  uint64_t ceiling = b->min_ms;
  for (unsigned i = 0; i < b->failures && ceiling < b->max_ms; i++)
    ceiling = ceiling > b->max_ms / 2 ? b->max_ms : ceiling * 2;
  if (ceiling > b->max_ms)
    ceiling = b->max_ms;
  if (ceiling < 2)
    ceiling = 2;
  if (b->failures < 64)
    b->failures++;
  /* Half fixed, half random: the fixed half keeps the growth, the random
   * half spreads stores that failed together, from the first retry on. */
  return ceiling - ceiling / 2 + backoff_random(b, ceiling / 2);
}

uint64_t backoff_after(struct backoff *b, uint64_t retry_after_ms)
{
  uint64_t backoff_ms = backoff_next(b);
  uint64_t delay = retry_after_ms + backoff_random(b, retry_after_ms / 2);
  return delay > backoff_ms ? delay : backoff_ms;
}

uint64_t backoff_at_cap(struct backoff *b)
{
  backoff_next(b);
  return b->max_ms + backoff_random(b, b->max_ms / 4);
}

void backoff_reset(struct backoff *b) { b->failures = 0; }
