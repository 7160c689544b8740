// SIMD CPU paths for the PolarQuant types (see ggml-polar-cpu.h). One block per vector lane: a lane runs exactly
// the reference decode of polar-codec.h (the same products, in the same order), so only the width of the loop is
// new. Code fields sit at the same bit offsets in every block, so each is a shift and a mask of words gathered from
// all lanes' blocks at once, and each codebook lookup is a permute (or a gather) across lanes.
#include "ggml-polar-cpu.h"
#include "ggml-polar.h"
#include "polar-codec.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define PQ_ISA   "avx512"
#define PQ_LANES 16
typedef __m512  pq_vf;
typedef __m512i pq_vi;
typedef __mmask16 pq_vm;
static inline pq_vf pq_mul(pq_vf a, pq_vf b) { return _mm512_mul_ps(a, b); }
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
static inline float pq_lane(pq_vf v, int r) { float t[PQ_LANES]; _mm256_storeu_ps(t, v); return t[r]; }

// Up to 8 entries live in a register (a permute); larger codebooks are gathered from the table itself.
typedef struct { pq_vf v; const float * t; int bits; } pq_tab;
static inline pq_tab pq_tab_load(const float * t, int bits) {
    pq_tab r;
    r.t    = t;
    r.bits = bits;
    const int n = 1 << bits;
    const pq_vi live = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    r.v = _mm256_maskload_ps(t, live);
    return r;
}
static inline pq_vf pq_tab_lookup(const pq_tab * t, pq_vi idx) {
    return t->bits <= 3 ? _mm256_permutevar8x32_ps(t->v, idx) : _mm256_i32gather_ps(t->t, idx, 4);
}

#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define PQ_ISA   "neon"
#define PQ_LANES 4
typedef float32x4_t pq_vf;
typedef uint32x4_t  pq_vi;
typedef uint32x4_t  pq_vm;
static inline pq_vf pq_mul(pq_vf a, pq_vf b) { return vmulq_f32(a, b); }
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
#endif

struct ggml_polar_cpu_type {
    const char *          name;
    const pq_tree_desc *  desc; // NULL for the key mode
    int                   type_size;
};

// The same generated layouts as ggml-polar.c, defined in this file so that the per-type decoders see them as constants.
static const pq_tree_desc pq38p_cpu_desc = PQ38P_DESC;
static const pq_tree_desc pq27_cpu_desc  = PQ27_DESC;
static const pq_tree_desc pq32_cpu_desc  = PQ32_DESC;
static const pq_tree_desc pq37_cpu_desc  = PQ37_DESC;
static const pq_tree_desc pq42_cpu_desc  = PQ42_DESC;
static const pq_tree_desc pq46_cpu_desc  = PQ46_DESC;

static const struct ggml_polar_cpu_type pq_cpu_types[] = {
    { "pq38p", &pq38p_cpu_desc, PQ38P_TYPE_SIZE },
    { "pq27",  &pq27_cpu_desc,  PQ27_TYPE_SIZE  },
    { "pq32",  &pq32_cpu_desc,  PQ32_TYPE_SIZE  },
    { "pq37",  &pq37_cpu_desc,  PQ37_TYPE_SIZE  },
    { "pq42",  &pq42_cpu_desc,  PQ42_TYPE_SIZE  },
    { "pq46",  &pq46_cpu_desc,  PQ46_TYPE_SIZE  },
    { "pqk1",  NULL,            PQK1_TYPE_SIZE  },
};

size_t ggml_polar_cpu_attn_region(int dk, int dv) {
    return (size_t) GGML_POLAR_CPU_ATTN_MAX_Q * (3 + (size_t) dv) + ggml_polar_cpu_attn_scratch(GGML_POLAR_CPU_ATTN_MAX_Q, dk, dv);
}

const struct ggml_polar_cpu_type * ggml_polar_cpu_type_by_name(const char * name) {
    for (size_t i = 0; i < sizeof(pq_cpu_types) / sizeof(pq_cpu_types[0]); ++i) {
        if (strcmp(pq_cpu_types[i].name, name) == 0) {
            return &pq_cpu_types[i];
        }
    }
    return NULL;
}

#if defined(PQ_LANES)

// The per-type decoders below inline the whole decode with the type's layout as constants, so every shift, offset
// and loop count is known to the compiler.
#if defined(__GNUC__)
#define PQ_INLINE static inline __attribute__((always_inline))
#define PQ_UNROLL _Pragma("GCC unroll 64")
#else
#define PQ_INLINE static inline
#define PQ_UNROLL
#endif

int ggml_polar_cpu_lanes(void) { return PQ_LANES; }
const char * ggml_polar_cpu_isa(void) { return PQ_ISA; }

// Every lane's block, as 32-bit words: word k starts at byte min(4k, type_size - 4), so none reads past the block.
typedef struct {
    pq_vi w[(PQ_BLOCK + 3) / 4];
    int   nw;
    int   type_size;
} pq_words;

PQ_INLINE void pq_words_load(pq_words * b, const uint8_t * x, pq_vi offsets, int type_size) {
    b->type_size = type_size;
    b->nw        = (type_size + 3) / 4;
    for (int k = 0; k < b->nw; ++k) {
        const int at = 4 * k < type_size - 4 ? 4 * k : type_size - 4;
        b->w[k] = pq_gather_u32(x + at, offsets);
    }
}

PQ_INLINE int pq_word_bit(const pq_words * b, int k) {
    return 8 * (4 * k < b->type_size - 4 ? 4 * k : b->type_size - 4);
}

// The nbits-bit field at bit p of every lane's block (nbits <= 16).
PQ_INLINE pq_vi pq_field(const pq_words * b, int p, int nbits) {
    int k = p >> 5 < b->nw - 1 ? p >> 5 : b->nw - 1;
    while (pq_word_bit(b, k) > p) { // the last word that starts at or before p (only the clamped last one may not)
        --k;
    }
    const int   base = pq_word_bit(b, k);
    const pq_vi mask = pq_splat_i((int32_t) ((1u << nbits) - 1));
    pq_vi       v    = pq_srl(b->w[k], p - base);
    if (p + nbits > base + 32) { // continues into the next word
        const int next = pq_word_bit(b, k + 1);
        v = pq_or(v, pq_sll(pq_srl(b->w[k + 1], base + 32 - next), base + 32 - p));
    }
    return pq_and(v, mask);
}

// pq_fp16_to_f32 on every lane, with integer operations (exact, NaN payloads included).
PQ_INLINE pq_vf pq_fp16_lanes(pq_vi h) {
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

// The reference decode of one block in every lane (pq_tree_decode_block): val[v] holds value v of each lane's block.
PQ_INLINE void pq_tree_lanes(const pq_tree_desc * d, const uint8_t * x, pq_vi offsets, pq_vf * val) {
    const int n = 1 << d->levels;
    pq_words  b;
    pq_words_load(&b, x, offsets, d->type_size);
    PQ_UNROLL
    for (int g = 0; g < d->groups; ++g) {
        pq_vf * gv = val + g * n;
        gv[0] = d->radius_format == PQ_RADIUS_FP16 ? pq_fp16_lanes(pq_field(&b, 16 * g, 16))
                                                   : pq_gather_f32(pq_log8_value, pq_field(&b, 8 * g, 8));
        const int code_bit0 = 8 * d->groups * (d->radius_format == PQ_RADIUS_FP16 ? 2 : 1);
        PQ_UNROLL
        for (int l = d->levels - 1; l >= 0; --l) {
            const int    nodes = n >> (l + 1);
            const pq_tab tc    = pq_tab_load(pq_cos + d->table_offset[l], d->bits[l]);
            const pq_tab ts    = pq_tab_load(pq_sin + d->table_offset[l], d->bits[l]);
            PQ_UNROLL
            for (int j = nodes - 1; j >= 0; --j) {
                const pq_vi code = pq_field(&b, code_bit0 + d->code_offset[l] + (g * nodes + j) * d->bits[l], d->bits[l]);
                const pq_vf a    = gv[j];
                gv[2 * j + 1] = pq_mul(a, pq_tab_lookup(&ts, code));
                gv[2 * j]     = pq_mul(a, pq_tab_lookup(&tc, code));
            }
        }
    }
}

// The key mode in every lane (pqk1_decode_span): norm times the position's magnitude, with its sign bit.
static void pqk1_lanes(const uint8_t * x, pq_vi offsets, pq_vf * val) {
    pq_words b;
    pq_words_load(&b, x, offsets, PQK1_TYPE_SIZE);
    const pq_vf r = pq_gather_f32(pq_log8_value, pq_field(&b, 0, 8));
    PQ_UNROLL
    for (int i = 0; i < PQ_BLOCK; ++i) {
        const float m = pq_key_magnitude[i];
        val[i] = pq_mul(r, pq_select(pq_eq0(pq_field(&b, 8 + i, 1)), pq_splat(m), pq_splat(-m)));
    }
}

#define PQ_TREE_LANES(name)                                                            \
    static void name##_lanes(const uint8_t * x, pq_vi offsets, pq_vf * val) {          \
        pq_tree_lanes(&name##_cpu_desc, x, offsets, val);                              \
    }
PQ_TREE_LANES(pq38p)
PQ_TREE_LANES(pq27)
PQ_TREE_LANES(pq32)
PQ_TREE_LANES(pq37)
PQ_TREE_LANES(pq42)
PQ_TREE_LANES(pq46)

typedef void (*pq_lanes_fn)(const uint8_t * x, pq_vi offsets, pq_vf * val);
static const pq_lanes_fn pq_lanes_of[] = { // in pq_cpu_types order
    pq38p_lanes, pq27_lanes, pq32_lanes, pq37_lanes, pq42_lanes, pq46_lanes, pqk1_lanes,
};

static inline void pq_lanes(const struct ggml_polar_cpu_type * t, const uint8_t * x, pq_vi offsets, pq_vf * val) {
    pq_lanes_of[t - pq_cpu_types](x, offsets, val);
}

// offsets must fit in 32 bits: with a larger stride, fall back to the reference one block at a time
static inline int pq_stride_ok(size_t stride) {
    return stride <= (size_t) INT32_MAX / PQ_LANES;
}

void ggml_polar_cpu_decode_lanes(const struct ggml_polar_cpu_type * t, const void * x, size_t stride, int n, float * y) {
    assert(n >= 1 && n <= PQ_LANES && pq_stride_ok(stride));
    pq_vf val[PQ_BLOCK];
    pq_lanes(t, (const uint8_t *) x, pq_lane_offsets(stride, n), val);
    for (int v = 0; v < PQ_BLOCK; ++v) {
        pq_store(y + v * PQ_LANES, val[v]);
    }
}

void ggml_polar_cpu_dot_rows(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride, int n, int nblk,
                             const float * q, float * scores) {
    const uint8_t * rows = (const uint8_t *) x;
    if (!pq_stride_ok(row_stride)) {
        const struct ggml_polar_type_info * info = NULL;
        for (int i = 0; i < ggml_polar_type_count(); ++i) {
            if (strcmp(ggml_polar_get_type_info(i)->name, t->name) == 0) {
                info = ggml_polar_get_type_info(i);
            }
        }
        for (int r = 0; r < n; ++r) {
            info->vec_dot(nblk * PQ_BLOCK, &scores[r], 0, rows + (size_t) r * row_stride, 0, q, 0, 1);
        }
        return;
    }
    for (int r0 = 0; r0 < n; r0 += PQ_LANES) {
        const int   nl      = n - r0 < PQ_LANES ? n - r0 : PQ_LANES;
        const pq_vi offsets = pq_lane_offsets(row_stride, nl);
        pq_vf       acc     = pq_splat(0.0f);
        for (int ib = 0; ib < nblk; ++ib) {
            pq_vf val[PQ_BLOCK];
            pq_lanes(t, rows + (size_t) r0 * row_stride + (size_t) ib * t->type_size, offsets, val);
            for (int v = 0; v < PQ_BLOCK; ++v) {
                acc = pq_madd(val[v], pq_splat(q[ib * PQ_BLOCK + v]), acc);
            }
        }
        for (int r = 0; r < nl; ++r) {
            scores[r0 + r] = pq_lane(acc, r);
        }
    }
}

void ggml_polar_cpu_decode_tile_t(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride, int n,
                                  int nblk, float * y, size_t y_stride) {
    const uint8_t * rows = (const uint8_t *) x;
    assert(pq_stride_ok(row_stride));
    for (int r0 = 0; r0 < n; r0 += PQ_LANES) {
        const int   nl      = n - r0 < PQ_LANES ? n - r0 : PQ_LANES;
        const pq_vi offsets = pq_lane_offsets(row_stride, nl);
        for (int ib = 0; ib < nblk; ++ib) {
            pq_vf val[PQ_BLOCK];
            pq_lanes(t, rows + (size_t) r0 * row_stride + (size_t) ib * t->type_size, offsets, val);
            for (int v = 0; v < PQ_BLOCK; ++v) {
                float * dst = y + (size_t) (ib * PQ_BLOCK + v) * y_stride + r0;
                if (nl == PQ_LANES) {
                    pq_store(dst, val[v]);
                } else {
                    float lanes[PQ_LANES];
                    pq_store(lanes, val[v]);
                    memcpy(dst, lanes, (size_t) nl * sizeof(float));
                }
            }
        }
    }
}

void ggml_polar_cpu_decode_tile(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride, int n,
                                int nblk, float * y, size_t y_stride) {
    const uint8_t * rows = (const uint8_t *) x;
    assert(pq_stride_ok(row_stride));
    float lanes[PQ_BLOCK * PQ_LANES];
    for (int r0 = 0; r0 < n; r0 += PQ_LANES) {
        const int   nl      = n - r0 < PQ_LANES ? n - r0 : PQ_LANES;
        const pq_vi offsets = pq_lane_offsets(row_stride, nl);
        for (int ib = 0; ib < nblk; ++ib) {
            pq_vf val[PQ_BLOCK];
            pq_lanes(t, rows + (size_t) r0 * row_stride + (size_t) ib * t->type_size, offsets, val);
            for (int v = 0; v < PQ_BLOCK; ++v) {
                pq_store(lanes + v * PQ_LANES, val[v]);
            }
            for (int r = 0; r < nl; ++r) {
                float * dst = y + (size_t) (r0 + r) * y_stride + ib * PQ_BLOCK;
                for (int v = 0; v < PQ_BLOCK; ++v) {
                    dst[v] = lanes[v * PQ_LANES + r];
                }
            }
        }
    }
}

size_t ggml_polar_cpu_attn_scratch(int nq, int dk, int dv) {
    (void) dk;
    return (size_t) nq * (size_t) dv * PQ_LANES;
}

// exp(x) for the softmax, x <= 0 (scores minus their running max): 2^n * 2^f with n = round(x / ln 2) and a degree-6
// polynomial for e^r, |r| <= ln(2)/2; relative error about 2 ulp. Below -87 (and -INFINITY, a masked score) it is 0.
static inline pq_vf pq_exp_nonpos(pq_vf x) {
    const pq_vf lo = pq_splat(-87.0f);
    const pq_vf xc = pq_max(x, lo);
    const pq_vf n  = pq_round(pq_mul(xc, pq_splat(1.44269504f)));
    // r = x - n * ln2, in two steps (ln2 = 0.693145751953125 + 1.428606765330187e-06)
    pq_vf r = pq_madd(n, pq_splat(-0.693145751953125f), xc);
    r       = pq_madd(n, pq_splat(-1.428606765330187e-06f), r);
    pq_vf p = pq_splat(1.3888889e-3f);
    p = pq_madd(p, r, pq_splat(8.3333333e-3f));
    p = pq_madd(p, r, pq_splat(4.1666667e-2f));
    p = pq_madd(p, r, pq_splat(1.6666667e-1f));
    p = pq_madd(p, r, pq_splat(0.5f));
    p = pq_madd(p, r, pq_splat(1.0f));
    p = pq_madd(p, r, pq_splat(1.0f));
    return pq_select(pq_lt(x, lo), pq_splat(0.0f), pq_ldexp(p, n));
}

static inline float pq_hsum(pq_vf v) {
    float t[PQ_LANES];
    pq_store(t, v);
    float s = 0.0f;
    for (int r = 0; r < PQ_LANES; ++r) {
        s += t[r];
    }
    return s;
}

void ggml_polar_cpu_attn(const struct ggml_polar_cpu_attn_params * p, float * M, float * S, float * acc,
                         float * scratch) {
    const int nq    = p->nq;
    const int nblkk = p->dk / PQ_BLOCK;
    const int nblkv = p->dv / PQ_BLOCK;
    assert(nq >= 1 && nq <= GGML_POLAR_CPU_ATTN_MAX_Q && p->dk % PQ_BLOCK == 0 && p->dv % PQ_BLOCK == 0);
    assert(pq_stride_ok(p->k_row_stride) && pq_stride_ok(p->v_row_stride));

    // per query: acc = acc_in * in_scale + (the lanes of accv summed), so rescaling touches only accv
    float * accv = scratch;
    float   in_scale[GGML_POLAR_CPU_ATTN_MAX_Q];
    memset(accv, 0, (size_t) nq * p->dv * PQ_LANES * sizeof(float));
    for (int h = 0; h < nq; ++h) {
        in_scale[h] = 1.0f;
    }

    const uint8_t * krows = (const uint8_t *) p->k;
    const uint8_t * vrows = (const uint8_t *) p->v;
    for (int r0 = 0; r0 < p->n_rows; r0 += PQ_LANES) {
        const int nl = p->n_rows - r0 < PQ_LANES ? p->n_rows - r0 : PQ_LANES;

        // mask and ALiBi bias of the tile (lanes past the rows: -INFINITY); a tile masked for every query is skipped
        // before any decoding
        pq_vf bias[GGML_POLAR_CPU_ATTN_MAX_Q];
        int   live = 0;
        for (int h = 0; h < nq; ++h) {
            if (h > 0 && p->mask_stride == 0 && (!p->slope || p->slope[h] == p->slope[0])) {
                bias[h] = bias[0];
            } else if (p->mask) {
                const uint16_t * m = p->mask + (size_t) h * p->mask_stride + r0;
                uint16_t         pad[PQ_LANES];
                if (nl < PQ_LANES) {
                    for (int r = 0; r < PQ_LANES; ++r) {
                        pad[r] = r < nl ? m[r] : 0xfc00; // fp16 -INFINITY
                    }
                    m = pad;
                }
                bias[h] = pq_mul(pq_fp16_lanes(pq_load_u16(m)), pq_splat(p->slope ? p->slope[h] : 1.0f));
            } else {
                float b[PQ_LANES];
                for (int r = 0; r < PQ_LANES; ++r) {
                    b[r] = r < nl ? 0.0f : -INFINITY;
                }
                bias[h] = pq_load(b);
            }
            live |= pq_hmax(bias[h]) != -INFINITY;
        }
        if (!live) {
            continue;
        }

        // scores: each K block decoded once, dotted with every query
        const pq_vi koff = pq_lane_offsets(p->k_row_stride, nl);
        pq_vf       dots[GGML_POLAR_CPU_ATTN_MAX_Q];
        for (int h = 0; h < nq; ++h) {
            dots[h] = pq_splat(0.0f);
        }
        for (int ib = 0; ib < nblkk; ++ib) {
            pq_vf val[PQ_BLOCK];
            pq_lanes(p->k_type, krows + (size_t) r0 * p->k_row_stride + (size_t) ib * p->k_type->type_size, koff, val);
            for (int h = 0; h < nq; ++h) {
                const float * qh = p->q + (size_t) h * p->q_stride + ib * PQ_BLOCK;
                pq_vf         d  = dots[h];
                for (int v = 0; v < PQ_BLOCK; ++v) {
                    d = pq_madd(val[v], pq_splat(qh[v]), d);
                }
                dots[h] = d;
            }
        }

        // online softmax per query, vectorized over the tile's rows
        pq_vf prob[GGML_POLAR_CPU_ATTN_MAX_Q];
        int   any = 0;
        for (int h = 0; h < nq; ++h) {
            pq_vf s = pq_mul(dots[h], pq_splat(p->scale));
            if (p->softcap != 0.0f) {
                float t[PQ_LANES];
                pq_store(t, s);
                for (int r = 0; r < PQ_LANES; ++r) {
                    t[r] = p->softcap * tanhf(t[r]);
                }
                s = pq_load(t);
            }
            s = pq_add(s, bias[h]);
            const float mt = pq_hmax(s);
            if (mt == -INFINITY) {
                prob[h] = pq_splat(0.0f);
                continue;
            }
            if (mt > M[h]) {
                const float ms = expf(M[h] - mt);
                M[h] = mt;
                S[h] *= ms;
                in_scale[h] *= ms;
                const pq_vf vms = pq_splat(ms);
                for (int d = 0; d < p->dv; ++d) {
                    pq_store(accv + ((size_t) h * p->dv + d) * PQ_LANES,
                             pq_mul(pq_load(accv + ((size_t) h * p->dv + d) * PQ_LANES), vms));
                }
            }
            prob[h] = pq_exp_nonpos(pq_add(s, pq_splat(-M[h])));
            S[h] += pq_hsum(prob[h]);
            any = 1;
        }
        if (!any) {
            continue;
        }

        // values: each V block decoded once, accumulated into every query's lanes
        const pq_vi voff = pq_lane_offsets(p->v_row_stride, nl);
        for (int ib = 0; ib < nblkv; ++ib) {
            pq_vf val[PQ_BLOCK];
            pq_lanes(p->v_type, vrows + (size_t) r0 * p->v_row_stride + (size_t) ib * p->v_type->type_size, voff, val);
            for (int h = 0; h < nq; ++h) {
                float * a = accv + ((size_t) h * p->dv + ib * PQ_BLOCK) * PQ_LANES;
                for (int v = 0; v < PQ_BLOCK; ++v) {
                    pq_store(a + v * PQ_LANES, pq_madd(val[v], prob[h], pq_load(a + v * PQ_LANES)));
                }
            }
        }
    }

    for (int h = 0; h < nq; ++h) {
        for (int d = 0; d < p->dv; ++d) {
            acc[(size_t) h * p->dv + d] = acc[(size_t) h * p->dv + d] * in_scale[h] +
                                          pq_hsum(pq_load(accv + ((size_t) h * p->dv + d) * PQ_LANES));
        }
    }
}

#else // no SIMD: the reference codec, one block (one lane) at a time

int ggml_polar_cpu_lanes(void) { return 1; }
const char * ggml_polar_cpu_isa(void) { return "scalar"; }

static void pq_ref_decode(const struct ggml_polar_cpu_type * t, const uint8_t * x, float * y) {
    if (t->desc) {
        pq_tree_decode_block(t->desc, x, y);
    } else {
        pqk1_decode_span(x, 0, PQ_BLOCK, y);
    }
}

void ggml_polar_cpu_decode_lanes(const struct ggml_polar_cpu_type * t, const void * x, size_t stride, int n, float * y) {
    assert(n == 1);
    (void) stride;
    (void) n;
    pq_ref_decode(t, (const uint8_t *) x, y);
}

void ggml_polar_cpu_dot_rows(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride, int n, int nblk,
                             const float * q, float * scores) {
    float val[PQ_BLOCK];
    for (int r = 0; r < n; ++r) {
        float acc = 0.0f;
        for (int ib = 0; ib < nblk; ++ib) {
            pq_ref_decode(t, (const uint8_t *) x + (size_t) r * row_stride + (size_t) ib * t->type_size, val);
            for (int v = 0; v < PQ_BLOCK; ++v) {
                acc += val[v] * q[ib * PQ_BLOCK + v];
            }
        }
        scores[r] = acc;
    }
}

void ggml_polar_cpu_decode_tile_t(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride, int n,
                                  int nblk, float * y, size_t y_stride) {
    float val[PQ_BLOCK];
    for (int r = 0; r < n; ++r) {
        for (int ib = 0; ib < nblk; ++ib) {
            pq_ref_decode(t, (const uint8_t *) x + (size_t) r * row_stride + (size_t) ib * t->type_size, val);
            for (int v = 0; v < PQ_BLOCK; ++v) {
                y[(size_t) (ib * PQ_BLOCK + v) * y_stride + r] = val[v];
            }
        }
    }
}

void ggml_polar_cpu_decode_tile(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride, int n,
                                int nblk, float * y, size_t y_stride) {
    for (int r = 0; r < n; ++r) {
        for (int ib = 0; ib < nblk; ++ib) {
            pq_ref_decode(t, (const uint8_t *) x + (size_t) r * row_stride + (size_t) ib * t->type_size,
                          y + (size_t) r * y_stride + ib * PQ_BLOCK);
        }
    }
}

size_t ggml_polar_cpu_attn_scratch(int nq, int dk, int dv) {
    (void) nq;
    return (size_t) dk + (size_t) dv;
}

void ggml_polar_cpu_attn(const struct ggml_polar_cpu_attn_params * p, float * M, float * S, float * acc,
                         float * scratch) {
    float * krow = scratch;
    float * vrow = scratch + p->dk;
    for (int r = 0; r < p->n_rows; ++r) {
        int decoded_k = 0;
        int decoded_v = 0;
        for (int h = 0; h < p->nq; ++h) {
            float bias = 0.0f;
            if (p->mask) {
                bias = (p->slope ? p->slope[h] : 1.0f) * pq_fp16_to_f32(p->mask[(size_t) h * p->mask_stride + r]);
            }
            if (bias == -INFINITY) {
                continue;
            }
            if (!decoded_k) {
                ggml_polar_cpu_decode_tile(p->k_type, (const uint8_t *) p->k + (size_t) r * p->k_row_stride, 0, 1,
                                           p->dk / PQ_BLOCK, krow, 0);
                decoded_k = 1;
            }
            const float * qh = p->q + (size_t) h * p->q_stride;
            float         s  = 0.0f;
            for (int d = 0; d < p->dk; ++d) {
                s += krow[d] * qh[d];
            }
            s *= p->scale;
            if (p->softcap != 0.0f) {
                s = p->softcap * tanhf(s);
            }
            s += bias;
            float ms = 1.0f;
            float vs = 1.0f;
            if (s > M[h]) {
                ms   = expf(M[h] - s);
                M[h] = s;
            } else {
                vs = expf(s - M[h]);
            }
            if (!decoded_v) {
                ggml_polar_cpu_decode_tile(p->v_type, (const uint8_t *) p->v + (size_t) r * p->v_row_stride, 0, 1,
                                           p->dv / PQ_BLOCK, vrow, 0);
                decoded_v = 1;
            }
            float * a = acc + (size_t) h * p->dv;
            for (int d = 0; d < p->dv; ++d) {
                a[d] = a[d] * ms + vrow[d] * vs;
            }
            S[h] = S[h] * ms + vs;
        }
    }
}

#endif

// A row of k values is a tile of k/64 one-block rows, one block apart, written 64 values apart.
void ggml_polar_cpu_dequantize_row(const struct ggml_polar_cpu_type * t, const void * x, float * y, int64_t k) {
    assert(k % PQ_BLOCK == 0 && k / PQ_BLOCK <= INT32_MAX);
    ggml_polar_cpu_decode_tile(t, x, (size_t) t->type_size, (int) (k / PQ_BLOCK), 1, y, PQ_BLOCK);
}
