/*
 * state.c - the exactly-once map: per (store, journal[, resync]) the
 * highest batch accepted and how far each topic holds its records; how a
 * record read back from Kafka proves a position; and the checkpoint that
 * carries the map across restarts.
 *
 * No locking: a map belongs either to the loop or to the recovery thread.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/ingest_int.h"
#include "proto/codec.h"

#define INGEST_INITIAL_BUCKETS 1024u
#define INGEST_MAX_PARTITIONS 100000
/* Per journal: its streams and the two legacy inventory positions. */
#define INGEST_CHECKPOINT_STREAMS (INGEST_STREAM_COUNT + 2)

uint64_t ingest__journal_hash(const char *store_id, const uint8_t journal_id[16],
                              const char *resync_id)
{
  /* FNV-1a over the three parts, with a separator so ("ab","c") != ("a","bc"). */
  uint64_t hash = 14695981039346656037ull;
  for (const char *p = store_id; *p; p++)
    hash = (hash ^ (uint8_t)*p) * 1099511628211ull;
  hash = (hash ^ 0xffu) * 1099511628211ull;
  for (int i = 0; i < 16; i++)
    hash = (hash ^ journal_id[i]) * 1099511628211ull;
  for (const char *p = resync_id; *p; p++)
    hash = (hash ^ (uint8_t)*p) * 1099511628211ull;
  return hash;
}

void ingest__state_init(struct ingest_state *state) { memset(state, 0, sizeof(*state)); }

void ingest__state_free(struct ingest_state *state)
{
  if (!state->buckets)
    return;
  for (size_t b = 0; b < state->bucket_count; b++) {
    struct ingest_journal *journal = state->buckets[b];
    while (journal) {
      struct ingest_journal *next = journal->next;
      free(journal->store_id);
      free(journal->resync_id);
      free(journal->device_id);
      free(journal);
      journal = next;
    }
  }
  free(state->buckets);
  memset(state, 0, sizeof(*state));
}

struct ingest_journal *ingest__state_find(const struct ingest_state *state, const char *store_id,
                                          const uint8_t journal_id[16], const char *resync_id)
{
  uint64_t hash;

  if (!state->buckets)
    return NULL;
  hash = ingest__journal_hash(store_id, journal_id, resync_id);
  for (struct ingest_journal *journal = state->buckets[hash % state->bucket_count]; journal;
       journal = journal->next) {
    if (journal->hash == hash && memcmp(journal->journal_id, journal_id, 16) == 0 &&
        strcmp(journal->store_id, store_id) == 0 && strcmp(journal->resync_id, resync_id) == 0)
      return journal;
  }
  return NULL;
}

static int ingest_state_grow(struct ingest_state *state)
{
  size_t count = state->bucket_count ? state->bucket_count * 2 : INGEST_INITIAL_BUCKETS;
  struct ingest_journal **buckets = calloc(count, sizeof(*buckets));

  if (!buckets)
    return -1;
  for (size_t b = 0; b < state->bucket_count; b++) {
    struct ingest_journal *journal = state->buckets[b];
    while (journal) {
      struct ingest_journal *next = journal->next;
      journal->next = buckets[journal->hash % count];
      buckets[journal->hash % count] = journal;
      journal = next;
    }
  }
  free(state->buckets);
  state->buckets = buckets;
  state->bucket_count = count;
  return 0;
}

struct ingest_journal *ingest__state_get(struct ingest_state *state, const char *store_id,
                                         const uint8_t journal_id[16], const char *resync_id)
{
  struct ingest_journal *journal = ingest__state_find(state, store_id, journal_id, resync_id);

  if (journal)
    return journal;
  if (state->journal_count >= INGEST_MAX_JOURNALS)
    return NULL;
  /* Keep chains short: grow at one journal per bucket on average. */
  if (state->journal_count >= state->bucket_count && ingest_state_grow(state))
    return NULL;
  journal = calloc(1, sizeof(*journal));
  if (!journal)
    return NULL;
  journal->store_id = strdup(store_id);
  journal->resync_id = strdup(resync_id);
  if (!journal->store_id || !journal->resync_id) {
    free(journal->store_id);
    free(journal->resync_id);
    free(journal);
    return NULL;
  }
  memcpy(journal->journal_id, journal_id, 16);
  journal->hash = ingest__journal_hash(store_id, journal_id, resync_id);
  journal->next = state->buckets[journal->hash % state->bucket_count];
  state->buckets[journal->hash % state->bucket_count] = journal;
  state->journal_count++;
  return journal;
}

int ingest__pos_after(struct ingest_pos a, struct ingest_pos b)
{
  return a.seq > b.seq || (a.seq == b.seq && a.index > b.index);
}

enum ingest_delta_verdict ingest__delta_verdict(const struct ingest_journal *journal,
                                                enum ingest_stream stream, uint64_t batch_seq,
                                                uint64_t first_seq, uint64_t last_seq,
                                                uint32_t index)
{
  const struct ingest_pos *pos = &journal->streams[stream];
  const struct ingest_pos *legacy = &journal->legacy[INGEST_LEGACY_SLOT(stream)];

  assert(stream == INGEST_STREAM_INVENTORY || stream == INGEST_STREAM_DLQ_INVENTORY);
  assert(first_seq >= 1 && first_seq <= last_seq && index >= 1);
  /* An older collector counted in batch numbers: batches below its
   * position are in whole, the batch at it up to its index. Above it, no
   * batch reached the log before this collector's rule took over. */
  if (legacy->seq != 0 &&
      (batch_seq < legacy->seq || (batch_seq == legacy->seq && index <= legacy->index)))
    return INGEST_DELTA_IN_LOG;
  if (last_seq < pos->seq)
    return INGEST_DELTA_IN_LOG;
  if (last_seq == pos->seq) {
    /* The batch the position ends in, resent as it was sealed: its deltas
     * after the index are missing (a crash half-way through them). Rows
     * cut differently but all at or below the position are in: producing
     * them again would count them twice. */
    return first_seq == pos->first && index > pos->index ? INGEST_DELTA_PRODUCE
                                                         : INGEST_DELTA_IN_LOG;
  }
  /* Above the position: produced unless part of its rows are in already. */
  return first_seq > pos->seq ? INGEST_DELTA_PRODUCE : INGEST_DELTA_STRADDLES;
}

enum kafka_topic ingest__stream_topic(const struct ingest_journal *journal,
                                      enum ingest_stream stream)
{
  switch (stream) {
  case INGEST_STREAM_DLQ:
  case INGEST_STREAM_DLQ_INVENTORY:
    return KAFKA_TOPIC_DLQ;
  case INGEST_STREAM_INVENTORY:
    /* A replay's deltas have a topic of their own: the live one counts each row once. */
    return journal->resync_id[0] ? KAFKA_TOPIC_INVENTORY_REPLAY : KAFKA_TOPIC_INVENTORY;
  default:
    return journal->resync_id[0] ? KAFKA_TOPIC_REPLAY : KAFKA_TOPIC_SALES;
  }
}

void ingest__offsets_free(struct ingest_offsets *offsets)
{
  for (int t = 0; t < KAFKA_DATA_TOPICS; t++)
    free(offsets->next[t]);
  memset(offsets, 0, sizeof(*offsets));
}

int ingest__offsets_raise(struct ingest_offsets *offsets, int topic, int partition, int64_t next)
{
  if (topic < 0 || topic >= KAFKA_DATA_TOPICS || partition < 0 ||
      partition >= INGEST_MAX_PARTITIONS)
    return -1;
  if (partition >= offsets->count[topic]) {
    int count = partition + 1;
    int64_t *grown = realloc(offsets->next[topic], (size_t)count * sizeof(*grown));
    if (!grown)
      return -1;
    for (int p = offsets->count[topic]; p < count; p++)
      grown[p] = 0;
    offsets->next[topic] = grown;
    offsets->count[topic] = count;
  }
  if (next > offsets->next[topic][partition])
    offsets->next[topic][partition] = next;
  return 0;
}

int64_t ingest__offsets_get(const struct ingest_offsets *offsets, int topic, int partition)
{
  if (topic < 0 || topic >= KAFKA_DATA_TOPICS || partition < 0 ||
      partition >= offsets->count[topic])
    return 0;
  return offsets->next[topic][partition];
}

/*
 * The position a delta record (of batch `batch_seq`) proves: the rows it
 * covers (issue 8: headers first_seq, last_seq) and its index. Returns 0,
 * 1 when it is an older collector's record positioned by (batch_seq,
 * index), or -1 when it is not ours.
 */
static int ingest_delta_pos(const rd_kafka_message_t *record, uint64_t batch_seq,
                            struct ingest_pos *pos)
{
  uint64_t delta_index = 0;
  char position[8];
  int legacy = 0;

  /* A delta dead-lettered outside any position (its rows could not be
   * positioned) proves nothing about the stream, only that its batch came. */
  memset(pos, 0, sizeof(*pos));
  if (kafka_header_text(record, "position", position, sizeof(position)) >= 0 &&
      strcmp(position, "none") == 0)
    return 0;
  if (kafka_header_u64(record, "delta_index", &delta_index) || delta_index == 0 ||
      delta_index > UINT32_MAX)
    return -1;
  pos->index = (uint32_t)delta_index;
  if (kafka_header_u64(record, "last_seq", &pos->seq) == 0) {
    if (kafka_header_u64(record, "first_seq", &pos->first) || pos->first == 0 ||
        pos->first > pos->seq)
      return -1;
  } else {
    pos->seq = batch_seq;
    legacy = 1;
  }
  return legacy;
}

int ingest__state_fold(struct ingest_state *state, enum kafka_topic topic,
                       const rd_kafka_message_t *record)
{
  char store_id[INGEST_STORE_ID_MAX + 1], hex[40], kind[16], resync_id[INGEST_RESYNC_ID_MAX + 1];
  uint8_t journal_id[16];
  uint64_t batch_seq = 0, delta_index = 0;
  struct ingest_journal *journal;
  struct ingest_pos pos;
  enum ingest_stream stream;
  int replay, legacy = 0;

  if (!record->key || record->key_len == 0 || record->key_len > INGEST_STORE_ID_MAX)
    return 0;
  memcpy(store_id, record->key, record->key_len);
  store_id[record->key_len] = '\0';
  if (kafka_header_text(record, "journal_id", hex, sizeof(hex)) != 32 ||
      proto_journal_id_parse(hex, journal_id) ||
      kafka_header_text(record, "kind", kind, sizeof(kind)) < 0 ||
      kafka_header_u64(record, "batch_seq", &batch_seq) || batch_seq == 0)
    return 0;
  if (strcmp(kind, "replay") == 0) {
    replay = 1;
    if (kafka_header_text(record, "resync_id", resync_id, sizeof(resync_id)) <= 0)
      return 0;
  } else if (strcmp(kind, "live") == 0) {
    replay = 0;
    resync_id[0] = '\0';
  } else {
    return 0;
  }
  switch (topic) {
  case KAFKA_TOPIC_SALES:
  case KAFKA_TOPIC_REPLAY:
    if (replay != (topic == KAFKA_TOPIC_REPLAY))
      return 0;
    stream = INGEST_STREAM_SALES;
    break;
  case KAFKA_TOPIC_DLQ:
    /* A dead-lettered delta has a delta_index header, a sale a seq. */
    stream = kafka_header_u64(record, "delta_index", &delta_index) == 0
                 ? INGEST_STREAM_DLQ_INVENTORY
                 : INGEST_STREAM_DLQ;
    break;
  case KAFKA_TOPIC_INVENTORY:
  case KAFKA_TOPIC_INVENTORY_REPLAY:
    if (replay != (topic == KAFKA_TOPIC_INVENTORY_REPLAY))
      return 0;
    stream = INGEST_STREAM_INVENTORY;
    break;
  default:
    return 0;
  }
  memset(&pos, 0, sizeof(pos));
  if (stream == INGEST_STREAM_INVENTORY || stream == INGEST_STREAM_DLQ_INVENTORY) {
    legacy = ingest_delta_pos(record, batch_seq, &pos);
    if (legacy < 0)
      return 0;
  } else if (kafka_header_u64(record, "seq", &pos.seq)) {
    return 0;
  }
  journal = ingest__state_get(state, store_id, journal_id, resync_id);
  if (!journal)
    return -1;
  if (legacy) {
    struct ingest_pos *old = &journal->legacy[INGEST_LEGACY_SLOT(stream)];
    if (ingest__pos_after(pos, *old))
      *old = pos;
  } else if (ingest__pos_after(pos, journal->streams[stream])) {
    journal->streams[stream] = pos;
  }
  /* The device of the journal's first record owns it (its certificate's). */
  if (!journal->device_id) {
    char device_id[INGEST_STORE_ID_MAX + 1];
    if (kafka_header_text(record, "device_id", device_id, sizeof(device_id)) > 0 &&
        ingest__journal_claim(journal, device_id))
      return -1;
  }
  /* A record of batch N exists only once batch N-1 was accepted (the ingest
   * produces a batch only right after its predecessor). Whether N itself
   * was complete the log cannot say: its resend completes it. */
  if (batch_seq - 1 > journal->accepted_batch_seq)
    journal->accepted_batch_seq = batch_seq - 1;
  return 1;
}

static int ingest_topic_index(const char (*topics)[INGEST_TOPIC_NAME_MAX + 1],
                              const char *name)
{
  if (!name)
    return -1;
  for (int t = 0; t < KAFKA_TOPIC_COUNT; t++) {
    if (strcmp(topics[t], name) == 0)
      return t;
  }
  return -1;
}

int ingest__state_merge(struct ingest_state *into, const struct ingest_state *from,
                        int (*take)(void *arg, const char *store_id), void *arg, size_t *merged)
{
  *merged = 0;
  for (size_t b = 0; b < from->bucket_count; b++) {
    for (const struct ingest_journal *j = from->buckets[b]; j; j = j->next) {
      struct ingest_journal *mine;
      if (!take(arg, j->store_id))
        continue;
      mine = ingest__state_get(into, j->store_id, j->journal_id, j->resync_id);
      if (!mine || (j->device_id && ingest__journal_claim(mine, j->device_id)))
        return -1;
      if (j->accepted_batch_seq > mine->accepted_batch_seq)
        mine->accepted_batch_seq = j->accepted_batch_seq;
      for (int s = 0; s < INGEST_STREAM_COUNT; s++) {
        if (ingest__pos_after(j->streams[s], mine->streams[s]))
          mine->streams[s] = j->streams[s];
      }
      for (int l = 0; l < 2; l++) {
        if (ingest__pos_after(j->legacy[l], mine->legacy[l]))
          mine->legacy[l] = j->legacy[l];
      }
      (*merged)++;
    }
  }
  return 0;
}

int ingest__checkpoint_apply(struct ingest_state *state, struct ingest_offsets *offsets,
                             const char (*topics)[INGEST_TOPIC_NAME_MAX + 1],
                             const Pos__V1__IngestCheckpoint *part)
{
  for (size_t i = 0; i < part->n_journals; i++) {
    const Pos__V1__IngestJournalState *saved = part->journals[i];
    struct ingest_journal *journal;
    if (!saved->store_id || !saved->store_id[0] ||
        strlen(saved->store_id) > INGEST_STORE_ID_MAX || saved->journal_id.len != 16)
      continue;
    journal = ingest__state_get(state, saved->store_id, saved->journal_id.data,
                                saved->resync_id ? saved->resync_id : "");
    if (!journal)
      return -1;
    if (saved->accepted_batch_seq > journal->accepted_batch_seq)
      journal->accepted_batch_seq = saved->accepted_batch_seq;
    if (saved->device_id && saved->device_id[0] &&
        ingest__journal_claim(journal, saved->device_id))
      return -1;
    for (size_t s = 0; s < saved->n_streams; s++) {
      const Pos__V1__IngestStreamPosition *stream = saved->streams[s];
      struct ingest_pos pos = {stream->highest_seq, stream->covered_first_seq,
                               stream->highest_index};
      int topic = ingest_topic_index(topics, stream->topic);
      enum ingest_stream which;
      struct ingest_pos *current;
      /* A topic of another prefix or version is not ours to track. */
      if (topic == KAFKA_TOPIC_SALES || topic == KAFKA_TOPIC_REPLAY)
        which = INGEST_STREAM_SALES;
      else if (topic == KAFKA_TOPIC_DLQ)
        which = pos.index > 0 ? INGEST_STREAM_DLQ_INVENTORY : INGEST_STREAM_DLQ;
      else if (topic == KAFKA_TOPIC_INVENTORY || topic == KAFKA_TOPIC_INVENTORY_REPLAY)
        which = INGEST_STREAM_INVENTORY;
      else
        continue;
      current = &journal->streams[which];
      /* An inventory position without its first row is an older
       * collector's, in batch numbers. */
      if ((which == INGEST_STREAM_INVENTORY || which == INGEST_STREAM_DLQ_INVENTORY) &&
          pos.first == 0)
        current = &journal->legacy[INGEST_LEGACY_SLOT(which)];
      if (ingest__pos_after(pos, *current))
        *current = pos;
    }
  }
  for (size_t i = 0; i < part->n_offsets; i++) {
    const Pos__V1__IngestPartitionOffset *saved = part->offsets[i];
    int topic = ingest_topic_index(topics, saved->topic);
    if (topic < 0 || topic >= KAFKA_DATA_TOPICS || saved->next_offset < 0)
      continue;
    if (ingest__offsets_raise(offsets, topic, saved->partition, saved->next_offset))
      return -1;
  }
  return 0;
}

int ingest__checkpoint_encode(const struct ingest_state *state,
                              const struct ingest_offsets *offsets,
                              const char (*topics)[INGEST_TOPIC_NAME_MAX + 1],
                              const char *instance_id, uint64_t generation, int64_t created_ms,
                              size_t part_bytes, struct ingest_blob **parts_out,
                              size_t *part_count_out)
{
  size_t count = state->journal_count, filled = 0, offset_count = 0, part_count = 0;
  Pos__V1__IngestJournalState *journals = NULL, **journal_ptrs = NULL;
  Pos__V1__IngestStreamPosition *streams = NULL, **stream_ptrs = NULL;
  Pos__V1__IngestPartitionOffset *saved_offsets = NULL, **offset_ptrs = NULL;
  size_t *part_start = NULL;
  struct ingest_blob *parts = NULL;
  int rc = -1;

  *parts_out = NULL;
  *part_count_out = 0;
  for (int t = 0; t < KAFKA_DATA_TOPICS; t++)
    offset_count += (size_t)offsets->count[t];
  /* +1s keep calloc from being asked for 0 bytes. */
  journals = calloc(count + 1, sizeof(*journals));
  journal_ptrs = calloc(count + 1, sizeof(*journal_ptrs));
  streams = calloc(count * INGEST_CHECKPOINT_STREAMS + 1, sizeof(*streams));
  stream_ptrs = calloc(count * INGEST_CHECKPOINT_STREAMS + 1, sizeof(*stream_ptrs));
  saved_offsets = calloc(offset_count + 1, sizeof(*saved_offsets));
  offset_ptrs = calloc(offset_count + 1, sizeof(*offset_ptrs));
  part_start = calloc(count + 2, sizeof(*part_start));
  if (!journals || !journal_ptrs || !streams || !stream_ptrs || !saved_offsets ||
      !offset_ptrs || !part_start)
    goto out;

  /* The protobuf structs borrow the map's strings and ids: nothing to free
   * but the arrays. */
  for (size_t b = 0; b < state->bucket_count; b++) {
    for (const struct ingest_journal *journal = state->buckets[b]; journal;
         journal = journal->next) {
      Pos__V1__IngestJournalState *saved = &journals[filled];
      Pos__V1__IngestStreamPosition **first = &stream_ptrs[filled * INGEST_CHECKPOINT_STREAMS];
      Pos__V1__IngestStreamPosition *slots = &streams[filled * INGEST_CHECKPOINT_STREAMS];
      pos__v1__ingest_journal_state__init(saved);
      saved->store_id = journal->store_id;
      saved->journal_id.data = (uint8_t *)journal->journal_id;
      saved->journal_id.len = 16;
      saved->resync_id = journal->resync_id;
      saved->accepted_batch_seq = journal->accepted_batch_seq;
      if (journal->device_id)
        saved->device_id = journal->device_id;
      saved->streams = first;
      for (int s = 0; s < INGEST_CHECKPOINT_STREAMS; s++) {
        /* The streams, then the older collector's inventory positions
         * (covered_first_seq 0 says they are in batch numbers). */
        enum ingest_stream which = s < INGEST_STREAM_COUNT ? (enum ingest_stream)s
                                   : s == INGEST_STREAM_COUNT ? INGEST_STREAM_INVENTORY
                                                              : INGEST_STREAM_DLQ_INVENTORY;
        const struct ingest_pos *pos = s < INGEST_STREAM_COUNT
                                           ? &journal->streams[s]
                                           : &journal->legacy[s - INGEST_STREAM_COUNT];
        Pos__V1__IngestStreamPosition *stream = &slots[s];
        if (pos->seq == 0 && pos->index == 0)
          continue;
        pos__v1__ingest_stream_position__init(stream);
        stream->topic = (char *)topics[ingest__stream_topic(journal, which)];
        stream->highest_seq = pos->seq;
        stream->highest_index = pos->index;
        stream->covered_first_seq = s < INGEST_STREAM_COUNT ? pos->first : 0;
        first[saved->n_streams++] = stream;
      }
      journal_ptrs[filled++] = saved;
    }
  }
  offset_count = 0;
  for (int t = 0; t < KAFKA_DATA_TOPICS; t++) {
    for (int p = 0; p < offsets->count[t]; p++) {
      Pos__V1__IngestPartitionOffset *saved = &saved_offsets[offset_count];
      pos__v1__ingest_partition_offset__init(saved);
      saved->topic = (char *)topics[t];
      saved->partition = p;
      saved->next_offset = offsets->next[t][p];
      offset_ptrs[offset_count++] = saved;
    }
  }

  /* Cut the journals into parts that stay below part_bytes. */
  {
    size_t used = 0;
    part_start[part_count++] = 0;
    for (size_t i = 0; i < filled; i++) {
      size_t size = pos__v1__ingest_journal_state__get_packed_size(journal_ptrs[i]) + 8;
      if (used > 0 && used + size > part_bytes) {
        part_start[part_count++] = i;
        used = 0;
      }
      used += size;
    }
    part_start[part_count] = filled;
  }
  if (part_count > INGEST_MAX_CHECKPOINT_PARTS)
    goto out;
  parts = calloc(part_count, sizeof(*parts));
  if (!parts)
    goto out;
  for (size_t k = 0; k < part_count; k++) {
    Pos__V1__IngestCheckpoint checkpoint;
    pos__v1__ingest_checkpoint__init(&checkpoint);
    checkpoint.instance_id = (char *)instance_id;
    checkpoint.created_ms = created_ms;
    checkpoint.generation = generation;
    checkpoint.part = (uint32_t)k;
    checkpoint.parts = (uint32_t)part_count;
    checkpoint.journals = journal_ptrs + part_start[k];
    checkpoint.n_journals = part_start[k + 1] - part_start[k];
    if (k == 0) {
      checkpoint.offsets = offset_ptrs;
      checkpoint.n_offsets = offset_count;
    }
    parts[k].len = pos__v1__ingest_checkpoint__get_packed_size(&checkpoint);
    parts[k].data = malloc(parts[k].len + 1);
    if (!parts[k].data)
      goto out;
    pos__v1__ingest_checkpoint__pack(&checkpoint, parts[k].data);
  }
  *parts_out = parts;
  *part_count_out = part_count;
  parts = NULL;
  rc = 0;
out:
  if (parts) {
    for (size_t k = 0; k < part_count; k++)
      free(parts[k].data);
    free(parts);
  }
  free(journals);
  free(journal_ptrs);
  free(streams);
  free(stream_ptrs);
  free(saved_offsets);
  free(offset_ptrs);
  free(part_start);
  return rc;
}

int ingest__lease_key(char *out, size_t out_size, const char *instance_id)
{
  int len = snprintf(out, out_size, "%s" INGEST_LEASE_SUFFIX, instance_id);
  return len < 0 || (size_t)len >= out_size ? -1 : 0;
}

int ingest__checkpoint_part_key(char *out, size_t out_size, const char *instance_id,
                                uint64_t generation, uint32_t part)
{
  int len = snprintf(out, out_size, "%s/%" PRIu64 "/%" PRIu32, instance_id, generation, part);
  return len < 0 || (size_t)len >= out_size ? -1 : 0;
}

int ingest__garbage_add(struct ingest_garbage *garbage, uint64_t generation, uint32_t part,
                        int32_t partition)
{
  struct ingest_part_key *key;

  if (garbage->count == garbage->capacity) {
    size_t capacity = garbage->capacity ? garbage->capacity * 2 : 64;
    struct ingest_part_key *grown;
    if (capacity > INGEST_MAX_GARBAGE_KEYS)
      capacity = INGEST_MAX_GARBAGE_KEYS;
    if (garbage->count >= capacity)
      return -1;
    grown = realloc(garbage->keys, capacity * sizeof(*grown));
    if (!grown)
      return -1;
    garbage->keys = grown;
    garbage->capacity = capacity;
  }
  key = &garbage->keys[garbage->count++];
  key->generation = generation;
  key->part = part;
  key->partition = partition;
  return 0;
}

void ingest__garbage_free(struct ingest_garbage *garbage)
{
  free(garbage->keys);
  memset(garbage, 0, sizeof(*garbage));
}

void ingest__waited_free(struct ingest_waited_list *list)
{
  for (size_t i = 0; i < list->count; i++) {
    free(list->items[i].instance_id);
    free(list->items[i].partitions);
  }
  free(list->items);
  memset(list, 0, sizeof(*list));
}

int ingest__waited_copy(struct ingest_waited_list *to, const struct ingest_waited_list *from)
{
  ingest__waited_free(to);
  if (from->count == 0)
    return 0;
  to->items = calloc(from->count, sizeof(*to->items));
  if (!to->items)
    return -1;
  for (size_t i = 0; i < from->count; i++) {
    const struct ingest_waited *w = &from->items[i];
    struct ingest_waited *copy = &to->items[to->count++];

    *copy = *w;
    copy->instance_id = strdup(w->instance_id);
    copy->partitions = malloc((w->n_partitions + 1) * sizeof(*copy->partitions));
    if (!copy->instance_id || !copy->partitions) {
      ingest__waited_free(to);
      return -1;
    }
    memcpy(copy->partitions, w->partitions, w->n_partitions * sizeof(*copy->partitions));
  }
  return 0;
}

int ingest__journal_claim(struct ingest_journal *journal, const char *device_id)
{
  if (journal->device_id || !device_id || !device_id[0])
    return 0;
  journal->device_id = strdup(device_id);
  return journal->device_id ? 0 : -1;
}

int ingest__rebase_apply(struct ingest_state *state, const char *store_id,
                         const uint8_t journal_id[16], uint64_t from_batch_seq,
                         uint64_t *previous)
{
  struct ingest_journal *journal = ingest__state_get(state, store_id, journal_id, "");

  if (!journal)
    return -1;
  if (previous)
    *previous = journal->accepted_batch_seq;
  if (from_batch_seq > 0 && from_batch_seq - 1 > journal->accepted_batch_seq)
    journal->accepted_batch_seq = from_batch_seq - 1;
  return 0;
}

int ingest__rebase_key(char *out, size_t out_size, const char *store_id,
                       const uint8_t journal_id[16])
{
  char hex[33];
  int len;

  proto_journal_id_format(journal_id, hex);
  len = snprintf(out, out_size, "%s/rebase/%s", store_id, hex);
  return len < 0 || (size_t)len >= out_size ? -1 : 0;
}
