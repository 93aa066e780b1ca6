SUMMARY = "POS store edge agent: sales journal, POS API and uplink"
DESCRIPTION = "Takes every sale from the store's POS terminals into a durable \
journal on flash (SQLite, WAL), serves the store's status page and sends the \
sales to the central collector over mutual TLS."
HOMEPAGE = "https://git.example.com/pos/pos-edge"
# The company's code (LICENSE: not for redistribution) and llhttp, compiled
# in (MIT). The sums are the release's: scripts/release-source.sh writes
# them, and SRCREV, LLHTTP_VERSION and llhttp's sha256sum below.
LICENSE = "Proprietary & MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=5a861084c8f034b3b4de18acb4411cd2 \
                    file://llhttp/LICENSE-MIT;md5=f5e274d60596dd59be0a1d1b19af7978"

# Layers: openembedded-core, meta-oe (libinih, protobuf-c), meta-networking
# (mbedtls 2.28: the code uses the 2.x API, see conf/distro/include/pos-agent.inc).
DEPENDS = "jansson libinih libuv mbedtls protobuf-c protobuf-c-native sqlite3 zstd"

# llhttp (Node.js's HTTP parser) is compiled into the binary from the
# generated C sources of its release, as the Debian build does from
# /usr/share/llhttp; it is unpacked into ${S}/llhttp, as in Buildroot.
# The sources land in ${BP} (destsuffix), where S is by default in every
# release, with UNPACKDIR (${UNPACKDIR}/${BP}) and before (${WORKDIR}/${BP}):
# S is not set here.
LLHTTP_VERSION = "8.1.0"
SRC_URI = "git://git.example.com/pos/pos-edge.git;protocol=https;branch=main;destsuffix=${BP} \
           https://github.com/nodejs/llhttp/archive/refs/tags/release/v${LLHTTP_VERSION}.tar.gz;name=llhttp;downloadfilename=llhttp-${LLHTTP_VERSION}.tar.gz;subdir=${BP}/llhttp;striplevel=1"
# The release commit (scripts/release-source.sh).
SRCREV = "939ebc693c72631db7e9126b28ec0a385939415c"
# GitHub's archive of llhttp's tag release/v${LLHTTP_VERSION}: firmware-config/README.md
# says where the sum comes from.
SRC_URI[llhttp.sha256sum] = "9da0d23453e8e242cf3b2bc5d6fb70b1517b8a70520065fcbad6be787e86638e"

inherit cmake pkgconfig systemd useradd features_check

# Type=notify unit, sysusers.d and tmpfiles.d: a systemd distribution only.
REQUIRED_DISTRO_FEATURES = "systemd"

# CMake refuses an mbedTLS other than 2.28 at configure; say it at parse
# time instead, with what to do.
python () {
    if not (d.getVar('PREFERRED_VERSION_mbedtls') or '').startswith('2.28'):
        raise bb.parse.SkipRecipe('needs mbedTLS 2.28: require '
                                  'conf/distro/include/pos-agent.inc '
                                  '(PREFERRED_VERSION_mbedtls = "2.28.%")')
}

# The profile installed as /etc/pos-agent/agent.conf: counter-terminal or
# store-hub (both are always in ${datadir}/pos-agent/profiles).
POS_AGENT_PROFILE ??= "counter-terminal"

# The agent alone: the collector (and its librdkafka) is not built.
EXTRA_OECMAKE = " \
    -DPOS_TESTS=OFF \
    -DPOS_COLLECTOR=OFF \
    -DPOS_DEVICE_PROFILE=${POS_AGENT_PROFILE} \
    -DLLHTTP_SOURCE_DIR=${S}/llhttp/src \
    -DLLHTTP_INCLUDE_DIR=${S}/llhttp/include \
    -DPOS_SYSTEMD_UNITDIR=${systemd_system_unitdir} \
    -DPOS_TMPFILESDIR=${nonarch_libdir}/tmpfiles.d \
    -DPOS_SYSUSERSDIR=${nonarch_libdir}/sysusers.d \
"

# Only the device's component: the collector and test tools stay out.
do_install() {
    DESTDIR='${D}' cmake --install '${B}' --component agent
    chown -R root:pos-agent ${D}${sysconfdir}/pos-agent
    chmod 0750 ${D}${sysconfdir}/pos-agent
    chmod 0640 ${D}${sysconfdir}/pos-agent/agent.conf
}

USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --user-group --home-dir /var/lib/pos-agent \
                       --no-create-home --shell /sbin/nologin pos-agent"

SYSTEMD_SERVICE:${PN} = "pos-agent.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# Never edited on a device: provisioning writes agent.conf.d/*.conf, and
# pos-agent-firstboot.service (pulled in by the agent) makes the terminal
# token on the device's first boot; neither is in the image.
CONFFILES:${PN} = "${sysconfdir}/pos-agent/agent.conf"
FILES:${PN} += " \
    ${systemd_system_unitdir}/pos-agent.service \
    ${systemd_system_unitdir}/pos-agent-firstboot.service \
    ${nonarch_libdir}/tmpfiles.d/pos-agent.conf \
    ${nonarch_libdir}/sysusers.d/pos-agent.conf \
    ${datadir}/pos-agent \
"
