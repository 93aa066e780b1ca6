/*
 * settings.h - where posctl finds the collector and the admin's
 * certificate: flags, else a config file (INI, section [posctl], keys url,
 * cert, key, ca; one table, platform/config.h, so unknown keys are errors
 * naming file and line).
 *
 * The config file is the first of: --config FILE, $POSCTL_CONFIG,
 * ~/.config/posctl.conf, /etc/pos-collector/posctl.conf. One named by
 * --config or $POSCTL_CONFIG must exist; the two default places are
 * skipped when absent. A flag wins over the file. Relative paths in a file
 * are taken from the file's directory, so a file works from any directory.
 */
#ifndef POSCTL_SETTINGS_H
#define POSCTL_SETTINGS_H

#include <stddef.h>
#include <stdio.h>

/* Where posctl looks last, for a head-office machine's shared setup. */
#define POSCTL_SYSTEM_CONFIG "/etc/pos-collector/posctl.conf"

/* The flags as given (borrowed; NULL = not given). */
struct posctl_flags {
  const char *config;
  const char *url;
  const char *cert;
  const char *key;
  const char *ca;
};

/* The settings in force (malloc'd strings; posctl_settings_free). */
struct posctl_settings {
  char *url;
  char *cert;
  char *key;
  char *ca;                /* NULL: the system's CA store */
  char config_path[4096];  /* the file read, "" when none */
};

/*
 * Fills `settings` from the config file (see the top) and `flags`, and
 * checks them: a URL that is https://, a certificate and key given and
 * readable, a CA file readable when given. Returns 0, or -1 with `err`
 * saying what is missing or wrong, where it came from and how to fix it
 * (posctl exits 2). On error `settings` may hold some values: free it.
 */
int posctl_settings_load(const struct posctl_flags *flags, struct posctl_settings *settings,
                         char *err, size_t err_size);

/* Frees the strings of `settings` (zeroed); NULL-safe. */
void posctl_settings_free(struct posctl_settings *settings);

/* Writes a documented example config file (posctl help config). */
void posctl_settings_write_example(FILE *out);

#endif
