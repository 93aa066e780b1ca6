/*
 * pos_batch.c - pos-batch: one store device's uplink, by hand. Builds a
 * pos.v1.Batch from its arguments and writes the zstd body to a file or
 * POSTs it to the collector over mutual TLS, printing the answer.
 *
 *   pos-batch --url https://127.0.0.1:PORT --cert C --key K --cacert CA
 *             [--store S001] [--device D1] [--journal HEX32] [--batch-seq N]
 *             [--first-seq S] [--sales N] [--prefix P] [--invalid I]
 *             [--kind live|replay] [--resync-id R] [--time-base-ms MS]
 *             [--deltas N] [--count N] [--quiet] [--timeout S]
 *             [--zstd-level N] [--zstd-dict ID] [--omit-sale-store]
 *   pos-batch --out FILE [--json-out FILE] [--pb-out FILE [--compact-sales]]
 *             [content options]
 *   pos-batch --bodies-out FILE --count N [content options]
 *   pos-batch --url ... --bodies FILE [--quiet] [--timeout S]
 *   pos-batch --bomb stream|declared [--bomb-size BYTES] ...
 *   pos-batch --garbage random|zstd|truncated|trailing ...
 *
 * The sales are a pure function of (prefix, seq, time base): sale_id is
 * "<prefix>-<seq>", and every field (terminal, cashier, channel, lines,
 * promotions, taxes, payments) is drawn from a generator seeded by them, so
 * the same arguments give the same bytes and a resend is byte for byte the
 * first send. --invalid I makes the I-th sale of the batch (0-based) fail
 * validation: its total is one cent off its lines (field "total").
 *
 * --deltas N adds N inventory deltas to each batch, as an agent aggregates
 * them per material over the rows the batch covers: delta k (1..N) is
 * material "MAT-<k>", unit g, quantity_milli -(k * 1000 * sales), reason
 * sales, first_seq/last_seq the batch's first and last seq. A batch sent
 * again with other --batch-seq/--first-seq/--sales covers other rows (a
 * re-cut batch), so its deltas say so.
 *
 * --count N sends N consecutive batches on one keep-alive connection:
 * batch i has batch_seq B+i and the seqs after batch i-1's. Each request is
 * timed (from the first byte sent to the last byte received, the body
 * already built), and a summary line gives sales/s and latency p50/p99.
 *
 * --bodies-out FILE writes the --count batches' bodies to FILE instead of
 * sending them (each as a 4-byte big-endian length, a 4-byte big-endian
 * sale count, then the body), and --bodies FILE sends those bodies as they
 * are, one per request: a benchmark builds (protobuf, zstd) before it
 * measures, so the client's work on the shared cores is only its HTTP.
 *
 * --warm opens the connection (TCP and the mutual TLS handshake) with a
 * GET /healthz on it before the first batch, so the batches' clock and
 * latencies are the steady state of a connected store; the connection's
 * own cost is in the summary (connect_ms, connect_cpu_ms). --ready-file R
 * --go-file G (implies --warm) then creates R and waits until G exists
 * before the first batch: a benchmark starts its clock once every store is
 * connected. The summary's new_connections counts the connections opened
 * during the batches (0 when the warm one was kept alive throughout).
 *
 * Output, one line per request (unless --quiet):
 *   status=200 acked_batch_seq=1 expected_batch_seq=0 duplicate=0 retry_after=
 *     batch_seq=1 sales=10 body_bytes=812 ms=3.1 local_port=40212
 *     journal_id=<hex> commands=<id,id...|-> zstd_dictionaries=<id,id...|->
 *     message="..."
 * (status=0 curl_error=N error="..." when no HTTP answer came back, e.g. a
 * refused TLS handshake.) With --count > 1 a summary line follows:
 *   batches=N sales=N answered_200=N other=N seconds=S sales_per_s=R
 *     latency_p50_ms=X latency_p99_ms=Y latency_max_ms=Z cpu_ms=C
 * (cpu_ms: this process's user+system CPU from the first request to the
 * last answer.) With --warm or --ready-file the summary also has
 *   connect_ms=X connect_cpu_ms=Y new_connections=N
 * With --out: "wrote=FILE body_bytes=N sales=N journal_id=<hex>".
 *
 * Exit status: 0 every request got an HTTP answer (whatever its status), 3
 * a request got none, 1 another failure, 2 bad usage.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "proto/codec.h"

struct batch_options {
  const char *url;
  const char *cert;
  const char *key;
  const char *cacert;
  const char *out_path;
  const char *json_path;
  const char *store;
  const char *device;
  const char *prefix;
  const char *kind;
  const char *resync_id;
  const char *bomb;
  const char *garbage;
  const char *bodies_out;
  const char *bodies;
  const char *ready_file;
  const char *go_file;
  uint8_t journal_id[16];
  char journal_hex[33];
  uint64_t batch_seq;
  uint64_t first_seq;
  long sales;
  long deltas;
  long invalid;      /* index within the batch, -1 = none */
  long count;
  long timeout_s;
  long long bomb_size;
  long long time_base_ms;
  int quiet;
  int warm;
  int zstd_level;       /* --zstd-level, 3 by default; 0 the agent's choice by size */
  uint32_t zstd_dict;   /* --zstd-dict, PROTO_ZSTD_DICT_NONE by default */
  int omit_sale_store;  /* --omit-sale-store: no store_id/city/zone in the sales */
  const char *pb_path;  /* --pb-out: the protobuf before compression */
  int compact_sales;    /* --compact-sales: --pb-out in the compact encoding */
};

/* A growable byte buffer. */
struct batch_bytes {
  uint8_t *data;
  size_t length;
  size_t capacity;
};

static void batch_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void batch_die(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("pos-batch: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

static void *batch_alloc(size_t size)
{
  void *p = calloc(1, size ? size : 1);
  if (!p) {
    fputs("pos-batch: out of memory\n", stderr);
    exit(1);
  }
  return p;
}

static void batch_bytes_append(struct batch_bytes *bytes, const void *data, size_t length)
{
  if (bytes->length + length > bytes->capacity) {
    size_t capacity = bytes->capacity ? bytes->capacity : 4096;
    while (capacity < bytes->length + length)
      capacity *= 2;
    uint8_t *grown = realloc(bytes->data, capacity);
    if (!grown) {
      fputs("pos-batch: out of memory\n", stderr);
      exit(1);
    }
    bytes->data = grown;
    bytes->capacity = capacity;
  }
  memcpy(bytes->data + bytes->length, data, length);
  bytes->length += length;
}

static double batch_now_s(void)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static long long batch_parse_ll(const char *option, const char *text, long long min,
                                long long max)
{
  char *end;
  errno = 0;
  long long value = strtoll(text, &end, 10);
  long long scale = 1;
  if (end != text && (*end == 'K' || *end == 'k'))
    scale = 1024, end++;
  else if (end != text && (*end == 'M' || *end == 'm'))
    scale = 1024 * 1024, end++;
  if (errno || end == text || *end != '\0' || value < min || value > max / scale)
    batch_die("%s \"%s\": expected an integer in %lld..%lld", option, text, min, max);
  return value * scale;
}

static void batch_parse_journal(struct batch_options *options, const char *text)
{
  if (proto_journal_id_parse(text, options->journal_id))
    batch_die("--journal \"%s\": expected 32 hex digits (16 bytes)", text);
}

static void batch_random_journal(struct batch_options *options)
{
  int fd = open("/dev/urandom", O_RDONLY);
  if (fd < 0 || read(fd, options->journal_id, 16) != 16) {
    fprintf(stderr, "pos-batch: cannot read /dev/urandom: %s\n", strerror(errno));
    exit(1);
  }
  close(fd);
}

/* ---- deterministic sales ---------------------------------------------- */

/* splitmix64 */
static uint64_t batch_rng_next(uint64_t *state)
{
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static unsigned batch_rng_below(uint64_t *state, unsigned bound)
{
  return (unsigned)(batch_rng_next(state) % bound);
}

struct batch_menu_item {
  const char *sku;
  int64_t price; /* EUR cents */
  int vat_percent;
};

static const struct batch_menu_item batch_menu[] = {
    {"PIZZA-MARG-S", 850, 10},      {"PIZZA-MARG-M", 1050, 10},     {"PIZZA-MARG-L", 1250, 10},
    {"PIZZA-PEPP-M", 1190, 10},     {"PIZZA-PEPP-L", 1400, 10},     {"PIZZA-QUAT-L", 1520, 10},
    {"PIZZA-HAWA-M", 1170, 10},     {"PIZZA-DIAV-L", 1460, 10},     {"CALZONE-CLAS", 1300, 10},
    {"SIDE-GARLIC-BREAD", 420, 10}, {"SIDE-WINGS-6", 690, 10},      {"DESSERT-TIRAMISU", 550, 10},
    {"DRINK-COLA-033", 250, 22},    {"DRINK-WATER-050", 180, 22},   {"DRINK-BEER-033", 390, 22},
};
#define BATCH_MENU_COUNT (sizeof(batch_menu) / sizeof(batch_menu[0]))

static const char *const batch_partners[] = {"Deliveroo", "JustEat", "UberEats", "Glovo"};
static const char *const batch_channel_names[] = {"", "pos", "online", "delivery", "pickup"};

/* One generated sale and the storage its pointers borrow. */
struct batch_sale {
  Pos__V1__Sale msg;
  char sale_id[80];
  char terminal_id[8];
  char cashier_id[8];
  char promo_ids[4][12];
  Pos__V1__SaleLine lines[4];
  Pos__V1__SaleLine *line_ptrs[4];
  Pos__V1__Payment payments[2];
  Pos__V1__Payment *payment_ptrs[2];
};

/* Fills `out` with sale `seq` of store `store`: a function of its arguments only. */
static void batch_make_sale(struct batch_sale *out, const struct batch_options *options,
                            uint64_t seq, int invalid)
{
  uint64_t state = 0xba7c4ULL;
  Pos__V1__Sale init = POS__V1__SALE__INIT;

  for (const char *p = options->prefix; *p; p++)
    state = state * 131 + (unsigned char)*p;
  state ^= seq * 0x100000001b3ULL;
  batch_rng_next(&state);

  memset(out, 0, sizeof(*out));
  out->msg = init;
  snprintf(out->sale_id, sizeof(out->sale_id), "%s-%" PRIu64, options->prefix, seq);
  snprintf(out->terminal_id, sizeof(out->terminal_id), "T%u", 1 + batch_rng_below(&state, 4));
  out->msg.sale_id = out->sale_id;
  out->msg.kind = POS__V1__SALE_KIND__SALE_KIND_SALE;
  out->msg.terminal_id = out->terminal_id;

  unsigned channel_pick = batch_rng_below(&state, 100);
  out->msg.channel = channel_pick < 75   ? POS__V1__CHANNEL__CHANNEL_POS
                     : channel_pick < 85 ? POS__V1__CHANNEL__CHANNEL_ONLINE
                     : channel_pick < 95 ? POS__V1__CHANNEL__CHANNEL_DELIVERY
                                         : POS__V1__CHANNEL__CHANNEL_PICKUP;
  if (out->msg.channel != POS__V1__CHANNEL__CHANNEL_ONLINE) {
    snprintf(out->cashier_id, sizeof(out->cashier_id), "E%03u", 1 + batch_rng_below(&state, 40));
    out->msg.cashier_id = out->cashier_id;
  }
  if (out->msg.channel == POS__V1__CHANNEL__CHANNEL_DELIVERY)
    out->msg.delivery_partner = (char *)(uintptr_t)batch_partners[batch_rng_below(&state, 4)];
  /* Sold in the hour before the time base, one sale every few seconds. */
  out->msg.business_time_ms =
      options->time_base_ms - 3600000 + (int64_t)(seq % 1000) * 3500 + batch_rng_below(&state, 1000);
  out->msg.utc_offset_minutes = 60;
  out->msg.currency = "EUR";
  out->msg.currency_exponent = 2;

  int64_t total = 0;
  size_t line_count = 1 + batch_rng_below(&state, 4);
  for (size_t i = 0; i < line_count; i++) {
    const struct batch_menu_item *item = &batch_menu[batch_rng_below(&state, BATCH_MENU_COUNT)];
    Pos__V1__SaleLine line = POS__V1__SALE_LINE__INIT;
    line.sku = (char *)(uintptr_t)item->sku;
    line.quantity = 1 + batch_rng_below(&state, 3);
    line.unit_price = item->price;
    int64_t gross = line.quantity * line.unit_price;
    if (batch_rng_below(&state, 5) == 0) {
      line.discount = gross * (10 + batch_rng_below(&state, 21)) / 100;
      snprintf(out->promo_ids[i], sizeof(out->promo_ids[i]), "TPR-%u",
               1 + batch_rng_below(&state, 60));
      line.promo_id = out->promo_ids[i];
    }
    line.tax = ((gross - line.discount) * item->vat_percent + 50) / 100;
    total += gross - line.discount + line.tax;
    out->lines[i] = line;
    out->line_ptrs[i] = &out->lines[i];
  }
  out->msg.n_lines = line_count;
  out->msg.lines = out->line_ptrs;

  Pos__V1__Payment payment_init = POS__V1__PAYMENT__INIT;
  out->payments[0] = payment_init;
  out->payments[1] = payment_init;
  out->payment_ptrs[0] = &out->payments[0];
  out->payment_ptrs[1] = &out->payments[1];
  if (batch_rng_below(&state, 100) < 10 && total > 200) {
    out->payments[0].method = "cash";
    out->payments[0].amount = total / 2;
    out->payments[1].method = "card";
    out->payments[1].amount = total - total / 2;
    out->msg.n_payments = 2;
  } else {
    out->payments[0].method = out->msg.channel == POS__V1__CHANNEL__CHANNEL_ONLINE ? "online"
                                                                                   : "card";
    out->payments[0].amount = total;
    out->msg.n_payments = 1;
  }
  out->msg.payments = out->payment_ptrs;
  out->msg.total = total;
  if (invalid) {
    /* One cent off the lines' sum, and payments following it: only the
     * total is wrong. */
    out->msg.total = total + 1;
    out->payments[out->msg.n_payments - 1].amount += 1;
  }

  out->msg.store_id = (char *)(uintptr_t)options->store;
  out->msg.seq = seq;
  out->msg.received_ms = out->msg.business_time_ms + 150;
  out->msg.store_city = "Milano";
  out->msg.time_zone = "Europe/Rome";
  if (options->omit_sale_store) {
    /* As the agent's sales are: it has no city or zone, and its compact
     * sales leave the store to the envelope (wire_bench's agent column,
     * proto/dict/train.sh's samples for sales-2). */
    out->msg.store_id = "";
    out->msg.store_city = "";
    out->msg.time_zone = "";
  }
}

/* ---- JSON lines (the benchmark's comparison) --------------------------- */

static void batch_json_money(FILE *out, int64_t cents)
{
  const char *sign = cents < 0 ? "-" : "";
  int64_t magnitude = cents < 0 ? -cents : cents;
  fprintf(out, "\"%s%" PRId64 ".%02" PRId64 "\"", sign, magnitude / 100, magnitude % 100);
}

/* The same sale as one line of JSON, as an export of the journal would be. */
static void batch_json_sale(FILE *out, const Pos__V1__Sale *sale)
{
  time_t local = (time_t)(sale->business_time_ms / 1000 + (int64_t)sale->utc_offset_minutes * 60);
  struct tm tm;
  char when[32];
  int offset = sale->utc_offset_minutes < 0 ? -sale->utc_offset_minutes : sale->utc_offset_minutes;

  gmtime_r(&local, &tm);
  strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
  fprintf(out, "{\"store_id\":\"%s\",\"seq\":%" PRIu64 ",\"sale_id\":\"%s\",\"kind\":\"sale\","
          "\"terminal_id\":\"%s\"", sale->store_id, sale->seq, sale->sale_id, sale->terminal_id);
  if (sale->cashier_id[0])
    fprintf(out, ",\"cashier_id\":\"%s\"", sale->cashier_id);
  fprintf(out, ",\"channel\":\"%s\"", batch_channel_names[sale->channel]);
  if (sale->delivery_partner[0])
    fprintf(out, ",\"delivery_partner\":\"%s\"", sale->delivery_partner);
  fprintf(out, ",\"business_time\":\"%s.%03d%c%02d:%02d\",\"currency\":\"%s\",\"lines\":[", when,
          (int)(sale->business_time_ms % 1000), sale->utc_offset_minutes < 0 ? '-' : '+',
          offset / 60, offset % 60, sale->currency);
  for (size_t i = 0; i < sale->n_lines; i++) {
    const Pos__V1__SaleLine *line = sale->lines[i];
    fprintf(out, "%s{\"sku\":\"%s\",\"qty\":%" PRId64 ",\"unit_price\":", i ? "," : "", line->sku,
            line->quantity);
    batch_json_money(out, line->unit_price);
    fputs(",\"discount\":", out);
    batch_json_money(out, line->discount);
    if (line->promo_id[0])
      fprintf(out, ",\"promo_id\":\"%s\"", line->promo_id);
    fputs(",\"tax\":", out);
    batch_json_money(out, line->tax);
    fputc('}', out);
  }
  fputs("],\"payments\":[", out);
  for (size_t i = 0; i < sale->n_payments; i++) {
    fprintf(out, "%s{\"method\":\"%s\",\"amount\":", i ? "," : "", sale->payments[i]->method);
    batch_json_money(out, sale->payments[i]->amount);
    fputc('}', out);
  }
  fputs("],\"total\":", out);
  batch_json_money(out, sale->total);
  fprintf(out, ",\"received_ms\":%" PRId64 ",\"store_city\":\"%s\",\"time_zone\":\"%s\"}\n",
          sale->received_ms, sale->store_city, sale->time_zone);
}

/* ---- bodies ------------------------------------------------------------- */

/*
 * The body of batch number `index` (0-based) of this run: the batch's
 * zstd+protobuf, or with --bomb/--garbage the hostile body asked for.
 * Caller frees *body. Writes the sales as JSON lines to `json` if not NULL.
 */
static void batch_build(const struct batch_options *options, long index, uint8_t **body,
                        size_t *body_len, FILE *json)
{
  uint64_t batch_seq = options->batch_seq + (uint64_t)index;
  uint64_t first_seq = options->first_seq + (uint64_t)index * (uint64_t)options->sales;
  size_t count = (size_t)options->sales;
  struct batch_sale *sales = batch_alloc(count * sizeof(*sales));
  Pos__V1__Sale **sale_ptrs = batch_alloc(count * sizeof(*sale_ptrs));
  Pos__V1__BatchEnvelope envelope = POS__V1__BATCH_ENVELOPE__INIT;
  Pos__V1__Batch batch = POS__V1__BATCH__INIT;
  size_t delta_count = (size_t)options->deltas;
  Pos__V1__InventoryDelta *deltas = batch_alloc(delta_count * sizeof(*deltas));
  Pos__V1__InventoryDelta **delta_ptrs = batch_alloc(delta_count * sizeof(*delta_ptrs));
  char (*materials)[24] = batch_alloc(delta_count * sizeof(*materials));

  for (size_t i = 0; i < count; i++) {
    batch_make_sale(&sales[i], options, first_seq + i, (long)i == options->invalid);
    sale_ptrs[i] = &sales[i].msg;
    if (json)
      batch_json_sale(json, &sales[i].msg);
  }
  envelope.store_id = (char *)(uintptr_t)options->store;
  envelope.device_id = (char *)(uintptr_t)options->device;
  envelope.journal_id.data = (uint8_t *)(uintptr_t)options->journal_id;
  envelope.journal_id.len = 16;
  envelope.batch_seq = batch_seq;
  if (strcmp(options->kind, "replay") == 0) {
    envelope.kind = POS__V1__BATCH_KIND__BATCH_KIND_REPLAY;
    envelope.resync_id = (char *)(uintptr_t)options->resync_id;
  } else {
    envelope.kind = POS__V1__BATCH_KIND__BATCH_KIND_LIVE;
  }
  envelope.created_ms = options->time_base_ms + (int64_t)batch_seq;
  envelope.agent_version = "pos-batch";
  envelope.first_seq = count ? first_seq : 0;
  envelope.last_seq = count ? first_seq + count - 1 : 0;
  envelope.sale_count = (uint32_t)count;
  envelope.zstd_dictionary = options->zstd_dict;
  for (size_t k = 0; k < delta_count; k++) {
    Pos__V1__InventoryDelta *delta = &deltas[k];
    pos__v1__inventory_delta__init(delta);
    snprintf(materials[k], sizeof(materials[k]), "MAT-%zu", k + 1);
    delta->material_id = materials[k];
    delta->unit = "g";
    delta->quantity_milli = -(int64_t)(k + 1) * 1000 * (int64_t)count;
    delta->reason = POS__V1__DELTA_REASON__DELTA_REASON_SALES;
    delta->period_start_ms = options->time_base_ms - 3600000;
    delta->period_end_ms = options->time_base_ms;
    delta->first_seq = envelope.first_seq;
    delta->last_seq = envelope.last_seq;
    delta_ptrs[k] = delta;
  }
  batch.envelope = &envelope;
  batch.n_sales = count;
  batch.sales = sale_ptrs;
  batch.n_inventory_deltas = delta_count;
  batch.inventory_deltas = delta_ptrs;
  /* 0: as the agent's batcher_zstd_level chooses for its default (19 up
   * to 32 KiB of protobuf before compression, 3 above; agent/uplink/batcher.h). */
  int level = options->zstd_level
                  ? options->zstd_level
                  : pos__v1__batch__get_packed_size(&batch) <= 32 * 1024 ? 19 : 3;
  int rc = proto_batch_pack_dict(&batch, level, options->zstd_dict, body, body_len);
  if (rc == 0 && options->pb_path && index == 0) {
    /* The protobuf before compression (canonical, or compact for training
     * a dictionary on compact sales: proto/dict/train.sh). */
    uint8_t *pb = NULL;
    size_t pb_len = 0;
    FILE *out;
    rc = proto_batch_serialize(&batch, options->compact_sales, &pb, &pb_len);
    out = rc == 0 ? fopen(options->pb_path, "wb") : NULL;
    if (rc == 0 && (!out || fwrite(pb, 1, pb_len, out) != pb_len || fclose(out) != 0)) {
      fprintf(stderr, "pos-batch: cannot write %s: %s\n", options->pb_path, strerror(errno));
      exit(1);
    }
    free(pb);
  }
  if (rc) {
    fprintf(stderr, "pos-batch: cannot pack the batch: %s\n", proto_strerror(rc));
    exit(1);
  }
  free(sale_ptrs);
  free(sales);
  free(deltas);
  free(delta_ptrs);
  free(materials);
}

/*
 * A decompression bomb: a few kilobytes of zstd that expand to
 * options->bomb_size zero bytes. "stream" leaves the content size out of
 * the frame header, so the receiver only finds out while decompressing;
 * "declared" writes it, so the receiver can refuse up front.
 */
static void batch_build_bomb(const struct batch_options *options, uint8_t **body,
                             size_t *body_len)
{
  size_t chunk_size = 1024 * 1024;
  uint8_t *zeros = batch_alloc(chunk_size);
  struct batch_bytes out = {0};
  size_t out_cap = ZSTD_CStreamOutSize();
  uint8_t *out_buf = batch_alloc(out_cap);
  ZSTD_CCtx *cctx = ZSTD_createCCtx();
  unsigned long long left = (unsigned long long)options->bomb_size;
  int declared = strcmp(options->bomb, "declared") == 0;

  if (!cctx)
    batch_die("cannot create a zstd context");
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, declared);
  if (declared)
    ZSTD_CCtx_setPledgedSrcSize(cctx, left);
  for (;;) {
    size_t now = left < chunk_size ? (size_t)left : chunk_size;
    ZSTD_EndDirective mode = ZSTD_e_continue;
    ZSTD_inBuffer in = {zeros, now, 0};
    left -= now;
    if (left == 0)
      mode = ZSTD_e_end;
    for (;;) {
      ZSTD_outBuffer o = {out_buf, out_cap, 0};
      size_t remaining = ZSTD_compressStream2(cctx, &o, &in, mode);
      if (ZSTD_isError(remaining))
        batch_die("zstd: %s", ZSTD_getErrorName(remaining));
      batch_bytes_append(&out, out_buf, o.pos);
      if (mode == ZSTD_e_end ? remaining == 0 : in.pos == in.size)
        break;
    }
    if (left == 0)
      break;
  }
  ZSTD_freeCCtx(cctx);
  free(out_buf);
  free(zeros);
  *body = out.data;
  *body_len = out.length;
}

/* A body that is not a batch: see --garbage in the usage. */
static void batch_build_garbage(const struct batch_options *options, uint8_t **body,
                                size_t *body_len)
{
  if (strcmp(options->garbage, "random") == 0) {
    /* Not zstd at all (the first byte is never zstd's magic 0x28). */
    uint64_t state = 0x9a5ba9eULL;
    size_t length = 4096;
    uint8_t *bytes = batch_alloc(length);
    for (size_t i = 0; i < length; i++)
      bytes[i] = (uint8_t)batch_rng_next(&state);
    bytes[0] = 0xff;
    *body = bytes;
    *body_len = length;
    return;
  }
  if (strcmp(options->garbage, "zstd") == 0) {
    /* A valid zstd frame around bytes that are not a pos.v1.Batch. */
    static const char text[] = "this is not a protobuf batch \xff\xff\xff\xff\xff\xff\xff";
    size_t bound = ZSTD_compressBound(sizeof(text));
    uint8_t *bytes = batch_alloc(bound);
    size_t written = ZSTD_compress(bytes, bound, text, sizeof(text), 3);
    if (ZSTD_isError(written))
      batch_die("zstd: %s", ZSTD_getErrorName(written));
    *body = bytes;
    *body_len = written;
    return;
  }
  /* truncated / trailing: a real batch, cut short or with bytes after its frame. */
  batch_build(options, 0, body, body_len, NULL);
  if (strcmp(options->garbage, "truncated") == 0) {
    *body_len = *body_len * 2 / 3;
  } else {
    uint8_t *longer = realloc(*body, *body_len + 16);
    if (!longer)
      batch_die("out of memory");
    memset(longer + *body_len, 0x5a, 16);
    *body = longer;
    *body_len += 16;
  }
}

/* ---- sending -------------------------------------------------------------- */

static size_t batch_on_write(char *data, size_t size, size_t nmemb, void *arg)
{
  batch_bytes_append(arg, data, size * nmemb);
  return size * nmemb;
}

struct batch_answer {
  char content_type[128];
  char retry_after[32];
};

static void batch_header_value(const char *line, size_t length, const char *name, char *out,
                               size_t out_size)
{
  size_t name_len = strlen(name);
  if (length <= name_len + 1 || strncasecmp(line, name, name_len) != 0 || line[name_len] != ':')
    return;
  line += name_len + 1;
  length -= name_len + 1;
  while (length > 0 && (*line == ' ' || *line == '\t'))
    line++, length--;
  while (length > 0 && (line[length - 1] == '\r' || line[length - 1] == '\n'))
    length--;
  if (length >= out_size)
    length = out_size - 1;
  memcpy(out, line, length);
  out[length] = '\0';
}

static size_t batch_on_header(char *data, size_t size, size_t nmemb, void *arg)
{
  struct batch_answer *answer = arg;
  size_t length = size * nmemb;
  if (length > 5 && strncmp(data, "HTTP/", 5) == 0) {
    answer->content_type[0] = '\0';
    answer->retry_after[0] = '\0';
  }
  batch_header_value(data, length, "Content-Type", answer->content_type,
                     sizeof(answer->content_type));
  batch_header_value(data, length, "Retry-After", answer->retry_after,
                     sizeof(answer->retry_after));
  return length;
}

/* Prints `text` quoted: backslash, quote and control characters escaped. */
static void batch_print_quoted(const uint8_t *text, size_t length)
{
  putchar('"');
  for (size_t i = 0; i < length; i++) {
    uint8_t c = text[i];
    if (c == '"' || c == '\\')
      printf("\\%c", c);
    else if (c == '\n')
      fputs("\\n", stdout);
    else if (c < 0x20 || c == 0x7f)
      printf("\\x%02x", c);
    else
      putchar(c);
  }
  putchar('"');
}

static int batch_compare_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The q-quantile (nearest rank) of sorted `values`. */
static double batch_quantile(const double *values, size_t count, double q)
{
  size_t rank;
  if (count == 0)
    return 0;
  rank = (size_t)(q * (double)count + 0.999999);
  if (rank < 1)
    rank = 1;
  if (rank > count)
    rank = count;
  return values[rank - 1];
}

/* Bodies built beforehand by --bodies-out, read back by --bodies. */
struct batch_prebuilt {
  struct batch_bytes file;
  size_t count;
  size_t *offsets;
  size_t *lengths;
  long *sales;
};

static uint32_t batch_be32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads FILE of --bodies-out; exits with a message when it is not one. */
static void batch_prebuilt_load(const char *path, struct batch_prebuilt *pre)
{
  FILE *file = fopen(path, "rb");
  uint8_t chunk[65536];
  size_t got, at = 0, cap = 0;

  if (!file)
    batch_die("cannot read %s: %s", path, strerror(errno));
  while ((got = fread(chunk, 1, sizeof(chunk), file)) > 0)
    batch_bytes_append(&pre->file, chunk, got);
  fclose(file);
  while (at < pre->file.length) {
    size_t length;
    if (pre->file.length - at < 8 ||
        pre->file.length - at - 8 < (length = batch_be32(pre->file.data + at)))
      batch_die("%s: not a file of --bodies-out (cut at byte %zu)", path, at);
    if (pre->count == cap) {
      cap = cap ? cap * 2 : 64;
      pre->offsets = realloc(pre->offsets, cap * sizeof(*pre->offsets));
      pre->lengths = realloc(pre->lengths, cap * sizeof(*pre->lengths));
      pre->sales = realloc(pre->sales, cap * sizeof(*pre->sales));
      if (!pre->offsets || !pre->lengths || !pre->sales)
        batch_die("out of memory reading %s", path);
    }
    pre->offsets[pre->count] = at + 8;
    pre->lengths[pre->count] = length;
    pre->sales[pre->count] = (long)batch_be32(pre->file.data + at + 4);
    pre->count++;
    at += 8 + length;
  }
  if (pre->count == 0)
    batch_die("%s holds no bodies", path);
}

static double batch_cpu_s(void)
{
  struct timespec cpu;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
  return (double)cpu.tv_sec + (double)cpu.tv_nsec / 1e9;
}

/*
 * --warm: opens CURL's connection to the collector with a GET /healthz (the
 * TLS handshake included) and keeps it for the batches; sets *connect_ms
 * (wall) and *connect_cpu_ms (this process's CPU) of that request. Then,
 * with --ready-file, creates the ready file and waits for the go file.
 */
static void batch_warm(CURL *curl, const struct batch_options *options, const char *batches_url,
                       double *connect_ms, double *connect_cpu_ms)
{
  char url[1024];
  size_t base = strlen(batches_url);
  struct batch_bytes response = {0};
  long status = 0;
  double t0 = batch_now_s(), cpu0 = batch_cpu_s();
  CURLcode res;

  if (base >= 11 && strcmp(batches_url + base - 11, "/v1/batches") == 0)
    base -= 11;
  snprintf(url, sizeof(url), "%.*s/healthz", (int)base, batches_url);
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, batch_on_write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
  res = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  free(response.data);
  if (res != CURLE_OK && status == 0)
    batch_die("--warm: GET %s got no answer: %s", url, curl_easy_strerror(res));
  *connect_ms = (batch_now_s() - t0) * 1000.0;
  *connect_cpu_ms = (batch_cpu_s() - cpu0) * 1000.0;
  curl_easy_setopt(curl, CURLOPT_URL, batches_url);
  curl_easy_setopt(curl, CURLOPT_POST, 1L);
  if (options->ready_file) {
    FILE *ready = fopen(options->ready_file, "w");
    if (!ready || fclose(ready) != 0)
      batch_die("--ready-file %s: %s", options->ready_file, strerror(errno));
    while (access(options->go_file, F_OK) != 0) {
      struct timespec pause = {0, 1000000};
      nanosleep(&pause, NULL);
    }
  }
}

static int batch_send_all(const struct batch_options *options)
{
  struct batch_prebuilt pre = {{NULL, 0, 0}, 0, NULL, NULL, NULL};
  long count = options->count, sales_200 = 0;
  double cpu_started;
  CURL *curl = curl_easy_init();
  struct curl_slist *headers = NULL;
  char url[1024];
  char curl_error[CURL_ERROR_SIZE];
  double *latencies;
  long answered_200 = 0, other = 0;
  double started, elapsed;
  double connect_ms = 0.0, connect_cpu_ms = 0.0;
  long new_connections = 0;
  int rc = 0;

  if (!curl)
    batch_die("cannot create a curl handle");
  if (options->bodies) {
    batch_prebuilt_load(options->bodies, &pre);
    count = (long)pre.count;
  }
  latencies = batch_alloc((size_t)count * sizeof(double));
  if (strstr(options->url + (strncmp(options->url, "https://", 8) == 0 ? 8 : 0), "/"))
    snprintf(url, sizeof(url), "%s", options->url);
  else
    snprintf(url, sizeof(url), "%s/v1/batches", options->url);
  headers = curl_slist_append(headers, "Content-Type: application/x-protobuf");
  headers = curl_slist_append(headers, "Content-Encoding: zstd");
  headers = curl_slist_append(headers, "Expect:");
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POST, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, options->timeout_s);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_error);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  if (options->cert)
    curl_easy_setopt(curl, CURLOPT_SSLCERT, options->cert);
  if (options->key)
    curl_easy_setopt(curl, CURLOPT_SSLKEY, options->key);
  if (options->cacert)
    curl_easy_setopt(curl, CURLOPT_CAINFO, options->cacert);

  if (options->warm)
    batch_warm(curl, options, url, &connect_ms, &connect_cpu_ms);
  started = batch_now_s();
  cpu_started = batch_cpu_s();
  for (long i = 0; i < count; i++) {
    uint8_t *body = NULL;
    size_t body_len = 0;
    long sales = options->sales;
    struct batch_bytes response = {0};
    struct batch_answer answer = {{0}, {0}};
    long status = 0, local_port = 0, connects = 0;
    double t0, ms;
    CURLcode res;

    if (options->bodies) {
      body = pre.file.data + pre.offsets[i];
      body_len = pre.lengths[i];
      sales = pre.sales[i];
    } else if (options->bomb)
      batch_build_bomb(options, &body, &body_len);
    else if (options->garbage)
      batch_build_garbage(options, &body, &body_len);
    else
      batch_build(options, i, &body, &body_len, NULL);
    curl_error[0] = '\0';
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, batch_on_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, batch_on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &answer);
    t0 = batch_now_s();
    res = curl_easy_perform(curl);
    ms = (batch_now_s() - t0) * 1000.0;
    latencies[i] = ms;
    /* NUM_CONNECTS: the connections this transfer had to open (0 on a kept one). */
    curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects);
    new_connections += connects;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(curl, CURLINFO_LOCAL_PORT, &local_port);
    if (res != CURLE_OK && status == 0) {
      const char *text = curl_error[0] ? curl_error : curl_easy_strerror(res);
      printf("status=0 curl_error=%d batch_seq=%" PRIu64 " body_bytes=%zu ms=%.2f local_port=%ld "
             "journal_id=%s error=",
             (int)res, options->batch_seq + (uint64_t)i, body_len, ms, local_port,
             options->journal_hex);
      batch_print_quoted((const uint8_t *)text, strlen(text));
      putchar('\n');
      fflush(stdout);
      rc = 3;
      if (!options->bodies)
        free(body);
      free(response.data);
      break;
    }
    if (status == 200) {
      answered_200++;
      sales_200 += options->bomb || options->garbage ? 0 : sales;
    } else
      other++;
    if (!options->quiet) {
      Pos__V1__BatchAck *ack = NULL;
      if (strncasecmp(answer.content_type, "application/x-protobuf", 22) == 0)
        ack = pos__v1__batch_ack__unpack(NULL, response.length, response.data);
      printf("status=%ld acked_batch_seq=%" PRIu64 " expected_batch_seq=%" PRIu64
             " duplicate=%d retry_after=%s batch_seq=%" PRIu64 " sales=%ld body_bytes=%zu "
             "ms=%.2f local_port=%ld journal_id=%s commands=",
             status, ack ? ack->acked_batch_seq : 0, ack ? ack->expected_batch_seq : 0,
             ack ? ack->duplicate : 0, answer.retry_after, options->batch_seq + (uint64_t)i,
             options->bomb || options->garbage ? 0 : sales, body_len, ms, local_port,
             options->journal_hex);
      /* Head-office commands the ack carries (issue 10): their ids, comma-separated. */
      for (size_t c = 0; ack && c < ack->n_commands; c++)
        printf("%s%s", c ? "," : "", ack->commands[c]->command_id);
      /* The zstd dictionaries its limits list (issue 12, item 6). */
      printf("%s zstd_dictionaries=", ack && ack->n_commands ? "" : "-");
      for (size_t d = 0; ack && ack->limits && d < ack->limits->n_zstd_dictionaries; d++)
        printf("%s%" PRIu32, d ? "," : "", ack->limits->zstd_dictionaries[d]);
      printf("%s message=",
             ack && ack->limits && ack->limits->n_zstd_dictionaries ? "" : "-");
      if (ack)
        batch_print_quoted((const uint8_t *)(ack->message ? ack->message : ""),
                           ack->message ? strlen(ack->message) : 0);
      else {
        size_t length = response.length;
        while (length > 0 && (response.data[length - 1] == '\n' || response.data[length - 1] == '\r'))
          length--;
        batch_print_quoted(response.data ? response.data : (const uint8_t *)"", length);
      }
      putchar('\n');
      fflush(stdout);
      if (ack)
        pos__v1__batch_ack__free_unpacked(ack, NULL);
    }
    if (!options->bodies)
      free(body);
    free(response.data);
  }
  elapsed = batch_now_s() - started;
  if (count > 1) {
    long done = answered_200 + other;
    double cpu_ms = (batch_cpu_s() - cpu_started) * 1000.0;
    qsort(latencies, (size_t)done, sizeof(double), batch_compare_double);
    printf("batches=%ld sales=%ld answered_200=%ld other=%ld seconds=%.3f sales_per_s=%.0f "
           "latency_p50_ms=%.2f latency_p99_ms=%.2f latency_max_ms=%.2f cpu_ms=%.1f",
           done, sales_200, answered_200, other, elapsed,
           elapsed > 0 ? (double)sales_200 / elapsed : 0.0,
           batch_quantile(latencies, (size_t)done, 0.50),
           batch_quantile(latencies, (size_t)done, 0.99),
           done ? latencies[done - 1] : 0.0, cpu_ms);
    if (options->warm)
      printf(" connect_ms=%.2f connect_cpu_ms=%.1f new_connections=%ld", connect_ms,
             connect_cpu_ms, new_connections);
    putchar('\n');
  }
  free(latencies);
  free(pre.file.data);
  free(pre.offsets);
  free(pre.lengths);
  free(pre.sales);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return rc;
}

static int batch_write_files(const struct batch_options *options)
{
  FILE *json = NULL;
  FILE *out;
  uint8_t *body = NULL;
  size_t body_len = 0;

  if (options->json_path) {
    json = fopen(options->json_path, "w");
    if (!json) {
      fprintf(stderr, "pos-batch: cannot write %s: %s\n", options->json_path, strerror(errno));
      return 1;
    }
  }
  if (options->bomb)
    batch_build_bomb(options, &body, &body_len);
  else if (options->garbage)
    batch_build_garbage(options, &body, &body_len);
  else
    batch_build(options, 0, &body, &body_len, json);
  if (json && fclose(json) != 0) {
    fprintf(stderr, "pos-batch: cannot write %s: %s\n", options->json_path, strerror(errno));
    free(body);
    return 1;
  }
  out = fopen(options->out_path, "wb");
  if (!out || fwrite(body, 1, body_len, out) != body_len || fclose(out) != 0) {
    fprintf(stderr, "pos-batch: cannot write %s: %s\n", options->out_path, strerror(errno));
    free(body);
    return 1;
  }
  printf("wrote=%s body_bytes=%zu sales=%ld journal_id=%s\n", options->out_path, body_len,
         options->bomb || options->garbage ? 0 : options->sales, options->journal_hex);
  free(body);
  return 0;
}

/* --bodies-out: the --count batches' bodies, framed as the header says. */
static int batch_write_bodies(const struct batch_options *options)
{
  FILE *out = fopen(options->bodies_out, "wb");
  int rc = 0;

  if (!out) {
    fprintf(stderr, "pos-batch: cannot write %s: %s\n", options->bodies_out, strerror(errno));
    return 1;
  }
  for (long i = 0; i < options->count && rc == 0; i++) {
    uint8_t *body = NULL, head[8];
    size_t body_len = 0;
    uint32_t sales = (uint32_t)options->sales;

    batch_build(options, i, &body, &body_len, NULL);
    for (int k = 0; k < 4; k++) {
      head[k] = (uint8_t)(body_len >> (24 - 8 * k));
      head[4 + k] = (uint8_t)(sales >> (24 - 8 * k));
    }
    if (fwrite(head, 1, 8, out) != 8 || fwrite(body, 1, body_len, out) != body_len)
      rc = 1;
    free(body);
  }
  if (fclose(out) != 0)
    rc = 1;
  if (rc)
    fprintf(stderr, "pos-batch: cannot write %s: %s\n", options->bodies_out, strerror(errno));
  else
    printf("wrote=%s bodies=%ld sales=%ld journal_id=%s\n", options->bodies_out, options->count,
           options->count * options->sales, options->journal_hex);
  return rc;
}

static void batch_usage(FILE *out)
{
  fputs(
      "usage: pos-batch --url https://HOST:PORT --cert FILE --key FILE --cacert FILE [options]\n"
      "       pos-batch --out FILE [--json-out FILE] [options]\n"
      "\n"
      "Builds a pos.v1.Batch of generated valid sales and POSTs it to the collector's\n"
      "/v1/batches over mutual TLS (or writes the zstd body to --out).\n"
      "\n"
      "content:\n"
      "  --store ID          envelope and sales store_id (S001)\n"
      "  --device ID         envelope device_id (D1)\n"
      "  --journal HEX32     journal_id, 32 hex digits (random if absent; printed)\n"
      "  --batch-seq N       batch_seq of the first batch (1)\n"
      "  --first-seq S       seq of the first sale (1)\n"
      "  --sales N           sales per batch (10; 0 allowed)\n"
      "  --prefix P          sale ids are P-<seq> (B)\n"
      "  --invalid I         the I-th sale of each batch (0-based) has a wrong total\n"
      "  --deltas N          inventory deltas per batch, over its rows (0; see the header)\n"
      "  --kind live|replay  batch kind (live); replay needs --resync-id\n"
      "  --resync-id R\n"
      "  --time-base-ms MS   business times fall in the hour before MS (1790000000000)\n"
      "  --zstd-level N      zstd level of the body (3); 0: the agent's default, 19 up to\n"
      "                      32 KiB of protobuf, else 3 (batcher_zstd_level)\n"
      "  --zstd-dict ID      zstd dictionary ID (1347375873 = sales-1; 1347375874 = sales-2,\n"
      "                      compact sales; 0 none)\n"
      "  --omit-sale-store   sales without store_id, store_city, time_zone (as the agent's\n"
      "                      compact sales are: wire_bench, proto/dict/train.sh)\n"
      "  --bomb stream|declared   send a zstd bomb instead (content size absent/declared)\n"
      "  --bomb-size BYTES   what the bomb expands to (64M)\n"
      "  --garbage random|zstd|truncated|trailing   send an undecodable body instead\n"
      "sending:\n"
      "  --url URL           collector base URL (/v1/batches is appended if no path)\n"
      "  --cert --key FILE   client certificate and key (none: no client certificate)\n"
      "  --cacert FILE       CA to verify the collector with\n"
      "  --count N           N consecutive batches on one connection; prints a summary\n"
      "  --quiet             only the summary line\n"
      "  --timeout S         per request (30)\n"
      "  --warm              connect (GET /healthz) before the first, timed, batch\n"
      "  --ready-file R --go-file G   with --warm: create R once connected, start when G exists\n"
      "files:\n"
      "  --out FILE          write the (first) body here instead of sending\n"
      "  --json-out FILE     with --out: the same sales as JSON lines\n"
      "  --pb-out FILE       with --out: the batch's protobuf before compression\n"
      "  --compact-sales     with --pb-out: the sales in the compact encoding\n"
      "  --bodies-out FILE   write the --count bodies to FILE (framed) instead of sending\n"
      "  --bodies FILE       with --url: send FILE's bodies as they are, one per request\n",
      out);
}

int main(int argc, char **argv)
{
  struct batch_options options = {
      .store = "S001",
      .device = "D1",
      .prefix = "B",
      .kind = "live",
      .batch_seq = 1,
      .first_seq = 1,
      .sales = 10,
      .invalid = -1,
      .count = 1,
      .timeout_s = 30,
      .bomb_size = 64LL * 1024 * 1024,
      .time_base_ms = 1790000000000LL,
      .zstd_level = 3,
  };
  int have_journal = 0;
  int rc;

  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      batch_usage(stdout);
      return 0;
    }
    if (strcmp(arg, "--quiet") == 0) {
      options.quiet = 1;
      continue;
    }
    if (strcmp(arg, "--warm") == 0) {
      options.warm = 1;
      continue;
    }
    if (strcmp(arg, "--omit-sale-store") == 0) {
      options.omit_sale_store = 1;
      continue;
    }
    if (strcmp(arg, "--compact-sales") == 0) {
      options.compact_sales = 1;
      continue;
    }
    if (!value)
      batch_die("%s needs a value (see --help)", arg);
    i++;
    if (strcmp(arg, "--url") == 0)
      options.url = value;
    else if (strcmp(arg, "--cert") == 0)
      options.cert = value;
    else if (strcmp(arg, "--key") == 0)
      options.key = value;
    else if (strcmp(arg, "--cacert") == 0)
      options.cacert = value;
    else if (strcmp(arg, "--out") == 0)
      options.out_path = value;
    else if (strcmp(arg, "--bodies-out") == 0)
      options.bodies_out = value;
    else if (strcmp(arg, "--ready-file") == 0)
      options.ready_file = value;
    else if (strcmp(arg, "--go-file") == 0)
      options.go_file = value;
    else if (strcmp(arg, "--bodies") == 0)
      options.bodies = value;
    else if (strcmp(arg, "--pb-out") == 0)
      options.pb_path = value;
    else if (strcmp(arg, "--json-out") == 0)
      options.json_path = value;
    else if (strcmp(arg, "--store") == 0)
      options.store = value;
    else if (strcmp(arg, "--device") == 0)
      options.device = value;
    else if (strcmp(arg, "--prefix") == 0)
      options.prefix = value;
    else if (strcmp(arg, "--kind") == 0)
      options.kind = value;
    else if (strcmp(arg, "--resync-id") == 0)
      options.resync_id = value;
    else if (strcmp(arg, "--journal") == 0) {
      batch_parse_journal(&options, value);
      have_journal = 1;
    } else if (strcmp(arg, "--batch-seq") == 0)
      options.batch_seq = (uint64_t)batch_parse_ll(arg, value, 0, INT64_MAX);
    else if (strcmp(arg, "--first-seq") == 0)
      options.first_seq = (uint64_t)batch_parse_ll(arg, value, 0, INT64_MAX);
    else if (strcmp(arg, "--sales") == 0)
      options.sales = (long)batch_parse_ll(arg, value, 0, 1000000);
    else if (strcmp(arg, "--deltas") == 0)
      options.deltas = (long)batch_parse_ll(arg, value, 0, 100000);
    else if (strcmp(arg, "--invalid") == 0)
      options.invalid = (long)batch_parse_ll(arg, value, 0, 1000000);
    else if (strcmp(arg, "--count") == 0)
      options.count = (long)batch_parse_ll(arg, value, 1, 10000000);
    else if (strcmp(arg, "--timeout") == 0)
      options.timeout_s = (long)batch_parse_ll(arg, value, 1, 3600);
    else if (strcmp(arg, "--time-base-ms") == 0)
      options.time_base_ms = batch_parse_ll(arg, value, 3600000, INT64_MAX / 2);
    else if (strcmp(arg, "--bomb-size") == 0)
      options.bomb_size = batch_parse_ll(arg, value, 1, 1LL << 40);
    else if (strcmp(arg, "--zstd-level") == 0)
      options.zstd_level = (int)batch_parse_ll(arg, value, 0, 22);
    else if (strcmp(arg, "--zstd-dict") == 0)
      options.zstd_dict = (uint32_t)batch_parse_ll(arg, value, 0, UINT32_MAX);
    else if (strcmp(arg, "--bomb") == 0)
      options.bomb = value;
    else if (strcmp(arg, "--garbage") == 0)
      options.garbage = value;
    else
      batch_die("unknown option %s (see --help)", arg);
  }
  if (!!options.url + !!options.out_path + !!options.bodies_out != 1)
    batch_die("give exactly one of --url, --out and --bodies-out (see --help)");
  if (options.bodies && !options.url)
    batch_die("--bodies goes with --url");
  if (options.bodies_out && (options.bomb || options.garbage))
    batch_die("--bodies-out writes sales, not --bomb or --garbage bodies");
  if (options.json_path && !options.out_path)
    batch_die("--json-out goes with --out");
  if (options.pb_path && !options.out_path)
    batch_die("--pb-out goes with --out");
  if (options.compact_sales && !options.pb_path)
    batch_die("--compact-sales goes with --pb-out (a body is compact with a dictionary that "
              "compacts: --zstd-dict 1347375874)");
  if (strcmp(options.kind, "live") != 0 && strcmp(options.kind, "replay") != 0)
    batch_die("--kind \"%s\": expected live or replay", options.kind);
  if (strcmp(options.kind, "replay") == 0 && !options.resync_id)
    batch_die("--kind replay needs --resync-id");
  if (options.bomb && strcmp(options.bomb, "stream") != 0 && strcmp(options.bomb, "declared") != 0)
    batch_die("--bomb \"%s\": expected stream or declared", options.bomb);
  if (options.garbage && strcmp(options.garbage, "random") != 0 &&
      strcmp(options.garbage, "zstd") != 0 && strcmp(options.garbage, "truncated") != 0 &&
      strcmp(options.garbage, "trailing") != 0)
    batch_die("--garbage \"%s\": expected random, zstd, truncated or trailing", options.garbage);
  if (options.bomb && options.garbage)
    batch_die("--bomb and --garbage exclude each other");
  if (!options.ready_file != !options.go_file)
    batch_die("--ready-file and --go-file go together");
  if (options.ready_file && !options.url)
    batch_die("--ready-file goes with --url");
  options.warm |= options.ready_file != NULL;
  if (options.invalid >= 0 && options.invalid >= options.sales)
    batch_die("--invalid %ld: the batch has only %ld sales", options.invalid, options.sales);
  if (!options.cert != !options.key)
    batch_die("--cert and --key go together");
  if (!have_journal)
    batch_random_journal(&options);
  proto_journal_id_format(options.journal_id, options.journal_hex);

  if (options.out_path)
    return batch_write_files(&options);
  if (options.bodies_out)
    return batch_write_bodies(&options);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
    batch_die("curl_global_init failed");
  rc = batch_send_all(&options);
  curl_global_cleanup();
  return rc;
}
