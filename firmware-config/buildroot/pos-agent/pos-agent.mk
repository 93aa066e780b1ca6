################################################################################
#
# pos-agent
#
# Drop this folder into a BR2_EXTERNAL tree as package/pos-agent/ and source
# its Config.in from the tree's Config.in. For a working copy instead of the
# release below, put in local.mk:
#   POS_AGENT_OVERRIDE_SRCDIR = /path/to/pos-edge
#
################################################################################

POS_AGENT_VERSION = 0.1.0
POS_AGENT_SITE = https://git.example.com/pos/pos-edge.git
POS_AGENT_SITE_METHOD = git
# llhttp (MIT) is compiled in. The sources are the company's: legal-info
# does not save them.
POS_AGENT_LICENSE = Proprietary, MIT (llhttp)
POS_AGENT_REDISTRIBUTE = NO
POS_AGENT_DEPENDENCIES = \
	sqlite libuv libcurl mbedtls protobuf-c host-protobuf-c zstd inih \
	jansson host-pkgconf

# llhttp (Node.js's HTTP parser) is compiled into the binary from its
# generated C sources, as the Debian build does from /usr/share/llhttp;
# Buildroot has no package for it. Add its sha256 to pos-agent.hash.
POS_AGENT_LLHTTP_VERSION = 8.1.0
POS_AGENT_EXTRA_DOWNLOADS = \
	https://github.com/nodejs/llhttp/archive/refs/tags/release/v$(POS_AGENT_LLHTTP_VERSION).tar.gz

define POS_AGENT_EXTRACT_LLHTTP
	mkdir -p $(@D)/llhttp
	$(call suitable-extractor,v$(POS_AGENT_LLHTTP_VERSION).tar.gz) \
		$(POS_AGENT_DL_DIR)/v$(POS_AGENT_LLHTTP_VERSION).tar.gz | \
		$(TAR) --strip-components=1 -C $(@D)/llhttp $(TAR_OPTIONS) -
endef
POS_AGENT_POST_EXTRACT_HOOKS += POS_AGENT_EXTRACT_LLHTTP

# No tests (nor their fault hooks) in the firmware, nor the collector (no
# librdkafka); protoc-c is the host's.
POS_AGENT_CONF_OPTS = \
	-DPOS_TESTS=OFF \
	-DPOS_COLLECTOR=OFF \
	-DPOS_DEVICE_PROFILE=$(call qstrip,$(BR2_PACKAGE_POS_AGENT_PROFILE)) \
	-DPROTOC_C=$(HOST_DIR)/bin/protoc-c \
	-DLLHTTP_SOURCE_DIR=$(@D)/llhttp/src \
	-DLLHTTP_INCLUDE_DIR=$(@D)/llhttp/include \
	-DPOS_SYSTEMD_UNITDIR=/usr/lib/systemd/system \
	-DPOS_TMPFILESDIR=/usr/lib/tmpfiles.d \
	-DPOS_SYSUSERSDIR=/usr/lib/sysusers.d

# Only the device's files: the collector and the test tools are not flashed.
define POS_AGENT_INSTALL_TARGET_CMDS
	DESTDIR=$(TARGET_DIR) $(BR2_CMAKE) --install $(POS_AGENT_BUILDDIR) \
		--component agent
endef

# The user exists in the image (and sysusers.d keeps it on a wiped /etc).
define POS_AGENT_USERS
	pos-agent -1 pos-agent -1 * /var/lib/pos-agent - - POS store edge agent
endef

# The configuration is readable by the agent only; tmpfiles.d does the same
# at boot, but a read-only root file system needs it in the image.
define POS_AGENT_PERMISSIONS
	/etc/pos-agent d 0750 root pos-agent - - - - -
	/etc/pos-agent/agent.conf f 0640 root pos-agent - - - - -
endef

define POS_AGENT_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 /dev/null \
		$(TARGET_DIR)/usr/lib/systemd/system-preset/80-pos-agent.preset
	echo "enable pos-agent.service" > \
		$(TARGET_DIR)/usr/lib/systemd/system-preset/80-pos-agent.preset
endef

$(eval $(cmake-package))
