/*
 * posctl.c - head office's command line for the collector's admin API:
 * resync a store's history, ask a store to push now, follow and cancel
 * commands, see the fleet. Wiring only: the command line and --help here,
 * the commands in commands.c, --wait in wait.c, requests in client.c.
 *
 *   posctl [--config FILE] [--url URL] [--cert FILE] [--key FILE] [--ca FILE] [--json]
 *          COMMAND [OPTIONS]
 *
 * Exit codes: client.h enum posctl_exit (and every --help).
 */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "posctl/format.h"
#include "posctl/posctl.h"
#include "posctl/settings.h"

/* Each request gives up after this (a whole fleet's answer is small). */
#define POSCTL_REQUEST_TIMEOUT_S 60

enum posctl_option {
  OPT_CONFIG = 1 << 0,
  OPT_URL = 1 << 1,
  OPT_CERT = 1 << 2,
  OPT_KEY = 1 << 3,
  OPT_CA = 1 << 4,
  OPT_JSON = 1 << 5,
  OPT_HELP = 1 << 6,
  OPT_STORE = 1 << 7,
  OPT_FROM = 1 << 8,
  OPT_TO = 1 << 9,
  OPT_DEVICE = 1 << 10,
  OPT_WAIT = 1 << 11,
  OPT_TIMEOUT = 1 << 12,
  OPT_ALL = 1 << 13,
  OPT_LAGGING = 1 << 14,
  OPT_EXPIRING = 1 << 15,
  OPT_VALID_FOR = 1 << 16,
  OPT_UNDO = 1 << 17,
};
/* Allowed with every command, before or after its name. */
#define OPT_GLOBAL (OPT_CONFIG | OPT_URL | OPT_CERT | OPT_KEY | OPT_CA | OPT_JSON | OPT_HELP)

static const struct option posctl_long_options[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"url", required_argument, NULL, OPT_URL},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"ca", required_argument, NULL, OPT_CA},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
    {"store", required_argument, NULL, OPT_STORE},
    {"from", required_argument, NULL, OPT_FROM},
    {"to", required_argument, NULL, OPT_TO},
    {"device", required_argument, NULL, OPT_DEVICE},
    {"wait", no_argument, NULL, OPT_WAIT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"all", no_argument, NULL, OPT_ALL},
    {"lagging", required_argument, NULL, OPT_LAGGING},
    {"expiring", required_argument, NULL, OPT_EXPIRING},
    {"valid-for", required_argument, NULL, OPT_VALID_FOR},
    {"undo", no_argument, NULL, OPT_UNDO},
    {NULL, 0, NULL, 0},
};

static const char posctl_exit_codes[] =
    "exit codes:\n"
    "  0   done (for --wait: the command finished DONE)\n"
    "  1   the collector refused the request (4xx) or the named thing does not exist;\n"
    "      its message is printed\n"
    "  2   usage or configuration error\n"
    "  3   cannot reach the collector (connect, TLS, 5xx after retries)\n"
    "  4   --wait: the resync finished INCOMPLETE (history missing on a device)\n"
    "  5   --wait: the command FAILED or was CANCELLED\n"
    "  6   --wait: --timeout reached before it finished (the command goes on)\n"
    "  10  stores --lagging: at least one store is lagging (listed);\n"
    "      certificates: at least one device's certificate expires soon (listed)\n"
    "  130 --wait: interrupted (Ctrl-C); the command goes on\n";

static const char posctl_common_options[] =
    "options of every command (before or after its name):\n"
    "  --config FILE  the config file (default: $POSCTL_CONFIG, ~/.config/posctl.conf,\n"
    "                 " POSCTL_SYSTEM_CONFIG "; 'posctl help config')\n"
    "  --url URL      the collector, https://HOST:PORT\n"
    "  --cert FILE    the admin certificate (PEM, SAN URI urn:pos:admin:<name>)\n"
    "  --key FILE     its private key (PEM)\n"
    "  --ca FILE      the CA of the collector's certificate (default: the system's CAs)\n"
    "  --json         print the admin API's JSON on stdout, for scripts\n"
    "  -h, --help     this help\n";

struct posctl_command {
  const char *name;
  unsigned options;  /* OPT_* it takes beside OPT_GLOBAL */
  unsigned required; /* OPT_* it needs */
  int positional;    /* 1: takes one argument (ID or S) */
  const char *usage;
  const char *help;
  int (*run)(const struct posctl_run *run, const struct posctl_args *args);
};

static const struct posctl_command posctl_commands[] = {
    {"resync", OPT_STORE | OPT_FROM | OPT_TO | OPT_DEVICE | OPT_WAIT | OPT_TIMEOUT,
     OPT_STORE | OPT_FROM, 0,
     "resync --store S --from TIME [--to TIME] [--device D] [--wait] [--timeout DURATION]",
     "Asks store S's devices to replay their journal's sales (and the inventory deltas of\n"
     "those rows) whose business time is in [--from, --to) into pos.sales.replay.v1, for a\n"
     "downstream job that must be rebuilt. Live sales keep flowing meanwhile. The command\n"
     "reaches a device at its next contact (heartbeat or batch).\n\n"
     "  --store S           the store\n"
     "  --from TIME         the first business time to replay (not in the future)\n"
     "  --to TIME           replay up to, not including, this time (default: up to the\n"
     "                      newest sale when the device starts the resync)\n"
     "  --device D          only device D of the store (default: every device seen in the\n"
     "                      last 7 days)\n"
     "  --wait              follow it to the end: a progress bar with counts and ETA on a\n"
     "                      terminal, a line every 10 s otherwise; --json prints the final\n"
     "                      command\n"
     "  --timeout DURATION  with --wait: stop waiting after DURATION (exit 6; the resync\n"
     "                      goes on)\n\n"
     "TIME: 2026-11-01 (midnight UTC), 2026-11-26T03:00:00Z, 2026-11-26T04:00:00+01:00.\n"
     "A device whose journal no longer holds the start of the range replays what it has and\n"
     "ends INCOMPLETE, saying from when it had sales (exit 4 with --wait).\n\n"
     "example: posctl resync --store S001 --from 2026-11-01 --to 2026-11-08 --wait\n",
     posctl_cmd_resync},
    {"push-now", OPT_STORE | OPT_DEVICE | OPT_WAIT | OPT_TIMEOUT, OPT_STORE, 0,
     "push-now --store S [--device D] [--wait] [--timeout DURATION]",
     "Asks store S's devices to seal and send everything unsent now, instead of at their\n"
     "next interval. DONE once a push ends with nothing unsent older than the command.\n\n"
     "  --store S           the store\n"
     "  --device D          only device D of the store\n"
     "  --wait              follow it to the end (see 'posctl help resync')\n"
     "  --timeout DURATION  with --wait: stop waiting after DURATION (exit 6)\n",
     posctl_cmd_push_now},
    {"commands", OPT_STORE | OPT_ALL, 0, 0, "commands [--store S] [--all]",
     "Lists commands, newest first: pending and running ones, or with --all finished ones\n"
     "too (done, incomplete, failed, cancelled).\n\n"
     "  --store S  only store S's\n"
     "  --all      finished commands too\n",
     posctl_cmd_commands},
    {"command", 0, 0, 1, "command ID",
     "Shows one command in full: range, state, sales replayed of the total, who issued it\n"
     "and when, and each target device's report (state, counts, from when it has sales,\n"
     "its message). Exit 1 when there is no such command.\n",
     posctl_cmd_command},
    {"cancel", 0, 0, 1, "cancel ID",
     "Cancels a pending or running command. A device running it stops at its next contact;\n"
     "what it already replayed stays in Kafka. A finished command cannot be cancelled\n"
     "(exit 1, with its state).\n",
     posctl_cmd_cancel},
    {"stores", OPT_LAGGING, 0, 0, "stores [--lagging DURATION]",
     "Lists every store the collector has heard from: last contact, devices, unsent sales\n"
     "and the oldest one's age, the widest clock drift, the certificate nearest expiry,\n"
     "agent versions, the last resync and whether the store is lagging.\n\n"
     "  --lagging DURATION  only stores behind by more than DURATION (last contact older,\n"
     "                      or an unsent sale older); exit 10 when any is listed\n\n"
     "DURATION: a number and a unit, s, m, h or d: 30m, 1h30m, 4d.\n"
     "example (cron): posctl stores --lagging 30m || page-the-on-call\n",
     posctl_cmd_stores},
    {"certificates", OPT_EXPIRING, 0, 0, "certificates [--expiring DAYS]",
     "Lists the devices whose certificate expires within DAYS days (30 when not given), or\n"
     "has expired, nearest first: store, device, expiry and days left, from each device's\n"
     "last heartbeat. Exit 10 when any is listed.\n\n"
     "example (cron): posctl certificates --expiring 14 || page-the-on-call\n",
     posctl_cmd_certificates},
    {"enrol-token", OPT_STORE | OPT_DEVICE | OPT_VALID_FOR, OPT_STORE | OPT_DEVICE, 0,
     "enrol-token --store S --device D [--valid-for DURATION]",
     "Issues a one-time enrolment token for device D of store S: the device presents it\n"
     "once to the collector's EST listener (/.well-known/est/simpleenroll) and gets its\n"
     "certificate, naming that store and device. The token is printed once and kept\n"
     "nowhere in the clear (the collector keeps its hash); give it to the device by the\n"
     "channel you trust (its firmware's first-boot settings, the installer's phone).\n"
     "A used, expired or another device's token is refused.\n\n"
     "  --store S              the store\n"
     "  --device D             the device\n"
     "  --valid-for DURATION   how long it can be used (default: the collector's\n"
     "                         [enrol] token_lifetime, 72h)\n\n"
     "example: posctl enrol-token --store S001 --device D2 --valid-for 24h\n",
     posctl_cmd_enrol_token},
    {"decommission", OPT_STORE | OPT_UNDO, OPT_STORE, 0, "decommission --store S [--undo]",
     "Decommissions store S: its devices get no new certificate from then on (no\n"
     "enrolment, no renewal), so the certificates they hold run out; batches they send\n"
     "meanwhile are still taken. --undo puts the store back in service.\n\n"
     "  --store S   the store\n"
     "  --undo      the store is in service again\n",
     posctl_cmd_decommission},
    {"store", 0, 0, 1, "store S",
     "Shows store S in full: each device's last heartbeat and batch, agent and firmware\n"
     "versions, backlog, journal, clock drift, certificate expiry, disk, problems, and the\n"
     "store's last 20 commands. Exit 1 when the collector has never heard of S.\n",
     posctl_cmd_store},
};
#define POSCTL_COMMAND_COUNT (sizeof(posctl_commands) / sizeof(posctl_commands[0]))

static const struct posctl_command *posctl_find(const char *name)
{
  for (size_t i = 0; i < POSCTL_COMMAND_COUNT; i++)
    if (strcmp(posctl_commands[i].name, name) == 0)
      return &posctl_commands[i];
  return NULL;
}

static void posctl_usage(FILE *out)
{
  fprintf(out, "usage: posctl [--config FILE] [--url URL] [--cert FILE] [--key FILE] "
          "[--ca FILE] [--json]\n              COMMAND [OPTIONS]\n\n"
          "Head office's command line for the collector's admin API: resync a store's\n"
          "history, ask a store to push now, follow and cancel commands, see the fleet.\n\n"
          "commands:\n");
  for (size_t i = 0; i < POSCTL_COMMAND_COUNT; i++)
    fprintf(out, "  posctl %s\n", posctl_commands[i].usage);
  fprintf(out, "  posctl help [COMMAND|config]\n\n%s\n%s", posctl_common_options,
          posctl_exit_codes);
}

static void posctl_command_help(const struct posctl_command *command, FILE *out)
{
  fprintf(out, "usage: posctl %s\n\n%s\n%s\n%s", command->usage, command->help,
          posctl_common_options, posctl_exit_codes);
}

/* `posctl help [COMMAND|config]`. */
static int posctl_help(const char *topic)
{
  const struct posctl_command *command;
  if (!topic) {
    posctl_usage(stdout);
    return POSCTL_EXIT_OK;
  }
  if (strcmp(topic, "config") == 0) {
    posctl_settings_write_example(stdout);
    return POSCTL_EXIT_OK;
  }
  command = posctl_find(topic);
  if (!command) {
    fprintf(stderr, "posctl help: no command \"%s\"; 'posctl help' lists them\n", topic);
    return POSCTL_EXIT_USAGE;
  }
  posctl_command_help(command, stdout);
  return POSCTL_EXIT_OK;
}

static const char *posctl_option_name(int option)
{
  for (const struct option *o = posctl_long_options; o->name; o++)
    if (o->val == option)
      return o->name;
  return "?";
}

/* Stores one parsed option. */
static void posctl_take(int option, struct posctl_args *args, struct posctl_flags *flags,
                        struct posctl_run *run, int *help)
{
  switch (option) {
  case OPT_CONFIG: flags->config = optarg; break;
  case OPT_URL: flags->url = optarg; break;
  case OPT_CERT: flags->cert = optarg; break;
  case OPT_KEY: flags->key = optarg; break;
  case OPT_CA: flags->ca = optarg; break;
  case OPT_JSON: run->json = 1; break;
  case OPT_HELP: *help = 1; break;
  case OPT_STORE: args->store = optarg; break;
  case OPT_FROM: args->from = optarg; break;
  case OPT_TO: args->to = optarg; break;
  case OPT_DEVICE: args->device = optarg; break;
  case OPT_WAIT: args->wait = 1; break;
  case OPT_TIMEOUT: args->timeout = optarg; break;
  case OPT_ALL: args->all = 1; break;
  case OPT_LAGGING: args->lagging = optarg; break;
  case OPT_EXPIRING: args->expiring = optarg; break;
  case OPT_VALID_FOR: args->valid_for = optarg; break;
  case OPT_UNDO: args->undo = 1; break;
  }
}

/*
 * Parses argv from optind with getopt_long: `stop_at_command` parses the
 * options before the command's name (and stops there). Sets *given to the
 * options seen. Returns 0, or 2 after saying what was wrong.
 */
static int posctl_parse(int argc, char **argv, const char *who, int stop_at_command,
                        struct posctl_args *args, struct posctl_flags *flags,
                        struct posctl_run *run, int *help, unsigned *given)
{
  int option;
  opterr = 0; /* our messages, not getopt's */
  while ((option = getopt_long(argc, argv, stop_at_command ? "+:h" : ":h", posctl_long_options,
                               NULL)) != -1) {
    if (option == 'h')
      option = OPT_HELP;
    if (option == '?' || option == ':') {
      const char *arg = argv[optind - 1];
      fprintf(stderr, "posctl%s%s: %s %s; see 'posctl %s%s--help'\n", who ? " " : "",
              who ? who : "", arg, option == ':' ? "needs a value" : "is not an option",
              who ? who : "", who ? " " : "");
      return POSCTL_EXIT_USAGE;
    }
    *given |= (unsigned)option;
    posctl_take(option, args, flags, run, help);
  }
  return 0;
}

/* Checks the command's options and values before anything is asked. Returns 0 or 2. */
static int posctl_check(const struct posctl_command *command, const struct posctl_args *args,
                        unsigned given, int positional_count)
{
  char err[256];
  int64_t ignored;
  unsigned extra = given & ~(command->options | OPT_GLOBAL), missing = command->required & ~given;
  for (unsigned bit = 1; bit <= OPT_UNDO; bit <<= 1) {
    if (extra & bit) {
      snprintf(err, sizeof(err), "--%s is not an option of %s", posctl_option_name((int)bit),
               command->name);
      goto bad;
    }
    if (missing & bit) {
      snprintf(err, sizeof(err), "--%s is required", posctl_option_name((int)bit));
      goto bad;
    }
  }
  if (positional_count != command->positional) {
    snprintf(err, sizeof(err), "%s", command->positional ? "needs one argument" :
             "takes no argument (options start with --)");
    goto bad;
  }
  if ((args->from && posctl_parse_time(args->from, &ignored, err, sizeof(err))) ||
      (args->to && posctl_parse_time(args->to, &ignored, err, sizeof(err))) ||
      (args->timeout && posctl_parse_duration(args->timeout, &ignored, err, sizeof(err))) ||
      (args->lagging && posctl_parse_duration(args->lagging, &ignored, err, sizeof(err))) ||
      (args->valid_for && posctl_parse_duration(args->valid_for, &ignored, err, sizeof(err))) ||
      (args->expiring && posctl_parse_days(args->expiring, &ignored, err, sizeof(err))))
    goto bad;
  if (args->timeout && !args->wait) {
    snprintf(err, sizeof(err), "--timeout is for --wait (how long to wait)");
    goto bad;
  }
  return 0;
bad:
  fprintf(stderr, "posctl %s: %s; see 'posctl %s --help'\n", command->name, err, command->name);
  return POSCTL_EXIT_USAGE;
}

/* A resync's range must make sense before it is asked: from < to, from not in the future. */
static int posctl_check_range(const struct posctl_args *args)
{
  int64_t from_ms = 0, to_ms = 0, now_ms = posctl_now_ms();
  char now_text[POSCTL_TEXT_MAX];
  if (!args->from)
    return 0;
  posctl_parse_time(args->from, &from_ms, NULL, 0);
  if (from_ms > now_ms) {
    fprintf(stderr, "posctl resync: --from %s is in the future (now is %s): there is nothing "
            "to replay yet\n", args->from, posctl_format_time(now_ms / 1000 * 1000, now_text,
                                                              sizeof(now_text)));
    return POSCTL_EXIT_USAGE;
  }
  if (args->to && posctl_parse_time(args->to, &to_ms, NULL, 0) == 0 && to_ms <= from_ms) {
    fprintf(stderr, "posctl resync: --to %s is not after --from %s: the range [from, to) "
            "would be empty\n", args->to, args->from);
    return POSCTL_EXIT_USAGE;
  }
  return 0;
}

/* Parses the command line and runs one command; returns the exit code. */
static int posctl_main(int argc, char **argv)
{
  struct posctl_args args = {0};
  struct posctl_flags flags = {0};
  struct posctl_run run;
  struct posctl_settings settings;
  const struct posctl_command *command;
  char err[1024];
  unsigned given = 0;
  int help = 0, rc, positional_count, command_index;

  memset(&settings, 0, sizeof(settings));
  memset(&run, 0, sizeof(run));
  optind = 1;
  rc = posctl_parse(argc, argv, NULL, 1, &args, &flags, &run, &help, &given);
  if (rc)
    return rc;
  if (optind >= argc) {
    if (help)
      return posctl_help(NULL);
    posctl_usage(stderr);
    fprintf(stderr, "\nposctl: no command given\n");
    return POSCTL_EXIT_USAGE;
  }
  command_index = optind;
  if (strcmp(argv[command_index], "help") == 0)
    return posctl_help(command_index + 1 < argc ? argv[command_index + 1] : NULL);
  command = posctl_find(argv[command_index]);
  if (!command) {
    fprintf(stderr, "posctl: no command \"%s\"; 'posctl help' lists them\n", argv[command_index]);
    return POSCTL_EXIT_USAGE;
  }
  /* The command's own options; glibc's getopt starts afresh with optind 0. */
  optind = 0;
  rc = posctl_parse(argc - command_index, argv + command_index, command->name, 0, &args,
                    &flags, &run, &help, &given);
  if (rc)
    return rc;
  if (help) {
    posctl_command_help(command, stdout);
    return POSCTL_EXIT_OK;
  }
  positional_count = argc - command_index - optind;
  if (positional_count == 1)
    args.id = argv[command_index + optind];
  rc = posctl_check(command, &args, given, positional_count);
  if (!rc)
    rc = posctl_check_range(&args);
  if (rc)
    return rc;
  if (posctl_settings_load(&flags, &settings, err, sizeof(err))) {
    fprintf(stderr, "posctl: %s\n", err);
    rc = POSCTL_EXIT_USAGE;
    goto out;
  }
  run.target.url = settings.url;
  run.target.cert = settings.cert;
  run.target.key = settings.key;
  run.target.ca = settings.ca && *settings.ca ? settings.ca : NULL;
  run.target.timeout_s = POSCTL_REQUEST_TIMEOUT_S;
  rc = command->run(&run, &args);
out:
  posctl_settings_free(&settings);
  return rc;
}

int main(int argc, char **argv)
{
  int rc;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, "posctl: libcurl could not start (curl_global_init)\n");
    return POSCTL_EXIT_UNREACHABLE;
  }
  rc = posctl_main(argc, argv);
  curl_global_cleanup();
  return rc;
}
