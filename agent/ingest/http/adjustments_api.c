/*
 * adjustments_api.c - POST /v1/inventory/adjustments: authenticate,
 * validate, journal, answer once durable.
 */
#include "ingest/http/adjustments_api.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sale/sale_check.h"
#include "ingest/http/sales_api.h"
#include "platform/log.h"
#include "status/status_actions.h"

/* Large enough for any stock a store holds (a million tonnes in mg). */
/* A billion units of anything (1,000 t of flour): far beyond a store's
 * stock, and far from int64's end however many adjustments add up. */
#define ADJ_QUANTITY_MAX 1000000000000LL

struct adj_ctx {
  char *message;
  size_t message_size;
  char *field;
  size_t field_size;
  char prefix[24]; /* "[2]." for arrays */
};

static int adj_fail(struct adj_ctx *ctx, const char *field, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static int adj_fail(struct adj_ctx *ctx, const char *field, const char *format, ...)
{
  va_list args;
  va_start(args, format);
  vsnprintf(ctx->message, ctx->message_size, format, args);
  va_end(args);
  if (field)
    snprintf(ctx->field, ctx->field_size, "%s%s", ctx->prefix, field);
  else
    snprintf(ctx->field, ctx->field_size, "%.*s", ctx->prefix[0] ? (int)strlen(ctx->prefix) - 1
                                                                 : 0, ctx->prefix);
  return -1;
}

static int adj_id_char(char c, int allow_colon)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '-' || (allow_colon && c == ':');
}

/* A required or optional string member into `out` (at most `max`
 * characters); `id_chars`: 1 = [A-Za-z0-9._:-], 2 = the same without ':',
 * 0 = any text. */
static int adj_text(struct adj_ctx *ctx, json_t *object, const char *key, int required,
                    int id_chars, size_t max, char *out, const char *example)
{
  json_t *value = json_object_get(object, key);
  const char *text;
  size_t len;

  out[0] = '\0';
  if (!value) {
    if (required)
      return adj_fail(ctx, key, "\"%s\" is required, e.g. \"%s\": %s", key, key, example);
    return 0;
  }
  if (!json_is_string(value))
    return adj_fail(ctx, key, "\"%s\" must be a JSON string, e.g. %s", key, example);
  text = json_string_value(value);
  len = json_string_length(value);
  if (len == 0 || len > max || strlen(text) != len)
    return adj_fail(ctx, key, "\"%s\" must be 1 to %zu characters", key, max);
  for (size_t i = 0; id_chars && i < len; i++) {
    if (!adj_id_char(text[i], id_chars == 1))
      return adj_fail(ctx, key, "\"%s\" may only hold letters, digits and %s; found '%c'", key,
                      id_chars == 1 ? ". _ : -" : ". _ -", text[i]);
  }
  memcpy(out, text, len + 1);
  return 0;
}

static int adj_kind(struct adj_ctx *ctx, json_t *object, struct stock_adjustment *a)
{
  char kind[16];
  if (adj_text(ctx, object, "kind", 1, 2, 15, kind, "\"delivery\""))
    return -1;
  if (strcmp(kind, "delivery") == 0)
    a->kind = STOCK_ADJUSTMENT_DELIVERY;
  else if (strcmp(kind, "waste") == 0)
    a->kind = STOCK_ADJUSTMENT_WASTE;
  else if (strcmp(kind, "count") == 0)
    a->kind = STOCK_ADJUSTMENT_COUNT;
  else
    return adj_fail(ctx, "kind", "\"kind\" is \"%s\"; expected delivery, waste or count", kind);
  return 0;
}

static int adj_quantity(struct adj_ctx *ctx, json_t *object, struct stock_adjustment *a)
{
  json_t *value = json_object_get(object, "quantity_milli");
  json_int_t q;

  if (!value)
    return adj_fail(ctx, "quantity_milli",
                    "\"quantity_milli\" is required: a JSON integer of thousandths of the unit "
                    "(5 kg in g is 5000000)");
  if (!json_is_integer(value))
    return adj_fail(ctx, "quantity_milli",
                    "\"quantity_milli\" must be a JSON integer of thousandths of the unit, not "
                    "%s", json_is_real(value) ? "a number with a fraction" : "text or other");
  q = json_integer_value(value);
  if (a->kind == STOCK_ADJUSTMENT_COUNT ? q < 0 : q <= 0)
    return adj_fail(ctx, "quantity_milli",
                    a->kind == STOCK_ADJUSTMENT_COUNT
                        ? "\"quantity_milli\" is %lld; a count is the on-hand found, 0 or more"
                        : "\"quantity_milli\" is %lld; a delivery or waste is a quantity above 0 "
                          "(a correction is a count)",
                    (long long)q);
  if (q > ADJ_QUANTITY_MAX)
    return adj_fail(ctx, "quantity_milli", "\"quantity_milli\" is %lld, above %lld",
                    (long long)q, ADJ_QUANTITY_MAX);
  a->quantity_milli = q;
  return 0;
}

static int adj_parse_one(struct adj_ctx *ctx, json_t *object, struct stock *stock,
                         struct stock_adjustment *a)
{
  static const char *const keys[] = {"adjustment_id", "kind", "material_id", "unit",
                                     "quantity_milli", "business_time", "reason", "note"};
  const char *key;
  json_t *value;
  long long epoch_ms;
  int offset;
  const char *why = NULL;

  memset(a, 0, sizeof(*a));
  if (!json_is_object(object))
    return adj_fail(ctx, NULL, "an adjustment must be a JSON object");
  json_object_foreach(object, key, value) {
    size_t i = 0;
    while (i < sizeof(keys) / sizeof(keys[0]) && strcmp(keys[i], key) != 0)
      i++;
    if (i == sizeof(keys) / sizeof(keys[0]))
      return adj_fail(ctx, key, "unknown field \"%s\"; an adjustment has adjustment_id, kind, "
                      "material_id, unit, quantity_milli, business_time, reason, note", key);
  }
  if (adj_text(ctx, object, "adjustment_id", 1, 1, STOCK_ID_MAX, a->adjustment_id,
               "\"DEL-2026-11-21-01\"") ||
      adj_kind(ctx, object, a) ||
      adj_text(ctx, object, "material_id", 1, 1, STOCK_ID_MAX, a->material_id,
               "\"MOZZARELLA\"") ||
      adj_text(ctx, object, "unit", 1, 2, STOCK_UNIT_MAX, a->unit, "\"g\"") ||
      adj_quantity(ctx, object, a) ||
      adj_text(ctx, object, "business_time", 1, 0, SALE_TIME_TEXT_MAX, a->business_time,
               "\"2026-11-21T07:30:00+01:00\"") ||
      adj_text(ctx, object, "reason", 0, 0, STOCK_REASON_TEXT_MAX, a->reason, "\"damaged\"") ||
      adj_text(ctx, object, "note", 0, 0, STOCK_NOTE_MAX, a->note, "\"...\""))
    return -1;
  if (sale_parse_time(a->business_time, &epoch_ms, &offset, &why))
    return adj_fail(ctx, "business_time", "\"business_time\" \"%s\": %s", a->business_time,
                    why ? why : "not an RFC 3339 time with an offset");
  a->business_time_ms = epoch_ms;
  a->utc_offset_minutes = offset;
  if (stock) {
    /* On-hand adds quantities of one unit per material: a kilo booked as
     * grams would be off by a thousand, silently. */
    char unit[STOCK_UNIT_MAX + 1];
    stock_on_hand(stock, a->material_id, unit);
    if (unit[0] && strcmp(unit, a->unit) != 0)
      return adj_fail(ctx, "unit",
                      "\"unit\" is \"%s\" but %s is kept in \"%s\" (recipes and earlier "
                      "adjustments); send the quantity in %s",
                      a->unit, a->material_id, unit, unit);
  }
  return 0;
}

int adjustments_parse(const char *body, size_t length, size_t max_count, struct stock *stock,
                      struct stock_adjustment **out, size_t *count, int *is_array,
                      char *message, size_t message_size, char *field, size_t field_size)
{
  struct adj_ctx ctx = {message, message_size, field, field_size, ""};
  json_error_t json_error;
  json_t *root = NULL;
  struct stock_adjustment *parsed = NULL;
  size_t n = 1;
  int rc = -1;

  *out = NULL;
  *count = 0;
  *is_array = 0;
  message[0] = field[0] = '\0';
  root = body && length ? json_loadb(body, length, JSON_REJECT_DUPLICATES, &json_error) : NULL;
  if (!root) {
    if (body && length)
      adj_fail(&ctx, NULL, "the body is not valid JSON (line %d, column %d): %s",
               json_error.line, json_error.column, json_error.text);
    else
      adj_fail(&ctx, NULL, "the request body is empty; send one adjustment or an array");
    goto out;
  }
  if (json_is_array(root)) {
    *is_array = 1;
    n = json_array_size(root);
    if (n == 0 || n > max_count) {
      adj_fail(&ctx, NULL, "the body has %zu adjustments; send 1 to %zu per request", n,
               max_count);
      goto out;
    }
  }
  parsed = calloc(n, sizeof(*parsed));
  if (!parsed) {
    adj_fail(&ctx, NULL, "the agent ran out of memory; retry later");
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    if (*is_array)
      snprintf(ctx.prefix, sizeof(ctx.prefix), "[%zu].", i);
    if (adj_parse_one(&ctx, *is_array ? json_array_get(root, i) : root, stock, &parsed[i]))
      goto out;
    for (size_t k = 0; k < i; k++) {
      if (strcmp(parsed[k].adjustment_id, parsed[i].adjustment_id) == 0) {
        adj_fail(&ctx, "adjustment_id",
                 "adjustment_id \"%s\" is also used by [%zu] in this request; each adjustment "
                 "needs its own", parsed[i].adjustment_id, k);
        goto out;
      }
    }
  }
  *out = parsed;
  *count = n;
  parsed = NULL;
  rc = 0;
out:
  free(parsed);
  json_decref(root);
  return rc;
}

/* ---- the exchange ------------------------------------------------------------- */

struct adjustments_request {
  struct journal_write write; /* first: done() gets this pointer back */
  http_exchange *exchange;
  struct stock_adjustment *adjustments;
  int is_array;
  struct journal_item_result results[];
};

static void adjustments_on_journaled(struct journal_write *write)
{
  struct adjustments_request *req = (struct adjustments_request *)write;
  size_t duplicates = 0;
  json_t *body;

  if (write->error == JOURNAL_ECONFLICT) {
    char field[48];
    if (req->is_array)
      snprintf(field, sizeof(field), "[%zu].adjustment_id", write->conflict_index);
    else
      snprintf(field, sizeof(field), "adjustment_id");
    sales_api_respond_json(req->exchange, 409,
                             json_pack("{s:s, s:s, s:I}", "error", write->message, "field", field,
                                       "seq", (json_int_t)write->conflict_seq));
    goto out;
  }
  if (write->error) {
    sales_api_respond_error(req->exchange, 503, write->message, NULL,
                            write->error == JOURNAL_EBUSY ? "Retry-After: 2\r\n"
                                                          : "Retry-After: 30\r\n");
    goto out;
  }
  for (size_t i = 0; i < write->count; i++)
    duplicates += req->results[i].outcome == JOURNAL_DUPLICATE;
  if (!req->is_array) {
    body = json_pack("{s:I}", "seq", (json_int_t)req->results[0].seq);
    if (body && duplicates)
      json_object_set_new(body, "duplicate", json_true());
  } else {
    json_t *results = json_array();
    for (size_t i = 0; results && i < write->count; i++) {
      json_t *item = json_pack("{s:s, s:I}", "adjustment_id", req->adjustments[i].adjustment_id,
                               "seq", (json_int_t)req->results[i].seq);
      if (item && req->results[i].outcome == JOURNAL_DUPLICATE)
        json_object_set_new(item, "duplicate", json_true());
      json_array_append_new(results, item);
    }
    body = json_pack("{s:o}", "results", results);
  }
  sales_api_respond_json(req->exchange, duplicates == write->count ? 200 : 201, body);
out:
  free(req->adjustments);
  free(req);
}

static int adjustments_is_json(const char *content_type)
{
  size_t len = strlen("application/json");
  if (!content_type || strncasecmp(content_type, "application/json", len) != 0)
    return 0;
  return content_type[len] == '\0' || content_type[len] == ';' || content_type[len] == ' ';
}

int adjustments_api_check_headers(const struct adjustments_api_options *options,
                                  const http_exchange *request, struct http_refusal *refusal)
{
  int status = status_actions_check_manager(
      options->password_file, http_exchange_header(request, "Authorization"), refusal);
  if (status) {
    if (status == 401)
      log_warn("api", "unauthorized", "peer=%s path=%s body=not_read",
               http_exchange_peer(request), http_exchange_path(request));
    return status;
  }
  if (!adjustments_is_json(http_exchange_header(request, "Content-Type"))) {
    snprintf(refusal->error, sizeof(refusal->error),
             "adjustments must be sent as Content-Type: application/json");
    return 415;
  }
  return 0;
}

void adjustments_api_handle(const struct adjustments_api_options *options, journal *j,
                            http_exchange *exchange)
{
  struct http_refusal refusal;
  struct stock_adjustment *adjustments = NULL;
  struct adjustments_request *req;
  char message[400], field[64];
  size_t count = 0, body_len;
  const char *body;
  int is_array = 0, status, rc;

  /* Checked again: the on-headers check may have been skipped (HEAD, or a
   * server configured without it). */
  status = adjustments_api_check_headers(options, exchange, &refusal);
  if (status) {
    sales_api_respond_error(exchange, status, refusal.error, NULL, refusal.extra_headers);
    return;
  }
  {
    struct journal_stats stats;
    journal_get_stats(j, &stats);
    if (stats.stock_error[0]) {
      /* Not a retry later: a person must look (503 would make a back
       * office retry for ever). */
      sales_api_respond_error(exchange, 409, stats.stock_error, NULL, NULL);
      return;
    }
  }
  body = http_exchange_body(exchange, &body_len);
  if (adjustments_parse(body, body_len, options->max_per_request, journal_stock(j), &adjustments,
                        &count, &is_array, message, sizeof(message), field, sizeof(field))) {
    log_info("api", "adjustment_rejected", "peer=%s field=%s", http_exchange_peer(exchange),
             field[0] ? field : "-");
    sales_api_respond_error(exchange, 400, message, field[0] ? field : NULL, NULL);
    return;
  }
  req = calloc(1, sizeof(*req) + count * sizeof(req->results[0]));
  if (!req) {
    free(adjustments);
    sales_api_respond_error(exchange, 503, "the agent is out of memory; retry shortly", NULL,
                            "Retry-After: 5\r\n");
    return;
  }
  req->exchange = exchange;
  req->adjustments = adjustments;
  req->is_array = is_array;
  req->write.adjustments = adjustments;
  req->write.count = count;
  req->write.results = req->results;
  req->write.done = adjustments_on_journaled;
  rc = journal_submit(j, &req->write);
  if (rc) {
    sales_api_respond_error(exchange, 503, journal_strerror(rc), NULL, "Retry-After: 5\r\n");
    free(adjustments);
    free(req);
  }
}
