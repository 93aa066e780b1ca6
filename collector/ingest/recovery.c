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

/* A checkpoint being collected part by part, or the best complete one. */
struct ingest_candidate {
  uint64_t generation;
  uint32_t parts, have;
  Pos__V1__IngestCheckpoint **msgs;
};

struct ingest_scan {
  const char *instance_id;
  size_t id_len;
  struct ingest_candidate *building; /* per partition: parts arrive in order there */
  int partitions;
  struct ingest_candidate best;
  uint64_t max_generation;
  int oom;
};

static void ingest_candidate_clear(struct ingest_candidate *c)
{
  if (c->msgs) {
    for (uint32_t i = 0; i < c->have; i++)
      pos__v1__ingest_checkpoint__free_unpacked(c->msgs[i], NULL);
    free(c->msgs);
  }
  memset(c, 0, sizeof(*c));
}

static int ingest_scan_record(void *arg, const rd_kafka_message_t *record)
{
  struct ingest_scan *scan = arg;
  const char *key = record->key;
  Pos__V1__IngestCheckpoint *msg;
  struct ingest_candidate *c;

  /* Part 0 is keyed by the instance id, part k by "instance_id/k". */
  if (!key || record->key_len < scan->id_len || memcmp(key, scan->instance_id, scan->id_len) ||
      (record->key_len > scan->id_len && key[scan->id_len] != '/'))
    return 0;
  if (record->partition < 0 || record->partition >= scan->partitions || !record->payload)
    return 0;
  msg = pos__v1__ingest_checkpoint__unpack(NULL, record->len, record->payload);
  if (!msg) {
    log_warn("ingest", "checkpoint_unreadable", "partition=%d offset=%" PRId64,
             (int)record->partition, record->offset);
    return 0;
  }
  if (!msg->instance_id || strcmp(msg->instance_id, scan->instance_id) != 0 || msg->parts == 0 ||
      msg->parts > INGEST_MAX_CHECKPOINT_PARTS || msg->part >= msg->parts) {
    pos__v1__ingest_checkpoint__free_unpacked(msg, NULL);
    return 0;
  }
  if (msg->generation > scan->max_generation)
    scan->max_generation = msg->generation;
  c = &scan->building[record->partition];
  if (msg->part == 0) {
    ingest_candidate_clear(c);
    c->msgs = calloc(msg->parts, sizeof(*c->msgs));
    if (!c->msgs) {
      pos__v1__ingest_checkpoint__free_unpacked(msg, NULL);
      scan->oom = 1;
      return -1;
    }
    c->generation = msg->generation;
    c->parts = msg->parts;
  }
  if (!c->msgs || c->generation != msg->generation || c->parts != msg->parts ||
      c->have != msg->part) {
    /* A part of an older generation left behind by compaction, or of one
     * whose writer died half way: not usable. */
    pos__v1__ingest_checkpoint__free_unpacked(msg, NULL);
    return 0;
  }
  c->msgs[c->have++] = msg;
  if (c->have == c->parts) {
    if (!scan->best.msgs || c->generation > scan->best.generation) {
      ingest_candidate_clear(&scan->best);
      scan->best = *c;
      memset(c, 0, sizeof(*c));
    } else {
      ingest_candidate_clear(c);
    }
  }
  return 0;
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

static int ingest_recover_once(struct ingest_recovery *r, char *err, size_t err_size)
{
  ingest *in = r->in;
  struct ingest_scan scan;
  struct kafka_read_stats read_stats;
  int partitions[KAFKA_TOPIC_COUNT] = {0};
  int64_t *start = NULL, *end = NULL;
  rd_kafka_t *reader;
  int rc = -1;

  memset(&scan, 0, sizeof(scan));
  reader = kafka_reader_new(in->brokers, in->kafka_debug, err, err_size);
  if (!reader)
    return -1;
  for (int t = 0; t < KAFKA_TOPIC_COUNT; t++) {
    if (t >= KAFKA_DATA_TOPICS && t != KAFKA_TOPIC_STATE)
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
  scan.instance_id = in->instance_id;
  scan.id_len = strlen(in->instance_id);
  scan.partitions = partitions[KAFKA_TOPIC_STATE];
  scan.building = calloc((size_t)scan.partitions + 1, sizeof(*scan.building));
  if (!scan.building) {
    snprintf(err, err_size, "out of memory reading checkpoints");
    goto out;
  }
  memset(&read_stats, 0, sizeof(read_stats));
  if (kafka_read_to_end(reader, in->topics[KAFKA_TOPIC_STATE], scan.partitions, NULL, NULL,
                        ingest_scan_record, &scan, &r->stop, INGEST_RECOVERY_STALL_MS,
                        &read_stats, err, err_size))
    goto out;
  r->stats.state_records_read = read_stats.records;
  if (scan.best.msgs) {
    for (uint32_t k = 0; k < scan.best.parts; k++) {
      if (ingest__checkpoint_apply(&r->state, &r->offsets, in->topics, scan.best.msgs[k])) {
        snprintf(err, err_size, "out of memory loading checkpoint %" PRIu64,
                 scan.best.generation);
        goto out;
      }
    }
    r->stats.checkpoint_generation = scan.best.generation;
    r->stats.checkpoint_journals = r->state.journal_count;
  }
  r->next_generation = scan.max_generation + 1;

  /* 2. Each data topic from where the checkpoint ends to where the log ends. */
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
      start[p] = ingest__offsets_get(&r->offsets, t, p);
    memset(&read_stats, 0, sizeof(read_stats));
    if (kafka_read_to_end(reader, in->topics[t], n, start, end, ingest_fold_record, &fold,
                          &r->stop, INGEST_RECOVERY_STALL_MS, &read_stats, err, err_size)) {
      if (r->stats.records_folded == 0 && r->state.journal_count >= INGEST_MAX_JOURNALS)
        snprintf(err, err_size, "more than %u journals", INGEST_MAX_JOURNALS);
      goto out;
    }
    r->stats.records_read[t] = read_stats.records;
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
  rc = 0;
out:
  free(start);
  free(end);
  if (scan.building) {
    for (int p = 0; p < scan.partitions; p++)
      ingest_candidate_clear(&scan.building[p]);
    free(scan.building);
  }
  ingest_candidate_clear(&scan.best);
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
    ingest_recovery_pause(r, KAFKA_PRODUCE_REQUEST_TIMEOUT_MS + 2000);
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
    if (ingest_recover_once(r, err, sizeof(err)) == 0) {
      r->rc = 0;
      break;
    }
    if (atomic_load(&r->stop))
      break;
    log_warn("ingest", "recovery_retry", "attempt=%d error=%s retry_in_ms=%d",
             r->stats.attempts, log_quote(err, quoted, sizeof(quoted)),
             INGEST_RECOVERY_RETRY_MS);
    ingest__state_free(&r->state);
    ingest__offsets_free(&r->offsets);
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

int ingest__recovery_start(ingest *in, rd_kafka_t *retire, int make_producer)
{
  struct ingest_recovery *r = calloc(1, sizeof(*r));

  if (!r || in->recovery) {
    free(r);
    return -1;
  }
  r->in = in;
  r->retire = retire;
  r->make_producer = make_producer;
  atomic_init(&r->stop, 0);
  ingest__state_init(&r->state);
  in->recovery = r;
  log_info("ingest", "recovery_start", "instance=%s reason=%s", in->instance_id,
           retire ? "delivery_doubt" : "start");
  if (uv_thread_create(&r->thread, ingest_recovery_main, r)) {
    in->recovery = NULL;
    free(r);
    return -1;
  }
  return 0;
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
  free(r);
}
