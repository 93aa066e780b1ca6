/*
 * adjustments_api.h - POST /v1/inventory/adjustments: what the store's
 * back office tells the agent about stock (deliveries received, waste,
 * physical counts), journaled like sales.
 *
 * Authentication: the store manager's password (HTTP Basic, as for the
 * status page's actions), not a terminal token: adjustments come from the
 * manager's back-office tool, and a till's token must not be able to book
 * a delivery or overwrite a count.
 *
 * The body is one adjustment object or an array (all-or-nothing):
 *   {"adjustment_id": "DEL-2026-11-21-01",   1-64 of [A-Za-z0-9._:-], unique in the store
 *    "kind": "delivery",                      delivery | waste | count
 *    "material_id": "MOZZARELLA",             1-64 of [A-Za-z0-9._:-]
 *    "unit": "g",                             1-16 of [A-Za-z0-9._-]; the material's unit
 *    "quantity_milli": 5000000,               integer thousandths of the unit:
 *                                             delivery/waste > 0, count = the on-hand
 *                                             counted (>= 0)
 *    "business_time": "2026-11-21T07:30:00+01:00",   RFC 3339 with offset
 *    "reason": "...", "note": "..."}          optional text (128, 512 characters)
 * A count books, as its delta (reason stock count), the difference between
 * what was counted and the on-hand the agent holds when it journals the
 * count (every row journaled before it, whatever their business times):
 * send a count as soon as it is taken, after the sales it saw.
 * Answers as POST /v1/sales: 201 {"seq": N} once durable (an array:
 * {"results": [{"adjustment_id", "seq"}...]}); 200 with "duplicate": true
 * for a retry with the same content; 409 for the same id with other
 * content; 400 {"error", "field"} (nothing written); 401/403 without the
 * manager's password; 503 with Retry-After when the journal cannot write.
 */
#ifndef AGENT_ADJUSTMENTS_API_H
#define AGENT_ADJUSTMENTS_API_H

#include <stddef.h>

#include "inventory/stock.h"
#include "journal/journal.h"
#include "platform/http_server.h"

/*
 * Parses and validates a body (see above). 0 with *out (caller frees) and
 * *count, *is_array; or -1 with `message` and `field` ("[2].quantity_milli")
 * saying what is wrong; nothing allocated then. `stock` (may be NULL) is
 * read for each material's unit. Any thread.
 */
int adjustments_parse(const char *body, size_t length, size_t max_count, struct stock *stock,
                      struct stock_adjustment **out, size_t *count, int *is_array,
                      char *message, size_t message_size, char *field, size_t field_size);

struct adjustments_api_options {
  const char *password_file; /* [api] manager_password_file; "" = refused (403) */
  size_t max_per_request;
};

/*
 * The on-headers check: the manager's password and the Content-Type,
 * before the body is read. 0 or the refusal's status. Loop thread.
 */
int adjustments_api_check_headers(const struct adjustments_api_options *options,
                                  const http_exchange *request, struct http_refusal *refusal);

/* Handles one POST /v1/inventory/adjustments (answers now or after the
 * commit). `j` is borrowed and outlives every request. Loop thread. */
void adjustments_api_handle(const struct adjustments_api_options *options, journal *j,
                            http_exchange *exchange);

#endif
