// polar-perturb-kld MODEL TEXT CTK CTV EPS [N_TOKENS]: how far a rounding-level change moves the model. Runs
// N_TOKENS (default 512) of the text twice with the given cache types, the second time with every value of layer
// 0's attention output scaled by 1 + EPS, and prints the mean and largest KLD between the two runs' next-token
// distributions and how often their top tokens agree. Two routes of one computation that round differently (the
// CPU's batch and decode routes, the CPU and a GPU) differ by that much on this model even when both are exact to
// float rounding (docs/metal.md).
#include "probe-common.h"

#include <algorithm>
#include <cmath>

namespace {

int   g_layer;
float g_eps;

bool perturb_layer0(ggml_tensor * t, bool ask, void *) {
    if (t->op != GGML_OP_FLASH_ATTN_EXT) {
        return !ask;
    }
    if (!ask && g_layer++ == 0 && g_eps != 0.0f) {
        if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) {
            probe_fail("the attention output is not contiguous f32");
        }
        float * x = (float *) t->data;
        for (int64_t i = 0; i < ggml_nelements(t); ++i) {
            x[i] *= 1.0f + g_eps;
        }
    }
    return true;
}

// The logits of every token, one ubatch of 64 at a time (the callback counts layers from 0 in each).
std::vector<float> run(llama_model * model, const std::vector<llama_token> & tokens, ggml_type tk, ggml_type tv,
                       float eps) {
    const int            n  = (int) tokens.size();
    const int            nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    llama_context_params cp = probe_context_params(tk, tv, n, 64, perturb_layer0);
    llama_context *      ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        probe_fail("cannot create the context (see the log above)");
    }
    g_eps = eps;
    std::vector<float> logits;
    llama_batch        batch = llama_batch_init(64, 0, 1);
    for (int i0 = 0; i0 < n; i0 += 64) {
        batch.n_tokens = std::min(64, n - i0);
        for (int i = 0; i < batch.n_tokens; ++i) {
            batch.token[i]     = tokens[i0 + i];
            batch.pos[i]       = i0 + i;
            batch.n_seq_id[i]  = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i]    = 1;
        }
        g_layer = 0;
        if (llama_decode(ctx, batch)) {
            probe_fail("llama_decode failed");
        }
        for (int i = 0; i < batch.n_tokens; ++i) {
            const float * l = llama_get_logits_ith(ctx, i);
            logits.insert(logits.end(), l, l + nv);
        }
    }
    llama_batch_free(batch);
    llama_free(ctx);
    return logits;
}

// log-softmax of n logits, and the index of the largest
std::vector<double> log_probs(const float * l, int n, int * top) {
    const float * mx = std::max_element(l, l + n);
    *top             = (int) (mx - l);
    double z = 0;
    for (int j = 0; j < n; ++j) {
        z += exp((double) l[j] - *mx);
    }
    std::vector<double> lp(n);
    for (int j = 0; j < n; ++j) {
        lp[j] = (double) l[j] - *mx - log(z);
    }
    return lp;
}

} // namespace

int main(int argc, char ** argv) {
    if (argc < 6 || argc > 7) {
        fprintf(stderr, "usage: %s MODEL TEXT CTK CTV EPS [N_TOKENS]\n", argv[0]);
        return 2;
    }
    const ggml_type tk  = probe_cache_type(argv[3]);
    const ggml_type tv  = probe_cache_type(argv[4]);
    char *          end = nullptr;
    const float     eps = strtof(argv[5], &end);
    if (!*argv[5] || *end || !std::isfinite(eps)) {
        probe_fail(std::string("EPS must be a number, not '") + argv[5] + "'");
    }
    const int n = argc > 6 ? (int) probe_count(argv[6], "N_TOKENS") : 512;
    llama_backend_init();
    llama_model *                  model  = probe_load_model(argv[1]);
    const std::vector<llama_token> tokens = probe_tokens(model, argv[2], n);
    const std::vector<float>       a      = run(model, tokens, tk, tv, 0.0f);
    const std::vector<float>       b      = run(model, tokens, tk, tv, eps);
    const int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    double    sum = 0, worst = 0;
    int       same_top = 0;
    for (int i = 0; i < n; ++i) {
        int ta, tb;
        const std::vector<double> la = log_probs(a.data() + (size_t) i*nv, nv, &ta);
        const std::vector<double> lb = log_probs(b.data() + (size_t) i*nv, nv, &tb);
        double kld = 0;
        for (int j = 0; j < nv; ++j) {
            kld += exp(la[j]) * (la[j] - lb[j]);
        }
        sum += kld;
        worst = std::max(worst, kld);
        same_top += ta == tb;
    }
    printf("K %s V %s, layer 0's attention output scaled by 1%+g, %d tokens: mean KLD %.5f, largest %.4f, "
           "same top token %d/%d\n", ggml_type_name(tk), ggml_type_name(tv), eps, n, sum / n, worst, same_top, n);
    llama_model_free(model);
    return 0;
}
