/*
 * clock.c - wall and monotonic clocks.
 */
#include "platform/clock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
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

#ifndef POS_BUILD_EPOCH_S
#error "POS_BUILD_EPOCH_S is set by platform/CMakeLists.txt"
#endif

int64_t clock_boot_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t clock_build_epoch_ms(void) { return (int64_t)POS_BUILD_EPOCH_S * 1000; }

int clock_boot_id(char *out, size_t out_size)
{
  FILE *f;
  size_t len;
  int rc = 0;

  out[0] = '\0';
  f = fopen("/proc/sys/kernel/random/boot_id", "re");
  if (!f)
    return -errno;
  if (!fgets(out, (int)out_size, f))
    rc = ferror(f) ? -EIO : -ENODATA;
  fclose(f);
  len = strlen(out);
  while (len && (out[len - 1] == '\n' || out[len - 1] == ' '))
    out[--len] = '\0';
  if (rc)
    out[0] = '\0';
  return rc;
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
