# Turns the dashboard's files web/*.html, web/*.js and web/*.css into a C source that defines
# dw_web_files[] (include/dealwire/web.h), so the daemon serves its page without reading its
# source tree at run time. Run at build time by dw_embed() in CMakeLists.txt:
#
#   cmake -DDIR=<dir> -DOUT=<file.c> -P embed_web.cmake
#
# web/index.html is served at "/", every other file at "/<file name>". The Content-Type comes
# from the extension, so only these three kinds are embedded (other files in web/ are not
# served); a name that is not lower-case letters, digits, '_' and '-' before the extension
# fails the build, since it becomes a URL path as it is.
cmake_minimum_required(VERSION 3.25)
include(${CMAKE_CURRENT_LIST_DIR}/embed_bytes.cmake)

if(NOT DIR OR NOT OUT)
    message(FATAL_ERROR "embed_web.cmake: set DIR and OUT")
endif()

set(types_html "text/html; charset=utf-8")
set(types_js "text/javascript; charset=utf-8")
set(types_css "text/css; charset=utf-8")

file(GLOB files RELATIVE ${DIR} ${DIR}/*.html ${DIR}/*.js ${DIR}/*.css)
list(SORT files)

set(arrays "")
set(entries "")
set(i 0)
foreach(f IN LISTS files)
    if(NOT f MATCHES "^[a-z0-9_-]+\\.(html|js|css)$")
        message(FATAL_ERROR "web/${f}: a served file is named with lower-case letters, digits, "
                            "'_' and '-', then .html, .js or .css")
    endif()
    set(type "${types_${CMAKE_MATCH_1}}")
    if(f STREQUAL "index.html")
        set(path "/")
    else()
        set(path "/${f}")
    endif()
    dw_embed_bytes(${DIR}/${f} bytes)
    string(APPEND arrays
           "\n/* web/${f} */\nstatic const unsigned char web_${i}[] = {\n    ${bytes}};\n")
    string(APPEND entries "    {\"${path}\", \"${type}\", web_${i}, sizeof(web_${i}) - 1},\n")
    math(EXPR i "${i} + 1")
endforeach()

if(i EQUAL 0)
    set(entries "    {NULL, NULL, NULL, 0}, /* no files: keeps the array non-empty */\n")
endif()

set(text "/* Generated from web/ (.html, .js, .css) by cmake/embed_web.cmake: do not edit. */
#include \"dealwire/web.h\"

#include <stddef.h>
${arrays}
const struct dw_web_file dw_web_files[] = {
${entries}};

const size_t dw_web_file_count = ${i};
")

file(WRITE ${OUT} "${text}")
