# Turns the migrations sql/NNN_name.sql into a C source that defines dw_migration_files[]
# (include/dealwire/migrate.h), so the daemon carries its schema and never reads its source
# tree at run time. Run at build time by dw_embed() in CMakeLists.txt:
#
#   cmake -DDIR=<dir> -DOUT=<file.c> -P embed_sql.cmake
#
# Each file becomes a byte array (embed_bytes.cmake) with a terminating NUL. A file name that
# does not match NNN_name.sql (digits, underscore, lower-case letters, digits and underscores)
# fails the build: the migration runner orders and records by that number.
cmake_minimum_required(VERSION 3.25)
include(${CMAKE_CURRENT_LIST_DIR}/embed_bytes.cmake)

if(NOT DIR OR NOT OUT)
    message(FATAL_ERROR "embed_sql.cmake: set DIR and OUT")
endif()

file(GLOB files RELATIVE ${DIR} ${DIR}/*.sql)
list(SORT files COMPARE NATURAL)

set(arrays "")
set(entries "")
set(i 0)
foreach(f IN LISTS files)
    if(NOT f MATCHES "^[0-9]+_[a-z0-9_]+\\.sql$")
        message(FATAL_ERROR "sql/${f}: a migration is named NNN_name.sql "
                            "(digits, '_', then lower-case letters, digits and '_')")
    endif()
    dw_embed_bytes(${DIR}/${f} bytes)
    string(APPEND arrays "\n/* sql/${f} */\nstatic const char sql_${i}[] = {\n    ${bytes}};\n")
    string(APPEND entries "    {\"${f}\", sql_${i}, sizeof(sql_${i}) - 1},\n")
    math(EXPR i "${i} + 1")
endforeach()

if(i EQUAL 0)
    set(entries "    {NULL, NULL, 0}, /* no migrations: keeps the array non-empty */\n")
endif()

set(text "/* Generated from the files sql/NNN_name.sql by cmake/embed_sql.cmake: do not edit. */
#include \"dealwire/migrate.h\"

#include <stddef.h>
${arrays}
const struct dw_migration_file dw_migration_files[] = {
${entries}};

const size_t dw_migration_file_count = ${i};
")

file(WRITE ${OUT} "${text}")
