/*
 * recipes_csv.c - a recipe CSV file into a validated recipes_update.
 *
 * One record per physical line, split by platform/csv.c: fields may be
 * double-quoted ("" inside is one quote), but a quoted field never spans
 * lines, so every error can name the line a person sees in an editor. The
 * format is documented in recipes.h and firmware-config/RECIPES.md.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "platform/csv.h"
#include "sale/sale_check.h"
#include "inventory/recipes_int.h"

#define RCSV_FIELDS 8
#define RCSV_FIELD_MAX 128 /* longest field accepted (ids are 64, times 40) */

enum rcsv_field {
  RCSV_SKU,
  RCSV_VERSION,
  RCSV_VALID_FROM,
  RCSV_COMPONENT,
  RCSV_KIND,
  RCSV_QUANTITY,
  RCSV_UNIT,
  RCSV_YIELD
};

static const char *const rcsv_names[RCSV_FIELDS] = {
    "sku", "version", "valid_from", "component", "kind", "quantity_milli", "unit", "yield_pct"};
static const char rcsv_header_text[] =
    "sku,version,valid_from,component,kind,quantity_milli,unit,yield_pct";

struct rcsv_reader {
  const char *text;
  size_t len;
  size_t pos;
  unsigned line; /* the next line's number, 1-based */
  char *err;
  size_t err_size;
  struct csv_row *row; /* the tokenizer's fields of the current line */
};

struct rcsv_record {
  char field[RCSV_FIELDS][RCSV_FIELD_MAX + 1];
  unsigned count;
  unsigned line;
};

static int rcsv_fail(struct rcsv_reader *rd, unsigned line, int field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes "line N, field F: ..." (or "line N: ..." when field < 0) into the
 * reader's error buffer. Always returns RECIPES_EINVAL. */
static int rcsv_fail(struct rcsv_reader *rd, unsigned line, int field, const char *fmt, ...)
{
  va_list ap;
  int used;

  if (field >= 0)
    used = snprintf(rd->err, rd->err_size, "line %u, field %s: ", line, rcsv_names[field]);
  else
    used = snprintf(rd->err, rd->err_size, "line %u: ", line);
  if (used < 0 || (size_t)used >= rd->err_size)
    return RECIPES_EINVAL;
  va_start(ap, fmt);
  vsnprintf(rd->err + used, rd->err_size - (size_t)used, fmt, ap);
  va_end(ap);
  return RECIPES_EINVAL;
}

/* 1 when the line is blank, all commas, or a '#' comment. */
static int rcsv_line_is_ignored(const char *line, size_t length)
{
  size_t p = 0;

  while (p < length && (line[p] == ' ' || line[p] == '\t'))
    p++;
  if (p < length && line[p] == '#')
    return 1;
  return csv_line_is_empty(line, length);
}

/* The next record: 1 with `rec`, 0 at the end of the text, or RECIPES_EINVAL.
 * The splitting is platform/csv.c's; its errors are named by field here. */
static int rcsv_next(struct rcsv_reader *rd, struct rcsv_record *rec)
{
  struct csv_error error;
  const char *line = NULL;
  size_t length = 0;
  unsigned line_no;
  size_t count;

  do {
    if (!csv_next_line(rd->text, rd->len, &rd->pos, &line, &length))
      return 0;
    line_no = rd->line++;
  } while (rcsv_line_is_ignored(line, length));
  memset(rec, 0, sizeof(*rec));
  rec->line = line_no;
  if (csv_split(rd->row, line, length, &error) != CSV_OK) {
    if (error.status == CSV_EFIELDS)
      return rcsv_fail(rd, rec->line, -1,
                       "%zu fields, expected %d (%s); quote a field that contains a comma",
                       error.fields_on_line, RCSV_FIELDS, rcsv_header_text);
    return rcsv_fail(rd, rec->line, error.field <= RCSV_FIELDS ? (int)error.field - 1 : -1, "%s",
                     error.message);
  }
  count = csv_row_count(rd->row);
  for (size_t i = 0; i < count; i++) {
    size_t field_length = 0;
    const char *text = csv_row_field(rd->row, i, &field_length);
    memcpy(rec->field[i], text, field_length + 1);
  }
  rec->count = (unsigned)count;
  if (rec->count < RCSV_FIELDS)
    return rcsv_fail(rd, rec->line, (int)rec->count,
                     "missing: the line has %u fields, expected %d (%s); leave a field empty "
                     "with nothing between its commas",
                     rec->count, RCSV_FIELDS, rcsv_header_text);
  return 1;
}

static int rcsv_check_header(struct rcsv_reader *rd, const struct rcsv_record *rec)
{
  for (int i = 0; i < RCSV_FIELDS; i++) {
    if (strcasecmp(rec->field[i], rcsv_names[i]) != 0)
      return rcsv_fail(rd, rec->line, -1,
                       "the first row must be the header %s; column %d is \"%s\", expected "
                       "\"%s\"",
                       rcsv_header_text, i + 1, rec->field[i], rcsv_names[i]);
  }
  return 0;
}

static int rcsv_check_id(struct rcsv_reader *rd, const struct rcsv_record *rec, int field)
{
  const char *id = rec->field[field];
  size_t n = strlen(id);

  if (n == 0)
    return rcsv_fail(rd, rec->line, field, "is empty; it is required");
  if (n > RECIPES_ID_MAX)
    return rcsv_fail(rd, rec->line, field, "\"%s\" is longer than %d characters", id,
                     RECIPES_ID_MAX);
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == ':' || c == '-'))
      return rcsv_fail(rd, rec->line, field,
                       "\"%s\" has '%c'; ids are 1-%d of A-Z a-z 0-9 . _ : -", id, c,
                       RECIPES_ID_MAX);
  }
  return 0;
}

/* A decimal integer of digits only, within 1..max. */
static int rcsv_positive_int(struct rcsv_reader *rd, const struct rcsv_record *rec, int field,
                             int64_t max, const char *example, int64_t *out)
{
  const char *text = rec->field[field];
  int64_t value = 0;

  if (text[0] == '\0')
    return rcsv_fail(rd, rec->line, field, "is empty; write a whole number like %s", example);
  if (text[0] == '-')
    return rcsv_fail(rd, rec->line, field, "\"%s\" is negative; it must be at least 1", text);
  for (const char *p = text; *p; p++) {
    if (*p < '0' || *p > '9')
      return rcsv_fail(rd, rec->line, field,
                       "\"%s\" is not a whole number; write digits only, like %s%s", text,
                       example,
                       field == RCSV_QUANTITY ? " (milli-units: 1.5 g is 1500)" : "");
    if (value > max / 10 + 1) {
      value = max + 1;
      break;
    }
    value = value * 10 + (*p - '0');
  }
  if (value == 0)
    return rcsv_fail(rd, rec->line, field, "is zero; it must be at least 1");
  if (value > max)
    return rcsv_fail(rd, rec->line, field, "\"%s\" is above the largest accepted, %lld", text,
                     (long long)max);
  *out = value;
  return 0;
}

/* yield_pct: empty (100) or 0.01..100 with at most two decimals, in hundredths. */
static int rcsv_yield(struct rcsv_reader *rd, const struct rcsv_record *rec, int32_t *yield_bp)
{
  const char *text = rec->field[RCSV_YIELD];
  int64_t whole = 0, hundredths = 0;
  int decimals = 0, digits = 0;
  const char *p = text;

  if (text[0] == '\0') {
    *yield_bp = RECIPES_YIELD_FULL;
    return 0;
  }
  for (; *p >= '0' && *p <= '9' && digits < 4; p++, digits++)
    whole = whole * 10 + (*p - '0');
  if (*p == '.') {
    for (p++; *p >= '0' && *p <= '9' && decimals < 3; p++, decimals++)
      hundredths = hundredths * 10 + (*p - '0');
  }
  if (*p != '\0' || digits == 0 || decimals > 2 || (text[digits] == '.' && decimals == 0))
    return rcsv_fail(rd, rec->line, RCSV_YIELD,
                     "\"%s\" is not a percentage like 80 or 92.5 (at most two decimals, no %% "
                     "sign); leave it empty for 100",
                     text);
  if (decimals == 1)
    hundredths *= 10;
  whole = whole * 100 + hundredths;
  if (whole < 1 || whole > RECIPES_YIELD_FULL)
    return rcsv_fail(rd, rec->line, RCSV_YIELD,
                     "\"%s\" is outside 0.01..100: it is the usable share of the raw quantity "
                     "(an 8 oz portion from 10 oz raw is 80); for a gain write the raw "
                     "quantity itself",
                     text);
  *yield_bp = (int32_t)whole;
  return 0;
}

static int rcsv_unit(struct rcsv_reader *rd, const struct rcsv_record *rec, uint8_t *unit)
{
  const char *text = rec->field[RCSV_UNIT];

  if (strcmp(text, "g") == 0)
    *unit = RECIPES_UNIT_G;
  else if (strcmp(text, "ml") == 0)
    *unit = RECIPES_UNIT_ML;
  else if (strcmp(text, "piece") == 0)
    *unit = RECIPES_UNIT_PIECE;
  else if (text[0] == '\0')
    return rcsv_fail(rd, rec->line, RCSV_UNIT, "is empty; use g, ml or piece");
  else
    return rcsv_fail(rd, rec->line, RCSV_UNIT,
                     "unknown unit \"%s\"; use g, ml or piece (convert: 1 kg is 1000 g, "
                     "quantity_milli 1000000; 1 l is 1000 ml)",
                     text);
  return 0;
}

/* A "none" row: the version consumes nothing, so the component fields stay empty. */
static int rcsv_none_row(struct rcsv_reader *rd, const struct rcsv_record *rec)
{
  static const int fields[] = {RCSV_COMPONENT, RCSV_QUANTITY, RCSV_UNIT, RCSV_YIELD};

  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
    if (rec->field[fields[i]][0] != '\0')
      return rcsv_fail(rd, rec->line, fields[i],
                       "must be empty with kind none (a recipe that consumes nothing on "
                       "purpose, like MOD-NO-ONION)");
  }
  return 0;
}

/* The component of a material or recipe row, yield applied. */
static int rcsv_component_row(struct rcsv_reader *rd, const struct rcsv_record *rec, uint8_t kind,
                              struct recipes__in_component *c)
{
  int rc;

  memset(c, 0, sizeof(*c));
  c->kind = kind;
  c->line = rec->line;
  rc = rcsv_check_id(rd, rec, RCSV_COMPONENT);
  if (!rc)
    rc = rcsv_positive_int(rd, rec, RCSV_QUANTITY, RECIPES_QUANTITY_MILLI_MAX, "180000",
                           &c->quantity_milli);
  if (!rc)
    rc = rcsv_unit(rd, rec, &c->unit);
  if (!rc)
    rc = rcsv_yield(rd, rec, &c->yield_bp);
  if (rc)
    return rc;
  if (kind == RECIPES_KIND_RECIPE && c->unit != RECIPES_UNIT_PIECE)
    return rcsv_fail(rd, rec->line, RCSV_UNIT,
                     "is \"%s\" but an included recipe is counted in portions: use piece "
                     "(quantity_milli 1000 = one portion of %s)",
                     rec->field[RCSV_UNIT], rec->field[RCSV_COMPONENT]);
  memcpy(c->id, rec->field[RCSV_COMPONENT], strlen(rec->field[RCSV_COMPONENT]) + 1);
  /* Exact integer ceiling: quantity <= 1e8 keeps quantity * 10000 far from overflow. */
  c->raw_milli = (c->quantity_milli * RECIPES_YIELD_FULL + c->yield_bp - 1) / c->yield_bp;
  return 0;
}

/* The version fields of a row: sku, version, valid_from, and whether it is "none". */
static int rcsv_version_row(struct rcsv_reader *rd, const struct rcsv_record *rec,
                            struct recipes__in_version *v, uint8_t *kind)
{
  const char *why = NULL;
  long long epoch_ms = 0;
  int offset = 0;
  int rc;

  memset(v, 0, sizeof(*v));
  v->line = rec->line;
  rc = rcsv_check_id(rd, rec, RCSV_SKU);
  if (!rc)
    rc = rcsv_positive_int(rd, rec, RCSV_VERSION, INT32_MAX, "2", &v->version);
  if (rc)
    return rc;
  if (strlen(rec->field[RCSV_VALID_FROM]) > RECIPES_TIME_TEXT_MAX ||
      sale_parse_time(rec->field[RCSV_VALID_FROM], &epoch_ms, &offset, &why))
    return rcsv_fail(rd, rec->line, RCSV_VALID_FROM,
                     "\"%s\" %s; write RFC 3339 with an offset, like 2026-12-01T00:00:00+01:00",
                     rec->field[RCSV_VALID_FROM], why ? why : "is too long");
  v->valid_from_ms = epoch_ms;
  memcpy(v->sku, rec->field[RCSV_SKU], strlen(rec->field[RCSV_SKU]) + 1);
  memcpy(v->valid_from, rec->field[RCSV_VALID_FROM], strlen(rec->field[RCSV_VALID_FROM]) + 1);
  if (strcmp(rec->field[RCSV_KIND], "material") == 0)
    *kind = RECIPES_KIND_MATERIAL;
  else if (strcmp(rec->field[RCSV_KIND], "recipe") == 0)
    *kind = RECIPES_KIND_RECIPE;
  else if (strcmp(rec->field[RCSV_KIND], "none") == 0)
    *kind = 0;
  else
    return rcsv_fail(rd, rec->line, RCSV_KIND,
                     "\"%s\" is not a kind; use material (a raw material), recipe (include "
                     "another recipe) or none (consumes nothing on purpose)",
                     rec->field[RCSV_KIND]);
  return 0;
}

/* Adds a row to the version being read, or starts the next version. */
static int rcsv_add_row(struct rcsv_reader *rd, struct recipes_update *u,
                        const struct rcsv_record *rec)
{
  struct recipes__in_version row_version;
  struct recipes__in_component component;
  struct recipes__in_version *current = u->version_count ? &u->versions[u->version_count - 1]
                                                         : NULL;
  uint8_t kind = 0;
  int rc = rcsv_version_row(rd, rec, &row_version, &kind);

  if (!rc)
    rc = kind ? rcsv_component_row(rd, rec, kind, &component) : rcsv_none_row(rd, rec);
  if (rc)
    return rc;
  if (current && strcmp(current->sku, row_version.sku) == 0 &&
      current->version == row_version.version) {
    if (current->valid_from_ms != row_version.valid_from_ms)
      return rcsv_fail(rd, rec->line, RCSV_VALID_FROM,
                       "\"%s\" differs from \"%s\" on line %u for the same %s version %lld; "
                       "all rows of one version share valid_from",
                       row_version.valid_from, current->valid_from, current->line,
                       current->sku, (long long)current->version);
    if (current->consumes_nothing || !kind)
      return rcsv_fail(rd, rec->line, RCSV_KIND,
                       "%s version %lld has a row of kind none (line %u or this one): a "
                       "version that consumes nothing has that one row only",
                       current->sku, (long long)current->version, current->line);
  } else {
    row_version.consumes_nothing = !kind;
    row_version.first_component = u->component_count;
    if (recipes__add_version(u, &row_version))
      return RECIPES_ENOMEM;
    current = &u->versions[u->version_count - 1];
  }
  if (kind) {
    if (recipes__add_component(u, &component))
      return RECIPES_ENOMEM;
    current->component_count++;
  }
  return 0;
}

static int rcsv_component_cmp(const void *a, const void *b)
{
  const struct recipes__in_component *x = a, *y = b;
  int c = strcmp(x->id, y->id);

  if (c)
    return c;
  return x->line < y->line ? -1 : x->line > y->line;
}

/* Sorts each version's components by id and refuses a component listed twice. */
static int rcsv_check_components(struct rcsv_reader *rd, struct recipes_update *u)
{
  for (size_t i = 0; i < u->version_count; i++) {
    struct recipes__in_version *v = &u->versions[i];
    struct recipes__in_component *c;
    /* A "none" version has no components; a file of only those has no array. */
    if (v->component_count == 0)
      continue;
    c = &u->components[v->first_component];
    qsort(c, v->component_count, sizeof(*c), rcsv_component_cmp);
    for (size_t k = 1; k < v->component_count; k++) {
      if (strcmp(c[k - 1].id, c[k].id) == 0)
        return rcsv_fail(rd, c[k].line, RCSV_COMPONENT,
                         "%s is listed twice in %s version %lld (lines %u and %u); list each "
                         "component once, with its total quantity",
                         c[k].id, v->sku, (long long)v->version, c[k - 1].line, c[k].line);
    }
  }
  return 0;
}

/* After sorting by (sku, version): a version in two places, or two versions of
 * one SKU starting at the same instant, are refused. */
static int rcsv_check_versions(struct rcsv_reader *rd, const struct recipes_update *u)
{
  for (size_t i = 1; i < u->version_count; i++) {
    const struct recipes__in_version *a = &u->versions[i - 1], *b = &u->versions[i];
    const struct recipes__in_version *later = a->line > b->line ? a : b;
    const struct recipes__in_version *earlier = later == a ? b : a;
    if (strcmp(a->sku, b->sku) != 0)
      continue;
    if (a->version == b->version)
      return rcsv_fail(rd, later->line, RCSV_VERSION,
                       "%s version %lld appears again (first at line %u); keep all rows of "
                       "one version together",
                       b->sku, (long long)b->version, earlier->line);
    if (a->valid_from_ms == b->valid_from_ms)
      return rcsv_fail(rd, b->line, RCSV_VALID_FROM,
                       "%s version %lld starts at the same instant as version %lld (line %u): "
                       "versions of one SKU cannot overlap; give version %lld a later "
                       "valid_from",
                       b->sku, (long long)b->version, (long long)a->version, a->line,
                       (long long)b->version);
  }
  return 0;
}

static int rcsv_read_all(struct rcsv_reader *rd, struct recipes_update *u)
{
  struct rcsv_record *rec = malloc(sizeof(*rec));
  size_t rows = 0;
  int rc = RECIPES_ENOMEM;

  rd->row = csv_row_create(RCSV_FIELDS, RCSV_FIELD_MAX);
  if (!rec || !rd->row)
    goto out;
  /* A UTF-8 byte order mark, as spreadsheet programs write it, is not data. */
  if (rd->len >= 3 && memcmp(rd->text, "\xEF\xBB\xBF", 3) == 0)
    rd->pos = 3;
  rc = rcsv_next(rd, rec);
  if (rc == 0)
    rc = rcsv_fail(rd, rd->line, -1, "the file is empty; it needs the header %s and rows",
                   rcsv_header_text);
  if (rc < 0)
    goto out;
  rc = rcsv_check_header(rd, rec);
  while (!rc) {
    rc = rcsv_next(rd, rec);
    if (rc <= 0)
      break;
    if (++rows > RECIPES_ROWS_MAX) {
      rc = rcsv_fail(rd, rec->line, -1, "more than %d rows; split the file", RECIPES_ROWS_MAX);
      break;
    }
    rc = rcsv_add_row(rd, u, rec);
  }
  if (!rc && rows == 0)
    rc = rcsv_fail(rd, rd->line, -1, "no recipe rows after the header");
out:
  csv_row_destroy(rd->row);
  rd->row = NULL;
  free(rec);
  return rc;
}

/*
 * Parses a whole file; see recipes.h. The graph checks (cycles, depth,
 * overflow) run on the file alone here, so that a file that cannot be right
 * whatever is stored is refused before anything touches the database.
 */
int recipes_parse(const char *text, size_t len, struct recipes_update **out, char *err,
                  size_t err_size)
{
  struct rcsv_reader rd = {.text = text, .len = len, .line = 1, .err = err, .err_size = err_size};
  struct recipes_update *u = calloc(1, sizeof(*u));
  struct recipes *checked = NULL;
  int rc = RECIPES_ENOMEM;

  *out = NULL;
  if (err_size)
    err[0] = '\0';
  if (!u) {
    snprintf(err, err_size, "out of memory reading recipes");
    goto out;
  }
  if (!text) {
    rc = rcsv_fail(&rd, 1, -1, "no text given");
    goto out;
  }
  rc = rcsv_read_all(&rd, u);
  if (!rc)
    rc = rcsv_check_components(&rd, u);
  if (rc)
    goto out;
  recipes__sort_versions(u);
  rc = rcsv_check_versions(&rd, u);
  if (rc)
    goto out;
  checked = recipes__build(u, 1, &rc, err, err_size);
  if (!checked)
    goto out;
  recipes_free(checked);
  *out = u;
  u = NULL;
  rc = 0;
out:
  if (rc == RECIPES_ENOMEM && err_size && err[0] == '\0')
    snprintf(err, err_size, "out of memory reading recipes");
  recipes_update_free(u);
  return rc;
}

size_t recipes_update_version_count(const struct recipes_update *u)
{
  return u ? u->version_count : 0;
}

void recipes_update_free(struct recipes_update *u)
{
  if (!u)
    return;
  free(u->versions);
  free(u->components);
  free(u);
}
