/*
 * batcher.c - journal rows to a zstd-compressed pos.v1.Batch, size-capped.
 */
#include "uplink/batcher.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/log.h"
#include "proto/codec.h"

int batcher_identity_init(struct batcher_identity *identity, const char *store_id,
                          const char *device_id, int zstd_level)
{
  memset(identity, 0, sizeof(*identity));
  if (strlen(store_id) > BATCHER_ID_MAX || strlen(device_id) > BATCHER_ID_MAX)
    return -1;
  memcpy(identity->store_id, store_id, strlen(store_id) + 1);
  memcpy(identity->device_id, device_id, strlen(device_id) + 1);
  snprintf(identity->agent_version, sizeof(identity->agent_version), "%s", POS_VERSION);
  identity->zstd_level = zstd_level;
  atomic_init(&identity->zstd_dictionary, PROTO_ZSTD_DICT_NONE);
  return 0;
}

void batcher_use_dictionary(struct batcher_identity *identity, uint32_t dict_id)
{
  atomic_store(&identity->zstd_dictionary, dict_id);
}

uint32_t batcher_dictionary(const struct batcher_identity *identity)
{
  /* C11 atomic_load takes a pointer to non-const; the load writes nothing. */
  return atomic_load((_Atomic uint32_t *)(uintptr_t)&identity->zstd_dictionary);
}

/* protobuf-c wants char * for strings it only reads. */
static char *batcher_text(const char *text) { return (char *)(uintptr_t)text; }

/* The protobuf view of every sale, pointing into the journal's rows. */
struct batcher_messages {
  Pos__V1__Sale *sales;
  Pos__V1__Sale **sale_ptrs;
  Pos__V1__SaleLine *lines;
  Pos__V1__SaleLine **line_ptrs;
  Pos__V1__Payment *payments;
  Pos__V1__Payment **payment_ptrs;
  Pos__V1__SaleOrigin *origins; /* Sale.carried_from, rarely any */
  Pos__V1__SaleOrigin **origin_ptrs;
  uint8_t (*origin_ids)[16];
};

static void batcher_messages_free(struct batcher_messages *m)
{
  free(m->sales);
  free(m->sale_ptrs);
  free(m->lines);
  free(m->line_ptrs);
  free(m->payments);
  free(m->payment_ptrs);
  free(m->origins);
  free(m->origin_ptrs);
  free(m->origin_ids);
}

/* Sale.carried_from of `msg` from the row's places in journals before. */
static int batcher_origins(struct batcher_messages *m, size_t *at, Pos__V1__Sale *msg,
                           const struct journal_seal_sale *row)
{
  msg->carried_from = &m->origin_ptrs[*at];
  msg->n_carried_from = row->carried_count;
  for (size_t c = 0; c < row->carried_count; c++, (*at)++) {
    Pos__V1__SaleOrigin *origin = &m->origins[*at];
    pos__v1__sale_origin__init(origin);
    if (proto_journal_id_parse(row->carried[c].journal_id, m->origin_ids[*at]))
      return -1;
    origin->journal_id.data = m->origin_ids[*at];
    origin->journal_id.len = 16;
    origin->seq = (uint64_t)row->carried[c].seq;
    m->origin_ptrs[*at] = origin;
  }
  return 0;
}

static int batcher_messages_build(struct batcher_messages *m, const struct batcher_identity *id,
                                  const struct journal_seal_sale *rows, size_t count)
{
  size_t line_total = 0, payment_total = 0, line_at = 0, payment_at = 0;
  size_t origin_total = 0, origin_at = 0;

  memset(m, 0, sizeof(*m));
  for (size_t i = 0; i < count; i++) {
    line_total += rows[i].sale.line_count;
    payment_total += rows[i].sale.payment_count;
    origin_total += rows[i].carried_count;
  }
  m->sales = calloc(count ? count : 1, sizeof(*m->sales));
  m->sale_ptrs = calloc(count ? count : 1, sizeof(*m->sale_ptrs));
  m->lines = calloc(line_total ? line_total : 1, sizeof(*m->lines));
  m->line_ptrs = calloc(line_total ? line_total : 1, sizeof(*m->line_ptrs));
  m->payments = calloc(payment_total ? payment_total : 1, sizeof(*m->payments));
  m->payment_ptrs = calloc(payment_total ? payment_total : 1, sizeof(*m->payment_ptrs));
  m->origins = calloc(origin_total ? origin_total : 1, sizeof(*m->origins));
  m->origin_ptrs = calloc(origin_total ? origin_total : 1, sizeof(*m->origin_ptrs));
  m->origin_ids = calloc(origin_total ? origin_total : 1, sizeof(*m->origin_ids));
  if (!m->sales || !m->sale_ptrs || !m->lines || !m->line_ptrs || !m->payments ||
      !m->payment_ptrs || !m->origins || !m->origin_ptrs || !m->origin_ids) {
    batcher_messages_free(m);
    return -1;
  }
  for (size_t i = 0; i < count; i++) {
    const struct sale *sale = &rows[i].sale;
    Pos__V1__Sale *msg = &m->sales[i];

    pos__v1__sale__init(msg);
    msg->sale_id = batcher_text(sale->sale_id);
    msg->kind = (Pos__V1__SaleKind)sale->kind;
    msg->original_sale_id = batcher_text(sale->original_sale_id);
    msg->terminal_id = batcher_text(sale->terminal_id);
    msg->cashier_id = batcher_text(sale->cashier_id);
    msg->channel = (Pos__V1__Channel)sale->channel;
    msg->delivery_partner = batcher_text(sale->delivery_partner);
    msg->business_time_ms = sale->business_time_ms;
    msg->utc_offset_minutes = sale->utc_offset_minutes;
    msg->currency = batcher_text(sale->currency);
    msg->currency_exponent = sale->currency_exponent;
    msg->total = sale->total;
    msg->lines = &m->line_ptrs[line_at];
    msg->n_lines = sale->line_count;
    for (size_t l = 0; l < sale->line_count; l++, line_at++) {
      Pos__V1__SaleLine *line = &m->lines[line_at];
      pos__v1__sale_line__init(line);
      line->sku = batcher_text(sale->lines[l].sku);
      line->quantity = sale->lines[l].qty;
      line->unit_price = sale->lines[l].unit_price;
      line->discount = sale->lines[l].discount;
      line->promo_id = batcher_text(sale->lines[l].promo_id);
      line->tax = sale->lines[l].tax;
      m->line_ptrs[line_at] = line;
    }
    msg->payments = &m->payment_ptrs[payment_at];
    msg->n_payments = sale->payment_count;
    for (size_t p = 0; p < sale->payment_count; p++, payment_at++) {
      Pos__V1__Payment *payment = &m->payments[payment_at];
      pos__v1__payment__init(payment);
      payment->method = batcher_text(sale->payments[p].method);
      payment->amount = sale->payments[p].amount;
      m->payment_ptrs[payment_at] = payment;
    }
    /* What the agent adds: the collector keys exactly-once on
     * (store, journal, seq). */
    msg->store_id = batcher_text(id->store_id);
    msg->seq = (uint64_t)rows[i].seq;
    msg->received_ms = rows[i].received_ms;
    msg->received_ms_untrusted = rows[i].received_untrusted != 0;
    if (batcher_origins(m, &origin_at, msg, &rows[i])) {
      batcher_messages_free(m);
      return -1;
    }
    m->sale_ptrs[i] = msg;
  }
  return 0;
}

/* The inventory deltas of the rows a batch of `count` sales covers,
 * aggregated per (material, unit, reason), as protobuf messages pointing
 * into `sum` (which the caller clears). Unmapped lines are the agent's own
 * record, not stock: never sent. */
struct batcher_deltas {
  struct stock_deltas sum;
  Pos__V1__InventoryDelta *messages;
  Pos__V1__InventoryDelta **ptrs;
  size_t count;
};

static void batcher_deltas_free(struct batcher_deltas *d)
{
  stock_deltas_clear(&d->sum);
  free(d->messages);
  free(d->ptrs);
  memset(d, 0, sizeof(*d));
}

static int batcher_deltas_build(struct batcher_deltas *d, const struct batcher_identity *id,
                                const struct journal_seal_input *in, const uint8_t journal_id[16],
                                size_t count, int64_t *first_seq, int64_t *last_seq)
{
  int64_t start_ms = INT64_MAX, end_ms = INT64_MIN;
  size_t rows = 0;

  memset(d, 0, sizeof(*d));
  journal_seal_covered(in, count, last_seq, &rows);
  *first_seq = in->rows[0].seq;
  for (size_t r = 0; r < rows; r++) {
    const struct stock_deltas *row = &in->rows[r].deltas;
    if (in->rows[r].business_time_ms < start_ms)
      start_ms = in->rows[r].business_time_ms;
    if (in->rows[r].business_time_ms > end_ms)
      end_ms = in->rows[r].business_time_ms;
    for (size_t k = 0; k < row->count; k++) {
      if (row->items[k].reason != STOCK_REASON_UNMAPPED &&
          stock_deltas_add(&d->sum, row->items[k].material_id, row->items[k].unit,
                           row->items[k].reason, row->items[k].quantity_milli))
        return -1;
    }
  }
  d->messages = calloc(d->sum.count ? d->sum.count : 1, sizeof(*d->messages));
  d->ptrs = calloc(d->sum.count ? d->sum.count : 1, sizeof(*d->ptrs));
  if (!d->messages || !d->ptrs)
    return -1;
  for (size_t i = 0; i < d->sum.count; i++) {
    const struct stock_delta *e = &d->sum.items[i];
    Pos__V1__InventoryDelta *msg = &d->messages[d->count];
    if (e->quantity_milli == 0)
      continue; /* a count that found what was expected moves nothing */
    pos__v1__inventory_delta__init(msg);
    msg->material_id = batcher_text(e->material_id);
    msg->unit = batcher_text(e->unit);
    msg->quantity_milli = e->quantity_milli;
    msg->reason = (Pos__V1__DeltaReason)e->reason;
    msg->period_start_ms = start_ms;
    msg->period_end_ms = end_ms;
    msg->store_id = batcher_text(id->store_id);
    msg->journal_id.data = (uint8_t *)(uintptr_t)journal_id;
    msg->journal_id.len = 16;
    msg->first_seq = (uint64_t)*first_seq;
    msg->last_seq = (uint64_t)*last_seq;
    d->ptrs[d->count++] = msg;
  }
  return 0;
}

/* BatchEnvelope.carried_rows: the earlier places of the rows first..last
 * that are not sales (adjustments carried over from an earlier journal). */
struct batcher_row_origins {
  Pos__V1__SaleOrigin *items;
  Pos__V1__SaleOrigin **ptrs;
  uint8_t (*ids)[16];
  size_t count;
};

static void batcher_row_origins_free(struct batcher_row_origins *o)
{
  free(o->items);
  free(o->ptrs);
  free(o->ids);
  memset(o, 0, sizeof(*o));
}

static int batcher_row_origins(struct batcher_row_origins *o, const struct journal_seal_input *in,
                               int64_t first_seq, int64_t last_seq)
{
  size_t n = in->row_origin_count ? in->row_origin_count : 1;

  memset(o, 0, sizeof(*o));
  if (!in->row_origin_count)
    return 0;
  o->items = calloc(n, sizeof(*o->items));
  o->ptrs = calloc(n, sizeof(*o->ptrs));
  o->ids = calloc(n, sizeof(*o->ids));
  if (!o->items || !o->ptrs || !o->ids)
    return -1;
  for (size_t i = 0; i < in->row_origin_count; i++) {
    Pos__V1__SaleOrigin *origin = &o->items[o->count];
    if (in->row_origin_seqs[i] < first_seq || in->row_origin_seqs[i] > last_seq ||
        proto_journal_id_parse(in->row_origins[i].journal_id, o->ids[o->count]))
      continue;
    pos__v1__sale_origin__init(origin);
    origin->journal_id.data = o->ids[o->count];
    origin->journal_id.len = 16;
    origin->seq = (uint64_t)in->row_origins[i].seq;
    o->ptrs[o->count++] = origin;
  }
  return 0;
}

/* Packs the first `count` sales. *decoded_len is the protobuf's size before
 * compression; when it is over `max_decoded` (0 = no cap) and more than one
 * sale is asked for, nothing is compressed: *body stays NULL and the caller
 * tries fewer. */
int batcher_zstd_level(int configured, size_t packed_len)
{
  if (configured >= 1)
    return configured;
  return packed_len <= BATCHER_SMALL_BATCH ? 19 : 3;
}

static int batcher_pack_count(const struct batcher_identity *id, uint32_t dict_id,
                              const struct journal_seal_input *in, const uint8_t journal_id[16],
                              struct batcher_messages *m, size_t count, size_t max_decoded,
                              uint8_t **body, size_t *body_len, size_t *decoded_len)
{
  Pos__V1__Batch batch = POS__V1__BATCH__INIT;
  Pos__V1__BatchEnvelope envelope = POS__V1__BATCH_ENVELOPE__INIT;
  struct batcher_deltas deltas;
  struct batcher_row_origins origins = {0};
  int64_t first_seq = 0, last_seq = 0;
  int rc;

  envelope.store_id = batcher_text(id->store_id);
  envelope.device_id = batcher_text(id->device_id);
  envelope.journal_id.data = (uint8_t *)(uintptr_t)journal_id;
  envelope.journal_id.len = 16;
  envelope.batch_seq = (uint64_t)in->batch_seq;
  envelope.kind = in->resync_id ? POS__V1__BATCH_KIND__BATCH_KIND_REPLAY
                                : POS__V1__BATCH_KIND__BATCH_KIND_LIVE;
  envelope.resync_id = batcher_text(in->resync_id ? in->resync_id : "");
  envelope.created_ms = in->created_ms;
  envelope.agent_version = batcher_text(id->agent_version);
  envelope.zstd_dictionary = dict_id;
  *body = NULL;
  *body_len = 0;
  /* The batch covers every journal row (sales and adjustments) from the
   * first unsealed one to the last before the next sale it does not take,
   * and carries their deltas, computed when each row was journaled. */
  if (batcher_deltas_build(&deltas, id, in, journal_id, count, &first_seq, &last_seq)) {
    batcher_deltas_free(&deltas);
    return PROTO_ENOMEM;
  }
  envelope.first_seq = (uint64_t)first_seq;
  envelope.last_seq = (uint64_t)last_seq;
  envelope.sale_count = (uint32_t)count;
  if (batcher_row_origins(&origins, in, first_seq, last_seq)) {
    batcher_deltas_free(&deltas);
    return PROTO_ENOMEM;
  }
  envelope.carried_rows = origins.ptrs;
  envelope.n_carried_rows = origins.count;
  batch.envelope = &envelope;
  batch.sales = m->sale_ptrs;
  batch.n_sales = count;
  batch.inventory_deltas = deltas.ptrs;
  batch.n_inventory_deltas = deltas.count;
  *decoded_len = pos__v1__batch__get_packed_size(&batch);
  if (max_decoded && *decoded_len > max_decoded && count > 1)
    rc = 0;
  else
    rc = proto_batch_pack_dict(&batch, batcher_zstd_level(id->zstd_level, *decoded_len), dict_id,
                               body, body_len);
  batcher_deltas_free(&deltas);
  batcher_row_origins_free(&origins);
  return rc;
}

/* A smaller count for a batch `size` bytes over a cap of `cap`: scaled by
 * how far over it is, with a 10% margin since neither compression nor
 * encoding is linear, and always by at least one, so shrinking ends after a
 * few tries. */
static size_t batcher_shrink(size_t count, size_t size, size_t cap)
{
  size_t smaller = (size_t)((double)count * (double)cap / (double)size * 0.9);
  if (smaller >= count)
    smaller = count - 1;
  if (smaller == 0)
    smaller = 1;
  return smaller;
}

int batcher_pack(void *pack_arg, const struct journal_seal_input *in, uint8_t **body,
                 size_t *body_len, size_t *used)
{
  const struct batcher_identity *id = pack_arg;
  /* Read once: the tries of one seal compare sizes of the same compression. */
  uint32_t dict_id = batcher_dictionary(id);
  struct batcher_messages m;
  uint8_t journal_id[16];
  size_t count = in->count;
  int rc;

  *body = NULL;
  *body_len = 0;
  *used = 0;
  if (in->row_count == 0 || proto_journal_id_parse(in->journal_id, journal_id))
    return JOURNAL_EINVAL;
  if (batcher_messages_build(&m, id, in->sales, in->count))
    return JOURNAL_ENOMEM;
  for (;;) {
    uint8_t *packed = NULL;
    size_t packed_len = 0, decoded_len = 0;

    rc = batcher_pack_count(id, dict_id, in, journal_id, &m, count, in->max_decoded_bytes,
                            &packed, &packed_len, &decoded_len);
    if (rc) {
      rc = rc == PROTO_ENOMEM ? JOURNAL_ENOMEM : JOURNAL_EINVAL;
      break;
    }
    if (!packed) {
      /* Over the collector's decoded limit: it would refuse the batch
       * (400) however well it compresses. */
      count = batcher_shrink(count, decoded_len, in->max_decoded_bytes);
      continue;
    }
    if (packed_len <= in->max_bytes || count <= 1) {
      if (packed_len > in->max_bytes)
        log_warn("batcher", "sale_over_cap",
                 "seq=%lld bytes=%zu max_batch_bytes=%zu reason=\"one sale is larger than "
                 "the batch cap; it is sent alone\"",
                 (long long)in->rows[0].seq, packed_len, in->max_bytes);
      if (in->max_decoded_bytes && decoded_len > in->max_decoded_bytes)
        log_warn("batcher", "sale_over_decoded_limit",
                 "seq=%lld decoded_bytes=%zu max_batch_decoded_bytes=%zu reason=\"one sale is "
                 "larger than the collector's decoded limit; it is sent alone\"",
                 (long long)in->rows[0].seq, decoded_len, in->max_decoded_bytes);
      *body = packed;
      *body_len = packed_len;
      *used = count;
      break;
    }
    free(packed);
    count = batcher_shrink(count, packed_len, in->max_bytes);
  }
  batcher_messages_free(&m);
  return rc;
}
