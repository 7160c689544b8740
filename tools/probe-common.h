// Shared by the attention probes (tools/README.md): a cache type from its name, and the text's tokens.
#pragma once

#include "ggml.h"
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

[[noreturn]] inline void probe_fail(const std::string & msg) {
    fprintf(stderr, "error: %s\n", msg.c_str());
    exit(1);
}

// The ggml type named `name` (f16, q8_0, pq46, ...): the names -ctk/-ctv take.
inline ggml_type probe_cache_type(const std::string & name) {
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        const char * n = ggml_type_name((ggml_type) t);
        if (n && name == n && ggml_get_type_traits((ggml_type) t)->blck_size > 0) {
            return (ggml_type) t;
        }
    }
    probe_fail("unknown cache type '" + name + "'");
}

inline long probe_count(const char * arg, const char * what) {
    char * end = nullptr;
    const long v = strtol(arg, &end, 10);
    if (!*arg || *end || v <= 0) {
        probe_fail(std::string(what) + " must be a positive integer, not '" + arg + "'");
    }
    return v;
}

// llama.cpp's log, its warnings and errors only: the probes print their own findings on stdout.
inline void probe_quiet_log() {
    llama_log_set([](ggml_log_level level, const char * text, void *) {
        if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) {
            fputs(text, stderr);
        }
    }, nullptr);
}

inline llama_model * probe_load_model(const char * path) {
    probe_quiet_log();
    llama_model * model = llama_model_load_from_file(path, llama_model_default_params());
    if (!model) {
        probe_fail(std::string("cannot load the model ") + path);
    }
    return model;
}

// The first n tokens of the text file, which must have that many.
inline std::vector<llama_token> probe_tokens(const llama_model * model, const char * path, int n) {
    std::ifstream f(path);
    if (!f) {
        probe_fail(std::string("cannot read the text ") + path);
    }
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string text = ss.str();
    std::vector<llama_token> toks(text.size() + 2);
    const int got = llama_tokenize(llama_model_get_vocab(model), text.c_str(), (int) text.size(), toks.data(),
                                   (int) toks.size(), true, false);
    if (got < n) {
        probe_fail(std::string("the text ") + path + " has " + std::to_string(got) + " tokens, " +
                   std::to_string(n) + " needed");
    }
    toks.resize(n);
    return toks;
}

inline llama_context_params probe_context_params(ggml_type k, ggml_type v, int n_ctx, int n_ubatch,
                                                 ggml_backend_sched_eval_callback cb) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx           = n_ctx;
    cp.n_batch         = n_ctx;
    cp.n_ubatch        = n_ubatch;
    cp.type_k          = k;
    cp.type_v          = v;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.cb_eval         = cb;
    return cp;
}
