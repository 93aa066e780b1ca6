/*
 * pos_start_timer.c - pos-start-timer: how long an agent takes from exec to
 * its first sale answered 201 Created, and from SIGTERM to its exit.
 *
 *   pos-start-timer --log FILE --token TOKEN --sale FILE [--host HOST]
 *                   [--timeout SECONDS] -- AGENT [ARG...]
 *
 * Takes a monotonic t0, posix_spawn()s AGENT with its stderr in FILE
 * (truncated) and its stdout on /dev/null, watches FILE (inotify) for the
 * agent's `event=listening ... port=N` line, and then POSTs the sale in
 * the file --sale to http://HOST:N/v1/sales until it is answered 201: a
 * refused connection or a 503 (the agent not yet serving) is retried after
 * 1 ms; any other answer is an error. Then SIGTERM, and the exit waited for.
 *
 * Everything the tool needs (the sale read, curl's handle and headers) is
 * made before t0, so the figure is the agent's: start-up timed from a shell
 * loop (a grep, a sed and a curl process per try) was ~100 ms slower than
 * this on a 2-core VM, whatever the agent did.
 *
 * Prints one line on stdout:
 *   first_201_ms=X listening_ms=X posts=N stop_ms=X exit_status=S
 * (first_201_ms: t0 -> the 201's last byte; listening_ms: t0 -> the tool
 * saw the listening line in FILE; posts: POSTs sent, the 201's included;
 * stop_ms: SIGTERM -> the agent reaped; exit_status: its exit code, or
 * 128+N if signal N killed it). Exits 0 when the sale was answered 201
 * and the agent exited 0 after SIGTERM; 1 otherwise (the reason on
 * stderr, the agent killed if it still ran); 2 on bad usage.
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define TIMER_SALE_MAX (1024 * 1024) /* bytes of the sale file */
#define TIMER_LOG_LINE_MAX 8192      /* a longer log line is skipped, not parsed */
#define TIMER_BODY_MAX 4096          /* bytes of an answer kept for an error message */
#define TIMER_RETRY_NS 1000000L      /* 1 ms between two tries while the agent is not serving */
#define TIMER_STOP_TIMEOUT_S 30      /* SIGTERM -> exit, then SIGKILL and an error */

struct timer_options {
  const char *log_path;
  const char *token;
  const char *sale_path;
  const char *host;
  long timeout_s;
  char **agent_argv;
};

/* The agent's log as read so far: the bytes after the last complete line. */
struct timer_log {
  int fd;
  char partial[TIMER_LOG_LINE_MAX];
  size_t partial_length;
  int skipping; /* inside a line longer than partial[] */
};

/* An answer's body, truncated to TIMER_BODY_MAX. */
struct timer_body {
  char data[TIMER_BODY_MAX + 1];
  size_t length;
};

static pid_t timer_agent_pid = -1;

static void timer_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Prints the reason and exits 1, killing the agent if it still runs (a
 * benchmark must not leave one holding its journal). */
static void timer_fail(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("pos-start-timer: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (timer_agent_pid > 0) {
    kill(timer_agent_pid, SIGKILL);
    waitpid(timer_agent_pid, NULL, 0);
  }
  exit(1);
}

static void timer_usage(FILE *out)
{
  fputs("usage: pos-start-timer --log FILE --token TOKEN --sale FILE [--host HOST]\n"
        "                       [--timeout SECONDS] -- AGENT [ARG...]\n"
        "Runs AGENT (stderr to FILE), POSTs the sale in --sale to /v1/sales on the port of\n"
        "its event=listening line until answered 201, then SIGTERM. Prints\n"
        "first_201_ms=X listening_ms=X posts=N stop_ms=X exit_status=S\n",
        out);
}

static void timer_usage_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void timer_usage_fail(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  fputs("pos-start-timer: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputs(" (see --help)\n", stderr);
  va_end(ap);
  exit(2);
}

static long timer_parse_long(const char *name, const char *value, long min, long max)
{
  char *end = NULL;
  errno = 0;
  long parsed = strtol(value, &end, 10);
  if (errno || end == value || *end || parsed < min || parsed > max)
    timer_usage_fail("%s \"%s\" must be a whole number from %ld to %ld", name, value, min, max);
  return parsed;
}

static double timer_now_ms(void)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec * 1e3 + (double)now.tv_nsec / 1e6;
}

static void timer_sleep_ns(long ns)
{
  struct timespec pause = {.tv_sec = 0, .tv_nsec = ns};
  while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
  }
}

/* The whole sale file, NUL-terminated; the caller frees. */
static char *timer_read_sale(const char *path, size_t *length)
{
  FILE *file = fopen(path, "rb");
  if (!file)
    timer_usage_fail("--sale %s: %s", path, strerror(errno));
  char *data = malloc(TIMER_SALE_MAX + 1);
  if (!data)
    timer_fail("out of memory");
  size_t got = fread(data, 1, TIMER_SALE_MAX + 1, file);
  int read_error = ferror(file);
  fclose(file);
  if (read_error)
    timer_fail("--sale %s: read error", path);
  if (got > TIMER_SALE_MAX)
    timer_usage_fail("--sale %s is over %d bytes", path, TIMER_SALE_MAX);
  if (got == 0)
    timer_usage_fail("--sale %s is empty", path);
  data[got] = '\0';
  *length = got;
  return data;
}

/*
 * A port from one log line, or 0: the number after " port=" in a line
 * holding "event=listening " (the agent's metrics listener logs another
 * event, so the event name is matched whole).
 */
static long timer_port_of_line(const char *line)
{
  const char *event = strstr(line, "event=listening");
  if (!event || (event[15] != ' ' && event[15] != '\0'))
    return 0;
  const char *port = strstr(event, " port=");
  if (!port)
    return 0;
  char *end = NULL;
  long parsed = strtol(port + 6, &end, 10);
  if (end == port + 6 || parsed <= 0 || parsed > 65535)
    return 0;
  return parsed;
}

/* Reads what the agent added to its log; returns the listening port once
 * its line is complete, else 0. */
static long timer_log_scan(struct timer_log *log)
{
  char chunk[4096];
  ssize_t got;
  while ((got = read(log->fd, chunk, sizeof(chunk))) > 0) {
    for (ssize_t i = 0; i < got; i++) {
      if (chunk[i] == '\n') {
        long port = 0;
        if (!log->skipping) {
          log->partial[log->partial_length] = '\0';
          port = timer_port_of_line(log->partial);
        }
        log->partial_length = 0;
        log->skipping = 0;
        if (port)
          return port;
      } else if (log->partial_length + 1 < sizeof(log->partial)) {
        log->partial[log->partial_length++] = chunk[i];
      } else {
        log->skipping = 1;
      }
    }
  }
  if (got < 0 && errno != EINTR && errno != EAGAIN)
    timer_fail("reading the agent's log: %s", strerror(errno));
  return 0;
}

/* Fails if the agent has exited (before its first 201). */
static void timer_check_alive(const struct timer_options *options)
{
  int status;
  pid_t done = waitpid(timer_agent_pid, &status, WNOHANG);
  if (done != timer_agent_pid)
    return;
  timer_agent_pid = -1;
  if (WIFEXITED(status))
    timer_fail("%s exited with status %d before a sale was answered 201 (its log: %s)",
               options->agent_argv[0], WEXITSTATUS(status), options->log_path);
  timer_fail("%s was killed by signal %d before a sale was answered 201 (its log: %s)",
             options->agent_argv[0], WTERMSIG(status), options->log_path);
}

static size_t timer_on_body(char *data, size_t size, size_t count, void *arg)
{
  struct timer_body *body = arg;
  size_t bytes = size * count;
  size_t room = TIMER_BODY_MAX - body->length;
  size_t kept = bytes < room ? bytes : room;
  memcpy(body->data + body->length, data, kept);
  body->length += kept;
  body->data[body->length] = '\0';
  return bytes;
}

static pid_t timer_spawn(const struct timer_options *options)
{
  posix_spawn_file_actions_t actions;
  pid_t pid;
  if (posix_spawn_file_actions_init(&actions) ||
      posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0) ||
      posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, options->log_path,
                                       O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644))
    timer_fail("posix_spawn_file_actions: out of memory");
  int rc = posix_spawn(&pid, options->agent_argv[0], &actions, NULL, options->agent_argv,
                       environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc)
    timer_fail("cannot run %s: %s", options->agent_argv[0], strerror(rc));
  return pid;
}

/* Waits until the agent's log names its port; returns it. */
static long timer_wait_listening(const struct timer_options *options, double deadline_ms)
{
  /*
   * The log file is made by the spawn (O_TRUNC), so it is watched and
   * opened after it: until it exists, each turn looks again. inotify wakes
   * the tool as each log line is written, rather than a poll's sleep
   * adding to the figure; the 2 ms timeout only notices an agent that
   * died without a word.
   */
  struct timer_log log = {.fd = -1};
  int notify = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (notify < 0)
    timer_fail("inotify_init1: %s", strerror(errno));
  long port = 0;
  while (!port) {
    if (log.fd < 0) {
      log.fd = open(options->log_path, O_RDONLY | O_CLOEXEC);
      if (log.fd >= 0 && inotify_add_watch(notify, options->log_path, IN_MODIFY) < 0)
        timer_fail("inotify_add_watch %s: %s", options->log_path, strerror(errno));
    }
    if (log.fd >= 0)
      port = timer_log_scan(&log);
    if (port)
      break;
    timer_check_alive(options);
    if (timer_now_ms() > deadline_ms)
      timer_fail("%s logged no event=listening line within %ld s (its log: %s)",
                 options->agent_argv[0], options->timeout_s, options->log_path);
    struct pollfd ready = {.fd = notify, .events = POLLIN};
    if (log.fd < 0) {
      timer_sleep_ns(100000L);
    } else if (poll(&ready, 1, 2) > 0) {
      char events[4096];
      while (read(notify, events, sizeof(events)) > 0) {
      }
    }
  }
  close(notify);
  close(log.fd);
  return port;
}

int main(int argc, char **argv)
{
  struct timer_options options = {.host = "127.0.0.1", .timeout_s = 60};
  int i;
  for (i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--") == 0) {
      i++;
      break;
    }
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      timer_usage(stdout);
      return 0;
    }
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (!value)
      timer_usage_fail("%s needs a value", arg);
    i++;
    if (strcmp(arg, "--log") == 0)
      options.log_path = value;
    else if (strcmp(arg, "--token") == 0)
      options.token = value;
    else if (strcmp(arg, "--sale") == 0)
      options.sale_path = value;
    else if (strcmp(arg, "--host") == 0)
      options.host = value;
    else if (strcmp(arg, "--timeout") == 0)
      options.timeout_s = timer_parse_long(arg, value, 1, 3600);
    else
      timer_usage_fail("unknown option %s", arg);
  }
  if (i >= argc)
    timer_usage_fail("no agent to run: give it after --");
  if (!options.log_path || !options.token || !options.sale_path)
    timer_usage_fail("--log, --token and --sale are needed");
  options.agent_argv = argv + i;

  size_t sale_length = 0;
  char *sale = timer_read_sale(options.sale_path, &sale_length);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    timer_fail("curl_global_init failed");
  CURL *curl = curl_easy_init();
  if (!curl)
    timer_fail("curl_easy_init failed");
  char header_text[512];
  int written = snprintf(header_text, sizeof(header_text), "Authorization: Bearer %s",
                         options.token);
  if (written < 0 || (size_t)written >= sizeof(header_text))
    timer_usage_fail("--token is too long");
  struct curl_slist *headers = curl_slist_append(NULL, header_text);
  headers = curl_slist_append(headers, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Expect:");
  if (!headers)
    timer_fail("out of memory");
  struct timer_body body = {.length = 0};
  char error_text[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 5L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, timer_on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_text);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, sale);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)sale_length);

  double t0 = timer_now_ms();
  double deadline_ms = t0 + (double)options.timeout_s * 1e3;
  timer_agent_pid = timer_spawn(&options);
  long port = timer_wait_listening(&options, deadline_ms);
  double listening_ms = timer_now_ms() - t0;

  char url[320];
  written = snprintf(url, sizeof(url), "http://%s:%ld/v1/sales", options.host, port);
  if (written < 0 || (size_t)written >= sizeof(url))
    timer_usage_fail("--host is too long");
  curl_easy_setopt(curl, CURLOPT_URL, url);
  long posts = 0;
  double first_201_ms = -1;
  while (first_201_ms < 0) {
    long status = 0;
    body.length = 0;
    body.data[0] = '\0';
    error_text[0] = '\0';
    posts++;
    CURLcode code = curl_easy_perform(curl);
    if (code == CURLE_OK)
      curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status == 201) {
      first_201_ms = timer_now_ms() - t0;
      break;
    }
    /* Listening is logged after listen(), so a refusal means another
     * process's port or an agent that is going; 503 is an agent not yet
     * ready to journal. Both are retried until the deadline. */
    if (code != CURLE_OK && code != CURLE_COULDNT_CONNECT)
      timer_fail("POST %s: %s", url, error_text[0] ? error_text : curl_easy_strerror(code));
    if (code == CURLE_OK && status != 503)
      timer_fail("POST %s was answered %ld, not 201%s: %.500s", url, status,
                 status == 200 ? " (the sale id was journaled before: give each run a new sale)"
                               : "",
                 body.data);
    timer_check_alive(&options);
    if (timer_now_ms() > deadline_ms)
      timer_fail("no 201 from %s within %ld s (last: %s, status %ld)", url, options.timeout_s,
                 code == CURLE_OK ? "answered" : curl_easy_strerror(code), status);
    timer_sleep_ns(TIMER_RETRY_NS);
  }
  /* The connection is closed before the stop is timed: an idle keep-alive
   * connection is one more thing for the agent to close at SIGTERM, which
   * a POS terminal's would not be. */
  curl_easy_cleanup(curl);
  curl_slist_free_all(headers);
  free(sale);

  double stopping = timer_now_ms();
  if (kill(timer_agent_pid, SIGTERM) != 0)
    timer_fail("kill %d SIGTERM: %s", (int)timer_agent_pid, strerror(errno));
  int status = 0;
  for (;;) {
    pid_t done = waitpid(timer_agent_pid, &status, WNOHANG);
    if (done == timer_agent_pid)
      break;
    if (done < 0 && errno != EINTR)
      timer_fail("waitpid %d: %s", (int)timer_agent_pid, strerror(errno));
    if (timer_now_ms() - stopping > TIMER_STOP_TIMEOUT_S * 1e3)
      timer_fail("%s still runs %d s after SIGTERM (killed)", options.agent_argv[0],
                 TIMER_STOP_TIMEOUT_S);
    timer_sleep_ns(200000L);
  }
  double stop_ms = timer_now_ms() - stopping;
  timer_agent_pid = -1;
  int exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  printf("first_201_ms=%.3f listening_ms=%.3f posts=%ld stop_ms=%.3f exit_status=%d\n",
         first_201_ms, listening_ms, posts, stop_ms, exit_status);
  curl_global_cleanup();
  if (exit_status != 0) {
    fprintf(stderr, "pos-start-timer: %s exited with status %d after SIGTERM, not 0 (its log: "
            "%s)\n", options.agent_argv[0], exit_status, options.log_path);
    return 1;
  }
  return 0;
}
