/*
 * test_metrics.c - the metrics registry's Prometheus text exposition, read
 * back as exact text: HELP and TYPE lines, label values escaped, histograms
 * with cumulative _bucket lines ending in le="+Inf", _sum and _count; names
 * Prometheus would refuse are refused here; counts updated from several
 * threads at once add up exactly.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "platform/metrics.h"

static char *render(metrics_registry *registry)
{
  size_t length = 0;
  char *text = metrics_render(registry, &length);
  assert_non_null(text);
  assert_int_equal(length, strlen(text));
  return text;
}

static void test_counter_and_gauge_text_with_escaped_labels(void **state)
{
  metrics_registry *registry = metrics_registry_create();
  metrics_family *refusals = metrics_counter(registry, "pos_test_refusals_total",
                                             "Requests refused, by status and reason.",
                                             "status,reason");
  metrics_family *bytes = metrics_gauge(registry, "pos_test_journal_bytes",
                                        "Size of the journal \\ on disk\nin bytes.", NULL);
  const char *odd[] = {"400", "bad \"quote\" \\ and\nnewline"};
  const char *plain[] = {"503", "journal_full"};
  char *text;
  (void)state;

  metrics_add(metrics_series_get(refusals, odd), 2);
  metrics_inc(metrics_series_get(refusals, plain));
  metrics_inc(metrics_series_get(refusals, odd)); /* the same series again */
  metrics_set(metrics_series1(bytes, NULL), 1048576);
  text = render(registry);
  assert_string_equal(
      text,
      "# HELP pos_test_refusals_total Requests refused, by status and reason.\n"
      "# TYPE pos_test_refusals_total counter\n"
      "pos_test_refusals_total{status=\"400\",reason=\"bad \\\"quote\\\" \\\\ and\\nnewline\"} 3\n"
      "pos_test_refusals_total{status=\"503\",reason=\"journal_full\"} 1\n"
      "# HELP pos_test_journal_bytes Size of the journal \\\\ on disk\\nin bytes.\n"
      "# TYPE pos_test_journal_bytes gauge\n"
      "pos_test_journal_bytes 1048576\n");
  free(text);
  metrics_registry_destroy(registry);
}

static void test_histogram_buckets_are_cumulative_up_to_inf(void **state)
{
  static const double bounds[] = {0.001, 0.01, 0.5};
  metrics_registry *registry = metrics_registry_create();
  metrics_family *commit = metrics_histogram(registry, "pos_test_commit_seconds",
                                             "Group commit time in seconds.", NULL, bounds, 3);
  metrics_family *sized = metrics_histogram(registry, "pos_test_size", "By kind.", "kind",
                                            bounds, 3);
  metrics_series *series = metrics_series1(commit, NULL);
  char *text;
  (void)state;

  metrics_observe(series, 0.0005);
  metrics_observe(series, 0.001); /* on a bound: counted in it (le is <=) */
  metrics_observe(series, 0.25);
  metrics_observe(series, 7);
  metrics_observe(metrics_series1(sized, "sale"), 0.002);
  assert_true(metrics_value(series) == 4);
  text = render(registry);
  assert_string_equal(text,
                      "# HELP pos_test_commit_seconds Group commit time in seconds.\n"
                      "# TYPE pos_test_commit_seconds histogram\n"
                      "pos_test_commit_seconds_bucket{le=\"0.001\"} 2\n"
                      "pos_test_commit_seconds_bucket{le=\"0.01\"} 2\n"
                      "pos_test_commit_seconds_bucket{le=\"0.5\"} 3\n"
                      "pos_test_commit_seconds_bucket{le=\"+Inf\"} 4\n"
                      "pos_test_commit_seconds_sum 7.2515\n"
                      "pos_test_commit_seconds_count 4\n"
                      "# HELP pos_test_size By kind.\n"
                      "# TYPE pos_test_size histogram\n"
                      "pos_test_size_bucket{kind=\"sale\",le=\"0.001\"} 0\n"
                      "pos_test_size_bucket{kind=\"sale\",le=\"0.01\"} 1\n"
                      "pos_test_size_bucket{kind=\"sale\",le=\"0.5\"} 1\n"
                      "pos_test_size_bucket{kind=\"sale\",le=\"+Inf\"} 1\n"
                      "pos_test_size_sum{kind=\"sale\"} 0.002\n"
                      "pos_test_size_count{kind=\"sale\"} 1\n");
  free(text);
  metrics_registry_destroy(registry);
}

static void test_bad_names_and_clashes_are_refused(void **state)
{
  static const double bounds[] = {1, 2};
  static const double unordered[] = {2, 1};
  metrics_registry *registry = metrics_registry_create();
  metrics_family *counter = metrics_counter(registry, "pos_test_total", "x", "reason");
  (void)state;

  assert_non_null(counter);
  assert_ptr_equal(metrics_counter(registry, "pos_test_total", "x", "reason"), counter);
  assert_null(metrics_gauge(registry, "pos_test_total", "x", "reason"));
  assert_null(metrics_counter(registry, "pos_test_total", "x", "status"));
  assert_null(metrics_counter(registry, "9starts_with_digit", "x", NULL));
  assert_null(metrics_counter(registry, "has-dash", "x", NULL));
  assert_null(metrics_counter(registry, "pos_ok", "x", "bad:label"));
  assert_null(metrics_counter(registry, "pos_ok2", "x", "__reserved"));
  assert_null(metrics_histogram(registry, "pos_h", "x", "le", bounds, 2));
  assert_null(metrics_histogram(registry, "pos_h2", "x", NULL, unordered, 2));
  assert_null(metrics_series1(counter, NULL)); /* it has a label: a value is needed */
  assert_null(metrics_series1(metrics_counter(registry, "pos_two_total", "x", "a,b"), "v"));
  /* NULL series are accepted and ignored. */
  metrics_inc(NULL);
  metrics_set(NULL, 1);
  metrics_observe(NULL, 1);
  metrics_add(metrics_series1(counter, "x"), -1); /* counters never go down */
  assert_true(metrics_value(metrics_series1(counter, "x")) == 0);
  metrics_registry_destroy(registry);
}

#define THREADS 4
#define PER_THREAD 100000

static void *hammer(void *arg)
{
  metrics_family *family = arg;
  metrics_series *series = metrics_series1(family, "sale");
  for (int i = 0; i < PER_THREAD; i++)
    metrics_inc(series);
  return NULL;
}

static void test_updates_from_threads_add_up(void **state)
{
  metrics_registry *registry = metrics_registry_create();
  metrics_family *family = metrics_counter(registry, "pos_test_sales_total", "x", "kind");
  pthread_t threads[THREADS];
  (void)state;

  for (int i = 0; i < THREADS; i++)
    assert_int_equal(pthread_create(&threads[i], NULL, hammer, family), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(threads[i], NULL);
  assert_true(metrics_value(metrics_series1(family, "sale")) == THREADS * PER_THREAD);
  metrics_registry_destroy(registry);
}

static void test_global_registry_is_one(void **state)
{
  (void)state;
  assert_non_null(metrics_global());
  assert_ptr_equal(metrics_global(), metrics_global());
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counter_and_gauge_text_with_escaped_labels),
      cmocka_unit_test(test_histogram_buckets_are_cumulative_up_to_inf),
      cmocka_unit_test(test_bad_names_and_clashes_are_refused),
      cmocka_unit_test(test_updates_from_threads_add_up),
      cmocka_unit_test(test_global_registry_is_one),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
