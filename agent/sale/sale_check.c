/*
 * sale_check.c - the POS contract's rules, for every ingest source.
 *
 * A source (agent/ingest/http's JSON bodies, the spool's files, the POS
 * database tailer) hands over values; the rules here turn them into a
 * struct sale or into the first problem found, whose `field` is the
 * contract's path of the offending value and whose message says what is
 * wrong and what is expected, because the reader is a POS integrator
 * looking at a 400 response or a .reason file, not at our code.
 *
 * Money never passes through floating point: decimal strings are scanned
 * digit by digit into int64 minor units with checked arithmetic, and every
 * sum is checked too.
 */
#include "sale/sale_check.h"

#include "proto/codec.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SC_QTY_MAX 100000
#define SC_FRACTION_DIGITS_MAX 9 /* RFC 3339 allows more; nanoseconds is plenty */
#define SC_EXPONENT_MAX 9        /* 10^9 minor units per major unit at most */
#define SC_YEAR_MIN 2000
#define SC_YEAR_MAX 2100
#define SC_OFFSET_MINUTES_MAX (18 * 60)
#define SC_QUOTE_MAX 40 /* bytes of a rejected value echoed back in a message */
#define SC_MONEY_TEXT_MAX 32

enum sc_money_status {
  SC_MONEY_OK = 0,
  SC_MONEY_SYNTAX = -1,
  SC_MONEY_DECIMALS = -2,
  SC_MONEY_RANGE = -3,
};

enum sc_money_sign { SC_MONEY_NOT_NEGATIVE, SC_MONEY_POSITIVE };

/* ------------------------------------------------------------------------ */
/* ISO 4217                                                                 */

struct sc_currency {
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
static const struct sc_currency sc_currencies[] = {
    {"AED", 2}, {"AFN", 2}, {"ALL", 2}, {"AMD", 2}, {"ANG", 2}, {"AOA", 2}, {"ARS", 2}, {"AUD", 2},
    {"AWG", 2}, {"AZN", 2}, {"BAM", 2}, {"BBD", 2}, {"BDT", 2}, {"BGN", 2}, {"BHD", 3}, {"BIF", 0},
    {"BMD", 2}, {"BND", 2}, {"BOB", 2}, {"BOV", 2}, {"BRL", 2}, {"BSD", 2}, {"BTN", 2}, {"BWP", 2},
    {"BYN", 2}, {"BZD", 2}, {"CAD", 2}, {"CDF", 2}, {"CHE", 2}, {"CHF", 2}, {"CHW", 2}, {"CLF", 4},
    {"CLP", 0}, {"CNY", 2}, {"COP", 2}, {"COU", 2}, {"CRC", 2}, {"CUC", 2}, {"CUP", 2}, {"CVE", 2},
    {"CZK", 2}, {"DJF", 0}, {"DKK", 2}, {"DOP", 2}, {"DZD", 2}, {"EGP", 2}, {"ERN", 2}, {"ETB", 2},
    {"EUR", 2}, {"FJD", 2}, {"FKP", 2}, {"GBP", 2}, {"GEL", 2}, {"GHS", 2}, {"GIP", 2}, {"GMD", 2},
    {"GNF", 0}, {"GTQ", 2}, {"GYD", 2}, {"HKD", 2}, {"HNL", 2}, {"HTG", 2}, {"HUF", 2}, {"IDR", 2},
    {"ILS", 2}, {"INR", 2}, {"IQD", 3}, {"IRR", 2}, {"ISK", 0}, {"JMD", 2}, {"JOD", 3}, {"JPY", 0},
    {"KES", 2}, {"KGS", 2}, {"KHR", 2}, {"KMF", 0}, {"KPW", 2}, {"KRW", 0}, {"KWD", 3}, {"KYD", 2},
    {"KZT", 2}, {"LAK", 2}, {"LBP", 2}, {"LKR", 2}, {"LRD", 2}, {"LSL", 2}, {"LYD", 3}, {"MAD", 2},
    {"MDL", 2}, {"MGA", 2}, {"MKD", 2}, {"MMK", 2}, {"MNT", 2}, {"MOP", 2}, {"MRU", 2}, {"MUR", 2},
    {"MVR", 2}, {"MWK", 2}, {"MXN", 2}, {"MXV", 2}, {"MYR", 2}, {"MZN", 2}, {"NAD", 2}, {"NGN", 2},
    {"NIO", 2}, {"NOK", 2}, {"NPR", 2}, {"NZD", 2}, {"OMR", 3}, {"PAB", 2}, {"PEN", 2}, {"PGK", 2},
    {"PHP", 2}, {"PKR", 2}, {"PLN", 2}, {"PYG", 0}, {"QAR", 2}, {"RON", 2}, {"RSD", 2}, {"RUB", 2},
    {"RWF", 0}, {"SAR", 2}, {"SBD", 2}, {"SCR", 2}, {"SDG", 2}, {"SEK", 2}, {"SGD", 2}, {"SHP", 2},
    {"SLE", 2}, {"SLL", 2}, {"SOS", 2}, {"SRD", 2}, {"SSP", 2}, {"STN", 2}, {"SVC", 2}, {"SYP", 2},
    {"SZL", 2}, {"THB", 2}, {"TJS", 2}, {"TMT", 2}, {"TND", 3}, {"TOP", 2}, {"TRY", 2}, {"TTD", 2},
    {"TWD", 2}, {"TZS", 2}, {"UAH", 2}, {"UGX", 0}, {"USD", 2}, {"USN", 2}, {"UYI", 0}, {"UYU", 2},
    {"UYW", 4}, {"UZS", 2}, {"VED", 2}, {"VES", 2}, {"VND", 0}, {"VUV", 0}, {"WST", 2}, {"XAF", 0},
    {"XCD", 2}, {"XCG", 2}, {"XOF", 0}, {"XPF", 0}, {"YER", 2}, {"ZAR", 2}, {"ZMW", 2}, {"ZWG", 2},
    {"ZWL", 2},
};

static int sc_currency_compare(const void *key, const void *entry)
{
  return strcmp((const char *)key, ((const struct sc_currency *)entry)->code);
}

/*
 * Returns the minor-unit decimals of the ISO 4217 code `code` (exactly three
 * uppercase letters, NUL-terminated), or -1 if it is not an active code or
 * is NULL. Pure; any thread.
 */
int sale_currency_exponent(const char *code)
{
  const struct sc_currency *found;

  if (!code || strlen(code) != 3)
    return -1;
  found = bsearch(code, sc_currencies, sizeof(sc_currencies) / sizeof(sc_currencies[0]),
                  sizeof(sc_currencies[0]), sc_currency_compare);
  return found ? (int)found->exponent : -1;
}

/* ------------------------------------------------------------------------ */
/* Text                                                                     */

/*
 * Decodes one UTF-8 sequence of at most `left` bytes at `s`. Returns its
 * length with *code_point set, or 0 if it is not valid UTF-8 (overlong,
 * surrogate, above U+10FFFF, truncated). The scanner's check too. Any thread.
 */
size_t sale_utf8_next(const unsigned char *s, size_t left, uint32_t *code_point)
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

static int sc_is_control(uint32_t code_point)
{
  return code_point < 0x20 || (code_point >= 0x7f && code_point <= 0x9f);
}

/*
 * Makes `text` safe to put in a response and a log line: invalid UTF-8 (a
 * snprintf cut through a character) and control characters become '?'.
 */
void sale_text_sanitize(char *text)
{
  unsigned char *s = (unsigned char *)text;
  size_t left = strlen(text);

  while (left > 0) {
    uint32_t code_point = 0;
    size_t length = sale_utf8_next(s, left, &code_point);
    if (length == 0 || sc_is_control(code_point)) {
      *s = '?';
      length = 1;
    }
    s += length;
    left -= length;
  }
}

/* Copies at most SC_QUOTE_MAX bytes of `value` into `out` for a message. */
static const char *sc_quote(const char *value, char *out, size_t out_size)
{
  size_t length = strnlen(value, SC_QUOTE_MAX + 1);

  if (length > SC_QUOTE_MAX)
    snprintf(out, out_size, "%.*s...", SC_QUOTE_MAX, value);
  else
    snprintf(out, out_size, "%s", value);
  return out;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */

/* Joins the non-empty parts with '.': "[2]" + "lines[0]" + "sku". */
static void sc_field(const struct sale_check *check, const char *key, char *out, size_t out_size)
{
  char prefix[24] = ""; /* "[2]" for array bodies, "" for a single object */
  char object[32] = ""; /* "lines[12]", "payments[0]", or "" for the sale itself */
  const char *parts[3] = {prefix, object, key ? key : ""};
  size_t used = 0;

  if (check->in_array)
    snprintf(prefix, sizeof(prefix), "[%zu]", check->sale_index);
  if (check->object_name)
    snprintf(object, sizeof(object), "%s[%zu]", check->object_name, check->object_index);
  out[0] = '\0';
  for (size_t i = 0; i < 3; i++) {
    int written;
    if (parts[i][0] == '\0')
      continue;
    written = snprintf(out + used, out_size - used, "%s%s", used ? "." : "", parts[i]);
    if (written < 0 || (size_t)written >= out_size - used)
      return; /* truncated: sale_text_sanitize repairs a cut character */
    used += (size_t)written;
  }
}

int sale_check_fail(struct sale_check *check, const char *key, const char *format, ...)
{
  va_list args;

  sc_field(check, key, check->error->field, sizeof(check->error->field));
  va_start(args, format);
  vsnprintf(check->error->message, sizeof(check->error->message), format, args);
  va_end(args);
  sale_text_sanitize(check->error->field);
  sale_text_sanitize(check->error->message);
  return -1;
}

const char *sale_value_type_name(enum sale_syntax syntax, enum sale_value_type type)
{
  int json = syntax == SALE_SYNTAX_JSON;

  switch (type) {
  case SALE_VALUE_ABSENT:
    return "nothing";
  case SALE_VALUE_OBJECT:
    return json ? "a JSON object" : "a record";
  case SALE_VALUE_ARRAY:
    return json ? "an array" : "a list";
  case SALE_VALUE_TEXT:
    return json ? "a string" : "text";
  case SALE_VALUE_INTEGER:
    return json ? "a JSON number" : "an integer";
  case SALE_VALUE_NUMBER:
    return json ? "a JSON number" : "a floating-point number";
  case SALE_VALUE_TRUE:
  case SALE_VALUE_FALSE:
    return "a boolean";
  case SALE_VALUE_NULL:
    return "null";
  }
  return "an unknown type";
}

static const char *sc_type_name(const struct sale_check *check, const struct sale_value *value)
{
  return sale_value_type_name(check->syntax, value->type);
}

/* The value of `key` in the source's current part. */
static void sc_get(struct sale_check *check, const char *key, struct sale_value *value)
{
  memset(value, 0, sizeof(*value));
  check->source->get(check->state, key, value);
}

/* ------------------------------------------------------------------------ */
/* Money                                                                    */

/*
 * Scans a decimal string into minor units. On SC_MONEY_DECIMALS,
 * *decimals_seen says how many decimals the text has, for the message.
 */
static enum sc_money_status sc_money_scan(const char *text, unsigned exponent, long long *minor,
                                          const char **why, unsigned *decimals_seen)
{
  const char *p = text;
  int negative = 0;
  unsigned integer_digits = 0;
  unsigned decimals = 0;
  long long value = 0;

  *decimals_seen = 0;
  if (exponent > SC_EXPONENT_MAX) {
    *why = "cannot be read: the currency exponent is out of range";
    return SC_MONEY_SYNTAX;
  }
  if (*p == '\0') {
    *why = "is empty";
    return SC_MONEY_SYNTAX;
  }
  if (*p == '+') {
    *why = "must not start with '+'";
    return SC_MONEY_SYNTAX;
  }
  if (*p == '-') {
    negative = 1;
    p++;
  }
  for (; *p >= '0' && *p <= '9'; p++, integer_digits++) {
    if (__builtin_mul_overflow(value, 10, &value) ||
        __builtin_add_overflow(value, *p - '0', &value)) {
      *why = "is too large";
      return SC_MONEY_RANGE;
    }
  }
  if (integer_digits == 0 && *p == '\0') {
    *why = "has no digits";
    return SC_MONEY_SYNTAX;
  }
  if (integer_digits == 0 && *p == '.') {
    *why = "needs a digit before the decimal point";
    return SC_MONEY_SYNTAX;
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
        return SC_MONEY_RANGE;
      }
    }
    if (decimals == 0 && *p == '\0') {
      *why = "needs a digit after the decimal point";
      return SC_MONEY_SYNTAX;
    }
  }
  if (*p != '\0') {
    if (*p == 'e' || *p == 'E')
      *why = "must not use exponent notation";
    else if (*p == ',' || *p == ' ' || *p == '_' || *p == '\'')
      *why = "must not contain thousands separators, spaces or decimal commas";
    else
      *why = "may contain only digits, a leading '-' and one '.'";
    return SC_MONEY_SYNTAX;
  }
  if (decimals > exponent) {
    *decimals_seen = decimals;
    *why = "has more decimals than the currency allows";
    return SC_MONEY_DECIMALS;
  }
  for (unsigned i = decimals; i < exponent; i++) {
    if (__builtin_mul_overflow(value, 10, &value)) {
      *why = "is too large";
      return SC_MONEY_RANGE;
    }
  }
  /* value <= LLONG_MAX here, so its negation cannot overflow. */
  *minor = negative ? -value : value;
  return SC_MONEY_OK;
}

/*
 * Parses a decimal money string into minor units of a currency with
 * `exponent` decimals: "12.5" with exponent 2 is 1250. More decimals than
 * `exponent`, exponent notation, a leading '+', separators or a value out of
 * int64 range fail. Returns 0 with *minor set, or -1 with *why set to a
 * static phrase that reads after the quoted value ("is too large"). Pure.
 */
int sale_parse_money(const char *text, unsigned exponent, long long *minor, const char **why)
{
  unsigned decimals_seen;
  const char *reason = NULL;
  int rc = -1;

  if (!text || !minor) {
    reason = "is missing";
    goto out;
  }
  if (sc_money_scan(text, exponent, minor, &reason, &decimals_seen) != SC_MONEY_OK)
    goto out;
  rc = 0;
out:
  if (why)
    *why = reason;
  return rc;
}

/* "12.50" for EUR, "1250" for JPY, "12.500" for BHD. */
static const char *sc_money_example(unsigned exponent)
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
 * optional field is 0. SC_MONEY_POSITIVE demands > 0, otherwise >= 0.
 */
static int sc_get_money(struct sale_check *check, const char *key, int required,
                        enum sc_money_sign sign, int64_t *out)
{
  struct sale_value value;
  char quoted[SC_QUOTE_MAX + 8];
  const char *text;
  const char *why = NULL;
  unsigned decimals_seen = 0;
  long long minor = 0;
  enum sc_money_status status;

  *out = 0;
  sc_get(check, key, &value);
  if (value.type == SALE_VALUE_ABSENT) {
    if (required)
      return sale_check_fail(check, key, "\"%s\" is required: a decimal string like %s", key,
                             sc_money_example(check->exponent));
    return 0;
  }
  if (value.type != SALE_VALUE_TEXT)
    return sale_check_fail(check, key, "\"%s\" must be a decimal string like %s, not %s", key,
                           sc_money_example(check->exponent), sc_type_name(check, &value));
  text = value.text;
  status = sc_money_scan(text, check->exponent, &minor, &why, &decimals_seen);
  if (status == SC_MONEY_OK && minor >= 0 && (sign != SC_MONEY_POSITIVE || minor > 0)) {
    *out = minor;
    return 0;
  }
  /* Quoted only for the message: a valid amount costs no formatting. */
  sc_quote(text, quoted, sizeof(quoted));
  if (status == SC_MONEY_DECIMALS) {
    if (check->exponent == 0)
      return sale_check_fail(check, key, "%s has no decimals; \"%s\" has %u", check->currency,
                             quoted, decimals_seen);
    return sale_check_fail(check, key, "%s has %u decimal%s; \"%s\" has %u", check->currency,
                           check->exponent, check->exponent == 1 ? "" : "s", quoted, decimals_seen);
  }
  if (status == SC_MONEY_RANGE)
    return sale_check_fail(
        check, key, "\"%s\" \"%s\" is too large for this agent (64-bit minor units)", key, quoted);
  if (status != SC_MONEY_OK)
    return sale_check_fail(check, key, "\"%s\" \"%s\" %s; expected a decimal string like %s", key,
                           quoted, why, sc_money_example(check->exponent));
  if (sign == SC_MONEY_POSITIVE && minor <= 0)
    return sale_check_fail(check, key, "\"%s\" must be more than zero, not \"%s\"", key, quoted);
  if (minor < 0)
    return sale_check_fail(check, key, "\"%s\" must not be negative, not \"%s\"", key, quoted);
  *out = minor;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* RFC 3339                                                                 */

/* Reads exactly `count` ASCII digits at `p`; returns -1 if any is not one. */
static int sc_digits(const char *p, unsigned count, int *value)
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

static int sc_is_leap_year(int year)
{
  return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int sc_days_in_month(int year, int month)
{
  static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

  return month == 2 && sc_is_leap_year(year) ? 29 : days[month - 1];
}

/*
 * Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant,
 * "chrono-compatible low-level date algorithms", days_from_civil), so that
 * neither the TZ environment nor timegm() is involved.
 */
static long long sc_days_from_civil(long long year, unsigned month, unsigned day)
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
int sale_parse_time(const char *text, long long *epoch_ms, int *offset_minutes, const char **why)
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
  if (sc_digits(text, 4, &year) || text[4] != '-' || sc_digits(text + 5, 2, &month) ||
      text[7] != '-' || sc_digits(text + 8, 2, &day)) {
    reason = "is not in the form YYYY-MM-DDTHH:MM:SS+hh:mm";
    goto out;
  }
  if (month < 1 || month > 12) {
    reason = "has a month outside 01-12";
    goto out;
  }
  if (day < 1 || day > sc_days_in_month(year, month)) {
    reason = month == 2 && day == 29 ? "names February 29 of a year that is not a leap year"
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
  if ((text[10] != 'T' && text[10] != 't') || sc_digits(text + 11, 2, &hour) || text[13] != ':' ||
      sc_digits(text + 14, 2, &minute) || text[16] != ':' || sc_digits(text + 17, 2, &second)) {
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
    if (fraction_digits > SC_FRACTION_DIGITS_MAX) {
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
    if (sc_digits(p + 1, 2, &offset_hours) || p[3] != ':' || sc_digits(p + 4, 2, &offset_mins)) {
      reason = "has a UTC offset that is not +hh:mm, -hh:mm or Z";
      goto out;
    }
    if (offset_mins > 59) {
      reason = "has UTC offset minutes outside 00-59";
      goto out;
    }
    offset_total = offset_hours * 60 + offset_mins;
    if (offset_total > SC_OFFSET_MINUTES_MAX) {
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
  *epoch_ms = (sc_days_from_civil(year, (unsigned)month, (unsigned)day) * 86400LL + hour * 3600LL +
               minute * 60LL + second - offset_total * 60LL) *
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
static int sc_get_string(struct sale_check *check, const char *key, int required,
                         const char *example, const char **text, size_t *length)
{
  struct sale_value value;

  *text = NULL;
  *length = 0;
  sc_get(check, key, &value);
  if (value.type == SALE_VALUE_ABSENT) {
    if (required)
      return sale_check_fail(check, key, "\"%s\" is required: a string like %s", key, example);
    return 0;
  }
  if (value.type != SALE_VALUE_TEXT)
    return sale_check_fail(
        check, key, "\"%s\" must be a string like %s, not %s%s", key, example,
        sc_type_name(check, &value),
        value.type == SALE_VALUE_NULL && !required ? "; leave the field out instead" : "");
  *text = value.text;
  *length = value.length;
  return 0;
}

static int sc_is_id_char(unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

/* An id: 1-64 of [A-Za-z0-9._:-], copied into `out` (SALE_ID_MAX + 1). */
static int sc_get_id(struct sale_check *check, const char *key, int required, char *out)
{
  const char *text;
  size_t length;
  char quoted[SC_QUOTE_MAX + 8];

  out[0] = '\0';
  if (sc_get_string(check, key, required, "\"T1-000123\"", &text, &length))
    return -1;
  if (!text)
    return 0;
  if (length == 0)
    return sale_check_fail(check, key, "\"%s\" is empty; it needs 1 to %d of A-Z a-z 0-9 . _ : -",
                           key, SALE_ID_MAX);
  if (length > SALE_ID_MAX)
    return sale_check_fail(check, key, "\"%s\" is %zu bytes long; at most %d are allowed", key,
                           length, SALE_ID_MAX);
  for (size_t i = 0; i < length; i++) {
    unsigned char c = (unsigned char)text[i];
    if (sc_is_id_char(c))
      continue;
    sc_quote(text, quoted, sizeof(quoted));
    if (c >= ' ' && c < 0x7f)
      return sale_check_fail(
          check, key, "\"%s\" \"%s\" has '%c' at byte %zu; only A-Z a-z 0-9 . _ : - are allowed",
          key, quoted, c, i);
    return sale_check_fail(check, key,
                           "\"%s\" \"%s\" has byte 0x%02x at byte %zu; only A-Z a-z 0-9 . _ : - "
                           "are allowed",
                           key, quoted, c, i);
  }
  memcpy(out, text, length + 1);
  return 0;
}

/* Free text: 1-64 bytes of UTF-8 without control characters, into `out`. */
static int sc_get_text(struct sale_check *check, const char *key, int required, const char *example,
                       char *out)
{
  const char *text;
  size_t length;
  size_t offset = 0;

  out[0] = '\0';
  if (sc_get_string(check, key, required, example, &text, &length))
    return -1;
  if (!text)
    return 0;
  if (length == 0)
    return sale_check_fail(check, key,
                           "\"%s\" is empty; send 1 to %d bytes of text or leave it out", key,
                           SALE_TEXT_MAX);
  if (length > SALE_TEXT_MAX)
    return sale_check_fail(check, key, "\"%s\" is %zu bytes long; at most %d are allowed", key,
                           length, SALE_TEXT_MAX);
  /* A JSON parser already guarantees UTF-8, but this is the contract's own rule. */
  while (offset < length) {
    uint32_t code_point = 0;
    size_t step =
        sale_utf8_next((const unsigned char *)text + offset, length - offset, &code_point);
    if (step == 0)
      return sale_check_fail(check, key, "\"%s\" is not valid UTF-8 at byte %zu", key, offset);
    if (sc_is_control(code_point))
      return sale_check_fail(check, key,
                             "\"%s\" has control character U+%04X at byte %zu; send printable text",
                             key, (unsigned)code_point, offset);
    offset += step;
  }
  memcpy(out, text, length + 1);
  return 0;
}

/* Reads an array field with `min`..`max` entries into *count. */
static int sc_get_array(struct sale_check *check, const char *key, size_t min, size_t max,
                        const char *what, size_t *count)
{
  struct sale_value value;

  *count = 0;
  sc_get(check, key, &value);
  if (value.type == SALE_VALUE_ABSENT)
    return sale_check_fail(check, key, "\"%s\" is required: an array of %zu to %zu %s", key, min,
                           max, what);
  if (value.type != SALE_VALUE_ARRAY)
    return sale_check_fail(check, key, "\"%s\" must be an array of %s, not %s", key, what,
                           sc_type_name(check, &value));
  if (value.count < min)
    return sale_check_fail(check, key, "\"%s\" is empty; a sale needs at least %zu of its %s", key,
                           min, what);
  if (value.count > max)
    return sale_check_fail(check, key, "\"%s\" has %zu %s; at most %zu are allowed per sale", key,
                           value.count, what, max);
  *count = value.count;
  return 0;
}

/* Makes part `part` (index `index`) the source's current one; -1 with the
 * problem set when it is not an object. `what` names it in the message. */
static int sc_enter(struct sale_check *check, enum sale_part part, size_t index, const char *what)
{
  struct sale_value object;

  memset(&object, 0, sizeof(object));
  check->source->enter(check->state, part, index, &object);
  if (object.type != SALE_VALUE_OBJECT)
    return sale_check_fail(check, NULL, "each %s must be %s, not %s", what,
                           sale_value_type_name(check->syntax, SALE_VALUE_OBJECT),
                           sc_type_name(check, &object));
  return 0;
}

static int sc_check_fields(struct sale_check *check, const char *const *allowed,
                           const char *allowed_text)
{
  if (!check->source->check_fields)
    return 0;
  return check->source->check_fields(check->state, check, allowed, allowed_text);
}

/* ------------------------------------------------------------------------ */
/* One sale                                                                 */

const char *const sale_fields[] = {
    "sale_id",    "kind",    "original_sale_id", "terminal_id",
    "cashier_id", "channel", "delivery_partner", "business_time",
    "currency",   "lines",   "payments",         "total",
    NULL,
};
const char sale_fields_text[] =
    "sale_id, kind, original_sale_id, terminal_id, cashier_id, channel, delivery_partner, "
    "business_time, currency, lines, payments, total";
const char *const sale_line_fields[] = {"sku",      "qty", "unit_price", "discount",
                                        "promo_id", "tax", NULL};
const char sale_line_fields_text[] = "sku, qty, unit_price, discount, promo_id, tax";
const char *const sale_payment_fields[] = {"method", "amount", NULL};
const char sale_payment_fields_text[] = "method, amount";

static int sc_parse_kind(struct sale_check *check, struct sale *sale)
{
  const char *text;
  size_t length;

  if (sc_get_string(check, "kind", 1, "\"sale\"", &text, &length))
    return -1;
  if (strcmp(text, "sale") == 0)
    sale->kind = SALE_KIND_SALE;
  else if (strcmp(text, "refund") == 0)
    sale->kind = SALE_KIND_REFUND;
  else if (strcmp(text, "void") == 0)
    sale->kind = SALE_KIND_VOID;
  else {
    char quoted[SC_QUOTE_MAX + 8];
    return sale_check_fail(check, "kind",
                           "\"kind\" is \"%s\"; expected \"sale\", \"refund\" or \"void\"",
                           sc_quote(text, quoted, sizeof(quoted)));
  }
  return 0;
}

static int sc_parse_channel(struct sale_check *check, struct sale *sale)
{
  const char *text;
  size_t length;

  sale->channel = SALE_CHANNEL_POS;
  if (sc_get_string(check, "channel", 0, "\"pos\"", &text, &length))
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
    char quoted[SC_QUOTE_MAX + 8];
    return sale_check_fail(check, "channel",
                           "\"channel\" is \"%s\"; expected \"pos\", \"online\", \"delivery\" or "
                           "\"pickup\" (or leave it out for pos)",
                           sc_quote(text, quoted, sizeof(quoted)));
  }
  return 0;
}

static int sc_parse_time_field(struct sale_check *check, struct sale *sale)
{
  const char *text;
  const char *why = NULL;
  size_t length;
  long long epoch_ms = 0;
  int offset_minutes = 0;
  int year = 0;
  char quoted[SC_QUOTE_MAX + 8];

  if (sc_get_string(check, "business_time", 1, "\"2026-11-21T18:42:05+01:00\"", &text, &length))
    return -1;
  /* The value is quoted only into a message: a valid one costs no formatting. */
  if (length > SALE_TIME_TEXT_MAX)
    return sale_check_fail(check, "business_time",
                           "business_time \"%s\" is %zu bytes long; an RFC 3339 time like "
                           "\"2026-11-21T18:42:05+01:00\" is at most %d",
                           sc_quote(text, quoted, sizeof(quoted)), length, SALE_TIME_TEXT_MAX);
  if (strlen(text) != length || sale_parse_time(text, &epoch_ms, &offset_minutes, &why))
    return sale_check_fail(
        check, "business_time",
        "business_time \"%s\" %s; expected RFC 3339 like \"2026-11-21T18:42:05+01:00\"",
        sc_quote(text, quoted, sizeof(quoted)), why ? why : "has a NUL byte");
  /* The parse succeeded, so the first four bytes are the local year. */
  year = (text[0] - '0') * 1000 + (text[1] - '0') * 100 + (text[2] - '0') * 10 + (text[3] - '0');
  if (year < SC_YEAR_MIN || year > SC_YEAR_MAX)
    return sale_check_fail(check, "business_time",
                           "business_time \"%s\" is in year %d; expected %d to %d (check the "
                           "terminal clock)",
                           sc_quote(text, quoted, sizeof(quoted)), year, SC_YEAR_MIN, SC_YEAR_MAX);
  memcpy(sale->business_time, text, length + 1);
  sale->business_time_ms = epoch_ms;
  sale->utc_offset_minutes = offset_minutes;
  return 0;
}

static int sc_parse_currency(struct sale_check *check, struct sale *sale)
{
  const char *text;
  size_t length;
  int exponent;
  char quoted[SC_QUOTE_MAX + 8];

  if (sc_get_string(check, "currency", 1, "\"EUR\"", &text, &length))
    return -1;
  /* The value is quoted only into a message: a valid one costs no formatting. */
  if (length != 3 || text[0] < 'A' || text[0] > 'Z' || text[1] < 'A' || text[1] > 'Z' ||
      text[2] < 'A' || text[2] > 'Z')
    return sale_check_fail(check, "currency",
                           "\"currency\" \"%s\" must be an ISO 4217 code of 3 uppercase letters, "
                           "like \"EUR\"",
                           sc_quote(text, quoted, sizeof(quoted)));
  exponent = sale_currency_exponent(text);
  if (exponent < 0)
    return sale_check_fail(check, "currency",
                           "\"currency\" \"%s\" is not an active ISO 4217 currency code; "
                           "expected one like \"EUR\" or \"USD\"",
                           sc_quote(text, quoted, sizeof(quoted)));
  memcpy(sale->currency, text, 4);
  sale->currency_exponent = (unsigned)exponent;
  memcpy(check->currency, text, 4);
  check->exponent = (unsigned)exponent;
  return 0;
}

/* Adds `amount` to *sum; -1 on int64 overflow. */
static int sc_add(int64_t *sum, int64_t amount)
{
  return __builtin_add_overflow(*sum, amount, sum) ? -1 : 0;
}

/*
 * A quantity as text (SALE_SYNTAX_TEXT): an optional '-' and 1-18 digits,
 * nothing else. 0 with *qty set, or -1.
 */
static int sc_qty_from_text(const char *text, size_t length, long long *qty)
{
  size_t i = text[0] == '-' ? 1 : 0;
  long long value = 0;

  if (length == i || length - i > 18)
    return -1;
  for (; i < length; i++) {
    if (text[i] < '0' || text[i] > '9')
      return -1;
    value = value * 10 + (text[i] - '0');
  }
  *qty = text[0] == '-' ? -value : value;
  return 0;
}

static int sc_get_qty(struct sale_check *check, int64_t *out)
{
  struct sale_value qty;
  long long value = 0;

  sc_get(check, "qty", &qty);
  if (qty.type == SALE_VALUE_ABSENT)
    return sale_check_fail(check, "qty", "\"qty\" is required: %s like 2",
                           check->syntax == SALE_SYNTAX_JSON ? "a JSON integer" : "a whole number");
  if (qty.type == SALE_VALUE_INTEGER) {
    value = qty.integer;
  } else if (check->syntax == SALE_SYNTAX_TEXT && qty.type == SALE_VALUE_TEXT) {
    char quoted[SC_QUOTE_MAX + 8];
    if (sc_qty_from_text(qty.text, qty.length, &value))
      return sale_check_fail(check, "qty", "\"qty\" \"%s\" must be a whole number like 2",
                             sc_quote(qty.text, quoted, sizeof(quoted)));
  } else if (check->syntax == SALE_SYNTAX_JSON) {
    return sale_check_fail(check, "qty", "\"qty\" must be a JSON integer like 2, not %s%s",
                           qty.type == SALE_VALUE_NUMBER ? "a number with a fraction or exponent"
                                                         : sc_type_name(check, &qty),
                           qty.type == SALE_VALUE_TEXT ? " (no quotes)" : "");
  } else {
    return sale_check_fail(check, "qty", "\"qty\" must be a whole number like 2, not %s",
                           sc_type_name(check, &qty));
  }
  if (value < 1 || value > SC_QTY_MAX)
    return sale_check_fail(check, "qty", "\"qty\" is %lld; expected 1 to %d", value, SC_QTY_MAX);
  *out = value;
  return 0;
}

static int sc_parse_line(struct sale_check *check, struct sale_line *line, int64_t *line_amount)
{
  int64_t gross, amount;
  char gross_text[SC_MONEY_TEXT_MAX], discount_text[SC_MONEY_TEXT_MAX];

  if (sc_enter(check, SALE_PART_LINE, check->object_index, "line") ||
      sc_check_fields(check, sale_line_fields, sale_line_fields_text) ||
      sc_get_text(check, "sku", 1, "\"PIZZA-MARG-L\"", line->sku) || sc_get_qty(check, &line->qty))
    return -1;
  if (sc_get_money(check, "unit_price", 1, SC_MONEY_NOT_NEGATIVE, &line->unit_price) ||
      sc_get_money(check, "discount", 0, SC_MONEY_NOT_NEGATIVE, &line->discount) ||
      sc_get_text(check, "promo_id", 0, "\"TPR-42\"", line->promo_id) ||
      sc_get_money(check, "tax", 0, SC_MONEY_NOT_NEGATIVE, &line->tax))
    return -1;

  if (__builtin_mul_overflow(line->qty, line->unit_price, &gross))
    return sale_check_fail(check, "unit_price",
                           "qty x unit_price is too large for this agent (64-bit minor units)");
  if (line->discount > gross)
    return sale_check_fail(
        check, "discount", "\"discount\" %s is more than qty x unit_price = %s",
        proto_money_format(line->discount, check->exponent, discount_text, sizeof(discount_text)),
        proto_money_format(gross, check->exponent, gross_text, sizeof(gross_text)));
  amount = gross - line->discount; /* 0 <= discount <= gross: no overflow */
  if (sc_add(&amount, line->tax))
    return sale_check_fail(check, "tax",
                           "qty x unit_price - discount + tax is too large for this agent "
                           "(64-bit minor units)");
  *line_amount = amount;
  return 0;
}

static int sc_parse_lines(struct sale_check *check, struct sale *sale, int64_t *lines_total)
{
  size_t count;
  int rc = -1;

  *lines_total = 0;
  if (sc_get_array(check, "lines", 1, SALE_LINES_MAX, "lines", &count))
    goto out;
  sale->lines = calloc(count, sizeof(*sale->lines));
  if (!sale->lines) {
    sale_check_fail(check, "lines", "the agent ran out of memory reading %zu lines; retry later",
                    count);
    goto out;
  }
  sale->line_count = count;
  check->object_name = "lines";
  for (size_t i = 0; i < count; i++) {
    int64_t amount = 0;
    check->object_index = i;
    if (sc_parse_line(check, &sale->lines[i], &amount))
      goto out;
    if (sc_add(lines_total, amount)) {
      sale_check_fail(check, NULL,
                      "the lines up to this one add up to more than this agent can "
                      "hold (64-bit minor units)");
      goto out;
    }
  }
  rc = 0;
out:
  check->object_name = NULL;
  return rc;
}

static int sc_parse_payments(struct sale_check *check, struct sale *sale, int64_t *payments_total)
{
  size_t count;
  int rc = -1;

  *payments_total = 0;
  /* Empty only for a sale that costs nothing (a free pizza, a staff meal):
   * checked against the total once it is read. */
  if (sc_get_array(check, "payments", 0, SALE_PAYMENTS_MAX, "payments", &count))
    goto out;
  sale->payments = calloc(count ? count : 1, sizeof(*sale->payments));
  if (!sale->payments) {
    sale_check_fail(check, "payments",
                    "the agent ran out of memory reading %zu payments; retry later", count);
    goto out;
  }
  sale->payment_count = count;
  check->object_name = "payments";
  for (size_t i = 0; i < count; i++) {
    struct sale_payment *payment = &sale->payments[i];
    check->object_index = i;
    if (sc_enter(check, SALE_PART_PAYMENT, i, "payment") ||
        sc_check_fields(check, sale_payment_fields, sale_payment_fields_text) ||
        sc_get_text(check, "method", 1, "\"card\"", payment->method) ||
        sc_get_money(check, "amount", 1, SC_MONEY_POSITIVE, &payment->amount))
      goto out;
    if (sc_add(payments_total, payment->amount)) {
      sale_check_fail(check, "amount",
                      "the payments up to this one add up to more than this "
                      "agent can hold (64-bit minor units)");
      goto out;
    }
  }
  rc = 0;
out:
  check->object_name = NULL;
  return rc;
}

/* The sale itself is the source's current part again. */
static int sc_enter_sale(struct sale_check *check)
{
  struct sale_value object;

  check->source->enter(check->state, SALE_PART_SALE, 0, &object);
  return 0;
}

int sale_read(const struct sale_source *source, void *state, struct sale_check *check,
              struct sale *sale)
{
  const char *partner_text;
  size_t partner_length;
  int64_t lines_total = 0, payments_total = 0;
  char total_text[SC_MONEY_TEXT_MAX], sum_text[SC_MONEY_TEXT_MAX];

  check->source = source;
  check->state = state;
  check->syntax = source->syntax;
  check->object_name = NULL;
  check->object_index = 0;
  check->currency[0] = '\0';
  check->exponent = 0;
  if (sc_enter(check, SALE_PART_SALE, 0, "sale") ||
      sc_check_fields(check, sale_fields, sale_fields_text) ||
      sc_get_id(check, "sale_id", 1, sale->sale_id) || sc_parse_kind(check, sale) ||
      sc_get_id(check, "original_sale_id", 0, sale->original_sale_id))
    return -1;
  if (sale->kind == SALE_KIND_SALE && sale->original_sale_id[0])
    return sale_check_fail(check, "original_sale_id",
                           "\"original_sale_id\" is only for refunds and voids; leave it out or "
                           "set \"kind\" to \"refund\" or \"void\"");
  if (sale->kind != SALE_KIND_SALE && !sale->original_sale_id[0])
    return sale_check_fail(check, "original_sale_id",
                           "\"original_sale_id\" is required for a %s: the sale_id of the sale "
                           "it reverses",
                           sale_kind_name(sale->kind));
  if (sale->kind != SALE_KIND_SALE && strcmp(sale->original_sale_id, sale->sale_id) == 0)
    return sale_check_fail(check, "original_sale_id",
                           "\"original_sale_id\" is this %s's own sale_id \"%s\"; it must name "
                           "the sale being reversed",
                           sale_kind_name(sale->kind), sale->sale_id);

  if (sc_get_text(check, "terminal_id", 1, "\"T1\"", sale->terminal_id) ||
      sc_get_text(check, "cashier_id", 0, "\"E042\"", sale->cashier_id) ||
      sc_parse_channel(check, sale))
    return -1;
  if (sc_get_string(check, "delivery_partner", 0, "\"PartnerName\"", &partner_text,
                    &partner_length))
    return -1;
  if (partner_text && sale->channel != SALE_CHANNEL_DELIVERY)
    return sale_check_fail(check, "delivery_partner",
                           "\"delivery_partner\" is only for \"channel\": \"delivery\", and this "
                           "sale's channel is \"%s\"",
                           sale_channel_name(sale->channel));
  if (sc_get_text(check, "delivery_partner", 0, "\"PartnerName\"", sale->delivery_partner) ||
      sc_parse_time_field(check, sale) || sc_parse_currency(check, sale) ||
      sc_parse_lines(check, sale, &lines_total) || sc_enter_sale(check) ||
      sc_parse_payments(check, sale, &payments_total) || sc_enter_sale(check) ||
      sc_get_money(check, "total", 1, SC_MONEY_NOT_NEGATIVE, &sale->total))
    return -1;

  if (lines_total != sale->total)
    return sale_check_fail(
        check, "total",
        "total is %s but the lines add up to %s (qty x unit_price - discount + tax)",
        proto_money_format(sale->total, check->exponent, total_text, sizeof(total_text)),
        proto_money_format(lines_total, check->exponent, sum_text, sizeof(sum_text)));
  if (sale->payment_count == 0 && sale->total != 0)
    return sale_check_fail(
        check, "payments",
        "\"payments\" is empty: a sale of %s needs at least one payment (only a sale with a "
        "total of 0 may have none)",
        proto_money_format(sale->total, check->exponent, total_text, sizeof(total_text)));
  if (payments_total != sale->total)
    return sale_check_fail(
        check, "payments", "the payments add up to %s but total is %s",
        proto_money_format(payments_total, check->exponent, sum_text, sizeof(sum_text)),
        proto_money_format(sale->total, check->exponent, total_text, sizeof(total_text)));
  return 0;
}
