/*
 * plain_producer.c - pos-plain-producer: the yardstick for the collector's
 * throughput. Produces the records the collector would produce for a batch
 * (each sale as a pos.v1.Sale value, key store_id, headers journal_id, seq,
 * batch_seq, kind, device_id) straight from librdkafka, with the
 * collector's producer settings (acks=all, idempotence with the gapless
 * guarantee, no message timeout, linger 1 ms, murmur2_random), and no
 * server, TLS, decoding or exactly-once bookkeeping in front.
 *
 *   pos-plain-producer --brokers HOST:PORT --topic T --batch FILE [--batch FILE...]
 *                      [--repeat N]
 *
 * Each FILE is a batch body as pos-batch --out writes it (zstd protobuf),
 * typically one per store. Their sales are produced N times (default 1):
 * repeat r of each batch with seqs shifted by r * sales and batch_seq by
 * r, as the next batches of the same journal would be, the batches of
 * different files interleaved as concurrent stores would be. Before the
 * clock starts, one warm-up record (key "warm-up") is produced and
 * delivered, so that connecting, the topic's metadata and the idempotent
 * producer id are not counted (the collector's producer is warm too).
 * Prints one line:
 *   records=N value_bytes=N seconds=S records_per_s=R failed=N cpu_ms=C
 * (seconds from the first produce to the last delivery report, warm-up
 * excluded; cpu_ms the process's user+system CPU, all of librdkafka's
 * threads, over the same window). Exits 0, 1 when a record failed or on another error, 2 on bad
 * usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto/codec.h"

static long plain_failed;
static long plain_delivered;

static void plain_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque)
{
  (void)rk;
  (void)opaque;
  if (message->err) {
    if (plain_failed++ < 5)
      fprintf(stderr, "pos-plain-producer: delivery failed: %s\n",
              rd_kafka_err2str(message->err));
  } else {
    plain_delivered++;
  }
}

static double plain_now_s(void)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static double plain_cpu_s(void)
{
  struct timespec cpu;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
  return (double)cpu.tv_sec + (double)cpu.tv_nsec / 1e9;
}

static uint8_t *plain_read_file(const char *path, size_t *length)
{
  FILE *file = fopen(path, "rb");
  uint8_t *data = NULL;
  long size;

  if (!file)
    return NULL;
  if (fseek(file, 0, SEEK_END) == 0 && (size = ftell(file)) >= 0 && fseek(file, 0, SEEK_SET) == 0) {
    data = malloc((size_t)size + 1);
    if (data && fread(data, 1, (size_t)size, file) != (size_t)size) {
      free(data);
      data = NULL;
    }
    *length = (size_t)size;
  }
  fclose(file);
  return data;
}

static int plain_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
  char why[512];
  if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
    fprintf(stderr, "pos-plain-producer: kafka property %s=%s: %s\n", name, value, why);
    return -1;
  }
  return 0;
}

/* Buffers and counters of one run. */
struct plain_state {
  uint8_t *value;
  size_t value_cap;
  long records;
  uint64_t value_bytes;
};

/*
 * Produces the sales of `batch` as repeat `r`: seqs shifted by r * sales
 * and batch_seq by r. Returns 0, or -1 (printed) when a record cannot be
 * queued.
 */
static int plain_produce_batch(rd_kafka_t *rk, const char *topic, const Pos__V1__Batch *batch,
                               const char *journal_hex, uint64_t r, struct plain_state *state)
{
  char batch_seq[24];
  snprintf(batch_seq, sizeof(batch_seq), "%" PRIu64, batch->envelope->batch_seq + r);
  for (size_t i = 0; i < batch->n_sales; i++) {
    Pos__V1__Sale *sale = batch->sales[i];
    uint64_t original_seq = sale->seq;
    char seq[24];
    size_t length;
    rd_kafka_resp_err_t rc;

    sale->seq = original_seq + r * batch->n_sales;
    snprintf(seq, sizeof(seq), "%" PRIu64, sale->seq);
    length = pos__v1__sale__get_packed_size(sale);
    if (length > state->value_cap) {
      state->value_cap = length * 2;
      free(state->value);
      state->value = malloc(state->value_cap);
      if (!state->value) {
        fprintf(stderr, "pos-plain-producer: out of memory\n");
        return -1;
      }
    }
    pos__v1__sale__pack(sale, state->value);
    sale->seq = original_seq;
    for (;;) {
      rc = rd_kafka_producev(
          rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_KEY(sale->store_id, strlen(sale->store_id)),
          RD_KAFKA_V_VALUE(state->value, length), RD_KAFKA_V_HEADER("journal_id", journal_hex, 32),
          RD_KAFKA_V_HEADER("seq", seq, -1), RD_KAFKA_V_HEADER("batch_seq", batch_seq, -1),
          RD_KAFKA_V_HEADER("kind", "live", 4),
          RD_KAFKA_V_HEADER("device_id", batch->envelope->device_id, -1), RD_KAFKA_V_END);
      if (rc != RD_KAFKA_RESP_ERR__QUEUE_FULL)
        break;
      rd_kafka_poll(rk, 10);
    }
    if (rc) {
      fprintf(stderr, "pos-plain-producer: produce: %s\n", rd_kafka_err2str(rc));
      return -1;
    }
    state->records++;
    state->value_bytes += length;
    rd_kafka_poll(rk, 0);
  }
  return 0;
}

#define PLAIN_MAX_BATCHES 64

int main(int argc, char **argv)
{
  const char *brokers = NULL, *topic = NULL, *batch_paths[PLAIN_MAX_BATCHES];
  size_t batch_count = 0;
  long repeat = 1;
  static const char *const props[][2] = {
      {"client.id", "pos-plain-producer"},
      {"acks", "all"},
      {"enable.idempotence", "true"},
      {"enable.gapless.guarantee", "true"},
      {"message.timeout.ms", "0"},
      {"linger.ms", "1"},
      {"partitioner", "murmur2_random"},
      {"queue.buffering.max.messages", "1100000"},
  };
  struct proto_limits limits = {1u << 30, 1u << 30, 10000000};
  Pos__V1__Batch *batches[PLAIN_MAX_BATCHES];
  char journal_hexes[PLAIN_MAX_BATCHES][33];
  rd_kafka_conf_t *conf;
  rd_kafka_t *rk;
  struct plain_state state = {NULL, 0, 0, 0};
  size_t body_len = 0;
  char err[512];
  double started, seconds, cpu_started;

  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
    if (!next) {
      fprintf(stderr, "usage: pos-plain-producer --brokers B --topic T --batch FILE [--repeat N]\n");
      return 2;
    }
    i++;
    if (strcmp(arg, "--brokers") == 0)
      brokers = next;
    else if (strcmp(arg, "--topic") == 0)
      topic = next;
    else if (strcmp(arg, "--batch") == 0) {
      if (batch_count == PLAIN_MAX_BATCHES) {
        fprintf(stderr, "pos-plain-producer: at most %d --batch files\n", PLAIN_MAX_BATCHES);
        return 2;
      }
      batch_paths[batch_count++] = next;
    }
    else if (strcmp(arg, "--repeat") == 0) {
      char *end;
      errno = 0;
      repeat = strtol(next, &end, 10);
      if (errno || *end || repeat < 1 || repeat > 1000000) {
        fprintf(stderr, "pos-plain-producer: --repeat \"%s\": expected 1..1000000\n", next);
        return 2;
      }
    } else {
      fprintf(stderr, "pos-plain-producer: unknown option %s\n", arg);
      return 2;
    }
  }
  if (!brokers || !topic || batch_count == 0) {
    fprintf(stderr, "usage: pos-plain-producer --brokers B --topic T --batch FILE [--repeat N]\n");
    return 2;
  }
  for (size_t b = 0; b < batch_count; b++) {
    uint8_t *body = plain_read_file(batch_paths[b], &body_len);
    if (!body) {
      fprintf(stderr, "pos-plain-producer: cannot read %s: %s\n", batch_paths[b], strerror(errno));
      return 1;
    }
    if (proto_batch_unpack(body, body_len, &limits, &batches[b], err, sizeof(err))) {
      fprintf(stderr, "pos-plain-producer: %s: %s\n", batch_paths[b], err);
      return 1;
    }
    free(body);
    for (int i = 0; i < 16; i++)
      snprintf(journal_hexes[b] + 2 * i, 3, "%02x", batches[b]->envelope->journal_id.data[i]);
  }

  conf = rd_kafka_conf_new();
  if (plain_set(conf, "bootstrap.servers", brokers))
    return 1;
  for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
    if (plain_set(conf, props[i][0], props[i][1]))
      return 1;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, plain_on_delivery);
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk) {
    fprintf(stderr, "pos-plain-producer: %s\n", err);
    return 1;
  }

  /* Warm up: connection, metadata (the topic is created on first use),
   * idempotent producer id. */
  if (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY("warm-up", 7),
                        RD_KAFKA_V_VALUE("", 0), RD_KAFKA_V_END) ||
      rd_kafka_flush(rk, 30000) || plain_failed) {
    fprintf(stderr, "pos-plain-producer: the warm-up record was not delivered within 30 s\n");
    return 1;
  }
  plain_delivered = 0;

  started = plain_now_s();
  cpu_started = plain_cpu_s();
  for (long r = 0; r < repeat; r++) {
    for (size_t b = 0; b < batch_count; b++) {
      if (plain_produce_batch(rk, topic, batches[b], journal_hexes[b], (uint64_t)r, &state))
        return 1;
    }
  }
  while (rd_kafka_outq_len(rk) > 0)
    rd_kafka_poll(rk, 50);
  seconds = plain_now_s() - started;
  printf("records=%ld value_bytes=%" PRIu64 " seconds=%.3f records_per_s=%.0f failed=%ld "
         "cpu_ms=%.1f\n",
         state.records, state.value_bytes, seconds,
         seconds > 0 ? (double)plain_delivered / seconds : 0.0, plain_failed,
         (plain_cpu_s() - cpu_started) * 1000.0);
  free(state.value);
  rd_kafka_destroy(rk);
  for (size_t b = 0; b < batch_count; b++)
    pos__v1__batch__free_unpacked(batches[b], NULL);
  return plain_failed ? 1 : 0;
}
