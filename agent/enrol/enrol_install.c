/*
 * enrol_install.c - putting a renewed key and certificate in place of the
 * ones the uplink uses, so that a power cut at any instant leaves a pair
 * that works: the order and why are in enrol.h (enum enrol_install_step).
 */
#include "enrol/enrol.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/x509_crt.h>

#include "platform/disk.h"
#include "platform/log.h"
#include "platform/tls.h"

#define INSTALL_PATH_MAX 4096
#define INSTALL_NEW ".new"

/* "<path>.new" into `out`; -1 when it does not fit. */
static int install_new_path(char *out, size_t size, const char *path)
{
  int n = snprintf(out, size, "%s" INSTALL_NEW, path);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

static int install_exists(const char *path)
{
  struct stat st;
  return lstat(path, &st) == 0;
}

/* Whether the files hold a certificate and the key it certifies. */
static int install_pair_ok(const char *cert_path, const char *key_path, char *why,
                           size_t why_size)
{
  mbedtls_x509_crt cert;
  mbedtls_pk_context key;
  int ok;

  mbedtls_x509_crt_init(&cert);
  mbedtls_pk_init(&key);
  ok = tls_load_identity(&cert, &key, cert_path, key_path, "the device certificate",
                         "the device key", why, why_size) == 0;
  mbedtls_pk_free(&key);
  mbedtls_x509_crt_free(&cert);
  return ok;
}

/* Renames `from` over `to` and makes it durable. */
static int install_rename(const char *from, const char *to, char *err, size_t err_size)
{
  int rc;

  if (rename(from, to) != 0) {
    snprintf(err, err_size,
             "cannot put %s in place of %s: %s; check the directory is writable, then restart "
             "the agent (it finishes the install at start)",
             from, to, strerror(errno));
    return -1;
  }
  rc = disk_fsync_parent(to);
  if (rc != 0) {
    snprintf(err, err_size, "renamed %s to %s but cannot fsync the directory: %s; check the disk",
             from, to, strerror(-rc));
    return -1;
  }
  return 0;
}

/* Removes `path` if it exists; -1 with `err` when it cannot. */
static int install_remove(const char *path, char *err, size_t err_size)
{
  if (unlink(path) != 0 && errno != ENOENT) {
    snprintf(err, err_size, "cannot remove %s: %s; remove it by hand", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* Removes what enrol_file_write_atomic() leaves when stopped half way:
 * "<name>.tmp.<pid>", "<name>.new.tmp.<pid>" and "<name>.pending.tmp.<pid>"
 * beside `path` (not "<name>.pending" itself: enrol_attempt_start() keeps
 * it for the next attempt). */
static int install_remove_tmp(const char *path, char *err, size_t err_size)
{
  char dir_path[INSTALL_PATH_MAX], prefix[3][INSTALL_PATH_MAX];
  const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
  struct dirent *entry;
  DIR *dir;
  int rc = 0;

  if (!slash)
    snprintf(dir_path, sizeof(dir_path), ".");
  else if (slash == path)
    snprintf(dir_path, sizeof(dir_path), "/");
  else
    snprintf(dir_path, sizeof(dir_path), "%.*s", (int)(slash - path), path);
  snprintf(prefix[0], sizeof(prefix[0]), "%s.tmp.", base);
  snprintf(prefix[1], sizeof(prefix[1]), "%s" INSTALL_NEW ".tmp.", base);
  snprintf(prefix[2], sizeof(prefix[2]), "%s.pending.tmp.", base); /* enrol_attempt_start() */
  dir = opendir(dir_path);
  if (!dir)
    return 0; /* no directory, no leftovers; the live check says the rest */
  while ((entry = readdir(dir)) != NULL) {
    if (strncmp(entry->d_name, prefix[0], strlen(prefix[0])) != 0 &&
        strncmp(entry->d_name, prefix[1], strlen(prefix[1])) != 0 &&
        strncmp(entry->d_name, prefix[2], strlen(prefix[2])) != 0)
      continue;
    if (unlinkat(dirfd(dir), entry->d_name, 0) != 0 && errno != ENOENT) {
      snprintf(err, err_size, "cannot remove %s/%s: %s; remove it by hand", dir_path,
               entry->d_name, strerror(errno));
      rc = -1;
    }
  }
  closedir(dir);
  return rc;
}

/* See enrol.h. */
int enrol_install_step(const char *cert_path, const char *key_path, const char *cert_pem,
                       const char *key_pem, enum enrol_install_step step, char *err,
                       size_t err_size)
{
  char cert_new[INSTALL_PATH_MAX], key_new[INSTALL_PATH_MAX];

  if (install_new_path(cert_new, sizeof(cert_new), cert_path) != 0 ||
      install_new_path(key_new, sizeof(key_new), key_path) != 0) {
    snprintf(err, err_size, "cannot install into %s and %s: a path is too long", cert_path,
             key_path);
    return -1;
  }
  switch (step) {
  case ENROL_INSTALL_STAGE_KEY:
    return enrol_file_write_atomic(key_new, key_pem, strlen(key_pem), 0600, err, err_size);
  case ENROL_INSTALL_STAGE_CERT:
    return enrol_file_write_atomic(cert_new, cert_pem, strlen(cert_pem), 0644, err, err_size);
  case ENROL_INSTALL_COMMIT_KEY:
    return install_rename(key_new, key_path, err, err_size);
  case ENROL_INSTALL_COMMIT_CERT:
    return install_rename(cert_new, cert_path, err, err_size);
  }
  snprintf(err, err_size, "install step %d does not exist", (int)step);
  return -1;
}

/* Whether the PEM texts are a certificate and its key. */
static int install_pem_pair_ok(const char *cert_pem, const char *key_pem, char *err,
                               size_t err_size)
{
  mbedtls_x509_crt cert;
  mbedtls_pk_context key;
  char text[200];
  int rc;

  mbedtls_x509_crt_init(&cert);
  mbedtls_pk_init(&key);
  /* PEM lengths count the NUL, as mbedTLS wants. */
  rc = mbedtls_x509_crt_parse(&cert, (const unsigned char *)cert_pem, strlen(cert_pem) + 1);
  if (rc == 0)
    rc = mbedtls_pk_parse_key(&key, (const unsigned char *)key_pem, strlen(key_pem) + 1, NULL, 0);
  if (rc == 0)
    rc = mbedtls_pk_check_pair(&cert.pk, &key);
  if (rc != 0) {
    tls_error_text(rc, text, sizeof(text));
    snprintf(err, err_size,
             "the new certificate and key are not a matching pair (%s); nothing installed",
             text);
  }
  mbedtls_pk_free(&key);
  mbedtls_x509_crt_free(&cert);
  return rc == 0 ? 0 : -1;
}

/* See enrol.h. */
int enrol_install(const char *cert_path, const char *key_path, const char *cert_pem,
                  const char *key_pem, char *err, size_t err_size)
{
  char why[512];

  if (install_pem_pair_ok(cert_pem, key_pem, err, err_size) != 0)
    return -1;
  /* Leftovers of an earlier attempt go first, so the staged files are
   * ours. Its complaint about the live pair does not stop us: installing a
   * good pair is the cure. */
  (void)enrol_install_recover(cert_path, key_path, NULL, why, sizeof(why));
  for (int step = 1; step <= ENROL_INSTALL_STEPS; step++)
    if (enrol_install_step(cert_path, key_path, cert_pem, key_pem, (enum enrol_install_step)step,
                           err, err_size) != 0)
      return -1;
  return 0;
}

/* See enrol.h. */
int enrol_install_recover(const char *cert_path, const char *key_path,
                          enum enrol_recover_outcome *outcome, char *err, size_t err_size)
{
  char cert_new[INSTALL_PATH_MAX], key_new[INSTALL_PATH_MAX], why[512];
  enum enrol_recover_outcome done = ENROL_RECOVER_CLEAN;
  int has_cert_new, has_key_new, rc = 0;

  if (outcome)
    *outcome = ENROL_RECOVER_CLEAN;
  if (install_new_path(cert_new, sizeof(cert_new), cert_path) != 0 ||
      install_new_path(key_new, sizeof(key_new), key_path) != 0) {
    snprintf(err, err_size, "cannot check %s and %s: a path is too long", cert_path, key_path);
    return -1;
  }
  if (install_remove_tmp(key_path, err, err_size) != 0 ||
      install_remove_tmp(cert_path, err, err_size) != 0)
    return -1;
  has_cert_new = install_exists(cert_new);
  has_key_new = install_exists(key_new);
  if (has_key_new && has_cert_new) {
    /* Both staged: whole (each was renamed into place after its fsync)
     * and matching means the install can be finished, whichever side of
     * the commit point it stopped on. */
    if (install_pair_ok(cert_new, key_new, why, sizeof(why))) {
      rc = install_rename(key_new, key_path, err, err_size);
      if (rc == 0)
        rc = install_rename(cert_new, cert_path, err, err_size);
      done = ENROL_RECOVER_COMPLETED;
    } else {
      done = ENROL_RECOVER_ROLLED_BACK;
    }
  } else if (has_cert_new) {
    /* The key was committed and the certificate was not: the staged
     * certificate is the only one that fits the live key. */
    if (install_pair_ok(cert_new, key_path, why, sizeof(why))) {
      rc = install_rename(cert_new, cert_path, err, err_size);
      done = ENROL_RECOVER_COMPLETED;
    } else {
      done = ENROL_RECOVER_ROLLED_BACK;
    }
  } else if (has_key_new) {
    /* Stopped while staging (or a certificate put in place by hand for a
     * staged key): finish only if the key fits the live certificate. */
    if (install_pair_ok(cert_path, key_new, why, sizeof(why))) {
      rc = install_rename(key_new, key_path, err, err_size);
      done = ENROL_RECOVER_COMPLETED;
    } else {
      done = ENROL_RECOVER_ROLLED_BACK;
    }
  }
  if (rc != 0)
    return -1;
  /* No fsync after removing: a removal lost to a power cut is done again
   * by the next recovery, with the same result. */
  if (done == ENROL_RECOVER_ROLLED_BACK &&
      (install_remove(key_new, err, err_size) != 0 || install_remove(cert_new, err, err_size) != 0))
    return -1;
  if (done == ENROL_RECOVER_COMPLETED)
    log_info("enrol", "install_completed",
             "cert=%s key=%s reason=\"a renewed pair was committed before a stop; finished\"",
             cert_path, key_path);
  else if (done == ENROL_RECOVER_ROLLED_BACK)
    log_info("enrol", "install_rolled_back",
             "cert=%s key=%s reason=\"a renewal stopped before its commit; the current pair "
             "stays\"",
             cert_path, key_path);
  if (outcome)
    *outcome = done;
  if (!install_exists(cert_path) && !install_exists(key_path))
    return 0; /* not enrolled yet */
  if (!install_pair_ok(cert_path, key_path, why, sizeof(why))) {
    snprintf(err, err_size,
             "%s; this device has no working certificate and key: enrol it again with a new "
             "enrolment token (or install a matching certificate and key)",
             why);
    return -1;
  }
  return 0;
}
