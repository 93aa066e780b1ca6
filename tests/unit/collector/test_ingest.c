/*
 * test_ingest.c - the collector's exactly-once path against a real Kafka
 * protocol peer: librdkafka's mock cluster in this process, read back with
 * a real consumer. Batches in seq order with their headers, duplicates,
 * gaps, dead letters, a retry racing its first attempt, a restart that
 * rebuilds the state from the checkpoint and the log, a crash between
 * produce and acknowledgement, a broker that goes away, a failed delivery
 * that forces a rebuild, heartbeats, replay batches, and the embedded Kafka.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <uv.h>
#include <zstd.h>

#include "ingest/ingest.h"
#include "kafka/kafka.h"
#include "kafka/ownership.h"
#include "platform/clock.h"
#include "platform/log.h"
#include "proto/codec.h"

#define STORE "S0042"
#define WAIT_MS 20000

struct fixture {
  uv_loop_t loop;
  kafka_embedded *kafka;
  ingest *in;
  char instance_id[64];
  uint64_t produce_timeout_ms;
  uint64_t request_timeout_ms; /* a start after an unclean stop waits about 1.2 times this */
};

struct outcome {
  int done;
  struct ingest_result result;
};

static void on_done(void *arg, const struct ingest_result *result)
{
  struct outcome *o = arg;
  assert_int_equal(o->done, 0); /* exactly once */
  o->done = 1;
  o->result = *result;
}

/* ---- building batches -------------------------------------------------- */

struct sale_spec {
  uint64_t seq;
  int bad;               /* total does not add up: dead letter */
  const char *store_id;  /* NULL: left empty for the collector to fill */
};

static Pos__V1__Batch *make_batch_for(const uint8_t journal_id[16], uint64_t batch_seq,
                                      const struct sale_spec *specs, size_t n, size_t deltas,
                                      const char *resync_id)
{
  Pos__V1__Batch batch = POS__V1__BATCH__INIT;
  Pos__V1__BatchEnvelope envelope = POS__V1__BATCH_ENVELOPE__INIT;
  Pos__V1__Sale sales[64], *sale_ptrs[64];
  Pos__V1__SaleLine lines[64], *line_ptrs[64];
  Pos__V1__Payment payments[64], *payment_ptrs[64];
  Pos__V1__InventoryDelta delta_msgs[8], *delta_ptrs[8];
  char ids[64][24];
  uint8_t *body;
  size_t len;
  Pos__V1__Batch *unpacked;

  assert_true(n <= 64 && deltas <= 8);
  envelope.store_id = STORE;
  envelope.device_id = "HUB1";
  envelope.journal_id.data = (uint8_t *)journal_id;
  envelope.journal_id.len = 16;
  envelope.batch_seq = batch_seq;
  envelope.kind = resync_id ? POS__V1__BATCH_KIND__BATCH_KIND_REPLAY
                            : POS__V1__BATCH_KIND__BATCH_KIND_LIVE;
  envelope.resync_id = resync_id ? (char *)resync_id : "";
  envelope.sale_count = (uint32_t)n;
  /* The rows the batch covers: its sales' seqs (the deltas are theirs). */
  for (size_t i = 0; i < n; i++) {
    if (!envelope.first_seq || specs[i].seq < envelope.first_seq)
      envelope.first_seq = specs[i].seq;
    if (specs[i].seq > envelope.last_seq)
      envelope.last_seq = specs[i].seq;
  }
  for (size_t i = 0; i < n; i++) {
    Pos__V1__Sale *sale = &sales[i];
    pos__v1__sale__init(sale);
    pos__v1__sale_line__init(&lines[i]);
    pos__v1__payment__init(&payments[i]);
    snprintf(ids[i], sizeof(ids[i]), "T1-%06llu", (unsigned long long)specs[i].seq);
    sale->sale_id = ids[i];
    sale->kind = POS__V1__SALE_KIND__SALE_KIND_SALE;
    sale->terminal_id = "T1";
    sale->channel = POS__V1__CHANNEL__CHANNEL_POS;
    sale->currency = "EUR";
    sale->currency_exponent = 2;
    sale->seq = specs[i].seq;
    if (specs[i].store_id)
      sale->store_id = (char *)specs[i].store_id;

    lines[i].sku = "PIZZA-MARG-L";
    lines[i].quantity = 2;
    lines[i].unit_price = 1250;
    lines[i].discount = 100;
    lines[i].tax = 230;
    line_ptrs[i] = &lines[i];
    sale->n_lines = 1;
    sale->lines = &line_ptrs[i];
    sale->total = specs[i].bad ? 1 : 2630;
    payments[i].method = "card";
    payments[i].amount = sale->total;
    payment_ptrs[i] = &payments[i];
    sale->n_payments = 1;
    sale->payments = &payment_ptrs[i];
    sale_ptrs[i] = sale;
  }
  for (size_t i = 0; i < deltas; i++) {
    pos__v1__inventory_delta__init(&delta_msgs[i]);
    delta_msgs[i].material_id = i == 0 ? "FLOUR-00" : "MOZZARELLA";
    delta_msgs[i].unit = "g";
    delta_msgs[i].quantity_milli = -250000 * (int64_t)(i + 1);
    delta_msgs[i].reason = POS__V1__DELTA_REASON__DELTA_REASON_SALES;
    delta_msgs[i].first_seq = envelope.first_seq;
    delta_msgs[i].last_seq = envelope.last_seq;
    delta_ptrs[i] = &delta_msgs[i];
  }
  batch.envelope = &envelope;
  batch.n_sales = n;
  batch.sales = sale_ptrs;
  batch.n_inventory_deltas = deltas;
  batch.inventory_deltas = delta_ptrs;
  /* Round-trip so that the batch is allocated the way ingest frees it. */
  len = pos__v1__batch__get_packed_size(&batch);
  body = malloc(len + 1);
  assert_non_null(body);
  pos__v1__batch__pack(&batch, body);
  unpacked = pos__v1__batch__unpack(NULL, len, body);
  free(body);
  assert_non_null(unpacked);
  return unpacked;
}

static Pos__V1__Batch *make_batch(uint8_t journal_byte, uint64_t batch_seq,
                                  const struct sale_spec *specs, size_t n, size_t deltas,
                                  const char *resync_id)
{
  uint8_t journal_id[16];
  memset(journal_id, journal_byte, sizeof(journal_id));
  return make_batch_for(journal_id, batch_seq, specs, n, deltas, resync_id);
}

static Pos__V1__Batch *make_simple(uint8_t journal_byte, uint64_t batch_seq, uint64_t first_seq,
                                   size_t n)
{
  struct sale_spec specs[64];
  memset(specs, 0, sizeof(specs));
  for (size_t i = 0; i < n; i++)
    specs[i].seq = first_seq + i;
  return make_batch(journal_byte, batch_seq, specs, n, 0, NULL);
}

/*
 * The batch of make_batch as the collector's server has it: packed into a
 * zstd body and unpacked into one arena (proto_batch_unpack_pooled).
 */
static Pos__V1__Batch *make_pooled_of(uint8_t journal_byte, uint64_t batch_seq,
                                      const struct sale_spec *specs, size_t n, size_t deltas)
{
  struct proto_limits limits = {1u << 20, 1u << 24, 1000};
  Pos__V1__Batch *plain, *pooled = NULL;
  uint8_t *body = NULL;
  size_t body_len = 0;
  char err[256];

  plain = make_batch(journal_byte, batch_seq, specs, n, deltas, NULL);
  assert_int_equal(proto_batch_pack(plain, 1, &body, &body_len), PROTO_OK);
  proto_batch_free(plain);
  if (proto_batch_unpack_pooled(body, body_len, &limits, &pooled, err, sizeof(err)))
    fail_msg("proto_batch_unpack_pooled: %s", err);
  free(body);
  return pooled;
}

static Pos__V1__Batch *make_pooled(uint8_t journal_byte, uint64_t batch_seq, uint64_t first_seq,
                                   size_t n, size_t deltas)
{
  struct sale_spec specs[64];

  memset(specs, 0, sizeof(specs));
  for (size_t i = 0; i < n; i++)
    specs[i].seq = first_seq + i;
  return make_pooled_of(journal_byte, batch_seq, specs, n, deltas);
}

/* ---- running the loop --------------------------------------------------- */

static void run_until_done(struct fixture *f, struct outcome *o, uint64_t timeout_ms)
{
  uint64_t deadline = clock_mono_ms() + timeout_ms;
  while (!o->done && clock_mono_ms() < deadline)
    uv_run(&f->loop, UV_RUN_ONCE);
  if (!o->done)
    fail_msg("no answer within %llu ms", (unsigned long long)timeout_ms);
}

static void run_for(struct fixture *f, uint64_t ms)
{
  uint64_t deadline = clock_mono_ms() + ms;
  while (clock_mono_ms() < deadline)
    uv_run(&f->loop, UV_RUN_ONCE);
}

static void wait_ready(struct fixture *f)
{
  uint64_t deadline = clock_mono_ms() + WAIT_MS;
  while (!ingest_ready(f->in) && clock_mono_ms() < deadline)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_true(ingest_ready(f->in));
}

static struct ingest_result submit(struct fixture *f, Pos__V1__Batch *batch)
{
  struct outcome o = {0};
  assert_int_equal(ingest_submit_batch(f->in, STORE, batch, on_done, &o), 0);
  run_until_done(f, &o, WAIT_MS);
  return o.result;
}

static void start_ingest(struct fixture *f, const char *brokers)
{
  struct ingest_options options = {
      .brokers = brokers,
      .topic_prefix = "pos.",
      .instance_id = f->instance_id,
      .embedded_partitions = 3,
      .checkpoint_interval_ms = 200,
      .produce_timeout_ms = f->produce_timeout_ms,
      .request_timeout_ms = f->request_timeout_ms,
  };
  char err[512];
  f->in = ingest_create(&f->loop, &options, err, sizeof(err));
  if (!f->in)
    fail_msg("ingest_create: %s", err);
}

static void stop_ingest(struct fixture *f)
{
  ingest_destroy(f->in, 5000);
  f->in = NULL;
  /* The handles are freed in their close callbacks. */
  uv_run(&f->loop, UV_RUN_DEFAULT);
}

static int setup_brokers(void **state, int brokers)
{
  struct fixture *f = calloc(1, sizeof(*f));
  char err[512];
  static int counter;
  assert_non_null(f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->kafka = kafka_embedded_start(brokers, 3, "pos.", err, sizeof(err));
  if (!f->kafka)
    fail_msg("mock cluster: %s", err);
  snprintf(f->instance_id, sizeof(f->instance_id), "test-collector-%d", ++counter);
  f->produce_timeout_ms = 1500;
  f->request_timeout_ms = 500;
  *state = f;
  return 0;
}

static int setup(void **state)
{
  int rc = setup_brokers(state, 1);
  struct fixture *f = *state;
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  return rc;
}

static int setup_no_ingest(void **state) { return setup_brokers(state, 1); }

static int teardown(void **state)
{
  struct fixture *f = *state;
  if (f->in)
    stop_ingest(f);
  kafka_embedded_stop(f->kafka);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
  return 0;
}

/* ---- reading back ------------------------------------------------------- */

struct record {
  char key[64];
  int partition;
  int64_t offset;
  uint64_t seq, batch_seq, delta_index, first_seq, last_seq;
  char journal_id[40], kind[16], device_id[32], resync_id[64], reason[256], field[64];
  char position[8];
  uint8_t *value;
  size_t len;
  int tombstone; /* a null value */
};

struct records {
  struct record items[512];
  size_t count;
};

static int collect(void *arg, const rd_kafka_message_t *m)
{
  struct records *out = arg;
  struct record *r;
  assert_true(out->count < 512);
  r = &out->items[out->count++];
  memset(r, 0, sizeof(*r));
  snprintf(r->key, sizeof(r->key), "%.*s", (int)m->key_len, (const char *)m->key);
  r->partition = m->partition;
  r->offset = m->offset;
  kafka_header_u64(m, "seq", &r->seq);
  kafka_header_u64(m, "batch_seq", &r->batch_seq);
  kafka_header_u64(m, "delta_index", &r->delta_index);
  kafka_header_u64(m, "first_seq", &r->first_seq);
  kafka_header_u64(m, "last_seq", &r->last_seq);
  kafka_header_text(m, "position", r->position, sizeof(r->position));
  kafka_header_text(m, "journal_id", r->journal_id, sizeof(r->journal_id));
  kafka_header_text(m, "kind", r->kind, sizeof(r->kind));
  kafka_header_text(m, "device_id", r->device_id, sizeof(r->device_id));
  kafka_header_text(m, "resync_id", r->resync_id, sizeof(r->resync_id));
  kafka_header_text(m, "reason", r->reason, sizeof(r->reason));
  kafka_header_text(m, "field", r->field, sizeof(r->field));
  r->len = m->len;
  r->value = malloc(m->len + 1);
  r->tombstone = m->payload == NULL;
  if (m->payload)
    memcpy(r->value, m->payload, m->len);
  return 0;
}

static struct records *read_topic(struct fixture *f, const char *suffix)
{
  struct records *out = calloc(1, sizeof(*out));
  char topic[128], err[512];
  int partitions = 0;
  rd_kafka_t *reader = kafka_reader_new(kafka_embedded_bootstrap(f->kafka), NULL, err, sizeof(err));
  assert_non_null(reader);
  snprintf(topic, sizeof(topic), "pos.%s", suffix);
  assert_int_equal(kafka_topic_partitions(reader, topic, 5000, &partitions, err, sizeof(err)), 0);
  if (kafka_read_to_end(reader, topic, partitions, NULL, NULL, collect, out, NULL, 10000, NULL,
                        err, sizeof(err)))
    fail_msg("reading %s: %s", topic, err);
  kafka_reader_destroy(reader);
  return out;
}

static void free_records(struct records *records)
{
  for (size_t i = 0; i < records->count; i++)
    free(records->items[i].value);
  free(records);
}

/* Every seq in [first, last] exactly once, in order, all in one partition. */
static void assert_seqs(const struct records *records, uint64_t first, uint64_t last)
{
  assert_int_equal(records->count, last - first + 1);
  for (size_t i = 0; i < records->count; i++) {
    assert_int_equal(records->items[i].seq, first + i);
    assert_int_equal(records->items[i].partition, records->items[0].partition);
    assert_string_equal(records->items[i].key, STORE);
  }
}

/* ---- tests -------------------------------------------------------------- */

static void test_not_ready_before_recovery(void **state)
{
  struct fixture *f = *state;
  struct outcome o = {0};
  /* The recovery thread reports through the loop, which has not run yet. */
  assert_int_equal(ingest_ready(f->in), 0);
  ingest_submit_batch(f->in, STORE, make_simple(0x11, 1, 1, 3), on_done, &o);
  assert_int_equal(o.done, 1);
  assert_int_equal(o.result.outcome, INGEST_UNAVAILABLE);
  assert_true(o.result.retry_after_s > 0);
  assert_non_null(strstr(o.result.message, "rebuilding"));
  wait_ready(f);
}

static void test_batch_in_seq_order_with_headers(void **state)
{
  struct fixture *f = *state;
  struct sale_spec specs[5] = {{3, 0, NULL}, {1, 0, NULL}, {5, 0, NULL}, {2, 0, NULL},
                               {4, 0, NULL}};
  struct ingest_result r;
  struct records *sales, *deltas;
  wait_ready(f);
  r = submit(f, make_batch(0x22, 1, specs, 5, 2, NULL));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.acked_batch_seq, 1);
  assert_int_equal(r.produced, 5);
  assert_int_equal(r.dead_lettered, 0);
  assert_int_equal(r.skipped, 0);

  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 5);
  for (size_t i = 0; i < sales->count; i++) {
    const struct record *rec = &sales->items[i];
    Pos__V1__Sale *sale = pos__v1__sale__unpack(NULL, rec->len, rec->value);
    assert_string_equal(rec->journal_id, "22222222222222222222222222222222");
    assert_int_equal(rec->batch_seq, 1);
    assert_string_equal(rec->kind, "live");
    assert_string_equal(rec->device_id, "HUB1");
    assert_string_equal(rec->resync_id, "");
    assert_non_null(sale);
    assert_string_equal(sale->store_id, STORE); /* filled in from the certificate's store */
    assert_int_equal(sale->seq, rec->seq);
    assert_int_equal(sale->total, 2630);
    pos__v1__sale__free_unpacked(sale, NULL);
  }
  deltas = read_topic(f, "inventory-deltas.v1");
  assert_int_equal(deltas->count, 2);
  for (size_t i = 0; i < 2; i++) {
    Pos__V1__InventoryDelta *delta =
        pos__v1__inventory_delta__unpack(NULL, deltas->items[i].len, deltas->items[i].value);
    assert_non_null(delta);
    assert_int_equal(deltas->items[i].delta_index, i + 1);
    assert_int_equal(deltas->items[i].batch_seq, 1);
    assert_string_equal(delta->store_id, STORE);
    assert_int_equal(delta->journal_id.len, 16);
    pos__v1__inventory_delta__free_unpacked(delta, NULL);
  }
  free_records(sales);
  free_records(deltas);
}

static void test_resend_is_duplicate(void **state)
{
  struct fixture *f = *state;
  struct ingest_result r;
  struct records *sales;
  wait_ready(f);
  assert_int_equal(submit(f, make_simple(0x33, 1, 1, 4)).outcome, INGEST_ACCEPTED);
  assert_int_equal(submit(f, make_simple(0x33, 2, 5, 4)).outcome, INGEST_ACCEPTED);
  r = submit(f, make_simple(0x33, 1, 1, 4));
  assert_int_equal(r.outcome, INGEST_DUPLICATE);
  assert_int_equal(r.acked_batch_seq, 2);
  assert_int_equal(r.produced, 0);
  r = submit(f, make_simple(0x33, 2, 5, 4));
  assert_int_equal(r.outcome, INGEST_DUPLICATE);
  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 8);
  free_records(sales);
}

static void test_gap(void **state)
{
  struct fixture *f = *state;
  struct ingest_result r;
  struct records *sales;
  wait_ready(f);
  /* A journal the collector has never seen must start at batch 1. */
  r = submit(f, make_simple(0x44, 3, 1, 2));
  assert_int_equal(r.outcome, INGEST_GAP);
  assert_int_equal(r.expected_batch_seq, 1);
  assert_non_null(strstr(r.message, "first batch must be 1"));
  assert_int_equal(submit(f, make_simple(0x44, 1, 1, 2)).outcome, INGEST_ACCEPTED);
  r = submit(f, make_simple(0x44, 3, 5, 2));
  assert_int_equal(r.outcome, INGEST_GAP);
  assert_int_equal(r.expected_batch_seq, 2);
  assert_int_equal(r.acked_batch_seq, 1);
  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 2);
  free_records(sales);
}

/*
 * The collector's batches live in one arena each (proto_batch_unpack_pooled):
 * ingest fills in a sale's and a delta's missing store_id and a delta's
 * journal_id inside that arena, produces them like any other batch, and
 * frees the arena whole on every path (accepted, duplicate, gap); ASan
 * builds see a piece freed alone or a leak.
 */
static void test_pooled_batch_is_produced_and_freed_whole(void **state)
{
  struct fixture *f = *state;
  struct ingest_result r;
  struct records *sales, *deltas;
  wait_ready(f);
  r = submit(f, make_pooled(0x4a, 1, 1, 4, 2));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.produced, 4);
  assert_int_equal(r.deltas_produced, 2);
  assert_int_equal(submit(f, make_pooled(0x4a, 1, 1, 4, 2)).outcome, INGEST_DUPLICATE);
  assert_int_equal(submit(f, make_pooled(0x4a, 3, 9, 2, 0)).outcome, INGEST_GAP);

  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 4);
  for (size_t i = 0; i < sales->count; i++) {
    Pos__V1__Sale *sale =
        pos__v1__sale__unpack(NULL, sales->items[i].len, sales->items[i].value);
    assert_non_null(sale);
    assert_string_equal(sale->store_id, STORE); /* set in the arena, from the certificate */
    assert_string_equal(sales->items[i].journal_id, "4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a");
    pos__v1__sale__free_unpacked(sale, NULL);
  }
  deltas = read_topic(f, "inventory-deltas.v1");
  assert_int_equal(deltas->count, 2);
  for (size_t i = 0; i < deltas->count; i++) {
    Pos__V1__InventoryDelta *delta =
        pos__v1__inventory_delta__unpack(NULL, deltas->items[i].len, deltas->items[i].value);
    assert_non_null(delta);
    assert_string_equal(delta->store_id, STORE);
    assert_int_equal(delta->journal_id.len, 16);
    assert_int_equal(delta->journal_id.data[0], 0x4a);
    pos__v1__inventory_delta__free_unpacked(delta, NULL);
  }
  free_records(sales);
  free_records(deltas);
}

/*
 * A sale is produced as the store encoded it when the collector changes
 * nothing in it (the bytes of the pooled batch, not the sale packed
 * again): here its seq before its other fields, an order protobuf-c would
 * not pack. Before, the record held the sale re-packed in field order.
 */
static void test_sale_bytes_are_produced_as_the_store_sent_them(void **state)
{
  struct fixture *f = *state;
  struct sale_spec spec = {7, 0, STORE};
  struct proto_limits limits = {1u << 20, 1u << 24, 1000};
  Pos__V1__Batch *plain = make_batch(0x4b, 1, &spec, 1, 0, NULL), *pooled = NULL;
  Pos__V1__Sale only_seq = POS__V1__SALE__INIT, rest = *plain->sales[0];
  uint8_t sent[1024], raw[2048], body[4096];
  size_t sent_len, raw_len, body_len, n_sales = plain->n_sales;
  struct records *sales;
  char err[256];

  /* The sale as two messages one after the other (protobuf merges them). */
  only_seq.seq = rest.seq;
  rest.seq = 0;
  assert_true(pos__v1__sale__get_packed_size(&only_seq) + pos__v1__sale__get_packed_size(&rest) <
              sizeof(sent));
  sent_len = pos__v1__sale__pack(&only_seq, sent);
  sent_len += pos__v1__sale__pack(&rest, sent + sent_len);
  /* The batch without its sale, then the sale's bytes as field 2 (Batch.sales). */
  plain->n_sales = 0;
  raw_len = pos__v1__batch__pack(plain, raw);
  plain->n_sales = n_sales;
  proto_batch_free(plain);
  raw[raw_len++] = (2 << 3) | 2;
  assert_true(sent_len < 128);
  raw[raw_len++] = (uint8_t)sent_len;
  memcpy(raw + raw_len, sent, sent_len);
  raw_len += sent_len;
  body_len = ZSTD_compress(body, sizeof(body), raw, raw_len, 1);
  assert_false(ZSTD_isError(body_len));
  if (proto_batch_unpack_pooled(body, body_len, &limits, &pooled, err, sizeof(err)))
    fail_msg("proto_batch_unpack_pooled: %s", err);

  wait_ready(f);
  assert_int_equal(submit(f, pooled).outcome, INGEST_ACCEPTED);
  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 7, 7);
  assert_int_equal(sales->items[0].len, sent_len);
  assert_memory_equal(sales->items[0].value, sent, sent_len);
  free_records(sales);
}

static void test_invalid_sale_goes_to_dlq(void **state)
{
  struct fixture *f = *state;
  struct sale_spec specs[4] = {
      {1, 0, NULL}, {2, 1, NULL}, {3, 0, NULL}, {4, 0, "S9999"}};
  struct ingest_result r;
  struct records *sales, *dlq;
  wait_ready(f);
  r = submit(f, make_batch(0x55, 1, specs, 4, 0, NULL));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.produced, 2);
  assert_int_equal(r.dead_lettered, 2);
  sales = read_topic(f, "sales.v1");
  assert_int_equal(sales->count, 2);
  assert_int_equal(sales->items[0].seq, 1);
  assert_int_equal(sales->items[1].seq, 3);
  dlq = read_topic(f, "dlq.v1");
  assert_int_equal(dlq->count, 2);
  assert_int_equal(dlq->items[0].seq, 2);
  assert_string_equal(dlq->items[0].field, "total");
  assert_non_null(strstr(dlq->items[0].reason, "lines' sum"));
  assert_string_equal(dlq->items[0].key, STORE);
  assert_string_equal(dlq->items[0].journal_id, "55555555555555555555555555555555");
  assert_int_equal(dlq->items[1].seq, 4);
  assert_string_equal(dlq->items[1].field, "store_id");
  /* The dead letter carries the sale as received. */
  {
    Pos__V1__Sale *sale = pos__v1__sale__unpack(NULL, dlq->items[0].len, dlq->items[0].value);
    assert_non_null(sale);
    assert_string_equal(sale->sale_id, "T1-000002");
    pos__v1__sale__free_unpacked(sale, NULL);
  }
  /* A resend neither dead-letters nor produces again. */
  assert_int_equal(submit(f, make_batch(0x55, 1, specs, 4, 0, NULL)).outcome, INGEST_DUPLICATE);
  free_records(sales);
  free_records(dlq);
  dlq = read_topic(f, "dlq.v1");
  assert_int_equal(dlq->count, 2);
  free_records(dlq);
}

struct prepare_job {
  Pos__V1__Batch *batch;
  const char *store_id;
  int rc;
};

static void prepare_on_thread(void *arg)
{
  struct prepare_job *job = arg;
  job->rc = ingest_prepare_batch(job->batch, job->store_id);
}

/*
 * The collector's decode worker looks at each sale first
 * (ingest_prepare_batch, on its own thread); the loop then goes by what it
 * noted. A batch with every case in it (sales out of seq order, a seq
 * twice, one that fails the check, one of another store, some without a
 * store) gives the records it gives unprepared; and a note made for
 * another store than the batch is submitted for is not trusted.
 */
static void test_sales_noted_on_a_worker_go_where_they_would_unnoted(void **state)
{
  struct fixture *f = *state;
  struct sale_spec specs[6] = {{5, 0, NULL},  {3, 1, NULL},  {4, 0, "S9999"},
                               {1, 0, STORE}, {1, 0, STORE}, {2, 0, NULL}};
  const uint8_t journals[3] = {0x91, 0x92, 0x93};
  uv_thread_t thread;

  wait_ready(f);
  for (size_t j = 0; j < 3; j++) {
    Pos__V1__Batch *batch = make_pooled_of(journals[j], 1, specs, 6, 0);
    /* 0x91: noted for this store; 0x92: for another (redone); 0x93: not noted. */
    struct prepare_job job = {batch, j == 0 ? STORE : "S0001", -1};
    struct ingest_result r;
    if (j < 2) {
      assert_int_equal(uv_thread_create(&thread, prepare_on_thread, &job), 0);
      assert_int_equal(uv_thread_join(&thread), 0);
      assert_int_equal(job.rc, 0);
    }
    r = submit(f, batch);
    assert_int_equal(r.outcome, INGEST_ACCEPTED);
    assert_int_equal(r.produced, 3);
    assert_int_equal(r.dead_lettered, 2);
    assert_int_equal(r.skipped, 1);
  }
  {
    struct records *sales = read_topic(f, "sales.v1"), *dlq = read_topic(f, "dlq.v1");
    assert_int_equal(sales->count, 9);
    assert_int_equal(dlq->count, 6);
    for (size_t j = 0; j < 3; j++) {
      const uint64_t want[3] = {1, 2, 5};
      char journal[33];
      for (size_t i = 0; i < 16; i++)
        snprintf(journal + 2 * i, 3, "%02x", journals[j]);
      for (size_t i = 0; i < 3; i++) {
        const struct record *rec = &sales->items[3 * j + i];
        Pos__V1__Sale *sale = pos__v1__sale__unpack(NULL, rec->len, rec->value);
        assert_string_equal(rec->journal_id, journal);
        assert_int_equal(rec->seq, want[i]);
        assert_non_null(sale);
        assert_string_equal(sale->store_id, STORE); /* filled in when the sale had none */
        pos__v1__sale__free_unpacked(sale, NULL);
      }
      assert_string_equal(dlq->items[2 * j].journal_id, journal);
      assert_int_equal(dlq->items[2 * j].seq, 3);
      assert_string_equal(dlq->items[2 * j].field, "total");
      assert_int_equal(dlq->items[2 * j + 1].seq, 4);
      assert_string_equal(dlq->items[2 * j + 1].field, "store_id");
    }
    free_records(sales);
    free_records(dlq);
  }
  /* A batch that is not pooled keeps no note: worked out on the loop. */
  {
    Pos__V1__Batch *plain = make_batch(0x94, 1, specs, 6, 0, NULL);
    assert_int_equal(ingest_prepare_batch(plain, STORE), -1);
    assert_int_equal(submit(f, plain).produced, 3);
  }
}

/*
 * A store's partition as the collectors' group shares them out
 * (ownership_store_partition) is the partition the producer put its
 * records in, for stores all over the partitions.
 */
static void test_store_partition_is_the_producers(void **state)
{
  struct fixture *f = *state;
  struct records *sales;
  int seen[3] = {0, 0, 0};

  wait_ready(f);
  for (int i = 0; i < 24; i++) {
    struct sale_spec spec = {1, 0, NULL};
    struct outcome o = {0};
    char store[16];
    snprintf(store, sizeof(store), "S%04d", 100 + i);
    assert_int_equal(ingest_submit_batch(f->in, store,
                                         make_batch((uint8_t)(0xa0 + i), 1, &spec, 1, 0, NULL),
                                         on_done, &o),
                     0);
    run_until_done(f, &o, WAIT_MS);
    assert_int_equal(o.result.outcome, INGEST_ACCEPTED);
  }
  sales = read_topic(f, "sales.v1");
  assert_int_equal(sales->count, 24);
  for (size_t i = 0; i < sales->count; i++) {
    const struct record *rec = &sales->items[i];
    assert_int_equal(rec->partition, ownership_store_partition(rec->key, 3));
    seen[rec->partition]++;
  }
  assert_true(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
  free_records(sales);
}

static void test_concurrent_retry_gives_one_copy(void **state)
{
  struct fixture *f = *state;
  struct outcome first = {0}, second = {0}, third = {0};
  struct records *sales;
  wait_ready(f);
  /* Three attempts of one batch arrive before Kafka has answered the first. */
  ingest_submit_batch(f->in, STORE, make_simple(0x66, 1, 1, 20), on_done, &first);
  ingest_submit_batch(f->in, STORE, make_simple(0x66, 1, 1, 20), on_done, &second);
  ingest_submit_batch(f->in, STORE, make_simple(0x66, 1, 1, 20), on_done, &third);
  assert_int_equal(first.done + second.done + third.done, 0);
  run_until_done(f, &first, WAIT_MS);
  run_until_done(f, &second, WAIT_MS);
  run_until_done(f, &third, WAIT_MS);
  assert_int_equal(first.result.outcome, INGEST_ACCEPTED);
  assert_int_equal(first.result.produced, 20);
  assert_int_equal(second.result.outcome, INGEST_DUPLICATE);
  assert_int_equal(third.result.outcome, INGEST_DUPLICATE);
  assert_int_equal(second.result.acked_batch_seq, 1);
  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 20);
  free_records(sales);
}

/* Whether a key of ingest-state.v1 is an instance's lease ("<instance_id>/lease"). */
static int is_lease_key(const char *key)
{
  size_t len = strlen(key);
  return len > 6 && strcmp(key + len - 6, "/lease") == 0;
}

static void test_restart_recovers_from_checkpoint_and_log(void **state)
{
  struct fixture *f = *state;
  struct records *sales, *checkpoints;
  struct ingest_result r;
  int manifests = 0, parts = 0;
  wait_ready(f);
  assert_int_equal(submit(f, make_simple(0x77, 1, 1, 5)).outcome, INGEST_ACCEPTED);
  run_for(f, 600); /* a periodic checkpoint covers batch 1 */
  assert_int_equal(submit(f, make_simple(0x77, 2, 6, 5)).outcome, INGEST_ACCEPTED);
  stop_ingest(f); /* writes a last checkpoint */

  checkpoints = read_topic(f, "ingest-state.v1");
  for (size_t i = 0; i < checkpoints->count; i++) {
    Pos__V1__IngestCheckpoint *ck = pos__v1__ingest_checkpoint__unpack(
        NULL, checkpoints->items[i].len, checkpoints->items[i].value);
    char part_key[128];
    if (is_lease_key(checkpoints->items[i].key)) {
      pos__v1__ingest_checkpoint__free_unpacked(ck, NULL);
      continue; /* the instance's lease (InstanceLease), not a checkpoint */
    }
    if (checkpoints->items[i].tombstone) {
      pos__v1__ingest_checkpoint__free_unpacked(ck, NULL);
      continue;
    }
    assert_non_null(ck);
    assert_string_equal(ck->instance_id, f->instance_id);
    /* A manifest under the instance id, each part under a key of its own generation. */
    snprintf(part_key, sizeof(part_key), "%s/%llu/%u", ck->instance_id,
             (unsigned long long)ck->generation, (unsigned)ck->part);
    assert_string_equal(checkpoints->items[i].key, ck->manifest ? ck->instance_id : part_key);
    if (ck->manifest)
      manifests++;
    else
      parts++;
    pos__v1__ingest_checkpoint__free_unpacked(ck, NULL);
  }
  assert_true(manifests >= 2);
  assert_true(parts >= 2);
  free_records(checkpoints);

  /* A new instance, same instance_id, same cluster. */
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  r = submit(f, make_simple(0x77, 1, 1, 5));
  assert_int_equal(r.outcome, INGEST_DUPLICATE);
  assert_int_equal(r.acked_batch_seq, 2);
  assert_int_equal(submit(f, make_simple(0x77, 2, 6, 5)).outcome, INGEST_DUPLICATE);
  assert_int_equal(submit(f, make_simple(0x77, 4, 16, 5)).outcome, INGEST_GAP);
  r = submit(f, make_simple(0x77, 3, 11, 5));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.produced, 5);
  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 15);
  free_records(sales);
}

/* What a collector killed between produce and acknowledgement leaves. */
static void produce_like_a_collector(struct fixture *f, uint8_t journal_byte, uint64_t batch_seq,
                                     uint64_t first_seq, uint64_t last_seq)
{
  char err[512], hex[40];
  rd_kafka_conf_t *conf = kafka_producer_conf(kafka_embedded_bootstrap(f->kafka), NULL, err,
                                              sizeof(err));
  rd_kafka_t *rk;
  Pos__V1__Batch *batch = make_simple(journal_byte, batch_seq, first_seq,
                                      (size_t)(last_seq - first_seq + 1));
  assert_non_null(conf);
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  assert_non_null(rk);
  for (int i = 0; i < 16; i++)
    snprintf(hex + 2 * i, 3, "%02x", journal_byte);
  for (size_t i = 0; i < batch->n_sales; i++) {
    rd_kafka_headers_t *headers = rd_kafka_headers_new(6);
    char seq[24], bseq[24];
    size_t len = pos__v1__sale__get_packed_size(batch->sales[i]);
    uint8_t *value = malloc(len + 1);
    pos__v1__sale__pack(batch->sales[i], value);
    snprintf(seq, sizeof(seq), "%llu", (unsigned long long)batch->sales[i]->seq);
    snprintf(bseq, sizeof(bseq), "%llu", (unsigned long long)batch_seq);
    rd_kafka_header_add(headers, "journal_id", -1, hex, -1);
    rd_kafka_header_add(headers, "batch_seq", -1, bseq, -1);
    rd_kafka_header_add(headers, "kind", -1, "live", -1);
    rd_kafka_header_add(headers, "seq", -1, seq, -1);
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("pos.sales.v1"),
                                       RD_KAFKA_V_KEY(STORE, strlen(STORE)),
                                       RD_KAFKA_V_VALUE(value, len),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                                       RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END),
                     0);
  }
  assert_int_equal(rd_kafka_flush(rk, 10000), 0);
  rd_kafka_destroy(rk);
  pos__v1__batch__free_unpacked(batch, NULL);
}

/* The lease record a collector run writes under the fixture's instance_id before it produces
 * anything (pos.proto, InstanceLease): here released, so that a start need not watch it for
 * renewals (what the tests using it look at is the wait for the run's produce requests). */
static void claim_like_a_collector(struct fixture *f)
{
  char err[512], key[128];
  rd_kafka_conf_t *conf =
      kafka_producer_conf(kafka_embedded_bootstrap(f->kafka), NULL, err, sizeof(err));
  Pos__V1__InstanceLease lease = POS__V1__INSTANCE_LEASE__INIT;
  uint8_t run_id[16] = {0x5e};
  uint8_t *value;
  size_t len;
  rd_kafka_t *rk;

  assert_non_null(conf);
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  assert_non_null(rk);
  lease.instance_id = f->instance_id;
  lease.run_id.data = run_id;
  lease.run_id.len = sizeof(run_id);
  lease.host = "previous-run";
  lease.pid = 1;
  lease.started_ms = clock_wall_ms() - 60000;
  lease.renewed_ms = clock_wall_ms() - 1000;
  lease.renewal = 1;
  lease.renew_ms = 3000;
  lease.released = 1;
  len = pos__v1__instance_lease__get_packed_size(&lease);
  value = malloc(len + 1);
  assert_non_null(value);
  pos__v1__instance_lease__pack(&lease, value);
  snprintf(key, sizeof(key), "%s/lease", f->instance_id);
  assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("pos.ingest-state.v1"),
                                     RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(value, len),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_END),
                   0);
  assert_int_equal(rd_kafka_flush(rk, 10000), 0);
  rd_kafka_destroy(rk);
}

static void test_crash_between_produce_and_ack(void **state)
{
  struct fixture *f = *state;
  struct ingest_result r;
  struct records *sales;
  /* Batch 1 fully and 3 of batch 2's 5 sales reached the log; no checkpoint. */
  produce_like_a_collector(f, 0x88, 1, 1, 4);
  produce_like_a_collector(f, 0x88, 2, 5, 7);
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  assert_int_equal(submit(f, make_simple(0x88, 1, 1, 4)).outcome, INGEST_DUPLICATE);
  /* The agent never got batch 2's ack: it resends it whole. */
  r = submit(f, make_simple(0x88, 2, 5, 5));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.produced, 2);
  assert_int_equal(r.skipped, 3);
  /* A batch whose sales are all in the log already is accepted, producing nothing. */
  produce_like_a_collector(f, 0x99, 1, 1, 3);
  stop_ingest(f);
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  r = submit(f, make_simple(0x99, 1, 1, 3));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.produced, 0);
  assert_int_equal(r.skipped, 3);
  assert_int_equal(submit(f, make_simple(0x88, 2, 5, 5)).outcome, INGEST_DUPLICATE);
  sales = read_topic(f, "sales.v1");
  assert_int_equal(sales->count, 12);
  free_records(sales);
}

/*
 * A produce request of a killed collector that a broker acts on after the
 * next collector has started (issue 7, item 2): recovery must wait it out
 * before it reads where the log ends, or batch 2's sales are produced twice.
 */
static void test_start_waits_out_the_previous_runs_produce_requests(void **state)
{
  struct fixture *f = *state;
  struct ingest_result r;
  struct records *sales;
  /* A run claimed the instance_id, batch 1 is in the log; batch 2's request is still in a
   * broker's hands. */
  claim_like_a_collector(f);
  produce_like_a_collector(f, 0xab, 1, 1, 3);
  f->request_timeout_ms = 3000;
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  run_for(f, 500);
  produce_like_a_collector(f, 0xab, 2, 4, 6);
  wait_ready(f);
  r = submit(f, make_simple(0xab, 1, 1, 3));
  assert_int_equal(r.produced, 0);
  /* The agent never got batch 2's ack: it resends it. */
  r = submit(f, make_simple(0xab, 2, 4, 3));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.produced, 0);
  assert_int_equal(r.skipped, 3);
  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 6);
  free_records(sales);
}

/* The first run of an instance_id finds no record under it in ingest-state.v1 and does not wait:
 * no earlier run can have a request out (each lands its lease before it produces a batch). */
static void test_first_run_of_an_instance_id_does_not_wait(void **state)
{
  struct fixture *f = *state;
  uint64_t started;

  f->request_timeout_ms = 10000;
  started = clock_mono_ms();
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  assert_true(clock_mono_ms() - started < 10000);
  assert_int_equal(submit(f, make_simple(0xad, 1, 1, 3)).outcome, INGEST_ACCEPTED);
}

/* After a clean stop the next start does not wait (and a crash of that run makes the one after
 * it wait again: its first act is to replace the closed_cleanly mark). */
static void test_clean_stop_lets_the_next_start_skip_the_wait(void **state)
{
  struct fixture *f = *state;
  uint64_t started;
  wait_ready(f);
  assert_int_equal(submit(f, make_simple(0xac, 1, 1, 3)).outcome, INGEST_ACCEPTED);
  stop_ingest(f);
  f->request_timeout_ms = 10000;
  started = clock_mono_ms();
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  assert_true(clock_mono_ms() - started < 10000);
  assert_int_equal(submit(f, make_simple(0xac, 1, 1, 3)).outcome, INGEST_DUPLICATE);
}

/* Issue 7, item 4: a delta naming another store than the certificate's is dead-lettered like
 * a sale, and only once. */
static void test_delta_of_another_store_is_dead_lettered(void **state)
{
  struct fixture *f = *state;
  struct sale_spec specs[2] = {{.seq = 1}, {.seq = 2}};
  Pos__V1__Batch *batch;
  struct records *inventory, *dlq;
  wait_ready(f);
  batch = make_batch(0xce, 1, specs, 2, 2, NULL);
  batch->inventory_deltas[1]->store_id = strdup("S9999");
  assert_int_equal(submit(f, batch).outcome, INGEST_ACCEPTED);
  stop_ingest(f);
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  batch = make_batch(0xce, 1, specs, 2, 2, NULL);
  batch->inventory_deltas[1]->store_id = strdup("S9999");
  assert_int_equal(submit(f, batch).outcome, INGEST_DUPLICATE);
  inventory = read_topic(f, "inventory-deltas.v1");
  assert_int_equal(inventory->count, 1);
  assert_int_equal(inventory->items[0].delta_index, 1);
  dlq = read_topic(f, "dlq.v1");
  assert_int_equal(dlq->count, 1);
  assert_int_equal(dlq->items[0].delta_index, 2);
  assert_string_equal(dlq->items[0].field, "inventory_deltas.store_id");
  free_records(inventory);
  free_records(dlq);
}

/* ---- issue 8: inventory deltas positioned by the journal rows they cover ------------- */

static Pos__V1__Batch *make_rows(uint8_t journal_byte, uint64_t batch_seq, uint64_t first_seq,
                                 uint64_t last_seq, size_t deltas)
{
  struct sale_spec specs[64];
  size_t n = (size_t)(last_seq - first_seq + 1);
  assert_true(n <= 64);
  memset(specs, 0, sizeof(specs));
  for (size_t i = 0; i < n; i++)
    specs[i].seq = first_seq + i;
  return make_batch(journal_byte, batch_seq, specs, n, deltas, NULL);
}

/* Submits a batch of rows first_seq..last_seq with `deltas` deltas; checks what it produced. */
static void submit_rows(struct fixture *f, uint8_t journal_byte, uint64_t batch_seq,
                        uint64_t first_seq, uint64_t last_seq, size_t deltas,
                        uint32_t expect_produced, uint32_t expect_skipped)
{
  struct ingest_result r = submit(f, make_rows(journal_byte, batch_seq, first_seq, last_seq,
                                               deltas));
  if (r.outcome != INGEST_ACCEPTED || r.deltas_produced != expect_produced ||
      r.deltas_skipped != expect_skipped)
    fail_msg("batch %llu rows %llu..%llu: outcome %d deltas produced %u skipped %u dead-lettered "
             "%u, expected accepted, %u and %u (%s)",
             (unsigned long long)batch_seq, (unsigned long long)first_seq,
             (unsigned long long)last_seq, (int)r.outcome, r.deltas_produced, r.deltas_skipped,
             r.deltas_dead_lettered, expect_produced, expect_skipped, r.message);
}

/*
 * What a collector killed half-way through a batch's deltas leaves: deltas 1..count of the
 * batch covering rows first_seq..last_seq (and all its sales), with the rows in the headers,
 * or, `legacy`, as a collector before issue 8 wrote them (batch_seq and index only).
 */
static void produce_deltas_like_a_collector(struct fixture *f, uint8_t journal_byte,
                                            uint64_t batch_seq, uint64_t first_seq,
                                            uint64_t last_seq, size_t count, int legacy)
{
  char err[512], hex[40], number[24];
  rd_kafka_conf_t *conf;
  rd_kafka_t *rk;
  Pos__V1__Batch *batch = make_rows(journal_byte, batch_seq, first_seq, last_seq, count);

  produce_like_a_collector(f, journal_byte, batch_seq, first_seq, last_seq);
  conf = kafka_producer_conf(kafka_embedded_bootstrap(f->kafka), NULL, err, sizeof(err));
  assert_non_null(conf);
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  assert_non_null(rk);
  for (int i = 0; i < 16; i++)
    snprintf(hex + 2 * i, 3, "%02x", journal_byte);
  for (size_t i = 0; i < count; i++) {
    rd_kafka_headers_t *headers = rd_kafka_headers_new(8);
    size_t len = pos__v1__inventory_delta__get_packed_size(batch->inventory_deltas[i]);
    uint8_t *value = malloc(len + 1);
    pos__v1__inventory_delta__pack(batch->inventory_deltas[i], value);
    rd_kafka_header_add(headers, "journal_id", -1, hex, -1);
    snprintf(number, sizeof(number), "%llu", (unsigned long long)batch_seq);
    rd_kafka_header_add(headers, "batch_seq", -1, number, -1);
    rd_kafka_header_add(headers, "kind", -1, "live", -1);
    snprintf(number, sizeof(number), "%zu", i + 1);
    rd_kafka_header_add(headers, "delta_index", -1, number, -1);
    if (!legacy) {
      snprintf(number, sizeof(number), "%llu", (unsigned long long)first_seq);
      rd_kafka_header_add(headers, "first_seq", -1, number, -1);
      snprintf(number, sizeof(number), "%llu", (unsigned long long)last_seq);
      rd_kafka_header_add(headers, "last_seq", -1, number, -1);
    }
    assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("pos.inventory-deltas.v1"),
                                       RD_KAFKA_V_KEY(STORE, strlen(STORE)),
                                       RD_KAFKA_V_VALUE(value, len),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE),
                                       RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_END),
                     0);
  }
  assert_int_equal(rd_kafka_flush(rk, 10000), 0);
  rd_kafka_destroy(rk);
  pos__v1__batch__free_unpacked(batch, NULL);
}

/* Each (journal, rows covered, delta index) at most once in the inventory topic; returns how
 * many records `journal_byte` has there. */
static size_t assert_deltas_once(const struct records *inventory, uint8_t journal_byte)
{
  char hex[40];
  size_t count = 0;
  for (int i = 0; i < 16; i++)
    snprintf(hex + 2 * i, 3, "%02x", journal_byte);
  for (size_t i = 0; i < inventory->count; i++) {
    const struct record *a = &inventory->items[i];
    if (strcmp(a->journal_id, hex) != 0)
      continue;
    count++;
    for (size_t j = i + 1; j < inventory->count; j++) {
      const struct record *b = &inventory->items[j];
      if (strcmp(b->journal_id, hex) == 0 && a->delta_index == b->delta_index &&
          ((a->last_seq && a->last_seq == b->last_seq) ||
           (!a->last_seq && a->batch_seq == b->batch_seq)))
        fail_msg("journal %02x: delta %llu of rows ..%llu (batch %llu) is in the topic twice",
                 journal_byte, (unsigned long long)a->delta_index,
                 (unsigned long long)a->last_seq, (unsigned long long)a->batch_seq);
    }
  }
  return count;
}

/* A collector killed after 1 of a batch's 3 deltas (or, older, 2 of 3): the resend produces
 * only the rest, whether the position comes from the log alone or from a checkpoint. */
static void test_delta_resend_after_a_crash_half_way_produces_only_the_rest(void **state)
{
  struct fixture *f = *state;
  struct records *inventory;
  produce_deltas_like_a_collector(f, 0xd1, 1, 1, 4, 1, 0);
  produce_deltas_like_a_collector(f, 0xd2, 1, 1, 4, 2, 1);
  /* The position from the log alone. */
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  submit_rows(f, 0xd1, 1, 1, 4, 3, 2, 1);
  /* The older collector's position, from the log, then through a checkpoint. */
  stop_ingest(f);
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  submit_rows(f, 0xd2, 1, 1, 4, 3, 1, 2);
  submit_rows(f, 0xd2, 2, 5, 6, 2, 2, 0);
  /* The same rows again under another batch number: nothing twice. */
  submit_rows(f, 0xd1, 2, 1, 4, 3, 0, 3);
  submit_rows(f, 0xd1, 3, 5, 6, 2, 2, 0);
  inventory = read_topic(f, "inventory-deltas.v1");
  assert_int_equal(assert_deltas_once(inventory, 0xd1), 5);
  assert_int_equal(assert_deltas_once(inventory, 0xd2), 5);
  for (size_t i = 0; i < inventory->count; i++) {
    if (inventory->items[i].batch_seq == 1 && inventory->items[i].last_seq)
      assert_int_equal(inventory->items[i].first_seq, 1);
  }
  free_records(inventory);
}

/* A batch re-cut over rows whose deltas are in the log (the same rows, or part of them, under
 * a new batch number) produces none of them again, also after a restart. Before issue 8 the
 * position was (batch_seq, index) and batch 2 produced rows 1..4's deltas a second time. */
static void test_recut_batch_covering_the_same_rows_produces_no_delta_twice(void **state)
{
  struct fixture *f = *state;
  struct records *inventory;
  wait_ready(f);
  submit_rows(f, 0xd3, 1, 1, 4, 2, 2, 0);
  submit_rows(f, 0xd3, 2, 1, 4, 2, 0, 2);
  submit_rows(f, 0xd3, 3, 3, 4, 2, 0, 2);
  submit_rows(f, 0xd3, 4, 5, 8, 2, 2, 0);
  stop_ingest(f);
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  submit_rows(f, 0xd3, 5, 5, 8, 2, 0, 2);
  submit_rows(f, 0xd3, 6, 6, 8, 1, 0, 1);
  submit_rows(f, 0xd3, 7, 9, 9, 2, 2, 0);
  inventory = read_topic(f, "inventory-deltas.v1");
  assert_int_equal(assert_deltas_once(inventory, 0xd3), 6);
  free_records(inventory);
}

/* Deltas aggregated over rows on both sides of the position can be neither counted (rows
 * twice) nor dropped (rows lost): they go to the DLQ with the reason, outside any position,
 * and the next batch's deltas are produced as usual. */
static void test_deltas_straddling_the_position_are_dead_lettered(void **state)
{
  struct fixture *f = *state;
  struct records *inventory, *dlq;
  struct ingest_result r;
  wait_ready(f);
  submit_rows(f, 0xd4, 1, 1, 4, 2, 2, 0);
  r = submit(f, make_rows(0xd4, 2, 3, 6, 2));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.deltas_produced, 0);
  assert_int_equal(r.deltas_dead_lettered, 2);
  assert_int_equal(r.produced, 2); /* sales 5 and 6 */
  submit_rows(f, 0xd4, 3, 7, 8, 2, 2, 0);
  stop_ingest(f);
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  submit_rows(f, 0xd4, 4, 7, 8, 2, 0, 2);
  inventory = read_topic(f, "inventory-deltas.v1");
  assert_int_equal(assert_deltas_once(inventory, 0xd4), 4);
  free_records(inventory);
  dlq = read_topic(f, "dlq.v1");
  assert_int_equal(dlq->count, 2);
  for (size_t i = 0; i < dlq->count; i++) {
    assert_string_equal(dlq->items[i].field, "inventory_deltas.first_seq");
    assert_string_equal(dlq->items[i].position, "none");
    assert_int_equal(dlq->items[i].first_seq, 3);
    assert_int_equal(dlq->items[i].last_seq, 6);
    assert_non_null(strstr(dlq->items[i].reason, "rows 3..6"));
  }
  free_records(dlq);
}

/* Sales carried over into a new journal whose earlier journal had their batch produced (the
 * acknowledgement was lost with the WAL's tail): the new batch's deltas aggregate rows whose
 * consumption is in the log already. They are dead-lettered with the reason, not counted again;
 * a carried batch the earlier journal never produced has its deltas counted. */
/* Marks every sale of `batch` as carried over from journal `journal_byte`'s row of the same
 * seq (allocated the way pos__v1__batch__free_unpacked frees). */
static Pos__V1__Batch *carried_from(Pos__V1__Batch *batch, uint8_t journal_byte)
{
  for (size_t i = 0; i < batch->n_sales; i++) {
    Pos__V1__SaleOrigin *origin = malloc(sizeof(*origin));
    assert_non_null(origin);
    pos__v1__sale_origin__init(origin);
    origin->journal_id.data = malloc(16);
    assert_non_null(origin->journal_id.data);
    memset(origin->journal_id.data, journal_byte, 16);
    origin->journal_id.len = 16;
    origin->seq = batch->sales[i]->seq;
    batch->sales[i]->carried_from = malloc(sizeof(*batch->sales[i]->carried_from));
    assert_non_null(batch->sales[i]->carried_from);
    batch->sales[i]->carried_from[0] = origin;
    batch->sales[i]->n_carried_from = 1;
  }
  return batch;
}

static void test_carried_rows_whose_deltas_are_in_the_log_are_not_counted_again(void **state)
{
  struct fixture *f = *state;
  struct records *inventory, *dlq;
  struct ingest_result r;
  wait_ready(f);
  submit_rows(f, 0xe1, 1, 1, 4, 2, 2, 0);
  r = submit(f, carried_from(make_rows(0xe2, 1, 1, 4, 2), 0xe1));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.skipped, 4);
  assert_int_equal(r.deltas_produced, 0);
  assert_int_equal(r.deltas_dead_lettered, 2);
  /* Rows 5..6 of the earlier journal never reached the log: carried, they count. */
  r = submit(f, carried_from(make_rows(0xe2, 2, 5, 6, 2), 0xe1));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.produced, 2);
  assert_int_equal(r.deltas_produced, 2);
  inventory = read_topic(f, "inventory-deltas.v1");
  assert_int_equal(assert_deltas_once(inventory, 0xe1), 2);
  assert_int_equal(assert_deltas_once(inventory, 0xe2), 2);
  free_records(inventory);
  dlq = read_topic(f, "dlq.v1");
  assert_int_equal(dlq->count, 2);
  assert_string_equal(dlq->items[0].field, "sales.carried_from");
  assert_string_equal(dlq->items[0].position, "none");
  assert_non_null(strstr(dlq->items[0].reason, "carried over from journal e1e1"));
  free_records(dlq);
}

/* Issue 7, item 4: two devices cloned from one disk image share a journal_id; the second one's
 * batches are refused with a code, not acknowledged as duplicates (also after a restart). */
static void test_journal_of_another_device_is_refused(void **state)
{
  struct fixture *f = *state;
  struct ingest_result r;
  Pos__V1__Batch *clone;
  struct records *sales;
  wait_ready(f);
  assert_int_equal(submit(f, make_simple(0xcf, 1, 1, 3)).outcome, INGEST_ACCEPTED);
  clone = make_simple(0xcf, 1, 1, 2);
  free(clone->envelope->device_id);
  clone->envelope->device_id = strdup("HUB2");
  r = submit(f, clone);
  assert_int_equal(r.outcome, INGEST_REFUSED);
  assert_int_equal(r.code, POS__V1__BATCH_ACK_CODE__BATCH_ACK_CODE_JOURNAL_OF_ANOTHER_DEVICE);
  stop_ingest(f);
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  clone = make_simple(0xcf, 2, 4, 2);
  free(clone->envelope->device_id);
  clone->envelope->device_id = strdup("HUB2");
  assert_int_equal(submit(f, clone).outcome, INGEST_REFUSED);
  assert_int_equal(submit(f, make_simple(0xcf, 2, 4, 2)).outcome, INGEST_ACCEPTED);
  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 5);
  free_records(sales);
}

static void test_broker_down_then_up(void **state)
{
  struct fixture *f = *state;
  struct rd_kafka_mock_cluster_s *cluster = kafka_embedded_cluster(f->kafka);
  struct outcome o = {0};
  struct ingest_result r;
  struct records *sales;
  uint64_t started;
  int attempts = 0;
  wait_ready(f);
  assert_int_equal(submit(f, make_simple(0xaa, 1, 1, 3)).outcome, INGEST_ACCEPTED);

  assert_int_equal(rd_kafka_mock_broker_set_down(cluster, 1), 0);
  started = clock_mono_ms();
  r = submit(f, make_simple(0xaa, 2, 4, 6));
  assert_int_equal(r.outcome, INGEST_UNAVAILABLE);
  assert_true(clock_mono_ms() - started >= f->produce_timeout_ms - 100);
  assert_true(r.retry_after_s > 0);
  assert_non_null(strstr(r.message, "stays in flight"));
  /* The agent retries while the first attempt is still in flight: it waits, then times out. */
  r = submit(f, make_simple(0xaa, 2, 4, 6));
  assert_int_equal(r.outcome, INGEST_UNAVAILABLE);
  assert_true(ingest_ready(f->in));

  assert_int_equal(rd_kafka_mock_broker_set_up(cluster, 1), 0);
  do {
    memset(&o, 0, sizeof(o));
    ingest_submit_batch(f->in, STORE, make_simple(0xaa, 2, 4, 6), on_done, &o);
    run_until_done(f, &o, WAIT_MS);
    attempts++;
  } while (o.result.outcome == INGEST_UNAVAILABLE && attempts < 20);
  assert_int_equal(o.result.outcome, INGEST_DUPLICATE);
  assert_int_equal(o.result.acked_batch_seq, 2);
  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 9);
  free_records(sales);
}

static void test_failed_delivery_rebuilds_state(void **state)
{
  struct fixture *f = *state;
  struct rd_kafka_mock_cluster_s *cluster = kafka_embedded_cluster(f->kafka);
  struct ingest_result r;
  struct records *sales;
  uint64_t deadline;
  int attempts = 0;
  wait_ready(f);
  assert_int_equal(submit(f, make_simple(0xbb, 1, 1, 3)).outcome, INGEST_ACCEPTED);
  run_for(f, 600); /* the checkpoint covering batch 1 is written: the next Produce is batch 2's */
  /* A permanent refusal: with the gapless guarantee the producer gives up. */
  rd_kafka_mock_push_request_errors(cluster, 0 /* Produce */, 1,
                                    RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
  r = submit(f, make_simple(0xbb, 2, 4, 3));
  assert_int_equal(r.outcome, INGEST_UNAVAILABLE);
  /* The collector rebuilds its state from Kafka with a new producer. */
  deadline = clock_mono_ms() + 2000;
  while (ingest_ready(f->in) && clock_mono_ms() < deadline)
    uv_run(&f->loop, UV_RUN_ONCE);
  wait_ready(f);
  do {
    r = submit(f, make_simple(0xbb, 2, 4, 3));
    if (r.outcome == INGEST_UNAVAILABLE)
      run_for(f, 200);
  } while (r.outcome == INGEST_UNAVAILABLE && ++attempts < 20);
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(submit(f, make_simple(0xbb, 2, 4, 3)).outcome, INGEST_DUPLICATE);
  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 6);
  free_records(sales);
}

static void test_restart_without_checkpoint_resumes_at_last_batch(void **state)
{
  struct fixture *f = *state;
  struct ingest_result r;
  struct records *sales;
  /* Batches 1 and 2 were acknowledged, but no checkpoint was written
   * before the collector died: the log alone proves batch 1 complete (a
   * record of batch 2 exists), not batch 2. */
  produce_like_a_collector(f, 0x9a, 1, 1, 3);
  produce_like_a_collector(f, 0x9a, 2, 4, 6);
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  r = submit(f, make_simple(0x9a, 3, 7, 3));
  assert_int_equal(r.outcome, INGEST_GAP);
  assert_int_equal(r.expected_batch_seq, 2);
  /* The agent resumes at 2: nothing is produced twice. */
  r = submit(f, make_simple(0x9a, 2, 4, 3));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.produced, 0);
  assert_int_equal(r.skipped, 3);
  r = submit(f, make_simple(0x9a, 3, 7, 3));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.produced, 3);
  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 9);
  free_records(sales);
}

/* Enough journals that the checkpoint is written in several parts. */
#define MANY_JOURNALS 8000
#define WAVE 400

static void submit_many(struct fixture *f, uint64_t batch_seq, enum ingest_outcome expected)
{
  static struct outcome outcomes[WAVE];
  for (int first = 0; first < MANY_JOURNALS; first += WAVE) {
    memset(outcomes, 0, sizeof(outcomes));
    for (int i = 0; i < WAVE; i++) {
      uint8_t journal_id[16] = {0xf0, 0x0d};
      struct sale_spec spec = {batch_seq, 0, NULL};
      journal_id[14] = (uint8_t)((first + i) >> 8);
      journal_id[15] = (uint8_t)(first + i);
      ingest_submit_batch(f->in, STORE, make_batch_for(journal_id, batch_seq, &spec, 1, 0, NULL),
                          on_done, &outcomes[i]);
    }
    for (int i = 0; i < WAVE; i++) {
      run_until_done(f, &outcomes[i], WAIT_MS);
      if (outcomes[i].result.outcome != expected)
        fail_msg("journal %d batch %llu: outcome %d, expected %d (%s)", first + i,
                 (unsigned long long)batch_seq, outcomes[i].result.outcome, expected,
                 outcomes[i].result.message);
    }
  }
}

/*
 * Another instance that checkpoints faster than a recovery reads: a new
 * generation every few milliseconds, each replacing the manifest and
 * tombstoning the previous generation's part (what every collector does,
 * at checkpoint_interval).
 */
struct churner {
  const char *bootstrap;
  const char *instance_id;
  atomic_int stop;
  atomic_uint_least64_t generations;
};

static void churn_produce(rd_kafka_t *rk, const char *key, const Pos__V1__IngestCheckpoint *msg)
{
  size_t len = msg ? pos__v1__ingest_checkpoint__get_packed_size(msg) : 0;
  uint8_t *value = msg ? malloc(len + 1) : NULL;

  if (msg) {
    assert_non_null(value);
    pos__v1__ingest_checkpoint__pack(msg, value);
  }
  assert_int_equal(rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("pos.ingest-state.v1"),
                                     RD_KAFKA_V_PARTITION(0), RD_KAFKA_V_KEY(key, strlen(key)),
                                     RD_KAFKA_V_VALUE(value, len),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_FREE), RD_KAFKA_V_END),
                   0);
}

/* A plain producer of the project's settings on `bootstrap` (for a thread of a test). */
static rd_kafka_t *test_producer(const char *bootstrap)
{
  char err[512];
  rd_kafka_conf_t *conf = kafka_producer_conf(bootstrap, NULL, err, sizeof(err));
  rd_kafka_t *rk;

  if (!conf)
    fail_msg("producer config: %s", err);
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk)
    fail_msg("producer: %s", err);
  return rk;
}

static void churn_checkpoints(void *arg)
{
  struct churner *c = arg;
  char key[128];
  uint8_t journal_id[16];
  rd_kafka_t *rk = test_producer(c->bootstrap);

  memset(journal_id, 0x77, sizeof(journal_id));
  for (uint64_t g = 1; !atomic_load(&c->stop); g++) {
    Pos__V1__IngestCheckpoint part = POS__V1__INGEST_CHECKPOINT__INIT;
    Pos__V1__IngestCheckpoint manifest = POS__V1__INGEST_CHECKPOINT__INIT;
    Pos__V1__IngestJournalState journal = POS__V1__INGEST_JOURNAL_STATE__INIT;
    Pos__V1__IngestJournalState *journals[1] = {&journal};

    journal.store_id = STORE;
    journal.journal_id.data = journal_id;
    journal.journal_id.len = sizeof(journal_id);
    journal.accepted_batch_seq = 3;
    journal.device_id = "HUB1";
    part.instance_id = manifest.instance_id = (char *)c->instance_id;
    part.created_ms = manifest.created_ms = clock_wall_ms();
    part.generation = manifest.generation = g;
    part.parts = manifest.parts = 1;
    part.journals = journals;
    part.n_journals = 1;
    manifest.manifest = 1;
    snprintf(key, sizeof(key), "%s/%" PRIu64 "/0", c->instance_id, g);
    churn_produce(rk, key, &part);
    churn_produce(rk, c->instance_id, &manifest);
    if (g > 1) {
      snprintf(key, sizeof(key), "%s/%" PRIu64 "/0", c->instance_id, g - 1);
      churn_produce(rk, key, NULL);
    }
    assert_int_equal(rd_kafka_flush(rk, 10000), 0);
    atomic_store(&c->generations, g);
  }
  rd_kafka_destroy(rk);
}

/* A recovery reading another instance's checkpoint while that instance writes a new one every
 * few milliseconds ends, with what the checkpoint says (it failed every attempt when the second
 * read of the chosen generation ran into its tombstones). */
static void test_recovery_ends_while_another_instance_checkpoints(void **state)
{
  struct fixture *f = *state;
  struct churner churner = {.bootstrap = kafka_embedded_bootstrap(f->kafka),
                            .instance_id = "churning-instance"};
  uv_thread_t thread;

  atomic_init(&churner.stop, 0);
  assert_int_equal(uv_thread_create(&thread, churn_checkpoints, &churner), 0);
  /* Enough of the state topic that one read takes a while. */
  while (atomic_load(&churner.generations) < 200)
    uv_sleep(10);
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  atomic_store(&churner.stop, 1);
  assert_int_equal(uv_thread_join(&thread), 0);
  /* The other instance's checkpoint was merged: its journal's batches 1-3 are in. */
  assert_int_equal(submit(f, make_simple(0x77, 3, 1, 2)).outcome, INGEST_DUPLICATE);
  assert_int_equal(submit(f, make_simple(0x77, 4, 3, 2)).outcome, INGEST_ACCEPTED);
}

static void test_large_checkpoint_in_parts(void **state)
{
  struct fixture *f = *state;
  struct records *checkpoints;
  uint64_t most_parts = 0;
  wait_ready(f);
  submit_many(f, 1, INGEST_ACCEPTED);
  stop_ingest(f);
  checkpoints = read_topic(f, "ingest-state.v1");
  for (size_t i = 0; i < checkpoints->count; i++) {
    Pos__V1__IngestCheckpoint *ck;
    if (is_lease_key(checkpoints->items[i].key))
      continue;
    ck = pos__v1__ingest_checkpoint__unpack(NULL, checkpoints->items[i].len,
                                            checkpoints->items[i].value);
    assert_non_null(ck);
    if (ck->parts > most_parts)
      most_parts = ck->parts;
    pos__v1__ingest_checkpoint__free_unpacked(ck, NULL);
  }
  free_records(checkpoints);
  assert_true(most_parts >= 2);
  start_ingest(f, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  /* Every journal is known again: batch 1 is a duplicate, batch 2 follows on. */
  submit_many(f, 1, INGEST_DUPLICATE);
  submit_many(f, 2, INGEST_ACCEPTED);
}

static Pos__V1__Heartbeat *make_heartbeat(void)
{
  Pos__V1__Heartbeat *heartbeat = calloc(1, sizeof(*heartbeat));
  assert_non_null(heartbeat);
  pos__v1__heartbeat__init(heartbeat);
  heartbeat->device_id = strdup("HUB1");
  return heartbeat;
}

/*
 * Issue 7, item 7: the status topic refusing heartbeats for good (here every
 * Produce request for a while, while only heartbeats are produced) must not
 * become a delivery doubt for the data path: batches are still accepted
 * right away, with no rebuild in between.
 */
static void test_status_topic_errors_do_not_stop_batches(void **state)
{
  struct fixture *f = *state;
  struct rd_kafka_mock_cluster_s *cluster = kafka_embedded_cluster(f->kafka);
  struct records *sales;
  wait_ready(f);
  for (uint64_t round = 1; round <= 3; round++) {
    struct outcome o = {0};
    struct ingest_result r;
    run_for(f, 400); /* the last batch's checkpoint is written: only the heartbeat produces */
    rd_kafka_mock_push_request_errors(cluster, 0 /* Produce */, 1,
                                      RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    ingest_submit_heartbeat(f->in, STORE, make_heartbeat(), on_done, &o);
    run_until_done(f, &o, WAIT_MS);
    assert_int_equal(o.result.outcome, INGEST_UNAVAILABLE);
    assert_true(ingest_ready(f->in));
    r = submit(f, make_simple(0xd0, round, round * 3 - 2, 3));
    if (r.outcome != INGEST_ACCEPTED)
      fail_msg("batch %llu: %d %s", (unsigned long long)round, (int)r.outcome, r.message);
  }
  sales = read_topic(f, "sales.v1");
  assert_seqs(sales, 1, 9);
  free_records(sales);
}

static void test_heartbeat(void **state)
{
  struct fixture *f = *state;
  struct outcome o = {0};
  Pos__V1__Heartbeat *heartbeat = calloc(1, sizeof(*heartbeat));
  struct records *status;
  Pos__V1__Heartbeat *read;
  wait_ready(f);
  pos__v1__heartbeat__init(heartbeat);
  heartbeat->device_id = strdup("HUB1");
  heartbeat->unsent_sales = 42;
  ingest_submit_heartbeat(f->in, STORE, heartbeat, on_done, &o);
  run_until_done(f, &o, WAIT_MS);
  assert_int_equal(o.result.outcome, INGEST_ACCEPTED);
  status = read_topic(f, "agent-status.v1");
  assert_int_equal(status->count, 1);
  /* One record per device of the store. */
  assert_string_equal(status->items[0].key, STORE "/HUB1");
  read = pos__v1__heartbeat__unpack(NULL, status->items[0].len, status->items[0].value);
  assert_non_null(read);
  assert_string_equal(read->store_id, STORE);
  assert_int_equal(read->unsent_sales, 42);
  assert_true(read->received_ms > 0);
  pos__v1__heartbeat__free_unpacked(read, NULL);
  free_records(status);
}

static void test_replay_goes_to_replay_topic(void **state)
{
  struct fixture *f = *state;
  struct sale_spec specs[3] = {{1, 0, NULL}, {2, 0, NULL}, {3, 0, NULL}};
  struct records *replay, *live, *inventory, *inventory_replay;
  struct ingest_result r;
  wait_ready(f);
  assert_int_equal(submit(f, make_batch(0xcc, 1, specs, 3, 2, NULL)).outcome, INGEST_ACCEPTED);
  /* The same sales replayed under a resync: their own batch_seq space and topic. Their
   * deltas go to pos.inventory-deltas.replay.v1 (issue 10), once per resync; the live
   * inventory topic, which counted those rows' stock from the live batch, never gets them. */
  r = submit(f, make_batch(0xcc, 1, specs, 3, 2, "R-1"));
  assert_int_equal(r.outcome, INGEST_ACCEPTED);
  assert_int_equal(r.deltas_produced, 2);
  assert_int_equal(r.deltas_skipped, 0);
  assert_int_equal(submit(f, make_batch(0xcc, 1, specs, 3, 2, "R-1")).outcome, INGEST_DUPLICATE);
  assert_int_equal(submit(f, make_batch(0xcc, 1, specs, 3, 2, "R-2")).outcome, INGEST_ACCEPTED);
  inventory = read_topic(f, "inventory-deltas.v1");
  assert_int_equal(inventory->count, 2);
  assert_string_equal(inventory->items[0].kind, "live");
  assert_string_equal(inventory->items[1].kind, "live");
  free_records(inventory);
  inventory_replay = read_topic(f, "inventory-deltas.replay.v1");
  assert_int_equal(inventory_replay->count, 4);
  assert_string_equal(inventory_replay->items[0].kind, "replay");
  assert_string_equal(inventory_replay->items[0].resync_id, "R-1");
  assert_string_equal(inventory_replay->items[1].resync_id, "R-1");
  assert_string_equal(inventory_replay->items[2].resync_id, "R-2");
  assert_string_equal(inventory_replay->items[3].resync_id, "R-2");
  free_records(inventory_replay);
  live = read_topic(f, "sales.v1");
  assert_seqs(live, 1, 3);
  replay = read_topic(f, "sales.replay.v1");
  assert_int_equal(replay->count, 6);
  assert_string_equal(replay->items[0].kind, "replay");
  assert_string_equal(replay->items[0].resync_id, "R-1");
  assert_string_equal(replay->items[3].resync_id, "R-2");
  free_records(live);
  free_records(replay);
}

static void test_embedded_kafka(void **state)
{
  struct fixture *f = *state;
  struct outcome o = {0};
  const char *bootstrap;
  start_ingest(f, "");
  bootstrap = ingest_bootstrap(f->in);
  assert_non_null(strstr(bootstrap, "127.0.0.1:"));
  assert_string_not_equal(bootstrap, kafka_embedded_bootstrap(f->kafka));
  wait_ready(f);
  ingest_submit_batch(f->in, STORE, make_simple(0xdd, 1, 1, 2), on_done, &o);
  run_until_done(f, &o, WAIT_MS);
  assert_int_equal(o.result.outcome, INGEST_ACCEPTED);
  /* kcat could read it: a plain reader on the embedded bootstrap does. */
  {
    struct records out = {0};
    char err[512];
    int partitions = 0;
    rd_kafka_t *reader = kafka_reader_new(bootstrap, NULL, err, sizeof(err));
    assert_non_null(reader);
    assert_int_equal(kafka_topic_partitions(reader, "pos.sales.v1", 5000, &partitions, err,
                                            sizeof(err)),
                     0);
    assert_int_equal(partitions, 3);
    assert_int_equal(kafka_read_to_end(reader, "pos.sales.v1", partitions, NULL, NULL, collect,
                                       &out, NULL, 10000, NULL, err, sizeof(err)),
                     0);
    kafka_reader_destroy(reader);
    assert_int_equal(out.count, 2);
    for (size_t i = 0; i < out.count; i++)
      free(out.items[i].value);
  }
}

/* Counts the records read and notes the first offset. */
struct read_count {
  uint64_t records;
  int64_t first_offset;
};

static int count_record(void *arg, const rd_kafka_message_t *m)
{
  struct read_count *count = arg;
  if (count->records++ == 0)
    count->first_offset = m->offset;
  return 0;
}

/*
 * A read from an offset the log no longer holds (retention moved its start
 * past it, as the embedded Kafka does past 5 MB a partition) says how many
 * records were dropped unread, and reads what is left.
 */
static void test_read_counts_records_retention_dropped(void **state)
{
  struct fixture *f = *state;
  char err[512];
  static char value[1024];
  rd_kafka_conf_t *conf =
      kafka_producer_conf(kafka_embedded_bootstrap(f->kafka), NULL, err, sizeof(err));
  rd_kafka_t *rk, *reader;
  struct kafka_read_stats stats = {0};
  struct read_count count = {0, -1};
  int64_t start = 1, end = 0;

  assert_non_null(conf);
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  assert_non_null(rk);
  memset(value, 'x', sizeof(value));
  for (int i = 0; i < 8000; i++) { /* 8 MB: the log keeps the newest 5 */
    while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("pos.sales.v1"), RD_KAFKA_V_PARTITION(0),
                             RD_KAFKA_V_KEY(STORE, strlen(STORE)),
                             RD_KAFKA_V_VALUE(value, sizeof(value)),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
      rd_kafka_poll(rk, 10);
  }
  assert_int_equal(rd_kafka_flush(rk, 30000), 0);
  rd_kafka_destroy(rk);

  reader = kafka_reader_new(kafka_embedded_bootstrap(f->kafka), NULL, err, sizeof(err));
  assert_non_null(reader);
  if (kafka_read_to_end(reader, "pos.sales.v1", 1, &start, &end, count_record, &count, NULL, 10000,
                        &stats, err, sizeof(err)))
    fail_msg("reading: %s", err);
  kafka_reader_destroy(reader);
  assert_int_equal(end, 8000);
  assert_true(count.first_offset > 1000);
  assert_int_equal(stats.dropped_unread, (uint64_t)(count.first_offset - start));
  assert_int_equal(count.records, (uint64_t)(end - count.first_offset));
}

/* A producer writing 1 KB records to partition 0 of pos.sales.v1 as fast as it can (20 at a time).
 */
struct trickle {
  const char *bootstrap;
  atomic_int stop;
  atomic_uint_least64_t produced;
};

static void trickle_records(void *arg)
{
  struct trickle *t = arg;
  static char value[1024];
  rd_kafka_t *rk = test_producer(t->bootstrap);

  memset(value, 'y', sizeof(value));
  while (!atomic_load(&t->stop)) {
    for (int i = 0; i < 20; i++) {
      while (rd_kafka_producev(rk, RD_KAFKA_V_TOPIC("pos.sales.v1"), RD_KAFKA_V_PARTITION(0),
                               RD_KAFKA_V_KEY(STORE, strlen(STORE)),
                               RD_KAFKA_V_VALUE(value, sizeof(value)),
                               RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                               RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(rk, 10);
    }
    atomic_fetch_add(&t->produced, 20);
    rd_kafka_poll(rk, 5);
  }
  assert_int_equal(rd_kafka_flush(rk, 30000), 0);
  rd_kafka_destroy(rk);
}

/*
 * A read from an offset retention dropped, while retention keeps dropping
 * the oldest records as new ones come (the embedded Kafka past 5 MB a
 * partition, a real one at its retention.bytes): it ends. (With the
 * consumer's 500 ms backoff after a fetch error it reset to a log start
 * already dropped again by the time it fetched, for ever, and a fleet gain
 * under load never ended.)
 */
static void test_read_keeps_up_with_a_moving_log_start(void **state)
{
  struct fixture *f = *state;
  struct trickle trickle = {.bootstrap = kafka_embedded_bootstrap(f->kafka)};
  char err[512];
  rd_kafka_t *reader;
  struct kafka_read_stats stats = {0};
  struct read_count count = {0, -1};
  int64_t start = 1, end = 0;
  uv_thread_t thread;
  int rc;

  atomic_init(&trickle.stop, 0);
  atomic_init(&trickle.produced, 0);
  assert_int_equal(uv_thread_create(&thread, trickle_records, &trickle), 0);
  /* Past the 5 MB the log keeps, so that every new batch drops the oldest. */
  while (atomic_load(&trickle.produced) < 6000)
    uv_sleep(50);
  reader = kafka_reader_new(kafka_embedded_bootstrap(f->kafka), NULL, err, sizeof(err));
  assert_non_null(reader);
  rc = kafka_read_to_end(reader, "pos.sales.v1", 1, &start, &end, count_record, &count, NULL, 10000,
                         &stats, err, sizeof(err));
  kafka_reader_destroy(reader);
  atomic_store(&trickle.stop, 1);
  assert_int_equal(uv_thread_join(&thread), 0);
  if (rc)
    fail_msg("reading: %s", err);
  /* Every offset up to where the log ended when the read began: read, or counted dropped. */
  assert_true(stats.dropped_unread > 0);
  assert_int_equal(count.records + stats.dropped_unread, (uint64_t)(end - start));
}

static void test_destroy_answers_pending(void **state)
{
  struct fixture *f = *state;
  struct outcome o = {0};
  wait_ready(f);
  assert_int_equal(rd_kafka_mock_broker_set_down(kafka_embedded_cluster(f->kafka), 1), 0);
  ingest_submit_batch(f->in, STORE, make_simple(0xee, 1, 1, 2), on_done, &o);
  run_for(f, 100);
  assert_int_equal(o.done, 0);
  ingest_destroy(f->in, 300);
  f->in = NULL;
  assert_int_equal(o.done, 1);
  assert_int_equal(o.result.outcome, INGEST_UNAVAILABLE);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  rd_kafka_mock_broker_set_up(kafka_embedded_cluster(f->kafka), 1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_not_ready_before_recovery, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_counts_records_retention_dropped, setup_no_ingest,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_batch_in_seq_order_with_headers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resend_is_duplicate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_gap, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pooled_batch_is_produced_and_freed_whole, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_sale_bytes_are_produced_as_the_store_sent_them, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_invalid_sale_goes_to_dlq, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sales_noted_on_a_worker_go_where_they_would_unnoted,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_store_partition_is_the_producers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_retry_gives_one_copy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_recovers_from_checkpoint_and_log, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_crash_between_produce_and_ack, setup_no_ingest,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_restart_without_checkpoint_resumes_at_last_batch,
                                      setup_no_ingest, teardown),
      cmocka_unit_test_setup_teardown(test_start_waits_out_the_previous_runs_produce_requests,
                                      setup_no_ingest, teardown),
      cmocka_unit_test_setup_teardown(test_first_run_of_an_instance_id_does_not_wait,
                                      setup_no_ingest, teardown),
      cmocka_unit_test_setup_teardown(test_clean_stop_lets_the_next_start_skip_the_wait, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_delta_of_another_store_is_dead_lettered, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          test_delta_resend_after_a_crash_half_way_produces_only_the_rest, setup_no_ingest,
          teardown),
      cmocka_unit_test_setup_teardown(
          test_recut_batch_covering_the_same_rows_produces_no_delta_twice, setup, teardown),
      cmocka_unit_test_setup_teardown(test_deltas_straddling_the_position_are_dead_lettered, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          test_carried_rows_whose_deltas_are_in_the_log_are_not_counted_again, setup, teardown),
      cmocka_unit_test_setup_teardown(test_journal_of_another_device_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_large_checkpoint_in_parts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_recovery_ends_while_another_instance_checkpoints,
                                      setup_no_ingest, teardown),
      cmocka_unit_test_setup_teardown(test_broker_down_then_up, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failed_delivery_rebuilds_state, setup, teardown),
      cmocka_unit_test_setup_teardown(test_heartbeat, setup, teardown),
      cmocka_unit_test_setup_teardown(test_status_topic_errors_do_not_stop_batches, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_replay_goes_to_replay_topic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_embedded_kafka, setup_no_ingest, teardown),
      cmocka_unit_test_setup_teardown(test_read_keeps_up_with_a_moving_log_start, setup_no_ingest,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_destroy_answers_pending, setup, teardown),
  };
  log_set_level(getenv("POS_TEST_LOG") ? LOG_DEBUG : LOG_WARN);
  /* POS_TEST_FILTER=test_name_pattern runs only the matching cases. */
  if (getenv("POS_TEST_FILTER"))
    cmocka_set_test_filter(getenv("POS_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
