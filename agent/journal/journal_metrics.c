/*
 * journal_metrics.c - what the journal measures, for /metrics: group
 * commits (time, size, and how long one was held for its cohort), sales
 * and adjustments journaled, seals (time and size), writes refused by
 * error.
 */
#include "journal/journal_int.h"

#include <time.h>

/* Seconds: an fsync on eMMC is milliseconds; a stuck disk is seconds. */
static const double journal_seconds_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                 0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                                 5,      10};
/* Writes per commit (group_commit_max is 1024 by default) and sales per
 * batch (max_batch_sales is 5000 by default). */
static const double journal_count_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024,
                                               2048, 5000, 20000};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

void journal__metrics_init(struct journal_metrics *m)
{
  metrics_registry *r = metrics_global();

  m->commit_seconds = metrics_series1(
      metrics_histogram(r, "pos_agent_journal_commit_seconds",
                        "Time of one journal group commit (BEGIN to durable COMMIT), in seconds.",
                        NULL, journal_seconds_buckets, COUNT(journal_seconds_buckets)),
      NULL);
  m->commit_writes = metrics_series1(
      metrics_histogram(r, "pos_agent_journal_commit_writes",
                        "Sales and adjustments made durable by one group commit.", NULL,
                        journal_count_buckets, COUNT(journal_count_buckets)),
      NULL);
  m->hold_seconds = metrics_series1(
      metrics_histogram(r, "pos_agent_journal_commit_hold_seconds",
                        "Time a group commit was held for the writes of clients known to be "
                        "coming back (answered by the commit before), in seconds; a commit "
                        "not held (a lone client, a fast disk) is not counted.",
                        NULL, journal_seconds_buckets, COUNT(journal_seconds_buckets)),
      NULL);
  m->sales = metrics_series1(
      metrics_counter(r, "pos_agent_sales_journaled_total",
                      "Sales (refunds and voids included) journaled durably; a retried "
                      "duplicate is not counted again.",
                      NULL),
      NULL);
  m->adjustments = metrics_series1(
      metrics_counter(r, "pos_agent_adjustments_journaled_total",
                      "Inventory adjustments (deliveries, waste, counts) journaled durably.",
                      NULL),
      NULL);
  m->seal_seconds = metrics_series1(
      metrics_histogram(r, "pos_agent_batch_seal_seconds",
                        "Time to seal one batch of unsent sales in the journal, in seconds.",
                        NULL, journal_seconds_buckets, COUNT(journal_seconds_buckets)),
      NULL);
  m->seal_sales = metrics_series1(
      metrics_histogram(r, "pos_agent_batch_sales", "Sales in one sealed batch.", NULL,
                        journal_count_buckets, COUNT(journal_count_buckets)),
      NULL);
  m->write_errors = metrics_counter(
      r, "pos_agent_journal_write_errors_total",
      "Writes (one request's sales or adjustments) the journal refused, by error (full, "
      "io_error, busy, damaged, out_of_memory, closing, ...).",
      "error");
}

double journal__seconds(void)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

void journal__count_refusal(journal *j, int error)
{
  static const char *const labels[] = {"out_of_memory", "full",     "busy",      "io_error",
                                       "damaged",       "closing",  "conflict",  "schema",
                                       "not_found",     "invalid"};
  const char *label = "other";

  if (error == JOURNAL_ECONFLICT)
    return; /* the POS's mistake (409), not the journal refusing */
  if (error <= JOURNAL_ENOMEM && error >= JOURNAL_EINVAL)
    label = labels[-error - 1];
  metrics_inc(metrics_series1(j->metrics.write_errors, label));
}
