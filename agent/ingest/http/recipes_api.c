/*
 * recipes_api.c - POST /v1/recipes and the recipe file loaded at start.
 */
#include "ingest/http/recipes_api.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest/http/sales_api.h"
#include "inventory/recipes.h"
#include "platform/log.h"
#include "status/status_actions.h"

/* The load at start finished (loop thread; one load per process). */
static int recipes_api_start_done;

/* One load waiting for the writer thread. */
struct recipes_request {
  struct journal_op op;    /* first: done() gets this pointer back */
  journal *journal;
  http_exchange *exchange; /* NULL: the load at start */
  struct recipes_update *update;
  char path[256];
};

static int recipes_api_is_csv(const char *content_type)
{
  size_t len = strlen("text/csv");
  if (!content_type || strncasecmp(content_type, "text/csv", len) != 0)
    return 0;
  return content_type[len] == '\0' || content_type[len] == ';' || content_type[len] == ' ';
}

int recipes_api_check_headers(const struct recipes_api_options *options,
                              const http_exchange *request, struct http_refusal *refusal)
{
  int status = status_actions_check_manager(
      options->password_file, http_exchange_header(request, "Authorization"), refusal);
  if (status) {
    if (status == 401)
      log_warn("api", "unauthorized", "peer=%s path=/v1/recipes body=not_read",
               http_exchange_peer(request));
    return status;
  }
  if (!recipes_api_is_csv(http_exchange_header(request, "Content-Type"))) {
    snprintf(refusal->error, sizeof(refusal->error),
             "a recipe set must be sent as Content-Type: text/csv (the format of "
             "firmware-config/recipes.csv)");
    return 415;
  }
  return 0;
}

static void recipes_api_answer(struct recipes_request *req)
{
  struct journal_op *op = &req->op;
  struct journal_stats stats;

  journal_get_stats(req->journal, &stats);
  sales_api_respond_json(req->exchange, 200,
                         json_pack("{s:I, s:I, s:I}", "versions_stored",
                                   (json_int_t)op->recipes_stored, "versions_unchanged",
                                   (json_int_t)op->recipes_unchanged, "skus_in_force",
                                   (json_int_t)stats.recipes_in_force));
}

static void recipes_api_on_applied(struct journal_op *op)
{
  struct recipes_request *req = (struct recipes_request *)op;

  if (!req->exchange) {
    char quoted[400];
    recipes_api_start_done = 1;
    if (op->error)
      log_error("inventory", "recipes_not_loaded",
                "path=%s reason=%s effect=\"sales are taken without stock deltas until a "
                "recipe set is loaded (POST /v1/recipes)\"",
                req->path, log_quote(op->message, quoted, sizeof(quoted)));
    else
      log_info("inventory", "recipes_loaded_at_start", "path=%s versions=%zu", req->path,
               op->recipes_stored);
  } else if (op->error == JOURNAL_EINVAL) {
    sales_api_respond_error(req->exchange, 400, op->message, "body", NULL);
  } else if (op->error) {
    sales_api_respond_error(req->exchange, 503, op->message, NULL, "Retry-After: 30\r\n");
  } else {
    log_info("api", "recipes_loaded", "peer=%s versions_stored=%zu unchanged=%zu",
             http_exchange_peer(req->exchange), op->recipes_stored, op->recipes_unchanged);
    recipes_api_answer(req);
  }
  recipes_update_free(req->update);
  free(req);
}

/* Queues the update on the journal (taken: freed when done). 0, or -1
 * (then the update is freed and nothing was queued). */
static int recipes_api_submit(journal *j, http_exchange *exchange, struct recipes_update *update,
                              const char *path)
{
  struct recipes_request *req = calloc(1, sizeof(*req));
  if (!req) {
    recipes_update_free(update);
    return -1;
  }
  req->journal = j;
  req->exchange = exchange;
  req->update = update;
  snprintf(req->path, sizeof(req->path), "%s", path ? path : "");
  req->op.kind = JOURNAL_OP_RECIPES;
  req->op.recipes_update = update;
  req->op.done = recipes_api_on_applied;
  if (journal_submit_op(j, &req->op)) {
    recipes_update_free(update);
    free(req);
    return -1;
  }
  return 0;
}

void recipes_api_handle(const struct recipes_api_options *options, journal *j,
                        http_exchange *exchange)
{
  struct http_refusal refusal;
  struct recipes_update *update = NULL;
  char err[400];
  size_t body_len;
  const char *body;
  int status = recipes_api_check_headers(options, exchange, &refusal);

  if (status) {
    sales_api_respond_error(exchange, status, refusal.error, NULL, refusal.extra_headers);
    return;
  }
  body = http_exchange_body(exchange, &body_len);
  if (recipes_parse(body ? body : "", body ? body_len : 0, &update, err, sizeof(err))) {
    log_info("api", "recipes_rejected", "peer=%s", http_exchange_peer(exchange));
    sales_api_respond_error(exchange, 400, err, "body", NULL);
    return;
  }
  if (recipes_api_submit(j, exchange, update, NULL))
    sales_api_respond_error(exchange, 503, "the journal is closing or out of memory; retry",
                            NULL, "Retry-After: 5\r\n");
}

void recipes_api_load_at_start(uv_loop_t *loop, journal *j, const char *path)
{
  struct recipes_update *update = NULL;
  struct journal_stats stats;
  char err[400];

  journal_get_stats(j, &stats);
  if (stats.recipe_versions > 0 || !path || !path[0])
    return; /* the journal's own set is in force (the file seeds a new journal only) */
  if (recipes_parse_file(path, &update, err, sizeof(err))) {
    char quoted[450];
    log_error("inventory", "recipes_not_loaded",
              "path=%s reason=%s effect=\"sales are taken without stock deltas until a recipe "
              "set is loaded (POST /v1/recipes)\"",
              path, log_quote(err, quoted, sizeof(quoted)));
    return;
  }
  if (recipes_api_submit(j, NULL, update, path)) {
    log_error("inventory", "recipes_not_loaded", "path=%s reason=\"the journal refused the "
              "operation\"", path);
    return;
  }
  /* Wait for it (the journal's completion is the only thing on the loop
   * yet): the first sale must find the recipes in force, not race them. */
  while (!recipes_api_start_done)
    uv_run(loop, UV_RUN_ONCE);
}
