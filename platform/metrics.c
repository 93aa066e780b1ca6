/*
 * metrics.c - the metrics registry and its Prometheus text exposition.
 *
 * Values are doubles kept as their bit patterns in 64-bit atomics: a
 * counter's add and a histogram's sum are compare-and-swap loops, a gauge's
 * set is a store, bucket counts are integer fetch-adds. No update takes a
 * lock; only registering families and creating series do (and rendering,
 * which walks the lists under the same locks).
 */
#include "platform/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

struct metrics_series {
  struct metrics_series *next;
  metrics_family *family;
  char *values[METRICS_MAX_LABELS];
  _Atomic uint64_t value;   /* double bits: counter or gauge value, histogram sum */
  _Atomic uint64_t *buckets; /* histogram: count per bucket, +Inf last (not cumulative) */
};

struct metrics_family {
  struct metrics_family *next;
  enum metrics_type type;
  char *name, *help, *label_spec;
  char *labels[METRICS_MAX_LABELS];
  size_t label_count;
  double *bounds;
  size_t bound_count;
  pthread_mutex_t lock; /* guards the series list */
  metrics_series *series, *series_tail;
};

struct metrics_registry {
  pthread_mutex_t lock; /* guards the family list */
  metrics_family *families, *families_tail;
};

static uint64_t metrics_bits(double value)
{
  uint64_t bits;
  memcpy(&bits, &value, sizeof(bits));
  return bits;
}

static double metrics_double(uint64_t bits)
{
  double value;
  memcpy(&value, &bits, sizeof(value));
  return value;
}

/* Adds to a double kept in an atomic, without a lock. */
static void metrics_atomic_add(_Atomic uint64_t *cell, double amount)
{
  uint64_t old = atomic_load_explicit(cell, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(cell, &old,
                                                metrics_bits(metrics_double(old) + amount),
                                                memory_order_relaxed, memory_order_relaxed)) {
  }
}

metrics_registry *metrics_registry_create(void)
{
  metrics_registry *registry = calloc(1, sizeof(*registry));
  if (registry)
    pthread_mutex_init(&registry->lock, NULL);
  return registry;
}

static void metrics_family_free(metrics_family *family)
{
  metrics_series *series = family->series;
  while (series) {
    metrics_series *next = series->next;
    for (size_t i = 0; i < family->label_count; i++)
      free(series->values[i]);
    free(series->buckets);
    free(series);
    series = next;
  }
  for (size_t i = 0; i < family->label_count; i++)
    free(family->labels[i]);
  pthread_mutex_destroy(&family->lock);
  free(family->name);
  free(family->help);
  free(family->label_spec);
  free(family->bounds);
  free(family);
}

void metrics_registry_destroy(metrics_registry *registry)
{
  if (!registry)
    return;
  while (registry->families) {
    metrics_family *next = registry->families->next;
    metrics_family_free(registry->families);
    registry->families = next;
  }
  pthread_mutex_destroy(&registry->lock);
  free(registry);
}

static metrics_registry *metrics_the_global;
static pthread_once_t metrics_global_once = PTHREAD_ONCE_INIT;

static void metrics_global_init(void) { metrics_the_global = metrics_registry_create(); }

metrics_registry *metrics_global(void)
{
  pthread_once(&metrics_global_once, metrics_global_init);
  return metrics_the_global;
}

/* Prometheus names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names without ':'. */
static int metrics_valid_name(const char *name, size_t length, int colon_ok)
{
  if (length == 0 || (name[0] >= '0' && name[0] <= '9'))
    return 0;
  for (size_t i = 0; i < length; i++) {
    char c = name[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || (colon_ok && c == ':');
    if (!ok)
      return 0;
  }
  return 1;
}

/* Splits "a,b" into family->labels. 0, or -1 on a bad or reserved name. */
static int metrics_parse_labels(metrics_family *family, const char *spec)
{
  const char *start = spec;
  if (!spec || !spec[0])
    return 0;
  for (;;) {
    const char *end = strchr(start, ',');
    size_t length = end ? (size_t)(end - start) : strlen(start);
    if (family->label_count == METRICS_MAX_LABELS || !metrics_valid_name(start, length, 0) ||
        (length >= 2 && start[0] == '_' && start[1] == '_') ||
        (family->type == METRICS_HISTOGRAM && length == 2 && memcmp(start, "le", 2) == 0))
      return -1;
    family->labels[family->label_count] = strndup(start, length);
    if (!family->labels[family->label_count])
      return -1;
    family->label_count++;
    if (!end)
      return 0;
    start = end + 1;
  }
}

static metrics_family *metrics_family_new(enum metrics_type type, const char *name,
                                          const char *help, const char *labels,
                                          const double *bounds, size_t count)
{
  metrics_family *family = calloc(1, sizeof(*family));
  if (!family)
    return NULL;
  pthread_mutex_init(&family->lock, NULL);
  family->type = type;
  family->name = strdup(name);
  family->help = strdup(help ? help : "");
  family->label_spec = strdup(labels ? labels : "");
  if (!family->name || !family->help || !family->label_spec ||
      metrics_parse_labels(family, labels))
    goto fail;
  if (type == METRICS_HISTOGRAM) {
    family->bounds = calloc(count ? count : 1, sizeof(double));
    if (!family->bounds)
      goto fail;
    for (size_t i = 0; i < count; i++) {
      if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
        goto fail;
      family->bounds[i] = bounds[i];
    }
    family->bound_count = count;
  }
  return family;
fail:
  metrics_family_free(family);
  return NULL;
}

static int metrics_same_bounds(const metrics_family *family, const double *bounds,
                               size_t count)
{
  if (family->bound_count != count)
    return 0;
  for (size_t i = 0; i < count; i++)
    if (family->bounds[i] != bounds[i])
      return 0;
  return 1;
}

static metrics_family *metrics_register(metrics_registry *registry, enum metrics_type type,
                                        const char *name, const char *help, const char *labels,
                                        const double *bounds, size_t count)
{
  metrics_family *found = NULL, *family;

  if (!registry || !name || !metrics_valid_name(name, strlen(name), 1))
    return NULL;
  pthread_mutex_lock(&registry->lock);
  for (family = registry->families; family; family = family->next) {
    if (strcmp(family->name, name) != 0)
      continue;
    if (family->type == type && strcmp(family->label_spec, labels ? labels : "") == 0 &&
        (type != METRICS_HISTOGRAM || metrics_same_bounds(family, bounds, count)))
      found = family;
    goto out; /* the name is taken: this family, or NULL for a clash */
  }
  found = metrics_family_new(type, name, help, labels, bounds, count);
  if (!found)
    goto out;
  if (registry->families_tail)
    registry->families_tail->next = found;
  else
    registry->families = found;
  registry->families_tail = found;
out:
  pthread_mutex_unlock(&registry->lock);
  return found;
}

metrics_family *metrics_counter(metrics_registry *registry, const char *name, const char *help,
                                const char *labels)
{
  return metrics_register(registry, METRICS_COUNTER, name, help, labels, NULL, 0);
}

metrics_family *metrics_gauge(metrics_registry *registry, const char *name, const char *help,
                              const char *labels)
{
  return metrics_register(registry, METRICS_GAUGE, name, help, labels, NULL, 0);
}

metrics_family *metrics_histogram(metrics_registry *registry, const char *name, const char *help,
                                  const char *labels, const double *bounds, size_t count)
{
  return metrics_register(registry, METRICS_HISTOGRAM, name, help, labels, bounds, count);
}

static int metrics_series_matches(const metrics_series *series, const char *const *values)
{
  for (size_t i = 0; i < series->family->label_count; i++)
    if (strcmp(series->values[i], values[i] ? values[i] : "") != 0)
      return 0;
  return 1;
}

static metrics_series *metrics_series_new(metrics_family *family, const char *const *values)
{
  metrics_series *series = calloc(1, sizeof(*series));
  size_t i;
  if (!series)
    return NULL;
  series->family = family;
  atomic_init(&series->value, metrics_bits(0.0));
  for (i = 0; i < family->label_count; i++) {
    series->values[i] = strdup(values[i] ? values[i] : "");
    if (!series->values[i])
      goto fail;
  }
  if (family->type == METRICS_HISTOGRAM) {
    series->buckets = calloc(family->bound_count + 1, sizeof(*series->buckets));
    if (!series->buckets)
      goto fail;
    for (size_t b = 0; b <= family->bound_count; b++)
      atomic_init(&series->buckets[b], 0);
  }
  return series;
fail:
  while (i-- > 0)
    free(series->values[i]);
  free(series);
  return NULL;
}

metrics_series *metrics_series_get(metrics_family *family, const char *const *values)
{
  metrics_series *series;

  if (!family || (family->label_count > 0 && !values))
    return NULL;
  pthread_mutex_lock(&family->lock);
  for (series = family->series; series; series = series->next)
    if (metrics_series_matches(series, values))
      goto out;
  series = metrics_series_new(family, values);
  if (!series)
    goto out;
  if (family->series_tail)
    family->series_tail->next = series;
  else
    family->series = series;
  family->series_tail = series;
out:
  pthread_mutex_unlock(&family->lock);
  return series;
}

metrics_series *metrics_series1(metrics_family *family, const char *value)
{
  const char *values[1] = {value};
  /* One value read for one label name, never past it. */
  if (!family || family->label_count != (value ? 1u : 0u))
    return NULL;
  return metrics_series_get(family, value ? values : NULL);
}

void metrics_inc(metrics_series *series) { metrics_add(series, 1.0); }

void metrics_add(metrics_series *series, double amount)
{
  if (!series || !(amount >= 0))
    return;
  metrics_atomic_add(&series->value, amount);
}

void metrics_set(metrics_series *series, double value)
{
  if (series)
    atomic_store_explicit(&series->value, metrics_bits(value), memory_order_relaxed);
}

void metrics_observe(metrics_series *series, double value)
{
  const metrics_family *family;
  size_t bucket = 0;

  if (!series || !series->buckets || isnan(value))
    return;
  family = series->family;
  while (bucket < family->bound_count && value > family->bounds[bucket])
    bucket++;
  atomic_fetch_add_explicit(&series->buckets[bucket], 1, memory_order_relaxed);
  metrics_atomic_add(&series->value, value);
}

double metrics_value(const metrics_series *series)
{
  double total = 0;
  if (!series)
    return 0;
  if (!series->buckets)
    return metrics_double(atomic_load_explicit(&series->value, memory_order_relaxed));
  for (size_t b = 0; b <= series->family->bound_count; b++)
    total += (double)atomic_load_explicit(&series->buckets[b], memory_order_relaxed);
  return total;
}

/* ---- text exposition ---------------------------------------------------- */

struct metrics_text {
  char *data;
  size_t length, capacity;
  int failed; /* out of memory: everything after is dropped */
};

static void metrics_put(struct metrics_text *text, const char *bytes, size_t length)
{
  if (text->failed)
    return;
  if (text->length + length + 1 > text->capacity) {
    size_t capacity = text->capacity ? text->capacity * 2 : 4096;
    char *grown;
    while (capacity < text->length + length + 1)
      capacity *= 2;
    grown = realloc(text->data, capacity);
    if (!grown) {
      text->failed = 1;
      return;
    }
    text->data = grown;
    text->capacity = capacity;
  }
  memcpy(text->data + text->length, bytes, length);
  text->length += length;
  text->data[text->length] = '\0';
}

static void metrics_puts(struct metrics_text *text, const char *s)
{
  metrics_put(text, s, strlen(s));
}

/* Escapes for HELP (backslash, newline) or, with `quote`, for a label
 * value (also the double quote), as the format requires. */
static void metrics_put_escaped(struct metrics_text *text, const char *s, int quote)
{
  for (; *s; s++) {
    if (*s == '\\')
      metrics_puts(text, "\\\\");
    else if (*s == '\n')
      metrics_puts(text, "\\n");
    else if (quote && *s == '"')
      metrics_puts(text, "\\\"");
    else
      metrics_put(text, s, 1);
  }
}

/* A number as Go's ParseFloat reads it: the shortest of %.15g/%.17g that
 * reads back exactly, and +Inf, -Inf, NaN spelled as Prometheus does. */
static void metrics_put_number(struct metrics_text *text, double value)
{
  char number[40];
  if (isnan(value))
    snprintf(number, sizeof(number), "NaN");
  else if (isinf(value))
    snprintf(number, sizeof(number), "%s", value > 0 ? "+Inf" : "-Inf");
  else {
    snprintf(number, sizeof(number), "%.15g", value);
    if (strtod(number, NULL) != value)
      snprintf(number, sizeof(number), "%.17g", value);
  }
  metrics_puts(text, number);
}

/* `name{labels,le="bound"} ` with the series' labels and an optional le. */
static void metrics_put_name(struct metrics_text *text, const metrics_series *series,
                             const char *suffix, const char *le)
{
  const metrics_family *family = series->family;
  metrics_puts(text, family->name);
  metrics_puts(text, suffix);
  if (family->label_count || le) {
    metrics_puts(text, "{");
    for (size_t i = 0; i < family->label_count; i++) {
      if (i)
        metrics_puts(text, ",");
      metrics_puts(text, family->labels[i]);
      metrics_puts(text, "=\"");
      metrics_put_escaped(text, series->values[i], 1);
      metrics_puts(text, "\"");
    }
    if (le) {
      metrics_puts(text, family->label_count ? ",le=\"" : "le=\"");
      metrics_puts(text, le);
      metrics_puts(text, "\"");
    }
    metrics_puts(text, "}");
  }
  metrics_puts(text, " ");
}

static void metrics_put_histogram(struct metrics_text *text, const metrics_series *series)
{
  const metrics_family *family = series->family;
  double cumulative = 0;
  char le[40];

  for (size_t b = 0; b <= family->bound_count; b++) {
    struct metrics_text bound = {0};
    cumulative += (double)atomic_load_explicit(&series->buckets[b], memory_order_relaxed);
    if (b < family->bound_count) {
      metrics_put_number(&bound, family->bounds[b]);
      snprintf(le, sizeof(le), "%s", bound.failed ? "0" : bound.data);
      free(bound.data);
    } else {
      snprintf(le, sizeof(le), "+Inf");
    }
    metrics_put_name(text, series, "_bucket", le);
    metrics_put_number(text, cumulative);
    metrics_puts(text, "\n");
  }
  metrics_put_name(text, series, "_sum", NULL);
  metrics_put_number(text, metrics_double(atomic_load_explicit(&series->value,
                                                               memory_order_relaxed)));
  metrics_puts(text, "\n");
  metrics_put_name(text, series, "_count", NULL);
  metrics_put_number(text, cumulative); /* the +Inf bucket, by construction */
  metrics_puts(text, "\n");
}

static void metrics_put_family(struct metrics_text *text, metrics_family *family)
{
  static const char *const type_names[] = {"counter", "gauge", "histogram"};

  metrics_puts(text, "# HELP ");
  metrics_puts(text, family->name);
  metrics_puts(text, " ");
  metrics_put_escaped(text, family->help, 0);
  metrics_puts(text, "\n# TYPE ");
  metrics_puts(text, family->name);
  metrics_puts(text, " ");
  metrics_puts(text, type_names[family->type]);
  metrics_puts(text, "\n");
  pthread_mutex_lock(&family->lock);
  for (const metrics_series *series = family->series; series; series = series->next) {
    if (family->type == METRICS_HISTOGRAM) {
      metrics_put_histogram(text, series);
      continue;
    }
    metrics_put_name(text, series, "", NULL);
    metrics_put_number(text, metrics_double(atomic_load_explicit(&series->value,
                                                                 memory_order_relaxed)));
    metrics_puts(text, "\n");
  }
  pthread_mutex_unlock(&family->lock);
}

char *metrics_render(metrics_registry *registry, size_t *length)
{
  struct metrics_text text = {0};

  metrics_put(&text, "", 0); /* an empty registry is an empty text, not NULL */
  if (registry) {
    pthread_mutex_lock(&registry->lock);
    for (metrics_family *family = registry->families; family; family = family->next)
      metrics_put_family(&text, family);
    pthread_mutex_unlock(&registry->lock);
  }
  if (text.failed) {
    free(text.data);
    return NULL;
  }
  if (length)
    *length = text.length;
  return text.data;
}
