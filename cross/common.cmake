# common.cmake - shared part of the Debian multiarch toolchain files.
#
# Included by <triplet>.cmake after it sets POS_CROSS_TRIPLET (the GNU
# triplet and Debian multiarch directory, e.g. aarch64-linux-gnu),
# POS_CROSS_PROCESSOR (CMAKE_SYSTEM_PROCESSOR) and POS_CROSS_QEMU (the
# qemu-user program that runs the target's binaries on another machine).
#
# The target's libraries come from Debian's multiarch -dev packages
# (dpkg --add-architecture <arch>; apt-get install libuv1-dev:<arch> ...):
# their headers are shared in /usr/include, their libraries and .pc files
# are in /usr/lib/<triplet>. The cross C library and loader are in
# /usr/<triplet> (libc6-dev-<arch>-cross). Build-time programs (protoc-c)
# are the build machine's own.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${POS_CROSS_PROCESSOR})
set(CMAKE_LIBRARY_ARCHITECTURE ${POS_CROSS_TRIPLET})

# Use the triplet-prefixed compiler; on a build machine of the same
# architecture that is the native compiler under its full name.
set(CMAKE_C_COMPILER ${POS_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${POS_CROSS_TRIPLET}-g++)
find_program(POS_CROSS_STRIP ${POS_CROSS_TRIPLET}-strip)
if(POS_CROSS_STRIP)
  set(CMAKE_STRIP ${POS_CROSS_STRIP} CACHE FILEPATH "strip for ${POS_CROSS_TRIPLET}")
endif()

# Search the cross C library's root first, then the multiarch system
# (/usr/lib/<triplet> via CMAKE_LIBRARY_ARCHITECTURE, /usr/include, and the
# arch-independent llhttp sources in /usr/share). Programs run at build time
# (protoc-c) are the build machine's.
#
# Sysroot mode (-DPOS_CROSS_SYSROOT=<dir>, cross/build.sh --sysroot): the
# target's libraries, headers and runtime C library are in a Debian root
# filesystem of the target's architecture (debootstrap), none from the build
# machine's multiarch directories; the compiler and linker get --sysroot.
# (When libc6-dev-<arch>-cross is installed, gcc still takes crt*.o, libc.so
# and the libc headers from /usr/<triplet>: the same glibc release.)
if(POS_CROSS_SYSROOT)
  set(CMAKE_SYSROOT ${POS_CROSS_SYSROOT})
  set(CMAKE_FIND_ROOT_PATH ${POS_CROSS_SYSROOT})
  # try_compile projects read this file again: hand them the sysroot.
  list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES POS_CROSS_SYSROOT)
else()
  set(CMAKE_FIND_ROOT_PATH /usr/${POS_CROSS_TRIPLET})
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# pkg-config reads only the target's .pc files (and arch-independent ones),
# never the build machine's: a wrong-arch library would only fail at link
# time, far from the cause.
# In sysroot mode they are the sysroot's, and pkg-config puts the sysroot
# in front of their -I and -L paths.
if(POS_CROSS_SYSROOT)
  set(ENV{PKG_CONFIG_LIBDIR}
      "${POS_CROSS_SYSROOT}/usr/lib/${POS_CROSS_TRIPLET}/pkgconfig:${POS_CROSS_SYSROOT}/usr/share/pkgconfig")
  set(ENV{PKG_CONFIG_PATH} "")
  set(ENV{PKG_CONFIG_SYSROOT_DIR} ${POS_CROSS_SYSROOT})
else()
  set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/${POS_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig")
  set(ENV{PKG_CONFIG_PATH} "")
  set(ENV{PKG_CONFIG_SYSROOT_DIR} "")
endif()

# Tests (ctest, add_test with a target as the command) run the target's
# binaries through qemu-user. On a build machine of the same architecture
# they run directly.
#
# The target's loader and C library: the multiarch -dev packages pull in
# libc6:<arch>, which puts ld.so in /lib and libc.so.6 in /lib/<triplet>,
# where qemu finds them as they are. qemu's "-L /usr/<triplet>" must then
# NOT be used: it would take ld.so from the cross toolchain's
# libc6-<arch>-cross but libc.so.6 (found through /etc/ld.so.cache) from
# libc6:<arch>, two different glibc builds that must never be mixed (threads
# hang in pthread_create). Only without the multiarch C library is -L used.
# In sysroot mode "-L <sysroot>" is right: the sysroot has its own loader,
# C library and loader cache (ld.so.cache), one glibc build, and every
# library the binaries need.
if(NOT CMAKE_HOST_SYSTEM_PROCESSOR STREQUAL POS_CROSS_PROCESSOR)
  find_program(POS_CROSS_QEMU_PATH ${POS_CROSS_QEMU})
  if(NOT POS_CROSS_QEMU_PATH)
    message(WARNING "${POS_CROSS_QEMU} not found: the tests cannot run on this machine "
                    "(apt-get install qemu-user)")
  elseif(POS_CROSS_SYSROOT)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${POS_CROSS_QEMU_PATH} -L ${POS_CROSS_SYSROOT})
  elseif(EXISTS /lib/${POS_CROSS_TRIPLET}/libc.so.6 OR EXISTS /usr/lib/${POS_CROSS_TRIPLET}/libc.so.6)
    set(CMAKE_CROSSCOMPILING_EMULATOR ${POS_CROSS_QEMU_PATH})
  else()
    set(CMAKE_CROSSCOMPILING_EMULATOR ${POS_CROSS_QEMU_PATH} -L /usr/${POS_CROSS_TRIPLET})
  endif()
endif()
