/*
 * sale_check.h - the rules of the POS contract, once, for every ingest
 * source (ARCHITECTURE.md, "The POS contract" and "Ingest sources").
 *
 * A source decodes its own syntax (a JSON body, a CSV row, a database row)
 * and hands sale_read() the values it found, field by field, through a
 * struct sale_source; sale_read() applies every rule and fills a struct
 * sale, or stops at the first problem with one struct sale_error: the field
 * named the way the contract names it ("lines[1].qty"; "[2].lines[1].qty"
 * inside a JSON array) and what is wrong and expected. Sources add where
 * the sale was (a file's line, a table's row) around that, never another
 * wording of the rule.
 *
 * The rules: required fields present with the right types; ids 1-64 of
 * [A-Za-z0-9._:-]; kind sale|refund|void, refund/void name
 * original_sale_id (and only they); channel pos|online|delivery|pickup
 * (default pos), delivery_partner only for delivery; business_time
 * RFC 3339 with an offset (Z or +hh:mm), year 2000-2100; currency an
 * active ISO 4217 code; lines 1..500, payments 0..50 (none only for a
 * total of 0); qty an integer 1..100000; money as decimal strings with at
 * most the currency's decimals (never numbers, never rounded), not
 * negative, discount not above qty x unit_price, a payment above zero;
 * total = sum(qty x unit_price - discount + tax) = sum(payments); no
 * arithmetic overflow. Unknown fields are the source's to refuse (each has
 * its own notion of a field), with the allowed names below.
 */
#ifndef AGENT_SALE_CHECK_H
#define AGENT_SALE_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "sale/sale.h"

struct sale_error {
  char field[128];   /* "lines[1].qty", "[3].total" inside a JSON array, "" for the whole input */
  char message[256]; /* what is wrong and what is expected */
};

/* How a source's values are typed. JSON: as JSON has them (a qty must be
 * a JSON integer, money a string; messages name JSON's types). TEXT: every
 * value may come as text (a CSV cell, a database's TEXT column): a qty is
 * read from its digits; integers and reals are named as such. */
enum sale_syntax { SALE_SYNTAX_JSON = 0, SALE_SYNTAX_TEXT = 1 };

enum sale_value_type {
  SALE_VALUE_ABSENT = 0, /* the field is not there (a JSON key missing, an empty cell, NULL) */
  SALE_VALUE_OBJECT,
  SALE_VALUE_ARRAY,
  SALE_VALUE_TEXT,
  SALE_VALUE_INTEGER,
  SALE_VALUE_NUMBER, /* a number with a fraction or exponent */
  SALE_VALUE_TRUE,
  SALE_VALUE_FALSE,
  SALE_VALUE_NULL,
};

struct sale_value {
  enum sale_value_type type;
  size_t count;     /* ARRAY: its elements */
  const char *text; /* TEXT: NUL-terminated, `length` bytes, no NUL inside */
  size_t length;
  long long integer; /* INTEGER */
};

/* The parts of a sale a source is asked about. */
enum sale_part { SALE_PART_SALE = 0, SALE_PART_LINE, SALE_PART_PAYMENT };

struct sale_check;

/*
 * What a source gives sale_read(). `state` is the source's own.
 * - enter: makes part `part` (the sale itself, or its line or payment
 *   `index`, asked in order 0, 1, ... after "lines"/"payments" was read)
 *   the current object and sets *object to what it is (an OBJECT unless
 *   the input has something else there).
 * - get: the value of field `key` of the current object (ABSENT when it is
 *   not there). Pointers in *value stay valid until sale_read returns.
 * - check_fields (may be NULL): refuses a field of the current object that
 *   is not in `allowed` (NULL-terminated), with sale_check_fail(check,
 *   field, "unknown field (allowed here: %s)", allowed_text): 0 or -1.
 */
struct sale_source {
  enum sale_syntax syntax;
  void (*enter)(void *state, enum sale_part part, size_t index, struct sale_value *object);
  void (*get)(void *state, const char *key, struct sale_value *value);
  int (*check_fields)(void *state, struct sale_check *check, const char *const *allowed,
                      const char *allowed_text);
};

/*
 * Where the rules are, for error->field. The source sets `error` (where
 * the first problem goes) and, for a sale inside a JSON array, in_array and
 * sale_index ("[2]." before every field); sale_read sets the rest. Kept as
 * indexes and formatted only when a problem is found, so that a valid sale
 * costs no formatting.
 */
struct sale_check {
  struct sale_error *error;
  int in_array;
  size_t sale_index;
  enum sale_syntax syntax; /* the source's */
  const char *object_name; /* "lines", "payments", or NULL for the sale itself */
  size_t object_index;
  char currency[4]; /* once read: the money fields need its exponent */
  unsigned exponent;
  const struct sale_source *source; /* sale_read's, while it runs */
  void *state;
};

/* The fields each part may have, and the same as text for messages. */
extern const char *const sale_fields[];
extern const char sale_fields_text[];
extern const char *const sale_line_fields[];
extern const char sale_line_fields_text[];
extern const char *const sale_payment_fields[];
extern const char sale_payment_fields_text[];

/*
 * Reads one sale from `source` into `sale` (zeroed by the caller) applying
 * every rule, in the contract's order, so that the first problem found is
 * the one reported: 0, or -1 with check->error set. On -1 `sale` may hold
 * lines and payments: sale_clear. Any thread; no shared state.
 */
int sale_read(const struct sale_source *source, void *state, struct sale_check *check,
              struct sale *sale);

/*
 * Records a problem with field `key` of the current part (NULL: the part
 * itself) into check->error, with the field path made from `check`, and
 * returns -1. The message is made printable (control characters and
 * invalid UTF-8 become '?'). Only the first problem is kept: callers stop
 * at the first -1.
 */
__attribute__((format(printf, 3, 4))) int sale_check_fail(struct sale_check *check, const char *key,
                                                          const char *format, ...);

/* "a string", "a JSON number", "null", ... for a message. */
const char *sale_value_type_name(enum sale_syntax syntax, enum sale_value_type type);

/*
 * Money: parses a decimal string ("12.50", "-1.5", "0") into minor units of
 * a currency with `exponent` decimals. Fewer decimals are padded; more are
 * an error (never rounded); no exponent notation, no leading '+', no
 * thousands separators. Returns 0, or -1 with `why` set to a phrase that
 * reads after the quoted value ("is too large"). Pure.
 */
int sale_parse_money(const char *text, unsigned exponent, long long *minor, const char **why);

/*
 * RFC 3339 date-time with a mandatory offset ("2026-11-21T18:42:05+01:00",
 * fractional seconds allowed, "Z" allowed). Returns 0 with UTC epoch ms and
 * the offset in minutes, or -1 with `why` set. Pure.
 */
int sale_parse_time(const char *text, long long *epoch_ms, int *offset_minutes, const char **why);

/* ISO 4217: the number of minor-unit decimals of `code`, or -1 if unknown. */
int sale_currency_exponent(const char *code);

/*
 * Decodes one UTF-8 sequence of at most `left` bytes at `s`: its length with
 * *code_point set, or 0 if it is not valid UTF-8 (overlong, surrogate, above
 * U+10FFFF, truncated). Any thread.
 */
size_t sale_utf8_next(const unsigned char *s, size_t left, uint32_t *code_point);

/* Makes `text` safe for a response or a log line: invalid UTF-8 and
 * control characters become '?'. */
void sale_text_sanitize(char *text);

#endif
