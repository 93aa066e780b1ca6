/*
 * sale_json.c - the POS contract: JSON request bodies in, validated sales out.
 *
 * Every ingest source funnels through sale_json_parse(), so the rules of
 * ARCHITECTURE.md ("The POS contract") live in this one file. The first
 * problem found ends the parse. Its `field` is the JSON path of the offending
 * value and its message says what is wrong and what is expected, because
 * the reader is a POS integrator looking at a 400 response, not at our code.
 *
 * Money never passes through floating point: decimal strings are scanned
 * digit by digit into int64 minor units with checked arithmetic, and every
 * sum is checked too.
 */
#include "ingest/http/sale_json.h"
#include "ingest/http/sale_json_int.h"

#include "proto/codec.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SJ_QTY_MAX 100000
#define SJ_FRACTION_DIGITS_MAX 9 /* RFC 3339 allows more; nanoseconds is plenty */
#define SJ_EXPONENT_MAX 9        /* 10^9 minor units per major unit at most */
#define SJ_YEAR_MIN 2000
#define SJ_YEAR_MAX 2100
#define SJ_OFFSET_MINUTES_MAX (18 * 60)
#define SJ_QUOTE_MAX 40 /* bytes of a rejected value echoed back in a message */
#define SJ_MONEY_TEXT_MAX 32

/*
 * Where in the body the value being validated sits, for error->field. Kept
 * as indexes and formatted only when an error is raised, so that a valid
 * body costs no formatting per sale or per line.
 */
struct sj_ctx {
  struct sale_json_error *error;
  const struct sale_json_tape *tape;
  int in_array;            /* the body is an array: fields start with "[sale_index]" */
  size_t sale_index;
  const char *object_name; /* "lines", "payments", or NULL for the sale itself */
  size_t object_index;
  char currency[4]; /* once known: money fields need its exponent */
  unsigned exponent;
};

typedef struct sale_json_value sj_value;

enum sj_money_status {
  SJ_MONEY_OK = 0,
  SJ_MONEY_SYNTAX = -1,
  SJ_MONEY_DECIMALS = -2,
  SJ_MONEY_RANGE = -3,
};

enum sj_money_sign { SJ_MONEY_NOT_NEGATIVE, SJ_MONEY_POSITIVE };

/* ------------------------------------------------------------------------ */
/* ISO 4217                                                                 */

struct sj_currency {
  char code[4];
  unsigned char exponent;
};

/*
 * Active ISO 4217 codes and their minor units, sorted by code for bsearch.
 * Left out on purpose: codes with no minor unit ("N.A.": XAU, XAG, XPD, XPT,
 * XDR, XBA-XBD, XSU, XUA, XTS, XXX), which no till takes payment in, and
 * withdrawn codes (HRK, MRO, STD, VEF, ...). Codes in their transition
 * period (ANG and XCG, BGN, SLL and SLE, ZWL and ZWG, CUC) are kept so that
 * a store mid-changeover is not locked out.
 */
static const struct sj_currency sj_currencies[] = {
    {"AED", 2}, {"AFN", 2}, {"ALL", 2}, {"AMD", 2}, {"ANG", 2}, {"AOA", 2}, {"ARS", 2},
    {"AUD", 2}, {"AWG", 2}, {"AZN", 2}, {"BAM", 2}, {"BBD", 2}, {"BDT", 2}, {"BGN", 2},
    {"BHD", 3}, {"BIF", 0}, {"BMD", 2}, {"BND", 2}, {"BOB", 2}, {"BOV", 2}, {"BRL", 2},
    {"BSD", 2}, {"BTN", 2}, {"BWP", 2}, {"BYN", 2}, {"BZD", 2}, {"CAD", 2}, {"CDF", 2},
    {"CHE", 2}, {"CHF", 2}, {"CHW", 2}, {"CLF", 4}, {"CLP", 0}, {"CNY", 2}, {"COP", 2},
    {"COU", 2}, {"CRC", 2}, {"CUC", 2}, {"CUP", 2}, {"CVE", 2}, {"CZK", 2}, {"DJF", 0},
    {"DKK", 2}, {"DOP", 2}, {"DZD", 2}, {"EGP", 2}, {"ERN", 2}, {"ETB", 2}, {"EUR", 2},
    {"FJD", 2}, {"FKP", 2}, {"GBP", 2}, {"GEL", 2}, {"GHS", 2}, {"GIP", 2}, {"GMD", 2},
    {"GNF", 0}, {"GTQ", 2}, {"GYD", 2}, {"HKD", 2}, {"HNL", 2}, {"HTG", 2}, {"HUF", 2},
    {"IDR", 2}, {"ILS", 2}, {"INR", 2}, {"IQD", 3}, {"IRR", 2}, {"ISK", 0}, {"JMD", 2},
    {"JOD", 3}, {"JPY", 0}, {"KES", 2}, {"KGS", 2}, {"KHR", 2}, {"KMF", 0}, {"KPW", 2},
    {"KRW", 0}, {"KWD", 3}, {"KYD", 2}, {"KZT", 2}, {"LAK", 2}, {"LBP", 2}, {"LKR", 2},
    {"LRD", 2}, {"LSL", 2}, {"LYD", 3}, {"MAD", 2}, {"MDL", 2}, {"MGA", 2}, {"MKD", 2},
    {"MMK", 2}, {"MNT", 2}, {"MOP", 2}, {"MRU", 2}, {"MUR", 2}, {"MVR", 2}, {"MWK", 2},
    {"MXN", 2}, {"MXV", 2}, {"MYR", 2}, {"MZN", 2}, {"NAD", 2}, {"NGN", 2}, {"NIO", 2},
    {"NOK", 2}, {"NPR", 2}, {"NZD", 2}, {"OMR", 3}, {"PAB", 2}, {"PEN", 2}, {"PGK", 2},
    {"PHP", 2}, {"PKR", 2}, {"PLN", 2}, {"PYG", 0}, {"QAR", 2}, {"RON", 2}, {"RSD", 2},
    {"RUB", 2}, {"RWF", 0}, {"SAR", 2}, {"SBD", 2}, {"SCR", 2}, {"SDG", 2}, {"SEK", 2},
    {"SGD", 2}, {"SHP", 2}, {"SLE", 2}, {"SLL", 2}, {"SOS", 2}, {"SRD", 2}, {"SSP", 2},
    {"STN", 2}, {"SVC", 2}, {"SYP", 2}, {"SZL", 2}, {"THB", 2}, {"TJS", 2}, {"TMT", 2},
    {"TND", 3}, {"TOP", 2}, {"TRY", 2}, {"TTD", 2}, {"TWD", 2}, {"TZS", 2}, {"UAH", 2},
    {"UGX", 0}, {"USD", 2}, {"USN", 2}, {"UYI", 0}, {"UYU", 2}, {"UYW", 4}, {"UZS", 2},
    {"VED", 2}, {"VES", 2}, {"VND", 0}, {"VUV", 0}, {"WST", 2}, {"XAF", 0}, {"XCD", 2},
    {"XCG", 2}, {"XOF", 0}, {"XPF", 0}, {"YER", 2}, {"ZAR", 2}, {"ZMW", 2}, {"ZWG", 2},
    {"ZWL", 2},
};

static int sj_currency_compare(const void *key, const void *entry)
{
  return strcmp((const char *)key, ((const struct sj_currency *)entry)->code);
}

/*
 * Returns the minor-unit decimals of the ISO 4217 code `code` (exactly three
 * uppercase letters, NUL-terminated), or -1 if it is not an active code or
 * is NULL. Pure; any thread.
 */
int sale_json_currency_exponent(const char *code)
{
  const struct sj_currency *found;

  if (!code || strlen(code) != 3)
    return -1;
  found = bsearch(code, sj_currencies, sizeof(sj_currencies) / sizeof(sj_currencies[0]),
                  sizeof(sj_currencies[0]), sj_currency_compare);
  return found ? (int)found->exponent : -1;
}

/* ------------------------------------------------------------------------ */
/* Text                                                                     */

/*
 * Decodes one UTF-8 sequence of at most `left` bytes at `s`. Returns its
 * length with *code_point set, or 0 if it is not valid UTF-8 (overlong,
 * surrogate, above U+10FFFF, truncated). The scanner's check too. Any thread.
 */
size_t sale_json__utf8_next(const unsigned char *s, size_t left, uint32_t *code_point)
{
  uint32_t value;
  size_t length;

  if (left == 0)
    return 0;
  if (s[0] < 0x80) {
    *code_point = s[0];
    return 1;
  }
  if (s[0] >= 0xc2 && s[0] <= 0xdf) {
    length = 2;
    value = s[0] & 0x1f;
  } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
    length = 3;
    value = s[0] & 0x0f;
  } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
    length = 4;
    value = s[0] & 0x07;
  } else {
    return 0;
  }
  if (left < length)
    return 0;
  for (size_t i = 1; i < length; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    value = (value << 6) | (s[i] & 0x3f);
  }
  if ((length == 3 && value < 0x800) || (length == 4 && value < 0x10000) || value > 0x10ffff ||
      (value >= 0xd800 && value <= 0xdfff))
    return 0;
  *code_point = value;
  return length;
}

static int sj_is_control(uint32_t code_point)
{
  return code_point < 0x20 || (code_point >= 0x7f && code_point <= 0x9f);
}

/*
 * Makes `text` safe to put in a response and a log line: invalid UTF-8 (a
 * snprintf cut through a character) and control characters become '?'.
 */
static void sj_sanitize(char *text)
{
  unsigned char *s = (unsigned char *)text;
  size_t left = strlen(text);

  while (left > 0) {
    uint32_t code_point = 0;
    size_t length = sale_json__utf8_next(s, left, &code_point);
    if (length == 0 || sj_is_control(code_point)) {
      *s = '?';
      length = 1;
    }
    s += length;
    left -= length;
  }
}

/* Copies at most SJ_QUOTE_MAX bytes of `value` into `out` for a message. */
static const char *sj_quote(const char *value, char *out, size_t out_size)
{
  size_t length = strnlen(value, SJ_QUOTE_MAX + 1);

  if (length > SJ_QUOTE_MAX)
    snprintf(out, out_size, "%.*s...", SJ_QUOTE_MAX, value);
  else
    snprintf(out, out_size, "%s", value);
  return out;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

/* Joins the non-empty parts with '.': "[2]" + "lines[0]" + "sku". */
static void sj_field(const struct sj_ctx *ctx, const char *key, char *out, size_t out_size)
{
  char prefix[24] = "";  /* "[2]" for array bodies, "" for a single object */
  char object[32] = "";  /* "lines[12]", "payments[0]", or "" for the sale itself */
  const char *parts[3] = {prefix, object, key ? key : ""};
  size_t used = 0;

  if (ctx->in_array)
    snprintf(prefix, sizeof(prefix), "[%zu]", ctx->sale_index);
  if (ctx->object_name)
    snprintf(object, sizeof(object), "%s[%zu]", ctx->object_name, ctx->object_index);
  out[0] = '\0';
  for (size_t i = 0; i < 3; i++) {
    int written;
    if (parts[i][0] == '\0')
      continue;
    written = snprintf(out + used, out_size - used, "%s%s", used ? "." : "", parts[i]);
    if (written < 0 || (size_t)written >= out_size - used)
      return; /* truncated: sj_sanitize repairs a cut character */
    used += (size_t)written;
  }
}

/*
 * Records the problem with `key` of the current object (NULL: the object
 * itself). Only the first problem is kept: callers stop at the first -1.
 */
__attribute__((format(printf, 3, 4))) static int sj_fail(struct sj_ctx *ctx, const char *key,
                                                         const char *format, ...)
{
  va_list args;

  sj_field(ctx, key, ctx->error->field, sizeof(ctx->error->field));
  va_start(args, format);
  vsnprintf(ctx->error->message, sizeof(ctx->error->message), format, args);
  va_end(args);
  sj_sanitize(ctx->error->field);
  sj_sanitize(ctx->error->message);
  return -1;
}

static const char *sj_type_name(const sj_value *value)
{
  switch ((enum sale_json_type)value->type) {
  case SALE_JSON_OBJECT:
    return "a JSON object";
  case SALE_JSON_ARRAY:
    return "an array";
  case SALE_JSON_STRING:
    return "a string";
  case SALE_JSON_INTEGER:
  case SALE_JSON_REAL:
    return "a JSON number";
  case SALE_JSON_TRUE:
  case SALE_JSON_FALSE:
    return "a boolean";
  case SALE_JSON_NULL:
    return "null";
  }
  return "an unknown JSON type";
}

/* ------------------------------------------------------------------------ */
/* Money                                                                    */

/*
 * Scans a decimal string into minor units. On SJ_MONEY_DECIMALS,
 * *decimals_seen says how many decimals the text has, for the message.
 */
static enum sj_money_status sj_money_scan(const char *text, unsigned exponent, long long *minor,
                                          const char **why, unsigned *decimals_seen)
{
  const char *p = text;
  int negative = 0;
  unsigned integer_digits = 0;
  unsigned decimals = 0;
  long long value = 0;

  *decimals_seen = 0;
  if (exponent > SJ_EXPONENT_MAX) {
    *why = "cannot be read: the currency exponent is out of range";
    return SJ_MONEY_SYNTAX;
  }
  if (*p == '\0') {
    *why = "is empty";
    return SJ_MONEY_SYNTAX;
  }
  if (*p == '+') {
    *why = "must not start with '+'";
    return SJ_MONEY_SYNTAX;
  }
  if (*p == '-') {
    negative = 1;
    p++;
  }
  for (; *p >= '0' && *p <= '9'; p++, integer_digits++) {
    if (__builtin_mul_overflow(value, 10, &value) ||
        __builtin_add_overflow(value, *p - '0', &value)) {
      *why = "is too large";
      return SJ_MONEY_RANGE;
    }
  }
  if (integer_digits == 0 && *p == '\0') {
    *why = "has no digits";
    return SJ_MONEY_SYNTAX;
  }
  if (integer_digits == 0 && *p == '.') {
    *why = "needs a digit before the decimal point";
    return SJ_MONEY_SYNTAX;
  }
  if (*p == '.') {
    p++;
    for (; *p >= '0' && *p <= '9'; p++, decimals++) {
      /* Count every decimal so the message can say how many there were. */
      if (decimals >= exponent)
        continue;
      if (__builtin_mul_overflow(value, 10, &value) ||
          __builtin_add_overflow(value, *p - '0', &value)) {
        *why = "is too large";
        return SJ_MONEY_RANGE;
      }
    }
    if (decimals == 0 && *p == '\0') {
      *why = "needs a digit after the decimal point";
      return SJ_MONEY_SYNTAX;
    }
  }
  if (*p != '\0') {
    if (*p == 'e' || *p == 'E')
      *why = "must not use exponent notation";
    else if (*p == ',' || *p == ' ' || *p == '_' || *p == '\'')
      *why = "must not contain thousands separators, spaces or decimal commas";
    else
      *why = "may contain only digits, a leading '-' and one '.'";
    return SJ_MONEY_SYNTAX;
  }
  if (decimals > exponent) {
    *decimals_seen = decimals;
    *why = "has more decimals than the currency allows";
    return SJ_MONEY_DECIMALS;
  }
  for (unsigned i = decimals; i < exponent; i++) {
    if (__builtin_mul_overflow(value, 10, &value)) {
      *why = "is too large";
      return SJ_MONEY_RANGE;
    }
  }
  /* value <= LLONG_MAX here, so its negation cannot overflow. */
  *minor = negative ? -value : value;
  return SJ_MONEY_OK;
}

/*
 * Parses a decimal money string into minor units of a currency with
 * `exponent` decimals: "12.5" with exponent 2 is 1250. More decimals than
 * `exponent`, exponent notation, a leading '+', separators or a value out of
 * int64 range fail. Returns 0 with *minor set, or -1 with *why set to a
 * static phrase that reads after the quoted value ("is too large"). Pure.
 */
int sale_json_parse_money(const char *text, unsigned exponent, long long *minor,
                          const char **why)
{
  unsigned decimals_seen;
  const char *reason = NULL;
  int rc = -1;

  if (!text || !minor) {
    reason = "is missing";
    goto out;
  }
  if (sj_money_scan(text, exponent, minor, &reason, &decimals_seen) != SJ_MONEY_OK)
    goto out;
  rc = 0;
out:
  if (why)
    *why = reason;
  return rc;
}

/* "12.50" for EUR, "1250" for JPY, "12.500" for BHD. */
static const char *sj_money_example(unsigned exponent)
{
  switch (exponent) {
  case 0:
    return "\"1250\"";
  case 3:
    return "\"12.500\"";
  case 4:
    return "\"12.5000\"";
  default:
    return "\"12.50\"";
  }
}

/*
 * Reads money field `key` of `object` in the sale's currency. An absent
 * optional field is 0. SJ_MONEY_POSITIVE demands > 0, otherwise >= 0.
 */
static int sj_get_money(struct sj_ctx *ctx, const sj_value *object, const char *key,
                        int required, enum sj_money_sign sign, int64_t *out)
{
  const sj_value *value = sale_json__object_get(ctx->tape, object, key);
  char quoted[SJ_QUOTE_MAX + 8];
  const char *text;
  const char *why = NULL;
  unsigned decimals_seen = 0;
  long long minor = 0;
  enum sj_money_status status;

  *out = 0;
  if (!value) {
    if (required)
      return sj_fail(ctx, key, "\"%s\" is required: a decimal string like %s", key,
                     sj_money_example(ctx->exponent));
    return 0;
  }
  if (value->type != SALE_JSON_STRING)
    return sj_fail(ctx, key, "\"%s\" must be a decimal string like %s, not %s", key,
                   sj_money_example(ctx->exponent), sj_type_name(value));
  text = value->as.text;
  status = sj_money_scan(text, ctx->exponent, &minor, &why, &decimals_seen);
  if (status == SJ_MONEY_OK && minor >= 0 && (sign != SJ_MONEY_POSITIVE || minor > 0)) {
    *out = minor;
    return 0;
  }
  /* Quoted only for the message: a valid amount costs no formatting. */
  sj_quote(text, quoted, sizeof(quoted));
  if (status == SJ_MONEY_DECIMALS) {
    if (ctx->exponent == 0)
      return sj_fail(ctx, key, "%s has no decimals; \"%s\" has %u", ctx->currency, quoted,
                     decimals_seen);
    return sj_fail(ctx, key, "%s has %u decimal%s; \"%s\" has %u", ctx->currency, ctx->exponent,
                   ctx->exponent == 1 ? "" : "s", quoted, decimals_seen);
  }
  if (status == SJ_MONEY_RANGE)
    return sj_fail(ctx, key, "\"%s\" \"%s\" is too large for this agent (64-bit minor units)",
                   key, quoted);
  if (status != SJ_MONEY_OK)
    return sj_fail(ctx, key, "\"%s\" \"%s\" %s; expected a decimal string like %s", key, quoted,
                   why, sj_money_example(ctx->exponent));
  if (sign == SJ_MONEY_POSITIVE && minor <= 0)
    return sj_fail(ctx, key, "\"%s\" must be more than zero, not \"%s\"", key, quoted);
  if (minor < 0)
    return sj_fail(ctx, key, "\"%s\" must not be negative, not \"%s\"", key, quoted);
  *out = minor;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* RFC 3339                                                                 */

/* Reads exactly `count` ASCII digits at `p`; returns -1 if any is not one. */
static int sj_digits(const char *p, unsigned count, int *value)
{
  int result = 0;

  for (unsigned i = 0; i < count; i++) {
    if (p[i] < '0' || p[i] > '9')
      return -1;
    result = result * 10 + (p[i] - '0');
  }
  *value = result;
  return 0;
}

static int sj_is_leap_year(int year)
{
  return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int sj_days_in_month(int year, int month)
{
  static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

  return month == 2 && sj_is_leap_year(year) ? 29 : days[month - 1];
}

/*
 * Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant,
 * "chrono-compatible low-level date algorithms", days_from_civil), so that
 * neither the TZ environment nor timegm() is involved.
 */
static long long sj_days_from_civil(long long year, unsigned month, unsigned day)
{
  long long era;
  unsigned year_of_era, day_of_year, day_of_era;

  year -= month <= 2;
  era = (year >= 0 ? year : year - 399) / 400;
  year_of_era = (unsigned)(year - era * 400);
  day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + (long long)day_of_era - 719468;
}

/*
 * Parses an RFC 3339 date-time with a mandatory offset:
 * YYYY-MM-DD('T'|'t')HH:MM:SS[.1-9 digits]('Z'|'z'|('+'|'-')HH:MM). A leap
 * second (:60) is rejected; the fraction is truncated to milliseconds; the
 * offset must lie within +-18:00. Returns 0 with *epoch_ms (UTC) and
 * *offset_minutes (local minus UTC), or -1 with *why set to a static phrase
 * that reads after the quoted value ("needs a UTC offset such as +01:00 or
 * Z"). Pure; any thread.
 */
int sale_json_parse_time(const char *text, long long *epoch_ms, int *offset_minutes,
                         const char **why)
{
  const char *reason = NULL;
  const char *p;
  int year, month, day, hour, minute, second;
  int offset_hours = 0, offset_mins = 0, offset_total = 0;
  long long millis = 0;
  unsigned fraction_digits = 0;
  int rc = -1;

  if (!text || !epoch_ms || !offset_minutes) {
    reason = "is missing";
    goto out;
  }
  if (sj_digits(text, 4, &year) || text[4] != '-' || sj_digits(text + 5, 2, &month) ||
      text[7] != '-' || sj_digits(text + 8, 2, &day)) {
    reason = "is not in the form YYYY-MM-DDTHH:MM:SS+hh:mm";
    goto out;
  }
  if (month < 1 || month > 12) {
    reason = "has a month outside 01-12";
    goto out;
  }
  if (day < 1 || day > sj_days_in_month(year, month)) {
    reason = month == 2 && day == 29
                 ? "names February 29 of a year that is not a leap year"
                 : "names a day that does not exist in that month";
    goto out;
  }
  if (text[10] == ' ') {
    reason = "must separate date and time with 'T', not a space";
    goto out;
  }
  if (text[10] == '\0') {
    reason = "needs a time of day and UTC offset, like 2026-11-21T18:42:05+01:00";
    goto out;
  }
  if ((text[10] != 'T' && text[10] != 't') || sj_digits(text + 11, 2, &hour) || text[13] != ':' ||
      sj_digits(text + 14, 2, &minute) || text[16] != ':' || sj_digits(text + 17, 2, &second)) {
    reason = "is not in the form YYYY-MM-DDTHH:MM:SS+hh:mm";
    goto out;
  }
  if (hour > 23) {
    reason = "has an hour outside 00-23";
    goto out;
  }
  if (minute > 59) {
    reason = "has a minute outside 00-59";
    goto out;
  }
  if (second == 60) {
    reason = "has a leap second (:60), which is not accepted; send :59 instead";
    goto out;
  }
  if (second > 59) {
    reason = "has a second outside 00-59";
    goto out;
  }
  p = text + 19;
  if (*p == '.') {
    p++;
    for (; *p >= '0' && *p <= '9'; p++, fraction_digits++) {
      /* Digits past the third are truncated, never rounded up. */
      if (fraction_digits < 3)
        millis = millis * 10 + (*p - '0');
    }
    if (fraction_digits == 0) {
      reason = "needs digits after the '.' of the seconds";
      goto out;
    }
    if (fraction_digits > SJ_FRACTION_DIGITS_MAX) {
      reason = "has more than 9 digits of fractional seconds";
      goto out;
    }
    for (unsigned i = fraction_digits; i < 3; i++)
      millis *= 10;
  }
  if (*p == '\0') {
    reason = "needs a UTC offset such as +01:00 or Z";
    goto out;
  }
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    if (sj_digits(p + 1, 2, &offset_hours) || p[3] != ':' || sj_digits(p + 4, 2, &offset_mins)) {
      reason = "has a UTC offset that is not +hh:mm, -hh:mm or Z";
      goto out;
    }
    if (offset_mins > 59) {
      reason = "has UTC offset minutes outside 00-59";
      goto out;
    }
    offset_total = offset_hours * 60 + offset_mins;
    if (offset_total > SJ_OFFSET_MINUTES_MAX) {
      reason = "has a UTC offset beyond +-18:00";
      goto out;
    }
    if (*p == '-')
      offset_total = -offset_total;
    p += 6;
  } else {
    reason = "has a UTC offset that is not +hh:mm, -hh:mm or Z";
    goto out;
  }
  if (*p != '\0') {
    reason = "has text after the UTC offset";
    goto out;
  }
  /* Local time minus the offset is UTC; with years 0000-9999 nothing overflows. */
  *epoch_ms = (sj_days_from_civil(year, (unsigned)month, (unsigned)day) * 86400LL +
               hour * 3600LL + minute * 60LL + second - offset_total * 60LL) *
                  1000LL +
              millis;
  *offset_minutes = offset_total;
  rc = 0;
out:
  if (why)
    *why = reason;
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Fields                                                                   */

/*
 * Reads string field `key`. Absent and optional: 0 with *text NULL. Absent
 * and required, or not a string: -1. `example` goes into the message.
 */
static int sj_get_string(struct sj_ctx *ctx, const sj_value *object, const char *key,
                         int required, const char *example, const char **text, size_t *length)
{
  const sj_value *value = sale_json__object_get(ctx->tape, object, key);

  *text = NULL;
  *length = 0;
  if (!value) {
    if (required)
      return sj_fail(ctx, key, "\"%s\" is required: a string like %s", key, example);
    return 0;
  }
  if (value->type != SALE_JSON_STRING)
    return sj_fail(ctx, key, "\"%s\" must be a string like %s, not %s%s", key, example,
                   sj_type_name(value),
                   value->type == SALE_JSON_NULL && !required ? "; leave the field out instead"
                                                              : "");
  *text = value->as.text;
  *length = value->length;
  return 0;
}

static int sj_is_id_char(unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

/* An id: 1-64 of [A-Za-z0-9._:-], copied into `out` (SALE_ID_MAX + 1). */
static int sj_get_id(struct sj_ctx *ctx, const sj_value *object, const char *key, int required,
                     char *out)
{
  const char *text;
  size_t length;
  char quoted[SJ_QUOTE_MAX + 8];

  out[0] = '\0';
  if (sj_get_string(ctx, object, key, required, "\"T1-000123\"", &text, &length))
    return -1;
  if (!text)
    return 0;
  if (length == 0)
    return sj_fail(ctx, key, "\"%s\" is empty; it needs 1 to %d of A-Z a-z 0-9 . _ : -", key,
                   SALE_ID_MAX);
  if (length > SALE_ID_MAX)
    return sj_fail(ctx, key, "\"%s\" is %zu bytes long; at most %d are allowed", key, length,
                   SALE_ID_MAX);
  for (size_t i = 0; i < length; i++) {
    unsigned char c = (unsigned char)text[i];
    if (sj_is_id_char(c))
      continue;
    sj_quote(text, quoted, sizeof(quoted));
    if (c >= ' ' && c < 0x7f)
      return sj_fail(ctx, key,
                     "\"%s\" \"%s\" has '%c' at byte %zu; only A-Z a-z 0-9 . _ : - are allowed",
                     key, quoted, c, i);
    return sj_fail(ctx, key,
                   "\"%s\" \"%s\" has byte 0x%02x at byte %zu; only A-Z a-z 0-9 . _ : - are "
                   "allowed",
                   key, quoted, c, i);
  }
  memcpy(out, text, length + 1);
  return 0;
}

/* Free text: 1-64 bytes of UTF-8 without control characters, into `out`. */
static int sj_get_text(struct sj_ctx *ctx, const sj_value *object, const char *key, int required,
                       const char *example, char *out)
{
  const char *text;
  size_t length;
  size_t offset = 0;

  out[0] = '\0';
  if (sj_get_string(ctx, object, key, required, example, &text, &length))
    return -1;
  if (!text)
    return 0;
  if (length == 0)
    return sj_fail(ctx, key, "\"%s\" is empty; send 1 to %d bytes of text or leave it out", key,
                   SALE_TEXT_MAX);
  if (length > SALE_TEXT_MAX)
    return sj_fail(ctx, key, "\"%s\" is %zu bytes long; at most %d are allowed", key, length,
                   SALE_TEXT_MAX);
  /* jansson already guarantees UTF-8, but this is the contract's own rule. */
  while (offset < length) {
    uint32_t code_point = 0;
    size_t step = sale_json__utf8_next((const unsigned char *)text + offset, length - offset, &code_point);
    if (step == 0)
      return sj_fail(ctx, key, "\"%s\" is not valid UTF-8 at byte %zu", key, offset);
    if (sj_is_control(code_point))
      return sj_fail(ctx, key,
                     "\"%s\" has control character U+%04X at byte %zu; send printable text", key,
                     (unsigned)code_point, offset);
    offset += step;
  }
  memcpy(out, text, length + 1);
  return 0;
}

/* Every key of `object` must be in `allowed` (NULL-terminated). */
static int sj_check_keys(struct sj_ctx *ctx, const sj_value *object, const char *const *allowed,
                         const char *allowed_text)
{
  const sj_value *key = object + 1;

  /* In document order, the order jansson iterated in: the first unknown key is named. */
  for (uint32_t member = 0; member < object->count; member++) {
    size_t i = 0;
    while (allowed[i] &&
           (allowed[i][0] != key->as.text[0] || strcmp(allowed[i], key->as.text) != 0))
      i++;
    if (!allowed[i])
      return sj_fail(ctx, key->as.text, "unknown field (allowed here: %s)", allowed_text);
    key = &ctx->tape->values[key[1].next];
  }
  return 0;
}

/* Reads an array field with `min`..`max` entries; *array NULL if absent. */
static int sj_get_array(struct sj_ctx *ctx, const sj_value *object, const char *key, size_t min,
                        size_t max, const char *what, const sj_value **array)
{
  const sj_value *value = sale_json__object_get(ctx->tape, object, key);
  size_t size;

  *array = NULL;
  if (!value)
    return sj_fail(ctx, key, "\"%s\" is required: an array of %zu to %zu %s", key, min, max,
                   what);
  if (value->type != SALE_JSON_ARRAY)
    return sj_fail(ctx, key, "\"%s\" must be an array of %s, not %s", key, what,
                   sj_type_name(value));
  size = value->count;
  if (size < min)
    return sj_fail(ctx, key, "\"%s\" is empty; a sale needs at least %zu of its %s", key, min,
                   what);
  if (size > max)
    return sj_fail(ctx, key, "\"%s\" has %zu %s; at most %zu are allowed per sale", key, size,
                   what, max);
  *array = value;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* One sale                                                                 */

static const char *const sj_sale_keys[] = {
    "sale_id",          "kind",          "original_sale_id", "terminal_id",
    "cashier_id",       "channel",       "delivery_partner", "business_time",
    "currency",         "lines",         "payments",         "total",
    NULL,
};
static const char sj_sale_keys_text[] =
    "sale_id, kind, original_sale_id, terminal_id, cashier_id, channel, delivery_partner, "
    "business_time, currency, lines, payments, total";
static const char *const sj_line_keys[] = {"sku",      "qty", "unit_price",
                                           "discount", "promo_id", "tax", NULL};
static const char sj_line_keys_text[] = "sku, qty, unit_price, discount, promo_id, tax";
static const char *const sj_payment_keys[] = {"method", "amount", NULL};
static const char sj_payment_keys_text[] = "method, amount";

static int sj_parse_kind(struct sj_ctx *ctx, const sj_value *object, struct sale *sale)
{
  const char *text;
  size_t length;

  if (sj_get_string(ctx, object, "kind", 1, "\"sale\"", &text, &length))
    return -1;
  if (strcmp(text, "sale") == 0)
    sale->kind = SALE_KIND_SALE;
  else if (strcmp(text, "refund") == 0)
    sale->kind = SALE_KIND_REFUND;
  else if (strcmp(text, "void") == 0)
    sale->kind = SALE_KIND_VOID;
  else {
    char quoted[SJ_QUOTE_MAX + 8];
    return sj_fail(ctx, "kind", "\"kind\" is \"%s\"; expected \"sale\", \"refund\" or \"void\"",
                   sj_quote(text, quoted, sizeof(quoted)));
  }
  return 0;
}

static int sj_parse_channel(struct sj_ctx *ctx, const sj_value *object, struct sale *sale)
{
  const char *text;
  size_t length;

  sale->channel = SALE_CHANNEL_POS;
  if (sj_get_string(ctx, object, "channel", 0, "\"pos\"", &text, &length))
    return -1;
  if (!text)
    return 0;
  if (strcmp(text, "pos") == 0)
    sale->channel = SALE_CHANNEL_POS;
  else if (strcmp(text, "online") == 0)
    sale->channel = SALE_CHANNEL_ONLINE;
  else if (strcmp(text, "delivery") == 0)
    sale->channel = SALE_CHANNEL_DELIVERY;
  else if (strcmp(text, "pickup") == 0)
    sale->channel = SALE_CHANNEL_PICKUP;
  else {
    char quoted[SJ_QUOTE_MAX + 8];
    return sj_fail(ctx, "channel",
                   "\"channel\" is \"%s\"; expected \"pos\", \"online\", \"delivery\" or "
                   "\"pickup\" (or leave it out for pos)",
                   sj_quote(text, quoted, sizeof(quoted)));
  }
  return 0;
}

static int sj_parse_time_field(struct sj_ctx *ctx, const sj_value *object, struct sale *sale)
{
  const char *text;
  const char *why = NULL;
  size_t length;
  long long epoch_ms = 0;
  int offset_minutes = 0;
  int year = 0;
  char quoted[SJ_QUOTE_MAX + 8];

  if (sj_get_string(ctx, object, "business_time", 1, "\"2026-11-21T18:42:05+01:00\"", &text,
                    &length))
    return -1;
  /* The value is quoted only into a message: a valid one costs no formatting. */
  if (length > SALE_TIME_TEXT_MAX)
    return sj_fail(ctx, "business_time",
                   "business_time \"%s\" is %zu bytes long; an RFC 3339 time like "
                   "\"2026-11-21T18:42:05+01:00\" is at most %d",
                   sj_quote(text, quoted, sizeof(quoted)), length, SALE_TIME_TEXT_MAX);
  if (strlen(text) != length || sale_json_parse_time(text, &epoch_ms, &offset_minutes, &why))
    return sj_fail(ctx, "business_time",
                   "business_time \"%s\" %s; expected RFC 3339 like \"2026-11-21T18:42:05+01:00\"",
                   sj_quote(text, quoted, sizeof(quoted)), why ? why : "has a NUL byte");
  /* The parse succeeded, so the first four bytes are the local year. */
  year = (text[0] - '0') * 1000 + (text[1] - '0') * 100 + (text[2] - '0') * 10 + (text[3] - '0');
  if (year < SJ_YEAR_MIN || year > SJ_YEAR_MAX)
    return sj_fail(ctx, "business_time",
                   "business_time \"%s\" is in year %d; expected %d to %d (check the terminal "
                   "clock)",
                   sj_quote(text, quoted, sizeof(quoted)), year, SJ_YEAR_MIN, SJ_YEAR_MAX);
  memcpy(sale->business_time, text, length + 1);
  sale->business_time_ms = epoch_ms;
  sale->utc_offset_minutes = offset_minutes;
  return 0;
}

static int sj_parse_currency(struct sj_ctx *ctx, const sj_value *object, struct sale *sale)
{
  const char *text;
  size_t length;
  int exponent;
  char quoted[SJ_QUOTE_MAX + 8];

  if (sj_get_string(ctx, object, "currency", 1, "\"EUR\"", &text, &length))
    return -1;
  /* The value is quoted only into a message: a valid one costs no formatting. */
  if (length != 3 || text[0] < 'A' || text[0] > 'Z' || text[1] < 'A' || text[1] > 'Z' ||
      text[2] < 'A' || text[2] > 'Z')
    return sj_fail(ctx, "currency",
                   "\"currency\" \"%s\" must be an ISO 4217 code of 3 uppercase letters, like "
                   "\"EUR\"",
                   sj_quote(text, quoted, sizeof(quoted)));
  exponent = sale_json_currency_exponent(text);
  if (exponent < 0)
    return sj_fail(ctx, "currency",
                   "\"currency\" \"%s\" is not an active ISO 4217 currency code; expected one "
                   "like \"EUR\" or \"USD\"",
                   sj_quote(text, quoted, sizeof(quoted)));
  memcpy(sale->currency, text, 4);
  sale->currency_exponent = (unsigned)exponent;
  memcpy(ctx->currency, text, 4);
  ctx->exponent = (unsigned)exponent;
  return 0;
}

/* Adds `amount` to *sum; -1 on int64 overflow. */
static int sj_add(int64_t *sum, int64_t amount)
{
  return __builtin_add_overflow(*sum, amount, sum) ? -1 : 0;
}

static int sj_parse_line(struct sj_ctx *ctx, const sj_value *object, struct sale_line *line,
                         int64_t *line_amount)
{
  const sj_value *qty;
  int64_t gross, amount;
  char gross_text[SJ_MONEY_TEXT_MAX], discount_text[SJ_MONEY_TEXT_MAX];

  if (object->type != SALE_JSON_OBJECT)
    return sj_fail(ctx, NULL, "each line must be a JSON object, not %s", sj_type_name(object));
  if (sj_check_keys(ctx, object, sj_line_keys, sj_line_keys_text) ||
      sj_get_text(ctx, object, "sku", 1, "\"PIZZA-MARG-L\"", line->sku))
    return -1;

  qty = sale_json__object_get(ctx->tape, object, "qty");
  if (!qty)
    return sj_fail(ctx, "qty", "\"qty\" is required: a JSON integer like 2");
  if (qty->type != SALE_JSON_INTEGER)
    return sj_fail(ctx, "qty", "\"qty\" must be a JSON integer like 2, not %s%s",
                   qty->type == SALE_JSON_REAL ? "a number with a fraction or exponent"
                                               : sj_type_name(qty),
                   qty->type == SALE_JSON_STRING ? " (no quotes)" : "");
  if (qty->as.integer < 1 || qty->as.integer > SJ_QTY_MAX)
    return sj_fail(ctx, "qty", "\"qty\" is %lld; expected 1 to %d", qty->as.integer,
                   SJ_QTY_MAX);
  line->qty = qty->as.integer;

  if (sj_get_money(ctx, object, "unit_price", 1, SJ_MONEY_NOT_NEGATIVE, &line->unit_price) ||
      sj_get_money(ctx, object, "discount", 0, SJ_MONEY_NOT_NEGATIVE, &line->discount) ||
      sj_get_text(ctx, object, "promo_id", 0, "\"TPR-42\"", line->promo_id) ||
      sj_get_money(ctx, object, "tax", 0, SJ_MONEY_NOT_NEGATIVE, &line->tax))
    return -1;

  if (__builtin_mul_overflow(line->qty, line->unit_price, &gross))
    return sj_fail(ctx, "unit_price",
                   "qty x unit_price is too large for this agent (64-bit minor units)");
  if (line->discount > gross)
    return sj_fail(ctx, "discount", "\"discount\" %s is more than qty x unit_price = %s",
                   proto_money_format(line->discount, ctx->exponent, discount_text,
                                 sizeof(discount_text)),
                   proto_money_format(gross, ctx->exponent, gross_text, sizeof(gross_text)));
  amount = gross - line->discount; /* 0 <= discount <= gross: no overflow */
  if (sj_add(&amount, line->tax))
    return sj_fail(ctx, "tax",
                   "qty x unit_price - discount + tax is too large for this agent (64-bit minor "
                   "units)");
  *line_amount = amount;
  return 0;
}

static int sj_parse_lines(struct sj_ctx *ctx, const sj_value *object, struct sale *sale,
                          int64_t *lines_total)
{
  const sj_value *lines, *line;
  size_t count;
  int rc = -1;

  *lines_total = 0;
  if (sj_get_array(ctx, object, "lines", 1, SALE_LINES_MAX, "lines", &lines))
    goto out;
  count = lines->count;
  sale->lines = calloc(count, sizeof(*sale->lines));
  if (!sale->lines) {
    sj_fail(ctx, "lines", "the agent ran out of memory reading %zu lines; retry later", count);
    goto out;
  }
  sale->line_count = count;
  ctx->object_name = "lines";
  line = lines + 1;
  for (size_t i = 0; i < count; i++) {
    int64_t amount = 0;
    ctx->object_index = i;
    if (sj_parse_line(ctx, line, &sale->lines[i], &amount))
      goto out;
    line = &ctx->tape->values[line->next];
    if (sj_add(lines_total, amount)) {
      sj_fail(ctx, NULL, "the lines up to this one add up to more than this agent can hold "
                         "(64-bit minor units)");
      goto out;
    }
  }
  rc = 0;
out:
  ctx->object_name = NULL;
  return rc;
}

static int sj_parse_payments(struct sj_ctx *ctx, const sj_value *object, struct sale *sale,
                             int64_t *payments_total)
{
  const sj_value *payments, *payment;
  size_t count;
  int rc = -1;

  *payments_total = 0;
  /* Empty only for a sale that costs nothing (a free pizza, a staff meal):
   * checked against the total once it is read. */
  if (sj_get_array(ctx, object, "payments", 0, SALE_PAYMENTS_MAX, "payments", &payments))
    goto out;
  count = payments->count;
  sale->payments = calloc(count ? count : 1, sizeof(*sale->payments));
  if (!sale->payments) {
    sj_fail(ctx, "payments", "the agent ran out of memory reading %zu payments; retry later",
            count);
    goto out;
  }
  sale->payment_count = count;
  ctx->object_name = "payments";
  payment = payments + 1;
  for (size_t i = 0; i < count; i++, payment = &ctx->tape->values[payment->next]) {
    struct sale_payment *out_payment = &sale->payments[i];
    ctx->object_index = i;
    if (payment->type != SALE_JSON_OBJECT) {
      sj_fail(ctx, NULL, "each payment must be a JSON object, not %s", sj_type_name(payment));
      goto out;
    }
    if (sj_check_keys(ctx, payment, sj_payment_keys, sj_payment_keys_text) ||
        sj_get_text(ctx, payment, "method", 1, "\"card\"", out_payment->method) ||
        sj_get_money(ctx, payment, "amount", 1, SJ_MONEY_POSITIVE, &out_payment->amount))
      goto out;
    if (sj_add(payments_total, out_payment->amount)) {
      sj_fail(ctx, "amount", "the payments up to this one add up to more than this agent can "
                             "hold (64-bit minor units)");
      goto out;
    }
  }
  rc = 0;
out:
  ctx->object_name = NULL;
  return rc;
}

/*
 * Validates one sale object into `sale` (zeroed by the caller). On error
 * `sale` may hold lines/payments; the caller frees them with sale_clear.
 */
static int sj_parse_sale(struct sj_ctx *ctx, const sj_value *object, struct sale *sale)
{
  const char *partner_text;
  size_t partner_length;
  int64_t lines_total = 0, payments_total = 0;
  char total_text[SJ_MONEY_TEXT_MAX], sum_text[SJ_MONEY_TEXT_MAX];

  if (object->type != SALE_JSON_OBJECT)
    return sj_fail(ctx, NULL, "each sale must be a JSON object, not %s", sj_type_name(object));
  if (sj_check_keys(ctx, object, sj_sale_keys, sj_sale_keys_text) ||
      sj_get_id(ctx, object, "sale_id", 1, sale->sale_id) || sj_parse_kind(ctx, object, sale) ||
      sj_get_id(ctx, object, "original_sale_id", 0, sale->original_sale_id))
    return -1;
  if (sale->kind == SALE_KIND_SALE && sale->original_sale_id[0])
    return sj_fail(ctx, "original_sale_id",
                   "\"original_sale_id\" is only for refunds and voids; leave it out or set "
                   "\"kind\" to \"refund\" or \"void\"");
  if (sale->kind != SALE_KIND_SALE && !sale->original_sale_id[0])
    return sj_fail(ctx, "original_sale_id",
                   "\"original_sale_id\" is required for a %s: the sale_id of the sale it "
                   "reverses",
                   sale_kind_name(sale->kind));
  if (sale->kind != SALE_KIND_SALE && strcmp(sale->original_sale_id, sale->sale_id) == 0)
    return sj_fail(ctx, "original_sale_id",
                   "\"original_sale_id\" is this %s's own sale_id \"%s\"; it must name the sale "
                   "being reversed",
                   sale_kind_name(sale->kind), sale->sale_id);

  if (sj_get_text(ctx, object, "terminal_id", 1, "\"T1\"", sale->terminal_id) ||
      sj_get_text(ctx, object, "cashier_id", 0, "\"E042\"", sale->cashier_id) ||
      sj_parse_channel(ctx, object, sale))
    return -1;
  if (sj_get_string(ctx, object, "delivery_partner", 0, "\"PartnerName\"", &partner_text,
                    &partner_length))
    return -1;
  if (partner_text && sale->channel != SALE_CHANNEL_DELIVERY)
    return sj_fail(ctx, "delivery_partner",
                   "\"delivery_partner\" is only for \"channel\": \"delivery\", and this sale's "
                   "channel is \"%s\"",
                   sale_channel_name(sale->channel));
  if (sj_get_text(ctx, object, "delivery_partner", 0, "\"PartnerName\"", sale->delivery_partner) ||
      sj_parse_time_field(ctx, object, sale) || sj_parse_currency(ctx, object, sale) ||
      sj_parse_lines(ctx, object, sale, &lines_total) ||
      sj_parse_payments(ctx, object, sale, &payments_total) ||
      sj_get_money(ctx, object, "total", 1, SJ_MONEY_NOT_NEGATIVE, &sale->total))
    return -1;

  if (lines_total != sale->total)
    return sj_fail(ctx, "total",
                   "total is %s but the lines add up to %s (qty x unit_price - discount + tax)",
                   proto_money_format(sale->total, ctx->exponent, total_text, sizeof(total_text)),
                   proto_money_format(lines_total, ctx->exponent, sum_text, sizeof(sum_text)));
  if (sale->payment_count == 0 && sale->total != 0)
    return sj_fail(ctx, "payments", "\"payments\" is empty: a sale of %s needs at least one "
                   "payment (only a sale with a total of 0 may have none)",
                   proto_money_format(sale->total, ctx->exponent, total_text, sizeof(total_text)));
  if (payments_total != sale->total)
    return sj_fail(ctx, "payments", "the payments add up to %s but total is %s",
                   proto_money_format(payments_total, ctx->exponent, sum_text, sizeof(sum_text)),
                   proto_money_format(sale->total, ctx->exponent, total_text, sizeof(total_text)));
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The body                                                                 */

/* The array form's size: 0 or above max_sales is refused (-1, error set). */
static int sj_check_sale_count(struct sj_ctx *ctx, size_t count, size_t max_sales)
{
  if (count == 0)
    return sj_fail(ctx, NULL, "the body is an empty array; send one sale object or an array of 1 "
                              "to %zu sales",
                   max_sales);
  if (count > max_sales)
    return sj_fail(ctx, NULL, "the body has %zu sales; at most %zu are accepted per request, so "
                              "send them in smaller batches",
                   count, max_sales);
  return 0;
}

/*
 * The body the scanner did not take (or ran out of memory on: it has freed
 * what it had) is jansson's, as before there was a scanner: its syntax error
 * text, then the sale count, checked on jansson's tree before that is
 * flattened onto `tape` (ctx->tape, which the rules only read), so that a
 * huge array never has the tree and a tape in memory at once. 0, or -1 with
 * the error set.
 */
static int sj_parse_with_jansson(struct sj_ctx *ctx, struct sale_json_tape *tape,
                                 const char *body, size_t length, size_t max_sales)
{
  json_error_t json_error;
  json_t *root = json_loadb(body, length, JSON_REJECT_DUPLICATES, &json_error);

  if (!root)
    return sj_fail(ctx, NULL, "the body is not valid JSON (line %d, column %d): %s",
                   json_error.line, json_error.column, json_error.text);
  if (json_is_array(root) && sj_check_sale_count(ctx, json_array_size(root), max_sales)) {
    json_decref(root);
    return -1;
  }
  if (sale_json__tape_from_json(tape, root) != SALE_JSON_SCAN_OK)
    return sj_fail(ctx, NULL, "the agent ran out of memory reading a body of %zu bytes; retry "
                              "later",
                   length);
  return 0;
}

/*
 * Parses and validates a POS request body (see sale_json.h for the rules).
 * All-or-nothing: on success returns 0 and *sales is a calloc'd array of
 * *count sales that the caller frees with sale_array_free(); on the first
 * problem returns -1 with *sales NULL, *count 0, `error` filled in and
 * nothing left allocated. `body` is borrowed and need not be NUL-terminated.
 * max_sales bounds the array form (0 is treated as 1); a single object is
 * always one sale. Any thread; no shared state.
 */
int sale_json_parse(const char *body, size_t length, size_t max_sales, struct sale **sales,
                    size_t *count, int *is_array, struct sale_json_error *error)
{
  struct sale_json_error scratch;
  struct sj_ctx ctx;
  struct sale_json_tape tape; /* on the stack: a one-sale body allocates nothing for it */
  int scan_status;
  const sj_value *sale_value;
  struct sale *parsed = NULL;
  size_t parsed_count = 0;
  int array_form = 0;
  int rc = -1;

  memset(&ctx, 0, sizeof(ctx));
  sale_json__tape_init(&tape);
  ctx.tape = &tape;
  ctx.error = error ? error : &scratch;
  memset(ctx.error, 0, sizeof(*ctx.error));
  if (sales)
    *sales = NULL;
  if (count)
    *count = 0;
  if (is_array)
    *is_array = 0;
  if (max_sales == 0)
    max_sales = 1;
  if (!sales || !count) {
    sj_fail(&ctx, NULL, "internal error: sale_json_parse needs somewhere to put the sales");
    goto out;
  }
  if (!body || length == 0) {
    sj_fail(&ctx, NULL, "the request body is empty; send one sale object or an array of 1 to "
                        "%zu sales",
            max_sales);
    goto out;
  }

  /* The common body is scanned without jansson. Anything the scanner does not
   * take goes to jansson, so every syntax error keeps jansson's text; both
   * cover the whole body before any rule runs, as before. Of an array of
   * more than max_sales the scanner keeps max_sales on the tape, enough for
   * the count to be refused below. */
  tape.top_max = max_sales;
  scan_status = sale_json__scan(&tape, body, length);
  if (scan_status != SALE_JSON_SCAN_OK &&
      sj_parse_with_jansson(&ctx, &tape, body, length, max_sales))
    goto out;

  if (tape.values[0].type == SALE_JSON_ARRAY) {
    array_form = 1;
    parsed_count = tape.values[0].count;
    if (sj_check_sale_count(&ctx, parsed_count, max_sales)) {
      parsed_count = 0;
      goto out;
    }
  } else {
    parsed_count = 1;
  }

  parsed = calloc(parsed_count, sizeof(*parsed));
  if (!parsed) {
    sj_fail(&ctx, NULL, "the agent ran out of memory reading %zu sales; retry later",
            parsed_count);
    goto out;
  }
  sale_value = array_form ? &tape.values[1] : &tape.values[0];
  for (size_t i = 0; i < parsed_count; i++, sale_value = &tape.values[sale_value->next]) {
    ctx.in_array = array_form;
    ctx.sale_index = i;
    ctx.currency[0] = '\0';
    ctx.exponent = 0;
    if (sj_parse_sale(&ctx, sale_value, &parsed[i]))
      goto out;
    /* The journal dedupes across requests; within one request a repeat is a mistake. */
    for (size_t j = 0; j < i; j++) {
      if (strcmp(parsed[j].sale_id, parsed[i].sale_id) == 0) {
        sj_fail(&ctx, "sale_id",
                "sale_id \"%s\" is also used by [%zu] in this request; each sale needs its own "
                "sale_id",
                parsed[i].sale_id, j);
        goto out;
      }
    }
  }

  *sales = parsed;
  *count = parsed_count;
  if (is_array)
    *is_array = array_form;
  parsed = NULL;
  rc = 0;
out:
  if (parsed)
    sale_array_free(parsed, parsed_count);
  sale_json__tape_release(&tape);
  return rc;
}
