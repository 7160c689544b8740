// What the polar CPU sources share inside ggml_polar/cpu: the type table's entries (a type's lane decoder) and the
// stride limit of the gathers. Both sources are compiled with the same ISA flags, so pq_vf/pq_vi agree.
#pragma once

#include "../ggml-polar-cpu.h"
#include "polar-simd-mappings.h"

// The per-type codecs inline the whole encode or decode with the type's layout as constants, so every shift, offset
// and loop count is known to the compiler.
#if defined(__GNUC__)
#define PQ_INLINE static inline __attribute__((always_inline))
#define PQ_UNROLL _Pragma("GCC unroll 64")
#else
#define PQ_INLINE static inline
#define PQ_UNROLL
#endif

// Decodes one block in every lane: block r at x + offsets[r]; val[v] receives value v of every lane's block.
typedef void (*pq_lanes_fn)(const uint8_t * x, pq_vi offsets, pq_vf * val);

struct ggml_polar_cpu_type {
    enum ggml_polar_type type;
    int                  type_size;   // bytes per block
    pq_lanes_fn          lanes;
};

// Lane offsets are 32-bit: a larger row stride falls back to the reference codec, one block at a time.
static inline int pq_stride_ok(size_t stride) {
    return stride <= (size_t) INT32_MAX / PQ_LANES;
}

static inline int pq_min(int a, int b) {
    return a < b ? a : b;
}

// pq_fp16_to_f32 on every lane, with integer operations (exact, NaN payloads included).
static inline pq_vf pq_fp16_lanes(pq_vi h) {
    const pq_vi sign = pq_sll(pq_and(h, pq_splat_i(0x8000)), 16);
    const pq_vi e    = pq_and(pq_srl(h, 10), pq_splat_i(0x1f));
    const pq_vi m    = pq_and(h, pq_splat_i(0x3ff));
    const pq_vi norm = pq_or(sign, pq_or(pq_sll(pq_add_i(e, pq_splat_i(112)), 23), pq_sll(m, 13)));
    const pq_vi inf  = pq_or(sign, pq_or(pq_splat_i(0x7f800000), pq_sll(m, 13)));
    const pq_vf sub  = pq_mul(pq_from_i(m), pq_splat(5.9604644775390625e-8f)); // m * 2^-24, exact
    const pq_vf sub_signed = pq_as_f(pq_or(sign, pq_as_i(sub)));
    pq_vf r = pq_select(pq_eq(e, 0x1f), pq_as_f(inf), pq_as_f(norm));
    return pq_select(pq_eq0(e), sub_signed, r);
}

// PQ_LANES fp16 values at x as floats, for values that are never NaN (score terms): the ISA's conversion where it has
// one (it may quiet a signaling NaN, which pq_fp16_lanes keeps), else pq_fp16_lanes.
static inline pq_vf pq_load_fp16(const uint16_t * x) {
#if defined(__AVX512F__)
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) x));
#elif defined(__AVX2__) && defined(__F16C__)
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) x));
#elif defined(__ARM_NEON) && defined(__aarch64__)
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x)));
#else
    return pq_fp16_lanes(pq_load_u16(x));
#endif
}
