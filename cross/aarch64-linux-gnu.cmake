# CMake toolchain file: 64-bit ARM POS devices (Debian arm64).
#
#   cmake -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cross/aarch64-linux-gnu.cmake
#
# Needs gcc-aarch64-linux-gnu, qemu-user (for the tests) and the arm64
# multiarch -dev packages: cross/build.sh aarch64 installs them.
set(POS_CROSS_TRIPLET aarch64-linux-gnu)
set(POS_CROSS_PROCESSOR aarch64)
set(POS_CROSS_QEMU qemu-aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
