/*
 * sale_json_int.h - the JSON tape that sale_json.c's rules read, for
 * sale_json.c, sale_json_scan.c and their tests only.
 *
 * A request body becomes a flat array of values in document order: an object
 * is followed by its members, each a key (a string value) and then the value
 * with everything inside it; an array is followed by its elements. Every
 * value knows the index just past itself and its contents (`next`), so a
 * reader skips a member without looking inside it.
 *
 * Two ways fill a tape. sale_json__scan() reads the common well-formed body
 * in one pass, with no allocation per value and no copy of a string: the
 * body is copied once and each string is NUL-terminated (and its escapes
 * decoded) in place. Anything it does not take (an escape jansson refuses,
 * numbers with a fraction or exponent, syntax errors, duplicate keys, its
 * limits) it hands back, and jansson parses the body instead;
 * sale_json__tape_from_json() then flattens jansson's tree into
 * the same tape. So every syntax error keeps jansson's text, and the rules
 * see one shape whichever way the body came in.
 */
#ifndef AGENT_SALE_JSON_INT_H
#define AGENT_SALE_JSON_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Values kept inside the tape itself (a one-sale body needs about 80), and
 * the body bytes the scanner copies without a malloc. */
#define SALE_JSON_TAPE_INLINE 256
#define SALE_JSON_TEXT_INLINE 2048
/* The scanner sizes a tape for a body of n bytes at n / SALE_JSON_BYTES_PER_VALUE
 * values up front, at most SALE_JSON_TAPE_PRESIZE_MAX (1.5 MB); past that it doubles. */
#define SALE_JSON_BYTES_PER_VALUE 8
#define SALE_JSON_TAPE_PRESIZE_MAX 65536
/* The scanner's own limits; past them, jansson decides. */
#define SALE_JSON_SCAN_DEPTH_MAX 32
#define SALE_JSON_SCAN_KEYS_MAX 32
#define SALE_JSON_SCAN_DIGITS_MAX 18

enum sale_json_type {
  SALE_JSON_OBJECT = 1,
  SALE_JSON_ARRAY,
  SALE_JSON_STRING,
  SALE_JSON_INTEGER,
  SALE_JSON_REAL, /* only from jansson: the scanner hands reals back */
  SALE_JSON_TRUE,
  SALE_JSON_FALSE,
  SALE_JSON_NULL,
};

struct sale_json_value {
  uint8_t type;    /* enum sale_json_type */
  uint32_t count;  /* object: members; array: elements; else 0 */
  uint32_t next;   /* index just past this value and everything inside it */
  uint32_t length; /* string: bytes, without the terminating NUL */
  union {
    /* string and key: NUL-terminated, and no NUL inside (\u0000 is refused by
     * both ways in: JSON_ALLOW_NUL is not set) */
    const char *text;
    long long integer; /* integer */
  } as;
};

struct sale_json_tape {
  struct sale_json_value *values; /* values_inline or a malloc'd array */
  size_t count;
  size_t capacity;
  char *text; /* the scanner's copy of the body: text_inline or malloc'd */
  json_t *root; /* jansson's tree when the body went that way; owned */
  /* A top-level array of more elements than this (sale_json_parse sets its
   * max_sales: such a body is refused anyway) keeps its count, but only its
   * first top_max elements are on the tape: the rest are checked and
   * dropped, so that no tape the body's size is built for it. SIZE_MAX
   * after sale_json__tape_init. */
  size_t top_max;
  unsigned grows; /* times the values moved to a larger array (for tests) */
  struct sale_json_value values_inline[SALE_JSON_TAPE_INLINE];
  char text_inline[SALE_JSON_TEXT_INLINE];
};

enum sale_json_scan_status {
  SALE_JSON_SCAN_OK = 0,
  SALE_JSON_SCAN_FALLBACK = -1, /* not taken: let jansson parse the body */
  SALE_JSON_SCAN_NOMEM = -2,
};

/* Makes an empty tape. The tape is large (inline buffers): it is meant to
 * live on the stack of one parse. */
void sale_json__tape_init(struct sale_json_tape *tape);

/* Frees what the tape allocated (and jansson's tree) and empties it. */
void sale_json__tape_release(struct sale_json_tape *tape);

/*
 * Scans `body` (`length` bytes, borrowed, need not be NUL-terminated) onto an
 * empty tape. SALE_JSON_SCAN_OK: the tape holds exactly what jansson
 * (json_loadb with JSON_REJECT_DUPLICATES) would have built, in document
 * order (but see top_max); its strings point into the tape's own copy of
 * the body.
 * SALE_JSON_SCAN_FALLBACK: the body is not in the common form this scanner
 * takes, the tape is empty again, and jansson must decide (it may well
 * accept). SALE_JSON_SCAN_NOMEM: out of memory, the tape is empty again and
 * has freed what it took (sale_json_parse then lets jansson try). Any thread.
 */
int sale_json__scan(struct sale_json_tape *tape, const char *body, size_t length);

/*
 * Flattens jansson's tree `root` onto an empty tape and takes ownership of
 * it (freed by sale_json__tape_release, also on failure). Objects come out
 * in jansson's iteration order, which is insertion order, hence document
 * order. Returns 0, or SALE_JSON_SCAN_NOMEM.
 */
int sale_json__tape_from_json(struct sale_json_tape *tape, json_t *root);

/* The value of `key` in the object at `object`, or NULL. */
const struct sale_json_value *sale_json__object_get(const struct sale_json_tape *tape,
                                                    const struct sale_json_value *object,
                                                    const char *key);

/*
 * Compares two tapes value by value (type, counts, structure, bytes of every
 * string, integers). Returns -1 if equal, else the index of the first value
 * that differs. For the differential tests of the scanner against jansson.
 */
long sale_json__tape_diff(const struct sale_json_tape *a, const struct sale_json_tape *b);

#endif
