/*
 * recipes.c - recipes in the journal database: storing a parsed file as
 * SCD type 2 versions (recipes_apply) and loading every stored version into
 * the indexed set (recipes_load); reading a recipe file from disk.
 *
 * Both run rarely (at start, and when a manager posts a file), so their
 * statements are prepared per call rather than held open: the journal's
 * writer keeps no recipe state, and nothing here is on a sale's path.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "inventory/recipes_int.h"
#include "inventory/recipes_sql.h"

#define RECIPES_FILE_MAX (16 * 1024 * 1024)

const char recipes_schema_sql[] = RECIPES_SCHEMA_SQL;

enum rcp_stmt {
  RCP_SELECT_VERSIONS,
  RCP_SELECT_COMPONENTS,
  RCP_CLOSE_OPEN,
  RCP_INSERT_VERSION,
  RCP_INSERT_COMPONENT,
  RCP_STMT_COUNT
};

static const char *const rcp_sql[RCP_STMT_COUNT] = {
    [RCP_SELECT_VERSIONS] = RECIPES_SQL_SELECT_VERSIONS,
    [RCP_SELECT_COMPONENTS] = RECIPES_SQL_SELECT_COMPONENTS,
    [RCP_CLOSE_OPEN] = RECIPES_SQL_CLOSE_OPEN,
    [RCP_INSERT_VERSION] = RECIPES_SQL_INSERT_VERSION,
    [RCP_INSERT_COMPONENT] = RECIPES_SQL_INSERT_COMPONENT,
};

static int rcp_db_fail(sqlite3 *db, const char *doing, char *err, size_t err_size)
{
  snprintf(err, err_size,
           "recipes: %s failed: %s; the recipes in force are unchanged (if the table is "
           "missing, the journal's schema is older than version 5)",
           doing, sqlite3_errmsg(db));
  return RECIPES_EDB;
}

static int rcp_prepare(sqlite3 *db, enum rcp_stmt which, sqlite3_stmt **stmt, char *err,
                       size_t err_size)
{
  if (sqlite3_prepare_v2(db, rcp_sql[which], -1, stmt, NULL) != SQLITE_OK)
    return rcp_db_fail(db, "preparing a statement", err, err_size);
  return 0;
}

/* Copies a stored text column into `out` (size RECIPES_ID_MAX + 1 or the
 * time's), refusing what a valid store cannot hold. */
static int rcp_column_text(sqlite3_stmt *stmt, int col, char *out, size_t size)
{
  const unsigned char *text = sqlite3_column_text(stmt, col);
  size_t n = text ? strlen((const char *)text) : 0;

  if (!text || n == 0 || n >= size)
    return -1;
  memcpy(out, text, n + 1);
  return 0;
}

/* 1 (with `err`) when `prev`, whose stored valid_to is `prev_valid_to`
 * (INT64_MAX = NULL), is not closed where `next` starts, or is the newest of
 * its SKU (`next` NULL or of another SKU) and not open. */
static int rcp_chain_broken(const struct recipes__in_version *prev, int64_t prev_valid_to,
                            const struct recipes__in_version *next, char *err, size_t err_size)
{
  int same_sku = next && strcmp(prev->sku, next->sku) == 0;

  if (same_sku ? prev_valid_to == next->valid_from_ms : prev_valid_to == INT64_MAX)
    return 0;
  snprintf(err, err_size,
           "recipes: stored %s version %lld is %s; the recipe tables were changed by something "
           "other than the agent: restore them from a backup or start a new journal",
           prev->sku, (long long)prev->version,
           same_sku ? "not closed where the next version starts" : "the newest but closed");
  return 1;
}

static int rcp_read_versions(sqlite3 *db, struct recipes_update *u, char *err, size_t err_size)
{
  sqlite3_stmt *stmt = NULL;
  int64_t prev_valid_to = 0;
  int step = SQLITE_DONE, rc = rcp_prepare(db, RCP_SELECT_VERSIONS, &stmt, err, err_size);

  while (!rc && (step = sqlite3_step(stmt)) == SQLITE_ROW) {
    struct recipes__in_version v;
    memset(&v, 0, sizeof(v));
    if (rcp_column_text(stmt, 0, v.sku, sizeof(v.sku)) ||
        rcp_column_text(stmt, 2, v.valid_from, sizeof(v.valid_from))) {
      snprintf(err, err_size, "recipes: a stored version has a damaged sku or valid_from");
      rc = RECIPES_EDB;
      break;
    }
    v.version = sqlite3_column_int64(stmt, 1);
    v.valid_from_ms = sqlite3_column_int64(stmt, 3);
    v.consumes_nothing = sqlite3_column_int(stmt, 5);
    /* The stored chain must be SCD2's: each version closed exactly where the
     * next one of its SKU starts, the newest open. Anything else was written
     * by something other than recipes_apply. */
    if (u->version_count && rcp_chain_broken(&u->versions[u->version_count - 1], prev_valid_to,
                                             &v, err, err_size)) {
      rc = RECIPES_EDB;
      break;
    }
    prev_valid_to = sqlite3_column_type(stmt, 4) == SQLITE_NULL ? INT64_MAX
                                                                 : sqlite3_column_int64(stmt, 4);
    rc = recipes__add_version(u, &v);
  }
  if (!rc && step != SQLITE_DONE)
    rc = rcp_db_fail(db, "reading the stored recipe versions", err, err_size);
  if (!rc && u->version_count &&
      rcp_chain_broken(&u->versions[u->version_count - 1], prev_valid_to, NULL, err, err_size))
    rc = RECIPES_EDB;
  sqlite3_finalize(stmt);
  return rc;
}

static int rcp_parse_kind_unit(const char *kind, const char *unit,
                               struct recipes__in_component *c)
{
  c->kind = strcmp(kind, "material") == 0 ? RECIPES_KIND_MATERIAL
            : strcmp(kind, "recipe") == 0 ? RECIPES_KIND_RECIPE
                                          : 0;
  c->unit = strcmp(unit, "g") == 0       ? RECIPES_UNIT_G
            : strcmp(unit, "ml") == 0    ? RECIPES_UNIT_ML
            : strcmp(unit, "piece") == 0 ? RECIPES_UNIT_PIECE
                                         : 0;
  return c->kind && c->unit ? 0 : -1;
}

/* Reads the components into the versions read before (same order). */
static int rcp_read_components(sqlite3 *db, struct recipes_update *u, char *err,
                               size_t err_size)
{
  sqlite3_stmt *stmt = NULL;
  size_t cursor = 0;
  int step = SQLITE_DONE, rc = rcp_prepare(db, RCP_SELECT_COMPONENTS, &stmt, err, err_size);

  while (!rc && (step = sqlite3_step(stmt)) == SQLITE_ROW) {
    struct recipes__in_component c;
    char sku[RECIPES_ID_MAX + 1], kind[16], unit[16];
    int64_t version = sqlite3_column_int64(stmt, 1);
    memset(&c, 0, sizeof(c));
    if (rcp_column_text(stmt, 0, sku, sizeof(sku)) ||
        rcp_column_text(stmt, 2, c.id, sizeof(c.id)) ||
        rcp_column_text(stmt, 3, kind, sizeof(kind)) ||
        rcp_column_text(stmt, 5, unit, sizeof(unit)) || rcp_parse_kind_unit(kind, unit, &c)) {
      snprintf(err, err_size, "recipes: a stored component has a damaged column");
      rc = RECIPES_EDB;
      break;
    }
    c.quantity_milli = sqlite3_column_int64(stmt, 4);
    c.yield_bp = sqlite3_column_int(stmt, 6);
    c.raw_milli = sqlite3_column_int64(stmt, 7);
    while (cursor < u->version_count &&
           (strcmp(u->versions[cursor].sku, sku) < 0 ||
            (strcmp(u->versions[cursor].sku, sku) == 0 && u->versions[cursor].version < version)))
      cursor++;
    if (cursor == u->version_count || strcmp(u->versions[cursor].sku, sku) != 0 ||
        u->versions[cursor].version != version) {
      snprintf(err, err_size, "recipes: stored component %s of %s version %lld has no version",
               c.id, sku, (long long)version);
      rc = RECIPES_EDB;
      break;
    }
    if (u->versions[cursor].component_count == 0)
      u->versions[cursor].first_component = u->component_count;
    u->versions[cursor].component_count++;
    rc = recipes__add_component(u, &c);
  }
  if (!rc && step != SQLITE_DONE)
    rc = rcp_db_fail(db, "reading the stored recipe components", err, err_size);
  sqlite3_finalize(stmt);
  return rc;
}

/* Every stored version, as a sorted update whose rows have line 0. */
static int rcp_read_stored(sqlite3 *db, struct recipes_update *u, char *err, size_t err_size)
{
  int rc = rcp_read_versions(db, u, err, err_size);

  if (!rc)
    rc = rcp_read_components(db, u, err, err_size);
  if (rc == RECIPES_ENOMEM)
    snprintf(err, err_size, "recipes: out of memory reading the stored versions");
  return rc;
}

/* Appends version `v` of `from` (with its components) to `to`. */
static int rcp_copy_version(struct recipes_update *to, const struct recipes_update *from,
                            const struct recipes__in_version *v)
{
  struct recipes__in_version copy = *v;

  copy.first_component = to->component_count;
  if (recipes__add_version(to, &copy))
    return RECIPES_ENOMEM;
  for (size_t i = 0; i < v->component_count; i++) {
    if (recipes__add_component(to, &from->components[v->first_component + i]))
      return RECIPES_ENOMEM;
  }
  return 0;
}

/* The newest stored version of `sku`, or NULL. `stored` is sorted. */
static const struct recipes__in_version *rcp_newest(const struct recipes_update *stored,
                                                    const char *sku)
{
  size_t lo = 0, hi = stored->version_count;

  /* The first version of a SKU after `sku`; the one before it is the newest of `sku`. */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (strcmp(stored->versions[mid].sku, sku) <= 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0 || strcmp(stored->versions[lo - 1].sku, sku) != 0)
    return NULL;
  return &stored->versions[lo - 1];
}

/* A file version whose (sku, version) is stored: the same content is a
 * no-op (1), other content is refused. */
static int rcp_check_stored(const struct recipes_update *stored,
                            const struct recipes__in_version *sv, const struct recipes_update *u,
                            const struct recipes__in_version *fv, char *err, size_t err_size)
{
  const struct recipes__in_version *newest = rcp_newest(stored, fv->sku);

  if (recipes__same_content(stored, sv, u, fv))
    return 1;
  if (sv->valid_from_ms != fv->valid_from_ms)
    snprintf(err, err_size,
             "line %u, field valid_from: %s version %lld is already stored with valid_from %s; "
             "a stored version never changes: load the change as version %lld",
             fv->line, fv->sku, (long long)fv->version, sv->valid_from,
             (long long)newest->version + 1);
  else
    snprintf(err, err_size,
             "line %u, field version: %s version %lld is already stored with other "
             "components; a stored version never changes: load the change as version %lld "
             "with the valid_from it takes effect from",
             fv->line, fv->sku, (long long)fv->version, (long long)newest->version + 1);
  return RECIPES_EINVAL;
}

/* A file version that is not stored yet, against the newest stored one of
 * its SKU: SCD2 only ever appends after it. Starting at the same instant is
 * allowed only while the stored one is not in force yet (a correction of
 * tomorrow's menu): it is then closed with an empty interval, never used. */
static int rcp_check_new(const struct recipes_update *stored, const struct recipes__in_version *fv,
                         int64_t now_ms, char *err, size_t err_size)
{
  const struct recipes__in_version *newest = rcp_newest(stored, fv->sku);

  if (!newest)
    return 0;
  if (fv->version < newest->version) {
    snprintf(err, err_size,
             "line %u, field version: %s version %lld is older than stored version %lld "
             "(from %s); a new version needs a number above %lld",
             fv->line, fv->sku, (long long)fv->version, (long long)newest->version,
             newest->valid_from, (long long)newest->version);
    return RECIPES_EINVAL;
  }
  if (fv->valid_from_ms < newest->valid_from_ms ||
      (fv->valid_from_ms == newest->valid_from_ms && newest->valid_from_ms <= now_ms)) {
    snprintf(err, err_size,
             "line %u, field valid_from: %s version %lld would start at %s, %s stored version "
             "%lld starts (%s): that would rewrite history; a new version must start after %s",
             fv->line, fv->sku, (long long)fv->version, fv->valid_from,
             fv->valid_from_ms < newest->valid_from_ms ? "before" : "when", 
             (long long)newest->version, newest->valid_from, newest->valid_from);
    return RECIPES_EINVAL;
  }
  return 0;
}

/* `merged` = stored + the file's new versions; is_new[i] says which of the
 * file's versions are to be written. */
static int rcp_merge(const struct recipes_update *stored, const struct recipes_update *u,
                     int64_t now_ms, struct recipes_update *merged, uint8_t *is_new,
                     size_t *unchanged, char *err, size_t err_size)
{
  int rc = 0;

  for (size_t i = 0; i < stored->version_count && !rc; i++)
    rc = rcp_copy_version(merged, stored, &stored->versions[i]);
  for (size_t i = 0; i < u->version_count && !rc; i++) {
    const struct recipes__in_version *fv = &u->versions[i];
    long at = recipes__find_version(stored, fv->sku, fv->version);
    if (at >= 0) {
      rc = rcp_check_stored(stored, &stored->versions[at], u, fv, err, err_size);
      if (rc == 1) {
        (*unchanged)++;
        rc = 0;
      }
      continue;
    }
    rc = rcp_check_new(stored, fv, now_ms, err, err_size);
    if (!rc)
      rc = rcp_copy_version(merged, u, fv);
    is_new[i] = 1;
  }
  if (rc == RECIPES_ENOMEM)
    snprintf(err, err_size, "recipes: out of memory merging the file with the stored versions");
  if (!rc)
    recipes__sort_versions(merged);
  return rc;
}

static int rcp_bind_text(sqlite3_stmt *stmt, int col, const char *text)
{
  return sqlite3_bind_text(stmt, col, text, -1, SQLITE_STATIC);
}

/* Writes one new version: closes the open one of its SKU at this one's
 * valid_from (an UPDATE of valid_to only), then inserts it open. */
static int rcp_write_version(sqlite3_stmt *const *stmts, const struct recipes_update *u,
                             const struct recipes__in_version *v, int64_t now_ms)
{
  sqlite3_stmt *close_open = stmts[RCP_CLOSE_OPEN], *insert = stmts[RCP_INSERT_VERSION];
  sqlite3_stmt *component = stmts[RCP_INSERT_COMPONENT];
  int rc = SQLITE_OK;

  rcp_bind_text(close_open, 1, v->sku);
  sqlite3_bind_int64(close_open, 2, v->valid_from_ms);
  if (sqlite3_step(close_open) != SQLITE_DONE)
    rc = SQLITE_ERROR;
  sqlite3_reset(close_open);
  if (rc)
    return rc;
  rcp_bind_text(insert, 1, v->sku);
  sqlite3_bind_int64(insert, 2, v->version);
  rcp_bind_text(insert, 3, v->valid_from);
  sqlite3_bind_int64(insert, 4, v->valid_from_ms);
  sqlite3_bind_int(insert, 5, v->consumes_nothing ? 1 : 0);
  sqlite3_bind_int64(insert, 6, now_ms);
  if (sqlite3_step(insert) != SQLITE_DONE)
    rc = SQLITE_ERROR;
  sqlite3_reset(insert);
  for (size_t i = 0; !rc && i < v->component_count; i++) {
    const struct recipes__in_component *c = &u->components[v->first_component + i];
    rcp_bind_text(component, 1, v->sku);
    sqlite3_bind_int64(component, 2, v->version);
    rcp_bind_text(component, 3, c->id);
    rcp_bind_text(component, 4, c->kind == RECIPES_KIND_MATERIAL ? "material" : "recipe");
    sqlite3_bind_int64(component, 5, c->quantity_milli);
    rcp_bind_text(component, 6, recipes__unit_name(c->unit));
    sqlite3_bind_int(component, 7, c->yield_bp);
    sqlite3_bind_int64(component, 8, c->raw_milli);
    if (sqlite3_step(component) != SQLITE_DONE)
      rc = SQLITE_ERROR;
    sqlite3_reset(component);
  }
  return rc;
}

/* Writes the new versions in (sku, version) order, so that each closes the one before it. */
static int rcp_write(sqlite3 *db, const struct recipes_update *u, const uint8_t *is_new,
                     int64_t now_ms, char *err, size_t err_size)
{
  sqlite3_stmt *stmts[RCP_STMT_COUNT] = {NULL};
  int rc = 0;

  for (int s = RCP_CLOSE_OPEN; s < RCP_STMT_COUNT && !rc; s++)
    rc = rcp_prepare(db, (enum rcp_stmt)s, &stmts[s], err, err_size);
  for (size_t i = 0; i < u->version_count && !rc; i++) {
    char doing[160];
    if (!is_new[i])
      continue;
    if (rcp_write_version(stmts, u, &u->versions[i], now_ms) == SQLITE_OK)
      continue;
    snprintf(doing, sizeof(doing), "storing %s version %lld (line %u)", u->versions[i].sku,
             (long long)u->versions[i].version, u->versions[i].line);
    rc = rcp_db_fail(db, doing, err, err_size);
  }
  for (int s = 0; s < RCP_STMT_COUNT; s++)
    sqlite3_finalize(stmts[s]);
  return rc;
}

/*
 * See recipes.h. Reads the stored versions, checks the file against them
 * (rcp_check_stored, rcp_check_new), checks the merged set as a whole
 * (recipes__build: includes, cycles and overflow at every instant), and
 * only then writes: a refusal writes nothing at all.
 */
int recipes_apply_counted(sqlite3 *db, const struct recipes_update *u, int64_t now_ms,
                          size_t *stored_count, size_t *unchanged_count, char *err,
                          size_t err_size)
{
  struct recipes_update *stored = calloc(1, sizeof(*stored));
  struct recipes_update *merged = calloc(1, sizeof(*merged));
  uint8_t *is_new = calloc(u && u->version_count ? u->version_count : 1, 1);
  struct recipes *checked = NULL;
  size_t unchanged = 0, fresh = 0;
  int rc = RECIPES_ENOMEM;

  if (err_size)
    err[0] = '\0';
  if (!stored || !merged || !is_new) {
    snprintf(err, err_size, "recipes: out of memory applying a file");
    goto out;
  }
  rc = rcp_read_stored(db, stored, err, err_size);
  if (!rc)
    rc = rcp_merge(stored, u, now_ms, merged, is_new, &unchanged, err, err_size);
  if (rc)
    goto out;
  checked = recipes__build(merged, 0, &rc, err, err_size);
  if (!checked)
    goto out;
  rc = rcp_write(db, u, is_new, now_ms, err, err_size);
  for (size_t i = 0; i < u->version_count; i++)
    fresh += is_new[i];
out:
  if (!rc && stored_count)
    *stored_count = fresh;
  if (!rc && unchanged_count)
    *unchanged_count = unchanged;
  recipes_free(checked);
  recipes_update_free(stored);
  recipes_update_free(merged);
  free(is_new);
  return rc;
}

int recipes_apply(sqlite3 *db, const struct recipes_update *u, int64_t now_ms, char *err,
                  size_t err_size)
{
  return recipes_apply_counted(db, u, now_ms, NULL, NULL, err, err_size);
}

/* See recipes.h: every stored version, checked as a whole like a file. */
struct recipes *recipes_load(sqlite3 *db, char *err, size_t err_size)
{
  struct recipes_update *stored = calloc(1, sizeof(*stored));
  struct recipes *set = NULL;
  int rc;

  if (!stored) {
    snprintf(err, err_size, "recipes: out of memory loading the stored versions");
    return NULL;
  }
  rc = rcp_read_stored(db, stored, err, err_size);
  if (!rc)
    set = recipes__build(stored, 0, &rc, err, err_size);
  recipes_update_free(stored);
  return set;
}

/* See recipes.h. Errors are prefixed with the path. */
int recipes_parse_file(const char *path, struct recipes_update **out, char *err,
                       size_t err_size)
{
  char reason[512];
  char *text = NULL;
  size_t len = 0;
  struct stat st;
  FILE *file = fopen(path, "rb");
  int rc = RECIPES_EINVAL;

  *out = NULL;
  if (!file) {
    snprintf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
    return RECIPES_EINVAL;
  }
  if (fstat(fileno(file), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > RECIPES_FILE_MAX) {
    snprintf(err, err_size, "%s: not a regular file of at most %d bytes", path,
             RECIPES_FILE_MAX);
    goto out;
  }
  text = malloc((size_t)st.st_size + 1);
  if (!text) {
    snprintf(err, err_size, "%s: out of memory reading it", path);
    rc = RECIPES_ENOMEM;
    goto out;
  }
  len = fread(text, 1, (size_t)st.st_size, file);
  if (ferror(file)) {
    snprintf(err, err_size, "%s: read failed: %s", path, strerror(errno));
    goto out;
  }
  rc = recipes_parse(text, len, out, reason, sizeof(reason));
  if (rc)
    snprintf(err, err_size, "%s: %s", path, reason);
out:
  free(text);
  fclose(file);
  return rc;
}
