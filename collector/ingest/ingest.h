/*
 * ingest.h - a decoded batch in, an acknowledgement out: the collector's
 * exactly-once path into Kafka (ARCHITECTURE.md, Delivery guarantees).
 *
 * For every stream - a (topic, store_id, journal_id[, resync_id]) - the
 * ingest keeps the highest seq (for deltas: journal row covered) the log
 * holds, and for every (store_id,
 * journal_id[, resync_id]) the highest batch_seq accepted. A batch is:
 *   - a duplicate when its batch_seq is at or below the accepted one:
 *     acknowledged again, nothing produced;
 *   - a gap when its batch_seq is above accepted + 1: answered with the
 *     batch_seq the agent must resume at;
 *   - otherwise each sale above the stream's highest seq is checked
 *     (proto_sale_check) and produced, in seq order, to pos.sales.v1 (live)
 *     or pos.sales.replay.v1 (replay), or to pos.dlq.v1 with the reason when
 *     it fails the check; its inventory deltas to pos.inventory-deltas.v1,
 *     positioned not by batch number but by the journal rows they cover
 *     (collector/README.md, "Inventory deltas"): a delta whose rows the
 *     log holds is never produced again, whatever batch carries it.
 *     The batch is acknowledged only when every record's delivery report
 *     succeeded.
 * Only one batch per (store, journal) is in flight: a retry that arrives
 * while the first attempt is producing waits for it, then is a duplicate.
 *
 * State is rebuilt, before any batch of the stores concerned is accepted,
 * from the last checkpoint in pos.ingest-state.v1 plus the data topics read
 * from the checkpoint's offsets to their end: at start, and after any
 * delivery doubt (a failed delivery report).
 *
 * Heartbeats and checkpoints go through a second producer, not idempotent:
 * a topic of theirs refusing records fails those records only, while a
 * failed record of the data producer is a delivery doubt.
 *
 * All calls and callbacks run on the loop thread given to ingest_create.
 */
#ifndef COLLECTOR_INGEST_H
#define COLLECTOR_INGEST_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "pos/v1/pos.pb-c.h"

struct ingest_options {
  const char *brokers;        /* "" or NULL: start the embedded Kafka (mock cluster) */
  const char *topic_prefix;   /* "pos." */
  const char *instance_id;    /* key of this collector's checkpoints */
  int embedded_partitions;    /* partitions per topic of the embedded Kafka */
  uint64_t checkpoint_interval_ms;
  uint64_t produce_timeout_ms; /* answer 503 if Kafka has not acknowledged by then */
  const char *kafka_debug;    /* librdkafka "debug" property, or NULL */
  /* The producer's request.timeout.ms (0: KAFKA_PRODUCE_REQUEST_TIMEOUT_MS).
   * A broker may act on a produce request this long after it was sent, so
   * after a delivery doubt, and at a start that does not follow a clean
   * shutdown, recovery waits this long plus a margin before it asks where
   * the log ends. Lower it only after a clean stop: the wait covers the
   * previous run's requests with this run's value. */
  uint64_t request_timeout_ms;
  /* Called (loop thread) when this instance must not go on: another
   * collector runs under the same instance_id. The message is for people;
   * the caller stops and exits with an error. NULL: only logged. */
  void (*on_fatal)(void *arg, const char *message);
  /* Called once (loop thread), when the first rebuild of the state is done
   * and this run holds its instance_id: the time to join the collectors'
   * group. NULL: none. Both callbacks get fatal_arg. */
  void (*on_started)(void *arg);
  void *fatal_arg;
};

typedef struct ingest ingest;

enum ingest_outcome {
  INGEST_ACCEPTED = 0,   /* produced and acknowledged by Kafka: 200 */
  INGEST_DUPLICATE = 1,  /* accepted before: 200, nothing produced */
  INGEST_GAP = 2,        /* 409 with expected_batch_seq */
  INGEST_UNAVAILABLE = 3, /* Kafka cannot take it now, or state is being rebuilt: 503 */
  INGEST_REFUSED = 4,     /* never acceptable as sent (see code): 403, nothing produced */
};

struct ingest_result {
  enum ingest_outcome outcome;
  uint64_t acked_batch_seq;    /* highest accepted for the batch's journal */
  uint64_t expected_batch_seq; /* with INGEST_GAP */
  uint32_t produced;           /* sales produced to the sales/replay topic */
  uint32_t dead_lettered;      /* sales produced to the DLQ */
  uint32_t skipped;            /* sales already in the log */
  uint32_t deltas_produced;    /* inventory deltas produced to pos.inventory-deltas.v1 */
  uint32_t deltas_dead_lettered; /* deltas produced to the DLQ (another store, unpositionable) */
  uint32_t deltas_skipped;     /* deltas whose rows the log holds already (or a replay's) */
  int retry_after_s;           /* with INGEST_UNAVAILABLE */
  int code; /* Pos__V1__BatchAckCode: INGEST_REFUSED, INGEST_GAP, a 503 of another instance's */
  uint64_t previous_acked_batch_seq; /* ingest_submit_rebase: before the rebase */
  char message[256];           /* for people, on anything but ACCEPTED */
};

/* Called once per submitted batch or heartbeat, on the loop thread. */
typedef void (*ingest_done_fn)(void *arg, const struct ingest_result *result);

/*
 * Connects to Kafka (or starts the embedded one and logs its bootstrap
 * address) and starts rebuilding state in the background; batches are
 * answered INGEST_UNAVAILABLE until that is done. Returns NULL with `err`
 * set on failure.
 */
ingest *ingest_create(uv_loop_t *loop, const struct ingest_options *options, char *err,
                      size_t err_size);

/* Bootstrap servers in use ("127.0.0.1:39123" for the embedded Kafka). Borrowed. */
const char *ingest_bootstrap(const ingest *in);

/* 1 once state is rebuilt and batches are accepted (in a fleet: of every partition assigned,
 * none still being taken over). */
int ingest_ready(const ingest *in);

/*
 * 1 when a load balancer should send this instance stores: it was started
 * (its state rebuilt, its instance_id claimed) and, in a fleet, is in the
 * group with partitions, even while some of them are being handed over (the
 * stores of those are answered 503 with Retry-After meanwhile, on every
 * instance alike). Else 0 with `reason` saying why.
 */
int ingest_takes_stores(const ingest *in, char *reason, size_t reason_size);

/* How late the event loop has run lately (ms, the most of the last 5 to 10 s): its CPU load. */
uint64_t ingest_loop_late_ms(const ingest *in);

/*
 * Works out on the calling thread (any: a decode worker) what
 * ingest_submit_batch needs of each sale of pooled `batch` from store
 * `store_id` (its seq, the order the sales go in, whether its store and
 * proto_sale_check agree) and keeps it in the batch, so that the loop reads
 * a few bytes per sale instead of the sales. Optional: a batch without it
 * (not pooled, or another store) is worked out on the loop. Returns 0, or -1
 * when the batch is not pooled or memory ran out (nothing kept).
 */
int ingest_prepare_batch(Pos__V1__Batch *batch, const char *store_id);

/*
 * Takes `batch` (freed with proto_batch_free when done: pooled or not) whose
 * envelope store_id the caller has already checked against the client
 * certificate. `done` is always called exactly once, possibly before this
 * returns. Returns 0.
 */
int ingest_submit_batch(ingest *in, const char *store_id, Pos__V1__Batch *batch,
                        ingest_done_fn done, void *arg);

/*
 * Records head office's approval that batch `from_batch_seq` (>= 1) of the
 * live journal (store_id, journal_id) may come next (pos.proto, Rebase):
 * produced to pos.control.v1, then applied, raising the journal's accepted
 * batch_seq to from_batch_seq - 1 (never lowering it). `done` gets ACCEPTED
 * with acked_batch_seq (after) and previous_acked_batch_seq (before), or
 * UNAVAILABLE (not ready, Kafka did not take it). `approved_by` names the
 * admin certificate; it is logged and kept in the record. Loop thread.
 */
int ingest_submit_rebase(ingest *in, const char *approved_by, const char *store_id,
                         const uint8_t journal_id[16], uint64_t from_batch_seq,
                         ingest_done_fn done, void *arg);

/*
 * Produces a heartbeat (taken) to pos.agent-status.v1, keyed "store_id/device_id"
 * (the caller sets device_id from the certificate),
 * and calls `done` after its delivery report (ACCEPTED or UNAVAILABLE).
 */
int ingest_submit_heartbeat(ingest *in, const char *store_id, Pos__V1__Heartbeat *heartbeat,
                            ingest_done_fn done, void *arg);

/*
 * Produces one record of pos.control.v1 (head-office commands: key
 * "<store_id>/command/<command_id>", value `value`, taken, freed in every
 * case) through the aux producer, and calls `done` once Kafka acknowledged
 * it (ACCEPTED) or did not take it (UNAVAILABLE with the reason). Accepted
 * while the data path rebuilds its state. Loop thread.
 */
int ingest_submit_control(ingest *in, const char *key, uint8_t *value, size_t len,
                          ingest_done_fn done, void *arg);

/*
 * The fleet (ARCHITECTURE.md, Delivery guarantees 5; kafka/ownership.h):
 * with several instances, each writes only the stores of the partitions of
 * pos.sales.v1 that the collectors' group assigns it (a store's partition:
 * ownership_store_partition), and answers the others 503.
 *
 * ingest_fleet_enable: from now on no store is taken until
 * ingest_fleet_assign names its partition.
 *
 * ingest_fleet_release: the group takes every partition back (a
 * rebalance; `lost`: it had given them to others already). Batches are
 * answered 503 at once; once every record produced has its delivery report
 * (and a checkpoint is written when the state moved), `released` is
 * called, and only then may the member give the partitions up: the next
 * owner finds in the log everything this one wrote. Lost, with records out:
 * they are purged and waited out first (a delivery doubt).
 *
 * ingest_fleet_assign: `owned[p]` for each of `partitions`. A partition
 * this instance had before the release (not lost, and `rejoined` 0: the
 * member was not put out of the group meanwhile) is taken at once; any
 * other once a recovery has read every instance's checkpoint and the log to
 * its end, after the previous owner's produce requests can no longer land.
 *
 * ingest_fleet_off: the group cannot be joined (misconfigured; `reason`
 * for people): no store is taken (another instance may be writing it),
 * each batch answered 503 with the reason, until an assignment comes.
 */
void ingest_fleet_enable(ingest *in);
void ingest_fleet_off(ingest *in, const char *reason);
void ingest_fleet_release(ingest *in, int lost, void (*released)(void *arg), void *arg);
void ingest_fleet_assign(ingest *in, const uint8_t *owned, int partitions, int rejoined);

/*
 * Flushes what is in flight (bounded by `timeout_ms`), writes a last
 * checkpoint, and frees everything; pending callbacks are called with
 * INGEST_UNAVAILABLE. `in` may be NULL. Returns 1 when nothing produced was
 * left without its delivery report (nothing of this run can land later),
 * else 0.
 */
int ingest_destroy(ingest *in, uint64_t timeout_ms);

#endif
