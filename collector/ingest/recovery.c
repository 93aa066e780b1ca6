/*
 * recovery.c - rebuilds the exactly-once map from Kafka on a thread of its
 * own, so that the loop keeps serving (batches are answered UNAVAILABLE
 * meanwhile): the last complete checkpoint of this instance in
 * ingest-state.v1, then every data topic read from the checkpoint's offsets
 * to the end the log has when the read starts.
 *
 * After a delivery doubt the thread first destroys the old producer (so
 * that nothing of it can still land behind our read) and makes a new one.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest_int.h"
#include "platform/clock.h"
#include "platform/log.h"

#define INGEST_RECOVERY_RETRY_MS 2000
#define INGEST_RECOVERY_STALL_MS 30000
#define INGEST_METADATA_TIMEOUT_MS 5000

/* What pass 1 knows of one generation's part keys. */
struct ingest_generation {
  uint64_t generation;
  uint32_t parts;
  uint32_t present_count;
  int32_t partition;
  int64_t first_offset; /* of its lowest part record seen */
  uint8_t *present;     /* [parts]: the key's newest record is a part, not a tombstone */
};

struct ingest_scan {
  const char *instance_id;
  size_t id_len;
  char lease_key[INGEST_TOPIC_NAME_MAX + 16]; /* "<instance_id>/lease" */
  size_t lease_key_len;
  Pos__V1__InstanceLease *lease; /* the newest lease record (NULL: none, tombstone) */
  uint64_t own_records; /* under this instance's keys (lease, parts, manifests, tombstones) */
  struct ingest_generation *generations;
  size_t count, capacity;
  uint64_t max_generation;
  /* the newest manifest */
  uint64_t manifest_generation;
  uint32_t manifest_parts;
  int manifest_closed_cleanly;
  /* pass 2: the chosen generation's parts, as pass 1 left them (records from `until` on are
   * newer: the instance may have written a newer checkpoint and tombstoned the chosen one) */
  const struct ingest_generation *chosen;
  const int64_t *until;
  Pos__V1__IngestCheckpoint **msgs;
  int oom;
  /* Other instances whose manifest keys were seen (their checkpoints are merged too). */
  char **others;
  size_t other_count;
  int too_many; /* more other instances than INGEST_MAX_OTHER_INSTANCES */
};

/* Instances whose checkpoints one recovery merges besides its own. */
#define INGEST_MAX_OTHER_INSTANCES 256

static void ingest_other_ids_free(struct ingest_recovery *r)
{
  for (size_t i = 0; i < r->other_count; i++)
    free(r->other_ids[i]);
  free(r->other_ids);
  r->other_ids = NULL;
  r->other_count = 0;
}

/*
 * Splits a key of this instance: 1 for the manifest key ("<instance>"), 2
 * for a part key ("<instance>/<generation>/<part>") with *generation and
 * *part set, 0 for anything else (another instance, the pre-issue-7 keys).
 */
static int ingest_scan_key(const struct ingest_scan *scan, const rd_kafka_message_t *record,
                           uint64_t *generation, uint32_t *part)
{
  const char *key = record->key, *end;
  uint64_t numbers[2] = {0, 0};
  size_t at;

  if (!key || record->key_len < scan->id_len || memcmp(key, scan->instance_id, scan->id_len))
    return 0;
  if (record->key_len == scan->id_len)
    return 1;
  end = key + record->key_len;
  at = scan->id_len;
  for (int n = 0; n < 2; n++) {
    const char *digit = key + at + 1;
    if (key + at >= end || key[at] != '/' || digit >= end)
      return 0;
    for (; digit < end && *digit != '/'; digit++) {
      if (*digit < '0' || *digit > '9' || numbers[n] > UINT64_MAX / 10 - 9)
        return 0;
      numbers[n] = numbers[n] * 10 + (uint64_t)(*digit - '0');
    }
    at = (size_t)(digit - key);
  }
  if (key + at != end || numbers[1] >= INGEST_MAX_CHECKPOINT_PARTS)
    return 0;
  *generation = numbers[0];
  *part = (uint32_t)numbers[1];
  return 2;
}

static struct ingest_generation *ingest_scan_generation(struct ingest_scan *scan,
                                                        uint64_t generation, int add)
{
  struct ingest_generation *g;

  /* Generations arrive mostly in order: look from the newest. */
  for (size_t i = scan->count; i > 0; i--) {
    if (scan->generations[i - 1].generation == generation)
      return &scan->generations[i - 1];
  }
  if (!add)
    return NULL;
  if (scan->count == scan->capacity) {
    size_t capacity = scan->capacity ? scan->capacity * 2 : 16;
    struct ingest_generation *grown = realloc(scan->generations, capacity * sizeof(*grown));
    if (!grown)
      return NULL;
    scan->generations = grown;
    scan->capacity = capacity;
  }
  g = &scan->generations[scan->count++];
  memset(g, 0, sizeof(*g));
  g->generation = generation;
  g->first_offset = -1;
  return g;
}

/* Unpacks a checkpoint record of this instance; NULL when it is not one. */
static Pos__V1__IngestCheckpoint *ingest_scan_unpack(const struct ingest_scan *scan,
                                                     const rd_kafka_message_t *record)
{
  Pos__V1__IngestCheckpoint *msg = pos__v1__ingest_checkpoint__unpack(NULL, record->len,
                                                                      record->payload);
  if (!msg) {
    log_warn("ingest", "checkpoint_unreadable", "partition=%d offset=%" PRId64,
             (int)record->partition, record->offset);
    return NULL;
  }
  if (!msg->instance_id || strcmp(msg->instance_id, scan->instance_id) != 0 || msg->parts == 0 ||
      msg->parts > INGEST_MAX_CHECKPOINT_PARTS || msg->part >= msg->parts) {
    pos__v1__ingest_checkpoint__free_unpacked(msg, NULL);
    return NULL;
  }
  return msg;
}

/*
 * Pass 1 of this instance's scan: another instance's key. A key without '/'
 * is its manifest, "<id>/lease" its lease (every run claims one before it
 * produces anything, checkpoint or not): either names an instance.
 */
static int ingest_scan_note_other(struct ingest_scan *scan, const rd_kafka_message_t *record)
{
  const char *key = record->key;
  const size_t suffix = sizeof(INGEST_LEASE_SUFFIX) - 1;
  size_t len = record->key_len;
  char *id;

  if (len > suffix && memcmp(key + len - suffix, INGEST_LEASE_SUFFIX, suffix) == 0)
    len -= suffix;
  if (len == 0 || len > INGEST_TOPIC_NAME_MAX || memchr(key, '/', len) ||
      (len == scan->id_len && memcmp(key, scan->instance_id, len) == 0))
    return 0;
  for (size_t i = 0; i < scan->other_count; i++) {
    if (strlen(scan->others[i]) == len && memcmp(scan->others[i], key, len) == 0)
      return 0;
  }
  if (scan->other_count == INGEST_MAX_OTHER_INSTANCES) {
    /* Skipping one would skip what it wrote: refused, with what to do. */
    scan->too_many = 1;
    return -1;
  }
  id = malloc(len + 1);
  if (!id) {
    scan->oom = 1;
    return -1;
  }
  memcpy(id, key, len);
  id[len] = '\0';
  scan->others[scan->other_count++] = id;
  return 0;
}

/* Whether `lease` is of the same run as `other`. */
static int ingest_lease_same_run(const Pos__V1__InstanceLease *lease,
                                 const Pos__V1__InstanceLease *other)
{
  return lease->run_id.len == other->run_id.len &&
         memcmp(lease->run_id.data, other->run_id.data, lease->run_id.len) == 0;
}

/* Pass 1: which part keys are present (newest record not a tombstone), and the newest manifest. */
static int ingest_scan_record(void *arg, const rd_kafka_message_t *record)
{
  struct ingest_scan *scan = arg;
  Pos__V1__IngestCheckpoint *msg;
  Pos__V1__InstanceLease *lease;
  struct ingest_generation *g;
  uint64_t generation = 0;
  uint32_t part = 0;
  int kind = ingest_scan_key(scan, record, &generation, &part);

  if (kind != 0)
    scan->own_records++;
  if (kind == 0 && record->key_len == scan->lease_key_len && scan->lease_key_len &&
      memcmp(record->key, scan->lease_key, scan->lease_key_len) == 0) {
    scan->own_records++;
    /* All of an instance's records are in one partition: the last one read is the newest,
     * but for a renewal of the same run below the one read (a retried write that landed
     * late: the lease writer is not idempotent). */
    lease = record->payload ? pos__v1__instance_lease__unpack(NULL, record->len, record->payload)
                            : NULL;
    if (lease && scan->lease && ingest_lease_same_run(lease, scan->lease) &&
        lease->renewal < scan->lease->renewal) {
      pos__v1__instance_lease__free_unpacked(lease, NULL);
      return 0;
    }
    if (scan->lease)
      pos__v1__instance_lease__free_unpacked(scan->lease, NULL);
    scan->lease = lease;
    return 0;
  }
  if (kind == 0 && scan->others && record->key && record->key_len > 0)
    return ingest_scan_note_other(scan, record);
  if (kind == 0 || (kind == 1 && !record->payload))
    return 0;
  if (kind == 2 && !record->payload) {
    g = ingest_scan_generation(scan, generation, 0);
    if (g && part < g->parts && g->present[part]) {
      g->present[part] = 0;
      g->present_count--;
    }
    return 0;
  }
  msg = ingest_scan_unpack(scan, record);
  if (!msg)
    return 0;
  if (msg->generation > scan->max_generation)
    scan->max_generation = msg->generation;
  if (kind == 1) {
    /* Records before issue 7 put part 0 under this key; only manifests count now. */
    if (msg->manifest && msg->generation >= scan->manifest_generation) {
      scan->manifest_generation = msg->generation;
      scan->manifest_parts = msg->parts;
      scan->manifest_closed_cleanly = msg->closed_cleanly;
    }
  } else if (msg->generation == generation && msg->part == part && !msg->manifest) {
    g = ingest_scan_generation(scan, generation, 1);
    if (g && !g->present) {
      g->present = calloc(msg->parts, 1);
      g->parts = msg->parts;
      g->partition = record->partition;
    }
    if (!g || !g->present) {
      pos__v1__ingest_checkpoint__free_unpacked(msg, NULL);
      scan->oom = 1;
      return -1;
    }
    if (msg->parts == g->parts && !g->present[part]) {
      g->present[part] = 1;
      g->present_count++;
      if (g->first_offset < 0 || record->offset < g->first_offset)
        g->first_offset = record->offset;
    }
  }
  pos__v1__ingest_checkpoint__free_unpacked(msg, NULL);
  return 0;
}

/* Pass 2: the chosen generation's parts, the newest record of each key. */
static int ingest_scan_collect(void *arg, const rd_kafka_message_t *record)
{
  struct ingest_scan *scan = arg;
  Pos__V1__IngestCheckpoint *msg;
  uint64_t generation = 0;
  uint32_t part = 0;

  if (ingest_scan_key(scan, record, &generation, &part) != 2 ||
      generation != scan->chosen->generation || part >= scan->chosen->parts ||
      record->offset >= scan->until[record->partition])
    return 0;
  if (scan->msgs[part]) {
    pos__v1__ingest_checkpoint__free_unpacked(scan->msgs[part], NULL);
    scan->msgs[part] = NULL;
  }
  if (!record->payload)
    return 0;
  msg = ingest_scan_unpack(scan, record);
  if (msg && (msg->generation != generation || msg->part != part ||
              msg->parts != scan->chosen->parts || msg->manifest)) {
    pos__v1__ingest_checkpoint__free_unpacked(msg, NULL);
    msg = NULL;
  }
  scan->msgs[part] = msg;
  return 0;
}

static void ingest_scan_free(struct ingest_scan *scan)
{
  /* chosen points into generations: its messages go first. */
  if (scan->msgs && scan->chosen) {
    for (uint32_t k = 0; k < scan->chosen->parts; k++) {
      if (scan->msgs[k])
        pos__v1__ingest_checkpoint__free_unpacked(scan->msgs[k], NULL);
    }
  }
  free(scan->msgs);
  for (size_t i = 0; i < scan->other_count; i++)
    free(scan->others[i]);
  free(scan->others);
  if (scan->lease)
    pos__v1__instance_lease__free_unpacked(scan->lease, NULL);
  for (size_t i = 0; i < scan->count; i++)
    free(scan->generations[i].present);
  free(scan->generations);
  memset(scan, 0, sizeof(*scan));
}

/*
 * The checkpoint to load: the newest manifest's generation when all its
 * parts are present, else the newest generation whose parts all are (its
 * manifest may have been replaced by one whose parts are not complete, or
 * its writer died between the last part and the manifest). NULL: none.
 */
static const struct ingest_generation *ingest_scan_choose(const struct ingest_scan *scan)
{
  const struct ingest_generation *best = NULL;

  for (size_t i = 0; i < scan->count; i++) {
    const struct ingest_generation *g = &scan->generations[i];
    if (g->parts == 0 || g->present_count != g->parts)
      continue;
    if (g->generation == scan->manifest_generation && g->parts == scan->manifest_parts)
      return g;
    if (!best || g->generation > best->generation)
      best = g;
  }
  if (best && scan->manifest_generation)
    log_warn("ingest", "checkpoint_manifest_incomplete",
             "manifest_generation=%" PRIu64 " using_generation=%" PRIu64
             " hint=\"parts of the named checkpoint are missing (deleted by hand?); an older "
             "complete one is used and the data topics are read from its offsets\"",
             scan->manifest_generation, best->generation);
  return best;
}

/*
 * Pass 2 of a scan whose generation is chosen: reads the topic from the
 * chosen generation's first part to `end`, where pass 1 ended (what the
 * instance wrote since, a newer generation and the tombstones of the
 * chosen one's parts, is not read: an instance checkpointing more often
 * than one read takes would otherwise fail every attempt), and applies
 * the parts to `state` (each journal's positions only ever raised) and
 * `offsets`. Returns 0 or -1 with `err` set.
 */
static int ingest_scan_load(struct ingest_recovery *r, rd_kafka_t *reader, int partitions,
                            struct ingest_scan *scan, const int64_t *end,
                            struct ingest_state *state, struct ingest_offsets *offsets, char *err,
                            size_t err_size)
{
  struct kafka_read_stats read_stats;
  int64_t *start;
  int rc = -1;

  scan->msgs = calloc(scan->chosen->parts, sizeof(*scan->msgs));
  start = calloc((size_t)partitions + 1, sizeof(*start));
  if (!scan->msgs || !start) {
    snprintf(err, err_size, "out of memory reading checkpoint %" PRIu64 " of %s",
             scan->chosen->generation, scan->instance_id);
    goto out;
  }
  for (int p = 0; p < partitions; p++)
    start[p] = p == scan->chosen->partition ? scan->chosen->first_offset : end[p];
  scan->until = end;
  memset(&read_stats, 0, sizeof(read_stats));
  if (kafka_read_to_end(reader, r->in->topics[KAFKA_TOPIC_STATE], partitions, start, NULL,
                        ingest_scan_collect, scan, &r->stop, INGEST_RECOVERY_STALL_MS, &read_stats,
                        err, err_size))
    goto out;
  for (uint32_t k = 0; k < scan->chosen->parts; k++) {
    if (!scan->msgs[k]) {
      snprintf(err, err_size,
               "part %" PRIu32 " of checkpoint %" PRIu64 " of %s went missing "
               "between two reads (compacted away, or another collector with instance_id %s?)",
               k, scan->chosen->generation, scan->instance_id, scan->instance_id);
      goto out;
    }
    if (ingest__checkpoint_apply(state, offsets, r->in->topics, scan->msgs[k])) {
      snprintf(err, err_size, "out of memory loading checkpoint %" PRIu64 " of %s",
               scan->chosen->generation, scan->instance_id);
      goto out;
    }
  }
  rc = 0;
out:
  free(start);
  return rc;
}

/*
 * Step 1 of a recovery: this instance's checkpoint (two reads of
 * ingest-state.v1: which generations are complete, then the chosen one's
 * parts), applied to r->state and r->offsets; the part keys of every other
 * generation go to r->garbage. Returns 0 or -1 with `err` set.
 */
static int ingest_recover_checkpoint(struct ingest_recovery *r, rd_kafka_t *reader, int partitions,
                                     char *err, size_t err_size)
{
  ingest *in = r->in;
  const char *topic = in->topics[KAFKA_TOPIC_STATE];
  struct ingest_scan scan;
  struct kafka_read_stats read_stats;
  int64_t *end = NULL;
  int rc = -1;

  memset(&scan, 0, sizeof(scan));
  scan.instance_id = in->instance_id;
  scan.id_len = strlen(in->instance_id);
  if (r->check_lease &&
      ingest__lease_key(scan.lease_key, sizeof(scan.lease_key), in->instance_id) == 0)
    scan.lease_key_len = strlen(scan.lease_key);
  end = calloc((size_t)partitions + 1, sizeof(*end));
  scan.others = calloc(INGEST_MAX_OTHER_INSTANCES, sizeof(*scan.others));
  if (!end || !scan.others) {
    snprintf(err, err_size, "out of memory reading checkpoints");
    goto out;
  }
  memset(&read_stats, 0, sizeof(read_stats));
  if (kafka_read_to_end(reader, topic, partitions, NULL, end, ingest_scan_record, &scan, &r->stop,
                        INGEST_RECOVERY_STALL_MS, &read_stats, err, err_size)) {
    if (scan.oom)
      snprintf(err, err_size, "out of memory reading checkpoints");
    else if (scan.too_many)
      snprintf(err, err_size,
               "%s holds the checkpoints or leases of more than %d other instance_ids: this "
               "collector merges at most that many; remove the keys of instances retired for "
               "good (tombstones) or use fewer instance_ids",
               topic, INGEST_MAX_OTHER_INSTANCES);
    goto out;
  }
  r->stats.state_records_read = read_stats.records;
  r->stats.manifest_generation = scan.manifest_generation;
  ingest_other_ids_free(r);
  r->other_ids = scan.others;
  r->other_count = scan.other_count;
  scan.others = NULL;
  scan.other_count = 0;
  if (r->check_lease) {
    /* Every run's first lease lands before it produces a batch's record (ingest.c,
     * ingest_takes_store): with no record at all under this id, none can be in flight. */
    r->first_run = scan.own_records == 0;
    if (r->seen_lease)
      pos__v1__instance_lease__free_unpacked(r->seen_lease, NULL);
    r->seen_lease = scan.lease;
    scan.lease = NULL;
    free(r->state_end);
    r->state_end = calloc((size_t)partitions + 1, sizeof(*r->state_end));
    if (!r->state_end) {
      snprintf(err, err_size, "out of memory reading checkpoints");
      goto out;
    }
    memcpy(r->state_end, end, (size_t)partitions * sizeof(*end));
  }
  r->next_generation = scan.max_generation + 1;
  scan.chosen = ingest_scan_choose(&scan);
  for (size_t i = 0; i < scan.count; i++) {
    const struct ingest_generation *g = &scan.generations[i];
    if (g == scan.chosen)
      continue;
    for (uint32_t k = 0; k < g->parts; k++) {
      if (g->present[k] && ingest__garbage_add(&r->garbage, g->generation, k, g->partition) == 0)
        r->stats.leftover_parts++;
    }
  }
  if (!scan.chosen) {
    rc = 0;
    goto out;
  }
  if (ingest_scan_load(r, reader, partitions, &scan, end, &r->state, &r->offsets, err, err_size))
    goto out;
  r->live_generation = scan.chosen->generation;
  r->live_parts = scan.chosen->parts;
  r->live_partition = scan.chosen->partition;
  r->stats.checkpoint_generation = scan.chosen->generation;
  r->stats.checkpoint_journals = r->state.journal_count;
  r->stats.previous_closed_cleanly =
      scan.manifest_closed_cleanly && scan.manifest_generation == scan.chosen->generation;
  rc = 0;
out:
  free(end);
  ingest_scan_free(&scan);
  return rc;
}

struct ingest_fold {
  struct ingest_state *state;
  enum kafka_topic topic;
  struct ingest_recovery_stats *stats;
};

static int ingest_fold_record(void *arg, const rd_kafka_message_t *record)
{
  struct ingest_fold *fold = arg;
  int rc = ingest__state_fold(fold->state, fold->topic, record);

  if (rc < 0)
    return -1;
  if (rc)
    fold->stats->records_folded++;
  else
    fold->stats->records_foreign++;
  return 0;
}

/* A head-office rebase in control.v1 (key "<store>/rebase/<journal>"): applied on top of what
 * the checkpoint and the data topics say (it only ever raises a journal's accepted batch). */
static int ingest_rebase_record(void *arg, const rd_kafka_message_t *record)
{
  struct ingest_recovery *r = arg;
  Pos__V1__Command *command;
  const char *key = record->key;
  int rc = 0;
  int is_rebase = 0;

  for (size_t i = 0; key && i + 8 <= record->key_len && !is_rebase; i++)
    is_rebase = memcmp(key + i, "/rebase/", 8) == 0;
  if (!is_rebase || !record->payload)
    return 0;
  command = pos__v1__command__unpack(NULL, record->len, record->payload);
  if (!command)
    return 0;
  if (command->command_case == POS__V1__COMMAND__COMMAND_REBASE && command->store_id &&
      command->store_id[0] && strlen(command->store_id) <= INGEST_STORE_ID_MAX &&
      command->rebase->journal_id.len == 16 && command->rebase->from_batch_seq > 0) {
    if (ingest__rebase_apply(&r->state, command->store_id, command->rebase->journal_id.data,
                             command->rebase->from_batch_seq, NULL))
      rc = -1;
    else
      r->stats.rebases++;
  }
  pos__v1__command__free_unpacked(command, NULL);
  return rc;
}

/* Sleeps up to `ms`, waking early on stop. Returns 1 when stopped. */
static int ingest_recovery_pause(struct ingest_recovery *r, uint64_t ms)
{
  for (uint64_t slept = 0; slept < ms; slept += 50) {
    if (atomic_load(&r->stop))
      return 1;
    uv_sleep(50);
  }
  return atomic_load(&r->stop) != 0;
}

static void ingest_reopen_dr(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque)
{
  int *result = opaque;
  (void)rk;
  *result = message->err ? -1 : 1;
}

/*
 * Replaces the previous run's closed_cleanly manifest by one without the
 * mark, before this run produces anything: if this run dies, the next one
 * must not believe the last shutdown was clean. Blocks (10 s at most).
 * Returns 0 when Kafka acknowledged it.
 */
static int ingest_recovery_reopen(struct ingest_recovery *r)
{
  ingest *in = r->in;
  Pos__V1__IngestCheckpoint manifest;
  rd_kafka_conf_t *conf;
  rd_kafka_t *rk;
  uint8_t *value;
  size_t len;
  int delivered = 0;
  char err[512];

  conf = kafka_producer_conf(in->brokers, in->kafka_debug, err, sizeof(err));
  if (!conf)
    return -1;
  rd_kafka_conf_set_opaque(conf, &delivered);
  rd_kafka_conf_set_dr_msg_cb(conf, ingest_reopen_dr);
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    return -1;
  }
  pos__v1__ingest_checkpoint__init(&manifest);
  manifest.instance_id = in->instance_id;
  manifest.created_ms = clock_wall_ms();
  manifest.generation = r->live_generation;
  manifest.parts = r->live_parts;
  manifest.manifest = 1;
  len = pos__v1__ingest_checkpoint__get_packed_size(&manifest);
  value = malloc(len + 1);
  if (value) {
    pos__v1__ingest_checkpoint__pack(&manifest, value);
    if (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(in->topics[KAFKA_TOPIC_STATE]),
                          RD_KAFKA_V_PARTITION(r->live_partition),
                          RD_KAFKA_V_KEY(in->instance_id, strlen(in->instance_id)),
                          RD_KAFKA_V_VALUE(value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                          RD_KAFKA_V_END))
      free(value);
    else
      rd_kafka_flush(rk, 10000);
  }
  /* A record still queued is purged by destroy: it cannot land later. */
  rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_destroy(rk);
  return delivered == 1 ? 0 : -1;
}

/*
 * At start-up against a real cluster, a produce request the previous run
 * sent just before it died may still be in a broker's hands, and a broker
 * acts on it until the request times out: let any such record land before
 * we ask where the log ends, or the rebuilt state would miss it and the
 * agent's retry would produce it again. Skipped when the last run closed
 * cleanly (its final manifest says so, and is replaced first), when no run
 * of this instance_id ever wrote to Kafka (r->first_run), and with
 * the embedded Kafka (it died with the previous run). Once per recovery.
 */
static void ingest_recovery_wait_previous(struct ingest_recovery *r, uint64_t started_ms)
{
  ingest *in = r->in;
  uint64_t wait_ms = in->request_timeout_ms + INGEST_REQUEST_MARGIN_MS(in->request_timeout_ms);
  uint64_t elapsed, now = clock_mono_ms();

  if (r->gain) {
    /* Taking partitions over: their previous owner may have died (and not handed them over)
     * with produce requests out; none can land after quiet_until_ms. Not when no other
     * instance's newest lease names them: each stopped cleanly, or handed them over with
     * every record delivered (this one's previous runs were waited for at its start). */
    r->waited = 1;
    if (r->quiet_until_ms <= now || r->others_writing == 0)
      return;
    log_info("ingest", "waiting_out_previous_owner",
             "ms=%" PRIu64 " others_writing=%u why=\"a collector whose lease names these "
             "partitions may have died with produce requests out\"",
             r->quiet_until_ms - now, r->others_writing);
    ingest_recovery_pause(r, r->quiet_until_ms - now);
    r->stats.waited_ms = clock_mono_ms() - now;
    return;
  }
  if (r->waited || in->embedded)
    return;
  r->waited = 1;
  if (r->first_run) {
    log_info("ingest", "first_run",
             "instance=%s why=\"no lease or checkpoint of this instance_id in Kafka: no earlier "
             "run of it produced anything, so nothing of one can still land\"",
             in->instance_id);
    return;
  }
  if (r->stats.previous_closed_cleanly) {
    if (ingest_recovery_reopen(r) == 0)
      return;
    log_warn("ingest", "reopen_failed",
             "generation=%" PRIu64 " action=\"wait out the previous run's requests\"",
             r->live_generation);
  }
  elapsed = clock_mono_ms() - started_ms;
  if (elapsed >= wait_ms)
    return;
  log_info("ingest", "waiting_out_previous_run",
           "ms=%" PRIu64 " why=\"the last run did not close cleanly: a produce request it sent "
           "may still land\"",
           wait_ms - elapsed);
  ingest_recovery_pause(r, wait_ms - elapsed);
  r->stats.waited_ms = clock_mono_ms() - started_ms - elapsed;
}

/* Lowers r->fold_from[topic][p] to `next` (an offset the data topic is read from). 0 or -1. */
static int ingest_fold_from_lower(struct ingest_recovery *r, int topic, int p, int64_t next)
{
  if (ingest__offsets_raise(&r->fold_from, topic, p, 0))
    return -1;
  if (next < r->fold_from.next[topic][p])
    r->fold_from.next[topic][p] = next;
  return 0;
}

/*
 * Whether an instance whose newest lease is `lease` may still have produce
 * requests out for partition p (of `count`): yes unless the lease names the
 * partitions it writes (InstanceLease.writes, numbered of `count`) and not
 * p. A run names a partition before it produces to it and drops it only
 * once every record of it is delivered, so a lease without the partition
 * means nothing of it can land; one that died holding it left it named.
 */
static int ingest_lease_may_write_to(const Pos__V1__InstanceLease *lease, uint32_t p, int count)
{
  /* None named is none in any numbering (a run's leases before its first assignment). */
  if (lease && lease->writes_known && lease->n_writes == 0)
    return 0;
  if (!lease || !lease->writes_known || count <= 0 || lease->writes_of != (uint32_t)count)
    return 1;
  for (size_t i = 0; i < lease->n_writes; i++) {
    if (lease->writes[i] >= (uint32_t)count || lease->writes[i] == p)
      return 1;
  }
  return 0;
}

/* The same for any partition marked in gaining[] (any at all without one). */
static int ingest_lease_may_write(const Pos__V1__InstanceLease *lease, const uint8_t *gaining,
                                  int gaining_count)
{
  if (gaining_count <= 0)
    return 1;
  for (int p = 0; p < gaining_count; p++) {
    if (gaining[p] && ingest_lease_may_write_to(lease, (uint32_t)p, gaining_count))
      return 1;
  }
  return 0;
}

/* Whether `w` is of `id`'s run and renewal that `lease` is. */
static int ingest_waited_is(const char *w_id, const uint8_t *w_run, size_t w_run_len,
                            uint64_t w_renewal, const char *id, const Pos__V1__InstanceLease *lease)
{
  return strcmp(w_id, id) == 0 && w_run_len == lease->run_id.len &&
         memcmp(w_run, lease->run_id.data, w_run_len) == 0 && w_renewal == lease->renewal;
}

static int ingest_u32_in(const uint32_t *values, size_t n, uint32_t value)
{
  for (size_t i = 0; i < n; i++) {
    if (values[i] == value)
      return 1;
  }
  return 0;
}

/*
 * Whether partition p of instance `id`'s newest lease `lease` was waited out:
 * by this instance (r->waited_in) or, as another instance's newest lease
 * says, by it (their writers put an entry there only after waiting).
 */
static int ingest_waited_covers(const struct ingest_recovery *r, Pos__V1__InstanceLease **leases,
                                size_t self, const Pos__V1__InstanceLease *lease, uint32_t p)
{
  const char *id = r->other_ids[self];

  for (size_t i = 0; i < r->waited_in.count; i++) {
    const struct ingest_waited *w = &r->waited_in.items[i];
    if (ingest_waited_is(w->instance_id, w->run_id, sizeof(w->run_id), w->renewal, id, lease) &&
        ingest_u32_in(w->partitions, w->n_partitions, p))
      return 1;
  }
  for (size_t j = 0; j < r->other_count; j++) {
    const Pos__V1__InstanceLease *holder = leases[j];
    if (j == self || !holder)
      continue;
    for (size_t k = 0; k < holder->n_waited_out; k++) {
      const Pos__V1__LeaseWaitedOut *w = holder->waited_out[k];
      if (w->instance_id &&
          ingest_waited_is(w->instance_id, w->run_id.data, w->run_id.len, w->renewal, id, lease) &&
          ingest_u32_in(w->partitions, w->n_partitions, p))
        return 1;
    }
  }
  return 0;
}

/* Adds partition p of (id, lease) to r->waited_new. 0 or -1 (out of memory). */
static int ingest_waited_note(struct ingest_recovery *r, const char *id,
                              const Pos__V1__InstanceLease *lease, uint32_t p)
{
  struct ingest_waited_list *list = &r->waited_new;
  struct ingest_waited *w = NULL;
  uint32_t *grown;

  for (size_t i = 0; i < list->count && !w; i++) {
    if (ingest_waited_is(list->items[i].instance_id, list->items[i].run_id,
                         sizeof(list->items[i].run_id), list->items[i].renewal, id, lease))
      w = &list->items[i];
  }
  if (!w) {
    struct ingest_waited *items;
    if (list->count >= INGEST_MAX_WAITED_OUT || lease->run_id.len != INGEST_RUN_ID_BYTES)
      return 0; /* not kept: a later taker waits again */
    items = realloc(list->items, (list->count + 1) * sizeof(*items));
    if (!items)
      return -1;
    list->items = items;
    w = &list->items[list->count];
    memset(w, 0, sizeof(*w));
    w->instance_id = strdup(id);
    if (!w->instance_id)
      return -1;
    memcpy(w->run_id, lease->run_id.data, INGEST_RUN_ID_BYTES);
    w->renewal = lease->renewal;
    list->count++;
  }
  if (ingest_u32_in(w->partitions, w->n_partitions, p))
    return 0;
  grown = realloc(w->partitions, (w->n_partitions + 1) * sizeof(*grown));
  if (!grown)
    return -1;
  w->partitions = grown;
  w->partitions[w->n_partitions++] = p;
  return 0;
}

/*
 * A gain: of the other instances not known to have stopped cleanly
 * (running[]), those whose newest lease may name a partition gained and
 * was not waited out for it yet (r->others_writing: the gain waits them
 * out), and the list this instance's leases carry from now on
 * (r->waited_new): what it waits out now, and what was waited out before
 * while those runs' newest leases are still the ones waited out (an entry
 * of a run that renewed since, or of another run, is dropped). Returns 0
 * or -1 (out of memory).
 */
static int ingest_others_writing(struct ingest_recovery *r, Pos__V1__InstanceLease **leases,
                                 const uint8_t *running)
{
  for (size_t i = 0; i < r->other_count; i++) {
    const Pos__V1__InstanceLease *lease = leases[i];
    int named = 0, covered = 0;

    if (lease && !lease->released && lease->writes_known) {
      /* What was waited out before stays waited out while this lease is the newest. */
      for (size_t k = 0; k < r->waited_in.count; k++) {
        const struct ingest_waited *w = &r->waited_in.items[k];
        if (!ingest_waited_is(w->instance_id, w->run_id, sizeof(w->run_id), w->renewal,
                              r->other_ids[i], lease))
          continue;
        for (size_t n = 0; n < w->n_partitions; n++) {
          if (ingest_waited_note(r, r->other_ids[i], lease, w->partitions[n]))
            return -1;
        }
      }
    }
    if (!running[i] || !ingest_lease_may_write(lease, r->gaining, r->gaining_count))
      continue;
    if (!lease || !lease->writes_known || !r->gain) {
      /* Without a lease to know its run by, or of a collector that may produce to a partition
       * before a lease naming it landed (older than InstanceLease.writes): waited out every
       * time, and not noted as waited out. */
      r->others_writing++;
      continue;
    }
    for (int p = 0; p < r->gaining_count; p++) {
      if (!r->gaining[p] || !ingest_lease_may_write_to(lease, (uint32_t)p, r->gaining_count))
        continue;
      named++;
      covered += ingest_waited_covers(r, leases, i, lease, (uint32_t)p);
      if (ingest_waited_note(r, r->other_ids[i], lease, (uint32_t)p))
        return -1;
    }
    if (named > 0 && covered == named) {
      r->others_covered++;
      log_info("ingest", "previous_owner_waited_out",
               "instance=%s renewal=%" PRIu64 " partitions=%d why=\"its newest lease names "
               "partitions taken over, and its requests for them were waited out before, by this "
               "or another instance: it has written nothing since\"",
               r->other_ids[i], lease->renewal, named);
    } else if (named > 0) {
      r->others_writing++;
    }
  }
  return 0;
}

/*
 * Step 1b: every other instance's newest complete checkpoint (ids seen in
 * step 1). A store may have been written by any instance (it moves with
 * its partition when instances come and go), so its positions are the
 * highest any checkpoint holds (each is a lower bound of the log), and each
 * data partition is read from the lowest offset any checkpoint covers to:
 * whatever an instance wrote is in its checkpoint or above that offset. An
 * instance without a complete checkpoint makes its partitions be read from
 * the start. Returns 0 or -1 with `err` set.
 */
static int ingest_recover_others(struct ingest_recovery *r, rd_kafka_t *reader,
                                 const int *partitions, char *err, size_t err_size)
{
  int state_partitions = partitions[KAFKA_TOPIC_STATE];
  Pos__V1__InstanceLease **leases = calloc(r->other_count + 1, sizeof(*leases));
  uint8_t *running = calloc(r->other_count + 1, 1);
  int rc = 0;

  if (!leases || !running) {
    free(leases);
    free(running);
    snprintf(err, err_size, "out of memory reading leases");
    return -1;
  }
  for (size_t i = 0; i < r->other_count && rc == 0; i++) {
    struct ingest_scan scan;
    struct ingest_offsets theirs;
    struct kafka_read_stats read_stats;
    int64_t *end = calloc((size_t)state_partitions + 1, sizeof(*end));

    memset(&scan, 0, sizeof(scan));
    memset(&theirs, 0, sizeof(theirs));
    memset(&read_stats, 0, sizeof(read_stats));
    scan.instance_id = r->other_ids[i];
    scan.id_len = strlen(scan.instance_id);
    if (ingest__lease_key(scan.lease_key, sizeof(scan.lease_key), scan.instance_id) == 0)
      scan.lease_key_len = strlen(scan.lease_key);
    rc = -1;
    if (!end)
      snprintf(err, err_size, "out of memory reading checkpoints");
    else if (kafka_read_to_end(reader, r->in->topics[KAFKA_TOPIC_STATE], state_partitions, NULL,
                               end, ingest_scan_record, &scan, &r->stop, INGEST_RECOVERY_STALL_MS,
                               &read_stats, err, err_size) == 0) {
      scan.chosen = ingest_scan_choose(&scan);
      if (!scan.chosen || ingest_scan_load(r, reader, state_partitions, &scan, end, &r->state,
                                           &theirs, err, err_size) == 0)
        rc = 0;
    }
    for (int t = 0; t < KAFKA_DATA_TOPICS && rc == 0; t++) {
      for (int p = 0; p < partitions[t] && rc == 0; p++) {
        if (ingest_fold_from_lower(r, t, p, ingest__offsets_get(&theirs, t, p)))
          rc = -1;
      }
    }
    if (rc == 0) {
      r->stats.other_checkpoints += scan.chosen != NULL;
      /* Stopped, and with nothing in flight when it did: its lease released (a run claims
       * one before it produces) and its last manifest saying it closed cleanly. */
      if (!(scan.manifest_generation > 0 && scan.manifest_closed_cleanly &&
            (!scan.lease || scan.lease->released))) {
        r->others_running++;
        running[i] = 1;
      }
      leases[i] = scan.lease;
      scan.lease = NULL;
    }
    ingest__offsets_free(&theirs);
    ingest_scan_free(&scan);
    free(end);
  }
  if (rc == 0 && ingest_others_writing(r, leases, running)) {
    snprintf(err, err_size, "out of memory reading leases");
    rc = -1;
  }
  for (size_t i = 0; i < r->other_count; i++) {
    if (leases[i])
      pos__v1__instance_lease__free_unpacked(leases[i], NULL);
  }
  free(leases);
  free(running);
  return rc;
}

/* What a start sees of its instance_id's lease while it watches it. */
struct ingest_lease_watch {
  const char *key;
  size_t key_len;
  const Pos__V1__InstanceLease *seen; /* the newest lease when the watch began */
  int released;                       /* the newest record read: a release (or a tombstone) */
  Pos__V1__InstanceLease *live;       /* the newest record read: a live run's renewal */
};

static int ingest_lease_watch_record(void *arg, const rd_kafka_message_t *record)
{
  struct ingest_lease_watch *watch = arg;
  Pos__V1__InstanceLease *lease;

  if (record->key_len != watch->key_len || memcmp(record->key, watch->key, watch->key_len))
    return 0;
  if (!record->payload) { /* a tombstone: nobody holds the id */
    watch->released = 1;
    return 0;
  }
  lease = pos__v1__instance_lease__unpack(NULL, record->len, record->payload);
  if (!lease)
    return 0; /* not a lease this collector can read: says nothing */
  if (lease->released) {
    watch->released = 1;
    if (watch->live) {
      pos__v1__instance_lease__free_unpacked(watch->live, NULL);
      watch->live = NULL;
    }
  } else if (!ingest_lease_same_run(lease, watch->seen) ||
             lease->renewal >= watch->seen->renewal + 2) {
    /* Renewed twice since the lease seen, or claimed by another run: alive.
     * (One renewal of the run seen may be one it sent before it died,
     * landing late: a run has one lease record in flight at most.) */
    watch->released = 0;
    if (watch->live)
      pos__v1__instance_lease__free_unpacked(watch->live, NULL);
    watch->live = lease;
    lease = NULL;
  }
  if (lease)
    pos__v1__instance_lease__free_unpacked(lease, NULL);
  return 0;
}

/* "12.3 s" of a span in ms, into out[32]. */
static const char *ingest_seconds_text(int64_t ms, char *out)
{
  snprintf(out, 32, "%.1f s", (double)(ms < 0 ? 0 : ms) / 1000.0);
  return out;
}

/*
 * Step 1a, at start: the newest lease of this instance_id (read in step 1)
 * is not released, so its run either died or still runs. Watches the key,
 * from the start of this recovery, for three of that run's renewal periods
 * and a margin: two renewals by it (one may be a record it sent before it
 * died, landing late), or a lease of another run, mean another collector
 * runs under this id, and this one must not start (its checkpoints and
 * records would mix with the other's): -1 with r->clash and `err` saying
 * so. Otherwise (a release, no lease, nothing renewed) 0. The watch fits
 * within the wait for the previous run's produce requests that such a start
 * makes anyway (ingest_recovery_wait_previous).
 */
static int ingest_lease_watch(struct ingest_recovery *r, rd_kafka_t *reader, int partitions,
                              uint64_t started_ms, char *err, size_t err_size)
{
  ingest *in = r->in;
  const Pos__V1__InstanceLease *seen = r->seen_lease;
  char key[INGEST_TOPIC_NAME_MAX + 16], ago[32], waited[32], quoted[600];
  struct ingest_lease_watch watch;
  struct kafka_read_stats stats;
  uint64_t renew_ms, watch_ms, started = started_ms;
  int64_t *end;
  int rc = 0;

  if (!seen || seen->released || partitions <= 0 || !r->state_end)
    return 0;
  renew_ms = seen->renew_ms < 1000 ? 1000 : seen->renew_ms > 60000 ? 60000 : seen->renew_ms;
  /* Two renewals of a live run land within three periods, whatever the phase. */
  watch_ms = 3 * renew_ms + 2000;
  if (ingest__lease_key(key, sizeof(key), in->instance_id) ||
      !(end = calloc((size_t)partitions + 1, sizeof(*end)))) {
    snprintf(err, err_size, "out of memory watching the instance's lease");
    return -1;
  }
  memset(&watch, 0, sizeof(watch));
  watch.key = key;
  watch.key_len = strlen(key);
  watch.seen = seen;
  log_info("ingest", "lease_watch",
           "instance=%s holder_host=%s holder_pid=%" PRId64 " renewed_ago=\"%s\" watch_ms=%" PRIu64
           " why=\"the last run under this instance_id did not release it: it died, or another "
           "collector runs under the same instance_id\"",
           in->instance_id, log_quote(seen->host, quoted, sizeof(quoted)), seen->pid,
           ingest_seconds_text(clock_wall_ms() - seen->renewed_ms, ago), watch_ms);
  while (!watch.live && !watch.released && !atomic_load(&r->stop)) {
    memset(&stats, 0, sizeof(stats));
    if (kafka_read_to_end(reader, in->topics[KAFKA_TOPIC_STATE], partitions, r->state_end, end,
                          ingest_lease_watch_record, &watch, &r->stop, INGEST_RECOVERY_STALL_MS,
                          &stats, err, err_size)) {
      rc = -1;
      break;
    }
    memcpy(r->state_end, end, (size_t)partitions * sizeof(*end));
    if (watch.live || watch.released || clock_mono_ms() - started >= watch_ms)
      break;
    ingest_recovery_pause(r, 500);
  }
  free(end);
  if (watch.live) {
    const Pos__V1__InstanceLease *live = watch.live;
    r->clash = 1;
    snprintf(r->clash_why, sizeof(r->clash_why),
             "instance_id %s is in use: another collector (host %s, pid %" PRId64 ") renewed "
             "its claim on it while this one waited %s; two instances under one instance_id "
             "would overwrite each other's checkpoints: give each instance its own [collector] "
             "instance_id",
             in->instance_id, live->host && live->host[0] ? live->host : "?", live->pid,
             ingest_seconds_text((int64_t)(clock_mono_ms() - started), waited));
    snprintf(err, err_size, "%s", r->clash_why);
    pos__v1__instance_lease__free_unpacked(watch.live, NULL);
    return -1;
  }
  if (rc == 0 && !atomic_load(&r->stop))
    log_info("ingest", "lease_free", "instance=%s waited_ms=%" PRIu64 " reason=\"%s\"",
             in->instance_id, clock_mono_ms() - started,
             watch.released ? "the holder released it"
                            : "not renewed: the previous run under this instance_id is gone");
  return rc;
}

static int ingest_recover_once(struct ingest_recovery *r, uint64_t started_ms, char *err,
                               size_t err_size)
{
  ingest *in = r->in;
  struct kafka_read_stats read_stats;
  int partitions[KAFKA_TOPIC_COUNT] = {0};
  int64_t *start = NULL, *end = NULL;
  rd_kafka_t *reader;
  int rc = -1;

  reader = kafka_reader_new(in->brokers, in->kafka_debug, err, err_size);
  if (!reader)
    return -1;
  for (int t = 0; t < KAFKA_TOPIC_COUNT; t++) {
    if (t >= KAFKA_DATA_TOPICS && t != KAFKA_TOPIC_STATE && t != KAFKA_TOPIC_CONTROL)
      continue;
    if (kafka_topic_partitions(reader, in->topics[t], INGEST_METADATA_TIMEOUT_MS, &partitions[t],
                               err, err_size))
      goto out;
    if (partitions[t] == 0)
      log_warn("ingest", "topic_missing",
               "topic=%s hint=\"create it (the collector does not create topics on a real "
               "cluster)\"",
               in->topics[t]);
  }
  r->state_partitions = partitions[KAFKA_TOPIC_STATE];

  /* 1. This instance's last complete checkpoint. */
  if (ingest_recover_checkpoint(r, reader, partitions[KAFKA_TOPIC_STATE], err, err_size))
    goto out;

  /* 1a. At start: no other collector runs under this instance_id. */
  if (r->check_lease) {
    if (ingest_lease_watch(r, reader, partitions[KAFKA_TOPIC_STATE], started_ms, err, err_size))
      goto out;
    r->check_lease = 0; /* a retry of this recovery need not watch again */
  }

  /* 1b. The other instances' checkpoints: where each data partition is read from. */
  ingest__offsets_free(&r->fold_from);
  for (int t = 0; t < KAFKA_DATA_TOPICS; t++) {
    for (int p = 0; p < partitions[t]; p++) {
      if (ingest__offsets_raise(&r->fold_from, t, p, ingest__offsets_get(&r->offsets, t, p))) {
        snprintf(err, err_size, "out of memory recording offsets");
        goto out;
      }
    }
  }
  if (ingest_recover_others(r, reader, partitions, err, err_size))
    goto out;

  /* 1c. A produce request of the previous run (or the partitions' previous owner) may still
   * land. */
  ingest_recovery_wait_previous(r, started_ms);

  /* 2. Each data topic from where the checkpoints end (the lowest) to where the log ends. */
  for (int t = 0; t < KAFKA_DATA_TOPICS; t++) {
    struct ingest_fold fold = {&r->state, (enum kafka_topic)t, &r->stats};
    int n = partitions[t];
    if (n == 0)
      continue;
    start = calloc((size_t)n, sizeof(*start));
    end = calloc((size_t)n, sizeof(*end));
    if (!start || !end) {
      snprintf(err, err_size, "out of memory reading %s", in->topics[t]);
      goto out;
    }
    for (int p = 0; p < n; p++)
      start[p] = ingest__offsets_get(&r->fold_from, t, p);
    memset(&read_stats, 0, sizeof(read_stats));
    if (kafka_read_to_end(reader, in->topics[t], n, start, end, ingest_fold_record, &fold,
                          &r->stop, INGEST_RECOVERY_STALL_MS, &read_stats, err, err_size)) {
      if (r->stats.records_folded == 0 && r->state.journal_count >= INGEST_MAX_JOURNALS)
        snprintf(err, err_size, "more than %u journals", INGEST_MAX_JOURNALS);
      goto out;
    }
    r->stats.records_read[t] = read_stats.records;
    r->stats.records_dropped_unread += read_stats.dropped_unread;
    /* The map now covers each partition up to where the read ended, even
     * when the log turned out shorter than the checkpoint said. */
    for (int p = 0; p < n; p++) {
      if (ingest__offsets_raise(&r->offsets, t, p, 0)) {
        snprintf(err, err_size, "out of memory recording offsets of %s", in->topics[t]);
        goto out;
      }
      r->offsets.next[t][p] = end[p];
    }
    free(start);
    free(end);
    start = end = NULL;
  }

  /* 3. Head office's rebases. */
  if (partitions[KAFKA_TOPIC_CONTROL] > 0) {
    memset(&read_stats, 0, sizeof(read_stats));
    if (kafka_read_to_end(reader, in->topics[KAFKA_TOPIC_CONTROL], partitions[KAFKA_TOPIC_CONTROL],
                          NULL, NULL, ingest_rebase_record, r, &r->stop,
                          INGEST_RECOVERY_STALL_MS, &read_stats, err, err_size))
      goto out;
  }
  rc = 0;
out:
  free(start);
  free(end);
  kafka_reader_destroy(reader);
  return rc;
}

static void ingest_recovery_main(void *arg)
{
  struct ingest_recovery *r = arg;
  ingest *in = r->in;
  uint64_t started = clock_mono_ms();
  char err[512], quoted[600];

  if (r->retire) {
    rd_kafka_destroy(r->retire);
    r->retire = NULL;
    /* A request the old producer sent just before the doubt may still be
     * in a broker's hands, and a broker acts on it until the request times
     * out: let any such record land before we ask where the log ends, or
     * the rebuilt state would miss it and a retry would produce it again. */
    ingest_recovery_pause(r, in->request_timeout_ms +
                                 INGEST_REQUEST_MARGIN_MS(in->request_timeout_ms));
    r->waited = 1;
  }
  r->rc = -1;
  while (!atomic_load(&r->stop)) {
    r->stats.attempts++;
    if (r->make_producer && !r->producer) {
      r->producer = ingest__producer_new(in, err, sizeof(err));
      if (!r->producer) {
        log_error("ingest", "producer_failed", "error=%s",
                  log_quote(err, quoted, sizeof(quoted)));
        ingest_recovery_pause(r, INGEST_RECOVERY_RETRY_MS);
        continue;
      }
    }
    if (ingest_recover_once(r, started, err, sizeof(err)) == 0) {
      r->rc = 0;
      break;
    }
    if (atomic_load(&r->stop) || r->clash)
      break;
    log_warn("ingest", "recovery_retry", "attempt=%d error=%s retry_in_ms=%d",
             r->stats.attempts, log_quote(err, quoted, sizeof(quoted)),
             INGEST_RECOVERY_RETRY_MS);
    ingest__state_free(&r->state);
    ingest__offsets_free(&r->offsets);
    ingest__offsets_free(&r->fold_from);
    ingest_other_ids_free(r);
    r->others_running = 0;
    r->others_writing = 0;
    r->others_covered = 0;
    ingest__waited_free(&r->waited_new);
    ingest__garbage_free(&r->garbage);
    r->live_generation = 0;
    r->live_parts = 0;
    {
      int attempts = r->stats.attempts;
      memset(&r->stats, 0, sizeof(r->stats));
      r->stats.attempts = attempts;
    }
    ingest_recovery_pause(r, INGEST_RECOVERY_RETRY_MS);
  }
  r->stats.elapsed_ms = clock_mono_ms() - started;
  uv_async_send(&in->recovery_async);
}

static int ingest_recovery_launch(ingest *in, rd_kafka_t *retire, int make_producer, int gain,
                                  uint64_t quiet_until_ms, const uint8_t *gaining,
                                  int gaining_count)
{
  struct ingest_recovery *r = calloc(1, sizeof(*r));

  if (!r || in->recovery) {
    free(r);
    return -1;
  }
  if (gaining_count > 0) {
    r->gaining = malloc((size_t)gaining_count);
    if (!r->gaining) {
      free(r);
      return -1;
    }
    memcpy(r->gaining, gaining, (size_t)gaining_count);
    r->gaining_count = gaining_count;
  }
  if (gain && ingest__waited_copy(&r->waited_in, &in->waited_out)) {
    free(r->gaining);
    free(r);
    return -1;
  }
  r->in = in;
  r->retire = retire;
  r->make_producer = make_producer;
  r->gain = gain;
  r->quiet_until_ms = quiet_until_ms;
  /* Only a start asks whether another run holds the id: after a delivery doubt this run does. */
  r->check_lease = !retire && !gain && !in->embedded && !in->lease_held;
  atomic_init(&r->stop, 0);
  ingest__state_init(&r->state);
  in->recovery = r;
  log_info("ingest", "recovery_start", "instance=%s reason=%s", in->instance_id,
           gain     ? "fleet_gain"
           : retire ? "delivery_doubt"
                    : "start");
  if (uv_thread_create(&r->thread, ingest_recovery_main, r)) {
    in->recovery = NULL;
    free(r->gaining);
    ingest__waited_free(&r->waited_in);
    free(r);
    return -1;
  }
  return 0;
}

int ingest__recovery_start(ingest *in, rd_kafka_t *retire, int make_producer)
{
  return ingest_recovery_launch(in, retire, make_producer, 0, 0, NULL, 0);
}

int ingest__recovery_start_gain(ingest *in, uint64_t quiet_until_ms, const uint8_t *gaining,
                                int gaining_count)
{
  return ingest_recovery_launch(in, NULL, 0, 1, quiet_until_ms, gaining, gaining_count);
}

struct ingest_recovery *ingest__recovery_join(ingest *in)
{
  struct ingest_recovery *r = in->recovery;

  uv_thread_join(&r->thread);
  in->recovery = NULL;
  return r;
}

void ingest__recovery_free(struct ingest_recovery *r)
{
  if (!r)
    return;
  if (r->producer)
    rd_kafka_destroy(r->producer);
  if (r->retire)
    rd_kafka_destroy(r->retire);
  ingest__state_free(&r->state);
  ingest__offsets_free(&r->offsets);
  ingest__offsets_free(&r->fold_from);
  ingest_other_ids_free(r);
  ingest__garbage_free(&r->garbage);
  free(r->gaining);
  ingest__waited_free(&r->waited_in);
  ingest__waited_free(&r->waited_new);
  if (r->seen_lease)
    pos__v1__instance_lease__free_unpacked(r->seen_lease, NULL);
  free(r->state_end);
  free(r);
}
