/*
 * fuzz_sale_json.c - the agent's POS contract: a POST /v1/sales body through
 * sale_json_parse (jansson, then every rule of agent/ingest/http/sale_json.c)
 * and, for what it accepts, sale_content_hash (agent/sale/).
 *
 * Besides crashes, leaks and undefined behaviour, it checks what the
 * contract promises about an accepted sale, and aborts when one is broken:
 *   - the money adds up (total = sum of lines, payments = total), and every
 *     amount formats back to a decimal string that parses to the same value;
 *   - the collector's check (proto_sale_check) accepts the sale as the
 *     agent's batcher would send it: a sale the agent answered 201 for must
 *     never land in the collector's dead-letter queue;
 *   - a refused body leaves an error naming what is wrong, and allocates
 *     nothing (LeakSanitizer would see it);
 *   - the one-pass scanner (agent/ingest/http/sale_json_scan.c) takes only
 *     bodies jansson accepts, and reads them exactly as jansson does: the
 *     400 answers depend on it.
 *
 * The body is copied into a buffer of exactly its length, without the NUL
 * the HTTP server adds, so a read past `length` is caught by ASan.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/http/sale_json.h"
#include "ingest/http/sale_json_int.h"
#include "proto/codec.h"
#include "sale/sale.h"

/* The agent's default [api] max_sales_per_request is 1000; a small cap keeps
 * the "too many sales" path reachable from small inputs. */
#define FUZZ_MAX_SALES 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_fail(const char *what, const struct sale *sale)
{
  fprintf(stderr, "fuzz-sale-json: %s (sale_id %s)\n", what, sale->sale_id);
  abort();
}

/* Formats `minor` back to text and parses it again: must be the same amount. */
static void fuzz_money_round_trip(const struct sale *sale, int64_t minor)
{
  char text[64];
  long long again = 0;
  const char *why = NULL;

  proto_money_format(minor, sale->currency_exponent, text, sizeof(text));
  if (sale_parse_money(text, sale->currency_exponent, &again, &why) != 0 ||
      again != minor)
    fuzz_fail("an accepted amount does not survive format and parse", sale);
}

/* The sale as the batcher puts it on the wire (agent/uplink/batcher.c), then
 * the collector's proto_sale_check on it. */
static void fuzz_collector_accepts(const struct sale *sale)
{
  Pos__V1__Sale msg = POS__V1__SALE__INIT;
  Pos__V1__SaleLine lines[SALE_LINES_MAX];
  Pos__V1__SaleLine *line_ptrs[SALE_LINES_MAX];
  Pos__V1__Payment payments[SALE_PAYMENTS_MAX];
  Pos__V1__Payment *payment_ptrs[SALE_PAYMENTS_MAX];
  char field[64] = "", why[256] = "";

  if (sale->line_count > SALE_LINES_MAX || sale->payment_count > SALE_PAYMENTS_MAX)
    fuzz_fail("more lines or payments than sale.h allows", sale);
  msg.sale_id = (char *)(uintptr_t)sale->sale_id;
  msg.kind = (Pos__V1__SaleKind)sale->kind;
  msg.original_sale_id = (char *)(uintptr_t)sale->original_sale_id;
  msg.terminal_id = (char *)(uintptr_t)sale->terminal_id;
  msg.cashier_id = (char *)(uintptr_t)sale->cashier_id;
  msg.channel = (Pos__V1__Channel)sale->channel;
  msg.delivery_partner = (char *)(uintptr_t)sale->delivery_partner;
  msg.business_time_ms = sale->business_time_ms;
  msg.utc_offset_minutes = sale->utc_offset_minutes;
  msg.currency = (char *)(uintptr_t)sale->currency;
  msg.currency_exponent = sale->currency_exponent;
  msg.total = sale->total;
  for (size_t i = 0; i < sale->line_count; i++) {
    pos__v1__sale_line__init(&lines[i]);
    lines[i].sku = (char *)(uintptr_t)sale->lines[i].sku;
    lines[i].quantity = sale->lines[i].qty;
    lines[i].unit_price = sale->lines[i].unit_price;
    lines[i].discount = sale->lines[i].discount;
    lines[i].promo_id = (char *)(uintptr_t)sale->lines[i].promo_id;
    lines[i].tax = sale->lines[i].tax;
    line_ptrs[i] = &lines[i];
  }
  msg.n_lines = sale->line_count;
  msg.lines = line_ptrs;
  for (size_t i = 0; i < sale->payment_count; i++) {
    pos__v1__payment__init(&payments[i]);
    payments[i].method = (char *)(uintptr_t)sale->payments[i].method;
    payments[i].amount = sale->payments[i].amount;
    payment_ptrs[i] = &payments[i];
  }
  msg.n_payments = sale->payment_count;
  msg.payments = payment_ptrs;
  msg.store_id = (char *)"1001";
  msg.seq = 1;
  if (proto_sale_check(&msg, field, sizeof(field), why, sizeof(why)) != 0) {
    fprintf(stderr, "fuzz-sale-json: the collector would dead-letter a sale the agent "
                    "accepted: field %s: %s\n", field, why);
    fuzz_fail("agent and collector disagree", sale);
  }
}

static void fuzz_check_sale(const struct sale *sale)
{
  int64_t lines_sum = 0, payments_sum = 0;
  uint8_t hash[32];

  if (sale_content_hash(sale, hash) != 0)
    fuzz_fail("sale_content_hash failed", sale);
  if (!sale_kind_name(sale->kind) || !sale_channel_name(sale->channel))
    fuzz_fail("kind or channel without a name", sale);
  if (sale->line_count == 0)
    fuzz_fail("an accepted sale has no lines", sale);
  /* The validator promised no overflow, so plain arithmetic must hold. */
  for (size_t i = 0; i < sale->line_count; i++) {
    const struct sale_line *line = &sale->lines[i];
    if (line->qty <= 0)
      fuzz_fail("a line with a quantity that is not positive", sale);
    lines_sum += line->qty * line->unit_price - line->discount + line->tax;
    fuzz_money_round_trip(sale, line->unit_price);
    fuzz_money_round_trip(sale, line->discount);
    fuzz_money_round_trip(sale, line->tax);
  }
  for (size_t i = 0; i < sale->payment_count; i++) {
    payments_sum += sale->payments[i].amount;
    fuzz_money_round_trip(sale, sale->payments[i].amount);
  }
  fuzz_money_round_trip(sale, sale->total);
  if (lines_sum != sale->total)
    fuzz_fail("total is not the sum of the lines", sale);
  if (payments_sum != sale->total)
    fuzz_fail("payments do not add up to the total", sale);
  fuzz_collector_accepts(sale);
}

/*
 * With top_max (sale_json_parse's max_sales) the scanner decides the same,
 * counts a top-level array the same, and keeps the same first values.
 */
static void fuzz_scanner_bounded_agrees(const char *body, size_t size,
                                        const struct sale_json_tape *full)
{
  struct sale_json_tape bounded;

  sale_json__tape_init(&bounded);
  bounded.top_max = 1;
  if (sale_json__scan(&bounded, body, size) != SALE_JSON_SCAN_OK ||
      bounded.values[0].count != full->values[0].count || bounded.count > full->count) {
    fprintf(stderr, "fuzz-sale-json: the scanner with top_max 1 disagrees\n");
    abort();
  }
  for (size_t i = 1; i < bounded.count; i++) {
    if (bounded.values[i].type != full->values[i].type ||
        bounded.values[i].next != full->values[i].next) {
      fprintf(stderr, "fuzz-sale-json: top_max 1 kept a different value %zu\n", i);
      abort();
    }
  }
  sale_json__tape_release(&bounded);
}

/* Differential: what the scanner takes, jansson takes, into an equal tape. */
static void fuzz_scanner_agrees(const char *body, size_t size)
{
  struct sale_json_tape scanned, reference;
  json_error_t json_error;
  json_t *root;
  int rc;
  long differs;

  sale_json__tape_init(&scanned);
  sale_json__tape_init(&reference);
  rc = sale_json__scan(&scanned, body, size);
  if (rc == SALE_JSON_SCAN_FALLBACK && scanned.count != 0)
    abort();
  if (rc != SALE_JSON_SCAN_OK)
    goto out;
  root = json_loadb(body, size, JSON_REJECT_DUPLICATES, &json_error);
  if (!root) {
    fprintf(stderr, "fuzz-sale-json: the scanner took a body jansson refuses: %s\n",
            json_error.text);
    abort();
  }
  if (sale_json__tape_from_json(&reference, root) != 0)
    goto out; /* out of memory: nothing to compare */
  differs = sale_json__tape_diff(&scanned, &reference);
  if (differs >= 0) {
    fprintf(stderr, "fuzz-sale-json: scanner and jansson differ at value %ld\n", differs);
    abort();
  }
  fuzz_scanner_bounded_agrees(body, size, &scanned);
out:
  sale_json__tape_release(&scanned);
  sale_json__tape_release(&reference);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct sale *sales = NULL;
  struct sale_error error;
  size_t count = 0;
  int is_array = -1;
  char *body = malloc(size ? size : 1);

  if (!body)
    return 0;
  memcpy(body, data, size);
  memset(&error, 0, sizeof(error));
  fuzz_scanner_agrees(body, size);
  if (sale_json_parse(body, size, FUZZ_MAX_SALES, &sales, &count, &is_array, &error) == 0) {
    if (count == 0 || count > FUZZ_MAX_SALES || (!is_array && count != 1))
      abort();
    for (size_t i = 0; i < count; i++)
      fuzz_check_sale(&sales[i]);
    sale_array_free(sales, count);
  } else if (error.message[0] == '\0' || !memchr(error.message, '\0', sizeof(error.message)) ||
             !memchr(error.field, '\0', sizeof(error.field))) {
    fprintf(stderr, "fuzz-sale-json: a refused body without a proper error message\n");
    abort();
  }
  free(body);
  return 0;
}
