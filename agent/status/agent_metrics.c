/*
 * agent_metrics.c - the agent's gauges, set at each scrape, and its health.
 */
#include "status/agent_metrics.h"
#include "status/status_api.h"

#include <stdio.h>
#include <string.h>

#include "platform/clock.h"
#include "platform/disk.h"
#include "platform/metrics.h"

static void agent_metrics_gauge(const char *name, const char *help, double value)
{
  metrics_set(metrics_series1(metrics_gauge(metrics_global(), name, help, NULL), NULL), value);
}

/* The journal's part: the backlog and its limits. */
static void agent_metrics_journal(const struct agent_metrics_options *o,
                                  const struct journal_stats *stats, int64_t now)
{
  uint64_t disk_free = 0;
  int have_disk = disk_free_bytes(o->journal_path, &disk_free) == 0;
  int64_t unacked = stats->last_batch_seq - stats->acked_batch_seq;
  double limit = (double)o->journal_max_bytes;

  if (o->journal_max_bytes <= 0)
    limit = have_disk ? (double)stats->database_bytes + (double)disk_free : 0;
  agent_metrics_gauge("pos_agent_journal_bytes", "Size of the journal database, in bytes.",
                      (double)stats->database_bytes);
  agent_metrics_gauge("pos_agent_journal_max_bytes",
                      "Largest the journal may grow, in bytes: journal.max_size, or with none "
                      "its size plus the disk's free space.",
                      limit);
  if (have_disk)
    agent_metrics_gauge("pos_agent_disk_free_bytes",
                        "Free space on the journal's file system, in bytes.", (double)disk_free);
  agent_metrics_gauge("pos_agent_sales_unsent",
                      "Sales journaled and not yet acknowledged by the collector.",
                      (double)stats->sales_unsent);
  agent_metrics_gauge("pos_agent_sales_in_journal",
                      "Sales the journal holds (unsent ones and acknowledged history kept for "
                      "resync).",
                      (double)stats->sales_journaled);
  agent_metrics_gauge("pos_agent_oldest_unsent_age_seconds",
                      "Age of the oldest sale not yet acknowledged by the collector, in "
                      "seconds; 0 when none waits.",
                      stats->sales_unsent > 0 && stats->oldest_unsent_ms > 0 &&
                              now > stats->oldest_unsent_ms
                          ? (double)(now - stats->oldest_unsent_ms) / 1000.0
                          : 0);
  agent_metrics_gauge("pos_agent_batches_unacked",
                      "Batches sealed and not yet acknowledged by the collector.",
                      unacked > 0 ? (double)unacked : 0);
  agent_metrics_gauge("pos_agent_journal_full",
                      "1 while the journal refuses new sales for lack of room (disk full or "
                      "journal.max_size).",
                      stats->full ? 1 : 0);
  agent_metrics_gauge("pos_agent_journal_write_failing",
                      "1 while the journal's last write failed (sales are answered 503).",
                      stats->write_failing ? 1 : 0);
  agent_metrics_gauge("pos_agent_last_ack_timestamp_seconds",
                      "When the collector last acknowledged a batch (Unix time); 0 = never.",
                      (double)stats->last_ack_ms / 1000.0);
}

static void agent_metrics_uplink(const struct agent_metrics_options *o, int64_t now)
{
  struct uplink_status link;

  memset(&link, 0, sizeof(link));
  if (o->uplink)
    uplink_get_status(o->uplink, &link);
  agent_metrics_gauge("pos_agent_uplink_enabled", "1 when [uplink] url is set.",
                      o->uplink ? 1 : 0);
  agent_metrics_gauge("pos_agent_uplink_consecutive_failures",
                      "Batch posts failed since the last acknowledgement.",
                      (double)link.consecutive_failures);
  agent_metrics_gauge("pos_agent_uplink_failing_seconds",
                      "How long batches have failed without an acknowledgement, in seconds; 0 "
                      "when not failing.",
                      link.failing_since_ms > 0 && now > link.failing_since_ms
                          ? (double)(now - link.failing_since_ms) / 1000.0
                          : 0);
  if (o->cert_file && o->cert_file[0]) {
    int64_t not_before_ms = 0, not_after_ms = 0;
    status_cert_validity(o->cert_file, &not_before_ms, &not_after_ms);
    if (not_after_ms > 0)
      agent_metrics_gauge("pos_agent_cert_not_after_timestamp_seconds",
                          "When the device certificate (uplink.cert) expires (Unix time); a "
                          "renewed certificate shows at once. Days left: (value - time()) / "
                          "86400.",
                          (double)(not_after_ms / 1000));
  }
  agent_metrics_gauge("pos_agent_uplink_unhealthy_after_seconds",
                      "[metrics] uplink_unhealthy_after: failing this long makes /healthz "
                      "unhealthy, in seconds.",
                      (double)o->uplink_unhealthy_after_ms / 1000.0);
}

void agent_metrics_refresh(void *arg)
{
  const struct agent_metrics_options *o = arg;
  struct journal_stats stats;
  int64_t now = clock_wall_ms();
  char reason[512]; /* unused here: the gauge is 0 or 1 */
  const char *version[] = {POS_VERSION};

  metrics_set(metrics_series_get(metrics_gauge(metrics_global(), "pos_agent_build_info",
                                               "Always 1; the agent's version as a label.",
                                               "version"),
                                 version),
              1);
  agent_metrics_gauge("pos_agent_start_time_seconds", "When the agent started (Unix time).",
                      (double)o->started_ms / 1000.0);
  if (o->journal) {
    journal_get_stats(o->journal, &stats);
    agent_metrics_journal(o, &stats, now);
    agent_metrics_gauge("pos_agent_clock_untrusted",
                        "1 while the device clock is before the agent's build or behind sales "
                        "already journaled (sales are kept, their times corrected once it is "
                        "set), else 0.",
                        stats.clock_state != JOURNAL_CLOCK_OK);
    agent_metrics_gauge("pos_agent_clock_pending_rows",
                        "Rows of this boot whose receipt time waits for the clock to be set.",
                        (double)stats.clock_pending_rows);
    agent_metrics_gauge("pos_agent_clock_unrepaired_rows",
                        "Rows of earlier boots whose receipt time was never corrected (sent "
                        "flagged).",
                        (double)stats.clock_unrepaired_rows);
  }
  agent_metrics_uplink(o, now);
  agent_metrics_gauge("pos_agent_healthy",
                      "1 when /healthz says the agent can do its job (takes sales and "
                      "delivers them), else 0.",
                      agent_metrics_health(arg, reason, sizeof(reason)));
}

int agent_metrics_health(void *arg, char *reason, size_t reason_size)
{
  const struct agent_metrics_options *o = arg;
  struct journal_stats stats;
  struct uplink_status link;
  int64_t now = clock_wall_ms();

  if (!o->journal) {
    snprintf(reason, reason_size, "the agent is stopping");
    return 0;
  }
  journal_get_stats(o->journal, &stats);
  if (stats.full || stats.write_failing) {
    snprintf(reason, reason_size,
             "the journal is not taking sales (terminals get 503): %s",
             stats.last_error[0] ? stats.last_error
                                 : "the journal is full; sales already journaled are safe");
    return 0;
  }
  if (!o->uplink)
    return 1; /* sending is off by configuration: taking sales is the whole job */
  uplink_get_status(o->uplink, &link);
  if (link.stalled_expected_batch_seq > 0 || link.identity_mismatch_ms > 0) {
    snprintf(reason, reason_size, "sales are not reaching head office: %s", link.problem);
    return 0;
  }
  if (link.failing_since_ms > 0 && o->uplink_unhealthy_after_ms > 0 &&
      now - link.failing_since_ms >= o->uplink_unhealthy_after_ms) {
    snprintf(reason, reason_size,
             "sales are not reaching head office: batches have failed for %lld s (more than "
             "[metrics] uplink_unhealthy_after), %llu sales waiting here, nothing is lost; last "
             "error: %s",
             (long long)((now - link.failing_since_ms) / 1000),
             (unsigned long long)stats.sales_unsent, link.last_error);
    return 0;
  }
  return 1;
}
