/*
 * pos_decode.c - prints Kafka records of our topics as one line each.
 *
 * Reads kcat's length-prefixed stream (`-f '%R%s'`: a 32-bit big-endian
 * length, then that many bytes) of protobuf values from stdin:
 *
 *   kcat -b BOOT -C -t pos.sales.v1 -e -f '%R%s' | pos-decode --type sale
 *   kcat ... -t pos.inventory-deltas.v1 ... | pos-decode --type delta
 *
 * Sale lines are key=value, money as decimals of the sale's currency, in a
 * stable order, so tests can compare them with the journal and people can
 * read them.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/codec.h"

#define DECODE_MAX_RECORD (64u * 1024 * 1024)

static const char *decode_kind(Pos__V1__SaleKind kind)
{
  switch (kind) {
  case POS__V1__SALE_KIND__SALE_KIND_SALE:
    return "sale";
  case POS__V1__SALE_KIND__SALE_KIND_REFUND:
    return "refund";
  case POS__V1__SALE_KIND__SALE_KIND_VOID:
    return "void";
  default:
    return "unspecified";
  }
}

static const char *decode_channel(Pos__V1__Channel channel)
{
  switch (channel) {
  case POS__V1__CHANNEL__CHANNEL_POS:
    return "pos";
  case POS__V1__CHANNEL__CHANNEL_ONLINE:
    return "online";
  case POS__V1__CHANNEL__CHANNEL_DELIVERY:
    return "delivery";
  case POS__V1__CHANNEL__CHANNEL_PICKUP:
    return "pickup";
  default:
    return "unspecified";
  }
}

static int decode_sale(const uint8_t *data, size_t len)
{
  Pos__V1__Sale *sale = pos__v1__sale__unpack(NULL, len, data);
  char money[48];

  if (!sale)
    return -1;
  proto_money_format(sale->total, sale->currency_exponent, money, sizeof(money));
  printf("store=%s seq=%" PRIu64 " sale_id=%s kind=%s original=%s terminal=%s cashier=%s "
         "channel=%s partner=%s business_time_ms=%" PRId64 " offset_min=%d currency=%s "
         "total=%s lines=",
         sale->store_id, sale->seq, sale->sale_id, decode_kind(sale->kind),
         sale->original_sale_id[0] ? sale->original_sale_id : "-", sale->terminal_id,
         sale->cashier_id[0] ? sale->cashier_id : "-", decode_channel(sale->channel),
         sale->delivery_partner[0] ? sale->delivery_partner : "-", sale->business_time_ms,
         (int)sale->utc_offset_minutes, sale->currency, money);
  for (size_t i = 0; i < sale->n_lines; i++) {
    const Pos__V1__SaleLine *line = sale->lines[i];
    char price[48], discount[48], tax[48];
    proto_money_format(line->unit_price, sale->currency_exponent, price, sizeof(price));
    proto_money_format(line->discount, sale->currency_exponent, discount, sizeof(discount));
    proto_money_format(line->tax, sale->currency_exponent, tax, sizeof(tax));
    printf("%s%" PRId64 "x%s@%s-%s%s%s+%s", i ? "|" : "", line->quantity, line->sku, price,
           discount, line->promo_id[0] ? "/" : "", line->promo_id, tax);
  }
  printf(" payments=");
  for (size_t i = 0; i < sale->n_payments; i++) {
    proto_money_format(sale->payments[i]->amount, sale->currency_exponent, money, sizeof(money));
    printf("%s%s:%s", i ? "|" : "", sale->payments[i]->method, money);
  }
  printf("\n");
  pos__v1__sale__free_unpacked(sale, NULL);
  return 0;
}

static int decode_heartbeat(const uint8_t *data, size_t len)
{
  Pos__V1__Heartbeat *hb = pos__v1__heartbeat__unpack(NULL, len, data);
  if (!hb)
    return -1;
  printf("store=%s device=%s unsent=%" PRIu64 " oldest_unsent_age_s=%" PRId64
         " disk_free=%" PRIu64 " agent=%s last_seq=%" PRIu64 " acked_batch_seq=%" PRIu64
         " received_ms=%" PRId64 "\n",
         hb->store_id, hb->device_id, hb->unsent_sales, hb->oldest_unsent_age_s,
         hb->disk_free_bytes, hb->agent_version, hb->last_seq, hb->acked_batch_seq,
         hb->received_ms);
  pos__v1__heartbeat__free_unpacked(hb, NULL);
  return 0;
}

static const char *decode_reason(Pos__V1__DeltaReason reason)
{
  switch (reason) {
  case POS__V1__DELTA_REASON__DELTA_REASON_SALES:
    return "sales";
  case POS__V1__DELTA_REASON__DELTA_REASON_REFUNDS:
    return "refunds";
  case POS__V1__DELTA_REASON__DELTA_REASON_DELIVERY:
    return "delivery";
  case POS__V1__DELTA_REASON__DELTA_REASON_WASTE:
    return "waste";
  case POS__V1__DELTA_REASON__DELTA_REASON_STOCK_COUNT:
    return "stock_count";
  default:
    return "unspecified";
  }
}

/* One line per delta: the quantity in the material's unit (thousandths
 * shown as decimals), signed (negative = out of stock). */
static int decode_delta(const uint8_t *data, size_t len)
{
  Pos__V1__InventoryDelta *d = pos__v1__inventory_delta__unpack(NULL, len, data);
  uint64_t magnitude;

  if (!d)
    return -1;
  magnitude = d->quantity_milli < 0 ? 0 - (uint64_t)d->quantity_milli : (uint64_t)d->quantity_milli;
  printf("store=%s rows=%" PRIu64 "-%" PRIu64 " material=%s reason=%s quantity=%s%" PRIu64
         ".%03u %s\n",
         d->store_id, d->first_seq, d->last_seq, d->material_id, decode_reason(d->reason),
         d->quantity_milli < 0 ? "-" : "+", magnitude / 1000, (unsigned)(magnitude % 1000),
         d->unit);
  pos__v1__inventory_delta__free_unpacked(d, NULL);
  return 0;
}

/* Decodes one record of `type`; 0, or -1 when it is not one. */
static int decode_record(const char *type, const uint8_t *data, size_t len)
{
  if (strcmp(type, "sale") == 0)
    return decode_sale(data, len);
  if (strcmp(type, "heartbeat") == 0)
    return decode_heartbeat(data, len);
  return decode_delta(data, len);
}

int main(int argc, char **argv)
{
  static const struct option options[] = {
      {"type", required_argument, NULL, 't'},
      {NULL, 0, NULL, 0},
  };
  const char *type = "sale";
  uint8_t *record = NULL;
  long count = 0;
  int opt, rc = 0;

  while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
    if (opt != 't') {
      fprintf(stderr,
              "usage: kcat -C ... -f '%%R%%s' | pos-decode [--type sale|heartbeat|delta]\n");
      return 2;
    }
    type = optarg;
  }
  if (strcmp(type, "sale") != 0 && strcmp(type, "heartbeat") != 0 &&
      strcmp(type, "delta") != 0) {
    fprintf(stderr, "pos-decode: --type must be sale, heartbeat or delta, not %s\n", type);
    return 2;
  }
  record = malloc(DECODE_MAX_RECORD);
  if (!record)
    return 1;
  for (;;) {
    uint8_t prefix[4];
    int32_t len;
    size_t got = fread(prefix, 1, sizeof(prefix), stdin);
    if (got == 0)
      break;
    if (got != sizeof(prefix)) {
      fprintf(stderr, "pos-decode: record %ld: truncated length prefix\n", count + 1);
      rc = 1;
      break;
    }
    len = (int32_t)((uint32_t)prefix[0] << 24 | (uint32_t)prefix[1] << 16 |
                    (uint32_t)prefix[2] << 8 | prefix[3]);
    count++;
    if (len < 0) {
      printf("null\n");
      continue;
    }
    if ((uint32_t)len > DECODE_MAX_RECORD || fread(record, 1, (size_t)len, stdin) != (size_t)len) {
      fprintf(stderr, "pos-decode: record %ld: truncated or larger than %u bytes\n", count,
              DECODE_MAX_RECORD);
      rc = 1;
      break;
    }
    if (decode_record(type, record, (size_t)len) != 0) {
      fprintf(stderr, "pos-decode: record %ld is not a pos.v1 %s\n", count, type);
      rc = 1;
    }
    fflush(stdout);
  }
  free(record);
  return rc;
}
