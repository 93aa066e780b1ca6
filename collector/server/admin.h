/*
 * admin.h - head office's admin API (spec10.md, "Admin API"): resync and
 * push-now commands, listing and cancelling them, and the fleet view of
 * stores, as JSON over the collector's mutual-TLS listener. POST
 * /v1/admin/rebase stays in routes.c.
 */
#ifndef COLLECTOR_ADMIN_H
#define COLLECTOR_ADMIN_H

#include "control/control.h"
#include "platform/http_server.h"
#include "server/identity.h"

/*
 * Answers one request under /v1/admin/ from an admin certificate (`id`,
 * borrowed; the caller has refused every other certificate). `control` is
 * borrowed. 404 for a path it does not know. Loop thread.
 */
void admin_handle(control *ctl, http_exchange *exchange, const struct identity *id);

/*
 * Parses a time as the API takes it: RFC 3339 ("2026-11-26T03:00:00Z",
 * "2026-11-26T04:00:00+01:00", fractions of a second allowed) or a date
 * ("2026-11-01" = midnight UTC). 0 with *ms set (UTC epoch ms), or -1.
 */
int admin_parse_time(const char *text, int64_t *ms);

/* Parses a duration: "90s", "30m", "2h", "7d" or plain seconds. 0 with *ms, or -1. */
int admin_parse_duration(const char *text, int64_t *ms);

#endif
