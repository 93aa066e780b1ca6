/*
 * spool_lines.c - a file read line by line through one bounded buffer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ingest/spool/spool_int.h"

/* Reads go to the kernel this many bytes at a time at least. */
#define SPOOL_LINES_MIN_BUFFER (64u * 1024u)

int spool__lines_init(struct spool_lines *in, int fd, size_t max_line, int64_t offset,
                      int64_t line_no)
{
  char *buf = in->buf;
  size_t cap = max_line + 2 > SPOOL_LINES_MIN_BUFFER ? max_line + 2 : SPOOL_LINES_MIN_BUFFER;

  /* A reader started again (pass 2 after pass 1) keeps its buffer. */
  if (!buf || in->cap != cap) {
    free(buf);
    buf = malloc(cap);
    if (!buf) {
      memset(in, 0, sizeof(*in));
      return SPOOL_LINES_ENOMEM;
    }
  }
  memset(in, 0, sizeof(*in));
  in->fd = fd;
  in->max_line = max_line;
  in->buf = buf;
  in->cap = cap;
  in->read_at = offset;
  in->offset = offset;
  in->line_no = line_no;
  return 0;
}

void spool__lines_free(struct spool_lines *in)
{
  free(in->buf);
  memset(in, 0, sizeof(*in));
  in->fd = -1;
}

/* Reads more after buf[end], moving what is left of the buffer to its
 * start first. 1 read some, 0 end of file, SPOOL_LINES_EIO. */
static int spool_lines_fill(struct spool_lines *in)
{
  ssize_t got;

  if (in->start > 0) {
    memmove(in->buf, in->buf + in->start, in->end - in->start);
    in->end -= in->start;
    in->start = 0;
  }
  do
    got = pread(in->fd, in->buf + in->end, in->cap - in->end, (off_t)in->read_at);
  while (got < 0 && errno == EINTR);
  if (got < 0)
    return SPOOL_LINES_EIO;
  in->end += (size_t)got;
  in->read_at += got;
  return got > 0;
}

int spool__lines_next(struct spool_lines *in, const char **line, size_t *len)
{
  size_t scanned = 0;

  for (;;) {
    char *data = in->buf + in->start;
    size_t have = in->end - in->start;
    char *newline = memchr(data + scanned, '\n', have - scanned);
    size_t used, text;
    int rc;

    if (newline) {
      used = (size_t)(newline - data) + 1;
      text = used - 1;
    } else if (in->eof && have > 0) {
      /* The last line, without its '\n'. */
      used = text = have;
    } else if (in->eof) {
      return SPOOL_LINES_EOF;
    } else {
      /* No '\n' yet: more than max_line bytes (the '\n' not counted)
       * without one is a line too long, whatever follows. */
      if (have > in->max_line)
        return SPOOL_LINES_TOO_LONG;
      scanned = have;
      rc = spool_lines_fill(in);
      if (rc < 0)
        return rc;
      if (rc == 0)
        in->eof = 1;
      continue;
    }
    if (text > in->max_line + (text > 0 && data[text - 1] == '\r'))
      return SPOOL_LINES_TOO_LONG;
    if (text > 0 && data[text - 1] == '\r')
      text--;
    *line = data;
    *len = text;
    in->start += used;
    in->offset += (int64_t)used;
    in->line_no++;
    return SPOOL_LINES_LINE;
  }
}
