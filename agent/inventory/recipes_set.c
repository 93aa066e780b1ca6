/*
 * recipes_set.c - the indexed, immutable set of every recipe version, its
 * checks, and the explosion of a sold SKU into raw materials.
 *
 * Layout: SKUs sorted by id, each owning a run of versions sorted by
 * (valid_from, version); each version owns a run of components whose target
 * is an index (a material's, or an included SKU's), so recipes_explode is
 * two binary searches per level and no allocation, no SQL, no locks: it is
 * called for every sale line on the journal's writer thread.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inventory/recipes_int.h"
#include "platform/clock.h"

#define RS_NONE UINT32_MAX /* an include left unresolved (a file checked on its own) */
#define RS_OPEN INT64_MAX  /* valid_to of the newest version */

struct rs_sku {
  char id[RECIPES_ID_MAX + 1];
  uint32_t first_version;
  uint32_t version_count;
};

struct rs_version {
  int64_t version;
  int64_t valid_from_ms;
  int64_t valid_to_ms; /* RS_OPEN while it is the newest */
  uint32_t sku;
  uint32_t first_component;
  uint32_t component_count;
  unsigned line; /* 0 = stored before this load */
};

struct rs_component {
  uint8_t kind;
  uint32_t target; /* material index, or SKU index of an include (RS_NONE: unresolved) */
  int64_t raw_milli;
  unsigned line;
};

struct rs_material {
  char id[RECIPES_ID_MAX + 1];
  uint8_t unit;
  unsigned line;
};

/* rs_id_cmp reads an entry as its id. */
_Static_assert(offsetof(struct rs_sku, id) == 0, "rs_sku starts with its id");
_Static_assert(offsetof(struct rs_material, id) == 0, "rs_material starts with its id");

struct recipes {
  struct rs_sku *skus;
  size_t sku_count;
  struct rs_version *versions;
  size_t version_count;
  struct rs_component *components;
  size_t component_count;
  struct rs_material *materials;
  size_t material_count;
};

/* ---------------------------------------------------------------------- */
/* The flat form (recipes_update)                                          */
/* ---------------------------------------------------------------------- */

const char *recipes__unit_name(int unit)
{
  switch (unit) {
  case RECIPES_UNIT_G:
    return "g";
  case RECIPES_UNIT_ML:
    return "ml";
  case RECIPES_UNIT_PIECE:
    return "piece";
  default:
    return "?";
  }
}

static int rs_grow(void **items, size_t *cap, size_t count, size_t size)
{
  size_t new_cap;
  void *bigger;

  if (count < *cap)
    return 0;
  new_cap = *cap ? *cap * 2 : 64;
  bigger = realloc(*items, new_cap * size);
  if (!bigger)
    return RECIPES_ENOMEM;
  *items = bigger;
  *cap = new_cap;
  return 0;
}

int recipes__add_version(struct recipes_update *u, const struct recipes__in_version *v)
{
  if (rs_grow((void **)&u->versions, &u->version_cap, u->version_count, sizeof(*v)))
    return RECIPES_ENOMEM;
  u->versions[u->version_count++] = *v;
  return 0;
}

int recipes__add_component(struct recipes_update *u, const struct recipes__in_component *c)
{
  if (rs_grow((void **)&u->components, &u->component_cap, u->component_count, sizeof(*c)))
    return RECIPES_ENOMEM;
  u->components[u->component_count++] = *c;
  return 0;
}

static int rs_version_cmp(const void *a, const void *b)
{
  const struct recipes__in_version *x = a, *y = b;
  int c = strcmp(x->sku, y->sku);

  if (c)
    return c;
  if (x->version != y->version)
    return x->version < y->version ? -1 : 1;
  return x->line < y->line ? -1 : x->line > y->line;
}

void recipes__sort_versions(struct recipes_update *u)
{
  if (u->version_count > 1)
    qsort(u->versions, u->version_count, sizeof(*u->versions), rs_version_cmp);
}

long recipes__find_version(const struct recipes_update *u, const char *sku, int64_t version)
{
  size_t lo = 0, hi = u->version_count;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const struct recipes__in_version *v = &u->versions[mid];
    int c = strcmp(v->sku, sku);
    if (c == 0)
      c = v->version < version ? -1 : v->version > version;
    if (c == 0)
      return (long)mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -1;
}

int recipes__same_content(const struct recipes_update *a, const struct recipes__in_version *va,
                          const struct recipes_update *b, const struct recipes__in_version *vb)
{
  if (va->valid_from_ms != vb->valid_from_ms || va->consumes_nothing != vb->consumes_nothing ||
      va->component_count != vb->component_count)
    return 0;
  for (size_t i = 0; i < va->component_count; i++) {
    const struct recipes__in_component *x = &a->components[va->first_component + i];
    const struct recipes__in_component *y = &b->components[vb->first_component + i];
    if (strcmp(x->id, y->id) != 0 || x->kind != y->kind || x->unit != y->unit ||
        x->quantity_milli != y->quantity_milli || x->yield_bp != y->yield_bp)
      return 0;
  }
  return 1;
}

/* ---------------------------------------------------------------------- */
/* Lookups and the explosion                                               */
/* ---------------------------------------------------------------------- */

/* bsearch's comparison for both sorted tables: each starts with its id,
 * so a pointer to an entry is a pointer to its id. */
static int rs_id_cmp(const void *key, const void *entry)
{
  return strcmp(key, (const char *)entry);
}

static long rs_find_sku(const struct recipes *r, const char *sku)
{
  const struct rs_sku *at =
      r->sku_count ? bsearch(sku, r->skus, r->sku_count, sizeof(*r->skus), rs_id_cmp) : NULL;
  return at ? (long)(at - r->skus) : -1;
}

static long rs_find_material(const struct recipes *r, const char *id)
{
  const struct rs_material *at =
      r->material_count
          ? bsearch(id, r->materials, r->material_count, sizeof(*r->materials), rs_id_cmp)
          : NULL;
  return at ? (long)(at - r->materials) : -1;
}

/* The version of SKU `sku` in force at t (valid_from <= t < valid_to), or -1.
 * Versions are sorted by (valid_from, version): the last one starting at or
 * before t is the one in force, so a sale at exactly a boundary takes the
 * new version, and a version superseded before it started (an empty
 * interval) is never chosen. */
static long rs_in_force(const struct recipes *r, uint32_t sku, int64_t t)
{
  const struct rs_sku *s = &r->skus[sku];
  size_t lo = 0, hi = s->version_count;
  const struct rs_version *v;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (r->versions[s->first_version + mid].valid_from_ms <= t)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0)
    return -1;
  v = &r->versions[s->first_version + lo - 1];
  if (t >= v->valid_to_ms)
    return -1;
  return (long)(s->first_version + lo - 1);
}

/* Explodes version `vi` with multiplier `mult` (milli-portions). Returns 0,
 * or -1 on overflow or an include chain deeper than the bound (neither can
 * happen in a set recipes__build accepted, which exploded RECIPES_QTY_MAX
 * of everything at every boundary). `emit` may be NULL (a check only). */
static int rs_explode_version(const struct recipes *r, size_t vi, int64_t mult, int64_t t,
                              recipes_emit_fn emit, void *arg, int level)
{
  const struct rs_version *v = &r->versions[vi];

  for (uint32_t i = 0; i < v->component_count; i++) {
    const struct rs_component *c = &r->components[v->first_component + i];
    int64_t product, quantity;
    long child;
    if (__builtin_mul_overflow(mult, c->raw_milli, &product))
      return -1;
    /* ceil(product / 1000): both are positive. */
    quantity = product / 1000 + (product % 1000 != 0);
    if (c->kind == RECIPES_KIND_MATERIAL) {
      if (emit)
        emit(arg, r->materials[c->target].id, recipes__unit_name(r->materials[c->target].unit),
             quantity);
      continue;
    }
    if (c->target == RS_NONE)
      continue;
    if (level >= RECIPES_INCLUDE_DEPTH)
      return -1;
    child = rs_in_force(r, c->target, t);
    if (child < 0)
      continue;
    if (rs_explode_version(r, (size_t)child, quantity, t, emit, arg, level + 1))
      return -1;
  }
  return 0;
}

/*
 * See recipes.h. Called for every sale line on the journal writer thread:
 * two binary searches per level, no allocation, no SQL.
 */
int recipes_explode(const struct recipes *r, const char *sku, int64_t qty,
                    int64_t business_time_ms, recipes_emit_fn emit, void *arg)
{
  long s, v;

  if (!r || !sku || qty < 1 || qty > RECIPES_QTY_MAX)
    return 0;
  s = rs_find_sku(r, sku);
  if (s < 0)
    return 0;
  v = rs_in_force(r, (uint32_t)s, business_time_ms);
  if (v < 0)
    return 0;
  /* A set that recipes__build accepted cannot fail here (it exploded
   * RECIPES_QTY_MAX of every version at every boundary). */
  (void)rs_explode_version(r, (size_t)v, qty * 1000, business_time_ms, emit, arg, 0);
  return 1;
}

int64_t recipes_version_at(const struct recipes *r, const char *sku, int64_t business_time_ms)
{
  long s, v;

  if (!r || !sku)
    return 0;
  s = rs_find_sku(r, sku);
  if (s < 0)
    return 0;
  v = rs_in_force(r, (uint32_t)s, business_time_ms);
  return v < 0 ? 0 : r->versions[v].version;
}

size_t recipes_count(const struct recipes *r)
{
  /* Every SKU's newest version is open (there is no retiring a SKU), so
   * the number of open versions is the number of SKUs. */
  return r ? r->sku_count : 0;
}

size_t recipes_version_count(const struct recipes *r)
{
  return r ? r->version_count : 0;
}

const char *recipes_material_unit(const struct recipes *r, const char *material_id)
{
  long m;

  if (!r || !material_id)
    return NULL;
  m = rs_find_material(r, material_id);
  return m < 0 ? NULL : recipes__unit_name(r->materials[m].unit);
}

size_t recipes_material_count(const struct recipes *r)
{
  return r ? r->material_count : 0;
}

int recipes_material_at(const struct recipes *r, size_t i, const char **material_id,
                        const char **unit)
{
  if (!r || i >= r->material_count)
    return -1;
  if (material_id)
    *material_id = r->materials[i].id;
  if (unit)
    *unit = recipes__unit_name(r->materials[i].unit);
  return 0;
}

void recipes_free(struct recipes *r)
{
  if (!r)
    return;
  free(r->skus);
  free(r->versions);
  free(r->components);
  free(r->materials);
  free(r);
}

/* ---------------------------------------------------------------------- */
/* Building and checking                                                   */
/* ---------------------------------------------------------------------- */

enum { RS_WHITE = 0, RS_GREY = 1, RS_BLACK = 2 };

struct rs_start {
  int64_t valid_from_ms;
  uint32_t version;
};

struct rs_mark {
  uint32_t epoch;    /* colour and height belong to this instant */
  uint32_t affected; /* the instant at which this SKU is to be checked */
  uint8_t color;
  uint8_t height;
};

struct rs_step {
  uint32_t sku;
  unsigned line; /* line of the include that led here; 0 for a root or a stored row */
};

struct rs_build {
  const struct recipes_update *in;
  struct recipes *r;
  int partial;
  char *err;
  size_t err_size;
  /* Per SKU, valid for the instant being checked (epoch): DFS colour and
   * include height, and whether its includes may have changed then. */
  struct rs_mark *mark;
  uint32_t epoch;
  /* Who includes each SKU, in any version: rev_list[rev_start[s]..rev_start[s+1]). */
  uint32_t *rev_start;
  uint32_t *rev_list;
  uint32_t *queue;   /* the SKUs to check at one instant */
  struct rs_start *by_time; /* every version's start, sorted */
  struct rs_step path[RECIPES_INCLUDE_DEPTH + 2];
};

static int rs_fail(struct rs_build *b, unsigned line, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "line N, field F: ..." for a row of the file; "stored recipes, field F:
 * ..." when only stored rows are involved. Returns RECIPES_EINVAL. */
static int rs_fail(struct rs_build *b, unsigned line, const char *field, const char *fmt, ...)
{
  va_list ap;
  int used;

  if (line)
    used = snprintf(b->err, b->err_size, "line %u, field %s: ", line, field);
  else
    used = snprintf(b->err, b->err_size, "stored recipes, field %s: ", field);
  if (used < 0 || (size_t)used >= b->err_size)
    return RECIPES_EINVAL;
  va_start(ap, fmt);
  vsnprintf(b->err + used, b->err_size - (size_t)used, fmt, ap);
  va_end(ap);
  return RECIPES_EINVAL;
}

static const char *rs_where(unsigned line, char *out, size_t size)
{
  if (line)
    snprintf(out, size, "line %u", line);
  else
    snprintf(out, size, "stored");
  return out;
}

/* SKUs and versions, in the input's (sku, version) order; valid_to of each
 * version is the valid_from of the next of its SKU. */
static int rs_build_versions(struct rs_build *b)
{
  const struct recipes_update *in = b->in;
  struct recipes *r = b->r;
  size_t component = 0;

  r->skus = calloc(in->version_count ? in->version_count : 1, sizeof(*r->skus));
  r->versions = calloc(in->version_count ? in->version_count : 1, sizeof(*r->versions));
  if (!r->skus || !r->versions)
    return RECIPES_ENOMEM;
  for (size_t i = 0; i < in->version_count; i++) {
    const struct recipes__in_version *iv = &in->versions[i];
    struct rs_version *v = &r->versions[i];
    if (i == 0 || strcmp(iv->sku, in->versions[i - 1].sku) != 0) {
      struct rs_sku *s = &r->skus[r->sku_count++];
      memcpy(s->id, iv->sku, sizeof(s->id));
      s->first_version = (uint32_t)i;
    } else {
      const struct recipes__in_version *prev = &in->versions[i - 1];
      char where[32];
      if (prev->version == iv->version)
        return rs_fail(b, iv->line ? iv->line : prev->line, "version",
                       "%s version %lld is given twice", iv->sku, (long long)iv->version);
      if (iv->valid_from_ms < prev->valid_from_ms)
        return rs_fail(b, iv->line ? iv->line : prev->line, "valid_from",
                       "%s version %lld starts at %s, before version %lld (%s), which starts "
                       "at %s: version numbers must grow with valid_from; number the "
                       "versions in the order they take effect",
                       iv->sku, (long long)iv->version, iv->valid_from,
                       (long long)prev->version, rs_where(prev->line, where, sizeof(where)),
                       prev->valid_from);
      r->versions[i - 1].valid_to_ms = iv->valid_from_ms;
    }
    r->skus[r->sku_count - 1].version_count++;
    v->version = iv->version;
    v->valid_from_ms = iv->valid_from_ms;
    v->valid_to_ms = RS_OPEN;
    v->sku = (uint32_t)(r->sku_count - 1);
    v->first_component = (uint32_t)component;
    v->component_count = (uint32_t)iv->component_count;
    v->line = iv->line;
    component += iv->component_count;
  }
  r->version_count = in->version_count;
  return 0;
}

static int rs_material_cmp(const void *a, const void *b)
{
  const struct rs_material *x = a, *y = b;
  int c = strcmp(x->id, y->id);

  if (c)
    return c;
  return x->line < y->line ? -1 : x->line > y->line;
}

/* One entry per material, sorted by id; a material used in two units is refused. */
static int rs_build_materials(struct rs_build *b)
{
  const struct recipes_update *in = b->in;
  struct recipes *r = b->r;
  size_t n = 0;

  r->materials = calloc(in->component_count ? in->component_count : 1, sizeof(*r->materials));
  if (!r->materials)
    return RECIPES_ENOMEM;
  for (size_t i = 0; i < in->component_count; i++) {
    const struct recipes__in_component *c = &in->components[i];
    if (c->kind != RECIPES_KIND_MATERIAL)
      continue;
    memcpy(r->materials[n].id, c->id, sizeof(c->id));
    r->materials[n].unit = c->unit;
    r->materials[n].line = c->line;
    n++;
  }
  if (n > 1)
    qsort(r->materials, n, sizeof(*r->materials), rs_material_cmp);
  for (size_t i = 0; i < n; i++) {
    struct rs_material *m = &r->materials[i];
    struct rs_material *kept = r->material_count ? &r->materials[r->material_count - 1] : NULL;
    if (kept && strcmp(kept->id, m->id) == 0) {
      char where[32];
      if (kept->unit != m->unit)
        return rs_fail(b, m->line ? m->line : kept->line, "unit",
                       "material %s is in %s here but in %s (%s); one material has one unit "
                       "in every recipe",
                       m->id, recipes__unit_name(m->line ? m->unit : kept->unit),
                       recipes__unit_name(m->line ? kept->unit : m->unit),
                       rs_where(m->line ? kept->line : m->line, where, sizeof(where)));
      continue;
    }
    r->materials[r->material_count++] = *m;
  }
  return 0;
}

/* Components with their targets resolved to indexes. */
static int rs_build_components(struct rs_build *b)
{
  const struct recipes_update *in = b->in;
  struct recipes *r = b->r;

  r->components = calloc(in->component_count ? in->component_count : 1, sizeof(*r->components));
  if (!r->components)
    return RECIPES_ENOMEM;
  for (size_t i = 0; i < in->version_count; i++) {
    const struct recipes__in_version *iv = &in->versions[i];
    const struct rs_version *v = &r->versions[i];
    for (size_t k = 0; k < iv->component_count; k++) {
      const struct recipes__in_component *ic = &in->components[iv->first_component + k];
      struct rs_component *c = &r->components[v->first_component + k];
      long target = ic->kind == RECIPES_KIND_MATERIAL ? rs_find_material(r, ic->id)
                                                      : rs_find_sku(r, ic->id);
      if (target < 0 && (ic->kind == RECIPES_KIND_MATERIAL || !b->partial))
        return rs_fail(b, ic->line, "component",
                       "%s includes recipe %s, which is neither in this file nor stored; "
                       "add the rows of %s or correct the name",
                       iv->sku, ic->id, ic->id);
      c->kind = ic->kind;
      c->target = target < 0 ? RS_NONE : (uint32_t)target;
      c->raw_milli = ic->raw_milli;
      c->line = ic->line;
    }
  }
  r->component_count = in->component_count;
  return 0;
}

/* "A includes B includes A" from path[from] to path[to], then `closing`. */
static void rs_chain_text(const struct rs_build *b, int from, int to, uint32_t closing,
                          char *out, size_t size)
{
  size_t used = 0;

  out[0] = '\0';
  for (int i = from; i <= to && used < size; i++) {
    int n = snprintf(out + used, size - used, "%s includes ", b->r->skus[b->path[i].sku].id);
    if (n < 0)
      return;
    used += (size_t)n;
  }
  if (used < size)
    snprintf(out + used, size - used, "%s", b->r->skus[closing].id);
}

/* The line to blame for a problem along path[from..level] plus the edge
 * `edge_line`: the newest row of the file involved, so the person fixes the
 * row they just wrote. */
static unsigned rs_blame(const struct rs_build *b, int from, int level, unsigned edge_line)
{
  unsigned line = edge_line;

  for (int i = from + 1; i <= level; i++) {
    if (b->path[i].line > line)
      line = b->path[i].line;
  }
  return line;
}

static int rs_color(const struct rs_build *b, uint32_t sku)
{
  return b->mark[sku].epoch == b->epoch ? b->mark[sku].color : RS_WHITE;
}

/* Depth-first through the includes in force at `t` from SKU path[level].sku:
 * refuses cycles, chains deeper than RECIPES_INCLUDE_DEPTH and includes of a
 * SKU with no version in force at `t`. Colours and heights are per instant. */
static int rs_visit(struct rs_build *b, int64_t t, int level)
{
  const struct recipes *r = b->r;
  uint32_t sku = b->path[level].sku;
  const struct rs_version *v = &r->versions[rs_in_force(r, sku, t)];
  char when[32], chain[512];
  unsigned height = 0;

  b->mark[sku].epoch = b->epoch;
  b->mark[sku].color = RS_GREY;
  for (uint32_t i = 0; i < v->component_count; i++) {
    const struct rs_component *c = &r->components[v->first_component + i];
    uint32_t target = c->target;
    int rc;
    if (c->kind != RECIPES_KIND_RECIPE || target == RS_NONE)
      continue;
    if (rs_in_force(r, target, t) < 0)
      return rs_fail(b, c->line, "component",
                     "%s version %lld includes %s, which has no version in force at %s, when "
                     "this version is; give %s a version from then on, or start this one later",
                     r->skus[sku].id, (long long)v->version, r->skus[target].id,
                     clock_format_utc(t, when, sizeof(when)), r->skus[target].id);
    if (rs_color(b, target) == RS_GREY) {
      int from = 0;
      while (b->path[from].sku != target)
        from++;
      rs_chain_text(b, from, level, target, chain, sizeof(chain));
      return rs_fail(b, rs_blame(b, from, level, c->line), "component",
                     "include cycle in force at %s: %s; a recipe cannot include itself, "
                     "directly or through others",
                     clock_format_utc(t, when, sizeof(when)), chain);
    }
    if (rs_color(b, target) == RS_WHITE) {
      if (level + 1 > RECIPES_INCLUDE_DEPTH) {
        rs_chain_text(b, 0, level, target, chain, sizeof(chain));
        return rs_fail(b, rs_blame(b, 0, level, c->line), "component",
                       "includes nest more than %d deep at %s: %s; flatten the recipe",
                       RECIPES_INCLUDE_DEPTH, clock_format_utc(t, when, sizeof(when)), chain);
      }
      b->path[level + 1].sku = target;
      b->path[level + 1].line = c->line;
      rc = rs_visit(b, t, level + 1);
      if (rc)
        return rc;
    }
    if (b->mark[target].height + 1u > height)
      height = b->mark[target].height + 1u;
    if (height > RECIPES_INCLUDE_DEPTH)
      return rs_fail(b, c->line, "component",
                     "includes nest more than %d deep below %s at %s; flatten the recipe",
                     RECIPES_INCLUDE_DEPTH, r->skus[sku].id,
                     clock_format_utc(t, when, sizeof(when)));
  }
  b->mark[sku].height = (uint8_t)height;
  b->mark[sku].color = RS_BLACK;
  return 0;
}

/* Checks the SKUs b->queue[0..count) at instant `t`: their includes
 * (rs_visit) and that selling RECIPES_QTY_MAX of them cannot overflow. */
static int rs_check_instant(struct rs_build *b, int64_t t, size_t count)
{
  const struct recipes *r = b->r;
  char when[32];
  int rc;

  for (size_t i = 0; i < count; i++) {
    uint32_t s = b->queue[i];
    if (rs_color(b, s) != RS_WHITE || rs_in_force(r, s, t) < 0)
      continue;
    b->path[0].sku = s;
    b->path[0].line = 0;
    rc = rs_visit(b, t, 0);
    if (rc)
      return rc;
  }
  for (size_t i = 0; i < count; i++) {
    uint32_t s = b->queue[i];
    long v = rs_in_force(r, s, t);
    if (v >= 0 &&
        rs_explode_version(r, (size_t)v, (int64_t)RECIPES_QTY_MAX * 1000, t, NULL, NULL, 0))
      return rs_fail(b, r->versions[v].line, "quantity_milli",
                     "selling %d of %s at %s would overflow a 64-bit milli-unit count; "
                     "check the quantities of %s and of what it includes",
                     RECIPES_QTY_MAX, r->skus[s].id, clock_format_utc(t, when, sizeof(when)),
                     r->skus[s].id);
  }
  return 0;
}

/* Who includes whom, over every version: the reverse edges, as offsets. */
static int rs_build_reverse(struct rs_build *b)
{
  const struct recipes *r = b->r;

  b->rev_start = calloc(r->sku_count + 1, sizeof(*b->rev_start));
  b->rev_list = malloc((r->component_count ? r->component_count : 1) * sizeof(*b->rev_list));
  if (!b->rev_start || !b->rev_list)
    return RECIPES_ENOMEM;
  for (size_t c = 0; c < r->component_count; c++) {
    if (r->components[c].kind == RECIPES_KIND_RECIPE && r->components[c].target != RS_NONE)
      b->rev_start[r->components[c].target + 1]++;
  }
  for (size_t s = 0; s < r->sku_count; s++)
    b->rev_start[s + 1] += b->rev_start[s];
  for (size_t v = 0; v < r->version_count; v++) {
    const struct rs_version *version = &r->versions[v];
    for (uint32_t i = 0; i < version->component_count; i++) {
      const struct rs_component *c = &r->components[version->first_component + i];
      if (c->kind != RECIPES_KIND_RECIPE || c->target == RS_NONE)
        continue;
      /* rev_start[target] counts up while filling; it is restored below. */
      b->rev_list[b->rev_start[c->target]++] = version->sku;
    }
  }
  for (size_t s = r->sku_count; s > 0; s--)
    b->rev_start[s] = b->rev_start[s - 1];
  b->rev_start[0] = 0;
  return 0;
}

static int rs_start_cmp(const void *a, const void *b)
{
  int64_t x = ((const struct rs_start *)a)->valid_from_ms;
  int64_t y = ((const struct rs_start *)b)->valid_from_ms;

  return x < y ? -1 : x > y;
}

/* At instant `t` only what starts then changed: the SKUs with a version
 * starting at t, and every SKU that includes one of them (through any
 * version: a superset is harmless). Queues them; returns how many. */
static size_t rs_affected(struct rs_build *b, size_t first, size_t end)
{
  size_t count = 0;

  for (size_t i = first; i < end; i++) {
    uint32_t s = b->r->versions[b->by_time[i].version].sku;
    if (b->mark[s].affected != b->epoch) {
      b->mark[s].affected = b->epoch;
      b->queue[count++] = s;
    }
  }
  for (size_t q = 0; q < count; q++) {
    uint32_t s = b->queue[q];
    for (uint32_t e = b->rev_start[s]; e < b->rev_start[s + 1]; e++) {
      uint32_t parent = b->rev_list[e];
      if (b->mark[parent].affected != b->epoch) {
        b->mark[parent].affected = b->epoch;
        b->queue[count++] = parent;
      }
    }
  }
  return count;
}

/*
 * The includes in force only change when a version starts, so checking at
 * every valid_from checks every business time; and at each such instant
 * only the SKUs whose includes could have changed need checking (a problem
 * that existed before was found at the instant it began). This keeps a
 * file with thousands of SKUs and change dates fast.
 */
static int rs_check_graph(struct rs_build *b)
{
  const struct recipes *r = b->r;
  size_t first = 0;
  int rc = RECIPES_ENOMEM;

  b->mark = calloc(r->sku_count ? r->sku_count : 1, sizeof(*b->mark));
  b->queue = malloc((r->sku_count ? r->sku_count : 1) * sizeof(*b->queue));
  b->by_time = malloc((r->version_count ? r->version_count : 1) * sizeof(*b->by_time));
  if (!b->mark || !b->queue || !b->by_time || rs_build_reverse(b))
    goto out;
  for (size_t i = 0; i < r->version_count; i++) {
    b->by_time[i].valid_from_ms = r->versions[i].valid_from_ms;
    b->by_time[i].version = (uint32_t)i;
  }
  qsort(b->by_time, r->version_count, sizeof(*b->by_time), rs_start_cmp);
  rc = 0;
  while (!rc && first < r->version_count) {
    int64_t t = b->by_time[first].valid_from_ms;
    size_t end = first;
    while (end < r->version_count && b->by_time[end].valid_from_ms == t)
      end++;
    b->epoch++;
    rc = rs_check_instant(b, t, rs_affected(b, first, end));
    first = end;
  }
out:
  free(b->mark);
  free(b->queue);
  free(b->by_time);
  free(b->rev_start);
  free(b->rev_list);
  b->mark = NULL;
  b->by_time = NULL;
  b->queue = b->rev_start = b->rev_list = NULL;
  return rc;
}

/*
 * See recipes_int.h. The input must be sorted by (sku, version) and each
 * version's components by id.
 */
struct recipes *recipes__build(const struct recipes_update *in, int partial, int *rc, char *err,
                               size_t err_size)
{
  struct rs_build b = {.in = in, .partial = partial, .err = err, .err_size = err_size};

  b.r = calloc(1, sizeof(*b.r));
  *rc = b.r ? 0 : RECIPES_ENOMEM;
  if (!*rc)
    *rc = rs_build_versions(&b);
  if (!*rc)
    *rc = rs_build_materials(&b);
  if (!*rc)
    *rc = rs_build_components(&b);
  if (!*rc)
    *rc = rs_check_graph(&b);
  if (*rc) {
    if (*rc == RECIPES_ENOMEM)
      snprintf(err, err_size, "out of memory indexing %zu recipe versions", in->version_count);
    recipes_free(b.r);
    return NULL;
  }
  return b.r;
}
