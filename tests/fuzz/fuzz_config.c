/*
 * fuzz_config.c - the agent's configuration file: an INI text through
 * agent_config_load, that is inih, the table-driven parser of
 * platform/config.c (strings, integers, booleans, durations, sizes, levels,
 * bounds) with the agent's table (agent/config.c), and the agent's checks
 * of keys that depend on each other.
 *
 * config_load reads a path, so the input goes into a memfd and is read
 * back as /proc/self/fd/N: no disk, and the loader runs as in production.
 * A file that loads is written out with config_write_effective and loaded
 * again: the effective config must load back to itself (pos-agent
 * --check-config prints it for people to copy into a file). A refused file
 * must come with an error naming the file.
 *
 * One exception, an inih quirk (regressions/config/value-starting-with-
 * semicolon.ini): "key =;x" gives the value ";x", but "key = ;x", as the
 * effective config prints it, gives "" (a ';' after a space starts an
 * inline comment). Values starting with ';' are not round-tripped.
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "platform/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static int fuzz_fd = -1;
static char fuzz_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  fuzz_fd = memfd_create("fuzz-config", 0);
  if (fuzz_fd < 0) {
    perror("fuzz-config: memfd_create");
    abort();
  }
  snprintf(fuzz_path, sizeof(fuzz_path), "/proc/self/fd/%d", fuzz_fd);
  return 0;
}

static void fuzz_put(const void *data, size_t size)
{
  if (ftruncate(fuzz_fd, 0) != 0 || (size && pwrite(fuzz_fd, data, size, 0) != (ssize_t)size)) {
    perror("fuzz-config: memfd write");
    abort();
  }
}

/* Writes the effective config as an INI file: "[section]" then "key = value". */
static char *fuzz_effective_ini(const struct agent_config *config, size_t *length)
{
  char *flat = NULL, *ini = NULL, *line, *end;
  size_t flat_len = 0, ini_len = 0;
  FILE *out = open_memstream(&flat, &flat_len);
  FILE *ini_out;
  char section[64] = "";

  if (!out)
    abort();
  config_write_effective(out, agent_config_keys, agent_config_key_count, config);
  fclose(out);
  ini_out = open_memstream(&ini, &ini_len);
  if (!ini_out)
    abort();
  /* "section.name = value" lines, in table order. A section's name may
   * hold dots ("posdb.sales"), a key's never: the key starts after the
   * last dot before " = ". */
  for (line = flat; *line; line = *end ? end + 1 : end) {
    char *dot = NULL, *equals;
    end = strchr(line, '\n');
    if (!end)
      end = line + strlen(line);
    equals = strstr(line, " = ");
    for (char *c = line; equals && c < equals && c < end; c++)
      if (*c == '.')
        dot = c;
    if (!dot || dot > end || (size_t)(dot - line) >= sizeof(section))
      abort();
    if (strncmp(section, line, (size_t)(dot - line)) != 0 || section[dot - line] != '\0') {
      memcpy(section, line, (size_t)(dot - line));
      section[dot - line] = '\0';
      fprintf(ini_out, "[%s]\n", section);
    }
    fprintf(ini_out, "%.*s\n", (int)(end - dot - 1), dot + 1);
  }
  fclose(ini_out);
  free(flat);
  *length = ini_len;
  return ini;
}

/* True when a string value starts with ';' (see the top of the file). */
static int fuzz_has_semicolon_value(const struct agent_config *config)
{
  for (size_t i = 0; i < agent_config_key_count; i++) {
    const struct config_key *key = &agent_config_keys[i];
    const char *value;
    if (key->type != CONFIG_STRING)
      continue;
    value = *(char *const *)((const char *)config + key->offset);
    if (value && value[0] == ';')
      return 1;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct agent_config config, again;
  char err[CONFIG_ERROR_MAX] = "";
  char *ini;
  size_t ini_len;

  log_set_level(LOG_ERROR);
  fuzz_put(data, size);
  if (agent_config_load(fuzz_path, &config, err, sizeof(err)) != 0) {
    if (strstr(err, fuzz_path) == NULL) {
      fprintf(stderr, "fuzz-config: an error that does not name the file: %s\n", err);
      abort();
    }
    agent_config_free(&config);
    return 0;
  }
  if (fuzz_has_semicolon_value(&config)) {
    agent_config_free(&config);
    return 0;
  }
  ini = fuzz_effective_ini(&config, &ini_len);
  fuzz_put(ini, ini_len);
  if (agent_config_load(fuzz_path, &again, err, sizeof(err)) != 0) {
    fprintf(stderr, "fuzz-config: the effective config does not load back: %s\n--\n%.*s--\n",
            err, (int)ini_len, ini);
    abort();
  }
  free(ini);
  agent_config_free(&again);
  agent_config_free(&config);
  return 0;
}
