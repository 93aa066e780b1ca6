/*
 * fault_proxy.c - pos-fault-proxy: a TCP proxy on loopback that puts network
 * faults between the agent and the collector (the TLS bytes pass through
 * untouched; the proxy never reads them).
 *
 *   pos-fault-proxy --target PORT --control FILE [--listen PORT] [--seed N]
 *
 * Listens on 127.0.0.1 (port 0 = any, printed as "port=N" on stdout once
 * listening) and forwards each connection to 127.0.0.1:TARGET. The mode is
 * the first line of FILE, re-read whenever the file changes (write a new
 * file and rename it over FILE):
 *
 *   pass           forward as is
 *   delay MS       hold every chunk MS milliseconds before forwarding it
 *   reset BYTES    two connections in three (new ones, and those open when
 *                  the mode is set; a connection spared draws again each
 *                  second) are reset (RST, SO_LINGER 0) once a
 *                  random 1..BYTES more bytes (at most 400 towards the
 *                  agent) have passed in one random direction:
 *                  mid-handshake, mid-request or mid-answer
 *   blackout       nothing moves: connections are accepted and held, no byte
 *                  is forwarded (a dead link; TCP keeps the sockets open)
 *
 * Prints "event=reset ..." on stderr for each reset. Runs until killed.
 * Only loopback addresses are ever used.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROXY_MAX_PAIRS 128
#define PROXY_CHUNK 65536

enum proxy_mode { PROXY_PASS, PROXY_DELAY, PROXY_RESET, PROXY_BLACKOUT };

struct proxy_pair {
  int fd[2];                 /* 0 = the client (agent), 1 = the target (collector) */
  char buf[2][PROXY_CHUNK];  /* buf[d]: bytes read from fd[d], to be written to fd[1 - d] */
  size_t length[2], offset[2];
  double ready_at[2];        /* delay mode: when buf[d] may be written */
  long forwarded[2];
  int eof[2];                /* fd[d] said end of stream; fd[1 - d] is shut down once drained */
  int reset_direction;       /* -1: this connection is not reset */
  long reset_after;
};

static struct proxy_pair *pairs[PROXY_MAX_PAIRS];
static enum proxy_mode mode = PROXY_PASS;
static long mode_value;

static double proxy_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Two connections in three get a reset budget: 1..BYTES more bytes in one
 * random direction. Kept-alive connections get one too when the mode
 * changes, or the reset mode would never touch an agent that reuses its
 * connection. */
static void proxy_arm_reset(struct proxy_pair *pair)
{
  pair->reset_direction = -1;
  if (mode != PROXY_RESET || random() % 3 == 0)
    return;
  pair->reset_direction = (int)(random() % 2);
  /* An answer (a BatchAck in a TLS record) is a few hundred bytes: a budget
   * that large would rarely cut one. */
  long budget = pair->reset_direction == 1 && mode_value > 400 ? 400 : mode_value;
  pair->reset_after = pair->forwarded[pair->reset_direction] + 1 + random() % budget;
}

/* Re-reads FILE when it changed (a new inode or mtime: the harness renames
 * a new file into place, so a half-written one is never read). */
static void proxy_read_control(const char *path, struct timespec *seen, ino_t *seen_inode)
{
  struct stat st;
  if (stat(path, &st) || (st.st_ino == *seen_inode && st.st_mtim.tv_sec == seen->tv_sec &&
                          st.st_mtim.tv_nsec == seen->tv_nsec))
    return;
  *seen = st.st_mtim;
  *seen_inode = st.st_ino;
  FILE *file = fopen(path, "r");
  if (!file)
    return;
  char word[32] = "";
  long value = 0;
  if (fscanf(file, "%31s %ld", word, &value) < 1)
    word[0] = '\0';
  fclose(file);
  if (strcmp(word, "delay") == 0)
    mode = PROXY_DELAY;
  else if (strcmp(word, "reset") == 0)
    mode = PROXY_RESET;
  else if (strcmp(word, "blackout") == 0)
    mode = PROXY_BLACKOUT;
  else
    mode = PROXY_PASS;
  mode_value = value > 0 ? value : 1;
  for (int i = 0; i < PROXY_MAX_PAIRS; i++)
    if (pairs[i])
      proxy_arm_reset(pairs[i]);
  fprintf(stderr, "pos-fault-proxy: event=mode mode=%s value=%ld\n", word, value);
}

static void proxy_close(int index, int reset)
{
  struct proxy_pair *pair = pairs[index];
  for (int d = 0; d < 2; d++) {
    if (reset) {
      struct linger linger = {.l_onoff = 1, .l_linger = 0};
      (void)setsockopt(pair->fd[d], SOL_SOCKET, SO_LINGER, &linger, sizeof(linger));
    }
    close(pair->fd[d]);
  }
  free(pair);
  pairs[index] = NULL;
}

static int proxy_connect_target(int port)
{
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  if (connect(fd, (struct sockaddr *)&address, sizeof(address))) {
    close(fd);
    return -1;
  }
  (void)fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

static void proxy_accept(int listener, int target_port)
{
  int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (client < 0)
    return;
  int slot = -1;
  for (int i = 0; i < PROXY_MAX_PAIRS && slot < 0; i++)
    if (!pairs[i])
      slot = i;
  int target = slot >= 0 ? proxy_connect_target(target_port) : -1;
  struct proxy_pair *pair = target >= 0 ? calloc(1, sizeof(*pair)) : NULL;
  if (!pair) {
    /* The collector is down (or too many connections): refuse as it would. */
    struct linger linger = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, sizeof(linger));
    close(client);
    if (target >= 0)
      close(target);
    return;
  }
  pair->fd[0] = client;
  pair->fd[1] = target;
  proxy_arm_reset(pair);
  pairs[slot] = pair;
}

/* Moves what can move on one pair; returns -1 when it is finished. */
static int proxy_pump(struct proxy_pair *pair, short revents[2], double now)
{
  for (int d = 0; d < 2; d++) {
    if (pair->length[d] == 0 && (revents[d] & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = pair->eof[d] ? -1 : read(pair->fd[d], pair->buf[d], PROXY_CHUNK);
      if (n == 0) {
        pair->eof[d] = 1;
        (void)shutdown(pair->fd[1 - d], SHUT_WR);
        if (pair->eof[1 - d])
          return -1;
      } else if (n < 0 && !pair->eof[d] && errno != EAGAIN && errno != EINTR) {
        return -1;
      }
      if (n > 0) {
        pair->length[d] = (size_t)n;
        pair->offset[d] = 0;
        pair->ready_at[d] = now + (mode == PROXY_DELAY ? (double)mode_value / 1000.0 : 0);
      }
    }
    if (pair->length[d] > pair->offset[d] && now >= pair->ready_at[d]) {
      size_t want = pair->length[d] - pair->offset[d];
      if (pair->reset_direction == d && pair->forwarded[d] + (long)want > pair->reset_after)
        want = (size_t)(pair->reset_after - pair->forwarded[d]);
      ssize_t n = want ? write(pair->fd[1 - d], pair->buf[d] + pair->offset[d], want) : 0;
      if (n < 0 && errno != EAGAIN && errno != EINTR)
        return -1;
      if (n > 0) {
        pair->offset[d] += (size_t)n;
        pair->forwarded[d] += n;
      }
      if (pair->offset[d] == pair->length[d])
        pair->length[d] = pair->offset[d] = 0;
      if (pair->reset_direction == d && pair->forwarded[d] >= pair->reset_after) {
        fprintf(stderr, "pos-fault-proxy: event=reset direction=%s after=%ld\n",
                d == 0 ? "to-collector" : "to-agent", pair->forwarded[d]);
        return -2;
      }
    }
  }
  return 0;
}

int main(int argc, char **argv)
{
  int listen_port = 0, target_port = 0;
  const char *control = NULL;
  unsigned seed = (unsigned)time(NULL);
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--target") == 0)
      target_port = (int)strtol(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--listen") == 0)
      listen_port = (int)strtol(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--control") == 0)
      control = argv[i + 1];
    else if (strcmp(argv[i], "--seed") == 0)
      seed = (unsigned)strtoul(argv[i + 1], NULL, 10);
  }
  if (target_port <= 0 || !control) {
    fprintf(stderr, "usage: pos-fault-proxy --target PORT --control FILE [--listen PORT] "
                    "[--seed N]\n");
    return 2;
  }
  srandom(seed);
  signal(SIGPIPE, SIG_IGN);
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)listen_port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t address_length = sizeof(address);
  if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
      bind(listener, (struct sockaddr *)&address, sizeof(address)) || listen(listener, 64) ||
      getsockname(listener, (struct sockaddr *)&address, &address_length)) {
    fprintf(stderr, "pos-fault-proxy: cannot listen on 127.0.0.1:%d: %s\n", listen_port,
            strerror(errno));
    return 1;
  }
  printf("port=%d\n", ntohs(address.sin_port));
  fflush(stdout);

  struct timespec seen = {0, 0};
  ino_t seen_inode = 0;
  double last_arm = 0;
  struct pollfd fds[1 + 2 * PROXY_MAX_PAIRS];
  int owner[1 + 2 * PROXY_MAX_PAIRS];
  for (;;) {
    proxy_read_control(control, &seen, &seen_inode);
    int count = 0;
    fds[count].fd = listener;
    fds[count].events = POLLIN;
    owner[count++] = -1;
    for (int i = 0; i < PROXY_MAX_PAIRS; i++) {
      if (!pairs[i])
        continue;
      for (int d = 0; d < 2; d++) {
        fds[count].fd = pairs[i]->fd[d];
        /* In a blackout nothing is read, so nothing is forwarded. */
        fds[count].events = (short)((mode != PROXY_BLACKOUT && pairs[i]->length[d] == 0 &&
                                             !pairs[i]->eof[d] ? POLLIN : 0) |
                                    (pairs[i]->length[1 - d] ? POLLOUT : 0));
        owner[count++] = i;
      }
    }
    int ready = poll(fds, (nfds_t)count, 20);
    if (ready < 0 && errno != EINTR)
      return 1;
    double now = proxy_now();
    if (mode == PROXY_RESET && now - last_arm >= 1.0) {
      /* A kept-alive connection that drew no budget draws again each second,
       * or one lucky connection would carry the whole phase untouched. */
      last_arm = now;
      for (int i = 0; i < PROXY_MAX_PAIRS; i++)
        if (pairs[i] && pairs[i]->reset_direction < 0)
          proxy_arm_reset(pairs[i]);
    }
    if (fds[0].revents & POLLIN)
      proxy_accept(listener, target_port);
    if (mode == PROXY_BLACKOUT)
      continue;
    for (int k = 1; k < count; k += 2) {
      int i = owner[k];
      if (!pairs[i])
        continue;
      short revents[2] = {fds[k].revents, fds[k + 1].revents};
      int rc = proxy_pump(pairs[i], revents, now);
      if (rc < 0)
        proxy_close(i, rc == -2);
    }
  }
}
