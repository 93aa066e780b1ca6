/*
 * client.c - topics, producer and reader configuration, reading a topic to
 * its end, and record headers as text.
 */
#include "kafka/kafka.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/clock.h"
#include "platform/log.h"

static const char *const kafka_suffixes[KAFKA_TOPIC_COUNT] = {
    [KAFKA_TOPIC_SALES] = "sales.v1",
    [KAFKA_TOPIC_REPLAY] = "sales.replay.v1",
    [KAFKA_TOPIC_DLQ] = "dlq.v1",
    [KAFKA_TOPIC_INVENTORY] = "inventory-deltas.v1",
    [KAFKA_TOPIC_INVENTORY_REPLAY] = "inventory-deltas.replay.v1",
    [KAFKA_TOPIC_STATUS] = "agent-status.v1",
    [KAFKA_TOPIC_STATE] = "ingest-state.v1",
    [KAFKA_TOPIC_CONTROL] = "control.v1",
    [KAFKA_TOPIC_OWNERSHIP] = "ownership.v1",
};

const char *kafka_topic_suffix(enum kafka_topic topic)
{
  if ((int)topic < 0 || topic >= KAFKA_TOPIC_COUNT)
    return "";
  return kafka_suffixes[topic];
}

int kafka_topic_compacted(enum kafka_topic topic)
{
  return topic == KAFKA_TOPIC_STATUS || topic == KAFKA_TOPIC_STATE ||
         topic == KAFKA_TOPIC_CONTROL;
}

int kafka_topic_name(const char *prefix, enum kafka_topic topic, char *out, size_t out_size)
{
  int len = snprintf(out, out_size, "%s%s", prefix ? prefix : "", kafka_topic_suffix(topic));

  /* Kafka's own limit is 249 characters of [A-Za-z0-9._-]. */
  if (len < 0 || (size_t)len >= out_size || len > 249)
    return -1;
  for (const char *p = out; *p; p++) {
    char c = *p;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return -1;
  }
  return 0;
}

int kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                   size_t err_size)
{
  char why[256];

  if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
    snprintf(err, err_size, "kafka property %s=%s: %s", name, value, why);
    return -1;
  }
  return 0;
}

/* librdkafka's log lines (syslog levels) as our key=value events; any thread. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *facility,
                         const char *message)
{
  enum log_level ours = level <= 3 ? LOG_ERROR : level == 4 ? LOG_WARN
                                             : level <= 6 ? LOG_INFO
                                                          : LOG_DEBUG;
  char quoted[1024];

  /* Configuration notes (e.g. "enable.gapless.guarantee is experimental")
   * are the same at every start: not worth a warning each time. */
  if (strcmp(facility, "CONFWARN") == 0 && ours == LOG_WARN)
    ours = LOG_INFO;
  log_event(ours, "kafka", "rdkafka", "client=%s fac=%s msg=%s", rd_kafka_name(rk), facility,
            log_quote(message, quoted, sizeof(quoted)));
}

rd_kafka_conf_t *kafka_base_conf(const char *brokers, const char *debug, char *err, size_t err_size)
{
  rd_kafka_conf_t *conf = rd_kafka_conf_new();

  rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
  if (kafka_conf_set(conf, "bootstrap.servers", brokers, err, err_size) ||
      (debug && debug[0] && kafka_conf_set(conf, "debug", debug, err, err_size))) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  return conf;
}

#define KAFKA_STR2(x) #x
#define KAFKA_STR(x) KAFKA_STR2(x)

rd_kafka_conf_t *kafka_producer_conf(const char *brokers, const char *debug, char *err,
                                     size_t err_size)
{
  static const char *const props[][2] = {
      {"client.id", "pos-collector"},
      /* Every in-sync replica has the record before it counts as delivered. */
      {"acks", "all"},
      /* Retries never duplicate or reorder within a partition, and any
       * failure that could leave a gap is fatal instead of silent. */
      {"enable.idempotence", "true"},
      {"enable.gapless.guarantee", "true"},
      /* A sale is never given up on: it is retried until Kafka has it. The
       * ingest answers the agent 503 meanwhile (produce_timeout_ms). */
      {"message.timeout.ms", "0"},
      /* Chosen by measurement (tests/bench/uplink_bench.sh, 500-sale batches): 5 ms put
       * 5 ms on every batch's acknowledgement (ack p50 7.3 ms); 2 ms gives p50 3.4 ms and
       * 1 ms 2.3-2.5 ms at the same CPU per record (a batch's records are queued in one go
       * on the loop, within a millisecond for a few thousand, so they still leave in one
       * request); 0 sends a request per few records and doubles the CPU. A store waits for
       * its ack before its next batch: the linger is on the path of every batch. */
      {"linger.ms", "1"},
      /* Bounds how long a broker may act on a request we sent: recovery
       * after a delivery doubt waits this out (KAFKA_PRODUCE_REQUEST_TIMEOUT_MS). */
      {"request.timeout.ms", KAFKA_STR(KAFKA_PRODUCE_REQUEST_TIMEOUT_MS)},
      /* One client, not thousands: come back quickly after a broker outage
       * (the default backs off to 10 s while agents wait on 503s). */
      {"reconnect.backoff.max.ms", "2000"},
      /* What Java and Go clients use by default, so a store's records land
       * in the same partition whoever produces them. */
      {"partitioner", "murmur2_random"},
      /* The ingest bounds what it has in flight below this. */
      {"queue.buffering.max.messages", "1100000"},
  };
  rd_kafka_conf_t *conf = kafka_base_conf(brokers, debug, err, err_size);

  if (!conf)
    return NULL;
  for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
    if (kafka_conf_set(conf, props[i][0], props[i][1], err, err_size)) {
      rd_kafka_conf_destroy(conf);
      return NULL;
    }
  }
  return conf;
}

rd_kafka_t *kafka_reader_new(const char *brokers, const char *debug, char *err,
                             size_t err_size)
{
  static const char *const props[][2] = {
      {"client.id", "pos-collector-reader"},
      /* consumer_poll needs a group; the reader never joins it (it assigns
       * partitions itself) and never commits. */
      {"group.id", "pos-collector-reader"},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"enable.partition.eof", "true"},
      /* A position retention dropped: kafka_read_to_end moves to the log's start itself, at
       * once (librdkafka would wait 500 ms, and under a log start moving that fast, for ever). */
      {"auto.offset.reset", "error"},
      {"fetch.error.backoff.ms", "20"},
      {"isolation.level", "read_uncommitted"},
      {"fetch.wait.max.ms", "100"},
  };
  rd_kafka_conf_t *conf = kafka_base_conf(brokers, debug, err, err_size);
  rd_kafka_t *reader;
  char why[256];

  if (!conf)
    return NULL;
  for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
    if (kafka_conf_set(conf, props[i][0], props[i][1], err, err_size)) {
      rd_kafka_conf_destroy(conf);
      return NULL;
    }
  }
  reader = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
  if (!reader) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, err_size, "cannot create a Kafka reader for %s: %s", brokers, why);
    return NULL;
  }
  rd_kafka_poll_set_consumer(reader);
  return reader;
}

void kafka_reader_destroy(rd_kafka_t *reader)
{
  if (!reader)
    return;
  rd_kafka_consumer_close(reader);
  rd_kafka_destroy(reader);
}

int kafka_topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms, int *count,
                           char *err, size_t err_size)
{
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t kerr;
  int rc = -1;

  *count = 0;
  if (!rkt) {
    snprintf(err, err_size, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
    return -1;
  }
  kerr = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
  if (kerr) {
    snprintf(err, err_size, "metadata of topic %s: %s", topic, rd_kafka_err2str(kerr));
    goto out;
  }
  for (int i = 0; i < md->topic_cnt; i++) {
    if (strcmp(md->topics[i].topic, topic) == 0 && !md->topics[i].err)
      *count = md->topics[i].partition_cnt;
  }
  rc = 0;
out:
  if (md)
    rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(rkt);
  return rc;
}

/* Records [from, to) of partition p were dropped by retention before we read them: said, and
 * counted. What they held is missing from what the caller rebuilds. */
static void kafka_read_note_dropped(const char *topic, int p, int64_t from, int64_t to,
                                    int64_t log_start, struct kafka_read_stats *stats)
{
  if (to <= from)
    return;
  log_warn("kafka", "records_dropped_unread",
           "topic=%s partition=%d from_offset=%" PRId64 " log_start=%" PRId64 " records=%" PRId64
           " why=\"the topic's retention dropped them before they were read; keep its retention "
           "well above the collectors' checkpoint interval\"",
           topic, p, from, log_start, to - from);
  if (stats)
    stats->dropped_unread += (uint64_t)(to - from);
}

/*
 * kafka_read_to_end's partition p could not be fetched at *next: retention
 * dropped the records there while we read (the log's start moved past it).
 * Moves *next to the log's start now, counting the records skipped as
 * dropped unread, or ends the partition when its start is past `high`
 * (the caller assigns the partitions again: kafka_read_reassign).
 * Returns 1 when the partition is done, 0 when it reads on, -1 on error.
 */
static int kafka_read_skip_dropped(rd_kafka_t *reader, const char *topic, int p, int64_t high,
                                   int64_t *next, char *done, struct kafka_read_stats *stats,
                                   char *err, size_t err_size)
{
  int64_t low = 0, now_high = 0;
  rd_kafka_resp_err_t kerr;

  if (*done)
    return 0;
  kerr = rd_kafka_query_watermark_offsets(reader, topic, p, &low, &now_high, 10000);
  if (kerr) {
    snprintf(err, err_size, "watermarks of %s [%d]: %s", topic, p, rd_kafka_err2str(kerr));
    return -1;
  }
  kafka_read_note_dropped(topic, p, *next, low < high ? low : high, low, stats);
  if (low >= high) {
    *done = 1;
    return 1;
  }
  if (low > *next)
    *next = low;
  return 0;
}

/* Assigns the partitions not done yet, each from next[]: at the start, and after a skip (the
 * fetcher of a partition whose position was reset with auto.offset.reset=error stays stopped
 * until then). */
static int kafka_read_reassign(rd_kafka_t *reader, const char *topic, int partitions,
                               const int64_t *next, const char *done, char *err, size_t err_size)
{
  rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(partitions);
  rd_kafka_resp_err_t kerr;

  for (int p = 0; p < partitions; p++) {
    if (!done[p])
      rd_kafka_topic_partition_list_add(list, topic, p)->offset = next[p];
  }
  kerr = rd_kafka_assign(reader, list);
  rd_kafka_topic_partition_list_destroy(list);
  if (kerr) {
    snprintf(err, err_size, "assigning %s: %s", topic, rd_kafka_err2str(kerr));
    return -1;
  }
  return 0;
}

int kafka_read_to_end(rd_kafka_t *reader, const char *topic, int partitions,
                      const int64_t *start_offsets, int64_t *end_offsets, kafka_record_fn fn,
                      void *arg, const atomic_int *stop, int stall_ms,
                      struct kafka_read_stats *stats, char *err, size_t err_size)
{
  int64_t *high = NULL, *next = NULL;
  char *done = NULL;
  int remaining = 0, rc = -1;
  uint64_t last_progress;
  rd_kafka_resp_err_t kerr;

  if (partitions <= 0)
    return 0;
  high = calloc((size_t)partitions, sizeof(*high));
  next = calloc((size_t)partitions, sizeof(*next));
  done = calloc((size_t)partitions, 1);
  if (!high || !next || !done) {
    snprintf(err, err_size, "out of memory reading %s", topic);
    goto out;
  }
  for (int p = 0; p < partitions; p++) {
    int64_t low = 0, from;
    kerr = rd_kafka_query_watermark_offsets(reader, topic, p, &low, &high[p], 10000);
    if (kerr) {
      snprintf(err, err_size, "watermarks of %s [%d]: %s", topic, p, rd_kafka_err2str(kerr));
      goto out;
    }
    from = low;
    if (start_offsets && start_offsets[p] > low)
      from = start_offsets[p];
    if (start_offsets && start_offsets[p] > 0)
      kafka_read_note_dropped(topic, p, start_offsets[p], low, low, stats);
    if (from > high[p]) {
      /* The log ends before where we were told it reached: the topic was
       * recreated or the embedded Kafka restarted. Read what there is. */
      log_error("kafka", "log_shorter_than_checkpoint",
                "topic=%s partition=%d checkpoint_offset=%" PRId64 " high_watermark=%" PRId64,
                topic, p, from, high[p]);
      from = low;
    }
    if (end_offsets)
      end_offsets[p] = high[p];
    next[p] = from;
    if (from < high[p])
      remaining++;
    else
      done[p] = 1;
  }
  if (remaining == 0) {
    rc = 0;
    goto out;
  }
  if (kafka_read_reassign(reader, topic, partitions, next, done, err, err_size))
    goto out;
  if (stats)
    stats->partitions_read += remaining;
  last_progress = clock_mono_ms();
  while (remaining > 0) {
    rd_kafka_message_t *record;
    int p;
    if (stop && atomic_load(stop)) {
      snprintf(err, err_size, "stopped while reading %s", topic);
      goto unassign;
    }
    record = rd_kafka_consumer_poll(reader, 100);
    if (!record) {
      if (clock_mono_ms() - last_progress > (uint64_t)stall_ms) {
        snprintf(err, err_size, "reading %s: nothing arrived for %d ms with %d partitions left",
                 topic, stall_ms, remaining);
        goto unassign;
      }
      continue;
    }
    p = record->partition;
    if (!record->rkt || strcmp(rd_kafka_topic_name(record->rkt), topic) != 0 || p < 0 ||
        p >= partitions) {
      rd_kafka_message_destroy(record);
      continue;
    }
    if (record->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      /* The end of what the log held when we asked, or further: the last
       * records may have been compacted away, so the offset is the test. */
      if (!done[p] && record->offset >= high[p]) {
        done[p] = 1;
        remaining--;
      }
      last_progress = clock_mono_ms();
      rd_kafka_message_destroy(record);
      continue;
    }
    if (record->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET) {
      rc = kafka_read_skip_dropped(reader, topic, p, high[p], &next[p], &done[p], stats, err,
                                   err_size);
      rd_kafka_message_destroy(record);
      if (rc < 0)
        goto unassign;
      remaining -= rc;
      rc = -1;
      if (remaining > 0 &&
          kafka_read_reassign(reader, topic, partitions, next, done, err, err_size))
        goto unassign;
      last_progress = clock_mono_ms();
      continue;
    }
    if (record->err) {
      log_warn("kafka", "read_error", "topic=%s partition=%d error=%s", topic, p,
               rd_kafka_err2str(record->err));
      rd_kafka_message_destroy(record);
      continue;
    }
    last_progress = clock_mono_ms();
    if (record->offset >= next[p])
      next[p] = record->offset + 1;
    if (!done[p] && record->offset < high[p]) {
      if (stats) {
        stats->records++;
        stats->bytes += record->len;
      }
      rc = fn(arg, record);
      if (rc) {
        snprintf(err, err_size, "reading %s [%d] at offset %" PRId64 ": stopped", topic, p,
                 record->offset);
        rd_kafka_message_destroy(record);
        goto unassign;
      }
    }
    if (!done[p] && record->offset >= high[p] - 1) {
      done[p] = 1;
      remaining--;
    }
    rd_kafka_message_destroy(record);
  }
  rc = 0;
unassign:
  rd_kafka_assign(reader, NULL);
out:
  free(high);
  free(next);
  free(done);
  return rc;
}

int kafka_header_text(const rd_kafka_message_t *record, const char *name, char *out,
                      size_t out_size)
{
  rd_kafka_headers_t *headers = NULL;
  const void *value = NULL;
  size_t size = 0;

  if (out_size == 0)
    return -1;
  out[0] = '\0';
  if (rd_kafka_message_headers(record, &headers) || !headers)
    return -1;
  if (rd_kafka_header_get_last(headers, name, &value, &size) || size >= out_size)
    return -1;
  if (size)
    memcpy(out, value, size);
  out[size] = '\0';
  return (int)size;
}

int kafka_header_u64(const rd_kafka_message_t *record, const char *name, uint64_t *value)
{
  char text[24];
  char *end = NULL;
  unsigned long long parsed;

  if (kafka_header_text(record, name, text, sizeof(text)) <= 0)
    return -1;
  if (text[0] < '0' || text[0] > '9')
    return -1;
  errno = 0;
  parsed = strtoull(text, &end, 10);
  if (errno || *end)
    return -1;
  *value = (uint64_t)parsed;
  return 0;
}
