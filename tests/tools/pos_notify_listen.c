/*
 * pos_notify_listen.c - systemd's notify socket, for tests: binds a unix
 * datagram socket at PATH and prints each message a service sends there
 * (READY=1, STATUS=..., WATCHDOG=1), one line each (the lines of one message
 * joined by " | "), flushed at once, until SIGTERM or SIGINT. Run a program
 * with NOTIFY_SOCKET=PATH beside it to see what systemd would be told.
 *
 *   pos-notify-listen PATH >messages &
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_stop(int signum)
{
  (void)signum;
  stop_requested = 1;
}

int main(int argc, char **argv)
{
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  struct sigaction action = {.sa_handler = on_stop}; /* no SA_RESTART: recv returns */
  char message[4097];
  int fd, bound = 0, rc = 1;

  if (argc != 2 || strlen(argv[1]) >= sizeof(addr.sun_path)) {
    fprintf(stderr, "usage: pos-notify-listen PATH (a unix socket path of at most %zu bytes)\n",
            sizeof(addr.sun_path) - 1);
    return 2;
  }
  memcpy(addr.sun_path, argv[1], strlen(argv[1]) + 1);
  sigaction(SIGTERM, &action, NULL);
  sigaction(SIGINT, &action, NULL);
  fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
    fprintf(stderr, "pos-notify-listen: %s: %s\n", argv[1], strerror(errno));
    goto out;
  }
  bound = 1;
  while (!stop_requested) {
    ssize_t got = recv(fd, message, sizeof(message) - 1, 0);
    if (got < 0) {
      if (errno == EINTR)
        continue;
      fprintf(stderr, "pos-notify-listen: recv: %s\n", strerror(errno));
      goto out;
    }
    message[got] = '\0';
    for (ssize_t i = 0; i < got; i++) {
      if (message[i] == '\n' && i + 1 < got)
        fputs(" | ", stdout);
      else if (message[i] != '\n')
        putchar(message[i]);
    }
    putchar('\n');
    fflush(stdout);
  }
  rc = 0;
out:
  if (fd >= 0)
    close(fd);
  if (bound)
    unlink(argv[1]);
  return rc;
}
