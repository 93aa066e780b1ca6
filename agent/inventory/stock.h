/*
 * stock.h - what stock is made of on the agent: deltas (a journal row's
 * change to raw materials, stored compactly with the row), the on-hand
 * quantities the writer thread keeps, and inventory adjustments as the
 * store manager's back office sends them.
 *
 * Quantities are integer thousandths of a material's unit (g, ml, piece),
 * never floating point. A delta is negative when stock goes out (a sale
 * consumed it, waste) and positive when it comes in (a delivery, a refund
 * given back to stock when inventory.refunds_restock is on).
 *
 * Nothing here touches the database or a thread: the journal calls these
 * on its writer thread, the status page reads a copy (stock_snapshot).
 */
#ifndef AGENT_INVENTORY_STOCK_H
#define AGENT_INVENTORY_STOCK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "sale/sale.h"

#define STOCK_ID_MAX 64   /* adjustment_id, material_id: 1-64 of [A-Za-z0-9._:-] */
#define STOCK_UNIT_MAX 16 /* g, ml, piece, ... */
#define STOCK_REASON_TEXT_MAX 128
#define STOCK_NOTE_MAX 512

/* Why stock moved; the numbers are pos.v1.DeltaReason's. */
enum stock_reason {
  STOCK_REASON_SALES = 1,    /* consumed by sales through recipes */
  STOCK_REASON_REFUNDS = 2,  /* given back by refunds and voids */
  STOCK_REASON_DELIVERY = 3, /* goods received */
  STOCK_REASON_WASTE = 4,
  STOCK_REASON_COUNT = 5,    /* the variance a physical count found */
  /* Not stock: a sale line whose SKU had no recipe at its business time
   * (material_id = the SKU, quantity = the items sold, in thousandths).
   * Kept with the row for the record and the status page; never sent. */
  STOCK_REASON_UNMAPPED = 100,
};

/* The name of a reason as the status page and logs show it ("sales"). */
const char *stock_reason_name(enum stock_reason reason);

struct stock_delta {
  char material_id[STOCK_ID_MAX + 1];
  char unit[STOCK_UNIT_MAX + 1];
  enum stock_reason reason;
  int64_t quantity_milli;
};

/* A growable list of deltas, one entry per (material, unit, reason). */
struct stock_deltas {
  struct stock_delta *items; /* owned */
  size_t count, capacity;
};

/* Frees the entries and empties the list; `d` may be NULL. */
void stock_deltas_clear(struct stock_deltas *d);

/*
 * Adds `quantity_milli` to the entry of (material_id, unit, reason), making
 * it if needed. 0, or -1 out of memory, ids too long, or the sum would
 * overflow (then nothing changed).
 */
int stock_deltas_add(struct stock_deltas *d, const char *material_id, const char *unit,
                     enum stock_reason reason, int64_t quantity_milli);

/*
 * The names a journal's stored deltas refer to: (material, unit) pairs
 * numbered 1, 2, 3... in the order first used (the journal keeps them in a
 * table of its own), so that a row stores a small number, not the text,
 * per material. In memory here; no database.
 */
struct stock_name {
  char name[STOCK_ID_MAX + 1];
  char unit[STOCK_UNIT_MAX + 1];
};
struct stock_names {
  struct stock_name *items; /* owned; id = index + 1 */
  size_t count, capacity;
};

/* The id of (name, unit), or 0 when it has none. */
uint64_t stock_names_find(const struct stock_names *n, const char *name, const char *unit);
/* Appends (name, unit) as id count + 1. 0, or -1 (out of memory, too long). */
int stock_names_add(struct stock_names *n, const char *name, const char *unit);
/* Forgets the ids above `count` (their rows were rolled back). */
void stock_names_truncate(struct stock_names *n, size_t count);
/* Frees the names; `n` may be NULL. */
void stock_names_clear(struct stock_names *n);

/*
 * The compact form stored with a journal row: per entry one byte of
 * reason, then for a material its name id as a varint (every entry's
 * (material, unit) must be in `names`: -1 otherwise), for an unmapped SKU
 * one byte of length and the SKU, then the quantity as a zigzag varint (a
 * pizza of 7 materials is about 30 bytes). 0 with *blob (malloc'd, caller
 * frees; NULL when the list is empty) and *len, or -1.
 */
int stock_deltas_encode(const struct stock_deltas *d, const struct stock_names *names,
                        uint8_t **blob, size_t *len);

/* At most how many bytes stock_deltas_encode_to writes for `count` entries. */
size_t stock_deltas_encoded_max(size_t count);

/* As stock_deltas_encode, into `out` (room for stock_deltas_encoded_max(d->count)
 * bytes, the caller's; a writer reuses one): 0 with *len (0 for an empty
 * list), or -1 when an entry's name is not in `names`. */
int stock_deltas_encode_to(const struct stock_deltas *d, const struct stock_names *names,
                           uint8_t *out, size_t *len);

/*
 * Adds the deltas of a stored blob to `d` (merging with what it has),
 * names resolved through `names`. 0, or -1 when the blob is damaged or
 * names an unknown id (then `d` may hold part of it) or out of memory.
 */
int stock_deltas_decode(const uint8_t *blob, size_t len, const struct stock_names *names,
                        struct stock_deltas *d);

/*
 * Explodes a sold SKU into raw materials: the signature of recipes_explode
 * (agent/inventory/recipes.h), so that the journal takes the recipes as a
 * function and an immutable set. Returns 1 when a recipe was in force at
 * business_time_ms (emit was called per material, quantities positive), 0
 * when the SKU has no recipe then.
 */
typedef void (*stock_emit_fn)(void *arg, const char *material_id, const char *unit,
                              int64_t quantity_milli);
typedef int (*stock_explode_fn)(const void *recipes, const char *sku, int64_t qty,
                                int64_t business_time_ms, stock_emit_fn emit, void *arg);

/*
 * A sale's deltas into `out` (emptied first): each line through `explode`
 * at `recipe_time_ms` (the sale's business time; for a refund or void, its
 * original's when known, so that exactly what was consumed comes back); a
 * sale consumes (reason sales, negative), a refund or void gives back
 * (reason refunds, positive) when `refunds_restock`, else moves nothing; a
 * line without a recipe is an unmapped entry (never blocks the sale).
 * `explode` NULL = no recipes (all lines unmapped). 0, or -1 out of memory.
 */
int stock_sale_deltas(const struct sale *sale, int64_t recipe_time_ms, stock_explode_fn explode,
                      const void *recipes, int refunds_restock, struct stock_deltas *out);

/* ---- adjustments ---------------------------------------------------------- */

enum stock_adjustment_kind {
  STOCK_ADJUSTMENT_DELIVERY = 1, /* quantity received (> 0) */
  STOCK_ADJUSTMENT_WASTE = 2,    /* quantity thrown away (> 0) */
  STOCK_ADJUSTMENT_COUNT = 3,    /* the absolute on-hand a physical count found (>= 0) */
};

const char *stock_adjustment_kind_name(enum stock_adjustment_kind kind);

struct stock_adjustment {
  char adjustment_id[STOCK_ID_MAX + 1];
  enum stock_adjustment_kind kind;
  char material_id[STOCK_ID_MAX + 1];
  char unit[STOCK_UNIT_MAX + 1];
  int64_t quantity_milli;
  char business_time[SALE_TIME_TEXT_MAX + 1]; /* as sent */
  int64_t business_time_ms;
  int32_t utc_offset_minutes;
  char reason[STOCK_REASON_TEXT_MAX + 1]; /* "" = not given */
  char note[STOCK_NOTE_MAX + 1];          /* "" = not given */
};

/* SHA-256 over every field as sent: what makes a retry a duplicate and a
 * different adjustment under the same id a conflict. 0 or -1. */
int stock_adjustment_hash(const struct stock_adjustment *a, uint8_t hash[32]);

/* ---- on-hand ------------------------------------------------------------------ */

/* One material's figures, as the status page shows them. */
struct stock_material {
  char material_id[STOCK_ID_MAX + 1];
  char unit[STOCK_UNIT_MAX + 1];
  int64_t on_hand_milli;
  int64_t low_stock_milli;        /* threshold; -1 = none configured */
  int64_t consumed_pending_milli; /* consumed by sales not yet in a batch */
  int64_t consumed_last_batch_milli; /* consumed by sales of the newest batch sealed */
};

/* Items of one SKU sold while it had no recipe. */
struct stock_unmapped {
  char sku[SALE_TEXT_MAX + 1];
  int64_t items_milli; /* thousandths of an item, as the deltas keep them */
};

/*
 * On-hand per material, and the items sold without a recipe: their total
 * over the journal's whole life (kept in the stored base, moved at each
 * seal), and per SKU those of the rows not sealed when the journal opened
 * and of every row since. The journal's writer thread changes it; any
 * thread may take a snapshot (an internal mutex guards the table).
 */
struct stock {
  pthread_mutex_t lock;
  struct stock_material *materials; /* sorted by material_id */
  size_t count, capacity;
  struct stock_unmapped *unmapped;  /* at most STOCK_UNMAPPED_SKUS_MAX, first seen first */
  size_t unmapped_count;
  int64_t unmapped_items_milli;     /* every SKU, those past the table's end too */
};

#define STOCK_UNMAPPED_SKUS_MAX 64

/* The stored base keeps unmapped items under this prefix (no id may
 * contain it), so they never mix with a material's on-hand. */
#define STOCK_UNMAPPED_PREFIX '#'

/* Initialises an empty table. 0 or -1. */
int stock_init(struct stock *s);
/* Frees the table; `s` may be NULL. */
void stock_destroy(struct stock *s);

/*
 * Applies `d` times `sign` (1, or -1 to undo) to on-hand; sales
 * consumption also counts as pending (until stock_sealed); unmapped entries
 * count the SKU's items sold without a recipe. 0, or -1 out of memory
 * (then part of it may be applied: the caller fails the transaction and
 * rebuilds). Writer thread.
 */
int stock_apply(struct stock *s, const struct stock_deltas *d, int sign);

/* The on-hand of `material_id`; 0 and *unit "" when it never moved. */
int64_t stock_on_hand(struct stock *s, const char *material_id, char unit[STOCK_UNIT_MAX + 1]);

/* A sealed batch took `d`: its sales consumption moves from pending to
 * "last batch". Writer thread. */
void stock_sealed(struct stock *s, const struct stock_deltas *d);

/* The sales consumption of `d` times `sign` back into pending (1: rows
 * unsealed, their batches deleted) or out of it (-1: rows sealed, with no
 * "last batch" figure: the journal's open, moving the kept figures to the
 * sealing cursor); on-hand does not move (the stored base moved with the
 * cursor). Writer thread, or the opening one. */
void stock_pending_add(struct stock *s, const struct stock_deltas *d, int sign);

/*
 * Sets the low-stock thresholds from "MATERIAL=QTY_MILLI,..." (config
 * inventory.low_stock). 0, or -1 with `err` naming the entry.
 */
int stock_set_thresholds(struct stock *s, const char *spec, char *err, size_t err_size);

/* A copy of the table (caller frees *materials) and of the unmapped SKUs
 * (caller frees *unmapped), with the total of unmapped items. Any thread.
 * 0 or -1 out of memory. */
int stock_snapshot(struct stock *s, struct stock_material **materials, size_t *count,
                   struct stock_unmapped **unmapped, size_t *unmapped_count,
                   int64_t *unmapped_items_milli);

#endif
