/*
 * csv.c - CSV lines into fields (see csv.h).
 *
 * Written by hand: no CSV library is among our dependencies, and what we
 * need is small and strict. A field is read byte by byte into the row's
 * fixed storage, so a line costs no allocation and no field can grow past
 * its bound; fields past max_fields are still read (and checked) so that
 * the error about them can say how many the line has.
 */
#include "platform/csv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct csv_row {
  size_t max_fields;
  size_t max_field_length;
  size_t count;   /* fields on the last line split, even past max_fields */
  size_t *length; /* max_fields entries */
  char *storage;  /* max_fields slots of max_field_length + 1 bytes */
};

/* Where the splitter is in a line. */
struct csv_cursor {
  struct csv_row *row;
  const char *line;
  size_t length;
  size_t pos;
  struct csv_error *error;
};

struct csv_row *csv_row_create(size_t max_fields, size_t max_field_length)
{
  struct csv_row *row = NULL;

  if (max_fields == 0 || max_field_length == 0 ||
      max_field_length + 1 > (size_t)-1 / max_fields / 2)
    return NULL;
  row = calloc(1, sizeof(*row));
  if (!row)
    return NULL;
  row->max_fields = max_fields;
  row->max_field_length = max_field_length;
  row->length = calloc(max_fields, sizeof(*row->length));
  row->storage = malloc(max_fields * (max_field_length + 1));
  if (!row->length || !row->storage) {
    csv_row_destroy(row);
    return NULL;
  }
  return row;
}

void csv_row_destroy(struct csv_row *row)
{
  if (!row)
    return;
  free(row->length);
  free(row->storage);
  free(row);
}

size_t csv_row_count(const struct csv_row *row)
{
  return row->count;
}

const char *csv_row_field(const struct csv_row *row, size_t index, size_t *length)
{
  if (index >= row->count || index >= row->max_fields)
    return NULL;
  if (length)
    *length = row->length[index];
  return row->storage + index * (row->max_field_length + 1);
}

static int csv_fail(struct csv_cursor *cursor, enum csv_status status, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Records a problem with the field being read (the row's count + 1). */
static int csv_fail(struct csv_cursor *cursor, enum csv_status status, const char *format, ...)
{
  va_list args;

  if (!cursor->error)
    return status;
  cursor->error->status = status;
  cursor->error->field = cursor->row->count + 1;
  cursor->error->fields_on_line = 0;
  va_start(args, format);
  vsnprintf(cursor->error->message, sizeof(cursor->error->message), format, args);
  va_end(args);
  return status;
}

static int csv_is_break(char c)
{
  return c == '\n' || c == '\r';
}

static int csv_at_end(const struct csv_cursor *cursor)
{
  return cursor->pos >= cursor->length;
}

static void csv_skip_blanks(struct csv_cursor *cursor)
{
  while (!csv_at_end(cursor) &&
         (cursor->line[cursor->pos] == ' ' || cursor->line[cursor->pos] == '\t'))
    cursor->pos++;
}

static int csv_break_inside(struct csv_cursor *cursor)
{
  return csv_fail(cursor, CSV_EBREAK,
                  "has a line break (%s) inside the line; a field cannot hold one, and each line "
                  "ends with LF or CRLF",
                  cursor->line[cursor->pos] == '\r' ? "CR" : "LF");
}

/* Appends one byte to the field being read: NUL bytes and overlong fields are
 * refused, fields past max_fields are checked but not kept. */
static int csv_put(struct csv_cursor *cursor, size_t *used, char c)
{
  struct csv_row *row = cursor->row;

  if (c == '\0')
    return csv_fail(cursor, CSV_ENUL, "contains a NUL byte; save the file as plain text");
  if (*used >= row->max_field_length)
    return csv_fail(cursor, CSV_ELONG, "is longer than %zu characters", row->max_field_length);
  if (row->count < row->max_fields)
    row->storage[row->count * (row->max_field_length + 1) + *used] = c;
  (*used)++;
  return 0;
}

/* A quoted field: from the opening quote to the closing one, on this line. */
static int csv_quoted(struct csv_cursor *cursor, size_t *used)
{
  const char *line = cursor->line;
  int rc;

  cursor->pos++; /* the opening quote */
  for (;;) {
    if (csv_at_end(cursor))
      return csv_fail(cursor, CSV_EQUOTE_OPEN,
                      "a quoted field is not closed before the end of the line; add the "
                      "closing \" (a field cannot span lines)");
    if (csv_is_break(line[cursor->pos]))
      return csv_break_inside(cursor);
    if (line[cursor->pos] == '"') {
      if (cursor->pos + 1 < cursor->length && line[cursor->pos + 1] == '"') {
        rc = csv_put(cursor, used, '"');
        if (rc)
          return rc;
        cursor->pos += 2;
        continue;
      }
      cursor->pos++;
      break;
    }
    rc = csv_put(cursor, used, line[cursor->pos++]);
    if (rc)
      return rc;
  }
  csv_skip_blanks(cursor);
  if (csv_at_end(cursor) || line[cursor->pos] == ',')
    return 0;
  if (csv_is_break(line[cursor->pos]))
    return csv_break_inside(cursor);
  return csv_fail(cursor, CSV_EQUOTE_AFTER,
                  "text after the closing quote; quote the whole field, or nothing");
}

/* One field up to ',' or the line's end; an unquoted one loses the blanks around it. */
static int csv_field(struct csv_cursor *cursor)
{
  struct csv_row *row = cursor->row;
  int stored = row->count < row->max_fields;
  char *text = stored ? row->storage + row->count * (row->max_field_length + 1) : NULL;
  size_t used = 0;
  int rc = 0;

  csv_skip_blanks(cursor);
  if (!csv_at_end(cursor) && cursor->line[cursor->pos] == '"') {
    rc = csv_quoted(cursor, &used);
  } else {
    while (!rc && !csv_at_end(cursor) && cursor->line[cursor->pos] != ',') {
      char c = cursor->line[cursor->pos];
      if (csv_is_break(c))
        return csv_break_inside(cursor);
      if (c == '"')
        return csv_fail(cursor, CSV_EQUOTE_INSIDE,
                        "a quote inside an unquoted field; quote the whole field");
      rc = csv_put(cursor, &used, c);
      cursor->pos++;
    }
    while (stored && used > 0 && (text[used - 1] == ' ' || text[used - 1] == '\t'))
      used--;
  }
  if (rc)
    return rc;
  if (stored) {
    text[used] = '\0';
    row->length[row->count] = used;
  }
  row->count++;
  return 0;
}

int csv_split(struct csv_row *row, const char *line, size_t length, struct csv_error *error)
{
  struct csv_cursor cursor = {.row = row, .line = line, .length = length, .error = error};
  int rc;

  /* The line's own end is not data; any other CR or LF is refused below. */
  if (cursor.length > 0 && line[cursor.length - 1] == '\n')
    cursor.length--;
  if (cursor.length > 0 && line[cursor.length - 1] == '\r')
    cursor.length--;
  row->count = 0;
  for (;;) {
    rc = csv_field(&cursor);
    if (rc)
      return rc;
    if (csv_at_end(&cursor))
      break;
    cursor.pos++; /* the comma */
  }
  if (row->count > row->max_fields) {
    size_t on_line = row->count;
    row->count = row->max_fields;
    csv_fail(&cursor, CSV_EFIELDS,
             "the line has %zu fields; at most %zu are expected (quote a field that contains a "
             "comma)",
             on_line, row->max_fields);
    if (error)
      error->fields_on_line = on_line;
    return CSV_EFIELDS;
  }
  return CSV_OK;
}

int csv_next_line(const char *text, size_t text_length, size_t *pos, const char **line,
                  size_t *line_length)
{
  size_t start = *pos;
  size_t end = start;

  if (start >= text_length)
    return 0;
  while (end < text_length && !csv_is_break(text[end]))
    end++;
  *line = text + start;
  *line_length = end - start;
  if (end < text_length && text[end] == '\r') {
    end++;
    if (end < text_length && text[end] == '\n')
      end++;
  } else if (end < text_length && text[end] == '\n') {
    end++;
  }
  *pos = end;
  return 1;
}

int csv_line_is_empty(const char *line, size_t length)
{
  for (size_t i = 0; i < length; i++) {
    if (csv_is_break(line[i]))
      return 1;
    if (line[i] != ' ' && line[i] != '\t' && line[i] != ',')
      return 0;
  }
  return 1;
}
