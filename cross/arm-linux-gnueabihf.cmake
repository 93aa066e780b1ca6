# CMake toolchain file: 32-bit ARM POS devices, hard float (Debian armhf,
# ARMv7-A + VFPv3-D16, Thumb-2: the compiler's defaults).
#
#   cmake -B build-armhf -DCMAKE_TOOLCHAIN_FILE=cross/arm-linux-gnueabihf.cmake
#
# Needs gcc-arm-linux-gnueabihf, qemu-user (for the tests) and the armhf
# multiarch -dev packages: cross/build.sh armhf installs them, or, when they
# cannot be installed, makes a debootstrap sysroot and passes
# -DPOS_CROSS_SYSROOT=<dir> (cross/README.md).
set(POS_CROSS_TRIPLET arm-linux-gnueabihf)
set(POS_CROSS_PROCESSOR armv7l)
set(POS_CROSS_QEMU qemu-arm)
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
