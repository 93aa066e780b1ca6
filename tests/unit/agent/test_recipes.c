/*
 * test_recipes.c - recipe files and their SCD type 2 versions: parsing
 * errors named by line and field, the rules of storing versions in a real
 * SQLite database (in a temporary directory, with the journal's v5 tables),
 * and the explosion of a sale into raw materials at its business time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "sale/sale_check.h"
#include "inventory/recipes.h"

#define HEADER "sku,version,valid_from,component,kind,quantity_milli,unit,yield_pct\n"
#define JAN "2026-01-01T00:00:00+01:00"

/* ---------------------------------------------------------------------- */
/* Fixture: a database file with the recipe tables                        */
/* ---------------------------------------------------------------------- */

struct fixture {
  char dir[64];
  char path[96];
  sqlite3 *db;
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  char *err = NULL;

  assert_non_null(f);
  snprintf(f->dir, sizeof(f->dir), "/tmp/test_recipes_XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof(f->path), "%s/journal.db", f->dir);
  assert_int_equal(sqlite3_open(f->path, &f->db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(f->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL), SQLITE_OK);
  if (sqlite3_exec(f->db, recipes_schema_sql, NULL, NULL, &err) != SQLITE_OK)
    fail_msg("schema: %s", err);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  char path[128];

  sqlite3_close(f->db);
  unlink(f->path);
  snprintf(path, sizeof(path), "%s-wal", f->path);
  unlink(path);
  snprintf(path, sizeof(path), "%s-shm", f->path);
  unlink(path);
  rmdir(f->dir);
  free(f);
  return 0;
}

static int64_t ms(const char *rfc3339)
{
  long long epoch_ms = 0;
  int offset = 0;
  const char *why = NULL;

  if (sale_parse_time(rfc3339, &epoch_ms, &offset, &why))
    fail_msg("bad time in test: %s %s", rfc3339, why);
  return epoch_ms;
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
  sqlite3_stmt *stmt = NULL;
  int64_t value = -1;

  if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
    fail_msg("%s: %s", sql, sqlite3_errmsg(db));
  if (sqlite3_step(stmt) == SQLITE_ROW)
    value = sqlite3_column_type(stmt, 0) == SQLITE_NULL ? -2 : sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return value;
}

/* Parses and applies `text` in one transaction, as the agent does; commits on
 * success, rolls back otherwise. Returns the apply's (or parse's) code. */
static int load_text(sqlite3 *db, const char *text, int64_t now_ms, size_t *stored,
                     size_t *unchanged, char *err, size_t err_size)
{
  struct recipes_update *u = NULL;
  int rc = recipes_parse(text, strlen(text), &u, err, err_size);

  if (rc)
    return rc;
  assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  rc = recipes_apply_counted(db, u, now_ms, stored, unchanged, err, err_size);
  assert_int_equal(sqlite3_exec(db, rc ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  recipes_update_free(u);
  return rc;
}

static void must_load(sqlite3 *db, const char *text, int64_t now_ms)
{
  char err[512] = "";

  if (load_text(db, text, now_ms, NULL, NULL, err, sizeof(err)))
    fail_msg("load refused: %s\nfile:\n%s", err, text);
}

/* Expects `text` refused (by parse or apply) with `needle` in the message. */
static void must_refuse(sqlite3 *db, const char *text, int64_t now_ms, const char *needle)
{
  char err[512] = "";
  int rc = load_text(db, text, now_ms, NULL, NULL, err, sizeof(err));

  if (rc != RECIPES_EINVAL || !strstr(err, needle))
    fail_msg("rc %d, message: %s\n(want RECIPES_EINVAL and \"%s\")\nfile:\n%s", rc, err, needle,
             text);
}

static struct recipes *must_load_set(sqlite3 *db)
{
  char err[512] = "";
  struct recipes *r = recipes_load(db, err, sizeof(err));

  if (!r)
    fail_msg("recipes_load: %s", err);
  return r;
}

/* ---------------------------------------------------------------------- */
/* Collecting an explosion                                                */
/* ---------------------------------------------------------------------- */

struct consumed {
  size_t count;
  size_t calls;
  struct {
    char material[72];
    char unit[8];
    int64_t quantity_milli;
  } item[64];
};

static void collect(void *arg, const char *material_id, const char *unit, int64_t quantity_milli)
{
  struct consumed *c = arg;
  size_t i;

  assert_true(quantity_milli > 0);
  c->calls++;
  for (i = 0; i < c->count; i++) {
    if (strcmp(c->item[i].material, material_id) == 0)
      break;
  }
  if (i == c->count) {
    assert_true(c->count < 64);
    snprintf(c->item[i].material, sizeof(c->item[i].material), "%s", material_id);
    snprintf(c->item[i].unit, sizeof(c->item[i].unit), "%s", unit);
    c->count++;
  }
  assert_string_equal(c->item[i].unit, unit);
  c->item[i].quantity_milli += quantity_milli;
}

/* The total of `material` in `c` (0 when absent). */
static int64_t used(const struct consumed *c, const char *material)
{
  for (size_t i = 0; i < c->count; i++) {
    if (strcmp(c->item[i].material, material) == 0)
      return c->item[i].quantity_milli;
  }
  return 0;
}

static struct consumed explode(const struct recipes *r, const char *sku, int64_t qty,
                               const char *when, int want_mapped)
{
  struct consumed c;

  memset(&c, 0, sizeof(c));
  assert_int_equal(recipes_explode(r, sku, qty, ms(when), collect, &c), want_mapped);
  return c;
}

/* ---------------------------------------------------------------------- */
/* Parsing                                                                */
/* ---------------------------------------------------------------------- */

static void expect_parse_error(const char *text, const char *needle)
{
  struct recipes_update *u = (struct recipes_update *)1;
  char err[512] = "";
  int rc = recipes_parse(text, strlen(text), &u, err, sizeof(err));

  if (rc != RECIPES_EINVAL || u != NULL || !strstr(err, needle))
    fail_msg("rc %d, message: %s\n(want RECIPES_EINVAL and \"%s\")\nfile:\n%s", rc, err, needle,
             text);
}

static void test_parse_errors_name_line_and_field(void **state)
{
  (void)state;
  expect_parse_error("", "line 1: the file is empty");
  expect_parse_error(HEADER, "no recipe rows after the header");
  expect_parse_error("sku,version,valid_from,component,kind,qty,unit,yield_pct\n"
                     "A,1," JAN ",cheese,material,1000,g,\n",
                     "line 1: the first row must be the header");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1000,kg,\n",
                     "line 2, field unit: unknown unit \"kg\"");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1000,,\n",
                     "line 2, field unit: is empty");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,0,g,\n",
                     "line 2, field quantity_milli: is zero");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,-5,g,\n",
                     "line 2, field quantity_milli: \"-5\" is negative");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1.5,g,\n",
                     "line 2, field quantity_milli: \"1.5\" is not a whole number");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,100000001,g,\n",
                     "line 2, field quantity_milli: \"100000001\" is above");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1000,g\n",
                     "line 2, field yield_pct: missing");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1000,g,,extra\n",
                     "line 2: 9 fields, expected 8");
  expect_parse_error(HEADER "A,1,2026-01-01T00:00:00,cheese,material,1000,g,\n",
                     "line 2, field valid_from: \"2026-01-01T00:00:00\" needs a UTC offset");
  expect_parse_error(HEADER "A,0," JAN ",cheese,material,1000,g,\n",
                     "line 2, field version: is zero");
  expect_parse_error(HEADER "A B,1," JAN ",cheese,material,1000,g,\n",
                     "line 2, field sku: \"A B\" has ' '");
  expect_parse_error(HEADER ",1," JAN ",cheese,material,1000,g,\n", "line 2, field sku: is empty");
  expect_parse_error(HEADER "A,1," JAN ",cheese,ingredient,1000,g,\n",
                     "line 2, field kind: \"ingredient\" is not a kind");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1000,g,0\n",
                     "line 2, field yield_pct: \"0\" is outside 0.01..100");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1000,g,120\n",
                     "line 2, field yield_pct: \"120\" is outside 0.01..100");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1000,g,80%\n",
                     "line 2, field yield_pct: \"80%\" is not a percentage");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1000,g,92.125\n",
                     "line 2, field yield_pct: \"92.125\" is not a percentage");
  expect_parse_error(HEADER "A,1," JAN ",\"cheese,material,1000,g,\n",
                     "line 2, field component: a quoted field is not closed");
  expect_parse_error(HEADER "A,1," JAN ",\"cheese\"x,material,1000,g,\n",
                     "line 2, field component: text after the closing quote");
  expect_parse_error(HEADER "A,1," JAN ",B,recipe,1000,g,\n"
                     "B,1," JAN ",cheese,material,1000,g,\n",
                     "line 2, field unit: is \"g\" but an included recipe is counted in "
                     "portions");
  expect_parse_error(HEADER "A,1," JAN ",cheese,none,,,\n",
                     "line 2, field component: must be empty with kind none");
  expect_parse_error(HEADER "A,1," JAN ",,none,,,\nA,1," JAN ",cheese,material,1000,g,\n",
                     "line 3, field kind: A version 1 has a row of kind none");
  expect_parse_error(HEADER "A,1," JAN ",cheese-with-a-name-far-longer-than-sixty-four-characters-"
                            "is-refused,material,1000,g,\n",
                     "line 2, field component: \"cheese-with-a-name-far-longer-than-sixty-four-"
                     "characters-is-refused\" is longer than 64 characters");
  {
    static const char with_nul[] = HEADER "A,1," JAN ",che\0ese,material,1000,g,\n";
    struct recipes_update *u = NULL;
    char err[512] = "";
    assert_int_equal(recipes_parse(with_nul, sizeof(with_nul) - 1, &u, err, sizeof(err)),
                     RECIPES_EINVAL);
    assert_null(u);
    assert_non_null(strstr(err, "line 2, field component: contains a NUL byte"));
  }
}

static void test_a_file_of_only_none_recipes_is_accepted(void **state)
{
  struct fixture *f = *state;
  struct recipes *r;
  struct consumed c;

  /* Found by fuzz-recipes under UBSan: no component array at all. */
  must_load(f->db, HEADER "MOD-NO-ONION,1," JAN ",,none,,,\n", ms("2026-02-01T00:00:00Z"));
  r = must_load_set(f->db);
  c = explode(r, "MOD-NO-ONION", 1, "2026-02-01T00:00:00Z", 1);
  assert_int_equal(c.calls, 0);
  assert_int_equal(recipes_material_count(r), 0);
  recipes_free(r);
}

static void test_parse_errors_between_rows_name_the_later_line(void **state)
{
  (void)state;
  /* Comments and blank lines count as lines: the error is on line 6. */
  expect_parse_error(HEADER "# a comment\n\n"
                     "A,1," JAN ",cheese,material,1000,g,\n"
                     "A,1," JAN ",tomato,material,1000,g,\n"
                     "A,1," JAN ",cheese,material,2000,g,\n",
                     "line 6, field component: cheese is listed twice in A version 1 (lines 4 "
                     "and 6)");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1000,g,\n"
                     "A,1,2026-01-02T00:00:00+01:00,tomato,material,1000,g,\n",
                     "line 3, field valid_from: \"2026-01-02T00:00:00+01:00\" differs from \"" JAN
                     "\" on line 2");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1000,g,\n"
                     "B,1," JAN ",cheese,material,1000,g,\n"
                     "A,1," JAN ",tomato,material,1000,g,\n",
                     "line 4, field version: A version 1 appears again (first at line 2)");
  expect_parse_error(HEADER "A,1,2026-03-01T00:00:00Z,cheese,material,1000,g,\n"
                     "A,2,2026-02-01T00:00:00Z,cheese,material,2000,g,\n",
                     "line 3, field valid_from: A version 2 starts at 2026-02-01T00:00:00Z, "
                     "before version 1 (line 2)");
  expect_parse_error(HEADER "A,1,2026-03-01T00:00:00Z,cheese,material,1000,g,\n"
                     "A,2,2026-03-01T01:00:00+01:00,cheese,material,2000,g,\n",
                     "line 3, field valid_from: A version 2 starts at the same instant as "
                     "version 1 (line 2): versions of one SKU cannot overlap");
  expect_parse_error(HEADER "A,1," JAN ",cheese,material,1000,g,\n"
                     "B,1," JAN ",cheese,material,1000,ml,\n",
                     "line 3, field unit: material cheese is in ml here but in g (line 2)");
}

static void test_include_cycle_in_a_file_is_refused(void **state)
{
  (void)state;
  expect_parse_error(HEADER "A,1," JAN ",B,recipe,1000,piece,\n"
                     "B,1," JAN ",C,recipe,1000,piece,\n"
                     "C,1," JAN ",A,recipe,1000,piece,\n",
                     "field component: include cycle in force at 2025-12-31T23:00:00.000Z: "
                     "A includes B includes C includes A");
  expect_parse_error(HEADER "A,1," JAN ",A,recipe,1000,piece,\n",
                     "line 2, field component: include cycle in force at "
                     "2025-12-31T23:00:00.000Z: A includes A");
  /* A cycle that only exists from March on, when B's version 2 starts. */
  expect_parse_error(HEADER "A,1," JAN ",B,recipe,1000,piece,\n"
                     "B,1," JAN ",cheese,material,1000,g,\n"
                     "B,2,2026-03-01T00:00:00Z,A,recipe,1000,piece,\n",
                     "line 4, field component: include cycle in force at "
                     "2026-03-01T00:00:00.000Z: B includes A includes B");
}

static void test_includes_that_never_meet_in_time_are_not_a_cycle(void **state)
{
  struct fixture *f = *state;

  (void)f;
  /* A includes B until March; B includes A only from April: at no business
   * time does either include itself. */
  must_load(f->db,
            HEADER "A,1," JAN ",B,recipe,1000,piece,\n"
                   "A,2,2026-03-01T00:00:00Z,cheese,material,1000,g,\n"
                   "B,1," JAN ",cheese,material,2000,g,\n"
                   "B,2,2026-04-01T00:00:00Z,A,recipe,1000,piece,\n",
            ms("2026-02-01T00:00:00Z"));
}

/* A file of `includes` nested includes: L0 includes L1 ... includes L<n>. */
static void chain_text(char *text, size_t size, int includes)
{
  size_t used = 0;

  used += (size_t)snprintf(text + used, size - used, HEADER);
  for (int i = 0; i < includes; i++)
    used += (size_t)snprintf(text + used, size - used, "L%d,1," JAN ",L%d,recipe,1000,piece,\n",
                             i, i + 1);
  snprintf(text + used, size - used, "L%d,1," JAN ",cheese,material,1000,g,\n", includes);
}

static void test_include_chain_depth_is_bounded(void **state)
{
  struct fixture *f = *state;
  struct recipes *r;
  struct consumed c;
  char text[4096];

  chain_text(text, sizeof(text), RECIPES_INCLUDE_DEPTH + 1);
  expect_parse_error(text, "includes nest more than 8 deep");
  chain_text(text, sizeof(text), RECIPES_INCLUDE_DEPTH);
  must_load(f->db, text, ms("2026-02-01T00:00:00Z"));
  r = must_load_set(f->db);
  c = explode(r, "L0", 3, "2026-02-01T00:00:00Z", 1);
  assert_int_equal(used(&c, "cheese"), 3000);
  recipes_free(r);
}

static void test_include_not_yet_in_force_is_refused(void **state)
{
  (void)state;
  expect_parse_error(HEADER "A,1," JAN ",B,recipe,1000,piece,\n"
                     "B,1,2026-02-01T00:00:00Z,cheese,material,1000,g,\n",
                     "line 2, field component: A version 1 includes B, which has no version in "
                     "force at 2025-12-31T23:00:00.000Z");
}

static void test_quoted_fields_crlf_bom_comments_accepted(void **state)
{
  struct fixture *f = *state;
  static const char text[] =
      "\xEF\xBB\xBF"
      "sku,version,valid_from,component,kind,quantity_milli,unit,yield_pct\r\n"
      "# comment, with a comma\r\n"
      "\r\n"
      ",,,,,,,\r\n"
      "\"PIZZA-X\", 1 ,\"" JAN "\",\"cheese\",material,\"180000\",g,\"\"\r\n"
      "PIZZA-X,1," JAN ",  tomato  ,material,90000,g,80\r\n"
      "MOD-NO-ONION,1," JAN ",,none,,,";
  struct recipes_update *u = NULL;
  struct recipes *r;
  struct consumed c;
  char err[512] = "";

  assert_int_equal(recipes_parse(text, sizeof(text) - 1, &u, err, sizeof(err)), 0);
  assert_int_equal(recipes_update_version_count(u), 2);
  recipes_update_free(u);
  must_load(f->db, text, ms("2026-02-01T00:00:00Z"));
  r = must_load_set(f->db);
  c = explode(r, "PIZZA-X", 2, "2026-02-01T12:00:00Z", 1);
  assert_int_equal(used(&c, "cheese"), 360000);
  assert_int_equal(used(&c, "tomato"), 2 * 112500); /* 90 g at 80%: 112.5 g raw */
  c = explode(r, "MOD-NO-ONION", 1, "2026-02-01T12:00:00Z", 1);
  assert_int_equal(c.calls, 0);
  assert_int_equal(recipes_count(r), 2);
  recipes_free(r);
}

/* ---------------------------------------------------------------------- */
/* Yields and includes                                                    */
/* ---------------------------------------------------------------------- */

static void test_yield_is_applied_exactly_and_rounded_up(void **state)
{
  struct fixture *f = *state;
  struct recipes *r;
  struct consumed c;

  must_load(f->db,
            HEADER "STEAK-8OZ,1," JAN ",beef,material,226796,g,80\n"    /* 8 oz from 10 oz */
                   "THIRD,1," JAN ",basil,material,1000,g,30\n"         /* 3333.33.. -> 3334 */
                   "FINE,1," JAN ",oil,material,1000,ml,92.5\n"         /* 1081.08.. -> 1082 */
                   "FULL,1," JAN ",salt,material,1,g,100\n",
            ms("2026-02-01T00:00:00Z"));
  r = must_load_set(f->db);
  c = explode(r, "STEAK-8OZ", 1, "2026-02-01T00:00:00Z", 1);
  assert_int_equal(used(&c, "beef"), 283495); /* exactly 10 oz, 283.495 g */
  /* The raw quantity per portion is rounded up once; qty multiplies it exactly. */
  c = explode(r, "THIRD", 1, "2026-02-01T00:00:00Z", 1);
  assert_int_equal(used(&c, "basil"), 3334);
  c = explode(r, "THIRD", 3, "2026-02-01T00:00:00Z", 1);
  assert_int_equal(used(&c, "basil"), 3 * 3334);
  c = explode(r, "FINE", 1, "2026-02-01T00:00:00Z", 1);
  assert_int_equal(used(&c, "oil"), 1082);
  c = explode(r, "FULL", 7, "2026-02-01T00:00:00Z", 1);
  assert_int_equal(used(&c, "salt"), 7);
  assert_string_equal(recipes_material_unit(r, "oil"), "ml");
  assert_null(recipes_material_unit(r, "nothing-like-it"));
  recipes_free(r);
}

static void test_includes_expand_with_portions(void **state)
{
  struct fixture *f = *state;
  struct recipes *r;
  struct consumed c;

  must_load(f->db,
            HEADER "BASE,1," JAN ",dough,material,1000,piece,\n"
                   "BASE,1," JAN ",cheese,material,150000,g,\n"
                   "SAUCE,1," JAN ",tomato,material,1001,g,\n"
                   "PIZZA,1," JAN ",BASE,recipe,1000,piece,\n"
                   "PIZZA,1," JAN ",SAUCE,recipe,500,piece,\n" /* half a portion */
                   "PIZZA,1," JAN ",cheese,material,20000,g,\n"
                   "DOUBLE,1," JAN ",PIZZA,recipe,2000,piece,\n",
            ms("2026-02-01T00:00:00Z"));
  r = must_load_set(f->db);
  c = explode(r, "PIZZA", 3, "2026-02-01T00:00:00Z", 1);
  assert_int_equal(used(&c, "dough"), 3000);
  assert_int_equal(used(&c, "cheese"), 3 * 150000 + 3 * 20000);
  /* 3 pizzas: 1500 milli-portions of SAUCE; 1500 * 1001 / 1000 = 1501.5 -> 1502. */
  assert_int_equal(used(&c, "tomato"), 1502);
  assert_int_equal(c.calls, 4); /* cheese comes twice: once per path */
  c = explode(r, "DOUBLE", 1, "2026-02-01T00:00:00Z", 1);
  assert_int_equal(used(&c, "dough"), 2000);
  assert_int_equal(used(&c, "cheese"), 2 * 170000);
  assert_int_equal(used(&c, "tomato"), 1001);
  assert_int_equal(recipes_version_count(r), 4);
  assert_int_equal(recipes_material_count(r), 3);
  recipes_free(r);
}

static void test_unmapped_sales_explode_to_nothing(void **state)
{
  struct fixture *f = *state;
  struct recipes *r;
  struct consumed c;

  must_load(f->db, HEADER "A,1,2026-03-01T00:00:00Z,cheese,material,1000,g,\n",
            ms("2026-02-01T00:00:00Z"));
  r = must_load_set(f->db);
  c = explode(r, "NO-SUCH-SKU", 1, "2026-04-01T00:00:00Z", 0);
  assert_int_equal(c.calls, 0);
  c = explode(r, "A", 1, "2026-02-28T23:59:59.999Z", 0); /* before its first version */
  assert_int_equal(c.calls, 0);
  c = explode(r, "A", 0, "2026-04-01T00:00:00Z", 0);
  c = explode(r, "A", RECIPES_QTY_MAX + 1, "2026-04-01T00:00:00Z", 0);
  c = explode(r, "A", RECIPES_QTY_MAX, "2026-04-01T00:00:00Z", 1);
  assert_int_equal(used(&c, "cheese"), (int64_t)RECIPES_QTY_MAX * 1000);
  assert_int_equal(recipes_explode(NULL, "A", 1, 0, collect, &c), 0);
  assert_int_equal(recipes_explode(r, "A", 1, ms("2026-04-01T00:00:00Z"), NULL, NULL), 1);
  recipes_free(r);
}

/* ---------------------------------------------------------------------- */
/* SCD type 2                                                              */
/* ---------------------------------------------------------------------- */

#define V1_TEXT HEADER "PIZZA,1,2026-01-01T00:00:00Z,cheese,material,140000,g,\n"
#define V2_ROW "PIZZA,2,2026-06-01T12:00:00+02:00,cheese,material,150000,g,\n"

static void test_sale_exactly_at_a_boundary_uses_the_new_version(void **state)
{
  struct fixture *f = *state;
  struct recipes *r;
  struct consumed c;

  /* Loaded in May: version 2 takes effect in the future, on 1 June 10:00 UTC. */
  must_load(f->db, V1_TEXT V2_ROW, ms("2026-05-01T00:00:00Z"));
  r = must_load_set(f->db);
  c = explode(r, "PIZZA", 1, "2026-06-01T09:59:59.999Z", 1);
  assert_int_equal(used(&c, "cheese"), 140000);
  c = explode(r, "PIZZA", 1, "2026-06-01T10:00:00Z", 1);
  assert_int_equal(used(&c, "cheese"), 150000);
  c = explode(r, "PIZZA", 1, "2026-06-01T12:00:00+02:00", 1);
  assert_int_equal(used(&c, "cheese"), 150000);
  assert_int_equal(recipes_version_at(r, "PIZZA", ms("2026-06-01T09:59:59.999Z")), 1);
  assert_int_equal(recipes_version_at(r, "PIZZA", ms("2026-06-01T10:00:00Z")), 2);
  assert_int_equal(recipes_version_at(r, "PIZZA", ms("2025-12-31T23:59:59Z")), 0);
  recipes_free(r);
}

static void test_late_sale_uses_the_version_it_was_sold_under(void **state)
{
  struct fixture *f = *state;
  struct recipes *r;
  struct consumed c;

  must_load(f->db, V1_TEXT, ms("2026-05-01T00:00:00Z"));
  /* Version 2 is loaded in July, after it took effect (backdated into the
   * open version: allowed, it closes version 1 at its valid_from). */
  must_load(f->db, HEADER V2_ROW, ms("2026-07-01T00:00:00Z"));
  r = must_load_set(f->db);
  /* A terminal that was offline in May journals its sale now: version 1. */
  c = explode(r, "PIZZA", 2, "2026-05-20T19:00:00+02:00", 1);
  assert_int_equal(used(&c, "cheese"), 280000);
  c = explode(r, "PIZZA", 2, "2026-07-01T00:00:00Z", 1);
  assert_int_equal(used(&c, "cheese"), 300000);
  recipes_free(r);
}

static void test_closing_a_version_never_rewrites_it(void **state)
{
  struct fixture *f = *state;
  int64_t loaded_v1;

  must_load(f->db, V1_TEXT, ms("2026-05-01T00:00:00Z"));
  loaded_v1 = query_int(f->db, "SELECT loaded_ms FROM recipe_versions WHERE version = 1");
  assert_int_equal(loaded_v1, ms("2026-05-01T00:00:00Z"));
  assert_int_equal(query_int(f->db, "SELECT valid_to_ms FROM recipe_versions WHERE version = 1"),
                   -2 /* NULL: open */);
  must_load(f->db, HEADER V2_ROW, ms("2026-05-02T00:00:00Z"));
  /* Version 1 is closed where version 2 starts; nothing else of it changed. */
  assert_int_equal(query_int(f->db, "SELECT valid_to_ms FROM recipe_versions WHERE version = 1"),
                   ms("2026-06-01T10:00:00Z"));
  assert_int_equal(query_int(f->db, "SELECT loaded_ms FROM recipe_versions WHERE version = 1"),
                   loaded_v1);
  assert_int_equal(query_int(f->db, "SELECT quantity_milli FROM recipe_components"
                                    " WHERE version = 1"),
                   140000);
  assert_int_equal(query_int(f->db, "SELECT valid_to_ms FROM recipe_versions WHERE version = 2"),
                   -2);
  assert_int_equal(query_int(f->db, "SELECT loaded_ms FROM recipe_versions WHERE version = 2"),
                   ms("2026-05-02T00:00:00Z"));
  /* And the database itself refuses a rewrite, whoever tries it. */
  assert_int_not_equal(sqlite3_exec(f->db, "UPDATE recipe_components SET quantity_milli = 1",
                                    NULL, NULL, NULL),
                       SQLITE_OK);
  assert_int_not_equal(sqlite3_exec(f->db, "UPDATE recipe_versions SET valid_to_ms = 5"
                                           " WHERE version = 1",
                                    NULL, NULL, NULL),
                       SQLITE_OK);
  assert_int_not_equal(sqlite3_exec(f->db, "DELETE FROM recipe_versions", NULL, NULL, NULL),
                       SQLITE_OK);
  assert_int_equal(query_int(f->db, "SELECT count(*) FROM recipe_components"), 2);
}

static void test_a_hand_edited_chain_is_refused_at_load(void **state)
{
  struct fixture *f = *state;
  struct recipes *r;
  char err[512] = "";

  must_load(f->db, V1_TEXT V2_ROW, ms("2026-05-01T00:00:00Z"));
  /* Someone drops the guard and moves version 1's end by hand: the set no
   * longer says which version a sale in the gap used, so it is not loaded. */
  assert_int_equal(sqlite3_exec(f->db,
                                "DROP TRIGGER recipe_versions_only_closed;"
                                "UPDATE recipe_versions SET valid_to_ms = valid_to_ms - 1"
                                " WHERE version = 1",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  r = recipes_load(f->db, err, sizeof(err));
  assert_null(r);
  if (!strstr(err, "stored PIZZA version 1 is not closed where the next version starts"))
    fail_msg("message: %s", err);
}

static void test_overlapping_or_backdated_versions_are_refused(void **state)
{
  struct fixture *f = *state;

  must_load(f->db, V1_TEXT V2_ROW, ms("2026-07-01T00:00:00Z"));
  /* Starting when version 2, already in force, starts: it would replace it. */
  must_refuse(f->db, HEADER "PIZZA,3,2026-06-01T10:00:00Z,cheese,material,1,g,\n",
              ms("2026-07-01T00:00:00Z"),
              "line 2, field valid_from: PIZZA version 3 would start at "
              "2026-06-01T10:00:00Z, when stored version 2 starts");
  /* Starting inside closed version 1: it would rewrite what sales consumed. */
  must_refuse(f->db, HEADER "PIZZA,3,2026-03-01T00:00:00Z,cheese,material,1,g,\n",
              ms("2026-07-01T00:00:00Z"), "before stored version 2 starts");
  /* A number below the newest stored one. */
  must_load(f->db, HEADER "PIZZA,5,2026-08-01T00:00:00Z,cheese,material,1,g,\n",
            ms("2026-07-01T00:00:00Z"));
  must_refuse(f->db, HEADER "PIZZA,4,2026-09-01T00:00:00Z,cheese,material,1,g,\n",
              ms("2026-07-01T00:00:00Z"),
              "line 2, field version: PIZZA version 4 is older than stored version 5");
  assert_int_equal(query_int(f->db, "SELECT count(*) FROM recipe_versions"), 3);
}

static void test_a_future_version_can_be_corrected_before_it_starts(void **state)
{
  struct fixture *f = *state;
  struct recipes *r;
  struct consumed c;

  must_load(f->db, V1_TEXT V2_ROW, ms("2026-05-01T00:00:00Z"));
  /* Still May: version 2 (June) has not started, so version 3 may take its
   * place at the same instant; version 2 stays stored, never in force. */
  must_load(f->db, HEADER "PIZZA,3,2026-06-01T10:00:00Z,cheese,material,155000,g,\n",
            ms("2026-05-02T00:00:00Z"));
  assert_int_equal(query_int(f->db, "SELECT valid_to_ms - valid_from_ms FROM recipe_versions"
                                    " WHERE version = 2"),
                   0);
  r = must_load_set(f->db);
  c = explode(r, "PIZZA", 1, "2026-06-01T10:00:00Z", 1);
  assert_int_equal(used(&c, "cheese"), 155000);
  assert_int_equal(recipes_version_at(r, "PIZZA", ms("2026-06-01T10:00:00Z")), 3);
  assert_int_equal(recipes_count(r), 1);
  assert_int_equal(recipes_version_count(r), 3);
  recipes_free(r);
}

static void test_identical_reload_is_a_no_op(void **state)
{
  struct fixture *f = *state;
  size_t stored = 99, unchanged = 99;
  char err[512] = "";

  assert_int_equal(load_text(f->db, V1_TEXT V2_ROW, ms("2026-05-01T00:00:00Z"), &stored,
                             &unchanged, err, sizeof(err)),
                   0);
  assert_int_equal(stored, 2);
  assert_int_equal(unchanged, 0);
  /* The same file again, even long after version 2 started: nothing changes. */
  assert_int_equal(load_text(f->db, V1_TEXT V2_ROW, ms("2026-08-01T00:00:00Z"), &stored,
                             &unchanged, err, sizeof(err)),
                   0);
  assert_int_equal(stored, 0);
  assert_int_equal(unchanged, 2);
  assert_int_equal(query_int(f->db, "SELECT max(loaded_ms) FROM recipe_versions"),
                   ms("2026-05-01T00:00:00Z"));
  /* The same instant written with another offset is the same content. */
  assert_int_equal(load_text(f->db, HEADER "PIZZA,1,2026-01-01T01:00:00+01:00,cheese,material,"
                                           "140000,g,100\n",
                             ms("2026-08-01T00:00:00Z"), &stored, &unchanged, err, sizeof(err)),
                   0);
  assert_int_equal(unchanged, 1);
}

static void test_a_changed_stored_version_is_refused(void **state)
{
  struct fixture *f = *state;

  must_load(f->db, V1_TEXT V2_ROW, ms("2026-05-01T00:00:00Z"));
  must_refuse(f->db,
              HEADER "PIZZA,1,2026-01-01T00:00:00Z,cheese,material,145000,g,\n" V2_ROW,
              ms("2026-05-01T00:00:00Z"),
              "line 2, field version: PIZZA version 1 is already stored with other "
              "components; a stored version never changes: load the change as version 3");
  must_refuse(f->db, HEADER "PIZZA,1,2026-01-02T00:00:00Z,cheese,material,140000,g,\n",
              ms("2026-05-01T00:00:00Z"),
              "line 2, field valid_from: PIZZA version 1 is already stored with valid_from");
  assert_int_equal(query_int(f->db, "SELECT sum(quantity_milli) FROM recipe_components"),
                   290000);
}

static void test_include_cycle_across_file_and_store_is_refused(void **state)
{
  struct fixture *f = *state;
  struct recipes *r;
  struct consumed c;

  must_load(f->db,
            HEADER "A,1," JAN ",B,recipe,1000,piece,\n"
                   "B,1," JAN ",cheese,material,1000,g,\n",
            ms("2026-02-01T00:00:00Z"));
  /* The file alone is fine (A is not in it); with what is stored it is a cycle. */
  must_refuse(f->db, HEADER "B,2,2026-03-01T00:00:00Z,A,recipe,1000,piece,\n",
              ms("2026-02-01T00:00:00Z"),
              "line 2, field component: include cycle in force at 2026-03-01T00:00:00.000Z: "
              "B includes A includes B");
  must_refuse(f->db, HEADER "C,1,2026-03-01T00:00:00Z,NOPE,recipe,1000,piece,\n",
              ms("2026-02-01T00:00:00Z"),
              "line 2, field component: C includes recipe NOPE, which is neither in this file "
              "nor stored");
  must_refuse(f->db, HEADER "C,1,2026-03-01T00:00:00Z,cheese,material,1000,ml,\n",
              ms("2026-02-01T00:00:00Z"),
              "line 2, field unit: material cheese is in ml here but in g (stored)");
  /* An include of a stored recipe is fine, and expands at the sale's time. */
  must_load(f->db,
            HEADER "C,1,2026-03-01T00:00:00Z,A,recipe,2000,piece,\n"
                   "B,2,2026-04-01T00:00:00Z,cheese,material,3000,g,\n",
            ms("2026-02-01T00:00:00Z"));
  r = must_load_set(f->db);
  c = explode(r, "C", 1, "2026-03-15T00:00:00Z", 1);
  assert_int_equal(used(&c, "cheese"), 2000);
  c = explode(r, "C", 1, "2026-04-15T00:00:00Z", 1);
  assert_int_equal(used(&c, "cheese"), 6000);
  recipes_free(r);
}

/* ---------------------------------------------------------------------- */
/* The shipped default set                                                */
/* ---------------------------------------------------------------------- */

/* What tests/tools/pos_sim.c sells: every one must be mapped. */
static const char *const simulator_skus[] = {
    "PIZZA-MARG-M", "PIZZA-MARG-L", "PIZZA-DIAV-L", "PIZZA-QFORM-L", "PIZZA-VEG-M",
    "PIZZA-CAPR-L", "CALZONE",      "GARLIC-BREAD", "SALAD-MIXED",   "TIRAMISU",
    "COLA-33",      "WATER-50",     "BEER-33",      "MOD-EXTRA-CHEESE", "MOD-EXTRA-SALAMI",
    "MOD-EXTRA-JALAPENO", "MOD-DIP-GARLIC",
};

/* What it delivers with --manager-password: every material must be one the
 * recipes use, in the same unit, or the adjustment is refused. */
static const char *const simulator_deliveries[][2] = {
    {"dough-ball-l", "piece"},    {"dough-ball-m", "piece"},    {"dough-ball-s", "piece"},
    {"cheese-mozzarella", "g"},   {"tomato-sauce", "g"},        {"can-cola-33", "piece"},
    {"bottle-water-50", "piece"}, {"bottle-beer-33", "piece"},  {"box-pizza-l", "piece"},
    {"box-pizza-m", "piece"},     {"salami-spicy", "g"},        {"basil-fresh", "g"},
};

static void test_shipped_recipes_parse_apply_and_map_the_simulator(void **state)
{
  struct fixture *f = *state;
  struct recipes_update *u = NULL;
  struct recipes *r;
  struct consumed c;
  size_t stored = 0, unchanged = 0, versions;
  char err[512] = "";

  if (recipes_parse_file(POS_SOURCE_DIR "/firmware-config/recipes.csv", &u, err, sizeof(err)))
    fail_msg("%s", err);
  versions = recipes_update_version_count(u);
  assert_true(versions >= 20);
  assert_int_equal(sqlite3_exec(f->db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  if (recipes_apply_counted(f->db, u, ms("2026-11-26T03:00:00Z"), &stored, &unchanged, err,
                            sizeof(err)))
    fail_msg("%s", err);
  assert_int_equal(stored, versions);
  /* Loaded again at the next start: a no-op. */
  if (recipes_apply_counted(f->db, u, ms("2026-11-27T03:00:00Z"), &stored, &unchanged, err,
                            sizeof(err)))
    fail_msg("%s", err);
  assert_int_equal(sqlite3_exec(f->db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(stored, 0);
  assert_int_equal(unchanged, versions);
  recipes_update_free(u);

  r = must_load_set(f->db);
  for (size_t i = 0; i < sizeof(simulator_skus) / sizeof(simulator_skus[0]); i++) {
    c = explode(r, simulator_skus[i], 1, "2026-11-26T19:00:00+01:00", 1);
    if (c.count == 0)
      fail_msg("%s consumes nothing", simulator_skus[i]);
  }
  for (size_t i = 0; i < sizeof(simulator_deliveries) / sizeof(simulator_deliveries[0]); i++) {
    const char *unit = recipes_material_unit(r, simulator_deliveries[i][0]);
    if (!unit || strcmp(unit, simulator_deliveries[i][1]) != 0)
      fail_msg("%s: the recipes keep it in %s, pos-sim delivers %s", simulator_deliveries[i][0],
               unit ? unit : "(no recipe uses it)", simulator_deliveries[i][1]);
  }
  /* A large margherita includes the large base: version 1 before September. */
  c = explode(r, "PIZZA-MARG-L", 2, "2026-08-31T21:59:59+00:00", 1);
  assert_int_equal(used(&c, "cheese-mozzarella"), 2 * 140000);
  assert_int_equal(used(&c, "dough-ball-l"), 2000);
  assert_int_equal(used(&c, "box-pizza-l"), 2000);
  assert_int_equal(used(&c, "basil-fresh"), 2 * 5715); /* 4 g at 70% */
  c = explode(r, "PIZZA-MARG-L", 2, "2026-09-01T00:00:00+02:00", 1);
  assert_int_equal(used(&c, "cheese-mozzarella"), 2 * 150000);
  /* Modifiers deplete stock; "no onions" is mapped and consumes nothing. */
  c = explode(r, "MOD-EXTRA-CHEESE", 1, "2026-11-26T19:00:00+01:00", 1);
  assert_int_equal(used(&c, "cheese-mozzarella"), 50000);
  c = explode(r, "MOD-NO-ONION", 1, "2026-11-26T19:00:00+01:00", 1);
  assert_int_equal(c.calls, 0);
  c = explode(r, "PIZZA-MARG-L", 1, "2025-12-31T22:59:59Z", 0); /* before the set starts */
  assert_string_equal(recipes_material_unit(r, "olive-oil"), "ml");
  assert_string_equal(recipes_material_unit(r, "can-cola-33"), "piece");
  recipes_free(r);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_errors_name_line_and_field),
      cmocka_unit_test(test_parse_errors_between_rows_name_the_later_line),
      cmocka_unit_test_setup_teardown(test_a_file_of_only_none_recipes_is_accepted, setup,
                                      teardown),
      cmocka_unit_test(test_include_cycle_in_a_file_is_refused),
      cmocka_unit_test_setup_teardown(test_includes_that_never_meet_in_time_are_not_a_cycle,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_include_chain_depth_is_bounded, setup, teardown),
      cmocka_unit_test(test_include_not_yet_in_force_is_refused),
      cmocka_unit_test_setup_teardown(test_quoted_fields_crlf_bom_comments_accepted, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_yield_is_applied_exactly_and_rounded_up, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_includes_expand_with_portions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unmapped_sales_explode_to_nothing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sale_exactly_at_a_boundary_uses_the_new_version,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_late_sale_uses_the_version_it_was_sold_under, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_closing_a_version_never_rewrites_it, setup, teardown),
      cmocka_unit_test_setup_teardown(test_a_hand_edited_chain_is_refused_at_load, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_overlapping_or_backdated_versions_are_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_a_future_version_can_be_corrected_before_it_starts,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_identical_reload_is_a_no_op, setup, teardown),
      cmocka_unit_test_setup_teardown(test_a_changed_stored_version_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_include_cycle_across_file_and_store_is_refused, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_shipped_recipes_parse_apply_and_map_the_simulator,
                                      setup, teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
