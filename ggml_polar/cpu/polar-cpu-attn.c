// Flash attention over polar K and V on the CPU (ggml_polar_cpu_attn, see ggml-polar-cpu.h): a tile of PQ_LANES
// cache rows at a time, each K and V block decoded once for every query of the KV head, and the online softmax
// vectorized over the tile's rows.
#include "polar-cpu-impl.h"

#include "../polar-check.h"
#include <math.h>

size_t ggml_polar_cpu_attn_kernel_scratch(int nq, int dk, int dv) {
    (void) dk;
    return (size_t) nq * (size_t) dv * PQ_LANES;
}

size_t ggml_polar_cpu_attn_thread_workspace(int dk, int dv) {
    return (size_t) GGML_POLAR_CPU_ATTN_MAX_Q * (3 + (size_t) dv) +
           ggml_polar_cpu_attn_kernel_scratch(GGML_POLAR_CPU_ATTN_MAX_Q, dk, dv);
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

// The running state of one call: per query, acc = acc_in * in_scale + (the lanes of accv summed), so rescaling
// touches only accv (nq * dv * PQ_LANES floats of the kernel scratch).
typedef struct {
    const struct ggml_polar_cpu_attn_params * p;
    float * M;
    float * S;
    float * accv;
    float   in_scale[GGML_POLAR_CPU_ATTN_MAX_Q];
} pq_attn_state;

// Mask and ALiBi bias of the tile at row r0 for query h (lanes past the rows: -INFINITY).
static pq_vf pq_tile_bias(const struct ggml_polar_cpu_attn_params * p, int h, int r0, int nl) {
    if (!p->mask) {
        float b[PQ_LANES];
        for (int r = 0; r < PQ_LANES; ++r) {
            b[r] = r < nl ? 0.0f : -INFINITY;
        }
        return pq_load(b);
    }
    const uint16_t * m = p->mask + (size_t) h * p->mask_stride + r0;
    uint16_t         pad[PQ_LANES];
    if (nl < PQ_LANES) {
        for (int r = 0; r < PQ_LANES; ++r) {
            pad[r] = r < nl ? m[r] : 0xfc00; // fp16 -INFINITY
        }
        m = pad;
    }
    return pq_mul(pq_fp16_lanes(pq_load_u16(m)), pq_splat(p->slope ? p->slope[h] : 1.0f));
}

// Every query's bias for the tile; returns 0 when the tile is masked for every query (then nothing is decoded).
static int pq_tile_biases(const struct ggml_polar_cpu_attn_params * p, int r0, int nl, pq_vf * bias) {
    int live = 0;
    for (int h = 0; h < p->nq; ++h) {
        const int same_as_first = h > 0 && p->mask_stride == 0 && (!p->slope || p->slope[h] == p->slope[0]);
        bias[h] = same_as_first ? bias[0] : pq_tile_bias(p, h, r0, nl);
        live |= pq_hmax(bias[h]) != -INFINITY;
    }
    return live;
}

// Queries whose sums run side by side: each query's sum is one chain of dependent products (in the reference's
// order), so one query alone waits on the FMA's latency, and PQ_DOT_CHAINS of them fill the pipeline.
#define PQ_DOT_CHAINS 4

// dots[h0 + i] += q_(h0 + i) . val over nv <= PQ_BLOCK values, for the n <= PQ_DOT_CHAINS queries from h0 (query h
// at q + h*q_stride).
PQ_INLINE void pq_block_dots(const float * q, size_t q_stride, int nv, int h0, int n, const pq_vf * val, pq_vf * dots) {
    const float * q0 = q + (size_t) h0 * q_stride;
    const float * q1 = n > 1 ? q0 + q_stride : q0;
    const float * q2 = n > 2 ? q1 + q_stride : q0;
    const float * q3 = n > 3 ? q2 + q_stride : q0;
    pq_vf d0 = dots[h0], d1 = n > 1 ? dots[h0 + 1] : d0, d2 = n > 2 ? dots[h0 + 2] : d0, d3 = n > 3 ? dots[h0 + 3] : d0;
    for (int v = 0; v < nv; ++v) { // the spare chains repeat query h0's sum, unused
        d0 = pq_madd(val[v], pq_splat(q0[v]), d0);
        d1 = pq_madd(val[v], pq_splat(q1[v]), d1);
        d2 = pq_madd(val[v], pq_splat(q2[v]), d2);
        d3 = pq_madd(val[v], pq_splat(q3[v]), d3);
    }
    const pq_vf d[PQ_DOT_CHAINS] = { d0, d1, d2, d3 };
    for (int i = 0; i < n; ++i) {
        dots[h0 + i] = d[i];
    }
}

// q.k for every query and every row of the tile: each K block decoded once (and its rows' offsets added).
static void pq_tile_dots(const struct ggml_polar_cpu_attn_params * p, int r0, int nl, pq_vf * dots) {
    const uint8_t * krows = (const uint8_t *) p->k + (size_t) r0 * p->k_row_stride;
    const pq_vi     koff  = pq_lane_offsets(p->k_row_stride, nl);
    const float *   orows = p->k_offset ? p->k_offset + (size_t) r0 * p->k_offset_stride : NULL;
    const pq_vi     ooff  = pq_lane_offsets(p->k_offset_stride, nl);
    for (int h = 0; h < p->nq; ++h) {
        dots[h] = pq_splat(0.0f);
    }
    for (int ib = 0; ib < p->dk / PQ_BLOCK; ++ib) {
        pq_vf val[PQ_BLOCK];
        p->k_type->lanes(krows + (size_t) ib * p->k_type->type_size, koff, val);
        for (int v = 0; orows && v < PQ_BLOCK; ++v) {
            val[v] = pq_add(val[v], pq_gather_f32(orows + ib * PQ_BLOCK + v, ooff));
        }
        for (int h = 0; h < p->nq; h += PQ_DOT_CHAINS) {
            pq_block_dots(p->q + ib * PQ_BLOCK, p->q_stride, PQ_BLOCK, h, pq_min(p->nq - h, PQ_DOT_CHAINS), val, dots);
        }
    }
}

// The tile's rows of term t: one load where the rows' terms are side by side, else one value at a time (fp16 terms)
// or a gather (f32 terms). Lanes past the rows hold 0, or row 0's term after a gather: their scores are masked.
PQ_INLINE pq_vf pq_tile_term(const struct ggml_polar_cpu_attn_params * p, size_t r0, pq_vi offsets, int nl, int t) {
    const size_t at = r0 * p->k_terms_row_stride + (size_t) t * p->k_terms_stride;
    if (!p->k_terms_f16) {
        const float * x = (const float *) p->k_terms + at;
        if (p->k_terms_row_stride != 1) {
            return pq_gather_f32(x, offsets);
        }
        if (nl == PQ_LANES) {
            return pq_load(x);
        }
        float part[PQ_LANES] = { 0 };
        memcpy(part, x, (size_t) nl * sizeof(float));
        return pq_load(part);
    }
    const uint16_t * x = (const uint16_t *) p->k_terms + at;
    if (p->k_terms_row_stride == 1 && nl == PQ_LANES) {
        return pq_load_fp16(x);
    }
    uint16_t part[PQ_LANES] = { 0 };
    for (int r = 0; r < nl; ++r) {
        part[r] = x[(size_t) r * p->k_terms_row_stride];
    }
    return pq_load_fp16(part);
}

// dots[h] += q_terms_h . k_terms for every row of the tile (ggml_flash_attn_ext_set_score_terms): a product like q.k,
// with the terms in place of a decoded block.
static void pq_tile_terms(const struct ggml_polar_cpu_attn_params * p, int r0, int nl, pq_vf * dots) {
    const pq_vi offsets = pq_lane_offsets(p->k_terms_row_stride, nl);
    for (int t0 = 0; t0 < p->n_terms; t0 += PQ_BLOCK) {
        const int n = pq_min(p->n_terms - t0, PQ_BLOCK);
        pq_vf     val[PQ_BLOCK];
        for (int t = 0; t < n; ++t) {
            val[t] = pq_tile_term(p, (size_t) r0, offsets, nl, t0 + t);
        }
        for (int h = 0; h < p->nq; h += PQ_DOT_CHAINS) {
            pq_block_dots(p->q_terms + t0, p->q_terms_stride, n, h, pq_min(p->nq - h, PQ_DOT_CHAINS), val, dots);
        }
    }
}

// The scores' online softmax for query h: raises the running max if needed (rescaling S and accv), and returns
// exp(s - M) per row; 0 everywhere (and *live = 0) when every score of the tile is masked.
static pq_vf pq_tile_softmax(pq_attn_state * st, int h, pq_vf dot, pq_vf bias, int * live) {
    const struct ggml_polar_cpu_attn_params * p = st->p;
    pq_vf s = pq_mul(dot, pq_splat(p->scale));
    if (p->softcap != 0.0f) {
        float t[PQ_LANES];
        pq_store(t, s);
        for (int r = 0; r < PQ_LANES; ++r) {
            t[r] = p->softcap * tanhf(t[r]);
        }
        s = pq_load(t);
    }
    s = pq_add(s, bias);
    const float mt = pq_hmax(s);
    *live = mt != -INFINITY;
    if (!*live) {
        return pq_splat(0.0f);
    }
    if (mt > st->M[h]) {
        const float ms = expf(st->M[h] - mt);
        st->M[h] = mt;
        st->S[h] *= ms;
        st->in_scale[h] *= ms;
        float * a = st->accv + (size_t) h * p->dv * PQ_LANES;
        for (int d = 0; d < p->dv; ++d) {
            pq_store(a + d * PQ_LANES, pq_mul(pq_load(a + d * PQ_LANES), pq_splat(ms)));
        }
    }
    const pq_vf prob = pq_exp_nonpos(pq_add(s, pq_splat(-st->M[h])));
    st->S[h] += pq_hsum(prob);
    return prob;
}

// accv += prob * v for every query: each V block decoded once.
static void pq_tile_values(pq_attn_state * st, int r0, int nl, const pq_vf * prob) {
    const struct ggml_polar_cpu_attn_params * p = st->p;
    const uint8_t * vrows = (const uint8_t *) p->v + (size_t) r0 * p->v_row_stride;
    const pq_vi     voff  = pq_lane_offsets(p->v_row_stride, nl);
    for (int ib = 0; ib < p->dv / PQ_BLOCK; ++ib) {
        pq_vf val[PQ_BLOCK];
        p->v_type->lanes(vrows + (size_t) ib * p->v_type->type_size, voff, val);
        for (int h = 0; h < p->nq; ++h) {
            float * a = st->accv + ((size_t) h * p->dv + ib * PQ_BLOCK) * PQ_LANES;
            for (int v = 0; v < PQ_BLOCK; ++v) {
                pq_store(a + v * PQ_LANES, pq_madd(val[v], prob[h], pq_load(a + v * PQ_LANES)));
            }
        }
    }
}

void ggml_polar_cpu_attn(const struct ggml_polar_cpu_attn_params * p, float * M, float * S, float * acc,
                         float * scratch) {
    PQ_REQUIRE(p->k_type && p->v_type && p->q && p->n_rows >= 0);
    PQ_REQUIRE(p->nq >= 1 && p->nq <= GGML_POLAR_CPU_ATTN_MAX_Q);
    PQ_REQUIRE(p->dk > 0 && p->dv > 0 && p->dk % PQ_BLOCK == 0 && p->dv % PQ_BLOCK == 0);
    PQ_REQUIRE(pq_stride_ok(p->k_row_stride) && pq_stride_ok(p->v_row_stride));
    PQ_REQUIRE(!p->q_terms || (p->k_terms && p->n_terms > 0 && pq_stride_ok(p->k_terms_row_stride)));
    pq_attn_state st = { p, M, S, scratch, { 0 } };
    memset(st.accv, 0, (size_t) p->nq * p->dv * PQ_LANES * sizeof(float));
    for (int h = 0; h < p->nq; ++h) {
        st.in_scale[h] = 1.0f;
    }

    for (int r0 = 0; r0 < p->n_rows; r0 += PQ_LANES) {
        const int nl = pq_min(p->n_rows - r0, PQ_LANES);
        pq_vf     bias[GGML_POLAR_CPU_ATTN_MAX_Q];
        if (!pq_tile_biases(p, r0, nl, bias)) {
            continue;
        }
        pq_vf dots[GGML_POLAR_CPU_ATTN_MAX_Q];
        pq_tile_dots(p, r0, nl, dots);
        if (p->q_terms) {
            pq_tile_terms(p, r0, nl, dots);
        }
        pq_vf prob[GGML_POLAR_CPU_ATTN_MAX_Q];
        int   any = 0;
        for (int h = 0; h < p->nq; ++h) {
            int live;
            prob[h] = pq_tile_softmax(&st, h, dots[h], bias[h], &live);
            any |= live;
        }
        if (any) {
            pq_tile_values(&st, r0, nl, prob);
        }
    }

    for (int h = 0; h < p->nq; ++h) {
        for (int d = 0; d < p->dv; ++d) {
            acc[(size_t) h * p->dv + d] = acc[(size_t) h * p->dv + d] * st.in_scale[h] +
                                          pq_hsum(pq_load(st.accv + ((size_t) h * p->dv + d) * PQ_LANES));
        }
    }
}
