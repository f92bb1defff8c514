# dw_embed_bytes(<file> <out_var>): the bytes of <file> as the body of a C array initialiser,
# "0x2f,0x2a,...", in hex so that any content survives, ending with a terminating 0x00 (so the
# array is also a C string, and an empty file still makes a valid array). Included by the
# build-time scripts embed_sql.cmake and embed_web.cmake.
function(dw_embed_bytes file out_var)
    file(READ ${file} hex HEX)
    string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
    # Long lines are fine for a compiler but not for a reader who opens the file: 16 a line.
    # (CMake's regular expressions have no {n}.)
    string(REPEAT "0x..," 16 sixteen)
    string(REGEX REPLACE "(${sixteen})" "\\1\n    " bytes "${bytes}")
    set(${out_var} "${bytes}0x00" PARENT_SCOPE)
endfunction()
