/*
 * kafka.h - what the collector needs of librdkafka, apart from business
 * rules: the project's topics, producer and reader configuration, reading a
 * topic to its end, record headers as text, and the embedded Kafka (the
 * mock cluster) that runs when no brokers are configured.
 *
 * Nothing here knows about sales or batches; collector/ingest/ does.
 */
#ifndef COLLECTOR_KAFKA_H
#define COLLECTOR_KAFKA_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

/* The project's topics (ARCHITECTURE.md, Kafka topics), without prefix. */
enum kafka_topic {
  KAFKA_TOPIC_SALES = 0,        /* sales.v1 */
  KAFKA_TOPIC_REPLAY,           /* sales.replay.v1 */
  KAFKA_TOPIC_DLQ,              /* dlq.v1 */
  KAFKA_TOPIC_INVENTORY,        /* inventory-deltas.v1 */
  KAFKA_TOPIC_INVENTORY_REPLAY, /* inventory-deltas.replay.v1: a replay's deltas */
  KAFKA_TOPIC_STATUS,           /* agent-status.v1 (compacted) */
  KAFKA_TOPIC_STATE,            /* ingest-state.v1 (compacted) */
  KAFKA_TOPIC_CONTROL,          /* control.v1 (compacted) */
  KAFKA_TOPIC_OWNERSHIP, /* ownership.v1: its partitions, assigned by the group (kafka/ownership.h)
                          */
  KAFKA_TOPIC_COUNT
};

/* The data topics, whose records the ingest state is rebuilt from, come first. */
#define KAFKA_DATA_TOPICS 5

/*
 * How long a broker may still act on a produce request the producer sent:
 * the producer's request.timeout.ms. After a delivery doubt, records the
 * old producer had in flight may land up to this long after it is gone, so
 * recovery waits this long (plus a margin) before it asks where the log
 * ends.
 */
#define KAFKA_PRODUCE_REQUEST_TIMEOUT_MS 10000

/* "sales.v1" for KAFKA_TOPIC_SALES, ... Static. */
const char *kafka_topic_suffix(enum kafka_topic topic);

/* 1 for the compacted topics (agent-status, ingest-state, control). */
int kafka_topic_compacted(enum kafka_topic topic);

/*
 * Writes prefix + suffix into `out`. Returns 0, or -1 when it does not fit
 * or the name is not a valid Kafka topic name ([A-Za-z0-9._-], 1-249).
 */
int kafka_topic_name(const char *prefix, enum kafka_topic topic, char *out, size_t out_size);

/*
 * Sets `name`=`value` on `conf`. Returns 0, or -1 with "kafka property
 * NAME=VALUE: why" in `err`. Any thread.
 */
int kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *err,
                   size_t err_size);

/*
 * A configuration for the exactly-once producer: acks=all, idempotence with
 * the gapless guarantee, no message timeout (a record is retried until it
 * is delivered), 1 ms linger (chosen by measurement: kafka/client.c), and
 * the Java-compatible murmur2_random partitioner so that a store's key
 * always lands in the same partition as any Java or Go client would put it.
 * Log lines go to platform/log. `debug` may be NULL. Returns a conf
 * (caller owns it, rd_kafka_new takes it) or NULL with `err` set. Any
 * thread.
 */
/*
 * A client configuration with bootstrap.servers, `debug` (may be NULL) and
 * librdkafka's log lines going to platform/log. NULL with `err` set.
 */
rd_kafka_conf_t *kafka_base_conf(const char *brokers, const char *debug, char *err,
                                 size_t err_size);

rd_kafka_conf_t *kafka_producer_conf(const char *brokers, const char *debug, char *err,
                                     size_t err_size);

/*
 * A plain consumer that reads assigned partitions from given offsets and
 * never commits. Returns the handle (caller destroys with
 * kafka_reader_destroy) or NULL with `err` set. Any thread.
 */
rd_kafka_t *kafka_reader_new(const char *brokers, const char *debug, char *err,
                             size_t err_size);
void kafka_reader_destroy(rd_kafka_t *reader);

/*
 * Partition count of `topic` from the cluster's metadata: 0 when the topic
 * does not exist. Returns 0 or -1 with `err` set (cluster unreachable
 * within `timeout_ms`). Blocks: not for the loop thread.
 */
int kafka_topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms, int *count,
                           char *err, size_t err_size);

/* Called for every record read; returning non-zero stops the read with that code. */
typedef int (*kafka_record_fn)(void *arg, const rd_kafka_message_t *record);

struct kafka_read_stats {
  uint64_t records;
  uint64_t bytes;
  int partitions_read;
  /* Offsets asked for that the log no longer holds (below its start: retention dropped
   * them before they were read), over every partition. */
  uint64_t dropped_unread;
};

/*
 * Reads partitions 0..partitions-1 of `topic` from start_offsets[p] (or the
 * log start when start_offsets is NULL or the offset is below it) up to the
 * high watermark each partition has when the read starts, calling `fn` for
 * each record in offset order per partition. end_offsets[p] (may be NULL)
 * receives those high watermarks. A start offset above the high watermark
 * (the log is shorter than we were told) is logged and read from the start;
 * one above 0 and below the log's start (retention dropped records that
 * were to be read) is logged, counted in stats->dropped_unread, and read
 * from the start.
 * Stops early with -1 when *stop becomes non-zero or nothing arrives for
 * `stall_ms`. Returns 0, fn's code, or -1 with `err` set. Blocks: not for
 * the loop thread.
 */
int kafka_read_to_end(rd_kafka_t *reader, const char *topic, int partitions,
                      const int64_t *start_offsets, int64_t *end_offsets, kafka_record_fn fn,
                      void *arg, const atomic_int *stop, int stall_ms,
                      struct kafka_read_stats *stats, char *err, size_t err_size);

/*
 * Copies the last header `name` of `record` into `out` as a NUL-terminated
 * string. Returns its length, or -1 when it is missing or does not fit.
 */
int kafka_header_text(const rd_kafka_message_t *record, const char *name, char *out,
                      size_t out_size);

/* Parses a decimal uint64 header. Returns 0 or -1 (missing or not a number). */
int kafka_header_u64(const rd_kafka_message_t *record, const char *name, uint64_t *value);

/*
 * The embedded Kafka: librdkafka's mock cluster on loopback ports, with
 * the project's topics created. It keeps everything in this process's
 * memory; it is for demos and tests, never storage.
 */
typedef struct kafka_embedded kafka_embedded;

/*
 * Starts `brokers` mock brokers and creates every project topic under
 * `topic_prefix` with `partitions` partitions. Returns NULL with `err` set
 * on failure. Caller stops it with kafka_embedded_stop after every client
 * of it is destroyed.
 */
kafka_embedded *kafka_embedded_start(int brokers, int partitions, const char *topic_prefix,
                                     char *err, size_t err_size);

/* "127.0.0.1:PORT[,127.0.0.1:PORT...]". Borrowed. */
const char *kafka_embedded_bootstrap(const kafka_embedded *embedded);

/* The mock cluster, for tests that inject faults (rdkafka_mock.h). Borrowed. */
struct rd_kafka_mock_cluster_s *kafka_embedded_cluster(kafka_embedded *embedded);

/* Stops the brokers and frees everything. NULL does nothing. */
void kafka_embedded_stop(kafka_embedded *embedded);

#endif
