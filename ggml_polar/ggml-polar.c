// Reference PolarQuant codecs: the ggml entry points (rows, chunks, dot products) over the block codec in
// polar-codec.h, which the Metal kernels compile too. Plain C, no SIMD: this is the definition the NumPy reference
// (llama_polar.quants) and every other backend must match bit for bit, so it is compiled without FMA contraction or
// fast-math (CMake adds -ffp-contract=off).
#include "ggml-polar.h"
#include "polar-codec.h"

#include <assert.h>

static const pq_tree_desc pq38p_desc = PQ38P_DESC;
static const pq_tree_desc pq27_desc  = PQ27_DESC;
static const pq_tree_desc pq32_desc  = PQ32_DESC;
static const pq_tree_desc pq37_desc  = PQ37_DESC;
static const pq_tree_desc pq42_desc  = PQ42_DESC;
static const pq_tree_desc pq46_desc  = PQ46_DESC;

// ---------------------------------------------------------------------------------------------------------------
// Rows and dot products over the block codec of polar-codec.h
// ---------------------------------------------------------------------------------------------------------------

static float pq_tree_vec_dot(const pq_tree_desc * d, int n, const uint8_t * x, const float * y) {
    float sum = 0.0f;
    float tmp[PQ_BLOCK];
    for (int ib = 0; ib < n / PQ_BLOCK; ++ib) {
        pq_tree_decode_block(d, x + (size_t) ib * (size_t) d->type_size, tmp);
        for (int i = 0; i < PQ_BLOCK; ++i) {
            sum += tmp[i] * y[ib * PQ_BLOCK + i];
        }
    }
    return sum;
}

static float pqk1_vec_dot(int n, const block_pqk1 * x, const float * y) {
    float sum = 0.0f;
    float tmp[PQ_BLOCK];
    for (int ib = 0; ib < n / PQ_BLOCK; ++ib) {
        pqk1_decode_span((const uint8_t *) (x + ib), 0, PQ_BLOCK, tmp);
        for (int i = 0; i < PQ_BLOCK; ++i) {
            sum += tmp[i] * y[ib * PQ_BLOCK + i];
        }
    }
    return sum;
}

// ---------------------------------------------------------------------------------------------------------------
// ggml entry points
// ---------------------------------------------------------------------------------------------------------------

#define PQ_TREE_ENTRY_POINTS(name)                                                                              \
    void quantize_row_##name##_ref(const float * restrict x, block_##name * restrict y, int64_t k) {            \
        assert(k % PQ_BLOCK == 0);                                                                              \
        for (int64_t ib = 0; ib < k / PQ_BLOCK; ++ib) {                                                         \
            pq_tree_quantize_block(&name##_desc, x + ib * PQ_BLOCK, (uint8_t *) (y + ib));                      \
        }                                                                                                       \
    }                                                                                                           \
    void dequantize_row_##name(const block_##name * restrict x, float * restrict y, int64_t k) {                \
        assert(k % PQ_BLOCK == 0);                                                                              \
        for (int64_t ib = 0; ib < k / PQ_BLOCK; ++ib) {                                                         \
            pq_tree_decode_block(&name##_desc, (const uint8_t *) (x + ib), y + ib * PQ_BLOCK);              \
        }                                                                                                       \
    }                                                                                                           \
    void ggml_vec_dot_##name##_f32(int n, float * restrict s, size_t bs, const void * restrict vx, size_t bx,   \
                                   const void * restrict vy, size_t by, int nrc) {                              \
        assert(nrc == 1 && n % PQ_BLOCK == 0);                                                                  \
        (void) bs; (void) bx; (void) by; (void) nrc;                                                            \
        *s = pq_tree_vec_dot(&name##_desc, n, (const uint8_t *) vx, (const float *) vy);                        \
    }

#define PQ_COMMON_ENTRY_POINTS(name)                                                                            \
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
    static void name##_from_float(const float * restrict x, void * restrict y, int64_t k) {                     \
        quantize_row_##name##_ref(x, (block_##name *) y, k);                                                    \
    }                                                                                                           \
    static void name##_to_float(const void * restrict x, float * restrict y, int64_t k) {                       \
        dequantize_row_##name((const block_##name *) x, y, k);                                                  \
    }

PQ_TREE_ENTRY_POINTS(pq38p)
PQ_TREE_ENTRY_POINTS(pq27)
PQ_TREE_ENTRY_POINTS(pq32)
PQ_TREE_ENTRY_POINTS(pq37)
PQ_TREE_ENTRY_POINTS(pq42)
PQ_TREE_ENTRY_POINTS(pq46)

void quantize_row_pqk1_ref(const float * restrict x, block_pqk1 * restrict y, int64_t k) {
    assert(k % PQ_BLOCK == 0);
    for (int64_t ib = 0; ib < k / PQ_BLOCK; ++ib) {
        pqk1_quantize_block(x + ib * PQ_BLOCK, (uint8_t *) (y + ib));
    }
}

void dequantize_row_pqk1(const block_pqk1 * restrict x, float * restrict y, int64_t k) {
    assert(k % PQ_BLOCK == 0);
    for (int64_t ib = 0; ib < k / PQ_BLOCK; ++ib) {
        pqk1_decode_span((const uint8_t *) (x + ib), 0, PQ_BLOCK, y + ib * PQ_BLOCK);
    }
}

void ggml_vec_dot_pqk1_f32(int n, float * restrict s, size_t bs, const void * restrict vx, size_t bx,
                           const void * restrict vy, size_t by, int nrc) {
    assert(nrc == 1 && n % PQ_BLOCK == 0);
    (void) bs; (void) bx; (void) by; (void) nrc;
    *s = pqk1_vec_dot(n, (const block_pqk1 *) vx, (const float *) vy);
}

PQ_COMMON_ENTRY_POINTS(pq38p)
PQ_COMMON_ENTRY_POINTS(pq27)
PQ_COMMON_ENTRY_POINTS(pq32)
PQ_COMMON_ENTRY_POINTS(pq37)
PQ_COMMON_ENTRY_POINTS(pq42)
PQ_COMMON_ENTRY_POINTS(pq46)
PQ_COMMON_ENTRY_POINTS(pqk1)

#define PQ_TYPE_INFO(name, NAME)                                                                                \
    { #name, PQ_BLOCK, sizeof(block_##name), NAME##_GROUP_SIZE, name##_from_float, name##_to_float,              \
      ggml_vec_dot_##name##_f32 }

static const struct ggml_polar_type_info pq_types[] = {
    PQ_TYPE_INFO(pq38p, PQ38P),
    PQ_TYPE_INFO(pq27, PQ27),
    PQ_TYPE_INFO(pq32, PQ32),
    PQ_TYPE_INFO(pq37, PQ37),
    PQ_TYPE_INFO(pq42, PQ42),
    PQ_TYPE_INFO(pq46, PQ46),
    PQ_TYPE_INFO(pqk1, PQK1),
};

int ggml_polar_type_count(void) {
    return (int) (sizeof(pq_types) / sizeof(pq_types[0]));
}

const struct ggml_polar_type_info * ggml_polar_get_type_info(int i) {
    return i >= 0 && i < ggml_polar_type_count() ? &pq_types[i] : NULL;
}
