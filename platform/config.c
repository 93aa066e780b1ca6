/*
 * config.c - table-driven INI configuration on inih.
 */
#include "platform/config.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "platform/log.h"

struct config_load_state {
  const struct config_key *keys;
  size_t key_count;
  void *cfg;
  char *err;
  size_t err_size;
};

static const struct config_key *config_find(const struct config_key *keys, size_t n,
                                            const char *section, const char *name)
{
  for (size_t i = 0; i < n; i++) {
    if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
      return &keys[i];
  }
  return NULL;
}

static int config_section_known(const struct config_key *keys, size_t n, const char *section)
{
  for (size_t i = 0; i < n; i++) {
    if (strcmp(keys[i].section, section) == 0)
      return 1;
  }
  return 0;
}

static void config_error(char *err, size_t err_size, const char *fmt, ...) LOG_PRINTF(3, 4);

static void config_error(char *err, size_t err_size, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, err_size, fmt, ap);
  va_end(ap);
}

/* Parses a whole decimal integer; rejects empty text, trailing junk and overflow. */
static int config_parse_integer(const char *text, int64_t *value, const char **rest)
{
  char *end;
  long long parsed;

  errno = 0;
  if (text[0] == '\0' || text[0] == ' ' || text[0] == '+')
    return -1;
  parsed = strtoll(text, &end, 10);
  if (errno != 0 || end == text)
    return -1;
  *value = (int64_t)parsed;
  *rest = end;
  return 0;
}

static int config_scale(int64_t value, int64_t factor, int64_t *scaled)
{
  if (__builtin_mul_overflow(value, factor, scaled))
    return -1;
  return 0;
}

static const char *config_type_hint(enum config_type type)
{
  switch (type) {
  case CONFIG_STRING:
    return "text";
  case CONFIG_INT:
    return "a whole number";
  case CONFIG_BOOL:
    return "true or false";
  case CONFIG_DURATION:
    return "a duration with a unit: ms, s, m, h or d (e.g. 15m)";
  case CONFIG_SIZE:
    return "a size in bytes, or with K, M or G (e.g. 4M)";
  case CONFIG_LEVEL:
    return "debug, info, warn or error";
  }
  return "?";
}

/* Formats a DURATION (ms) or SIZE (bytes) bound the way a person would write it. */
static void config_format_amount(enum config_type type, int64_t amount, char *out,
                                 size_t out_size)
{
  if (type == CONFIG_DURATION) {
    if (amount % 3600000 == 0 && amount != 0)
      snprintf(out, out_size, "%" PRId64 "h", amount / 3600000);
    else if (amount % 60000 == 0 && amount != 0)
      snprintf(out, out_size, "%" PRId64 "m", amount / 60000);
    else if (amount % 1000 == 0)
      snprintf(out, out_size, "%" PRId64 "s", amount / 1000);
    else
      snprintf(out, out_size, "%" PRId64 "ms", amount);
  } else if (type == CONFIG_SIZE) {
    if (amount % (1024LL * 1024 * 1024) == 0 && amount != 0)
      snprintf(out, out_size, "%" PRId64 "G", (int64_t)(amount / (1024LL * 1024 * 1024)));
    else if (amount % (1024LL * 1024) == 0 && amount != 0)
      snprintf(out, out_size, "%" PRId64 "M", (int64_t)(amount / (1024LL * 1024)));
    else if (amount % 1024 == 0 && amount != 0)
      snprintf(out, out_size, "%" PRId64 "K", amount / 1024);
    else
      snprintf(out, out_size, "%" PRId64, amount);
  } else {
    snprintf(out, out_size, "%" PRId64, amount);
  }
}

/*
 * Parses `text` for `key` into the config struct. On error writes the
 * problem (without file and line, which the caller knows) into `err`.
 */
static int config_apply(const struct config_key *key, void *cfg, const char *text, char *err,
                        size_t err_size)
{
  char *field = (char *)cfg + key->offset;
  int64_t number = 0;
  const char *rest = "";

  switch (key->type) {
  case CONFIG_STRING: {
    char *copy = strdup(text);
    if (!copy) {
      config_error(err, err_size, "out of memory");
      return -1;
    }
    free(*(char **)field);
    *(char **)field = copy;
    return 0;
  }
  case CONFIG_BOOL: {
    int truth;
    if (!strcasecmp(text, "true") || !strcasecmp(text, "yes") || !strcasecmp(text, "on") ||
        !strcmp(text, "1"))
      truth = 1;
    else if (!strcasecmp(text, "false") || !strcasecmp(text, "no") ||
             !strcasecmp(text, "off") || !strcmp(text, "0"))
      truth = 0;
    else {
      config_error(err, err_size, "[%s] %s = \"%s\": needs %s", key->section, key->name, text,
                   config_type_hint(key->type));
      return -1;
    }
    *(int *)field = truth;
    return 0;
  }
  case CONFIG_LEVEL: {
    enum log_level level;
    if (log_level_parse(text, &level)) {
      config_error(err, err_size, "[%s] %s = \"%s\": needs %s", key->section, key->name, text,
                   config_type_hint(key->type));
      return -1;
    }
    *(int *)field = (int)level;
    return 0;
  }
  case CONFIG_INT:
  case CONFIG_DURATION:
  case CONFIG_SIZE:
    break;
  }

  if (config_parse_integer(text, &number, &rest))
    goto bad_value;
  if (key->type == CONFIG_INT) {
    if (*rest != '\0')
      goto bad_value;
  } else if (key->type == CONFIG_DURATION) {
    int64_t factor;
    if (!strcmp(rest, "ms"))
      factor = 1;
    else if (!strcmp(rest, "s"))
      factor = 1000;
    else if (!strcmp(rest, "m"))
      factor = 60000;
    else if (!strcmp(rest, "h"))
      factor = 3600000;
    else if (!strcmp(rest, "d"))
      factor = 86400000;
    else if (*rest == '\0' && number == 0)
      factor = 1;
    else {
      config_error(err, err_size, "[%s] %s = \"%s\": needs a unit (ms, s, m, h, d), e.g. \"%s%s\"",
                   key->section, key->name, text, text, *rest ? "" : "s");
      return -1;
    }
    if (config_scale(number, factor, &number))
      goto bad_value;
  } else {
    int64_t factor;
    if (*rest == '\0' || !strcmp(rest, "B"))
      factor = 1;
    else if (!strcasecmp(rest, "K") || !strcasecmp(rest, "KB") || !strcasecmp(rest, "KiB"))
      factor = 1024;
    else if (!strcasecmp(rest, "M") || !strcasecmp(rest, "MB") || !strcasecmp(rest, "MiB"))
      factor = 1024LL * 1024;
    else if (!strcasecmp(rest, "G") || !strcasecmp(rest, "GB") || !strcasecmp(rest, "GiB"))
      factor = 1024LL * 1024 * 1024;
    else
      goto bad_value;
    if (config_scale(number, factor, &number))
      goto bad_value;
  }

  if ((key->min != 0 || key->max != 0) && (number < key->min || number > key->max)) {
    char lo[32], hi[32];
    config_format_amount(key->type, key->min, lo, sizeof(lo));
    config_format_amount(key->type, key->max, hi, sizeof(hi));
    config_error(err, err_size, "[%s] %s = \"%s\": out of range, must be between %s and %s",
                 key->section, key->name, text, lo, hi);
    return -1;
  }
  *(int64_t *)field = number;
  return 0;

bad_value:
  config_error(err, err_size, "[%s] %s = \"%s\": needs %s", key->section, key->name, text,
               config_type_hint(key->type));
  return -1;
}

/* The longest line inih reads whole (INI_MAX_LINE with its newline and
 * NUL); a longer one it splits without a word, and the rest would be read
 * as a line of its own (seen: a value cut, and "unknown key ror"). */
#define CONFIG_LINE_MAX (INI_MAX_LINE - 2)

/* inih handler: returning 0 makes ini_parse return this line's number. */
static int config_ini_handler(void *user, const char *section, const char *name,
                              const char *value)
{
  struct config_load_state *state = user;
  const struct config_key *key;

  if (!name)
    return 1; /* a section header alone: checked when a key in it appears */
  /* A value continued on an indented line must still fit on one line
   * "name = value", which is how the effective config writes it back. */
  if (strlen(name) + 3 + strlen(value) > CONFIG_LINE_MAX) {
    config_error(state->err, state->err_size,
                 "the value of %s in [%s] is %zu characters: at most %zu fit on one line "
                 "\"%s = ...\" of this file", name, section, strlen(value),
                 CONFIG_LINE_MAX - 3 - strlen(name), name);
    return 0;
  }
  key = config_find(state->keys, state->key_count, section, name);
  if (!key) {
    if (!config_section_known(state->keys, state->key_count, section))
      config_error(state->err, state->err_size,
                   "unknown section [%s] (key %s): see the example config for the sections",
                   section, name);
    else
      config_error(state->err, state->err_size,
                   "unknown key %s in [%s]: check its spelling against the example config",
                   name, section);
    return 0;
  }
  return config_apply(key, state->cfg, value, state->err, state->err_size) == 0;
}

int config_defaults(const struct config_key *keys, size_t n, void *cfg, char *err,
                    size_t err_size)
{
  for (size_t i = 0; i < n; i++) {
    if (!keys[i].default_value)
      continue;
    if (config_apply(&keys[i], cfg, keys[i].default_value, err, err_size))
      return -1;
  }
  return 0;
}

/* The number of the first line of `file` longer than CONFIG_LINE_MAX, or
 * 0; `file` is read from its start and rewound. */
static int config_long_line(FILE *file)
{
  int line = 1, length = 0, c, found = 0;

  while (!found && (c = getc(file)) != EOF) {
    if (c == '\n') {
      line++;
      length = 0;
    } else if (++length > CONFIG_LINE_MAX) {
      found = line;
    }
  }
  rewind(file);
  return found;
}

/* Parses INI `path` over what `cfg` holds. 0, or -1 with `err` = "path[:line]: ...". */
static int config_read(const char *path, const struct config_key *keys, size_t n, void *cfg,
                       char *err, size_t err_size)
{
  char problem[CONFIG_ERROR_MAX] = "";
  struct config_load_state state = {keys, n, cfg, problem, sizeof(problem)};
  FILE *file = fopen(path, "r");
  int line;
  int rc = -1;

  if (!file) {
    config_error(err, err_size, "%s: cannot read the config file: %s", path, strerror(errno));
    goto out;
  }
  line = config_long_line(file);
  if (line > 0) {
    config_error(err, err_size, "%s:%d: the line is longer than %d characters, which the "
                 "INI reader cuts in two: shorten it (a path or URL that long?)", path, line,
                 CONFIG_LINE_MAX);
    goto out;
  }
  line = ini_parse_file(file, config_ini_handler, &state);
  if (line < 0) {
    config_error(err, err_size, "%s: cannot read the config file", path);
    goto out;
  }
  if (line > 0) {
    if (problem[0] == '\0')
      snprintf(problem, sizeof(problem),
               "not an INI line: expected [section] or key = value");
    config_error(err, err_size, "%s:%d: %s", path, line, problem);
    goto out;
  }
  rc = 0;
out:
  if (file)
    fclose(file);
  return rc;
}

int config_load(const char *path, const struct config_key *keys, size_t n, void *cfg,
                char *err, size_t err_size)
{
  if (config_defaults(keys, n, cfg, err, err_size))
    return -1;
  return config_read(path, keys, n, cfg, err, err_size);
}

/* scandir filter: "NAME.conf", NAME not hidden (editors' and tools' temporaries are). */
static int config_dropin_name(const struct dirent *entry)
{
  size_t len = strlen(entry->d_name);
  return entry->d_name[0] != '.' && len > 5 && strcmp(entry->d_name + len - 5, ".conf") == 0;
}

/* Byte order, whatever the locale: the order is part of the configuration. */
static int config_dropin_order(const struct dirent **a, const struct dirent **b)
{
  return strcmp((*a)->d_name, (*b)->d_name);
}

int config_dropins_list(const char *path, struct config_dropins *out, char *err,
                        size_t err_size)
{
  struct dirent **entries = NULL;
  char dir[PATH_MAX];
  int count, rc = -1;

  out->paths = NULL;
  out->count = 0;
  if ((size_t)snprintf(dir, sizeof(dir), "%s.d", path) >= sizeof(dir)) {
    config_error(err, err_size, "%s.d: path too long", path);
    return -1;
  }
  count = scandir(dir, &entries, config_dropin_name, config_dropin_order);
  if (count < 0) {
    if (errno == ENOENT)
      return 0;
    config_error(err, err_size, "%s: cannot read the drop-in directory: %s", dir,
                 strerror(errno));
    return -1;
  }
  out->paths = calloc((size_t)count + 1, sizeof(*out->paths));
  if (!out->paths) {
    config_error(err, err_size, "out of memory");
    goto out;
  }
  for (int i = 0; i < count; i++) {
    struct stat info;
    char file[PATH_MAX];
    if ((size_t)snprintf(file, sizeof(file), "%s/%s", dir, entries[i]->d_name) >= sizeof(file))
      continue;
    /* A directory named like a drop-in is not one; a dangling link is read (and reported). */
    if (stat(file, &info) == 0 && !S_ISREG(info.st_mode))
      continue;
    out->paths[out->count] = strdup(file);
    if (!out->paths[out->count]) {
      config_error(err, err_size, "out of memory");
      goto out;
    }
    out->count++;
  }
  rc = 0;
out:
  for (int i = 0; i < count; i++)
    free(entries[i]);
  free(entries);
  return rc;
}

void config_dropins_free(struct config_dropins *dropins)
{
  if (!dropins)
    return;
  for (size_t i = 0; i < dropins->count; i++)
    free(dropins->paths[i]);
  free(dropins->paths);
  dropins->paths = NULL;
  dropins->count = 0;
}

int config_load_dropins(const char *path, const struct config_key *keys, size_t n, void *cfg,
                        char *err, size_t err_size)
{
  struct config_dropins dropins;
  int rc = config_dropins_list(path, &dropins, err, err_size);

  for (size_t i = 0; rc == 0 && i < dropins.count; i++)
    rc = config_read(dropins.paths[i], keys, n, cfg, err, err_size);
  config_dropins_free(&dropins);
  return rc;
}

int config_set(const struct config_key *keys, size_t n, void *cfg, const char *section,
               const char *name, const char *value, char *err, size_t err_size)
{
  const struct config_key *key = config_find(keys, n, section, name);
  if (!key) {
    config_error(err, err_size, "unknown key %s in [%s]", name, section);
    return -1;
  }
  return config_apply(key, cfg, value, err, err_size);
}

void config_free(const struct config_key *keys, size_t n, void *cfg)
{
  for (size_t i = 0; i < n; i++) {
    if (keys[i].type == CONFIG_STRING) {
      char **field = (char **)((char *)cfg + keys[i].offset);
      free(*field);
      *field = NULL;
    }
  }
}

void config_write_example(FILE *out, const struct config_key *keys, size_t n,
                          const char *header)
{
  const char *section = NULL;

  if (header) {
    const char *line = header;
    while (*line) {
      const char *end = strchr(line, '\n');
      size_t len = end ? (size_t)(end - line) : strlen(line);
      fprintf(out, "; %.*s\n", (int)len, line);
      line += len + (end ? 1 : 0);
    }
  }
  for (size_t i = 0; i < n; i++) {
    const struct config_key *key = &keys[i];
    if (!section || strcmp(section, key->section) != 0) {
      section = key->section;
      fprintf(out, "\n[%s]\n", section);
    }
    fprintf(out, "\n; %s\n; type: %s", key->description, config_type_hint(key->type));
    if (key->min != 0 || key->max != 0) {
      char lo[32], hi[32];
      config_format_amount(key->type, key->min, lo, sizeof(lo));
      config_format_amount(key->type, key->max, hi, sizeof(hi));
      fprintf(out, "; from %s to %s", lo, hi);
    }
    fprintf(out, "\n%s = %s\n", key->name, key->default_value ? key->default_value : "");
  }
}

void config_write_effective(FILE *out, const struct config_key *keys, size_t n,
                            const void *cfg)
{
  static const char *const level_names[] = {"debug", "info", "warn", "error"};

  for (size_t i = 0; i < n; i++) {
    const char *field = (const char *)cfg + keys[i].offset;
    char amount[32];
    fprintf(out, "%s.%s = ", keys[i].section, keys[i].name);
    switch (keys[i].type) {
    case CONFIG_STRING:
      fprintf(out, "%s\n", *(char *const *)field ? *(char *const *)field : "");
      break;
    case CONFIG_BOOL:
      fprintf(out, "%s\n", *(const int *)field ? "true" : "false");
      break;
    case CONFIG_LEVEL: {
      int level = *(const int *)field;
      fprintf(out, "%s\n", level >= 0 && level <= 3 ? level_names[level] : "?");
      break;
    }
    case CONFIG_INT:
    case CONFIG_DURATION:
    case CONFIG_SIZE:
      config_format_amount(keys[i].type, *(const int64_t *)field, amount, sizeof(amount));
      fprintf(out, "%s\n", amount);
      break;
    }
  }
}

static void config_usage(const struct config_program *program, FILE *out)
{
  fprintf(out,
          "usage: %1$s --config FILE          run\n"
          "       %1$s --check-config --config FILE\n"
          "                                   check FILE and print the effective config\n"
          "       %1$s --print-example-config print every key, documented\n"
          "       %1$s --version\n",
          program->name);
  if (program->extra_usage)
    fputs(program->extra_usage, out);
}

int config_cli(const struct config_program *program, int argc, char **argv, void *cfg)
{
  static const struct option options[] = {
      {"config", required_argument, NULL, 'c'},
      {"check-config", no_argument, NULL, 'k'},
      {"print-example-config", no_argument, NULL, 'e'},
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *config_path = NULL;
  int check_only = 0;
  char err[CONFIG_ERROR_MAX];
  int opt;

  optind = 1;
  while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
    switch (opt) {
    case 'c':
      config_path = optarg;
      break;
    case 'k':
      check_only = 1;
      break;
    case 'e':
      config_write_example(stdout, program->keys, program->key_count,
                           program->example_header);
      return 0;
    case 'V':
      printf("%s %s\n", program->name, program->version);
      return 0;
    case 'h':
      config_usage(program, stdout);
      return 0;
    default:
      config_usage(program, stderr);
      return 2;
    }
  }
  if (optind != argc || !config_path) {
    fprintf(stderr, "%s: %s\n", program->name,
            optind != argc ? "unexpected argument" : "--config FILE is required");
    config_usage(program, stderr);
    return 2;
  }
  if (program->load(config_path, cfg, err, sizeof(err))) {
    fprintf(stderr, "%s: %s\n", program->name, err);
    program->free(cfg);
    return CONFIG_CLI_INVALID;
  }
  if (check_only) {
    config_write_effective(stdout, program->keys, program->key_count, cfg);
    program->free(cfg);
    return 0;
  }
  return -1;
}
