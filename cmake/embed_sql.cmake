# Turns the migrations sql/NNN_name.sql into a C source that defines dw_migration_files[]
# (include/dealwire/migrate.h), so the daemon carries its schema and never reads its source
# tree at run time. Run at build time by the custom command in CMakeLists.txt:
#
#   cmake -DSQL_DIR=<dir> -DOUT=<file.c> -P embed_sql.cmake
#
# Each file becomes a byte array (hex, so any content survives) with a terminating NUL. A file
# name that does not match NNN_name.sql (digits, underscore, lower-case letters, digits and
# underscores) fails the build: the migration runner orders and records by that number.
cmake_minimum_required(VERSION 3.25)

if(NOT SQL_DIR OR NOT OUT)
    message(FATAL_ERROR "embed_sql.cmake: set SQL_DIR and OUT")
endif()

file(GLOB files RELATIVE ${SQL_DIR} ${SQL_DIR}/*.sql)
list(SORT files COMPARE NATURAL)

set(arrays "")
set(entries "")
set(i 0)
foreach(f IN LISTS files)
    if(NOT f MATCHES "^[0-9]+_[a-z0-9_]+\\.sql$")
        message(FATAL_ERROR "sql/${f}: a migration is named NNN_name.sql "
                            "(digits, '_', then lower-case letters, digits and '_')")
    endif()
    file(READ ${SQL_DIR}/${f} hex HEX)
    string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
    # Long lines are fine for a compiler but not for a reader who opens the file: 16 a line.
    # (CMake's regular expressions have no {n}.)
    string(REPEAT "0x..," 16 sixteen)
    string(REGEX REPLACE "(${sixteen})" "\\1\n    " bytes "${bytes}")
    string(APPEND arrays "\n/* sql/${f} */\nstatic const char sql_${i}[] = {\n    ${bytes}0x00};\n")
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
