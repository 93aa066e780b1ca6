/*
 * pos_sim.c - a pizza store's POS terminals, for demos: a menu with
 * recipes' worth of SKUs, cashiers on shifts, in-store, online, delivery
 * and pickup orders, promotions, modifiers (extra cheese, no onions: lines of
 * their own SKU, as the recipes expect), the odd refund, and a day
 * compressed into minutes with lunch and dinner rushes. Posts to the
 * agent's POST /v1/sales like a real terminal, retrying on 503 and
 * transport errors with the same sale, and prints one line per sale.
 *
 * With --manager-password, it is the store's back office too: the morning
 * delivery, waste now and then, and a stock count of the cheese at the
 * evening's quiet hour, to POST /v1/inventory/adjustments (the materials of
 * firmware-config/recipes.csv).
 *
 *   pos-sim --url http://127.0.0.1:8080 --token TOKEN --terminal T1
 *           [--day-seconds 300] [--max-sales N] [--seed N] [--quiet]
 *           [--manager-password PW]
 */
#include <curl/curl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct menu_item {
  const char *sku;
  const char *name;
  int price_cents;
  int tax_permille; /* VAT included in the sale's tax field */
};

static const struct menu_item menu[] = {
    {"PIZZA-MARG-M", "Margherita medium", 950, 100},
    {"PIZZA-MARG-L", "Margherita large", 1250, 100},
    {"PIZZA-DIAV-L", "Diavola large", 1390, 100},
    {"PIZZA-QFORM-L", "Quattro formaggi large", 1450, 100},
    {"PIZZA-VEG-M", "Verdure medium", 1090, 100},
    {"PIZZA-CAPR-L", "Capricciosa large", 1490, 100},
    {"CALZONE", "Calzone", 1190, 100},
    {"GARLIC-BREAD", "Garlic bread", 450, 100},
    {"SALAD-MIXED", "Mixed salad", 590, 100},
    {"TIRAMISU", "Tiramisu", 490, 100},
    {"COLA-33", "Cola 33cl", 300, 220},
    {"WATER-50", "Water 50cl", 200, 220},
    {"BEER-33", "Beer 33cl", 420, 220},
};
#define MENU_SIZE (sizeof(menu) / sizeof(menu[0]))

/* Modifiers follow a pizza line, as lines of their own SKU. */
static const struct menu_item modifiers[] = {
    {"MOD-EXTRA-CHEESE", "Extra cheese", 150, 100},
    {"MOD-EXTRA-SALAMI", "Extra salami", 200, 100},
    {"MOD-EXTRA-JALAPENO", "Extra jalapenos", 100, 100},
    {"MOD-NO-ONION", "No onions", 0, 100},
    {"MOD-DIP-GARLIC", "Garlic dip", 120, 100},
};
#define MODIFIERS_SIZE (sizeof(modifiers) / sizeof(modifiers[0]))

/* The morning delivery: material, unit, thousandths of the unit. */
struct stock_item {
  const char *material;
  const char *unit;
  long quantity_milli;
};
static const struct stock_item delivery[] = {
    {"dough-ball-l", "piece", 120000},        {"dough-ball-m", "piece", 80000},
    {"dough-ball-s", "piece", 40000},         {"cheese-mozzarella", "g", 40000000},
    {"tomato-sauce", "g", 30000000},          {"can-cola-33", "piece", 96000},
    {"bottle-water-50", "piece", 48000},      {"bottle-beer-33", "piece", 48000},
    {"box-pizza-l", "piece", 150000},         {"box-pizza-m", "piece", 100000},
    {"box-pizza-s", "piece", 50000},          {"box-side", "piece", 60000},
    {"salami-spicy", "g", 4000000},           {"basil-fresh", "g", 500000},
    {"artichokes", "g", 3000000},             {"bowl-salad", "piece", 40000},
    {"cheese-fontina", "g", 3000000},         {"cheese-gorgonzola", "g", 3000000},
    {"cheese-parmesan", "g", 2000000},        {"cheese-ricotta", "g", 2000000},
    {"chili-flakes", "g", 200000},            {"courgette", "g", 3000000},
    {"cucumber", "g", 2000000},               {"dip-garlic-pot", "piece", 60000},
    {"dressing-vinaigrette", "ml", 2000000},  {"garlic-butter", "g", 2000000},
    {"ham-cooked", "g", 4000000},             {"jalapenos", "g", 1000000},
    {"lettuce-mix", "g", 3000000},            {"mushrooms", "g", 4000000},
    {"olive-oil", "ml", 3000000},             {"olives-black", "g", 2000000},
    {"onions-red", "g", 3000000},             {"peppers-bell", "g", 3000000},
    {"semolina", "g", 2000000},               {"tiramisu-cup", "piece", 40000},
    {"tomatoes-cherry", "g", 3000000},
};
#define DELIVERY_SIZE (sizeof(delivery) / sizeof(delivery[0]))

static const char *const cashiers[] = {"E011", "E017", "E023", "E042", "E051"};
static const char *const partners[] = {"deliveroo", "justeat", "ubereats"};

static volatile sig_atomic_t sim_stop;
static unsigned sim_seed;

static void sim_on_signal(int signum)
{
  (void)signum;
  sim_stop = 1;
}

/* Sales per simulated hour: quiet mornings, a lunch rush, a bigger dinner rush. */
static double sim_rate(double hour)
{
  static const double by_hour[24] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4,
                                     22, 26, 10, 4, 4, 6, 18, 34, 38, 24, 10, 3};
  int h = (int)hour % 24;
  return by_hour[h];
}

static size_t sim_keep_answer(char *data, size_t size, size_t nmemb, void *user)
{
  size_t len = size * nmemb;
  char *answer = user;
  size_t have = strlen(answer);
  size_t room = 511 - have;
  memcpy(answer + have, data, len < room ? len : room);
  answer[have + (len < room ? len : room)] = '\0';
  return len;
}

/*
 * Builds one sale's JSON into `out`; `refund_of` > 0 makes it a refund of
 * that earlier sale number. Returns its total in cents.
 */
static long sim_build_sale(char *out, size_t out_size, const char *terminal, long number,
                           double sim_hour, long refund_of, const char *when)
{
  int channel_roll = rand() % 100;
  const char *channel = channel_roll < 55   ? "pos"
                        : channel_roll < 75 ? "delivery"
                        : channel_roll < 90 ? "online"
                                            : "pickup";
  int line_count = 1 + rand() % 4, last_was_pizza = 0;
  long total = 0;
  size_t used;

  used = (size_t)snprintf(out, out_size, "{\"sale_id\":\"%s-%06ld\",\"kind\":\"%s\",", terminal,
                          number, refund_of ? "refund" : "sale");
  if (refund_of)
    used += (size_t)snprintf(out + used, out_size - used, "\"original_sale_id\":\"%s-%06ld\",",
                             terminal, refund_of);
  /* Shifts: the cashier changes every six simulated hours. */
  used += (size_t)snprintf(out + used, out_size - used,
                           "\"terminal_id\":\"%s\",\"cashier_id\":\"%s\",\"channel\":\"%s\",",
                           terminal, cashiers[((int)sim_hour / 6 + rand() % 2) % 5], channel);
  if (strcmp(channel, "delivery") == 0)
    used += (size_t)snprintf(out + used, out_size - used, "\"delivery_partner\":\"%s\",",
                             partners[rand() % 3]);
  used += (size_t)snprintf(out + used, out_size - used,
                           "\"business_time\":\"%s\",\"currency\":\"EUR\",\"lines\":[", when);
  for (int i = 0; i < line_count; i++) {
    const struct menu_item *item = &menu[rand() % MENU_SIZE];
    /* A pizza gets a modifier now and then: the line after it. */
    if (i > 0 && last_was_pizza && rand() % 3 == 0)
      item = &modifiers[rand() % MODIFIERS_SIZE];
    last_was_pizza = strncmp(item->sku, "PIZZA-", 6) == 0 || strcmp(item->sku, "CALZONE") == 0;
    int qty = 1 + (rand() % 10 == 0);
    long gross = (long)qty * item->price_cents;
    /* The Tuesday promotion: 20% off large pizzas, now and then. */
    long discount = (strstr(item->sku, "-L") && rand() % 5 == 0) ? gross / 5 : 0;
    long tax = (gross - discount) * item->tax_permille / 1000;
    total += gross - discount + tax;
    used += (size_t)snprintf(out + used, out_size - used,
                             "%s{\"sku\":\"%s\",\"qty\":%d,\"unit_price\":\"%d.%02d\","
                             "\"discount\":\"%ld.%02ld\",%s\"tax\":\"%ld.%02ld\"}",
                             i ? "," : "", item->sku, qty, item->price_cents / 100,
                             item->price_cents % 100, discount / 100, discount % 100,
                             discount ? "\"promo_id\":\"TUE-20\"," : "", tax / 100, tax % 100);
  }
  snprintf(out + used, out_size - used,
           "],\"payments\":[{\"method\":\"%s\",\"amount\":\"%ld.%02ld\"}],"
           "\"total\":\"%ld.%02ld\"}",
           strcmp(channel, "pos") == 0 && rand() % 3 == 0 ? "cash" : "card", total / 100,
           total % 100, total / 100, total % 100);
  return total;
}

/* Now, local time, as RFC 3339 wants it (+01:00, where strftime gives +0100). */
static void sim_now_rfc3339(char *out, size_t size)
{
  time_t wall = time(NULL);
  struct tm local;
  size_t len;

  localtime_r(&wall, &local);
  len = strftime(out, size, "%Y-%m-%dT%H:%M:%S%z", &local);
  if (len < 5 || len + 2 > size)
    return;
  memmove(out + len - 1, out + len - 2, 3);
  out[len - 2] = ':';
}

/* The back office's connection to the agent (--manager-password). */
struct back_office {
  CURL *curl;
  struct curl_slist *headers;
  char endpoint[512];
  char userpwd[256];
  const char *terminal;
  int quiet;
};

/* POSTs one adjustment, resending the same one on 503 or a transport error
 * (its id makes a resend safe). */
static void office_post(struct back_office *office, const char *id, const char *kind,
                        const struct stock_item *item, long quantity_milli, const char *when)
{
  char body[1024], answer[512];
  long status = 0;
  int attempts = 0;

  snprintf(body, sizeof(body),
           "{\"adjustment_id\":\"%s\",\"kind\":\"%s\",\"material_id\":\"%s\","
           "\"unit\":\"%s\",\"quantity_milli\":%ld,\"business_time\":\"%s\"}",
           id, kind, item->material, item->unit, quantity_milli, when);
  curl_easy_setopt(office->curl, CURLOPT_POSTFIELDS, body);
  do {
    answer[0] = '\0';
    curl_easy_setopt(office->curl, CURLOPT_WRITEFUNCTION, sim_keep_answer);
    curl_easy_setopt(office->curl, CURLOPT_WRITEDATA, answer);
    if (curl_easy_perform(office->curl) == CURLE_OK)
      curl_easy_getinfo(office->curl, CURLINFO_RESPONSE_CODE, &status);
    else
      status = 0;
    if (status == 503 || status == 0)
      sleep(1);
  } while ((status == 503 || status == 0) && !sim_stop && ++attempts < 60);
  if (!office->quiet)
    printf("      stock %s %s %s %ld.%03ld %s -> %ld %s\n", id, kind, item->material,
           quantity_milli / 1000, quantity_milli % 1000, item->unit, status, answer);
}

/* What the back office does at `sim_hour` of simulated day `day`: the
 * delivery at opening, waste after lunch, a count of the cheese at 23:00.
 * `done` remembers what is done today (bits). */
static void office_work(struct back_office *office, long day, double sim_hour, unsigned *done,
                        const char *when)
{
  char id[128];
  const struct stock_item *cheese = &delivery[3];

  if (!(*done & 1)) {
    for (size_t i = 0; i < DELIVERY_SIZE; i++) {
      snprintf(id, sizeof(id), "%s-%u-D%ld-DEL-%zu", office->terminal, sim_seed, day, i);
      office_post(office, id, "delivery", &delivery[i], delivery[i].quantity_milli, when);
    }
    *done |= 1;
  }
  if (!(*done & 2) && sim_hour >= 15.0) {
    /* Dough that over-proved during the lunch rush. */
    snprintf(id, sizeof(id), "%s-%u-D%ld-WASTE", office->terminal, sim_seed, day);
    office_post(office, id, "waste", &delivery[0], 1000L * (1 + rand() % 4), when);
    *done |= 2;
  }
  if (!(*done & 4) && sim_hour >= 23.0) {
    snprintf(id, sizeof(id), "%s-%u-D%ld-COUNT", office->terminal, sim_seed, day);
    office_post(office, id, "count", cheese, 1000L * (8000 + rand() % 4000), when);
    *done |= 4;
  }
}

int main(int argc, char **argv)
{
  static const struct option options[] = {
      {"url", required_argument, NULL, 'u'},     {"token", required_argument, NULL, 't'},
      {"terminal", required_argument, NULL, 'T'}, {"day-seconds", required_argument, NULL, 'd'},
      {"max-sales", required_argument, NULL, 'm'}, {"seed", required_argument, NULL, 's'},
      {"quiet", no_argument, NULL, 'q'},          {"manager-password", required_argument, NULL, 'p'},
      {NULL, 0, NULL, 0},
  };
  const char *url = NULL, *token = NULL, *terminal = "T1", *manager_password = NULL;
  struct back_office office = {0};
  long office_day = -1;
  unsigned office_done = 0;
  double day_seconds = 300;
  long max_sales = -1, number = 0;
  unsigned seed = (unsigned)time(NULL);
  int quiet = 0, opt;
  char endpoint[512], auth[256], body[16384];
  struct curl_slist *headers = NULL;
  CURL *curl;
  struct timespec start;

  while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
    switch (opt) {
    case 'u': url = optarg; break;
    case 't': token = optarg; break;
    case 'T': terminal = optarg; break;
    case 'd': day_seconds = strtod(optarg, NULL); break;
    case 'm': max_sales = strtol(optarg, NULL, 10); break;
    case 's': seed = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'q': quiet = 1; break;
    case 'p': manager_password = optarg; break;
    default:
      fprintf(stderr, "usage: pos-sim --url URL --token TOKEN [--terminal T1] "
                      "[--day-seconds 300] [--max-sales N] [--seed N] [--quiet] "
                      "[--manager-password PW]\n");
      return 2;
    }
  }
  if (!url || !token || day_seconds <= 0) {
    fprintf(stderr, "pos-sim: --url and --token are required\n");
    return 2;
  }
  srand(seed);
  sim_seed = seed;
  signal(SIGINT, sim_on_signal);
  signal(SIGTERM, sim_on_signal);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  curl = curl_easy_init();
  snprintf(endpoint, sizeof(endpoint), "%s/v1/sales", url);
  snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
  headers = curl_slist_append(headers, "Content-Type: application/json");
  headers = curl_slist_append(headers, auth);
  curl_easy_setopt(curl, CURLOPT_URL, endpoint);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
  if (manager_password) {
    office.curl = curl_easy_init();
    office.terminal = terminal;
    office.quiet = quiet;
    snprintf(office.endpoint, sizeof(office.endpoint), "%s/v1/inventory/adjustments", url);
    snprintf(office.userpwd, sizeof(office.userpwd), "manager:%s", manager_password);
    office.headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(office.curl, CURLOPT_URL, office.endpoint);
    curl_easy_setopt(office.curl, CURLOPT_HTTPHEADER, office.headers);
    curl_easy_setopt(office.curl, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    curl_easy_setopt(office.curl, CURLOPT_USERPWD, office.userpwd);
    curl_easy_setopt(office.curl, CURLOPT_TIMEOUT, 10L);
  }
  clock_gettime(CLOCK_MONOTONIC, &start);

  while (!sim_stop && (max_sales < 0 || number < max_sales)) {
    struct timespec now;
    double elapsed, sim_hour, rate, wait_s;
    char when[40];
    long total, status = 0;
    char answer[512];
    int attempts = 0;

    clock_gettime(CLOCK_MONOTONIC, &now);
    elapsed = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
    /* The simulated day starts at 11:00, when the store opens. */
    sim_hour = 11.0 + 24.0 * elapsed / day_seconds;
    if (office.curl) {
      long day = (long)(sim_hour / 24.0);
      char now_text[40];
      sim_now_rfc3339(now_text, sizeof(now_text));
      if (day != office_day) {
        office_day = day;
        office_done = 0;
      }
      office_work(&office, day, fmod(sim_hour, 24.0), &office_done, now_text);
    }
    rate = sim_rate(sim_hour);
    if (rate <= 0) {
      usleep(200000);
      continue;
    }
    /* Poisson arrivals at `rate` sales per simulated hour. */
    wait_s = -log1p(-(double)rand() / ((double)RAND_MAX + 1.0)) / rate * day_seconds / 24.0;
    usleep((useconds_t)(wait_s * 1e6));
    if (sim_stop)
      break;

    sim_now_rfc3339(when, sizeof(when));
    number++;
    /* About one sale in forty is a refund of an earlier one. */
    total = sim_build_sale(body, sizeof(body), terminal, number, sim_hour,
                           number > 10 && rand() % 40 == 0 ? 1 + rand() % (number - 1) : 0,
                           when);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    /* A terminal never gives up on a sale: it resends the same one. */
    do {
      answer[0] = '\0';
      curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, sim_keep_answer);
      curl_easy_setopt(curl, CURLOPT_WRITEDATA, answer);
      if (curl_easy_perform(curl) == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
      else
        status = 0;
      if (status == 503 || status == 0)
        sleep(1);
    } while ((status == 503 || status == 0) && !sim_stop && ++attempts < 60);
    if (!quiet)
      printf("%02d:%02d %s-%06ld EUR %ld.%02ld -> %ld %s\n", (int)sim_hour % 24,
             (int)(sim_hour * 60) % 60, terminal, number, total / 100, total % 100, status,
             answer);
    fflush(stdout);
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (office.curl) {
    curl_slist_free_all(office.headers);
    curl_easy_cleanup(office.curl);
  }
  curl_global_cleanup();
  return 0;
}
