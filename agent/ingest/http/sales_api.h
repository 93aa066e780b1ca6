/*
 * sales_api.h - POST /v1/sales: the POS terminals' way in.
 *
 * Authenticates the terminal (Bearer token from the tokens file), validates
 * the body (sale_json), journals the sales and answers only once they are
 * durable. See ARCHITECTURE.md "The POS contract" for every answer.
 */
#ifndef AGENT_SALES_API_H
#define AGENT_SALES_API_H

#include <jansson.h>
#include <stddef.h>

#include "journal/journal.h"
#include "sale/sale.h"
#include "platform/http_server.h"

struct sales_api_options {
  const char *tokens_path; /* '<terminal_id> <token>' lines; '*' = any terminal */
  size_t max_sales_per_request;
  /* Called on the loop thread for each sale newly stored (not for
   * duplicates), once it is durable; NULL = none. The sale is borrowed for
   * the call. The status page counts today's sales with it. */
  void (*on_stored)(const struct sale *sale, void *arg);
  void *on_stored_arg;
};

typedef struct sales_api sales_api;

/*
 * Loads the terminal tokens. `j` is borrowed and must outlive the API.
 * Returns the API, or NULL with `err` naming the file, line and problem.
 */
sales_api *sales_api_create(journal *j, const struct sales_api_options *options, char *err,
                            size_t err_size);

/*
 * The on-headers check of POST /v1/sales (see http_headers_fn): the
 * terminal token and the Content-Type, judged before any of the body is
 * read, so that a host without a token cannot make the agent buffer
 * max_body bytes. Returns 0 (read the body), or 401 (with
 * WWW-Authenticate) or 415 with `refusal` filled in. Loop thread.
 */
int sales_api_check_headers(const sales_api *api, const http_exchange *request,
                            struct http_refusal *refusal);

/* Handles one POST /v1/sales exchange (answers now or after the commit). */
void sales_api_handle(sales_api *api, http_exchange *exchange);

/* Requests still waiting for the journal. */
size_t sales_api_pending(const sales_api *api);

/* Frees the API; call after the journal delivered every pending write. */
void sales_api_destroy(sales_api *api);

/*
 * Sends `{"error": message[, "field": field]}` with `status` and optional
 * extra header lines. For every JSON error answer of the agent's API.
 */
void sales_api_respond_error(http_exchange *exchange, int status, const char *message,
                             const char *field, const char *extra_headers);

/*
 * Sends `body` (taken: decref'd here; NULL = out of memory) as compact JSON
 * with `status`, or a 500 error answer when it cannot be built. For every
 * JSON answer of the agent's API. Loop thread.
 */
void sales_api_respond_json(http_exchange *exchange, int status, json_t *body);

/*
 * The body of a journaled request's answer (201 or 200) as jansson's
 * json_dumps(JSON_COMPACT | JSON_PRESERVE_ORDER) writes it, byte for byte:
 * {"seq":N} or {"seq":N,"duplicate":true} for one sale (is_array 0, count
 * 1); {"results":[{"sale_id":"ID","seq":N},...]} with ,"duplicate":true in
 * each item that was one, for an array. SALES_API_ANSWER_SIZE(count) bytes
 * of `out` are always enough.
 */
#define SALES_API_ANSWER_ITEM_MAX (64 + SALE_ID_MAX)
#define SALES_API_ANSWER_SIZE(count) (16 + (size_t)(count) * SALES_API_ANSWER_ITEM_MAX)

/*
 * Writes that body into `out` (not NUL-terminated) with memcpy and integer
 * formatting only: no allocation, no printf. Returns its length, or 0 when
 * `out_size` is under SALES_API_ANSWER_SIZE(count), a single answer does
 * not have count 1, or a sale_id would need escaping (no valid one does);
 * then the caller builds the body with jansson. Any thread.
 */
size_t sales_api_answer_write(char *out, size_t out_size, const struct sale *sales,
                              const struct journal_item_result *results, size_t count,
                              int is_array);

#endif
