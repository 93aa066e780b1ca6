/*
 * posctl.h - what posctl's files share: one run's settings and the
 * --wait loop. posctl is single-threaded; nothing here is for other
 * programs.
 */
#ifndef POSCTL_H
#define POSCTL_H

#include <jansson.h>
#include <stdint.h>

#include "posctl/client.h"

/* A command's options as given (borrowed from argv; NULL or 0 = not given). */
struct posctl_args {
  const char *store;
  const char *from;
  const char *to;
  const char *device;
  const char *timeout;
  const char *lagging;
  const char *expiring; /* certificates --expiring DAYS */
  const char *valid_for; /* enrol-token --valid-for DURATION */
  const char *id; /* command ID, cancel ID, store S, help COMMAND */
  int wait;
  int all;
  int undo; /* decommission --undo */
};

/* One invocation: where to ask and how to answer. */
struct posctl_run {
  struct posctl_target target;
  int json; /* --json: the API's JSON on stdout, nothing else there */
};

/* The commands (commands.c): each returns posctl's exit code, messages printed. */
int posctl_cmd_resync(const struct posctl_run *run, const struct posctl_args *args);
int posctl_cmd_push_now(const struct posctl_run *run, const struct posctl_args *args);
int posctl_cmd_commands(const struct posctl_run *run, const struct posctl_args *args);
int posctl_cmd_command(const struct posctl_run *run, const struct posctl_args *args);
int posctl_cmd_cancel(const struct posctl_run *run, const struct posctl_args *args);
int posctl_cmd_stores(const struct posctl_run *run, const struct posctl_args *args);
int posctl_cmd_store(const struct posctl_run *run, const struct posctl_args *args);
int posctl_cmd_certificates(const struct posctl_run *run, const struct posctl_args *args);
int posctl_cmd_enrol_token(const struct posctl_run *run, const struct posctl_args *args);
int posctl_cmd_decommission(const struct posctl_run *run, const struct posctl_args *args);

/* DAYS of --expiring: a whole number 0..36500. Returns 0, or -1 with `err` set. */
int posctl_parse_days(const char *text, int64_t *days, char *err, size_t err_size);

/* Milliseconds since the epoch, UTC (the local clock). */
int64_t posctl_now_ms(void);

/* Writes `json` (borrowed) to stdout, indented, with a newline. */
void posctl_print_json(const json_t *json);

/*
 * `resync --wait` and `push-now --wait`: polls GET /v1/admin/commands/<id>
 * until the command finishes or `timeout_s` (0 = no limit) passes,
 * showing progress on stderr (a bar redrawn in place on a terminal, else a
 * line every 10 s and at each change of state). Then prints the final
 * command (its JSON with run->json) on stdout. Returns the exit code: 0
 * DONE, 4 INCOMPLETE, 5 FAILED or CANCELLED, 6 timed out, 1 the command
 * is unknown, 3 the collector stayed unreachable for 2 minutes, 130 when
 * interrupted (Ctrl-C; the command goes on at the store either way).
 */
int posctl_wait(const struct posctl_run *run, const char *command_id, int64_t timeout_s);

#endif
