/*
 * recipes_api.h - POST /v1/recipes: the store manager (or head office
 * through the manager's tool) loads a recipe set, as the CSV file
 * documented in agent/inventory/recipes.h and firmware-config/RECIPES.md.
 *
 * Authentication: the manager's password (HTTP Basic). Content-Type
 * text/csv. The file is parsed on the loop, then stored and put in force on
 * the journal's writer thread in one transaction (SCD2: new versions close
 * the ones before them, never rewrite them). Answers: 200 {"versions_stored",
 * "versions_unchanged", "skus_in_force"}; 400 {"error", "field": "body"} with
 * the error naming the file's line and field, nothing changed; 401/403
 * without the password; 415 not text/csv; 503 the journal cannot write.
 */
#ifndef AGENT_RECIPES_API_H
#define AGENT_RECIPES_API_H

#include "journal/journal.h"
#include "platform/http_server.h"

struct recipes_api_options {
  const char *password_file; /* [api] manager_password_file */
};

/* The on-headers check: password and Content-Type. 0 or the refusal's
 * status. Loop thread. */
int recipes_api_check_headers(const struct recipes_api_options *options,
                              const http_exchange *request, struct http_refusal *refusal);

/* Handles one POST /v1/recipes. `j` is borrowed and outlives the request.
 * Loop thread. */
void recipes_api_handle(const struct recipes_api_options *options, journal *j,
                        http_exchange *exchange);

/*
 * At start: when the journal holds no recipe yet, loads `path` (the
 * [inventory] recipes file) through the journal and runs `loop` until it
 * is done, so that the first sale finds it in force (call before the API
 * listens, once). A missing or refused file is logged, not fatal: sales
 * are taken (stock is not tracked) until a set is loaded. Loop thread.
 */
void recipes_api_load_at_start(uv_loop_t *loop, journal *j, const char *path);

#endif
