/*
 * recipes_sql.h - every SQL statement of the recipes module, by name.
 *
 * The tables are part of journal schema version 5 (recipes_schema_sql,
 * appended to the journal's migrations by the journal; RECIPES_SCHEMA_SQL
 * is the same text as a literal, for concatenating with other v5 tables).
 *
 * SCD type 2 is enforced by the database too, not only by recipes_apply:
 * components are never updated or deleted, a version is never deleted, and
 * the only update a version row takes is setting its NULL valid_to once
 * (closing it). One open version per SKU is a unique partial index.
 */
#ifndef AGENT_INVENTORY_RECIPES_SQL_H
#define AGENT_INVENTORY_RECIPES_SQL_H

/* recipe_versions: one row per (sku, version). valid_from is the text as
 * the file wrote it (kept for people); valid_from_ms/valid_to_ms are UTC
 * epoch ms, valid_to_ms NULL while the version is the newest (open).
 * loaded_ms is when the version was stored. consumes_nothing = 1 for a
 * recipe of kind "none" (mapped, depletes nothing), which has no components.
 * recipe_components: raw_milli is quantity_milli with the yield applied
 * (ceil(quantity_milli * 10000 / yield_bp)), yield_bp in hundredths of a
 * percent (10000 = 100%). */
#define RECIPES_SCHEMA_SQL                                                           \
  "CREATE TABLE recipe_versions("                                                    \
  "  sku TEXT NOT NULL,"                                                             \
  "  version INTEGER NOT NULL CHECK(version >= 1),"                                  \
  "  valid_from TEXT NOT NULL,"                                                      \
  "  valid_from_ms INTEGER NOT NULL,"                                                \
  "  valid_to_ms INTEGER CHECK(valid_to_ms IS NULL OR valid_to_ms >= valid_from_ms)," \
  "  consumes_nothing INTEGER NOT NULL CHECK(consumes_nothing IN (0, 1)),"           \
  "  loaded_ms INTEGER NOT NULL,"                                                    \
  "  PRIMARY KEY(sku, version)) WITHOUT ROWID;"                                      \
  "CREATE UNIQUE INDEX recipe_versions_open ON recipe_versions(sku)"                 \
  "  WHERE valid_to_ms IS NULL;"                                                     \
  "CREATE TABLE recipe_components("                                                  \
  "  sku TEXT NOT NULL,"                                                             \
  "  version INTEGER NOT NULL,"                                                      \
  "  component TEXT NOT NULL,"                                                       \
  "  kind TEXT NOT NULL CHECK(kind IN ('material', 'recipe')),"                      \
  "  quantity_milli INTEGER NOT NULL CHECK(quantity_milli > 0),"                     \
  "  unit TEXT NOT NULL CHECK(unit IN ('g', 'ml', 'piece')),"                        \
  "  yield_bp INTEGER NOT NULL CHECK(yield_bp BETWEEN 1 AND 10000),"                 \
  "  raw_milli INTEGER NOT NULL CHECK(raw_milli >= quantity_milli),"                 \
  "  PRIMARY KEY(sku, version, component),"                                          \
  "  FOREIGN KEY(sku, version) REFERENCES recipe_versions(sku, version))"            \
  "  WITHOUT ROWID;"                                                                 \
  "CREATE TRIGGER recipe_components_never_rewritten BEFORE UPDATE ON recipe_components" \
  " BEGIN SELECT RAISE(ABORT, 'recipe components are never rewritten (SCD2)'); END;" \
  "CREATE TRIGGER recipe_components_never_deleted BEFORE DELETE ON recipe_components" \
  " BEGIN SELECT RAISE(ABORT, 'recipe components are never deleted (SCD2)'); END;"   \
  "CREATE TRIGGER recipe_versions_never_deleted BEFORE DELETE ON recipe_versions"    \
  " BEGIN SELECT RAISE(ABORT, 'recipe versions are never deleted (SCD2)'); END;"     \
  "CREATE TRIGGER recipe_versions_only_closed BEFORE UPDATE ON recipe_versions"      \
  " WHEN OLD.valid_to_ms IS NOT NULL OR NEW.valid_to_ms IS NULL"                     \
  "  OR NEW.sku IS NOT OLD.sku OR NEW.version IS NOT OLD.version"                    \
  "  OR NEW.valid_from IS NOT OLD.valid_from"                                        \
  "  OR NEW.valid_from_ms IS NOT OLD.valid_from_ms"                                  \
  "  OR NEW.consumes_nothing IS NOT OLD.consumes_nothing"                            \
  "  OR NEW.loaded_ms IS NOT OLD.loaded_ms"                                          \
  " BEGIN SELECT RAISE(ABORT, 'a recipe version is only ever closed (valid_to set once),"\
  " never rewritten (SCD2)'); END;"

/* Every stored version and component, in (sku, version[, component]) order:
 * the order recipes__build wants, so loading needs no sorting. */
#define RECIPES_SQL_SELECT_VERSIONS                                                  \
  "SELECT sku, version, valid_from, valid_from_ms, valid_to_ms, consumes_nothing"    \
  " FROM recipe_versions ORDER BY sku, version"
#define RECIPES_SQL_SELECT_COMPONENTS                                                \
  "SELECT sku, version, component, kind, quantity_milli, unit, yield_bp, raw_milli"  \
  " FROM recipe_components ORDER BY sku, version, component"

/* Closes the open version of ?1 at ?2 (the new version's valid_from). */
#define RECIPES_SQL_CLOSE_OPEN                                                       \
  "UPDATE recipe_versions SET valid_to_ms = ?2 WHERE sku = ?1 AND valid_to_ms IS NULL"

#define RECIPES_SQL_INSERT_VERSION                                                   \
  "INSERT INTO recipe_versions(sku, version, valid_from, valid_from_ms, valid_to_ms,"\
  " consumes_nothing, loaded_ms) VALUES(?1, ?2, ?3, ?4, NULL, ?5, ?6)"

#define RECIPES_SQL_INSERT_COMPONENT                                                 \
  "INSERT INTO recipe_components(sku, version, component, kind, quantity_milli, unit,"\
  " yield_bp, raw_milli) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"

#endif
