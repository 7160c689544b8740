// Fast CPU paths for the PolarQuant types: SIMD decoders that work on several blocks at once, one block per vector
// lane ("vertical"): every lane runs the reference decode's float32 operations in the reference order, so decoded
// values are bit-identical to ggml-polar.c; only dot products sum in another order (see ggml_polar_cpu_dot_rows).
//
// The sources in cpu/ are compiled into ggml-cpu with ggml-cpu's own SIMD flags, and pick their path the way ggml-cpu
// does, at compile time (cpu/polar-simd-mappings.h): AVX-512F (16 lanes), AVX2 (8 lanes), ARM NEON (4 lanes), or
// plain C (the same code at 1 lane). cpu/polar-cpu-decode.c holds the decoders and tiles, cpu/polar-cpu-attn.c the
// flash-attention kernel, cpu/polar-cpu-encode.c the encoder (the cache write), also bit-identical to the reference.
#pragma once

#include "ggml-polar.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GGML_POLAR_CPU_MAX_LANES 16

struct ggml_polar_cpu_type;

// The CPU codec of a polar type, or NULL when t is not one.
const struct ggml_polar_cpu_type * ggml_polar_cpu_type_get(enum ggml_polar_type t);

// Codecs for the other side of a polar cache: f16 rows and ggml's q8_0 rows, read through the same interface (a
// "block" is 64 values: 128 and 68 bytes), decoded to ggml's own values bit for bit. Decoders, tiles and
// ggml_polar_cpu_attn take them; ggml_polar_cpu_dot_rows does not.
const struct ggml_polar_cpu_type * ggml_polar_cpu_partner_f16(void);
const struct ggml_polar_cpu_type * ggml_polar_cpu_partner_q8_0(void);

// The cache write: encodes k values (k a multiple of 64) into k/64 blocks, byte for byte the reference's
// quantize_row_<type>_ref, with a level's nodes across the lanes (cpu/polar-cpu-encode.c). t must be a polar type.
// One function per type too, for ggml-cpu's from_float traits.
void ggml_polar_cpu_quantize_row(const struct ggml_polar_cpu_type * t, const float * x, void * y, int64_t k);
#define GGML_POLAR_CPU_DECLARE_QUANTIZE_ROW(name, NAME, kind, ggml_id) \
    void ggml_polar_cpu_quantize_row_##name(const float * x, void * y, int64_t k);
PQ_FOREACH_TYPE(GGML_POLAR_CPU_DECLARE_QUANTIZE_ROW)

// Blocks decoded together by this build, and the name of its path ("avx512", "avx2", "neon", "scalar").
int          ggml_polar_cpu_lanes(void);
const char * ggml_polar_cpu_isa(void);

// Decodes n <= lanes blocks, block r at x + r*stride, into y[v*lanes + r] for v in [0, 64): the transpose of the
// blocks, which is the K^T tile layout of a flash-attention GEMM.
void ggml_polar_cpu_decode_lanes(const struct ggml_polar_cpu_type * t, const void * x, size_t stride, int n, float * y);

// scores[r] = dot(decoded row r, q) for n rows of nblk blocks each, row r at x + r*row_stride. Every row's
// decoded values are the reference's; the sum is taken in value order with fused multiply-adds where the ISA has
// them, so it differs from the reference's ggml_vec_dot_* by at most n_values * 2^-24 * sum |k_i q_i| or so.
void ggml_polar_cpu_dot_rows(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride, int n, int nblk,
                             const float * q, float * scores);

// Row-major decode of k values (k a multiple of 64), bit-identical to dequantize_row_<type>.
void ggml_polar_cpu_dequantize_row(const struct ggml_polar_cpu_type * t, const void * x, float * y, int64_t k);

// Tiles for a flash-attention GEMM: n rows of nblk blocks (row r at x + r*row_stride), decoded bit-identically.
//   _transposed: y[d*y_stride + r] (the K^T tile);  _rows: row-major, y[r*y_stride + d] (the V tile).
void ggml_polar_cpu_decode_tile_transposed(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride,
                                           int n, int nblk, float * y, size_t y_stride);
void ggml_polar_cpu_decode_tile_rows(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride, int n,
                                     int nblk, float * y, size_t y_stride);

// Flash attention of nq query rows that share one KV head over n_rows cache rows, both K and V polar: every K row
// is decoded once for all nq queries, every V row once. Online softmax, unnormalized partial results:
// on entry and exit, for query h: M[h] (running max), S[h] (sum of exp(s - M)), acc[h*dv + d] (sum of
// exp(s - M) * v). Start a query with M = -INFINITY, S = 0, acc = 0; merge chunks like any flash-attention partials.
struct ggml_polar_cpu_attn_params {
    const struct ggml_polar_cpu_type * k_type;
    const struct ggml_polar_cpu_type * v_type;
    const void *     k;            // row 0 of the chunk
    size_t           k_row_stride; // bytes
    const void *     v;
    size_t           v_row_stride;
    int              n_rows;
    int              dk;           // multiples of 64
    int              dv;
    const float *    q;            // query h at q + h*q_stride
    size_t           q_stride;     // floats
    int              nq;           // at most GGML_POLAR_CPU_ATTN_MAX_Q
    const uint16_t * mask;         // fp16 bits; query h's entry for row r at mask[h*mask_stride + r]; NULL: none
    size_t           mask_stride;  // elements (0: one mask row for every query)
    const float *    slope;        // per query, multiplies the mask (ALiBi); NULL: 1
    float            scale;        // applied to q.k (before the soft cap)
    float            softcap;      // 0: none, else s = softcap * tanh(s)
    const float *    k_offset;     // added to K row r: k_offset[r*k_offset_stride + d] (row 0 of the chunk); NULL: none
    size_t           k_offset_stride; // floats
    // score terms: query h's score for row r gains sum over t < n_terms of q_terms[h*q_terms_stride + t] *
    // k_terms[r*k_terms_row_stride + t*k_terms_stride] (row 0 of the chunk), before the scale; NULL: none
    const float *    q_terms;
    size_t           q_terms_stride;     // floats
    const void *     k_terms;            // floats, or fp16 bits with k_terms_f16
    int              k_terms_f16;
    size_t           k_terms_row_stride; // elements; 1 (a term's rows side by side) reads them as vectors
    size_t           k_terms_stride;     // elements
    int              n_terms;
};
#define GGML_POLAR_CPU_ATTN_MAX_Q 16

// Floats of scratch that ggml_polar_cpu_attn itself needs (per calling thread).
size_t ggml_polar_cpu_attn_kernel_scratch(int nq, int dk, int dv);
// Floats a flash-attention caller needs per thread for up to GGML_POLAR_CPU_ATTN_MAX_Q queries: its M, S, slopes and
// accumulators, followed by the kernel's scratch (ggml_polar_cpu_attn_kernel_scratch).
size_t ggml_polar_cpu_attn_thread_workspace(int dk, int dv);
void   ggml_polar_cpu_attn(const struct ggml_polar_cpu_attn_params * p, float * M, float * S, float * acc,
                           float * scratch);

#ifdef __cplusplus
}
#endif
