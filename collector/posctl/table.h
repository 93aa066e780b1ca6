/*
 * table.h - aligned text tables for posctl's readable output.
 *
 *   STORE  LAST CONTACT  UNSENT
 *   S001   42s               3
 *   S002   2h           12,345
 *
 * Cells are added row by row, left to right; columns are as wide as their
 * widest cell (counted in characters, not bytes, so UTF-8 store names line
 * up); numbers are right-aligned when the column says so; two spaces
 * between columns and no trailing blanks. Single-threaded: a table belongs
 * to its caller.
 */
#ifndef POSCTL_TABLE_H
#define POSCTL_TABLE_H

#include <stddef.h>
#include <stdio.h>

struct posctl_column {
  const char *title;
  int right; /* 1: right-aligned (counts, ages) */
};

typedef struct posctl_table posctl_table;

/*
 * A table of `count` columns; `columns` is borrowed for the table's life
 * (static arrays in practice). Returns NULL when out of memory.
 */
posctl_table *posctl_table_create(const struct posctl_column *columns, size_t count);

/* Frees the table and its cells. NULL does nothing. */
void posctl_table_destroy(posctl_table *table);

/*
 * Appends one cell (copied; NULL or "" is written as "-") to the current
 * row; after the last column the next cell starts a new row. Returns 0, or
 * -1 when out of memory (the table stays usable and prints what it holds).
 */
int posctl_table_add(posctl_table *table, const char *text);

/* Like posctl_table_add with printf formatting (at most 255 characters). */
int posctl_table_addf(posctl_table *table, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* Rows added so far (a row counts once its first cell is added). */
size_t posctl_table_rows(const posctl_table *table);

/* Writes the header and every row to `out`; a last row left short is padded with "-". */
void posctl_table_print(const posctl_table *table, FILE *out);

#endif
