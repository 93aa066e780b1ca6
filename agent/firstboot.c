/*
 * firstboot.c - a device's own secrets, made on the device (firstboot.h).
 */
#include "firstboot.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "platform/log.h"

/* 128 bits, as hex: within the 16..128 characters the API accepts. */
#define FIRSTBOOT_TOKEN_BYTES 16

/* Fills `hex` (2 * FIRSTBOOT_TOKEN_BYTES + 1) from the kernel's generator. */
static int firstboot_token(char *hex, char *err, size_t err_size)
{
  unsigned char bytes[FIRSTBOOT_TOKEN_BYTES];
  size_t have = 0;

  /* Blocks until the generator is seeded; never a weak token on a young device. */
  while (have < sizeof(bytes)) {
    ssize_t got = getrandom(bytes + have, sizeof(bytes) - have, 0);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0) {
      snprintf(err, err_size, "getrandom: %s", strerror(errno));
      return -1;
    }
    have += (size_t)got;
  }
  for (size_t i = 0; i < sizeof(bytes); i++)
    snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
  return 0;
}

/* fsyncs the directory holding `path`, so that the new name survives a power cut. */
static int firstboot_sync_dir(const char *path)
{
  char copy[PATH_MAX];
  int fd, rc;

  snprintf(copy, sizeof(copy), "%s", path);
  fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  rc = fsync(fd);
  close(fd);
  return rc;
}

/* Writes the tokens file's text into `fd`, gives it its owner and mode, syncs it. */
static int firstboot_write(int fd, const char *token, char *err, size_t err_size)
{
  char text[512];
  const struct group *group = getgrnam("pos-agent");
  int len = snprintf(text, sizeof(text),
                     "# /etc/pos-agent/terminals: made on this device at its first boot\n"
                     "# (pos-agent --first-boot), never in an image. '*': any terminal, with\n"
                     "# this device's own token. Provisioning may replace this file with one\n"
                     "# '<terminal_id> <token>' line per terminal (see\n"
                     "# /usr/share/pos-agent/terminals.example).\n"
                     "* %s\n",
                     token);

  if (fchmod(fd, 0640) != 0) {
    snprintf(err, err_size, "chmod 0640: %s", strerror(errno));
    return -1;
  }
  /* The agent runs as pos-agent and reads it through the group. Without
   * the group (sysusers has not run), root keeps it; tmpfiles.d gives it
   * to the group at the next boot. */
  if (group && fchown(fd, 0, group->gr_gid) != 0) {
    snprintf(err, err_size, "chown root:pos-agent: %s", strerror(errno));
    return -1;
  }
  errno = 0;
  if (write(fd, text, (size_t)len) != len || fsync(fd) != 0) {
    snprintf(err, err_size, "write: %s", strerror(errno ? errno : EIO));
    return -1;
  }
  return 0;
}

int firstboot_make_tokens(const struct agent_config *config, char *err, size_t err_size)
{
  const char *path = config->terminal_tokens_path;
  char token[2 * FIRSTBOOT_TOKEN_BYTES + 1];
  char temp[PATH_MAX], why[256];
  struct stat info;
  int fd = -1, rc = -1;

  temp[0] = '\0';
  if (lstat(path, &info) == 0) {
    log_info("firstboot", "terminals_present", "path=%s", path);
    return 0;
  }
  if (errno != ENOENT) {
    snprintf(err, err_size, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (firstboot_token(token, why, sizeof(why)))
    goto fail;
  if ((size_t)snprintf(temp, sizeof(temp), "%s.first-boot.XXXXXX", path) >= sizeof(temp)) {
    snprintf(why, sizeof(why), "path too long");
    temp[0] = '\0';
    goto fail;
  }
  fd = mkstemp(temp);
  if (fd < 0) {
    snprintf(why, sizeof(why), "cannot create a file beside it: %s (is its directory there "
             "and writable?)", strerror(errno));
    temp[0] = '\0';
    goto fail;
  }
  if (firstboot_write(fd, token, why, sizeof(why)))
    goto fail;
  /* link(2), not rename(2): a file that appeared meanwhile is kept. */
  if (link(temp, path) != 0 && errno != EEXIST) {
    snprintf(why, sizeof(why), "cannot link it into place: %s", strerror(errno));
    goto fail;
  }
  if (firstboot_sync_dir(path) != 0) {
    snprintf(why, sizeof(why), "cannot sync its directory: %s", strerror(errno));
    goto fail;
  }
  log_info("firstboot", "terminals_made",
           "path=%s terminal=* reason=\"this device's own token (not logged); provisioning "
           "may replace the file\"", path);
  rc = 0;
  goto out;
fail:
  snprintf(err, err_size, "%s: cannot make this device's terminal token: %s", path, why);
out:
  if (fd >= 0)
    close(fd);
  if (temp[0])
    unlink(temp);
  return rc;
}
