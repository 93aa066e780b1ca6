/*
 * test_spool_lines.c - the spool's bounded line reader and its positions:
 * lines with and without '\r' and a last '\n', a line exactly max_line
 * long and one past it, a reader started at a byte offset as a restart
 * does, and the position text a chunk commits read back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ingest/spool/spool_int.h"

/* A temporary file holding `text` (unlinked at once: the fd keeps it). */
static int file_with(const char *text)
{
  char path[] = "/tmp/test_spool_lines_XXXXXX";
  int fd = mkstemp(path);
  size_t len = strlen(text);

  assert_true(fd >= 0);
  unlink(path);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  return fd;
}

/* The next line as a string, "<EOF>" or "<TOO LONG>". */
static const char *next_line(struct spool_lines *in, char *out, size_t size)
{
  const char *line;
  size_t len;
  int rc = spool__lines_next(in, &line, &len);

  if (rc == SPOOL_LINES_EOF)
    return "<EOF>";
  if (rc == SPOOL_LINES_TOO_LONG)
    return "<TOO LONG>";
  assert_int_equal(rc, SPOOL_LINES_LINE);
  assert_true(len < size);
  memcpy(out, line, len);
  out[len] = '\0';
  return out;
}

static void lines_end_with_or_without_cr_and_newline(void **state)
{
  struct spool_lines in = {0};
  char buf[64];
  int fd = file_with("one\r\n\ntwo\nthree");

  (void)state;
  assert_int_equal(spool__lines_init(&in, fd, 1024, 0, 0), 0);
  assert_string_equal(next_line(&in, buf, sizeof(buf)), "one");
  assert_int_equal(in.line_no, 1);
  assert_int_equal(in.offset, 5);
  assert_string_equal(next_line(&in, buf, sizeof(buf)), "");
  assert_string_equal(next_line(&in, buf, sizeof(buf)), "two");
  assert_int_equal(in.offset, 10);
  assert_string_equal(next_line(&in, buf, sizeof(buf)), "three");
  assert_int_equal(in.line_no, 4);
  assert_int_equal(in.offset, 15);
  assert_string_equal(next_line(&in, buf, sizeof(buf)), "<EOF>");
  spool__lines_free(&in);
  close(fd);
}

static void a_line_past_max_line_is_refused_one_at_it_is_not(void **state)
{
  struct spool_lines in = {0};
  size_t max_line = 70000; /* past the reader's 64 KiB least buffer */
  char *text = malloc(2 * max_line + 16), *line = malloc(max_line + 2);
  int fd;

  (void)state;
  memset(text, 'a', max_line);
  memcpy(text + max_line, "\r\n", 2);
  memset(text + max_line + 2, 'b', max_line + 1);
  memcpy(text + 2 * max_line + 3, "\n", 2);
  fd = file_with(text);
  assert_int_equal(spool__lines_init(&in, fd, max_line, 0, 0), 0);
  assert_int_equal(strlen(next_line(&in, line, max_line + 2)), max_line);
  assert_string_equal(next_line(&in, line, max_line + 2), "<TOO LONG>");
  assert_int_equal(in.line_no, 1); /* line 2 is the one too long */
  spool__lines_free(&in);
  close(fd);
  free(text);
  free(line);
}

static void a_reader_starts_where_a_restart_resumes(void **state)
{
  struct spool_lines in = {0};
  char buf[64];
  int fd = file_with("first\nsecond\nthird\n");

  (void)state;
  assert_int_equal(spool__lines_init(&in, fd, 1024, 6, 1), 0);
  assert_string_equal(next_line(&in, buf, sizeof(buf)), "second");
  assert_int_equal(in.line_no, 2);
  assert_string_equal(next_line(&in, buf, sizeof(buf)), "third");
  assert_int_equal(in.offset, 19);
  assert_string_equal(next_line(&in, buf, sizeof(buf)), "<EOF>");
  spool__lines_free(&in);
  close(fd);
}

static void a_position_reads_back_as_written(void **state)
{
  struct spool_identity id = {.dev = 2049, .ino = 131, .size = 6568894, .mtime_ns = 17000000001},
                        back;
  char text[SPOOL_POSITION_MAX], name[256];
  int64_t offset, line;

  (void)state;
  spool__position_format(text, sizeof(text), &id, 4096, 12, "till 2 export.ndjson");
  assert_string_equal(text, "v1 2049 131 6568894 17000000001 4096 12 till 2 export.ndjson");
  assert_int_equal(spool__position_parse(text, &back, &offset, &line, name, sizeof(name)), 0);
  assert_memory_equal(&back, &id, sizeof(id));
  assert_int_equal(offset, 4096);
  assert_int_equal(line, 12);
  assert_string_equal(name, "till 2 export.ndjson");
  assert_int_equal(spool__position_parse("v2 1 2 3 4 5 6 x", &back, &offset, &line, name,
                                         sizeof(name)),
                   -1);
  assert_int_equal(spool__position_parse("v1 1 2 3 4 5 6 ", &back, &offset, &line, name,
                                         sizeof(name)),
                   -1);
  assert_int_equal(spool__position_parse("v1 1 2 -3 4 5 6 x", &back, &offset, &line, name,
                                         sizeof(name)),
                   -1);
}

static void only_complete_names_of_a_known_format_are_taken(void **state)
{
  (void)state;
  assert_ptr_equal(spool__format_of("20261128-T1.ndjson"), &spool__ndjson);
  assert_null(spool__format_of(".20261128-T1.ndjson"));
  assert_null(spool__format_of("20261128-T1.ndjson.tmp"));
  assert_null(spool__format_of("20261128-T1.ndjson.part"));
  assert_null(spool__format_of("20261128-T1.csv.reason"));
  assert_null(spool__format_of(".ndjson"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(lines_end_with_or_without_cr_and_newline),
      cmocka_unit_test(a_line_past_max_line_is_refused_one_at_it_is_not),
      cmocka_unit_test(a_reader_starts_where_a_restart_resumes),
      cmocka_unit_test(a_position_reads_back_as_written),
      cmocka_unit_test(only_complete_names_of_a_known_format_are_taken),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
