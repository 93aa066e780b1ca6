/*
 * wait.c - `--wait`: follow a command until it finishes (posctl.h).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "posctl/format.h"
#include "posctl/posctl.h"
#include "posctl/render.h"

/* How often the command is asked for. */
#define WAIT_POLL_MS 1000
/* Without a terminal, a progress line this often (and at each change of state). */
#define WAIT_LINE_EVERY_MS 10000
/* The collector may restart while a resync runs: posctl waits this long for it. */
#define WAIT_UNREACHABLE_MAX_MS 120000
/* GETs answered 503 with Retry-After are asked again this many times per poll. */
#define WAIT_RETRIES 3

static volatile sig_atomic_t wait_interrupted;

static void wait_on_sigint(int signum)
{
  (void)signum;
  wait_interrupted = 1;
}

static int64_t wait_monotonic_ms(void)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Sleeps `ms`, returning early on Ctrl-C. */
static void wait_sleep_ms(int64_t ms)
{
  struct timespec delay = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  if (ms > 0 && !wait_interrupted)
    nanosleep(&delay, NULL);
}

/* What the progress display remembers between polls. */
struct wait_view {
  int tty;
  int drawn;              /* a bar is on the terminal's current line */
  int64_t last_line_ms;   /* when the last (non-terminal) line was written */
  char last_state[32];
  int64_t first_ms;       /* first sample of a running replay, for the rate */
  int64_t first_done;
  int have_first;
};

static int64_t wait_int(const json_t *command, const char *key)
{
  const json_t *value = json_object_get(command, key);
  return json_is_integer(value) ? (int64_t)json_integer_value(value) : 0;
}

static const char *wait_str(const json_t *command, const char *key)
{
  const json_t *value = json_object_get(command, key);
  return json_is_string(value) ? json_string_value(value) : NULL;
}

/* Shows one sample of the command's progress on stderr. */
static void wait_show(struct wait_view *view, const json_t *command, int64_t now_ms)
{
  char line[POSCTL_PROGRESS_MAX + 64], progress[POSCTL_PROGRESS_MAX];
  const char *state = wait_str(command, "state"), *kind = wait_str(command, "kind");
  int64_t done = wait_int(command, "replayed_sales"), total = wait_int(command, "total_sales");
  int64_t eta = -1;
  int changed;
  if (!state)
    state = "?";
  if (state && strcmp(state, "running") == 0 && total > 0 && !view->have_first) {
    view->have_first = 1;
    view->first_ms = now_ms;
    view->first_done = done;
  }
  if (view->have_first && done > view->first_done && total > done)
    eta = (total - done) * (now_ms - view->first_ms) / (done - view->first_done) / 1000;
  else if (view->have_first && total > 0 && done >= total)
    eta = 0;
  if (kind && strcmp(kind, "resync") != 0)
    snprintf(line, sizeof(line), "%s: %s", kind, state);
  else
    snprintf(line, sizeof(line), "%s",
             posctl_progress_line(state, done, total, eta, progress, sizeof(progress)));
  changed = strcmp(state, view->last_state) != 0;
  snprintf(view->last_state, sizeof(view->last_state), "%s", state);
  if (view->tty) {
    /* Redraw in place; \033[K clears what a longer previous line left. */
    fprintf(stderr, "\r%s\033[K", line);
    view->drawn = 1;
  } else if (changed || now_ms - view->last_line_ms >= WAIT_LINE_EVERY_MS) {
    fprintf(stderr, "%s\n", line);
    view->last_line_ms = now_ms;
  }
  fflush(stderr);
}

/* Ends the bar's line before anything else is written to stderr. */
static void wait_end_line(struct wait_view *view)
{
  if (view->drawn)
    fputc('\n', stderr);
  view->drawn = 0;
}

/* The command finished: say how, print it, return its exit code. */
static int wait_finished(const struct posctl_run *run, const json_t *command, int rc)
{
  char count[POSCTL_TEXT_MAX];
  const char *id = wait_str(command, "command_id"), *state = wait_str(command, "state");
  const char *message = wait_str(command, "message");
  if (run->json) {
    posctl_print_json(command);
  } else {
    printf("%s %s: %s, %s sales replayed\n\n", wait_str(command, "kind") ?
           wait_str(command, "kind") : "command", id ? id : "?", state ? state : "?",
           posctl_format_count(wait_int(command, "replayed_sales"), count, sizeof(count)));
    posctl_render_command(stdout, command, posctl_now_ms());
  }
  if (rc == POSCTL_EXIT_INCOMPLETE)
    fprintf(stderr, "posctl: %s finished INCOMPLETE: %s\n", id ? id : "the command",
            message && *message ? message : "some of the history is no longer on a device");
  else if (rc != POSCTL_EXIT_OK)
    fprintf(stderr, "posctl: %s finished %s%s%s\n", id ? id : "the command",
            state ? state : "in a state posctl does not know", message && *message ? ": " : "",
            message ? message : "");
  return rc;
}

/* Asks for the command once. Returns 0 with *command set (a new reference), or an exit code. */
static int wait_poll(const struct posctl_run *run, const char *path, json_t **command,
                     char *message, size_t message_size)
{
  struct posctl_answer answer;
  int rc = posctl_request(&run->target, "GET", path, NULL, WAIT_RETRIES, &answer);
  *command = NULL;
  if (rc == POSCTL_EXIT_OK) {
    json_t *found = json_object_get(answer.json, "command");
    if (json_is_object(found)) {
      *command = json_incref(found);
    } else {
      snprintf(answer.message, sizeof(answer.message), "the collector's answer to GET %s has no "
               "\"command\" object: is --url the collector?", path);
      rc = POSCTL_EXIT_UNREACHABLE;
    }
  }
  snprintf(message, message_size, "%s", answer.message);
  posctl_answer_clear(&answer);
  return rc;
}

int posctl_wait(const struct posctl_run *run, const char *command_id, int64_t timeout_s)
{
  char path[512] = "/v1/admin/commands/", message[1024], limit[POSCTL_TEXT_MAX];
  struct wait_view view = {.tty = isatty(STDERR_FILENO), .last_line_ms = -WAIT_LINE_EVERY_MS};
  struct sigaction action, previous;
  int64_t start = wait_monotonic_ms(), last_ok = start;
  json_t *last = NULL;
  int rc = -1, reported_trouble = 0;

  posctl_append_escaped(path, sizeof(path), command_id);
  memset(&action, 0, sizeof(action));
  action.sa_handler = wait_on_sigint; /* no SA_RESTART: the sleep ends at once */
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &previous);
  while (rc < 0) {
    json_t *command = NULL;
    int64_t now = wait_monotonic_ms();
    int poll_rc = wait_poll(run, path, &command, message, sizeof(message));
    if (poll_rc == POSCTL_EXIT_OK) {
      int state_rc = posctl_exit_for_state(wait_str(command, "state"));
      json_decref(last);
      last = command;
      last_ok = now;
      reported_trouble = 0;
      wait_show(&view, command, now);
      if (state_rc >= 0) {
        wait_end_line(&view);
        rc = wait_finished(run, command, state_rc);
        break;
      }
    } else if (poll_rc != POSCTL_EXIT_UNREACHABLE || now - last_ok > WAIT_UNREACHABLE_MAX_MS) {
      wait_end_line(&view);
      fprintf(stderr, "posctl: %s\n", message);
      if (poll_rc == POSCTL_EXIT_UNREACHABLE)
        fprintf(stderr, "posctl: gave up after 2 minutes without an answer; %s goes on at the "
                "store: 'posctl command %s' shows it later\n", command_id, command_id);
      rc = poll_rc;
      break;
    } else if (!reported_trouble) {
      /* A collector restarting mid-resync: keep asking, say so once. */
      wait_end_line(&view);
      fprintf(stderr, "posctl: %s; asking again for up to 2 minutes\n", message);
      reported_trouble = 1;
    }
    if (wait_interrupted) {
      wait_end_line(&view);
      fprintf(stderr, "posctl: stopped waiting; %s goes on at the store: 'posctl command %s' "
              "shows it, 'posctl cancel %s' stops it\n", command_id, command_id, command_id);
      rc = POSCTL_EXIT_INTERRUPTED;
      break;
    }
    if (timeout_s > 0 && wait_monotonic_ms() - start >= timeout_s * 1000) {
      wait_end_line(&view);
      fprintf(stderr, "posctl: %s is still %s after %s (--timeout); it goes on at the store: "
              "'posctl command %s' shows it, 'posctl cancel %s' stops it\n", command_id,
              last ? (wait_str(last, "state") ? wait_str(last, "state") : "?") : "unanswered",
              posctl_format_duration(timeout_s, limit, sizeof(limit)), command_id, command_id);
      if (run->json && last)
        posctl_print_json(last);
      rc = POSCTL_EXIT_TIMEOUT;
      break;
    }
    wait_sleep_ms(WAIT_POLL_MS);
  }
  sigaction(SIGINT, &previous, NULL);
  json_decref(last);
  return rc;
}
