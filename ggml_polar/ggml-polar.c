// Reference PolarQuant codecs: the ggml entry points (rows, chunks, dot products) over the block codec in
// polar-codec.h, which the Metal kernels compile too. Plain C, no SIMD: this is the definition the NumPy reference
// (llama_polar.quants) and every other backend must match bit for bit, so it is compiled without FMA contraction or
// fast-math (CMake adds -ffp-contract=off).
#include "ggml-polar.h"
#include "polar-codec.h"

#include "polar-check.h"

// The four entry points of ggml-polar.h for one PQ_FOREACH_TYPE entry, over its kind's block codec.
#define GGML_POLAR_DEFINE_ENTRY_POINTS(name, NAME, kind, ggml_id)                                               \
    void quantize_row_##name##_ref(const float * restrict x, block_##name * restrict y, int64_t k) {            \
        PQ_REQUIRE(k % PQ_BLOCK == 0);                                                                          \
        for (int64_t ib = 0; ib < k / PQ_BLOCK; ++ib) {                                                         \
            PQ_QUANTIZE_BLOCK_##kind(name, x + ib * PQ_BLOCK, (uint8_t *) (y + ib));                             \
        }                                                                                                       \
    }                                                                                                           \
    void dequantize_row_##name(const block_##name * restrict x, float * restrict y, int64_t k) {                \
        PQ_REQUIRE(k % PQ_BLOCK == 0);                                                                          \
        for (int64_t ib = 0; ib < k / PQ_BLOCK; ++ib) {                                                         \
            PQ_DECODE_BLOCK_##kind(name, (const uint8_t *) (x + ib), y + ib * PQ_BLOCK);                         \
        }                                                                                                       \
    }                                                                                                           \
    size_t quantize_##name(const float * restrict src, void * restrict dst, int64_t nrows, int64_t n_per_row,   \
                           const float * imatrix) {                                                             \
        (void) imatrix;                                                                                         \
        const size_t row_size = (size_t) (n_per_row / PQ_BLOCK) * sizeof(block_##name);                         \
        for (int64_t row = 0; row < nrows; ++row) {                                                             \
            quantize_row_##name##_ref(src + row * n_per_row, (block_##name *) ((char *) dst + row * row_size),  \
                                      n_per_row);                                                               \
        }                                                                                                       \
        return (size_t) nrows * row_size;                                                                       \
    }                                                                                                           \
    void ggml_vec_dot_##name##_f32(int n, float * restrict s, size_t bs, const void * restrict vx, size_t bx,   \
                                   const void * restrict vy, size_t by, int nrc) {                              \
        PQ_REQUIRE(nrc == 1 && n % PQ_BLOCK == 0);                                                              \
        (void) bs; (void) bx; (void) by; (void) nrc;                                                            \
        const float * y   = (const float *) vy;                                                                 \
        float         sum = 0.0f;                                                                               \
        float         tmp[PQ_BLOCK];                                                                            \
        for (int ib = 0; ib < n / PQ_BLOCK; ++ib) {                                                             \
            PQ_DECODE_BLOCK_##kind(name, (const uint8_t *) vx + (size_t) ib * NAME##_TYPE_SIZE, tmp);           \
            for (int i = 0; i < PQ_BLOCK; ++i) {                                                                \
                sum += tmp[i] * y[ib * PQ_BLOCK + i];                                                           \
            }                                                                                                   \
        }                                                                                                       \
        *s = sum;                                                                                               \
    }                                                                                                           \
    static void name##_from_float(const float * restrict x, void * restrict y, int64_t k) {                     \
        quantize_row_##name##_ref(x, (block_##name *) y, k);                                                    \
    }                                                                                                           \
    static void name##_to_float(const void * restrict x, float * restrict y, int64_t k) {                       \
        dequantize_row_##name((const block_##name *) x, y, k);                                                  \
    }

PQ_FOREACH_TYPE(GGML_POLAR_DEFINE_ENTRY_POINTS)

#define GGML_POLAR_TYPE_INFO(name, NAME, kind, ggml_id)                                                         \
    [GGML_POLAR_TYPE_##NAME] = { #name, PQ_BLOCK, sizeof(block_##name), NAME##_GROUP_SIZE, name##_from_float,   \
                                 name##_to_float, ggml_vec_dot_##name##_f32 },

static const struct ggml_polar_type_info pq_types[GGML_POLAR_TYPE_COUNT] = {
    PQ_FOREACH_TYPE(GGML_POLAR_TYPE_INFO)
};

int ggml_polar_type_count(void) {
    return GGML_POLAR_TYPE_COUNT;
}

const struct ggml_polar_type_info * ggml_polar_get_type_info(int i) {
    return i >= 0 && i < GGML_POLAR_TYPE_COUNT ? &pq_types[i] : NULL;
}

// fp16 radii (tree types with PQ_RADIUS_FP16, trellis scales) must not be Inf or NaN: exponent bits all ones
static bool pq_radii_finite(const uint8_t * block, int32_t groups, int32_t radius_format) {
    for (int32_t g = 0; radius_format == PQ_RADIUS_FP16 && g < groups; ++g) {
        const uint16_t h = (uint16_t) (block[2 * g] | (block[2 * g + 1] << 8));
        if ((h & 0x7c00) == 0x7c00) {
            return false;
        }
    }
    return true;
}

#define PQ_RADII_FINITE_TREE(name, NAME, block) pq_radii_finite(block, name##_desc.groups, name##_desc.radius_format)
#define PQ_RADII_FINITE_KEY(name, NAME, block)  true
#define PQ_RADII_FINITE_TRELLIS(name, NAME, block) pq_radii_finite(block, 1, PQ_RADIUS_FP16)
#define GGML_POLAR_VALIDATE_CASE(name, NAME, kind, ggml_id)                                    \
    case ggml_id:                                                                           \
        if (nbytes % sizeof(block_##name) != 0) {                                           \
            return false;                                                                   \
        }                                                                                   \
        for (size_t ib = 0; ib < nbytes / sizeof(block_##name); ++ib) {                     \
            if (!PQ_RADII_FINITE_##kind(name, NAME, bytes + ib * sizeof(block_##name))) {   \
                return false;                                                               \
            }                                                                               \
        }                                                                                   \
        return true;

bool ggml_polar_validate_row_data(int ggml_id, const void * data, size_t nbytes) {
    const uint8_t * bytes = (const uint8_t *) data;
    switch (ggml_id) {
        PQ_FOREACH_TYPE(GGML_POLAR_VALIDATE_CASE)
        default:
            return false;
    }
}
