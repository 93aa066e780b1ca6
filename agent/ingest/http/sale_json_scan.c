/*
 * sale_json_scan.c - request bodies onto the JSON tape (sale_json_int.h).
 *
 * jansson makes a node, a malloc, per value, a hashtable per object and a
 * copy of every key and string; for a sale of a few hundred bytes that was
 * the larger part of the agent's CPU per sale. The body a till sends is
 * almost always plain: objects and arrays, strings, integers. Its strings
 * may hold the escapes that encoders write by default (.NET's \u002B for
 * '+', Python's \uXXXX for non-ASCII): they are decoded in place. This
 * scanner takes exactly that in one pass into a flat tape, and hands
 * anything else back so that jansson decides it, with jansson's
 * own error text. It never accepts what jansson would refuse, and what it
 * accepts reads the same as jansson's tree (the fuzzer checks both).
 */
#include "ingest/http/sale_json_int.h"
#include "sale/sale_check.h"

#include <stdlib.h>
#include <string.h>

void sale_json__tape_init(struct sale_json_tape *tape)
{
  tape->values = tape->values_inline;
  tape->count = 0;
  tape->capacity = SALE_JSON_TAPE_INLINE;
  tape->text = NULL;
  tape->root = NULL;
  tape->top_max = SIZE_MAX;
  tape->grows = 0;
}

void sale_json__tape_release(struct sale_json_tape *tape)
{
  if (tape->values != tape->values_inline)
    free(tape->values);
  if (tape->text != tape->text_inline)
    free(tape->text);
  json_decref(tape->root);
  {
    size_t top_max = tape->top_max; /* a setting, not content: kept */
    sale_json__tape_init(tape);
    tape->top_max = top_max;
  }
}

/* Moves the tape's values to a malloc'd array of `capacity`; -1 when out of memory. */
static int sj_tape_reserve(struct sale_json_tape *tape, size_t capacity)
{
  struct sale_json_value *grown;

  /* The tape's indexes are 32 bits wide, and capacity * sizeof must not wrap. */
  if (capacity >= UINT32_MAX || capacity > SIZE_MAX / sizeof(*grown))
    return -1;
  grown = malloc(capacity * sizeof(*grown));
  if (!grown)
    return -1;
  memcpy(grown, tape->values, tape->count * sizeof(*grown));
  if (tape->values != tape->values_inline)
    free(tape->values);
  tape->values = grown;
  tape->capacity = capacity;
  tape->grows++;
  return 0;
}

/* Doubles the tape's room for values; -1 when out of memory. */
static int sj_tape_grow(struct sale_json_tape *tape)
{
  if (tape->capacity > SIZE_MAX / 2 / sizeof(*tape->values))
    return -1;
  return sj_tape_reserve(tape, tape->capacity * 2);
}

/* Appends a value; returns its index, or -1 when out of memory. */
static inline long sj_tape_push(struct sale_json_tape *tape, enum sale_json_type type)
{
  struct sale_json_value *value;

  if (tape->count == tape->capacity && sj_tape_grow(tape))
    return -1;
  value = &tape->values[tape->count];
  memset(value, 0, sizeof(*value));
  value->type = (uint8_t)type;
  value->next = (uint32_t)(tape->count + 1);
  return (long)tape->count++;
}

/* ------------------------------------------------------------------------ */
/* The scanner                                                              */

struct sj_scan {
  struct sale_json_tape *tape;
  char *p;   /* next byte; the copy is NUL-terminated at `end` */
  char *end;
  size_t top_mark; /* the tape's count after the top-level array's top_max-th element */
  int nomem;
};

static void sj_skip_space(struct sj_scan *scan)
{
  while (scan->p < scan->end &&
         (*scan->p == ' ' || *scan->p == '\n' || *scan->p == '\r' || *scan->p == '\t'))
    scan->p++;
}

/*
 * Length of the valid UTF-8 sequence at `s` that starts with a byte >= 0x80,
 * or 0: jansson's rules (no overlong form, no surrogate, nothing above
 * U+10FFFF), which are the rules' own (sale_utf8_next).
 */
static size_t sj_utf8_length(const unsigned char *s, const unsigned char *end)
{
  uint32_t code_point;

  return sale_utf8_next(s, (size_t)(end - s), &code_point);
}

/*
 * 1 for the bytes that end a run of plain string bytes: control characters
 * (the NUL at the end of the copy among them), '"', '\\', and every byte of
 * a UTF-8 sequence, which is then checked on its own.
 */
static const unsigned char sj_string_stop[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x30 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x40 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x60 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x70 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x80 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x90 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xa0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xb0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xc0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xd0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xe0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xf0 */
};

/* The value of 4 hex digits at `s`, or -1. Stops at the first non-digit, so
 * it never reads past the NUL that ends the copy. */
static long sj_hex4(const unsigned char *s)
{
  long value = 0;

  for (int i = 0; i < 4; i++) {
    unsigned char c = s[i];
    int digit;
    if (c >= '0' && c <= '9')
      digit = c - '0';
    else if (c >= 'a' && c <= 'f')
      digit = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      digit = c - 'A' + 10;
    else
      return -1;
    value = value * 16 + digit;
  }
  return value;
}

/*
 * Decodes the escape at `q` (on its backslash) into `w`, which is at or
 * before `q`: the decoded form is never longer. Returns the escape's length
 * in the body, or 0 for what jansson refuses (an unknown escape, a bad hex
 * digit, \u0000 without JSON_ALLOW_NUL, a lone or reversed surrogate): the
 * body then falls back, and jansson's text names the fault. *written gets
 * the bytes written.
 */
static size_t sj_unescape(const unsigned char *q, unsigned char *w, size_t *written)
{
  static const char simple_from[] = "\"\\/bfnrt", simple_to[] = "\"\\/\b\f\n\r\t";
  const char *simple = q[1] ? strchr(simple_from, q[1]) : NULL;
  long code, low;
  size_t used = 6;

  if (simple) {
    *w = (unsigned char)simple_to[simple - simple_from];
    *written = 1;
    return 2;
  }
  if (q[1] != 'u' || (code = sj_hex4(q + 2)) <= 0 || (code >= 0xdc00 && code <= 0xdfff))
    return 0;
  if (code >= 0xd800 && code <= 0xdbff) {
    if (q[6] != '\\' || q[7] != 'u' || (low = sj_hex4(q + 8)) < 0xdc00 || low > 0xdfff)
      return 0;
    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
    used = 12;
  }
  if (code < 0x80) {
    w[0] = (unsigned char)code;
    *written = 1;
  } else if (code < 0x800) {
    w[0] = (unsigned char)(0xc0 | (code >> 6));
    w[1] = (unsigned char)(0x80 | (code & 0x3f));
    *written = 2;
  } else if (code < 0x10000) {
    w[0] = (unsigned char)(0xe0 | (code >> 12));
    w[1] = (unsigned char)(0x80 | ((code >> 6) & 0x3f));
    w[2] = (unsigned char)(0x80 | (code & 0x3f));
    *written = 3;
  } else {
    w[0] = (unsigned char)(0xf0 | (code >> 18));
    w[1] = (unsigned char)(0x80 | ((code >> 12) & 0x3f));
    w[2] = (unsigned char)(0x80 | ((code >> 6) & 0x3f));
    w[3] = (unsigned char)(0x80 | (code & 0x3f));
    *written = 4;
  }
  return used;
}

/*
 * A string at scan->p (on its opening quote): pushed with its bytes
 * NUL-terminated in place. Escapes are decoded in place too, from the first
 * one on, so a string without any is never moved. Returns its index, or -1
 * to fall back (a control character, bad UTF-8, an escape jansson refuses).
 */
static long sj_scan_string(struct sj_scan *scan)
{
  unsigned char *start = (unsigned char *)scan->p + 1;
  unsigned char *q = start;
  unsigned char *w = NULL; /* where decoded bytes go, once an escape was seen */
  const unsigned char *end = (const unsigned char *)scan->end;
  long index;

  for (;;) {
    unsigned char *run = q;
    size_t step;
    /* Plain ASCII runs without a bounds check: the copy ends in a NUL, which
     * stops this loop like any control character. */
    while (!sj_string_stop[*q])
      q++;
    if (w && q > run) {
      memmove(w, run, (size_t)(q - run));
      w += q - run;
    }
    if (q >= end || *q < 0x20)
      return -1;
    if (*q == '"')
      break;
    if (*q == '\\') {
      size_t written;
      if (!w)
        w = q;
      step = sj_unescape(q, w, &written);
      if (step == 0)
        return -1;
      w += written;
    } else {
      step = sj_utf8_length(q, end);
      if (step == 0)
        return -1;
      if (w) {
        memmove(w, q, step);
        w += step;
      }
    }
    q += step;
  }
  scan->p = (char *)q + 1;
  if (w)
    q = w;
  if ((size_t)(q - start) > UINT32_MAX)
    return -1;
  index = sj_tape_push(scan->tape, SALE_JSON_STRING);
  if (index < 0) {
    scan->nomem = 1;
    return -1;
  }
  *q = '\0';
  scan->tape->values[index].as.text = (const char *)start;
  scan->tape->values[index].length = (uint32_t)(q - start);
  return index;
}

/* An integer of at most SALE_JSON_SCAN_DIGITS_MAX digits; 0 or -1 to fall back. */
static int sj_scan_integer(struct sj_scan *scan)
{
  const char *q = scan->p;
  int negative = 0;
  unsigned digits = 0;
  long long value = 0;
  long index;

  if (*q == '-') {
    negative = 1;
    q++;
  }
  if (q < scan->end && *q == '0' && q + 1 < scan->end && q[1] >= '0' && q[1] <= '9')
    return -1; /* a leading zero: jansson's error */
  for (; q < scan->end && *q >= '0' && *q <= '9'; q++) {
    if (++digits > SALE_JSON_SCAN_DIGITS_MAX)
      return -1;
    value = value * 10 + (*q - '0');
  }
  if (digits == 0 || (q < scan->end && (*q == '.' || *q == 'e' || *q == 'E')))
    return -1;
  index = sj_tape_push(scan->tape, SALE_JSON_INTEGER);
  if (index < 0) {
    scan->nomem = 1;
    return -1;
  }
  scan->tape->values[index].as.integer = negative ? -value : value;
  scan->p = (char *)q;
  return 0;
}

/* true, false or null; 0 or -1 to fall back. What follows is checked by the caller. */
static int sj_scan_literal(struct sj_scan *scan)
{
  static const struct {
    const char *text;
    size_t length;
    enum sale_json_type type;
  } literals[] = {{"true", 4, SALE_JSON_TRUE}, {"false", 5, SALE_JSON_FALSE},
                  {"null", 4, SALE_JSON_NULL}};

  for (size_t i = 0; i < sizeof(literals) / sizeof(literals[0]); i++) {
    if ((size_t)(scan->end - scan->p) < literals[i].length ||
        memcmp(scan->p, literals[i].text, literals[i].length) != 0)
      continue;
    if (sj_tape_push(scan->tape, literals[i].type) < 0) {
      scan->nomem = 1;
      return -1;
    }
    scan->p += literals[i].length;
    return 0;
  }
  return -1;
}

/*
 * A key of the object at `object` and its ':'. Duplicates fall back, so
 * that jansson names them; so do objects with more keys than the linear
 * compare is meant for.
 */
static int sj_scan_key(struct sj_scan *scan, long object)
{
  struct sale_json_tape *tape = scan->tape;
  size_t member = (size_t)object + 1;
  const struct sale_json_value *key;
  long index;

  if (scan->p >= scan->end || *scan->p != '"' ||
      tape->values[object].count >= SALE_JSON_SCAN_KEYS_MAX)
    return -1;
  index = sj_scan_string(scan);
  if (index < 0)
    return -1;
  key = &tape->values[index];
  for (uint32_t i = 0; i < tape->values[object].count; i++) {
    const struct sale_json_value *other = &tape->values[member];
    /* The first byte settles most pairs without a call. */
    if (other->length == key->length && other->as.text[0] == key->as.text[0] &&
        memcmp(other->as.text, key->as.text, key->length) == 0)
      return -1;
    member = tape->values[member + 1].next;
  }
  sj_skip_space(scan);
  if (scan->p >= scan->end || *scan->p != ':')
    return -1;
  scan->p++;
  sj_skip_space(scan);
  return 0;
}

/* Opens an object or array at scan->p; 1 if it closes at once, 0, or -1. */
static int sj_scan_open(struct sj_scan *scan, long *open, int *depth)
{
  int is_object = *scan->p == '{';
  long index;

  if (*depth == SALE_JSON_SCAN_DEPTH_MAX)
    return -1;
  index = sj_tape_push(scan->tape, is_object ? SALE_JSON_OBJECT : SALE_JSON_ARRAY);
  if (index < 0) {
    scan->nomem = 1;
    return -1;
  }
  scan->p++;
  sj_skip_space(scan);
  if (scan->p < scan->end && *scan->p == (is_object ? '}' : ']')) {
    scan->p++;
    return 1;
  }
  open[(*depth)++] = index;
  if (is_object)
    return sj_scan_key(scan, index);
  return 0;
}

/*
 * After a value: counts it in its container, then takes ',' (and the next
 * key), or the container's closer (and goes on with the container as the
 * value just finished). Returns 0 when another value follows, 1 when the
 * top level is done, -1 to fall back.
 */
static int sj_scan_after_value(struct sj_scan *scan, long *open, int *depth)
{
  struct sale_json_tape *tape = scan->tape;

  for (;;) {
    struct sale_json_value *container;
    sj_skip_space(scan);
    if (*depth == 0)
      return scan->p == scan->end ? 1 : -1;
    container = &tape->values[open[*depth - 1]];
    container->count++;
    /* Past top_max elements the array is only checked and counted: each
     * further element is dropped from the tape once read. */
    if (*depth == 1 && container->type == SALE_JSON_ARRAY) {
      if (container->count == tape->top_max)
        scan->top_mark = tape->count;
      else if (container->count > tape->top_max)
        tape->count = scan->top_mark;
    }
    if (scan->p >= scan->end)
      return -1;
    if (*scan->p == ',') {
      scan->p++;
      sj_skip_space(scan);
      if (container->type == SALE_JSON_OBJECT)
        return sj_scan_key(scan, open[*depth - 1]);
      return 0;
    }
    if (*scan->p != (container->type == SALE_JSON_OBJECT ? '}' : ']'))
      return -1;
    scan->p++;
    container->next = (uint32_t)tape->count;
    (*depth)--;
  }
}

/* One value at scan->p, then what follows it: 0 for more, 1 done, -1 fall back. */
static int sj_scan_value(struct sj_scan *scan, long *open, int *depth)
{
  int rc;

  if (scan->p >= scan->end)
    return -1;
  switch (*scan->p) {
  case '{':
  case '[':
    rc = sj_scan_open(scan, open, depth);
    if (rc != 1)
      return rc; /* 0: the first member or element comes next */
    break;
  case '"':
    if (sj_scan_string(scan) < 0)
      return -1;
    break;
  case 't':
  case 'f':
  case 'n':
    if (sj_scan_literal(scan))
      return -1;
    break;
  default:
    if (*scan->p != '-' && (*scan->p < '0' || *scan->p > '9'))
      return -1;
    if (sj_scan_integer(scan))
      return -1;
    break;
  }
  return sj_scan_after_value(scan, open, depth);
}

int sale_json__scan(struct sale_json_tape *tape, const char *body, size_t length)
{
  struct sj_scan scan;
  long open[SALE_JSON_SCAN_DEPTH_MAX];
  int depth = 0;
  int rc;

  /* No body (NULL, 0) is jansson's to refuse; memcpy from NULL is undefined. */
  if (length == 0 || length >= UINT32_MAX)
    return SALE_JSON_SCAN_FALLBACK;
  tape->text = length < SALE_JSON_TEXT_INLINE ? tape->text_inline : malloc(length + 1);
  if (!tape->text)
    return SALE_JSON_SCAN_NOMEM;
  memcpy(tape->text, body, length);
  tape->text[length] = '\0';
  /* A compact sale is about 8 bytes per value: room for that at once spares a
   * 100-sale body five rounds of grow-and-copy. Bounded, as the body is not
   * yet known to be JSON at all. */
  if (length / SALE_JSON_BYTES_PER_VALUE > tape->capacity &&
      sj_tape_reserve(tape, length / SALE_JSON_BYTES_PER_VALUE < SALE_JSON_TAPE_PRESIZE_MAX
                                ? length / SALE_JSON_BYTES_PER_VALUE
                                : SALE_JSON_TAPE_PRESIZE_MAX)) {
    rc = SALE_JSON_SCAN_NOMEM;
    goto out;
  }
  scan.tape = tape;
  scan.p = tape->text;
  scan.end = tape->text + length;
  scan.nomem = 0;
  scan.top_mark = 1; /* the array is at 0: right for a top_max of 0 too */

  sj_skip_space(&scan);
  /* Only an object or an array at the top, as json_loadb without JSON_DECODE_ANY. */
  if (scan.p >= scan.end || (*scan.p != '{' && *scan.p != '[')) {
    rc = SALE_JSON_SCAN_FALLBACK;
    goto out;
  }
  do {
    rc = sj_scan_value(&scan, open, &depth);
  } while (rc == 0);
  rc = rc == 1 ? SALE_JSON_SCAN_OK : SALE_JSON_SCAN_FALLBACK;
  if (scan.nomem)
    rc = SALE_JSON_SCAN_NOMEM;
out:
  if (rc != SALE_JSON_SCAN_OK)
    sale_json__tape_release(tape);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* From jansson                                                             */

static int sj_flatten(struct sale_json_tape *tape, json_t *value, const char *key)
{
  long index;

  if (key) {
    size_t length = strlen(key);
    index = sj_tape_push(tape, SALE_JSON_STRING);
    if (index < 0 || length > UINT32_MAX)
      return SALE_JSON_SCAN_NOMEM;
    tape->values[index].as.text = key;
    tape->values[index].length = (uint32_t)length;
  }
  switch (json_typeof(value)) {
  case JSON_OBJECT: {
    const char *member_key;
    json_t *member;
    index = sj_tape_push(tape, SALE_JSON_OBJECT);
    if (index < 0)
      return SALE_JSON_SCAN_NOMEM;
    json_object_foreach(value, member_key, member)
    {
      if (sj_flatten(tape, member, member_key))
        return SALE_JSON_SCAN_NOMEM;
      tape->values[index].count++;
    }
    tape->values[index].next = (uint32_t)tape->count;
    return 0;
  }
  case JSON_ARRAY: {
    size_t i;
    json_t *element;
    index = sj_tape_push(tape, SALE_JSON_ARRAY);
    if (index < 0)
      return SALE_JSON_SCAN_NOMEM;
    json_array_foreach(value, i, element)
    {
      if (sj_flatten(tape, element, NULL))
        return SALE_JSON_SCAN_NOMEM;
      tape->values[index].count++;
    }
    tape->values[index].next = (uint32_t)tape->count;
    return 0;
  }
  case JSON_STRING:
    index = sj_tape_push(tape, SALE_JSON_STRING);
    if (index < 0 || json_string_length(value) > UINT32_MAX)
      return SALE_JSON_SCAN_NOMEM;
    tape->values[index].as.text = json_string_value(value);
    tape->values[index].length = (uint32_t)json_string_length(value);
    return 0;
  case JSON_INTEGER:
    index = sj_tape_push(tape, SALE_JSON_INTEGER);
    if (index < 0)
      return SALE_JSON_SCAN_NOMEM;
    tape->values[index].as.integer = json_integer_value(value);
    return 0;
  case JSON_REAL:
    return sj_tape_push(tape, SALE_JSON_REAL) < 0 ? SALE_JSON_SCAN_NOMEM : 0;
  case JSON_TRUE:
    return sj_tape_push(tape, SALE_JSON_TRUE) < 0 ? SALE_JSON_SCAN_NOMEM : 0;
  case JSON_FALSE:
    return sj_tape_push(tape, SALE_JSON_FALSE) < 0 ? SALE_JSON_SCAN_NOMEM : 0;
  case JSON_NULL:
    return sj_tape_push(tape, SALE_JSON_NULL) < 0 ? SALE_JSON_SCAN_NOMEM : 0;
  }
  return SALE_JSON_SCAN_NOMEM;
}

int sale_json__tape_from_json(struct sale_json_tape *tape, json_t *root)
{
  int rc;

  tape->root = root;
  /* jansson nests at most 2048 deep, so the recursion is bounded. */
  rc = sj_flatten(tape, root, NULL);
  if (rc)
    sale_json__tape_release(tape);
  return rc;
}

const struct sale_json_value *sale_json__object_get(const struct sale_json_tape *tape,
                                                    const struct sale_json_value *object,
                                                    const char *key)
{
  size_t key_length = strlen(key);
  size_t member = (size_t)(object - tape->values) + 1;

  for (uint32_t i = 0; i < object->count; i++) {
    const struct sale_json_value *name = &tape->values[member];
    if (name->length == key_length && name->as.text[0] == key[0] &&
        memcmp(name->as.text, key, key_length) == 0)
      return name + 1;
    member = name[1].next;
  }
  return NULL;
}

long sale_json__tape_diff(const struct sale_json_tape *a, const struct sale_json_tape *b)
{
  size_t count = a->count < b->count ? a->count : b->count;

  for (size_t i = 0; i < count; i++) {
    const struct sale_json_value *x = &a->values[i], *y = &b->values[i];
    if (x->type != y->type || x->count != y->count || x->next != y->next)
      return (long)i;
    if (x->type == SALE_JSON_STRING &&
        (x->length != y->length || memcmp(x->as.text, y->as.text, x->length) != 0))
      return (long)i;
    if (x->type == SALE_JSON_INTEGER && x->as.integer != y->as.integer)
      return (long)i;
  }
  return a->count == b->count ? -1 : (long)count;
}
