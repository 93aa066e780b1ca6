/*
 * test_codec.c - batch bodies: round trip, determinism, and every way a
 * body can be refused (too big, bomb, not zstd, truncated, not a batch,
 * incomplete envelope); the collector-side sale check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zstd.h>

#include "proto/codec.h"

static const struct proto_limits limits = {PROTO_DEFAULT_MAX_COMPRESSED,
                                           PROTO_DEFAULT_MAX_DECODED, PROTO_DEFAULT_MAX_SALES};

struct test_batch {
  Pos__V1__Batch batch;
  Pos__V1__BatchEnvelope envelope;
  Pos__V1__Sale sales[3];
  Pos__V1__Sale *sale_ptrs[3];
  Pos__V1__SaleLine lines[3];
  Pos__V1__SaleLine *line_ptrs[3][1];
  Pos__V1__Payment payments[3];
  Pos__V1__Payment *payment_ptrs[3][1];
  uint8_t journal_id[16];
};

static void make_batch(struct test_batch *t)
{
  memset(t, 0, sizeof(*t));
  pos__v1__batch__init(&t->batch);
  pos__v1__batch_envelope__init(&t->envelope);
  memset(t->journal_id, 0xab, sizeof(t->journal_id));
  t->envelope.store_id = "S0042";
  t->envelope.device_id = "HUB1";
  t->envelope.journal_id.data = t->journal_id;
  t->envelope.journal_id.len = sizeof(t->journal_id);
  t->envelope.batch_seq = 7;
  t->envelope.kind = POS__V1__BATCH_KIND__BATCH_KIND_LIVE;
  t->envelope.first_seq = 101;
  t->envelope.last_seq = 103;
  t->envelope.sale_count = 3;
  for (int i = 0; i < 3; i++) {
    static char ids[3][16];
    Pos__V1__Sale *sale = &t->sales[i];
    pos__v1__sale__init(sale);
    pos__v1__sale_line__init(&t->lines[i]);
    pos__v1__payment__init(&t->payments[i]);
    snprintf(ids[i], sizeof(ids[i]), "T1-%d", 101 + i);
    sale->sale_id = ids[i];
    sale->kind = POS__V1__SALE_KIND__SALE_KIND_SALE;
    sale->terminal_id = "T1";
    sale->channel = POS__V1__CHANNEL__CHANNEL_POS;
    sale->currency = "EUR";
    sale->currency_exponent = 2;
    sale->seq = (uint64_t)(101 + i);
    t->lines[i].sku = "PIZZA-MARG-L";
    t->lines[i].quantity = 2;
    t->lines[i].unit_price = 1250;
    t->lines[i].discount = 100;
    t->lines[i].tax = 230;
    t->line_ptrs[i][0] = &t->lines[i];
    sale->n_lines = 1;
    sale->lines = t->line_ptrs[i];
    sale->total = 2630;
    t->payments[i].method = "card";
    t->payments[i].amount = 2630;
    t->payment_ptrs[i][0] = &t->payments[i];
    sale->n_payments = 1;
    sale->payments = t->payment_ptrs[i];
    t->sale_ptrs[i] = sale;
  }
  t->batch.envelope = &t->envelope;
  t->batch.n_sales = 3;
  t->batch.sales = t->sale_ptrs;
}

static void round_trip_keeps_every_field_and_is_deterministic(void **state)
{
  struct test_batch t;
  uint8_t *body = NULL, *again = NULL;
  size_t len = 0, again_len = 0;
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  (void)state;
  make_batch(&t);
  assert_int_equal(proto_batch_pack(&t.batch, 3, &body, &len), PROTO_OK);
  assert_int_equal(proto_batch_pack(&t.batch, 3, &again, &again_len), PROTO_OK);
  assert_int_equal(len, again_len);
  assert_memory_equal(body, again, len);
  assert_int_equal(proto_batch_unpack(body, len, &limits, &decoded, err, sizeof(err)),
                   PROTO_OK);
  assert_string_equal(decoded->envelope->store_id, "S0042");
  assert_int_equal(decoded->envelope->batch_seq, 7);
  assert_int_equal(decoded->n_sales, 3);
  assert_string_equal(decoded->sales[2]->sale_id, "T1-103");
  assert_int_equal(decoded->sales[2]->seq, 103);
  assert_int_equal(decoded->sales[0]->lines[0]->unit_price, 1250);
  assert_int_equal(decoded->sales[0]->total, 2630);
  pos__v1__batch__free_unpacked(decoded, NULL);
  free(body);
  free(again);
}

static void a_body_over_the_limit_is_too_big(void **state)
{
  struct proto_limits small = {16, 1024, 10};
  uint8_t body[32] = {0};
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  (void)state;
  assert_int_equal(proto_batch_unpack(body, sizeof(body), &small, &decoded, err, sizeof(err)),
                   PROTO_ETOOBIG);
  assert_non_null(strstr(err, "over the limit of 16 bytes"));
}

static void a_decompression_bomb_is_refused(void **state)
{
  size_t big = 64 * 1024 * 1024;
  uint8_t *zeros = calloc(1, big);
  size_t bound = ZSTD_compressBound(big);
  uint8_t *bomb = malloc(bound);
  size_t bomb_len;
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  (void)state;
  bomb_len = ZSTD_compress(bomb, bound, zeros, big, 1);
  assert_false(ZSTD_isError(bomb_len));
  assert_true(bomb_len < 64 * 1024);
  assert_int_equal(proto_batch_unpack(bomb, bomb_len, &limits, &decoded, err, sizeof(err)),
                   PROTO_EBOMB);
  assert_non_null(strstr(err, "decompresses to more than"));
  free(zeros);
  free(bomb);
}

static void a_bomb_that_hides_its_size_is_refused_too(void **state)
{
  size_t big = 40 * 1024 * 1024;
  uint8_t *zeros = calloc(1, big);
  size_t bound = ZSTD_compressBound(big);
  uint8_t *bomb = malloc(bound);
  ZSTD_CCtx *cctx = ZSTD_createCCtx();
  ZSTD_inBuffer in = {zeros, big, 0};
  ZSTD_outBuffer out = {bomb, bound, 0};
  uint8_t *decoded = NULL;
  size_t decoded_len = 0;
  (void)state;
  /* A sender may leave the content size out of the frame header. */
  assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0)));
  assert_int_equal(ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end), 0);
  assert_int_equal(ZSTD_getFrameContentSize(bomb, out.pos), ZSTD_CONTENTSIZE_UNKNOWN);
  assert_int_equal(proto_zstd_decompress(bomb, out.pos, 1024 * 1024, &decoded, &decoded_len),
                   PROTO_EBOMB);
  assert_null(decoded);
  ZSTD_freeCCtx(cctx);
  free(zeros);
  free(bomb);
}

static void garbage_and_truncated_bodies_are_not_zstd(void **state)
{
  struct test_batch t;
  uint8_t *body = NULL;
  size_t len = 0;
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  const char garbage[] = "{\"sales\": []} this is JSON, not zstd";
  (void)state;
  assert_int_equal(proto_batch_unpack((const uint8_t *)garbage, sizeof(garbage), &limits,
                                      &decoded, err, sizeof(err)),
                   PROTO_EZSTD);
  make_batch(&t);
  assert_int_equal(proto_batch_pack(&t.batch, 3, &body, &len), PROTO_OK);
  assert_int_equal(proto_batch_unpack(body, len - 3, &limits, &decoded, err, sizeof(err)),
                   PROTO_EZSTD);
  free(body);
}

static void zstd_of_something_else_is_not_a_batch(void **state)
{
  uint8_t not_protobuf[64];
  uint8_t body[256];
  size_t len;
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  (void)state;
  memset(not_protobuf, 0xff, sizeof(not_protobuf));
  len = ZSTD_compress(body, sizeof(body), not_protobuf, sizeof(not_protobuf), 1);
  assert_false(ZSTD_isError(len));
  assert_int_equal(proto_batch_unpack(body, len, &limits, &decoded, err, sizeof(err)),
                   PROTO_EDECODE);
}

static void an_incomplete_envelope_is_refused(void **state)
{
  struct test_batch t;
  uint8_t *body = NULL;
  size_t len = 0;
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  (void)state;
  make_batch(&t);
  t.envelope.journal_id.len = 8;
  assert_int_equal(proto_batch_pack(&t.batch, 3, &body, &len), PROTO_OK);
  assert_int_equal(proto_batch_unpack(body, len, &limits, &decoded, err, sizeof(err)),
                   PROTO_EENVELOPE);
  assert_non_null(strstr(err, "journal_id"));
  free(body);

  make_batch(&t);
  t.envelope.kind = POS__V1__BATCH_KIND__BATCH_KIND_REPLAY;
  assert_int_equal(proto_batch_pack(&t.batch, 3, &body, &len), PROTO_OK);
  assert_int_equal(proto_batch_unpack(body, len, &limits, &decoded, err, sizeof(err)),
                   PROTO_EENVELOPE);
  assert_non_null(strstr(err, "resync_id"));
  free(body);
}

static void sale_check_finds_what_does_not_add_up(void **state)
{
  struct test_batch t;
  char field[64], why[256];
  (void)state;
  make_batch(&t);
  assert_int_equal(proto_sale_check(&t.sales[0], field, sizeof(field), why, sizeof(why)), 0);

  t.sales[0].total = 2631;
  assert_int_equal(proto_sale_check(&t.sales[0], field, sizeof(field), why, sizeof(why)), -1);
  assert_string_equal(field, "total");

  make_batch(&t);
  t.lines[1].quantity = 0;
  assert_int_equal(proto_sale_check(&t.sales[1], field, sizeof(field), why, sizeof(why)), -1);
  assert_string_equal(field, "lines[0].quantity");

  make_batch(&t);
  t.payments[2].amount = 2000;
  assert_int_equal(proto_sale_check(&t.sales[2], field, sizeof(field), why, sizeof(why)), -1);
  assert_string_equal(field, "payments");

  /* A free sale (total 0) needs no payment; a paid one does. */
  make_batch(&t);
  t.lines[0].discount = 2500;
  t.lines[0].tax = 0;
  t.sales[0].total = 0;
  t.sales[0].n_payments = 0;
  assert_int_equal(proto_sale_check(&t.sales[0], field, sizeof(field), why, sizeof(why)), 0);
  t.lines[0].discount = 100;
  t.lines[0].tax = 230;
  t.sales[0].total = 2630;
  assert_int_equal(proto_sale_check(&t.sales[0], field, sizeof(field), why, sizeof(why)), -1);
  assert_string_equal(field, "payments");

  make_batch(&t);
  t.sales[0].kind = POS__V1__SALE_KIND__SALE_KIND_REFUND;
  assert_int_equal(proto_sale_check(&t.sales[0], field, sizeof(field), why, sizeof(why)), -1);
  assert_string_equal(field, "original_sale_id");

  make_batch(&t);
  t.lines[0].unit_price = INT64_MAX / 2;
  assert_int_equal(proto_sale_check(&t.sales[0], field, sizeof(field), why, sizeof(why)), -1);
  assert_string_equal(field, "lines[0]");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(round_trip_keeps_every_field_and_is_deterministic),
      cmocka_unit_test(a_body_over_the_limit_is_too_big),
      cmocka_unit_test(a_decompression_bomb_is_refused),
      cmocka_unit_test(a_bomb_that_hides_its_size_is_refused_too),
      cmocka_unit_test(garbage_and_truncated_bodies_are_not_zstd),
      cmocka_unit_test(zstd_of_something_else_is_not_a_batch),
      cmocka_unit_test(an_incomplete_envelope_is_refused),
      cmocka_unit_test(sale_check_finds_what_does_not_add_up),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
