# embed.cmake - turns a file (INPUT) into a C source (OUTPUT) defining the
# byte array NAME and its length NAME_len, so that the binary carries the
# file's exact bytes and nothing is installed beside it. Used for the status
# page (agent/CMakeLists.txt) and the zstd dictionaries (proto/CMakeLists.txt).
#
#   cmake -DINPUT=... -DOUTPUT=... -DNAME=... [-DTYPE=char] [-DTERMINATE=ON]
#         [-DMIN_SIZE=N] [-DMAX_SIZE=N] [-DWHY="what the size limit is for"] -P embed.cmake
#
# TYPE is the element type (default: unsigned char); TERMINATE appends a NUL
# not counted in NAME_len (for text). A file outside [MIN_SIZE, MAX_SIZE]
# fails the build, saying WHY.
if(NOT TYPE)
  set(TYPE "unsigned char")
endif()
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_len)
math(EXPR size "${hex_len} / 2")
if(DEFINED MIN_SIZE AND size LESS MIN_SIZE)
  message(FATAL_ERROR "${INPUT} is ${size} bytes, under ${MIN_SIZE}: ${WHY}")
endif()
if(DEFINED MAX_SIZE AND size GREATER MAX_SIZE)
  message(FATAL_ERROR "${INPUT} is ${size} bytes, over ${MAX_SIZE}: ${WHY}")
endif()
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n"
       bytes "${bytes}")
if(TERMINATE)
  string(APPEND bytes "0x00")
endif()
get_filename_component(input_name "${INPUT}" NAME)
file(WRITE "${OUTPUT}"
  "/* Generated from ${input_name} by scripts/embed.cmake: do not edit. */\n"
  "#include <stddef.h>\n"
  "extern const ${TYPE} ${NAME}[];\n"
  "extern const size_t ${NAME}_len;\n"
  "const ${TYPE} ${NAME}[] = {\n${bytes}};\n"
  "const size_t ${NAME}_len = ${size};\n")
