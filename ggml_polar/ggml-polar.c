// Reference PolarQuant codecs. Plain C, no SIMD: this is the definition the NumPy reference (llama_polar.quants)
// and the Metal kernels must match bit for bit, so it must be compiled without FMA contraction or fast-math
// (CMake adds -ffp-contract=off). Every float operation below is a single IEEE float32 operation in a fixed order:
//   encode: sanitize -> scale the group by 2^k (exact) -> per level, decide each angle's bin by float32 comparisons
//           against the generated boundaries, then sum the pair's squares -> radius = sqrt(sum) * 2^-k.
//   decode: node value = parent value * cos or sin of its centroid, from the top level down to the leaves.
#include "ggml-polar.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <string.h>

static const pq_tree_desc pq38p_desc = PQ38P_DESC;
static const pq_tree_desc pq27_desc  = PQ27_DESC;
static const pq_tree_desc pq32_desc  = PQ32_DESC;
static const pq_tree_desc pq37_desc  = PQ37_DESC;
static const pq_tree_desc pq42_desc  = PQ42_DESC;
static const pq_tree_desc pq46_desc  = PQ46_DESC;

// ---------------------------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------------------------

// NaN -> 0, +-Inf -> +-FLT_MAX: a corrupt value must not poison the whole group's radius.
static inline float pq_sanitize(float v) {
    if (isnan(v)) {
        return 0.0f;
    }
    return v > FLT_MAX ? FLT_MAX : (v < -FLT_MAX ? -FLT_MAX : v);
}

// k such that amax * 2^k lies in [1, 4): a group's squares can then neither overflow nor lose its largest values
// to underflow, and scaling by a power of two leaves every angle unchanged. 2^k stays a normal float.
static inline int pq_scale_exponent(float amax) {
    uint32_t bits;
    memcpy(&bits, &amax, sizeof(bits));
    const int e = (int) ((bits >> 23) & 0xff);
    return e > 253 ? -126 : 127 - e;
}

// Radius -> fp16, round to nearest even, saturating at 65504 (r >= 0, may be +Inf).
static uint16_t pq_fp16_from_radius(float r) {
    if (!(r < 65504.0f)) {
        return 0x7bff;
    }
    uint32_t b;
    memcpy(&b, &r, sizeof(b));
    const int      e = (int) (b >> 23);
    const uint32_t m = b & 0x7fffff;
    if (e >= 113) { // r >= 2^-14: a normal fp16
        uint32_t       h   = ((uint32_t) (e - 112) << 10) | (m >> 13);
        const uint32_t rem = m & 0x1fff;
        h += rem > 0x1000 || (rem == 0x1000 && (h & 1));
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
    const uint32_t half  = 1u << (shift - 1);
    h += rem > half || (rem == half && (h & 1));
    return (uint16_t) h;
}

static float pq_fp16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t) (h & 0x8000) << 16;
    const uint32_t e    = (h >> 10) & 0x1f;
    const uint32_t m    = h & 0x3ff;
    uint32_t       bits;
    if (e == 0x1f) {
        bits = sign | 0x7f800000 | (m << 13);
    } else if (e != 0) {
        bits = sign | ((e + 112) << 23) | (m << 13);
    } else {
        const float sub = (float) m * 0x1p-24f; // exact
        return sign ? -sub : sub;
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

// Code of the 8-bit log norm: the number of boundaries below r (binary search over the sorted table).
static uint8_t pq_log8_encode(float r) {
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

static inline unsigned pq_get_code(const uint8_t * qs, int bitpos, int nbits) {
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

// qs must be zeroed first.
static inline void pq_put_code(uint8_t * qs, int bitpos, int nbits, unsigned code) {
    for (int i = 0; i < nbits; ++i) {
        qs[(bitpos + i) >> 3] |= (uint8_t) (((code >> i) & 1) << ((bitpos + i) & 7));
    }
}

// Level 1: the angle of (x, y) on the whole circle. The quadrant takes the top 2 bits; inside it the pair is turned
// into (u > 0, v >= 0) and the bin is the number of boundaries b with v > tan(b) * u. (0, 0) is quadrant 0, bin 0.
static inline unsigned pq_level1_code(float x, float y, int bits, const float * tan_bound) {
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
    const int nb  = (1 << (bits - 2)) - 1;
    unsigned  bin = 0;
    for (int i = 0; i < nb; ++i) {
        bin += v > tan_bound[i] * u;
    }
    return (q << (bits - 2)) | bin;
}

// Levels >= 2: the angle atan(sqrt(b / a)) of two squared radii, binned by b > tan^2(boundary) * a.
static inline unsigned pq_level_code(float a, float b, int bits, const float * tan2_bound) {
    const int nb  = (1 << bits) - 1;
    unsigned  bin = 0;
    for (int i = 0; i < nb; ++i) {
        bin += b > tan2_bound[i] * a;
    }
    return bin;
}

// Sanitizes n values into v, scales them by 2^k (k returned) so that their squares are safe.
static int pq_prepare_group(const float * x, int n, float * v) {
    float amax = 0.0f;
    for (int i = 0; i < n; ++i) {
        v[i] = pq_sanitize(x[i]);
        amax = fmaxf(amax, fabsf(v[i]));
    }
    const int   k     = pq_scale_exponent(amax);
    const float scale = ldexpf(1.0f, k);
    for (int i = 0; i < n; ++i) {
        v[i] *= scale;
    }
    return k;
}

// ---------------------------------------------------------------------------------------------------------------
// Recursive polar types
// ---------------------------------------------------------------------------------------------------------------

static void pq_tree_quantize_block(const pq_tree_desc * d, const float * x, uint8_t * blk) {
    const int n       = 1 << d->levels;
    const int r_bytes = d->radius_format == PQ_RADIUS_FP16 ? 2 : 1;
    uint8_t * qs      = blk + d->groups * r_bytes;
    memset(blk, 0, (size_t) d->type_size);

    for (int g = 0; g < d->groups; ++g) {
        float     v[PQ_BLOCK];
        float     sq[PQ_BLOCK / 2];
        const int k = pq_prepare_group(x + g * n, n, v);

        const float * tan1 = pq_bound + d->bound_offset[0];
        for (int j = 0; j < n / 2; ++j) {
            const unsigned code = pq_level1_code(v[2 * j], v[2 * j + 1], d->bits[0], tan1);
            pq_put_code(qs, d->code_offset[0] + (g * (n / 2) + j) * d->bits[0], d->bits[0], code);
            sq[j] = v[2 * j] * v[2 * j] + v[2 * j + 1] * v[2 * j + 1];
        }
        for (int l = 1; l < d->levels; ++l) {
            const int     nodes = n >> (l + 1);
            const float * tan2  = pq_bound + d->bound_offset[l];
            for (int j = 0; j < nodes; ++j) {
                const float    a    = sq[2 * j];
                const float    b    = sq[2 * j + 1];
                const unsigned code = pq_level_code(a, b, d->bits[l], tan2);
                pq_put_code(qs, d->code_offset[l] + (g * nodes + j) * d->bits[l], d->bits[l], code);
                sq[j] = a + b;
            }
        }
        const float r = sqrtf(sq[0]) * ldexpf(1.0f, -k);
        if (d->radius_format == PQ_RADIUS_FP16) {
            const uint16_t h = pq_fp16_from_radius(r);
            blk[2 * g]       = (uint8_t) (h & 0xff);
            blk[2 * g + 1]   = (uint8_t) (h >> 8);
        } else {
            blk[g] = pq_log8_encode(r);
        }
    }
}

static void pq_tree_dequantize_block(const pq_tree_desc * d, const uint8_t * blk, float * y) {
    const int       n       = 1 << d->levels;
    const int       r_bytes = d->radius_format == PQ_RADIUS_FP16 ? 2 : 1;
    const uint8_t * qs      = blk + d->groups * r_bytes;

    for (int g = 0; g < d->groups; ++g) {
        float * val = y + g * n;
        val[0] = d->radius_format == PQ_RADIUS_FP16
            ? pq_fp16_to_f32((uint16_t) (blk[2 * g] | (blk[2 * g + 1] << 8)))
            : pq_log8_value[blk[g]];
        // Expand in place from the top level down; node j's children (2j, 2j + 1) never overwrite a node < j.
        for (int l = d->levels - 1; l >= 0; --l) {
            const int     nodes = n >> (l + 1);
            const float * c     = pq_cos + d->table_offset[l];
            const float * s     = pq_sin + d->table_offset[l];
            for (int j = nodes - 1; j >= 0; --j) {
                const unsigned code = pq_get_code(qs, d->code_offset[l] + (g * nodes + j) * d->bits[l], d->bits[l]);
                const float    a    = val[j];
                val[2 * j]     = a * c[code];
                val[2 * j + 1] = a * s[code];
            }
        }
    }
}

static float pq_tree_vec_dot(const pq_tree_desc * d, int n, const uint8_t * x, const float * y) {
    float sum = 0.0f;
    float tmp[PQ_BLOCK];
    for (int ib = 0; ib < n / PQ_BLOCK; ++ib) {
        pq_tree_dequantize_block(d, x + (size_t) ib * (size_t) d->type_size, tmp);
        for (int i = 0; i < PQ_BLOCK; ++i) {
            sum += tmp[i] * y[ib * PQ_BLOCK + i];
        }
    }
    return sum;
}

// ---------------------------------------------------------------------------------------------------------------
// Key mode: hyperspherical angles at one bit each. With one bit the bin of theta_i = arccos(x_i / ||x[i:]||) is
// the sign of x_i (the last angle, on the circle, gets its quadrant: the signs of the last two values), so the
// block is a norm plus sign bits, and decoding composes the centroid angles into a fixed magnitude per position.
// ---------------------------------------------------------------------------------------------------------------

static void pqk1_quantize_block(const float * x, block_pqk1 * blk) {
    float     v[PQ_BLOCK];
    const int k = pq_prepare_group(x, PQ_BLOCK, v);
    float     sq[PQ_BLOCK / 2];
    for (int j = 0; j < PQ_BLOCK / 2; ++j) {
        sq[j] = v[2 * j] * v[2 * j] + v[2 * j + 1] * v[2 * j + 1];
    }
    for (int nodes = PQ_BLOCK / 4; nodes >= 1; nodes /= 2) {
        for (int j = 0; j < nodes; ++j) {
            sq[j] = sq[2 * j] + sq[2 * j + 1];
        }
    }
    blk->r = pq_log8_encode(sqrtf(sq[0]) * ldexpf(1.0f, -k));
    memset(blk->signs, 0, sizeof(blk->signs));
    for (int i = 0; i < PQ_BLOCK; ++i) {
        // the sign of the sanitized value: scaling may flush a tiny negative value to -0
        blk->signs[i / 8] |= (uint8_t) ((pq_sanitize(x[i]) < 0.0f) << (i % 8));
    }
}

static void pqk1_dequantize_block(const block_pqk1 * blk, float * y) {
    const float r = pq_log8_value[blk->r];
    for (int i = 0; i < PQ_BLOCK; ++i) {
        const float m = pq_key_magnitude[i];
        y[i] = r * (((blk->signs[i / 8] >> (i % 8)) & 1) ? -m : m);
    }
}

static float pqk1_vec_dot(int n, const block_pqk1 * x, const float * y) {
    float sum = 0.0f;
    float tmp[PQ_BLOCK];
    for (int ib = 0; ib < n / PQ_BLOCK; ++ib) {
        pqk1_dequantize_block(x + ib, tmp);
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
            pq_tree_dequantize_block(&name##_desc, (const uint8_t *) (x + ib), y + ib * PQ_BLOCK);              \
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
        pqk1_quantize_block(x + ib * PQ_BLOCK, y + ib);
    }
}

void dequantize_row_pqk1(const block_pqk1 * restrict x, float * restrict y, int64_t k) {
    assert(k % PQ_BLOCK == 0);
    for (int64_t ib = 0; ib < k / PQ_BLOCK; ++ib) {
        pqk1_dequantize_block(x + ib, y + ib * PQ_BLOCK);
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
