/*
 * sale_json.c - the POS contract's JSON: request bodies in, validated
 * sales out.
 *
 * This file knows JSON only: the body becomes a tape (sale_json_scan.c, or
 * jansson for what the scanner does not take), and each sale object on it
 * is handed to sale_read() (agent/sale/sale_check.c), which holds every rule
 * of the contract for every ingest source. What is left here is JSON's own:
 * syntax errors, unknown keys, the array form and its size, and a sale_id
 * repeated within one body.
 */
#include "ingest/http/sale_json.h"
#include "ingest/http/sale_json_int.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sale_json_value sj_value;

/* ------------------------------------------------------------------------ */
/* A sale object on the tape, as sale_read() asks for it                    */

struct sj_source {
  const struct sale_json_tape *tape;
  const sj_value *sale;    /* the sale object */
  const sj_value *current; /* the part sale_read is reading */
  const sj_value *array;   /* "lines" or "payments" of the sale, once entered */
  enum sale_part array_part;
  const sj_value *element; /* element `element_index` of `array` */
  size_t element_index;
};

static void sj_value_out(const sj_value *in, struct sale_value *out)
{
  if (!in) {
    out->type = SALE_VALUE_ABSENT;
    return;
  }
  switch ((enum sale_json_type)in->type) {
  case SALE_JSON_OBJECT:
    out->type = SALE_VALUE_OBJECT;
    break;
  case SALE_JSON_ARRAY:
    out->type = SALE_VALUE_ARRAY;
    out->count = in->count;
    break;
  case SALE_JSON_STRING:
    out->type = SALE_VALUE_TEXT;
    out->text = in->as.text;
    out->length = in->length;
    break;
  case SALE_JSON_INTEGER:
    out->type = SALE_VALUE_INTEGER;
    out->integer = in->as.integer;
    break;
  case SALE_JSON_REAL:
    out->type = SALE_VALUE_NUMBER;
    break;
  case SALE_JSON_TRUE:
    out->type = SALE_VALUE_TRUE;
    break;
  case SALE_JSON_FALSE:
    out->type = SALE_VALUE_FALSE;
    break;
  case SALE_JSON_NULL:
    out->type = SALE_VALUE_NULL;
    break;
  }
}

static void sj_source_enter(void *state, enum sale_part part, size_t index,
                            struct sale_value *object)
{
  struct sj_source *source = state;
  const struct sale_json_tape *tape = source->tape;

  if (part == SALE_PART_SALE) {
    source->current = source->sale;
  } else {
    /* Elements are asked for in order: each is one step from the last. */
    if (source->array_part != part || !source->array) {
      source->array =
          sale_json__object_get(tape, source->sale, part == SALE_PART_LINE ? "lines" : "payments");
      source->array_part = part;
      source->element = source->array + 1;
      source->element_index = 0;
    }
    while (source->element_index < index) {
      source->element = &tape->values[source->element->next];
      source->element_index++;
    }
    source->current = source->element;
  }
  sj_value_out(source->current, object);
}

static void sj_source_get(void *state, const char *key, struct sale_value *value)
{
  struct sj_source *source = state;

  sj_value_out(sale_json__object_get(source->tape, source->current, key), value);
}

/* Every key of the current object must be in `allowed`: in document order,
 * the order jansson iterated in, so the first unknown key is named. */
static int sj_source_check_fields(void *state, struct sale_check *check, const char *const *allowed,
                                  const char *allowed_text)
{
  struct sj_source *source = state;
  const sj_value *object = source->current;
  const sj_value *key = object + 1;

  for (uint32_t member = 0; member < object->count; member++) {
    size_t i = 0;
    while (allowed[i] &&
           (allowed[i][0] != key->as.text[0] || strcmp(allowed[i], key->as.text) != 0))
      i++;
    if (!allowed[i])
      return sale_check_fail(check, key->as.text, "unknown field (allowed here: %s)", allowed_text);
    key = &source->tape->values[key[1].next];
  }
  return 0;
}

static const struct sale_source sj_sale_source = {
    .syntax = SALE_SYNTAX_JSON,
    .enter = sj_source_enter,
    .get = sj_source_get,
    .check_fields = sj_source_check_fields,
};

/* ------------------------------------------------------------------------ */
/* The body                                                                 */

/* The array form's size: 0 or above max_sales is refused (-1, error set). */
static int sj_check_sale_count(struct sale_check *check, size_t count, size_t max_sales)
{
  if (count == 0)
    return sale_check_fail(check, NULL,
                           "the body is an empty array; send one sale object or an array of 1 "
                           "to %zu sales",
                           max_sales);
  if (count > max_sales)
    return sale_check_fail(check, NULL,
                           "the body has %zu sales; at most %zu are accepted per request, so "
                           "send them in smaller batches",
                           count, max_sales);
  return 0;
}

/*
 * The body the scanner did not take (or ran out of memory on: it has freed
 * what it had) is jansson's, as before there was a scanner: its syntax error
 * text, then the sale count, checked on jansson's tree before that is
 * flattened onto `tape` (which the rules only read), so that a
 * huge array never has the tree and a tape in memory at once. 0, or -1 with
 * the error set.
 */
static int sj_parse_with_jansson(struct sale_check *check, struct sale_json_tape *tape,
                                 const char *body, size_t length, size_t max_sales)
{
  json_error_t json_error;
  json_t *root = json_loadb(body, length, JSON_REJECT_DUPLICATES, &json_error);

  if (!root)
    return sale_check_fail(check, NULL, "the body is not valid JSON (line %d, column %d): %s",
                           json_error.line, json_error.column, json_error.text);
  if (json_is_array(root) && sj_check_sale_count(check, json_array_size(root), max_sales)) {
    json_decref(root);
    return -1;
  }
  if (sale_json__tape_from_json(tape, root) != SALE_JSON_SCAN_OK)
    return sale_check_fail(check, NULL,
                           "the agent ran out of memory reading a body of %zu bytes; retry later",
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
                    size_t *count, int *is_array, struct sale_error *error)
{
  struct sale_error scratch;
  struct sale_check check;
  struct sale_json_tape tape; /* on the stack: a one-sale body allocates nothing for it */
  int scan_status;
  const sj_value *sale_value;
  struct sale *parsed = NULL;
  size_t parsed_count = 0;
  int array_form = 0;
  int rc = -1;

  memset(&check, 0, sizeof(check));
  sale_json__tape_init(&tape);
  check.error = error ? error : &scratch;
  memset(check.error, 0, sizeof(*check.error));
  if (sales)
    *sales = NULL;
  if (count)
    *count = 0;
  if (is_array)
    *is_array = 0;
  if (max_sales == 0)
    max_sales = 1;
  if (!sales || !count) {
    sale_check_fail(&check, NULL,
                    "internal error: sale_json_parse needs somewhere to put the sales");
    goto out;
  }
  if (!body || length == 0) {
    sale_check_fail(&check, NULL,
                    "the request body is empty; send one sale object or an array of 1 to %zu "
                    "sales",
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
      sj_parse_with_jansson(&check, &tape, body, length, max_sales))
    goto out;

  if (tape.values[0].type == SALE_JSON_ARRAY) {
    array_form = 1;
    parsed_count = tape.values[0].count;
    if (sj_check_sale_count(&check, parsed_count, max_sales)) {
      parsed_count = 0;
      goto out;
    }
  } else {
    parsed_count = 1;
  }

  parsed = calloc(parsed_count, sizeof(*parsed));
  if (!parsed) {
    sale_check_fail(&check, NULL, "the agent ran out of memory reading %zu sales; retry later",
                    parsed_count);
    goto out;
  }
  sale_value = array_form ? &tape.values[1] : &tape.values[0];
  for (size_t i = 0; i < parsed_count; i++, sale_value = &tape.values[sale_value->next]) {
    struct sj_source source = {.tape = &tape, .sale = sale_value};
    check.in_array = array_form;
    check.sale_index = i;
    if (sale_read(&sj_sale_source, &source, &check, &parsed[i]))
      goto out;
    /* The journal dedupes across requests; within one request a repeat is a mistake. */
    for (size_t j = 0; j < i; j++) {
      if (strcmp(parsed[j].sale_id, parsed[i].sale_id) == 0) {
        sale_check_fail(
            &check, "sale_id",
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
