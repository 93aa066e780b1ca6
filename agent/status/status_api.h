/*
 * status_api.h - what the store manager and monitoring read:
 * GET /status.json (no authentication; it holds no secrets).
 */
#ifndef AGENT_STATUS_API_H
#define AGENT_STATUS_API_H

#include "enrol/enrol_driver.h"
#include "ingest/posdb/posdb.h"
#include "ingest/spool/spool.h"
#include "journal/journal.h"
#include "platform/http_server.h"
#include "status/status_today.h"
#include "uplink/uplink.h"

struct status_api_options {
  const char *store_id;
  const char *device_id;
  const char *journal_path; /* for the free disk space */
  const char *uplink_url;   /* "" when the uplink is off */
  uplink *uplink;           /* NULL when the uplink is off; borrowed */
  const char *cert_file;    /* the uplink's device certificate, for its expiry; "" = none */
  int64_t interval_ms;      /* [uplink] interval and jitter: how long a sale may wait */
  int64_t jitter_ms;
  int64_t started_ms;       /* when the agent started (wall clock), for the uptime */
  uint64_t journal_max_bytes; /* journal.max_size; 0 = no limit */
  status_today *today;      /* today's sales (status_today.h); NULL = not shown; borrowed */
  const enrol_driver *enrol; /* certificate enrolment and renewal; NULL = off; borrowed */
  posdb *posdb;              /* the POS database tailer; NULL = off; borrowed */
  const spool *spool;        /* the spool directory; NULL = off; borrowed */
};

/*
 * Answers GET /status.json from the journal's counters and the uplink's
 * state. `j` is borrowed. Besides the journal's fields it carries
 * uplink_state (off, idle, sending, backing_off), last_push_attempt,
 * last_ack {time, batch_seq}, next_push, batches_unacked,
 * oldest_unsent_age_s, last_uplink_error (with last_uplink_error_at) and
 * last_heartbeat; times are RFC 3339 UTC, null when there is none.
 * "verdict" {state: sending|behind|stopped, code, headline, reason,
 * action, since} answers "are our sales reaching head office?" in a store
 * manager's words (status_verdict.h); "device" {version, uptime_s,
 * certificate_not_after, certificate_days_left (rounded down: negative once
 * expired)} says what runs here;
 * "today" today's sales (status_today_json), "journal_max_bytes" the
 * journal's limit (null = none) and "drain_estimate_s" how long the
 * backlog takes to send once the link works (null = unknown).
 * "enrolment" {state (waiting, attempting, backing_off, needs_token,
 * expired, refused), next_attempt, last_attempt, last_success, failures,
 * last_result, renewal_refused} the device certificate's renewal (null
 * when off).
 * "sources" the ingest sources besides POST /v1/sales: "spool" (null when
 * [spool] dir is empty) {dir, files_pending (*.ndjson and *.csv files waiting, the
 * one in progress included), files_done and files_failed (moved since the
 * agent started), sales_ingested (new sales journaled from files since
 * the start), sales_duplicate (sales of files journaled before), current
 * (null, or {file, phase: validating|journaling|moving, line: the line
 * validated or last journaled}), last_failure (null, or {file, reason: its
 * reason's first line (line, field, problem), at}), last_error (why
 * the spool is waiting with a file kept, null when it is not)}; "posdb"
 * (null when [posdb] path is empty) {state (idle, reading, journaling),
 * watermark, sales_read, sales_stored, rows_rejected, vendor_watermark (the
 * newest in the vendor's table: the lag is its distance to watermark),
 * last_poll, caught_up, last_error, last_rejected} the POS database tailer.
 * Loop thread.
 */
void status_api_handle_json(journal *j, const struct status_api_options *options,
                            http_exchange *exchange);

/*
 * The validity of the PEM certificate at `path` (the device's, uplink.cert)
 * in Unix ms; 0/0 when there is none or it cannot be read (the uplink says
 * why on every attempt).
 */
void status_cert_validity(const char *path, int64_t *not_before_ms, int64_t *not_after_ms);

#endif
