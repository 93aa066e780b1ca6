/*
 * journal_vfs.c - the journal's SQLite VFS: the system's own ("unix"), with
 * the WAL's writes gathered into one write(2) per commit, direct to disk.
 *
 * SQLite writes a WAL frame as two pwrite calls (its 24-byte header, then
 * the page), so a commit of five 1 KiB pages is ten system calls before
 * its fsync: at one sale per POST that was the agent's largest count of
 * calls per sale after nothing (strace -c: 10.8 pwrite64 per sale). This
 * shim keeps the writes to a WAL file that follow on from each other in a
 * buffer and writes them in one call when SQLite syncs the WAL, reads a
 * part of it, asks its size, truncates it, writes elsewhere in it, or
 * closes it, and when the buffer is full.
 *
 * Durability is unchanged: SQLite counts a commit only once its WAL sync
 * returned, and the sync writes the buffer first (a failed write fails the
 * sync, so the commit). A frame is visible to other connections only once
 * the WAL index says so, which SQLite does after that sync (synchronous =
 * FULL, which journal.c sets and checks). Every other file (the database,
 * its -shm) and every other method goes to the system's VFS unchanged, so
 * locks and the shared WAL index are the same as any other connection's.
 *
 * Two rules keep the buffer exactly what SQLite believes it wrote:
 * - A write that fails when the buffer is flushed keeps the buffer (and
 *   returns the error): frames a cache spill wrote earlier in the
 *   transaction are in SQLite's WAL index, and a statement rolled back on
 *   the error lets the transaction go on; its commit's sync tries again.
 * - Frames are written only under the WAL's write lock, and what is still
 *   buffered when the connection releases it was never synced: frames of a
 *   transaction rolled back (SQLite forgets them without a word to the
 *   file), dropped then, before another writer may use those offsets; or,
 *   if the last frame buffered ends a transaction (its header's commit
 *   size is set: synchronous below FULL), written then.
 * (Both seen corrupting a database in a reviewer's reproduction before.)
 *
 * Where the file system takes them (ext4, f2fs, xfs; not tmpfs), the
 * gathered bytes are written with O_DIRECT, in whole blocks of the disk
 * (512 bytes on most): the kernel counts, and the disk is sent, a
 * commit's frames and at most a block either side, where a write through
 * the page cache dirties the WAL's last 4 KiB page again at every fsynced
 * commit (issue 12, item 3: 9,223 bytes per sale at one sale per commit
 * before, 5,902 after; tests/bench/journal_bench.sh). The fsync that
 * follows is SQLite's, as before: it also flushes the disk's own cache.
 */
#define _GNU_SOURCE /* O_DIRECT, statx, pwrite64 */
#include "journal_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

/* Writes gathered per WAL file: a group commit of a few dozen sales fits. */
#define JOURNAL_VFS_BUFFER (64 * 1024)

/* SQLite's WAL format and locks (its documentation's "WAL-mode file format"). */
#define WAL_HEADER 32
#define WAL_FRAME_HEADER 24
#define WAL_WRITE_LOCK 0 /* the first lock slot of the -shm file */
/* Where a WAL header (at offset 0) and a frame header keep the log's salts:
 * every frame of one log generation carries the salts of its header. */
#define WAL_HEADER_SALT 16
#define WAL_FRAME_SALT 8
#define WAL_SALT 8
/* The largest direct I/O block handled: a disk's logical block is 512 or
 * 4096 bytes. */
#define JOURNAL_VFS_BLOCK_MAX 4096

struct journal_vfs_file {
  sqlite3_file base;  /* pMethods: journal_vfs_methods, or NULL if not open */
  sqlite3_file *real; /* the system VFS's file, in the same allocation */
  /* WAL files only (NULL otherwise): bytes not yet written, which belong
   * at offset `start` of the file, and whether the last frame header among
   * them ends a transaction. */
  unsigned char *buf;
  size_t len;
  sqlite3_int64 start;
  int ends_commit;
  int salted; /* whether `salt` is that of the gathered frames */
  unsigned char salt[WAL_SALT];
  /* Direct writes (see journal_vfs_flush_direct): the WAL opened again
   * with O_DIRECT (-1: not, writes go through the page cache), its block,
   * a staging buffer aligned for it, and the last block written, as it is
   * in the file (block_at -1: none), with the end of the log this handle
   * wrote in the generation of `log_salt` (0: none), and whether the last
   * frames written do not end a transaction (see the write lock's release:
   * until then no other writer can write, after it the block is trusted
   * only if they were a transaction's last). */
  int direct_fd;
  size_t block;
  unsigned char *stage;
  unsigned char *last_block;
  sqlite3_int64 block_at;
  sqlite3_int64 log_end;
  unsigned char log_salt[WAL_SALT];
  int open_frames;
  /* A main database: its name, and its open WAL (NULL when none); a WAL:
   * its database. Linked at open, under journal_vfs_lock. */
  char *name;
  struct journal_vfs_file *wal;
  struct journal_vfs_file *db;
  struct journal_vfs_file *next_db;
};

static sqlite3_vfs journal_vfs;
static sqlite3_vfs *journal_vfs_real;
static pthread_once_t journal_vfs_once = PTHREAD_ONCE_INIT;
static int journal_vfs_rc = SQLITE_ERROR;
/* The open main databases, to find a WAL's own when it opens. */
static pthread_mutex_t journal_vfs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct journal_vfs_file *journal_vfs_dbs;

static sqlite3_file *real_of(sqlite3_file *file)
{
  return ((struct journal_vfs_file *)file)->real;
}

/* A write through the system's VFS (the page cache): the block kept of
 * the direct writes may no longer be what the file holds. */
static int journal_vfs_write_cached(struct journal_vfs_file *f, const void *data, int amount,
                                    sqlite3_int64 offset)
{
  f->block_at = -1;
  f->log_end = 0;
  return f->real->pMethods->xWrite(f->real, data, amount, offset);
}

/* Fills out[0..len) with the file's bytes at `offset` (zeros past its end). */
static int journal_vfs_read_file(struct journal_vfs_file *f, unsigned char *out, size_t len,
                                 sqlite3_int64 offset)
{
  int rc = f->real->pMethods->xRead(f->real, out, (int)len, offset);
  return rc == SQLITE_IOERR_SHORT_READ ? SQLITE_OK : rc; /* SQLite zero-filled the rest */
}

/* Whether the gathered frames are of the generation this handle last wrote. */
static int journal_vfs_same_log(const struct journal_vfs_file *f)
{
  return f->salted && f->log_end > 0 && memcmp(f->salt, f->log_salt, WAL_SALT) == 0;
}

/*
 * The gathered bytes written with O_DIRECT, whole blocks of the disk: a
 * commit's frames cost their own bytes to the disk (and to the process's
 * write_bytes), not a page-cache page dirtied again by every fsynced
 * commit. The block the frames begin in and the one they end in hold other
 * bytes too, which the write must keep: those of the file as it is (read
 * through the page cache, which direct writes keep coherent), or, as they
 * are known without a read, the last block this handle wrote (when nothing
 * else can have written it since: the frames continue this handle's log
 * of the same generation, so no other writer came between) and zeros past
 * the end of the log this handle wrote (what follows the newest frame is
 * never read: SQLite stops at the first frame whose salts or checksum do
 * not match). SQLITE_OK, or SQLITE_FULL or SQLITE_IOERR_WRITE with the
 * bytes still gathered; EINVAL (the file system refuses direct writes
 * after all) turns them off for this file and writes through the cache.
 */
static int journal_vfs_flush_direct(struct journal_vfs_file *f)
{
  size_t block = f->block;
  sqlite3_int64 end = f->start + (sqlite3_int64)f->len;
  sqlite3_int64 first = f->start - f->start % (sqlite3_int64)block;
  sqlite3_int64 last = end + ((sqlite3_int64)block - end % (sqlite3_int64)block) % (sqlite3_int64)block;
  size_t lead = (size_t)(f->start - first), total = (size_t)(last - first);
  size_t trail = total - lead - f->len;
  int same = journal_vfs_same_log(f), rc = SQLITE_OK;
  size_t done = 0;

  if (lead > 0) {
    if (same && f->block_at == first && f->start <= f->log_end)
      memcpy(f->stage, f->last_block, lead);
    else if ((rc = journal_vfs_read_file(f, f->stage, lead, first)) != SQLITE_OK)
      return rc;
  }
  memcpy(f->stage + lead, f->buf, f->len);
  if (trail > 0) {
    unsigned char *pad = f->stage + lead + f->len;
    if ((same && end >= f->log_end) || (f->start == 0 && f->salted))
      memset(pad, 0, trail);
    else if (same && f->block_at == last - (sqlite3_int64)block)
      memcpy(pad, f->last_block + (block - trail), trail);
    else if ((rc = journal_vfs_read_file(f, pad, trail, end)) != SQLITE_OK)
      return rc;
  }
  while (done < total) {
    ssize_t n = pwrite64(f->direct_fd, f->stage + done, total - done, first + (off64_t)done);
    if (n > 0) {
      done += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EINVAL && done == 0) {
      close(f->direct_fd);
      f->direct_fd = -1;
      return journal_vfs_write_cached(f, f->buf, (int)f->len, f->start);
    }
    /* A short write stops at the end of the room: a full disk too. */
    f->block_at = -1;
    f->open_frames = 1;
    return n == 0 || done > 0 || errno == ENOSPC || errno == EDQUOT ? SQLITE_FULL
                                                                    : SQLITE_IOERR_WRITE;
  }
  memcpy(f->last_block, f->stage + total - block, block);
  f->block_at = last - (sqlite3_int64)block;
  f->open_frames = !f->ends_commit;
  if (!same || f->start == 0) {
    memcpy(f->log_salt, f->salt, WAL_SALT);
    f->log_end = f->salted ? end : 0;
  } else if (end > f->log_end) {
    f->log_end = end;
  }
  return SQLITE_OK;
}

/* Writes what is gathered; SQLITE_OK or the error, in which case the
 * bytes stay gathered (SQLite believes them written). */
static int journal_vfs_flush(struct journal_vfs_file *f)
{
  int rc;

  if (f->len == 0)
    return SQLITE_OK;
  if (f->direct_fd >= 0)
    rc = journal_vfs_flush_direct(f);
  else
    rc = journal_vfs_write_cached(f, f->buf, (int)f->len, f->start);
  if (rc == SQLITE_OK) {
    f->len = 0;
    f->ends_commit = 0;
    f->salted = 0;
  }
  return rc;
}

/* The write lock is being released: what is still gathered was never
 * synced (see the header). */
static void journal_vfs_write_lock_released(struct journal_vfs_file *wal)
{
  if (wal->len > 0 && !(wal->ends_commit && journal_vfs_flush(wal) == SQLITE_OK)) {
    wal->len = 0;
    wal->ends_commit = 0;
    wal->salted = 0;
    wal->open_frames = 1;
  }
  /* Frames written but never committed (rolled back) are past the log's
   * end, where the next writer, maybe another, writes its own: the block
   * kept of them is not to be trusted any more. */
  if (wal->open_frames) {
    wal->block_at = -1;
    wal->log_end = 0;
    wal->open_frames = 0;
  }
}

static int vfs_close(sqlite3_file *file)
{
  struct journal_vfs_file *f = (struct journal_vfs_file *)file;
  int rc = SQLITE_OK, close_rc;

  pthread_mutex_lock(&journal_vfs_lock);
  if (f->db != NULL)
    f->db->wal = NULL;
  if (f->name != NULL) {
    struct journal_vfs_file **at = &journal_vfs_dbs;
    while (*at != NULL && *at != f)
      at = &(*at)->next_db;
    if (*at == f)
      *at = f->next_db;
    if (f->wal != NULL)
      f->wal->db = NULL;
  }
  pthread_mutex_unlock(&journal_vfs_lock);
  /* Closed with frames gathered: a transaction that never committed
   * (SQLite syncs a commit before it returns), unless synchronous is below
   * FULL and the last of them ends one. */
  if (f->len > 0 && f->ends_commit)
    rc = journal_vfs_flush(f);
  close_rc = f->real->pMethods->xClose(f->real);
  if (f->direct_fd >= 0)
    close(f->direct_fd);
  free(f->buf);
  free(f->stage);
  free(f->last_block);
  free(f->name);
  f->buf = NULL;
  f->stage = NULL;
  f->last_block = NULL;
  f->name = NULL;
  f->direct_fd = -1;
  return rc != SQLITE_OK ? rc : close_rc;
}

static int vfs_read(sqlite3_file *file, void *out, int amount, sqlite3_int64 offset)
{
  struct journal_vfs_file *f = (struct journal_vfs_file *)file;

  if (f->len > 0 && offset < f->start + (sqlite3_int64)f->len && offset + amount > f->start) {
    int rc = journal_vfs_flush(f);
    if (rc != SQLITE_OK)
      return rc;
  }
  return f->real->pMethods->xRead(f->real, out, amount, offset);
}

static int vfs_write(sqlite3_file *file, const void *data, int amount, sqlite3_int64 offset)
{
  struct journal_vfs_file *f = (struct journal_vfs_file *)file;
  int rc;

  if (f->buf == NULL)
    return f->real->pMethods->xWrite(f->real, data, amount, offset);
  /* Only what follows on from the gathered bytes joins them. */
  if (f->len > 0 && (offset != f->start + (sqlite3_int64)f->len ||
                     f->len + (size_t)amount > JOURNAL_VFS_BUFFER)) {
    rc = journal_vfs_flush(f);
    if (rc != SQLITE_OK)
      return rc;
  }
  if ((size_t)amount > JOURNAL_VFS_BUFFER)
    return journal_vfs_write_cached(f, data, amount, offset);
  if (f->len == 0)
    f->start = offset;
  memcpy(f->buf + f->len, data, (size_t)amount);
  f->len += (size_t)amount;
  /* A frame header: bytes 4-7 are the database size after a commit, 0 in
   * the frames before a transaction's last; 8-15 its log's salts, which
   * the WAL header (written at offset 0) holds at 16-23. */
  if (amount == WAL_FRAME_HEADER) {
    const unsigned char *h = data;
    f->ends_commit = (h[4] | h[5] | h[6] | h[7]) != 0;
    if (!f->salted)
      memcpy(f->salt, h + WAL_FRAME_SALT, WAL_SALT);
    f->salted = 1;
  } else if (amount == WAL_HEADER && offset == 0) {
    memcpy(f->salt, (const unsigned char *)data + WAL_HEADER_SALT, WAL_SALT);
    f->salted = 1;
  }
  return SQLITE_OK;
}

static int vfs_truncate(sqlite3_file *file, sqlite3_int64 size)
{
  struct journal_vfs_file *f = (struct journal_vfs_file *)file;
  int rc = journal_vfs_flush(f);

  f->block_at = -1;
  f->log_end = 0;
  return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int vfs_sync(sqlite3_file *file, int flags)
{
  struct journal_vfs_file *f = (struct journal_vfs_file *)file;
  int rc = journal_vfs_flush(f);

  if (rc == SQLITE_OK)
    rc = f->real->pMethods->xSync(f->real, flags);
  /* A commit whose sync failed is rolled back: its frames, written, are
   * past the log's end like those of any transaction never committed. */
  if (rc != SQLITE_OK)
    f->open_frames = 1;
  return rc;
}

static int vfs_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
  int rc = journal_vfs_flush((struct journal_vfs_file *)file);
  return rc != SQLITE_OK ? rc : real_of(file)->pMethods->xFileSize(real_of(file), size);
}

static int vfs_lock(sqlite3_file *file, int level)
{
  return real_of(file)->pMethods->xLock(real_of(file), level);
}

static int vfs_unlock(sqlite3_file *file, int level)
{
  return real_of(file)->pMethods->xUnlock(real_of(file), level);
}

static int vfs_check_reserved_lock(sqlite3_file *file, int *out)
{
  return real_of(file)->pMethods->xCheckReservedLock(real_of(file), out);
}

static int vfs_file_control(sqlite3_file *file, int op, void *arg)
{
  /* SQLITE_FCNTL_SIZE_HINT and the like act on the file's size or bytes. */
  int rc = journal_vfs_flush((struct journal_vfs_file *)file);
  return rc != SQLITE_OK ? rc : real_of(file)->pMethods->xFileControl(real_of(file), op, arg);
}

static int vfs_sector_size(sqlite3_file *file)
{
  return real_of(file)->pMethods->xSectorSize(real_of(file));
}

static int vfs_device_characteristics(sqlite3_file *file)
{
  return real_of(file)->pMethods->xDeviceCharacteristics(real_of(file));
}

static int vfs_shm_map(sqlite3_file *file, int region, int size, int extend, void volatile **out)
{
  return real_of(file)->pMethods->xShmMap(real_of(file), region, size, extend, out);
}

static int vfs_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
  struct journal_vfs_file *f = (struct journal_vfs_file *)file;

  /* Still under the lock here: what is dropped or written is this writer's. */
  if (f->wal != NULL && offset <= WAL_WRITE_LOCK && WAL_WRITE_LOCK < offset + n &&
      flags == (SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE))
    journal_vfs_write_lock_released(f->wal);
  return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void vfs_shm_barrier(sqlite3_file *file)
{
  real_of(file)->pMethods->xShmBarrier(real_of(file));
}

static int vfs_shm_unmap(sqlite3_file *file, int delete_flag)
{
  return real_of(file)->pMethods->xShmUnmap(real_of(file), delete_flag);
}

static int vfs_fetch(sqlite3_file *file, sqlite3_int64 offset, int amount, void **out)
{
  int rc = journal_vfs_flush((struct journal_vfs_file *)file);
  return rc != SQLITE_OK ? rc : real_of(file)->pMethods->xFetch(real_of(file), offset, amount, out);
}

static int vfs_unfetch(sqlite3_file *file, sqlite3_int64 offset, void *page)
{
  return real_of(file)->pMethods->xUnfetch(real_of(file), offset, page);
}

static const sqlite3_io_methods journal_vfs_methods = {
    3,
    vfs_close,
    vfs_read,
    vfs_write,
    vfs_truncate,
    vfs_sync,
    vfs_file_size,
    vfs_lock,
    vfs_unlock,
    vfs_check_reserved_lock,
    vfs_file_control,
    vfs_sector_size,
    vfs_device_characteristics,
    vfs_shm_map,
    vfs_shm_lock,
    vfs_shm_barrier,
    vfs_shm_unmap,
    vfs_fetch,
    vfs_unfetch,
};

/*
 * Opens the WAL `name` again for direct writes, if its file system takes
 * them (statx says with which alignment) in blocks of at most
 * JOURNAL_VFS_BLOCK_MAX; otherwise (tmpfs, an old kernel, no memory) its
 * writes go through the page cache as any other file's.
 */
static void journal_vfs_direct_open(struct journal_vfs_file *f, const char *name)
{
#ifdef STATX_DIOALIGN
  struct statx st;
  size_t block, memory;
  void *stage = NULL, *last = NULL;
  int fd = open(name, O_WRONLY | O_DIRECT | O_CLOEXEC | O_LARGEFILE);

  if (fd < 0)
    return;
  if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) != 0 ||
      !(st.stx_mask & STATX_DIOALIGN) || st.stx_dio_offset_align == 0)
    goto fail;
  block = st.stx_dio_offset_align;
  memory = st.stx_dio_mem_align > sizeof(void *) ? st.stx_dio_mem_align : sizeof(void *);
  if (block > JOURNAL_VFS_BLOCK_MAX || (block & (block - 1)) != 0 || memory > block ||
      posix_memalign(&stage, block, JOURNAL_VFS_BUFFER + 2 * block) != 0)
    goto fail;
  last = malloc(block);
  if (last == NULL)
    goto fail;
  f->direct_fd = fd;
  f->block = block;
  f->stage = stage;
  f->last_block = last;
  return;
fail:
  free(stage);
  close(fd);
#else
  (void)f;
  (void)name;
#endif
}

static int vfs_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                    int *out_flags)
{
  struct journal_vfs_file *f = (struct journal_vfs_file *)file;
  int rc;

  (void)vfs;
  memset(f, 0, sizeof(*f));
  f->real = (sqlite3_file *)(f + 1);
  f->direct_fd = -1;
  f->block_at = -1;
  rc = journal_vfs_real->xOpen(journal_vfs_real, name, f->real, flags, out_flags);
  if (rc != SQLITE_OK)
    return rc; /* base.pMethods stays NULL: SQLite will not close it */
  if (f->real->pMethods->iVersion < 3) {
    f->real->pMethods->xClose(f->real);
    return SQLITE_CANTOPEN;
  }
  if ((flags & SQLITE_OPEN_MAIN_DB) && name != NULL) {
    f->name = strdup(name);
    if (f->name == NULL) {
      f->real->pMethods->xClose(f->real);
      return SQLITE_NOMEM;
    }
    pthread_mutex_lock(&journal_vfs_lock);
    f->next_db = journal_vfs_dbs;
    journal_vfs_dbs = f;
    pthread_mutex_unlock(&journal_vfs_lock);
  } else if (flags & SQLITE_OPEN_WAL) {
    /* Gathered only with its database known: the write lock is on it. */
    size_t len = name != NULL ? strlen(name) : 0;
    pthread_mutex_lock(&journal_vfs_lock);
    for (struct journal_vfs_file *db = journal_vfs_dbs; db != NULL && len > 4; db = db->next_db)
      if (db->wal == NULL && strlen(db->name) == len - 4 && memcmp(db->name, name, len - 4) == 0 &&
          strcmp(name + len - 4, "-wal") == 0) {
        f->buf = malloc(JOURNAL_VFS_BUFFER);
        if (f->buf != NULL) {
          f->db = db;
          db->wal = f;
        }
        break;
      }
    pthread_mutex_unlock(&journal_vfs_lock);
    /* Direct writes bypass the VFS below: only over the system's own, whose
     * files are the plain files their names say (a test's full-disk layer,
     * or any other, sees every write as before). */
    if (f->buf != NULL && strcmp(journal_vfs_real->zName, "unix") == 0)
      journal_vfs_direct_open(f, name);
  }
  f->base.pMethods = &journal_vfs_methods;
  return SQLITE_OK;
}

static int vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
  (void)vfs;
  return journal_vfs_real->xDelete(journal_vfs_real, name, sync_dir);
}

static int vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
  (void)vfs;
  return journal_vfs_real->xAccess(journal_vfs_real, name, flags, out);
}

static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int size, char *out)
{
  (void)vfs;
  return journal_vfs_real->xFullPathname(journal_vfs_real, name, size, out);
}

static void *vfs_dl_open(sqlite3_vfs *vfs, const char *name)
{
  (void)vfs;
  return journal_vfs_real->xDlOpen(journal_vfs_real, name);
}

static void vfs_dl_error(sqlite3_vfs *vfs, int size, char *out)
{
  (void)vfs;
  journal_vfs_real->xDlError(journal_vfs_real, size, out);
}

static void (*vfs_dl_sym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void)
{
  (void)vfs;
  return journal_vfs_real->xDlSym(journal_vfs_real, handle, symbol);
}

static void vfs_dl_close(sqlite3_vfs *vfs, void *handle)
{
  (void)vfs;
  journal_vfs_real->xDlClose(journal_vfs_real, handle);
}

static int vfs_randomness(sqlite3_vfs *vfs, int size, char *out)
{
  (void)vfs;
  return journal_vfs_real->xRandomness(journal_vfs_real, size, out);
}

static int vfs_sleep(sqlite3_vfs *vfs, int microseconds)
{
  (void)vfs;
  return journal_vfs_real->xSleep(journal_vfs_real, microseconds);
}

static int vfs_current_time(sqlite3_vfs *vfs, double *out)
{
  (void)vfs;
  return journal_vfs_real->xCurrentTime(journal_vfs_real, out);
}

static int vfs_get_last_error(sqlite3_vfs *vfs, int size, char *out)
{
  (void)vfs;
  return journal_vfs_real->xGetLastError(journal_vfs_real, size, out);
}

static int vfs_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
  (void)vfs;
  return journal_vfs_real->xCurrentTimeInt64(journal_vfs_real, out);
}

static void journal_vfs_init(void)
{
  journal_vfs_real = sqlite3_vfs_find(NULL);
  if (journal_vfs_real == NULL || journal_vfs_real->iVersion < 2)
    return;
  memset(&journal_vfs, 0, sizeof(journal_vfs));
  journal_vfs.iVersion = 2;
  journal_vfs.szOsFile = (int)sizeof(struct journal_vfs_file) + journal_vfs_real->szOsFile;
  journal_vfs.mxPathname = journal_vfs_real->mxPathname;
  journal_vfs.zName = JOURNAL_VFS_NAME;
  journal_vfs.xOpen = vfs_open;
  journal_vfs.xDelete = vfs_delete;
  journal_vfs.xAccess = vfs_access;
  journal_vfs.xFullPathname = vfs_full_pathname;
  journal_vfs.xDlOpen = vfs_dl_open;
  journal_vfs.xDlError = vfs_dl_error;
  journal_vfs.xDlSym = vfs_dl_sym;
  journal_vfs.xDlClose = vfs_dl_close;
  journal_vfs.xRandomness = vfs_randomness;
  journal_vfs.xSleep = vfs_sleep;
  journal_vfs.xCurrentTime = vfs_current_time;
  journal_vfs.xGetLastError = vfs_get_last_error;
  journal_vfs.xCurrentTimeInt64 = vfs_current_time_int64;
  journal_vfs_rc = sqlite3_vfs_register(&journal_vfs, 0);
}

int journal__vfs_register(void)
{
  pthread_once(&journal_vfs_once, journal_vfs_init);
  return journal_vfs_rc;
}
