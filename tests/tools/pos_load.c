/*
 * pos_load.c - pos-load: a crowd of POS terminals posting sales to an agent.
 *
 *   pos-load --url http://127.0.0.1:PORT --token TOK --terminal T1
 *            --clients C --sales N [--prefix P] [--acked FILE] [--batch K]
 *            [--allow-failures] [--max-failures M] [--duration S]
 *            [--time-base EPOCH] [--timeout S] [--pace-ms MS]
 *   pos-load --emit-json [--prefix P] [--terminal T] [--client C] [--index I] [--batch K]
 *
 * C threads, each with its own curl easy handle (one keep-alive connection),
 * post N sales each to POST /v1/sales, one at a time or as arrays of K. Sale
 * ids are "<P>-c<client>-<i>" and the content of a sale is a function of
 * (prefix, client, i, time base) only, so running the same command again
 * (within the hour, or with the same --time-base) resends identical sales,
 * which the agent must answer as duplicates.
 *
 * Every sale acknowledged with a 2xx is appended to --acked FILE as
 * "sale_id seq\n" with write(2) as soon as its response arrives, so a test
 * that kills the agent mid-run knows exactly what was acknowledged.
 *
 * Prints one summary line on stdout:
 *   sales=N ok=N duplicate=N failed=N seconds=S rate=R/s p50_ms=X p99_ms=X max_ms=X
 * (the p*_ms: each request's time from send to answer, over all clients;
 * --pace-ms makes each client wait MS between requests, like a till, so the
 * latency is measured at a store's pace rather than at saturation)
 * (sales = sales sent; ok = newly journaled; failed = sales in requests that
 * got no 2xx) and a breakdown of failures on stderr. Exits 0, or 1 if a
 * request failed and --allow-failures was not given, 2 on bad usage.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOAD_STATUS_MAX 600  /* HTTP statuses counted: 0 (transport error) .. 599 */
#define LOAD_REPORT_MAX 5    /* failures printed in detail, over all clients */

struct load_options {
  const char *url;
  const char *token;
  const char *terminal;
  const char *prefix;
  const char *acked_path;
  long clients;
  long sales;            /* per client */
  long batch;            /* sales per request; 1 = single sale objects */
  long max_failures;     /* per client: stop after this many failed requests; 0 = never */
  long timeout_s;        /* per request */
  double duration_s;     /* stop sending new requests after this long; 0 = no limit */
  long pace_ms;          /* wait between a client's requests; 0 = none */
  long id_digits;        /* sale ids' index zero-padded to this many digits; 0 = none */
  long long time_base;   /* UTC epoch seconds; business times fall in the hour before it */
  int allow_failures;
  int emit_json;
  long emit_client;
  long emit_index;
};

/* A growable text buffer; every append keeps it NUL-terminated. */
struct load_text {
  char *data;
  size_t length;
  size_t capacity;
};

struct load_client {
  pthread_t thread;
  long index;
  const struct load_options *options;
  long sales_sent;
  long ok;
  long duplicate;
  long failed;           /* sales in requests that got no 2xx */
  long failed_requests;
  long status_counts[LOAD_STATUS_MAX];
  double *latency_ms;    /* one per request */
  size_t latency_count;
  size_t latency_capacity;
};

static int load_acked_fd = -1;
static pthread_mutex_t load_report_lock = PTHREAD_MUTEX_INITIALIZER;
static int load_reported;
static struct timespec load_started;

/* ---- small helpers ---------------------------------------------------- */

static void load_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void load_die(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("pos-load: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

static void load_text_reserve(struct load_text *text, size_t extra)
{
  size_t needed = text->length + extra + 1;
  if (needed <= text->capacity)
    return;
  size_t capacity = text->capacity ? text->capacity : 1024;
  while (capacity < needed)
    capacity *= 2;
  char *data = realloc(text->data, capacity);
  if (!data)
    load_die("out of memory");
  text->data = data;
  text->capacity = capacity;
}

static void load_text_appendf(struct load_text *text, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void load_text_appendf(struct load_text *text, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    load_die("cannot format text");
  load_text_reserve(text, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(text->data + text->length, (size_t)n + 1, fmt, ap);
  va_end(ap);
  text->length += (size_t)n;
}

static void load_text_reset(struct load_text *text)
{
  text->length = 0;
  load_text_reserve(text, 0);
  text->data[0] = '\0';
}

static double load_elapsed(void)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - load_started.tv_sec) +
         (double)(now.tv_nsec - load_started.tv_nsec) / 1e9;
}

static long load_parse_long(const char *option, const char *text, long min, long max)
{
  char *end;
  errno = 0;
  long value = strtol(text, &end, 10);
  if (errno || end == text || *end != '\0' || value < min || value > max)
    load_die("%s \"%s\": expected an integer in %ld..%ld", option, text, min, max);
  return value;
}

/* Writes all of `data` to the acked file; a short write is retried, an error is fatal. */
static void load_acked_write(const char *data, size_t length)
{
  while (length > 0) {
    ssize_t n = write(load_acked_fd, data, length);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      load_die("cannot write the acked file: %s", strerror(errno));
    }
    data += n;
    length -= (size_t)n;
  }
}

/* ---- deterministic sale content -------------------------------------- */

/* splitmix64: small, fast, and good enough to vary pizza orders. */
static uint64_t load_rng_next(uint64_t *state)
{
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static unsigned load_rng_below(uint64_t *state, unsigned bound)
{
  return (unsigned)(load_rng_next(state) % bound);
}

struct load_menu_item {
  const char *sku;
  long long price;  /* EUR cents */
  int vat_percent;
};

static const struct load_menu_item load_menu[] = {
    {"PIZZA-MARG-S", 850, 10},   {"PIZZA-MARG-M", 1050, 10},  {"PIZZA-MARG-L", 1250, 10},
    {"PIZZA-PEPP-M", 1190, 10},  {"PIZZA-PEPP-L", 1400, 10},  {"PIZZA-QUAT-L", 1520, 10},
    {"PIZZA-HAWA-M", 1170, 10},  {"PIZZA-DIAV-L", 1460, 10},  {"PIZZA-VEG-M", 1090, 10},
    {"CALZONE-CLAS", 1300, 10},  {"SIDE-GARLIC-BREAD", 420, 10}, {"SIDE-WINGS-6", 690, 10},
    {"SALAD-CAESAR", 780, 10},   {"DESSERT-TIRAMISU", 550, 10}, {"DRINK-COLA-033", 250, 22},
    {"DRINK-WATER-050", 180, 22}, {"DRINK-BEER-033", 390, 22},
};
#define LOAD_MENU_COUNT (sizeof(load_menu) / sizeof(load_menu[0]))

static const char *const load_partners[] = {"Deliveroo", "JustEat", "UberEats", "Glovo"};

/* Offsets of the stores' time zones, in minutes east of UTC; mostly CET. */
static const int load_offsets[] = {60, 60, 60, 60, 120, 0, 0, -300, 330, 600};

static void load_money(struct load_text *out, long long cents)
{
  const char *sign = cents < 0 ? "-" : "";
  long long magnitude = cents < 0 ? -cents : cents;
  load_text_appendf(out, "\"%s%lld.%02lld\"", sign, magnitude / 100, magnitude % 100);
}

/* RFC 3339 local time of `utc_ms` at `offset_min`, sometimes with milliseconds. */
static void load_time(struct load_text *out, long long utc_ms, int offset_min, int with_ms)
{
  time_t local = (time_t)(utc_ms / 1000 + (long long)offset_min * 60);
  struct tm tm;
  gmtime_r(&local, &tm);
  char when[32];
  strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
  char fraction[8] = "";
  if (with_ms)
    snprintf(fraction, sizeof(fraction), ".%03lld", utc_ms % 1000);
  if (offset_min == 0 && !with_ms) {
    load_text_appendf(out, "\"%sZ\"", when);
    return;
  }
  int magnitude = offset_min < 0 ? -offset_min : offset_min;
  load_text_appendf(out, "\"%s%s%c%02d:%02d\"", when, fraction, offset_min < 0 ? '-' : '+',
                    magnitude / 60, magnitude % 60);
}

/* P-c<client>-<index>; with --id-digits N the index is zero-padded, as a
 * till numbers its receipts (ARCHITECTURE's "T1-000123"): a terminal's ids
 * then sort in the order they are sold, where unpadded counters do not
 * ("-c0-1000" sorts before "-c0-101"), which decides where in the journal's
 * sale_id index each new sale lands (journal_bench.sh BENCH_ID_DIGITS). */
static void load_sale_id(char *out, size_t size, const struct load_options *options,
                         long client, long index)
{
  snprintf(out, size, "%s-c%ld-%0*ld", options->prefix, client, (int)options->id_digits, index);
}

/*
 * Appends one sale as compact JSON to `out`. The content depends only on
 * the arguments, so a resend of a sale id is byte for byte the same.
 */
static void load_sale_json(struct load_text *out, const struct load_options *options,
                           long client, long index)
{
  uint64_t state = 0x5eedULL;
  for (const char *p = options->prefix; *p; p++)
    state = state * 131 + (unsigned char)*p;
  state ^= ((uint64_t)client << 40) ^ (uint64_t)index;
  load_rng_next(&state);

  char sale_id[128];
  load_sale_id(sale_id, sizeof(sale_id), options, client, index);

  unsigned channel_pick = load_rng_below(&state, 100);
  const char *channel = channel_pick < 75   ? "pos"
                        : channel_pick < 85 ? "online"
                        : channel_pick < 95 ? "delivery"
                                            : "pickup";
  int offset_min = load_offsets[load_rng_below(&state, sizeof(load_offsets) / sizeof(int))];
  /* Sold within the hour before the time base: recent, never in the future. */
  long long utc_ms = options->time_base * 1000 - 1 - (long long)load_rng_below(&state, 3600000U);
  int with_ms = load_rng_below(&state, 4) == 0;

  load_text_appendf(out, "{\"sale_id\":\"%s\",\"kind\":\"sale\",\"terminal_id\":\"%s\"",
                    sale_id, options->terminal);
  if (strcmp(channel, "online") != 0)
    load_text_appendf(out, ",\"cashier_id\":\"E%03u\"", 1 + load_rng_below(&state, 40));
  load_text_appendf(out, ",\"channel\":\"%s\"", channel);
  if (strcmp(channel, "delivery") == 0)
    load_text_appendf(out, ",\"delivery_partner\":\"%s\"",
                      load_partners[load_rng_below(&state, 4)]);
  load_text_appendf(out, ",\"business_time\":");
  load_time(out, utc_ms, offset_min, with_ms);
  load_text_appendf(out, ",\"currency\":\"EUR\",\"lines\":[");

  long long total = 0;
  unsigned line_count = 1 + load_rng_below(&state, 4);
  for (unsigned i = 0; i < line_count; i++) {
    const struct load_menu_item *item = &load_menu[load_rng_below(&state, LOAD_MENU_COUNT)];
    long long qty = 1 + load_rng_below(&state, item->vat_percent == 22 ? 4 : 3);
    long long gross = qty * item->price;
    long long discount = 0;
    unsigned promo = 0;
    if (load_rng_below(&state, 5) == 0) {
      /* A promotion: 10-30% off the line, in whole cents. */
      discount = gross * (10 + load_rng_below(&state, 21)) / 100;
      promo = 1 + load_rng_below(&state, 60);
    }
    long long tax = ((gross - discount) * item->vat_percent + 50) / 100;
    total += gross - discount + tax;
    load_text_appendf(out, "%s{\"sku\":\"%s\",\"qty\":%lld,\"unit_price\":", i ? "," : "",
                      item->sku, qty);
    load_money(out, item->price);
    load_text_appendf(out, ",\"discount\":");
    load_money(out, discount);
    if (promo)
      load_text_appendf(out, ",\"promo_id\":\"TPR-%u\"", promo);
    load_text_appendf(out, ",\"tax\":");
    load_money(out, tax);
    load_text_appendf(out, "}");
  }

  load_text_appendf(out, "],\"payments\":[");
  unsigned payment_pick = load_rng_below(&state, 100);
  if (payment_pick < 8 && total > 100) {
    long long cash = 100 * (1 + load_rng_below(&state, (unsigned)(total / 100)));
    if (cash >= total)
      cash = total / 2;
    load_text_appendf(out, "{\"method\":\"cash\",\"amount\":");
    load_money(out, cash);
    load_text_appendf(out, "},{\"method\":\"card\",\"amount\":");
    load_money(out, total - cash);
    load_text_appendf(out, "}");
  } else {
    load_text_appendf(out, "{\"method\":\"%s\",\"amount\":",
                      payment_pick < 65 || strcmp(channel, "online") == 0 ? "card" : "cash");
    load_money(out, total);
    load_text_appendf(out, "}");
  }
  load_text_appendf(out, "],\"total\":");
  load_money(out, total);
  load_text_appendf(out, "}");
}

/* ---- one client ------------------------------------------------------- */

static size_t load_on_body(char *data, size_t size, size_t count, void *userdata)
{
  struct load_text *response = userdata;
  size_t length = size * count;
  load_text_reserve(response, length);
  memcpy(response->data + response->length, data, length);
  response->length += length;
  response->data[response->length] = '\0';
  return length;
}

static void load_report(long client, long first_index, long status, const char *what)
{
  pthread_mutex_lock(&load_report_lock);
  if (load_reported < LOAD_REPORT_MAX)
    fprintf(stderr, "pos-load: client %ld sale %ld: %s%ld: %.300s\n", client, first_index,
            status ? "HTTP " : "", status, what);
  else if (load_reported == LOAD_REPORT_MAX)
    fprintf(stderr, "pos-load: (further failures not shown)\n");
  load_reported++;
  pthread_mutex_unlock(&load_report_lock);
}

/*
 * Checks a 2xx answer against what was sent and records each sale in the
 * acked file. Returns 0, or -1 if the answer does not follow the contract
 * (then nothing is recorded and the request counts as failed).
 */
static int load_accept(struct load_client *client, long first_index, long count, int is_array,
                       const char *body, long status)
{
  const struct load_options *options = client->options;
  json_error_t error;
  json_t *root = json_loads(body, 0, &error);
  struct load_text acked = {0};
  long duplicates = 0;
  int rc = -1;
  char sale_id[128];

  load_text_reserve(&acked, 0);
  if (!root || !json_is_object(root))
    goto out;
  if (!is_array) {
    json_t *seq = json_object_get(root, "seq");
    json_t *duplicate = json_object_get(root, "duplicate");
    if (!json_is_integer(seq) || json_integer_value(seq) <= 0)
      goto out;
    if (duplicate && !json_is_boolean(duplicate))
      goto out;
    if (json_is_true(duplicate))
      duplicates++;
    load_sale_id(sale_id, sizeof(sale_id), options, client->index, first_index);
    load_text_appendf(&acked, "%s %" JSON_INTEGER_FORMAT "\n", sale_id, json_integer_value(seq));
  } else {
    json_t *results = json_object_get(root, "results");
    if (!json_is_array(results) || (long)json_array_size(results) != count)
      goto out;
    for (long i = 0; i < count; i++) {
      json_t *result = json_array_get(results, (size_t)i);
      json_t *id = json_object_get(result, "sale_id");
      json_t *seq = json_object_get(result, "seq");
      json_t *duplicate = json_object_get(result, "duplicate");
      load_sale_id(sale_id, sizeof(sale_id), options, client->index, first_index + i);
      if (!json_is_string(id) || strcmp(json_string_value(id), sale_id) != 0)
        goto out;
      if (!json_is_integer(seq) || json_integer_value(seq) <= 0)
        goto out;
      if (duplicate && !json_is_boolean(duplicate))
        goto out;
      if (json_is_true(duplicate))
        duplicates++;
      load_text_appendf(&acked, "%s %" JSON_INTEGER_FORMAT "\n", sale_id,
                        json_integer_value(seq));
    }
  }
  /* 200 means every sale was already journaled; 201 that at least one is new. */
  if ((status == 200) != (duplicates == count))
    goto out;
  if (load_acked_fd >= 0)
    load_acked_write(acked.data, acked.length);
  client->ok += count - duplicates;
  client->duplicate += duplicates;
  rc = 0;
out:
  json_decref(root);
  free(acked.data);
  return rc;
}

static void load_latency_add(struct load_client *client, double ms)
{
  if (client->latency_count == client->latency_capacity) {
    size_t capacity = client->latency_capacity ? 2 * client->latency_capacity : 1024;
    double *grown = realloc(client->latency_ms, capacity * sizeof(*grown));
    if (!grown)
      load_die("out of memory");
    client->latency_ms = grown;
    client->latency_capacity = capacity;
  }
  client->latency_ms[client->latency_count++] = ms;
}

static int load_compare_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The q-quantile (0..1) of sorted `v`, nearest rank; 0 when empty. */
static double load_quantile(const double *v, size_t n, double q)
{
  size_t rank;
  if (n == 0)
    return 0;
  rank = (size_t)(q * (double)n + 0.999999);
  return v[rank == 0 ? 0 : (rank > n ? n - 1 : rank - 1)];
}

static void *load_client_run(void *arg)
{
  struct load_client *client = arg;
  const struct load_options *options = client->options;
  struct load_text request = {0};
  struct load_text response = {0};
  struct curl_slist *headers = NULL;
  char url[2048];
  char authorization[1024];
  char error_text[CURL_ERROR_SIZE];

  snprintf(url, sizeof(url), "%s/v1/sales", options->url);
  snprintf(authorization, sizeof(authorization), "Authorization: Bearer %s", options->token);
  headers = curl_slist_append(headers, "Content-Type: application/json");
  headers = curl_slist_append(headers, authorization);
  /* No "Expect: 100-continue" round trip for bodies over 1 KiB. */
  headers = curl_slist_append(headers, "Expect:");

  CURL *curl = curl_easy_init();
  if (!curl || !headers)
    load_die("cannot initialise curl");
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, options->timeout_s);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 5L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, load_on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_text);

  long next = 0;
  while (next < options->sales) {
    if (options->duration_s > 0 && load_elapsed() >= options->duration_s)
      break;
    if (options->max_failures > 0 && client->failed_requests >= options->max_failures)
      break;
    long count = options->sales - next;
    if (count > options->batch)
      count = options->batch;
    int is_array = options->batch > 1;

    load_text_reset(&request);
    if (is_array)
      load_text_appendf(&request, "[");
    for (long i = 0; i < count; i++) {
      if (i)
        load_text_appendf(&request, ",");
      load_sale_json(&request, options, client->index, next + i);
    }
    if (is_array)
      load_text_appendf(&request, "]");

    load_text_reset(&response);
    error_text[0] = '\0';
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.data);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)request.length);
    CURLcode code = curl_easy_perform(curl);
    long status = 0;
    curl_off_t total_us = 0;
    if (code == CURLE_OK)
      curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME_T, &total_us) == CURLE_OK)
      load_latency_add(client, (double)total_us / 1000.0);
    if (status < 0 || status >= LOAD_STATUS_MAX)
      status = 0;
    client->status_counts[status]++;
    client->sales_sent += count;

    int accepted = 0;
    if (status >= 200 && status < 300) {
      accepted = load_accept(client, next, count, is_array, response.data, status) == 0;
      if (!accepted)
        load_report(client->index, next, status, "answer does not follow the contract: ");
    } else if (code != CURLE_OK) {
      load_report(client->index, next, 0, error_text[0] ? error_text : curl_easy_strerror(code));
    } else {
      load_report(client->index, next, status, response.data);
    }
    if (!accepted) {
      client->failed += count;
      client->failed_requests++;
    }
    next += count;
    if (options->pace_ms > 0 && next < options->sales) {
      struct timespec pause = {options->pace_ms / 1000, (options->pace_ms % 1000) * 1000000L};
      nanosleep(&pause, NULL);
    }
  }

  curl_easy_cleanup(curl);
  curl_slist_free_all(headers);
  free(request.data);
  free(response.data);
  return NULL;
}

/* ---- main ------------------------------------------------------------- */

static void load_usage(FILE *out)
{
  fputs("usage: pos-load --url http://HOST:PORT --token TOKEN --terminal ID\n"
        "                --clients C --sales N [--prefix P] [--batch K] [--acked FILE]\n"
        "                [--allow-failures] [--max-failures M] [--duration SECONDS]\n"
        "                [--time-base EPOCH] [--timeout SECONDS] [--pace-ms MS]\n"
        "                [--id-digits N]\n"
        "       pos-load --emit-json [--prefix P] [--terminal ID] [--client C]\n"
        "                [--index I] [--batch K] [--time-base EPOCH] [--id-digits N]\n"
        "Each of C clients posts N sales (as N/K arrays of K with --batch K) with\n"
        "sale ids P-c<client>-<i> (<i> zero-padded to N digits with --id-digits N);\n"
        "every 2xx is appended to FILE as \"sale_id seq\".\n",
        out);
}

int main(int argc, char **argv)
{
  struct load_options options = {
      .prefix = "L",
      .terminal = "T1",
      .clients = 1,
      .sales = 1,
      .batch = 1,
      .timeout_s = 60,
  };
  int have_time_base = 0;

  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      load_usage(stdout);
      return 0;
    } else if (strcmp(arg, "--allow-failures") == 0) {
      options.allow_failures = 1;
      continue;
    } else if (strcmp(arg, "--emit-json") == 0) {
      options.emit_json = 1;
      continue;
    }
    if (!value)
      load_die("%s needs a value (see --help)", arg);
    i++;
    if (strcmp(arg, "--url") == 0)
      options.url = value;
    else if (strcmp(arg, "--token") == 0)
      options.token = value;
    else if (strcmp(arg, "--terminal") == 0)
      options.terminal = value;
    else if (strcmp(arg, "--prefix") == 0)
      options.prefix = value;
    else if (strcmp(arg, "--acked") == 0)
      options.acked_path = value;
    else if (strcmp(arg, "--clients") == 0)
      options.clients = load_parse_long(arg, value, 1, 4096);
    else if (strcmp(arg, "--sales") == 0)
      options.sales = load_parse_long(arg, value, 0, 1000000000L);
    else if (strcmp(arg, "--batch") == 0)
      options.batch = load_parse_long(arg, value, 1, 100000);
    else if (strcmp(arg, "--max-failures") == 0)
      options.max_failures = load_parse_long(arg, value, 0, LONG_MAX);
    else if (strcmp(arg, "--timeout") == 0)
      options.timeout_s = load_parse_long(arg, value, 1, 3600);
    else if (strcmp(arg, "--pace-ms") == 0)
      options.pace_ms = load_parse_long(arg, value, 0, 60000);
    else if (strcmp(arg, "--id-digits") == 0)
      options.id_digits = load_parse_long(arg, value, 0, 18);
    else if (strcmp(arg, "--duration") == 0)
      options.duration_s = (double)load_parse_long(arg, value, 0, 86400);
    else if (strcmp(arg, "--time-base") == 0) {
      options.time_base = load_parse_long(arg, value, 0, LONG_MAX);
      have_time_base = 1;
    } else if (strcmp(arg, "--client") == 0)
      options.emit_client = load_parse_long(arg, value, 0, LONG_MAX);
    else if (strcmp(arg, "--index") == 0)
      options.emit_index = load_parse_long(arg, value, 0, LONG_MAX);
    else
      load_die("unknown option %s (see --help)", arg);
  }
  /*
   * Sales were sold in the hour before the time base; by default the
   * current hour started, so a rerun within the hour resends the same sales.
   */
  if (!have_time_base)
    options.time_base = (long long)time(NULL) / 3600 * 3600;

  if (options.emit_json) {
    struct load_text out = {0};
    load_text_reserve(&out, 0);
    if (options.batch > 1)
      load_text_appendf(&out, "[");
    for (long i = 0; i < options.batch; i++) {
      if (i)
        load_text_appendf(&out, ",");
      load_sale_json(&out, &options, options.emit_client, options.emit_index + i);
    }
    if (options.batch > 1)
      load_text_appendf(&out, "]");
    puts(out.data);
    free(out.data);
    return 0;
  }
  if (!options.url || !options.token)
    load_die("--url and --token are required (see --help)");

  if (options.acked_path) {
    load_acked_fd = open(options.acked_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (load_acked_fd < 0)
      load_die("cannot open %s: %s", options.acked_path, strerror(errno));
  }
  if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
    load_die("cannot initialise curl");

  struct load_client *clients = calloc((size_t)options.clients, sizeof(*clients));
  if (!clients)
    load_die("out of memory");
  clock_gettime(CLOCK_MONOTONIC, &load_started);
  for (long i = 0; i < options.clients; i++) {
    clients[i].index = i;
    clients[i].options = &options;
    int err = pthread_create(&clients[i].thread, NULL, load_client_run, &clients[i]);
    if (err)
      load_die("cannot start client %ld: %s", i, strerror(err));
  }
  long sent = 0, ok = 0, duplicate = 0, failed = 0;
  long status_counts[LOAD_STATUS_MAX] = {0};
  size_t latency_total = 0;
  for (long i = 0; i < options.clients; i++) {
    pthread_join(clients[i].thread, NULL);
    latency_total += clients[i].latency_count;
    sent += clients[i].sales_sent;
    ok += clients[i].ok;
    duplicate += clients[i].duplicate;
    failed += clients[i].failed;
    for (int s = 0; s < LOAD_STATUS_MAX; s++)
      status_counts[s] += clients[i].status_counts[s];
  }
  double seconds = load_elapsed();
  if (seconds <= 0)
    seconds = 1e-9;

  double *latency = malloc((latency_total ? latency_total : 1) * sizeof(*latency));
  size_t filled = 0;
  if (!latency)
    load_die("out of memory");
  for (long i = 0; i < options.clients; i++) {
    if (clients[i].latency_count)
      memcpy(latency + filled, clients[i].latency_ms,
             clients[i].latency_count * sizeof(*latency));
    filled += clients[i].latency_count;
    free(clients[i].latency_ms);
  }
  qsort(latency, filled, sizeof(*latency), load_compare_double);
  printf("sales=%ld ok=%ld duplicate=%ld failed=%ld seconds=%.3f rate=%.1f/s p50_ms=%.2f "
         "p99_ms=%.2f max_ms=%.2f\n",
         sent, ok, duplicate, failed, seconds, (double)(ok + duplicate) / seconds,
         load_quantile(latency, filled, 0.50), load_quantile(latency, filled, 0.99),
         filled ? latency[filled - 1] : 0.0);
  free(latency);
  fflush(stdout);
  if (failed) {
    fprintf(stderr, "pos-load: requests by status:");
    if (status_counts[0])
      fprintf(stderr, " transport_error=%ld", status_counts[0]);
    for (int s = 1; s < LOAD_STATUS_MAX; s++)
      if (status_counts[s])
        fprintf(stderr, " %d=%ld", s, status_counts[s]);
    fputc('\n', stderr);
  }

  free(clients);
  if (load_acked_fd >= 0)
    close(load_acked_fd);
  curl_global_cleanup();
  return failed && !options.allow_failures ? 1 : 0;
}
