/*
 * test_systemd.c - the sd_notify protocol as systemd receives it: a unix
 * datagram socket bound where $NOTIFY_SOCKET points (file system path and
 * abstract name), each message read back and compared, the sender's
 * credentials checked (systemd's NotifyAccess=main trusts the PID the
 * kernel attaches), and every call a no-op outside systemd.
 */
#define _GNU_SOURCE /* struct ucred, SCM_CREDENTIALS */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "platform/systemd.h"

/* The test's stand-in for systemd: a bound datagram socket. */
struct manager {
  int fd;
  char name[108]; /* what NOTIFY_SOCKET is set to */
  char path[108]; /* the file to unlink, "" for an abstract socket */
};

/* Binds a receiving socket (abstract when `abstract`), sets NOTIFY_SOCKET. */
static void manager_start(struct manager *m, int abstract)
{
  struct sockaddr_un addr;
  socklen_t addr_len;
  int on = 1;

  memset(m, 0, sizeof(*m));
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  if (abstract) {
    snprintf(m->name, sizeof(m->name), "@pos-test-systemd-%ld-%d", (long)getpid(), rand());
    memcpy(addr.sun_path + 1, m->name + 1, strlen(m->name) - 1);
    addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(m->name));
  } else {
    snprintf(m->path, sizeof(m->path), "%s/pos-test-systemd-%ld.sock",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
    unlink(m->path);
    snprintf(m->name, sizeof(m->name), "%s", m->path);
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", m->path);
    addr_len = (socklen_t)sizeof(addr);
  }
  m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  assert_true(m->fd >= 0);
  assert_int_equal(bind(m->fd, (struct sockaddr *)&addr, addr_len), 0);
  /* As systemd does: have the kernel attach the sender's credentials. */
  assert_int_equal(setsockopt(m->fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)), 0);
  assert_int_equal(setenv("NOTIFY_SOCKET", m->name, 1), 0);
}

static void manager_stop(struct manager *m)
{
  close(m->fd);
  if (m->path[0])
    unlink(m->path);
  unsetenv("NOTIFY_SOCKET");
}

/*
 * Receives one datagram (fails if none is queued) into `out` and checks the
 * kernel says it came from this process.
 */
static void manager_receive(struct manager *m, char *out, size_t out_size)
{
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(struct ucred))];
  } control;
  struct iovec iov = {.iov_base = out, .iov_len = out_size - 1};
  struct msghdr msg = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = control.buf,
                       .msg_controllen = sizeof(control.buf)};
  struct cmsghdr *cmsg;
  struct ucred cred;
  ssize_t got;
  int have_cred = 0;

  got = recvmsg(m->fd, &msg, MSG_DONTWAIT);
  assert_true(got >= 0);
  assert_false(msg.msg_flags & MSG_TRUNC);
  out[got] = '\0';
  for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_CREDENTIALS) {
      memcpy(&cred, CMSG_DATA(cmsg), sizeof(cred));
      have_cred = 1;
    }
  }
  assert_true(have_cred);
  assert_int_equal(cred.pid, getpid());
}

/* Nothing further is queued on the manager's socket. */
static void manager_expect_nothing(struct manager *m)
{
  char buf[16];
  assert_int_equal(recv(m->fd, buf, sizeof(buf), MSG_DONTWAIT), -1);
  assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

static void expect_message(struct manager *m, const char *expected)
{
  char got[SYSTEMD_NOTIFY_MAX + 64];
  manager_receive(m, got, sizeof(got));
  assert_string_equal(got, expected);
}

static int clear_env(void **state)
{
  (void)state;
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  return 0;
}

/* Outside systemd every call succeeds and does nothing. */
static void test_no_notify_socket_is_a_noop(void **state)
{
  (void)state;
  assert_int_equal(systemd_notify_ready(), 0);
  assert_int_equal(systemd_notify_status("starting"), 0);
  assert_int_equal(systemd_notify_watchdog(), 0);
  assert_int_equal(systemd_notify_stopping(), 0);
  assert_int_equal(systemd_notify("X=1"), 0);
  assert_int_equal(systemd_watchdog_interval_ms(), 0);
  /* An empty variable is the same as none. */
  setenv("NOTIFY_SOCKET", "", 1);
  assert_int_equal(systemd_notify_ready(), 0);
}

static void check_all_messages(int abstract)
{
  struct manager m;

  manager_start(&m, abstract);
  assert_int_equal(systemd_notify_ready(), 0);
  expect_message(&m, "READY=1");
  assert_int_equal(systemd_notify_status("journal open, 12 sales unsent"), 0);
  expect_message(&m, "STATUS=journal open, 12 sales unsent");
  assert_int_equal(systemd_notify_watchdog(), 0);
  expect_message(&m, "WATCHDOG=1");
  assert_int_equal(systemd_notify_extend_timeout(60000000), 0);
  expect_message(&m, "EXTEND_TIMEOUT_USEC=60000000");
  assert_int_equal(systemd_notify_stopping(), 0);
  expect_message(&m, "STOPPING=1");
  assert_int_equal(systemd_notify("READY=1\nSTATUS=serving"), 0);
  expect_message(&m, "READY=1\nSTATUS=serving");
  manager_expect_nothing(&m);
  manager_stop(&m);
}

static void test_messages_to_path_socket(void **state)
{
  (void)state;
  check_all_messages(0);
}

static void test_messages_to_abstract_socket(void **state)
{
  (void)state;
  check_all_messages(1);
}

/* STATUS stays one line, whatever the caller passes; long text is cut. */
static void test_status_is_one_bounded_line(void **state)
{
  struct manager m;
  char *long_text;
  char got[SYSTEMD_NOTIFY_MAX + 64];

  (void)state;
  manager_start(&m, 1);
  assert_int_equal(systemd_notify_status("disk full\nWATCHDOG=1\r\tnow"), 0);
  expect_message(&m, "STATUS=disk full WATCHDOG=1  now");
  assert_int_equal(systemd_notify_status(NULL), 0);
  expect_message(&m, "STATUS=");

  long_text = malloc(3 * SYSTEMD_NOTIFY_MAX);
  assert_non_null(long_text);
  memset(long_text, 'x', 3 * SYSTEMD_NOTIFY_MAX - 1);
  long_text[3 * SYSTEMD_NOTIFY_MAX - 1] = '\0';
  assert_int_equal(systemd_notify_status(long_text), 0);
  manager_receive(&m, got, sizeof(got));
  assert_int_equal(strlen(got), SYSTEMD_NOTIFY_MAX);
  assert_memory_equal(got, "STATUS=xxx", 10);
  free(long_text);

  /* The raw call refuses what does not fit rather than cutting it. */
  long_text = malloc(SYSTEMD_NOTIFY_MAX + 2);
  assert_non_null(long_text);
  memset(long_text, 'y', SYSTEMD_NOTIFY_MAX + 1);
  long_text[SYSTEMD_NOTIFY_MAX + 1] = '\0';
  assert_int_equal(systemd_notify(long_text), -EINVAL);
  assert_int_equal(systemd_notify(""), -EINVAL);
  free(long_text);
  manager_expect_nothing(&m);
  manager_stop(&m);
}

/* A socket that is not there, or a name we cannot use, is an error. */
static void test_bad_notify_socket_is_an_error(void **state)
{
  char name[300];

  (void)state;
  snprintf(name, sizeof(name), "/tmp/pos-test-systemd-missing-%ld.sock", (long)getpid());
  unlink(name);
  setenv("NOTIFY_SOCKET", name, 1);
  assert_int_equal(systemd_notify_ready(), -ENOENT);

  snprintf(name, sizeof(name), "@pos-test-systemd-nobody-%ld", (long)getpid());
  setenv("NOTIFY_SOCKET", name, 1);
  assert_int_equal(systemd_notify_ready(), -ECONNREFUSED);

  setenv("NOTIFY_SOCKET", "relative/notify", 1);
  assert_int_equal(systemd_notify_ready(), -EAFNOSUPPORT);
  setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
  assert_int_equal(systemd_notify_watchdog(), -EAFNOSUPPORT);

  memset(name, 'a', sizeof(name) - 1);
  name[0] = '/';
  name[sizeof(name) - 1] = '\0';
  setenv("NOTIFY_SOCKET", name, 1);
  assert_int_equal(systemd_notify_ready(), -ENAMETOOLONG);
  name[0] = '@';
  setenv("NOTIFY_SOCKET", name, 1);
  assert_int_equal(systemd_notify_ready(), -ENAMETOOLONG);
}

static void test_watchdog_interval(void **state)
{
  char pid[32];

  (void)state;
  assert_int_equal(systemd_watchdog_interval_ms(), 0);

  setenv("WATCHDOG_USEC", "30000000", 1);
  assert_int_equal(systemd_watchdog_interval_ms(), 30000);

  /* For us by PID. */
  snprintf(pid, sizeof(pid), "%ld", (long)getpid());
  setenv("WATCHDOG_PID", pid, 1);
  assert_int_equal(systemd_watchdog_interval_ms(), 30000);

  /* Inherited from a parent: not ours. */
  snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
  setenv("WATCHDOG_PID", pid, 1);
  assert_int_equal(systemd_watchdog_interval_ms(), 0);
  setenv("WATCHDOG_PID", "12abc", 1);
  assert_int_equal(systemd_watchdog_interval_ms(), 0);
  unsetenv("WATCHDOG_PID");

  /* Rounded up, never to 0. */
  setenv("WATCHDOG_USEC", "1500", 1);
  assert_int_equal(systemd_watchdog_interval_ms(), 2);
  setenv("WATCHDOG_USEC", "1", 1);
  assert_int_equal(systemd_watchdog_interval_ms(), 1);

  /* Zero and malformed values mean no watchdog. */
  const char *bad[] = {"0", "", "-5", " 10", "10s", "1e6", "99999999999999999999999"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    setenv("WATCHDOG_USEC", bad[i], 1);
    if (systemd_watchdog_interval_ms() != 0)
      fail_msg("WATCHDOG_USEC=\"%s\": expected no watchdog (0), got %llu", bad[i],
               (unsigned long long)systemd_watchdog_interval_ms());
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_no_notify_socket_is_a_noop, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(test_messages_to_path_socket, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(test_messages_to_abstract_socket, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(test_status_is_one_bounded_line, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(test_bad_notify_socket_is_an_error, clear_env, clear_env),
      cmocka_unit_test_setup_teardown(test_watchdog_interval, clear_env, clear_env),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
