/*
 * spool_ndjson.c - NDJSON files: one sale per line, the POS contract's JSON
 * object, as POST /v1/sales takes it alone; empty lines (or lines of
 * blanks) are skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/http/sale_json.h"
#include "ingest/spool/spool_int.h"

/* 1 when the line holds nothing but blanks. */
static int spool_ndjson_blank(const char *line, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
      return 0;
  return 1;
}

static void spool_ndjson_refuse(struct spool_error *error, int64_t line, const char *field,
                                const char *message)
{
  error->line = line;
  snprintf(error->field, sizeof(error->field), "%s", field);
  snprintf(error->message, sizeof(error->message), "%s", message);
}

static int spool_ndjson_next(void *state, struct spool_lines *in, struct sale *sale,
                             int64_t *line, struct spool_error *error)
{
  (void)state;
  for (;;) {
    const char *text;
    size_t len, count = 0;
    struct sale *sales = NULL;
    struct sale_error why;
    int is_array = 0;
    char message[256];
    int rc = spool__lines_next(in, &text, &len);

    if (rc == SPOOL_LINES_EOF)
      return 0;
    if (rc == SPOOL_LINES_TOO_LONG) {
      snprintf(message, sizeof(message), "the line is longer than %zu bytes (spool.max_line): "
               "one sale per line, or raise spool.max_line", in->max_line);
      spool_ndjson_refuse(error, in->line_no + 1, "", message);
      return -1;
    }
    if (rc == SPOOL_LINES_ENOMEM) {
      spool_ndjson_refuse(error, in->line_no + 1, "", "out of memory reading the line");
      return -1;
    }
    if (rc < 0) {
      spool_ndjson_refuse(error, in->line_no + 1, "", "the file could not be read (I/O error)");
      return -1;
    }
    if (spool_ndjson_blank(text, len))
      continue;
    *line = in->line_no;
    /* One sale per line: the same parse, rules and messages as a POST of
     * that line alone. */
    if (sale_json_parse(text, len, 1, &sales, &count, &is_array, &why)) {
      spool_ndjson_refuse(error, in->line_no, why.field, why.message);
      return -1;
    }
    if (is_array || count != 1) {
      sale_array_free(sales, count);
      spool_ndjson_refuse(error, in->line_no, "",
                          "a line of an .ndjson file holds one sale object, not an array: "
                          "write each sale on a line of its own");
      return -1;
    }
    /* The sale is moved out; only the array itself is left to free. */
    *sale = sales[0];
    free(sales);
    return 1;
  }
}

const struct spool_format spool__ndjson = {
    .name = "ndjson",
    .suffix = ".ndjson",
    .state_size = 0,
    .next = spool_ndjson_next,
};
