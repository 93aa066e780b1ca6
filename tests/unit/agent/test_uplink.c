/*
 * test_uplink.c - the uplink against a fake collector on the same loop (the
 * platform HTTP server; plain HTTP, and mutual TLS when the test PKI can be
 * made): a backlog drains back to back, a retry resends the same bytes,
 * Retry-After is honoured, 409 resumes where the collector says, 413 splits
 * without losing or doubling a sale, 400 is retried at backoff_max,
 * network errors say what failed on what, heartbeats carry the queue and
 * bring back commands, and closing mid-push loses nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <uv.h>

#include "journal/journal.h"
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
  http_exchange *held;
  char journal_id[16];
};

struct fixture {
  char dir[64];
  char path[96];
  uv_loop_t loop;
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
  uint8_t buffer[256];
  size_t len;

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
  http_exchange_respond(exchange, status, "application/x-protobuf", NULL, buffer, len);
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
  if (proto_batch_unpack((const uint8_t *)body, body_len, &limits, &batch, err, sizeof(err))) {
    http_exchange_respond(exchange, 400, "text/plain", NULL, err, strlen(err));
    return;
  }
  batch_seq = (int64_t)batch->envelope->batch_seq;
  memcpy(journal_id, batch->envelope->journal_id.data, 16);
  if (fake->body_count < MAX_BODIES) {
    fake->bodies[fake->body_count] = malloc(body_len);
    memcpy(fake->bodies[fake->body_count], body, body_len);
    fake->body_lens[fake->body_count] = body_len;
    fake->body_batch_seq[fake->body_count] = batch_seq;
    fake->body_time_ms[fake->body_count] = uv_now(fake->loop);
    fake->body_count++;
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
  pos__v1__heartbeat__free_unpacked(heartbeat, NULL);
  ack.server_clock_ms = 0;
  if (fake->heartbeat_push_now) {
    command.command_id = "push-1";
    command.command_case = POS__V1__COMMAND__COMMAND_PUSH_NOW;
    command.push_now = &push;
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
  struct http_server_config config = {"127.0.0.1", 0, 16 * 1024, 64u * 1024 * 1024, 60000,
                                      60000, 64, tls};
  char err[256];
  f->fake.loop = &f->loop;
  f->fake.server = http_server_create(&f->loop, &config, fake_handle, &f->fake, err, sizeof(err));
  if (!f->fake.server)
    fail_msg("fake collector: %s", err);
  f->fake.port = http_server_port(f->fake.server);
  snprintf(f->url, sizeof(f->url), "%s://127.0.0.1:%d", tls ? "https" : "http", f->fake.port);
}

static void on_tick(uv_timer_t *timer) { (void)timer; }

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  struct journal_options options;
  char err[512];

  snprintf(f->dir, sizeof(f->dir), "/tmp/test_uplink_XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof(f->path), "%s/journal.db", f->dir);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  /* Keeps UV_RUN_ONCE from sleeping forever while a test waits. */
  uv_timer_init(&f->loop, &f->tick);
  uv_timer_start(&f->tick, on_tick, 10, 10);
  memset(&options, 0, sizeof(options));
  options.path = f->path;
  options.group_commit_max = 64;
  options.busy_timeout_ms = 1000;
  f->journal = journal_open(&f->loop, &options, err, sizeof(err));
  if (!f->journal)
    fail_msg("journal_open: %s", err);
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
  char cmd[128];
  stop_uplink(f);
  journal_close(f->journal);
  http_server_close(f->fake.server, NULL, NULL);
  uv_close((uv_handle_t *)&f->tick, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  for (size_t i = 0; i < f->fake.body_count; i++)
    free(f->fake.bodies[i]);
  snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
  assert_int_equal(system(cmd), 0);
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
  options.journal_path = f->path;
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
  f->uplink = uplink_create(&f->loop, f->journal, options, err, sizeof(err));
  if (!f->uplink)
    fail_msg("uplink_create: %s", err);
}

struct pending {
  struct journal_write write;
  struct journal_item_result results[64];
  int done;
};

static void on_write_done(struct journal_write *write)
{
  struct pending *p = write->user;
  p->done = 1;
}

static void add_sales(struct fixture *f, const char *prefix, size_t count, size_t lines)
{
  static uint64_t noise = 88172645463325252ULL;
  for (size_t done = 0; done < count;) {
    struct sale sales[64];
    struct pending p;
    size_t n = count - done < 64 ? count - done : 64;
    for (size_t i = 0; i < n; i++) {
      struct sale *sale = &sales[i];
      memset(sale, 0, sizeof(*sale));
      snprintf(sale->sale_id, sizeof(sale->sale_id), "%.16s-%zu", prefix, done + i);
      sale->kind = SALE_KIND_SALE;
      snprintf(sale->terminal_id, sizeof(sale->terminal_id), "T1");
      sale->channel = SALE_CHANNEL_POS;
      snprintf(sale->business_time, sizeof(sale->business_time), "2026-11-21T18:42:05+01:00");
      sale->business_time_ms = 1763746925000LL;
      sale->utc_offset_minutes = 60;
      snprintf(sale->currency, sizeof(sale->currency), "EUR");
      sale->currency_exponent = 2;
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
    memset(&p, 0, sizeof(p));
    p.write.sales = sales;
    p.write.count = n;
    p.write.results = p.results;
    p.write.done = on_write_done;
    p.write.user = &p;
    assert_int_equal(journal_submit(f->journal, &p.write), 0);
    while (!p.done)
      uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(p.write.error, 0);
    for (size_t i = 0; i < n; i++)
      sale_clear(&sales[i]);
    done += n;
  }
}

struct op_wait {
  struct journal_op op;
  int done;
};

static void on_op_done(struct journal_op *op)
{
  struct op_wait *w = op->user;
  w->done = 1;
}

/* Seals batch `batch_seq` of at most `max_sales` sales, as a run would. */
static void seal(struct fixture *f, int64_t batch_seq, size_t max_sales)
{
  static struct batcher_identity identity;
  struct op_wait w;
  assert_int_equal(batcher_identity_init(&identity, "S001", "D1", 3), 0);
  memset(&w, 0, sizeof(w));
  w.op.kind = JOURNAL_OP_NEXT_BATCH;
  w.op.batch_seq = batch_seq;
  w.op.seal_upto_seq = INT64_MAX;
  w.op.max_sales = max_sales;
  w.op.max_bytes = 1024 * 1024;
  w.op.pack = batcher_pack;
  w.op.pack_arg = &identity;
  w.op.done = on_op_done;
  w.op.user = &w;
  assert_int_equal(journal_submit_op(f->journal, &w.op), 0);
  while (!w.done)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(w.op.error, 0);
  assert_true(w.op.sealed);
  journal_op_clear(&w.op);
}

/* Runs the loop until cond(f) holds, or fails after `timeout_ms`. */
static void wait_for(struct fixture *f, int (*cond)(struct fixture *), uint64_t timeout_ms,
                     const char *what)
{
  uint64_t deadline;
  uv_update_time(&f->loop);
  deadline = uv_now(&f->loop) + timeout_ms;
  while (!cond(f)) {
    if (uv_now(&f->loop) > deadline)
      fail_msg("timed out waiting for: %s", what);
    uv_run(&f->loop, UV_RUN_ONCE);
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
  f->fake.inject[0] = (struct injected){500, -1, 0, "boom", 0};
  f->fake.inject[1] = (struct injected){502, -1, 0, "bad gateway", 0};
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
  f->fake.inject[0] = (struct injected){503, 1, 0, "kafka unavailable", 0};
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
  f->fake.inject[0] = (struct injected){409, -1, 3, NULL, 0};
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
  f->fake.inject[0] = (struct injected){403, -1, 0, "certificate store S002 is not S001", 0};
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
  uv_tcp_init(&f->loop, &probe);
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
  uv_update_time(&f->loop);
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
  uplink_get_status(f->uplink, &status);
  assert_true(status.last_heartbeat_ms > 0);

  /* Head office asks for a push through the heartbeat's answer. */
  f->fake.inject_count = 0;
  f->fake.heartbeat_push_now = 1;
  wait_for(f, is_idle_and_all_sent, 10000, "the push head office asked for");
  assert_int_equal(f->fake.body_count, 1);
  assert_each_sale_once(f);
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
  f->fake.inject[0] = (struct injected){0, 0, 0, NULL, 1};
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
    uv_run(&f->loop, UV_RUN_NOWAIT);

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
           f->dir, f->dir);
  if (system(cmd) != 0)
    skip();
  snprintf(cert, sizeof(cert), "%s/pki/device-S001-D1.crt", f->dir);
  snprintf(key, sizeof(key), "%s/pki/device-S001-D1.key", f->dir);
  snprintf(ca, sizeof(ca), "%s/pki/ca.crt", f->dir);
  snprintf(server_cert, sizeof(server_cert), "%s/pki/server.crt", f->dir);
  snprintf(server_key, sizeof(server_key), "%s/pki/server.key", f->dir);
  if (access(cert, R_OK) || access(server_cert, R_OK) || access(ca, R_OK))
    skip();
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
  snprintf(other_cert, sizeof(other_cert), "%s/pki/other-ca/ca.crt", f->dir);
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
      cmocka_unit_test_setup_teardown(closing_mid_push_loses_nothing, setup, teardown),
      cmocka_unit_test_setup_teardown(mutual_tls_with_the_device_certificate, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
