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

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define GGML_POLAR_RESTRICT __restrict__
extern "C" {
#else
#define GGML_POLAR_RESTRICT restrict
#endif

#define GGML_POLAR_R GGML_POLAR_RESTRICT

// Reference encoders (ggml from_float_ref).
void quantize_row_pq38p_ref(const float * GGML_POLAR_R x, block_pq38p * GGML_POLAR_R y, int64_t k);
void quantize_row_pq27_ref (const float * GGML_POLAR_R x, block_pq27  * GGML_POLAR_R y, int64_t k);
void quantize_row_pq32_ref (const float * GGML_POLAR_R x, block_pq32  * GGML_POLAR_R y, int64_t k);
void quantize_row_pq37_ref (const float * GGML_POLAR_R x, block_pq37  * GGML_POLAR_R y, int64_t k);
void quantize_row_pq42_ref (const float * GGML_POLAR_R x, block_pq42  * GGML_POLAR_R y, int64_t k);
void quantize_row_pq46_ref (const float * GGML_POLAR_R x, block_pq46  * GGML_POLAR_R y, int64_t k);
void quantize_row_pqk1_ref (const float * GGML_POLAR_R x, block_pqk1  * GGML_POLAR_R y, int64_t k);

// Decoders (ggml to_float); they work on a single block too (k = 64).
void dequantize_row_pq38p(const block_pq38p * GGML_POLAR_R x, float * GGML_POLAR_R y, int64_t k);
void dequantize_row_pq27 (const block_pq27  * GGML_POLAR_R x, float * GGML_POLAR_R y, int64_t k);
void dequantize_row_pq32 (const block_pq32  * GGML_POLAR_R x, float * GGML_POLAR_R y, int64_t k);
void dequantize_row_pq37 (const block_pq37  * GGML_POLAR_R x, float * GGML_POLAR_R y, int64_t k);
void dequantize_row_pq42 (const block_pq42  * GGML_POLAR_R x, float * GGML_POLAR_R y, int64_t k);
void dequantize_row_pq46 (const block_pq46  * GGML_POLAR_R x, float * GGML_POLAR_R y, int64_t k);
void dequantize_row_pqk1 (const block_pqk1  * GGML_POLAR_R x, float * GGML_POLAR_R y, int64_t k);

// Whole-tensor encoders for ggml_quantize_chunk. The importance matrix is ignored: the codebooks are fixed by
// the angle densities, not fitted to data.
size_t quantize_pq38p(const float * GGML_POLAR_R src, void * GGML_POLAR_R dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_pq27 (const float * GGML_POLAR_R src, void * GGML_POLAR_R dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_pq32 (const float * GGML_POLAR_R src, void * GGML_POLAR_R dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_pq37 (const float * GGML_POLAR_R src, void * GGML_POLAR_R dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_pq42 (const float * GGML_POLAR_R src, void * GGML_POLAR_R dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_pq46 (const float * GGML_POLAR_R src, void * GGML_POLAR_R dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
size_t quantize_pqk1 (const float * GGML_POLAR_R src, void * GGML_POLAR_R dst, int64_t nrows, int64_t n_per_row, const float * imatrix);

// Dot product of n encoded values with n f32 values (ggml vec_dot, vec_dot_type F32, nrc = 1).
void ggml_vec_dot_pq38p_f32(int n, float * GGML_POLAR_R s, size_t bs, const void * GGML_POLAR_R vx, size_t bx, const void * GGML_POLAR_R vy, size_t by, int nrc);
void ggml_vec_dot_pq27_f32 (int n, float * GGML_POLAR_R s, size_t bs, const void * GGML_POLAR_R vx, size_t bx, const void * GGML_POLAR_R vy, size_t by, int nrc);
void ggml_vec_dot_pq32_f32 (int n, float * GGML_POLAR_R s, size_t bs, const void * GGML_POLAR_R vx, size_t bx, const void * GGML_POLAR_R vy, size_t by, int nrc);
void ggml_vec_dot_pq37_f32 (int n, float * GGML_POLAR_R s, size_t bs, const void * GGML_POLAR_R vx, size_t bx, const void * GGML_POLAR_R vy, size_t by, int nrc);
void ggml_vec_dot_pq42_f32 (int n, float * GGML_POLAR_R s, size_t bs, const void * GGML_POLAR_R vx, size_t bx, const void * GGML_POLAR_R vy, size_t by, int nrc);
void ggml_vec_dot_pq46_f32 (int n, float * GGML_POLAR_R s, size_t bs, const void * GGML_POLAR_R vx, size_t bx, const void * GGML_POLAR_R vy, size_t by, int nrc);
void ggml_vec_dot_pqk1_f32 (int n, float * GGML_POLAR_R s, size_t bs, const void * GGML_POLAR_R vx, size_t bx, const void * GGML_POLAR_R vy, size_t by, int nrc);

// The types, for tools and bindings that look them up by name.
typedef void (*ggml_polar_to_float_t)(const void * GGML_POLAR_R x, float * GGML_POLAR_R y, int64_t k);
typedef void (*ggml_polar_from_float_t)(const float * GGML_POLAR_R x, void * GGML_POLAR_R y, int64_t k);
typedef void (*ggml_polar_vec_dot_t)(int n, float * GGML_POLAR_R s, size_t bs, const void * GGML_POLAR_R vx, size_t bx,
                                     const void * GGML_POLAR_R vy, size_t by, int nrc);

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
// NULL when i is out of range.
const struct ggml_polar_type_info * ggml_polar_get_type_info(int i);

#undef GGML_POLAR_R

#ifdef __cplusplus
}
#endif
