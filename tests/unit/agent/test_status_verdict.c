/*
 * test_status_verdict.c - the status page's verdict (sending / behind /
 * stopped) from the journal's and the uplink's state, with the reason and
 * what to do in a store manager's words.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "status/status_verdict.h"

#define NOW_MS 1764000000000LL
#define MINUTE_MS (60 * 1000LL)

struct fixture {
  struct journal_stats journal;
  struct uplink_status link;
  struct status_verdict_input in;
  struct status_verdict out;
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  f->journal.last_ack_ms = NOW_MS - 5 * MINUTE_MS;
  f->link.state = UPLINK_IDLE;
  f->link.next_push_ms = NOW_MS + 10 * MINUTE_MS;
  f->in.now_ms = NOW_MS;
  f->in.journal = &f->journal;
  f->in.link = &f->link;
  f->in.interval_ms = 15 * MINUTE_MS;
  f->in.jitter_ms = MINUTE_MS;
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  free(*state);
  return 0;
}

static void judge(struct fixture *f)
{
  status_verdict_judge(&f->in, &f->out);
  assert_true(f->out.headline[0] != '\0');
  assert_true(f->out.reason[0] != '\0');
  /* Anything but "sending" tells the manager what to do. */
  if (f->out.state != STATUS_VERDICT_SENDING)
    assert_true(f->out.action[0] != '\0');
}

static void all_sent_is_sending(void **state)
{
  struct fixture *f = *state;
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_SENDING);
  assert_string_equal(status_verdict_state_name(f->out.state), "sending");
  assert_string_equal(f->out.code, "ok");
  assert_non_null(strstr(f->out.reason, "Every sale has reached head office"));
}

static void sales_waiting_within_the_interval_are_sending(void **state)
{
  struct fixture *f = *state;
  f->journal.sales_unsent = 12;
  f->journal.oldest_unsent_ms = NOW_MS - 14 * MINUTE_MS;
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_SENDING);
  assert_non_null(strstr(f->out.reason, "12 sales waiting for the next push"));
}

static void a_failing_link_is_behind_and_nothing_is_lost(void **state)
{
  struct fixture *f = *state;
  f->journal.sales_unsent = 312;
  f->journal.oldest_unsent_ms = NOW_MS - 40 * MINUTE_MS;
  f->link.state = UPLINK_BACKING_OFF;
  f->link.consecutive_failures = 3;
  f->link.last_error_ms = NOW_MS - MINUTE_MS;
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_BEHIND);
  assert_string_equal(f->out.code, "no_connection");
  assert_non_null(strstr(f->out.reason, "No connection to head office since"));
  assert_non_null(strstr(f->out.reason, "312 sales waiting; nothing is lost"));
  assert_non_null(strstr(f->out.action, "internet"));
  assert_int_equal(f->out.since_ms, f->journal.last_ack_ms);
}

static void sales_waiting_past_two_intervals_are_behind(void **state)
{
  struct fixture *f = *state;
  f->journal.sales_unsent = 1;
  f->journal.oldest_unsent_ms = NOW_MS - 40 * MINUTE_MS;
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_BEHIND);
  assert_string_equal(f->out.code, "late");
  assert_non_null(strstr(f->out.reason, "1 sale waiting"));
}

static void a_refusal_only_a_person_can_end_is_stopped(void **state)
{
  struct fixture *f = *state;
  f->journal.sales_unsent = 7;
  f->link.consecutive_failures = 1;
  f->link.last_error_needs_person = 1;
  snprintf(f->link.last_error, sizeof(f->link.last_error), "POST batch 3: 403: revoked");
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_STOPPED);
  assert_string_equal(f->out.code, "refused");
  assert_non_null(strstr(f->out.reason, "403: revoked"));
  assert_non_null(strstr(f->out.action, "head office IT"));
}

static void an_expired_certificate_is_stopped(void **state)
{
  struct fixture *f = *state;
  f->in.cert_not_before_ms = NOW_MS - 400 * 86400000LL;
  f->in.cert_not_after_ms = NOW_MS - 86400000LL;
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_STOPPED);
  assert_string_equal(f->out.code, "certificate_expired");
  assert_non_null(strstr(f->out.action, "new certificate"));
}

static void a_certificate_near_its_end_says_so_while_sending(void **state)
{
  struct fixture *f = *state;
  f->in.cert_not_before_ms = NOW_MS - 300 * 86400000LL;
  f->in.cert_not_after_ms = NOW_MS + 5 * 86400000LL + MINUTE_MS;
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_SENDING);
  assert_non_null(strstr(f->out.action, "expires in 5 days"));
  f->in.cert_not_after_ms = NOW_MS + 60 * 86400000LL;
  judge(f);
  assert_string_equal(f->out.action, "");
}

static void a_certificate_from_the_future_blames_the_clock(void **state)
{
  struct fixture *f = *state;
  f->in.cert_not_before_ms = NOW_MS + 86400000LL;
  f->in.cert_not_after_ms = NOW_MS + 400 * 86400000LL;
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_STOPPED);
  assert_string_equal(f->out.code, "certificate_not_yet_valid");
  assert_non_null(strstr(f->out.action, "date and time"));
}

static void a_full_journal_is_stopped_before_anything_else(void **state)
{
  struct fixture *f = *state;
  f->journal.full = 1;
  f->journal.sales_unsent = 5;
  f->link.consecutive_failures = 4;
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_STOPPED);
  assert_string_equal(f->out.code, "journal_full");
  assert_non_null(strstr(f->out.reason, "5 sales already taken are kept"));
}

static void a_journal_that_cannot_write_is_stopped(void **state)
{
  struct fixture *f = *state;
  f->journal.write_failing = 1;
  snprintf(f->journal.last_error, sizeof(f->journal.last_error), "disk I/O error");
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_STOPPED);
  assert_string_equal(f->out.code, "journal_failing");
  assert_non_null(strstr(f->out.reason, "disk I/O error"));
}

static void no_uplink_is_stopped(void **state)
{
  struct fixture *f = *state;
  f->in.link = NULL;
  f->journal.sales_unsent = 2;
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_STOPPED);
  assert_string_equal(f->out.code, "uplink_off");
  assert_non_null(strstr(f->out.reason, "2 sales kept here"));
}

static void a_stall_and_an_identity_mismatch_are_stopped(void **state)
{
  struct fixture *f = *state;
  f->link.identity_mismatch_ms = NOW_MS - MINUTE_MS;
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_STOPPED);
  assert_string_equal(f->out.code, "identity_mismatch");
  f->link.identity_mismatch_ms = 0;
  f->link.stalled_expected_batch_seq = 4;
  judge(f);
  assert_int_equal(f->out.state, STATUS_VERDICT_STOPPED);
  assert_string_equal(f->out.code, "expected_batch_deleted");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(all_sent_is_sending, setup, teardown),
      cmocka_unit_test_setup_teardown(sales_waiting_within_the_interval_are_sending, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_failing_link_is_behind_and_nothing_is_lost, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(sales_waiting_past_two_intervals_are_behind, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_refusal_only_a_person_can_end_is_stopped, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(an_expired_certificate_is_stopped, setup, teardown),
      cmocka_unit_test_setup_teardown(a_certificate_near_its_end_says_so_while_sending, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_certificate_from_the_future_blames_the_clock, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_full_journal_is_stopped_before_anything_else, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_journal_that_cannot_write_is_stopped, setup, teardown),
      cmocka_unit_test_setup_teardown(no_uplink_is_stopped, setup, teardown),
      cmocka_unit_test_setup_teardown(a_stall_and_an_identity_mismatch_are_stopped, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
