/*
 * clock.h - the two clocks: wall time (UTC, for business data) and a
 * monotonic clock (for timeouts and intervals, immune to NTP steps).
 */
#ifndef PLATFORM_CLOCK_H
#define PLATFORM_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Wall clock, Unix epoch milliseconds, UTC. */
int64_t clock_wall_ms(void);

/* Monotonic milliseconds since an arbitrary point. */
uint64_t clock_mono_ms(void);

/*
 * Formats epoch milliseconds as RFC 3339 UTC ("2026-11-22T10:01:02.123Z")
 * into `out` (at least 25 bytes). Returns `out`.
 */
char *clock_format_utc(int64_t epoch_ms, char *out, size_t out_size);

#endif
