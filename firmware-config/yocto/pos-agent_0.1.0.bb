SUMMARY = "POS store edge agent: sales journal, POS API and uplink"
DESCRIPTION = "Takes every sale from the store's POS terminals into a durable \
journal on flash (SQLite, WAL), serves the store's status page and sends the \
sales to the central collector over mutual TLS."
HOMEPAGE = "https://git.example.com/pos/pos-edge"
LICENSE = "CLOSED"

# Layers: openembedded-core, meta-oe (libuv, jansson, protobuf-c, libinih),
# meta-networking (mbedtls 2.28: the code uses the 2.x API).
DEPENDS = "sqlite3 libuv curl mbedtls protobuf-c protobuf-c-native zstd libinih jansson"

# llhttp (Node.js's HTTP parser) is compiled into the binary from its
# generated C sources, as the Debian build does from /usr/share/llhttp.
LLHTTP_VERSION = "8.1.0"
SRC_URI = "git://git.example.com/pos/pos-edge.git;protocol=https;branch=main \
           https://github.com/nodejs/llhttp/archive/refs/tags/release/v${LLHTTP_VERSION}.tar.gz;name=llhttp;downloadfilename=llhttp-${LLHTTP_VERSION}.tar.gz"
# Pin the release commit, and llhttp's checksum (bitbake prints it on the
# first fetch).
SRCREV = "${AUTOREV}"
SRC_URI[llhttp.sha256sum] = ""
PV = "0.1.0+git${SRCPV}"
S = "${WORKDIR}/git"
LLHTTP_DIR = "${WORKDIR}/llhttp-release-v${LLHTTP_VERSION}"

inherit cmake pkgconfig systemd useradd features_check

# Type=notify unit, sysusers.d and tmpfiles.d: a systemd distribution only.
REQUIRED_DISTRO_FEATURES = "systemd"

# The profile installed as /etc/pos-agent/agent.conf: counter-terminal or
# store-hub (both are always in ${datadir}/pos-agent/profiles).
POS_AGENT_PROFILE ??= "counter-terminal"

# The agent alone: the collector (and its librdkafka) is not built.
EXTRA_OECMAKE = " \
    -DPOS_TESTS=OFF \
    -DPOS_COLLECTOR=OFF \
    -DPOS_DEVICE_PROFILE=${POS_AGENT_PROFILE} \
    -DLLHTTP_SOURCE_DIR=${LLHTTP_DIR}/src \
    -DLLHTTP_INCLUDE_DIR=${LLHTTP_DIR}/include \
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
