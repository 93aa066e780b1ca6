# hardening.cmake - the compile and link flags every firmware build gets.
#
# Included by the root CMakeLists.txt before any target is defined:
#
#   include(firmware-config/hardening.cmake)
#
# 1. 64-bit time and file offsets on 32-bit targets (armhf), in every build
#    type: -D_FILE_OFFSET_BITS=64 -D_TIME_BITS=64 (glibc >= 2.34). With a
#    32-bit time_t a sale after 2038-01-19 cannot be stamped, and a journal
#    past 2 GiB cannot be opened. Debian 12's armhf libraries keep their own
#    32-bit time_t (the t64 rebuilds came later); the agent hands none of
#    them a time_t (glibc has both ABIs), and platform/clock.c refuses to
#    compile where time_t or off_t is not 64 bits.
#
# 2. Optimized builds (Release, RelWithDebInfo, MinSizeRel) are hardened as
#    Debian hardens its packages: the flags of
#      DEB_HOST_ARCH=<target> DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags
#    (-D_FORTIFY_SOURCE=2, -fstack-protector-strong, -Wformat
#    -Werror=format-security, -Wl,-z,relro -Wl,-z,now, and whatever a later
#    dpkg adds for the target), less its -O, -g and -ffile-prefix-map: the
#    build type decides those. Without dpkg-buildflags (a Buildroot or Yocto
#    host, which harden in their own way) the same flags are set by hand.
#    Not in Debug builds (_FORTIFY_SOURCE needs optimization) nor with
#    POS_SANITIZE (ASan intercepts what _FORTIFY_SOURCE would check).
#    -DPOS_HARDEN=OFF leaves the flags to the toolchain.
#
# tests/firmware/test_release_hardened.sh checks the built agent (readelf).
include_guard(GLOBAL)

option(POS_HARDEN "Harden optimized builds with dpkg-buildflags' hardening=+all" ON)

if(CMAKE_SIZEOF_VOID_P EQUAL 4)
  add_compile_definitions(_FILE_OFFSET_BITS=64 _TIME_BITS=64)
endif()

set(pos_optimized_types Release RelWithDebInfo MinSizeRel)
if(POS_HARDEN AND NOT POS_SANITIZE AND CMAKE_BUILD_TYPE IN_LIST pos_optimized_types)
  # Debian's name for the target (dpkg-buildflags' flags are per architecture).
  if(CMAKE_LIBRARY_ARCHITECTURE MATCHES "^aarch64")
    set(pos_harden_arch arm64)
  elseif(CMAKE_LIBRARY_ARCHITECTURE MATCHES "^arm-linux-gnueabihf")
    set(pos_harden_arch armhf)
  elseif(CMAKE_LIBRARY_ARCHITECTURE MATCHES "^x86_64")
    set(pos_harden_arch amd64)
  else()
    set(pos_harden_arch "")
  endif()
  find_program(POS_DPKG_BUILDFLAGS dpkg-buildflags)
  set(pos_harden_compile "")
  set(pos_harden_link "")
  if(POS_DPKG_BUILDFLAGS AND pos_harden_arch)
    foreach(pos_var CPPFLAGS CFLAGS LDFLAGS)
      execute_process(
        COMMAND ${CMAKE_COMMAND} -E env DEB_HOST_ARCH=${pos_harden_arch}
                DEB_BUILD_MAINT_OPTIONS=hardening=+all
                ${POS_DPKG_BUILDFLAGS} --get ${pos_var}
        OUTPUT_VARIABLE pos_flags OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE pos_rc)
      if(NOT pos_rc EQUAL 0)
        message(FATAL_ERROR "dpkg-buildflags --get ${pos_var} failed (${pos_rc}): "
                            "build with -DPOS_HARDEN=OFF to leave hardening to the toolchain")
      endif()
      separate_arguments(pos_flags UNIX_COMMAND "${pos_flags}")
      foreach(pos_flag IN LISTS pos_flags)
        # The build type's optimization and debug info; no source paths
        # rewritten (they are the build machine's own).
        if(pos_flag MATCHES "^-O|^-g|^-ffile-prefix-map=|^-fdebug-prefix-map=")
          continue()
        endif()
        if(pos_var STREQUAL "LDFLAGS")
          list(APPEND pos_harden_link ${pos_flag})
        else()
          list(APPEND pos_harden_compile ${pos_flag})
        endif()
      endforeach()
    endforeach()
    set(pos_harden_source "dpkg-buildflags (${pos_harden_arch})")
  else()
    # A toolchain that defines _FORTIFY_SOURCE itself would warn about a
    # second definition (an error with -Werror): undefine it first.
    set(pos_harden_compile -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2 -fstack-protector-strong
        -Wformat -Werror=format-security)
    set(pos_harden_link -Wl,-z,relro -Wl,-z,now)
    set(pos_harden_source "built-in list (no dpkg-buildflags)")
  endif()
  add_compile_options(${pos_harden_compile})
  add_link_options(${pos_harden_link})
  string(REPLACE ";" " " pos_harden_text "${pos_harden_compile} ${pos_harden_link}")
  message(STATUS "Hardening (${CMAKE_BUILD_TYPE}, ${pos_harden_source}): ${pos_harden_text}")
endif()
