// The polar CPU encoder, which writes the cache (see ggml-polar-cpu.h): the reference encode of polar-codec.h with a
// level's nodes across the vector lanes. A cache row holds only a few blocks (3 for SmolLM2's K), too few to fill
// the lanes with blocks as the decoders do, while every level of a block has 32, 16, 8 ... nodes. Each lane runs the
// reference's float32 operations in the reference's order (a product, then a sum: this file must be compiled with
// -ffp-contract=off, as ggml_polar/CMakeLists.txt says), so the bytes are the reference's, bit for bit.
#include "polar-cpu-impl.h"
#include "polar-codec.h"

#include "../polar-check.h"

// A level reads its nodes' pairs (sq[2j], sq[2j + 1]) PQ_LANES at a time, 2 * PQ_LANES values: a level with fewer
// nodes than lanes reads past its last pair, into zeros or an earlier level's sums, and stores no code from there.
#define PQ_PAD (2 * GGML_POLAR_CPU_MAX_LANES)

static inline pq_vf pq_abs_lanes(pq_vf v) {
    return pq_as_f(pq_and(pq_as_i(v), pq_splat_i(0x7fffffff)));
}

// pq_sanitize on every lane: NaN -> 0, +-Inf -> +-FLT_MAX.
static inline pq_vf pq_sanitize_lanes(pq_vf v) {
    pq_vf r = pq_select(pq_lt(pq_splat(FLT_MAX), v), pq_splat(FLT_MAX), v);
    r = pq_select(pq_lt(v, pq_splat(-FLT_MAX)), pq_splat(-FLT_MAX), r);
    return pq_select(pq_le(v, v), r, pq_splat(0.0f)); // only NaN is not <= itself
}

// pq_prepare_group over n values (a multiple of the lanes): the maximum does not depend on the order it is taken in.
PQ_INLINE int pq_prepare_lanes(const float * x, int n, float * v) {
    pq_vf amax = pq_splat(0.0f);
    for (int i = 0; i < n; i += PQ_LANES) {
        const pq_vf s = pq_sanitize_lanes(pq_load(x + i));
        pq_store(v + i, s);
        amax = pq_max(amax, pq_abs_lanes(s));
    }
    const int   k     = pq_scale_exponent(pq_hmax(amax));
    const pq_vf scale = pq_splat(pq_exp2i(k));
    for (int i = 0; i < n; i += PQ_LANES) {
        pq_store(v + i, pq_mul(pq_load(v + i), scale));
    }
    return k;
}

// pq_count_below on every lane: the number of boundaries t[i] with y > t[i] * x.
PQ_INLINE pq_vi pq_count_below_lanes(pq_vf y, pq_vf x, int n, const float * t) {
    pq_vi count = pq_splat_i(0);
    for (int i = 0; i < n; ++i) {
        count = pq_add_i(count, pq_select_i(pq_lt(pq_mul(pq_splat(t[i]), x), y), pq_splat_i(1), pq_splat_i(0)));
    }
    return count;
}

// pq_level1_code on every lane; the quadrants are tested in the reference's order (the first that holds wins).
PQ_INLINE pq_vi pq_level1_lanes(pq_vf x, pq_vf y, int bits, const float * tan_bound) {
    const pq_vf zero = pq_splat(0.0f);
    const pq_vf nx   = pq_mul(x, pq_splat(-1.0f)); // -x exactly
    const pq_vf ny   = pq_mul(y, pq_splat(-1.0f));
    const pq_vm c[4] = {
        pq_mand(pq_lt(zero, x), pq_le(zero, y)), // q0: x > 0, y >= 0
        pq_mand(pq_le(x, zero), pq_lt(zero, y)), // q1: x <= 0, y > 0
        pq_mand(pq_lt(x, zero), pq_le(y, zero)), // q2: x < 0, y <= 0
        pq_mand(pq_le(zero, x), pq_lt(y, zero)), // q3: x >= 0, y < 0
    };
    const pq_vf cu[4] = { x, y, nx, ny };
    const pq_vf cv[4] = { y, nx, ny, x };
    pq_vi q = pq_splat_i(0);
    pq_vf u = zero;
    pq_vf v = zero;
    for (int i = 3; i >= 0; --i) {
        q = pq_select_i(c[i], pq_splat_i(i), q);
        u = pq_select(c[i], cu[i], u);
        v = pq_select(c[i], cv[i], v);
    }
    return pq_or(pq_sll(q, bits - 2), pq_count_below_lanes(v, u, (1 << (bits - 2)) - 1, tan_bound));
}

// ORs n codes of `bits` bits each into the zeroed stream at bit `first`, one after another (pq_put_code's layout).
PQ_INLINE void pq_put_codes(uint8_t * qs, int first, int bits, const uint32_t * codes, int n) {
    uint8_t * p    = qs + (first >> 3);
    uint32_t  acc  = 0;
    int       fill = first & 7;
    for (int j = 0; j < n; ++j) {
        acc |= codes[j] << fill;
        fill += bits;
        for (; fill >= 8; fill -= 8, acc >>= 8) {
            *p++ |= (uint8_t) acc;
        }
    }
    if (fill > 0) {
        *p |= (uint8_t) acc;
    }
}

// pq_tree_quantize_block.
PQ_INLINE void pq_tree_encode(const pq_tree_desc * d, const float * x, uint8_t * blk) {
    const int n       = 1 << d->levels;
    const int r_bytes = d->radius_format == PQ_RADIUS_FP16 ? 2 : 1;
    uint8_t * qs      = blk + d->groups * r_bytes;
    memset(blk, 0, (size_t) d->type_size);

    PQ_UNROLL
    for (int g = 0; g < d->groups; ++g) {
        float    v[PQ_BLOCK + PQ_PAD] = { 0 };
        float    sq[2][PQ_BLOCK / 2 + PQ_PAD] = { { 0 } };
        uint32_t codes[PQ_BLOCK / 2 + PQ_PAD];
        const int k = pq_prepare_lanes(x + g * n, n, v);

        PQ_UNROLL
        for (int j = 0; j < n / 2; j += PQ_LANES) {
            pq_vf a;
            pq_vf b;
            pq_load_pairs(v + 2 * j, &a, &b);
            pq_store_u32(codes + j, pq_level1_lanes(a, b, d->bits[0], pq_bound + d->bound_offset[0]));
            pq_store(sq[0] + j, pq_add(pq_mul(a, a), pq_mul(b, b)));
        }
        pq_put_codes(qs, d->code_offset[0] + g * (n / 2) * d->bits[0], d->bits[0], codes, n / 2);
        PQ_UNROLL
        for (int l = 1; l < d->levels; ++l) {
            const int     nodes = n >> (l + 1);
            const float * in    = sq[(l - 1) & 1];
            float *       out   = sq[l & 1];
            PQ_UNROLL
            for (int j = 0; j < nodes; j += PQ_LANES) {
                pq_vf a;
                pq_vf b;
                pq_load_pairs(in + 2 * j, &a, &b);
                pq_store_u32(codes + j, pq_count_below_lanes(b, a, (1 << d->bits[l]) - 1, pq_bound + d->bound_offset[l]));
                pq_store(out + j, pq_add(a, b));
            }
            pq_put_codes(qs, d->code_offset[l] + g * nodes * d->bits[l], d->bits[l], codes, nodes);
        }
        pq_put_radius(d, blk, g, pq_sqrt(sq[(d->levels - 1) & 1][0]) * pq_exp2i(-k));
    }
}

// pqk1_quantize_block: the same sums of squares for the norm, then the signs of the sanitized values.
PQ_INLINE void pq_key_encode(const float * x, uint8_t * blk) {
    float     v[PQ_BLOCK];
    float     sq[2][PQ_BLOCK / 2 + PQ_PAD] = { { 0 } };
    const int k = pq_prepare_lanes(x, PQ_BLOCK, v);
    for (int j = 0; j < PQ_BLOCK / 2; j += PQ_LANES) {
        pq_vf a;
        pq_vf b;
        pq_load_pairs(v + 2 * j, &a, &b);
        pq_store(sq[0] + j, pq_add(pq_mul(a, a), pq_mul(b, b)));
    }
    int level = 0;
    for (int nodes = PQ_BLOCK / 4; nodes >= 1; nodes /= 2, ++level) {
        const float * in  = sq[level & 1];
        float *       out = sq[(level + 1) & 1];
        for (int j = 0; j < nodes; j += PQ_LANES) {
            pq_vf a;
            pq_vf b;
            pq_load_pairs(in + 2 * j, &a, &b);
            pq_store(out + j, pq_add(a, b));
        }
    }
    memset(blk, 0, PQK1_TYPE_SIZE);
    blk[0] = pq_log8_encode(pq_sqrt(sq[level & 1][0]) * pq_exp2i(-k));
    for (int i = 0; i < PQ_BLOCK; ++i) {
        blk[1 + i / 8] |= (uint8_t) ((pq_sanitize(x[i]) < 0.0f ? 1 : 0) << (i % 8));
    }
}

// pq_trellis_search with the states across the lanes, the same float32 operations on the same values, so the same
// path. A step takes the minimum over the predecessors of jw consecutive top bits j at once (loads of consecutive
// costs, one per p), then every state s = (j << k) + b of them adds its own error, PQ_LANES states at a time, its
// minimum picked out of the jw by a table lookup (a permute). jw = PQ_LANES unless 2^(L-k) is smaller (AVX-512 and
// L-k = 3): then the vectors past jw carry other costs that no lookup picks, and the arrays have PQ_LANES to spare.
PQ_INLINE pq_vf pq_trellis_error_lanes(const float * t, int S, int V, const float * u, int s0) {
    pq_vf d = pq_sub(pq_splat(u[0]), pq_load(t + s0));
    pq_vf e = pq_mul(d, d);
    for (int v = 1; v < V; ++v) {
        d = pq_sub(pq_splat(u[v]), pq_load(t + v * S + s0));
        e = pq_add(e, pq_mul(d, d));
    }
    return e;
}

PQ_INLINE void pq_trellis_search_lanes(const pq_trellis_desc * d, const float * u, int o, int * path) {
    const int     S = 1 << d->L, k = d->k, nj = 1 << (d->L - k), np = 1 << k, steps = PQ_BLOCK / d->V;
    const int     jw = pq_min(PQ_LANES, nj);
    const float * t  = pq_trellis + d->table_offset;
    const pq_vi   iota = pq_lane_offsets(1, PQ_LANES);
    float         buf[2][PQ_TRELLIS_MAX_STATES + PQ_LANES] = { { 0 } };
    uint32_t      back32[PQ_TRELLIS_MAX_BACK + PQ_LANES];
    int           jw_bits = 0;
    while ((1 << jw_bits) < jw) {
        ++jw_bits;
    }
    uint8_t       back[PQ_TRELLIS_MAX_BACK];
    float         m[64]; // jw minima; sized for pq_tab_load's largest codebook, whose masked loads it never reads
    float *       cost = buf[0];
    float *       next = buf[1];
    for (int s0 = 0; s0 < S; s0 += PQ_LANES) {
        pq_store(cost + s0, pq_trellis_error_lanes(t, S, d->V, u, s0));
    }
    for (int s = 0; o >= 0 && s < S; ++s) {
        cost[s] = (s >> k) == o ? cost[s] : INFINITY;
    }
    for (int i = 1; i < steps; ++i) {
        for (int j0 = 0; j0 < nj; j0 += jw) {
            pq_vf best = pq_load(cost + j0);
            pq_vi arg  = pq_splat_i(0);
            for (int p = 1; p < np; ++p) {
                const pq_vf c  = pq_load(cost + j0 + p * nj);
                const pq_vm lt = pq_lt(c, best);
                best = pq_select(lt, c, best);
                arg  = pq_select_i(lt, pq_splat_i(p), arg);
            }
            pq_store_u32(back32 + (i - 1) * nj + j0, arg);
            pq_store(m, best);
            const pq_tab mins = pq_tab_load(m, jw_bits);
            for (int g = 0; g < (jw << k) / PQ_LANES; ++g) {
                const int   s0 = (j0 << k) + g * PQ_LANES;
                const pq_vf mj = pq_tab_lookup(&mins, pq_srl(pq_add_i(iota, pq_splat_i(g * PQ_LANES)), k));
                pq_store(next + s0, pq_add(mj, pq_trellis_error_lanes(t, S, d->V, u + i * d->V, s0)));
            }
        }
        float * swap = cost;
        cost = next;
        next = swap;
    }
    for (int b = 0; b < (steps - 1) * nj; ++b) {
        back[b] = (uint8_t) back32[b];
    }
    pq_trellis_backtrack(d, cost, back, o, path);
}

// pq_trellis_quantize_block, with the searches across the lanes.
PQ_INLINE void pq_trellis_encode(const pq_trellis_desc * d, const float * x, uint8_t * blk) {
    float v[PQ_BLOCK];
    float u[PQ_BLOCK];
    float r[PQ_BLOCK];
    int   path[PQ_BLOCK];
    int   e;
    memset(blk, 0, (size_t) d->type_size);
    if (!pq_trellis_unit(x, v, u, &e)) {
        return;
    }
    pq_trellis_rotate(u, r);
    pq_trellis_search_lanes(d, r, -1, path);
    pq_trellis_search_lanes(d, u, pq_trellis_overlap(d, path), path);
    pq_trellis_store(d, v, e, path, blk);
}

// One row encoder per PQ_FOREACH_TYPE entry, with the type's layout (name##_desc) inlined as constants.
#define PQ_ENCODE_TREE(name) pq_tree_encode(&name##_desc, x + ib * PQ_BLOCK, blk + ib * sizeof(block_##name))
#define PQ_ENCODE_KEY(name)  pq_key_encode(x + ib * PQ_BLOCK, blk + ib * sizeof(block_##name))
#define PQ_ENCODE_TRELLIS(name) pq_trellis_encode(&name##_desc, x + ib * PQ_BLOCK, blk + ib * sizeof(block_##name))
#define PQ_DEFINE_QUANTIZE_ROW(name, NAME, kind, ggml_id)                                  \
    void ggml_polar_cpu_quantize_row_##name(const float * x, void * y, int64_t k) {         \
        PQ_REQUIRE(k % PQ_BLOCK == 0);                                                       \
        uint8_t * blk = (uint8_t *) y;                                                       \
        for (int64_t ib = 0; ib < k / PQ_BLOCK; ++ib) {                                      \
            PQ_ENCODE_##kind(name);                                                          \
        }                                                                                    \
    }
PQ_FOREACH_TYPE(PQ_DEFINE_QUANTIZE_ROW)

typedef void (*pq_quantize_row_fn)(const float * x, void * y, int64_t k);
#define PQ_QUANTIZE_ROW_ENTRY(name, NAME, kind, ggml_id) [GGML_POLAR_TYPE_##NAME] = ggml_polar_cpu_quantize_row_##name,
static const pq_quantize_row_fn pq_quantize_rows[GGML_POLAR_TYPE_COUNT] = {
    PQ_FOREACH_TYPE(PQ_QUANTIZE_ROW_ENTRY)
};

void ggml_polar_cpu_quantize_row(const struct ggml_polar_cpu_type * t, const float * x, void * y, int64_t k) {
    PQ_REQUIRE((int) t->type >= 0 && t->type < GGML_POLAR_TYPE_COUNT); // a polar type, not a partner
    pq_quantize_rows[t->type](x, y, k);
}
