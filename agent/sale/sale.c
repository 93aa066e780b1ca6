/*
 * sale.c - the sale model: lifetime, names, content hash.
 */
#include "sale/sale.h"

#include <mbedtls/sha256.h>
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
#define SALE_PB_INLINE_LINES 16
#define SALE_PB_INLINE_PAYMENTS 4

/* A sale as the pos.v1.Sale message protobuf-c packs, pointing into the
 * sale (nothing is copied): valid while the sale is. */
struct sale_pb {
  Pos__V1__Sale msg;
  Pos__V1__SaleLine line_inline[SALE_PB_INLINE_LINES];
  Pos__V1__SaleLine *line_ptr_inline[SALE_PB_INLINE_LINES];
  Pos__V1__Payment payment_inline[SALE_PB_INLINE_PAYMENTS];
  Pos__V1__Payment *payment_ptr_inline[SALE_PB_INLINE_PAYMENTS];
  Pos__V1__SaleLine *line_msgs;
  Pos__V1__SaleLine **line_ptrs;
  Pos__V1__Payment *payment_msgs;
  Pos__V1__Payment **payment_ptrs;
};

static void sale_pb_free(struct sale_pb *pb)
{
  if (pb->line_msgs != pb->line_inline)
    free(pb->line_msgs);
  if (pb->line_ptrs != pb->line_ptr_inline)
    free(pb->line_ptrs);
  if (pb->payment_msgs != pb->payment_inline)
    free(pb->payment_msgs);
  if (pb->payment_ptrs != pb->payment_ptr_inline)
    free(pb->payment_ptrs);
}

/* Fills `pb` from `sale`: every field of the content hash, or with
 * `items_only` the lines and payments alone (a journal row's compact
 * items). 0, or -1 out of memory (pb freed). */
static int sale_pb_make(struct sale_pb *pb, const struct sale *sale, int items_only)
{
  pos__v1__sale__init(&pb->msg);
  pb->line_msgs = pb->line_inline;
  pb->line_ptrs = pb->line_ptr_inline;
  pb->payment_msgs = pb->payment_inline;
  pb->payment_ptrs = pb->payment_ptr_inline;
  if (sale->line_count > SALE_PB_INLINE_LINES) {
    pb->line_msgs = calloc(sale->line_count, sizeof(*pb->line_msgs));
    pb->line_ptrs = calloc(sale->line_count, sizeof(*pb->line_ptrs));
  }
  if (sale->payment_count > SALE_PB_INLINE_PAYMENTS) {
    pb->payment_msgs = calloc(sale->payment_count, sizeof(*pb->payment_msgs));
    pb->payment_ptrs = calloc(sale->payment_count, sizeof(*pb->payment_ptrs));
  }
  if (!pb->line_msgs || !pb->line_ptrs || !pb->payment_msgs || !pb->payment_ptrs) {
    sale_pb_free(pb);
    return -1;
  }
  if (!items_only) {
    pb->msg.sale_id = sale_pb_text(sale->sale_id);
    pb->msg.kind = (Pos__V1__SaleKind)sale->kind;
    pb->msg.original_sale_id = sale_pb_text(sale->original_sale_id);
    pb->msg.terminal_id = sale_pb_text(sale->terminal_id);
    pb->msg.cashier_id = sale_pb_text(sale->cashier_id);
    pb->msg.channel = (Pos__V1__Channel)sale->channel;
    pb->msg.delivery_partner = sale_pb_text(sale->delivery_partner);
    pb->msg.business_time_ms = sale->business_time_ms;
    pb->msg.utc_offset_minutes = sale->utc_offset_minutes;
    pb->msg.currency = sale_pb_text(sale->currency);
    pb->msg.currency_exponent = sale->currency_exponent;
    pb->msg.total = sale->total;
  }
  for (size_t i = 0; i < sale->line_count; i++) {
    const struct sale_line *line = &sale->lines[i];
    Pos__V1__SaleLine *m = &pb->line_msgs[i];
    pos__v1__sale_line__init(m);
    m->sku = sale_pb_text(line->sku);
    m->quantity = line->qty;
    m->unit_price = line->unit_price;
    m->discount = line->discount;
    m->promo_id = sale_pb_text(line->promo_id);
    m->tax = line->tax;
    pb->line_ptrs[i] = m;
  }
  pb->msg.n_lines = sale->line_count;
  pb->msg.lines = pb->line_ptrs;
  for (size_t i = 0; i < sale->payment_count; i++) {
    pos__v1__payment__init(&pb->payment_msgs[i]);
    pb->payment_msgs[i].method = sale_pb_text(sale->payments[i].method);
    pb->payment_msgs[i].amount = sale->payments[i].amount;
    pb->payment_ptrs[i] = &pb->payment_msgs[i];
  }
  pb->msg.n_payments = sale->payment_count;
  pb->msg.payments = pb->payment_ptrs;
  return 0;
}

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
 * See sale.h. Allocates only for a sale of more than SALE_PB_INLINE_LINES
 * lines or SALE_PB_INLINE_PAYMENTS payments. Pure; any thread.
 */
int sale_content_hash(const struct sale *sale, uint8_t hash[32])
{
  struct sale_pb pb;
  struct sale_hash_sink sink;
  int rc = -1;

  if (sale_pb_make(&pb, sale, 0))
    return -1;
  mbedtls_sha256_init(&sink.sha);
  /* protobuf-c packs fields in number order, so equal sales give equal bytes;
   * pack_to_buffer writes the same bytes as pack, in pieces, into the hash. */
  sink.base.append = sale_hash_append;
  sink.failed = 0;
  if (mbedtls_sha256_starts_ret(&sink.sha, 0) != 0)
    goto out;
  pos__v1__sale__pack_to_buffer(&pb.msg, &sink.base);
  if (sink.failed || mbedtls_sha256_finish_ret(&sink.sha, hash) != 0)
    goto out;
  rc = 0;
out:
  mbedtls_sha256_free(&sink.sha);
  sale_pb_free(&pb);
  return rc;
}

int sale_items_pack(const struct sale *sale, uint8_t **buf, size_t *cap, size_t *len)
{
  struct sale_pb pb;
  size_t need;

  if (sale_pb_make(&pb, sale, 1))
    return -1;
  need = pos__v1__sale__get_packed_size(&pb.msg);
  if (need > *cap) {
    size_t grown = *cap ? *cap : 256;
    uint8_t *bigger;
    while (grown < need)
      grown *= 2;
    bigger = realloc(*buf, grown);
    if (!bigger) {
      sale_pb_free(&pb);
      return -1;
    }
    *buf = bigger;
    *cap = grown;
  }
  *len = pos__v1__sale__pack(&pb.msg, *buf);
  sale_pb_free(&pb);
  return 0;
}

/* Copies a packed text into a field of `size` bytes: -1 when it is empty
 * but must not be, or does not fit (not what sale_items_pack wrote). */
static int sale_items_text(char *out, size_t size, const char *text, int required)
{
  size_t n = text ? strlen(text) : 0;

  if ((required && n == 0) || n >= size)
    return -1;
  memcpy(out, text ? text : "", n + 1);
  return 0;
}

int sale_items_unpack(const uint8_t *data, size_t len, struct sale *sale)
{
  Pos__V1__Sale *msg = pos__v1__sale__unpack(NULL, len, data);
  int rc = -1;

  if (!msg || msg->n_lines == 0 || msg->n_lines > SALE_LINES_MAX ||
      msg->n_payments > SALE_PAYMENTS_MAX)
    goto out;
  sale->lines = calloc(msg->n_lines, sizeof(*sale->lines));
  sale->payments = calloc(msg->n_payments ? msg->n_payments : 1, sizeof(*sale->payments));
  if (!sale->lines || !sale->payments)
    goto out;
  sale->line_count = msg->n_lines;
  sale->payment_count = msg->n_payments;
  for (size_t i = 0; i < msg->n_lines; i++) {
    const Pos__V1__SaleLine *m = msg->lines[i];
    struct sale_line *line = &sale->lines[i];
    if (sale_items_text(line->sku, sizeof(line->sku), m->sku, 1) ||
        sale_items_text(line->promo_id, sizeof(line->promo_id), m->promo_id, 0))
      goto out;
    line->qty = m->quantity;
    line->unit_price = m->unit_price;
    line->discount = m->discount;
    line->tax = m->tax;
  }
  for (size_t i = 0; i < msg->n_payments; i++) {
    struct sale_payment *payment = &sale->payments[i];
    if (sale_items_text(payment->method, sizeof(payment->method), msg->payments[i]->method, 1))
      goto out;
    payment->amount = msg->payments[i]->amount;
  }
  rc = 0;
out:
  if (msg)
    pos__v1__sale__free_unpacked(msg, NULL);
  return rc;
}

/* Civil date of a count of days since 1970-01-01 (proleptic Gregorian; the
 * inverse of days_from_civil in sale_json.c), so that neither TZ nor
 * gmtime_r (a time_t may be 32 bits) is involved. */
static void sale_civil_from_days(int64_t days, int64_t *year, unsigned *month, unsigned *day)
{
  int64_t era;
  unsigned doe, yoe, doy, mp;

  days += 719468;
  era = (days >= 0 ? days : days - 146096) / 146097;
  doe = (unsigned)(days - era * 146097);
  yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  mp = (5 * doy + 2) / 153;
  *day = doy - (153 * mp + 2) / 5 + 1;
  *month = mp < 10 ? mp + 3 : mp - 9;
  *year = (int64_t)yoe + era * 400 + (*month <= 2);
}

/* Writes `value` as exactly `width` decimal digits at `out`. */
static char *sale_digits(char *out, unsigned value, int width)
{
  for (int i = width - 1; i >= 0; i--) {
    out[i] = (char)('0' + value % 10);
    value /= 10;
  }
  return out + width;
}

/* The writer calls this for every sale of a slim journal (is its text the
 * canonical one?), so the digits are written by hand, not by snprintf. */
int sale_time_format(int64_t ms, int32_t offset_min, char *buf, size_t size)
{
  /* "YYYY-MM-DDTHH:MM:SS" ".mmm" "+hh:mm" */
  char text[19 + 4 + 6 + 1], *p = text;
  int64_t local_ms, days, ms_of_day, year;
  unsigned month, day, magnitude, seconds_of_day;

  if (offset_min <= -24 * 60 || offset_min >= 24 * 60 || ms < -(INT64_C(1) << 52) ||
      ms > (INT64_C(1) << 52))
    return -1;
  local_ms = ms + (int64_t)offset_min * 60000;
  days = local_ms / 86400000;
  ms_of_day = local_ms % 86400000;
  if (ms_of_day < 0) {
    ms_of_day += 86400000;
    days--;
  }
  sale_civil_from_days(days, &year, &month, &day);
  if (year < 0 || year > 9999)
    return -1;
  seconds_of_day = (unsigned)(ms_of_day / 1000);
  p = sale_digits(p, (unsigned)year, 4);
  *p++ = '-';
  p = sale_digits(p, month, 2);
  *p++ = '-';
  p = sale_digits(p, day, 2);
  *p++ = 'T';
  p = sale_digits(p, seconds_of_day / 3600, 2);
  *p++ = ':';
  p = sale_digits(p, seconds_of_day / 60 % 60, 2);
  *p++ = ':';
  p = sale_digits(p, seconds_of_day % 60, 2);
  if (ms_of_day % 1000) {
    *p++ = '.';
    p = sale_digits(p, (unsigned)(ms_of_day % 1000), 3);
  }
  if (offset_min == 0) {
    *p++ = 'Z';
  } else {
    magnitude = (unsigned)(offset_min < 0 ? -offset_min : offset_min);
    *p++ = offset_min < 0 ? '-' : '+';
    p = sale_digits(p, magnitude / 60, 2);
    *p++ = ':';
    p = sale_digits(p, magnitude % 60, 2);
  }
  *p = '\0';
  if ((size_t)(p - text) >= size)
    return -1;
  memcpy(buf, text, (size_t)(p - text) + 1);
  return (int)(p - text);
}
