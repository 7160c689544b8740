// Runs every polar type's reference codec under AddressSanitizer and UBSan: each block lives in a heap buffer of
// exactly its size, so any read or write outside it is reported. Decodes random bytes, encodes special values, and
// checks that encoded data always decodes to finite values.
#include "ggml-polar.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static float special_value(void) {
    static const float pool[] = { 0.0f, -0.0f, 1e-45f, -1e-45f, 1e-38f, FLT_MIN, 1.0f, -1.0f, 0.5f, 65504.0f,
                                  65520.0f, 1e30f, FLT_MAX, -FLT_MAX, INFINITY, -INFINITY, NAN };
    const uint64_t r = next_random();
    if (r % 3 == 0) {
        return pool[(r >> 8) % (sizeof(pool) / sizeof(pool[0]))];
    }
    return (float) ((int64_t) (r >> 11) - (int64_t) (1ull << 52)) * 0x1p-40f;
}

int main(void) {
    int failures = 0;
    int checks   = 0;
    if (ggml_polar_get_type_info(-1) != NULL || ggml_polar_get_type_info(ggml_polar_type_count()) != NULL) {
        fprintf(stderr, "type info out of range must be NULL\n");
        return 1;
    }
    for (int t = 0; t < ggml_polar_type_count(); ++t) {
        const struct ggml_polar_type_info * info = ggml_polar_get_type_info(t);
        for (int iter = 0; iter < 4000; ++iter) {
            uint8_t * block = malloc(info->type_size);
            float *   x     = malloc(PQ_BLOCK * sizeof(float));
            float *   y     = malloc(PQ_BLOCK * sizeof(float));
            for (size_t i = 0; i < info->type_size; ++i) {
                block[i] = (uint8_t) next_random();
            }
            info->to_float(block, y, PQ_BLOCK);

            for (int i = 0; i < PQ_BLOCK; ++i) {
                x[i] = special_value();
            }
            info->from_float_ref(x, block, PQ_BLOCK);
            info->to_float(block, y, PQ_BLOCK);
            for (int i = 0; i < PQ_BLOCK; ++i) {
                if (!isfinite(y[i])) {
                    fprintf(stderr, "%s: encoded data decoded to a non-finite value at %d\n", info->name, i);
                    ++failures;
                    break;
                }
                x[i] = (float) i;
            }
            float s = 0.0f;
            info->vec_dot(PQ_BLOCK, &s, 0, block, 0, x, 0, 1);
            failures += !isfinite(s);
            ++checks;
            free(block);
            free(x);
            free(y);
        }
    }
    printf("%d blocks checked, %d failures\n", checks, failures);
    return failures != 0;
}
