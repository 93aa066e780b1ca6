/*
 * fuzz_recipes.c - a recipe CSV (the body of POST /v1/recipes, or the file
 * at start) through recipes_parse, and for what it accepts, recipes_apply,
 * recipes_load and recipes_explode on a real SQLite database in memory.
 *
 * Besides crashes, leaks and undefined behaviour, it aborts when a promise
 * of agent/inventory/recipes.h is broken:
 *   - a refused file gives *out NULL and an error naming its line;
 *   - a file accepted alone is stored by recipes_apply on an empty database,
 *     unless it includes a recipe it does not contain (left to apply);
 *   - applying it a second time stores nothing and finds every version
 *     unchanged (the same file at every start is a no-op);
 *   - the stored set loads, and what the file names explodes, at a few
 *     instants, into positive quantities, selling the most a line can.
 * The text is copied into a buffer of exactly its length, so a read past
 * `len` is caught by ASan.
 */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inventory/recipes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_fail(const char *what, const char *err)
{
  fprintf(stderr, "fuzz-recipes: %s: %s\n", what, err);
  abort();
}

static void fuzz_emit(void *arg, const char *material_id, const char *unit,
                      int64_t quantity_milli)
{
  (void)arg;
  if (quantity_milli <= 0 || !material_id[0] || !unit[0])
    fuzz_fail("explode emitted a non-positive quantity or an empty id", material_id);
}

/* Stores `u` twice (the second must be a no-op), loads it and explodes the
 * SKUs that the file names. */
static void fuzz_apply(const struct recipes_update *u, const char *text, size_t size)
{
  sqlite3 *db = NULL;
  struct recipes *r;
  size_t stored = 0, unchanged = 0;
  char err[512] = "";

  if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
      sqlite3_exec(db, recipes_schema_sql, NULL, NULL, NULL) != SQLITE_OK)
    fuzz_fail("cannot make the database", sqlite3_errmsg(db));
  if (recipes_apply_counted(db, u, 0, &stored, &unchanged, err, sizeof(err))) {
    if (!strstr(err, "which is neither in this file nor stored"))
      fuzz_fail("a file accepted alone was refused on an empty database", err);
    goto out;
  }
  if (recipes_apply_counted(db, u, 0, &stored, &unchanged, err, sizeof(err)) || stored != 0 ||
      unchanged != recipes_update_version_count(u))
    fuzz_fail("loading the same file again was not a no-op", err);
  r = recipes_load(db, err, sizeof(err));
  if (!r)
    fuzz_fail("the stored set does not load", err);
  /* Every first field of a line is tried as a SKU, at a few instants. */
  for (size_t at = 0; at < size;) {
    char sku[RECIPES_ID_MAX + 1];
    size_t n = 0;
    while (at + n < size && n < RECIPES_ID_MAX && text[at + n] != ',' && text[at + n] != '\n')
      n++;
    memcpy(sku, text + at, n);
    sku[n] = '\0';
    for (int64_t t = -1; t <= 1; t++)
      recipes_explode(r, sku, RECIPES_QTY_MAX, t * 1767225600000LL, fuzz_emit, NULL);
    while (at < size && text[at] != '\n')
      at++;
    at++;
  }
  recipes_free(r);
out:
  sqlite3_close(db);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *text = malloc(size ? size : 1);
  struct recipes_update *u = (struct recipes_update *)1;
  char err[512] = "";

  if (!text)
    return 0;
  memcpy(text, data, size);
  if (recipes_parse(text, size, &u, err, sizeof(err))) {
    if (u != NULL)
      fuzz_fail("a refused file left an update", err);
    if (strncmp(err, "line ", 5) != 0 && !strstr(err, "out of memory"))
      fuzz_fail("a refusal does not name its line", err);
  } else {
    fuzz_apply(u, text, size);
    recipes_update_free(u);
  }
  free(text);
  return 0;
}
