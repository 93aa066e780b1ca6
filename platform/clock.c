/*
 * clock.c - wall and monotonic clocks.
 */
#include "platform/clock.h"

#include <stdio.h>
#include <sys/types.h>
#include <time.h>

/* Sales are stamped past 2038 and journals grow past 2 GiB on 32-bit
 * devices too: firmware-config/hardening.cmake sets _TIME_BITS=64 and
 * _FILE_OFFSET_BITS=64 there. A build without them stops here. */
_Static_assert(sizeof(time_t) == 8, "time_t must be 64 bits (_TIME_BITS=64 on 32-bit targets)");
_Static_assert(sizeof(off_t) == 8,
               "off_t must be 64 bits (_FILE_OFFSET_BITS=64 on 32-bit targets)");

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
