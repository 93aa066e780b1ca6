# packaging.cmake - what is flashed beside the binary, and the .deb.
#
# Included at the end of the root CMakeLists.txt:
#
#   include(firmware-config/packaging.cmake)
#
# Install tree (component "agent"), usable as a root-file-system overlay:
#
#   DESTDIR=/path/to/overlay cmake --install build --component agent
#
#   /usr/bin/pos-agent
#   /etc/pos-agent/agent.conf                  the device profile (conffile, never edited)
#   /etc/pos-agent/agent.conf.d/               the device's own keys (drop-ins; empty)
#   /usr/share/pos-agent/agent.conf.example    every key, documented
#   /usr/share/pos-agent/profiles/*.conf       all device profiles
#   /usr/share/pos-agent/terminals.example     the terminal tokens file's format
#   /usr/share/pos-agent/recipes.csv           the chain's default recipes (read into a
#                                              journal that has none; RECIPES.md)
#   /usr/lib/systemd/system/pos-agent.service
#   /usr/lib/systemd/system/pos-agent-firstboot.service   the device's token, first boot
#   /usr/lib/tmpfiles.d/pos-agent.conf         /var/lib/pos-agent
#   /usr/lib/sysusers.d/pos-agent.conf         the pos-agent user and group
#
# and, in the .deb only (component "debian"):
#   /usr/share/doc/pos-agent/{copyright,changelog.gz}
#   /usr/share/lintian/overrides/pos-agent
#
# The directories under /var and the user are created on the device at
# boot by systemd-sysusers and systemd-tmpfiles (or by the .deb's
# postinst), never in the image: /var is often a separate partition.
# /etc/pos-agent/terminals holds per-device secrets and is never in an
# image either, nor made by the .deb's postinst: provisioning writes it, or
# pos-agent-firstboot.service makes one with the device's own token on its
# first boot.
#
# Package (per architecture; cross/build.sh ARCH --release --package):
#
#   cd build-aarch64-release && cpack -G DEB   ->  pos-agent_0.2.0_arm64.deb
#
# Its Depends come from dpkg-shlibdeps on the binary, i.e. from the
# libraries actually linked, for the target's architecture (the
# multiarch :arm64 libraries must be installed, as cross/build.sh does).
# A build against a sysroot (-DPOS_CROSS_SYSROOT, cross/build.sh armhf
# when the multiarch packages cannot be installed) has its libraries in the
# sysroot, not in the build machine's dpkg database: dpkg-shlibdeps then
# reads the sysroot's own dpkg database (<sysroot>/var/lib/dpkg, which
# cross/build.sh records from the .deb files it unpacked: file lists,
# shlibs and symbols files), through a copy in the build directory whose
# file lists name the files where they are on this machine
# (<sysroot>/usr/lib/<triplet>/...), and searches the sysroot's library
# directory first.
#
# Options:
#   POS_DEVICE_PROFILE   profile installed as /etc/pos-agent/agent.conf
#                        (counter-terminal or store-hub; default counter-terminal)
#   POS_SYSTEMD_UNITDIR, POS_TMPFILESDIR, POS_SYSUSERSDIR
#                        where those go (relative to the prefix, or absolute;
#                        Yocto passes its ${systemd_system_unitdir} etc.)
#   POS_INSTALL_SYSTEMD  ON (default): install the units, tmpfiles.d and
#                        sysusers.d with the agent; OFF: only configure the
#                        units (build dir firmware-config/), for a build
#                        system that installs them itself (Buildroot's
#                        POS_AGENT_INSTALL_INIT_SYSTEMD)
#   POS_CONFIG_EXAMPLE   the documented example file to install
#                        (default firmware-config/agent.conf.example)
include_guard(GLOBAL)
include(GNUInstallDirs)

set(POS_FIRMWARE_DIR ${CMAKE_CURRENT_LIST_DIR})

# A firmware's layout is the system's own: /usr, with /etc beside it. Only
# the default is changed; -DCMAKE_INSTALL_PREFIX=... still wins.
if(CMAKE_INSTALL_PREFIX_INITIALIZED_TO_DEFAULT)
  set(CMAKE_INSTALL_PREFIX /usr CACHE PATH "Install prefix" FORCE)
endif()

set(POS_DEVICE_PROFILE counter-terminal CACHE STRING
    "device profile installed as /etc/pos-agent/agent.conf")
set_property(CACHE POS_DEVICE_PROFILE PROPERTY STRINGS counter-terminal store-hub)
set(POS_SYSTEMD_UNITDIR lib/systemd/system CACHE STRING "systemd system unit directory")
set(POS_TMPFILESDIR lib/tmpfiles.d CACHE STRING "tmpfiles.d directory")
set(POS_SYSUSERSDIR lib/sysusers.d CACHE STRING "sysusers.d directory")
option(POS_INSTALL_SYSTEMD "install the systemd units, tmpfiles.d and sysusers.d" ON)
set(POS_CONFIG_EXAMPLE ${POS_FIRMWARE_DIR}/agent.conf.example CACHE FILEPATH
    "the documented example configuration to install")
set(POS_SYSCONFDIR /etc/pos-agent)
set(POS_DATADIR ${CMAKE_INSTALL_DATADIR}/pos-agent)

set(pos_profile_file ${POS_FIRMWARE_DIR}/profiles/${POS_DEVICE_PROFILE}.conf)
if(NOT EXISTS ${pos_profile_file})
  file(GLOB pos_profiles RELATIVE ${POS_FIRMWARE_DIR}/profiles ${POS_FIRMWARE_DIR}/profiles/*.conf)
  string(REPLACE ".conf" "" pos_profiles "${pos_profiles}")
  message(FATAL_ERROR "POS_DEVICE_PROFILE '${POS_DEVICE_PROFILE}' has no "
                      "firmware-config/profiles/${POS_DEVICE_PROFILE}.conf: use one of ${pos_profiles}")
endif()

# The unit names the binary where this prefix installs it.
if(IS_ABSOLUTE "${CMAKE_INSTALL_BINDIR}")
  set(POS_INSTALL_BINDIR ${CMAKE_INSTALL_BINDIR})
else()
  set(POS_INSTALL_BINDIR ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR})
endif()
foreach(pos_unit pos-agent.service pos-agent-firstboot.service)
  configure_file(${POS_FIRMWARE_DIR}/systemd/${pos_unit}
                 ${CMAKE_BINARY_DIR}/firmware-config/${pos_unit} @ONLY)
  if(POS_INSTALL_SYSTEMD)
    install(FILES ${CMAKE_BINARY_DIR}/firmware-config/${pos_unit}
            DESTINATION ${POS_SYSTEMD_UNITDIR} COMPONENT agent)
  endif()
endforeach()
if(POS_INSTALL_SYSTEMD)
  install(FILES ${POS_FIRMWARE_DIR}/tmpfiles.d/pos-agent.conf
          DESTINATION ${POS_TMPFILESDIR} COMPONENT agent)
  install(FILES ${POS_FIRMWARE_DIR}/sysusers.d/pos-agent.conf
          DESTINATION ${POS_SYSUSERSDIR} COMPONENT agent)
endif()
# /etc/pos-agent/agent.conf: root-owned, 0640 (tmpfiles gives it to group
# pos-agent at boot: the user does not exist when the image is built).
install(FILES ${pos_profile_file} DESTINATION ${POS_SYSCONFDIR} RENAME agent.conf
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ COMPONENT agent)
# The device's own keys (store_id, device_id ...) go in drop-ins there,
# never into the conffile above: an upgrade then never asks about it.
install(DIRECTORY DESTINATION ${POS_SYSCONFDIR}/agent.conf.d COMPONENT agent)
if(EXISTS ${POS_CONFIG_EXAMPLE})
  install(FILES ${POS_CONFIG_EXAMPLE} DESTINATION ${POS_DATADIR} COMPONENT agent)
else()
  message(WARNING "${POS_CONFIG_EXAMPLE} is missing: the package will not carry the "
                  "documented example (make it with 'pos-agent --print-example-config')")
endif()
install(FILES ${POS_FIRMWARE_DIR}/terminals.example DESTINATION ${POS_DATADIR} COMPONENT agent)
# Firmware data, not configuration: a journal stores the set it loaded
# (head office sends later ones), so an upgrade may replace this file.
install(FILES ${POS_FIRMWARE_DIR}/recipes.csv ${POS_FIRMWARE_DIR}/RECIPES.md
        DESTINATION ${POS_DATADIR} COMPONENT agent)
install(DIRECTORY ${POS_FIRMWARE_DIR}/profiles/ DESTINATION ${POS_DATADIR}/profiles
        COMPONENT agent FILES_MATCHING PATTERN "*.conf")

# ---- /usr/share/doc/pos-agent: copyright and changelog --------------------

# Debian policy 12.5 and 12.7 (lintian: no-copyright-file, no-changelog).
# The changelog's newest entry must be this version: a release adds one.
set(POS_DOCDIR ${CMAKE_INSTALL_DATADIR}/doc/pos-agent)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${POS_FIRMWARE_DIR}/debian/changelog ${POS_FIRMWARE_DIR}/debian/copyright.in)
file(STRINGS ${POS_FIRMWARE_DIR}/debian/changelog pos_changelog_top LIMIT_COUNT 1)
if(NOT pos_changelog_top MATCHES "^pos-agent \\(${PROJECT_VERSION}\\) ")
  message(FATAL_ERROR "firmware-config/debian/changelog: its newest entry is "
                      "'${pos_changelog_top}', not version ${PROJECT_VERSION}: add one")
endif()
find_program(POS_GZIP gzip REQUIRED)
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/firmware-config)
# -n: no name or time stamp in it, so the package is the same on every build.
execute_process(COMMAND ${POS_GZIP} -9n -c ${POS_FIRMWARE_DIR}/debian/changelog
                OUTPUT_FILE ${CMAKE_BINARY_DIR}/firmware-config/changelog.gz
                RESULT_VARIABLE pos_gzip_rc)
if(NOT pos_gzip_rc EQUAL 0)
  message(FATAL_ERROR "gzip of firmware-config/debian/changelog failed (${pos_gzip_rc})")
endif()
# llhttp is compiled in: its licence (Expat) goes into the copyright file,
# its text taken from Debian's node-llhttp on the build machine.
set(POS_LLHTTP_COPYRIGHT /usr/share/doc/node-llhttp/copyright)
set(POS_LLHTTP_LICENSE
    "License: Expat\n The Expat (MIT) licence of llhttp: LICENSE-MIT in its release.")
if(EXISTS ${POS_LLHTTP_COPYRIGHT})
  file(READ ${POS_LLHTTP_COPYRIGHT} pos_llhttp_text)
  string(REGEX MATCH "\nLicense: Expat\n( [^\n]*\n)+" pos_llhttp_expat "${pos_llhttp_text}")
  if(pos_llhttp_expat)
    string(STRIP "${pos_llhttp_expat}" POS_LLHTTP_LICENSE)
  endif()
endif()
configure_file(${POS_FIRMWARE_DIR}/debian/copyright.in
               ${CMAKE_BINARY_DIR}/firmware-config/copyright @ONLY)
# Component "debian": in the .deb only; Buildroot and Yocto install the
# "agent" component and document licences their own way.
install(FILES ${CMAKE_BINARY_DIR}/firmware-config/copyright
              ${CMAKE_BINARY_DIR}/firmware-config/changelog.gz
        DESTINATION ${POS_DOCDIR} COMPONENT debian)
install(FILES ${POS_FIRMWARE_DIR}/debian/lintian-overrides
        DESTINATION ${CMAKE_INSTALL_DATADIR}/lintian/overrides RENAME pos-agent COMPONENT debian)

# ---- CPack: one .deb per architecture ------------------------------------

# Debian's name for the target architecture, from the multiarch triplet
# the toolchain file sets (or the build machine's when building natively).
if(CMAKE_LIBRARY_ARCHITECTURE MATCHES "^aarch64")
  set(pos_deb_arch arm64)
elseif(CMAKE_LIBRARY_ARCHITECTURE MATCHES "^arm-linux-gnueabihf")
  set(pos_deb_arch armhf)
elseif(CMAKE_LIBRARY_ARCHITECTURE MATCHES "^x86_64")
  set(pos_deb_arch amd64)
else()
  find_program(POS_DPKG dpkg)
  if(POS_DPKG)
    execute_process(COMMAND ${POS_DPKG} --print-architecture
                    OUTPUT_VARIABLE pos_deb_arch OUTPUT_STRIP_TRAILING_WHITESPACE)
  endif()
endif()

set(CPACK_PACKAGE_NAME pos-agent)
set(CPACK_PACKAGE_VENDOR "POS platform team")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "POS platform team <pos-platform@example.com>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "POS store edge agent: sales journal, POS API and uplink")
# Lines under 80 columns (lintian: extended-description-line-too-long).
set(CPACK_PACKAGE_DESCRIPTION "Takes every sale from the store's POS terminals into a\n\
durable journal on flash (SQLite), serves the store's status page, and\n\
sends the sales to the central collector over mutual TLS.")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)
set(CPACK_GENERATOR DEB)

# The device's component (and the .deb's own docs): the collector and test tools are never
# flashed. The binary's own install() must say COMPONENT agent
# (agent/CMakeLists.txt); tests/integration/test_installed_layout.sh fails
# when it does not.
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ALL_COMPONENTS_IN_ONE)
set(CPACK_COMPONENTS_ALL agent debian)

set(CPACK_DEBIAN_PACKAGE_NAME pos-agent)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${pos_deb_arch})
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# Beyond the libraries: systemd runs it (sysusers, tmpfiles, Type=notify).
# init-system-helpers: deb-systemd-helper and deb-systemd-invoke in the
# maintainer scripts (never systemctl itself, which ignores policy-rc.d).
set(CPACK_DEBIAN_PACKAGE_DEPENDS "systemd (>= 247), init-system-helpers (>= 1.54)")
# Maintainer scripts (user, directories, service) and the conffiles that
# keep provisioned configuration across upgrades.
configure_file(${POS_FIRMWARE_DIR}/debian/conffiles.in
               ${CMAKE_BINARY_DIR}/firmware-config/debian/conffiles @ONLY)
# The preinst refuses a downgrade whose agent could not read the journal:
# it compares the journal's oldest reader with the newest schema this
# package's agent reads, taken from the source (JOURNAL_SCHEMA_VERSION).
set(pos_journal_c ${PROJECT_SOURCE_DIR}/agent/journal/journal.c)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${pos_journal_c})
file(STRINGS ${pos_journal_c} pos_schema_line
     REGEX "^#define JOURNAL_SCHEMA_VERSION [0-9]+$")
if(NOT pos_schema_line MATCHES "^#define JOURNAL_SCHEMA_VERSION ([0-9]+)$")
  message(FATAL_ERROR "agent/journal/journal.c: no '#define JOURNAL_SCHEMA_VERSION <n>' line "
                      "for the preinst's journal check")
endif()
set(POS_JOURNAL_SCHEMA ${CMAKE_MATCH_1})
set(POS_PACKAGE_VERSION ${PROJECT_VERSION})
configure_file(${POS_FIRMWARE_DIR}/debian/preinst
               ${CMAKE_BINARY_DIR}/firmware-config/debian/preinst @ONLY)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_BINARY_DIR}/firmware-config/debian/preinst
    ${POS_FIRMWARE_DIR}/debian/postinst
    ${POS_FIRMWARE_DIR}/debian/prerm
    ${POS_FIRMWARE_DIR}/debian/postrm
    ${CMAKE_BINARY_DIR}/firmware-config/debian/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# dpkg-shlibdeps must look at the target's libraries when cross-building:
# the generated file sets DEB_HOST_ARCH for it when cpack runs.
set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_BINARY_DIR}/firmware-config/cpack-project.cmake)
file(WRITE ${CPACK_PROJECT_CONFIG_FILE}
     "# Generated by firmware-config/packaging.cmake: read by cpack.\n"
     "set(ENV{DEB_HOST_ARCH} \"${pos_deb_arch}\")\n")

# Sysroot build: dpkg-shlibdeps finds the libraries in the sysroot and
# their packages, shlibs and symbols in the sysroot's dpkg database (see
# the top). Its file lists hold paths inside the sysroot (/usr/lib/...);
# dpkg-shlibdeps asks for the files as it found them (<sysroot>/usr/lib/...),
# so the copy it reads (DPKG_ADMINDIR) has the sysroot in front of them,
# the library files only, each under /usr too when the package ships it
# under /lib (a merged-/usr sysroot: ld.so and libc.so.6 are found in
# /usr/lib/<triplet>).
if(POS_CROSS_SYSROOT)
  set(pos_sysroot_dpkg ${POS_CROSS_SYSROOT}/var/lib/dpkg)
  set(pos_shlibdeps_db ${CMAKE_BINARY_DIR}/firmware-config/sysroot-dpkg)
  file(REMOVE_RECURSE ${pos_shlibdeps_db})
  # cross/build.sh may record the database after this build directory was
  # configured: configure again when it changes.
  if(EXISTS ${pos_sysroot_dpkg}/status)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${pos_sysroot_dpkg}/status)
  endif()
  if(EXISTS ${pos_sysroot_dpkg}/.pos-sysroot-db)
    file(MAKE_DIRECTORY ${pos_shlibdeps_db}/info ${pos_shlibdeps_db}/updates)
    # The multiarch layout: info/<pkg>:<arch>.list for Multi-Arch: same.
    file(WRITE ${pos_shlibdeps_db}/info/format "1\n")
    file(COPY ${pos_sysroot_dpkg}/status ${pos_sysroot_dpkg}/arch DESTINATION ${pos_shlibdeps_db})
    file(GLOB pos_sysroot_lists ${pos_sysroot_dpkg}/info/*.list)
    foreach(pos_list IN LISTS pos_sysroot_lists)
      get_filename_component(pos_name ${pos_list} NAME)
      string(REGEX REPLACE "\\.list$" "" pos_name "${pos_name}")
      file(STRINGS ${pos_list} pos_paths REGEX "/lib[^/]*/.*\\.so")
      set(pos_out "")
      foreach(pos_path IN LISTS pos_paths)
        string(APPEND pos_out "${POS_CROSS_SYSROOT}${pos_path}\n")
        if(pos_path MATCHES "^/lib")
          string(APPEND pos_out "${POS_CROSS_SYSROOT}/usr${pos_path}\n")
        endif()
      endforeach()
      file(WRITE ${pos_shlibdeps_db}/info/${pos_name}.list "${pos_out}")
      foreach(pos_ctl shlibs symbols)
        if(EXISTS ${pos_sysroot_dpkg}/info/${pos_name}.${pos_ctl})
          file(COPY ${pos_sysroot_dpkg}/info/${pos_name}.${pos_ctl}
               DESTINATION ${pos_shlibdeps_db}/info)
        endif()
      endforeach()
    endforeach()
    set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS
        ${POS_CROSS_SYSROOT}/usr/lib/${CMAKE_LIBRARY_ARCHITECTURE} ${POS_CROSS_SYSROOT}/usr/lib)
    file(APPEND ${CPACK_PROJECT_CONFIG_FILE}
         "set(ENV{DPKG_ADMINDIR} \"${pos_shlibdeps_db}\")\n")
  else()
    # Building works; only packaging needs the database.
    file(APPEND ${CPACK_PROJECT_CONFIG_FILE}
         "message(FATAL_ERROR \"${POS_CROSS_SYSROOT} has no dpkg database for dpkg-shlibdeps: \"\n"
         "        \"cross/build.sh ${pos_deb_arch} --release --package records it\")\n")
  endif()
endif()

include(CPack)
