# embed.cmake - turns the status page (INPUT, an HTML file) into a C source
# (OUTPUT) defining `status_page_html` and `status_page_html_len`, so the
# page is edited as HTML and served from the binary with no file to install.
# Run by agent/CMakeLists.txt at build time: cmake -DINPUT=... -DOUTPUT=... -P
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_len)
math(EXPR size "${hex_len} / 2")
# 64 KB is the issue's budget for the whole page: fail the build, not the store.
if(size GREATER 65536)
  message(FATAL_ERROR "${INPUT} is ${size} bytes: the status page must stay under 64 KB")
endif()
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n"
       bytes "${bytes}")
file(WRITE "${OUTPUT}"
  "/* Generated from status_page.html by embed.cmake: do not edit. */\n"
  "#include <stddef.h>\n"
  "extern const char status_page_html[];\n"
  "extern const size_t status_page_html_len;\n"
  "const char status_page_html[] = {\n${bytes}0x00};\n"
  "const size_t status_page_html_len = ${size};\n")
