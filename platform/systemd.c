/*
 * systemd.c - sd_notify(3) without libsystemd.
 *
 * The protocol (systemd's sd_notify(3) and "Interface Portability and
 * Stability"): $NOTIFY_SOCKET names an AF_UNIX datagram socket, either a
 * file system path ("/run/systemd/notify") or an abstract name written with
 * a leading '@'. The service sends newline-separated KEY=value assignments
 * in one datagram; systemd learns the sender's PID from the socket's
 * credentials, so nothing else is needed.
 */
#include "platform/systemd.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/*
 * Fills `addr` from $NOTIFY_SOCKET. Returns 1 with `*addr_len` set, 0 when
 * the variable is unset or empty (not under systemd), or a negative errno.
 */
static int systemd_socket_address(struct sockaddr_un *addr, socklen_t *addr_len)
{
  const char *name = getenv("NOTIFY_SOCKET");
  size_t name_len;

  if (!name || name[0] == '\0')
    return 0;
  /* Newer systemd may also offer "vsock:CID:PORT" to virtual machines; a
   * POS device is never one. */
  if (name[0] != '/' && name[0] != '@')
    return -EAFNOSUPPORT;
  name_len = strlen(name);
  memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (name[0] == '@') {
    /* Abstract namespace: a leading NUL, then the name; the address length
     * (not a terminator) says where it ends. */
    if (name_len > sizeof(addr->sun_path))
      return -ENAMETOOLONG;
    addr->sun_path[0] = '\0';
    memcpy(addr->sun_path + 1, name + 1, name_len - 1);
    *addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + name_len);
  } else {
    if (name_len >= sizeof(addr->sun_path))
      return -ENAMETOOLONG;
    memcpy(addr->sun_path, name, name_len + 1);
    *addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + name_len + 1);
  }
  return 1;
}

int systemd_notify(const char *state)
{
  struct sockaddr_un addr;
  socklen_t addr_len = 0;
  size_t state_len = strlen(state);
  ssize_t sent;
  int fd;
  int rc;

  rc = systemd_socket_address(&addr, &addr_len);
  if (rc <= 0)
    return rc;
  if (state_len == 0 || state_len > SYSTEMD_NOTIFY_MAX)
    return -EINVAL;

  fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  /* Non-blocking: a stalled systemd must never stall the event loop; a
   * dropped watchdog ping is followed by the next one. MSG_NOSIGNAL: no
   * SIGPIPE if the manager went away. */
  sent = sendto(fd, state, state_len, MSG_DONTWAIT | MSG_NOSIGNAL,
                (const struct sockaddr *)&addr, addr_len);
  if (sent < 0)
    rc = errno == EWOULDBLOCK ? -EAGAIN : -errno;
  else if ((size_t)sent != state_len)
    rc = -EMSGSIZE;
  else
    rc = 0;
  close(fd);
  return rc;
}

int systemd_notify_ready(void)
{
  return systemd_notify("READY=1");
}

int systemd_notify_status(const char *text)
{
  char message[SYSTEMD_NOTIFY_MAX + 1];
  static const char prefix[] = "STATUS=";
  size_t len = sizeof(prefix) - 1;

  memcpy(message, prefix, len);
  /* STATUS is one line: a newline would start a new assignment, which a
   * caller passing a log message or a file name never means. */
  for (const char *p = text ? text : ""; *p && len < SYSTEMD_NOTIFY_MAX; p++) {
    unsigned char c = (unsigned char)*p;
    message[len++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
  }
  message[len] = '\0';
  return systemd_notify(message);
}

int systemd_notify_extend_timeout(uint64_t usec)
{
  char message[64];

  snprintf(message, sizeof(message), "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)usec);
  return systemd_notify(message);
}

int systemd_notify_stopping(void)
{
  return systemd_notify("STOPPING=1");
}

int systemd_notify_watchdog(void)
{
  return systemd_notify("WATCHDOG=1");
}

/* Parses a whole unsigned decimal number; returns 0 or -1. */
static int systemd_parse_u64(const char *text, unsigned long long *value)
{
  char *end = NULL;

  if (!text || text[0] < '0' || text[0] > '9')
    return -1;
  errno = 0;
  *value = strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0')
    return -1;
  return 0;
}

uint64_t systemd_watchdog_interval_ms(void)
{
  const char *pid_text = getenv("WATCHDOG_PID");
  unsigned long long usec;
  unsigned long long pid;

  if (systemd_parse_u64(getenv("WATCHDOG_USEC"), &usec) != 0 || usec == 0)
    return 0;
  /* WATCHDOG_PID, when set, names the process the watchdog is for: a child
   * that inherited the environment must not think it is watched. */
  if (pid_text && pid_text[0] != '\0') {
    if (systemd_parse_u64(pid_text, &pid) != 0 || pid != (unsigned long long)getpid())
      return 0;
  }
  /* Rounded up, so a sub-millisecond interval is not mistaken for none. */
  return (uint64_t)((usec + 999) / 1000);
}
