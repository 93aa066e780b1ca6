/*
 * systemd.h - the sd_notify protocol, written here so the firmware does not
 * need libsystemd: readiness, status, stopping and watchdog notifications
 * sent as datagrams to the unix socket systemd names in $NOTIFY_SOCKET.
 *
 * A unit with Type=notify is "started" only once the service sends READY=1,
 * and with WatchdogSec= it is killed and restarted (Restart=on-failure) when
 * WATCHDOG=1 does not arrive in time. Typical use on the main loop:
 *
 *   systemd_notify_ready();                       after the listener is up
 *   uint64_t ms = systemd_watchdog_interval_ms();
 *   if (ms) uv_timer_start(&wd, on_wd, ms / 2, ms / 2);   on_wd: systemd_notify_watchdog()
 *   systemd_notify_stopping();                    on SIGTERM, before closing
 *
 * Not under systemd (no $NOTIFY_SOCKET) every call does nothing and returns
 * 0, so the same binary runs by hand, in tests and under other inits.
 *
 * Every send is one non-blocking datagram on a fresh socket: no state, no
 * lock, safe from any thread of the main process (systemd's default
 * NotifyAccess=main accepts messages from the main PID only), and it never
 * blocks the event loop. The environment is read on each call and left as
 * it is.
 *
 * Return codes: 0 sent (or nothing to do), or a negative errno:
 *   -EAFNOSUPPORT  $NOTIFY_SOCKET is neither "/path" nor "@abstract"
 *   -ENAMETOOLONG  $NOTIFY_SOCKET longer than a unix socket address
 *   -EINVAL        a message too long for one datagram (see
 *                  SYSTEMD_NOTIFY_MAX)
 *   -EAGAIN        systemd's queue is full: the message was dropped (the next
 *                  watchdog ping will do)
 *   others         from socket(2)/sendto(2), e.g. -ECONNREFUSED, -ENOENT
 */
#ifndef PLATFORM_SYSTEMD_H
#define PLATFORM_SYSTEMD_H

#include <stdint.h>

/* Longest message (all lines, without a terminating NUL) one call sends. */
#define SYSTEMD_NOTIFY_MAX 4096

/*
 * Sends `state` (borrowed), one or more "KEY=value" lines separated by
 * '\n', as it is. The primitive the calls below are made of.
 */
int systemd_notify(const char *state);

/* READY=1: start-up is complete, the service is serving. */
int systemd_notify_ready(void);

/*
 * STATUS=<text>: a one-line status `systemctl status` shows. `text`
 * (borrowed) is copied with each control character (newlines included)
 * replaced by a space, and truncated to fit SYSTEMD_NOTIFY_MAX.
 */
int systemd_notify_status(const char *text);

/*
 * EXTEND_TIMEOUT_USEC=<usec>: start-up (before READY=1) or shutdown is
 * still going on; systemd's TimeoutStartSec=/TimeoutStopSec= is pushed out
 * to `usec` from now (only ever later, never earlier). Send it again before
 * that runs out for as long as the work lasts, e.g. from a long schema
 * migration's progress callback. Any thread of the main process.
 */
int systemd_notify_extend_timeout(uint64_t usec);

/* STOPPING=1: shutdown has begun (systemd then waits for the exit). */
int systemd_notify_stopping(void);

/* WATCHDOG=1: the service is alive; send every interval/2 at most. */
int systemd_notify_watchdog(void);

/*
 * The watchdog interval systemd expects pings within, in milliseconds
 * (from $WATCHDOG_USEC, rounded up to 1 ms), or 0 when there is no watchdog:
 * $WATCHDOG_USEC unset, zero or malformed, or $WATCHDOG_PID set to another
 * process (the variables were inherited, not meant for us). Send
 * systemd_notify_watchdog() every half of it.
 */
uint64_t systemd_watchdog_interval_ms(void);

#endif
