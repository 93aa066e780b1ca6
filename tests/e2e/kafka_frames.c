/*
 * kafka_frames.c - pos-e2e-frames: splits what kcat read into what the
 * end-to-end tests check, so that the values can be decoded by protoc
 * itself rather than by our own protobuf-c code.
 *
 *   kcat -b BOOT -C -t TOPIC -e -q -f '%p\t%o\t%k\t%h\t%R%s' |
 *     pos-e2e-frames META STREAM
 *
 * Reads records as written by that kcat format (four text fields each ended
 * by a tab, then the value's length as a 32-bit big-endian integer, then
 * the value) from stdin. Writes META: one line "partition\toffset\tkey\t
 * headers" per record; and STREAM: every value as field 1 of one protobuf
 * message (tag 0x0a, varint length, bytes), which protoc --decode reads as
 * tests/e2e/records.proto's SaleRecords (or HeartbeatRecords). Record i of
 * META is record i of the decoded message. Prints "records=N" on stdout.
 * Exits 0, 1 on malformed input or a write error, 2 on bad usage.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FRAMES_MAX_TEXT 65536
#define FRAMES_MAX_VALUE (64u * 1024 * 1024)

static int frames_fail(const char *what, unsigned long record)
{
  fprintf(stderr, "pos-e2e-frames: record %lu: %s\n", record, what);
  return 1;
}

/* Copies one tab-terminated text field from `in` to `meta`, the tab included. */
static int frames_text_field(FILE *in, FILE *meta, int last)
{
  size_t length = 0;
  int c;
  while ((c = getc(in)) != EOF) {
    if (c == '\t') {
      putc(last ? '\n' : '\t', meta);
      return 0;
    }
    if (c == '\n' || ++length > FRAMES_MAX_TEXT)
      return -1;
    putc(c, meta);
  }
  return -1;
}

int main(int argc, char **argv)
{
  FILE *meta, *stream;
  unsigned long records = 0;
  uint8_t *value = NULL;
  int rc = 0;

  if (argc != 3) {
    fputs("usage: kcat ... -f '%p\\t%o\\t%k\\t%h\\t%R%s' | pos-e2e-frames META STREAM\n",
          stderr);
    return 2;
  }
  meta = fopen(argv[1], "w");
  stream = fopen(argv[2], "wb");
  value = malloc(FRAMES_MAX_VALUE);
  if (!meta || !stream || !value) {
    fprintf(stderr, "pos-e2e-frames: cannot open the outputs: %s\n", strerror(errno));
    return 1;
  }
  for (;;) {
    int c = getc(stdin);
    uint8_t size_bytes[4];
    uint32_t size;
    uint8_t varint[10];
    size_t varint_len = 0;

    if (c == EOF)
      break;
    ungetc(c, stdin);
    for (int field = 0; field < 4; field++) {
      if (frames_text_field(stdin, meta, field == 3)) {
        rc = frames_fail("expected partition, offset, key and headers, each ended by a tab",
                         records);
        goto out;
      }
    }
    if (fread(size_bytes, 1, 4, stdin) != 4) {
      rc = frames_fail("truncated value length", records);
      goto out;
    }
    size = (uint32_t)size_bytes[0] << 24 | (uint32_t)size_bytes[1] << 16 |
           (uint32_t)size_bytes[2] << 8 | size_bytes[3];
    if (size == UINT32_MAX) {
      size = 0; /* a null value: decoded as an empty message */
    } else if (size > FRAMES_MAX_VALUE) {
      rc = frames_fail("value larger than 64 MiB", records);
      goto out;
    } else if (size > 0 && fread(value, 1, size, stdin) != size) {
      rc = frames_fail("truncated value", records);
      goto out;
    }
    putc(0x0a, stream);
    for (uint32_t v = size;; v >>= 7) {
      varint[varint_len++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
      if (v <= 0x7f)
        break;
    }
    fwrite(varint, 1, varint_len, stream);
    fwrite(value, 1, size, stream);
    records++;
  }
out:
  free(value);
  if (fclose(meta) != 0 || fclose(stream) != 0) {
    fprintf(stderr, "pos-e2e-frames: cannot write the outputs: %s\n", strerror(errno));
    rc = 1;
  }
  if (rc == 0)
    printf("records=%lu\n", records);
  return rc;
}
