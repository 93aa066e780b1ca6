/*
 * recipes_int.h - the recipes module's insides, shared by recipes_csv.c
 * (parsing a file into a recipes_update), recipes_set.c (the indexed
 * in-memory set, its graph checks and the explosion) and recipes.c (SQLite:
 * apply and load). For the recipes module's own files only.
 *
 * A recipes_update is a flat list of versions, each owning a run of
 * components; the same form carries what is read back from the database, so
 * one builder (recipes__build) makes the indexed set from either, or from
 * both merged, and runs the same checks on it.
 */
#ifndef AGENT_INVENTORY_RECIPES_INT_H
#define AGENT_INVENTORY_RECIPES_INT_H

#include <stddef.h>
#include <stdint.h>

#include "inventory/recipes.h"

#define RECIPES_TIME_TEXT_MAX 40
#define RECIPES_YIELD_FULL 10000 /* yield in hundredths of a percent: 100.00% */

enum recipes__kind { RECIPES_KIND_MATERIAL = 1, RECIPES_KIND_RECIPE = 2 };
enum recipes__unit { RECIPES_UNIT_G = 1, RECIPES_UNIT_ML = 2, RECIPES_UNIT_PIECE = 3 };

struct recipes__in_component {
  char id[RECIPES_ID_MAX + 1];
  uint8_t kind; /* enum recipes__kind */
  uint8_t unit; /* enum recipes__unit */
  int32_t yield_bp;       /* 1..RECIPES_YIELD_FULL */
  int64_t quantity_milli; /* as written */
  int64_t raw_milli;      /* ceil(quantity_milli * RECIPES_YIELD_FULL / yield_bp) */
  unsigned line;          /* line in the file; 0 = read from the database */
};

struct recipes__in_version {
  char sku[RECIPES_ID_MAX + 1];
  int64_t version;
  int64_t valid_from_ms;
  char valid_from[RECIPES_TIME_TEXT_MAX + 1]; /* as written */
  int consumes_nothing;                       /* kind "none" */
  unsigned line;                              /* first line; 0 = from the database */
  size_t first_component;                     /* index into components */
  size_t component_count;                     /* sorted by id */
};

struct recipes_update {
  struct recipes__in_version *versions; /* sorted by (sku, version) once parsed */
  size_t version_count, version_cap;
  struct recipes__in_component *components;
  size_t component_count, component_cap;
};

/* "g", "ml", "piece" for an enum recipes__unit. */
const char *recipes__unit_name(int unit);

/* Appends a version (components follow with recipes__add_component).
 * 0, or RECIPES_ENOMEM. */
int recipes__add_version(struct recipes_update *u, const struct recipes__in_version *v);
int recipes__add_component(struct recipes_update *u, const struct recipes__in_component *c);

/* Sorts versions by (sku, version). */
void recipes__sort_versions(struct recipes_update *u);

/* The index of (sku, version) in a sorted update, or -1. */
long recipes__find_version(const struct recipes_update *u, const char *sku, int64_t version);

/* 1 when two versions (each from its own update) have the same content:
 * valid_from instant, "none" flag and components (id, kind, quantity,
 * unit, yield). */
int recipes__same_content(const struct recipes_update *a, const struct recipes__in_version *va,
                          const struct recipes_update *b, const struct recipes__in_version *vb);

/* Builds the indexed set from a sorted update and checks it: one unit per
 * material, versions whose numbers grow with valid_from, and at every
 * instant a version starts: no include cycles, include chains at most
 * RECIPES_INCLUDE_DEPTH deep, every include resolvable, no overflow when
 * RECIPES_QTY_MAX is sold. With `partial` set (a file on its own), includes
 * of SKUs not in `in` are left for recipes_apply to check. Errors name the
 * file line (or the stored version). NULL with `err` and *rc set. */
struct recipes *recipes__build(const struct recipes_update *in, int partial, int *rc, char *err,
                               size_t err_size);

#endif
