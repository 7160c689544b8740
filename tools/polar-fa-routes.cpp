// polar-fa-routes MODEL TEXT CTK CTV [N_TOKENS]: replays every flash-attention node of one batch of N_TOKENS
// (default 64) through the CPU's batch route (all tokens: the tiled path) and its decode route (one token at a
// time: ggml_polar_cpu_attn for polar caches), on the node's own inputs (the query, the cache, the mask, the exact
// rows and key offsets the model set), and prints per layer their NMSE against each other and, when the node has
// no extra inputs (nor ALiBi), each route's against a float64 reference from the decoded cache. The cache settings
// (LLAMA_K_CENTER, LLAMA_KV_SINK_ROWS, ...) are read from the environment as by every tool.
#include "probe-common.h"

#include "ggml-cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

namespace {

struct route_errors {
    double batch_vs_decode = 0;  // NMSE
    double batch_vs_ref    = -1; // NMSE, -1: no reference
    double decode_vs_ref   = -1;
};

int    g_tokens;
int    g_layer;
int    g_threads;
double g_worst;

// A contiguous copy of t (any row strides): the replay's inputs outlive the model's graph.
ggml_tensor * copy_rows(ggml_context * ctx, const ggml_tensor * t) {
    ggml_tensor * c  = ggml_new_tensor_4d(ctx, t->type, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    const size_t  rs = ggml_row_size(t->type, t->ne[0]);
    for (int64_t i3 = 0; i3 < t->ne[3]; ++i3) {
        for (int64_t i2 = 0; i2 < t->ne[2]; ++i2) {
            for (int64_t i1 = 0; i1 < t->ne[1]; ++i1) {
                memcpy((char *) c->data + i1*c->nb[1] + i2*c->nb[2] + i3*c->nb[3],
                       (const char *) t->data + i1*t->nb[1] + i2*t->nb[2] + i3*t->nb[3], rs);
            }
        }
    }
    return c;
}

// The node again over the given query and mask, every other input and parameter as in `node`.
ggml_tensor * same_attention(ggml_context * ctx, const ggml_tensor * node, ggml_tensor * const * src,
                             ggml_tensor * q, ggml_tensor * mask) {
    ggml_tensor * fa = ggml_flash_attn_ext(ctx, q, src[1], src[2], mask, 1.0f, 0.0f, 0.0f);
    memcpy(fa->op_params, node->op_params, sizeof(fa->op_params));
    for (int i = 4; i < GGML_MAX_SRC; ++i) {
        fa->src[i] = src[i];
    }
    return fa;
}

std::vector<float> decoded(const ggml_tensor * t) {
    std::vector<float> out(ggml_nelements(t));
    if (t->type == GGML_TYPE_F32) {
        memcpy(out.data(), t->data, out.size()*sizeof(float));
    } else {
        ggml_get_type_traits(t->type)->to_float(t->data, out.data(), (int64_t) out.size());
    }
    return out;
}

// softmax(scale * q.k + mask) v in float64 for query head h of token i.
std::vector<double> reference(const ggml_tensor * node, ggml_tensor * const * src, const std::vector<float> & k,
                              const std::vector<float> & v, int64_t i, int64_t h) {
    const ggml_tensor * q = src[0], * mask = src[3];
    const int64_t DK = q->ne[0], DV = src[2]->ne[0], NKV = src[1]->ne[1];
    const int64_t hk = h / (q->ne[2] / src[1]->ne[2]);
    float scale, softcap;
    memcpy(&scale,   (const float *) node->op_params + 0, sizeof(float));
    memcpy(&softcap, (const float *) node->op_params + 2, sizeof(float));
    const float *       qq = (const float *) ((const char *) q->data + i*q->nb[1] + h*q->nb[2]);
    const ggml_fp16_t * mm = mask ? (const ggml_fp16_t *) ((const char *) mask->data + i*mask->nb[1]) : nullptr;
    std::vector<double> s(NKV, -INFINITY);
    double              mx = -INFINITY;
    for (int64_t r = 0; r < NKV; ++r) {
        const double m = mm ? ggml_fp16_to_fp32(mm[r]) : 0.0;
        if (std::isinf(m)) {
            continue;
        }
        double d = 0;
        for (int64_t c = 0; c < DK; ++c) {
            d += (double) qq[c] * k[(hk*NKV + r)*DK + c];
        }
        d *= scale;
        if (softcap != 0.0f) {
            d = softcap * tanh(d / softcap); // as ggml's op: the score's scale, then the cap
        }
        s[r] = d + m;
        mx   = std::max(mx, s[r]);
    }
    std::vector<double> o(DV, 0.0);
    double              sum = 0;
    for (int64_t r = 0; r < NKV; ++r) {
        if (std::isinf(s[r])) {
            continue;
        }
        const double p = exp(s[r] - mx);
        sum += p;
        for (int64_t c = 0; c < DV; ++c) {
            o[c] += p * v[(hk*NKV + r)*DV + c];
        }
    }
    for (double & x : o) {
        x /= sum;
    }
    return o;
}

// The NMSE of the batch route's outputs against the token-by-token ones, and of each against the float64 reference
// when with_reference (the node has no exact rows, key offsets nor ALiBi).
route_errors score(const ggml_tensor * node, ggml_tensor * const * src, const ggml_tensor * full,
                   const std::vector<ggml_tensor *> & one, bool with_reference) {
    const int64_t      NT = src[0]->ne[1], NH = src[0]->ne[2], DV = src[2]->ne[0];
    std::vector<float> k, v;
    if (with_reference) {
        k = decoded(src[1]);
        v = decoded(src[2]);
    }
    double bd = 0, br = 0, dr = 0, norm = 0, norm_ref = 0;
    for (int64_t i = 0; i < NT; ++i) {
        for (int64_t h = 0; h < NH; ++h) {
            const float * ob = (const float *) ((const char *) full->data + h*full->nb[1] + i*full->nb[2]);
            const float * od = (const float *) ((const char *) one[i]->data + h*one[i]->nb[1]);
            const std::vector<double> ref = with_reference ? reference(node, src, k, v, i, h) : std::vector<double>();
            for (int64_t c = 0; c < DV; ++c) {
                bd   += (double) (ob[c] - od[c]) * (ob[c] - od[c]);
                norm += (double) ob[c] * ob[c];
                if (with_reference) {
                    br       += (ob[c] - ref[c]) * (ob[c] - ref[c]);
                    dr       += (od[c] - ref[c]) * (od[c] - ref[c]);
                    norm_ref += ref[c] * ref[c];
                }
            }
        }
    }
    route_errors e;
    e.batch_vs_decode = bd / norm;
    if (with_reference) {
        e.batch_vs_ref  = br / norm_ref;
        e.decode_vs_ref = dr / norm_ref;
    }
    return e;
}

// The node on copies of its inputs, once for the whole batch and once per token.
route_errors replay(const ggml_tensor * node) {
    ggml_init_params ip  = { (size_t) 256 << 20, nullptr, false };
    ggml_context *   ctx = ggml_init(ip);
    ggml_tensor *    src[GGML_MAX_SRC] = {};
    bool             with_reference = true;
    for (int i = 0; i < GGML_MAX_SRC; ++i) {
        src[i] = node->src[i] ? copy_rows(ctx, node->src[i]) : nullptr;
        with_reference &= i < 4 || !node->src[i];
    }
    float max_bias;
    memcpy(&max_bias, (const float *) node->op_params + 1, sizeof(float));
    with_reference &= max_bias == 0.0f; // ALiBi: not in the reference
    ggml_tensor * q = src[0], * mask = src[3];
    if (mask && (mask->ne[2] != 1 || mask->ne[3] != 1)) {
        probe_fail("a mask with more than one head or stream is not replayed");
    }
    const int64_t NT = q->ne[1], NH = q->ne[2];
    ggml_cgraph * gf   = ggml_new_graph_custom(ctx, 16 + 4*NT, false);
    ggml_tensor * full = same_attention(ctx, node, src, q, mask);
    ggml_build_forward_expand(gf, full);
    std::vector<ggml_tensor *> one(NT);
    for (int64_t i = 0; i < NT; ++i) {
        ggml_tensor * qi = ggml_view_4d(ctx, q, q->ne[0], 1, NH, 1, q->nb[1], q->nb[2], q->nb[3], i*q->nb[1]);
        ggml_tensor * mi = mask ? ggml_view_4d(ctx, mask, mask->ne[0], 1, 1, 1, mask->nb[1], mask->nb[2], mask->nb[3],
                                               i*mask->nb[1]) : nullptr;
        one[i] = same_attention(ctx, node, src, qi, mi);
        ggml_build_forward_expand(gf, one[i]);
    }
    if (ggml_graph_compute_with_ctx(ctx, gf, g_threads) != GGML_STATUS_SUCCESS) {
        probe_fail("the replay's graph failed");
    }
    const route_errors e = score(node, src, full, one, with_reference);
    ggml_free(ctx);
    return e;
}

bool on_node(ggml_tensor * t, bool ask, void *) {
    if (t->op != GGML_OP_FLASH_ATTN_EXT) {
        return !ask;
    }
    if (ask) {
        return true;
    }
    const int layer = g_layer++;
    if (t->src[0]->ne[1] != g_tokens) {
        return true;
    }
    const route_errors e = replay(t);
    g_worst = std::max(g_worst, e.batch_vs_decode);
    printf("layer %2d  K %-5s V %-5s  NMSE batch vs decode %.2e", layer, ggml_type_name(t->src[1]->type),
           ggml_type_name(t->src[2]->type), e.batch_vs_decode);
    if (e.batch_vs_ref >= 0) {
        printf("  vs float64: batch %.2e decode %.2e", e.batch_vs_ref, e.decode_vs_ref);
    }
    printf("\n");
    return true;
}

} // namespace

int main(int argc, char ** argv) {
    if (argc < 5 || argc > 6) {
        fprintf(stderr, "usage: %s MODEL TEXT CTK CTV [N_TOKENS]\n", argv[0]);
        return 2;
    }
    const ggml_type tk = probe_cache_type(argv[3]);
    const ggml_type tv = probe_cache_type(argv[4]);
    g_tokens  = argc > 5 ? (int) probe_count(argv[5], "N_TOKENS") : 64;
    g_threads = (int) std::max(1u, std::thread::hardware_concurrency());
    llama_backend_init();
    llama_model *                  model  = probe_load_model(argv[1]);
    const std::vector<llama_token> tokens = probe_tokens(model, argv[2], 2*g_tokens);
    llama_context_params cp = probe_context_params(tk, tv, 4*g_tokens, g_tokens, on_node);
    llama_context *      ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        probe_fail("cannot create the context (see the log above)");
    }
    for (int b = 0; b < 2; ++b) { // the second batch attends to the first's cache rows too
        printf("batch %d: tokens %d-%d\n", b, b*g_tokens, (b + 1)*g_tokens - 1);
        g_layer = 0;
        if (llama_decode(ctx, llama_batch_get_one(const_cast<llama_token *>(tokens.data()) + b*g_tokens, g_tokens))) {
            probe_fail("llama_decode failed");
        }
    }
    printf("largest NMSE between the routes: %.2e\n", g_worst);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
