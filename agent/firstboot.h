/*
 * firstboot.h - what a device makes for itself the first time it boots
 * (pos-agent --first-boot, run by pos-agent-firstboot.service before the
 * agent): never at package install or image build time, so that an image
 * flashed onto 2,000 devices carries no secret they would all share.
 */
#ifndef AGENT_FIRSTBOOT_H
#define AGENT_FIRSTBOOT_H

#include "config.h"

/*
 * Makes [api] terminal_tokens when it does not exist: one line "* TOKEN"
 * (any terminal, for the POS application on this device) with 128 bits
 * from getrandom(2), which waits until the kernel's generator is seeded
 * (a device's first boot is when it may not be yet). The file is written
 * beside its place, synced, mode 0640, group pos-agent when that group
 * exists, and linked into place only if the path is still free: a file
 * that exists, provisioned or made before, is never replaced. The token is
 * not logged. Returns 0 (made, or there already), or -1 with `err` saying
 * what failed and where. Main thread, before the agent runs.
 */
int firstboot_make_tokens(const struct agent_config *config, char *err, size_t err_size);

#endif
