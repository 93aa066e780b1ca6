/*
 * control.h - head office's side of the collector (issue 10): the commands
 * of every store (resync, push-now) and the fleet view (the latest
 * heartbeat of every (store, device)).
 *
 * Both live in memory and are rebuilt at start, on a thread of their own,
 * from pos.control.v1 (keys "<store_id>/command/<command_id>", latest record
 * wins, a null value deletes) and pos.agent-status.v1 (keys
 * "<store_id>/<device_id>"). Until that read has reached the end of both
 * topics control_ready() is 0: the admin API answers 503 and acks carry no
 * commands.
 *
 * A command is issued (control_issue) and changed (reports in heartbeats,
 * control_cancel) by producing it again, whole, to pos.control.v1 through
 * ingest_submit_control; an admin is answered only once Kafka acknowledged.
 *
 * Life cycle (spec10.md): PENDING until a target reports it; RUNNING while
 * any target reports it running; finished when every target reported a
 * final state: DONE if all DONE, else FAILED if any FAILED, else
 * INCOMPLETE. CANCELLED by an admin while PENDING or RUNNING.
 *
 * Everything here runs on the loop thread given to control_create, except
 * the loader thread, which owns what it builds until the loop adopts it.
 */
#ifndef COLLECTOR_CONTROL_H
#define COLLECTOR_CONTROL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "ingest/ingest.h"
#include "pos/v1/pos.pb-c.h"

#define CONTROL_ID_MAX 64          /* store, device and admin names (identity.h) */
#define CONTROL_COMMAND_ID_MAX 96  /* "push-now-20261126T031500Z-a1b2c3" */
#define CONTROL_MESSAGE_MAX 512    /* a report's message, as kept */
#define CONTROL_REQUEST_ID_MAX 64  /* an admin's idempotency key */
#define CONTROL_TARGET_AGE_MS (7LL * 24 * 3600 * 1000) /* targets: seen in the last 7 days */
#define CONTROL_MAX_TARGETS 64
#define CONTROL_MAX_STORES 1000000u
#define CONTROL_MAX_COMMANDS 1000000u

enum control_kind { CONTROL_RESYNC = 1, CONTROL_PUSH_NOW = 2 };

/* One target's last report of a command (Pos__V1__CommandReport). */
struct control_report {
  char device_id[CONTROL_ID_MAX + 1];
  int state; /* Pos__V1__CommandState */
  uint64_t done_sales, total_sales;
  int64_t available_from_ms;
  int64_t updated_ms;
  char message[CONTROL_MESSAGE_MAX + 1];
};

struct control_command {
  struct control_command *next_by_id; /* internal: hash chain */
  char command_id[CONTROL_COMMAND_ID_MAX + 1];
  char store_id[CONTROL_ID_MAX + 1];
  enum control_kind kind;
  int64_t from_ms, to_ms; /* resync: [from, to), to 0 = no end */
  int64_t issued_ms;
  char issued_by[CONTROL_ID_MAX + 1];
  char request_id[CONTROL_REQUEST_ID_MAX + 1]; /* "" when the admin gave none */
  int state; /* Pos__V1__CommandState */
  int64_t updated_ms;
  char updated_by[CONTROL_ID_MAX + 16];
  char (*targets)[CONTROL_ID_MAX + 1]; /* target_count of them */
  size_t target_count;
  struct control_report *reports; /* report_count of them, one per device that reported */
  size_t report_count;
  /* loop only: the state Kafka holds (acknowledged), and a record in flight */
  int recorded_state;
  int recording;
  int unrecorded_targets; /* targets changed since Kafka last took the command */
};

struct control_device {
  char device_id[CONTROL_ID_MAX + 1];
  Pos__V1__Heartbeat *heartbeat; /* the latest, as produced; NULL before the first */
  int64_t last_batch_ms;         /* memory only: 0 = none since start */
};

struct control_store {
  struct control_store *next; /* internal: hash chain */
  char store_id[CONTROL_ID_MAX + 1];
  struct control_device *devices; /* sorted by device_id */
  size_t device_count;
  struct control_command **commands; /* oldest issued first */
  size_t command_count, command_capacity;
  int64_t decommissioned_ms; /* 0: in service (pos.control.v1 "<store>/decommissioned") */
  char decommissioned_by[CONTROL_ID_MAX + 1];
  char decommission_reason[CONTROL_MESSAGE_MAX + 1];
};

typedef struct control control;

struct control_options {
  int64_t keep_finished_ms; /* finished commands older than this are dropped; 0: never */
  size_t max_commands;      /* commands held in memory; 0: CONTROL_MAX_COMMANDS */
  int64_t token_lifetime_ms; /* enrolment tokens' default validity; 0: no enrolment */
};

/*
 * Starts the loader thread reading `brokers` (borrowed for the call) under
 * `topic_prefix`; `in` (borrowed, must outlive the control) produces its
 * records. `options` (borrowed for the call; NULL: keep everything, the
 * default cap). NULL with `err` set when out of memory or no thread can start.
 *
 * Finished commands older than keep_finished_ms are dropped from memory and
 * tombstoned in pos.control.v1 (at the load, then at most once a minute on
 * an issue or a heartbeat), so that neither grows by one command forever.
 */
control *control_create(uv_loop_t *loop, ingest *in, const char *brokers,
                        const char *topic_prefix, const char *kafka_debug,
                        const struct control_options *options, char *err, size_t err_size);

/* 1 once both topics were read to their end. */
int control_ready(const control *c);

/* Stops the loader (joins it) and frees everything. Commands being
 * recorded are answered UNAVAILABLE by the ingest, whose callbacks must have
 * run before (destroy the ingest first). NULL does nothing. */
void control_destroy(control *c);

/*
 * A heartbeat Kafka acknowledged (taken: kept as the device's latest): the
 * fleet view takes it, and its command_reports update the store's
 * commands; a change of a command's state is produced to pos.control.v1.
 */
void control_heartbeat(control *c, Pos__V1__Heartbeat *heartbeat);

/* A batch of (store, device) was answered 200: its last contact. */
void control_batch_seen(control *c, const char *store_id, const char *device_id);

/*
 * The commands an ack to (store, device) carries (spec10.md): PENDING and
 * RUNNING ones whose targets include the device, and CANCELLED ones the
 * device last reported running. A PENDING command with no target (none
 * known when issued) takes this device as its one target, recorded in
 * pos.control.v1, and goes to no other device afterwards. Returns the count and
 * sets *commands (caller frees with control_ack_free); 0 and NULL when none
 * or not ready.
 */
size_t control_ack_commands(control *c, const char *store_id, const char *device_id,
                            Pos__V1__Command ***commands);
void control_ack_free(Pos__V1__Command **commands, size_t count);

/* What an admin asks (POST /v1/admin/resync, /v1/admin/push-now). */
struct control_request {
  enum control_kind kind;
  const char *store_id;
  const char *device_id; /* NULL: the store's devices seen in the last 7 days */
  int64_t from_ms, to_ms;
  const char *admin;
  const char *request_id; /* NULL or "": none; else at most CONTROL_REQUEST_ID_MAX bytes */
};

/* Called once per control_issue/control_cancel accepted: `command` (NULL
 * with status >= 400) is borrowed for the call; `message` says why not. */
typedef void (*control_done_fn)(void *arg, int status, const struct control_command *command,
                                const char *message);

/*
 * Issues a command: validates it (400 with `err`: unknown device of the
 * store; 503 when memory holds max_commands already), makes its id, and
 * produces it (PENDING). Returns 0 and calls
 * `done` later with 201 once Kafka acknowledged it (503 if it did not), or
 * returns the HTTP status (400, 503) with `err` set and never calls `done`.
 *
 * With a request_id the store already has a command of, nothing new is
 * made: `done` gets 200 and that command (before control_issue returns when
 * Kafka holds it; once recorded again when its first record was not
 * acknowledged). A command whose first record Kafka did not acknowledge in
 * time is kept, unrecorded, when it has a request_id: that record may land
 * later, and a retry must find the same command rather than make a second.
 * `warnings` (may be NULL) receives up to 8 lines of at most 300 bytes.
 */
int control_issue(control *c, const struct control_request *request, control_done_fn done,
                  void *arg, char (*warnings)[300], size_t *warning_count, char *err,
                  size_t err_size);

/*
 * Cancels command `command_id` for `admin`. Returns 0 and calls `done`
 * later (200 once recorded, 503), or returns 404 / 409 (finished: `err`
 * says its state) / 503 without calling `done`.
 */
int control_cancel(control *c, const char *command_id, const char *admin, control_done_fn done,
                   void *arg, char *err, size_t err_size);

/* Lookups, borrowed until the next call that changes the control. */
const struct control_command *control_find_command(const control *c, const char *command_id);
const struct control_store *control_find_store(const control *c, const char *store_id);
/* Every store, sorted by store_id (caller frees the array). NULL when none or out of memory. */
const struct control_store **control_stores(const control *c, size_t *count);

/* ---- enrolment tokens (tokens.c, issue 13) ------------------------------------------- */

#define CONTROL_TOKEN_ID_HEX 16     /* the public part: names the record */
#define CONTROL_TOKEN_SECRET_HEX 32 /* 128 bits: the part only the device is given */
/* "<token_id>.<secret>" */
#define CONTROL_TOKEN_TEXT_MAX (CONTROL_TOKEN_ID_HEX + 1 + CONTROL_TOKEN_SECRET_HEX)
#define CONTROL_MAX_TOKENS 100000u
#define CONTROL_PEER_MAX 64
#define CONTROL_SERIAL_MAX 80

/* One enrolment token as kept (Pos__V1__EnrolToken, the secret's hash only). */
struct control_token {
  struct control_token *next; /* internal: the map's list */
  char token_id[CONTROL_TOKEN_ID_HEX + 1];
  char store_id[CONTROL_ID_MAX + 1];
  char device_id[CONTROL_ID_MAX + 1];
  unsigned char secret_sha256[32];
  int64_t issued_ms, expires_ms, used_ms;
  char issued_by[CONTROL_ID_MAX + 1];
  char used_by[CONTROL_PEER_MAX + 1];
  char certificate_serial[CONTROL_SERIAL_MAX + 1];
  unsigned char public_key_sha256[32]; /* of the certificate it got; zero before */
  int using; /* loop only: a use waits for Kafka */
};

/* Called once per control_token_issue/control_token_use accepted, on the loop:
 * `status` 201 (issued) / 200 (used) / 503; `token` borrowed for the call (a
 * copy); `text` the whole token "<id>.<secret>" after an issue, else "". */
typedef void (*control_token_fn)(void *arg, int status, const struct control_token *token,
                                 const char *text, const char *message);

/*
 * Issues a token for `device_id` of `store_id`, valid for `valid_ms` from
 * now, and produces its record. Returns 0 and calls `done` with 201 and the
 * token's text once Kafka acknowledged it (503 if it did not); or returns
 * 400 (a bad id or validity) / 503 (not ready, too many tokens, memory) with
 * `err` set, without calling `done`. The secret exists only in that call.
 */
/* The default validity of a token; 0 when this collector does not enrol. */
int64_t control_token_lifetime_ms(const control *c);

int control_token_issue(control *c, const char *store_id, const char *device_id,
                        int64_t valid_ms, const char *issued_by, control_token_fn done,
                        void *arg, char *err, size_t err_size);

/*
 * Checks `presented` ("<id>.<secret>") for the device `device_id` of
 * `store_id` at `now_ms`. Returns 0 with *token (borrowed until the next
 * change), or the HTTP status with `err` saying why, in words for the person
 * at the device: 401 not a token of ours (malformed, unknown id, wrong
 * secret), 403 used already, expired, or issued for another store or
 * device, 409 being used by another request this instant, 503 not ready.
 * A token used already by this device is refused with 403 and *token set:
 * the caller may answer a repeat of the same request (same key) again.
 */
int control_token_check(control *c, const char *presented, const char *store_id,
                        const char *device_id, int64_t now_ms,
                        const struct control_token **token, char *err, size_t err_size);

/*
 * Marks token `token_id` (checked just before) used by `used_by` for the
 * certificate `serial`, in Kafka. Returns 0 and calls `done` with 200 once
 * Kafka holds the mark (503 if it does not: the token stays usable), or 503
 * with `err`. Until then the token is refused with 409.
 */
int control_token_use(control *c, const char *token_id, const char *used_by,
                      const char *serial, const unsigned char public_key_sha256[32],
                      control_token_fn done, void *arg, char *err, size_t err_size);

/* Called once per control_decommission accepted, on the loop: 200, or 503 with `message`. */
typedef void (*control_store_fn)(void *arg, int status, const char *message);

/*
 * Decommissions store `store_id` (or, with `undo`, puts it back in service)
 * for `admin`, with `reason` (may be NULL): its devices get no enrolment and
 * no renewal. Returns 0 and calls `done` once Kafka holds it (503 if not),
 * or 400 / 409 (already so) / 503 with `err`, without calling `done`.
 */
int control_decommission(control *c, const char *store_id, int undo, const char *admin,
                         const char *reason, control_store_fn done, void *arg, char *err,
                         size_t err_size);

/*
 * 0 when store `store_id` may get certificates; else 403 with `err` saying
 * it was decommissioned, when and by whom (503 while not ready).
 */
int control_store_may_enrol(const control *c, const char *store_id, char *err, size_t err_size);

/* RFC 3339 UTC ("2026-11-26T03:00:00Z"), or "-" for 0. */
void control_format_time(int64_t ms, char out[32]);

/* "pending", "running", ... for a Pos__V1__CommandState. Static. */
const char *control_state_name(int state);
/* 1 for DONE, INCOMPLETE, FAILED, CANCELLED. */
int control_state_final(int state);

#endif
