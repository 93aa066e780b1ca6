/*
 * sale.c - the sale model: lifetime, names, content hash.
 */
#include "sale/sale.h"

#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pos/v1/pos.pb-c.h"

void sale_clear(struct sale *sale)
{
  if (!sale)
    return;
  free(sale->lines);
  free(sale->payments);
  memset(sale, 0, sizeof(*sale));
}

void sale_array_free(struct sale *sales, size_t count)
{
  if (!sales)
    return;
  for (size_t i = 0; i < count; i++)
    sale_clear(&sales[i]);
  free(sales);
}

const char *sale_kind_name(enum sale_kind kind)
{
  switch (kind) {
  case SALE_KIND_SALE:
    return "sale";
  case SALE_KIND_REFUND:
    return "refund";
  case SALE_KIND_VOID:
    return "void";
  }
  return "?";
}

const char *sale_channel_name(enum sale_channel channel)
{
  switch (channel) {
  case SALE_CHANNEL_POS:
    return "pos";
  case SALE_CHANNEL_ONLINE:
    return "online";
  case SALE_CHANNEL_DELIVERY:
    return "delivery";
  case SALE_CHANNEL_PICKUP:
    return "pickup";
  }
  return "?";
}

/* protobuf-c wants mutable char *; the strings are only read while packing. */
static char *sale_pb_text(const char *text) { return (char *)(uintptr_t)text; }

/* Most sales have a few lines and one or two payments: their messages live
 * on the stack, and only a larger sale allocates. */
#define SALE_HASH_INLINE_LINES 16
#define SALE_HASH_INLINE_PAYMENTS 4

/* protobuf-c's output, fed straight into the hash instead of a packed copy. */
struct sale_hash_sink {
  ProtobufCBuffer base; /* first: protobuf-c calls base.append with a pointer to it */
  mbedtls_sha256_context sha;
  int failed;
};

static void sale_hash_append(ProtobufCBuffer *buffer, size_t length, const uint8_t *data)
{
  struct sale_hash_sink *sink = (struct sale_hash_sink *)buffer;

  if (mbedtls_sha256_update_ret(&sink->sha, data, length) != 0)
    sink->failed = 1;
}

/*
 * See sale.h. Allocates only for a sale of more than SALE_HASH_INLINE_LINES
 * lines or SALE_HASH_INLINE_PAYMENTS payments. Pure; any thread.
 */
int sale_content_hash(const struct sale *sale, uint8_t hash[32])
{
  Pos__V1__Sale msg = POS__V1__SALE__INIT;
  Pos__V1__SaleLine line_inline[SALE_HASH_INLINE_LINES];
  Pos__V1__SaleLine *line_ptr_inline[SALE_HASH_INLINE_LINES];
  Pos__V1__Payment payment_inline[SALE_HASH_INLINE_PAYMENTS];
  Pos__V1__Payment *payment_ptr_inline[SALE_HASH_INLINE_PAYMENTS];
  Pos__V1__SaleLine *line_msgs = line_inline;
  Pos__V1__SaleLine **line_ptrs = line_ptr_inline;
  Pos__V1__Payment *payment_msgs = payment_inline;
  Pos__V1__Payment **payment_ptrs = payment_ptr_inline;
  struct sale_hash_sink sink;
  int rc = -1;

  mbedtls_sha256_init(&sink.sha);
  if (sale->line_count > SALE_HASH_INLINE_LINES) {
    line_msgs = calloc(sale->line_count, sizeof(*line_msgs));
    line_ptrs = calloc(sale->line_count, sizeof(*line_ptrs));
  }
  if (sale->payment_count > SALE_HASH_INLINE_PAYMENTS) {
    payment_msgs = calloc(sale->payment_count, sizeof(*payment_msgs));
    payment_ptrs = calloc(sale->payment_count, sizeof(*payment_ptrs));
  }
  if (!line_msgs || !line_ptrs || !payment_msgs || !payment_ptrs)
    goto out;

  msg.sale_id = sale_pb_text(sale->sale_id);
  msg.kind = (Pos__V1__SaleKind)sale->kind;
  msg.original_sale_id = sale_pb_text(sale->original_sale_id);
  msg.terminal_id = sale_pb_text(sale->terminal_id);
  msg.cashier_id = sale_pb_text(sale->cashier_id);
  msg.channel = (Pos__V1__Channel)sale->channel;
  msg.delivery_partner = sale_pb_text(sale->delivery_partner);
  msg.business_time_ms = sale->business_time_ms;
  msg.utc_offset_minutes = sale->utc_offset_minutes;
  msg.currency = sale_pb_text(sale->currency);
  msg.currency_exponent = sale->currency_exponent;
  msg.total = sale->total;
  for (size_t i = 0; i < sale->line_count; i++) {
    const struct sale_line *line = &sale->lines[i];
    pos__v1__sale_line__init(&line_msgs[i]);
    line_msgs[i].sku = sale_pb_text(line->sku);
    line_msgs[i].quantity = line->qty;
    line_msgs[i].unit_price = line->unit_price;
    line_msgs[i].discount = line->discount;
    line_msgs[i].promo_id = sale_pb_text(line->promo_id);
    line_msgs[i].tax = line->tax;
    line_ptrs[i] = &line_msgs[i];
  }
  msg.n_lines = sale->line_count;
  msg.lines = line_ptrs;
  for (size_t i = 0; i < sale->payment_count; i++) {
    pos__v1__payment__init(&payment_msgs[i]);
    payment_msgs[i].method = sale_pb_text(sale->payments[i].method);
    payment_msgs[i].amount = sale->payments[i].amount;
    payment_ptrs[i] = &payment_msgs[i];
  }
  msg.n_payments = sale->payment_count;
  msg.payments = payment_ptrs;

  /* protobuf-c packs fields in number order, so equal sales give equal bytes;
   * pack_to_buffer writes the same bytes as pack, in pieces, into the hash. */
  sink.base.append = sale_hash_append;
  sink.failed = 0;
  if (mbedtls_sha256_starts_ret(&sink.sha, 0) != 0)
    goto out;
  pos__v1__sale__pack_to_buffer(&msg, &sink.base);
  if (sink.failed || mbedtls_sha256_finish_ret(&sink.sha, hash) != 0)
    goto out;
  rc = 0;
out:
  mbedtls_sha256_free(&sink.sha);
  if (line_msgs != line_inline)
    free(line_msgs);
  if (line_ptrs != line_ptr_inline)
    free(line_ptrs);
  if (payment_msgs != payment_inline)
    free(payment_msgs);
  if (payment_ptrs != payment_ptr_inline)
    free(payment_ptrs);
  return rc;
}
