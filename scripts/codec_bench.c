// Microbenchmark of the CPU codec on one machine: the SIMD encoder (the cache write, a row of 3 blocks at a time)
// against the reference encoder, the SIMD block decoder, and ggml_polar_cpu_attn over 4096 cache rows for 3 query
// heads sharing one KV head (SmolLM2's layout, head 64), without and with 64 fp16 score terms (key centers restored).
//   cc -O3 -march=native -ffp-contract=off -Iggml_polar scripts/codec_bench.c ggml_polar/cpu/polar-cpu-decode.c
//      ggml_polar/cpu/polar-cpu-attn.c ggml_polar/ggml-polar.c -lm -o build/codec_bench && build/codec_bench pq46
#include "ggml-polar-cpu.h"
#include "ggml-polar.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec * 1e-9;
}

// Seconds per ggml_polar_cpu_attn call over p's rows, each call from a fresh softmax state.
static double time_attention(const struct ggml_polar_cpu_attn_params * p, float * scratch) {
    enum { REPS = 200 };
    float        M[16], S[16], acc[16 * 64];
    const double t0 = now();
    for (int r = 0; r < REPS; ++r) {
        for (int h = 0; h < p->nq; ++h) {
            M[h] = -INFINITY;
            S[h] = 0.0f;
        }
        memset(acc, 0, sizeof(acc));
        ggml_polar_cpu_attn(p, M, S, acc, scratch);
    }
    return (now() - t0) / REPS;
}

int main(int argc, char ** argv) {
    const char * name = argc > 1 ? argv[1] : "pq46";
    // the command line names the type; everything after identifies it by its enum
    int type = -1;
    for (int i = 0; i < ggml_polar_type_count(); ++i) {
        if (strcmp(ggml_polar_get_type_info(i)->name, name) == 0) {
            type = i;
        }
    }
    const struct ggml_polar_type_info * info = ggml_polar_get_type_info(type);
    const struct ggml_polar_cpu_type *  t    = ggml_polar_cpu_type_get((enum ggml_polar_type) type);
    if (!t || !info) {
        fprintf(stderr, "unknown type %s\n", name);
        return 2;
    }
    enum { ROWS = 4096, NKV = 3, NQ = 3, D = 64 };
    const size_t ts = info->type_size;
    float *   x = malloc(sizeof(float) * ROWS * NKV * D);
    uint8_t * k = malloc(ROWS * NKV * ts);
    uint8_t * v = malloc(ROWS * NKV * ts);
    srand(1);
    for (int i = 0; i < ROWS * NKV * D; ++i) {
        x[i] = (float) rand() / (float) RAND_MAX - 0.5f;
    }

    double t0   = now();
    int    reps = 10;
    for (int r = 0; r < reps; ++r) {
        info->from_float_ref(x, k, ROWS * NKV * D);
    }
    const double t_quant = (now() - t0) / (reps * (double) ROWS * NKV);
    info->from_float_ref(x, v, ROWS * NKV * D);

    // the SIMD encoder as the cache write calls it: one row (NKV blocks) at a time
    t0 = now();
    for (int r = 0; r < reps; ++r) {
        for (int row = 0; row < ROWS; ++row) {
            ggml_polar_cpu_quantize_row(t, x + (size_t) row * NKV * D, k + (size_t) row * NKV * ts, NKV * D);
        }
    }
    const double t_encode = (now() - t0) / (reps * (double) ROWS * NKV);
    if (memcmp(k, v, (size_t) ROWS * NKV * ts) != 0) {
        fprintf(stderr, "the SIMD encoder's bytes differ from the reference's\n");
        return 1;
    }

    const int lanes = ggml_polar_cpu_lanes();
    float     tile[64 * GGML_POLAR_CPU_MAX_LANES];
    t0   = now();
    reps = 200;
    for (int r = 0; r < reps; ++r) {
        for (int r0 = 0; r0 + lanes <= ROWS; r0 += lanes) {
            ggml_polar_cpu_decode_lanes(t, k + (size_t) r0 * NKV * ts, NKV * ts, lanes, tile);
        }
    }
    const double t_decode = (now() - t0) / (reps * (double) ROWS);

    float   q[NQ * D], qt[NQ * D];
    // one term per dimension, fp16, a term's rows side by side, padded: as llama.cpp passes them (a power-of-two
    // stride would put every term of a row in one cache set)
    enum { TERM_STRIDE = ROWS + 16 };
    uint16_t * kt   = malloc(sizeof(uint16_t) * TERM_STRIDE * D);
    float * scratch = malloc(sizeof(float) * ggml_polar_cpu_attn_kernel_scratch(NQ, D, D));
    for (int i = 0; i < NQ * D; ++i) {
        q[i]  = (float) rand() / (float) RAND_MAX;
        qt[i] = (float) rand() / (float) RAND_MAX;
    }
    for (int i = 0; i < TERM_STRIDE * D; ++i) {
        kt[i] = (uint16_t) (0x3800 | (rand() & 0x3ff)); // fp16 in [0.5, 1)
    }
    struct ggml_polar_cpu_attn_params p = {
        .k_type = t, .v_type = t, .k = k, .k_row_stride = NKV * ts, .v = v, .v_row_stride = NKV * ts,
        .n_rows = ROWS, .dk = D, .dv = D, .q = q, .q_stride = D, .nq = NQ, .scale = 0.125f,
    };
    const double t_attn = time_attention(&p, scratch);
    // key centers restored per position (llama.cpp's decode): D score terms per row
    p.q_terms = qt, p.q_terms_stride = D, p.k_terms = kt, p.k_terms_f16 = 1, p.k_terms_row_stride = 1;
    p.k_terms_stride = TERM_STRIDE;
    p.n_terms = D;
    const double t_terms = time_attention(&p, scratch);

    printf("%s (%s, %d lanes): encode %.0f ns/block (reference %.0f: %.2fx), decode %.1f ns/block, attention "
           "%.1f ns per cache row (%d rows x %d query heads: %.0f us), with %d score terms %.1f ns (%.2fx)\n",
           name, ggml_polar_cpu_isa(), lanes, t_encode * 1e9, t_quant * 1e9, t_quant / t_encode, t_decode * 1e9,
           t_attn * 1e9 / ROWS, ROWS, NQ, t_attn * 1e6, D, t_terms * 1e9 / ROWS, t_terms / t_attn);
    free(kt);
    free(x);
    free(k);
    free(v);
    free(scratch);
    return 0;
}
