/*
 * settings.c - flags and the config file (settings.h).
 */
#include "posctl/settings.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "platform/config.h"

/* The config file's table: section [posctl], one row per key. */
struct settings_file {
  char *url;
  char *cert;
  char *key;
  char *ca;
};

static const struct config_key settings_keys[] = {
    {"posctl", "url", CONFIG_STRING, NULL, 0, 0, offsetof(struct settings_file, url),
     "the collector's address, https://HOST:PORT (the same mutual-TLS port the stores use)"},
    {"posctl", "cert", CONFIG_STRING, NULL, 0, 0, offsetof(struct settings_file, cert),
     "the admin's certificate (PEM, SAN URI urn:pos:admin:<name>)"},
    {"posctl", "key", CONFIG_STRING, NULL, 0, 0, offsetof(struct settings_file, key),
     "the admin certificate's private key (PEM)"},
    {"posctl", "ca", CONFIG_STRING, NULL, 0, 0, offsetof(struct settings_file, ca),
     "the CA the collector's certificate chains to (PEM); unset: the system's CAs"},
};
#define SETTINGS_KEY_COUNT (sizeof(settings_keys) / sizeof(settings_keys[0]))

void posctl_settings_write_example(FILE *out)
{
  config_write_example(out, settings_keys, SETTINGS_KEY_COUNT,
                       "posctl configuration (INI): --config FILE, $POSCTL_CONFIG,\n"
                       "~/.config/posctl.conf or " POSCTL_SYSTEM_CONFIG ", the first found.\n"
                       "Flags (--url, --cert, --key, --ca) win over the file; relative paths\n"
                       "are taken from the file's directory.");
}

void posctl_settings_free(struct posctl_settings *settings)
{
  if (!settings)
    return;
  free(settings->url);
  free(settings->cert);
  free(settings->key);
  free(settings->ca);
  memset(settings, 0, sizeof(*settings));
}

/* Which file to read: sets `path` ("" for none). Returns 0, or -1 with `err`. */
static int settings_find(const struct posctl_flags *flags, char *path, size_t path_size,
                         char *err, size_t err_size)
{
  const char *env = getenv("POSCTL_CONFIG"), *home = getenv("HOME");
  path[0] = '\0';
  if (flags->config || (env && *env)) {
    const char *named = flags->config ? flags->config : env;
    if (access(named, F_OK) != 0) {
      snprintf(err, err_size, "config file %s (%s) does not exist: %s", named,
               flags->config ? "--config" : "$POSCTL_CONFIG", strerror(errno));
      return -1;
    }
    snprintf(path, path_size, "%s", named);
    return 0;
  }
  if (home && *home) {
    snprintf(path, path_size, "%s/.config/posctl.conf", home);
    if (access(path, F_OK) == 0)
      return 0;
  }
  snprintf(path, path_size, "%s", POSCTL_SYSTEM_CONFIG);
  if (access(path, F_OK) == 0)
    return 0;
  path[0] = '\0';
  return 0;
}

/* Takes `value` (a path from the file at `config_path`) relative to that file's directory. */
static char *settings_path_from(const char *config_path, char *value)
{
  const char *slash = strrchr(config_path, '/');
  size_t dir_len, len;
  char *joined;
  if (!value || value[0] == '/' || !slash)
    return value;
  dir_len = (size_t)(slash - config_path);
  len = dir_len + 1 + strlen(value) + 1;
  joined = malloc(len);
  if (!joined)
    return value;
  snprintf(joined, len, "%.*s/%s", (int)dir_len, config_path, value);
  free(value);
  return joined;
}

/* Sets *slot to the flag's value when given, else takes the file's (moving it). */
static int settings_pick(char **slot, const char *flag, char **from_file)
{
  if (flag) {
    *slot = strdup(flag);
    return *slot ? 0 : -1;
  }
  *slot = *from_file;
  *from_file = NULL;
  return 0;
}

/* The file a setting names must be readable; says where the name came from. */
static int settings_readable(const char *what, const char *path, int from_flag,
                             const struct posctl_settings *settings, char *err, size_t err_size)
{
  if (access(path, R_OK) == 0)
    return 0;
  snprintf(err, err_size, "cannot read the %s file %s (from %s): %s", what, path,
           from_flag ? "the command line" : settings->config_path, strerror(errno));
  return -1;
}

static int settings_check(const struct posctl_flags *flags, const struct posctl_settings *s,
                          char *err, size_t err_size)
{
  const char *where = s->config_path[0] ? s->config_path : "no config file found";
  if (!s->url || !*s->url) {
    snprintf(err, err_size, "no collector URL: give --url https://HOST:PORT or url = in [posctl] "
             "of a config file (%s; see 'posctl help config')", where);
    return -1;
  }
  if (strncmp(s->url, "https://", 8) != 0) {
    snprintf(err, err_size, "the collector URL \"%s\" must start with https:// (the admin API is "
             "served over mutual TLS only)", s->url);
    return -1;
  }
  if (!s->cert || !*s->cert || !s->key || !*s->key) {
    snprintf(err, err_size, "no admin certificate: give --cert FILE and --key FILE, or cert = "
             "and key = in [posctl] of a config file (%s; see 'posctl help config')", where);
    return -1;
  }
  if (settings_readable("certificate", s->cert, flags->cert != NULL, s, err, err_size) ||
      settings_readable("key", s->key, flags->key != NULL, s, err, err_size))
    return -1;
  if (s->ca && *s->ca && settings_readable("CA", s->ca, flags->ca != NULL, s, err, err_size))
    return -1;
  return 0;
}

int posctl_settings_load(const struct posctl_flags *flags, struct posctl_settings *settings,
                         char *err, size_t err_size)
{
  struct settings_file file;
  int rc = -1;
  memset(settings, 0, sizeof(*settings));
  memset(&file, 0, sizeof(file));
  if (settings_find(flags, settings->config_path, sizeof(settings->config_path), err, err_size))
    goto out;
  if (settings->config_path[0]) {
    char why[CONFIG_ERROR_MAX];
    if (config_load(settings->config_path, settings_keys, SETTINGS_KEY_COUNT, &file, why,
                    sizeof(why))) {
      snprintf(err, err_size, "%s (see 'posctl help config')", why);
      goto out;
    }
    file.cert = settings_path_from(settings->config_path, file.cert);
    file.key = settings_path_from(settings->config_path, file.key);
    file.ca = settings_path_from(settings->config_path, file.ca);
  }
  if (settings_pick(&settings->url, flags->url, &file.url) ||
      settings_pick(&settings->cert, flags->cert, &file.cert) ||
      settings_pick(&settings->key, flags->key, &file.key) ||
      settings_pick(&settings->ca, flags->ca, &file.ca)) {
    snprintf(err, err_size, "out of memory reading the settings");
    goto out;
  }
  rc = settings_check(flags, settings, err, err_size);
out:
  config_free(settings_keys, SETTINGS_KEY_COUNT, &file);
  return rc;
}
