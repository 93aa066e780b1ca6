/*
 * status_verdict.h - the one answer a store manager wants from the status
 * page: are this store's sales reaching head office? One of three states,
 * with the reason and what to do in words a manager with no IT knowledge
 * uses:
 *
 *   sending   sales reach head office as planned (waiting sales are
 *             younger than two push intervals, no failed attempt)
 *   behind    sales wait longer than planned, but the device keeps trying
 *             and they go by themselves once the link is back (no
 *             internet, the collector busy or down); nothing is lost
 *   stopped   sales do not reach head office, or are not taken, until a
 *             person acts: the journal cannot write or is full, the uplink
 *             is off, the collector refuses this device (its certificate,
 *             its identity, a batch it lost), the device certificate has
 *             expired or is not valid yet
 *
 * A pure function of the state the agent already holds, so it is tested
 * without a network and serves /status.json and the page alike.
 */
#ifndef AGENT_STATUS_VERDICT_H
#define AGENT_STATUS_VERDICT_H

#include <stdint.h>

#include "journal/journal.h"
#include "uplink/uplink.h"

enum status_verdict_state {
  STATUS_VERDICT_SENDING = 0,
  STATUS_VERDICT_BEHIND,
  STATUS_VERDICT_STOPPED,
};

struct status_verdict_input {
  int64_t now_ms;                       /* wall clock */
  const struct journal_stats *journal;  /* required */
  const struct uplink_status *link;     /* NULL = the uplink is off */
  int64_t interval_ms;                  /* [uplink] interval */
  int64_t jitter_ms;                    /* [uplink] jitter */
  /* The device certificate's validity (uplink.cert): 0/0 = unknown. */
  int64_t cert_not_before_ms;
  int64_t cert_not_after_ms;
};

struct status_verdict {
  enum status_verdict_state state;
  const char *code;        /* why, for machines: "ok", "no_connection", "journal_full", ... */
  char headline[96];       /* "Sending", "Behind: 312 sales waiting", ... */
  char reason[640];        /* what is wrong (or right), plain words */
  char action[384];        /* what to do; "" = nothing */
  int64_t since_ms;        /* the last time sales reached head office; 0 = never/unknown */
};

/* "sending", "behind", "stopped". */
const char *status_verdict_state_name(enum status_verdict_state state);

/*
 * Fills `out` from `in`. Never fails; any thread (it reads only `in`).
 * Times in the words are the device's local time (the store's zone).
 */
void status_verdict_judge(const struct status_verdict_input *in, struct status_verdict *out);

#endif
