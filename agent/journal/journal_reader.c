/*
 * journal_reader.c - read-only connections to the journal for the ingest
 * sources: a sale looked up as a write would judge it, and a source's
 * progress (ingest_progress, schema v10) read back.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal/journal.h"
#include "journal/journal_int.h"
#include "journal/journal_sql.h"

struct journal_reader {
  sqlite3 *db;
  sqlite3_stmt *find_sale;
  sqlite3_stmt *get_progress;
  char *path;
};

/* How long a read waits for a checkpoint or recovery holding the database. */
#define JOURNAL_READER_BUSY_MS 5000

journal_reader *journal_reader_open(journal *j, char *err, size_t err_size)
{
  journal_reader *r = calloc(1, sizeof(*r));

  if (!r || !(r->path = strdup(j->path))) {
    snprintf(err, err_size, "journal %s: out of memory opening a reader", j->path);
    goto fail;
  }
  /* The default file layer, as the sqlite3 CLI and status_today read it:
   * the journal's own (journal_vfs.c) shapes writes, and this writes nothing. */
  if (sqlite3_open_v2(r->path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
          SQLITE_OK ||
      sqlite3_busy_timeout(r->db, JOURNAL_READER_BUSY_MS) != SQLITE_OK ||
      sqlite3_prepare_v2(r->db, JOURNAL_SQL_FIND_SALE, -1, &r->find_sale, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(r->db, JOURNAL_SQL_GET_PROGRESS, -1, &r->get_progress, NULL) !=
          SQLITE_OK) {
    snprintf(err, err_size, "journal %s cannot be read: %s", r->path,
             r->db ? sqlite3_errmsg(r->db) : "out of memory");
    goto fail;
  }
  return r;
fail:
  journal_reader_close(r);
  return NULL;
}

void journal_reader_close(journal_reader *r)
{
  if (!r)
    return;
  sqlite3_finalize(r->find_sale);
  sqlite3_finalize(r->get_progress);
  sqlite3_close(r->db);
  free(r->path);
  free(r);
}

/* The journal_error for a failed read, with `err` saying what failed. */
static int journal_reader_failed(journal_reader *r, const char *what, char *err, size_t err_size)
{
  int rc = sqlite3_extended_errcode(r->db);
  snprintf(err, err_size, "journal %s: cannot read %s: %s", r->path, what, sqlite3_errmsg(r->db));
  rc = journal__map_sqlite(rc);
  return rc ? rc : JOURNAL_EIO;
}

int journal_reader_progress(journal_reader *r, const char *source, char *position,
                            size_t position_size, char *err, size_t err_size)
{
  int step, rc = 0;

  sqlite3_bind_text(r->get_progress, 1, source, -1, SQLITE_STATIC);
  step = sqlite3_step(r->get_progress);
  if (step == SQLITE_ROW) {
    const unsigned char *text = sqlite3_column_text(r->get_progress, 0);
    size_t len = (size_t)sqlite3_column_bytes(r->get_progress, 0);
    if (len >= position_size) {
      snprintf(err, err_size, "journal %s: the position of %s is %zu bytes, more than the %zu "
               "its reader has room for", r->path, source, len, position_size);
      rc = JOURNAL_EINVAL;
    } else {
      memcpy(position, text ? (const char *)text : "", len);
      position[len] = '\0';
      rc = 1;
    }
  } else if (step != SQLITE_DONE) {
    rc = journal_reader_failed(r, "an ingest source's progress", err, err_size);
  }
  sqlite3_reset(r->get_progress);
  sqlite3_clear_bindings(r->get_progress);
  return rc;
}

int journal_reader_find_sale(journal_reader *r, const struct sale *sale, int64_t *seq, char *err,
                             size_t err_size)
{
  uint8_t hash[32];
  int step, rc = JOURNAL_SALE_ABSENT;

  *seq = 0;
  if (sale_content_hash(sale, hash)) {
    snprintf(err, err_size, "out of memory hashing sale %s", sale->sale_id);
    return JOURNAL_ENOMEM;
  }
  sqlite3_bind_text(r->find_sale, 1, sale->sale_id, -1, SQLITE_STATIC);
  step = sqlite3_step(r->find_sale);
  if (step == SQLITE_ROW) {
    /* As journal_insert_sale compares: over the stored hash's length, 32
     * bytes (JSON and compact rows) or 16 (slim rows). Any other length is
     * damage, which a write would refuse too. */
    int stored = sqlite3_column_bytes(r->find_sale, 1);
    const void *blob = sqlite3_column_blob(r->find_sale, 1);
    *seq = sqlite3_column_int64(r->find_sale, 0);
    if (!blob || (stored != (int)sizeof(hash) && stored != JOURNAL_SLIM_HASH_BYTES)) {
      snprintf(err, err_size, "journal %s: the row of sale_id %s (seq %lld) is damaged: its "
               "content hash is %d bytes long", r->path, sale->sale_id, (long long)*seq, stored);
      rc = JOURNAL_ECORRUPT;
    } else {
      rc = memcmp(blob, hash, (size_t)stored) == 0 ? JOURNAL_SALE_SAME : JOURNAL_SALE_DIFFERENT;
    }
  } else if (step != SQLITE_DONE) {
    rc = journal_reader_failed(r, "a sale", err, err_size);
  }
  sqlite3_reset(r->find_sale);
  sqlite3_clear_bindings(r->find_sale);
  return rc;
}
