/*
 * test_uplink.c - the uplink against a fake collector on the same loop (the
 * platform HTTP server; plain HTTP, and mutual TLS when the test PKI can be
 * made): a backlog drains back to back, a retry resends the same bytes,
 * Retry-After is honoured, 409 resumes where the collector says, 413 splits
 * without losing or doubling a sale, 400 is retried at backoff_max,
 * network errors say what failed on what, heartbeats carry the queue and
 * bring back commands, and closing mid-push loses nothing. Regressions:
 * the collector's decoded limit (sealing within it, a 400 over it), a full
 * disk (stored batches still sent, halved caps restored), retries out of
 * step (Retry-After with jitter, growing backoff, a jittered first retry),
 * a 200 that is no acknowledgement, an acknowledgement the journal cannot
 * save (backs off, logged once), and a 409 for a batch retention deleted
 * (a visible stall until head office approves a rebase).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zstd.h>
#include <sqlite3.h>
#include <uv.h>

#include "journal/journal.h"
#include "journal_fixture.h"
#include "platform/http_server.h"
#include "proto/codec.h"
#include "uplink/batcher.h"
#include "uplink/uplink.h"

#define MAX_SEQ 4096
#define MAX_BODIES 256

/* An answer the fake collector gives instead of its normal one. */
struct injected {
  int status;          /* 0 = none */
  int retry_after_s;   /* with 429/503; -1 = no header */
  int64_t expected;    /* with 409 */
  const char *text;
  int hold;            /* never answer */
  int ack_mode;        /* with 200: what kind of non-ack (enum fake_ack_mode) */
};

/* 200s that do not acknowledge the batch sent. */
enum fake_ack_mode {
  FAKE_ACK_TEXT = 1,     /* a text body, not a BatchAck */
  FAKE_ACK_EMPTY,        /* no body at all */
  FAKE_ACK_OTHER_JOURNAL,
  FAKE_ACK_SEQ,          /* acked_batch_seq = `expected` */
  FAKE_ACK_ENCODED,      /* a true BatchAck, but said to be gzip-encoded */
};

/* Extra header lines of the next fake_respond_ack (NULL = none). */
static const char *ack_extra_headers;

/* Heartbeat answers other than a plain HeartbeatAck. */
enum fake_heartbeat_mode {
  FAKE_HEARTBEAT_PORTAL = 1, /* 200 with an HTML page (a captive portal, a proxy) */
  FAKE_HEARTBEAT_BUSY,       /* 503 */
  FAKE_HEARTBEAT_DRIFT,      /* a HeartbeatAck whose server clock is an hour ahead */
  FAKE_HEARTBEAT_EMPTY_TEXT, /* 200 text/plain with no body (unpacks as an empty ack) */
};

struct fake {
  uv_loop_t *loop;
  http_server *server;
  int port;
  size_t max_body;               /* 413 above it */
  int64_t accepted;              /* highest batch_seq accepted */
  unsigned seq_seen[MAX_SEQ];    /* times each sale seq was accepted */
  struct injected inject[16];    /* answered in order, before normal ones */
  size_t inject_count, inject_next;
  /* Every batch body received, in order. */
  uint8_t *bodies[MAX_BODIES];
  size_t body_lens[MAX_BODIES];
  int64_t body_batch_seq[MAX_BODIES];
  uint64_t body_time_ms[MAX_BODIES];
  size_t body_count;
  /* Heartbeats. */
  unsigned heartbeats;
  uint64_t last_unsent;
  char last_heartbeat_store[16];
  int heartbeat_push_now;        /* answer the next heartbeat with a push_now command */
  /* What the last heartbeat reported of command "push-1" (0 = not reported),
   * and how many heartbeats reported it. */
  int push_report_state;
  unsigned push_reports;
  int64_t last_oldest_sale_ms;   /* the last heartbeat's oldest_sale_business_ms */
  int last_sales_deleted;
  /* Replay batches (issue 10): a resync command "resync-1" from business
   * time 0 in every heartbeat's answer (1 = pending, 2 = cancelled); the
   * replay batches received, each sale's times replayed, the highest
   * replay batch accepted; hold_replay keeps replay batches from that
   * number on unanswered (in replay_held). */
  int heartbeat_resync;
  unsigned replay_batches;
  unsigned replay_seen[MAX_SEQ];
  int64_t replay_accepted;
  int64_t hold_replay;
  http_exchange *replay_held;
  int resync_report_state;
  int refuse_replay;             /* answer every replay batch with this status (0 = no) */
  int heartbeat_mode;            /* enum fake_heartbeat_mode */
  int fail_all_batches;          /* answer every batch 500 */
  http_exchange *held;
  char journal_id[16];
  size_t max_decoded;            /* 400 above it, as the collector's codec says it; 0 = 64 MiB */
  int announce_decoded;          /* acks carry limits.max_batch_decoded_bytes = max_decoded */
  int plain_400;                 /* the 400 names no limit */
  int refuse_dictionary;         /* 400 for a body with a zstd dictionary (an older collector) */
  uint32_t refuse_dictionary_id; /* 400 for a body with this one (a collector that lacks it) */
  unsigned refused_400;          /* 400s answered */
  /* Head office approved a rebase: this batch is accepted as the next one
   * whatever the collector accepted before (0 = none approved). */
  int64_t rebase_from;
  uint64_t last_stalled_expected; /* the last heartbeat's fields 17-19 */
  uint64_t last_oldest_held;
  char last_problem[512];
};

/* The decoded limit the fake's acks announce (0 = no limits). */
static uint64_t announced_decoded;
/* The fake's acks list the zstd dictionaries the codec knows, as a new collector's do. */
static int announced_dictionaries;
/* ...but only sales-1, as a collector of the release before compact sales does. */
static int announced_sales_1_only;

struct fixture {
  struct jf_fixture jf;
  uv_timer_t tick;
  journal *journal;
  uplink *uplink;
  struct fake fake;
  char url[64];
};

static void fake_respond_ack(http_exchange *exchange, int status, int64_t acked, int64_t expected,
                             int duplicate, const uint8_t *journal_id, int push_now)
{
  Pos__V1__BatchAck ack = POS__V1__BATCH_ACK__INIT;
  Pos__V1__Command command = POS__V1__COMMAND__INIT;
  Pos__V1__PushNow push = POS__V1__PUSH_NOW__INIT;
  Pos__V1__Command *commands[1] = {&command};
  Pos__V1__Limits limits = POS__V1__LIMITS__INIT;
  uint8_t buffer[256];
  size_t len;

  if (announced_decoded) {
    limits.max_batch_bytes = 64u * 1024 * 1024;
    limits.max_batch_decoded_bytes = announced_decoded;
    limits.max_sales_per_batch = 100000;
    ack.limits = &limits;
  }
  if (announced_dictionaries) {
    proto_limits_advertise_dictionaries(&limits);
    ack.limits = &limits;
  }
  if (announced_sales_1_only) {
    static uint32_t sales_1[1] = {PROTO_ZSTD_DICT_SALES_1};
    limits.zstd_dictionaries = sales_1;
    limits.n_zstd_dictionaries = 1;
    ack.limits = &limits;
  }
  ack.journal_id.data = (uint8_t *)(uintptr_t)journal_id;
  ack.journal_id.len = 16;
  ack.acked_batch_seq = (uint64_t)acked;
  ack.expected_batch_seq = (uint64_t)expected;
  ack.duplicate = duplicate;
  if (push_now) {
    command.command_id = "cmd-1";
    command.command_case = POS__V1__COMMAND__COMMAND_PUSH_NOW;
    command.push_now = &push;
    ack.commands = commands;
    ack.n_commands = 1;
  }
  len = pos__v1__batch_ack__pack(&ack, buffer);
  http_exchange_respond(exchange, status, "application/x-protobuf", ack_extra_headers, buffer,
                        len);
  ack_extra_headers = NULL;
}

/* A replay batch: its own batch_seq stream, as the collector keeps one per
 * resync; never counted with the live batches. Takes `batch`. */
static void fake_on_replay_batch(struct fake *fake, http_exchange *exchange,
                                 Pos__V1__Batch *batch, const uint8_t journal_id[16])
{
  int64_t batch_seq = (int64_t)batch->envelope->batch_seq;

  assert_string_equal(batch->envelope->resync_id, "resync-1");
  fake->replay_batches++;
  if (fake->refuse_replay) {
    pos__v1__batch__free_unpacked(batch, NULL);
    http_exchange_respond(exchange, fake->refuse_replay, "text/plain", NULL,
                          "resync-1 was not issued to store S001",
                          strlen("resync-1 was not issued to store S001"));
    return;
  }
  if (fake->hold_replay && batch_seq >= fake->hold_replay && !fake->replay_held) {
    pos__v1__batch__free_unpacked(batch, NULL);
    fake->replay_held = exchange;
    return;
  }
  if (batch_seq == fake->replay_accepted + 1) {
    for (size_t i = 0; i < batch->n_sales; i++) {
      assert_true(batch->sales[i]->seq < MAX_SEQ);
      fake->replay_seen[batch->sales[i]->seq]++;
    }
    fake->replay_accepted = batch_seq;
  }
  pos__v1__batch__free_unpacked(batch, NULL);
  if (batch_seq > fake->replay_accepted)
    fake_respond_ack(exchange, 409, fake->replay_accepted, fake->replay_accepted + 1, 0,
                     journal_id, 0);
  else
    fake_respond_ack(exchange, 200, fake->replay_accepted, 0, 0, journal_id, 0);
}

static void fake_on_batch(struct fake *fake, http_exchange *exchange)
{
  struct proto_limits limits = {64u * 1024 * 1024, 64u * 1024 * 1024, 100000};
  Pos__V1__Batch *batch = NULL;
  const char *body;
  size_t body_len;
  char err[256];
  int64_t batch_seq;
  uint8_t journal_id[16];

  body = http_exchange_body(exchange, &body_len);
  if (!http_exchange_header(exchange, "Content-Encoding") ||
      strcmp(http_exchange_header(exchange, "Content-Encoding"), "zstd") != 0 ||
      strcmp(http_exchange_header(exchange, "Content-Type"), "application/x-protobuf") != 0) {
    http_exchange_respond(exchange, 415, "text/plain", NULL, "bad type", 8);
    return;
  }
  if (fake->refuse_dictionary && ZSTD_getDictID_fromFrame(body, body_len) != 0) {
    /* What a collector from before the dictionary answers (its codec's words). */
    fake->refused_400++;
    snprintf(err, sizeof(err), "body is not valid zstd: expected complete zstd frames");
    http_exchange_respond(exchange, 400, "text/plain", NULL, err, strlen(err));
    return;
  }
  if (fake->refuse_dictionary_id &&
      ZSTD_getDictID_fromFrame(body, body_len) == fake->refuse_dictionary_id) {
    /* What a collector that lacks the dictionary answers (its codec's words). */
    fake->refused_400++;
    snprintf(err, sizeof(err), "batch compressed with zstd dictionary %" PRIu32 ", which this "
             "collector does not know: upgrade the collector", fake->refuse_dictionary_id);
    http_exchange_respond(exchange, 400, "text/plain", NULL, err, strlen(err));
    return;
  }
  if (fake->max_decoded)
    limits.max_decoded = fake->max_decoded;
  announced_decoded = fake->announce_decoded ? fake->max_decoded : 0;
  if (proto_batch_unpack((const uint8_t *)body, body_len, &limits, &batch, err, sizeof(err))) {
    fake->refused_400++;
    if (fake->plain_400)
      snprintf(err, sizeof(err), "cannot read this batch");
    http_exchange_respond(exchange, 400, "text/plain", NULL, err, strlen(err));
    return;
  }
  batch_seq = (int64_t)batch->envelope->batch_seq;
  memcpy(journal_id, batch->envelope->journal_id.data, 16);
  if (batch->envelope->kind == POS__V1__BATCH_KIND__BATCH_KIND_REPLAY) {
    fake_on_replay_batch(fake, exchange, batch, journal_id);
    return;
  }
  if (fake->body_count < MAX_BODIES) {
    fake->bodies[fake->body_count] = malloc(body_len);
    memcpy(fake->bodies[fake->body_count], body, body_len);
    fake->body_lens[fake->body_count] = body_len;
    fake->body_batch_seq[fake->body_count] = batch_seq;
    fake->body_time_ms[fake->body_count] = uv_now(fake->loop);
    fake->body_count++;
  }
  if (fake->fail_all_batches) {
    pos__v1__batch__free_unpacked(batch, NULL);
    http_exchange_respond(exchange, 500, "text/plain", NULL, "boom", 4);
    return;
  }
  if (fake->inject_next < fake->inject_count) {
    struct injected *in = &fake->inject[fake->inject_next++];
    char header[64] = "";
    pos__v1__batch__free_unpacked(batch, NULL);
    if (in->hold) {
      fake->held = exchange;
      return;
    }
    if (in->status == 409) {
      fake_respond_ack(exchange, 409, fake->accepted, in->expected, 0, journal_id, 0);
      return;
    }
    if (in->status == 200) {
      uint8_t other[16];
      memset(other, 0xAB, sizeof(other));
      switch (in->ack_mode) {
      case FAKE_ACK_TEXT:
        http_exchange_respond(exchange, 200, "text/plain", NULL, "ok", 2);
        break;
      case FAKE_ACK_EMPTY:
        http_exchange_respond(exchange, 200, "application/x-protobuf", NULL, "", 0);
        break;
      case FAKE_ACK_OTHER_JOURNAL:
        fake_respond_ack(exchange, 200, batch_seq, 0, 0, other, 0);
        break;
      case FAKE_ACK_ENCODED:
        ack_extra_headers = "Content-Encoding: gzip\r\n";
        fake_respond_ack(exchange, 200, batch_seq, 0, 0, journal_id, 0);
        break;
      default:
        fake_respond_ack(exchange, 200, in->expected, 0, 0, journal_id, 0);
        break;
      }
      return;
    }
    if (in->retry_after_s >= 0 && (in->status == 429 || in->status == 503))
      snprintf(header, sizeof(header), "Retry-After: %d\r\n", in->retry_after_s);
    http_exchange_respond(exchange, in->status, "text/plain", header[0] ? header : NULL,
                          in->text ? in->text : "injected", strlen(in->text ? in->text : "injected"));
    return;
  }
  if (fake->max_body && body_len > fake->max_body) {
    pos__v1__batch__free_unpacked(batch, NULL);
    http_exchange_respond(exchange, 413, "text/plain", NULL, "too large", 9);
    return;
  }
  if (fake->rebase_from && batch_seq == fake->rebase_from && fake->accepted < batch_seq - 1) {
    fake->accepted = batch_seq - 1;
    fake->rebase_from = 0;
  }
  if (batch_seq <= fake->accepted) {
    pos__v1__batch__free_unpacked(batch, NULL);
    fake_respond_ack(exchange, 200, fake->accepted, 0, 1, journal_id, 0);
    return;
  }
  if (batch_seq > fake->accepted + 1) {
    pos__v1__batch__free_unpacked(batch, NULL);
    fake_respond_ack(exchange, 409, fake->accepted, fake->accepted + 1, 0, journal_id, 0);
    return;
  }
  for (size_t i = 0; i < batch->n_sales; i++) {
    uint64_t seq = batch->sales[i]->seq;
    assert_true(seq < MAX_SEQ);
    fake->seq_seen[seq]++;
  }
  fake->accepted = batch_seq;
  pos__v1__batch__free_unpacked(batch, NULL);
  fake_respond_ack(exchange, 200, fake->accepted, 0, 0, journal_id, 0);
}

static void fake_on_heartbeat(struct fake *fake, http_exchange *exchange)
{
  size_t body_len;
  const char *body = http_exchange_body(exchange, &body_len);
  Pos__V1__Heartbeat *heartbeat =
      pos__v1__heartbeat__unpack(NULL, body_len, (const uint8_t *)body);
  Pos__V1__HeartbeatAck ack = POS__V1__HEARTBEAT_ACK__INIT;
  Pos__V1__Command command = POS__V1__COMMAND__INIT;
  Pos__V1__PushNow push = POS__V1__PUSH_NOW__INIT;
  Pos__V1__Resync resync = POS__V1__RESYNC__INIT;
  Pos__V1__Command *commands[1] = {&command};
  uint8_t buffer[256];
  size_t len;

  if (!heartbeat) {
    http_exchange_respond(exchange, 400, "text/plain", NULL, "bad heartbeat", 13);
    return;
  }
  fake->heartbeats++;
  fake->last_unsent = heartbeat->unsent_sales;
  snprintf(fake->last_heartbeat_store, sizeof(fake->last_heartbeat_store), "%s",
           heartbeat->store_id);
  fake->last_stalled_expected = heartbeat->stalled_expected_batch_seq;
  fake->last_oldest_held = heartbeat->oldest_held_batch_seq;
  fake->last_oldest_sale_ms = heartbeat->oldest_sale_business_ms;
  fake->last_sales_deleted = heartbeat->sales_deleted;
  for (size_t i = 0; i < heartbeat->n_command_reports; i++) {
    if (strcmp(heartbeat->command_reports[i]->command_id, "push-1") == 0) {
      fake->push_report_state = (int)heartbeat->command_reports[i]->state;
      fake->push_reports++;
    }
    if (strcmp(heartbeat->command_reports[i]->command_id, "resync-1") == 0)
      fake->resync_report_state = (int)heartbeat->command_reports[i]->state;
  }
  snprintf(fake->last_problem, sizeof(fake->last_problem), "%s",
           heartbeat->uplink_problem ? heartbeat->uplink_problem : "");
  pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
  ack.server_clock_ms = 0;
  if (fake->heartbeat_mode == FAKE_HEARTBEAT_PORTAL) {
    static const char page[] = "<html><body>Please log in to the guest Wi-Fi</body></html>";
    http_exchange_respond(exchange, 200, "text/html", NULL, page, sizeof(page) - 1);
    return;
  }
  if (fake->heartbeat_mode == FAKE_HEARTBEAT_EMPTY_TEXT) {
    http_exchange_respond(exchange, 200, "text/plain", NULL, "", 0);
    return;
  }
  if (fake->heartbeat_mode == FAKE_HEARTBEAT_BUSY) {
    http_exchange_respond(exchange, 503, "text/plain", NULL, "busy", 4);
    return;
  }
  if (fake->heartbeat_mode == FAKE_HEARTBEAT_DRIFT) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    ack.server_clock_ms = (int64_t)now.tv_sec * 1000 + 3600 * 1000;
  }
  if (fake->heartbeat_push_now) {
    command.command_id = "push-1";
    command.command_case = POS__V1__COMMAND__COMMAND_PUSH_NOW;
    command.push_now = &push;
    ack.commands = commands;
    ack.n_commands = 1;
  } else if (fake->heartbeat_resync) {
    command.command_id = "resync-1";
    command.issued_by = "alice";
    command.command_case = POS__V1__COMMAND__COMMAND_RESYNC;
    command.resync = &resync;
    command.state = fake->heartbeat_resync == 2 ? POS__V1__COMMAND_STATE__COMMAND_STATE_CANCELLED
                                                : POS__V1__COMMAND_STATE__COMMAND_STATE_PENDING;
    ack.commands = commands;
    ack.n_commands = 1;
  }
  len = pos__v1__heartbeat_ack__pack(&ack, buffer);
  http_exchange_respond(exchange, 200, "application/x-protobuf", NULL, buffer, len);
}

static void fake_handle(http_exchange *exchange, void *arg)
{
  struct fake *fake = arg;
  const char *path = http_exchange_path(exchange);
  if (strcmp(path, "/v1/batches") == 0)
    fake_on_batch(fake, exchange);
  else if (strcmp(path, "/v1/heartbeat") == 0)
    fake_on_heartbeat(fake, exchange);
  else
    http_exchange_respond(exchange, 404, "text/plain", NULL, "no", 2);
}

static void fake_start(struct fixture *f, const struct http_tls_config *tls)
{
  struct http_server_config config = {.listen_host = "127.0.0.1",
                                      .max_header_bytes = 16 * 1024,
                                      .max_body_bytes = 64u * 1024 * 1024,
                                      .idle_timeout_ms = 60000,
                                      .request_timeout_ms = 60000,
                                      .max_connections = 64,
                                      .tls = tls};
  char err[256];
  f->fake.loop = &f->jf.loop;
  f->fake.server =
      http_server_create(&f->jf.loop, &config, fake_handle, &f->fake, err, sizeof(err));
  if (!f->fake.server)
    fail_msg("fake collector: %s", err);
  f->fake.port = http_server_port(f->fake.server);
  snprintf(f->url, sizeof(f->url), "%s://127.0.0.1:%d", tls ? "https" : "http", f->fake.port);
}

/* ---- a disk that fills up on demand ---------------------------------------------- */

/* A VFS over the default one whose writes fail with SQLITE_FULL while
 * disk_full is set, as on a flash card with no room left: SQLite sees what
 * it sees on a full disk, whatever the file sizes. */
static int disk_full;
static int sync_fails; /* fsync answers EIO, as a worn flash card does */
static sqlite3_vfs *real_vfs;
static sqlite3_vfs full_vfs;

struct full_file {
  sqlite3_file base;
  sqlite3_file *real; /* lives right after this struct */
  sqlite3_io_methods methods;
};

#define REAL(file) (((struct full_file *)(file))->real)

static int full_close(sqlite3_file *f) { return REAL(f)->pMethods->xClose(REAL(f)); }
static int full_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
  return REAL(f)->pMethods->xRead(REAL(f), buf, amt, off);
}
static int full_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
  if (disk_full)
    return SQLITE_FULL;
  return REAL(f)->pMethods->xWrite(REAL(f), buf, amt, off);
}
static int full_truncate(sqlite3_file *f, sqlite3_int64 size)
{
  return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int full_sync(sqlite3_file *f, int flags)
{
  if (sync_fails)
    return SQLITE_IOERR_FSYNC;
  return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int full_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
  return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int full_lock(sqlite3_file *f, int lock) { return REAL(f)->pMethods->xLock(REAL(f), lock); }
static int full_unlock(sqlite3_file *f, int lock)
{
  return REAL(f)->pMethods->xUnlock(REAL(f), lock);
}
static int full_check_lock(sqlite3_file *f, int *out)
{
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int full_control(sqlite3_file *f, int op, void *arg)
{
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int full_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int full_device(sqlite3_file *f)
{
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int full_shm_map(sqlite3_file *f, int page, int size, int extend, void volatile **out)
{
  return REAL(f)->pMethods->xShmMap(REAL(f), page, size, extend, out);
}
static int full_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
  return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void full_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int full_shm_unmap(sqlite3_file *f, int delete_flag)
{
  return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}
static int full_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **out)
{
  return REAL(f)->pMethods->xFetch(REAL(f), off, amt, out);
}
static int full_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
  return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static int full_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                     int *out_flags)
{
  struct full_file *ff = (struct full_file *)file;
  const sqlite3_io_methods *real_methods;
  int rc;
  (void)vfs;
  memset(ff, 0, sizeof(*ff));
  ff->real = (sqlite3_file *)(ff + 1);
  rc = real_vfs->xOpen(real_vfs, name, ff->real, flags, out_flags);
  real_methods = ff->real->pMethods;
  if (!real_methods)
    return rc; /* nothing to close */
  ff->methods = (sqlite3_io_methods){real_methods->iVersion, full_close, full_read, full_write,
                                     full_truncate, full_sync, full_file_size, full_lock,
                                     full_unlock, full_check_lock, full_control, full_sector,
                                     full_device, NULL, NULL, NULL, NULL, NULL, NULL};
  if (real_methods->iVersion >= 2) {
    ff->methods.xShmMap = full_shm_map;
    ff->methods.xShmLock = full_shm_lock;
    ff->methods.xShmBarrier = full_shm_barrier;
    ff->methods.xShmUnmap = full_shm_unmap;
  }
  if (real_methods->iVersion >= 3) {
    ff->methods.xFetch = full_fetch;
    ff->methods.xUnfetch = full_unfetch;
  }
  file->pMethods = &ff->methods;
  return rc;
}

/* Makes the full-disk VFS the default, once, before any journal opens. */
static void install_full_vfs(void)
{
  if (real_vfs)
    return;
  real_vfs = sqlite3_vfs_find(NULL);
  assert_non_null(real_vfs);
  full_vfs = *real_vfs;
  full_vfs.zName = "test-full-disk";
  full_vfs.szOsFile = (int)sizeof(struct full_file) + real_vfs->szOsFile;
  full_vfs.xOpen = full_open;
  full_vfs.pNext = NULL;
  assert_int_equal(sqlite3_vfs_register(&full_vfs, 1), SQLITE_OK);
}

static void on_tick(uv_timer_t *timer) { (void)timer; }

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));

  install_full_vfs();
  disk_full = 0;
  sync_fails = 0;
  announced_decoded = 0;
  announced_dictionaries = 0;
  announced_sales_1_only = 0;

  jf_setup(&f->jf, "test_uplink");
  /* Keeps UV_RUN_ONCE from sleeping forever while a test waits. */
  uv_timer_init(&f->jf.loop, &f->tick);
  uv_timer_start(&f->tick, on_tick, 10, 10);
  f->journal = jf_open_journal(&f->jf, 0, 64);
  *state = f;
  return 0;
}

static void stop_uplink(struct fixture *f)
{
  uplink_close(f->uplink);
  f->uplink = NULL;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  stop_uplink(f);
  journal_close(f->journal);
  http_server_close(f->fake.server, NULL, NULL);
  uv_close((uv_handle_t *)&f->tick, NULL);
  uv_run(&f->jf.loop, UV_RUN_DEFAULT);
  for (size_t i = 0; i < f->fake.body_count; i++)
    free(f->fake.bodies[i]);
  jf_teardown(&f->jf);
  free(f);
  return 0;
}

static struct uplink_options default_options(struct fixture *f)
{
  struct uplink_options options;
  memset(&options, 0, sizeof(options));
  options.url = f->url;
  options.cert_file = "";
  options.key_file = "";
  options.ca_file = "";
  options.store_id = "S001";
  options.device_id = "D1";
  options.journal_path = f->jf.path;
  options.interval_ms = 3600 * 1000; /* pushes come from the test */
  options.jitter_ms = 0;             /* so the first push starts at once */
  options.heartbeat_interval_ms = 0;
  options.max_batch_sales = 100;
  options.max_batch_bytes = 1024 * 1024;
  options.backoff_min_ms = 20;
  options.backoff_max_ms = 300;
  options.connect_timeout_ms = 2000;
  options.request_timeout_ms = 5000;
  options.zstd_level = 3;
  options.random_seed = 7;
  return options;
}

static void start_uplink(struct fixture *f, const struct uplink_options *options)
{
  char err[256];
  f->uplink = uplink_create(&f->jf.loop, f->journal, options, err, sizeof(err));
  if (!f->uplink)
    fail_msg("uplink_create: %s", err);
}

/* A cash sale at the POS with `lines` random 40-character SKUs at 5.00; the
 * SKUs go on from one sale to the next (and one test to the next). */
static void make_cash_sale(struct sale *sale, const char *sale_id, size_t lines)
{
  static uint64_t noise = 88172645463325252ULL;
  jf_sale_init(sale, sale_id, SALE_CHANNEL_POS, "");
  sale->line_count = lines;
  sale->lines = calloc(lines, sizeof(*sale->lines));
  for (size_t l = 0; l < lines; l++) {
    for (size_t c = 0; c < 40; c++) {
      noise ^= noise << 13;
      noise ^= noise >> 7;
      noise ^= noise << 17;
      sale->lines[l].sku[c] = "0123456789ABCDEF"[noise & 15];
    }
    sale->lines[l].qty = 1;
    sale->lines[l].unit_price = 500;
    sale->total += 500;
  }
  sale->payment_count = 1;
  sale->payments = calloc(1, sizeof(*sale->payments));
  snprintf(sale->payments[0].method, sizeof(sale->payments[0].method), "cash");
  sale->payments[0].amount = sale->total;
}

static void add_sales(struct fixture *f, const char *prefix, size_t count, size_t lines)
{
  jf_add_sales(&f->jf, f->journal, prefix, count, lines, make_cash_sale);
}

/* Runs NEXT_BATCH `batch_seq` of at most `max_sales` sales, as a run would
 * (1 MiB at most). The caller checks and clears w->op. */
static void next_batch(struct fixture *f, struct jf_op *w, int64_t batch_seq, size_t max_sales,
                       struct batcher_identity *identity)
{
  memset(w, 0, sizeof(*w));
  w->op.kind = JOURNAL_OP_NEXT_BATCH;
  w->op.batch_seq = batch_seq;
  w->op.seal_upto_seq = INT64_MAX;
  w->op.max_sales = max_sales;
  w->op.max_bytes = 1024 * 1024;
  w->op.pack = batcher_pack;
  w->op.pack_arg = identity;
  jf_run_op(&f->jf, f->journal, w);
}

/* Seals batch `batch_seq` of at most `max_sales` sales, as a run would. */
static void seal(struct fixture *f, int64_t batch_seq, size_t max_sales)
{
  static struct batcher_identity identity;
  struct jf_op w;
  assert_int_equal(batcher_identity_init(&identity, "S001", "D1", 3), 0);
  next_batch(f, &w, batch_seq, max_sales, &identity);
  assert_int_equal(w.op.error, 0);
  assert_true(w.op.sealed);
  journal_op_clear(&w.op);
}

/* Runs the loop until cond(f) holds (1), or `timeout_ms` passed (0). */
static int wait_until(struct fixture *f, int (*cond)(struct fixture *), uint64_t timeout_ms)
{
  uint64_t deadline;
  uv_update_time(&f->jf.loop);
  deadline = uv_now(&f->jf.loop) + timeout_ms;
  while (!cond(f)) {
    if (uv_now(&f->jf.loop) > deadline)
      return 0;
    uv_run(&f->jf.loop, UV_RUN_ONCE);
  }
  return 1;
}

/* Runs the loop until cond(f) holds, or fails after `timeout_ms`. */
static void wait_for(struct fixture *f, int (*cond)(struct fixture *), uint64_t timeout_ms,
                     const char *what)
{
  uint64_t deadline;
  uv_update_time(&f->jf.loop);
  deadline = uv_now(&f->jf.loop) + timeout_ms;
  while (!cond(f)) {
    if (uv_now(&f->jf.loop) > deadline)
      fail_msg("timed out waiting for: %s", what);
    uv_run(&f->jf.loop, UV_RUN_ONCE);
  }
}

static int is_idle_and_all_sent(struct fixture *f)
{
  struct journal_stats stats;
  struct uplink_status status;
  journal_get_stats(f->journal, &stats);
  uplink_get_status(f->uplink, &status);
  return status.state == UPLINK_IDLE && stats.sales_unsent == 0;
}

static size_t bodies_target;
static int bodies_received(struct fixture *f) { return f->fake.body_count >= bodies_target; }

static int is_backing_off(struct fixture *f)
{
  struct uplink_status status;
  uplink_get_status(f->uplink, &status);
  return status.state == UPLINK_BACKING_OFF;
}

/* Every journaled seq reached the collector exactly once. */
/* Whether a body's envelope says compact_sales, read off its raw protobuf
 * (proto_batch_unpack would give the sales back canonical). */
static int body_compact(const uint8_t *body, size_t body_len)
{
  uint8_t *raw = NULL;
  size_t raw_len = 0;
  Pos__V1__Batch *batch;
  int compact;

  assert_int_equal(proto_zstd_decompress(body, body_len, 64u << 20, &raw, &raw_len), PROTO_OK);
  batch = pos__v1__batch__unpack(NULL, raw_len, raw);
  assert_non_null(batch);
  compact = batch->envelope && batch->envelope->compact_sales;
  for (size_t i = 0; compact && i < batch->n_sales; i++)
    assert_int_equal(batch->sales[i]->business_time_ms, 0); /* left out */
  pos__v1__batch__free_unpacked(batch, NULL);
  free(raw);
  return compact;
}

static void assert_each_sale_once(struct fixture *f)
{
  struct journal_stats stats;
  journal_get_stats(f->journal, &stats);
  for (int64_t seq = 1; seq <= stats.last_seq; seq++) {
    if (f->fake.seq_seen[seq] != 1)
      fail_msg("seq %lld reached the collector %u times", (long long)seq,
               f->fake.seq_seen[seq]);
  }
  assert_int_equal(stats.sales_unsent, 0);
}

/* ---- the tests ------------------------------------------------------------------- */

static void a_backlog_drains_back_to_back(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;
  struct journal_stats stats;

  fake_start(f, NULL);
  add_sales(f, "B", 250, 2);
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 10000, "the backlog sent");
  assert_int_equal(f->fake.body_count, 3);
  for (size_t i = 0; i < 3; i++)
    assert_int_equal(f->fake.body_batch_seq[i], (int64_t)i + 1);
  assert_each_sale_once(f);
  journal_get_stats(f->journal, &stats);
  assert_int_equal(stats.acked_batch_seq, 3);
  assert_int_equal(stats.last_batch_seq, 3);
  uplink_get_status(f->uplink, &status);
  assert_int_equal(status.batches_acked, 3);
  assert_true(status.last_attempt_ms > 0);
  assert_true(status.next_push_ms > 0);
  assert_int_equal(status.last_error_ms, 0);

  /* A push with nothing new sends nothing. */
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 5000, "an empty push");
  assert_int_equal(f->fake.body_count, 3);

  /* New sales, pushed on demand. */
  add_sales(f, "B2", 5, 1);
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 5000, "the new sales sent");
  assert_int_equal(f->fake.body_count, 4);
  assert_each_sale_once(f);
}

static void a_retry_sends_the_same_bytes(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;

  fake_start(f, NULL);
  f->fake.inject[0] = (struct injected){500, -1, 0, "boom", 0, 0};
  f->fake.inject[1] = (struct injected){502, -1, 0, "bad gateway", 0, 0};
  f->fake.inject_count = 2;
  add_sales(f, "R", 30, 3);
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 10000, "sent after two failures");
  assert_int_equal(f->fake.body_count, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(f->fake.body_batch_seq[i], 1);
    assert_int_equal(f->fake.body_lens[i], f->fake.body_lens[0]);
    assert_memory_equal(f->fake.bodies[i], f->fake.bodies[0], f->fake.body_lens[0]);
  }
  assert_each_sale_once(f);
  uplink_get_status(f->uplink, &status);
  /* The last error stays visible after recovery, with when it happened. */
  assert_non_null(strstr(status.last_error, "502"));
  assert_int_equal(status.batches_sent, 3);
}

static void retry_after_is_honoured(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;

  fake_start(f, NULL);
  f->fake.inject[0] = (struct injected){503, 1, 0, "kafka unavailable", 0, 0};
  f->fake.inject_count = 1;
  add_sales(f, "RA", 3, 1);
  options = default_options(f);
  options.backoff_min_ms = 10;
  options.backoff_max_ms = 5000;
  start_uplink(f, &options);
  bodies_target = 1;
  wait_for(f, bodies_received, 5000, "the first attempt");
  wait_for(f, is_backing_off, 5000, "backing off");
  uplink_get_status(f->uplink, &status);
  assert_non_null(strstr(status.last_error, "503"));
  assert_non_null(strstr(status.last_error, "kafka unavailable"));
  assert_true(status.next_push_ms > 0);
  wait_for(f, is_idle_and_all_sent, 5000, "sent after Retry-After");
  assert_int_equal(f->fake.body_count, 2);
  /* Not before the collector said (backoff alone would retry in ~10 ms). */
  assert_true(f->fake.body_time_ms[1] - f->fake.body_time_ms[0] >= 950);
}

static void a_409_above_acknowledges_what_the_collector_has(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct journal_stats stats;

  fake_start(f, NULL);
  add_sales(f, "G", 30, 1);
  /* Batches 1 and 2 were sealed (and sent) by a run that stopped before it
   * recorded the acknowledgements. */
  seal(f, 1, 10);
  seal(f, 2, 10);
  /* The collector says it has batches 1 and 2 when the agent resends 1. */
  f->fake.inject[0] = (struct injected){409, -1, 3, NULL, 0, 0};
  f->fake.inject_count = 1;
  f->fake.accepted = 2;
  options = default_options(f);
  options.max_batch_sales = 10;
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 10000, "sent after a 409");
  journal_get_stats(f->journal, &stats);
  assert_int_equal(stats.acked_batch_seq, 3);
  assert_int_equal(stats.last_batch_seq, 3);
  /* batch 1 (409), then 3 only: 2 was never sent. */
  assert_int_equal(f->fake.body_count, 2);
  assert_int_equal(f->fake.body_batch_seq[0], 1);
  assert_int_equal(f->fake.body_batch_seq[1], 3);
}

static void a_409_below_resends_the_stored_batches(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  uint8_t *first_two[2];
  size_t first_two_len[2];

  fake_start(f, NULL);
  add_sales(f, "L", 30, 1);
  options = default_options(f);
  options.max_batch_sales = 10;
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 10000, "the first three batches");
  assert_int_equal(f->fake.body_count, 3);
  for (int i = 0; i < 2; i++) {
    first_two_len[i] = f->fake.body_lens[i + 1];
    first_two[i] = malloc(first_two_len[i]);
    memcpy(first_two[i], f->fake.bodies[i + 1], first_two_len[i]);
  }

  /* The collector loses batches 2 and 3 (its state rebuilt from less). */
  f->fake.accepted = 1;
  memset(f->fake.seq_seen, 0, sizeof(f->fake.seq_seen));
  for (int seq = 1; seq <= 10; seq++)
    f->fake.seq_seen[seq] = 1;
  add_sales(f, "L2", 5, 1);
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 10000, "resent from batch 2");
  /* 4 (409 expected 2), then 2, 3, 4. */
  assert_int_equal(f->fake.body_count, 7);
  assert_int_equal(f->fake.body_batch_seq[3], 4);
  assert_int_equal(f->fake.body_batch_seq[4], 2);
  assert_int_equal(f->fake.body_batch_seq[5], 3);
  assert_int_equal(f->fake.body_batch_seq[6], 4);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(f->fake.body_lens[4 + i], first_two_len[i]);
    assert_memory_equal(f->fake.bodies[4 + i], first_two[i], first_two_len[i]);
    free(first_two[i]);
  }
  assert_memory_equal(f->fake.bodies[6], f->fake.bodies[3], f->fake.body_lens[3]);
  assert_each_sale_once(f);
}

static void a_413_splits_without_losing_or_doubling(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;
  struct journal_stats stats;

  fake_start(f, NULL);
  add_sales(f, "BIG", 200, 8); /* about 200 bytes per sale compressed */
  f->fake.max_body = 6000;
  options = default_options(f);
  options.max_batch_sales = 200;
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 20000, "everything sent in smaller batches");
  assert_each_sale_once(f);
  journal_get_stats(f->journal, &stats);
  assert_true(stats.last_batch_seq > 5);
  assert_int_equal(stats.acked_batch_seq, stats.last_batch_seq);
  assert_int_equal(f->fake.accepted, stats.last_batch_seq);
  uplink_get_status(f->uplink, &status);
  assert_true(status.max_batch_sales < 200);
  /* Accepted batches were numbered 1, 2, 3... with no gap. */
  {
    int64_t expect = 1;
    for (size_t i = 0; i < f->fake.body_count; i++) {
      if (f->fake.body_lens[i] > f->fake.max_body)
        continue;
      assert_int_equal(f->fake.body_batch_seq[i], expect);
      expect++;
    }
  }
}

static void a_400_is_loud_and_retried_at_backoff_max(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;

  fake_start(f, NULL);
  f->fake.inject[0] = (struct injected){403, -1, 0, "certificate store S002 is not S001", 0, 0};
  f->fake.inject_count = 1;
  add_sales(f, "F", 3, 1);
  options = default_options(f);
  options.backoff_min_ms = 10;
  options.backoff_max_ms = 400;
  start_uplink(f, &options);
  wait_for(f, is_backing_off, 5000, "backing off after a 403");
  uplink_get_status(f->uplink, &status);
  assert_non_null(strstr(status.last_error, "403"));
  assert_non_null(strstr(status.last_error, "S002"));
  assert_non_null(strstr(status.last_error, "a person must act"));
  wait_for(f, is_idle_and_all_sent, 5000, "sent after the 403");
  assert_true(f->fake.body_time_ms[1] - f->fake.body_time_ms[0] >= 390);
  assert_each_sale_once(f);
}

static void a_dead_collector_is_named_in_the_error(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;
  uv_tcp_t probe;
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);

  /* A port nobody listens on: bind one, note it, close it. */
  uv_tcp_init(&f->jf.loop, &probe);
  uv_ip4_addr("127.0.0.1", 0, &addr);
  assert_int_equal(uv_tcp_bind(&probe, (const struct sockaddr *)&addr, 0), 0);
  uv_tcp_getsockname(&probe, (struct sockaddr *)&bound, &len);
  snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/",
           ntohs(((struct sockaddr_in *)&bound)->sin_port));
  uv_close((uv_handle_t *)&probe, NULL);

  add_sales(f, "N", 3, 1);
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, is_backing_off, 5000, "backing off");
  uplink_get_status(f->uplink, &status);
  assert_non_null(strstr(status.last_error, "127.0.0.1:"));
  assert_non_null(strstr(status.last_error, "cannot connect"));
  {
    struct journal_stats stats;
    journal_get_stats(f->journal, &stats);
    assert_int_equal(stats.sales_unsent, 3);
    assert_int_equal(stats.last_batch_seq, 1);
  }
}

static int heartbeat_answered(struct fixture *f)
{
  struct uplink_status status;
  uplink_get_status(f->uplink, &status);
  return f->fake.heartbeats > 0 && status.last_heartbeat_ms > 0;
}

/* The push at start is over and the next is an interval away. */
static int first_push_done(struct fixture *f)
{
  struct uplink_status status;
  uplink_get_status(f->uplink, &status);
  uv_update_time(&f->jf.loop);
  return status.state == UPLINK_IDLE && status.next_push_ms > 0 &&
         status.next_push_ms - (int64_t)time(NULL) * 1000 > 60000;
}

static void heartbeats_carry_the_queue_and_bring_commands(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;

  fake_start(f, NULL);
  options = default_options(f);
  options.heartbeat_interval_ms = 200;
  start_uplink(f, &options);
  wait_for(f, first_push_done, 5000, "the empty first push");
  add_sales(f, "H", 4, 1);
  f->fake.heartbeats = 0;
  wait_for(f, heartbeat_answered, 10000, "a heartbeat");
  assert_string_equal(f->fake.last_heartbeat_store, "S001");
  assert_int_equal(f->fake.last_unsent, 4);
  /* Issue 10: how far back a resync can go (the fixture's sales are at
   * 2026-11-21T18:42:05+01:00), and that nothing older was deleted. */
  assert_int_equal(f->fake.last_oldest_sale_ms, 1763746925000LL);
  assert_int_equal(f->fake.last_sales_deleted, 0);
  uplink_get_status(f->uplink, &status);
  assert_true(status.last_heartbeat_ms > 0);

  /* Head office asks for a push through the heartbeat's answer. */
  f->fake.inject_count = 0;
  f->fake.heartbeat_push_now = 1;
  wait_for(f, is_idle_and_all_sent, 10000, "the push head office asked for");
  assert_int_equal(f->fake.body_count, 1);
  assert_each_sale_once(f);
}

static int push_reported_done(struct fixture *f)
{
  return f->fake.push_report_state == POS__V1__COMMAND_STATE__COMMAND_STATE_DONE;
}

/* Issue 10: a push-now command in a HeartbeatAck is recorded in the
 * journal before it is acted on, and heartbeats report it at once (not at
 * the 30 s interval): running, then done when the push ended with nothing
 * unsent older than it. */
static void a_push_now_command_is_reported_done_at_once(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;

  fake_start(f, NULL);
  options = default_options(f);
  options.heartbeat_interval_ms = 30000;
  add_sales(f, "P", 5, 1);
  f->fake.heartbeat_push_now = 1;
  start_uplink(f, &options);
  /* The first heartbeat goes 1-5 s after start and brings the command; the
   * recording and the push's end each send one at once. */
  wait_for(f, push_reported_done, 20000, "push-1 reported done");
  assert_true(f->fake.heartbeats >= 2);
  assert_int_equal(jf_query_int(&f->jf, "SELECT state FROM commands WHERE command_id = 'push-1'"),
                   3);
  assert_int_equal(jf_query_int(&f->jf, "SELECT count(*) FROM sales"), 5);
  assert_each_sale_once(f);
}

static int push_reported_failed(struct fixture *f)
{
  return f->fake.push_report_state == POS__V1__COMMAND_STATE__COMMAND_STATE_FAILED;
}

/* Issue 10: a push head office asked for that meets a problem only a
 * person can fix (a 403) is reported FAILED with that problem, not left
 * running for ever. */
static void a_push_now_that_cannot_go_on_fails_with_the_reason(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;

  fake_start(f, NULL);
  for (int i = 0; i < 8; i++)
    f->fake.inject[i] = (struct injected){403, -1, 0, "certificate store S002 is not S001", 0, 0};
  f->fake.inject_count = 8;
  add_sales(f, "F", 3, 1);
  options = default_options(f);
  options.backoff_min_ms = 10;
  options.backoff_max_ms = 400;
  options.heartbeat_interval_ms = 200;
  f->fake.heartbeat_push_now = 1;
  start_uplink(f, &options);
  wait_for(f, push_reported_failed, 20000, "push-1 reported failed");
  assert_int_equal(jf_query_int(&f->jf, "SELECT state FROM commands WHERE command_id = 'push-1'"),
                   5);
  assert_int_equal(jf_query_int(&f->jf, "SELECT message LIKE '%403%S002%' FROM commands"
                                        " WHERE command_id = 'push-1'"),
                   1);
  /* The sales are not lost for it: sent once the collector takes them. */
  wait_for(f, is_idle_and_all_sent, 20000, "sent after the 403s");
  assert_each_sale_once(f);
}

static int five_more_reports(struct fixture *f) { return f->fake.push_reports >= 5; }

static int five_more_reports_any(struct fixture *f) { return f->fake.heartbeats >= 5; }

/* Issue 10: the collector sends a command in every answer until it hears
 * it finished; a command the journal knows is never run again. */
static void a_known_command_is_not_run_again(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  int64_t updated_ms;
  size_t bodies;

  fake_start(f, NULL);
  options = default_options(f);
  options.heartbeat_interval_ms = 200;
  add_sales(f, "K", 3, 1);
  f->fake.heartbeat_push_now = 1;
  start_uplink(f, &options);
  wait_for(f, push_reported_done, 20000, "push-1 reported done");
  updated_ms = jf_query_int(&f->jf, "SELECT updated_ms FROM commands WHERE command_id = 'push-1'");
  /* New sales, no push of ours: push-1 keeps coming back in every answer. */
  add_sales(f, "L", 4, 1);
  bodies = f->fake.body_count;
  f->fake.push_reports = 0;
  wait_for(f, five_more_reports, 20000, "five more heartbeats reporting push-1");
  assert_int_equal(f->fake.body_count, bodies);
  assert_int_equal(f->fake.last_unsent, 4);
  assert_int_equal(f->fake.push_report_state, POS__V1__COMMAND_STATE__COMMAND_STATE_DONE);
  assert_int_equal(
      jf_query_int(&f->jf, "SELECT updated_ms FROM commands WHERE command_id = 'push-1'"),
      updated_ms);
}

static int replay_held(struct fixture *f) { return f->fake.replay_held != NULL; }

static int resync_reported_cancelled(struct fixture *f)
{
  return f->fake.resync_report_state == POS__V1__COMMAND_STATE__COMMAND_STATE_CANCELLED;
}

static int resync_reported_done(struct fixture *f)
{
  return f->fake.resync_report_state == POS__V1__COMMAND_STATE__COMMAND_STATE_DONE;
}

/* Issue 10: a resync's replay batches have their own transfer: with a
 * replay batch in flight that the collector does not answer, live sales
 * are sent and acknowledged all the same; head office's cancel stops the
 * replay (recorded CANCELLED, reported, nothing more sent). */
static void live_batches_never_wait_behind_a_replay_and_a_cancel_stops_it(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  unsigned replayed;

  fake_start(f, NULL);
  add_sales(f, "R", 40, 1);
  options = default_options(f);
  options.max_batch_sales = 10; /* replay batches of 10 too */
  options.heartbeat_interval_ms = 200;
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 10000, "the history sent live first");
  f->fake.hold_replay = 2;
  f->fake.heartbeat_resync = 1;
  wait_for(f, replay_held, 10000, "replay batch 2 in flight, unanswered");
  assert_int_equal(f->fake.replay_accepted, 1);

  /* Live sales go out beside it. */
  add_sales(f, "N", 5, 1);
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 10000, "live sales sent while a replay batch hangs");
  for (int seq = 41; seq <= 45; seq++)
    assert_int_equal(f->fake.seq_seen[seq], 1);

  /* Head office cancels: the agent records it, reports it, sends no more. */
  f->fake.heartbeat_resync = 2;
  wait_for(f, resync_reported_cancelled, 10000, "resync-1 reported cancelled");
  assert_int_equal(
      jf_query_int(&f->jf, "SELECT state FROM commands WHERE command_id = 'resync-1'"), 6);
  replayed = f->fake.replay_batches;
  http_exchange_respond(f->fake.replay_held, 500, "text/plain", NULL, "late", 4);
  f->fake.replay_held = NULL;
  for (int i = 0; i < 50; i++)
    uv_run(&f->jf.loop, UV_RUN_NOWAIT);
  f->fake.heartbeats = 0;
  f->fake.heartbeat_resync = 0;
  wait_for(f, five_more_reports_any, 10000, "more heartbeats");
  assert_int_equal(f->fake.replay_batches, replayed);
}

/* Issue 10: a resync from the collector replays every journal row once,
 * in replay batches of their own, and is reported done. */
static void a_resync_replays_every_row_once_and_is_reported_done(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;

  fake_start(f, NULL);
  add_sales(f, "R", 45, 1);
  options = default_options(f);
  options.max_batch_sales = 10;
  options.heartbeat_interval_ms = 200;
  f->fake.heartbeat_resync = 1;
  start_uplink(f, &options);
  wait_for(f, resync_reported_done, 20000, "resync-1 reported done");
  for (int seq = 1; seq <= 45; seq++)
    assert_int_equal(f->fake.replay_seen[seq], 1);
  assert_int_equal(f->fake.replay_accepted, 5);
  assert_int_equal(
      jf_query_int(&f->jf, "SELECT done_sales FROM commands WHERE command_id = 'resync-1'"), 45);
}

static int resync_reported_failed(struct fixture *f)
{
  return f->fake.resync_report_state == POS__V1__COMMAND_STATE__COMMAND_STATE_FAILED;
}

/* A replay batch refused with 403 (or 400, 413) is refused however often
 * it is resent: the resync FAILS with the collector's words, its hold on
 * retention goes, and live sales go on. Once it was retried for good. */
static void a_replay_refused_with_403_fails_the_resync_with_the_collectors_words(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;

  fake_start(f, NULL);
  add_sales(f, "R", 12, 1);
  options = default_options(f);
  options.max_batch_sales = 10;
  options.heartbeat_interval_ms = 200;
  f->fake.refuse_replay = 403;
  f->fake.heartbeat_resync = 1;
  start_uplink(f, &options);
  wait_for(f, resync_reported_failed, 20000, "resync-1 reported failed");
  assert_int_equal(jf_query_int(&f->jf, "SELECT state = 5 AND message LIKE "
                                        "'%403%resync-1 was not issued to store S001%'"
                                        " FROM commands WHERE command_id = 'resync-1'"),
                   1);
  assert_int_equal(f->fake.replay_batches, 1);
  add_sales(f, "L", 3, 1);
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 10000, "live sales sent after the failed resync");
}

static int holding(struct fixture *f) { return f->fake.held != NULL; }

static void closing_mid_push_loses_nothing(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  uint8_t *held_body;
  size_t held_len;

  fake_start(f, NULL);
  add_sales(f, "C", 12, 1);
  f->fake.inject[0] = (struct injected){0, 0, 0, NULL, 1, 0};
  f->fake.inject_count = 1;
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, holding, 5000, "the batch in flight");
  held_len = f->fake.body_lens[0];
  held_body = malloc(held_len);
  memcpy(held_body, f->fake.bodies[0], held_len);
  /* Shut down with the batch in flight (its answer never comes). */
  stop_uplink(f);
  http_exchange_respond(f->fake.held, 500, "text/plain", NULL, "late", 4);
  f->fake.held = NULL;
  for (int i = 0; i < 20; i++)
    uv_run(&f->jf.loop, UV_RUN_NOWAIT);

  /* The next run resends the same batch, byte for byte. */
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 5000, "sent by the next run");
  assert_int_equal(f->fake.body_count, 2);
  assert_int_equal(f->fake.body_lens[1], held_len);
  assert_memory_equal(f->fake.bodies[1], held_body, held_len);
  assert_each_sale_once(f);
  free(held_body);
}

/* Mutual TLS with the test PKI (tests/tools/pki.sh), when openssl is there. */
static void mutual_tls_with_the_device_certificate(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct http_tls_config tls;
  char source[512], cmd[1024], cert[160], key[160], ca[160], server_cert[160], server_key[160];
  char other_cert[160];
  const char *slash;

#ifdef POS_SOURCE_DIR
  snprintf(source, sizeof(source), "%s", POS_SOURCE_DIR);
  (void)slash;
#else
  snprintf(source, sizeof(source), "%s", __FILE__);
  slash = strstr(source, "/tests/unit/");
  if (!slash)
    skip();
  source[slash - source] = '\0';
#endif
  snprintf(cmd, sizeof(cmd), "bash %s/tests/tools/pki.sh init %s/pki >%s/pki.log 2>&1", source,
           f->jf.dir, f->jf.dir);
  if (system(cmd) != 0)
    skip();
  snprintf(cert, sizeof(cert), "%s/pki/device-S001-D1.crt", f->jf.dir);
  snprintf(key, sizeof(key), "%s/pki/device-S001-D1.key", f->jf.dir);
  snprintf(ca, sizeof(ca), "%s/pki/ca.crt", f->jf.dir);
  snprintf(server_cert, sizeof(server_cert), "%s/pki/server.crt", f->jf.dir);
  snprintf(server_key, sizeof(server_key), "%s/pki/server.key", f->jf.dir);
  if (access(cert, R_OK) || access(server_cert, R_OK) || access(ca, R_OK))
    skip();
  memset(&tls, 0, sizeof(tls)); /* every field: ticket settings included */
  tls.cert_file = server_cert;
  tls.key_file = server_key;
  tls.ca_file = ca;
  tls.crl_file = NULL;
  tls.require_client_cert = 1;
  fake_start(f, &tls);
  snprintf(f->url, sizeof(f->url), "https://localhost:%d", f->fake.port);

  /* Without the device certificate the collector refuses the handshake. */
  add_sales(f, "TLS", 5, 1);
  options = default_options(f);
  options.ca_file = ca;
  start_uplink(f, &options);
  wait_for(f, is_backing_off, 10000, "refused without a client certificate");
  {
    struct uplink_status status;
    uplink_get_status(f->uplink, &status);
    assert_non_null(strstr(status.last_error, "localhost:"));
  }
  stop_uplink(f);

  /* A collector certificate from a CA we do not trust is refused. */
  snprintf(other_cert, sizeof(other_cert), "%s/pki/other-ca/ca.crt", f->jf.dir);
  if (access(other_cert, R_OK) == 0) {
    options.cert_file = cert;
    options.key_file = key;
    options.ca_file = other_cert;
    start_uplink(f, &options);
    wait_for(f, is_backing_off, 10000, "the collector's certificate not trusted");
    {
      struct uplink_status status;
      uplink_get_status(f->uplink, &status);
      assert_non_null(strstr(status.last_error, "TLS"));
    }
    stop_uplink(f);
  }

  /* With it, the batch goes through. */
  options.cert_file = cert;
  options.key_file = key;
  options.ca_file = ca;
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 10000, "sent over mutual TLS");
  assert_each_sale_once(f);
}

/* ---- regressions --------------------------------------------------------------- */

/* Every body the collector received decompresses to at most `limit` bytes. */
static void assert_bodies_within_decoded(struct fixture *f, size_t limit)
{
  for (size_t i = 0; i < f->fake.body_count; i++) {
    uint8_t *decoded = NULL;
    size_t decoded_len = 0;
    int rc = proto_zstd_decompress(f->fake.bodies[i], f->fake.body_lens[i], 64u * 1024 * 1024,
                                   &decoded, &decoded_len);
    assert_int_equal(rc, 0);
    free(decoded);
    if (decoded_len > limit)
      fail_msg("body %zu (batch %lld) decodes to %zu bytes, over the limit of %zu", i,
               (long long)f->fake.body_batch_seq[i], decoded_len, limit);
  }
}

/* A collector with a decoded limit below what max_batch_bytes allows
 * announces it in its acks: new batches are sealed within it, so none is
 * refused (it used to be refused with 400 forever). */
static void batches_are_sealed_within_the_collectors_decoded_limit(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;

  fake_start(f, NULL);
  f->fake.max_decoded = 20000;
  f->fake.announce_decoded = 1;
  add_sales(f, "DL", 3, 1);
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 5000, "the first (small) batch and its limits");
  /* About 700 bytes per sale before compression: 100 sales are 70 KB. */
  add_sales(f, "DL2", 150, 8);
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 10000, "sent in batches within the decoded limit");
  assert_int_equal(f->fake.refused_400, 0);
  assert_bodies_within_decoded(f, 20000);
  assert_true(f->fake.body_count > 4);
  assert_each_sale_once(f);
}

/*
 * Issue 12, item 6: the agent compresses with the zstd dictionary only
 * after an acknowledgement listed it. The first batch, sealed before any
 * answer, goes without (an older collector, which lists none, would get
 * nothing else); those sealed after the ack go with it, and every sale
 * arrives once.
 */
static void batches_use_the_dictionary_once_the_collector_lists_it(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  size_t first_count;

  fake_start(f, NULL);
  announced_dictionaries = 1;
  add_sales(f, "ZD", 3, 1);
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 5000, "the first batch, and the ack listing the dictionary");
  first_count = f->fake.body_count;
  assert_true(first_count >= 1);
  for (size_t i = 0; i < first_count; i++)
    assert_int_equal(ZSTD_getDictID_fromFrame(f->fake.bodies[i], f->fake.body_lens[i]), 0);
  add_sales(f, "ZD2", 60, 2);
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 10000, "the batches sealed after the ack");
  assert_true(f->fake.body_count > first_count);
  for (size_t i = first_count; i < f->fake.body_count; i++) {
    assert_int_equal(ZSTD_getDictID_fromFrame(f->fake.bodies[i], f->fake.body_lens[i]),
                     PROTO_ZSTD_DICT_SALES_2);
    assert_int_equal(body_compact(f->fake.bodies[i], f->fake.body_lens[i]), 1);
  }
  assert_int_equal(f->fake.refused_400, 0);
  assert_each_sale_once(f);
}

/*
 * A collector of the release before compact sales lists sales-1 only: the
 * agent seals with sales-1 and canonical sales, never compact ones.
 */
static void compact_sales_are_not_sent_to_a_collector_that_does_not_list_them(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  size_t first_count;

  fake_start(f, NULL);
  announced_sales_1_only = 1;
  add_sales(f, "C1", 3, 1);
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 5000, "the first batch, and the ack listing sales-1");
  first_count = f->fake.body_count;
  add_sales(f, "C1B", 60, 2);
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 10000, "the batches sealed after the ack");
  assert_true(f->fake.body_count > first_count);
  for (size_t i = first_count; i < f->fake.body_count; i++) {
    assert_int_equal(ZSTD_getDictID_fromFrame(f->fake.bodies[i], f->fake.body_lens[i]),
                     PROTO_ZSTD_DICT_SALES_1);
    assert_int_equal(body_compact(f->fake.bodies[i], f->fake.body_lens[i]), 0);
  }
  assert_each_sale_once(f);
}

/*
 * A collector that listed sales-2 (compact sales) rolled back to the
 * release before, which knows sales-1 only: it refuses the compact batch
 * with 400 before reading a sale (it cannot decompress it). Never
 * acknowledged, the batch is sealed again, canonical, and once the old
 * collector's ack lists sales-1 the agent uses that: every sale arrives
 * once, none compact.
 */
static void a_compact_batch_refused_by_a_rolled_back_collector_is_resealed_canonical(
    void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  size_t first_count, compact = 0;

  fake_start(f, NULL);
  announced_dictionaries = 1;
  add_sales(f, "RC", 3, 1);
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 5000, "the first batch, and the ack listing sales-2");
  first_count = f->fake.body_count;
  announced_dictionaries = 0;
  announced_sales_1_only = 1;
  f->fake.refuse_dictionary_id = PROTO_ZSTD_DICT_SALES_2;
  add_sales(f, "RC2", 60, 2);
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 10000, "the batch sealed again, canonical");
  add_sales(f, "RC3", 30, 3);
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 10000, "a batch sealed with sales-1");
  /* The fake keeps the bodies it took: the refused one is not among them. */
  for (size_t i = first_count; i < f->fake.body_count; i++)
    compact += (size_t)body_compact(f->fake.bodies[i], f->fake.body_lens[i]);
  assert_int_equal(compact, 0);
  assert_int_equal(ZSTD_getDictID_fromFrame(f->fake.bodies[f->fake.body_count - 1],
                                            f->fake.body_lens[f->fake.body_count - 1]),
                   PROTO_ZSTD_DICT_SALES_1);
  assert_int_equal(f->fake.refused_400, 1);
  assert_each_sale_once(f);
}

/*
 * A collector rolled back to one from before the dictionary, after it
 * listed it: the batch the agent sealed with it meanwhile is refused with
 * 400 for ever. It was never produced, so the agent seals its sales again
 * without the dictionary (and stops using it until an ack lists it again):
 * every sale arrives once, nothing waits for a person.
 */
static void a_dictionary_batch_refused_by_a_rolled_back_collector_is_resealed(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  size_t with_dictionary = 0;

  fake_start(f, NULL);
  announced_dictionaries = 1;
  add_sales(f, "RB", 3, 1);
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 5000, "the first batch, and the ack listing the dictionary");
  announced_dictionaries = 0;
  f->fake.refuse_dictionary = 1;
  add_sales(f, "RB2", 60, 2);
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 10000, "the batch sealed again without the dictionary");
  /* The fake keeps the bodies it took: the refused one is not among them. */
  for (size_t i = 0; i < f->fake.body_count; i++)
    with_dictionary += ZSTD_getDictID_fromFrame(f->fake.bodies[i], f->fake.body_lens[i]) != 0;
  assert_int_equal(with_dictionary, 0);
  assert_int_equal(f->fake.refused_400, 1);
  assert_each_sale_once(f);
}

/* A batch sealed before the limit was known (by an earlier run), refused
 * with 400 naming the limit: unsealed and sealed again within it. */
static void a_400_over_the_decoded_limit_reseals_smaller(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct journal_stats stats;

  fake_start(f, NULL);
  f->fake.max_decoded = 20000;
  add_sales(f, "DB", 100, 8);
  seal(f, 1, 100);
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 10000, "resealed within the decoded limit and sent");
  assert_int_equal(f->fake.refused_400, 1);
  assert_int_equal(f->fake.body_batch_seq[0], 1);
  assert_bodies_within_decoded(f, 20000);
  assert_each_sale_once(f);
  journal_get_stats(f->journal, &stats);
  assert_true(stats.last_batch_seq > 1);
  assert_int_equal(stats.acked_batch_seq, stats.last_batch_seq);
}

/* The same when the 400 names no limit but the last ack did. */
static void a_400_over_the_announced_decoded_limit_reseals_smaller(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;

  fake_start(f, NULL);
  f->fake.max_decoded = 20000;
  f->fake.announce_decoded = 1;
  f->fake.plain_400 = 1;
  add_sales(f, "DA", 3, 1);
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 5000, "the first batch and its limits");
  /* Batch 2 sealed too big behind the uplink's back (as by an older agent). */
  add_sales(f, "DA2", 100, 8);
  seal(f, 2, 100);
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 10000, "resealed within the announced limit and sent");
  assert_int_equal(f->fake.refused_400, 1);
  assert_each_sale_once(f);
}

static int body_received(struct fixture *f) { return f->fake.body_count >= 1; }

static int caps_lowered(struct fixture *f)
{
  struct uplink_status status;
  uplink_get_status(f->uplink, &status);
  return status.max_batch_sales < 100;
}

/* On a full disk a stored batch is still loaded and sent (counting the
 * attempt is what failed), and that does not shrink the batch caps. */
static void a_full_disk_still_sends_stored_batches(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;
  struct batcher_identity identity;
  struct jf_op w;

  fake_start(f, NULL);
  add_sales(f, "FD", 30, 1);
  seal(f, 1, 100);
  add_sales(f, "FD2", 5, 1);
  disk_full = 1;
  /* The journal: loading batch 1 works; sealing batch 2 finds the disk full. */
  assert_int_equal(batcher_identity_init(&identity, "S001", "D1", 3), 0);
  for (int64_t batch_seq = 1; batch_seq <= 2; batch_seq++) {
    next_batch(f, &w, batch_seq, 10, &identity);
    if (batch_seq == 1) {
      if (w.op.error)
        fail_msg("loading a stored batch on a full disk: %s", w.op.message);
      assert_int_equal(w.op.batch.batch_seq, 1);
      assert_int_equal(w.op.batch.sale_count, 30);
    } else {
      assert_int_equal(w.op.error, JOURNAL_EFULL);
    }
    journal_op_clear(&w.op);
  }

  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, body_received, 5000, "the stored batch sent from a full disk");
  assert_int_equal(f->fake.body_batch_seq[0], 1);
  uplink_get_status(f->uplink, &status);
  assert_int_equal(status.max_batch_sales, 100);
  disk_full = 0;
  wait_for(f, is_idle_and_all_sent, 5000, "acknowledged once there is room");
  uplink_get_status(f->uplink, &status);
  assert_int_equal(status.max_batch_sales, 100);
  assert_each_sale_once(f);
}

/* Sealing on a full disk halves the caps; an acknowledgement restores
 * them (they used to stay halved, down to one sale per batch, for good). */
static void caps_halved_by_a_full_disk_are_restored_after_an_ack(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;

  fake_start(f, NULL);
  add_sales(f, "FH", 30, 1);
  disk_full = 1;
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, caps_lowered, 5000, "smaller batches on a full disk");
  disk_full = 0;
  wait_for(f, is_idle_and_all_sent, 10000, "sent once there is room");
  uplink_get_status(f->uplink, &status);
  assert_int_equal(status.max_batch_sales, 100);
  assert_int_equal(status.max_batch_bytes, 1024 * 1024);
  assert_each_sale_once(f);
}

/* The delay an uplink with `seed` picks after its first answer (`in`). */
static int64_t first_retry_delay(struct fixture *f, struct uplink_options *options, uint64_t seed,
                                 struct injected in)
{
  struct uplink_status status;
  options->random_seed = seed;
  f->fake.inject[0] = in;
  f->fake.inject_count = 1;
  f->fake.inject_next = 0;
  start_uplink(f, options);
  wait_for(f, is_backing_off, 5000, "backing off");
  uplink_get_status(f->uplink, &status);
  stop_uplink(f);
  for (int i = 0; i < 5; i++)
    uv_run(&f->jf.loop, UV_RUN_NOWAIT);
  return status.next_push_ms - status.last_attempt_ms;
}

/* 2,000 stores told "Retry-After: 100" at once must not all come back 100 s
 * later to the millisecond: at least that, and spread. */
static void retry_after_is_a_minimum_with_jitter(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  int64_t shortest = INT64_MAX, longest = 0;

  fake_start(f, NULL);
  add_sales(f, "RJ", 3, 1);
  options = default_options(f);
  options.backoff_min_ms = 10;
  options.backoff_max_ms = 5000;
  for (uint64_t seed = 1; seed <= 6; seed++) {
    int64_t delay =
        first_retry_delay(f, &options, seed, (struct injected){503, 100, 0, "busy", 0, 0});
    assert_true(delay >= 100000);
    assert_true(delay <= 150000 + 1000);
    shortest = delay < shortest ? delay : shortest;
    longest = delay > longest ? delay : longest;
  }
  if (longest - shortest < 2000)
    fail_msg("retries after Retry-After: 100 all within %lld ms", (long long)(longest - shortest));
}

/* The first retry after a failure is spread too, not exactly backoff_min. */
static void the_first_retry_is_jittered(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  int64_t shortest = INT64_MAX, longest = 0;

  fake_start(f, NULL);
  add_sales(f, "FJ", 3, 1);
  options = default_options(f);
  options.backoff_min_ms = 10000;
  options.backoff_max_ms = 60000;
  for (uint64_t seed = 1; seed <= 6; seed++) {
    int64_t delay =
        first_retry_delay(f, &options, seed, (struct injected){500, -1, 0, "boom", 0, 0});
    assert_true(delay >= 5000);
    assert_true(delay <= 10000 + 1000);
    shortest = delay < shortest ? delay : shortest;
    longest = delay > longest ? delay : longest;
  }
  if (longest - shortest < 500)
    fail_msg("first retries all within %lld ms", (long long)(longest - shortest));
}

/* Consecutive busy answers keep backing off further: Retry-After is the
 * least wait, and the backoff keeps growing under it (it used to be the
 * same Retry-After every time, for ever). */
static void busy_answers_keep_backing_off(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  int64_t delays[3];

  fake_start(f, NULL);
  for (int i = 0; i < 3; i++)
    f->fake.inject[i] = (struct injected){i % 2 ? 429 : 503, 1, 0, "busy", 0, 0};
  f->fake.inject_count = 3;
  add_sales(f, "BB", 3, 1);
  options = default_options(f);
  options.backoff_min_ms = 1000;
  options.backoff_max_ms = 60000;
  start_uplink(f, &options);
  for (int i = 0; i < 3; i++) {
    struct uplink_status status;
    bodies_target = (size_t)i + 1;
    wait_for(f, bodies_received, 5000, "the next attempt");
    wait_for(f, is_backing_off, 5000, "backing off");
    uplink_get_status(f->uplink, &status);
    delays[i] = status.next_push_ms - status.last_attempt_ms;
    /* Cut the wait short (as "push now" does): the backoff is not reset. */
    uplink_push_now(f->uplink, "test");
  }
  assert_true(delays[0] >= 1000 && delays[0] <= 1500 + 100);
  assert_true(delays[1] >= 1000);
  /* The third backoff is in [2 s, 4 s]: above what Retry-After: 1 asks. */
  if (delays[2] < 2000)
    fail_msg("third retry after %lld ms: the backoff did not grow under Retry-After",
             (long long)delays[2]);
  wait_for(f, is_idle_and_all_sent, 5000, "sent after three busy answers");
  assert_each_sale_once(f);
}

/* A 200 without a BatchAck, with an empty one, for another journal,
 * acknowledging less than the batch sent, or in an encoding we never asked
 * for is a failed attempt: the batch is not marked sent, and goes again. */
static void a_200_without_a_usable_ack_is_retried(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;

  fake_start(f, NULL);
  f->fake.inject[0] = (struct injected){200, -1, 0, NULL, 0, FAKE_ACK_TEXT};
  f->fake.inject[1] = (struct injected){200, -1, 0, NULL, 0, FAKE_ACK_EMPTY};
  f->fake.inject[2] = (struct injected){200, -1, 0, NULL, 0, FAKE_ACK_OTHER_JOURNAL};
  f->fake.inject[3] = (struct injected){200, -1, 0, NULL, 0, FAKE_ACK_SEQ}; /* acked 0 */
  f->fake.inject[4] = (struct injected){200, -1, 0, NULL, 0, FAKE_ACK_ENCODED};
  f->fake.inject_count = 5;
  add_sales(f, "OK", 5, 1);
  options = default_options(f);
  start_uplink(f, &options);
  wait_for(f, is_idle_and_all_sent, 10000, "sent after five unusable 200s");
  assert_int_equal(f->fake.body_count, 6);
  for (size_t i = 0; i < 6; i++)
    assert_int_equal(f->fake.body_batch_seq[i], 1);
  assert_each_sale_once(f);
  uplink_get_status(f->uplink, &status);
  assert_int_equal(status.batches_acked, 1);
  assert_non_null(strstr(status.last_error, "200"));
}

/* An ack for batches this journal never sealed cannot be true of it:
 * nothing is marked sent and a person is told. */
static void an_ack_beyond_every_sealed_batch_marks_nothing_sent(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;
  struct journal_stats stats;

  fake_start(f, NULL);
  f->fake.inject[0] = (struct injected){200, -1, 99, NULL, 0, FAKE_ACK_SEQ};
  f->fake.inject_count = 1;
  add_sales(f, "AB", 5, 1);
  options = default_options(f);
  options.backoff_max_ms = 2000;
  start_uplink(f, &options);
  wait_for(f, is_backing_off, 5000, "stopped after an impossible ack");
  journal_get_stats(f->journal, &stats);
  assert_int_equal(stats.acked_batch_seq, 0);
  assert_int_equal(stats.sales_unsent, 5);
  uplink_get_status(f->uplink, &status);
  assert_int_equal(status.batches_acked, 0);
  assert_non_null(strstr(status.last_error, "99"));
  assert_non_null(strstr(status.last_error, "a person must look"));
  assert_true(status.next_push_ms - status.last_attempt_ms >= 2000);
}

/* ---- an acknowledgement that cannot be saved -------------------------------------- */

/* Counts the lines of `path` that hold every one of the `n` needles. */
static unsigned count_lines(const char *path, size_t n, const char *const *needles)
{
  FILE *file = fopen(path, "r");
  char line[2048];
  unsigned count = 0;
  assert_non_null(file);
  while (fgets(line, sizeof(line), file)) {
    size_t i = 0;
    while (i < n && strstr(line, needles[i]))
      i++;
    count += i == n;
  }
  fclose(file);
  return count;
}

/* Prints the log captured in `path`, to see why a test failed. */
static void print_file(const char *path)
{
  FILE *file = fopen(path, "r");
  char line[2048];
  if (!file)
    return;
  while (fgets(line, sizeof(line), file))
    fputs(line, stdout);
  fclose(file);
}

/* Sends stderr (where the log goes) to `path` until stderr_restore(). */
static int stderr_capture(const char *path)
{
  int saved = dup(STDERR_FILENO);
  FILE *file = fopen(path, "w");
  assert_non_null(file);
  assert_true(saved >= 0);
  fflush(stderr);
  assert_true(dup2(fileno(file), STDERR_FILENO) >= 0);
  fclose(file);
  return saved;
}

static void stderr_restore(int saved)
{
  fflush(stderr);
  assert_true(dup2(saved, STDERR_FILENO) >= 0);
  close(saved);
}

/* The uplink is backing off and its next try is at least this far away. */
static int64_t long_wait_ms;
static int backing_off_long(struct fixture *f)
{
  struct uplink_status status;
  uplink_get_status(f->uplink, &status);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return status.state == UPLINK_BACKING_OFF && status.last_attempt_ms > 0 &&
         status.next_push_ms - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000) >=
             long_wait_ms;
}

/* The collector answered 200 but the journal could not record it (a full
 * disk, or fsync failing): retries used to start from backoff_min every
 * time, because backoff_reset() ran on the 200 before the journal had the
 * ack; one batch was resent 4,632 times in 3.5 minutes, four log lines
 * each. Now the backoff grows like after any failure, the batch is not
 * sent again (the collector has it: only recording the ack is retried),
 * identical error lines are logged once, and the ack is recorded once the
 * disk lets it. */
static void ack_not_saved_backs_off(struct fixture *f, int *fault, const char *log_name)
{
  struct uplink_options options;
  struct uplink_status status;
  struct journal_stats stats;
  char log_path[160];
  const char *error_lines[] = {"mod=uplink", "event=error ", "cannot record that"};
  const char *backoff_lines[] = {"mod=uplink", "event=backing_off"};
  const char *repeat_lines[] = {"mod=uplink", "event=error_repeated", "cannot record that"};
  unsigned errors, backoffs, repeats;
  int saved, grew, recovered = 0;
  size_t sent_while_failing;

  fake_start(f, NULL);
  add_sales(f, "AS", 5, 1);
  seal(f, 1, 100);
  snprintf(log_path, sizeof(log_path), "%s/%s", f->jf.dir, log_name);
  options = default_options(f);
  options.backoff_min_ms = 20;
  options.backoff_max_ms = 400;
  *fault = 1;
  saved = stderr_capture(log_path);
  start_uplink(f, &options);
  /* 20, 40, 80, 160, 320 ms...: a wait of 300 ms or more comes only after
   * four failures in a row. Before the fix it stayed in [10, 20] ms. */
  long_wait_ms = 300;
  grew = wait_until(f, backing_off_long, 20000);
  uplink_get_status(f->uplink, &status);
  sent_while_failing = f->fake.body_count;
  if (grew) {
    *fault = 0;
    recovered = wait_until(f, is_idle_and_all_sent, 10000);
  }
  stderr_restore(saved);
  if (!grew) {
    print_file(log_path);
    fail_msg("the backoff did not grow to %lld ms while the ack could not be saved",
             (long long)long_wait_ms);
  }
  assert_true(status.consecutive_failures >= 4);
  assert_non_null(strstr(status.last_error, "cannot record that"));
  /* The collector has the batch: it was not sent again and again. */
  if (sent_while_failing != 1) {
    print_file(log_path);
    fail_msg("batch 1 sent %zu times while its ack could not be saved", sent_while_failing);
  }
  if (!recovered) {
    print_file(log_path);
    fail_msg("the ack was not recorded once the disk let it");
  }
  journal_get_stats(f->journal, &stats);
  assert_int_equal(stats.acked_batch_seq, 1);
  assert_int_equal(f->fake.body_count, 1);
  assert_each_sale_once(f);
  uplink_get_status(f->uplink, &status);
  assert_int_equal(status.consecutive_failures, 0);
  assert_int_equal(status.batches_acked, 1);
  /* One line for the failure, one for its backoff, one counting the
   * repeats once it is over. */
  errors = count_lines(log_path, 3, error_lines);
  backoffs = count_lines(log_path, 2, backoff_lines);
  repeats = count_lines(log_path, 3, repeat_lines);
  if (errors != 1 || backoffs != 1 || repeats != 1) {
    print_file(log_path);
    fail_msg("%u error, %u backing_off and %u error_repeated lines for one failure repeated "
             "(want 1 each)", errors, backoffs, repeats);
  }
}

static void an_ack_that_cannot_be_saved_on_a_full_disk_backs_off(void **state)
{
  ack_not_saved_backs_off(*state, &disk_full, "full.log");
}

static void an_ack_that_cannot_be_saved_when_fsync_fails_backs_off(void **state)
{
  ack_not_saved_backs_off(*state, &sync_fails, "fsync.log");
}

/* ---- a 409 for a batch retention deleted ---------------------------------------------- */

static int stalled(struct fixture *f)
{
  struct uplink_status status;
  uplink_get_status(f->uplink, &status);
  return status.stalled_expected_batch_seq > 0;
}

/* Batch 2 was offered again at least three times since the collector lost
 * its state (body `since` on). */
static size_t bodies_since;
static int offered_again(struct fixture *f)
{
  unsigned offers = 0;
  for (size_t i = bodies_since; i < f->fake.body_count; i++)
    offers += f->fake.body_batch_seq[i] == 2;
  return offers >= 3;
}

static int heartbeat_says_stalled(struct fixture *f) { return f->fake.last_stalled_expected == 1; }
static int heartbeat_says_clear(struct fixture *f)
{
  return f->fake.heartbeats > 0 && f->fake.last_stalled_expected == 0 && !stalled(f);
}

/* Pushes now and waits until everything is acknowledged. */
static void push_and_wait(struct fixture *f, const char *what)
{
  uplink_push_now(f->uplink, "test");
  wait_for(f, is_idle_and_all_sent, 10000, what);
}

/* The collector lost its state and asks (409) for batch 1, which retention
 * deleted here after it was acknowledged. The agent used to ask the journal
 * for batch 1 at backoff_max for ever: new sales never left, and nothing
 * said why. Now: a stall said once in the log, in the status and in every
 * heartbeat (what is asked, what is held, what to do); sales still taken;
 * the oldest batch held (2) offered again at backoff_max, never skipped;
 * and once head office approves a rebase (the collector accepts batch 2 as
 * the next), everything from batch 2 on arrives once and the stall clears. */
/* Batches 1 and 2 acknowledged (2 a few ms after 1), then retention deletes
 * batch 1 and its sales, as it does retention_days after an ack. */
static void two_batches_then_retention_deletes_the_first(struct fixture *f)
{
  struct jf_op retention;
  int64_t acked_ms_2;

  add_sales(f, "K1", 5, 1);
  push_and_wait(f, "batch 1");
  usleep(5000);
  add_sales(f, "K2", 5, 1);
  push_and_wait(f, "batch 2");
  acked_ms_2 = jf_query_int(&f->jf, "SELECT acked_ms FROM batches WHERE batch_seq = 2");
  memset(&retention, 0, sizeof(retention));
  retention.op.kind = JOURNAL_OP_RETENTION;
  retention.op.now_ms = acked_ms_2;
  retention.op.retention_ms = 1;
  jf_run_op(&f->jf, f->journal, &retention);
  assert_int_equal(retention.op.error, 0);
  assert_int_equal(jf_query_int(&f->jf, "SELECT min(batch_seq) FROM batches"), 2);
}

/* What the stall looks like while it lasts: status, log (once), heartbeat,
 * nothing skipped, sales still taken. */
static void assert_stalled_visibly(struct fixture *f, const char *log_path)
{
  const char *stall_lines[] = {"mod=uplink", "event=error ", "expected_batch_deleted"};
  struct uplink_status status;
  struct journal_stats stats;
  unsigned stall_logged;

  uplink_get_status(f->uplink, &status);
  assert_int_equal(status.stalled_expected_batch_seq, 1);
  assert_int_equal(status.oldest_held_batch_seq, 2);
  assert_true(status.stalled_since_ms > 0);
  assert_non_null(strstr(status.problem, "Head office must approve a rebase"));
  assert_non_null(strstr(status.last_error, "expected_batch_deleted"));
  /* Said once, however often the collector repeated its 409. */
  stall_logged = count_lines(log_path, 3, stall_lines);
  if (stall_logged != 1) {
    print_file(log_path);
    fail_msg("the stall was logged %u times (want 1)", stall_logged);
  }
  /* Nothing skipped: after the loss only batch 3 (first) and 2 went out. */
  for (size_t i = bodies_since; i < f->fake.body_count; i++) {
    int64_t sent = f->fake.body_batch_seq[i];
    if (sent != 2 && !(i == bodies_since && sent == 3))
      fail_msg("batch %lld sent during the stall", (long long)sent);
  }
  /* Head office sees it in the heartbeat. */
  wait_for(f, heartbeat_says_stalled, 5000, "a heartbeat that says the uplink is stalled");
  assert_int_equal(f->fake.last_oldest_held, 2);
  assert_non_null(strstr(f->fake.last_problem, "expected_batch_deleted"));
  /* Sales are still taken. */
  add_sales(f, "K4", 3, 1);
  journal_get_stats(f->journal, &stats);
  assert_int_equal(stats.last_seq, 18);
  assert_int_equal(stats.sales_unsent, 8);
}

/* The collector lost its state and asks (409) for batch 1, which retention
 * deleted here after it was acknowledged. The agent used to ask the journal
 * for batch 1 at backoff_max for ever: new sales never left, and nothing
 * said why. Now: a stall said once in the log, in the status and in every
 * heartbeat (what is asked, what is held, what to do); sales still taken;
 * the oldest batch held (2) offered again at backoff_max, never skipped;
 * and once head office approves a rebase (the collector accepts batch 2 as
 * the next), everything from batch 2 on arrives once and the stall clears. */
static void a_409_for_a_batch_retention_deleted_stalls_visibly_until_a_rebase(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;
  struct journal_stats stats;
  char log_path[160];
  int saved, seen_stall, offered;

  fake_start(f, NULL);
  options = default_options(f);
  options.max_batch_sales = 5;
  options.backoff_min_ms = 20;
  options.backoff_max_ms = 300;
  options.heartbeat_interval_ms = 100;
  start_uplink(f, &options);
  two_batches_then_retention_deletes_the_first(f);

  /* The collector loses its state: it expects batch 1 of this journal. */
  f->fake.accepted = 0;
  memset(f->fake.seq_seen, 0, sizeof(f->fake.seq_seen));
  bodies_since = f->fake.body_count;
  snprintf(log_path, sizeof(log_path), "%s/stall.log", f->jf.dir);
  saved = stderr_capture(log_path);
  add_sales(f, "K3", 5, 1);
  uplink_push_now(f->uplink, "test");
  seen_stall = wait_until(f, stalled, 10000);
  offered = seen_stall && wait_until(f, offered_again, 10000);
  stderr_restore(saved);
  if (!seen_stall || !offered) {
    print_file(log_path);
    fail_msg("%s", !seen_stall ? "no stall reported after a 409 for a deleted batch"
                               : "the oldest batch held (2) was not offered again");
  }
  assert_stalled_visibly(f, log_path);

  /* Head office approves the rebase: the collector takes batch 2 next. */
  f->fake.rebase_from = 2;
  push_and_wait(f, "everything from batch 2 on, after the rebase");
  uplink_get_status(f->uplink, &status);
  assert_int_equal(status.stalled_expected_batch_seq, 0);
  assert_int_equal(status.oldest_held_batch_seq, 0);
  assert_string_equal(status.problem, "");
  /* Batch 1's sales reached the collector before it lost them; everything
   * held here arrived once more, exactly once. */
  for (int64_t seq = 1; seq <= 18; seq++) {
    unsigned want = seq <= 5 ? 0 : 1;
    if (f->fake.seq_seen[seq] != want)
      fail_msg("seq %lld reached the collector %u times after the loss (want %u)",
               (long long)seq, f->fake.seq_seen[seq], want);
  }
  journal_get_stats(f->journal, &stats);
  assert_int_equal(stats.sales_unsent, 0);
  assert_int_equal(f->fake.accepted, stats.last_batch_seq);
  f->fake.heartbeats = 0;
  wait_for(f, heartbeat_says_clear, 5000, "a heartbeat without the stall");
}

/* ---- heartbeat answers ---------------------------------------------------------------- */

static unsigned heartbeats_target;
static int heartbeats_received(struct fixture *f)
{
  return f->fake.heartbeats >= heartbeats_target;
}

/* Runs until `count` more heartbeats reached the fake collector, and their
 * answers were handled; 0 on a timeout. */
static int more_heartbeats(struct fixture *f, unsigned count)
{
  heartbeats_target = f->fake.heartbeats + count;
  if (!wait_until(f, heartbeats_received, 10000))
    return 0;
  for (int i = 0; i < 5; i++)
    uv_run(&f->jf.loop, UV_RUN_NOWAIT);
  return 1;
}

/* What the collector (or what stands in its place) answers a heartbeat with
 * is handled whatever it is: a 200 that is no HeartbeatAck (a captive
 * portal's page, an empty text/plain body that protobuf would read as an
 * empty ack) is not an answered heartbeat (it used to count as one); a
 * clock off by an hour is said once, not at every heartbeat; and heartbeat
 * errors alternating with batch errors (a collector down fails both) are
 * each logged once, not every time (one shared rate limit saw a new message
 * at every turn). */
static void heartbeat_answers_are_handled_and_logged_once(void **state)
{
  struct fixture *f = *state;
  struct uplink_options options;
  struct uplink_status status;
  char log_path[160];
  const char *portal_lines[] = {"mod=uplink", "event=error ", "Content-Type text/html"};
  const char *empty_lines[] = {"mod=uplink", "event=error ", "Content-Type text/plain, 0 bytes"};
  const char *drift_lines[] = {"mod=uplink", "event=clock_drift"};
  const char *busy_lines[] = {"mod=uplink", "event=error ", "heartbeat: 503"};
  const char *boom_lines[] = {"mod=uplink", "event=error ", "500: boom"};
  unsigned portal, empty, drift, busy, boom;
  int saved, ok;
  size_t bodies_before;

  fake_start(f, NULL);
  options = default_options(f);
  options.heartbeat_interval_ms = 30;
  options.backoff_min_ms = 20;
  options.backoff_max_ms = 40;
  start_uplink(f, &options);
  wait_for(f, first_push_done, 5000, "the empty first push");
  snprintf(log_path, sizeof(log_path), "%s/heartbeat.log", f->jf.dir);
  saved = stderr_capture(log_path);

  f->fake.heartbeat_mode = FAKE_HEARTBEAT_PORTAL;
  ok = more_heartbeats(f, 5);
  if (ok) {
    f->fake.heartbeat_mode = FAKE_HEARTBEAT_EMPTY_TEXT;
    ok = more_heartbeats(f, 2);
  }
  uplink_get_status(f->uplink, &status);
  if (ok && status.last_heartbeat_ms != 0) {
    stderr_restore(saved);
    fail_msg("a 200 that is no HeartbeatAck (a portal's page, an empty text/plain) counted "
             "as an answered heartbeat");
  }
  if (ok) {
    f->fake.heartbeat_mode = FAKE_HEARTBEAT_DRIFT;
    ok = more_heartbeats(f, 5);
  }
  if (ok) {
    /* A collector down: batches and heartbeats fail in turn. */
    f->fake.heartbeat_mode = FAKE_HEARTBEAT_BUSY;
    f->fake.fail_all_batches = 1;
    add_sales(f, "HB", 3, 1);
    bodies_before = f->fake.body_count;
    uplink_push_now(f->uplink, "test");
    ok = more_heartbeats(f, 6);
    bodies_target = bodies_before + 6;
    ok = ok && wait_until(f, bodies_received, 10000);
    ok = ok && more_heartbeats(f, 2);
  }
  stderr_restore(saved);
  if (!ok) {
    print_file(log_path);
    fail_msg("timed out waiting for heartbeats or batches");
  }
  uplink_get_status(f->uplink, &status);
  assert_true(status.last_heartbeat_ms > 0); /* the drifting collector answered */
  portal = count_lines(log_path, 3, portal_lines);
  empty = count_lines(log_path, 3, empty_lines);
  drift = count_lines(log_path, 2, drift_lines);
  busy = count_lines(log_path, 3, busy_lines);
  boom = count_lines(log_path, 3, boom_lines);
  if (portal != 1 || empty != 1 || drift != 1 || busy != 1 || boom != 1) {
    print_file(log_path);
    fail_msg("logged %u portal, %u empty 200, %u clock drift, %u heartbeat 503 and %u batch 500 "
             "lines (want 1 each)", portal, empty, drift, busy, boom);
  }
  f->fake.heartbeat_mode = 0;
  f->fake.fail_all_batches = 0;
  wait_for(f, is_idle_and_all_sent, 5000, "sent once the collector is back");
  assert_each_sale_once(f);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(a_backlog_drains_back_to_back, setup, teardown),
      cmocka_unit_test_setup_teardown(a_retry_sends_the_same_bytes, setup, teardown),
      cmocka_unit_test_setup_teardown(retry_after_is_honoured, setup, teardown),
      cmocka_unit_test_setup_teardown(a_409_above_acknowledges_what_the_collector_has, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_409_below_resends_the_stored_batches, setup, teardown),
      cmocka_unit_test_setup_teardown(a_413_splits_without_losing_or_doubling, setup, teardown),
      cmocka_unit_test_setup_teardown(a_400_is_loud_and_retried_at_backoff_max, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_dead_collector_is_named_in_the_error, setup, teardown),
      cmocka_unit_test_setup_teardown(heartbeats_carry_the_queue_and_bring_commands, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_push_now_command_is_reported_done_at_once, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_known_command_is_not_run_again, setup, teardown),
      cmocka_unit_test_setup_teardown(a_push_now_that_cannot_go_on_fails_with_the_reason, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          live_batches_never_wait_behind_a_replay_and_a_cancel_stops_it, setup, teardown),
      cmocka_unit_test_setup_teardown(
          a_replay_refused_with_403_fails_the_resync_with_the_collectors_words, setup, teardown),
      cmocka_unit_test_setup_teardown(a_resync_replays_every_row_once_and_is_reported_done,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(closing_mid_push_loses_nothing, setup, teardown),
      cmocka_unit_test_setup_teardown(mutual_tls_with_the_device_certificate, setup, teardown),
      cmocka_unit_test_setup_teardown(batches_are_sealed_within_the_collectors_decoded_limit,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(a_400_over_the_decoded_limit_reseals_smaller, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(batches_use_the_dictionary_once_the_collector_lists_it,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          a_dictionary_batch_refused_by_a_rolled_back_collector_is_resealed, setup, teardown),
      cmocka_unit_test_setup_teardown(
          compact_sales_are_not_sent_to_a_collector_that_does_not_list_them, setup, teardown),
      cmocka_unit_test_setup_teardown(
          a_compact_batch_refused_by_a_rolled_back_collector_is_resealed_canonical, setup,
          teardown),
      cmocka_unit_test_setup_teardown(a_400_over_the_announced_decoded_limit_reseals_smaller,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(a_full_disk_still_sends_stored_batches, setup, teardown),
      cmocka_unit_test_setup_teardown(caps_halved_by_a_full_disk_are_restored_after_an_ack,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(retry_after_is_a_minimum_with_jitter, setup, teardown),
      cmocka_unit_test_setup_teardown(the_first_retry_is_jittered, setup, teardown),
      cmocka_unit_test_setup_teardown(busy_answers_keep_backing_off, setup, teardown),
      cmocka_unit_test_setup_teardown(a_200_without_a_usable_ack_is_retried, setup, teardown),
      cmocka_unit_test_setup_teardown(an_ack_beyond_every_sealed_batch_marks_nothing_sent,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(an_ack_that_cannot_be_saved_on_a_full_disk_backs_off,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(an_ack_that_cannot_be_saved_when_fsync_fails_backs_off,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(
          a_409_for_a_batch_retention_deleted_stalls_visibly_until_a_rebase, setup, teardown),
      cmocka_unit_test_setup_teardown(heartbeat_answers_are_handled_and_logged_once, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
