/*
 * table.c - aligned text tables (table.h).
 */
#include "posctl/table.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct posctl_table {
  const struct posctl_column *columns;
  size_t column_count;
  char **cells; /* row-major, cell_count of them */
  size_t cell_count;
  size_t cell_capacity;
};

posctl_table *posctl_table_create(const struct posctl_column *columns, size_t count)
{
  posctl_table *table = calloc(1, sizeof(*table));
  if (!table)
    return NULL;
  table->columns = columns;
  table->column_count = count;
  return table;
}

void posctl_table_destroy(posctl_table *table)
{
  if (!table)
    return;
  for (size_t i = 0; i < table->cell_count; i++)
    free(table->cells[i]);
  free(table->cells);
  free(table);
}

int posctl_table_add(posctl_table *table, const char *text)
{
  char *copy;
  if (!text || !*text)
    text = "-";
  if (table->cell_count == table->cell_capacity) {
    size_t capacity = table->cell_capacity ? table->cell_capacity * 2 : 64;
    char **cells = realloc(table->cells, capacity * sizeof(*cells));
    if (!cells)
      return -1;
    table->cells = cells;
    table->cell_capacity = capacity;
  }
  copy = strdup(text);
  if (!copy)
    return -1;
  table->cells[table->cell_count++] = copy;
  return 0;
}

int posctl_table_addf(posctl_table *table, const char *format, ...)
{
  char text[256];
  va_list args;
  va_start(args, format);
  vsnprintf(text, sizeof(text), format, args);
  va_end(args);
  return posctl_table_add(table, text);
}

size_t posctl_table_rows(const posctl_table *table)
{
  return (table->cell_count + table->column_count - 1) / table->column_count;
}

/* Characters in a UTF-8 string: every byte that does not continue a sequence. */
static size_t table_width(const char *text)
{
  size_t width = 0;
  for (const unsigned char *p = (const unsigned char *)text; *p; p++)
    if ((*p & 0xC0) != 0x80)
      width++;
  return width;
}

static void table_pad(FILE *out, size_t count)
{
  for (size_t i = 0; i < count; i++)
    fputc(' ', out);
}

/* Writes one line: the header (row NULL) or a row of cells. */
static void table_print_line(const posctl_table *table, const size_t *widths,
                             const char *const *row, size_t row_cells, FILE *out)
{
  for (size_t col = 0; col < table->column_count; col++) {
    const char *text = row ? (col < row_cells ? row[col] : "-") : table->columns[col].title;
    size_t pad = widths[col] - table_width(text);
    int last = col + 1 == table->column_count;
    if (col > 0)
      fputs("  ", out);
    if (table->columns[col].right)
      table_pad(out, pad);
    fputs(text, out);
    if (!table->columns[col].right && !last)
      table_pad(out, pad);
  }
  fputc('\n', out);
}

void posctl_table_print(const posctl_table *table, FILE *out)
{
  size_t rows = posctl_table_rows(table);
  size_t *widths = calloc(table->column_count, sizeof(*widths));
  if (!widths)
    return;
  for (size_t col = 0; col < table->column_count; col++)
    widths[col] = table_width(table->columns[col].title);
  for (size_t i = 0; i < table->cell_count; i++) {
    size_t col = i % table->column_count, width = table_width(table->cells[i]);
    if (width > widths[col])
      widths[col] = width;
  }
  /* A short last row prints "-" in its missing cells: at least one wide. */
  for (size_t col = 0; col < table->column_count; col++)
    if (widths[col] == 0)
      widths[col] = 1;
  table_print_line(table, widths, NULL, 0, out);
  for (size_t row = 0; row < rows; row++) {
    size_t first = row * table->column_count;
    size_t cells = table->cell_count - first;
    if (cells > table->column_count)
      cells = table->column_count;
    table_print_line(table, widths, (const char *const *)table->cells + first, cells, out);
  }
  free(widths);
}
