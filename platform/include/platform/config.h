/*
 * config.h - configuration as a table.
 *
 * Each program describes its keys once, as an array of `struct config_key`
 * rows: section, name, type, default, bounds, offset into the program's
 * config struct, and one line of description. From that one table come the
 * INI parser (inih), the defaults, `--check-config`, the documented example
 * file (config_write_example) and the tests. Unknown sections or keys, bad
 * values and values out of bounds are errors naming file, line and key:
 *
 *   agent.conf:12: [uplink] interval = "15": needs a unit (ms, s, m, h)
 */
#ifndef PLATFORM_CONFIG_H
#define PLATFORM_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum config_type {
  CONFIG_STRING,   /* char *, malloc'd; freed by config_free */
  CONFIG_INT,      /* int64_t, within [min, max] */
  CONFIG_BOOL,     /* int: true/false, yes/no, on/off, 1/0 */
  CONFIG_DURATION, /* int64_t milliseconds; value needs a unit: ms, s, m, h, d */
  CONFIG_SIZE,     /* int64_t bytes; plain bytes or with K, M, G (powers of 1024) */
  CONFIG_LEVEL,    /* int (enum log_level): debug, info, warn, error */
};

struct config_key {
  const char *section;
  const char *name;
  enum config_type type;
  const char *default_value; /* text, parsed like a value from the file; NULL = unset */
  int64_t min, max;          /* bounds for INT, DURATION (ms) and SIZE (bytes); 0,0 = none */
  size_t offset;             /* offsetof() into the program's config struct */
  const char *description;   /* one line, for the example file and --help */
};

/* Largest error message config_load writes. */
#define CONFIG_ERROR_MAX 512

/*
 * Sets every key of `keys` (n rows) in `cfg` to its default. Returns 0, or
 * -1 with `err` set if a default does not parse (a bug in the table).
 */
int config_defaults(const struct config_key *keys, size_t n, void *cfg, char *err,
                    size_t err_size);

/*
 * Applies defaults, then reads INI `path` into `cfg`. Returns 0, or -1 with
 * `err` holding "path:line: ..." (or "path: ..." when the file cannot be
 * read). On error `cfg` may hold some values: call config_free.
 */
int config_load(const char *path, const struct config_key *keys, size_t n, void *cfg,
                char *err, size_t err_size);

/*
 * The drop-in files of a config file `path`: every "<path>.d/NAME.conf" (a
 * regular file, or a link to one; NAME not starting with '.'), in byte
 * order of NAME, so "10-site.conf" comes before "50-provisioning.conf".
 * They hold what is particular to one device (provisioning writes them),
 * while `path` stays the shipped profile: a package upgrade replaces the
 * profile without asking and never touches a drop-in.
 */
struct config_dropins {
  char **paths; /* "<path>.d/NAME.conf", owned */
  size_t count;
};

/*
 * Lists the drop-ins of `path` into `out` (config_dropins_free it, also on
 * error). No "<path>.d" directory is no drop-ins. Returns 0, or -1 with
 * `err` saying why the directory cannot be read.
 */
int config_dropins_list(const char *path, struct config_dropins *out, char *err,
                        size_t err_size);

/* Frees what config_dropins_list made; `dropins` may be zeroed or NULL. */
void config_dropins_free(struct config_dropins *dropins);

/*
 * Reads the drop-ins of `path` (config_dropins_list) into `cfg` in order,
 * over what is already there (no defaults): a key set by a later file
 * overrides the same key set before, by `path` or an earlier drop-in; keys
 * no file sets keep their value. Call after config_load(path). Returns 0,
 * or -1 with `err` holding "file:line: ..." of the drop-in at fault.
 */
int config_load_dropins(const char *path, const struct config_key *keys, size_t n, void *cfg,
                        char *err, size_t err_size);

/*
 * Sets one key from text, as if read from a file (for command-line
 * overrides and tests). Returns 0, or -1 with `err` set.
 */
int config_set(const struct config_key *keys, size_t n, void *cfg, const char *section,
               const char *name, const char *value, char *err, size_t err_size);

/* Frees the strings config_load/config_set allocated in `cfg`. */
void config_free(const struct config_key *keys, size_t n, void *cfg);

/*
 * Writes a documented example file: every section and key with its
 * description, type, bounds and default. `header` (may be NULL) is written
 * first as comment lines.
 */
void config_write_example(FILE *out, const struct config_key *keys, size_t n,
                          const char *header);

/* Writes "section.name = value" for every key: the effective configuration. */
void config_write_effective(FILE *out, const struct config_key *keys, size_t n,
                            const void *cfg);

/* A program's configuration, for the command line both programs share. */
struct config_program {
  const char *name;           /* "pos-agent" */
  const char *version;
  const struct config_key *keys;
  size_t key_count;
  const char *example_header; /* comment lines atop --print-example-config */
  /* Loads `path` into `cfg` (defaults, table, cross-key checks); 0 or -1 with `err`. */
  int (*load)(const char *path, void *cfg, char *err, size_t err_size);
  void (*free)(void *cfg);
  const char *extra_usage;    /* more usage lines for --help, or NULL */
};

/* config_cli's exit code for a configuration that does not load. A
 * service may map it to one its unit does not restart on (EX_CONFIG). */
#define CONFIG_CLI_INVALID 1

/*
 * The shared command line: --config FILE (run), --check-config (check and
 * print the effective config), --print-example-config, --version, --help.
 * Returns -1 when the program should run, with `cfg` loaded (the caller
 * frees it with program->free); otherwise the exit code, with everything
 * printed (the error once, on stderr) and freed: 0, 2 for a bad command
 * line, CONFIG_CLI_INVALID for a configuration that does not load, with
 * --check-config or without.
 */
int config_cli(const struct config_program *program, int argc, char **argv, void *cfg);

#endif
