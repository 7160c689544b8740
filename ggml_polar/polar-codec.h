// The PolarQuant block codec: one source compiled as C (the reference library, ggml-polar.c) and as Metal
// (flattened into polar.metal), so the CPU and the GPU encode and decode with the same float32 operations in the
// same order. Pointer parameters carry Metal address spaces through PQ_DEVICE / PQ_CONSTANT / PQ_THREAD, which are
// empty in C. Every function is plain scalar code; SIMD paths live elsewhere and are checked against these.
//
//   encode: sanitize -> scale the group by 2^k (exact) -> per level, bin each angle by float32 comparisons against
//           the generated boundaries, then sum the pair's squares -> radius = sqrt(sum) * 2^-k.
//   decode: node value = parent value * cos or sin of its centroid, from the group's radius down to the leaves.
//
// Exactness needs IEEE float32 multiplies, adds, compares and a correctly rounded sqrt without FMA contraction:
// C builds with -ffp-contract=off, Metal functions switch to the safe math mode (PQ_FP_SAFE) and precise::sqrt.
#pragma once

#include "polar-blocks.h"

#if defined(__METAL_VERSION__)
#define PQ_DEVICE   device
#define PQ_CONSTANT constant
#define PQ_THREAD   thread
#define PQ_FP_SAFE  _Pragma("METAL fp math_mode(safe)")
#define pq_fabs(x)    fabs(x)
#define pq_fmax(x, y) fmax(x, y)
#define pq_sqrt(x)    precise::sqrt(x)
static inline uint32_t pq_bits_of(float f) { return as_type<uint32_t>(f); }
static inline float pq_float_of(uint32_t b) { return as_type<float>(b); }
#else
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#define PQ_DEVICE
#define PQ_CONSTANT
#define PQ_THREAD
#define PQ_FP_SAFE
#define pq_fabs(x)    fabsf(x)
#define pq_fmax(x, y) fmaxf(x, y)
#define pq_sqrt(x)    sqrtf(x)
static inline uint32_t pq_bits_of(float f) { uint32_t b; memcpy(&b, &f, sizeof(b)); return b; }
static inline float pq_float_of(uint32_t b) { float f; memcpy(&f, &b, sizeof(f)); return f; }
#endif

// ---------------------------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------------------------

// NaN -> 0, +-Inf -> +-FLT_MAX: a corrupt value must not poison the whole group's radius.
static inline float pq_sanitize(float v) {
    PQ_FP_SAFE
    if (isnan(v)) {
        return 0.0f;
    }
    return v > FLT_MAX ? FLT_MAX : (v < -FLT_MAX ? -FLT_MAX : v);
}

// k such that amax * 2^k lies in [1, 4): a group's squares can then neither overflow nor lose its largest values
// to underflow, and scaling by a power of two leaves every angle unchanged. 2^k stays a normal float.
static inline int pq_scale_exponent(float amax) {
    const int e = (int) ((pq_bits_of(amax) >> 23) & 0xff);
    return e > 253 ? -126 : 127 - e;
}

// 2^n exactly, n in [-127, 127] (2^-127 is the one subnormal: 0x00400000).
static inline float pq_exp2i(int n) {
    return pq_float_of(n >= -126 ? (uint32_t) (n + 127) << 23 : 0x00400000u);
}

// Radius -> fp16, round to nearest even, saturating at 65504 (r >= 0, may be +Inf). Integer arithmetic, so the
// result does not depend on how a backend converts or flushes subnormals.
static inline uint16_t pq_fp16_from_radius(float r) {
    PQ_FP_SAFE
    if (!(r < 65504.0f)) {
        return 0x7bff;
    }
    const uint32_t b = pq_bits_of(r);
    const int      e = (int) (b >> 23);
    const uint32_t m = b & 0x7fffff;
    if (e >= 113) { // r >= 2^-14: a normal fp16
        uint32_t       h   = ((uint32_t) (e - 112) << 10) | (m >> 13);
        const uint32_t rem = m & 0x1fff;
        h += (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ? 1u : 0u;
        return (uint16_t) h;
    }
    if (e < 102) { // r < 2^-25: rounds to zero
        return 0;
    }
    // subnormal fp16: r = (m | 2^23) * 2^(e-150), counted in units of 2^-24
    const uint32_t full  = m | 0x800000;
    const int      shift = 126 - e;
    uint32_t       h     = full >> shift;
    const uint32_t rem   = full & ((1u << shift) - 1);
    const uint32_t half_ = 1u << (shift - 1);
    h += (rem > half_ || (rem == half_ && (h & 1))) ? 1u : 0u;
    return (uint16_t) h;
}

static inline float pq_fp16_to_f32(uint16_t h) {
    PQ_FP_SAFE
    const uint32_t sign = (uint32_t) (h & 0x8000) << 16;
    const uint32_t e    = (h >> 10) & 0x1f;
    const uint32_t m    = h & 0x3ff;
    if (e == 0x1f) {
        return pq_float_of(sign | 0x7f800000 | (m << 13));
    }
    if (e != 0) {
        return pq_float_of(sign | ((e + 112) << 23) | (m << 13));
    }
    const float sub = (float) m * 5.9604644775390625e-8f; // m * 2^-24, exact (no hex floats: MSL is C++14)
    return sign ? -sub : sub;
}

// Code of the 8-bit log norm: the number of boundaries below r (binary search over the sorted table).
static inline uint8_t pq_log8_encode(float r) {
    PQ_FP_SAFE
    int lo = 0;
    int hi = 255;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (pq_log8_bound[mid] < r) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return (uint8_t) lo;
}

// ---------------------------------------------------------------------------------------------------------------
// The code stream: LSB-first, level 1 for the whole block first; node j of level l at code_offset[l] + j*bits[l].
// ---------------------------------------------------------------------------------------------------------------

static inline unsigned pq_get_code(PQ_DEVICE const uint8_t * qs, int bitpos, int nbits) {
    if (nbits == 0) {
        return 0;
    }
    const int shift = bitpos & 7;
    unsigned  v     = qs[bitpos >> 3];
    if (shift + nbits > 8) { // the field continues into the next byte, which is inside the stream
        v |= (unsigned) qs[(bitpos >> 3) + 1] << 8;
    }
    return (v >> shift) & ((1u << nbits) - 1);
}

// The bytes must be zeroed first. A field of at most 8 bits touches at most two bytes.
static inline void pq_put_code(PQ_DEVICE uint8_t * qs, int bitpos, int nbits, unsigned code) {
    const unsigned v     = code << (bitpos & 7);
    const int      first = bitpos >> 3;
    qs[first] |= (uint8_t) (v & 0xff);
    if ((bitpos & 7) + nbits > 8) {
        qs[first + 1] |= (uint8_t) (v >> 8);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------------------------

// The number of boundaries t[i] with y > t[i] * x: branch-free, so compilers vectorize it.
static inline unsigned pq_count_below(float y, float x, int n, PQ_CONSTANT const float * t) {
    PQ_FP_SAFE
    unsigned count = 0;
    for (int i = 0; i < n; ++i) {
        count += y > t[i] * x ? 1u : 0u;
    }
    return count;
}

// Level 1: the angle of (x, y) on the whole circle. The quadrant takes the top 2 bits; inside it the pair is turned
// into (u > 0, v >= 0) and the bin is the number of boundaries b with v > tan(b) * u. (0, 0) is quadrant 0, bin 0.
static inline unsigned pq_level1_code(float x, float y, int bits, PQ_CONSTANT const float * tan_bound) {
    PQ_FP_SAFE
    unsigned q;
    float    u;
    float    v;
    if (x > 0.0f && y >= 0.0f) {
        q = 0; u = x;  v = y;
    } else if (x <= 0.0f && y > 0.0f) {
        q = 1; u = y;  v = -x;
    } else if (x < 0.0f && y <= 0.0f) {
        q = 2; u = -x; v = -y;
    } else if (x >= 0.0f && y < 0.0f) {
        q = 3; u = -y; v = x;
    } else {
        q = 0; u = 0.0f; v = 0.0f;
    }
    return (q << (bits - 2)) | pq_count_below(v, u, (1 << (bits - 2)) - 1, tan_bound);
}

// Levels >= 2: the angle atan(sqrt(b / a)) of two squared radii, binned by b > tan^2(boundary) * a.
static inline unsigned pq_level_code(float a, float b, int bits, PQ_CONSTANT const float * tan2_bound) {
    PQ_FP_SAFE
    return pq_count_below(b, a, (1 << bits) - 1, tan2_bound);
}

// Sanitizes n values into v and scales them by 2^k (k returned) so that their squares are safe.
static inline int pq_prepare_group(PQ_DEVICE const float * x, int n, PQ_THREAD float * v) {
    PQ_FP_SAFE
    float amax = 0.0f;
    for (int i = 0; i < n; ++i) {
        v[i] = pq_sanitize(x[i]);
        amax = pq_fmax(amax, pq_fabs(v[i]));
    }
    const int   k     = pq_scale_exponent(amax);
    const float scale = pq_exp2i(k);
    for (int i = 0; i < n; ++i) {
        v[i] *= scale;
    }
    return k;
}

// Group g's radius r in its format: fp16 (little-endian) or the 8-bit log norm.
static inline void pq_put_radius(PQ_CONSTANT const pq_tree_desc * d, PQ_DEVICE uint8_t * blk, int g, float r) {
    if (d->radius_format == PQ_RADIUS_FP16) {
        const uint16_t h = pq_fp16_from_radius(r);
        blk[2 * g]       = (uint8_t) (h & 0xff);
        blk[2 * g + 1]   = (uint8_t) (h >> 8);
    } else {
        blk[g] = pq_log8_encode(r);
    }
}

static inline void pq_tree_quantize_block(PQ_CONSTANT const pq_tree_desc * d, PQ_DEVICE const float * x,
                                          PQ_DEVICE uint8_t * blk) {
    PQ_FP_SAFE
    const int n       = 1 << d->levels;
    const int r_bytes = d->radius_format == PQ_RADIUS_FP16 ? 2 : 1;
    PQ_DEVICE uint8_t * qs = blk + d->groups * r_bytes;
    for (int i = 0; i < d->type_size; ++i) {
        blk[i] = 0;
    }

    for (int g = 0; g < d->groups; ++g) {
        float     v[PQ_BLOCK];
        float     sq[PQ_BLOCK / 2];
        const int k = pq_prepare_group(x + g * n, n, v);
        sq[0] = 0.0f; // always overwritten below (a group has at least one pair); quiets maybe-uninitialized

        PQ_CONSTANT const float * tan1 = pq_bound + d->bound_offset[0];
        for (int j = 0; j < n / 2; ++j) {
            const unsigned code = pq_level1_code(v[2 * j], v[2 * j + 1], d->bits[0], tan1);
            pq_put_code(qs, d->code_offset[0] + (g * (n / 2) + j) * d->bits[0], d->bits[0], code);
            sq[j] = v[2 * j] * v[2 * j] + v[2 * j + 1] * v[2 * j + 1];
        }
        for (int l = 1; l < d->levels; ++l) {
            const int                 nodes = n >> (l + 1);
            PQ_CONSTANT const float * tan2  = pq_bound + d->bound_offset[l];
            for (int j = 0; j < nodes; ++j) {
                const float    a    = sq[2 * j];
                const float    b    = sq[2 * j + 1];
                const unsigned code = pq_level_code(a, b, d->bits[l], tan2);
                pq_put_code(qs, d->code_offset[l] + (g * nodes + j) * d->bits[l], d->bits[l], code);
                sq[j] = a + b;
            }
        }
        pq_put_radius(d, blk, g, pq_sqrt(sq[0]) * pq_exp2i(-k));
    }
}

// Key mode: the 8-bit log norm of the whole block, then one sign bit per value.
static inline void pqk1_quantize_block(PQ_DEVICE const float * x, PQ_DEVICE uint8_t * blk) {
    PQ_FP_SAFE
    float     v[PQ_BLOCK];
    float     sq[PQ_BLOCK / 2];
    const int k = pq_prepare_group(x, PQ_BLOCK, v);
    for (int j = 0; j < PQ_BLOCK / 2; ++j) {
        sq[j] = v[2 * j] * v[2 * j] + v[2 * j + 1] * v[2 * j + 1];
    }
    for (int nodes = PQ_BLOCK / 4; nodes >= 1; nodes /= 2) {
        for (int j = 0; j < nodes; ++j) {
            sq[j] = sq[2 * j] + sq[2 * j + 1];
        }
    }
    blk[0] = pq_log8_encode(pq_sqrt(sq[0]) * pq_exp2i(-k));
    for (int i = 1; i < PQK1_TYPE_SIZE; ++i) {
        blk[i] = 0;
    }
    for (int i = 0; i < PQ_BLOCK; ++i) {
        // the sign of the sanitized value: scaling may flush a tiny negative value to -0
        blk[1 + i / 8] |= (uint8_t) ((pq_sanitize(x[i]) < 0.0f ? 1 : 0) << (i % 8));
    }
}

// Trellis types: a Viterbi search for the path of least squared error over the 2^L states of unit-scale values. A
// type's table is planar: value v of state s at pq_trellis[table_offset + v * 2^L + s].
// The search's arrays hold PQ_TRELLIS_MAX_STATES costs and PQ_TRELLIS_MAX_BACK backpointers (generated).

// State s's squared error on one step's V values u.
static inline float pq_trellis_error(PQ_CONSTANT const float * t, int S, int V, PQ_THREAD const float * u, int s) {
    PQ_FP_SAFE
    float d = u[0] - t[s];
    float e = d * d;
    for (int v = 1; v < V; ++v) {
        d = u[v] - t[v * S + s];
        e = e + d * d;
    }
    return e;
}

// The end of a search: the cheapest end state (the lowest on ties; o >= 0: among those whose low L-k bits are o),
// then the path back through the backpointers, back[(i-1) * 2^(L-k) + j] the predecessor's top bits p of step i's
// states with top bits j.
static inline void pq_trellis_backtrack(PQ_CONSTANT const pq_trellis_desc * d, PQ_THREAD const float * cost,
                                        PQ_THREAD const uint8_t * back, int o, PQ_THREAD int * path) {
    PQ_FP_SAFE
    const int S = 1 << d->L, nj = 1 << (d->L - d->k), steps = PQ_BLOCK / d->V, stride = o < 0 ? 1 : nj;
    int       s = o < 0 ? 0 : o;
    for (int c = s + stride; c < S; c += stride) {
        s = cost[c] < cost[s] ? c : s;
    }
    path[steps - 1] = s;
    for (int i = steps - 1; i > 0; --i) {
        s           = (s >> d->k) | (back[(i - 1) * nj + (s >> d->k)] << (d->L - d->k));
        path[i - 1] = s;
    }
}

// One search over unit-scale values u; path receives each step's state. o < 0: free; else the path starts in a
// state whose top L-k bits are o and ends in one whose low L-k bits are o. The predecessors of a state are
// j + p * 2^(L-k) (p < 2^k) for its top bits j, so their minimum is taken once per j (ties to the lowest p).
static inline void pq_trellis_search(PQ_CONSTANT const pq_trellis_desc * d, PQ_THREAD const float * u, int o,
                                     PQ_THREAD int * path) {
    PQ_FP_SAFE
    const int S = 1 << d->L, nj = 1 << (d->L - d->k), np = 1 << d->k, steps = PQ_BLOCK / d->V;
    PQ_CONSTANT const float * t = pq_trellis + d->table_offset;
    float   cost[PQ_TRELLIS_MAX_STATES];
    float   best[PQ_TRELLIS_MAX_STATES];
    uint8_t back[PQ_TRELLIS_MAX_BACK];
    for (int s = 0; s < S; ++s) {
        cost[s] = o < 0 || (s >> d->k) == o ? pq_trellis_error(t, S, d->V, u, s) : INFINITY;
    }
    for (int i = 1; i < steps; ++i) {
        for (int j = 0; j < nj; ++j) {
            float m   = cost[j];
            int   arg = 0;
            for (int p = 1; p < np; ++p) {
                if (cost[j + p * nj] < m) {
                    m   = cost[j + p * nj];
                    arg = p;
                }
            }
            best[j]                = m;
            back[(i - 1) * nj + j] = (uint8_t) arg;
        }
        for (int s = 0; s < S; ++s) {
            cost[s] = best[s >> d->k] + pq_trellis_error(t, S, d->V, u + i * d->V, s);
        }
    }
    pq_trellis_backtrack(d, cost, back, o, path);
}

// Sanitizes the block into v, scaled by 2^e (pq_prepare_group), and divides it by its RMS into u; false for an
// all-zero block (which encodes as a zero scale and the all-zero path).
static inline bool pq_trellis_unit(PQ_DEVICE const float * x, PQ_THREAD float * v, PQ_THREAD float * u,
                                   PQ_THREAD int * e) {
    PQ_FP_SAFE
    *e       = pq_prepare_group(x, PQ_BLOCK, v);
    float ss = 0.0f;
    for (int i = 0; i < PQ_BLOCK; ++i) {
        ss = ss + v[i] * v[i];
    }
    const float inv = ss == 0.0f ? 0.0f : 1.0f / pq_sqrt(ss * (1.0f / PQ_BLOCK));
    for (int i = 0; i < PQ_BLOCK; ++i) {
        u[i] = v[i] * inv;
    }
    return ss != 0.0f;
}

// The block rotated by half, for the first search: its wrap then lies mid-path, with values on both sides, and
// the step before the rotated block's middle is the block's last step.
static inline void pq_trellis_rotate(PQ_THREAD const float * u, PQ_THREAD float * r) {
    for (int i = 0; i < PQ_BLOCK; ++i) {
        r[i] = u[(i + PQ_BLOCK / 2) % PQ_BLOCK];
    }
}

// The overlap bits that the rotated search chose for the block's last step: the low L-k bits of its state.
static inline int pq_trellis_overlap(PQ_CONSTANT const pq_trellis_desc * d, PQ_THREAD const int * rotated_path) {
    const int steps = PQ_BLOCK / d->V;
    return rotated_path[steps - steps / 2 - 1] & ((1 << (d->L - d->k)) - 1);
}

// The scale that keeps v's norm (v scaled by 2^e), with the sign of the least-squares one, as signed fp16, then step
// i's k new bits at bit N - (i+1)*k. The block must be zeroed first. Not the least-squares scale: it shrinks a key by
// its cosine to the path (2-4%), which blunts attention's sharpest logits and lost needles in 8K tokens (as a polar
// type keeps its radius; docs/measurements.md, "The trellis scale keeps the norm").
static inline void pq_trellis_store(PQ_CONSTANT const pq_trellis_desc * d, PQ_THREAD const float * v, int e,
                                    PQ_THREAD const int * path, PQ_DEVICE uint8_t * blk) {
    PQ_FP_SAFE
    const int S = 1 << d->L, steps = PQ_BLOCK / d->V, n_bits = steps * d->k;
    PQ_CONSTANT const float * t = pq_trellis + d->table_offset;
    float xy = 0.0f;
    float yy = 0.0f;
    float xx = 0.0f;
    for (int i = 0; i < PQ_BLOCK; ++i) {
        const float y = t[(i % d->V) * S + path[i / d->V]];
        xy = xy + v[i] * y;
        yy = yy + y * y;
        xx = xx + v[i] * v[i];
    }
    const float    mag   = yy > 0.0f ? pq_sqrt(xx / yy) : 0.0f;
    const float    scale = (xy < 0.0f ? -mag : mag) * pq_exp2i(-e);
    const uint16_t h     = (uint16_t) (pq_fp16_from_radius(pq_fabs(scale)) | (scale < 0.0f ? 0x8000u : 0u));
    blk[0] = (uint8_t) (h & 0xff);
    blk[1] = (uint8_t) (h >> 8);
    for (int i = 0; i < steps; ++i) {
        pq_put_code(blk + 2, n_bits - (i + 1) * d->k, d->k, (unsigned) path[i] & ((1u << d->k) - 1));
    }
}

// Search the block rotated by half for the overlap bits, then the block held to them (tail-biting: the stream
// closes on itself), and store the path.
static inline void pq_trellis_quantize_block(PQ_CONSTANT const pq_trellis_desc * d, PQ_DEVICE const float * x,
                                             PQ_DEVICE uint8_t * blk) {
    float v[PQ_BLOCK];
    float u[PQ_BLOCK];
    float r[PQ_BLOCK];
    int   path[PQ_BLOCK];
    int   e;
    for (int i = 0; i < d->type_size; ++i) {
        blk[i] = 0;
    }
    if (!pq_trellis_unit(x, v, u, &e)) {
        return;
    }
    pq_trellis_rotate(u, r);
    pq_trellis_search(d, r, -1, path);
    pq_trellis_search(d, u, pq_trellis_overlap(d, path), path);
    pq_trellis_store(d, v, e, path, blk);
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding, with random access: a backend that decodes 4 or 16 values at a time calls the span decoders directly.
// ---------------------------------------------------------------------------------------------------------------

// Decodes the 2^p leaves [i0, i0 + 2^p) of a block into y (i0 a multiple of 2^p, 2^p at most a group): first the
// path from the group's radius down to the node that holds exactly those leaves, then that node's subtree level by
// level, expanding in place (node j's children 2j, 2j + 1 never overwrite a node < j). Every leaf is the same chain
// of float32 products whatever the span, so 4-, 16- and whole-block decodes agree bit for bit.
static inline void pq_tree_decode_span(PQ_CONSTANT const pq_tree_desc * d, PQ_DEVICE const uint8_t * blk, int i0, int p,
                                       PQ_THREAD float * y) {
    PQ_FP_SAFE
    const int n     = 1 << d->levels;
    const int g     = i0 >> d->levels;
    const int local = i0 & (n - 1);
    PQ_DEVICE const uint8_t * qs = blk + d->groups * (d->radius_format == PQ_RADIUS_FP16 ? 2 : 1);

    float a = d->radius_format == PQ_RADIUS_FP16 ? pq_fp16_to_f32((uint16_t) (blk[2 * g] | (blk[2 * g + 1] << 8)))
                                                 : pq_log8_value[blk[g]];
    for (int l = d->levels - 1; l >= p; --l) {
        const int      nodes = n >> (l + 1);
        const unsigned code  = pq_get_code(qs, d->code_offset[l] + (g * nodes + (local >> (l + 1))) * d->bits[l],
                                           d->bits[l]);
        a = a * (((local >> l) & 1) ? pq_sin[d->table_offset[l] + code] : pq_cos[d->table_offset[l] + code]);
    }
    y[0] = a;
    for (int l = p - 1; l >= 0; --l) {
        const int nodes = n >> (l + 1);
        const int j0    = g * nodes + (local >> (l + 1));
        PQ_CONSTANT const float * c = pq_cos + d->table_offset[l];
        PQ_CONSTANT const float * s = pq_sin + d->table_offset[l];
        for (int j = (1 << (p - 1 - l)) - 1; j >= 0; --j) {
            const unsigned code = pq_get_code(qs, d->code_offset[l] + (j0 + j) * d->bits[l], d->bits[l]);
            const float    v    = y[j];
            y[2 * j]     = v * c[code];
            y[2 * j + 1] = v * s[code];
        }
    }
}

// All PQ_BLOCK values of a block, group by group.
static inline void pq_tree_decode_block(PQ_CONSTANT const pq_tree_desc * d, PQ_DEVICE const uint8_t * blk,
                                        PQ_THREAD float * y) {
    const int n = 1 << d->levels;
    for (int g = 0; g < d->groups; ++g) {
        pq_tree_decode_span(d, blk, g * n, d->levels, y + g * n);
    }
}

// Key mode: value i is the norm times the fixed magnitude of position i, with its sign bit.
static inline void pqk1_decode_span(PQ_DEVICE const uint8_t * blk, int i0, int m, PQ_THREAD float * y) {
    PQ_FP_SAFE
    const float r = pq_log8_value[blk[0]];
    for (int i = i0; i < i0 + m; ++i) {
        const float mag = pq_key_magnitude[i];
        y[i - i0] = r * (((blk[1 + i / 8] >> (i % 8)) & 1) ? -mag : mag);
    }
}

// Trellis types: step i's state is the L-bit window at bit N - (i+1)*k of the circular stream (two bytes: L <= 8).
static inline unsigned pq_trellis_state(PQ_DEVICE const uint8_t * qs, int n_bytes, int bitpos, int L) {
    const int      b = bitpos >> 3;
    const unsigned w = qs[b] | (unsigned) qs[b + 1 < n_bytes ? b + 1 : 0] << 8;
    return (w >> (bitpos & 7)) & ((1u << L) - 1);
}

// The 2^p values [i0, i0 + 2^p): table values times the fp16 scale.
static inline void pq_trellis_decode_span(PQ_CONSTANT const pq_trellis_desc * d, PQ_DEVICE const uint8_t * blk, int i0,
                                          int p, PQ_THREAD float * y) {
    PQ_FP_SAFE
    const int   n_bits = PQ_BLOCK / d->V * d->k;
    const float scale  = pq_fp16_to_f32((uint16_t) (blk[0] | (blk[1] << 8)));
    PQ_CONSTANT const float * t = pq_trellis + d->table_offset;
    for (int i = i0; i < i0 + (1 << p); ++i) {
        const unsigned s = pq_trellis_state(blk + 2, n_bits / 8, n_bits - (i / d->V + 1) * d->k, d->L);
        y[i - i0] = t[(i % d->V) * (1 << d->L) + s] * scale;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// One block of a PQ_FOREACH_TYPE entry by its kind, so code over every type reads the same for each:
//   PQ_QUANTIZE_BLOCK_<kind>(name, x, blk), PQ_DECODE_BLOCK_<kind>(name, blk, y) and
//   PQ_DECODE_SPAN_<kind>(name, blk, i0, p, y) for the 2^p values [i0, i0 + 2^p).
// ---------------------------------------------------------------------------------------------------------------

#define PQ_QUANTIZE_BLOCK_TREE(name, x, blk)     pq_tree_quantize_block(&name##_desc, x, blk)
#define PQ_DECODE_BLOCK_TREE(name, blk, y)       pq_tree_decode_block(&name##_desc, blk, y)
#define PQ_DECODE_SPAN_TREE(name, blk, i0, p, y) pq_tree_decode_span(&name##_desc, blk, i0, p, y)
#define PQ_QUANTIZE_BLOCK_KEY(name, x, blk)      pqk1_quantize_block(x, blk)
#define PQ_DECODE_BLOCK_KEY(name, blk, y)        pqk1_decode_span(blk, 0, PQ_BLOCK, y)
#define PQ_DECODE_SPAN_KEY(name, blk, i0, p, y)  pqk1_decode_span(blk, i0, 1 << (p), y)
#define PQ_QUANTIZE_BLOCK_TRELLIS(name, x, blk)     pq_trellis_quantize_block(&name##_desc, x, blk)
#define PQ_DECODE_BLOCK_TRELLIS(name, blk, y)       pq_trellis_decode_span(&name##_desc, blk, 0, 6, y)
#define PQ_DECODE_SPAN_TRELLIS(name, blk, i0, p, y) pq_trellis_decode_span(&name##_desc, blk, i0, p, y)
