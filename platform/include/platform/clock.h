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

/* CLOCK_BOOTTIME milliseconds: since this boot, counting suspend, never
 * stepped. wall - boot is what the wall clock said the boot started at; a
 * clock set later moves that, so the difference repairs times read off a
 * wrong clock earlier in the same boot. */
int64_t clock_boot_ms(void);

/* The build's time (Unix epoch ms, from CMake: SOURCE_DATE_EPOCH, the HEAD
 * commit's time or configure time). A wall clock before it cannot be right. */
int64_t clock_build_epoch_ms(void);

/*
 * This boot's id (/proc/sys/kernel/random/boot_id, 36 characters) into
 * `out` (at least 37 bytes). 0, or -errno with out "" when it cannot be
 * read (then no repair across a restart can be matched to this boot).
 */
int clock_boot_id(char *out, size_t out_size);

/*
 * Formats epoch milliseconds as RFC 3339 UTC ("2026-11-22T10:01:02.123Z")
 * into `out` (at least 25 bytes). Returns `out`.
 */
char *clock_format_utc(int64_t epoch_ms, char *out, size_t out_size);

#endif
