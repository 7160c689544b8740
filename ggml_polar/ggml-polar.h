// ggml_polar: PolarQuant KV-cache block types for ggml. Plain reference codecs with ggml's signatures, so the
// types plug into ggml's type traits (to_float, from_float_ref, vec_dot with vec_dot_type F32).
//
// Defined behaviour for any input (identical in C, NumPy and Metal):
//   NaN encodes as 0; +-Inf saturates to +-FLT_MAX before encoding.
//   A zero group encodes as radius 0 (all codes 0) and decodes to exact zeros.
//   A radius beyond its format saturates: fp16 at 65504, the 8-bit log norm at 2^15.75; a radius below the format's
//   smallest step rounds to 0. Encoding never produces Inf or NaN.
//   Decoding accepts any bytes: every code indexes a table of exactly 2^bits entries. A raw fp16 radius the encoder
//   never writes (negative, Inf, NaN) decodes as its fp16 value.
// Row lengths k must be multiples of PQ_BLOCK (64).
#pragma once

#include "polar-blocks.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define GGML_POLAR_RESTRICT __restrict__
extern "C" {
#else
#define GGML_POLAR_RESTRICT restrict
#endif

// The types in ggml type id order (PQ_FOREACH_TYPE): GGML_POLAR_TYPE_PQ27, ..., GGML_POLAR_TYPE_PQK1.
enum ggml_polar_type {
#define GGML_POLAR_TYPE_ENUM(name, NAME, kind, ggml_id) GGML_POLAR_TYPE_##NAME,
    PQ_FOREACH_TYPE(GGML_POLAR_TYPE_ENUM)
#undef GGML_POLAR_TYPE_ENUM
    GGML_POLAR_TYPE_COUNT
};

// The ggml entry points, four per type, declared for every PQ_FOREACH_TYPE entry and defined by
// GGML_POLAR_DEFINE_ENTRY_POINTS in ggml-polar.c. For pq46:
//   quantize_row_pq46_ref  reference encoder (ggml from_float_ref)
//   dequantize_row_pq46    decoder (ggml to_float); works on a single block too (k = 64)
//   quantize_pq46          whole-tensor encoder for ggml_quantize_chunk. The importance matrix is ignored: the
//                          codebooks are fixed by the angle densities, not fitted to data.
//   ggml_vec_dot_pq46_f32  dot product of n encoded values with n f32 values (ggml vec_dot, vec_dot_type F32,
//                          nrc = 1)
#define GGML_POLAR_DECLARE_ENTRY_POINTS(name, NAME, kind, ggml_id)                                                  \
    void   quantize_row_##name##_ref(const float * GGML_POLAR_RESTRICT x, block_##name * GGML_POLAR_RESTRICT y,     \
                                     int64_t k);                                                                    \
    void   dequantize_row_##name(const block_##name * GGML_POLAR_RESTRICT x, float * GGML_POLAR_RESTRICT y,         \
                                 int64_t k);                                                                        \
    size_t quantize_##name(const float * GGML_POLAR_RESTRICT src, void * GGML_POLAR_RESTRICT dst, int64_t nrows,    \
                           int64_t n_per_row, const float * imatrix);                                               \
    void   ggml_vec_dot_##name##_f32(int n, float * GGML_POLAR_RESTRICT s, size_t bs,                               \
                                     const void * GGML_POLAR_RESTRICT vx, size_t bx,                                \
                                     const void * GGML_POLAR_RESTRICT vy, size_t by, int nrc);
PQ_FOREACH_TYPE(GGML_POLAR_DECLARE_ENTRY_POINTS)

// The types, for tools and bindings that look them up by index.
typedef void (*ggml_polar_to_float_t)(const void * GGML_POLAR_RESTRICT x, float * GGML_POLAR_RESTRICT y, int64_t k);
typedef void (*ggml_polar_from_float_t)(const float * GGML_POLAR_RESTRICT x, void * GGML_POLAR_RESTRICT y, int64_t k);
typedef void (*ggml_polar_vec_dot_t)(int n, float * GGML_POLAR_RESTRICT s, size_t bs, const void * GGML_POLAR_RESTRICT vx,
                                     size_t bx, const void * GGML_POLAR_RESTRICT vy, size_t by, int nrc);

struct ggml_polar_type_info {
    const char *            name;
    int64_t                 block_size;   // values per block
    size_t                  type_size;    // bytes per block
    int64_t                 group_size;   // values per radius
    ggml_polar_from_float_t from_float_ref;
    ggml_polar_to_float_t   to_float;
    ggml_polar_vec_dot_t    vec_dot;
};

int ggml_polar_type_count(void);
// Whether nbytes of type ggml_id (a PQ_FOREACH_TYPE id) are whole blocks whose radii are finite: what
// ggml_validate_row_data checks of a polar row (an fp16 radius of Inf or NaN decodes to non-finite values; an 8-bit
// log norm is finite whatever its bits). False for an id that is not a polar type.
bool ggml_polar_validate_row_data(int ggml_id, const void * data, size_t nbytes);
// i is an enum ggml_polar_type; NULL when it is out of range.
const struct ggml_polar_type_info * ggml_polar_get_type_info(int i);

#ifdef __cplusplus
}
#endif
