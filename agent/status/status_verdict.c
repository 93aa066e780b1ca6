/*
 * status_verdict.c - sending / behind / stopped, in a manager's words.
 */
#include "status/status_verdict.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Beyond the planned wait (two intervals with their jitter) a waiting sale
 * is late: a minute of slack for the push itself and a busy collector. */
#define STATUS_VERDICT_SLACK_MS (60 * 1000)
/* Head office needs time to issue a certificate: say so this long before. */
#define STATUS_VERDICT_CERT_WARN_MS (14 * 24 * 3600 * 1000LL)

const char *status_verdict_state_name(enum status_verdict_state state)
{
  switch (state) {
  case STATUS_VERDICT_SENDING:
    return "sending";
  case STATUS_VERDICT_BEHIND:
    return "behind";
  case STATUS_VERDICT_STOPPED:
    return "stopped";
  }
  return "stopped";
}

/* "14:02" today, "Mon 24 Nov 14:02" on another day, in the device's zone. */
static const char *status_verdict_when(int64_t ms, int64_t now_ms, char *out, size_t size)
{
  time_t t = (time_t)(ms / 1000), now = (time_t)(now_ms / 1000);
  struct tm at, today;
  if (!localtime_r(&t, &at) || !localtime_r(&now, &today)) {
    snprintf(out, size, "an unknown time");
    return out;
  }
  if (at.tm_year == today.tm_year && at.tm_yday == today.tm_yday)
    strftime(out, size, "%H:%M", &at);
  else
    strftime(out, size, "%a %d %b %H:%M", &at);
  return out;
}

/* "1 sale" / "312 sales". */
static const char *status_verdict_sales(uint64_t n, char *out, size_t size)
{
  snprintf(out, size, "%llu sale%s", (unsigned long long)n, n == 1 ? "" : "s");
  return out;
}

static void status_verdict_set(struct status_verdict *out, enum status_verdict_state state,
                               const char *code)
{
  out->state = state;
  out->code = code;
}

/* The journal cannot take sales: the tills are refused. 1 when judged. */
static int status_verdict_journal(const struct status_verdict_input *in,
                                  struct status_verdict *out, const char *held)
{
  const struct journal_stats *js = in->journal;
  if (js->full) {
    status_verdict_set(out, STATUS_VERDICT_STOPPED, "journal_full");
    snprintf(out->headline, sizeof(out->headline), "Stopped: storage full");
    snprintf(out->reason, sizeof(out->reason),
             "This device's storage is full: the tills' new sales are refused. The %s already "
             "taken are kept and still sent.", held);
    snprintf(out->action, sizeof(out->action),
             "Call head office IT now. Sales are taken again as soon as waiting ones reach head "
             "office.");
    return 1;
  }
  if (js->write_failing) {
    status_verdict_set(out, STATUS_VERDICT_STOPPED, "journal_failing");
    snprintf(out->headline, sizeof(out->headline), "Stopped: cannot save sales");
    snprintf(out->reason, sizeof(out->reason),
             "This device cannot save new sales (%.300s). The %s already taken are kept.",
             js->last_error, held);
    snprintf(out->action, sizeof(out->action),
             "Call head office IT now and read them this message.");
    return 1;
  }
  return 0;
}

/* The device certificate: expired or not valid yet. 1 when judged. */
static int status_verdict_certificate(const struct status_verdict_input *in,
                                      struct status_verdict *out, const char *waiting)
{
  char when[40];
  if (in->cert_not_after_ms > 0 && in->now_ms > in->cert_not_after_ms) {
    status_verdict_set(out, STATUS_VERDICT_STOPPED, "certificate_expired");
    snprintf(out->headline, sizeof(out->headline), "Stopped: certificate expired");
    snprintf(out->reason, sizeof(out->reason),
             "This device's certificate expired on %s, so head office refuses its sales. %s "
             "waiting; nothing is lost.",
             status_verdict_when(in->cert_not_after_ms, in->now_ms, when, sizeof(when)), waiting);
    snprintf(out->action, sizeof(out->action),
             "Call head office IT: the device needs a new certificate (where devices enrol "
             "themselves, a new enrolment token for this store and device: with it the device "
             "enrols by itself).");
    return 1;
  }
  if (in->cert_not_before_ms > 0 && in->now_ms < in->cert_not_before_ms) {
    status_verdict_set(out, STATUS_VERDICT_STOPPED, "certificate_not_yet_valid");
    snprintf(out->headline, sizeof(out->headline), "Stopped: clock or certificate wrong");
    snprintf(out->reason, sizeof(out->reason),
             "This device's certificate is only valid from %s: the device's clock is probably "
             "wrong. %s waiting; nothing is lost.",
             status_verdict_when(in->cert_not_before_ms, in->now_ms, when, sizeof(when)),
             waiting);
    snprintf(out->action, sizeof(out->action),
             "Check the date and time on this device; if they are right, call head office IT.");
    return 1;
  }
  return 0;
}

/* What the uplink says only a person can end. 1 when judged. */
static int status_verdict_refused(const struct status_verdict_input *in,
                                  struct status_verdict *out, const char *waiting)
{
  const struct uplink_status *link = in->link;
  if (link->identity_mismatch_ms > 0 && link->stalled_expected_batch_seq <= 0) {
    status_verdict_set(out, STATUS_VERDICT_STOPPED, "identity_mismatch");
    snprintf(out->headline, sizeof(out->headline), "Stopped: wrong certificate");
    snprintf(out->reason, sizeof(out->reason),
             "Head office refuses this device's sales: its certificate belongs to another store "
             "or device than it is set up for. %s waiting; nothing is lost.", waiting);
    snprintf(out->action, sizeof(out->action),
             "Call head office IT: the device's certificate or settings must be fixed.");
    return 1;
  }
  if (link->stalled_expected_batch_seq > 0) {
    status_verdict_set(out, STATUS_VERDICT_STOPPED, "expected_batch_deleted");
    snprintf(out->headline, sizeof(out->headline), "Stopped: head office must approve");
    snprintf(out->reason, sizeof(out->reason),
             "Head office asks for sales this device no longer keeps, and waits for approval "
             "before it takes newer ones. %s waiting; nothing is lost.", waiting);
    snprintf(out->action, sizeof(out->action),
             "Call head office IT: they must approve a rebase for this store.");
    return 1;
  }
  if (link->consecutive_failures > 0 && link->last_error_needs_person) {
    status_verdict_set(out, STATUS_VERDICT_STOPPED, "refused");
    snprintf(out->headline, sizeof(out->headline), "Stopped: head office refuses our sales");
    snprintf(out->reason, sizeof(out->reason),
             "Head office's collector refuses what this device sends. %s waiting; nothing is "
             "lost. The device's words: %.400s", waiting, link->last_error);
    snprintf(out->action, sizeof(out->action),
             "Call head office IT and read them this message.");
    return 1;
  }
  return 0;
}

/* Sending, or behind: the device keeps trying by itself. */
static void status_verdict_flow(const struct status_verdict_input *in,
                                struct status_verdict *out, const char *waiting)
{
  const struct journal_stats *js = in->journal;
  const struct uplink_status *link = in->link;
  int64_t planned = 2 * (in->interval_ms + in->jitter_ms) + STATUS_VERDICT_SLACK_MS;
  int64_t age = js->sales_unsent > 0 && js->oldest_unsent_ms > 0 ? in->now_ms - js->oldest_unsent_ms
                                                                  : 0;
  char when[40], next[40];

  if (link->consecutive_failures > 0) {
    status_verdict_set(out, STATUS_VERDICT_BEHIND, "no_connection");
    snprintf(out->headline, sizeof(out->headline), "Behind: head office cannot be reached");
    if (js->last_ack_ms > 0)
      snprintf(out->reason, sizeof(out->reason),
               "No connection to head office since %s. %s waiting; nothing is lost.",
               status_verdict_when(js->last_ack_ms, in->now_ms, when, sizeof(when)), waiting);
    else
      snprintf(out->reason, sizeof(out->reason),
               "Head office has not been reached yet. %s waiting; nothing is lost.", waiting);
    snprintf(out->action, sizeof(out->action),
             "Check the store's internet (router, cables). The device sends by itself once the "
             "link is back; if it lasts more than a day, call head office IT.");
    return;
  }
  if (age > planned) {
    status_verdict_set(out, STATUS_VERDICT_BEHIND, "late");
    snprintf(out->headline, sizeof(out->headline), "Behind: sales waiting longer than planned");
    snprintf(out->reason, sizeof(out->reason),
             "%s waiting, the oldest since %s; nothing is lost.", waiting,
             status_verdict_when(js->oldest_unsent_ms, in->now_ms, when, sizeof(when)));
    snprintf(out->action, sizeof(out->action),
             "Press \"Push now\". If they still wait, check the store's internet.");
    return;
  }
  status_verdict_set(out, STATUS_VERDICT_SENDING, "ok");
  snprintf(out->headline, sizeof(out->headline), "Sending");
  if (js->sales_unsent == 0)
    snprintf(out->reason, sizeof(out->reason), "Every sale has reached head office%s%s.",
             js->last_ack_ms > 0 ? "; last push " : "",
             js->last_ack_ms > 0 ? status_verdict_when(js->last_ack_ms, in->now_ms, when,
                                                       sizeof(when))
                                 : "");
  else
    snprintf(out->reason, sizeof(out->reason), "%s waiting for the next push%s%s, as planned.",
             waiting, link->next_push_ms > 0 ? " at " : "",
             link->next_push_ms > 0
                 ? status_verdict_when(link->next_push_ms, in->now_ms, next, sizeof(next))
                 : "");
  out->action[0] = '\0';
  if (in->cert_not_after_ms > 0 && in->cert_not_after_ms - in->now_ms < STATUS_VERDICT_CERT_WARN_MS)
    snprintf(out->action, sizeof(out->action),
             "This device's certificate expires in %lld days (%s): call head office IT for a "
             "new one before then, or sales stop reaching head office.",
             (long long)((in->cert_not_after_ms - in->now_ms) / (24 * 3600 * 1000LL)),
             status_verdict_when(in->cert_not_after_ms, in->now_ms, when, sizeof(when)));
}

void status_verdict_judge(const struct status_verdict_input *in, struct status_verdict *out)
{
  char held[40], waiting[48];
  uint64_t unsent = in->journal->sales_unsent;

  memset(out, 0, sizeof(*out));
  out->since_ms = in->journal->last_ack_ms;
  status_verdict_sales(unsent, held, sizeof(held));
  snprintf(waiting, sizeof(waiting), "%s", held);
  waiting[0] = waiting[0] >= 'a' && waiting[0] <= 'z' ? (char)(waiting[0] - 32) : waiting[0];
  if (status_verdict_journal(in, out, held))
    return;
  if (!in->link) {
    status_verdict_set(out, STATUS_VERDICT_STOPPED, "uplink_off");
    snprintf(out->headline, sizeof(out->headline), "Stopped: not set up to send");
    snprintf(out->reason, sizeof(out->reason),
             "This device is not set up to send sales to head office. %s kept here; nothing "
             "is lost.", waiting);
    snprintf(out->action, sizeof(out->action),
             "Call head office IT: the device's uplink address is missing.");
    return;
  }
  if (status_verdict_certificate(in, out, waiting) || status_verdict_refused(in, out, waiting))
    return;
  status_verdict_flow(in, out, waiting);
}
