/*
 * test_journal_encode.c - the journal's hand-written encodings against the
 * library output they replace, byte for byte.
 *
 * The `lines` and `payments` columns of the journal are read by the 0.2.0
 * agent and by copy_sales (tests/integration/old_agent.sh): their bytes must
 * stay what json_dumps(JSON_COMPACT | JSON_PRESERVE_ORDER) made of them.
 * Every case builds the reference here, with jansson, as the writer used to.
 * Also what the writer does per commit besides the sales (the stats).
 */
#include <inttypes.h>
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
#include <jansson.h>
#include <mbedtls/sha256.h>

#include "journal/journal_int.h"
#include "journal_fixture.h"
#include "pos/v1/pos.pb-c.h"
#include "sale/sale.h"

static char *reference_lines(const struct sale *sale)
{
  json_t *lines = json_array();
  char *text;

  assert_non_null(lines);
  for (size_t i = 0; i < sale->line_count; i++) {
    const struct sale_line *line = &sale->lines[i];
    json_t *item = json_pack("{s:s, s:I, s:I, s:I, s:I}", "sku", line->sku, "qty",
                             (json_int_t)line->qty, "unit_price", (json_int_t)line->unit_price,
                             "discount", (json_int_t)line->discount, "tax",
                             (json_int_t)line->tax);
    assert_non_null(item);
    if (line->promo_id[0])
      assert_int_equal(json_object_set_new(item, "promo_id", json_string(line->promo_id)), 0);
    assert_int_equal(json_array_append_new(lines, item), 0);
  }
  text = json_dumps(lines, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(lines);
  assert_non_null(text);
  return text;
}

static char *reference_payments(const struct sale *sale)
{
  json_t *payments = json_array();
  char *text;

  assert_non_null(payments);
  for (size_t i = 0; i < sale->payment_count; i++)
    assert_int_equal(json_array_append_new(payments,
                                           json_pack("{s:s, s:I}", "method",
                                                     sale->payments[i].method, "amount",
                                                     (json_int_t)sale->payments[i].amount)),
                     0);
  text = json_dumps(payments, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(payments);
  assert_non_null(text);
  return text;
}

/* Encodes `sale` into the reused buffers and compares with jansson. */
static void assert_same_as_jansson(const struct sale *sale, struct journal_text *lines,
                                   struct journal_text *payments)
{
  char *want_lines = reference_lines(sale);
  char *want_payments = reference_payments(sale);

  assert_int_equal(journal__lines_json(sale, lines), 0);
  assert_int_equal(journal__payments_json(sale, payments), 0);
  assert_int_equal(lines->len, strlen(want_lines));
  assert_memory_equal(lines->data, want_lines, lines->len + 1);
  assert_int_equal(payments->len, strlen(want_payments));
  assert_memory_equal(payments->data, want_payments, payments->len + 1);
  free(want_lines);
  free(want_payments);
}

static void set_line(struct sale_line *line, const char *sku, int64_t qty, int64_t price,
                     int64_t discount, int64_t tax, const char *promo)
{
  memset(line, 0, sizeof(*line));
  snprintf(line->sku, sizeof(line->sku), "%s", sku);
  snprintf(line->promo_id, sizeof(line->promo_id), "%s", promo);
  line->qty = qty;
  line->unit_price = price;
  line->discount = discount;
  line->tax = tax;
}

static void lines_and_payments_json_are_jansson_bytes(void **state)
{
  /* Plain ASCII (the hand path), every character jansson escapes, UTF-8,
   * and the integers at both ends of their range. */
  static const char *texts[] = {
      "PIZZA-MARG-L", "", "a/b ~{}[]:,", "quote\"in", "back\\slash", "tab\tnl\nx",
      "\x01\x1f\x7f", "caf\xc3\xa9", "\xe2\x80\xa8", "card", "x",
  };
  static const int64_t numbers[] = {0, 1, -1, 9, 10, 1234567890123LL, -99, INT64_MAX, INT64_MIN};
  struct sale_line lines[12];
  struct sale_payment payments[12];
  struct sale sale;
  struct journal_text lines_text = {0}, payments_text = {0};
  size_t n_texts = sizeof(texts) / sizeof(texts[0]);
  size_t n_numbers = sizeof(numbers) / sizeof(numbers[0]);

  (void)state;
  memset(&sale, 0, sizeof(sale));
  sale.lines = lines;
  sale.payments = payments;
  assert_same_as_jansson(&sale, &lines_text, &payments_text); /* no lines: [] */
  for (size_t t = 0; t < n_texts; t++) {
    for (size_t k = 0; k < n_numbers; k++) {
      int64_t v = numbers[k];
      int64_t neg = v == INT64_MIN ? INT64_MAX : -v; /* -INT64_MIN overflows */
      set_line(&lines[0], texts[t], v, v, neg, v / 3, texts[(t + k) % n_texts]);
      set_line(&lines[1], "PLAIN", 2, 1250, 100, 230, k % 2 ? "TPR-42" : "");
      memset(payments, 0, sizeof(payments));
      snprintf(payments[0].method, sizeof(payments[0].method), "%s", texts[t]);
      payments[0].amount = v;
      snprintf(payments[1].method, sizeof(payments[1].method), "cash");
      payments[1].amount = neg / 7;
      sale.line_count = 1 + k % 2;
      sale.payment_count = 1 + k % 2;
      assert_same_as_jansson(&sale, &lines_text, &payments_text);
    }
  }
  free(lines_text.data);
  free(payments_text.data);
}

/* ---- compact rows (journal.compact_rows, schema 8) ----------------------- */

/* A sale of `lines` lines and `payments` payments whose texts and numbers
 * vary with `seed`: quotes, UTF-8, empty promo ids, both ends of int64. */
static void make_items_sale(struct sale *sale, const char *sale_id, size_t lines,
                            size_t payments, int seed)
{
  static const char *texts[] = {"PIZZA-MARG-L", "quote\"in", "caf\xc3\xa9", "back\\slash",
                                "a/b ~{}[]:,"};
  static const int64_t numbers[] = {0, 1, -1, 1250, INT64_MAX, INT64_MIN, 1234567890123LL};
  size_t nt = sizeof(texts) / sizeof(texts[0]), nn = sizeof(numbers) / sizeof(numbers[0]);

  jf_sale_init(sale, sale_id, SALE_CHANNEL_POS, "");
  sale->lines = calloc(lines, sizeof(*sale->lines));
  sale->payments = calloc(payments ? payments : 1, sizeof(*sale->payments));
  assert_non_null(sale->lines);
  assert_non_null(sale->payments);
  sale->line_count = lines;
  sale->payment_count = payments;
  for (size_t i = 0; i < lines; i++)
    set_line(&sale->lines[i], texts[(i + (size_t)seed) % nt], numbers[i % nn],
             numbers[(i + 1) % nn], numbers[(i + 2) % nn], numbers[(i + 3) % nn],
             i % 3 ? "" : texts[(i + 2) % nt]);
  for (size_t i = 0; i < payments; i++) {
    snprintf(sale->payments[i].method, sizeof(sale->payments[i].method), "%s",
             i % 2 ? "cash" : texts[(i + (size_t)seed) % nt]);
    sale->payments[i].amount = numbers[(i + (size_t)seed) % nn];
  }
}

static void assert_same_items(const struct sale *got, const struct sale *want)
{
  assert_int_equal(got->line_count, want->line_count);
  assert_int_equal(got->payment_count, want->payment_count);
  for (size_t i = 0; i < want->line_count; i++) {
    assert_string_equal(got->lines[i].sku, want->lines[i].sku);
    assert_string_equal(got->lines[i].promo_id, want->lines[i].promo_id);
    assert_true(got->lines[i].qty == want->lines[i].qty);
    assert_true(got->lines[i].unit_price == want->lines[i].unit_price);
    assert_true(got->lines[i].discount == want->lines[i].discount);
    assert_true(got->lines[i].tax == want->lines[i].tax);
  }
  for (size_t i = 0; i < want->payment_count; i++) {
    assert_string_equal(got->payments[i].method, want->payments[i].method);
    assert_true(got->payments[i].amount == want->payments[i].amount);
  }
}

/* The compact items read back as they were written, into a reused buffer
 * (a big sale then a small one), and bytes that are not such items (or
 * hold a text longer than a sale's field) are refused, never truncated. */
static void compact_items_read_back_and_refuse_what_they_are_not(void **state)
{
  static const size_t shapes[][2] = {{20, 6}, {1, 0}, {1, 1}, {500, 50}, {3, 2}};
  uint8_t *buf = NULL;
  size_t cap = 0, len = 0, json_len = 0;
  char long_sku[SALE_TEXT_MAX + 2];
  Pos__V1__SaleLine line = POS__V1__SALE_LINE__INIT;
  Pos__V1__SaleLine *line_ptrs[1] = {&line};
  Pos__V1__Sale msg = POS__V1__SALE__INIT;
  uint8_t packed[256];
  struct sale got;

  (void)state;
  for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
    struct sale want;
    struct journal_text lines = {0}, payments = {0};
    make_items_sale(&want, "S-1", shapes[k][0], shapes[k][1], (int)k);
    assert_int_equal(sale_items_pack(&want, &buf, &cap, &len), 0);
    memset(&got, 0, sizeof(got));
    assert_int_equal(sale_items_unpack(buf, len, &got), 0);
    assert_same_items(&got, &want);
    sale_clear(&got);
    assert_int_equal(journal__lines_json(&want, &lines), 0);
    assert_int_equal(journal__payments_json(&want, &payments), 0);
    json_len = lines.len + payments.len;
    /* Smaller than the JSON it stands for, by far when the sale has lines. */
    assert_true(len < json_len);
    free(lines.data);
    free(payments.data);
    sale_clear(&want);
  }
  /* Garbage, nothing, and a sale without lines are not a row's items. */
  memset(&got, 0, sizeof(got));
  assert_int_equal(sale_items_unpack((const uint8_t *)"\xff\xff\xff", 3, &got), -1);
  sale_clear(&got);
  assert_int_equal(sale_items_unpack(buf, 0, &got), -1);
  sale_clear(&got);
  /* A sku one character longer than struct sale holds. */
  memset(long_sku, 'X', sizeof(long_sku) - 1);
  long_sku[sizeof(long_sku) - 1] = '\0';
  line.sku = long_sku;
  line.quantity = 1;
  msg.n_lines = 1;
  msg.lines = line_ptrs;
  assert_true(pos__v1__sale__get_packed_size(&msg) <= sizeof(packed));
  len = pos__v1__sale__pack(&msg, packed);
  assert_int_equal(sale_items_unpack(packed, len, &got), -1);
  sale_clear(&got);
  line.sku = (char *)"OK";
  len = pos__v1__sale__pack(&msg, packed);
  assert_int_equal(sale_items_unpack(packed, len, &got), 0);
  assert_string_equal(got.lines[0].sku, "OK");
  sale_clear(&got);
  free(buf);
}

struct expect_sales {
  const struct sale *sales;
  size_t count;
  int seen;
};

/* Seals batch 1 of every unsealed sale (up to 100) through `pack`, which
 * is handed `arg`; the op is left in `next` for the caller's checks, then
 * journal_op_clear. */
static void seal_batch_one(struct jf_fixture *f, journal *j,
                           int (*pack)(void *, const struct journal_seal_input *, uint8_t **,
                                       size_t *, size_t *),
                           void *arg, struct jf_op *next)
{
  memset(next, 0, sizeof(*next));
  next->op.kind = JOURNAL_OP_NEXT_BATCH;
  next->op.batch_seq = 1;
  next->op.seal_upto_seq = INT64_MAX;
  next->op.max_sales = 100;
  next->op.max_bytes = 1024 * 1024;
  next->op.pack = pack;
  next->op.pack_arg = arg;
  jf_run_op(f, j, next);
  assert_int_equal(next->op.error, 0);
}

/* A pack callback that checks the sales it is handed against the ones
 * journaled, then packs nothing useful (the body is not looked at). */
static int pack_expected(void *arg, const struct journal_seal_input *in, uint8_t **body,
                         size_t *body_len, size_t *used)
{
  struct expect_sales *e = arg;

  assert_int_equal(in->count, e->count);
  for (size_t i = 0; i < in->count; i++) {
    assert_string_equal(in->sales[i].sale.sale_id, e->sales[i].sale_id);
    assert_same_items(&in->sales[i].sale, &e->sales[i]);
  }
  e->seen = 1;
  *body = malloc(1);
  assert_non_null(*body);
  **body = 0;
  *body_len = 1;
  *used = in->count;
  return 0;
}

/* Seals batch 1 of every unsealed sale through pack_expected: they must
 * be e->sales, as journaled. */
static void seal_expected(struct jf_fixture *f, journal *j, struct expect_sales *e)
{
  struct jf_op next;

  e->seen = 0;
  seal_batch_one(f, j, pack_expected, e, &next);
  assert_true(e->seen);
  assert_int_equal(next.op.batch.sale_count, e->count);
  journal_op_clear(&next.op);
}

/* journal.compact_rows: the journal records, before its first compact row,
 * that agents of schema 7 no longer read it (user_version 8); the rows
 * hold a BLOB and an empty payments BLOB; a sealed batch reads them back
 * as they were posted, beside a JSON row written after a reopen without
 * the option (both forms are read; the oldest reader stays 8). */
static void compact_rows_raise_the_oldest_reader_and_seal_as_posted(void **state)
{
  struct jf_fixture f;
  struct sale sales[3];
  struct jf_write w;
  struct jf_op next;
  struct expect_sales expect = {sales, 3, 0};
  journal *j;

  (void)state;
  jf_setup(&f, "compact_rows");
  make_items_sale(&sales[0], "C-1", 20, 6, 1);
  make_items_sale(&sales[1], "C-2", 1, 0, 2);
  make_items_sale(&sales[2], "J-3", 3, 2, 3);

  j = jf_open_journal(&f, 0, 64); /* JSON rows: the oldest reader stays 6 */
  jf_close_journal(&f, j);
  assert_int_equal(jf_query_int(&f, "PRAGMA user_version"), 6);
  assert_int_equal(jf_query_int(&f, "SELECT value = 'json' FROM meta WHERE key = 'row_format'"),
                   1);

  f.compact_rows = 1;
  j = jf_open_journal(&f, 0, 64);
  assert_int_equal(jf_query_int(&f, "PRAGMA user_version"), 8);
  assert_int_equal(
      jf_query_int(&f, "SELECT value = 'compact' FROM meta WHERE key = 'row_format'"), 1);
  jf_write_and_wait(&f, j, &w, sales, 2);
  assert_int_equal(w.write.error, 0);
  jf_close_journal(&f, j);
  assert_int_equal(jf_query_int(&f, "SELECT count(*) FROM sales WHERE typeof(lines) = 'blob' "
                                    "AND typeof(payments) = 'blob' AND length(payments) = 0"),
                   2);

  f.compact_rows = 0;
  j = jf_open_journal(&f, 0, 64);
  jf_write_and_wait(&f, j, &w, &sales[2], 1);
  assert_int_equal(w.write.error, 0);
  assert_int_equal(jf_query_int(&f, "SELECT typeof(lines) = 'text' FROM sales "
                                    "WHERE sale_id = 'J-3'"),
                   1);
  assert_int_equal(jf_query_int(&f, "PRAGMA user_version"), 8);

  seal_expected(&f, j, &expect);

  /* A new journal in place (a clone told by the collector) carries the
   * rows over as they are: compact ones make it compact too. */
  memset(&next, 0, sizeof(next));
  next.op.kind = JOURNAL_OP_NEW_JOURNAL;
  next.op.reason = "test: a new journal";
  jf_run_op(&f, j, &next);
  assert_int_equal(next.op.error, 0);
  assert_int_equal(jf_query_int(&f, "PRAGMA user_version"), 8);
  assert_int_equal(jf_query_int(&f, "SELECT count(*) FROM sales WHERE typeof(lines) = 'blob'"),
                   2);
  seal_expected(&f, j, &expect);
  jf_close_journal(&f, j);
  for (size_t i = 0; i < 3; i++)
    sale_clear(&sales[i]);
  jf_teardown(&f);
}

/* ---- slim rows (journal.row_format = slim, schema 9) ----------------------- */

/* Every field of a sale as the batch builder is handed it, as one text. */
static void sale_fingerprint(const struct sale *s, char *out, size_t size)
{
  int n = snprintf(out, size, "%s|%d|%s|%s|%s|%d|%s|%s|%lld|%d|%s|%u|%lld|", s->sale_id,
                   (int)s->kind, s->original_sale_id, s->terminal_id, s->cashier_id,
                   (int)s->channel, s->delivery_partner, s->business_time,
                   (long long)s->business_time_ms, (int)s->utc_offset_minutes, s->currency,
                   s->currency_exponent, (long long)s->total);
  for (size_t i = 0; i < s->line_count && n > 0 && (size_t)n < size; i++)
    n += snprintf(out + n, size - (size_t)n, "%s,%lld,%lld,%lld,%s,%lld;", s->lines[i].sku,
                  (long long)s->lines[i].qty, (long long)s->lines[i].unit_price,
                  (long long)s->lines[i].discount, s->lines[i].promo_id,
                  (long long)s->lines[i].tax);
  for (size_t i = 0; i < s->payment_count && n > 0 && (size_t)n < size; i++)
    n += snprintf(out + n, size - (size_t)n, "%s,%lld;", s->payments[i].method,
                  (long long)s->payments[i].amount);
  assert_true(n > 0 && (size_t)n < size);
}

enum { SLIM_SALES = 5, FINGERPRINT_MAX = 8192 };

struct sealed_fingerprints {
  size_t count;
  char text[SLIM_SALES][FINGERPRINT_MAX];
};

/* A pack callback that keeps what each sale of the batch reads back as. */
static int pack_fingerprints(void *arg, const struct journal_seal_input *in, uint8_t **body,
                             size_t *body_len, size_t *used)
{
  struct sealed_fingerprints *fp = arg;

  assert_true(in->count <= SLIM_SALES);
  fp->count = in->count;
  for (size_t i = 0; i < in->count; i++)
    sale_fingerprint(&in->sales[i].sale, fp->text[i], sizeof(fp->text[i]));
  *body = malloc(1);
  assert_non_null(*body);
  **body = 0;
  *body_len = 1;
  *used = in->count;
  return 0;
}

static void seal_fingerprints(struct jf_fixture *f, journal *j, struct sealed_fingerprints *fp)
{
  struct jf_op next;

  memset(fp, 0, sizeof(*fp));
  seal_batch_one(f, j, pack_fingerprints, fp, &next);
  journal_op_clear(&next.op);
}

/* O-1 (an old compact row) and four slim ones: business times that are
 * the canonical text (stored '') and ones that are not (kept as sent). */
static void make_slim_sales(struct sale sales[SLIM_SALES])
{
  static const struct {
    const char *id, *text;
    int64_t ms;
    int32_t offset;
  } times[SLIM_SALES] = {
      {"O-1", "2026-11-21T18:42:05+01:00", 1795282925000LL, 60},
      {"S-1", "2026-11-21T18:42:05+01:00", 1795282925000LL, 60},       /* canonical */
      {"S-2", "2026-11-21T17:42:05+00:00", 1795282925000LL, 0},        /* not: Z is */
      {"S-3", "2026-11-21T18:42:05.5+01:00", 1795282925500LL, 60},     /* not: .500 is */
      {"S-4", "2026-11-21T12:12:05.250-05:30", 1795282925250LL, -330}, /* canonical */
  };
  for (size_t i = 0; i < SLIM_SALES; i++) {
    make_items_sale(&sales[i], times[i].id, 2 + i, 1, (int)i);
    snprintf(sales[i].business_time, sizeof(sales[i].business_time), "%s", times[i].text);
    sales[i].business_time_ms = times[i].ms;
    sales[i].utc_offset_minutes = times[i].offset;
  }
}

/* Writes sales[i] again as is (a retry: duplicate of its seq) and changed
 * (another total under the same id: a conflict naming that seq). */
static void assert_retry_and_conflict(struct jf_fixture *f, journal *j, struct sale *sale,
                                      int64_t seq)
{
  struct jf_write w;

  jf_write_and_wait(f, j, &w, sale, 1);
  assert_int_equal(w.write.error, 0);
  assert_int_equal(w.write.results[0].outcome, JOURNAL_DUPLICATE);
  assert_int_equal(w.write.results[0].seq, seq);
  sale->total += 1;
  jf_write_and_wait(f, j, &w, sale, 1);
  sale->total -= 1;
  assert_int_equal(w.write.error, JOURNAL_ECONFLICT);
  assert_int_equal(w.write.conflict_seq, seq);
}

/* journal.row_format = slim: compact_rows alone still writes compact rows
 * for schema 8 readers (32-byte hash, business_time as sent); slim raises
 * the oldest reader to 9 before its first row, which holds a 16-byte hash
 * and business_time '' when it is the canonical text. Every sale reads
 * back exactly as a JSON-row journal reads the same sales, retries are
 * duplicates and changed sales conflicts on both kinds of row, and a hash
 * of another length is damage, not a conflict. */
static void slim_rows_read_back_as_posted_and_keep_duplicates(void **state)
{
  struct jf_fixture f, ref;
  struct sale sales[SLIM_SALES];
  struct sealed_fingerprints *got = calloc(1, sizeof(*got)), *want = calloc(1, sizeof(*want));
  struct jf_write w;
  journal *j;
  int64_t seq_o1, seq_s3;

  (void)state;
  assert_non_null(got);
  assert_non_null(want);
  make_slim_sales(sales);

  /* The reference: the same sales in a journal of JSON rows. */
  jf_setup(&ref, "slim_rows_ref");
  j = jf_open_journal(&ref, 0, 64);
  jf_write_and_wait(&ref, j, &w, sales, SLIM_SALES);
  assert_int_equal(w.write.error, 0);
  seal_fingerprints(&ref, j, want);
  jf_close_journal(&ref, j);
  jf_teardown(&ref);
  assert_int_equal(want->count, SLIM_SALES);
  for (size_t i = 0; i < SLIM_SALES; i++) {
    char posted[FINGERPRINT_MAX];
    sale_fingerprint(&sales[i], posted, sizeof(posted));
    assert_string_equal(want->text[i], posted);
  }

  jf_setup(&f, "slim_rows");
  /* compact_rows = true alone, on the new firmware: reader-8 rows. */
  f.compact_rows = 1;
  j = jf_open_journal(&f, 0, 64);
  jf_write_and_wait(&f, j, &w, sales, 1);
  assert_int_equal(w.write.error, 0);
  seq_o1 = w.write.results[0].seq;
  jf_close_journal(&f, j);
  assert_int_equal(jf_query_int(&f, "PRAGMA user_version"), 8);
  assert_int_equal(
      jf_query_int(&f, "SELECT value = 'compact' FROM meta WHERE key = 'row_format'"), 1);
  assert_int_equal(jf_query_int(&f, "SELECT count(*) FROM sales WHERE length(content_hash) = 32 "
                                    "AND business_time = '2026-11-21T18:42:05+01:00'"),
                   1);

  /* Slim: the oldest reader is 9 at open, before any slim row. */
  f.slim_rows = 1;
  j = jf_open_journal(&f, 0, 64);
  assert_int_equal(jf_query_int(&f, "PRAGMA user_version"), 9);
  assert_int_equal(jf_query_int(&f, "SELECT value = 'slim' FROM meta WHERE key = 'row_format'"),
                   1);
  assert_int_equal(jf_query_int(&f, "SELECT count(*) FROM sales"), 1);
  jf_write_and_wait(&f, j, &w, &sales[1], SLIM_SALES - 1);
  assert_int_equal(w.write.error, 0);
  seq_s3 = w.write.results[2].seq;
  assert_int_equal(jf_query_int(&f, "SELECT count(*) FROM sales WHERE length(content_hash) = 16 "
                                    "AND typeof(lines) = 'blob'"),
                   SLIM_SALES - 1);
  assert_int_equal(jf_query_int(&f, "SELECT count(*) FROM sales WHERE business_time = '' "
                                    "AND sale_id IN ('S-1', 'S-4')"),
                   2);
  assert_int_equal(jf_query_int(&f, "SELECT count(*) FROM sales WHERE (sale_id = 'S-2' AND "
                                    "business_time = '2026-11-21T17:42:05+00:00') OR "
                                    "(sale_id = 'S-3' AND "
                                    "business_time = '2026-11-21T18:42:05.5+01:00')"),
                   2);

  /* Read back exactly as the JSON journal reads them. */
  seal_fingerprints(&f, j, got);
  assert_int_equal(got->count, SLIM_SALES);
  for (size_t i = 0; i < SLIM_SALES; i++)
    assert_string_equal(got->text[i], want->text[i]);

  /* Retries and changed sales, on the old 32-byte row and a slim one. */
  assert_retry_and_conflict(&f, j, &sales[0], seq_o1);
  assert_retry_and_conflict(&f, j, &sales[3], seq_s3);
  jf_close_journal(&f, j);

  /* A hash neither 32 nor 16 bytes long is a damaged row: refused, never
   * taken for a conflict or a duplicate. */
  {
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE sales SET content_hash = x'0011' WHERE seq = %lld",
             (long long)seq_s3);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f.path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
  }
  j = jf_open_journal(&f, 0, 64);
  jf_write_and_wait(&f, j, &w, &sales[3], 1);
  assert_true(w.write.error != 0);
  assert_true(w.write.error != JOURNAL_ECONFLICT);
  jf_close_journal(&f, j);

  for (size_t i = 0; i < SLIM_SALES; i++)
    sale_clear(&sales[i]);
  free(got);
  free(want);
  jf_teardown(&f);
}

static void a_reused_buffer_holds_only_the_current_sale(void **state)
{
  /* A sale of SALE_LINES_MAX long lines grows the buffer; the next, small
   * one must not carry any of it (length and terminator are the new sale's). */
  struct sale_line *lines = calloc(SALE_LINES_MAX, sizeof(*lines));
  struct sale_payment payments[SALE_PAYMENTS_MAX];
  struct sale sale;
  struct journal_text lines_text = {0}, payments_text = {0};
  char sku[SALE_TEXT_MAX + 1];

  (void)state;
  assert_non_null(lines);
  memset(sku, 'S', SALE_TEXT_MAX);
  sku[SALE_TEXT_MAX] = '\0';
  memset(&sale, 0, sizeof(sale));
  memset(payments, 0, sizeof(payments));
  sale.lines = lines;
  sale.payments = payments;
  for (size_t i = 0; i < SALE_LINES_MAX; i++)
    set_line(&lines[i], sku, INT64_MIN, INT64_MAX, INT64_MIN, INT64_MAX, sku);
  for (size_t i = 0; i < SALE_PAYMENTS_MAX; i++) {
    memcpy(payments[i].method, sku, sizeof(sku));
    payments[i].amount = INT64_MIN;
  }
  sale.line_count = SALE_LINES_MAX;
  sale.payment_count = SALE_PAYMENTS_MAX;
  assert_same_as_jansson(&sale, &lines_text, &payments_text);
  set_line(&lines[0], "A", 1, 2, 0, 0, "");
  snprintf(payments[0].method, sizeof(payments[0].method), "cash");
  payments[0].amount = 2;
  sale.line_count = 1;
  sale.payment_count = 1;
  assert_same_as_jansson(&sale, &lines_text, &payments_text);
  free(lines_text.data);
  free(payments_text.data);
  free(lines);
}

static void a_commit_does_not_prepare_the_page_count_again(void **state)
{
  /* PRAGMA page_count is prepared again on every step: read per commit it
   * was a visible share of the writer's CPU at one sale per commit. The
   * stats may read it once a second; 40 lone sales must not read it 40 times. */
  struct jf_fixture f;
  struct sale_line line;
  struct sale_payment payment;
  struct journal_stats stats;
  journal *j;
  double started;
  int reprepared;

  (void)state;
  jf_setup(&f, "journal_encode");
  j = jf_open_journal(&f, 0, 1);
  started = journal__seconds();
  for (int i = 0; i < 40; i++) {
    struct sale sale;
    struct jf_write w;
    char id[32];
    snprintf(id, sizeof(id), "PC-%d", i);
    jf_sale_init(&sale, id, SALE_CHANNEL_POS, "");
    set_line(&line, "SKU-1", 1, 250, 0, 0, "");
    memset(&payment, 0, sizeof(payment));
    snprintf(payment.method, sizeof(payment.method), "cash");
    payment.amount = 250;
    sale.lines = &line;
    sale.line_count = 1;
    sale.payments = &payment;
    sale.payment_count = 1;
    sale.total = 250;
    jf_write_and_wait(&f, j, &w, &sale, 1);
    assert_int_equal(w.results[0].outcome, JOURNAL_STORED);
  }
  /* The writer is idle (every write answered): its statement can be read. */
  reprepared = sqlite3_stmt_status(j->page_count, SQLITE_STMTSTATUS_REPREPARE, 0);
  assert_true(reprepared <= 2 + (int)(journal__seconds() - started));
  assert_true(reprepared < 20);
  journal_get_stats(j, &stats);
  assert_true(stats.database_bytes > 0);
  assert_int_equal(stats.sales_journaled, 40);
  jf_close_journal(&f, j);
  jf_teardown(&f);
}

/* The slot as the writer printed it before (snprintf), with its SHA-256. */
static void reference_hwm_slot(const struct journal_hwm *h, char slot[512])
{
  uint8_t hash[32];
  int len;

  memset(slot, 0, 512);
  len = snprintf(slot, 512,
                 "posjhwm1 g=%" PRIu64 " id=%s r=%" PRId64 " c=%" PRId64 " ab=%" PRId64
                 " as=%" PRId64 " sb=%" PRId64 "\n",
                 h->generation, h->journal_id, h->reserved, h->committed, h->acked_batch_seq,
                 h->acked_last_seq, h->sealed_batch_seq);
  assert_true(len > 0 && len < 400);
  assert_int_equal(mbedtls_sha256_ret((const unsigned char *)slot, (size_t)len, hash, 0), 0);
  len += snprintf(slot + len, (size_t)(512 - len), "h=");
  for (int i = 0; i < 32; i++)
    len += snprintf(slot + len, (size_t)(512 - len), "%02x", hash[i]);
  snprintf(slot + len, (size_t)(512 - len), "\n");
}

static void the_hwm_record_is_the_bytes_snprintf_made(void **state)
{
  static const int64_t values[] = {0, 1, -1, 42, 1000000007LL, INT64_MAX, INT64_MIN};
  static const uint64_t generations[] = {0, 8, 99, UINT64_MAX - 1};
  struct jf_fixture f;
  journal *j = calloc(1, sizeof(*j));
  char path[128], err[256], file[1024], want[512];
  int damaged = 0;
  size_t n = sizeof(values) / sizeof(values[0]);

  (void)state;
  assert_non_null(j);
  jf_setup(&f, "journal_hwm_encode");
  snprintf(path, sizeof(path), "%s", f.path);
  j->path = path;
  assert_int_equal(journal__hwm_open(j, &damaged, err, sizeof(err)), 0);
  for (size_t g = 0; g < sizeof(generations) / sizeof(generations[0]); g++) {
    for (size_t k = 0; k < n; k++) {
      snprintf(j->hwm.journal_id, sizeof(j->hwm.journal_id), "%s",
               k % 2 ? "0123456789abcdef0123456789abcdef" : "");
      j->hwm.generation = generations[g];
      j->hwm.reserved = values[k];
      j->hwm.committed = values[(k + 1) % n];
      j->hwm.acked_batch_seq = values[(k + 2) % n];
      j->hwm.acked_last_seq = values[(k + 3) % n];
      j->hwm.sealed_batch_seq = values[(k + 4) % n];
      assert_int_equal(journal__hwm_write(j, 1), 0); /* both slots */
      reference_hwm_slot(&j->hwm, want);
      assert_int_equal(pread(j->hwm.fd, file, sizeof(file), 0), (ssize_t)sizeof(file));
      assert_memory_equal(file, want, sizeof(want));
      assert_memory_equal(file + 512, want, sizeof(want));
    }
  }
  journal__hwm_close(j);
  free(j);
  unlink(path);
  snprintf(path, sizeof(path), "%s-hwm", f.path);
  unlink(path);
  jf_teardown(&f);
}

static void the_deltas_blob_is_written_into_a_reused_buffer(void **state)
{
  /* The stored form (journal_sql.h, schema v5) as bytes: reason, name id or
   * length + SKU, zigzag varint quantity. */
  static const uint8_t want[] = {
      0x01, 0x01, 0x9f, 0xc2, 0x1e,                       /* sales, flour g, -250.000 */
      0x64, 0x05, 'S',  'K',  'U',  '-', '9', 0xa0, 0x1f, /* unmapped SKU-9, 2 items */
      0x02, 0x02, 0xd8, 0x04,                             /* refunds, cheese g, 0.300 */
  };
  journal *j = calloc(1, sizeof(*j));
  struct stock_deltas d = {0}, big = {0};
  const uint8_t *blob = NULL;
  uint8_t *reference = NULL;
  size_t len = 0, reference_len = 0;
  char sku[STOCK_ID_MAX + 1];

  (void)state;
  assert_non_null(j);
  assert_int_equal(stock_names_add(&j->names, "flour", "g"), 0);
  assert_int_equal(stock_names_add(&j->names, "cheese", "g"), 0);
  assert_int_equal(stock_deltas_add(&d, "flour", "g", STOCK_REASON_SALES, -250000), 0);
  assert_int_equal(stock_deltas_add(&d, "SKU-9", "", STOCK_REASON_UNMAPPED, 2000), 0);
  assert_int_equal(stock_deltas_add(&d, "cheese", "g", STOCK_REASON_REFUNDS, 300), 0);
  assert_int_equal(journal__encode_deltas(j, &d, &blob, &len), SQLITE_OK);
  assert_ptr_equal(blob, j->deltas_buf);
  assert_int_equal(len, sizeof(want));
  assert_memory_equal(blob, want, sizeof(want));

  /* None: NULL, so the row's column stays NULL (not an empty blob). */
  d.count = 0;
  assert_int_equal(journal__encode_deltas(j, &d, &blob, &len), SQLITE_OK);
  assert_null(blob);
  assert_int_equal(len, 0);

  /* Many long SKUs grow the buffer; the bytes are still the malloc'd form's. */
  memset(sku, 'K', STOCK_ID_MAX);
  sku[STOCK_ID_MAX] = '\0';
  for (int i = 0; i < 200; i++) {
    sku[0] = (char)('A' + i % 26);
    sku[1] = (char)('A' + i / 26);
    assert_int_equal(stock_deltas_add(&big, sku, "", STOCK_REASON_UNMAPPED, -1000LL * i), 0);
  }
  assert_int_equal(journal__encode_deltas(j, &big, &blob, &len), SQLITE_OK);
  assert_int_equal(stock_deltas_encode(&big, &j->names, &reference, &reference_len), 0);
  assert_int_equal(len, reference_len);
  assert_memory_equal(blob, reference, len);
  free(reference);
  stock_deltas_clear(&d);
  stock_deltas_clear(&big);
  stock_names_clear(&j->names);
  free(j->deltas_buf);
  free(j);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(lines_and_payments_json_are_jansson_bytes),
      cmocka_unit_test(a_reused_buffer_holds_only_the_current_sale),
      cmocka_unit_test(compact_items_read_back_and_refuse_what_they_are_not),
      cmocka_unit_test(compact_rows_raise_the_oldest_reader_and_seal_as_posted),
      cmocka_unit_test(slim_rows_read_back_as_posted_and_keep_duplicates),
      cmocka_unit_test(a_commit_does_not_prepare_the_page_count_again),
      cmocka_unit_test(the_hwm_record_is_the_bytes_snprintf_made),
      cmocka_unit_test(the_deltas_blob_is_written_into_a_reused_buffer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
