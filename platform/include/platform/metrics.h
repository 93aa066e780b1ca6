/*
 * metrics.h - a small metrics registry (counters, gauges, histograms with
 * fixed buckets, labels) and its Prometheus text exposition (format 0.0.4).
 *
 * A family is one metric name with its HELP text, type and label names; a
 * series is one set of label values in it. Programs register families once
 * (registering the same name and type again returns the same family) and
 * keep the series they update often, so that an update is a few atomic
 * operations with no lock and no allocation: cheap enough for the sale path
 * and safe from any thread. Looking a series up (metrics_series_get) takes
 * the family's mutex and allocates the first time: fine on error paths.
 *
 * Nothing is ever removed before metrics_registry_destroy(): a family or
 * series pointer stays valid as long as its registry.
 *
 * Every update function takes a NULL series and then does nothing, so a
 * module whose registration failed (out of memory) keeps working unmeasured.
 */
#ifndef PLATFORM_METRICS_H
#define PLATFORM_METRICS_H

#include <stddef.h>

/* The Content-Type of metrics_render()'s text. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* At most this many label names per family. */
#define METRICS_MAX_LABELS 4

typedef struct metrics_registry metrics_registry;
typedef struct metrics_family metrics_family;
typedef struct metrics_series metrics_series;

/* A new empty registry, or NULL when out of memory. Any thread. */
metrics_registry *metrics_registry_create(void);

/*
 * Frees the registry, its families and series. No other thread may use it or
 * any pointer it handed out any more. `registry` may be NULL.
 */
void metrics_registry_destroy(metrics_registry *registry);

/*
 * The process's registry: what the program's /metrics shows. Created on
 * first use (thread-safe), never freed; NULL only when out of memory.
 */
metrics_registry *metrics_global(void);

/*
 * Registers a family, or returns the one already registered under `name`
 * with the same type and label names. `labels` is NULL (no labels) or label
 * names separated by commas ("status,reason"). `help` says what is counted,
 * in which unit. The strings are copied. Returns NULL when the name or a
 * label name is not valid for Prometheus, the name is taken by another type
 * or other labels, or memory ran out. Any thread.
 */
metrics_family *metrics_counter(metrics_registry *registry, const char *name, const char *help,
                                const char *labels);
metrics_family *metrics_gauge(metrics_registry *registry, const char *name, const char *help,
                              const char *labels);

/*
 * As metrics_counter(), for a histogram with `count` upper bounds in
 * `bounds` (strictly increasing, finite; the +Inf bucket is added). A
 * histogram may not have a label named "le".
 */
metrics_family *metrics_histogram(metrics_registry *registry, const char *name, const char *help,
                                  const char *labels, const double *bounds, size_t count);

/*
 * The series of `family` with these label values (`values` holds as many
 * strings as the family has label names; NULL when it has none), created at
 * zero the first time. Values may hold any UTF-8 text; they are escaped on
 * output. Returns NULL if `family` is NULL or memory ran out. Takes the
 * family's mutex: keep the pointer for hot paths. Any thread.
 */
metrics_series *metrics_series_get(metrics_family *family, const char *const *values);

/* metrics_series_get() for a family with no labels (value NULL) or one;
 * NULL for a family with another number of labels. */
metrics_series *metrics_series1(metrics_family *family, const char *value);

/* Counter: adds 1, or `amount` (which must be >= 0; others are ignored). */
void metrics_inc(metrics_series *series);
void metrics_add(metrics_series *series, double amount);

/* Gauge: sets the value. */
void metrics_set(metrics_series *series, double value);

/* Histogram: counts one observation of `value` (NaN is ignored). */
void metrics_observe(metrics_series *series, double value);

/*
 * The current value of a counter or gauge, or the observation count of a
 * histogram; 0 for NULL. For tests and for programs that read back.
 */
double metrics_value(const metrics_series *series);

/*
 * The registry as Prometheus text exposition format 0.0.4: for each family
 * in registration order, its # HELP and # TYPE lines, then its series
 * (histograms as _bucket lines with cumulative counts and le="+Inf", then
 * _sum and _count). A family with labels and no series yet shows only its
 * HELP and TYPE. Returns a malloc'd NUL-terminated text the caller frees,
 * its length in *length, or NULL when out of memory. Any thread; updates
 * made meanwhile may or may not be included, but each histogram's +Inf
 * bucket always equals its _count.
 */
char *metrics_render(metrics_registry *registry, size_t *length);

#endif
