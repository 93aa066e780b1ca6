/*
 * format.c - posctl's pure text helpers (format.h).
 */
#include "posctl/format.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Reads exactly `n` decimal digits at *p into *value and moves *p past them. */
static int format_digits(const char **p, int n, int *value)
{
  int v = 0;
  for (int i = 0; i < n; i++) {
    char c = (*p)[i];
    if (c < '0' || c > '9')
      return -1;
    v = v * 10 + (c - '0');
  }
  *p += n;
  *value = v;
  return 0;
}

static int format_days_in_month(int year, int month)
{
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : days[month - 1];
}

/* The zone after a time: "Z" or "+HH:MM"/"-HH:MM". Sets *offset_s (east positive). */
static int format_zone(const char **p, int *offset_s)
{
  int sign, hours, minutes;
  if (**p == 'Z' || **p == 'z') {
    (*p)++;
    *offset_s = 0;
    return 0;
  }
  if (**p != '+' && **p != '-')
    return -1;
  sign = **p == '-' ? -1 : 1;
  (*p)++;
  if (format_digits(p, 2, &hours) || **p != ':')
    return -1;
  (*p)++;
  if (format_digits(p, 2, &minutes) || hours > 23 || minutes > 59)
    return -1;
  *offset_s = sign * (hours * 3600 + minutes * 60);
  return 0;
}

/* The time of day after the date: "HH:MM[:SS[.fff]]" and its zone. */
static int format_clock(const char **p, struct tm *tm, int *ms, int *offset_s, const char **why)
{
  int seconds = 0;
  *why = "a time of day is HH:MM or HH:MM:SS";
  if (format_digits(p, 2, &tm->tm_hour) || **p != ':')
    return -1;
  (*p)++;
  if (format_digits(p, 2, &tm->tm_min))
    return -1;
  if (**p == ':') {
    (*p)++;
    if (format_digits(p, 2, &seconds))
      return -1;
    if (**p == '.') {
      int scale = 100;
      (*p)++;
      if (**p < '0' || **p > '9')
        return -1;
      /* Milliseconds from the first three digits; finer ones are dropped. */
      for (; **p >= '0' && **p <= '9'; (*p)++, scale /= 10)
        *ms += (**p - '0') * scale;
    }
  }
  tm->tm_sec = seconds;
  if (tm->tm_hour > 23 || tm->tm_min > 59 || seconds > 59) {
    *why = "hour, minute or second out of range";
    return -1;
  }
  if (**p == '\0') {
    *why = "the time needs a zone: add Z for UTC or an offset like +01:00";
    return -1;
  }
  *why = "the zone is Z or an offset like +01:00";
  return format_zone(p, offset_s);
}

int posctl_parse_time(const char *text, int64_t *ms, char *err, size_t err_size)
{
  const char *p = text;
  const char *why = "a time is 2026-11-01 or 2026-11-26T03:00:00Z";
  struct tm tm;
  int year, ms_part = 0, offset_s = 0;
  time_t seconds;

  memset(&tm, 0, sizeof(tm));
  if (format_digits(&p, 4, &year) || *p++ != '-' || format_digits(&p, 2, &tm.tm_mon) ||
      *p++ != '-' || format_digits(&p, 2, &tm.tm_mday))
    goto bad;
  if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
      tm.tm_mday > format_days_in_month(year, tm.tm_mon)) {
    why = "no such date";
    goto bad;
  }
  if (*p == 'T' || *p == 't' || *p == ' ') {
    p++;
    if (format_clock(&p, &tm, &ms_part, &offset_s, &why))
      goto bad;
  } else if (*p != '\0') {
    goto bad;
  }
  if (*p != '\0') {
    why = "unexpected text after the time";
    goto bad;
  }
  tm.tm_year = year - 1900;
  tm.tm_mon -= 1;
  seconds = timegm(&tm);
  *ms = ((int64_t)seconds - offset_s) * 1000 + ms_part;
  return 0;
bad:
  snprintf(err, err_size, "\"%s\" is not a time: %s (e.g. 2026-11-01 for midnight UTC, "
           "2026-11-26T03:00:00Z, 2026-11-26T04:00:00+01:00)", text, why);
  return -1;
}

char *posctl_format_time(int64_t ms, char *out, size_t out_size)
{
  time_t seconds = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  int64_t millis = ms - (int64_t)seconds * 1000;
  struct tm tm;
  char date[32];
  if (!gmtime_r(&seconds, &tm)) {
    snprintf(out, out_size, "?");
    return out;
  }
  strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
  if (millis)
    snprintf(out, out_size, "%s.%03" PRId64 "Z", date, millis);
  else
    snprintf(out, out_size, "%sZ", date);
  return out;
}

static int64_t format_unit_seconds(char unit)
{
  switch (unit) {
  case 's':
    return 1;
  case 'm':
    return 60;
  case 'h':
    return 3600;
  case 'd':
    return 86400;
  }
  return 0;
}

int posctl_parse_duration(const char *text, int64_t *seconds, char *err, size_t err_size)
{
  const char *p = text;
  int64_t total = 0;
  const char *why = "a duration is a number and a unit: s, m, h or d (e.g. 30m, 1h30m, 4d)";
  if (*p == '\0')
    goto bad;
  while (*p) {
    int64_t number = 0, unit;
    if (*p < '0' || *p > '9')
      goto bad;
    for (; *p >= '0' && *p <= '9'; p++) {
      if (number > 100000000) {
        why = "too long (at most 100000000 of a unit)";
        goto bad;
      }
      number = number * 10 + (*p - '0');
    }
    unit = format_unit_seconds(*p);
    if (!unit) {
      if (*p == '\0')
        why = "the number needs a unit: s, m, h or d (e.g. 30m)";
      goto bad;
    }
    p++;
    total += number * unit;
  }
  if (total <= 0) {
    why = "it must be longer than 0s";
    goto bad;
  }
  *seconds = total;
  return 0;
bad:
  snprintf(err, err_size, "\"%s\" is not a duration: %s", text, why);
  return -1;
}

char *posctl_format_duration(int64_t seconds, char *out, size_t out_size)
{
  static const char units[] = {'d', 'h', 'm'};
  for (size_t i = 0; i < sizeof(units); i++) {
    int64_t unit = format_unit_seconds(units[i]);
    if (seconds > 0 && seconds % unit == 0) {
      snprintf(out, out_size, "%" PRId64 "%c", seconds / unit, units[i]);
      return out;
    }
  }
  snprintf(out, out_size, "%" PRId64 "s", seconds);
  return out;
}

char *posctl_format_age(int64_t seconds, char *out, size_t out_size)
{
  if (seconds < 0)
    seconds = 0;
  if (seconds < 60)
    snprintf(out, out_size, "%" PRId64 "s", seconds);
  else if (seconds < 3600)
    snprintf(out, out_size, "%" PRId64 "m", seconds / 60);
  else if (seconds < 86400)
    snprintf(out, out_size, "%" PRId64 "h", seconds / 3600);
  else
    snprintf(out, out_size, "%" PRId64 "d", seconds / 86400);
  return out;
}

char *posctl_format_count(int64_t n, char *out, size_t out_size)
{
  char digits[32];
  char grouped[48];
  size_t len, pos = 0;
  /* The magnitude as unsigned, so that INT64_MIN has one too. */
  uint64_t magnitude = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
  snprintf(digits, sizeof(digits), "%" PRIu64, magnitude);
  len = strlen(digits);
  if (n < 0)
    grouped[pos++] = '-';
  for (size_t i = 0; i < len; i++) {
    if (i > 0 && (len - i) % 3 == 0)
      grouped[pos++] = ',';
    grouped[pos++] = digits[i];
  }
  grouped[pos] = '\0';
  snprintf(out, out_size, "%s", grouped);
  return out;
}

char *posctl_format_bytes(int64_t bytes, char *out, size_t out_size)
{
  static const char *units[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = (double)bytes;
  size_t unit = 0;
  if (bytes < 1024 && bytes > -1024) {
    snprintf(out, out_size, "%" PRId64 " B", bytes);
    return out;
  }
  value /= 1024.0;
  while ((value >= 1024.0 || value <= -1024.0) && unit + 1 < sizeof(units) / sizeof(units[0])) {
    value /= 1024.0;
    unit++;
  }
  snprintf(out, out_size, "%.1f %s", value, units[unit]);
  return out;
}

char *posctl_format_drift(int64_t drift_ms, char *out, size_t out_size)
{
  char sign = drift_ms < 0 ? '-' : '+';
  int64_t magnitude = drift_ms < 0 ? -drift_ms : drift_ms;
  char age[POSCTL_TEXT_MAX];
  if (magnitude < 1000)
    snprintf(out, out_size, "%c%" PRId64 "ms", sign, magnitude);
  else if (magnitude < 60000)
    snprintf(out, out_size, "%c%" PRId64 ".%" PRId64 "s", sign, magnitude / 1000,
             magnitude % 1000 / 100);
  else
    snprintf(out, out_size, "%c%s", sign, posctl_format_age(magnitude / 1000, age, sizeof(age)));
  return out;
}

char *posctl_format_eta(int64_t seconds, char *out, size_t out_size)
{
  if (seconds < 0)
    seconds = 0;
  if (seconds < 3600)
    snprintf(out, out_size, "%" PRId64 ":%02" PRId64, seconds / 60, seconds % 60);
  else
    snprintf(out, out_size, "%" PRId64 ":%02" PRId64 ":%02" PRId64, seconds / 3600,
             seconds / 60 % 60, seconds % 60);
  return out;
}

/* Width of the bar between the brackets. */
#define FORMAT_BAR_WIDTH 20

char *posctl_progress_line(const char *state, int64_t done_sales, int64_t total_sales,
                           int64_t eta_s, char *out, size_t out_size)
{
  char bar[FORMAT_BAR_WIDTH + 1];
  char done[POSCTL_TEXT_MAX], total[POSCTL_TEXT_MAX], eta[POSCTL_TEXT_MAX];
  int64_t filled = 0, percent = 0;
  if (total_sales > 0) {
    int64_t capped = done_sales > total_sales ? total_sales : done_sales;
    if (capped < 0)
      capped = 0;
    filled = capped * FORMAT_BAR_WIDTH / total_sales;
    percent = capped * 100 / total_sales;
  }
  for (int i = 0; i < FORMAT_BAR_WIDTH; i++)
    bar[i] = i < filled ? '#' : '.';
  bar[FORMAT_BAR_WIDTH] = '\0';
  posctl_format_count(done_sales, done, sizeof(done));
  if (total_sales <= 0) {
    /* The device has not counted the range yet (or the command is not a resync). */
    snprintf(out, out_size, "[%s] %s sales, %s%s", bar, done, state ? state : "pending",
             state && strcmp(state, "pending") != 0 ? "" : ": waiting for the store's device");
    return out;
  }
  posctl_format_count(total_sales, total, sizeof(total));
  if (state && strcmp(state, "running") != 0) {
    /* Finished (or not started): the state says more than a time left. */
    snprintf(out, out_size, "[%s] %s/%s sales %" PRId64 "%% %s", bar, done, total, percent,
             state);
    return out;
  }
  if (eta_s >= 0)
    posctl_format_eta(eta_s, eta, sizeof(eta));
  else
    snprintf(eta, sizeof(eta), "-");
  snprintf(out, out_size, "[%s] %s/%s sales %" PRId64 "%% ETA %s", bar, done, total, percent, eta);
  return out;
}
