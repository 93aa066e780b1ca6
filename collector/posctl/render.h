/*
 * render.h - posctl's readable output: the admin API's JSON answers
 * (the command and store objects of collector/README.md, "Admin API") as tables
 * and blocks for people. Pure: each function reads a borrowed JSON value
 * and writes to `out`; `now_ms` (milliseconds since the epoch, UTC) is the
 * instant ages are counted from (the answer's "now" when it has one, else
 * the local clock), so that tests can fix it.
 *
 * A field missing from the answer (an older or newer collector) is shown
 * as "-", never an error; only an answer without its main member (no
 * "stores" list, no "command" object) is refused.
 */
#ifndef POSCTL_RENDER_H
#define POSCTL_RENDER_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

/*
 * GET /v1/admin/stores's answer {"now", "stores": [St...]}: one line per
 * store (last contact, devices, unsent sales and the oldest one's age, the
 * widest clock drift, the certificate nearest expiry, agent versions,
 * resync progress, lagging). `lagging` (seconds, 0 = not asked) only
 * changes the line under the table. Returns 0, or -1 when the answer has
 * no "stores" list.
 */
int posctl_render_stores(FILE *out, const json_t *answer, int64_t now_ms, int64_t lagging);

/*
 * GET /v1/admin/stores/<S>'s answer {"store": St}: the store, a block per
 * device (contact, versions, backlog, drift, certificate, disk, journal,
 * problems) and its recent commands. Returns 0, or -1 without "store".
 */
int posctl_render_store(FILE *out, const json_t *answer, int64_t now_ms);

/* The devices of `certificates` (store_id, device_id, cert_not_after,
 * cert_days_left), nearest expiry first, within `days`. */
void posctl_render_certificates(FILE *out, const json_t *devices, int64_t days);

/*
 * A list of command objects (GET /v1/admin/commands's "commands"): one line
 * each. `empty` is printed instead of an empty table. Returns 0, or -1 when
 * `commands` is not an array.
 */
int posctl_render_commands(FILE *out, const json_t *commands, int64_t now_ms, const char *empty);

/*
 * One command object C in full: what, for which store and range, state and
 * progress, who issued and updated it, and a line per target device.
 * Returns 0, or -1 when `command` is not an object.
 */
int posctl_render_command(FILE *out, const json_t *command, int64_t now_ms);

/*
 * The age of an RFC 3339 time `text` at `now_ms`, written like "3m ago"
 * into `out` ("-" when text is NULL or not a time). Returns `out`.
 */
char *posctl_render_ago(const char *text, int64_t now_ms, char *out, size_t out_size);

#endif
