/*
 * log.h - one line per event, key=value, to stderr (journald adds the time
 * when we run under systemd; we add it anyway for people running by hand).
 *
 *   ts=2026-11-22T10:01:02.123Z level=warn mod=journal event=disk_full path=/var/lib/pos/journal.db
 *
 * log_event() takes the event name and a printf format for the rest of the
 * line; values that may hold spaces should be passed through log_quote().
 * Safe to call from any thread: each event is written with one write(2).
 */
#ifndef PLATFORM_LOG_H
#define PLATFORM_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Events below `level` are dropped. Default LOG_INFO. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parses "debug", "info", "warn" or "error". Returns 0 or -1. */
int log_level_parse(const char *text, enum log_level *level);

#if defined(__GNUC__)
#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LOG_PRINTF(a, b)
#endif

/* Writes one line: ts, level, mod, event, then the formatted rest (may be NULL). */
void log_event(enum log_level level, const char *module, const char *event,
               const char *fmt, ...) LOG_PRINTF(4, 5);

/*
 * Quotes `value` for a key=value line into `out` (always NUL-terminated,
 * truncated to `out_size`): bare when it has no space, quote or control
 * character, otherwise "..." with \" \\ \n escapes. Returns `out`.
 */
const char *log_quote(const char *value, char *out, size_t out_size);

/*
 * snprintf for a message that may be cut to fit `out` (a status field, a
 * reason file's line): always NUL-terminated, and no truncation warning
 * where cutting is meant. Returns `out`. Any thread.
 */
char *log_format(char *out, size_t size, const char *fmt, ...) LOG_PRINTF(3, 4);

#define log_debug(mod, ev, ...) log_event(LOG_DEBUG, mod, ev, __VA_ARGS__)
#define log_info(mod, ev, ...) log_event(LOG_INFO, mod, ev, __VA_ARGS__)
#define log_warn(mod, ev, ...) log_event(LOG_WARN, mod, ev, __VA_ARGS__)
#define log_error(mod, ev, ...) log_event(LOG_ERROR, mod, ev, __VA_ARGS__)

#endif
