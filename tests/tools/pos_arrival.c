/*
 * pos_arrival.c - pos-arrival: a fleet of stores arriving at the collector,
 * for tests/bench/arrival_bench.sh (issue 15, item 5). One thread, libcurl's
 * multi interface, so the client takes little of the cores it shares with
 * the collector.
 *
 *   pos-arrival --url https://127.0.0.1:PORT --cacert CA --dir DIR
 *               --stores N [--arrival-s S] [--limit-s L] [--target-s T] [--resume]
 *               [--groups LIST]
 *
 * Store i (1..N) is S%05d: its certificate DIR/S%05d.crt, key .key and the
 * zstd pos.v1.Batch body .body (built beforehand). Every certificate and key
 * is parsed once, before the clock, and given to each of the store's
 * connections from memory (libcurl's SSL_CTX callback), and the CA file is
 * loaded once (libcurl's CA cache): parsing the PEM files for every
 * connection made the client cost as much CPU as the collector it measures.
 * Store i arrives at (i-1) * S / N seconds after the start: a new mutual-TLS
 * connection (a full handshake, no session reused), POST /v1/batches, retried
 * until a 200 as the agent's backoff does (agent/uplink/backoff.c): after a
 * failure the delay is half fixed, half random of a ceiling doubling from 1 s
 * to 60 s; after a 503 at least its Retry-After plus up to half of it at
 * random (a 503's retry on the store's connection). The connection then
 * stays open and idle (libcurl connection caches, one per 64 stores, sized for all).
 *
 * --resume: a crowd that still holds its TLS sessions (a collector restarted,
 * or a network outage ending: the agents keep their session tickets in memory
 * and every collector instance shares the ticket key). Before the clock each
 * store makes one connection of its own (a full handshake, GET /healthz, then
 * closed), which leaves its session in its own libcurl handle (never shared
 * between stores), and the program prints
 *   warmed=N warm_s=X
 * and waits for one line on its standard input (the bench restarts the
 * collector meanwhile). The arrival then offers each store's session: a
 * resumed handshake when the collector takes the ticket.
 *
 * --groups LIST: the key exchange groups offered (OpenSSL's syntax, e.g. P-256). By default
 * OpenSSL's list, which like the agents' (mbedTLS 2.28's default) includes P-521, and the
 * collector (mbedTLS, its own preference first) picks P-521 from either: a measurement of
 * what a collector limited to P-256 would cost.
 *
 * Once every store has its 200, or L seconds (default S + 120) after the
 * start, it prints one line
 *   stores=N acked=N acked_by_target=N all_acked_s=X ack_p50_ms=X
 *     ack_p99_ms=X ack_max_ms=X connect_p50_ms=X connect_p99_ms=X
 *     answers_503=N retries=N transport_errors=N other_status=N cpu_s=X
 *     tls_connections=N handshakes=N resumed=N setup_cpu_s=X
 * (acked_by_target: the stores with their 200 within T seconds, default 90,
 * of the first arrival; all_acked_s: from the first arrival to the last
 * 200; ack: a store's arrival to its 200, over the acked stores; connect:
 * TCP + TLS of a store's first connection that completed its handshake;
 * cpu_s this process's user+system from the start of the arrival;
 * tls_connections the TLS connections the arrival began, handshakes those
 * whose handshake completed, resumed those of them that resumed a session
 * (OpenSSL's SSL_session_reused); setup_cpu_s the CPU before the start:
 * reading and parsing the files, and --resume's first connections), then
 * holds the connections open until its standard input reaches end of file.
 * Exit status: 0 every store acked, 1 not, 2 bad usage.
 */
#include <curl/curl.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct arrival_store {
  char name[16];
  X509 *cert;    /* parsed once at the start, given to every connection */
  EVP_PKEY *key; /* likewise */
  uint8_t *body;
  size_t body_len;
  double arrive_at;  /* seconds since the start */
  double due_at;     /* next attempt, seconds since the start */
  double acked_ms;   /* arrival -> 200, or -1 */
  double connect_ms; /* TCP + TLS of its first connection, or -1 */
  int in_flight;
  int reuse;        /* the next attempt may reuse the store's connection (after an answer) */
  int keep_session; /* --resume: ask for a session ticket, keep the session, offer it */
  unsigned failures;
  long tls_connections; /* TLS connections begun (the SSL_CTX callback) */
  long handshakes;      /* of them, handshakes completed */
  long resumed;         /* of those, resuming a session */
  CURLSH *conn_share;   /* the connection cache of its group of stores (borrowed) */
  CURL *easy;
};

/* Stores per connection cache. libcurl 7.88 walks the whole cache of a handle when removing it
 * from the multi handle (curl_multi_remove_handle, "close_connect_only"): one cache for all
 * would make the arrival quadratic, seconds of CPU at 10,000 stores. So the stores share a
 * cache by groups (CURLSH with CURL_LOCK_DATA_CONNECT), each connection still its store's. */
#define ARRIVAL_STORES_PER_CACHE 64

static struct timespec arrival_t0;

/* The index of the store in the ex_data of each connection's SSL_CTX: libcurl 7.88 builds one
 * SSL_CTX per connection, so the SSL_CTX says whose connection an SSL is. */
static int arrival_ctx_store_index = -1;

/* --groups: the key exchange groups every connection offers (OpenSSL's list syntax), or NULL
 * for OpenSSL's default, which like the agents' mbedTLS default includes P-521. */
static const char *arrival_groups;

/* The agent's backoff (agent/uplink/backoff.c), in seconds: half fixed, half random of a
 * ceiling doubling from 1 s to 60 s with the store's failures. */
static double arrival_backoff(struct arrival_store *store)
{
  double ceiling = 1;

  for (unsigned i = 0; i < store->failures && ceiling < 60; i++)
    ceiling *= 2;
  if (ceiling > 60)
    ceiling = 60;
  store->failures++;
  return ceiling / 2 + ceiling / 2 * ((double)rand() / RAND_MAX);
}

static double arrival_now(void)
{
  struct timespec now;

  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - arrival_t0.tv_sec) + (now.tv_nsec - arrival_t0.tv_nsec) / 1e9;
}

static void arrival_die(const char *message, const char *what)
{
  fprintf(stderr, "pos-arrival: %s%s%s\n", message, what ? ": " : "", what ? what : "");
  exit(1);
}

static uint8_t *arrival_read(const char *path, size_t *len)
{
  FILE *in = fopen(path, "rb");
  uint8_t *data;
  long size = -1;

  if (!in)
    arrival_die("cannot read", path);
  if (fseek(in, 0, SEEK_END) == 0)
    size = ftell(in);
  if (size <= 0 || fseek(in, 0, SEEK_SET) != 0)
    arrival_die("cannot size", path);
  data = malloc((size_t)size);
  if (!data || fread(data, 1, (size_t)size, in) != (size_t)size)
    arrival_die("cannot read", path);
  fclose(in);
  *len = (size_t)size;
  return data;
}

static size_t arrival_discard(char *data, size_t size, size_t count, void *user)
{
  (void)data;
  (void)user;
  return size * count;
}

/* This process's user + system CPU so far, seconds. */
static double arrival_cpu_s(void)
{
  struct rusage usage;

  getrusage(RUSAGE_SELF, &usage);
  return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

/* Parses the store's certificate and key (DIR/S%05d.crt, .key) into store->cert and ->key, and
 * reads its body: once, so that no connection pays for PEM and ASN.1 decoding again. */
static void arrival_load_store(struct arrival_store *store, const char *dir)
{
  char path[1024];
  FILE *in;

  snprintf(path, sizeof path, "%s/%s.crt", dir, store->name);
  in = fopen(path, "r");
  if (!in)
    arrival_die("cannot read", path);
  store->cert = PEM_read_X509(in, NULL, NULL, NULL);
  fclose(in);
  if (!store->cert)
    arrival_die("no PEM certificate in", path);
  snprintf(path, sizeof path, "%s/%s.key", dir, store->name);
  in = fopen(path, "r");
  if (!in)
    arrival_die("cannot read", path);
  store->key = PEM_read_PrivateKey(in, NULL, NULL, NULL);
  fclose(in);
  if (!store->key)
    arrival_die("no PEM private key (unencrypted) in", path);
  snprintf(path, sizeof path, "%s/%s.body", dir, store->name);
  store->body = arrival_read(path, &store->body_len);
}

/* OpenSSL's info callback on every connection: counts the store's completed handshakes and the
 * resumed ones. Called on the one thread, inside curl_multi_perform(). */
static void arrival_ssl_info(const SSL *ssl, int where, int ret)
{
  struct arrival_store *store;

  (void)ret;
  if (!(where & SSL_CB_HANDSHAKE_DONE))
    return;
  store = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), arrival_ctx_store_index);
  if (!store)
    return;
  store->handshakes++;
  if (SSL_session_reused(ssl))
    store->resumed++;
}

/* libcurl's CURLOPT_SSL_CTX_FUNCTION, for each new connection of the store (user): its
 * certificate and key from memory (SSL_CTX_use_* take their own references), and the
 * counting above. Any session to resume is libcurl's to offer, after this returns. */
static CURLcode arrival_ssl_ctx(CURL *easy, void *ssl_ctx, void *user)
{
  struct arrival_store *store = user;
  SSL_CTX *ctx = ssl_ctx;

  (void)easy;
  store->tls_connections++;
  if (SSL_CTX_use_certificate(ctx, store->cert) != 1 ||
      SSL_CTX_use_PrivateKey(ctx, store->key) != 1 ||
      SSL_CTX_set_ex_data(ctx, arrival_ctx_store_index, store) != 1)
    return CURLE_SSL_CERTPROBLEM;
  /* libcurl 7.88 turns session tickets off (SSL_OP_NO_TICKET), leaving only session IDs, which
   * the collector does not cache: its resumption is the ticket, as for the agents. */
  if (store->keep_session)
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
  if (arrival_groups && SSL_CTX_set1_groups_list(ctx, arrival_groups) != 1)
    return CURLE_SSL_CIPHER;
  SSL_CTX_set_info_callback(ctx, arrival_ssl_info);
  return CURLE_OK;
}

/* The store's easy handle: TLS and timeouts, no request yet. keep_session: libcurl keeps the
 * store's TLS session in this handle and offers it on the handle's next connections. */
static CURL *arrival_easy_new(struct arrival_store *store, const char *cacert, int keep_session)
{
  CURL *easy = curl_easy_init();

  if (!easy)
    arrival_die("curl_easy_init failed", NULL);
  curl_easy_setopt(easy, CURLOPT_CAINFO, cacert);
  /* Only the CA file: with Debian's default CA directory beside it libcurl would neither cache
   * the CA store nor spare a directory lookup at each verification. */
  curl_easy_setopt(easy, CURLOPT_CAPATH, NULL);
#if LIBCURL_VERSION_NUM >= 0x075700
  /* The CA file parsed once, not per connection: the client's CPU is the collector's. */
  curl_easy_setopt(easy, CURLOPT_CA_CACHE_TIMEOUT, 86400L);
#endif
  /* The store's certificate and key from memory (no CURLOPT_SSLCERT, CURLOPT_SSLKEY). */
  curl_easy_setopt(easy, CURLOPT_SSL_CTX_FUNCTION, arrival_ssl_ctx);
  curl_easy_setopt(easy, CURLOPT_SSL_CTX_DATA, store);
  /* Without keep_session a full handshake: no session of another store (or this one)
   * reused. */
  curl_easy_setopt(easy, CURLOPT_SSL_SESSIONID_CACHE, keep_session ? 1L : 0L);
  store->keep_session = keep_session;
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, arrival_discard);
  /* SIGPIPE is ignored once in main(): libcurl would otherwise set and restore its handler
   * (two system calls) around every transfer at every curl_multi_perform(). */
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, 60L);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT, 120L);
  curl_easy_setopt(easy, CURLOPT_MAXAGE_CONN, 86400L);
  curl_easy_setopt(easy, CURLOPT_SHARE, store->conn_share);
  curl_easy_setopt(easy, CURLOPT_PRIVATE, store);
  store->easy = easy;
  return easy;
}

/* Starts the store's attempt (the multi handle takes the easy handle until its CURLMSG_DONE). */
static void arrival_start(CURLM *multi, struct arrival_store *store)
{
  /* A new connection unless a 503 left the store's own one open: libcurl's search of its cache
   * (a liveness probe of every cached connection) would make the arrival quadratic in the
   * stores already connected. */
  curl_easy_setopt(store->easy, CURLOPT_FRESH_CONNECT, store->reuse ? 0L : 1L);
  store->in_flight = 1;
  curl_multi_add_handle(multi, store->easy);
}

/* --resume's first connections, before the clock: each store GETs url (/healthz) over a
 * connection of its own, closed after the answer, until every one has had a 200; at most 32 at
 * a time, so that the collector's handshake queue never refuses them. A store's session stays
 * in its easy handle. Dies if a store fails 10 times. */
static void arrival_warm(CURLM *multi, struct arrival_store *stores, long store_count,
                         const char *url, const char *cacert)
{
  long next = 0, warmed = 0, in_flight = 0;

  while (warmed < store_count) {
    int running = 0, queued = 0;
    CURLMsg *message;

    while (in_flight < 32 && next < store_count) {
      struct arrival_store *store = &stores[next++];
      CURL *easy = arrival_easy_new(store, cacert, 1);

      curl_easy_setopt(easy, CURLOPT_URL, url);
      curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, 1L);
      curl_multi_add_handle(multi, easy);
      in_flight++;
    }
    curl_multi_perform(multi, &running);
    while ((message = curl_multi_info_read(multi, &queued))) {
      struct arrival_store *store = NULL;
      long status = 0;

      if (message->msg != CURLMSG_DONE)
        continue;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, (char **)&store);
      curl_easy_getinfo(message->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      curl_multi_remove_handle(multi, message->easy_handle);
      if (message->data.result == CURLE_OK && status == 200) {
        in_flight--;
        warmed++;
        continue;
      }
      if (++store->failures >= 10) {
        fprintf(stderr, "pos-arrival: %s: %s, HTTP %ld\n", store->name,
                curl_easy_strerror(message->data.result), status);
        arrival_die("a store's first connection failed 10 times", store->name);
      }
      curl_multi_add_handle(multi, store->easy);
    }
    if (warmed < store_count)
      curl_multi_poll(multi, NULL, 0, 100, NULL);
  }
}

static int arrival_cmp(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;

  return (x > y) - (x < y);
}

/* The q-th quantile (0..1) of n sorted values, nearest rank. */
static double arrival_quantile(const double *sorted, size_t n, double q)
{
  size_t rank;

  if (n == 0)
    return 0;
  rank = (size_t)(q * (double)n + 0.999999);
  if (rank < 1)
    rank = 1;
  if (rank > n)
    rank = n;
  return sorted[rank - 1];
}

static void arrival_usage(FILE *out)
{
  fputs("usage: pos-arrival --url https://HOST:PORT --cacert CA --dir DIR --stores N\n"
        "                   [--arrival-s S] [--limit-s L] [--target-s T] [--resume]\n"
        "                   [--groups LIST]\n"
        "Stores S00001..S<N> (DIR/S%05d.crt, .key, .body) arrive evenly over S seconds\n"
        "(default 60), each POSTs its body to /v1/batches over a new mutual-TLS connection,\n"
        "retrying a 503 after its Retry-After, then stays connected. Prints a summary once\n"
        "all have their 200 or at L s (default S + 120), counting the stores acked within\n"
        "T s (default 90) of the first arrival, and holds the connections until stdin ends.\n"
        "--resume: each store first connects once (GET /healthz), then after a line on\n"
        "stdin arrives with the TLS session of that connection.\n"
        "--groups: the TLS key exchange groups offered, OpenSSL's syntax (P-256:X25519).\n",
        out);
}

int main(int argc, char **argv)
{
  const char *url_base = NULL, *cacert = NULL, *dir = NULL;
  char url[1024], healthz_url[1024];
  long store_count = 0;
  int resume = 0;
  double arrival_s = 60, limit_s = -1, target_s = 90;
  long acked_by_target = 0;
  struct arrival_store *stores;
  CURLSH **conn_shares;
  long conn_share_count;
  struct curl_slist *headers = NULL;
  CURLM *multi;
  long next_arrival = 0, acked = 0, answers_503 = 0, retries = 0, transport_errors = 0;
  long other_status = 0;
  double first_arrival = -1, last_ack = 0, setup_cpu_s, warm_t0;
  /* The earliest due_at of a store waiting to retry: the scan for due retries runs only then,
   * not at every turn of the loop (a scan of every store arrived, at 10,000 stores). */
  double retry_due_at = HUGE_VAL;

  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char *value;

    if (strcmp(arg, "--help") == 0) {
      arrival_usage(stdout);
      return 0;
    }
    if (strcmp(arg, "--resume") == 0) {
      resume = 1;
      continue;
    }
    value = ++i < argc ? argv[i] : NULL;
    if (!value) {
      arrival_usage(stderr);
      return 2;
    }
    if (strcmp(arg, "--url") == 0)
      url_base = value;
    else if (strcmp(arg, "--cacert") == 0)
      cacert = value;
    else if (strcmp(arg, "--dir") == 0)
      dir = value;
    else if (strcmp(arg, "--stores") == 0)
      store_count = strtol(value, NULL, 10);
    else if (strcmp(arg, "--arrival-s") == 0)
      arrival_s = strtod(value, NULL);
    else if (strcmp(arg, "--limit-s") == 0)
      limit_s = strtod(value, NULL);
    else if (strcmp(arg, "--target-s") == 0)
      target_s = strtod(value, NULL);
    else if (strcmp(arg, "--groups") == 0)
      arrival_groups = value;
    else {
      arrival_usage(stderr);
      return 2;
    }
  }
  if (!url_base || !cacert || !dir || store_count < 1 || store_count > 99999 || arrival_s < 0) {
    arrival_usage(stderr);
    return 2;
  }
  if (limit_s < 0)
    limit_s = arrival_s + 120;
  snprintf(url, sizeof url, "%s/v1/batches", url_base);
  snprintf(healthz_url, sizeof healthz_url, "%s/healthz", url_base);

  stores = calloc((size_t)store_count, sizeof *stores);
  if (!stores)
    arrival_die("out of memory", NULL);
  if (strlen(dir) > 1000)
    arrival_die("--dir is too long a path", dir);
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  if (arrival_groups) {
    SSL_CTX *probe = SSL_CTX_new(TLS_client_method());
    int groups_ok = probe && SSL_CTX_set1_groups_list(probe, arrival_groups) == 1;

    SSL_CTX_free(probe);
    if (!groups_ok)
      arrival_die("--groups is not a list of groups OpenSSL knows (e.g. P-256:X25519)",
                  arrival_groups);
  }
  arrival_ctx_store_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
  if (arrival_ctx_store_index < 0)
    arrival_die("SSL_CTX_get_ex_new_index failed", NULL);
  conn_share_count = (store_count + ARRIVAL_STORES_PER_CACHE - 1) / ARRIVAL_STORES_PER_CACHE;
  conn_shares = calloc((size_t)conn_share_count, sizeof *conn_shares);
  if (!conn_shares)
    arrival_die("out of memory", NULL);
  for (long k = 0; k < conn_share_count; k++) {
    conn_shares[k] = curl_share_init();
    if (!conn_shares[k] ||
        curl_share_setopt(conn_shares[k], CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK)
      arrival_die("curl_share_init failed (a connection cache per group of stores)", NULL);
  }
  for (long i = 0; i < store_count; i++) {
    struct arrival_store *store = &stores[i];

    snprintf(store->name, sizeof store->name, "S%05ld", i + 1);
    store->conn_share = conn_shares[i / ARRIVAL_STORES_PER_CACHE];
    arrival_load_store(store, dir);
    store->arrive_at = (double)i * arrival_s / (double)store_count;
    store->due_at = store->arrive_at;
    store->acked_ms = -1;
    store->connect_ms = -1;
  }

  multi = curl_multi_init();
  /* Every store's connection stays in the cache, open and idle. */
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, store_count + 16);
  headers = curl_slist_append(headers, "Content-Type: application/x-protobuf");
  headers = curl_slist_append(headers, "Content-Encoding: zstd");
  headers = curl_slist_append(headers, "Expect:");
  if (resume) {
    char line[256];

    clock_gettime(CLOCK_MONOTONIC, &arrival_t0);
    warm_t0 = arrival_now();
    arrival_warm(multi, stores, store_count, healthz_url, cacert);
    printf("warmed=%ld warm_s=%.2f\n", store_count, arrival_now() - warm_t0);
    fflush(stdout);
    /* The arrival counts its own connections; the backoff starts afresh. */
    for (long i = 0; i < store_count; i++) {
      stores[i].failures = 0;
      stores[i].tls_connections = 0;
      stores[i].handshakes = 0;
      stores[i].resumed = 0;
    }
    if (!fgets(line, sizeof line, stdin))
      arrival_die("standard input ended before the arrival's start", NULL);
  }
  setup_cpu_s = arrival_cpu_s();
  clock_gettime(CLOCK_MONOTONIC, &arrival_t0);

  while (acked < store_count && arrival_now() < limit_s) {
    double now = arrival_now();
    int running = 0, queued = 0;
    CURLMsg *message;

    /* New arrivals. */
    while (next_arrival < store_count && stores[next_arrival].arrive_at <= now) {
      struct arrival_store *store = &stores[next_arrival++];
      /* --resume's handles exist already, holding their store's session. */
      CURL *easy = resume ? store->easy : arrival_easy_new(store, cacert, 0);

      curl_easy_setopt(easy, CURLOPT_URL, url);
      curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, 0L);
      curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, store->body);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)store->body_len);
      arrival_start(multi, store);
      if (first_arrival < 0)
        first_arrival = now;
    }
    /* Retries that are due. */
    if (retry_due_at <= now) {
      retry_due_at = HUGE_VAL;
      for (long i = 0; i < next_arrival; i++) {
        struct arrival_store *store = &stores[i];

        if (store->acked_ms >= 0 || store->in_flight)
          continue;
        if (store->due_at <= now)
          arrival_start(multi, store);
        else if (store->due_at < retry_due_at)
          retry_due_at = store->due_at;
      }
    }

    curl_multi_perform(multi, &running);
    while ((message = curl_multi_info_read(multi, &queued))) {
      struct arrival_store *store = NULL;
      long status = 0;
      curl_off_t retry_after = 0, app_connect_us = 0;
      double done_at = arrival_now();

      if (message->msg != CURLMSG_DONE)
        continue;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, (char **)&store);
      curl_easy_getinfo(message->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      curl_easy_getinfo(message->easy_handle, CURLINFO_APPCONNECT_TIME_T, &app_connect_us);
      curl_multi_remove_handle(multi, message->easy_handle);
      store->in_flight = 0;
      if (store->connect_ms < 0 && app_connect_us > 0)
        store->connect_ms = (double)app_connect_us / 1000.0;
      if (message->data.result == CURLE_OK && status == 200) {
        store->acked_ms = (done_at - store->arrive_at) * 1000.0;
        last_ack = done_at;
        acked++;
        if (done_at - first_arrival <= target_s)
          acked_by_target++;
        continue;
      }
      retries++;
      store->due_at = done_at + arrival_backoff(store);
      store->reuse = message->data.result == CURLE_OK;
      if (message->data.result != CURLE_OK) {
        transport_errors++;
        if (transport_errors <= 5)
          fprintf(stderr, "pos-arrival: %s: %s\n", store->name,
                  curl_easy_strerror(message->data.result));
      } else if (status == 503) {
        answers_503++;
        curl_easy_getinfo(message->easy_handle, CURLINFO_RETRY_AFTER, &retry_after);
        if (retry_after > 0 && done_at + (double)retry_after * 1.5 > store->due_at)
          store->due_at = done_at + (double)retry_after * (1 + 0.5 * rand() / RAND_MAX);
      } else {
        other_status++;
        if (other_status <= 5)
          fprintf(stderr, "pos-arrival: %s: HTTP %ld\n", store->name, status);
      }
      if (store->due_at < retry_due_at)
        retry_due_at = store->due_at;
    }
    if (acked < store_count) {
      /* Wake for the next arrival, at most 10 ms away. */
      int wait_ms = 10;

      if (next_arrival < store_count) {
        double until = (stores[next_arrival].arrive_at - arrival_now()) * 1000.0;

        if (until < wait_ms)
          wait_ms = until < 0 ? 0 : (int)until;
      }
      curl_multi_poll(multi, NULL, 0, wait_ms, NULL);
    }
  }

  {
    double *ack = malloc((size_t)store_count * sizeof *ack);
    double *connect = malloc((size_t)store_count * sizeof *connect);
    size_t connect_count = 0, ack_count = 0;
    long tls_connections = 0, handshakes = 0, resumed = 0;
    double cpu_s = arrival_cpu_s() - setup_cpu_s;

    if (!ack || !connect)
      arrival_die("out of memory", NULL);
    for (long i = 0; i < store_count; i++) {
      if (stores[i].acked_ms >= 0)
        ack[ack_count++] = stores[i].acked_ms;
      if (stores[i].connect_ms >= 0)
        connect[connect_count++] = stores[i].connect_ms;
      tls_connections += stores[i].tls_connections;
      handshakes += stores[i].handshakes;
      resumed += stores[i].resumed;
    }
    qsort(ack, ack_count, sizeof *ack, arrival_cmp);
    qsort(connect, connect_count, sizeof *connect, arrival_cmp);
    printf("stores=%ld acked=%ld acked_by_target=%ld all_acked_s=%.2f ack_p50_ms=%.1f "
           "ack_p99_ms=%.1f ack_max_ms=%.1f connect_p50_ms=%.1f connect_p99_ms=%.1f "
           "answers_503=%ld retries=%ld transport_errors=%ld other_status=%ld cpu_s=%.2f "
           "tls_connections=%ld handshakes=%ld resumed=%ld setup_cpu_s=%.2f\n",
           store_count, acked, acked_by_target, acked ? last_ack - first_arrival : 0,
           arrival_quantile(ack, ack_count, 0.5), arrival_quantile(ack, ack_count, 0.99),
           ack_count ? ack[ack_count - 1] : 0, arrival_quantile(connect, connect_count, 0.5),
           arrival_quantile(connect, connect_count, 0.99), answers_503, retries, transport_errors,
           other_status, cpu_s, tls_connections, handshakes, resumed, setup_cpu_s);
    fflush(stdout);
    free(ack);
    free(connect);
  }

  /* Hold the connections (in the multi handle's cache) until stdin ends. */
  {
    char line[256];

    while (fgets(line, sizeof line, stdin))
      ;
  }
  for (long i = 0; i < store_count; i++) {
    curl_easy_cleanup(stores[i].easy);
    X509_free(stores[i].cert);
    EVP_PKEY_free(stores[i].key);
    free(stores[i].body);
  }
  /* Closes the idle connections, now that no easy handle uses the caches. */
  for (long k = 0; k < conn_share_count; k++)
    curl_share_cleanup(conn_shares[k]);
  free(conn_shares);
  curl_multi_cleanup(multi);
  curl_slist_free_all(headers);
  curl_global_cleanup();
  free(stores);
  return acked == store_count ? 0 : 1;
}
