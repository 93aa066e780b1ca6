/*
 * sale_json.h - the POS contract: JSON in, validated sales out.
 *
 * One validation path for every ingest source. Rules (ARCHITECTURE.md, The
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

struct sale_json_error {
  char field[128];   /* "lines[1].qty", "[3].total" for arrays, "" for the whole body */
  char message[256]; /* what is wrong and what is expected */
};

/*
 * Parses and validates a request body: one sale object, or an array of
 * 1..max_sales of them. On success returns 0 with *sales (caller frees with
 * sale_array_free) and *count set, and *is_array saying which form came in.
 * On the first invalid input returns -1 with `error` set; nothing is
 * allocated then. For arrays, `field` is prefixed with the index
 * ("[2].lines[0].sku"). A sale_id repeated within one request is an error.
 */
int sale_json_parse(const char *body, size_t length, size_t max_sales, struct sale **sales,
                    size_t *count, int *is_array, struct sale_json_error *error);

/*
 * Money: parses a decimal string ("12.50", "-1.5", "0") into minor units of
 * a currency with `exponent` decimals. Fewer decimals are padded; more are
 * an error (never rounded); no exponent notation, no leading '+', no
 * thousands separators. Returns 0, or -1 with `why` set.
 */
int sale_json_parse_money(const char *text, unsigned exponent, long long *minor,
                          const char **why);

/*
 * RFC 3339 date-time with a mandatory offset ("2026-11-21T18:42:05+01:00",
 * fractional seconds allowed, "Z" allowed). Returns 0 with UTC epoch ms and
 * the offset in minutes, or -1 with `why` set.
 */
int sale_json_parse_time(const char *text, long long *epoch_ms, int *offset_minutes,
                         const char **why);

/* ISO 4217: the number of minor-unit decimals of `code`, or -1 if unknown. */
int sale_json_currency_exponent(const char *code);

#endif
