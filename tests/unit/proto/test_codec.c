/*
 * test_codec.c - batch bodies: round trip, determinism, and every way a
 * body can be refused (too big, bomb, not zstd, truncated, not a batch,
 * incomplete envelope, unknown zstd dictionary); the collector-side sale
 * check.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <zdict.h>
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

/* ---- zstd dictionaries (issue 12, item 6) ------------------------------- */

/* The embedded bytes of proto/dict/sales-1.zdict (proto/dict/embed.cmake). */
extern const unsigned char proto_dict_sales_1[];
extern const size_t proto_dict_sales_1_len;
extern const unsigned char proto_dict_sales_2[];
extern const size_t proto_dict_sales_2_len;

static void the_embedded_dictionary_is_the_one_its_id_names(void **state)
{
  const uint32_t *known;
  size_t count = 0;
  Pos__V1__Limits advertised = POS__V1__LIMITS__INIT;
  const uint32_t none[1] = {7}, both[3] = {7, PROTO_ZSTD_DICT_SALES_1, 0};
  (void)state;
  assert_int_equal(ZDICT_getDictID(proto_dict_sales_1, proto_dict_sales_1_len),
                   PROTO_ZSTD_DICT_SALES_1);
  assert_int_equal(ZDICT_getDictID(proto_dict_sales_2, proto_dict_sales_2_len),
                   PROTO_ZSTD_DICT_SALES_2);
  known = proto_zstd_dictionaries_known(&count);
  assert_int_equal(count, 2);
  assert_int_equal(known[0], PROTO_ZSTD_DICT_SALES_1);
  assert_int_equal(known[1], PROTO_ZSTD_DICT_SALES_2);
  proto_limits_advertise_dictionaries(&advertised);
  assert_int_equal(advertised.n_zstd_dictionaries, 2);
  assert_int_equal(advertised.zstd_dictionaries[0], PROTO_ZSTD_DICT_SALES_1);
  assert_int_equal(advertised.zstd_dictionaries[1], PROTO_ZSTD_DICT_SALES_2);
  assert_int_equal(proto_zstd_dictionary_choose(advertised.zstd_dictionaries, 2),
                   PROTO_ZSTD_DICT_SALES_2);
  assert_false(proto_zstd_dictionary_compacts(PROTO_ZSTD_DICT_NONE));
  assert_false(proto_zstd_dictionary_compacts(PROTO_ZSTD_DICT_SALES_1));
  assert_true(proto_zstd_dictionary_compacts(PROTO_ZSTD_DICT_SALES_2));
  assert_false(proto_zstd_dictionary_compacts(PROTO_ZSTD_DICT_SALES_2 + 1)); /* unknown */
  /* An older collector lists none; one from the future lists ours among others. */
  assert_int_equal(proto_zstd_dictionary_choose(NULL, 0), PROTO_ZSTD_DICT_NONE);
  assert_int_equal(proto_zstd_dictionary_choose(none, 1), PROTO_ZSTD_DICT_NONE);
  assert_int_equal(proto_zstd_dictionary_choose(both, 3), PROTO_ZSTD_DICT_SALES_1);
}

static void a_body_compressed_with_the_sales_dictionary_round_trips(void **state)
{
  struct test_batch t;
  uint8_t *body = NULL, *again = NULL, *plain = NULL, *decoded_bytes = NULL;
  size_t len = 0, again_len = 0, plain_len = 0, decoded_len = 0;
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  (void)state;
  make_batch(&t);
  t.envelope.zstd_dictionary = PROTO_ZSTD_DICT_SALES_1;
  assert_int_equal(proto_batch_pack_dict(&t.batch, 3, PROTO_ZSTD_DICT_SALES_1, &body, &len),
                   PROTO_OK);
  assert_int_equal(proto_batch_pack_dict(&t.batch, 3, PROTO_ZSTD_DICT_SALES_1, &again,
                                         &again_len),
                   PROTO_OK);
  assert_int_equal(len, again_len);
  assert_memory_equal(body, again, len); /* resent byte for byte */
  assert_int_equal(ZSTD_getDictID_fromFrame(body, len), PROTO_ZSTD_DICT_SALES_1);
  t.envelope.zstd_dictionary = PROTO_ZSTD_DICT_NONE;
  assert_int_equal(proto_batch_pack(&t.batch, 3, &plain, &plain_len), PROTO_OK);
  t.envelope.zstd_dictionary = PROTO_ZSTD_DICT_SALES_1;
  assert_true(len < plain_len);
  assert_int_equal(proto_zstd_dictionary_of(body, len), PROTO_ZSTD_DICT_SALES_1);
  assert_int_equal(proto_zstd_dictionary_of(plain, plain_len), PROTO_ZSTD_DICT_NONE);
  assert_int_equal(proto_zstd_dictionary_of((const uint8_t *)"junk", 4), PROTO_ZSTD_DICT_NONE);
  {
    /* Behind a skippable frame (magic 0x184D2A50, 4 bytes of payload). */
    uint8_t *behind = malloc(len + 12);
    static const uint8_t skippable[12] = {0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
    assert_non_null(behind);
    memcpy(behind, skippable, sizeof(skippable));
    memcpy(behind + sizeof(skippable), body, len);
    assert_int_equal(proto_zstd_dictionary_of(behind, len + 12), PROTO_ZSTD_DICT_SALES_1);
    assert_int_equal(proto_batch_unpack(behind, len + 12, &limits, &decoded, err, sizeof(err)),
                     PROTO_OK);
    pos__v1__batch__free_unpacked(decoded, NULL);
    free(behind);
  }
  assert_int_equal(proto_batch_unpack(body, len, &limits, &decoded, err, sizeof(err)),
                   PROTO_OK);
  assert_int_equal(decoded->envelope->zstd_dictionary, PROTO_ZSTD_DICT_SALES_1);
  assert_int_equal(decoded->n_sales, 3);
  assert_string_equal(decoded->sales[2]->sale_id, "T1-103");
  assert_int_equal(decoded->sales[0]->total, 2630);
  pos__v1__batch__free_unpacked(decoded, NULL);
  /* The collector's path, with its kept context, twice: a kept context
   * must not keep the dictionary for a body without one, nor lose it. */
  proto_codec_keep_between_bodies(1);
  for (int round = 0; round < 2; round++) {
    assert_int_equal(proto_batch_unpack_pooled(body, len, &limits, &decoded, err, sizeof(err)),
                     PROTO_OK);
    assert_string_equal(decoded->sales[1]->sale_id, "T1-102");
    proto_batch_free(decoded);
    assert_int_equal(
        proto_batch_unpack_pooled(plain, plain_len, &limits, &decoded, err, sizeof(err)),
        PROTO_OK);
    assert_string_equal(decoded->sales[1]->sale_id, "T1-102");
    proto_batch_free(decoded);
  }
  proto_codec_keep_between_bodies(0);
  assert_int_equal(proto_zstd_decompress(body, len, 1024 * 1024, &decoded_bytes, &decoded_len),
                   PROTO_OK);
  assert_int_equal(decoded_len, pos__v1__batch__get_packed_size(&t.batch));
  free(decoded_bytes);
  free(body);
  free(again);
  free(plain);
}

/* Old agents compress without a dictionary: a new collector still takes their bodies. */
static void a_body_without_a_dictionary_still_decodes(void **state)
{
  struct test_batch t;
  uint8_t *body = NULL;
  size_t len = 0;
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  (void)state;
  make_batch(&t);
  assert_int_equal(proto_batch_pack_dict(&t.batch, 3, PROTO_ZSTD_DICT_NONE, &body, &len),
                   PROTO_OK);
  assert_int_equal(ZSTD_getDictID_fromFrame(body, len), 0);
  assert_int_equal(proto_batch_unpack(body, len, &limits, &decoded, err, sizeof(err)),
                   PROTO_OK);
  assert_int_equal(decoded->envelope->zstd_dictionary, 0);
  assert_string_equal(decoded->sales[0]->sale_id, "T1-101");
  pos__v1__batch__free_unpacked(decoded, NULL);
  free(body);
}

/*
 * A body compressed with a dictionary this build does not have (a newer
 * agent's sales-2, say): refused with the id and what to do, never taken
 * for garbage. The dictionary is ours with another id in its header.
 */
static void a_body_with_an_unknown_dictionary_is_refused_naming_it(void **state)
{
  struct test_batch t;
  uint8_t *dict = malloc(proto_dict_sales_1_len);
  uint8_t packed[1024], body[2048];
  size_t packed_len, body_len;
  uint32_t unknown = PROTO_ZSTD_DICT_SALES_2 + 1;
  Pos__V1__Batch *decoded = NULL;
  ZSTD_CCtx *cctx = ZSTD_createCCtx();
  char err[256];
  (void)state;
  assert_non_null(dict);
  memcpy(dict, proto_dict_sales_1, proto_dict_sales_1_len);
  for (int k = 0; k < 4; k++) /* RFC 8878 5: Dictionary_ID, little-endian, after the magic */
    dict[4 + k] = (uint8_t)(unknown >> (8 * k));
  make_batch(&t);
  packed_len = pos__v1__batch__get_packed_size(&t.batch);
  assert_true(packed_len <= sizeof(packed));
  pos__v1__batch__pack(&t.batch, packed);
  body_len = ZSTD_compress_usingDict(cctx, body, sizeof(body), packed, packed_len, dict,
                                     proto_dict_sales_1_len, 3);
  assert_false(ZSTD_isError(body_len));
  assert_int_equal(ZSTD_getDictID_fromFrame(body, body_len), unknown);
  assert_int_equal(proto_batch_unpack(body, body_len, &limits, &decoded, err, sizeof(err)),
                   PROTO_EDICT);
  assert_string_equal(err, "batch compressed with zstd dictionary 1347375875, which this "
                           "collector does not know: upgrade the collector");
  assert_null(decoded);
  assert_int_equal(proto_batch_unpack_pooled(body, body_len, &limits, &decoded, err,
                                             sizeof(err)),
                   PROTO_EDICT);
  /* Nor can a sender compress with it. */
  assert_int_equal(proto_batch_pack_dict(&t.batch, 3, unknown, (uint8_t **)&dict, &body_len),
                   PROTO_EDICT);
  ZSTD_freeCCtx(cctx);
  free(dict);
}

/* ---- compact sales (issue 12, item 6) ----------------------------------- */

/* make_batch with what the compact encoding turns into differences: times,
 * seqs with a gap, a received_ms before the business time, a sale of
 * another store, one carried over and one flagged untrusted. */
static void make_varied_batch(struct test_batch *t, Pos__V1__SaleOrigin *origin,
                              Pos__V1__SaleOrigin **origin_ptr)
{
  make_batch(t);
  t->envelope.created_ms = 1790000900123;
  t->envelope.first_seq = 100; /* row 100 is an adjustment */
  t->envelope.last_seq = 105;
  t->sales[0].seq = 101;
  t->sales[1].seq = 102;
  t->sales[2].seq = 105;
  t->sales[0].business_time_ms = 1790000001234;
  t->sales[1].business_time_ms = 1790000000999; /* earlier than the one before */
  t->sales[2].business_time_ms = 1790000400000;
  t->sales[0].received_ms = 1790000001384;
  t->sales[1].received_ms = 1790000000500; /* POS clock ahead of the device's */
  t->sales[2].received_ms = 1790000400150;
  t->sales[0].store_id = "S0042";
  t->sales[1].store_id = "S0042";
  t->sales[2].store_id = "S0099"; /* dead-lettered by the collector, as it came */
  t->sales[1].received_ms_untrusted = 1;
  pos__v1__sale_origin__init(origin);
  origin->journal_id.data = t->journal_id;
  origin->journal_id.len = 16;
  origin->seq = 7;
  *origin_ptr = origin;
  t->sales[2].carried_from = origin_ptr;
  t->sales[2].n_carried_from = 1;
}

/*
 * A batch sealed with sales-2 holds compact sales (no absolute times, seqs
 * or store ids), and the collector gets back, field for field and byte for
 * byte, the sales a canonical batch holds: what it produces to pos.sales.v1
 * is what it produced before the encoding existed.
 */
static void compact_sales_come_back_as_the_canonical_sales_byte_for_byte(void **state)
{
  struct test_batch t;
  Pos__V1__SaleOrigin origin, *origin_ptr;
  uint8_t *body = NULL, *raw = NULL, *canonical = NULL;
  size_t len = 0, raw_len = 0;
  Pos__V1__Batch *decoded = NULL, *as_sent;
  char err[256];
  (void)state;
  make_varied_batch(&t, &origin, &origin_ptr);
  t.envelope.zstd_dictionary = PROTO_ZSTD_DICT_SALES_2;
  assert_int_equal(proto_batch_pack_dict(&t.batch, 19, PROTO_ZSTD_DICT_SALES_2, &body, &len),
                   PROTO_OK);
  /* What went on the wire: compact, the caller's batch untouched. */
  assert_int_equal(t.sales[2].business_time_ms, 1790000400000);
  assert_int_equal(proto_zstd_decompress(body, len, 1 << 20, &raw, &raw_len), PROTO_OK);
  as_sent = pos__v1__batch__unpack(NULL, raw_len, raw);
  assert_non_null(as_sent);
  assert_true(as_sent->envelope->compact_sales);
  assert_int_equal(as_sent->sales[0]->business_time_ms, 0);
  assert_int_equal(as_sent->sales[0]->seq, 0);
  assert_int_equal(as_sent->sales[0]->received_ms, 0);
  assert_string_equal(as_sent->sales[0]->store_id, "");
  assert_string_equal(as_sent->sales[2]->store_id, "S0099");
  assert_int_equal(as_sent->sales[0]->seq_skip, 1) /* after row 100 */;
  assert_int_equal(as_sent->sales[2]->seq_skip, 2);
  assert_int_equal(as_sent->sales[0]->received_after_business_ms, 150);
  assert_int_equal(as_sent->sales[1]->received_after_business_ms, -499);
  assert_int_equal(as_sent->sales[1]->business_time_step_ms, -235);
  pos__v1__batch__free_unpacked(as_sent, NULL);
  free(raw);
  for (int pooled = 0; pooled < 2; pooled++) {
    assert_int_equal(pooled ? proto_batch_unpack_pooled(body, len, &limits, &decoded, err,
                                                        sizeof(err))
                            : proto_batch_unpack(body, len, &limits, &decoded, err,
                                                 sizeof(err)),
                     PROTO_OK);
    assert_int_equal(decoded->n_sales, 3);
    assert_false(decoded->envelope->compact_sales); /* packed again: canonical */
    for (size_t i = 0; i < 3; i++) {
      const Pos__V1__Sale *sale = decoded->sales[i];
      size_t want = pos__v1__sale__get_packed_size(&t.sales[i]);
      size_t got_len = pos__v1__sale__get_packed_size(sale);
      const uint8_t *wire;
      size_t wire_len;
      assert_int_equal(sale->business_time_ms, t.sales[i].business_time_ms);
      assert_int_equal(sale->received_ms, t.sales[i].received_ms);
      assert_int_equal(sale->seq, t.sales[i].seq);
      assert_string_equal(sale->store_id, t.sales[i].store_id);
      assert_int_equal(sale->received_ms_untrusted, t.sales[i].received_ms_untrusted);
      assert_int_equal(sale->business_time_step_ms, 0);
      assert_int_equal(sale->received_after_business_ms, 0);
      assert_int_equal(sale->seq_skip, 0);
      /* Packed again, the restored sale is the original's bytes... */
      canonical = malloc(want + got_len);
      assert_non_null(canonical);
      assert_int_equal(got_len, want);
      pos__v1__sale__pack(&t.sales[i], canonical);
      pos__v1__sale__pack(sale, canonical + want);
      assert_memory_equal(canonical, canonical + want, want);
      /* ...and so are the bytes the collector produces as they are. */
      if (pooled) {
        assert_true(proto_batch_sale_wire(decoded, i, &wire, &wire_len));
        assert_int_equal(wire_len, want);
        assert_memory_equal(wire, canonical, want);
      }
      free(canonical);
    }
    proto_batch_free(decoded);
  }
  free(body);
}

/* Only a dictionary that compacts makes compact sales: sales-1 and none stay canonical. */
static void sales_stay_canonical_without_a_compacting_dictionary(void **state)
{
  struct test_batch t;
  Pos__V1__SaleOrigin origin, *origin_ptr;
  uint32_t dicts[2] = {PROTO_ZSTD_DICT_NONE, PROTO_ZSTD_DICT_SALES_1};
  (void)state;
  make_varied_batch(&t, &origin, &origin_ptr);
  for (int d = 0; d < 2; d++) {
    uint8_t *body = NULL, *raw = NULL;
    size_t len = 0, raw_len = 0;
    Pos__V1__Batch *as_sent;
    assert_int_equal(proto_batch_pack_dict(&t.batch, 3, dicts[d], &body, &len), PROTO_OK);
    assert_int_equal(proto_zstd_decompress(body, len, 1 << 20, &raw, &raw_len), PROTO_OK);
    assert_int_equal(raw_len, pos__v1__batch__get_packed_size(&t.batch));
    as_sent = pos__v1__batch__unpack(NULL, raw_len, raw);
    assert_non_null(as_sent);
    assert_false(as_sent->envelope->compact_sales);
    assert_int_equal(as_sent->sales[1]->business_time_ms, 1790000000999);
    pos__v1__batch__free_unpacked(as_sent, NULL);
    free(raw);
    free(body);
  }
}

/* The raw protobuf `batch` compressed (no dictionary), as a hand-made sender would. */
static void pack_raw(const Pos__V1__Batch *batch, uint8_t **body, size_t *len)
{
  size_t packed_len = pos__v1__batch__get_packed_size(batch);
  uint8_t *packed = malloc(packed_len);
  assert_non_null(packed);
  pos__v1__batch__pack(batch, packed);
  *body = malloc(ZSTD_compressBound(packed_len));
  assert_non_null(*body);
  *len = ZSTD_compress(*body, ZSTD_compressBound(packed_len), packed, packed_len, 3);
  assert_false(ZSTD_isError(*len));
  free(packed);
}

/* A sale in both encodings at once says two things: refused, never guessed at. */
static void a_sale_that_mixes_the_encodings_is_refused(void **state)
{
  struct test_batch t;
  uint8_t *body = NULL;
  size_t len = 0;
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  (void)state;
  make_batch(&t);
  t.sales[1].seq_skip = 3; /* compact field, canonical envelope */
  pack_raw(&t.batch, &body, &len);
  assert_int_equal(proto_batch_unpack(body, len, &limits, &decoded, err, sizeof(err)),
                   PROTO_EDECODE);
  assert_string_equal(err, "sales[1] carries a field of the compact encoding "
                           "(business_time_step_ms, received_after_business_ms, seq_skip) but "
                           "the envelope does not say compact_sales");
  free(body);
  t.sales[1].seq_skip = 0;
  t.envelope.compact_sales = 1; /* compact envelope, absolute seqs */
  pack_raw(&t.batch, &body, &len);
  assert_int_equal(proto_batch_unpack_pooled(body, len, &limits, &decoded, err, sizeof(err)),
                   PROTO_EDECODE);
  assert_string_equal(err, "sales[0] is compact (envelope.compact_sales) but carries "
                           "business_time_ms, seq or received_ms, which the compact encoding "
                           "leaves out");
  assert_null(decoded);
  free(body);
}

/*
 * The frames of one body must name one dictionary: a frame made without
 * one, decoded with one, would start from the dictionary's repeat offsets.
 * And the envelope, where it names one, must name the frames'.
 */
static void frames_naming_different_dictionaries_are_refused(void **state)
{
  struct test_batch t;
  uint8_t *with = NULL, *without = NULL, *mixed;
  size_t with_len = 0, without_len = 0;
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  (void)state;
  make_batch(&t);
  assert_int_equal(proto_batch_pack_dict(&t.batch, 3, PROTO_ZSTD_DICT_SALES_1, &with,
                                         &with_len),
                   PROTO_OK);
  assert_int_equal(proto_batch_pack(&t.batch, 3, &without, &without_len), PROTO_OK);
  mixed = malloc(with_len + without_len);
  assert_non_null(mixed);
  memcpy(mixed, with, with_len);
  memcpy(mixed + with_len, without, without_len);
  assert_int_equal(proto_batch_unpack(mixed, with_len + without_len, &limits, &decoded, err,
                                      sizeof(err)),
                   PROTO_EZSTD);
  memcpy(mixed, without, without_len);
  memcpy(mixed + without_len, with, with_len);
  assert_int_equal(proto_batch_unpack(mixed, with_len + without_len, &limits, &decoded, err,
                                      sizeof(err)),
                   PROTO_EZSTD);
  free(with);
  t.envelope.zstd_dictionary = PROTO_ZSTD_DICT_SALES_1 + 1;
  assert_int_equal(proto_batch_pack_dict(&t.batch, 3, PROTO_ZSTD_DICT_SALES_1, &with,
                                         &with_len),
                   PROTO_OK);
  assert_int_equal(proto_batch_unpack(with, with_len, &limits, &decoded, err, sizeof(err)),
                   PROTO_EENVELOPE);
  assert_string_equal(err, "envelope.zstd_dictionary is 1347375874 but the body's zstd frames "
                           "name dictionary 1347375873 (0: none)");
  free(mixed);
  free(with);
  free(without);
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

/* Compresses data[0..len) as one frame appended to `out`; `sized` writes the content size. */
static void append_frame(uint8_t *out, size_t *out_len, size_t out_cap, const uint8_t *data,
                         size_t len, int sized)
{
  ZSTD_CCtx *cctx = ZSTD_createCCtx();
  ZSTD_inBuffer in = {data, len, 0};
  ZSTD_outBuffer frame = {out + *out_len, out_cap - *out_len, 0};

  assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, sized)));
  assert_int_equal(ZSTD_compressStream2(cctx, &frame, &in, ZSTD_e_end), 0);
  *out_len += frame.pos;
  ZSTD_freeCCtx(cctx);
}

/*
 * Issue 7 item 13: RFC 8878 lets a body be any number of frames, skippable
 * ones included; a streaming compressor or a proxy may well send two. Each
 * frame is decoded, the limits apply to the sum, and bytes after the last
 * frame that are not a frame are still refused.
 */
static void concatenated_zstd_frames_are_one_body(void **state)
{
  struct test_batch t;
  /* Magic 0x184D2A50, 4 bytes of payload. */
  static const uint8_t skippable[12] = {0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
  uint8_t packed[1024], body[4096];
  size_t packed_len, body_len = 0, half;
  Pos__V1__Batch *decoded = NULL;
  char err[256];
  (void)state;
  make_batch(&t);
  packed_len = pos__v1__batch__get_packed_size(&t.batch);
  assert_true(packed_len <= sizeof(packed));
  pos__v1__batch__pack(&t.batch, packed);
  half = packed_len / 2;
  append_frame(body, &body_len, sizeof(body), packed, half, 1);
  memcpy(body + body_len, skippable, sizeof(skippable));
  body_len += sizeof(skippable);
  append_frame(body, &body_len, sizeof(body), packed + half, packed_len - half, 0);
  assert_int_equal(proto_batch_unpack(body, body_len, &limits, &decoded, err, sizeof(err)),
                   PROTO_OK);
  assert_int_equal(decoded->n_sales, 3);
  assert_string_equal(decoded->sales[2]->sale_id, "T1-103");
  pos__v1__batch__free_unpacked(decoded, NULL);

  /* Trailing bytes that are not a frame. */
  memcpy(body + body_len, "junk", 4);
  assert_int_equal(proto_batch_unpack(body, body_len + 4, &limits, &decoded, err, sizeof(err)),
                   PROTO_EZSTD);
  /* A second frame cut short. */
  assert_int_equal(proto_batch_unpack(body, body_len - 2, &limits, &decoded, err, sizeof(err)),
                   PROTO_EZSTD);
}

/* Frames each under max_decoded but over it together: refused, declared sizes or not. */
static void frames_share_one_decoded_limit(void **state)
{
  size_t chunk = 700 * 1024, body_len = 0;
  uint8_t *zeros = calloc(1, chunk);
  uint8_t body[64 * 1024];
  uint8_t *decoded = NULL;
  size_t decoded_len = 0;
  (void)state;
  append_frame(body, &body_len, sizeof(body), zeros, chunk, 1);
  append_frame(body, &body_len, sizeof(body), zeros, chunk, 1);
  assert_int_equal(proto_zstd_decompress(body, body_len, 2 * chunk, &decoded, &decoded_len),
                   PROTO_OK);
  assert_int_equal(decoded_len, 2 * chunk);
  free(decoded);
  decoded = NULL;
  assert_int_equal(proto_zstd_decompress(body, body_len, 1024 * 1024, &decoded, &decoded_len),
                   PROTO_EBOMB);
  assert_null(decoded);
  body_len = 0;
  append_frame(body, &body_len, sizeof(body), zeros, chunk, 0);
  append_frame(body, &body_len, sizeof(body), zeros, chunk, 0);
  assert_int_equal(proto_zstd_decompress(body, body_len, 1024 * 1024, &decoded, &decoded_len),
                   PROTO_EBOMB);
  assert_null(decoded);
  free(zeros);
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

/* ---- object-count limits (issue 7 item 5) ---------------------------------- */

/* A growable buffer of wire bytes. */
struct wire {
  uint8_t *data;
  size_t len;
  size_t cap;
};

static void wire_put(struct wire *w, const void *bytes, size_t len)
{
  if (len == 0)
    return; /* `bytes` may be NULL then, which memcpy does not allow */
  if (w->len + len > w->cap) {
    w->cap = (w->len + len) * 2;
    w->data = realloc(w->data, w->cap);
    assert_non_null(w->data);
  }
  memcpy(w->data + w->len, bytes, len);
  w->len += len;
}

static void wire_varint(struct wire *w, uint64_t value)
{
  uint8_t byte;
  do {
    byte = (uint8_t)(value & 0x7f);
    value >>= 7;
    if (value)
      byte |= 0x80;
    wire_put(w, &byte, 1);
  } while (value);
}

/* `count` copies of a 2-byte field (key, then a zero varint or empty length). */
static void wire_repeat(struct wire *w, uint8_t key, size_t count)
{
  uint8_t pair[2] = {key, 0};
  for (size_t i = 0; i < count; i++)
    wire_put(w, pair, 2);
}

/* The envelope of make_batch() as Batch field 1, so only the census can refuse. */
static void wire_envelope(struct wire *w)
{
  struct test_batch t;
  size_t len;
  uint8_t *packed;

  make_batch(&t);
  len = pos__v1__batch_envelope__get_packed_size(&t.envelope);
  packed = malloc(len);
  pos__v1__batch_envelope__pack(&t.envelope, packed);
  wire_varint(w, (1 << 3) | 2);
  wire_varint(w, len);
  wire_put(w, packed, len);
  free(packed);
}

/* Compresses `w` (freed) into a body. */
static uint8_t *wire_compress(struct wire *w, size_t *body_len)
{
  size_t bound = ZSTD_compressBound(w->len);
  uint8_t *body = malloc(bound);
  *body_len = ZSTD_compress(body, bound, w->data, w->len, 1);
  assert_false(ZSTD_isError(*body_len));
  free(w->data);
  memset(w, 0, sizeof(*w));
  return body;
}

/*
 * Unpacks `body` in a child process and returns the child's peak resident
 * memory in KiB; *child_rc gets what proto_batch_unpack returned (negated
 * into an exit status). The parent's big buffers are freed (unmapped)
 * before, so the child's peak is the unpack's, plus a small baseline.
 */
static long unpack_peak_kib(const uint8_t *body, size_t body_len, int *child_rc)
{
  struct rusage usage;
  int status = 0;
  pid_t pid = fork();

  assert_true(pid >= 0);
  if (pid == 0) {
    Pos__V1__Batch *decoded = NULL;
    char err[256];
    int rc = proto_batch_unpack(body, body_len, &limits, &decoded, err, sizeof(err));
    _exit(-rc);
  }
  assert_int_equal(wait4(pid, &status, 0, &usage), pid);
  assert_true(WIFEXITED(status));
  *child_rc = -WEXITSTATUS(status);
  return usage.ru_maxrss;
}

/* Unpacks `body` (freed); expects PROTO_ETOOMANY with `expected` in the message. */
static void expect_too_many(uint8_t *body, size_t body_len, const char *expected)
{
  Pos__V1__Batch *decoded = NULL;
  char err[256] = "";
  int rc = proto_batch_unpack(body, body_len, &limits, &decoded, err, sizeof(err));
  if (rc == PROTO_OK)
    pos__v1__batch__free_unpacked(decoded, NULL);
  assert_int_equal(rc, PROTO_ETOOMANY);
  assert_null(decoded);
  if (strstr(err, expected) == NULL)
    fail_msg("error \"%s\" does not say \"%s\"", err, expected);
  free(body);
}

/* The peak below: the decompressed 16 MiB and the process's baseline. Under
 * AddressSanitizer every allocation carries redzones and freed memory waits
 * in its quarantine (173 MiB seen on a CI machine), so the bound doubles:
 * still half of the 650 MB of structs it tells apart. */
#if defined(__SANITIZE_ADDRESS__)
#define UNPACK_PEAK_KIB_MAX (320 * 1024)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNPACK_PEAK_KIB_MAX (320 * 1024)
#endif
#endif
#ifndef UNPACK_PEAK_KIB_MAX
#define UNPACK_PEAK_KIB_MAX (160 * 1024)
#endif

/*
 * 16 MiB of empty sale lines (2 bytes each: 8M of them) in one sale: refused
 * on the count, before protobuf-c allocates them (about 80 bytes of memory
 * each, 650 MB here). The process's peak memory grows by little more than
 * the decompressed bytes.
 */
static void a_sale_of_millions_of_empty_lines_is_refused_before_unpacking(void **state)
{
  struct wire w = {0}, sale = {0};
  size_t lines = 8u * 1024 * 1024, body_len;
  uint8_t *body;
  long peak_kib;
  int child_rc;
  (void)state;
  wire_envelope(&w);
  wire_repeat(&sale, (12 << 3) | 2, lines);
  wire_varint(&w, (2 << 3) | 2);
  wire_varint(&w, sale.len);
  wire_put(&w, sale.data, sale.len);
  free(sale.data);
  body = wire_compress(&w, &body_len);
  peak_kib = unpack_peak_kib(body, body_len, &child_rc);
  print_message("unpacking %zu bytes of empty lines (%zu compressed): peak RSS %ld KiB\n",
                2 * lines, body_len, peak_kib);
  assert_int_equal(child_rc, PROTO_ETOOMANY);
  /* The decompressed 16 MiB and the process's baseline; not the 650 MB of structs. */
  assert_true(peak_kib < UNPACK_PEAK_KIB_MAX);
  expect_too_many(body, body_len, "sales[0] holds more than 500 lines");
}

/* Within every per-sale limit, many sales of many lines hit the object count. */
static void many_sales_of_many_lines_hit_the_object_count(void **state)
{
  struct wire w = {0}, sale = {0};
  size_t body_len;
  uint8_t *body;
  (void)state;
  wire_envelope(&w);
  wire_repeat(&sale, (12 << 3) | 2, PROTO_MAX_LINES_PER_SALE);
  for (int i = 0; i < 1000; i++) {
    wire_varint(&w, (2 << 3) | 2);
    wire_varint(&w, sale.len);
    wire_put(&w, sale.data, sale.len);
  }
  free(sale.data);
  body = wire_compress(&w, &body_len);
  expect_too_many(body, body_len, "batch holds more than 320000 objects");
}

/* Each count has its own limit and its own message. */
static void every_count_has_its_own_limit(void **state)
{
  struct wire w = {0}, sale = {0};
  size_t body_len;
  uint8_t *body;
  (void)state;
  /* Sales per batch: 20001 empty sales. */
  wire_envelope(&w);
  wire_repeat(&w, (2 << 3) | 2, PROTO_DEFAULT_MAX_SALES + 1);
  body = wire_compress(&w, &body_len);
  expect_too_many(body, body_len, "batch holds more than 20000 sales, the limit; split");

  /* Payments per sale, in the third sale. */
  wire_envelope(&w);
  wire_repeat(&w, (2 << 3) | 2, 2);
  wire_repeat(&sale, (13 << 3) | 2, PROTO_MAX_PAYMENTS_PER_SALE + 1);
  wire_varint(&w, (2 << 3) | 2);
  wire_varint(&w, sale.len);
  wire_put(&w, sale.data, sale.len);
  free(sale.data);
  body = wire_compress(&w, &body_len);
  expect_too_many(body, body_len, "sales[2] holds more than 50 payments");

  /* Inventory deltas per batch. */
  wire_envelope(&w);
  wire_repeat(&w, (3 << 3) | 2, PROTO_MAX_DELTAS_PER_BATCH + 1);
  body = wire_compress(&w, &body_len);
  expect_too_many(body, body_len, "batch holds more than 100000 inventory_deltas");

  /* Fields this reader does not know (number 15, varint 0) cost memory too. */
  wire_envelope(&w);
  wire_repeat(&w, 15 << 3, 4u * 1024 * 1024);
  body = wire_compress(&w, &body_len);
  expect_too_many(body, body_len, "objects (messages, list entries and unknown fields)");
}

/* A sale just at the limits is fine: the limits do not refuse what the agent makes. */
static void a_sale_at_the_limits_still_decodes(void **state)
{
  struct wire w = {0}, sale = {0};
  Pos__V1__Batch *decoded = NULL;
  size_t body_len;
  uint8_t *body;
  char err[256];
  (void)state;
  wire_envelope(&w);
  wire_repeat(&sale, (12 << 3) | 2, PROTO_MAX_LINES_PER_SALE);
  wire_repeat(&sale, (13 << 3) | 2, PROTO_MAX_PAYMENTS_PER_SALE);
  wire_varint(&w, (2 << 3) | 2);
  wire_varint(&w, sale.len);
  wire_put(&w, sale.data, sale.len);
  free(sale.data);
  body = wire_compress(&w, &body_len);
  assert_int_equal(proto_batch_unpack(body, body_len, &limits, &decoded, err, sizeof(err)),
                   PROTO_OK);
  assert_int_equal(decoded->n_sales, 1);
  assert_int_equal(decoded->sales[0]->n_lines, PROTO_MAX_LINES_PER_SALE);
  assert_int_equal(decoded->sales[0]->n_payments, PROTO_MAX_PAYMENTS_PER_SALE);
  pos__v1__batch__free_unpacked(decoded, NULL);
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

/* ---- fields no consumer could decode (fuzz finding batch-field-number-zero) --- */

/*
 * Appends sale `sale` of make_batch() as Batch field 2 with `extra` wire bytes
 * after its own fields (in the sale, or in its line when `in_line`).
 */
static void wire_sale_with(struct wire *w, Pos__V1__Sale *sale, const uint8_t *extra,
                           size_t extra_len, int in_line)
{
  struct wire line = {0}, bytes = {0};
  Pos__V1__SaleLine **lines = sale->lines;
  size_t len;

  if (in_line) {
    len = pos__v1__sale_line__get_packed_size(lines[0]);
    line.data = malloc(len);
    line.len = line.cap = pos__v1__sale_line__pack(lines[0], line.data);
    wire_put(&line, extra, extra_len);
    sale->n_lines = 0; /* packed by hand below */
  }
  len = pos__v1__sale__get_packed_size(sale);
  bytes.data = malloc(len);
  bytes.len = bytes.cap = pos__v1__sale__pack(sale, bytes.data);
  if (in_line) {
    sale->n_lines = 1;
    sale->lines = lines;
    wire_varint(&bytes, (12 << 3) | 2);
    wire_varint(&bytes, line.len);
    wire_put(&bytes, line.data, line.len);
    free(line.data);
  } else {
    wire_put(&bytes, extra, extra_len);
  }
  wire_varint(w, (2 << 3) | 2);
  wire_varint(w, bytes.len);
  wire_put(w, bytes.data, bytes.len);
  free(bytes.data);
}

/* Unpacks `body` (freed); expects PROTO_EDECODE with every one of `expected` in the message. */
static void expect_undecodable(uint8_t *body, size_t body_len, const char *expected1,
                               const char *expected2)
{
  Pos__V1__Batch *decoded = NULL;
  char err[256] = "";
  int rc = proto_batch_unpack(body, body_len, &limits, &decoded, err, sizeof(err));
  if (rc == PROTO_OK)
    pos__v1__batch__free_unpacked(decoded, NULL);
  assert_int_equal(rc, PROTO_EDECODE);
  assert_null(decoded);
  if (strstr(err, expected1) == NULL || strstr(err, expected2) == NULL)
    fail_msg("error \"%s\" does not say \"%s\" and \"%s\"", err, expected1, expected2);
  free(body);
}

/*
 * protobuf-c 1.4.1 unpacks a field numbered 0 whose tag takes two bytes
 * (82 00) as an unknown field and packs it again as the tag 02, which
 * protobuf-c and protoc refuse: the collector would have produced to
 * pos.sales.v1 a sale no consumer can decode. Field numbers above 2^29 - 1
 * go out as they came, and protoc refuses those. The batch is refused, the
 * message names the sale.
 */
static void a_sale_with_a_field_no_consumer_can_decode_is_refused(void **state)
{
  /* Field 0, length-delimited, tag in two bytes: "1001" (the fuzzer's input). */
  static const uint8_t field_zero[] = {0x82, 0x00, 0x04, '1', '0', '0', '1'};
  /* Field 2^29, varint 5. */
  static const uint8_t field_2_29[] = {0x80, 0x80, 0x80, 0x80, 0x10, 0x05};
  struct test_batch t;
  struct wire w = {0};
  size_t body_len;
  uint8_t *body;
  (void)state;
  make_batch(&t);
  wire_envelope(&w);
  wire_sale_with(&w, &t.sales[0], NULL, 0, 0);
  wire_sale_with(&w, &t.sales[1], field_zero, sizeof(field_zero), 0);
  body = wire_compress(&w, &body_len);
  expect_undecodable(body, body_len, "sales[1] (sale_id T1-102) carries field number 0",
                     "fix the sender");

  /* The same in a sale line, where the sale is named too. */
  wire_envelope(&w);
  wire_sale_with(&w, &t.sales[2], field_zero, sizeof(field_zero), 1);
  body = wire_compress(&w, &body_len);
  expect_undecodable(body, body_len, "sales[0] (sale_id T1-103).lines[0]", "field number 0");

  wire_envelope(&w);
  wire_sale_with(&w, &t.sales[0], field_2_29, sizeof(field_2_29), 0);
  body = wire_compress(&w, &body_len);
  expect_undecodable(body, body_len, "sales[0] (sale_id T1-101)", "field number 536870912");
}

/*
 * A valid field this reader does not know (from a newer agent) is kept and
 * produced with the sale, and what the collector produces unpacks again.
 */
static void a_sale_with_a_valid_unknown_field_is_kept_and_repacks(void **state)
{
  static const uint8_t field_99[] = {0x98, 0x06, 0x2a};                  /* 99: varint 42 */
  static const uint8_t field_max[] = {0xf8, 0xff, 0xff, 0xff, 0x0f, 0x07}; /* 2^29 - 1: 7 */
  struct test_batch t;
  struct wire w = {0};
  Pos__V1__Batch *decoded = NULL;
  Pos__V1__Sale *again;
  size_t body_len, len;
  uint8_t *body, *packed;
  char err[256] = "";
  (void)state;
  make_batch(&t);
  wire_envelope(&w);
  wire_sale_with(&w, &t.sales[0], field_99, sizeof(field_99), 0);
  wire_sale_with(&w, &t.sales[1], field_max, sizeof(field_max), 0);
  body = wire_compress(&w, &body_len);
  if (proto_batch_unpack(body, body_len, &limits, &decoded, err, sizeof(err)) != PROTO_OK)
    fail_msg("refused: %s", err);
  assert_int_equal(decoded->n_sales, 2);
  for (size_t i = 0; i < decoded->n_sales; i++) {
    Pos__V1__Sale *sale = decoded->sales[i];
    assert_int_equal(sale->base.n_unknown_fields, 1);
    len = pos__v1__sale__get_packed_size(sale);
    packed = malloc(len);
    pos__v1__sale__pack(sale, packed);
    again = pos__v1__sale__unpack(NULL, len, packed);
    assert_non_null(again);
    assert_string_equal(again->sale_id, sale->sale_id);
    assert_int_equal(again->base.n_unknown_fields, 1);
    assert_int_equal(again->base.unknown_fields[0].tag, i == 0 ? 99 : 536870911);
    pos__v1__sale__free_unpacked(again, NULL);
    free(packed);
  }
  pos__v1__batch__free_unpacked(decoded, NULL);
  free(body);
}

/*
 * protobuf-c takes in any bytes for a string; protoc's readers refuse a
 * proto3 string that is not UTF-8, and protobuf-c cuts one at a NUL. Either
 * would put into pos.sales.v1 a sale other readers cannot decode or that
 * says less than was sent: the batch is refused, naming the sale and field.
 */
static void a_sale_whose_text_is_not_utf8_is_refused(void **state)
{
  static const char *const bad_skus[] = {
      "PIZZA-\xff",             /* not a lead byte */
      "CAFF\xc3",               /* cut short */
      "SLASH-\xc0\xaf",         /* overlong "/" */
      "SURROGATE-\xed\xa0\x80", /* U+D800 */
      "BEYOND-\xf4\x90\x80\x80" /* U+110000 */
  };
  static const uint8_t cashier_with_nul[] = {(5 << 3) | 2, 3, 'a', 0, 'b'};
  static const uint8_t long_cashier_with_nul[] = {
      (5 << 3) | 2, 26, 'c', 'a', 's', 'h', 'i', 'e', 'r', '-', 'n', 'u', 'm', 'b', 'e', 'r',
      '-', '4', '2', 0, 'x', 'y', 'z', 'z', 'z', 'z', 'z', 'z'};
  /* Both wrong: whichever comes first is named. */
  static const uint8_t cashier_nul_then_bad[] = {(5 << 3) | 2, 5, 'a', 'b', 0, 'c', 0xff};
  static const uint8_t cashier_bad_then_nul[] = {(5 << 3) | 2, 5, 'a', 'b', 0xff, 'c', 0};
  struct test_batch t;
  struct wire w = {0};
  Pos__V1__Batch *decoded = NULL;
  uint8_t *body;
  size_t len;
  char err[256] = "";
  (void)state;
  for (size_t i = 0; i < sizeof(bad_skus) / sizeof(bad_skus[0]); i++) {
    make_batch(&t);
    t.lines[2].sku = (char *)bad_skus[i];
    assert_int_equal(proto_batch_pack(&t.batch, 3, &body, &len), PROTO_OK);
    expect_undecodable(body, len, "sales[2] (sale_id T1-103).lines[0].sku is not valid UTF-8",
                       "fix the sender");
  }
  make_batch(&t);
  t.sales[0].sale_id = "T1-\xe9t\xe9";
  assert_int_equal(proto_batch_pack(&t.batch, 3, &body, &len), PROTO_OK);
  expect_undecodable(body, len, "sales[0] (sale_id T1-?t?).sale_id is not valid UTF-8",
                     "at byte 3 of 6");

  make_batch(&t);
  wire_envelope(&w);
  wire_sale_with(&w, &t.sales[1], cashier_with_nul, sizeof(cashier_with_nul), 0);
  body = wire_compress(&w, &len);
  expect_undecodable(body, len, "sales[0] (sale_id T1-102).cashier_id holds a NUL byte",
                     "at byte 1 of 3");

  /* Past the word-at-a-time ASCII check: the byte is still found, and named. */
  make_batch(&t);
  t.lines[2].sku = "PIZZA-MARGHERITA-LARGE-\xc0\xaf-X";
  assert_int_equal(proto_batch_pack(&t.batch, 3, &body, &len), PROTO_OK);
  expect_undecodable(body, len, "sales[2] (sale_id T1-103).lines[0].sku is not valid UTF-8",
                     "at byte 23 of 27");
  make_batch(&t);
  wire_envelope(&w);
  wire_sale_with(&w, &t.sales[1], long_cashier_with_nul, sizeof(long_cashier_with_nul), 0);
  body = wire_compress(&w, &len);
  expect_undecodable(body, len, "sales[0] (sale_id T1-102).cashier_id holds a NUL byte",
                     "at byte 17 of 26");
  make_batch(&t);
  wire_envelope(&w);
  wire_sale_with(&w, &t.sales[1], cashier_nul_then_bad, sizeof(cashier_nul_then_bad), 0);
  body = wire_compress(&w, &len);
  expect_undecodable(body, len, "sales[0] (sale_id T1-102).cashier_id holds a NUL byte",
                     "at byte 2 of 5");
  make_batch(&t);
  wire_envelope(&w);
  wire_sale_with(&w, &t.sales[1], cashier_bad_then_nul, sizeof(cashier_bad_then_nul), 0);
  body = wire_compress(&w, &len);
  expect_undecodable(body, len, "sales[0] (sale_id T1-102).cashier_id is not valid UTF-8",
                     "at byte 2 of 5");

  /* Text beyond ASCII is fine when it is UTF-8. */
  make_batch(&t);
  t.lines[0].sku = "CAFF\xc3\xa8-\xe6\x97\xa5\xe6\x9c\xac-\xf0\x9f\x8d\x95";
  t.lines[1].sku = "QUATTRO-STAGIONI-CAFF\xc3\xa8-GRANDE-\xf0\x9f\x8d\x95-FINE";
  t.sales[1].cashier_id = "J\xc3\xbcrgen";
  assert_int_equal(proto_batch_pack(&t.batch, 3, &body, &len), PROTO_OK);
  if (proto_batch_unpack(body, len, &limits, &decoded, err, sizeof(err)) != PROTO_OK)
    fail_msg("refused: %s", err);
  assert_string_equal(decoded->sales[0]->lines[0]->sku, t.lines[0].sku);
  assert_string_equal(decoded->sales[1]->lines[0]->sku, t.lines[1].sku);
  assert_string_equal(decoded->sales[1]->cashier_id, "J\xc3\xbcrgen");
  pos__v1__batch__free_unpacked(decoded, NULL);
  free(body);
}

/* Formats `minor` with `exponent` and expects `expected`, within PROTO_MONEY_TEXT_MAX. */
static void expect_money(int64_t minor, unsigned exponent, const char *expected)
{
  char out[64];
  memset(out, 'x', sizeof(out));
  assert_ptr_equal(proto_money_format(minor, exponent, out, sizeof(out)), out);
  if (strcmp(out, expected) != 0)
    fail_msg("%" PRId64 " with exponent %u gave \"%s\", expected \"%s\"", minor, exponent,
             out, expected);
  assert_true(strlen(out) < PROTO_MONEY_TEXT_MAX);
}

/*
 * pos-decode formats every record of the dead-letter topic, where a sale
 * with currency_exponent 96 lands: 10^exponent wrapped from 20 and was 0
 * (a division by zero, SIGFPE) from 64. Exponents 0-18 are exact for every
 * int64; above, the minor units are printed unscaled with a marker.
 */
static void money_format_survives_any_exponent(void **state)
{
  static const unsigned raw_exponents[] = {19, 20, 63, 64, 96, 255, UINT32_MAX};
  char expected[64], small[8];
  (void)state;
  expect_money(1250, 2, "12.50");
  expect_money(-5, 2, "-0.05");
  expect_money(1500, 0, "1500");
  expect_money(0, 18, "0.000000000000000000");
  expect_money(INT64_MIN, 0, "-9223372036854775808");
  expect_money(INT64_MAX, 0, "9223372036854775807");
  expect_money(INT64_MIN, 2, "-92233720368547758.08");
  expect_money(INT64_MAX, 2, "92233720368547758.07");
  expect_money(INT64_MIN, 18, "-9.223372036854775808");
  expect_money(INT64_MAX, 18, "9.223372036854775807");
  expect_money(1, 18, "0.000000000000000001");
  for (size_t i = 0; i < sizeof(raw_exponents) / sizeof(raw_exponents[0]); i++) {
    snprintf(expected, sizeof(expected), "raw:-9223372036854775808,exp:%u", raw_exponents[i]);
    expect_money(INT64_MIN, raw_exponents[i], expected);
    snprintf(expected, sizeof(expected), "raw:9223372036854775807,exp:%u", raw_exponents[i]);
    expect_money(INT64_MAX, raw_exponents[i], expected);
    snprintf(expected, sizeof(expected), "raw:1250,exp:%u", raw_exponents[i]);
    expect_money(1250, raw_exponents[i], expected);
  }
  /* A short buffer gets a terminated prefix. */
  assert_string_equal(proto_money_format(INT64_MIN, 96, small, sizeof(small)), "raw:-92");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(round_trip_keeps_every_field_and_is_deterministic),
      cmocka_unit_test(the_embedded_dictionary_is_the_one_its_id_names),
      cmocka_unit_test(a_body_compressed_with_the_sales_dictionary_round_trips),
      cmocka_unit_test(a_body_without_a_dictionary_still_decodes),
      cmocka_unit_test(a_body_with_an_unknown_dictionary_is_refused_naming_it),
      cmocka_unit_test(frames_naming_different_dictionaries_are_refused),
      cmocka_unit_test(compact_sales_come_back_as_the_canonical_sales_byte_for_byte),
      cmocka_unit_test(sales_stay_canonical_without_a_compacting_dictionary),
      cmocka_unit_test(a_sale_that_mixes_the_encodings_is_refused),
      cmocka_unit_test(a_body_over_the_limit_is_too_big),
      cmocka_unit_test(a_decompression_bomb_is_refused),
      cmocka_unit_test(a_bomb_that_hides_its_size_is_refused_too),
      cmocka_unit_test(garbage_and_truncated_bodies_are_not_zstd),
      cmocka_unit_test(concatenated_zstd_frames_are_one_body),
      cmocka_unit_test(frames_share_one_decoded_limit),
      cmocka_unit_test(zstd_of_something_else_is_not_a_batch),
      cmocka_unit_test(an_incomplete_envelope_is_refused),
      cmocka_unit_test(sale_check_finds_what_does_not_add_up),
      cmocka_unit_test(a_sale_of_millions_of_empty_lines_is_refused_before_unpacking),
      cmocka_unit_test(many_sales_of_many_lines_hit_the_object_count),
      cmocka_unit_test(every_count_has_its_own_limit),
      cmocka_unit_test(a_sale_at_the_limits_still_decodes),
      cmocka_unit_test(money_format_survives_any_exponent),
      cmocka_unit_test(a_sale_with_a_field_no_consumer_can_decode_is_refused),
      cmocka_unit_test(a_sale_with_a_valid_unknown_field_is_kept_and_repacks),
      cmocka_unit_test(a_sale_whose_text_is_not_utf8_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
