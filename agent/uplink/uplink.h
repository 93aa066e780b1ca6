/*
 * uplink.h - the agent's way to the collector: every interval (plus
 * jitter), or when asked (SIGUSR1, POST /actions/push, a head-office
 * command), unsent sales are sealed into batches in the journal and
 * POSTed, one batch at a time in batch_seq order, until none is left; and
 * a heartbeat goes out every heartbeat_interval.
 *
 * Answers (ARCHITECTURE.md, Wire protocol):
 *   200 BatchAck        acknowledged in the journal, if the ack names our
 *                       journal and acked_batch_seq >= the batch sent; the
 *                       next batch goes at once (a backlog drains back to
 *                       back). A 200 without a readable ack, or for another
 *                       journal, or below the batch: a failed attempt
 *                       (backoff). Above every batch sealed: an error a
 *                       person must look at; nothing is marked sent.
 *   409 BatchAck        resume at expected_batch_seq: above ours, the
 *                       collector has them (acknowledged here up to
 *                       expected - 1); below, resend the stored batches
 *                       from there
 *   409 for a deleted batch
 *                       the collector lost its state and asks for a batch
 *                       retention deleted here: a stall only head office
 *                       can end. Said in the log (once, then rate-limited),
 *                       the status and the heartbeat; sales are still
 *                       taken; the oldest batch held is sent every
 *                       backoff_max. Once head office approves a rebase,
 *                       the collector accepts that batch as the next one
 *                       and the stall clears. The agent never skips a
 *                       batch by itself.
 *   413                 never accepted: that batch and later unacknowledged
 *                       ones are unsealed and sealed again at half the size
 *   429, 503            wait at least Retry-After, plus jitter, and never
 *                       less than the growing backoff; then resend
 *   network, 5xx        exponential backoff with jitter in
 *                       [backoff_min/2, backoff_max], then resend
 *   400 over the decoded limit
 *                       a never-acknowledged batch that decompresses beyond
 *                       the collector's limit (its last BatchAck's, or the
 *                       one the 400 names) is unsealed and sealed again
 *                       within it, like after a 413
 *   403 BATCH_ACK_CODE_JOURNAL_OF_ANOTHER_DEVICE (naming our journal)
 *                       this device runs a copy of another device's disk:
 *                       the journal is moved aside and a new journal_id
 *                       started, with every sale not acknowledged to this
 *                       device carried over (JOURNAL_OP_NEW_JOURNAL); said
 *                       in the log, status and heartbeat; sending resumes
 *                       from batch 1 of the new journal at once
 *   403 BATCH_ACK_CODE_IDENTITY_MISMATCH
 *                       a never-acknowledged batch sealed under another
 *                       store or device than configured now is unsealed
 *                       and sealed again; otherwise
 *                       certificate and configuration disagree: an uplink
 *                       problem (status, heartbeat) saying what to fix;
 *                       resent every backoff_max, nothing dropped
 *   400, 403, other 4xx logged as errors (a person must act), resent every
 *                       backoff_max (plus up to a quarter); nothing is ever
 *                       dropped
 *
 * New batches are sealed within the collector's limits from its last
 * BatchAck (max_batch_bytes, max_batch_decoded_bytes, max_sales_per_batch)
 * and the configured caps. A disk too full to seal a batch halves the caps
 * until the next acknowledgement; a stored batch is resent however full
 * the disk is.
 *
 * A resend sends the batch's stored bytes unchanged. The uplink runs on the
 * agent's libuv loop (its own HTTP client, uplink/http.h) and never holds up
 * taking sales: journal work happens on the journal's writer thread.
 *
 * Threading: every function on the loop thread.
 */
#ifndef AGENT_UPLINK_H
#define AGENT_UPLINK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "journal/journal.h"

struct uplink_options {
  const char *url;         /* collector base URL, "https://host:port"; must not be "" */
  const char *cert_file;   /* device certificate (PEM) */
  const char *key_file;    /* its private key (PEM) */
  const char *ca_file;     /* CAs the collector's certificate must chain to; "" = system's */
  const char *store_id;
  const char *device_id;
  const char *journal_path; /* for the free disk space in heartbeats */
  int64_t interval_ms;
  int64_t jitter_ms;
  int64_t heartbeat_interval_ms; /* 0 = no heartbeats */
  int64_t replay_rate;           /* most replayed sales a second; 0 = no cap */
  size_t max_batch_sales;
  size_t max_batch_bytes;
  int64_t backoff_min_ms;
  int64_t backoff_max_ms;
  int64_t connect_timeout_ms;
  int64_t request_timeout_ms;
  int zstd_level;
  uint64_t random_seed;    /* 0 = from the kernel; tests fix it */
};

enum uplink_state {
  UPLINK_OFF = 0,      /* no URL configured */
  UPLINK_IDLE,         /* waiting for the next push */
  UPLINK_SENDING,      /* a push is under way */
  UPLINK_BACKING_OFF,  /* the last attempt failed; waiting to retry */
};

/* "off", "idle", "sending", "backing_off". */
const char *uplink_state_name(enum uplink_state state);

struct uplink_status {
  enum uplink_state state;
  int64_t last_attempt_ms;    /* last POST /v1/batches started; 0 = never */
  int64_t last_ack_ms;        /* last 200 for a batch; 0 = never (this run) */
  int64_t last_ack_batch_seq;
  int64_t next_push_ms;       /* when the next push or retry is due; 0 = none planned */
  uint64_t batches_sent;      /* attempts, this run */
  uint64_t batches_acked;     /* this run */
  int64_t last_heartbeat_ms;  /* last heartbeat answered 200; 0 = never */
  /* This device's clock minus the collector's, from the last heartbeat's
   * answer (half the round trip is within it); valid when clock_skew_known. */
  int64_t clock_skew_ms;
  int clock_skew_known;
  unsigned consecutive_failures; /* failed attempts since the last success */
  int64_t failing_since_ms;   /* the first batch failure since the last ack; 0 = not failing */
  int64_t last_error_ms;      /* 0 = no error this run */
  char last_error[512];       /* what went wrong, on what */
  /* The last batch error does not pass by itself (a 4xx, a refused ack):
   * a person must act. 0 for network trouble, timeouts, 429/5xx. */
  int last_error_needs_person;
  /* A stall only head office can end (uplink.h, "409 for a deleted batch"):
   * the collector asks for this batch, which retention deleted here; 0 = no
   * stall. Cleared when the collector accepts a batch. */
  int64_t stalled_expected_batch_seq;
  int64_t oldest_held_batch_seq; /* with a stall: the oldest batch this device can send */
  int64_t stalled_since_ms;
  char problem[512];          /* with a stall: "expected_batch_deleted: " and what to do;
                               * with identity_mismatch_ms: "identity_mismatch: " ... */
  /* The collector refused a batch (403, BATCH_ACK_CODE_IDENTITY_MISMATCH)
   * because the certificate names another store or device than the
   * configuration: when it began; 0 = not now. Cleared by an acknowledgement. */
  int64_t identity_mismatch_ms;
  /* Journals started this run because the collector said the journal_id
   * belongs to another device (a cloned disk): the reason is the journal's. */
  unsigned journals_restarted;
  size_t max_batch_sales;     /* in force now (smaller after a 413, or on a full disk) */
  size_t max_batch_bytes;
};

typedef struct uplink uplink;

/*
 * Starts the uplink on `loop`: the first push after a random part of the
 * jitter, heartbeats every heartbeat_interval. `j` is borrowed and must
 * stay open until the uplink is closed. Option strings are copied. Returns
 * the uplink, or NULL with `err` set. A missing certificate file is not an
 * error here: the agent must keep taking sales, so it is reported on every
 * attempt (and in the status) until someone fixes it.
 */
uplink *uplink_create(uv_loop_t *loop, journal *j, const struct uplink_options *options,
                      char *err, size_t err_size);

/*
 * Asks for a push now (`why` is logged: "SIGUSR1", "action", "collector").
 * While a push is under way, another follows it at once; while backing
 * off, the wait is cut short.
 */
void uplink_push_now(uplink *u, const char *why);

/* Copies the uplink's state for the status page. */
void uplink_get_status(const uplink *u, struct uplink_status *status);

/*
 * Stops timers, abandons requests in flight (a batch in flight is simply
 * resent next time: it is stored), and frees the uplink once its handles
 * are closed and the journal delivered its pending operations: call it
 * before journal_close, then run the loop. `u` may be NULL.
 */
void uplink_close(uplink *u);

#endif
