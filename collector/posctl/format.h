/*
 * format.h - posctl's pure text helpers: what a person types (times,
 * durations) and what a person reads (ages, counts, sizes, the progress
 * bar). No I/O, no global state: every function may be called from any
 * thread, and the unit tests (tests/unit/collector/test_posctl_format.c)
 * call them directly.
 */
#ifndef POSCTL_FORMAT_H
#define POSCTL_FORMAT_H

#include <stddef.h>
#include <stdint.h>

/* Room for any string these helpers write (a time, an age, a count). */
#define POSCTL_TEXT_MAX 64
/* Room for a progress line. */
#define POSCTL_PROGRESS_MAX 160

/*
 * Parses a time as head office types it: an RFC 3339 time with a zone
 * ("2026-11-26T03:00:00Z", "2026-11-26T04:00:00+01:00", seconds and a
 * fraction optional, a space allowed for the T) or a date alone
 * ("2026-11-01" = midnight UTC). Sets *ms to milliseconds since the epoch
 * (UTC). Returns 0, or -1 with `err` saying what is wrong and what is
 * expected (a time without a zone is refused: 3 a.m. where?).
 */
int posctl_parse_time(const char *text, int64_t *ms, char *err, size_t err_size);

/*
 * Writes `ms` as RFC 3339 UTC ("2026-11-26T03:00:00Z"; with ".123" only when
 * the milliseconds are not zero) into `out` (at least POSCTL_TEXT_MAX bytes).
 * Returns `out`.
 */
char *posctl_format_time(int64_t ms, char *out, size_t out_size);

/*
 * Parses a duration: one or more <number><unit> with unit s, m, h or d
 * ("30m", "1h30m", "4d"). Sets *seconds (> 0). Returns 0, or -1 with `err`
 * (a number without a unit is refused: minutes or hours?).
 */
int posctl_parse_duration(const char *text, int64_t *seconds, char *err, size_t err_size);

/*
 * Writes `seconds` in its largest exact unit ("90s", "30m", "2h", "4d"), the
 * form the admin API's ?lagging= takes. Returns `out`.
 */
char *posctl_format_duration(int64_t seconds, char *out, size_t out_size);

/*
 * Writes an age in one unit, rounded down: "42s", "3m", "2h", "4d". A
 * negative age (clocks apart) is written as "0s". Returns `out`.
 */
char *posctl_format_age(int64_t seconds, char *out, size_t out_size);

/* Writes `n` with thousands separators: "12,345", "-1,000". Returns `out`. */
char *posctl_format_count(int64_t n, char *out, size_t out_size);

/* Writes a size in bytes for people: "512 B", "1.5 KiB", "3.2 GiB". Returns `out`. */
char *posctl_format_bytes(int64_t bytes, char *out, size_t out_size);

/*
 * Writes a clock drift in milliseconds with its sign: "+0ms", "-150ms",
 * "+2.5s", "-3m" (one unit past a minute). Returns `out`.
 */
char *posctl_format_drift(int64_t drift_ms, char *out, size_t out_size);

/* Writes a time left as m:ss or h:mm:ss ("0:42", "1:02:03"). Returns `out`. */
char *posctl_format_eta(int64_t seconds, char *out, size_t out_size);

/*
 * Writes the progress line of `resync --wait`:
 *   "[########............] 12,345/20,000 sales 61% ETA 0:42"
 * `eta_s` < 0 means not known yet (written "ETA -"); a state other than
 * "running" is written instead of the ETA ("... 100% done"). With total_sales 0
 * (the device has not counted yet) the bar is empty and the line says the
 * state ("pending: waiting for the store's device"). Returns `out`
 * (at least POSCTL_PROGRESS_MAX bytes).
 */
char *posctl_progress_line(const char *state, int64_t done_sales, int64_t total_sales,
                           int64_t eta_s, char *out, size_t out_size);

#endif
