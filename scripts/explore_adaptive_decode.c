// Exploration (issue 17, item 4): what a radius-adaptive allocation would cost the CPU's lane decoder, before any type
// is built. scripts/explore_adaptive_bits.py measures what it buys; this times a decoder for pq37's layout whose
// levels 1 and 2 (or level 1 alone) spend each group of 8 nodes' bits by rank ("rank8": 0.80x pq37's relative MSE on
// Gaussian blocks at levels 1-2, 0.81x at level 1 alone), against the shipped pq37 decoder on the same bytes.
//
// The adaptive decoder does everything a real one must, in every lane (one block per lane): the ranks of 8 decoded
// radii (ties to the lower index), each node's bits from a fixed profile per rank, the prefix sums that place its
// field inside the group's bits, a field at a per-lane bit offset, and a codebook chosen per lane. Its codebooks are
// stand-ins of the right sizes (level 1: the 64-angle circle, level 2: the 2-, 3- and 4-bit tables side by side), so
// its output is a cost model, not a codec: the decode is timed, not checked.
//   cc -O3 -march=native -ffp-contract=off -Iggml_polar -Iggml_polar/cpu scripts/explore_adaptive_decode.c
//      ggml_polar/ggml-polar.c -lm -o build/explore_adaptive_decode && build/explore_adaptive_decode
#define _POSIX_C_SOURCE 199309L // clock_gettime under -std=c11

#include "polar-cpu-decode.c"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

// Per-lane shifts, integer permutes and rank counts: the two x86 ISAs this machine family has.
#if defined(__AVX512F__)
static inline pq_vi vsrlv(pq_vi a, pq_vi n) { return _mm512_srlv_epi32(a, n); }
static inline pq_vi vsllv(pq_vi a, pq_vi n) { return _mm512_sllv_epi32(a, n); }
static inline pq_vi vsub(pq_vi a, pq_vi b) { return _mm512_sub_epi32(a, b); }
static inline pq_vi vzero(void) { return _mm512_setzero_si512(); }
static inline pq_vi vload(const int32_t * p) { return _mm512_loadu_si512(p); }
static inline pq_vi vperm(pq_vi idx, pq_vi t) { return _mm512_permutexvar_epi32(idx, t); }
// a before b in the group: a >= b ranks b lower (ties to the lower index), else a lower
static inline void vcount(pq_vf a, pq_vf b, pq_vi * ra, pq_vi * rb) {
    const __mmask16 ge  = _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ);
    const pq_vi     one = _mm512_set1_epi32(1);
    *rb = _mm512_mask_add_epi32(*rb, ge, *rb, one);
    *ra = _mm512_mask_add_epi32(*ra, (__mmask16) ~ge, *ra, one);
}
static inline pq_vf vxor_sign(pq_vf a, pq_vi sign) { return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), sign)); }
static inline pq_vf vpick16(const pq_tab * t, pq_vi idx) { return _mm512_permutexvar_ps(idx, t->v[0]); }
static inline pq_vf vblend_bit(pq_vi bit_in_sign, pq_vf if_clear, pq_vf if_set) {
    return _mm512_mask_blend_ps(_mm512_movepi32_mask(bit_in_sign), if_clear, if_set);
}
#elif defined(__AVX2__)
static inline pq_vi vsrlv(pq_vi a, pq_vi n) { return _mm256_srlv_epi32(a, n); }
static inline pq_vi vsllv(pq_vi a, pq_vi n) { return _mm256_sllv_epi32(a, n); }
static inline pq_vi vsub(pq_vi a, pq_vi b) { return _mm256_sub_epi32(a, b); }
static inline pq_vi vzero(void) { return _mm256_setzero_si256(); }
static inline pq_vi vload(const int32_t * p) { return _mm256_loadu_si256((const __m256i *) p); }
static inline pq_vi vperm(pq_vi idx, pq_vi t) { return _mm256_permutevar8x32_epi32(t, idx); }
static inline void vcount(pq_vf a, pq_vf b, pq_vi * ra, pq_vi * rb) {
    const pq_vi ge = _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_GE_OQ)); // -1 where set
    *rb = _mm256_sub_epi32(*rb, ge);
    *ra = _mm256_add_epi32(*ra, _mm256_add_epi32(ge, _mm256_set1_epi32(1)));
}
static inline pq_vf vxor_sign(pq_vf a, pq_vi sign) { return _mm256_xor_ps(a, _mm256_castsi256_ps(sign)); }
static inline pq_vf vpick16(const pq_tab * t, pq_vi idx) { return pq_tab_pick16(t->v[0], t->v[1], idx); }
static inline pq_vf vblend_bit(pq_vi bit_in_sign, pq_vf if_clear, pq_vf if_set) {
    return _mm256_blendv_ps(if_clear, if_set, _mm256_castsi256_ps(bit_in_sign));
}
#else
#error "this cost model needs AVX2 or AVX-512 (per-lane shifts): build it with -march=native on x86-64"
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec * 1e-9;
}

// rank8 profiles for pq37 (explore_adaptive_bits.rank_profile(pq37's bits, 8)): bits by rank, largest radius first.
// tests/test_simd.py checks that they are still what rank_profile gives.
static const int32_t profile_l1[16] = { 5, 5, 4, 4, 4, 4, 3, 3 };
static const int32_t profile_l2[16] = { 4, 4, 3, 3, 3, 3, 2, 2 };

// Ranks of 8 lanes' radii r[0..7] among each other: the number of radii larger, or equal at a lower index.
static inline void rank8(const pq_vf * r, pq_vi * rank) {
    for (int i = 0; i < 8; ++i) {
        rank[i] = vzero();
    }
    for (int i = 1; i < 8; ++i) {
        for (int k = 0; k < i; ++k) {
            vcount(r[k], r[i], &rank[k], &rank[i]);
        }
    }
}

// Fields of 8 nodes packed by their bits inside a group of `total` bits that starts at bit p of every lane's block.
static inline void fields8(const pq_words * b, int p, int total, const pq_vi * bits, pq_vi * code) {
    const pq_vi lo = pq_or(pq_field(b, p, 16), pq_sll(pq_field(b, p + 16, 16), 16));
    const pq_vi hi = total > 32 ? pq_field(b, p + 32, total - 32) : vzero();
    const pq_vi one = pq_splat_i(1), w32 = pq_splat_i(32);
    pq_vi       at  = vzero();
    for (int i = 0; i < 8; ++i) {
        const pq_vi mask = vsub(vsllv(one, bits[i]), one);
        // a count of 32 or more (or negative, as unsigned) shifts everything out: the three terms cover every case
        const pq_vi v = pq_or(pq_or(vsrlv(lo, at), vsllv(hi, vsub(w32, at))), vsrlv(hi, vsub(at, w32)));
        code[i] = pq_and(v, mask);
        at      = pq_add_i(at, bits[i]);
    }
}

// Stand-in codebooks: a quadrant of the 64-angle circle (cos and sin of angles 0..15), and level 2's 2-, 3- and 4-bit
// tables side by side (the b-bit one at 2^b - 4).
static float quadrant_cos[16], quadrant_sin[16], level2_cos[32], level2_sin[32];

// cos and sin of angle k (0..63) of the 64-angle circle: a quadrant lookup turned by k / 16 quarter turns.
static inline void circle64(const pq_tab * qc, const pq_tab * qs, pq_vi k, pq_vf * c, pq_vf * s) {
    const pq_vi i    = pq_and(k, pq_splat_i(15));
    const pq_vf a    = vpick16(qc, i);
    const pq_vf b    = vpick16(qs, i);
    const pq_vi odd  = pq_sll(k, 27);           // bit 4 (quadrant odd) in the sign bit
    const pq_vi half = pq_sll(k, 26);           // bit 5 (quadrant >= 2)
    const pq_vi sign = pq_splat_i((int32_t) 0x80000000u);
    // turned by q quarter turns: cos is negated when exactly one of q's bits is set, sin when q >= 2
    *c = vxor_sign(vxor_sign(vblend_bit(odd, a, b), pq_and(half, sign)), pq_and(odd, sign));
    *s = vxor_sign(vblend_bit(odd, b, a), pq_and(half, sign));
}

// pq37's block with levels 1 to `top` adaptive (rank8), the levels above as pq_tree_lanes decodes them.
static inline void pq37_rank8(const uint8_t * x, pq_vi offsets, pq_vf * val, const int top) {
    const pq_tree_desc * d = &pq37_desc;
    pq_words             b;
    pq_words_load(&b, x, offsets, d->type_size);
    val[0] = pq_fp16_lanes(pq_field(&b, 0, 16));
    const int code_bit0 = 16; // after pq37's one fp16 radius
    for (int l = d->levels - 1; l >= top; --l) {
        const int    nodes = 64 >> (l + 1);
        const pq_tab tc    = pq_tab_load(pq_cos + d->table_offset[l], d->bits[l]);
        const pq_tab ts    = pq_tab_load(pq_sin + d->table_offset[l], d->bits[l]);
        for (int j = nodes - 1; j >= 0; --j) {
            const pq_vi code = pq_field(&b, code_bit0 + d->code_offset[l] + j * d->bits[l], d->bits[l]);
            const pq_vf a    = val[j];
            val[2 * j + 1]   = pq_mul(a, pq_tab_lookup(&ts, code));
            val[2 * j]       = pq_mul(a, pq_tab_lookup(&tc, code));
        }
    }
    const pq_tab qc = pq_tab_load(quadrant_cos, 4), qs = pq_tab_load(quadrant_sin, 4);
    const pq_tab c2 = pq_tab_load(level2_cos, 5), s2 = pq_tab_load(level2_sin, 5);
    for (int l = top - 1; l >= 0; --l) {
        const int       nodes   = 64 >> (l + 1);
        const int32_t * profile = l == 1 ? profile_l2 : profile_l1;
        const pq_vi     prof    = vload(profile);
        for (int g = nodes / 8 - 1; g >= 0; --g) {
            pq_vf r[8];
            pq_vi rank[8], bits[8], code[8];
            for (int i = 0; i < 8; ++i) {
                r[i] = val[8 * g + i];
            }
            rank8(r, rank);
            for (int i = 0; i < 8; ++i) {
                bits[i] = vperm(rank[i], prof);
            }
            fields8(&b, code_bit0 + d->code_offset[l] + 8 * g * d->bits[l], 8 * d->bits[l], bits, code);
            for (int i = 7; i >= 0; --i) {
                pq_vf c, s;
                if (l == 0) { // the 64-angle circle: a b-bit code's centroid is angle (2 code + 1) << (5 - b)
                    const pq_vi at = vsllv(pq_add_i(pq_add_i(code[i], code[i]), pq_splat_i(1)),
                                           vsub(pq_splat_i(5), bits[i]));
                    circle64(&qc, &qs, at, &c, &s);
                } else {      // the b-bit table starts at 2^b - 4
                    const pq_vi at = pq_add_i(vsub(vsllv(pq_splat_i(1), bits[i]), pq_splat_i(4)), code[i]);
                    c = pq_tab_lookup(&c2, at);
                    s = pq_tab_lookup(&s2, at);
                }
                const int   j = 8 * g + i;
                const pq_vf a = r[i];
                val[2 * j + 1] = pq_mul(a, s);
                val[2 * j]     = pq_mul(a, c);
            }
        }
    }
}

static void pq37_rank8_level1(const uint8_t * x, pq_vi offsets, pq_vf * val) { pq37_rank8(x, offsets, val, 1); }
static void pq37_rank8_levels12(const uint8_t * x, pq_vi offsets, pq_vf * val) { pq37_rank8(x, offsets, val, 2); }

// Seconds per block for a lane decoder over n blocks of pq37's size, rows one block apart, the values summed so that
// nothing is optimized away.
static double time_lanes(pq_lanes_fn lanes, const uint8_t * blocks, int n, float * sink) {
    enum { REPS = 50 };
    const pq_vi offsets = pq_lane_offsets(PQ37_TYPE_SIZE, PQ_LANES);
    pq_vf       acc     = pq_splat(0.0f);
    const double t0 = now();
    for (int rep = 0; rep < REPS; ++rep) {
        for (int r0 = 0; r0 + PQ_LANES <= n; r0 += PQ_LANES) {
            pq_vf val[PQ_BLOCK];
            lanes(blocks + (size_t) r0 * PQ37_TYPE_SIZE, offsets, val);
            for (int v = 0; v < PQ_BLOCK; ++v) {
                acc = pq_add(acc, val[v]);
            }
        }
    }
    const double dt = now() - t0;
    *sink += pq_lane(acc, 0);
    return dt / ((double) REPS * n);
}

int main(void) {
    enum { N = 4096 * 3 };
    for (int i = 0; i < 16; ++i) {
        quadrant_cos[i] = cosf((float) i * 6.28318530718f / 64.0f);
        quadrant_sin[i] = sinf((float) i * 6.28318530718f / 64.0f);
    }
    for (int i = 0; i < 32; ++i) {
        level2_cos[i] = cosf((float) (i % 16) * 0.09817477f);
        level2_sin[i] = sinf((float) (i % 16) * 0.09817477f);
    }
    // real pq37 blocks of uniform values, so that both decoders see the radii a cache holds
    float *   x      = malloc(sizeof(float) * N * PQ_BLOCK);
    uint8_t * blocks = malloc((size_t) N * PQ37_TYPE_SIZE);
    srand(1);
    for (int i = 0; i < N * PQ_BLOCK; ++i) {
        x[i] = (float) rand() / (float) RAND_MAX - 0.5f;
    }
    const struct ggml_polar_type_info * info = ggml_polar_get_type_info(GGML_POLAR_TYPE_PQ37);
    info->from_float_ref(x, blocks, (int64_t) N * PQ_BLOCK);
    const pq_lanes_fn fixed = ggml_polar_cpu_type_get(GGML_POLAR_TYPE_PQ37)->lanes;
    float sink = 0.0f;
    printf("%s, %d lanes\n| round | pq37 as built, ns/block | rank8 at level 1 | ratio | rank8 at levels 1-2 | ratio |\n"
           "|---|---:|---:|---:|---:|---:|\n", PQ_ISA, PQ_LANES);
    for (int round = 1; round <= 3; ++round) {
        const double a = time_lanes(fixed, blocks, N, &sink);
        const double b = time_lanes(pq37_rank8_level1, blocks, N, &sink);
        const double c = time_lanes(pq37_rank8_levels12, blocks, N, &sink);
        printf("| %d | %.2f | %.2f | %.2fx | %.2f | %.2fx |\n", round, a * 1e9, b * 1e9, b / a, c * 1e9, c / a);
    }
    fprintf(stderr, "(checksum %g)\n", (double) sink);
    free(x);
    free(blocks);
    return 0;
}
