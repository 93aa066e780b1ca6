/*
 * status_actions.h - what the store manager may do from the status page:
 * POST /actions/push (send unsent sales now). Actions need the manager's
 * password: HTTP Basic authentication, any user name, checked against the
 * first line of [api] manager_password_file (read at each request, so a
 * new password needs no restart): a PBKDF2 line made by
 * `pos-agent --hash-password`, or, from before hashes, the password itself
 * (still accepted, logged once as password_plain_text; see
 * status_password.h).
 */
#ifndef AGENT_STATUS_ACTIONS_H
#define AGENT_STATUS_ACTIONS_H

#include "platform/http_server.h"
#include "uplink/uplink.h"

struct status_actions_options {
  const char *password_file; /* "" = actions disabled */
  uplink *uplink;            /* NULL when the uplink is off; borrowed */
};

/*
 * The manager's password check, for every endpoint behind it (push now,
 * inventory adjustments, recipes): 0 when `authorization` (the request's
 * Authorization header, may be NULL) carries it; else 401 (wrong or none),
 * 429 (a hashed password is checked at most once a second after a wrong
 * one: each check costs the loop tens of milliseconds),
 * 403 (no password file configured) or 503 (the file cannot be read, or
 * its line looks like a hash but is not one), with
 * `refusal` filled in for the answer. Reads the file at each call. Loop
 * thread (it is a small local file).
 */
int status_actions_check_manager(const char *password_file, const char *authorization,
                                 struct http_refusal *refusal);

/*
 * Handles POST /actions/push: 202 {"push":"started"}; 401 without the
 * right password; 403 when no password file is configured; 409 when the
 * uplink is off; 503 when the password file cannot be read.
 */
void status_actions_push(const struct status_actions_options *options, http_exchange *exchange);

#endif
