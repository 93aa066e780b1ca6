/*
 * stock.c - deltas, their stored form, sales through recipes, on-hand.
 */
#include "inventory/stock.h"

#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *stock_reason_name(enum stock_reason reason)
{
  switch (reason) {
  case STOCK_REASON_SALES:
    return "sales";
  case STOCK_REASON_REFUNDS:
    return "refunds";
  case STOCK_REASON_DELIVERY:
    return "delivery";
  case STOCK_REASON_WASTE:
    return "waste";
  case STOCK_REASON_COUNT:
    return "count";
  case STOCK_REASON_UNMAPPED:
    return "unmapped";
  }
  return "unknown";
}

const char *stock_adjustment_kind_name(enum stock_adjustment_kind kind)
{
  switch (kind) {
  case STOCK_ADJUSTMENT_DELIVERY:
    return "delivery";
  case STOCK_ADJUSTMENT_WASTE:
    return "waste";
  case STOCK_ADJUSTMENT_COUNT:
    return "count";
  }
  return "unknown";
}

/* ---- deltas ------------------------------------------------------------- */

void stock_deltas_clear(struct stock_deltas *d)
{
  if (!d)
    return;
  free(d->items);
  d->items = NULL;
  d->count = d->capacity = 0;
}

int stock_deltas_add(struct stock_deltas *d, const char *material_id, const char *unit,
                     enum stock_reason reason, int64_t quantity_milli)
{
  struct stock_delta *entry;
  size_t id_len = strlen(material_id), unit_len = strlen(unit);

  if (id_len == 0 || id_len > STOCK_ID_MAX || unit_len > STOCK_UNIT_MAX)
    return -1;
  for (size_t i = 0; i < d->count; i++) {
    entry = &d->items[i];
    if (entry->reason == reason && strcmp(entry->material_id, material_id) == 0 &&
        strcmp(entry->unit, unit) == 0) {
      int64_t sum;
      if (__builtin_add_overflow(entry->quantity_milli, quantity_milli, &sum))
        return -1;
      entry->quantity_milli = sum;
      return 0;
    }
  }
  if (d->count == d->capacity) {
    size_t capacity = d->capacity ? d->capacity * 2 : 8;
    struct stock_delta *grown = realloc(d->items, capacity * sizeof(*grown));
    if (!grown)
      return -1;
    d->items = grown;
    d->capacity = capacity;
  }
  entry = &d->items[d->count++];
  memcpy(entry->material_id, material_id, id_len + 1);
  memcpy(entry->unit, unit, unit_len + 1);
  entry->reason = reason;
  entry->quantity_milli = quantity_milli;
  return 0;
}

/* ---- names ------------------------------------------------------------------ */

uint64_t stock_names_find(const struct stock_names *n, const char *name, const char *unit)
{
  /* Newest first: a store's menu uses the same few dozen materials, and
   * the rows just journaled used the latest ones. */
  for (size_t i = n->count; i > 0; i--) {
    if (strcmp(n->items[i - 1].name, name) == 0 && strcmp(n->items[i - 1].unit, unit) == 0)
      return i;
  }
  return 0;
}

int stock_names_add(struct stock_names *n, const char *name, const char *unit)
{
  size_t name_len = strlen(name), unit_len = strlen(unit);
  if (name_len == 0 || name_len > STOCK_ID_MAX || unit_len > STOCK_UNIT_MAX)
    return -1;
  if (n->count == n->capacity) {
    size_t capacity = n->capacity ? n->capacity * 2 : 64;
    struct stock_name *grown = realloc(n->items, capacity * sizeof(*grown));
    if (!grown)
      return -1;
    n->items = grown;
    n->capacity = capacity;
  }
  memcpy(n->items[n->count].name, name, name_len + 1);
  memcpy(n->items[n->count].unit, unit, unit_len + 1);
  n->count++;
  return 0;
}

void stock_names_truncate(struct stock_names *n, size_t count)
{
  if (count < n->count)
    n->count = count;
}

void stock_names_clear(struct stock_names *n)
{
  if (!n)
    return;
  free(n->items);
  memset(n, 0, sizeof(*n));
}

/* ---- the stored form ----------------------------------------------------------- */

static size_t stock_put_varint(uint8_t *out, uint64_t value)
{
  size_t at = 0;
  do {
    uint8_t byte = (uint8_t)(value & 0x7f);
    value >>= 7;
    out[at++] = (uint8_t)(byte | (value ? 0x80 : 0));
  } while (value);
  return at;
}

static int stock_get_varint(const uint8_t *blob, size_t len, size_t *at, uint64_t *value)
{
  unsigned shift = 0;
  uint8_t byte;
  *value = 0;
  do {
    if (*at >= len || shift > 63)
      return -1;
    byte = blob[(*at)++];
    *value |= (uint64_t)(byte & 0x7f) << shift;
    shift += 7;
  } while (byte & 0x80);
  return 0;
}

size_t stock_deltas_encoded_max(size_t count)
{
  /* Per entry at most 1 + 1 + 64 (an unmapped SKU) + 10 bytes. */
  return count * (2 + STOCK_ID_MAX + 10);
}

int stock_deltas_encode_to(const struct stock_deltas *d, const struct stock_names *names,
                           uint8_t *out, size_t *len)
{
  size_t at = 0;

  *len = 0;
  for (size_t i = 0; i < d->count; i++) {
    const struct stock_delta *e = &d->items[i];
    int64_t q = e->quantity_milli;
    out[at++] = (uint8_t)e->reason;
    if (e->reason == STOCK_REASON_UNMAPPED) {
      size_t sku_len = strlen(e->material_id);
      out[at++] = (uint8_t)sku_len;
      memcpy(out + at, e->material_id, sku_len);
      at += sku_len;
    } else {
      uint64_t id = stock_names_find(names, e->material_id, e->unit);
      if (id == 0)
        return -1;
      at += stock_put_varint(out + at, id);
    }
    at += stock_put_varint(out + at, ((uint64_t)q << 1) ^ (uint64_t)(q >> 63));
  }
  *len = at;
  return 0;
}

int stock_deltas_encode(const struct stock_deltas *d, const struct stock_names *names,
                        uint8_t **blob, size_t *len)
{
  uint8_t *out;

  *blob = NULL;
  *len = 0;
  if (d->count == 0)
    return 0;
  out = malloc(stock_deltas_encoded_max(d->count));
  if (!out)
    return -1;
  if (stock_deltas_encode_to(d, names, out, len)) {
    free(out);
    return -1;
  }
  *blob = out;
  return 0;
}

int stock_deltas_decode(const uint8_t *blob, size_t len, const struct stock_names *names,
                        struct stock_deltas *d)
{
  size_t at = 0;

  while (at < len) {
    enum stock_reason reason = (enum stock_reason)blob[at++];
    char sku[STOCK_ID_MAX + 1];
    const char *name, *unit;
    uint64_t id, zigzag;

    if (reason == STOCK_REASON_UNMAPPED) {
      size_t sku_len;
      if (at >= len || (sku_len = blob[at++]) == 0 || sku_len > STOCK_ID_MAX ||
          len - at < sku_len)
        return -1;
      memcpy(sku, blob + at, sku_len);
      sku[sku_len] = '\0';
      at += sku_len;
      name = sku;
      unit = "";
    } else {
      if (stock_get_varint(blob, len, &at, &id) || id == 0 || id > names->count)
        return -1;
      name = names->items[id - 1].name;
      unit = names->items[id - 1].unit;
    }
    if (stock_get_varint(blob, len, &at, &zigzag) ||
        stock_deltas_add(d, name, unit, reason, (int64_t)(zigzag >> 1) ^ -(int64_t)(zigzag & 1)))
      return -1;
  }
  return 0;
}

/* ---- sales through recipes ------------------------------------------------ */

struct stock_emit_ctx {
  struct stock_deltas *out;
  enum stock_reason reason;
  int sign;
  int failed;
};

static void stock_emit(void *arg, const char *material_id, const char *unit,
                       int64_t quantity_milli)
{
  struct stock_emit_ctx *ctx = arg;
  if (stock_deltas_add(ctx->out, material_id, unit, ctx->reason, ctx->sign * quantity_milli))
    ctx->failed = 1;
}

int stock_sale_deltas(const struct sale *sale, int64_t recipe_time_ms, stock_explode_fn explode,
                      const void *recipes, int refunds_restock, struct stock_deltas *out)
{
  struct stock_emit_ctx ctx = {out, STOCK_REASON_SALES, -1, 0};

  out->count = 0;
  if (sale->kind != SALE_KIND_SALE) {
    /* A refund or void names the goods going back; whether they go back
     * on the shelf is the store's policy (a returned pizza is binned). */
    if (!refunds_restock)
      return 0;
    ctx.reason = STOCK_REASON_REFUNDS;
    ctx.sign = 1;
  }
  for (size_t i = 0; i < sale->line_count; i++) {
    const struct sale_line *line = &sale->lines[i];
    int mapped =
        explode && explode(recipes, line->sku, line->qty, recipe_time_ms, stock_emit, &ctx);
    if (ctx.failed)
      return -1;
    /* No recipe never blocks a sale: it is recorded as unmapped, for the
     * status page to show what the recipe file is missing. */
    if (!mapped && stock_deltas_add(out, line->sku, "", STOCK_REASON_UNMAPPED, line->qty * 1000))
      return -1;
  }
  return 0;
}

/* ---- adjustments ------------------------------------------------------------ */

static void stock_hash_text(mbedtls_sha256_context *ctx, const char *text)
{
  /* Length first, so that ("ab", "c") and ("a", "bc") differ. */
  uint32_t len = (uint32_t)strlen(text);
  mbedtls_sha256_update_ret(ctx, (const unsigned char *)&len, sizeof(len));
  mbedtls_sha256_update_ret(ctx, (const unsigned char *)text, len);
}

int stock_adjustment_hash(const struct stock_adjustment *a, uint8_t hash[32])
{
  mbedtls_sha256_context ctx;
  int64_t numbers[3] = {(int64_t)a->kind, a->quantity_milli, a->business_time_ms};
  int rc = -1;

  mbedtls_sha256_init(&ctx);
  if (mbedtls_sha256_starts_ret(&ctx, 0) == 0) {
    stock_hash_text(&ctx, a->adjustment_id);
    stock_hash_text(&ctx, a->material_id);
    stock_hash_text(&ctx, a->unit);
    stock_hash_text(&ctx, a->business_time);
    stock_hash_text(&ctx, a->reason);
    stock_hash_text(&ctx, a->note);
    mbedtls_sha256_update_ret(&ctx, (const unsigned char *)numbers, sizeof(numbers));
    rc = mbedtls_sha256_finish_ret(&ctx, hash) == 0 ? 0 : -1;
  }
  mbedtls_sha256_free(&ctx);
  return rc;
}

/* ---- on-hand -------------------------------------------------------------------- */

int stock_init(struct stock *s)
{
  memset(s, 0, sizeof(*s));
  s->unmapped = calloc(STOCK_UNMAPPED_SKUS_MAX, sizeof(*s->unmapped));
  if (!s->unmapped)
    return -1;
  pthread_mutex_init(&s->lock, NULL);
  return 0;
}

void stock_destroy(struct stock *s)
{
  if (!s || !s->unmapped)
    return;
  free(s->materials);
  free(s->unmapped);
  pthread_mutex_destroy(&s->lock);
  memset(s, 0, sizeof(*s));
}

/* The entry of `material_id`, made (on-hand 0, no threshold) if absent.
 * NULL out of memory. Lock held. */
static struct stock_material *stock_find(struct stock *s, const char *material_id, int make)
{
  size_t low = 0, high = s->count;
  while (low < high) {
    size_t mid = (low + high) / 2;
    int cmp = strcmp(s->materials[mid].material_id, material_id);
    if (cmp == 0)
      return &s->materials[mid];
    if (cmp < 0)
      low = mid + 1;
    else
      high = mid;
  }
  if (!make || strlen(material_id) > STOCK_ID_MAX)
    return NULL;
  if (s->count == s->capacity) {
    size_t capacity = s->capacity ? s->capacity * 2 : 16;
    struct stock_material *grown = realloc(s->materials, capacity * sizeof(*grown));
    if (!grown)
      return NULL;
    s->materials = grown;
    s->capacity = capacity;
  }
  memmove(&s->materials[low + 1], &s->materials[low], (s->count - low) * sizeof(*s->materials));
  s->count++;
  memset(&s->materials[low], 0, sizeof(s->materials[low]));
  snprintf(s->materials[low].material_id, sizeof(s->materials[low].material_id), "%s",
           material_id);
  s->materials[low].low_stock_milli = -1;
  return &s->materials[low];
}

/* Items of `sku` sold without a recipe (negative: taken back). SKU "*"
 * is the stored base's total of the sealed rows, per SKU no more (see
 * journal__base_add): it counts in the total only. Lock held. */
static void stock_count_unmapped(struct stock *s, const char *sku, int64_t items_milli)
{
  size_t i;
  s->unmapped_items_milli += items_milli;
  if (strcmp(sku, "*") == 0)
    return;
  for (i = 0; i < s->unmapped_count; i++) {
    if (strcmp(s->unmapped[i].sku, sku) == 0) {
      s->unmapped[i].items_milli += items_milli;
      return;
    }
  }
  if (s->unmapped_count < STOCK_UNMAPPED_SKUS_MAX && items_milli > 0) {
    snprintf(s->unmapped[s->unmapped_count].sku, sizeof(s->unmapped[0].sku), "%s", sku);
    s->unmapped[s->unmapped_count++].items_milli = items_milli;
  }
}

/* a + b, held at int64's ends instead of wrapping (undefined in C): an
 * on-hand that far out is wrong either way, never a crash. */
static int64_t stock_add_saturated(int64_t a, int64_t b)
{
  int64_t sum;
  if (!__builtin_add_overflow(a, b, &sum))
    return sum;
  return b > 0 ? INT64_MAX : INT64_MIN;
}

int stock_apply(struct stock *s, const struct stock_deltas *d, int sign)
{
  int rc = 0;

  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < d->count; i++) {
    const struct stock_delta *e = &d->items[i];
    struct stock_material *m;
    if (e->reason == STOCK_REASON_UNMAPPED) {
      stock_count_unmapped(s, e->material_id, sign * e->quantity_milli);
      continue;
    }
    m = stock_find(s, e->material_id, 1);
    if (!m) {
      rc = -1;
      break;
    }
    if (m->unit[0] == '\0')
      snprintf(m->unit, sizeof(m->unit), "%s", e->unit);
    /* quantity_milli is never INT64_MIN (stock_deltas_add refuses sums
     * that overflow), so negating it is defined. */
    m->on_hand_milli = stock_add_saturated(m->on_hand_milli, sign * e->quantity_milli);
    if (e->reason == STOCK_REASON_SALES)
      m->consumed_pending_milli =
          stock_add_saturated(m->consumed_pending_milli, -sign * e->quantity_milli);
  }
  pthread_mutex_unlock(&s->lock);
  return rc;
}

int64_t stock_on_hand(struct stock *s, const char *material_id, char unit[STOCK_UNIT_MAX + 1])
{
  struct stock_material *m;
  int64_t on_hand = 0;

  pthread_mutex_lock(&s->lock);
  m = stock_find(s, material_id, 0);
  unit[0] = '\0';
  if (m) {
    on_hand = m->on_hand_milli;
    memcpy(unit, m->unit, sizeof(m->unit));
  }
  pthread_mutex_unlock(&s->lock);
  return on_hand;
}

void stock_sealed(struct stock *s, const struct stock_deltas *d)
{
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < s->count; i++)
    s->materials[i].consumed_last_batch_milli = 0;
  for (size_t i = 0; i < d->count; i++) {
    struct stock_material *m;
    if (d->items[i].reason != STOCK_REASON_SALES)
      continue;
    m = stock_find(s, d->items[i].material_id, 0);
    if (m) {
      m->consumed_pending_milli += d->items[i].quantity_milli;
      m->consumed_last_batch_milli -= d->items[i].quantity_milli;
    }
  }
  pthread_mutex_unlock(&s->lock);
}

void stock_pending_add(struct stock *s, const struct stock_deltas *d, int sign)
{
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < d->count; i++) {
    struct stock_material *m;
    if (d->items[i].reason != STOCK_REASON_SALES)
      continue;
    m = stock_find(s, d->items[i].material_id, 0);
    if (m)
      m->consumed_pending_milli =
          stock_add_saturated(m->consumed_pending_milli, -sign * d->items[i].quantity_milli);
  }
  pthread_mutex_unlock(&s->lock);
}

int stock_set_thresholds(struct stock *s, const char *spec, char *err, size_t err_size)
{
  const char *at = spec;
  int rc = 0;

  pthread_mutex_lock(&s->lock);
  while (*at) {
    char entry[STOCK_ID_MAX + 32], *equals, *end = NULL;
    size_t len = strcspn(at, ",");
    long long threshold;
    struct stock_material *m;

    if (len == 0 || len >= sizeof(entry)) {
      snprintf(err, err_size, "inventory.low_stock: entry \"%.*s\" is not MATERIAL=QTY_MILLI",
               (int)(len > 80 ? 80 : len), at);
      rc = -1;
      break;
    }
    memcpy(entry, at, len);
    entry[len] = '\0';
    equals = strchr(entry, '=');
    if (equals) {
      *equals = '\0';
      threshold = strtoll(equals + 1, &end, 10);
    }
    if (!equals || entry[0] == '\0' || !end || *end || end == equals + 1 || threshold < 0 ||
        !(m = stock_find(s, entry, 1))) {
      snprintf(err, err_size,
               "inventory.low_stock: entry \"%.*s\" is not MATERIAL=QTY_MILLI (a whole number of "
               "thousandths of the material's unit, e.g. MOZZARELLA=2000000 for 2 kg)",
               (int)len, at);
      rc = -1;
      break;
    }
    m->low_stock_milli = threshold;
    at += len;
    if (*at == ',')
      at++;
  }
  pthread_mutex_unlock(&s->lock);
  return rc;
}

int stock_snapshot(struct stock *s, struct stock_material **materials, size_t *count,
                   struct stock_unmapped **unmapped, size_t *unmapped_count,
                   int64_t *unmapped_items_milli)
{
  int rc = 0;

  pthread_mutex_lock(&s->lock);
  *materials = malloc((s->count ? s->count : 1) * sizeof(**materials));
  *unmapped = malloc((s->unmapped_count ? s->unmapped_count : 1) * sizeof(**unmapped));
  *count = *unmapped_count = 0;
  if (*materials && *unmapped) {
    if (s->count)
      memcpy(*materials, s->materials, s->count * sizeof(**materials));
    if (s->unmapped_count)
      memcpy(*unmapped, s->unmapped, s->unmapped_count * sizeof(**unmapped));
    *count = s->count;
    *unmapped_count = s->unmapped_count;
  } else {
    rc = -1;
  }
  *unmapped_items_milli = s->unmapped_items_milli;
  pthread_mutex_unlock(&s->lock);
  return rc;
}
