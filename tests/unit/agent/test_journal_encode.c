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
#include <jansson.h>
#include <mbedtls/sha256.h>

#include "journal/journal_int.h"
#include "journal_fixture.h"
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
      cmocka_unit_test(a_commit_does_not_prepare_the_page_count_again),
      cmocka_unit_test(the_hwm_record_is_the_bytes_snprintf_made),
      cmocka_unit_test(the_deltas_blob_is_written_into_a_reused_buffer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
