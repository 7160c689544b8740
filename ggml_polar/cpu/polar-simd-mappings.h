// The vector operations of the polar CPU paths, one set per ISA, picked at compile time the way ggml-cpu picks its
// own (cf. ggml-cpu/simd-mappings.h): AVX-512F (16 lanes), AVX2 (8), ARM NEON (4), or plain C at one lane. A lane
// holds one block's value, so every operation here is a lane-wise float32 or uint32 operation; only pq_madd (fused
// where the ISA has it), pq_hmax and the table lookups differ in form between ISAs.
//
// pq_vf: float lanes; pq_vi: uint32 lanes; pq_vm: a lane mask. pq_tab: a codebook of up to 2^bits entries, loaded
// once per level and read with pq_tab_lookup (a permute where it fits in registers, else a gather).
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define PQ_ISA   "avx512"
#define PQ_LANES 16
typedef __m512  pq_vf;
typedef __m512i pq_vi;
typedef __mmask16 pq_vm;
static inline pq_vf pq_mul(pq_vf a, pq_vf b) { return _mm512_mul_ps(a, b); }
static inline pq_vf pq_sub(pq_vf a, pq_vf b) { return _mm512_sub_ps(a, b); }
static inline pq_vf pq_madd(pq_vf a, pq_vf b, pq_vf acc) { return _mm512_fmadd_ps(a, b, acc); }
static inline pq_vf pq_splat(float x) { return _mm512_set1_ps(x); }
static inline pq_vi pq_splat_i(int32_t x) { return _mm512_set1_epi32(x); }
static inline pq_vi pq_srl(pq_vi a, int s) { return _mm512_srl_epi32(a, _mm_cvtsi32_si128(s)); }
static inline pq_vi pq_sll(pq_vi a, int s) { return _mm512_sll_epi32(a, _mm_cvtsi32_si128(s)); }
static inline pq_vi pq_and(pq_vi a, pq_vi b) { return _mm512_and_si512(a, b); }
static inline pq_vi pq_or(pq_vi a, pq_vi b) { return _mm512_or_si512(a, b); }
static inline pq_vi pq_add_i(pq_vi a, pq_vi b) { return _mm512_add_epi32(a, b); }
static inline pq_vf pq_as_f(pq_vi a) { return _mm512_castsi512_ps(a); }
static inline pq_vi pq_as_i(pq_vf a) { return _mm512_castps_si512(a); }
static inline pq_vf pq_from_i(pq_vi a) { return _mm512_cvtepi32_ps(a); }
static inline pq_vm pq_eq0(pq_vi a) { return _mm512_cmpeq_epi32_mask(a, _mm512_setzero_si512()); }
static inline pq_vm pq_eq(pq_vi a, int32_t b) { return _mm512_cmpeq_epi32_mask(a, _mm512_set1_epi32(b)); }
static inline pq_vf pq_select(pq_vm m, pq_vf if_set, pq_vf if_clear) { return _mm512_mask_blend_ps(m, if_clear, if_set); }
static inline pq_vi pq_select_i(pq_vm m, pq_vi if_set, pq_vi if_clear) { return _mm512_mask_blend_epi32(m, if_clear, if_set); }
static inline pq_vi pq_lane_offsets(size_t stride, int n) {
    const pq_vi iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return _mm512_maskz_mullo_epi32((__mmask16) ((1u << n) - 1), iota, _mm512_set1_epi32((int32_t) stride));
}
static inline pq_vi pq_gather_u32(const uint8_t * base, pq_vi offsets) { return _mm512_i32gather_epi32(offsets, base, 1); }
static inline pq_vf pq_gather_f32(const float * table, pq_vi idx) { return _mm512_i32gather_ps(idx, table, 4); }
static inline void  pq_store(float * y, pq_vf v) { _mm512_storeu_ps(y, v); }
static inline pq_vf pq_load(const float * y) { return _mm512_loadu_ps(y); }
static inline pq_vf pq_add(pq_vf a, pq_vf b) { return _mm512_add_ps(a, b); }
static inline pq_vi pq_load_u16(const uint16_t * x) { return _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *) x)); }
static inline pq_vf pq_max(pq_vf a, pq_vf b) { return _mm512_max_ps(a, b); }
static inline float pq_hmax(pq_vf a) { return _mm512_reduce_max_ps(a); }
static inline pq_vf pq_round(pq_vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline pq_vf pq_ldexp(pq_vf a, pq_vf n) { return _mm512_scalef_ps(a, n); } // a * 2^n, n integral
static inline pq_vm pq_lt(pq_vf a, pq_vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
static inline pq_vm pq_le(pq_vf a, pq_vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
static inline pq_vm pq_mand(pq_vm a, pq_vm b) { return (pq_vm) (a & b); }
static inline void  pq_store_u32(uint32_t * y, pq_vi v) { _mm512_storeu_si512((void *) y, v); }
// 2 * PQ_LANES floats at p, split into the even- and the odd-indexed ones.
static inline void pq_load_pairs(const float * p, pq_vf * even, pq_vf * odd) {
    const pq_vf a = _mm512_loadu_ps(p);
    const pq_vf b = _mm512_loadu_ps(p + 16);
    const pq_vi ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    *even = _mm512_permutex2var_ps(a, ie, b);
    *odd  = _mm512_permutex2var_ps(a, _mm512_add_epi32(ie, _mm512_set1_epi32(1)), b);
}
static inline float pq_lane(pq_vf v, int r) { float t[PQ_LANES]; _mm512_storeu_ps(t, v); return t[r]; }

// A level's codebook in registers: up to 64 entries, read with masked loads (never past the table's end).
typedef struct { pq_vf v[4]; int bits; } pq_tab;
static inline pq_tab pq_tab_load(const float * t, int bits) {
    pq_tab r;
    const int n = 1 << bits;
    r.bits = bits;
    for (int k = 0; k < 4; ++k) {
        const int left = n - 16 * k;
        r.v[k] = left <= 0 ? _mm512_setzero_ps()
                           : _mm512_maskz_loadu_ps((__mmask16) (left >= 16 ? 0xffffu : (1u << left) - 1), t + 16 * k);
    }
    return r;
}
static inline pq_vf pq_tab_lookup(const pq_tab * t, pq_vi idx) {
    if (t->bits <= 4) {
        return _mm512_permutexvar_ps(idx, t->v[0]);
    }
    const pq_vf lo = _mm512_permutex2var_ps(t->v[0], idx, t->v[1]);
    if (t->bits == 5) {
        return lo;
    }
    const pq_vf hi = _mm512_permutex2var_ps(t->v[2], idx, t->v[3]);
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, _mm512_set1_epi32(32)), lo, hi);
}

#elif defined(__AVX2__)
#include <immintrin.h>
#define PQ_ISA   "avx2"
#define PQ_LANES 8
typedef __m256  pq_vf;
typedef __m256i pq_vi;
typedef __m256  pq_vm; // all-ones / all-zeros lanes
static inline pq_vf pq_mul(pq_vf a, pq_vf b) { return _mm256_mul_ps(a, b); }
static inline pq_vf pq_sub(pq_vf a, pq_vf b) { return _mm256_sub_ps(a, b); }
#if defined(__FMA__)
static inline pq_vf pq_madd(pq_vf a, pq_vf b, pq_vf acc) { return _mm256_fmadd_ps(a, b, acc); }
#else
static inline pq_vf pq_madd(pq_vf a, pq_vf b, pq_vf acc) { return _mm256_add_ps(_mm256_mul_ps(a, b), acc); }
#endif
static inline pq_vf pq_splat(float x) { return _mm256_set1_ps(x); }
static inline pq_vi pq_splat_i(int32_t x) { return _mm256_set1_epi32(x); }
static inline pq_vi pq_srl(pq_vi a, int s) { return _mm256_srl_epi32(a, _mm_cvtsi32_si128(s)); }
static inline pq_vi pq_sll(pq_vi a, int s) { return _mm256_sll_epi32(a, _mm_cvtsi32_si128(s)); }
static inline pq_vi pq_and(pq_vi a, pq_vi b) { return _mm256_and_si256(a, b); }
static inline pq_vi pq_or(pq_vi a, pq_vi b) { return _mm256_or_si256(a, b); }
static inline pq_vi pq_add_i(pq_vi a, pq_vi b) { return _mm256_add_epi32(a, b); }
static inline pq_vf pq_as_f(pq_vi a) { return _mm256_castsi256_ps(a); }
static inline pq_vi pq_as_i(pq_vf a) { return _mm256_castps_si256(a); }
static inline pq_vf pq_from_i(pq_vi a) { return _mm256_cvtepi32_ps(a); }
static inline pq_vm pq_eq0(pq_vi a) { return _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, _mm256_setzero_si256())); }
static inline pq_vm pq_eq(pq_vi a, int32_t b) { return _mm256_castsi256_ps(_mm256_cmpeq_epi32(a, _mm256_set1_epi32(b))); }
static inline pq_vf pq_select(pq_vm m, pq_vf if_set, pq_vf if_clear) { return _mm256_blendv_ps(if_clear, if_set, m); }
static inline pq_vi pq_select_i(pq_vm m, pq_vi if_set, pq_vi if_clear) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(if_clear), _mm256_castsi256_ps(if_set), m));
}
static inline pq_vi pq_lane_offsets(size_t stride, int n) {
    const pq_vi iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const pq_vi live = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota);
    return _mm256_and_si256(live, _mm256_mullo_epi32(iota, _mm256_set1_epi32((int32_t) stride)));
}
static inline pq_vi pq_gather_u32(const uint8_t * base, pq_vi offsets) { return _mm256_i32gather_epi32((const int *) base, offsets, 1); }
static inline pq_vf pq_gather_f32(const float * table, pq_vi idx) { return _mm256_i32gather_ps(table, idx, 4); }
static inline void  pq_store(float * y, pq_vf v) { _mm256_storeu_ps(y, v); }
static inline pq_vf pq_load(const float * y) { return _mm256_loadu_ps(y); }
static inline pq_vf pq_add(pq_vf a, pq_vf b) { return _mm256_add_ps(a, b); }
static inline pq_vi pq_load_u16(const uint16_t * x) { return _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *) x)); }
static inline pq_vf pq_max(pq_vf a, pq_vf b) { return _mm256_max_ps(a, b); }
static inline float pq_hmax(pq_vf a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}
static inline pq_vf pq_round(pq_vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline pq_vf pq_ldexp(pq_vf a, pq_vf n) { // a * 2^n for integral n in [-126, 127]
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(a, _mm256_castsi256_ps(e));
}
static inline pq_vm pq_lt(pq_vf a, pq_vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
static inline pq_vm pq_le(pq_vf a, pq_vf b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
static inline pq_vm pq_mand(pq_vm a, pq_vm b) { return _mm256_and_ps(a, b); }
static inline void  pq_store_u32(uint32_t * y, pq_vi v) { _mm256_storeu_si256((__m256i *) y, v); }
static inline void pq_load_pairs(const float * p, pq_vf * even, pq_vf * odd) {
    const pq_vf a = _mm256_loadu_ps(p);
    const pq_vf b = _mm256_loadu_ps(p + 8);
    // within each 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6; then the 64-bit quarters in the order 0 2 1 3
    *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xd8));
    *odd  = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xdd)), 0xd8));
}
static inline float pq_lane(pq_vf v, int r) { float t[PQ_LANES]; _mm256_storeu_ps(t, v); return t[r]; }

// Up to 32 entries live in 4 registers, read with permutes and blends: AMD's gathers take several times as long
// (Zen 2-4), and a tree decode does two lookups per node. Larger codebooks are gathered from the table itself.
typedef struct { pq_vf v[4]; const float * t; int bits; } pq_tab;
static inline pq_tab pq_tab_load(const float * t, int bits) {
    pq_tab r;
    r.t    = t;
    r.bits = bits;
    const int n = 1 << bits;
    for (int k = 0; k < 4; ++k) { // masked, so that no load reads past the codebook
        const pq_vi live = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 8 * k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        r.v[k] = _mm256_maskload_ps(t + (8 * k < n ? 8 * k : 0), live);
    }
    return r;
}
// The entry idx of 16 held in a and b: bit 3 of idx, shifted to the sign bit, picks the register.
static inline pq_vf pq_tab_pick16(pq_vf a, pq_vf b, pq_vi idx) {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(a, idx), _mm256_permutevar8x32_ps(b, idx),
                            _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}
static inline pq_vf pq_tab_lookup(const pq_tab * t, pq_vi idx) {
    if (t->bits <= 3) {
        return _mm256_permutevar8x32_ps(t->v[0], idx);
    }
    if (t->bits == 4) {
        return pq_tab_pick16(t->v[0], t->v[1], idx);
    }
    if (t->bits == 5) {
        return _mm256_blendv_ps(pq_tab_pick16(t->v[0], t->v[1], idx), pq_tab_pick16(t->v[2], t->v[3], idx),
                                _mm256_castsi256_ps(_mm256_slli_epi32(idx, 27)));
    }
    return _mm256_i32gather_ps(t->t, idx, 4);
}

// cos and sin of a level-1 code (pq_circle_lookup, below). The circle of 32 angles repeats one quadrant exactly
// (tests/test_codebooks.py): with m = cos of the first 8 angles, code c = 8q + i has (cos, sin) = (m[i], m[7-i])
// turned by q quarter turns. So both come from two permutes of the first quadrant (cos and sin of it are m and m
// reversed), a swap when q is odd and two signs: half the work of two 32-entry lookups.
#define PQ_CIRCLE_LOOKUP_DEFINED 1
static inline void pq_circle32_lookup(const pq_tab * tc, const pq_tab * ts, pq_vi code, pq_vf * c, pq_vf * s) {
    const pq_vf   a    = _mm256_permutevar8x32_ps(tc->v[0], code); // m[i]
    const pq_vf   b    = _mm256_permutevar8x32_ps(ts->v[0], code); // m[7 - i]
    const __m256i q0   = _mm256_slli_epi32(code, 28);              // bit 3 (q odd) in the sign bit
    const __m256i q1   = _mm256_slli_epi32(code, 27);              // bit 4 (q >= 2) in the sign bit
    const __m256i sign = _mm256_set1_epi32((int32_t) 0x80000000u);
    const pq_vf   odd  = _mm256_castsi256_ps(q0);
    // cos is negative in quadrants 1 and 2, sin in 2 and 3
    *c = _mm256_xor_ps(_mm256_blendv_ps(a, b, odd), _mm256_castsi256_ps(_mm256_and_si256(_mm256_xor_si256(q0, q1), sign)));
    *s = _mm256_xor_ps(_mm256_blendv_ps(b, a, odd), _mm256_castsi256_ps(_mm256_and_si256(q1, sign)));
}
static inline void pq_circle_lookup(const pq_tab * tc, const pq_tab * ts, pq_vi code, pq_vf * c, pq_vf * s) {
    if (tc->bits == 5) {
        pq_circle32_lookup(tc, ts, code, c, s);
    } else {
        *c = pq_tab_lookup(tc, code);
        *s = pq_tab_lookup(ts, code);
    }
}

#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define PQ_ISA   "neon"
#define PQ_LANES 4
typedef float32x4_t pq_vf;
typedef uint32x4_t  pq_vi;
typedef uint32x4_t  pq_vm;
static inline pq_vf pq_mul(pq_vf a, pq_vf b) { return vmulq_f32(a, b); }
static inline pq_vf pq_sub(pq_vf a, pq_vf b) { return vsubq_f32(a, b); }
static inline pq_vf pq_madd(pq_vf a, pq_vf b, pq_vf acc) { return vfmaq_f32(acc, a, b); }
static inline pq_vf pq_splat(float x) { return vdupq_n_f32(x); }
static inline pq_vi pq_splat_i(int32_t x) { return vdupq_n_u32((uint32_t) x); }
static inline pq_vi pq_srl(pq_vi a, int s) { return vshlq_u32(a, vdupq_n_s32(-s)); }
static inline pq_vi pq_sll(pq_vi a, int s) { return vshlq_u32(a, vdupq_n_s32(s)); }
static inline pq_vi pq_and(pq_vi a, pq_vi b) { return vandq_u32(a, b); }
static inline pq_vi pq_or(pq_vi a, pq_vi b) { return vorrq_u32(a, b); }
static inline pq_vi pq_add_i(pq_vi a, pq_vi b) { return vaddq_u32(a, b); }
static inline pq_vf pq_as_f(pq_vi a) { return vreinterpretq_f32_u32(a); }
static inline pq_vi pq_as_i(pq_vf a) { return vreinterpretq_u32_f32(a); }
static inline pq_vf pq_from_i(pq_vi a) { return vcvtq_f32_u32(a); }
static inline pq_vm pq_eq0(pq_vi a) { return vceqq_u32(a, vdupq_n_u32(0)); }
static inline pq_vm pq_eq(pq_vi a, int32_t b) { return vceqq_u32(a, vdupq_n_u32((uint32_t) b)); }
static inline pq_vf pq_select(pq_vm m, pq_vf if_set, pq_vf if_clear) { return vbslq_f32(m, if_set, if_clear); }
static inline pq_vi pq_select_i(pq_vm m, pq_vi if_set, pq_vi if_clear) { return vbslq_u32(m, if_set, if_clear); }
static inline pq_vi pq_lane_offsets(size_t stride, int n) {
    uint32_t o[PQ_LANES];
    for (int r = 0; r < PQ_LANES; ++r) {
        o[r] = r < n ? (uint32_t) (r * stride) : 0;
    }
    return vld1q_u32(o);
}
static inline pq_vi pq_gather_u32(const uint8_t * base, pq_vi offsets) {
    uint32_t o[PQ_LANES];
    uint32_t w[PQ_LANES];
    vst1q_u32(o, offsets);
    for (int r = 0; r < PQ_LANES; ++r) {
        memcpy(&w[r], base + o[r], sizeof(uint32_t));
    }
    return vld1q_u32(w);
}
static inline pq_vf pq_gather_f32(const float * table, pq_vi idx) {
    uint32_t i[PQ_LANES];
    float    v[PQ_LANES];
    vst1q_u32(i, idx);
    for (int r = 0; r < PQ_LANES; ++r) {
        v[r] = table[i[r]];
    }
    return vld1q_f32(v);
}
static inline void  pq_store(float * y, pq_vf v) { vst1q_f32(y, v); }
static inline pq_vf pq_load(const float * y) { return vld1q_f32(y); }
static inline pq_vf pq_add(pq_vf a, pq_vf b) { return vaddq_f32(a, b); }
static inline pq_vi pq_load_u16(const uint16_t * x) { return vmovl_u16(vld1_u16(x)); }
static inline pq_vf pq_max(pq_vf a, pq_vf b) { return vmaxq_f32(a, b); }
static inline float pq_hmax(pq_vf a) { return vmaxvq_f32(a); }
static inline pq_vf pq_round(pq_vf a) { return vrndnq_f32(a); }
static inline pq_vf pq_ldexp(pq_vf a, pq_vf n) { // a * 2^n for integral n in [-126, 127]
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(a, vreinterpretq_f32_s32(e));
}
static inline pq_vm pq_lt(pq_vf a, pq_vf b) { return vcltq_f32(a, b); }
static inline pq_vm pq_le(pq_vf a, pq_vf b) { return vcleq_f32(a, b); }
static inline pq_vm pq_mand(pq_vm a, pq_vm b) { return vandq_u32(a, b); }
static inline void  pq_store_u32(uint32_t * y, pq_vi v) { vst1q_u32(y, v); }
static inline void pq_load_pairs(const float * p, pq_vf * even, pq_vf * odd) {
    const float32x4x2_t v = vld2q_f32(p);
    *even = v.val[0];
    *odd  = v.val[1];
}
static inline float pq_lane(pq_vf v, int r) { float t[PQ_LANES]; vst1q_f32(t, v); return t[r]; }

// Codebooks of up to 16 entries are a 64-byte table for one TBL over the four bytes of each float.
typedef struct { uint8x16x4_t b; const float * t; int bits; } pq_tab;
static inline pq_tab pq_tab_load(const float * t, int bits) {
    pq_tab r;
    r.t    = t;
    r.bits = bits;
    if (bits <= 4) {
        float pad[16] = { 0 };
        memcpy(pad, t, sizeof(float) << bits);
        r.b = vld1q_u8_x4((const uint8_t *) pad);
    }
    return r;
}
static inline pq_vf pq_tab_lookup(const pq_tab * t, pq_vi idx) {
    if (t->bits > 4) {
        return pq_gather_f32(t->t, idx);
    }
    // byte k of lane r comes from byte 4*idx[r] + k of the table
    const uint8x16_t bytes = vaddq_u8(vreinterpretq_u8_u32(vmulq_n_u32(idx, 0x04040404u)),
                                      vreinterpretq_u8_u32(vdupq_n_u32(0x03020100u)));
    return vreinterpretq_f32_u8(vqtbl4q_u8(t->b, bytes));
}
#else // plain C: the same code at one lane
#define PQ_ISA   "scalar"
#define PQ_LANES 1
typedef float    pq_vf;
typedef uint32_t pq_vi;
typedef int      pq_vm;
static inline pq_vf pq_mul(pq_vf a, pq_vf b) { return a * b; }
static inline pq_vf pq_sub(pq_vf a, pq_vf b) { return a - b; }
static inline pq_vf pq_madd(pq_vf a, pq_vf b, pq_vf acc) { return a * b + acc; }
static inline pq_vf pq_splat(float x) { return x; }
static inline pq_vi pq_splat_i(int32_t x) { return (uint32_t) x; }
static inline pq_vi pq_srl(pq_vi a, int s) { return a >> s; }
static inline pq_vi pq_sll(pq_vi a, int s) { return a << s; }
static inline pq_vi pq_and(pq_vi a, pq_vi b) { return a & b; }
static inline pq_vi pq_or(pq_vi a, pq_vi b) { return a | b; }
static inline pq_vi pq_add_i(pq_vi a, pq_vi b) { return a + b; }
static inline pq_vf pq_as_f(pq_vi a) { float f; memcpy(&f, &a, sizeof(f)); return f; }
static inline pq_vi pq_as_i(pq_vf a) { uint32_t b; memcpy(&b, &a, sizeof(b)); return b; }
static inline pq_vf pq_from_i(pq_vi a) { return (float) (int32_t) a; }
static inline pq_vm pq_eq0(pq_vi a) { return a == 0; }
static inline pq_vm pq_eq(pq_vi a, int32_t b) { return a == (uint32_t) b; }
static inline pq_vf pq_select(pq_vm m, pq_vf if_set, pq_vf if_clear) { return m ? if_set : if_clear; }
static inline pq_vi pq_select_i(pq_vm m, pq_vi if_set, pq_vi if_clear) { return m ? if_set : if_clear; }
static inline pq_vi pq_lane_offsets(size_t stride, int n) { (void) stride; (void) n; return 0; }
static inline pq_vi pq_gather_u32(const uint8_t * base, pq_vi offset) {
    uint32_t w;
    memcpy(&w, base + offset, sizeof(w));
    return w;
}
static inline pq_vf pq_gather_f32(const float * table, pq_vi idx) { return table[idx]; }
static inline void  pq_store(float * y, pq_vf v) { *y = v; }
static inline pq_vf pq_load(const float * y) { return *y; }
static inline pq_vf pq_add(pq_vf a, pq_vf b) { return a + b; }
static inline pq_vi pq_load_u16(const uint16_t * x) { return *x; }
static inline pq_vf pq_max(pq_vf a, pq_vf b) { return a > b ? a : b; }
static inline float pq_hmax(pq_vf a) { return a; }
static inline pq_vf pq_round(pq_vf a) { return nearbyintf(a); }                 // to nearest even, as the SIMD paths
static inline pq_vf pq_ldexp(pq_vf a, pq_vf n) { return ldexpf(a, (int) n); }  // n integral
static inline pq_vm pq_lt(pq_vf a, pq_vf b) { return a < b; }
static inline pq_vm pq_le(pq_vf a, pq_vf b) { return a <= b; }
static inline pq_vm pq_mand(pq_vm a, pq_vm b) { return a && b; }
static inline void  pq_store_u32(uint32_t * y, pq_vi v) { *y = v; }
static inline void pq_load_pairs(const float * p, pq_vf * even, pq_vf * odd) { *even = p[0]; *odd = p[1]; }
static inline float pq_lane(pq_vf v, int r) { (void) r; return v; }

typedef struct { const float * t; } pq_tab;
static inline pq_tab pq_tab_load(const float * t, int bits) { (void) bits; pq_tab r = { t }; return r; }
static inline pq_vf pq_tab_lookup(const pq_tab * t, pq_vi idx) { return t->t[idx]; }
#endif

// cos and sin of a level-1 code (an angle on the whole circle): two lookups, unless the ISA has a quicker way.
#if !defined(PQ_CIRCLE_LOOKUP_DEFINED)
static inline void pq_circle_lookup(const pq_tab * tc, const pq_tab * ts, pq_vi code, pq_vf * c, pq_vf * s) {
    *c = pq_tab_lookup(tc, code);
    *s = pq_tab_lookup(ts, code);
}
#endif
