/*
 * agent_metrics.h - the agent's operator listener ([metrics] in the
 * configuration): GET /metrics (Prometheus) and GET /healthz, on its own
 * plain-HTTP port bound to 127.0.0.1 by default, apart from the POS API so
 * that scraping never shares a connection limit or TLS with the terminals.
 *
 * /healthz is 503 with the reason when the agent cannot do its job: the
 * journal is not taking sales (disk full, journal.max_size, I/O errors), or
 * sales are not reaching head office (batches have failed for longer than
 * [metrics] uplink_unhealthy_after, the collector waits for a batch only head
 * office can unblock, or the certificate names another store or device).
 */
#ifndef AGENT_STATUS_AGENT_METRICS_H
#define AGENT_STATUS_AGENT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "journal/journal.h"
#include "uplink/uplink.h"

struct agent_metrics_options {
  journal *journal;                  /* borrowed; set to NULL before it is closed */
  uplink *uplink;                    /* NULL when off; borrowed, as journal */
  const char *journal_path;          /* for the free disk space */
  int64_t journal_max_bytes;         /* journal.max_size; 0 = the disk is the limit */
  int64_t uplink_unhealthy_after_ms; /* batches failing this long: unhealthy */
  int64_t started_ms;                /* wall clock at start */
  const char *cert_file;             /* the device certificate (uplink.cert); "" = none */
};

/*
 * Sets the gauges read rather than counted (backlog with its limits, disk,
 * uplink state, health) in the process's registry. `arg` is a struct
 * agent_metrics_options. A metrics_refresh_fn: loop thread.
 */
void agent_metrics_refresh(void *arg);

/*
 * 1 when the agent can do its job; else 0 with `reason` saying what is wrong
 * and what to do. A metrics_health_fn: loop thread.
 */
int agent_metrics_health(void *arg, char *reason, size_t reason_size);

#endif
