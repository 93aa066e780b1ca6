/*
 * spool_csvfile.c - CSV files in the spool: the layout of spool_csv.h (a
 * header, then one row per line of a sale), read through the spool's
 * bounded line reader.
 *
 * A sale is known to be complete only when the first row of the next one
 * is read (or the file ends), so the place a pass may resume from after
 * the sales returned so far is before that row, not after it: resume_point
 * says where, and the spool commits that with the sales. A pass that
 * starts past the header (a restart resuming a file) reads the header from
 * the file's start first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/spool/spool_csv.h"
#include "ingest/spool/spool_int.h"
#include "platform/log.h"

struct spool_csvfile {
  struct spool_csv *decoder;
  int header_seen;   /* the header is in the decoder */
  int finished;      /* the end of the file was given to the decoder */
  int in_sale;       /* rows of a sale not returned yet are in the decoder */
  int64_t sale_line; /* the first row of that sale */
  /* Where a pass resumes after the sales returned so far: before the row
   * the decoder holds of the next sale, or where the reader is. */
  int held;
  int64_t held_offset, held_line;
};

static void spool_csvfile_refuse(struct spool_error *error, const struct spool_csv_error *why)
{
  const char *text = why->text;
  char prefix[32];
  size_t prefix_len;

  error->line = (int64_t)why->row;
  log_format(error->field, sizeof(error->field), "%s", why->sale.field);
  if (why->sale.field[0]) {
    log_format(error->message, sizeof(error->message), "%s", why->sale.message);
    return;
  }
  /* The CSV's own problem: its text without the "row N" the reason file
   * says as "line N" already. */
  prefix_len = (size_t)snprintf(prefix, sizeof(prefix), "row %lu", why->row);
  if (strncmp(text, prefix, prefix_len) == 0) {
    text += prefix_len;
    if (text[0] == ':' || text[0] == ',')
      text++;
    if (text[0] == ' ')
      text++;
  }
  log_format(error->message, sizeof(error->message), "%s", text);
}

static void spool_csvfile_read_error(struct spool_error *error, const struct spool_lines *in,
                                     int rc)
{
  error->line = in->line_no + 1;
  error->field[0] = '\0';
  if (rc == SPOOL_LINES_TOO_LONG)
    snprintf(error->message, sizeof(error->message),
             "the row is longer than %zu bytes (spool.max_line)", in->max_line);
  else if (rc == SPOOL_LINES_ENOMEM)
    snprintf(error->message, sizeof(error->message), "out of memory reading the row");
  else
    snprintf(error->message, sizeof(error->message), "the file could not be read (I/O error)");
}

/* 1 when the row holds nothing but blanks and commas (spool_csv skips it). */
static int spool_csvfile_blank(const char *line, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != ',')
      return 0;
  return 1;
}

/* A pass that starts past the header: the header row, read from the
 * file's start into the decoder. 0, or -1 with `error` set. */
static int spool_csvfile_header(struct spool_csvfile *csv, const struct spool_lines *in,
                                struct spool_error *error)
{
  struct spool_lines head = {0}; /* lines_init reuses a buffer it finds: none here */
  struct spool_csv_error why;
  struct sale none;
  int rc = -1;

  if (spool__lines_init(&head, in->fd, in->max_line, 0, 0)) {
    spool_csvfile_read_error(error, in, SPOOL_LINES_ENOMEM);
    return -1;
  }
  for (;;) {
    const char *text;
    size_t len;
    int got = spool__lines_next(&head, &text, &len);
    if (got != SPOOL_LINES_LINE) {
      spool_csvfile_read_error(error, &head, got == SPOOL_LINES_EOF ? SPOOL_LINES_EIO : got);
      break;
    }
    if (head.offset > in->offset) {
      /* Blank up to where the pass starts: no header before it. */
      error->line = head.line_no;
      error->field[0] = '\0';
      snprintf(error->message, sizeof(error->message),
               "no header row before the position the spool resumes at");
      break;
    }
    memset(&none, 0, sizeof(none));
    if (spool_csv_feed(csv->decoder, text, len, (unsigned long)head.line_no, &none, &why) !=
        SPOOL_CSV_OK) {
      sale_clear(&none);
      spool_csvfile_refuse(error, &why);
      break;
    }
    if (!spool_csvfile_blank(text, len)) {
      rc = 0; /* the header */
      break;
    }
  }
  spool__lines_free(&head);
  return rc;
}

static int spool_csvfile_next(void *state, struct spool_lines *in, struct sale *sale, int64_t *line,
                              struct spool_error *error)
{
  struct spool_csvfile *csv = state;
  struct spool_csv_error why;

  if (!csv->decoder) {
    csv->decoder = spool_csv_create();
    if (!csv->decoder) {
      spool_csvfile_read_error(error, in, SPOOL_LINES_ENOMEM);
      return -1;
    }
    /* At the file's start the header is simply its first row that is not
     * blank; past it, it is read from there first. */
    if (in->offset > 0) {
      if (spool_csvfile_header(csv, in, error))
        return -1;
      csv->header_seen = 1;
    }
  }
  csv->held = 0;
  if (csv->finished)
    return 0;
  for (;;) {
    const char *text;
    size_t len;
    int64_t before_offset = in->offset, before_line = in->line_no;
    int rc = spool__lines_next(in, &text, &len);

    if (rc == SPOOL_LINES_EOF) {
      csv->finished = 1;
      memset(sale, 0, sizeof(*sale));
      rc = spool_csv_finish(csv->decoder, sale, &why);
      if (rc == SPOOL_CSV_SALE) {
        *line = csv->sale_line;
        return 1;
      }
      if (rc == SPOOL_CSV_OK)
        return 0;
      spool_csvfile_refuse(error, &why);
      return -1;
    }
    if (rc < 0) {
      spool_csvfile_read_error(error, in, rc);
      return -1;
    }
    memset(sale, 0, sizeof(*sale));
    rc = spool_csv_feed(csv->decoder, text, len, (unsigned long)in->line_no, sale, &why);
    if (rc == SPOOL_CSV_SALE) {
      /* This row starts the next sale: the one returned ends before it. */
      *line = csv->sale_line;
      csv->sale_line = in->line_no;
      csv->held = 1;
      csv->held_offset = before_offset;
      csv->held_line = before_line;
      return 1;
    }
    if (rc != SPOOL_CSV_OK) {
      spool_csvfile_refuse(error, &why);
      return -1;
    }
    /* The header is the first row that is not blank; the first row after
     * it starts the first sale. */
    if (spool_csvfile_blank(text, len))
      continue;
    if (!csv->header_seen) {
      csv->header_seen = 1;
      continue;
    }
    if (!csv->in_sale) {
      csv->in_sale = 1;
      csv->sale_line = in->line_no;
    }
  }
}

static void spool_csvfile_resume_point(void *state, const struct spool_lines *in, int64_t *offset,
                                       int64_t *line)
{
  const struct spool_csvfile *csv = state;

  *offset = csv->held ? csv->held_offset : in->offset;
  *line = csv->held ? csv->held_line : in->line_no;
}

static void spool_csvfile_free(void *state)
{
  struct spool_csvfile *csv = state;

  spool_csv_destroy(csv->decoder);
  csv->decoder = NULL;
}

const struct spool_format spool__csv = {
    .name = "csv",
    .suffix = ".csv",
    .state_size = sizeof(struct spool_csvfile),
    .next = spool_csvfile_next,
    .resume_point = spool_csvfile_resume_point,
    .free_state = spool_csvfile_free,
};
