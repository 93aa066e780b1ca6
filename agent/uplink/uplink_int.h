/*
 * uplink_int.h - the uplink's insides, shared by uploader.c (the batch
 * state machine) and heartbeat.c. For the uplink's own files only.
 */
#ifndef AGENT_UPLINK_INT_H
#define AGENT_UPLINK_INT_H

#include <stdarg.h>

#include "journal/journal.h"
#include "platform/metrics.h"
#include "pos/v1/pos.pb-c.h"
#include "uplink/backoff.h"
#include "uplink/batcher.h"
#include "uplink/http.h"
#include "uplink/uplink.h"

/* Largest answer read from the collector (a BatchAck is a few bytes). */
#define UPLINK_MAX_RESPONSE (64u * 1024u)
/* Smallest cap a 413 can halve max_batch_bytes down to. */
#define UPLINK_MIN_BATCH_BYTES (4u * 1024u)
/* The same error is logged again after this long (it is always in the status). */
#define UPLINK_ERROR_REPEAT_MS (10u * 60u * 1000u)
/* New journals started in one run after the collector said ours is
 * another device's; beyond that it is the collector's error, not a clone. */
#define UPLINK_MAX_NEW_JOURNALS 3u
/* Longest Retry-After honoured; a larger one is cut to this. */
#define UPLINK_MAX_RETRY_AFTER_MS (60u * 60u * 1000u)
/* Quick tries through a load balancer when a collector instance answers that
 * another one writes this store (uploader.c, uplink_on_another_instance). */
#define UPLINK_REROUTE_TRIES 8u

/* One kind of failure's log: the same message again within
 * UPLINK_ERROR_REPEAT_MS is counted, not logged. Batches and heartbeats
 * each have one, so that their errors alternating (a collector down fails
 * both) do not defeat it. */
struct uplink_error_log {
  char last[512];     /* the last message */
  uint64_t logged_ms; /* loop time it was last logged; 0 = log the next */
  unsigned suppressed; /* repeats not logged since */
  int was_logged;     /* the last error made a log line (not suppressed) */
};

/* What the uplink measures, in the process's registry (loop thread). */
struct uplink_metrics {
  metrics_series *ack_seconds;   /* POST /v1/batches to its 200 */
  metrics_series *batches_sent;  /* attempts */
  metrics_series *batches_acked;
  metrics_family *errors;        /* label reason */
};

struct uplink {
  uv_loop_t *loop;
  struct uplink_metrics metrics;
  uint64_t send_started_ns;      /* monotonic, when the batch in flight was posted */
  journal *journal;
  uplink_http *http;
  struct batcher_identity identity; /* read by the writer thread while sealing */
  char identity_journal_id[33];     /* 32 hex digits */

  /* Copied options. */
  char *url;
  char *batches_url;
  char *heartbeat_url;
  char *journal_path;
  char firmware_version[64];
  int64_t interval_ms, jitter_ms, heartbeat_interval_ms;
  int64_t replay_rate; /* most replayed sales a second; 0 = no cap */
  int64_t backoff_max_ms;
  size_t config_max_sales, config_max_bytes;

  /* The batch state machine (uploader.c). */
  enum uplink_state state;
  struct backoff backoff;
  unsigned reroutes;       /* 503s of another collector instance in a row (uploader.c) */
  uv_timer_t push_timer;   /* next push, or the retry while backing off */
  int64_t cursor;          /* next batch_seq to send */
  int64_t push_target_seq; /* this push seals sales up to here */
  int push_again;          /* a push was asked for during this one */
  size_t max_sales, max_bytes; /* caps (config, collector limits, 413s) */
  /* Lowered caps while sealing a new batch finds the disk full (a smaller
   * batch needs less of the uplink's reserve); 0 = not lowered. Cleared by
   * the next acknowledgement, which makes room. */
  size_t full_max_sales, full_max_bytes;
  /* The collector's limit on a batch before compression: what its last
   * BatchAck (or a 400 naming it) said, else the default both sides agree on. */
  size_t max_decoded;
  /* The batch the collector acknowledged whose ack the journal has not
   * recorded yet (0 = none): a retry records it again rather than resending
   * the batch, and the backoff is reset only once the ack is on flash. */
  int64_t ack_pending;
  struct journal_batch acking; /* what a 200 acknowledged (no body), for the log */
  int acking_duplicate;
  int64_t asked_batch_seq; /* what the last 409 below asked for; 0 = none since a 200 */
  struct journal_op op;    /* NEXT_BATCH, ACK, UNSEAL or NEW_JOURNAL; one at a time */
  char new_journal_reason[768]; /* NEW_JOURNAL's reason, alive while it runs */
  int op_busy;
  struct uplink_http_request batch_req;
  int batch_busy;
  struct journal_batch sending; /* the batch in flight; body owned here */

  /* Heartbeats (heartbeat.c). */
  uv_timer_t heartbeat_timer;
  struct uplink_http_request heartbeat_req;
  int heartbeat_busy;
  uint8_t *heartbeat_body;

  struct uplink_status status;
  struct uplink_error_log batch_log;
  struct uplink_error_log heartbeat_log;
  uint64_t drift_logged_ms; /* loop time a clock drift was last logged; 0 = never */
  int started;              /* the first push (at start) has begun */
  /* "<state>:<command_id>" of commands submitted to the journal lately (a
   * ring): a command comes back in every answer until the collector hears
   * it finished; recording it again would only cost an fsync. */
  char handled_commands[16][JOURNAL_COMMAND_ID_MAX + 8];
  unsigned handled_next;
  unsigned command_ops;    /* commands.c: journal operations in flight */
  int heartbeat_again;     /* a heartbeat was asked for while one was in flight */

  /* The replay lane (replay.c): one resync at a time, one replay batch in
   * flight, on its own HTTP transfer so that live batches never wait. */
  struct uplink_replay {
    struct journal_command command; /* the running resync ("" id = none) */
    /* The op's copy, the writer thread's while op_busy (the loop reads `command`). */
    struct journal_command op_command;
    struct journal_op op;
    int op_busy;
    struct uplink_http_request req;
    int req_busy;
    struct journal_batch sending;   /* the replay batch in flight; body owned */
    int64_t next_batch_seq;
    uint64_t sent_ms;               /* loop time the batch in flight was posted */
    uint32_t sent_sales;            /* its sales, for the pace (replay_rate) */
    uv_timer_t timer;               /* retry after a failure, or the pace */
    int waiting;                    /* the timer runs */
    int cancelled;                  /* cancelled while op_busy: dropped when done */
    struct backoff backoff;
    char last_error[320];
  } replay;

  /* Shutdown: freed when every handle is closed and no op is pending. */
  int closing;
  unsigned open_handles;
};

/*
 * Records a batch error ("what went wrong, on what") for the status page and
 * logs it (as an error if `loud`, else a warning), except that the same
 * message again within UPLINK_ERROR_REPEAT_MS is only counted: the line
 * that ends a run of repeats says how many were not logged.
 */
void uplink__error(uplink *u, int loud, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The same for a heartbeat's error, rate-limited on its own. */
void uplink__heartbeat_error(uplink *u, int loud, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* After a success: says how many repeats of the last error of `log` were
 * not logged, and lets the next one be logged whatever it says. */
void uplink__error_settled(struct uplink_error_log *log);

/* Starts heartbeats (first one after `first_ms`). */
void uplink__heartbeat_start(uplink *u, uint64_t first_ms);

/* Sends one heartbeat now, unless one is in flight. */
void uplink__heartbeat_send(uplink *u);

/* A short, printable account of the collector's answer for error messages
 * into `out`: a BatchAck's message, or the start of a text body (after what
 * it is, when it says it is no protobuf). Loop thread (uploader.c). */
void uplink__answer_text(const struct uplink_http_request *req, char *out, size_t out_size);

/* Handles the commands of a BatchAck or HeartbeatAck. */
void uplink__commands(uplink *u, size_t n_commands, Pos__V1__Command **commands);

/* Sends a heartbeat as soon as the one in flight (if any) is answered:
 * a command was recorded or finished. */
void uplink__heartbeat_soon(uplink *u);

/* Fills the command reports (every unfinished command, and those finished
 * lately) and the resync progress into `heartbeat`; what it points to lives
 * in `storage` (zeroed before) until the heartbeat is packed, then
 * uplink__reports_clear frees it. Loop thread. */
struct uplink_reports {
  struct journal_command *commands;
  Pos__V1__CommandReport *reports;
  Pos__V1__CommandReport **report_ptrs;
  Pos__V1__ResyncProgress progress;
};
void uplink__commands_report(uplink *u, Pos__V1__Heartbeat *heartbeat,
                             struct uplink_reports *storage);

/* Frees what uplink__commands_report allocated in `storage`. */
void uplink__reports_clear(struct uplink_reports *storage);

/* Records that command `command_id` finished with `state` and `message`
 * (borrowed), then sends a heartbeat. Loop thread. */
void uplink__command_finish(uplink *u, const char *command_id, int state, const char *message);

/* A push ended: push-now commands with nothing unsent older than them are DONE. */
void uplink__commands_push_ended(uplink *u);

/* The push met a problem a person must fix (`problem`, borrowed): running
 * push-now commands are FAILED with it. */
void uplink__commands_push_failed(uplink *u, const char *problem);

/* At start: resumes what was running before a restart (push-now, resync). */
void uplink__commands_resume(uplink *u);

/* The replay lane (replay.c): set up at create, closed with the uplink. */
void uplink__replay_init(uplink *u);
void uplink__replay_close(uplink *u);
/* Starts (or goes on with) the oldest running resync unless one is under way. */
void uplink__replay_kick(uplink *u);
/* Resync `resync_id` was cancelled: stops it if it is the one under way. */
void uplink__replay_cancelled(uplink *u, const char *resync_id);

/* Frees the uplink once nothing of it is pending (closing only). */
void uplink__maybe_free(uplink *u);

#endif
