# Writes OUT, a C++ source that holds the files FILES (,-separated, under
# BASE) as byte arrays: the dashboard is part of the server binary, so it
# needs no install step and no network.
string(REPLACE "," ";" FILES "${FILES}")
set(body "")
set(table "")
set(i 0)
foreach(f ${FILES})
  file(READ "${BASE}/${f}" hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(APPEND body "const unsigned char kData${i}[] = {${hex}0x00};\n")
  file(SIZE "${BASE}/${f}" size)
  string(APPEND table "    {\"/${f}\", kData${i}, ${size}},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE "${OUT}.tmp"
"// Generated from server/http/dashboard by server/http/embed.cmake.\n"
"#include \"server/http/assets.h\"\n"
"namespace lathe::server::http {\n"
"namespace {\n"
"${body}"
"}  // namespace\n"
"const Asset kAssets[] = {\n${table}    {nullptr, nullptr, 0}};\n"
"}  // namespace lathe::server::http\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
