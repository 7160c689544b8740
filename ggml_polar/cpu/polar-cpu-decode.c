// The polar CPU decoders (see ggml-polar-cpu.h): one block per vector lane. A lane runs exactly the reference decode
// of polar-codec.h (the same products, in the same order), so only the width of the loop is new. Code fields sit at
// the same bit offsets in every block, so each is a shift and a mask of words gathered from all lanes' blocks at
// once, and each codebook lookup is a permute (or a gather) across lanes.
#include "polar-cpu-impl.h"
#include "polar-codec.h"

#include "../polar-check.h"

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
                pq_vf       c, s;
                if (l == 0) { // level 1: angles on the whole circle
                    pq_circle_lookup(&tc, &ts, code, &c, &s);
                } else {
                    c = pq_tab_lookup(&tc, code);
                    s = pq_tab_lookup(&ts, code);
                }
                gv[2 * j + 1] = pq_mul(a, s);
                gv[2 * j]     = pq_mul(a, c);
            }
        }
    }
}

// The key mode in every lane (pqk1_decode_span): norm times the position's magnitude, with its sign bit.
PQ_INLINE void pq_key_lanes(const uint8_t * x, pq_vi offsets, pq_vf * val) {
    pq_words b;
    pq_words_load(&b, x, offsets, PQK1_TYPE_SIZE);
    const pq_vf r = pq_gather_f32(pq_log8_value, pq_field(&b, 0, 8));
    PQ_UNROLL
    for (int i = 0; i < PQ_BLOCK; ++i) {
        const float m = pq_key_magnitude[i];
        val[i] = pq_mul(r, pq_select(pq_eq0(pq_field(&b, 8 + i, 1)), pq_splat(m), pq_splat(-m)));
    }
}

// A trellis block in every lane (pq_trellis_decode_span): each step's L-bit window (two fields where it wraps past
// the end of the stream), a gather from each of the V planes of the table, times the fp16 scale.
PQ_INLINE void pq_trellis_lanes_step(const pq_trellis_desc * d, const pq_words * b, int V, int i, pq_vf scale,
                                     pq_vf * val) {
    const int n_bits = PQ_BLOCK / V * d->k;
    const int q      = n_bits - (i + 1) * d->k;
    pq_vi     s      = pq_field(b, 16 + q, pq_min(d->L, n_bits - q));
    if (q + d->L > n_bits) {
        s = pq_or(s, pq_sll(pq_field(b, 16, q + d->L - n_bits), n_bits - q));
    }
    for (int v = 0; v < V; ++v) {
        val[i * V + v] = pq_mul(pq_gather_f32(pq_trellis + d->table_offset + (v << d->L), s), scale);
    }
}

PQ_INLINE void pq_trellis_lanes(const pq_trellis_desc * d, const uint8_t * x, pq_vi offsets, pq_vf * val) {
    pq_words b;
    pq_words_load(&b, x, offsets, d->type_size);
    const pq_vf scale = pq_fp16_lanes(pq_field(&b, 0, 16));
    if (d->V == 1) { // two loops of constant length, so that each unrolls and every field's position is a constant
        PQ_UNROLL
        for (int i = 0; i < PQ_BLOCK; ++i) {
            pq_trellis_lanes_step(d, &b, 1, i, scale, val);
        }
    } else {
        PQ_UNROLL
        for (int i = 0; i < PQ_BLOCK / 2; ++i) {
            pq_trellis_lanes_step(d, &b, 2, i, scale, val);
        }
    }
}

// One lane decoder per PQ_FOREACH_TYPE entry, with the type's layout (name##_desc) inlined as constants.
#define PQ_LANES_TREE(name) pq_tree_lanes(&name##_desc, x, offsets, val)
#define PQ_LANES_KEY(name)  pq_key_lanes(x, offsets, val)
#define PQ_LANES_TRELLIS(name) pq_trellis_lanes(&name##_desc, x, offsets, val)
#define PQ_DEFINE_LANES(name, NAME, kind, ggml_id)                                     \
    static void name##_lanes(const uint8_t * x, pq_vi offsets, pq_vf * val) {          \
        PQ_LANES_##kind(name);                                                         \
    }
PQ_FOREACH_TYPE(PQ_DEFINE_LANES)

#define PQ_CPU_TYPE(name, NAME, kind, ggml_id) \
    [GGML_POLAR_TYPE_##NAME] = { GGML_POLAR_TYPE_##NAME, NAME##_TYPE_SIZE, name##_lanes },
static const struct ggml_polar_cpu_type pq_cpu_types[GGML_POLAR_TYPE_COUNT] = {
    PQ_FOREACH_TYPE(PQ_CPU_TYPE)
};

const struct ggml_polar_cpu_type * ggml_polar_cpu_type_get(enum ggml_polar_type t) {
    return (int) t >= 0 && t < GGML_POLAR_TYPE_COUNT ? &pq_cpu_types[t] : NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// Partners: f16 and q8_0 rows read through the same lane interface, 64 values a "block", so that a polar cache
// paired with either keeps the polar paths. The values are ggml's own conversions, bit for bit.
// ---------------------------------------------------------------------------------------------------------------

#define PQ_Q8_0_BLOCK_SIZE 34 // ggml's block_q8_0: an fp16 scale, then 32 int8 values

// 64 f16 values, 128 bytes: each gathered word holds two of them (never a byte past the block).
static void pq_f16_lanes(const uint8_t * x, pq_vi offsets, pq_vf * val) {
    for (int v = 0; v < PQ_BLOCK; v += 2) {
        const pq_vi w = pq_gather_u32(x + 2 * v, offsets);
        val[v]     = pq_fp16_lanes(pq_and(w, pq_splat_i(0xffff)));
        val[v + 1] = pq_fp16_lanes(pq_srl(w, 16));
    }
}

// Two q8_0 blocks: value = int8 * scale, as dequantize_row_q8_0. A byte u becomes the int8 u - 256 * (u >> 7), exactly,
// in float.
static void pq_q8_0_lanes(const uint8_t * x, pq_vi offsets, pq_vf * val) {
    for (int b = 0; b < PQ_BLOCK / 32; ++b) {
        const uint8_t * blk = x + b * PQ_Q8_0_BLOCK_SIZE;
        const pq_vf     d   = pq_fp16_lanes(pq_and(pq_gather_u32(blk, offsets), pq_splat_i(0xffff)));
        for (int j = 0; j < 32; j += 4) {
            const pq_vi w = pq_gather_u32(blk + 2 + j, offsets);
            for (int i = 0; i < 4; ++i) {
                const pq_vi u = pq_and(pq_srl(w, 8 * i), pq_splat_i(0xff));
                const pq_vf q = pq_madd(pq_from_i(pq_srl(u, 7)), pq_splat(-256.0f), pq_from_i(u));
                val[32 * b + j + i] = pq_mul(q, d);
            }
        }
    }
}

// No polar type: ggml_polar_cpu_dot_rows' reference fallback does not take them.
static const struct ggml_polar_cpu_type pq_cpu_partner_f16  = { GGML_POLAR_TYPE_COUNT, 2 * PQ_BLOCK, pq_f16_lanes };
static const struct ggml_polar_cpu_type pq_cpu_partner_q8_0 = { GGML_POLAR_TYPE_COUNT, 2 * PQ_Q8_0_BLOCK_SIZE,
                                                                pq_q8_0_lanes };

const struct ggml_polar_cpu_type * ggml_polar_cpu_partner_f16(void)  { return &pq_cpu_partner_f16; }
const struct ggml_polar_cpu_type * ggml_polar_cpu_partner_q8_0(void) { return &pq_cpu_partner_q8_0; }

int ggml_polar_cpu_lanes(void) { return PQ_LANES; }
const char * ggml_polar_cpu_isa(void) { return PQ_ISA; }

// ---------------------------------------------------------------------------------------------------------------
// Lanes, rows and tiles
// ---------------------------------------------------------------------------------------------------------------

void ggml_polar_cpu_decode_lanes(const struct ggml_polar_cpu_type * t, const void * x, size_t stride, int n, float * y) {
    PQ_REQUIRE(n >= 1 && n <= PQ_LANES && pq_stride_ok(stride));
    pq_vf val[PQ_BLOCK];
    t->lanes((const uint8_t *) x, pq_lane_offsets(stride, n), val);
    for (int v = 0; v < PQ_BLOCK; ++v) {
        pq_store(y + v * PQ_LANES, val[v]);
    }
}

// Rows too far apart for 32-bit lane offsets: the reference dot product, one row at a time.
static void pq_dot_rows_reference(const struct ggml_polar_cpu_type * t, const uint8_t * rows, size_t row_stride,
                                  int n, int nblk, const float * q, float * scores) {
    const struct ggml_polar_type_info * info = ggml_polar_get_type_info(t->type);
    PQ_REQUIRE(info); // a polar type, not a partner
    for (int r = 0; r < n; ++r) {
        info->vec_dot(nblk * PQ_BLOCK, &scores[r], 0, rows + (size_t) r * row_stride, 0, q, 0, 1);
    }
}

void ggml_polar_cpu_dot_rows(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride, int n, int nblk,
                             const float * q, float * scores) {
    const uint8_t * rows = (const uint8_t *) x;
    if (!pq_stride_ok(row_stride)) {
        pq_dot_rows_reference(t, rows, row_stride, n, nblk, q, scores);
        return;
    }
    for (int r0 = 0; r0 < n; r0 += PQ_LANES) {
        const int   nl      = pq_min(n - r0, PQ_LANES);
        const pq_vi offsets = pq_lane_offsets(row_stride, nl);
        pq_vf       acc     = pq_splat(0.0f);
        for (int ib = 0; ib < nblk; ++ib) {
            pq_vf val[PQ_BLOCK];
            t->lanes(rows + (size_t) r0 * row_stride + (size_t) ib * t->type_size, offsets, val);
            for (int v = 0; v < PQ_BLOCK; ++v) {
                acc = pq_madd(val[v], pq_splat(q[ib * PQ_BLOCK + v]), acc);
            }
        }
        for (int r = 0; r < nl; ++r) {
            scores[r0 + r] = pq_lane(acc, r);
        }
    }
}

// Stores the decoded block ib of the nl rows at r0 into a tile: transposed (y[d*y_stride + r]) or row-major
// (y[r*y_stride + d]).
static void pq_store_tile_block(const pq_vf * val, int r0, int nl, int ib, int transposed, float * y, size_t y_stride) {
    float lanes[PQ_BLOCK * PQ_LANES];
    for (int v = 0; v < PQ_BLOCK; ++v) {
        float * dst = transposed ? y + (size_t) (ib * PQ_BLOCK + v) * y_stride + r0 : lanes + v * PQ_LANES;
        if (!transposed || nl == PQ_LANES) {
            pq_store(dst, val[v]);
        } else {
            pq_store(lanes, val[v]);
            memcpy(dst, lanes, (size_t) nl * sizeof(float));
        }
    }
    for (int r = 0; r < nl && !transposed; ++r) {
        float * dst = y + (size_t) (r0 + r) * y_stride + ib * PQ_BLOCK;
        for (int v = 0; v < PQ_BLOCK; ++v) {
            dst[v] = lanes[v * PQ_LANES + r];
        }
    }
}

static void pq_decode_tile(const struct ggml_polar_cpu_type * t, const uint8_t * rows, size_t row_stride, int n,
                           int nblk, int transposed, float * y, size_t y_stride) {
    PQ_REQUIRE(pq_stride_ok(row_stride));
    for (int r0 = 0; r0 < n; r0 += PQ_LANES) {
        const int   nl      = pq_min(n - r0, PQ_LANES);
        const pq_vi offsets = pq_lane_offsets(row_stride, nl);
        for (int ib = 0; ib < nblk; ++ib) {
            pq_vf val[PQ_BLOCK];
            t->lanes(rows + (size_t) r0 * row_stride + (size_t) ib * t->type_size, offsets, val);
            pq_store_tile_block(val, r0, nl, ib, transposed, y, y_stride);
        }
    }
}

void ggml_polar_cpu_decode_tile_transposed(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride,
                                           int n, int nblk, float * y, size_t y_stride) {
    pq_decode_tile(t, (const uint8_t *) x, row_stride, n, nblk, 1, y, y_stride);
}

void ggml_polar_cpu_decode_tile_rows(const struct ggml_polar_cpu_type * t, const void * x, size_t row_stride, int n,
                                     int nblk, float * y, size_t y_stride) {
    pq_decode_tile(t, (const uint8_t *) x, row_stride, n, nblk, 0, y, y_stride);
}

// A row of k values is a tile of k/64 one-block rows, one block apart, written 64 values apart.
void ggml_polar_cpu_dequantize_row(const struct ggml_polar_cpu_type * t, const void * x, float * y, int64_t k) {
    PQ_REQUIRE(k % PQ_BLOCK == 0 && k / PQ_BLOCK <= INT32_MAX);
    ggml_polar_cpu_decode_tile_rows(t, x, (size_t) t->type_size, (int) (k / PQ_BLOCK), 1, y, PQ_BLOCK);
}
