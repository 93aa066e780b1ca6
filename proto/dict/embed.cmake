# embed.cmake - turns a zstd dictionary (INPUT) into a C source (OUTPUT)
# defining the byte array NAME and NAME_len, so that the agent and the
# collector carry the committed dictionary's exact bytes in their binaries
# (never trained at build time: two builds must hold the same dictionary).
# Run by proto/CMakeLists.txt: cmake -DINPUT=... -DOUTPUT=... -DNAME=... -P
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_len)
math(EXPR size "${hex_len} / 2")
if(size LESS 8)
  message(FATAL_ERROR "${INPUT} is ${size} bytes: not a zstd dictionary")
endif()
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n"
       bytes "${bytes}")
file(WRITE "${OUTPUT}"
  "/* Generated from ${INPUT} by proto/dict/embed.cmake: do not edit. */\n"
  "#include <stddef.h>\n"
  "extern const unsigned char ${NAME}[];\n"
  "extern const size_t ${NAME}_len;\n"
  "const unsigned char ${NAME}[] = {\n${bytes}};\n"
  "const size_t ${NAME}_len = ${size};\n")
