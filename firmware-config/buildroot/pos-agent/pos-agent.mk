################################################################################
#
# pos-agent
#
################################################################################

# Drop this folder into a BR2_EXTERNAL tree as package/pos-agent/ and source
# its Config.in from the tree's Config.in. The version, and the sums in
# pos-agent.hash, are written by scripts/release-source.sh VERSION, which
# makes the release tarball below (reproducibly, from the release commit).
# Without a server, put the tarball in $(BR2_DL_DIR)/pos-agent/: Buildroot
# takes it from there after checking its hash. For a working copy instead,
# put in local.mk:
#   POS_AGENT_OVERRIDE_SRCDIR = /path/to/pos-edge
POS_AGENT_VERSION = 0.2.0
POS_AGENT_SOURCE = pos-edge-$(POS_AGENT_VERSION).tar.gz
POS_AGENT_SITE = https://git.example.com/pos/pos-edge/releases
# llhttp (MIT) is compiled in; the rest is the company's, not for
# redistribution: legal-info saves the licence files, not the sources.
POS_AGENT_LICENSE = Proprietary, MIT (llhttp)
POS_AGENT_LICENSE_FILES = LICENSE llhttp/LICENSE-MIT
POS_AGENT_REDISTRIBUTE = NO

POS_AGENT_DEPENDENCIES = \
	host-pkgconf \
	host-protobuf-c \
	inih \
	jansson \
	libuv \
	mbedtls \
	protobuf-c \
	sqlite \
	zstd

# llhttp (Node.js's HTTP parser) is compiled into the binary from the
# generated C sources of its release, as the Debian build does from
# /usr/share/llhttp; Buildroot has no package for it. A new version needs
# its sums in pos-agent.hash (scripts/release-source.sh --llhttp-tarball).
POS_AGENT_LLHTTP_VERSION = 8.1.0
POS_AGENT_LLHTTP_SOURCE = v$(POS_AGENT_LLHTTP_VERSION).tar.gz
POS_AGENT_EXTRA_DOWNLOADS = \
	https://github.com/nodejs/llhttp/archive/refs/tags/release/$(POS_AGENT_LLHTTP_SOURCE)

define POS_AGENT_EXTRACT_LLHTTP
	mkdir -p $(@D)/llhttp
	$(call suitable-extractor,$(POS_AGENT_LLHTTP_SOURCE)) \
		$(POS_AGENT_DL_DIR)/$(POS_AGENT_LLHTTP_SOURCE) | \
		$(TAR) --strip-components=1 -C $(@D)/llhttp $(TAR_OPTIONS) -
endef
POS_AGENT_POST_EXTRACT_HOOKS += POS_AGENT_EXTRACT_LLHTTP

# No tests (nor their fault hooks) in the firmware, nor the collector (no
# librdkafka); protoc-c is the host's. The systemd files are installed
# below, the Buildroot way.
POS_AGENT_CONF_OPTS = \
	-DPOS_TESTS=OFF \
	-DPOS_COLLECTOR=OFF \
	-DPOS_INSTALL_SYSTEMD=OFF \
	-DPOS_DEVICE_PROFILE=$(call qstrip,$(BR2_PACKAGE_POS_AGENT_PROFILE)) \
	-DPROTOC_C=$(HOST_DIR)/bin/protoc-c \
	-DLLHTTP_SOURCE_DIR=$(@D)/llhttp/src \
	-DLLHTTP_INCLUDE_DIR=$(@D)/llhttp/include

# The agent uses mbedTLS's 2.x API and its CMake refuses any other than
# 2.28; Buildroot ships 2.28 up to 2024.11.x (2025.02 moved to 3.6). Say
# so before anything is built.
ifeq ($(BR2_PACKAGE_POS_AGENT)$(BR_BUILDING),yy)
ifeq ($(filter 2.28.%,$(MBEDTLS_VERSION)),)
$(error pos-agent needs mbedTLS 2.28 (the 2.x API), this Buildroot has mbedtls $(MBEDTLS_VERSION): use Buildroot 2024.11.x or older, or an mbedtls 2.28 package in place of Buildroot's)
endif
endif

# Only the device's files: the collector and the test tools are not flashed.
define POS_AGENT_INSTALL_TARGET_CMDS
	DESTDIR=$(TARGET_DIR) $(BR2_CMAKE) --install $(POS_AGENT_BUILDDIR) \
		--component agent
endef

# The units as configured by the build (they name the installed binary).
# pos-agent-firstboot.service is pulled in by pos-agent.service; the
# preset enables the agent (Buildroot runs systemctl preset-all).
define POS_AGENT_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(POS_AGENT_BUILDDIR)/firmware-config/pos-agent.service \
		$(TARGET_DIR)/usr/lib/systemd/system/pos-agent.service
	$(INSTALL) -D -m 0644 \
		$(POS_AGENT_BUILDDIR)/firmware-config/pos-agent-firstboot.service \
		$(TARGET_DIR)/usr/lib/systemd/system/pos-agent-firstboot.service
	$(INSTALL) -D -m 0644 $(@D)/firmware-config/tmpfiles.d/pos-agent.conf \
		$(TARGET_DIR)/usr/lib/tmpfiles.d/pos-agent.conf
	$(INSTALL) -D -m 0644 $(@D)/firmware-config/sysusers.d/pos-agent.conf \
		$(TARGET_DIR)/usr/lib/sysusers.d/pos-agent.conf
	$(INSTALL) -D -m 0644 $(POS_AGENT_PKGDIR)/80-pos-agent.preset \
		$(TARGET_DIR)/usr/lib/systemd/system-preset/80-pos-agent.preset
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

$(eval $(cmake-package))
