/*
 * ingest_int.h - shared between the files of collector/ingest/ only:
 * ingest.c (the loop side: batches, heartbeats, delivery reports,
 * checkpoints), state.c (the exactly-once map and its checkpoint encoding)
 * and recovery.c (the thread that rebuilds the map from Kafka).
 *
 * Threads: everything in `struct ingest` belongs to the loop thread, except
 * what is marked "immutable" (set in ingest_create, read by the recovery
 * thread) and `struct ingest_recovery`, which the recovery thread owns
 * until it signals `recovery_async` and the loop joins it.
 */
#ifndef COLLECTOR_INGEST_INT_H
#define COLLECTOR_INGEST_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>
#include <uv.h>

#include "ingest/ingest.h"
#include "kafka/kafka.h"

/* Bounds: each has its own message when hit. */
#define INGEST_MAX_BATCHES_IN_FLIGHT 512       /* batches producing at once */
#define INGEST_MAX_RECORDS_IN_FLIGHT 1000000u  /* records without a delivery report */
#define INGEST_MAX_WAITERS 1024                /* retries waiting for their first attempt */
#define INGEST_MAX_WAITERS_PER_JOURNAL 4
#define INGEST_MAX_HEARTBEATS_IN_FLIGHT 4096
#define INGEST_MAX_JOURNALS 4000000u           /* (store, journal, resync) kept in memory */
#define INGEST_CHECKPOINT_PART_BYTES (256u * 1024) /* below Kafka's default 1 MB record */
#define INGEST_MAX_CHECKPOINT_PARTS 4096u
#define INGEST_TOPIC_NAME_MAX 250
#define INGEST_STORE_ID_MAX 255
#define INGEST_RESYNC_ID_MAX 255

/* Where a journal's records go; the sales stream's topic is sales.v1 for
 * live batches and sales.replay.v1 for replay batches. */
enum ingest_stream {
  INGEST_STREAM_SALES = 0,
  INGEST_STREAM_DLQ,
  INGEST_STREAM_INVENTORY,
  INGEST_STREAM_DLQ_INVENTORY, /* deltas dead-lettered (another store's): dlq.v1, (batch, index) */
  INGEST_STREAM_COUNT
};

/*
 * A position in a stream: (seq, 0) for sales and dead letters. For
 * inventory deltas, the journal rows covered (README, "Inventory deltas"):
 * every row up to `seq` has its deltas in the log, except that of the batch
 * covering rows `first`..`seq` only deltas 1..`index` (1-based, in batch
 * order) may be; a resend of exactly that range completes it.
 */
struct ingest_pos {
  uint64_t seq;
  uint64_t first; /* inventory streams: first row the batch ending at seq covers */
  uint32_t index;
};

/* What the log holds of one delta of a batch (ingest__delta_verdict). */
enum ingest_delta_verdict {
  INGEST_DELTA_PRODUCE = 0, /* above the position: produce it */
  INGEST_DELTA_IN_LOG,      /* its rows' deltas are in the log already */
  INGEST_DELTA_STRADDLES,   /* covers rows on both sides of the position: cannot be split */
};

/* The slot of journal->legacy for an inventory stream. */
#define INGEST_LEGACY_SLOT(stream) ((stream) == INGEST_STREAM_INVENTORY ? 0 : 1)

struct ingest_batch;

/* One (store, journal[, resync]): what the log holds of it. */
struct ingest_journal {
  struct ingest_journal *next; /* hash chain */
  uint64_t hash;
  char *store_id;
  char *resync_id; /* "" for live batches */
  char *device_id; /* the device whose batches it takes (certificate); NULL: not known yet */
  uint8_t journal_id[16];
  uint64_t accepted_batch_seq;
  struct ingest_pos streams[INGEST_STREAM_COUNT];
  /* Inventory positions an older collector (before issue 8) left in batch
   * numbers, (batch_seq, delta index): [0] inventory, [1] dead-lettered
   * deltas. They decide only the batches at or below them. */
  struct ingest_pos legacy[2];
  struct ingest_batch *inflight; /* loop only: the batch producing now, or NULL */
};

struct ingest_state {
  struct ingest_journal **buckets;
  size_t bucket_count;
  size_t journal_count;
};

/* Per data topic and partition, the first offset the state does not cover. */
struct ingest_offsets {
  int64_t *next[KAFKA_DATA_TOPICS];
  int count[KAFKA_DATA_TOPICS];
};

/* A checkpoint part's key ("<instance>/<generation>/<part>") in its partition. */
struct ingest_part_key {
  uint64_t generation;
  uint32_t part;
  int32_t partition;
};

/* Part keys to tombstone once a newer checkpoint is named by its manifest. */
struct ingest_garbage {
  struct ingest_part_key *keys;
  size_t count, capacity;
};
#define INGEST_MAX_GARBAGE_KEYS (16u * INGEST_MAX_CHECKPOINT_PARTS)
#define INGEST_TOMBSTONES_PER_CHECKPOINT INGEST_MAX_CHECKPOINT_PARTS

/* A buffer (caller frees data with free()). */
struct ingest_blob {
  uint8_t *data;
  size_t len;
};

/* What a produced record's delivery report must update. */
enum ingest_record_kind {
  INGEST_REC_BATCH = 1,
  INGEST_REC_HEARTBEAT,
  INGEST_REC_CHECKPOINT,
  INGEST_REC_REBASE,
  INGEST_REC_LEASE,
};

/* Past a request's timeout a broker may still be appending what it had
 * taken: a margin of a fifth of the timeout plus half a second. */
#define INGEST_REQUEST_MARGIN_MS(timeout_ms) ((timeout_ms) / 5 + 500)

/* The end of an instance's lease key in ingest-state.v1: "<instance_id>" INGEST_LEASE_SUFFIX. */
#define INGEST_LEASE_SUFFIX "/lease"

/* How often a running instance renews its claim on its instance_id (pos.proto,
 * InstanceLease). A start watches three periods and 2 s (11 s): within the 12.5 s it waits
 * for the previous run's produce requests after a crash anyway. */
#define INGEST_LEASE_RENEW_MS 3000
/* The random id of a run, in its leases. */
#define INGEST_RUN_ID_BYTES 16

/* A rebase applied to the loop's state while a recovery was running: the
 * rebuilt state may not hold it yet, so it is applied again. */
struct ingest_rebase_applied {
  char store_id[INGEST_STORE_ID_MAX + 1];
  uint8_t journal_id[16];
  uint64_t from_batch_seq;
};
#define INGEST_MAX_REBASES_IN_FLIGHT 64

struct ingest_record {
  void *owner; /* struct ingest_batch, ingest_heartbeat or ingest_checkpoint */
  uint8_t kind;
  uint8_t stream; /* enum ingest_stream, for batch records */
  uint8_t topic;  /* enum kafka_topic */
  uint8_t tracked; /* advances its stream's position when delivered */
  struct ingest_pos pos;
};

enum ingest_phase {
  INGEST_PHASE_RECOVERING = 0, /* the recovery thread is rebuilding the state */
  INGEST_PHASE_READY,          /* batches are accepted */
  INGEST_PHASE_DRAINING,       /* delivery doubt: waiting for every record to come back */
  INGEST_PHASE_CLOSING,
};

/*
 * Runs of other instances waited out for some partitions (InstanceLease.waited_out): while
 * the run's newest lease is still (run_id, renewal), nothing of it can land in those.
 */
struct ingest_waited {
  char *instance_id;
  uint8_t run_id[INGEST_RUN_ID_BYTES];
  uint64_t renewal;
  uint32_t *partitions;
  size_t n_partitions;
};
struct ingest_waited_list {
  struct ingest_waited *items;
  size_t count;
};
/* Entries one lease carries at most (instances that died and were not started again). */
#define INGEST_MAX_WAITED_OUT 64

struct ingest_recovery_stats {
  uint64_t checkpoint_generation; /* 0: none found */
  uint64_t manifest_generation;   /* the newest manifest's (0: none) */
  uint64_t leftover_parts;        /* part keys of other generations, to tombstone */
  int previous_closed_cleanly;    /* the last run shut down cleanly (no produce pending) */
  uint64_t waited_ms;             /* waiting out the previous run's produce requests */
  uint64_t rebases;               /* head-office rebases applied from control.v1 */
  uint64_t checkpoint_journals;
  uint64_t records_read[KAFKA_DATA_TOPICS];
  uint64_t records_dropped_unread; /* retention dropped them between checkpoint and read */
  uint64_t records_folded;
  uint64_t records_foreign; /* without our headers: not from a collector */
  uint64_t other_checkpoints; /* other instances' checkpoints merged */
  uint64_t state_records_read;
  uint64_t elapsed_ms;
  int attempts;
};

/* Handed to the recovery thread; the loop reads it back after joining. */
struct ingest_recovery {
  ingest *in;            /* for its immutable fields only */
  rd_kafka_t *retire;    /* a producer to destroy first (after a delivery doubt) */
  int make_producer;     /* create the producer the loop will use */
  int waited;            /* the previous run's produce requests are waited out */
  /* A fleet gain (ingest_fleet_assign): the state is merged into the loop's for the stores of
   * the partitions taken over; nothing else of it is used. Waits until quiet_until_ms (mono)
   * before it asks where the log ends. */
  int gain;
  uint64_t quiet_until_ms;
  uint8_t *gaining; /* [gaining_count]: 1 for a partition being taken over (a copy) */
  int gaining_count;
  atomic_int stop;
  uv_thread_t thread;
  /* results */
  int rc;
  rd_kafka_t *producer;
  struct ingest_state state;
  struct ingest_offsets offsets;
  struct ingest_offsets fold_from; /* the lowest offsets of every instance's checkpoint */
  char **other_ids; /* instances whose manifests or leases ingest-state.v1 holds, besides this */
  size_t other_count;
  unsigned others_running; /* of them, not known to have stopped with nothing in flight */
  unsigned others_writing; /* of those, whose newest lease may name a partition gained */
  unsigned others_covered; /* of those, named but already waited out (waited_in, leases) */
  struct ingest_waited_list waited_in;  /* a gain: the loop's waited_out, copied */
  struct ingest_waited_list waited_new; /* a gain: the loop's waited_out once it is done */
  uint64_t next_generation;
  uint64_t live_generation; /* the checkpoint loaded (0: none) */
  uint32_t live_parts;
  int32_t live_partition;
  struct ingest_garbage garbage;
  int state_partitions;
  struct ingest_recovery_stats stats;
  /* At start only: whether another run holds this instance_id (its newest
   * lease, from the first read of ingest-state.v1, and where that read ended). */
  int check_lease;
  Pos__V1__InstanceLease *seen_lease; /* NULL: none, or a tombstone */
  int first_run; /* no lease, manifest or part of this instance_id: no earlier run produced */
  int64_t *state_end;
  int clash; /* another instance runs under this instance_id: do not start (err says so) */
  char clash_why[512];
};

struct ingest {
  uv_loop_t *loop;
  /* immutable after ingest_create */
  char *brokers;
  char *instance_id;
  char *kafka_debug;
  char topics[KAFKA_TOPIC_COUNT][INGEST_TOPIC_NAME_MAX + 1];
  uint64_t checkpoint_interval_ms;
  uint64_t produce_timeout_ms;
  /* How late the tick fires: the event loop's lateness, the most of this window and the last
   * (INGEST_LATE_WINDOW_MS each), so that a 503 can say whether Kafka or this process's CPU
   * is what a store waits for. */
  uint64_t tick_last_ms, late_window_ms, late_max_ms, late_prev_ms;
  uint64_t request_timeout_ms; /* the producer's request.timeout.ms */
  size_t checkpoint_part_bytes; /* INGEST_CHECKPOINT_PART_BYTES unless a test asks for less */
  /* Test hook (POS_TEST_KILL_AFTER_CHECKPOINT_RECORDS=N): after producing the
   * Nth record of a checkpoint, flush and SIGKILL this process, the way a
   * crash between two records of one checkpoint would. 0: off. */
  unsigned test_kill_after_checkpoint_records;
  /* Test hook (POS_TEST_KILL_AFTER_DELTA_RECORDS=N): after producing the
   * Nth inventory delta record of this run, flush and SIGKILL, the way a
   * crash half-way through a batch's deltas would. 0: off. */
  unsigned test_kill_after_delta_records;
  unsigned test_delta_records; /* loop only: delta records produced so far */
  int wake_fds[2]; /* librdkafka writes to [1] when its main queue has events */

  kafka_embedded *embedded;
  rd_kafka_t *rk; /* the data topics' idempotent producer; NULL while a recovery replaces it */
  rd_kafka_topic_t *rkt[KAFKA_TOPIC_COUNT];
  /* Heartbeats and checkpoints (agent-status, ingest-state) have a producer
   * of their own, neither idempotent nor gapless: a permanent error there
   * fails that heartbeat or checkpoint only, never the data path (a failed
   * record of the idempotent producer makes it fatal, a delivery doubt). */
  rd_kafka_t *rk_aux;
  rd_kafka_topic_t *rkt_aux[KAFKA_TOPIC_COUNT]; /* STATUS and STATE only */
  size_t outstanding_aux; /* aux records without a delivery report yet */

  uv_poll_t wake_poll;
  uv_timer_t tick;
  uv_async_t recovery_async;
  int handles_open;

  enum ingest_phase phase;
  int doubt; /* a delivery report failed: rebuild before accepting more */
  struct ingest_recovery *recovery;

  struct ingest_state state;
  struct ingest_offsets offsets;
  uint64_t next_generation;
  /* The complete checkpoint the newest acknowledged manifest names (or the
   * one recovery loaded): its part keys are tombstoned only after a newer
   * manifest is acknowledged. 0: none. */
  uint64_t live_generation;
  uint32_t live_parts;
  int32_t live_partition;
  struct ingest_garbage garbage;
  int state_partitions;
  int dirty; /* the state moved since the last checkpoint */
  uint64_t next_checkpoint_ms;
  struct ingest_checkpoint *checkpoint;

  struct ingest_batch *batches; /* in flight, doubly linked */
  struct ingest_waiter *waiters_head, *waiters_tail;
  struct ingest_heartbeat *heartbeats;
  struct ingest_rebase *rebases; /* produced to control.v1, waiting for Kafka */
  unsigned rebase_count;
  struct ingest_rebase_applied reapply[INGEST_MAX_REBASES_IN_FLIGHT];
  unsigned reapply_count;
  unsigned batch_count, waiter_count, heartbeat_count;
  size_t outstanding; /* records produced without a delivery report yet */

  /* This run's claim on instance_id (pos.proto, InstanceLease); not with the embedded Kafka. */
  uint8_t run_id[INGEST_RUN_ID_BYTES];
  int64_t started_wall_ms;
  char host[256];     /* gethostname, in the lease */
  int lease_held;     /* the start found the id free: renewed from then on */
  int lease_inflight; /* a lease record without its delivery report */
  int lease_landed;   /* this run's lease is in Kafka: batches may be produced */
  int lease_release_state; /* 0: none written; 1: in flight; 2: delivered; 3: failed */
  /* The fleet's partitions named in the lease (InstanceLease.writes): fleet_epoch moves
   * when they change; records of a partition are produced only once a lease of the
   * current epoch landed, and a release completes only once the one without them did. */
  uint64_t fleet_epoch, lease_inflight_epoch, lease_landed_epoch;
  uint64_t lease_renewal, lease_next_ms;
  struct ingest_record lease_record;
  struct ingest_waited_list waited_out; /* in every lease (set by a gain's recovery) */
  void (*on_fatal)(void *arg, const char *message);
  void (*on_started)(void *arg);
  int started; /* on_started was called */
  void *fatal_arg;

  /* The fleet (ingest_fleet_*): stores only of the partitions owned. */
  int fleet;
  int fleet_partitions; /* of pos.sales.v1 as last assigned (0: nothing assigned yet) */
  uint8_t *fleet_owned; /* [fleet_partitions]: enum ingest_fleet_state */
  uint8_t *fleet_had;   /* [fleet_partitions]: taken before the release under way */
  uint8_t *fleet_writes;         /* [fleet_partitions]: may have records out (the lease's writes) */
  uint64_t fleet_quiet_until_ms; /* a gain's recovery waits until then (mono) */
  int fleet_gain_pending;        /* partitions to take over once the recovery running is done */
  int recovery_after_doubt;      /* the recovery running follows a delivery doubt */
  /* A release under way: called once nothing produced is without its report. */
  void (*fleet_released)(void *arg);
  void *fleet_released_arg;
  int fleet_releasing, fleet_release_checkpointed;
  int fleet_between;          /* released, and the group's next assignment not in yet */
  uint64_t fleet_lease_wait_ms; /* when a release began waiting for its lease (mono; 0: not) */
  char fleet_off_reason[256]; /* not in the group: why ("" when in it) */
  uint64_t fleet_release_started_ms;
};

enum ingest_fleet_state {
  INGEST_FLEET_NONE = 0,  /* another instance's */
  INGEST_FLEET_TAKEN,     /* this instance's: batches taken */
  INGEST_FLEET_GAINING,   /* assigned; its recovery has not started */
  INGEST_FLEET_REBUILDING /* assigned; the recovery running covers it */
};

/* state.c */
uint64_t ingest__journal_hash(const char *store_id, const uint8_t journal_id[16],
                              const char *resync_id);
void ingest__state_init(struct ingest_state *state);
void ingest__state_free(struct ingest_state *state);
struct ingest_journal *ingest__state_find(const struct ingest_state *state, const char *store_id,
                                          const uint8_t journal_id[16], const char *resync_id);
/* Finds or adds; NULL when out of memory or over INGEST_MAX_JOURNALS. */
struct ingest_journal *ingest__state_get(struct ingest_state *state, const char *store_id,
                                         const uint8_t journal_id[16], const char *resync_id);
int ingest__pos_after(struct ingest_pos a, struct ingest_pos b);
/*
 * Whether delta `index` (1-based, batch order) of batch `batch_seq`, whose
 * deltas cover journal rows first_seq..last_seq (both >= 1), is in the
 * inventory `stream` of `journal` (INGEST_STREAM_INVENTORY or
 * INGEST_STREAM_DLQ_INVENTORY) already. Pure; any thread owning the map.
 */
enum ingest_delta_verdict ingest__delta_verdict(const struct ingest_journal *journal,
                                                enum ingest_stream stream, uint64_t batch_seq,
                                                uint64_t first_seq, uint64_t last_seq,
                                                uint32_t index);
/*
 * Raises the accepted batch_seq of the live journal (store, journal) to
 * from_batch_seq - 1 (Rebase). Returns 0 with *previous set (may be NULL),
 * or -1 out of memory.
 */
int ingest__rebase_apply(struct ingest_state *state, const char *store_id,
                         const uint8_t journal_id[16], uint64_t from_batch_seq,
                         uint64_t *previous);
/* "<store_id>/rebase/<journal hex>", the key of a rebase in control.v1. 0 or -1. */
int ingest__rebase_key(char *out, size_t out_size, const char *store_id,
                       const uint8_t journal_id[16]);

/* Sets journal->device_id when it is not known yet. 0 or -1 (out of memory). */
int ingest__journal_claim(struct ingest_journal *journal, const char *device_id);
enum kafka_topic ingest__stream_topic(const struct ingest_journal *journal,
                                      enum ingest_stream stream);

void ingest__offsets_free(struct ingest_offsets *offsets);
/* Raises offsets[topic][partition] to at least `next`. 0 or -1 (memory, bounds). */
int ingest__offsets_raise(struct ingest_offsets *offsets, int topic, int partition, int64_t next);
int64_t ingest__offsets_get(const struct ingest_offsets *offsets, int topic, int partition);


/*
 * Folds one record of a data topic into `state`: the stream position and
 * accepted batch_seq it proves. Returns 1 when folded, 0 when the record
 * lacks our headers (ignored), -1 out of memory.
 */
int ingest__state_fold(struct ingest_state *state, enum kafka_topic topic,
                       const rd_kafka_message_t *record);

/*
 * Raises the positions of `into`'s journals to those of `from`'s, for the
 * journals whose store `take` says yes to (added when missing). Each
 * position is a lower bound of what the log holds, so the higher one is
 * too. Returns 0 with *merged, or -1 out of memory.
 */
int ingest__state_merge(struct ingest_state *into, const struct ingest_state *from,
                        int (*take)(void *arg, const char *store_id), void *arg, size_t *merged);

/* Applies one checkpoint part. Returns 0 or -1 (out of memory). */
int ingest__checkpoint_apply(struct ingest_state *state, struct ingest_offsets *offsets,
                             const char (*topics)[INGEST_TOPIC_NAME_MAX + 1],
                             const Pos__V1__IngestCheckpoint *part);

/*
 * Encodes the state and offsets as checkpoint parts of at most about
 * `part_bytes` each. Returns 0 with *parts (caller frees each data and the
 * array) and *part_count, or -1 out of memory / too many parts.
 */
int ingest__checkpoint_encode(const struct ingest_state *state,
                              const struct ingest_offsets *offsets,
                              const char (*topics)[INGEST_TOPIC_NAME_MAX + 1],
                              const char *instance_id, uint64_t generation, int64_t created_ms,
                              size_t part_bytes, struct ingest_blob **parts, size_t *part_count);

/* "<instance_id>/<generation>/<part>", the key of a checkpoint part. 0 or -1 (does not fit). */
/* "<instance_id>/lease", the key of the instance's InstanceLease in ingest-state.v1. 0 or -1. */
int ingest__lease_key(char *out, size_t out_size, const char *instance_id);
int ingest__checkpoint_part_key(char *out, size_t out_size, const char *instance_id,
                                uint64_t generation, uint32_t part);
/* Adds a part key to delete later; 0, or -1 when out of memory or over
 * INGEST_MAX_GARBAGE_KEYS (the key stays: it only costs space). */
int ingest__garbage_add(struct ingest_garbage *garbage, uint64_t generation, uint32_t part,
                        int32_t partition);
void ingest__garbage_free(struct ingest_garbage *garbage);

void ingest__waited_free(struct ingest_waited_list *list);
/* Deep copy into `to` (emptied first). Returns 0 or -1 (out of memory: `to` left empty). */
int ingest__waited_copy(struct ingest_waited_list *to, const struct ingest_waited_list *from);

/* ingest.c: a producer whose events wake the loop (any thread). NULL with err. */
rd_kafka_t *ingest__producer_new(ingest *in, char *err, size_t err_size);

/* recovery.c (loop thread) */
int ingest__recovery_start(ingest *in, rd_kafka_t *retire, int make_producer);
/* A fleet gain's recovery (struct ingest_recovery, gain). 0 or -1. */
int ingest__recovery_start_gain(ingest *in, uint64_t quiet_until_ms, const uint8_t *gaining,
                                int gaining_count);
/* Joins the thread; returns it (caller frees with ingest__recovery_free). */
struct ingest_recovery *ingest__recovery_join(ingest *in);
void ingest__recovery_free(struct ingest_recovery *recovery);

#endif
