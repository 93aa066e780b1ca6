/*
 * log.c - key=value event lines on stderr.
 */
#include "platform/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "platform/clock.h"

static atomic_int log_min_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level) { atomic_store(&log_min_level, (int)level); }

enum log_level log_get_level(void) { return (enum log_level)atomic_load(&log_min_level); }

int log_level_parse(const char *text, enum log_level *level)
{
  for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
    if (strcasecmp(text, level_names[i]) == 0) {
      *level = (enum log_level)i;
      return 0;
    }
  }
  return -1;
}

char *log_format(char *out, size_t size, const char *fmt, ...)
{
  va_list args;

  va_start(args, fmt);
  vsnprintf(out, size, fmt, args);
  va_end(args);
  return out;
}

const char *log_quote(const char *value, char *out, size_t out_size)
{
  size_t used = 0;
  int needs_quotes = value[0] == '\0';

  if (out_size == 0)
    return out;
  for (const char *p = value; *p && !needs_quotes; p++) {
    unsigned char c = (unsigned char)*p;
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
      needs_quotes = 1;
  }
  if (!needs_quotes) {
    snprintf(out, out_size, "%s", value);
    return out;
  }
  /* Leave room for the closing quote and the NUL. */
  if (used + 3 > out_size) {
    out[0] = '\0';
    return out;
  }
  out[used++] = '"';
  for (const char *p = value; *p; p++) {
    unsigned char c = (unsigned char)*p;
    char esc[5];
    size_t esc_len;
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      esc_len = 2;
    } else if (c == '\n') {
      memcpy(esc, "\\n", 2);
      esc_len = 2;
    } else if (c < ' ' || c == 0x7f) {
      snprintf(esc, sizeof(esc), "\\x%02x", c);
      esc_len = 4;
    } else {
      esc[0] = (char)c;
      esc_len = 1;
    }
    if (used + esc_len + 2 > out_size)
      break;
    memcpy(out + used, esc, esc_len);
    used += esc_len;
  }
  out[used++] = '"';
  out[used] = '\0';
  return out;
}

void log_event(enum log_level level, const char *module, const char *event, const char *fmt,
               ...)
{
  char line[2048];
  char ts[40];
  int len;

  if ((int)level < atomic_load(&log_min_level))
    return;
  clock_format_utc(clock_wall_ms(), ts, sizeof(ts));
  len = snprintf(line, sizeof(line), "ts=%s level=%s mod=%s event=%s", ts,
                 level_names[level], module, event);
  if (len < 0)
    return;
  if (fmt && (size_t)len + 1 < sizeof(line)) {
    va_list ap;
    int more;
    line[len++] = ' ';
    va_start(ap, fmt);
    more = vsnprintf(line + len, sizeof(line) - (size_t)len, fmt, ap);
    va_end(ap);
    if (more > 0)
      len += more;
  }
  /* A truncated line still ends in a newline, so lines never merge. */
  if ((size_t)len >= sizeof(line) - 1)
    len = (int)sizeof(line) - 2;
  line[len++] = '\n';
  /* One write(2) per event keeps lines from different threads whole. */
  ssize_t ignored = write(STDERR_FILENO, line, (size_t)len);
  (void)ignored;
}
