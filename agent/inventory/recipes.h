/*
 * recipes.h - recipes (bills of materials) versioned as a slowly changing
 * dimension of type 2, and the explosion of a sold SKU into raw materials.
 *
 * A recipe maps a menu SKU (or a sub-recipe such as PIZZA-BASE-L, or a
 * modifier such as MOD-EXTRA-CHEESE) to raw materials in integer milli-units
 * of g, ml or piece, and may include other recipes. Each (sku, version) has
 * valid_from; its valid_to is the valid_from of the next version of the same
 * SKU (NULL while it is the newest). Loading a new version closes the open
 * one at the new one's valid_from (an UPDATE of valid_to only); a stored
 * version's components are never rewritten. A sale consumes the version in
 * force at its business time t: valid_from <= t < valid_to, so a sale at
 * exactly a boundary uses the NEW version, and a sale journaled late still
 * uses the version it was sold under.
 *
 * The CSV format (firmware-config/RECIPES.md has the long form):
 *
 *   sku,version,valid_from,component,kind,quantity_milli,unit,yield_pct
 *   PIZZA-MARG-L,1,2026-01-01T00:00:00+01:00,PIZZA-BASE-L,recipe,1000,piece,
 *   PIZZA-MARG-L,1,2026-01-01T00:00:00+01:00,cheese-mozzarella,material,180000,g,
 *   SIDE-FRIES,1,2026-01-01T00:00:00+01:00,potato-fries,material,150000,g,80
 *   MOD-NO-ONION,1,2026-01-01T00:00:00+01:00,,none,,,
 *
 * - The header row is required: these 8 names in this order (any case).
 * - One row per component; all rows of one (sku, version) must agree on
 *   valid_from and be contiguous (one block per version).
 * - sku, component: 1-64 of [A-Za-z0-9._:-]. version: integer 1..2^31-1.
 *   valid_from: RFC 3339 with an offset (Z allowed).
 * - kind: "material" (component is a raw material id), "recipe" (component
 *   is another recipe's SKU, included at the same business time; unit must
 *   be "piece": quantity_milli 1000 is one whole portion of it) or "none"
 *   (the version consumes nothing on purpose, e.g. MOD-NO-ONION: the SKU is
 *   mapped, not unmapped; component, quantity_milli, unit, yield_pct empty;
 *   the only row of its version). A modifier can only add: "no onions"
 *   does not give onions back.
 * - quantity_milli: integer 1..100,000,000 (milli-units of `unit`: at
 *   most 100 kg, 100 l or 100,000 pieces per portion).
 *   unit: g, ml or piece; one material has one unit across every recipe.
 * - yield_pct: empty (= 100) or a percentage 0.01..100 with at most two
 *   decimals: the usable share of the raw quantity. The raw quantity is
 *   ceil(quantity_milli * 100 / yield_pct), computed exactly in integers
 *   (an 8 oz portion, 226796 mg, at yield 80 needs 283495 mg raw).
 * - Blank lines, lines of only commas and lines whose first non-blank
 *   character is '#' are ignored (and still counted in line numbers).
 *   Fields may be double-quoted ("" is a quote inside) but never span
 *   lines; blanks around unquoted fields are dropped; CRLF and LF line
 *   ends and a leading UTF-8 BOM are accepted.
 * - Refused: unknown units or kinds, zero/negative/fractional quantities, a
 *   component twice in one version, include cycles (at any business time),
 *   includes nested more than RECIPES_INCLUDE_DEPTH deep, includes of
 *   recipes with no version in force when the including version starts,
 *   versions whose number does not grow with valid_from, two versions of a
 *   SKU starting at the same instant in one file, a stored (sku, version)
 *   with other content, a new version numbered below the newest stored one
 *   or starting before it starts, and quantities that would overflow when
 *   RECIPES_QTY_MAX is sold. A new version starting at the same instant as
 *   the newest stored one is accepted only while that one is not in force
 *   yet (now_ms < its valid_from: correcting tomorrow's menu); it is then
 *   closed with an empty interval and never used. Re-loading a file that is
 *   already stored is a no-op.
 *
 * Explosion arithmetic (an independent recomputation can follow it): for a
 * line of `qty` of SKU S at time t, S is exploded with multiplier
 * m = qty * 1000 (milli-portions). A material component with raw quantity r
 * (yield applied) emits ceil(m * r / 1000); a recipe component with raw
 * quantity r explodes the included recipe, at t, with multiplier
 * ceil(m * r / 1000). With whole portions (r a multiple of 1000 for
 * includes) nothing is rounded beyond the yield's ceil.
 */
#ifndef AGENT_INVENTORY_RECIPES_H
#define AGENT_INVENTORY_RECIPES_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

enum recipes_error {
  RECIPES_OK = 0,
  RECIPES_EINVAL = -1, /* the file (or its combination with what is stored) is refused */
  RECIPES_EDB = -2,    /* SQLite failed (disk full, I/O, locked): retry later */
  RECIPES_ENOMEM = -3, /* out of memory */
};

#define RECIPES_ID_MAX 64        /* sku and material ids */
#define RECIPES_INCLUDE_DEPTH 8  /* deepest chain of includes accepted */
#define RECIPES_ROWS_MAX 100000  /* rows per file */
#define RECIPES_QTY_MAX 100000   /* largest qty recipes_explode takes (the POS contract's) */
#define RECIPES_QUANTITY_MILLI_MAX 100000000

struct recipes;        /* every version of every recipe, immutable once loaded */
struct recipes_update; /* a parsed, validated CSV file, not applied yet */

/* Called by recipes_explode once per (path through includes, material): the
 * same material may come more than once for one SKU; the sum is what the
 * line consumed. `material_id` and `unit` ("g", "ml", "piece") are borrowed
 * from the set and live as long as it. quantity_milli > 0. */
typedef void (*recipes_emit_fn)(void *arg, const char *material_id, const char *unit,
                                int64_t quantity_milli);

/*
 * Parses and validates a recipe CSV (format above). Checks everything that
 * the file alone can show, including include cycles and unknown includes
 * among its own SKUs (an include of a SKU not in the file is checked against
 * the stored set by recipes_apply). Returns 0 with *out (caller frees with
 * recipes_update_free), or -1 (RECIPES_EINVAL, or RECIPES_ENOMEM) with `err`
 * naming line and field ("line 14, field quantity_milli: ..."); *out is NULL
 * then and nothing else happens. Any thread; `text` is borrowed.
 */
int recipes_parse(const char *text, size_t len, struct recipes_update **out, char *err,
                  size_t err_size);

/* Reads `path` (at most 16 MiB) and parses it with recipes_parse; errors are
 * prefixed with the path ("recipes.csv: line 3, field unit: ..."). */
int recipes_parse_file(const char *path, struct recipes_update **out, char *err,
                       size_t err_size);

/* Number of (sku, version) blocks in the update. */
size_t recipes_update_version_count(const struct recipes_update *u);

/* Frees an update; NULL does nothing. */
void recipes_update_free(struct recipes_update *u);

/* The SQL that creates the recipe tables (part of journal schema v5). */
extern const char recipes_schema_sql[];

/*
 * Inside the caller's open transaction on `db`: checks the update against
 * the versions stored (SCD2: a new version closes the previous one at its
 * valid_from, never rewrites it; overlapping or backdated-before-the-newest
 * versions and changed stored versions refused with line and field; include
 * cycles and unknown includes across file and store refused) and stores it.
 * Versions already stored with the same content are skipped (no-op).
 * `now_ms` is recorded as loaded_ms. Returns 0, RECIPES_EINVAL (the content
 * is refused: a 400), RECIPES_EDB (SQLite failed: a 503) or RECIPES_ENOMEM,
 * with `err` set; on error the caller rolls back, and the recipes in force
 * stay as they were. Runs on the thread that owns `db`.
 */
int recipes_apply(sqlite3 *db, const struct recipes_update *u, int64_t now_ms, char *err,
                  size_t err_size);

/* recipes_apply, and says how many versions were newly stored and how many
 * were already stored identically (either pointer may be NULL). */
int recipes_apply_counted(sqlite3 *db, const struct recipes_update *u, int64_t now_ms,
                          size_t *stored, size_t *unchanged, char *err, size_t err_size);

/* Loads every stored version into memory (indexed for recipes_explode). NULL
 * with `err` on failure. A database without the recipe tables is an error;
 * empty tables give an empty set. The caller frees with recipes_free. */
struct recipes *recipes_load(sqlite3 *db, char *err, size_t err_size);

/* Frees a set; NULL does nothing. No recipes_explode may be running on it. */
void recipes_free(struct recipes *r);

/*
 * Calls `emit` for each raw material that selling `qty` (1..RECIPES_QTY_MAX) of
 * `sku` consumes under the version in force at `business_time_ms` (includes
 * expanded at the same time, yields applied, quantities positive
 * milli-units). Returns 1 when a version was in force (also for a "none"
 * recipe, which emits nothing), 0 when the SKU has no recipe at that time or
 * qty is out of range (unmapped: the caller counts it and goes on). No SQL,
 * no allocation; thread-safe on an immutable set. `emit` is called before
 * this returns, on the caller's thread; NULL only asks whether the SKU is
 * mapped at that time.
 */
int recipes_explode(const struct recipes *r, const char *sku, int64_t qty,
                    int64_t business_time_ms, recipes_emit_fn emit, void *arg);

/* The version number of `sku` in force at `business_time_ms`, or 0 when
 * none is (for the deltas' audit trail). Same rules and threads as
 * recipes_explode. */
int64_t recipes_version_at(const struct recipes *r, const char *sku, int64_t business_time_ms);

/* Versions in force now and in the future: the number of SKUs with an open
 * version (valid_to NULL), i.e. the number of mapped SKUs. NULL gives 0. */
size_t recipes_count(const struct recipes *r);

/* Every stored version, closed ones included. NULL gives 0. */
size_t recipes_version_count(const struct recipes *r);

/* The unit ("g", "ml", "piece") of a raw material used by any stored
 * version, or NULL if no recipe uses it. Borrowed from the set. */
const char *recipes_material_unit(const struct recipes *r, const char *material_id);

/* The materials used by any stored version, sorted by id: for i in
 * 0..recipes_material_count()-1, recipes_material_at() gives the id and unit
 * (borrowed from the set). Returns 0, or -1 if i is out of range. */
size_t recipes_material_count(const struct recipes *r);
int recipes_material_at(const struct recipes *r, size_t i, const char **material_id,
                        const char **unit);

#endif
