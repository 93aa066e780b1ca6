/*
 * csv.h - CSV lines into fields, the way people edit them.
 *
 * One record per physical line: a field may be double-quoted ("" inside
 * is one quote), but a quoted field never spans lines, so that every error
 * names the line a person sees in an editor or a spreadsheet. Blanks
 * (space, tab) around a field are not part of it; quote a field to keep
 * them. Bounded: a row holds at most `max_fields` fields of at most
 * `max_field_length` bytes each, with a distinct error for each bound.
 * Knows nothing of what the fields mean (recipes, sales): callers name the
 * fields in their own messages.
 */
#ifndef PLATFORM_CSV_H
#define PLATFORM_CSV_H

#include <stddef.h>

enum csv_status {
  CSV_OK = 0,
  CSV_ENUL = -1,          /* a NUL byte in a field */
  CSV_ELONG = -2,         /* a field longer than max_field_length */
  CSV_EFIELDS = -3,       /* more fields than max_fields */
  CSV_EQUOTE_OPEN = -4,   /* a quoted field not closed before the line ends */
  CSV_EQUOTE_AFTER = -5,  /* text after a field's closing quote */
  CSV_EQUOTE_INSIDE = -6, /* a quote inside an unquoted field */
  CSV_EBREAK = -7,        /* a CR or LF inside the line, not at its end */
};

/* What is wrong with a line, for a person: the caller adds where. */
struct csv_error {
  enum csv_status status;
  size_t field;          /* the field's number on the line, 1-based */
  size_t fields_on_line; /* CSV_EFIELDS: how many the line has */
  char message[160];     /* "is longer than 128 characters", without the line or field */
};

/* The fields of one line, reused line after line. */
struct csv_row;

/*
 * A row for lines of at most `max_fields` fields (1 or more) of at most
 * `max_field_length` bytes each (after unquoting); its storage is
 * allocated once, here. Returns NULL when memory ran out or a bound is 0.
 * Free with csv_row_destroy (NULL does nothing).
 */
struct csv_row *csv_row_create(size_t max_fields, size_t max_field_length);
void csv_row_destroy(struct csv_row *row);

/*
 * Splits one line into `row`'s fields. `line` (borrowed, `length` bytes,
 * need not be NUL-terminated) may end with its line end (LF, CRLF or a
 * lone CR), which is not part of the last field; a CR or LF anywhere else
 * is an error (CSV_EBREAK), as are a NUL byte, a field too long, a quote
 * out of place and more than max_fields fields (reported only when the
 * line has no other problem, with fields_on_line set). An empty line is
 * one empty field. Returns CSV_OK, or a csv_status with `error` (may be
 * NULL) set; after an error the row's fields are unspecified. Pure; any
 * thread, one row per thread.
 */
int csv_split(struct csv_row *row, const char *line, size_t length, struct csv_error *error);

/* The number of fields of the last line split (CSV_OK). */
size_t csv_row_count(const struct csv_row *row);

/*
 * Field `index` (0-based) of the last line split: unquoted, without the
 * blanks around an unquoted field, NUL-terminated, with its length in
 * *length (may be NULL). Valid until the next csv_split on `row`. NULL
 * when `index` is not below csv_row_count.
 */
const char *csv_row_field(const struct csv_row *row, size_t index, size_t *length);

/*
 * The physical line of `text` (`text_length` bytes) that starts at *pos:
 * sets *line and *line_length (its line end not included) and moves *pos
 * past the line end (LF, CRLF or a lone CR). Returns 1, or 0 when *pos is
 * at the end of the text. A last line without a line end is a line.
 */
int csv_next_line(const char *text, size_t text_length, size_t *pos, const char **line,
                  size_t *line_length);

/*
 * 1 when every field of `line` would be empty and unquoted: nothing but
 * blanks and commas before its line end (a blank line, or the empty row a
 * spreadsheet writes as ",,,,"). 0 otherwise.
 */
int csv_line_is_empty(const char *line, size_t length);

#endif
