// One call per case, named by argv[1], that breaks a precondition of the polar codec or attention kernel. Built with
// -DNDEBUG (a Release build): every case must still stop with "precondition failed" and SIGABRT, before any access.
// "valid" makes the same calls correctly and exits 0, so a case that dies shows its check, not a broken harness.
#include "ggml-polar-cpu.h"
#include "ggml-polar.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static float   values[4 * 64];
static uint8_t blocks[4 * 64];     // larger than 4 blocks of any polar type
static float   scratch[1 << 16];

static struct ggml_polar_cpu_attn_params attn_params(void) {
    const struct ggml_polar_cpu_type * t = ggml_polar_cpu_type_get(GGML_POLAR_TYPE_PQ46);
    struct ggml_polar_cpu_attn_params p = { 0 };
    p.k_type = p.v_type = t;
    p.k = p.v = blocks;
    p.k_row_stride = p.v_row_stride = ggml_polar_get_type_info(GGML_POLAR_TYPE_PQ46)->type_size;
    p.n_rows = 1;
    p.dk = p.dv = 64;
    p.q = values;
    p.q_stride = 64;
    p.nq = 1;
    p.scale = 1.0f;
    return p;
}

static int attn(struct ggml_polar_cpu_attn_params p) {
    float M[GGML_POLAR_CPU_ATTN_MAX_Q], S[GGML_POLAR_CPU_ATTN_MAX_Q];
    for (int h = 0; h < GGML_POLAR_CPU_ATTN_MAX_Q; ++h) {
        M[h] = -INFINITY;
        S[h] = 0.0f;
    }
    ggml_polar_cpu_attn(&p, M, S, scratch, scratch + 4096);
    return 0;
}

int main(int argc, char ** argv) {
    const char * c = argc > 1 ? argv[1] : "";
    const struct ggml_polar_cpu_type *  t    = ggml_polar_cpu_type_get(GGML_POLAR_TYPE_PQ46);
    const struct ggml_polar_type_info * info = ggml_polar_get_type_info(GGML_POLAR_TYPE_PQ46);
    struct ggml_polar_cpu_attn_params   p    = attn_params();
    float dot = 0.0f;

    if (!strcmp(c, "valid")) {
        info->from_float_ref(values, blocks, 64);
        info->to_float(blocks, values, 64);
        info->vec_dot(64, &dot, 0, blocks, 0, values, 0, 1);
        ggml_polar_cpu_quantize_row(t, values, blocks, 64);
        ggml_polar_cpu_dequantize_row(t, blocks, values, 64);
        ggml_polar_cpu_decode_lanes(t, blocks, info->type_size, 1, scratch);
        ggml_polar_cpu_decode_tile_rows(t, blocks, info->type_size, 1, 1, scratch, 64);
        return attn(p);
    }
    if (!strcmp(c, "ref_quantize_row_k")) info->from_float_ref(values, blocks, 100);
    if (!strcmp(c, "ref_dequantize_row_k")) info->to_float(blocks, values, 100);
    if (!strcmp(c, "ref_vec_dot_nrc")) info->vec_dot(64, &dot, 0, blocks, 0, values, 0, 2);
    if (!strcmp(c, "ref_vec_dot_n")) info->vec_dot(100, &dot, 0, blocks, 0, values, 0, 1);
    if (!strcmp(c, "quantize_row_k")) ggml_polar_cpu_quantize_row(t, values, blocks, 100);
    if (!strcmp(c, "quantize_row_partner")) ggml_polar_cpu_quantize_row(ggml_polar_cpu_partner_f16(), values, blocks, 64);
    if (!strcmp(c, "dequantize_row_k")) ggml_polar_cpu_dequantize_row(t, blocks, values, 100);
    if (!strcmp(c, "decode_lanes_n")) ggml_polar_cpu_decode_lanes(t, blocks, info->type_size, 0, scratch);
    if (!strcmp(c, "decode_lanes_stride")) ggml_polar_cpu_decode_lanes(t, blocks, (size_t) 1 << 40, 1, scratch);
    if (!strcmp(c, "decode_tile_stride")) ggml_polar_cpu_decode_tile_rows(t, blocks, (size_t) 1 << 40, 1, 1, scratch, 64);
    if (!strcmp(c, "attn_nq_zero")) { p.nq = 0; attn(p); }
    if (!strcmp(c, "attn_nq_over")) { p.nq = GGML_POLAR_CPU_ATTN_MAX_Q + 1; attn(p); }
    if (!strcmp(c, "attn_dk")) { p.dk = 96; attn(p); }
    if (!strcmp(c, "attn_dv_zero")) { p.dv = 0; attn(p); }
    if (!strcmp(c, "attn_stride")) { p.v_row_stride = (size_t) 1 << 40; attn(p); }
    if (!strcmp(c, "attn_no_type")) { p.k_type = NULL; attn(p); }
    if (!strcmp(c, "attn_rows")) { p.n_rows = -1; attn(p); }
    printf("%s: no precondition stopped it\n", c);
    return 1;
}
