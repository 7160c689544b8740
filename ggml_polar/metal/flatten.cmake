# Writes the self-contained polar.metal that ggml-metal compiles: ggml_polar/metal/polar.metal with every
# `#include "polar-..."` replaced, recursively and once per file, by that file (the generated codebooks, the block
# layouts, the codec, the generated instance list). ggml-metal's own includes (common.h, dequantize.h,
# fa_vec_common.metal) stay for its embed step, which resolves only those. The output changes only when its text
# does, so an unchanged file does not rebuild the embedded library.
#
#   cmake -DGGML_POLAR_DIR=<ggml_polar> -DOUTPUT=<polar.metal> -P flatten.cmake
# ggml-metal's CMakeLists.txt runs it at configure time; the project's tests run it on Linux to check that text.

cmake_minimum_required(VERSION 3.16)

if (NOT GGML_POLAR_DIR OR NOT OUTPUT)
    message(FATAL_ERROR "usage: cmake -DGGML_POLAR_DIR=<ggml_polar> -DOUTPUT=<polar.metal> -P flatten.cmake")
endif()

set(_include_re "#include \"(polar-[a-z0-9]+\\.(h|metal))\"[^\n]*\n")

file(READ "${GGML_POLAR_DIR}/metal/polar.metal" _text)
set(_done "")
while (TRUE)
    string(REGEX MATCH "${_include_re}" _line "${_text}")
    if (NOT _line)
        break()
    endif()
    set(_name "${CMAKE_MATCH_1}")
    string(FIND "${_text}" "${_line}" _at)
    string(LENGTH "${_line}" _len)
    string(SUBSTRING "${_text}" 0 ${_at} _before)
    math(EXPR _after_at "${_at} + ${_len}")
    string(SUBSTRING "${_text}" ${_after_at} -1 _after)

    set(_body "")
    list(FIND _done "${_name}" _seen)
    if (_seen EQUAL -1)
        list(APPEND _done "${_name}")
        if (EXISTS "${GGML_POLAR_DIR}/${_name}")
            set(_path "${GGML_POLAR_DIR}/${_name}")
        elseif (EXISTS "${GGML_POLAR_DIR}/metal/${_name}")
            set(_path "${GGML_POLAR_DIR}/metal/${_name}")
        else()
            message(FATAL_ERROR "flatten.cmake: ${_name} not found in ${GGML_POLAR_DIR} or its metal/ folder")
        endif()
        file(READ "${_path}" _body)
        string(REGEX REPLACE "#pragma once[^\n]*\n" "" _body "${_body}")
        set(_body "// ---- ggml_polar: ${_name} ----\n${_body}// ---- end of ${_name} ----\n")
    endif()
    set(_text "${_before}${_body}${_after}")
endwhile()

set(_text "// Flattened from ggml_polar by ggml_polar/metal/flatten.cmake: edit the sources there, not this file.\n${_text}")

set(_old "")
if (EXISTS "${OUTPUT}")
    file(READ "${OUTPUT}" _old)
endif()
if (NOT _old STREQUAL _text)
    file(WRITE "${OUTPUT}" "${_text}")
endif()
