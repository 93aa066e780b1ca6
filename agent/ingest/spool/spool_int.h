/*
 * spool_int.h - the spool's insides, for its own files only: the bounded
 * line reader (spool_lines.c), the formats a file may be in (one decoder
 * file each: spool_ndjson.c, spool_csvfile.c), and the work done on a file off the
 * loop thread (spool_file.c) for the driver (spool.c).
 */
#ifndef AGENT_INGEST_SPOOL_INT_H
#define AGENT_INGEST_SPOOL_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "ingest/spool/spool.h"
#include "journal/journal.h"
#include "sale/sale.h"

/* Sales per journal write of a file's second pass: each is one
 * transaction with the file's position, so a kill loses none of them and
 * a restart repeats none; small enough that the writer takes POS sales
 * between two of them within milliseconds. */
#define SPOOL_CHUNK_SALES 256

/* The longest position text: a file name of up to NAME_MAX bytes and
 * seven numbers. */
#define SPOOL_POSITION_MAX 512

/* The progress row every file of the spool shares (one file at a time). */
#define SPOOL_PROGRESS_SOURCE "spool"

/* Texts that may be cut (messages, paths checked elsewhere) are made with
 * log_format (platform/log.h). */

/* ---- the bounded line reader ------------------------------------------- */

/*
 * Reads a file line by line through one buffer of at least max_line + 2
 * bytes, whatever the file's size, with pread from a byte offset (so a
 * reader can start where a restart resumes). A line's '\n' and a '\r'
 * before it are not part of it; the last line may lack its '\n'.
 */
struct spool_lines {
  int fd;              /* borrowed */
  size_t max_line;     /* longest line accepted, in bytes */
  char *buf;
  size_t cap, start, end;
  int64_t read_at;     /* file offset of buf[end] */
  int64_t offset;      /* file offset just past the last line returned */
  int64_t line_no;     /* number (1-based) of the last line returned */
  int eof;
};

enum {
  SPOOL_LINES_EOF = 0,
  SPOOL_LINES_LINE = 1,
  SPOOL_LINES_TOO_LONG = -1, /* line line_no + 1 is longer than max_line */
  SPOOL_LINES_EIO = -2,      /* the read failed: errno */
  SPOOL_LINES_ENOMEM = -3,
};

/* Starts reading `fd` at `offset`, which begins line `line_no` + 1. 0, or
 * SPOOL_LINES_ENOMEM. */
int spool__lines_init(struct spool_lines *in, int fd, size_t max_line, int64_t offset,
                      int64_t line_no);

/* The next line: SPOOL_LINES_LINE with *line (valid until the next call)
 * and *len, SPOOL_LINES_EOF, or an error above. */
int spool__lines_next(struct spool_lines *in, const char **line, size_t *len);

void spool__lines_free(struct spool_lines *in);

/* ---- formats --------------------------------------------------------------- */

/* Why a record is refused: where, which field, what is wrong (the POS
 * contract's words, as POST /v1/sales answers them). */
struct spool_error {
  int64_t line;       /* 1-based; 0 = the file as a whole */
  char field[128];    /* "" = the record as a whole */
  char message[512];
};

/*
 * A file format: which names it takes and how it reads sales from a
 * file, record by record, in order. next() reads the next record from `in`
 * into *sale (owned by the caller then: sale_clear) with *line its first
 * line: 1, 0 at the end of the file, or -1 with `error` set (nothing in
 * *sale). `state` is state_size zeroed bytes at the start of each pass over
 * a file (a CSV header's columns, read again from the file's start when a
 * pass begins past it), freed by the spool. Runs on a worker thread.
 */
struct spool_format {
  const char *name;   /* "ndjson" */
  const char *suffix; /* ".ndjson" */
  size_t state_size;  /* 0 = none */
  int (*next)(void *state, struct spool_lines *in, struct sale *sale, int64_t *line,
              struct spool_error *error);
  /* Optional: where a pass resumes after the records next() returned so far
   * (a format that reads a line past a record to know it ended: CSV);
   * NULL = where the reader is (in->offset, in->line_no). */
  void (*resume_point)(void *state, const struct spool_lines *in, int64_t *offset,
                       int64_t *line);
  /* Optional: frees what the state holds (not the state itself), before it
   * is zeroed for the next pass or freed. */
  void (*free_state)(void *state);
};

extern const struct spool_format spool__ndjson;
extern const struct spool_format spool__csv;

/* Frees what a format's state holds and zeroes it (NULL does nothing). */
void spool__format_state_reset(const struct spool_format *format, void *state);

/* The format of a file named `name`, or NULL (not the spool's). */
const struct spool_format *spool__format_of(const char *name);

/* ---- one file's work, off the loop ---------------------------------------- */

/* A file's identity: what must not change for a position to apply. */
struct spool_identity {
  uint64_t dev, ino;
  int64_t size;
  int64_t mtime_ns;
};

/* Formats "v1 <dev> <ino> <size> <mtime_ns> <offset> <line> <name>". */
void spool__position_format(char *out, size_t size, const struct spool_identity *id,
                            int64_t offset, int64_t line, const char *name);

/* Parses one: 0, or -1 when it is not one. `name` has NAME_MAX + 1 bytes. */
int spool__position_parse(const char *text, struct spool_identity *id, int64_t *offset,
                          int64_t *line, char *name, size_t name_size);

enum spool_outcome {
  SPOOL_OUT_OK = 0,
  SPOOL_OUT_INVALID,  /* the file fails: move it to failed/ with `reason` */
  SPOOL_OUT_CHANGED,  /* the file changed under us: let it settle again */
  SPOOL_OUT_RETRY,    /* the agent could not (disk, journal): keep the file, try later */
  SPOOL_OUT_STOPPED,  /* the agent is stopping */
};

/* One file being ingested. Owned by the driver; a worker touches it only
 * while its uv_work_t runs (one at a time). */
struct spool_job {
  uv_work_t work;
  struct spool *spool;
  const atomic_int *stop;           /* the driver's: set when stopping */
  char name[256];                   /* file name within the spool directory */
  char dir[4096];                   /* the spool directory */
  const struct spool_format *format;
  struct spool_identity seen;       /* as the scan saw it settled */
  size_t max_line;
  int fd;
  struct spool_lines in;
  void *format_state;               /* format->state_size bytes */
  journal_reader *reader;           /* pass 1 only; opened on the loop */

  /* Results of the step that just ran (valid in its after-work). */
  int outcome;
  char reason[2048];                /* INVALID, RETRY: for people */
  struct spool_error error;         /* INVALID: the record at fault */

  /* Pass 1. */
  int64_t resume_offset, resume_line; /* where journaled progress says to go on */
  uint64_t file_sales, file_new, file_duplicates;
  atomic_llong validated_line;

  /* Pass 2: the chunk read and being journaled. */
  struct sale *sales;               /* SPOOL_CHUNK_SALES entries */
  int64_t *sale_lines;
  size_t count;
  int64_t chunk_offset, chunk_line; /* where the chunk ends (the position it commits) */
  int64_t committed_offset, committed_line;
  uint64_t journaled_new;           /* sales of this file stored by this run's writes */
  uint64_t journaled_sales;         /* sales of this file committed, this run */
  int64_t first_line_this_run;      /* the line pass 2 of this run started after */
  struct journal_write write;
  struct journal_item_result results[SPOOL_CHUNK_SALES];
  char position[SPOOL_POSITION_MAX];

  /* The move. */
  int to_failed;
  char moved_to[4352];              /* where the file went */
};

/* Pass 1 (worker thread): opens the file, checks it is the one the scan
 * saw, finds the journaled position, validates every record and checks
 * each sale against the journal and the file's earlier records. */
void spool__validate(struct spool_job *job);

/* Pass 2 (worker thread): reads the next chunk of sales into job->sales. */
void spool__read_chunk(struct spool_job *job);

/* Frees the chunk's sales. Any thread. */
void spool__clear_chunk(struct spool_job *job);

/* The move (worker thread): into done/, or into failed/ with
 * NAME.reason (job->reason) beside it; the directories are fsynced. */
void spool__move(struct spool_job *job);

#endif
