// Preconditions checked in every build. assert() is compiled out under NDEBUG (a Release build), and a wrong shape or
// stride here reads or writes past a tensor; a failed check names itself and aborts, as GGML_ASSERT does in ggml.
// C only: the Metal sources do not include it.
#pragma once

#include <stdio.h>
#include <stdlib.h>

#define PQ_REQUIRE(cond)                                                                                      \
    do {                                                                                                      \
        if (!(cond)) {                                                                                        \
            fprintf(stderr, "%s:%d: ggml_polar: precondition failed: %s\n", __FILE__, __LINE__, #cond);       \
            fflush(stderr);                                                                                   \
            abort();                                                                                          \
        }                                                                                                     \
    } while (0)
