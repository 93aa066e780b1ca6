/*
 * test_csv.c - CSV lines into fields (platform/csv.c): quoting, blanks,
 * line ends, and each bound and mistake with its own error naming the
 * field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "platform/csv.h"

/* Splits `line` with a row of `max_fields` x `max_length` and checks the fields. */
static void expect_fields(size_t max_fields, size_t max_length, const char *line, size_t length,
                          size_t count, const char *const *fields)
{
  struct csv_row *row = csv_row_create(max_fields, max_length);
  struct csv_error error;

  assert_non_null(row);
  memset(&error, 0, sizeof(error));
  if (csv_split(row, line, length, &error) != CSV_OK)
    fail_msg("\"%s\": field %zu: %s", line, error.field, error.message);
  assert_int_equal(csv_row_count(row), count);
  for (size_t i = 0; i < count; i++) {
    size_t field_length = 0;
    const char *text = csv_row_field(row, i, &field_length);
    assert_non_null(text);
    assert_string_equal(text, fields[i]);
    assert_int_equal(field_length, strlen(fields[i]));
  }
  assert_null(csv_row_field(row, count, NULL));
  csv_row_destroy(row);
}

static void expect_error(size_t max_fields, size_t max_length, const char *line, size_t length,
                         enum csv_status status, size_t field, const char *message)
{
  struct csv_row *row = csv_row_create(max_fields, max_length);
  struct csv_error error;
  int rc;

  assert_non_null(row);
  memset(&error, 0, sizeof(error));
  rc = csv_split(row, line, length, &error);
  if (rc != (int)status || error.field != field || !strstr(error.message, message))
    fail_msg("\"%.*s\": got %d field %zu \"%s\"; expected %d field %zu \"%s\"", (int)length, line,
             rc, error.field, error.message, (int)status, field, message);
  csv_row_destroy(row);
}

#define LINE(text) text, sizeof(text) - 1

static void test_fields_plain_quoted_and_empty(void **state)
{
  static const char *const plain[] = {"a", "b", "c"};
  static const char *const quoted[] = {"a,b", "say \"hi\"", "", "x"};
  static const char *const empties[] = {"", "", ""};
  static const char *const one_empty[] = {""};

  (void)state;
  expect_fields(8, 16, LINE("a,b,c"), 3, plain);
  expect_fields(8, 16, LINE("\"a,b\",\"say \"\"hi\"\"\",\"\",x"), 4, quoted);
  expect_fields(8, 16, LINE(",,"), 3, empties);
  expect_fields(8, 16, LINE(""), 1, one_empty);
}

static void test_blanks_around_unquoted_fields_are_not_data(void **state)
{
  static const char *const trimmed[] = {"a", "b c", "d"};
  static const char *const kept[] = {" a ", "b"};

  (void)state;
  expect_fields(8, 16, LINE("  a ,\tb c\t, d"), 3, trimmed);
  /* A quoted field keeps its blanks; blanks outside the quotes go. */
  expect_fields(8, 16, LINE("  \" a \"  , b"), 2, kept);
}

static void test_the_line_end_is_not_part_of_the_last_field(void **state)
{
  static const char *const fields[] = {"a", "b"};

  (void)state;
  expect_fields(8, 16, LINE("a,b\n"), 2, fields);
  expect_fields(8, 16, LINE("a,b\r\n"), 2, fields);
  expect_fields(8, 16, LINE("a,b\r"), 2, fields);
  expect_fields(8, 16, LINE("a,\"b\"\r\n"), 2, fields);
}

static void test_each_mistake_names_its_field(void **state)
{
  (void)state;
  expect_error(8, 16, LINE("a,\"b\nc\""), CSV_EBREAK, 2, "has a line break (LF) inside the line");
  expect_error(8, 16, LINE("a,b\rc"), CSV_EBREAK, 2, "has a line break (CR) inside the line");
  expect_error(8, 16, LINE("a,b,\"open\n"), CSV_EQUOTE_OPEN, 3,
               "a quoted field is not closed before the end of the line; add the closing \" "
               "(a field cannot span lines)");
  expect_error(8, 16, LINE("\"a\"b,c"), CSV_EQUOTE_AFTER, 1,
               "text after the closing quote; quote the whole field, or nothing");
  expect_error(8, 16, LINE("a,b\"c"), CSV_EQUOTE_INSIDE, 2,
               "a quote inside an unquoted field; quote the whole field");
  expect_error(8, 16, "a,b\0c", 5, CSV_ENUL, 2,
               "contains a NUL byte; save the file as plain text");
  expect_error(8, 16, "a,\"\0\"", 5, CSV_ENUL, 2, "contains a NUL byte");
}

static void test_each_bound_has_its_own_error(void **state)
{
  static const char *const sixteen[] = {"0123456789abcdef", "\"\""};
  struct csv_row *row;
  struct csv_error error;

  (void)state;
  /* Exactly the bound is fine, one more is not; "" counts as one byte. */
  expect_fields(2, 16, LINE("0123456789abcdef,\"\"\"\"\"\""), 2, sixteen);
  expect_error(2, 16, LINE("a,0123456789abcdefg"), CSV_ELONG, 2,
               "is longer than 16 characters");
  expect_error(2, 16, LINE("\"0123456789abcdef\"\"\""), CSV_ELONG, 1,
               "is longer than 16 characters");
  /* Too many fields: said with the count, once the line has no other problem. */
  row = csv_row_create(2, 16);
  assert_non_null(row);
  assert_int_equal(csv_split(row, LINE("a,b,c,d"), &error), CSV_EFIELDS);
  assert_int_equal(error.field, 3);
  assert_int_equal(error.fields_on_line, 4);
  assert_string_equal(error.message, "the line has 4 fields; at most 2 are expected (quote a "
                                     "field that contains a comma)");
  /* Fields past the bound are still checked, and that problem comes first. */
  assert_int_equal(csv_split(row, LINE("a,b,c,0123456789abcdefg"), &error), CSV_ELONG);
  assert_int_equal(error.field, 4);
  /* The row is reusable after an error. */
  assert_int_equal(csv_split(row, LINE("x,y"), &error), CSV_OK);
  assert_string_equal(csv_row_field(row, 1, NULL), "y");
  csv_row_destroy(row);
  assert_null(csv_row_create(0, 16));
  assert_null(csv_row_create(4, 0));
  csv_row_destroy(NULL);
}

static void test_lines_of_a_text(void **state)
{
  static const char text[] = "a\nb\r\nc\rd\n\ne";
  static const char *const expected[] = {"a", "b", "c", "d", "", "e"};
  size_t pos = 0, count = 0, length = 0;
  const char *line = NULL;

  (void)state;
  while (csv_next_line(text, sizeof(text) - 1, &pos, &line, &length)) {
    assert_true(count < 6);
    assert_int_equal(length, strlen(expected[count]));
    assert_memory_equal(line, expected[count], length);
    count++;
  }
  assert_int_equal(count, 6);
  pos = 0;
  assert_int_equal(csv_next_line("", 0, &pos, &line, &length), 0);
  /* A final line end does not start another line. */
  pos = 0;
  count = 0;
  while (csv_next_line("x\n", 2, &pos, &line, &length))
    count++;
  assert_int_equal(count, 1);
}

static void test_empty_lines(void **state)
{
  (void)state;
  assert_true(csv_line_is_empty(LINE("")));
  assert_true(csv_line_is_empty(LINE(" \t\r\n")));
  assert_true(csv_line_is_empty(LINE(",, ,\t,\n")));
  assert_false(csv_line_is_empty(LINE(",\"\",")));
  assert_false(csv_line_is_empty(LINE(" a")));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fields_plain_quoted_and_empty),
      cmocka_unit_test(test_blanks_around_unquoted_fields_are_not_data),
      cmocka_unit_test(test_the_line_end_is_not_part_of_the_last_field),
      cmocka_unit_test(test_each_mistake_names_its_field),
      cmocka_unit_test(test_each_bound_has_its_own_error),
      cmocka_unit_test(test_lines_of_a_text),
      cmocka_unit_test(test_empty_lines),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
