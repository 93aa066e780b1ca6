/*
 * spool.h - the spool directory: sales from files a till exports.
 *
 * The POS writes a file under a name the spool ignores (starting with '.',
 * or ending in .tmp or .part), then renames it to NAME.ndjson (one sale per
 * line, the POS contract's JSON object; empty lines allowed) or NAME.csv
 * (spool_csv.h: a header, then one row per line of a sale). A file is
 * taken once its size and mtime have not changed for `settle`, one at a
 * time in name order; found at once (inotify through uv_fs_event) and by a
 * rescan every `rescan` (events can be lost; also at start-up).
 *
 * A file is ingested whole or not at all. A first pass, on a worker thread
 * through a bounded buffer, validates every line (sale_json_parse: the
 * same rules and messages as POST /v1/sales) and checks each sale_id
 * against the journal (journal_reader) and the file's earlier lines. Any
 * fault: nothing of the file is journaled, it goes to failed/ with
 * NAME.reason beside it naming line, field and problem. Then a second pass
 * journals it SPOOL_CHUNK_SALES sales to a write, each write carrying the
 * file's position (journal_write.progress_*, source "spool") in its own
 * transaction: a kill at any point loses nothing and doubles nothing, a
 * restart goes on after the last committed line (a file interrupted is
 * finished first). Once the last write committed, the file is renamed into
 * done/ and the directories fsynced; a stop between the two finds the
 * position complete at the next start and only moves the file. A sale_id
 * another source journaled with other content between the passes stops
 * the file: failed/, the reason saying which lines were journaled.
 *
 * The position is one row of the journal's ingest_progress (source
 * "spool", shared by every file: one is journaled at a time), "v1 DEV INO
 * SIZE MTIME_NS OFFSET LINE NAME": it applies to a file only while its
 * inode, size and mtime are those it names; the next file's first write
 * replaces it, so no row is left to delete when a file is moved. A file
 * dropped again under a name journaled before starts from its first line
 * (its sales already journaled are duplicates, not written twice).
 *
 * Memory does not grow with a file's size beyond about 21 bytes per sale
 * (the first pass's table of the file's sale_ids: 8 MB for a 100 MB file
 * of 320,000 sales, twice that while it grows), and HTTP sales never wait
 * for a file: reading and validating run off the loop, and the journal's
 * writer takes POS sales between two chunks.
 */
#ifndef AGENT_INGEST_SPOOL_H
#define AGENT_INGEST_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "journal/journal.h"

struct spool_options {
  const char *dir;        /* the spool directory (spool.dir); borrowed, outlives the spool */
  int64_t rescan_ms;      /* the directory is read again at least this often */
  int64_t settle_ms;      /* a file unchanged this long is complete */
  size_t max_line_bytes;  /* a longer line fails its file */
};

typedef struct spool spool;

/*
 * Checks the directory (it must exist and be writable), makes done/ and
 * failed/ in it when missing, and starts watching it; the first scan runs
 * on the loop's next turn. `j` is borrowed and must outlive the spool
 * (close the spool first). Returns the spool, or NULL with `err` saying
 * which path could not be used and what to do. Loop thread.
 */
spool *spool_create(uv_loop_t *loop, journal *j, const struct spool_options *options, char *err,
                    size_t err_size);

/*
 * Stops taking files: the first pass of a file is abandoned (nothing was
 * written), a chunk being journaled is committed with its position (or
 * not at all) by journal_close, and the spool is freed once the loop has
 * returned its handles and work. The next start goes on from the last
 * position committed. `s` may be NULL. Loop thread; before journal_close.
 */
void spool_close(spool *s);

/* What /status.json shows of the spool ("sources": {"spool": ...}). */
struct spool_stats {
  const char *dir;
  uint64_t files_pending;    /* *.ndjson and *.csv files waiting in the directory, the current one included */
  uint64_t files_done;       /* moved to done/ since the agent started */
  uint64_t files_failed;     /* moved to failed/ since the agent started */
  uint64_t sales_ingested;   /* sales journaled from files since the agent started (new rows) */
  uint64_t sales_duplicate;  /* sales of files that were journaled already (not again) */
  char current_file[256];    /* "" = none */
  const char *current_phase; /* "validating", "journaling", "moving"; NULL = none */
  int64_t current_line;      /* validating: the line reached; journaling: the last line committed */
  char last_failure_file[256]; /* the last file moved to failed/; "" = none */
  char last_failure[1024];   /* its reason's first line: line, field, problem */
  int64_t last_failure_ms;   /* when (wall clock); 0 = none */
  char last_error[512];      /* why the spool is waiting (journal full, a rename refused); "" = none */
};

/* Copies the spool's figures. Loop thread. */
void spool_get_stats(const spool *s, struct spool_stats *out);

#endif
