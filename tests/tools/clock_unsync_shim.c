/*
 * clock_unsync_shim.c - an LD_PRELOAD shim for the clock tests: the
 * kernel's answer to adjtimex() and ntp_adjtime() says the clock is not
 * synchronised (STA_UNSYNC), whatever the machine's NTP does. The tests
 * move the agent's wall clock with libfaketime, which leaves that answer
 * alone: on a machine NTP keeps synchronised, a clock libfaketime set two
 * days ahead would otherwise pass for a synchronised one (which the agent
 * trusts over the collector's). Reads only: nothing is ever set.
 */
#include <string.h>
#include <sys/timex.h>

static int clock_unsync_answer(struct timex *tx)
{
  memset(tx, 0, sizeof(*tx));
  tx->status = STA_UNSYNC;
  return TIME_ERROR;
}

int adjtimex(struct timex *tx) { return clock_unsync_answer(tx); }

int ntp_adjtime(struct timex *tx) { return clock_unsync_answer(tx); }
