/*
 * clock.c - wall and monotonic clocks.
 */
#include "platform/clock.h"

#include <stdio.h>
#include <time.h>

int64_t clock_wall_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t clock_mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

char *clock_format_utc(int64_t epoch_ms, char *out, size_t out_size)
{
  time_t seconds = (time_t)(epoch_ms / 1000);
  int millis = (int)(epoch_ms % 1000);
  struct tm utc;

  if (millis < 0) {
    millis += 1000;
    seconds -= 1;
  }
  gmtime_r(&seconds, &utc);
  snprintf(out, out_size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
           utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, millis);
  return out;
}
