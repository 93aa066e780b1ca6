/*
 * sale_json.h - the POS contract: JSON in, validated sales out.
 *
 * The rules are agent/sale/sale_check.h's, the same for every ingest
 * source; this adds JSON's own (jansson JSON_REJECT_DUPLICATES, unknown
 * keys, the array form). Rules (ARCHITECTURE.md, The
 * POS contract): required fields present with the right JSON types; no
 * unknown fields; no duplicate keys (jansson JSON_REJECT_DUPLICATES); ids
 * 1-64 of [A-Za-z0-9._:-]; kind sale|refund|void, refund/void name
 * original_sale_id (and only they); channel pos|online|delivery|pickup
 * (default pos), delivery_partner only for delivery; business_time RFC 3339
 * with an offset (Z or +hh:mm); currency a known ISO 4217 code; lines
 * 1..500, qty a positive JSON integer, money as decimal strings with at
 * most the currency's decimals (never JSON numbers, never rounded), discount
 * not above qty*unit_price; payments add up to total; total =
 * sum(qty*unit_price - discount + tax); no arithmetic overflow.
 */
#ifndef AGENT_SALE_JSON_H
#define AGENT_SALE_JSON_H

#include <stddef.h>

#include "sale/sale.h"
#include "sale/sale_check.h"

/*
 * Parses and validates a request body: one sale object, or an array of
 * 1..max_sales of them. On success returns 0 with *sales (caller frees with
 * sale_array_free) and *count set, and *is_array saying which form came in.
 * On the first invalid input returns -1 with `error` set; nothing is
 * allocated then. For arrays, `field` is prefixed with the index
 * ("[2].lines[0].sku"). A sale_id repeated within one request is an error.
 */
int sale_json_parse(const char *body, size_t length, size_t max_sales, struct sale **sales,
                    size_t *count, int *is_array, struct sale_error *error);

#endif
