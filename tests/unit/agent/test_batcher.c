/*
 * test_batcher.c - sealing sales into batches, against real SQLite files:
 * contiguous batch_seq, size caps, a sealed body that never changes, the
 * re-seal after a 413 keeping every sale exactly once, acknowledgements and
 * their counters, retention that never touches unacknowledged rows, the
 * migration of a v1 journal, and the retry backoff.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <uv.h>
#include <zstd.h>

#include "journal/journal.h"

/* Sales not in any batch yet: above the journal's sealing cursor. */
#define UNSEALED_COUNT_SQL                                                     \
  "SELECT count(*) FROM sales WHERE seq > (SELECT CAST(value AS INTEGER) FROM meta "         \
  "WHERE key = 'sealed_last_seq')"
#include "journal/journal_sql.h"
#include "journal_fixture.h"
#include "proto/codec.h"
#include "uplink/backoff.h"
#include "uplink/batcher.h"

#define DAY_MS (24LL * 60 * 60 * 1000)

struct fixture {
  struct jf_fixture jf;
  struct batcher_identity identity;
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  jf_setup(&f->jf, "test_batcher");
  assert_int_equal(batcher_identity_init(&f->identity, "S001", "D1", 3), 0);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  jf_teardown(&f->jf);
  free(f);
  return 0;
}

/* The journal every test but the full one uses: no size limit. */
static journal *open_journal(struct fixture *f) { return jf_open_journal(&f->jf, 0, 64); }

static void close_journal(struct fixture *f, journal *j) { jf_close_journal(&f->jf, j); }

static int64_t query_int(struct fixture *f, const char *sql) { return jf_query_int(&f->jf, sql); }

/* A valid sale; `lines` lines, so its size can be chosen. */
static void make_sale(struct sale *sale, const char *sale_id, size_t lines)
{
  jf_sale_init(sale, sale_id, SALE_CHANNEL_DELIVERY, "E042");
  snprintf(sale->delivery_partner, sizeof(sale->delivery_partner), "ACME-EATS");
  sale->line_count = lines;
  sale->lines = calloc(lines, sizeof(*sale->lines));
  sale->total = 0;
  for (size_t i = 0; i < lines; i++) {
    /* Random-looking SKUs so that big sales stay big compressed, the same
     * for the same sale_id (a retry is the same sale). */
    uint64_t noise = 1469598103934665603ULL ^ (uint64_t)(i + 1);
    char *sku = sale->lines[i].sku;
    for (const char *c = sale_id; *c; c++)
      noise = (noise ^ (uint8_t)*c) * 1099511628211ULL;
    for (size_t c = 0; c < 40; c++) {
      noise ^= noise << 13;
      noise ^= noise >> 7;
      noise ^= noise << 17;
      sku[c] = "0123456789ABCDEF"[noise & 15];
    }
    sku[40] = '\0';
    sale->lines[i].qty = 1 + (int64_t)(i % 3);
    sale->lines[i].unit_price = 1250 + (int64_t)i;
    sale->lines[i].discount = i == 0 ? 100 : 0;
    if (i == 0)
      snprintf(sale->lines[i].promo_id, sizeof(sale->lines[i].promo_id), "TPR-42");
    sale->lines[i].tax = 230;
    sale->total += sale->lines[i].qty * sale->lines[i].unit_price - sale->lines[i].discount +
                   sale->lines[i].tax;
  }
  sale->payment_count = 1;
  sale->payments = calloc(1, sizeof(*sale->payments));
  snprintf(sale->payments[0].method, sizeof(sale->payments[0].method), "card");
  sale->payments[0].amount = sale->total;
}

/* Journals `count` sales named PREFIX-i, `lines` lines each. */
static void add_sales(struct fixture *f, journal *j, const char *prefix, size_t count,
                      size_t lines)
{
  jf_add_sales(&f->jf, j, prefix, count, lines, make_sale);
}

/* The collector's decoded limit NEXT_BATCH ops seal within (0 = none). */
static size_t op_max_decoded;

/* Runs one operation to completion. The caller clears w->op. */
static void run_op(struct fixture *f, journal *j, struct jf_op *w, enum journal_op_kind kind,
                   int64_t batch_seq, int64_t seal_upto, size_t max_sales, size_t max_bytes,
                   int64_t now_ms, int64_t retention_ms)
{
  memset(w, 0, sizeof(*w));
  w->op.kind = kind;
  w->op.batch_seq = batch_seq;
  w->op.seal_upto_seq = seal_upto;
  w->op.max_sales = max_sales;
  w->op.max_bytes = max_bytes;
  w->op.max_decoded_bytes = op_max_decoded;
  w->op.pack = batcher_pack;
  w->op.pack_arg = &f->identity;
  w->op.now_ms = now_ms;
  w->op.retention_ms = retention_ms;
  jf_run_op(&f->jf, j, w);
}

/* NEXT_BATCH(batch_seq) sealing anything; fails the test on an error. */
static void next_batch(struct fixture *f, journal *j, struct jf_op *w, int64_t batch_seq,
                       size_t max_sales, size_t max_bytes)
{
  run_op(f, j, w, JOURNAL_OP_NEXT_BATCH, batch_seq, INT64_MAX, max_sales, max_bytes, 0, 0);
  if (w->op.error)
    fail_msg("NEXT_BATCH %lld: %s", (long long)batch_seq, w->op.message);
}

static void ack(struct fixture *f, journal *j, int64_t batch_seq, int64_t now_ms)
{
  struct jf_op w;
  run_op(f, j, &w, JOURNAL_OP_ACK, batch_seq, 0, 0, 0, now_ms, 0);
  if (w.op.error)
    fail_msg("ACK %lld: %s", (long long)batch_seq, w.op.message);
}

/* Decodes a body as the collector would, and checks it against the batch. */
static Pos__V1__Batch *decode(const struct journal_batch *batch)
{
  struct proto_limits limits = {PROTO_DEFAULT_MAX_COMPRESSED, PROTO_DEFAULT_MAX_DECODED,
                                PROTO_DEFAULT_MAX_SALES};
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  int rc = proto_batch_unpack(batch->body, batch->body_len, &limits, &decoded, err, sizeof(err));
  if (rc)
    fail_msg("batch %lld does not decode: %s", (long long)batch->batch_seq, err);
  assert_int_equal(decoded->envelope->batch_seq, batch->batch_seq);
  assert_int_equal(decoded->envelope->first_seq, batch->first_seq);
  assert_int_equal(decoded->envelope->last_seq, batch->last_seq);
  assert_int_equal(decoded->envelope->sale_count, batch->sale_count);
  assert_int_equal(decoded->n_sales, batch->sale_count);
  assert_int_equal(decoded->n_inventory_deltas, 0);
  for (size_t i = 0; i < decoded->n_sales; i++) {
    char field[64], why[128];
    assert_int_equal(decoded->sales[i]->seq, batch->first_seq + (int64_t)i);
    if (proto_sale_check(decoded->sales[i], field, sizeof(field), why, sizeof(why)))
      fail_msg("sale seq %llu fails the collector's check: %s: %s",
               (unsigned long long)decoded->sales[i]->seq, field, why);
  }
  return decoded;
}

/* ---- the tests ------------------------------------------------------------------- */

static void batches_are_contiguous_and_cover_every_sale_once(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;
  struct journal_stats stats;
  int64_t expected_first = 1;

  add_sales(f, j, "C", 95, 2);
  for (int64_t batch_seq = 1; batch_seq <= 10; batch_seq++) {
    next_batch(f, j, &w, batch_seq, 10, 1024 * 1024);
    assert_int_equal(w.op.batch.batch_seq, batch_seq);
    assert_true(w.op.sealed);
    assert_int_equal(w.op.batch.first_seq, expected_first);
    assert_int_equal(w.op.batch.sale_count, batch_seq == 10 ? 5 : 10);
    assert_int_equal(w.op.batch.last_seq, expected_first + w.op.batch.sale_count - 1);
    assert_int_equal(w.op.batch.attempts, 1);
    {
      Pos__V1__Batch *decoded = decode(&w.op.batch);
      assert_string_equal(decoded->envelope->store_id, "S001");
      assert_string_equal(decoded->envelope->device_id, "D1");
      assert_int_equal(decoded->envelope->kind, POS__V1__BATCH_KIND__BATCH_KIND_LIVE);
      assert_int_equal(decoded->envelope->journal_id.len, 16);
      assert_string_equal(decoded->sales[0]->store_id, "S001");
      assert_true(decoded->sales[0]->received_ms > 0);
      assert_string_equal(decoded->sales[0]->delivery_partner, "ACME-EATS");
      assert_int_equal(decoded->sales[0]->n_lines, 2);
      assert_string_equal(decoded->sales[0]->lines[0]->promo_id, "TPR-42");
      pos__v1__batch__free_unpacked(decoded, NULL);
    }
    expected_first = w.op.batch.last_seq + 1;
    journal_op_clear(&w.op);
    ack(f, j, batch_seq, 0);
  }
  /* Nothing left: no batch 11. */
  next_batch(f, j, &w, 11, 10, 1024 * 1024);
  assert_int_equal(w.op.batch.batch_seq, 0);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.last_batch_seq, 10);
  assert_int_equal(stats.acked_batch_seq, 10);
  assert_int_equal(stats.sales_unsent, 0);
  close_journal(f, j);
  assert_int_equal(query_int(f, UNSEALED_COUNT_SQL), 0);
  assert_int_equal(query_int(f, "SELECT count(*) FROM sales s JOIN batches b "
                                "ON s.seq BETWEEN b.first_seq AND b.last_seq"),
                   95);
  assert_int_equal(query_int(f, "SELECT sum(sale_count) FROM batches"), 95);
  assert_int_equal(query_int(f, "SELECT max(batch_seq) - min(batch_seq) + 1 - count(*) FROM "
                                "batches"),
                   0);
}

static void size_caps_are_honoured(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;
  const size_t max_bytes = 8 * 1024;
  int64_t batch_seq = 1;
  uint64_t sealed_sales = 0;

  /* Sales of 40 distinct lines: a few KB each, compressed. */
  add_sales(f, j, "BIG", 60, 40);
  for (;; batch_seq++) {
    next_batch(f, j, &w, batch_seq, 50, max_bytes);
    if (w.op.batch.batch_seq == 0)
      break;
    assert_true(w.op.batch.body_len <= max_bytes);
    assert_true(w.op.batch.sale_count <= 50);
    assert_true(w.op.batch.sale_count >= 1);
    sealed_sales += w.op.batch.sale_count;
    pos__v1__batch__free_unpacked(decode(&w.op.batch), NULL);
    journal_op_clear(&w.op);
    ack(f, j, batch_seq, 0);
  }
  assert_int_equal(sealed_sales, 60);
  /* The cap really bit: more batches than the sales cap alone would make. */
  assert_true(batch_seq - 1 > 2);

  /* The count cap alone. */
  add_sales(f, j, "SMALL", 30, 1);
  next_batch(f, j, &w, batch_seq, 7, 1024 * 1024);
  assert_int_equal(w.op.batch.sale_count, 7);
  journal_op_clear(&w.op);
  close_journal(f, j);
}

static void a_sealed_batch_is_resent_byte_for_byte(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;
  uint8_t *first;
  size_t first_len;

  add_sales(f, j, "R", 20, 3);
  next_batch(f, j, &w, 1, 100, 1024 * 1024);
  assert_true(w.op.sealed);
  first_len = w.op.batch.body_len;
  first = malloc(first_len);
  memcpy(first, w.op.batch.body, first_len);
  journal_op_clear(&w.op);

  /* More sales arrive; the retry still sends exactly the sealed bytes. */
  add_sales(f, j, "R-LATER", 5, 1);
  next_batch(f, j, &w, 1, 100, 1024 * 1024);
  assert_false(w.op.sealed);
  assert_int_equal(w.op.batch.attempts, 2);
  assert_int_equal(w.op.batch.body_len, first_len);
  assert_memory_equal(w.op.batch.body, first, first_len);
  assert_int_equal(w.op.batch.sale_count, 20);
  journal_op_clear(&w.op);
  close_journal(f, j);

  /* And after a restart. */
  j = open_journal(f);
  next_batch(f, j, &w, 1, 100, 1024 * 1024);
  assert_int_equal(w.op.batch.attempts, 3);
  assert_memory_equal(w.op.batch.body, first, first_len);
  journal_op_clear(&w.op);
  /* An acknowledged batch is still resent unchanged (a collector that lost
   * it asks for it with a 409). */
  ack(f, j, 1, 0);
  next_batch(f, j, &w, 1, 100, 1024 * 1024);
  assert_true(w.op.batch.acked_ms > 0);
  assert_memory_equal(w.op.batch.body, first, first_len);
  journal_op_clear(&w.op);
  close_journal(f, j);
  assert_int_equal(query_int(f, "SELECT attempts FROM batches WHERE batch_seq = 1"), 4);
  free(first);
}

/*
 * Issue 12, item 6: a batch is sealed with the zstd dictionary only after
 * the collector said it knows it (the uplink calls batcher_use_dictionary
 * from the ack's Limits); before that, and after a collector that lists
 * none, without. A batch sealed before the switch is resent as it was
 * sealed, without the dictionary.
 */
static void the_dictionary_is_used_only_once_the_collector_knows_it(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;
  Pos__V1__Batch *decoded;
  uint8_t *first;
  size_t first_len;

  assert_int_equal(batcher_dictionary(&f->identity), PROTO_ZSTD_DICT_NONE);
  add_sales(f, j, "D", 60, 2);
  next_batch(f, j, &w, 1, 100, 1024 * 1024);
  assert_int_equal(ZSTD_getDictID_fromFrame(w.op.batch.body, w.op.batch.body_len), 0);
  decoded = decode(&w.op.batch);
  assert_int_equal(decoded->envelope->zstd_dictionary, PROTO_ZSTD_DICT_NONE);
  pos__v1__batch__free_unpacked(decoded, NULL);
  first_len = w.op.batch.body_len;
  first = malloc(first_len);
  memcpy(first, w.op.batch.body, first_len);
  journal_op_clear(&w.op);

  /* The collector's ack listed it: batch 1, sealed, stays as it is. */
  batcher_use_dictionary(&f->identity, PROTO_ZSTD_DICT_SALES_1);
  next_batch(f, j, &w, 1, 100, 1024 * 1024);
  assert_false(w.op.sealed);
  assert_int_equal(w.op.batch.body_len, first_len);
  assert_memory_equal(w.op.batch.body, first, first_len);
  journal_op_clear(&w.op);
  ack(f, j, 1, 0);
  add_sales(f, j, "E", 60, 2);
  next_batch(f, j, &w, 2, 100, 1024 * 1024);
  assert_true(w.op.sealed);
  assert_int_equal(ZSTD_getDictID_fromFrame(w.op.batch.body, w.op.batch.body_len),
                   PROTO_ZSTD_DICT_SALES_1);
  decoded = decode(&w.op.batch);
  assert_int_equal(decoded->envelope->zstd_dictionary, PROTO_ZSTD_DICT_SALES_1);
  pos__v1__batch__free_unpacked(decoded, NULL);
  journal_op_clear(&w.op);

  /* A collector rolled back lists none: the next batch goes without again. */
  ack(f, j, 2, 0);
  batcher_use_dictionary(&f->identity, PROTO_ZSTD_DICT_NONE);
  add_sales(f, j, "F", 10, 2);
  next_batch(f, j, &w, 3, 100, 1024 * 1024);
  assert_true(w.op.sealed);
  assert_int_equal(ZSTD_getDictID_fromFrame(w.op.batch.body, w.op.batch.body_len), 0);
  journal_op_clear(&w.op);
  close_journal(f, j);
  free(first);
}

/*
 * Issue 12, item 6: sealed with sales-2, a batch holds its sales compact (no
 * absolute times, seqs or store ids on the wire), and decodes to exactly the
 * sales the same rows give sealed with sales-1, canonical: field for field,
 * the same bytes packed again.
 */
static void a_batch_sealed_with_sales_2_is_compact_and_decodes_to_the_same_sales(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;
  Pos__V1__Batch *compact, *canonical, *raw_batch;
  uint8_t *raw = NULL;
  size_t raw_len = 0, compact_len;

  f->identity.zstd_level = 0;
  batcher_use_dictionary(&f->identity, PROTO_ZSTD_DICT_SALES_2);
  add_sales(f, j, "K", 60, 2);
  next_batch(f, j, &w, 1, 100, 1024 * 1024);
  assert_true(w.op.sealed);
  assert_int_equal(ZSTD_getDictID_fromFrame(w.op.batch.body, w.op.batch.body_len),
                   PROTO_ZSTD_DICT_SALES_2);
  assert_int_equal(proto_zstd_decompress(w.op.batch.body, w.op.batch.body_len, 1 << 24, &raw,
                                         &raw_len),
                   PROTO_OK);
  raw_batch = pos__v1__batch__unpack(NULL, raw_len, raw);
  assert_non_null(raw_batch);
  assert_true(raw_batch->envelope->compact_sales);
  for (size_t i = 0; i < raw_batch->n_sales; i++) {
    assert_int_equal(raw_batch->sales[i]->business_time_ms, 0);
    assert_int_equal(raw_batch->sales[i]->received_ms, 0);
    assert_int_equal(raw_batch->sales[i]->seq, 0);
    assert_string_equal(raw_batch->sales[i]->store_id, "");
  }
  pos__v1__batch__free_unpacked(raw_batch, NULL);
  free(raw);
  compact = decode(&w.op.batch); /* seqs and the collector's check, restored */
  compact_len = w.op.batch.body_len;
  journal_op_clear(&w.op);

  /* The same rows again, with sales-1 (a collector rolled back). */
  run_op(f, j, &w, JOURNAL_OP_UNSEAL, 1, 0, 0, 0, 0, 0);
  assert_int_equal(w.op.error, 0);
  batcher_use_dictionary(&f->identity, PROTO_ZSTD_DICT_SALES_1);
  next_batch(f, j, &w, 1, 100, 1024 * 1024);
  assert_true(w.op.sealed);
  canonical = decode(&w.op.batch);
  print_message("60 sales: %zu bytes compact with sales-2, %zu canonical with sales-1\n",
                compact_len, w.op.batch.body_len);
  assert_true(compact_len < w.op.batch.body_len);
  assert_int_equal(compact->n_sales, canonical->n_sales);
  for (size_t i = 0; i < canonical->n_sales; i++) {
    size_t len = pos__v1__sale__get_packed_size(canonical->sales[i]);
    uint8_t *both = malloc(2 * len);
    assert_non_null(both);
    assert_int_equal(pos__v1__sale__get_packed_size(compact->sales[i]), len);
    pos__v1__sale__pack(canonical->sales[i], both);
    pos__v1__sale__pack(compact->sales[i], both + len);
    assert_memory_equal(both, both + len, len);
    assert_true(canonical->sales[i]->business_time_ms > 0);
    assert_string_equal(compact->sales[i]->store_id, "S001");
    free(both);
  }
  pos__v1__batch__free_unpacked(compact, NULL);
  pos__v1__batch__free_unpacked(canonical, NULL);
  journal_op_clear(&w.op);
  close_journal(f, j);
}

/* The default level (0) seals a store's regular batch at 19, smaller than
 * level 3 (by a fifth on wire_bench's sales), and a catching-up batch
 * larger than BATCHER_SMALL_BATCH at 3, whose tables at 19 would take
 * megabytes. */
static void a_regular_batch_is_sealed_smaller_by_default(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;
  size_t at_3, by_default;

  assert_int_equal(batcher_zstd_level(0, 12 * 1024), 19);
  assert_int_equal(batcher_zstd_level(0, BATCHER_SMALL_BATCH), 19);
  assert_int_equal(batcher_zstd_level(0, BATCHER_SMALL_BATCH + 1), 3);
  assert_int_equal(batcher_zstd_level(7, 12 * 1024), 7);
  assert_int_equal(batcher_zstd_level(7, 1024 * 1024), 7);

  batcher_use_dictionary(&f->identity, PROTO_ZSTD_DICT_SALES_1);
  add_sales(f, j, "A", 60, 2);
  next_batch(f, j, &w, 1, 100, 1024 * 1024);
  at_3 = w.op.batch.body_len;
  journal_op_clear(&w.op);
  ack(f, j, 1, 0);
  f->identity.zstd_level = 0;
  add_sales(f, j, "B", 60, 2);
  next_batch(f, j, &w, 2, 100, 1024 * 1024);
  by_default = w.op.batch.body_len;
  journal_op_clear(&w.op);
  print_message("60 sales: %zu bytes at level 3, %zu by default\n", at_3, by_default);
  assert_true(by_default * 100 < at_3 * 97); /* 7% on these alike sales */
  close_journal(f, j);
}

static void resealing_after_413_keeps_every_sale_once(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;
  struct journal_stats stats;
  int64_t batch_seq;

  add_sales(f, j, "S", 100, 2);
  /* Batch 1 acknowledged; 2 and 3 sealed but not. */
  next_batch(f, j, &w, 1, 30, 1024 * 1024);
  journal_op_clear(&w.op);
  ack(f, j, 1, 0);
  next_batch(f, j, &w, 2, 30, 1024 * 1024);
  journal_op_clear(&w.op);
  next_batch(f, j, &w, 3, 30, 1024 * 1024);
  journal_op_clear(&w.op);

  /* An acknowledged batch cannot be split. */
  run_op(f, j, &w, JOURNAL_OP_UNSEAL, 1, 0, 0, 0, 0, 0);
  assert_int_equal(w.op.error, JOURNAL_EINVAL);

  /* 413 for batch 2: it and 3 go, their 60 sales are unsealed. */
  run_op(f, j, &w, JOURNAL_OP_UNSEAL, 2, 0, 0, 0, 0, 0);
  assert_int_equal(w.op.error, 0);
  assert_int_equal(w.op.batches_changed, 2);
  assert_int_equal(w.op.sales_changed, 60);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.last_batch_seq, 1);

  /* Sealed again at half the size, from batch 2 on. */
  for (batch_seq = 2;; batch_seq++) {
    next_batch(f, j, &w, batch_seq, 15, 1024 * 1024);
    if (w.op.batch.batch_seq == 0)
      break;
    assert_true(w.op.batch.sale_count <= 15);
    pos__v1__batch__free_unpacked(decode(&w.op.batch), NULL);
    journal_op_clear(&w.op);
    ack(f, j, batch_seq, 0);
  }
  assert_int_equal(batch_seq, 2 + 5); /* 70 sales in batches of 15: 5 more */
  journal_get_stats(j, &stats);
  assert_int_equal(stats.sales_unsent, 0);
  close_journal(f, j);
  assert_int_equal(query_int(f, UNSEALED_COUNT_SQL), 0);
  assert_int_equal(query_int(f, "SELECT sum(sale_count) FROM batches"), 100);
  assert_int_equal(query_int(f, "SELECT count(*) FROM batches"), 6);
  /* Every sale in exactly the batch whose range holds it. */
  assert_int_equal(query_int(f, "SELECT count(DISTINCT s.seq) FROM sales s JOIN batches b ON s.seq "
                                "BETWEEN b.first_seq AND b.last_seq"),
                   100);
}

static void acknowledgements_update_the_counters(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;
  struct journal_stats stats;
  int64_t first_received;

  journal_get_stats(j, &stats);
  assert_int_equal(stats.sales_unsent, 0);
  assert_int_equal(stats.oldest_unsent_ms, 0);
  add_sales(f, j, "A", 25, 1);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.sales_unsent, 25);
  assert_true(stats.oldest_unsent_ms > 0);
  first_received = stats.oldest_unsent_ms;

  next_batch(f, j, &w, 1, 10, 1024 * 1024);
  journal_op_clear(&w.op);
  next_batch(f, j, &w, 2, 10, 1024 * 1024);
  journal_op_clear(&w.op);
  journal_get_stats(j, &stats);
  /* Sealed is not sent. */
  assert_int_equal(stats.sales_unsent, 25);
  assert_int_equal(stats.last_batch_seq, 2);
  assert_int_equal(stats.acked_batch_seq, 0);
  assert_int_equal(stats.oldest_unsent_ms, first_received);

  ack(f, j, 1, 1700000000000LL);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.sales_unsent, 15);
  assert_int_equal(stats.acked_batch_seq, 1);
  assert_int_equal(stats.acked_last_seq, 10);
  assert_int_equal(stats.last_ack_ms, 1700000000000LL);
  assert_true(stats.oldest_unsent_ms >= first_received);

  /* Acknowledging again, or an older batch, changes nothing. */
  ack(f, j, 1, 1700000001000LL);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.sales_unsent, 15);
  assert_int_equal(stats.last_ack_ms, 1700000000000LL);

  /* An acknowledgement beyond what was sealed is clamped. */
  ack(f, j, 9, 1700000002000LL);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.acked_batch_seq, 2);
  assert_int_equal(stats.sales_unsent, 5);
  close_journal(f, j);

  /* The counters come back from the file. */
  j = open_journal(f);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.acked_batch_seq, 2);
  assert_int_equal(stats.last_batch_seq, 2);
  assert_int_equal(stats.acked_last_seq, 20);
  assert_int_equal(stats.sales_unsent, 5);
  assert_int_equal(stats.last_ack_ms, 1700000002000LL);
  assert_true(stats.oldest_unsent_ms > 0);
  close_journal(f, j);
  assert_int_equal(query_int(f, "SELECT count(*) FROM batches WHERE acked_ms IS NOT NULL"), 2);
}

static void retention_deletes_only_old_acknowledged_history(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;
  struct journal_stats stats;
  int64_t now = 1800000000000LL;

  add_sales(f, j, "OLD", 30, 1);
  next_batch(f, j, &w, 1, 10, 1024 * 1024);
  journal_op_clear(&w.op);
  ack(f, j, 1, now - 100 * DAY_MS); /* acknowledged long ago */
  next_batch(f, j, &w, 2, 10, 1024 * 1024);
  journal_op_clear(&w.op);
  ack(f, j, 2, now - 10 * DAY_MS); /* acknowledged recently */
  next_batch(f, j, &w, 3, 10, 1024 * 1024);
  journal_op_clear(&w.op); /* sealed, never acknowledged */
  add_sales(f, j, "NEW", 5, 1); /* never sealed */

  run_op(f, j, &w, JOURNAL_OP_RETENTION, 0, 0, 0, 0, now, 90 * DAY_MS);
  assert_int_equal(w.op.error, 0);
  assert_int_equal(w.op.batches_changed, 1);
  assert_int_equal(w.op.sales_changed, 10);
  journal_get_stats(j, &stats);
  assert_int_equal(stats.sales_journaled, 25);
  assert_int_equal(stats.sales_unsent, 15);

  /* Even with everything old, unacknowledged rows stay. */
  run_op(f, j, &w, JOURNAL_OP_RETENTION, 0, 0, 0, 0, now + 1000 * DAY_MS, 90 * DAY_MS);
  assert_int_equal(w.op.batches_changed, 1);
  close_journal(f, j);
  assert_int_equal(query_int(f, "SELECT count(*) FROM sales"), 15);
  assert_int_equal(query_int(f, "SELECT count(*) FROM sales s JOIN batches b ON s.seq BETWEEN "
                                "b.first_seq AND b.last_seq WHERE b.batch_seq = 3"), 10);
  assert_int_equal(query_int(f, UNSEALED_COUNT_SQL), 5);
  assert_int_equal(query_int(f, "SELECT group_concat(batch_seq) FROM batches"), 3);

  /* Batch numbers go on after retention emptied the acknowledged ones. */
  j = open_journal(f);
  ack(f, j, 3, now);
  run_op(f, j, &w, JOURNAL_OP_RETENTION, 0, 0, 0, 0, now + 1000 * DAY_MS, 90 * DAY_MS);
  assert_int_equal(query_int(f, "SELECT count(*) FROM batches"), 0);
  next_batch(f, j, &w, 4, 10, 1024 * 1024);
  assert_int_equal(w.op.batch.batch_seq, 4);
  assert_int_equal(w.op.batch.sale_count, 5);
  journal_op_clear(&w.op);
  /* A batch deleted by retention is gone for good. */
  run_op(f, j, &w, JOURNAL_OP_NEXT_BATCH, 2, INT64_MAX, 10, 1024 * 1024, 0, 0);
  assert_int_equal(w.op.error, JOURNAL_ENOTFOUND);
  assert_non_null(strstr(w.op.message, "retention"));
  /* And one never sealed cannot be asked for. */
  run_op(f, j, &w, JOURNAL_OP_NEXT_BATCH, 9, INT64_MAX, 10, 1024 * 1024, 0, 0);
  assert_int_equal(w.op.error, JOURNAL_ENOTFOUND);
  close_journal(f, j);
}

static void sealing_stops_at_the_push_target(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;

  add_sales(f, j, "T", 5, 1);
  /* seal_upto_seq 0: only load, never seal. */
  run_op(f, j, &w, JOURNAL_OP_NEXT_BATCH, 1, 0, 10, 1024 * 1024, 0, 0);
  assert_int_equal(w.op.error, 0);
  assert_int_equal(w.op.batch.batch_seq, 0);
  /* A target below every unsealed sale seals nothing either... */
  next_batch(f, j, &w, 1, 2, 1024 * 1024);
  journal_op_clear(&w.op);
  ack(f, j, 1, 0);
  run_op(f, j, &w, JOURNAL_OP_NEXT_BATCH, 2, 2, 10, 1024 * 1024, 0, 0);
  assert_int_equal(w.op.batch.batch_seq, 0);
  /* ...and one at or above the oldest unsealed sale seals (up to the cap). */
  run_op(f, j, &w, JOURNAL_OP_NEXT_BATCH, 2, 3, 10, 1024 * 1024, 0, 0);
  assert_int_equal(w.op.batch.batch_seq, 2);
  assert_int_equal(w.op.batch.first_seq, 3);
  assert_int_equal(w.op.batch.last_seq, 5);
  journal_op_clear(&w.op);
  close_journal(f, j);
}

static void a_v1_journal_is_migrated_and_its_sales_sent(void **state)
{
  struct fixture *f = *state;
  sqlite3 *db;
  journal *j;
  struct jf_op w;
  struct journal_stats stats;

  /* A journal as the first agent version left it: two unsent sales. */
  assert_int_equal(sqlite3_open(f->jf.path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db,
                                "PRAGMA journal_mode=WAL; BEGIN;" JOURNAL_SCHEMA_V1
                                "INSERT INTO meta VALUES('journal_id',"
                                " '00112233445566778899aabbccddeeff');"
                                "INSERT INTO sales(sale_id, content_hash, kind, original_sale_id, terminal_id,"
                                " channel, business_time, business_time_ms, utc_offset_min,"
                                " currency, currency_exponent, total_minor, lines, payments,"
                                " received_ms) VALUES"
                                " ('V1-1', x'00', 'sale', NULL, 'T1', 'pos', '2026-01-01T10:00:00Z',"
                                "  1767261600000, 0, 'EUR', 2, 2500,"
                                "  '[{\"sku\":\"P\",\"qty\":2,\"unit_price\":1250,"
                                "\"discount\":0,\"tax\":0}]',"
                                "  '[{\"method\":\"cash\",\"amount\":2500}]', 1767261601000),"
                                " ('V1-2', x'01', 'refund', 'V1-1', 'T1', 'pickup', '2026-01-01T10:05:00Z',"
                                "  1767261900000, 0, 'EUR', 2, 2500,"
                                "  '[{\"sku\":\"P\",\"qty\":2,\"unit_price\":1250,"
                                "\"discount\":0,\"tax\":0}]',"
                                "  '[{\"method\":\"cash\",\"amount\":2500}]', 1767261901000);"
                                "PRAGMA user_version=1; COMMIT;",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);

  j = open_journal(f);
  journal_get_stats(j, &stats);
  assert_string_equal(stats.journal_id, "00112233445566778899aabbccddeeff");
  assert_int_equal(stats.sales_unsent, 2);
  assert_int_equal(stats.oldest_unsent_ms, 1767261601000LL);
  assert_int_equal(stats.last_batch_seq, 0);
  next_batch(f, j, &w, 1, 10, 1024 * 1024);
  assert_int_equal(w.op.batch.sale_count, 2);
  {
    Pos__V1__Batch *decoded = decode(&w.op.batch);
    static const uint8_t id[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                   0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    assert_memory_equal(decoded->envelope->journal_id.data, id, 16);
    assert_int_equal(decoded->sales[1]->kind, POS__V1__SALE_KIND__SALE_KIND_REFUND);
    assert_int_equal(decoded->sales[1]->channel, POS__V1__CHANNEL__CHANNEL_PICKUP);
    assert_int_equal(decoded->sales[1]->received_ms, 1767261901000LL);
    assert_string_equal(decoded->sales[0]->cashier_id, "");
    pos__v1__batch__free_unpacked(decoded, NULL);
  }
  journal_op_clear(&w.op);
  close_journal(f, j);
  assert_int_equal(query_int(f, "PRAGMA user_version"), 6);
}

static void a_damaged_row_stops_sealing_with_a_reason(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;
  sqlite3 *db;

  add_sales(f, j, "D", 3, 1);
  close_journal(f, j);
  assert_int_equal(sqlite3_open(f->jf.path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "UPDATE sales SET lines = 'not json' WHERE seq = 2", NULL,
                                NULL, NULL),
                   SQLITE_OK);
  sqlite3_close(db);
  j = open_journal(f);
  run_op(f, j, &w, JOURNAL_OP_NEXT_BATCH, 1, INT64_MAX, 10, 1024 * 1024, 0, 0);
  assert_int_equal(w.op.error, JOURNAL_ECORRUPT);
  assert_non_null(strstr(w.op.message, "seq 2"));
  close_journal(f, j);
  /* Nothing was half sealed. */
  assert_int_equal(query_int(f, "SELECT count(*) FROM batches"), 0);
  assert_int_equal(query_int(f, UNSEALED_COUNT_SQL), 3);
}

/* Fills a journal capped at `max_bytes` with one-line sales until it refuses
 * one; returns how many it took. */
static size_t fill(struct fixture *f, journal *j, const char *prefix)
{
  size_t stored = 0;
  for (;;) {
    struct sale sale;
    struct jf_write p;
    char id[32];
    snprintf(id, sizeof(id), "%.8s-%zu", prefix, stored);
    make_sale(&sale, id, 1);
    jf_write_and_wait(&f->jf, j, &p, &sale, 1);
    sale_clear(&sale);
    if (p.write.error) {
      assert_int_equal(p.write.error, JOURNAL_EFULL);
      return stored;
    }
    stored++;
    assert_true(stored < 100000);
  }
}

static void a_full_journal_still_seals_and_refuses_new_sales_steadily(void **state)
{
  struct fixture *f = *state;
  struct journal_options options = {
      .path = f->jf.path, .max_bytes = 256 * 1024, .group_commit_max = 64, .busy_timeout_ms = 1000};
  char err[512];
  journal *j = journal_open(&f->jf.loop, &options, err, sizeof(err));
  struct jf_op w;
  struct sale sale;
  struct jf_write p;
  size_t stored, sent, refilled;

  assert_non_null(j);
  stored = fill(f, j, "FULL");
  assert_true(stored > 50);
  /* Refused again: a small sale does not slip into a half-empty page. */
  for (int i = 0; i < 5; i++) {
    char id[32];
    snprintf(id, sizeof(id), "AGAIN-%d", i);
    make_sale(&sale, id, 1);
    jf_write_and_wait(&f->jf, j, &p, &sale, 1);
    sale_clear(&sale);
    assert_int_equal(p.write.error, JOURNAL_EFULL);
  }
  /* A retry of a journaled sale is still answered. */
  make_sale(&sale, "FULL-0", 1);
  jf_write_and_wait(&f->jf, j, &p, &sale, 1);
  sale_clear(&sale);
  assert_int_equal(p.write.error, 0);
  assert_int_equal(p.results[0].outcome, JOURNAL_DUPLICATE);
  assert_int_equal(p.results[0].seq, 1);

  /* The uplink can still seal what the full journal holds (its reserve). */
  next_batch(f, j, &w, 1, 200, 64 * 1024);
  assert_true(w.op.sealed);
  assert_int_equal(w.op.batch.first_seq, 1);
  sent = w.op.batch.sale_count;
  journal_op_clear(&w.op);
  /* On a full journal the acknowledgement makes room: the acknowledged
   * sales (in Kafka now) are deleted before retention (issue 7 item 9). */
  ack(f, j, 1, 0);
  close_journal(f, j);
  assert_int_equal(query_int(f, "SELECT count(*) FROM sales"), (int64_t)(stored - sent));

  /* Reopened at the same size it takes sales into that room, until full. */
  j = journal_open(&f->jf.loop, &options, err, sizeof(err));
  assert_non_null(j);
  refilled = fill(f, j, "REOPEN");
  assert_true(refilled > 0);
  close_journal(f, j);
  options.max_bytes = 0;
  j = journal_open(&f->jf.loop, &options, err, sizeof(err));
  assert_non_null(j);
  add_sales(f, j, "ROOM", 3, 1);
  close_journal(f, j);
  assert_int_equal(query_int(f, "SELECT count(*) FROM sales"),
                   (int64_t)(stored - sent + refilled + 3));
}

/* The collector's decoded limit is a cap like max_bytes: a batch that
 * compresses well must still not decompress beyond it. */
static void the_decoded_limit_is_honoured_when_sealing(void **state)
{
  struct fixture *f = *state;
  journal *j = open_journal(f);
  struct jf_op w;
  const size_t max_decoded = 16 * 1024;
  int64_t batch_seq = 1;
  uint64_t sealed_sales = 0;

  add_sales(f, j, "DEC", 80, 10);
  for (;; batch_seq++) {
    uint8_t *decoded = NULL;
    size_t decoded_len = 0;
    op_max_decoded = max_decoded;
    run_op(f, j, &w, JOURNAL_OP_NEXT_BATCH, batch_seq, INT64_MAX, 1000, 1024 * 1024, 0, 0);
    op_max_decoded = 0;
    if (w.op.error)
      fail_msg("NEXT_BATCH %lld: %s", (long long)batch_seq, w.op.message);
    if (w.op.batch.batch_seq == 0)
      break;
    assert_int_equal(proto_zstd_decompress(w.op.batch.body, w.op.batch.body_len,
                                           PROTO_DEFAULT_MAX_DECODED, &decoded, &decoded_len),
                     0);
    free(decoded);
    if (decoded_len > max_decoded)
      fail_msg("batch %lld decodes to %zu bytes, over %zu", (long long)batch_seq, decoded_len,
               max_decoded);
    sealed_sales += w.op.batch.sale_count;
    journal_op_clear(&w.op);
    ack(f, j, batch_seq, 0);
  }
  assert_int_equal(sealed_sales, 80);
  assert_true(batch_seq - 1 > 2);
  close_journal(f, j);
}

static void backoff_is_jittered_from_the_first_retry_and_grows(void **state)
{
  struct backoff b;
  uint64_t max_seen = 0, first_min = UINT64_MAX, first_max = 0;
  (void)state;

  backoff_init(&b, 100, 10000, 42);
  for (int i = 0; i < 200; i++) {
    uint64_t delay;
    backoff_reset(&b);
    delay = backoff_next(&b);
    assert_true(delay >= 50 && delay <= 100); /* first: jittered below the floor */
    first_min = delay < first_min ? delay : first_min;
    first_max = delay > first_max ? delay : first_max;
    delay = backoff_next(&b);
    assert_true(delay >= 100 && delay <= 200);
    delay = backoff_next(&b);
    assert_true(delay >= 200 && delay <= 400);
  }
  /* Stores that failed together do not retry together, even the first time. */
  assert_true(first_max - first_min >= 25);
  backoff_reset(&b);
  for (int i = 0; i < 100; i++) {
    uint64_t delay = backoff_next(&b);
    assert_true(delay >= 50 && delay <= 10000);
    if (delay > max_seen)
      max_seen = delay;
  }
  /* Jitter spreads the capped delays over the range. */
  assert_true(max_seen > 5000);
  for (int i = 0; i < 1000; i++)
    assert_true(backoff_random(&b, 7) <= 7);

  /* Retry-After is a minimum with jitter on top, and the backoff keeps
   * growing underneath it across consecutive busy answers. */
  {
    uint64_t low = UINT64_MAX, high = 0;
    for (int i = 0; i < 200; i++) {
      uint64_t delay;
      backoff_reset(&b);
      delay = backoff_after(&b, 30000);
      assert_true(delay >= 30000 && delay <= 45000);
      low = delay < low ? delay : low;
      high = delay > high ? delay : high;
    }
    assert_true(high - low >= 5000);
    backoff_reset(&b);
    for (int i = 0; i < 10; i++)
      backoff_after(&b, 0);
    assert_true(backoff_after(&b, 0) >= 5000); /* grown to the cap's half */
    backoff_reset(&b);
    for (int i = 0; i < 100; i++) {
      uint64_t delay = backoff_at_cap(&b);
      assert_true(delay >= 10000 && delay <= 12500);
    }
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(batches_are_contiguous_and_cover_every_sale_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(size_caps_are_honoured, setup, teardown),
      cmocka_unit_test_setup_teardown(a_sealed_batch_is_resent_byte_for_byte, setup, teardown),
      cmocka_unit_test_setup_teardown(a_regular_batch_is_sealed_smaller_by_default, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(the_dictionary_is_used_only_once_the_collector_knows_it,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          a_batch_sealed_with_sales_2_is_compact_and_decodes_to_the_same_sales, setup,
          teardown),
      cmocka_unit_test_setup_teardown(resealing_after_413_keeps_every_sale_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(acknowledgements_update_the_counters, setup, teardown),
      cmocka_unit_test_setup_teardown(retention_deletes_only_old_acknowledged_history, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(sealing_stops_at_the_push_target, setup, teardown),
      cmocka_unit_test_setup_teardown(a_v1_journal_is_migrated_and_its_sales_sent, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_damaged_row_stops_sealing_with_a_reason, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_full_journal_still_seals_and_refuses_new_sales_steadily,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(the_decoded_limit_is_honoured_when_sealing, setup,
                                      teardown),
      cmocka_unit_test(backoff_is_jittered_from_the_first_retry_and_grows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
