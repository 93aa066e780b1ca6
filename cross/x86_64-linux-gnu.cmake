# CMake toolchain file: x86-64 POS devices (Debian amd64).
#
#   cmake -B build-x86_64 -DCMAKE_TOOLCHAIN_FILE=cross/x86_64-linux-gnu.cmake
#
# On an amd64 build machine this is the native compiler under its full name
# (x86_64-linux-gnu-gcc) with the same library lookup as the ARM builds; on
# an arm64 one it needs gcc-x86-64-linux-gnu and runs the tests with
# qemu-x86_64. cross/build.sh x86_64 installs what is missing.
set(POS_CROSS_TRIPLET x86_64-linux-gnu)
set(POS_CROSS_PROCESSOR x86_64)
set(POS_CROSS_QEMU qemu-x86_64)
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
