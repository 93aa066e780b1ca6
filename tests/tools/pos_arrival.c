/*
 * pos_arrival.c - pos-arrival: a fleet of stores arriving at the collector,
 * for tests/bench/arrival_bench.sh (issue 15, item 5). One thread, libcurl's
 * multi interface, so the client takes little of the cores it shares with
 * the collector.
 *
 *   pos-arrival --url https://127.0.0.1:PORT --cacert CA --dir DIR
 *               --stores N [--arrival-s S] [--limit-s L] [--target-s T]
 *
 * Store i (1..N) is S%05d: its certificate DIR/S%05d.crt, key .key and the
 * zstd pos.v1.Batch body .body (built beforehand). Store i arrives at
 * (i-1) * S / N seconds after the start: a new mutual-TLS connection (a full
 * handshake, no session reused), POST /v1/batches, retried until a 200 as
 * the agent's backoff does (agent/uplink/backoff.c): after a failure the
 * delay is half fixed, half random of a ceiling doubling from 1 s to 60 s;
 * after a 503 at least its Retry-After plus up to half of it at random
 * (a 503's retry on the store's connection). The connection then
 * stays open and idle (libcurl's connection cache, sized for every store).
 *
 * Once every store has its 200, or L seconds (default S + 120) after the
 * start, it prints one line
 *   stores=N acked=N acked_by_target=N all_acked_s=X ack_p50_ms=X
 *     ack_p99_ms=X ack_max_ms=X connect_p50_ms=X connect_p99_ms=X
 *     answers_503=N retries=N transport_errors=N other_status=N cpu_s=X
 * (acked_by_target: the stores with their 200 within T seconds, default 90,
 * of the first arrival; all_acked_s: from the first arrival to the last
 * 200; ack: a store's arrival to its 200, over the acked stores; connect:
 * TCP + TLS of a store's first connection that completed its handshake;
 * cpu_s this process's user+system), then holds the connections open until its
 * standard input reaches end of file. Exit status: 0 every store acked, 1
 * not, 2 bad usage.
 */
#include <curl/curl.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct arrival_store {
  char name[16];
  char cert_path[512];
  char key_path[512];
  uint8_t *body;
  size_t body_len;
  double arrive_at;  /* seconds since the start */
  double due_at;     /* next attempt, seconds since the start */
  double acked_ms;   /* arrival -> 200, or -1 */
  double connect_ms; /* TCP + TLS of its first connection, or -1 */
  int in_flight;
  int reuse; /* the next attempt may reuse the store's connection (after an answer) */
  unsigned failures;
  CURL *easy;
};

static struct timespec arrival_t0;

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
        "                   [--arrival-s S] [--limit-s L] [--target-s T]\n"
        "Stores S00001..S<N> (DIR/S%05d.crt, .key, .body) arrive evenly over S seconds\n"
        "(default 60), each POSTs its body to /v1/batches over a new mutual-TLS connection,\n"
        "retrying a 503 after its Retry-After, then stays connected. Prints a summary once\n"
        "all have their 200 or at L s (default S + 120), counting the stores acked within\n"
        "T s (default 90) of the first arrival, and holds the connections until stdin ends.\n",
        out);
}

int main(int argc, char **argv)
{
  const char *url_base = NULL, *cacert = NULL, *dir = NULL;
  char url[1024];
  long store_count = 0;
  double arrival_s = 60, limit_s = -1, target_s = 90;
  long acked_by_target = 0;
  struct arrival_store *stores;
  struct curl_slist *headers = NULL;
  CURLM *multi;
  long next_arrival = 0, acked = 0, answers_503 = 0, retries = 0, transport_errors = 0;
  long other_status = 0;
  double first_arrival = -1, last_ack = 0;
  struct rusage usage;

  for (int i = 1; i < argc; i += 2) {
    const char *arg = argv[i];
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;

    if (strcmp(arg, "--help") == 0) {
      arrival_usage(stdout);
      return 0;
    }
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

  stores = calloc((size_t)store_count, sizeof *stores);
  if (!stores)
    arrival_die("out of memory", NULL);
  if (strlen(dir) > sizeof stores->cert_path - 16)
    arrival_die("--dir is too long a path", dir);
  for (long i = 0; i < store_count; i++) {
    struct arrival_store *store = &stores[i];
    char body_path[sizeof store->cert_path];

    snprintf(store->name, sizeof store->name, "S%05ld", i + 1);
    snprintf(store->cert_path, sizeof store->cert_path, "%s/%s.crt", dir, store->name);
    snprintf(store->key_path, sizeof store->key_path, "%s/%s.key", dir, store->name);
    snprintf(body_path, sizeof body_path, "%s/%s.body", dir, store->name);
    store->body = arrival_read(body_path, &store->body_len);
    store->arrive_at = (double)i * arrival_s / (double)store_count;
    store->due_at = store->arrive_at;
    store->acked_ms = -1;
    store->connect_ms = -1;
  }

  curl_global_init(CURL_GLOBAL_DEFAULT);
  multi = curl_multi_init();
  /* Every store's connection stays in the cache, open and idle. */
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, store_count + 16);
  headers = curl_slist_append(headers, "Content-Type: application/x-protobuf");
  headers = curl_slist_append(headers, "Content-Encoding: zstd");
  headers = curl_slist_append(headers, "Expect:");
  clock_gettime(CLOCK_MONOTONIC, &arrival_t0);

  while (acked < store_count && arrival_now() < limit_s) {
    double now = arrival_now();
    int running = 0, queued = 0;
    CURLMsg *message;

    /* New arrivals. */
    while (next_arrival < store_count && stores[next_arrival].arrive_at <= now) {
      struct arrival_store *store = &stores[next_arrival++];
      CURL *easy = curl_easy_init();

      if (!easy)
        arrival_die("curl_easy_init failed", NULL);
      curl_easy_setopt(easy, CURLOPT_URL, url);
      curl_easy_setopt(easy, CURLOPT_CAINFO, cacert);
      curl_easy_setopt(easy, CURLOPT_SSLCERT, store->cert_path);
      curl_easy_setopt(easy, CURLOPT_SSLKEY, store->key_path);
      /* A full handshake: no session of another store (or this one) reused. */
      curl_easy_setopt(easy, CURLOPT_SSL_SESSIONID_CACHE, 0L);
      curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, store->body);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)store->body_len);
      curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, arrival_discard);
      curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, 60L);
      curl_easy_setopt(easy, CURLOPT_TIMEOUT, 120L);
      curl_easy_setopt(easy, CURLOPT_MAXAGE_CONN, 86400L);
#if LIBCURL_VERSION_NUM >= 0x075700
      /* The CA file parsed once, not per connection: the client's CPU is the collector's. */
      curl_easy_setopt(easy, CURLOPT_CA_CACHE_TIMEOUT, 86400L);
#endif
      curl_easy_setopt(easy, CURLOPT_PRIVATE, store);
      store->easy = easy;
      if (first_arrival < 0)
        first_arrival = now;
    }
    /* Arrivals and retries that are due. */
    for (long i = 0; i < next_arrival; i++) {
      struct arrival_store *store = &stores[i];

      if (store->acked_ms < 0 && !store->in_flight && store->due_at <= now) {
        /* A new connection unless a 503 left the store's own one open: libcurl's search
         * of its cache (a liveness probe of every cached connection) would make the
         * arrival quadratic in the stores already connected. */
        curl_easy_setopt(store->easy, CURLOPT_FRESH_CONNECT, store->reuse ? 0L : 1L);
        store->in_flight = 1;
        curl_multi_add_handle(multi, store->easy);
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

    if (!ack || !connect)
      arrival_die("out of memory", NULL);
    for (long i = 0; i < store_count; i++) {
      if (stores[i].acked_ms >= 0)
        ack[ack_count++] = stores[i].acked_ms;
      if (stores[i].connect_ms >= 0)
        connect[connect_count++] = stores[i].connect_ms;
    }
    qsort(ack, ack_count, sizeof *ack, arrival_cmp);
    qsort(connect, connect_count, sizeof *connect, arrival_cmp);
    getrusage(RUSAGE_SELF, &usage);
    printf("stores=%ld acked=%ld acked_by_target=%ld all_acked_s=%.2f ack_p50_ms=%.1f "
           "ack_p99_ms=%.1f ack_max_ms=%.1f connect_p50_ms=%.1f connect_p99_ms=%.1f "
           "answers_503=%ld retries=%ld transport_errors=%ld other_status=%ld cpu_s=%.2f\n",
           store_count, acked, acked_by_target, acked ? last_ack - first_arrival : 0,
           arrival_quantile(ack, ack_count, 0.5), arrival_quantile(ack, ack_count, 0.99),
           ack_count ? ack[ack_count - 1] : 0,
           arrival_quantile(connect, connect_count, 0.5),
           arrival_quantile(connect, connect_count, 0.99), answers_503, retries,
           transport_errors, other_status,
           (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
               (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6);
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
    free(stores[i].body);
  }
  curl_multi_cleanup(multi);
  curl_slist_free_all(headers);
  curl_global_cleanup();
  free(stores);
  return acked == store_count ? 0 : 1;
}
