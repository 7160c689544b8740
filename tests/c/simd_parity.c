// The SIMD CPU paths (ggml_polar/cpu/) against the reference codec (ggml-polar.c), for whatever ISA this file is
// compiled for (tests/test_simd.py builds it for AVX-512, AVX2, plain C and, under qemu, AArch64 NEON).
//   decoded values: bit-identical to dequantize_row_<type> (NaN where the reference has NaN);
//   dot products:   |simd - ref| <= 2^-22 * sum |k_i q_i| over the row (float32 sums of up to 256 terms, in
//                   another order and with fused multiply-adds), and the same non-finite results;
//   encoded blocks: byte for byte the reference's.
// Prints "<isa> <lanes>: N failures" and exits non-zero on any failure. Every buffer a codec function reads or writes
// is allocated with exactly the bytes it is given (exact()), so that a build with AddressSanitizer catches an access
// one byte past them.
#include "ggml-polar-cpu.h"
#include "ggml-polar.h"
#include "polar-codec.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng_u32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t) (rng_state >> 16);
}

// n bytes on the heap and not one more (ASan's redzone starts right after them)
static void * exact(size_t n) {
    void * p = malloc(n ? n : 1);
    if (!p) {
        abort();
    }
    return p;
}

static float rng_normal(void) {
    float s = 0.0f;
    for (int i = 0; i < 12; ++i) {
        s += (float) (rng_u32() & 0xffffff) / 16777216.0f;
    }
    return s - 6.0f;
}

static int same_value(float a, float b) {
    uint32_t ua;
    uint32_t ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub || (isnan(a) && isnan(b));
}

// ggml_polar_cpu_attn against softmax(scale * (q.K^T + q_terms.k_terms^T) + mask) V in double precision over the
// reference decode, with the rows split into two chunks merged as flash-attention partials. Bound: 4e-5 absolute
// (v is O(1)).
static int check_attention(void) {
    enum { ROWS = 83, NQ = 3, DK = 128, DV = 128, NT = 70 };
    float *        kv      = exact(sizeof(float) * ROWS * DK);
    float *        kref    = exact(sizeof(float) * ROWS * DK);
    float *        koff    = exact(sizeof(float) * ROWS * DK);
    float *        vref    = exact(sizeof(float) * ROWS * DV);
    float *        scratch = exact(sizeof(float) * ggml_polar_cpu_attn_kernel_scratch(NQ, DK, DV));
    float *        q       = exact(sizeof(float) * NQ * DK);
    float *        qt      = exact(sizeof(float) * NQ * NT);
    float *        kt      = exact(sizeof(float) * ROWS * NT); // the pass's layout: kt[r*rs + t*ts]
    uint16_t *     kt16    = exact(sizeof(uint16_t) * ROWS * NT); // the same as fp16 bits, on the fp16 passes
    uint16_t *     mask    = exact(sizeof(uint16_t) * NQ * ROWS);
    float          slope[NQ] = { 1.0f, 0.5f, 0.25f };
    int            failures = 0;

    for (int ti = 0; ti < ggml_polar_type_count(); ++ti) {
        const struct ggml_polar_type_info * info = ggml_polar_get_type_info(ti);
        const struct ggml_polar_cpu_type *  t    = ggml_polar_cpu_type_get((enum ggml_polar_type) ti);
        const size_t                        row  = (DK / 64) * info->type_size;
        uint8_t *                           kq   = exact(ROWS * row);
        uint8_t *                           vq   = exact(ROWS * row);
        // passes: 0 plain, 1 soft-capped with K offsets; score terms on all, f32 (passes 0-1) or fp16 (2-3), a term's
        // rows side by side (even passes: vector loads) or each row's terms together (odd)
        for (int pass = 0; pass < 4; ++pass) {
            const int softcap = pass == 1, f16 = pass >= 2;
            for (int i = 0; i < ROWS * DK; ++i) kv[i] = rng_normal();
            info->from_float_ref(kv, kq, ROWS * DK);
            for (int i = 0; i < ROWS * DV; ++i) kv[i] = rng_normal();
            info->from_float_ref(kv, vq, ROWS * DV);
            info->to_float(kq, kref, ROWS * DK);
            info->to_float(vq, vref, ROWS * DV);
            for (int i = 0; i < NQ * DK; ++i) q[i] = rng_normal();
            for (int i = 0; i < NQ * ROWS; ++i) {
                // -inf (0xfc00) on a few rows, small biases elsewhere (fp16 bits of 0, -1, 0.5)
                const uint32_t u = rng_u32() % 10;
                mask[i] = u == 0 ? 0xfc00 : (u == 1 ? 0xbc00 : (u == 2 ? 0x3800 : 0));
            }
            const float scale = 0.125f, cap = softcap ? 5.0f : 0.0f;
            // the soft-capped pass also adds K offsets (ggml_flash_attn_ext_set_k_offset) to every K row
            for (int i = 0; i < ROWS * DK; ++i) koff[i] = softcap ? 0.5f * rng_normal() : 0.0f;
            // score terms in both layouts: a term's rows side by side (vector loads), then each row's terms together
            const size_t rs = pass % 2 ? NT : 1, ts = pass % 2 ? 1 : ROWS;
            for (int i = 0; i < NQ * NT; ++i) qt[i] = 0.3f * rng_normal();
            for (int i = 0; i < ROWS * NT; ++i) {
                // fp16: normal values of either sign in [0.25, 4)
                const uint32_t u = rng_u32();
                kt16[i] = (uint16_t) (((u >> 31) << 15) | ((13 + (u >> 10) % 4) << 10) | (u & 0x3ff));
                kt[i]   = f16 ? pq_fp16_to_f32(kt16[i]) : rng_normal();
            }

            float M[NQ], S[NQ], acc[NQ * DV];
            for (int h = 0; h < NQ; ++h) { M[h] = -INFINITY; S[h] = 0.0f; }
            memset(acc, 0, sizeof(acc));
            const int split = 37;
            for (int c = 0; c < 2; ++c) {
                const int r0 = c ? split : 0, n = c ? ROWS - split : split;
                struct ggml_polar_cpu_attn_params p = {
                    t, t, kq + r0 * row, row, vq + r0 * row, row, n, DK, DV, q, DK, NQ, mask + r0, ROWS, slope,
                    scale, cap, softcap ? koff + r0 * DK : NULL, DK, qt, NT,
                    f16 ? (const void *) (kt16 + r0 * rs) : (const void *) (kt + r0 * rs), f16, rs, ts, NT,
                };
                ggml_polar_cpu_attn(&p, M, S, acc, scratch);
            }
            for (int h = 0; h < NQ; ++h) {
                double sc[ROWS], mx = -INFINITY, sum = 0.0;
                for (int r = 0; r < ROWS; ++r) {
                    double s = 0.0;
                    for (int d = 0; d < DK; ++d) s += ((double) kref[r * DK + d] + koff[r * DK + d]) * q[h * DK + d];
                    for (int t = 0; t < NT; ++t) s += (double) qt[h * NT + t] * kt[r * rs + t * ts];
                    s *= scale;
                    if (cap != 0.0f) s = cap * tanh(s);
                    const uint16_t m = mask[h * ROWS + r];
                    s += m == 0xfc00 ? -INFINITY : slope[h] * (m == 0xbc00 ? -1.0 : (m == 0x3800 ? 0.5 : 0.0));
                    sc[r] = s;
                    mx = s > mx ? s : mx;
                }
                for (int r = 0; r < ROWS; ++r) { sc[r] = exp(sc[r] - mx); sum += sc[r]; }
                for (int d = 0; d < DV; ++d) {
                    double o = 0.0;
                    for (int r = 0; r < ROWS; ++r) o += sc[r] * vref[r * DV + d];
                    o /= sum;
                    const double got = acc[h * DV + d] / S[h];
                    if (!(fabs(got - o) <= 1e-5 * 4.0)) {
                        printf("%s attention (pass %d): query %d value %d: %.7g vs %.7g\n", info->name, pass, h, d,
                               got, o);
                        ++failures;
                        d = DV;
                    }
                }
            }
        }
        free(kq);
        free(vq);
    }
    free(kv); free(kref); free(koff); free(vref); free(scratch); free(q); free(qt); free(kt); free(kt16); free(mask);
    return failures;
}

// Both tile layouts over rows of nblk blocks (row r at blocks + r*row_bytes), written with a padded stride: every
// value bit-identical to the reference, and the padding untouched.
static int check_tiles(const struct ggml_polar_cpu_type * t, const char * name, const uint8_t * blocks,
                       size_t row_bytes, int rows, int nblk, const float * ref) {
    enum { PAD = 3 };
    const float  unset = -12345.0f;
    const int    dim   = nblk * 64;
    int          failures = 0;
    for (int transposed = 0; transposed < 2; ++transposed) {
        const int    outer  = transposed ? dim : rows;   // rows of the output
        const int    inner  = transposed ? rows : dim;   // values written per output row
        const size_t stride = (size_t) inner + PAD;
        float *      y      = exact(sizeof(float) * outer * stride);
        for (size_t i = 0; i < (size_t) outer * stride; ++i) {
            y[i] = unset;
        }
        if (transposed) {
            ggml_polar_cpu_decode_tile_transposed(t, blocks, row_bytes, rows, nblk, y, stride);
        } else {
            ggml_polar_cpu_decode_tile_rows(t, blocks, row_bytes, rows, nblk, y, stride);
        }
        for (int o = 0; o < outer; ++o) {
            for (int i = 0; i < inner + PAD; ++i) {
                const int   r    = transposed ? i : o;
                const int   d    = transposed ? o : i;
                const float want = i < inner ? ref[(size_t) r * dim + d] : unset;
                if (!same_value(y[(size_t) o * stride + i], want)) {
                    printf("%s decode_tile_%s (%d blocks per row): row %d value %d: %.9g != %.9g\n", name,
                           transposed ? "transposed" : "rows", nblk, r, d, y[(size_t) o * stride + i], want);
                    ++failures;
                    o = outer;
                    break;
                }
            }
        }
        free(y);
    }
    return failures;
}

// fp16 bits -> float, written independently of the codec's pq_fp16_to_f32
static float ref_fp16(uint16_t h) {
    const int   e = (h >> 10) & 31, m = h & 1023;
    const float v = e == 0 ? ldexpf((float) m, -24) : (e == 31 ? (m ? NAN : INFINITY) : ldexpf((float) (m | 1024), e - 25));
    return h >> 15 ? -v : v;
}

// The partner codecs (f16, q8_0 rows beside a polar cache) on arbitrary bytes: row-major, tiles and lanes
// bit-identical to ggml's conversions (f16 -> f32; q8_0: int8 * fp16 scale, blocks of 34 bytes for 32 values).
static int check_partners(void) {
    enum { ROWS = 37, NBLK = 3, DIM = NBLK * 64 };
    const int      lanes    = ggml_polar_cpu_lanes();
    float *        ref      = exact(sizeof(float) * ROWS * DIM);
    float *        got      = exact(sizeof(float) * ROWS * DIM);
    float *        tile     = exact(sizeof(float) * 64 * lanes);
    int            failures = 0;
    for (int which = 0; which < 2; ++which) {
        const struct ggml_polar_cpu_type * t    = which ? ggml_polar_cpu_partner_q8_0() : ggml_polar_cpu_partner_f16();
        const char *                       name = which ? "q8_0 partner" : "f16 partner";
        const size_t                       row  = which ? NBLK * 2 * 34 : NBLK * 128;
        uint8_t *                          bytes = exact(ROWS * row);
        for (size_t i = 0; i < ROWS * row; ++i) {
            bytes[i] = (uint8_t) rng_u32();
        }
        for (int r = 0; r < ROWS; ++r) {
            const uint8_t * x = bytes + r * row;
            for (int i = 0; i < DIM; ++i) {
                if (which) {
                    const uint8_t * b = x + (i / 32) * 34;
                    ref[r * DIM + i] = (float) (int8_t) b[2 + i % 32] * ref_fp16((uint16_t) (b[0] | b[1] << 8));
                } else {
                    ref[r * DIM + i] = ref_fp16((uint16_t) (x[2 * i] | x[2 * i + 1] << 8));
                }
            }
        }
        failures += check_tiles(t, name, bytes, row, ROWS, NBLK, ref);
        for (int r = 0; r < ROWS; ++r) { // one row at a time: a row is NBLK "blocks" of 64 values
            ggml_polar_cpu_dequantize_row(t, bytes + r * row, got + r * DIM, DIM);
        }
        for (int r0 = 0; r0 < ROWS; r0 += lanes) {
            const int nl = ROWS - r0 < lanes ? ROWS - r0 : lanes;
            ggml_polar_cpu_decode_lanes(t, bytes + r0 * row + (row / NBLK) * (NBLK - 1), row, nl, tile);
            for (int r = 0; r < nl; ++r) {
                for (int v = 0; v < 64; ++v) {
                    got[(r0 + r) * DIM + (NBLK - 1) * 64 + v] = tile[v * lanes + r]; // overwrites the row decode
                }
            }
        }
        for (int i = 0; i < ROWS * DIM; ++i) {
            if (!same_value(got[i], ref[i])) {
                printf("%s dequantize_row/decode_lanes: value %d: %.9g != %.9g\n", name, i, got[i], ref[i]);
                ++failures;
                break;
            }
        }
        free(bytes);
    }
    free(ref); free(got); free(tile);
    return failures;
}

// The encoder (the cache write) against quantize_row_<type>_ref: the same bytes for Gaussian rows at scales from
// subnormal to near FLT_MAX, rows with zeros, NaN, +-Inf, +-0 and FLT_MAX, and decoded blocks (values on the
// codebook's centroids) encoded again.
static int check_encoder(void) {
    enum { BLOCKS = 97 };
    float *        x       = exact(sizeof(float) * BLOCKS * 64);
    float *        decoded = exact(sizeof(float) * BLOCKS * 64);
    static const float scales[] = { 1.0f, 3e4f, 1e-7f, 1e-39f, 1e36f, 0.0f };
    static const float specials[] = { NAN, INFINITY, -INFINITY, 0.0f, -0.0f, FLT_MAX, -FLT_MAX, 1e-45f };
    int failures = 0;
    for (int ti = 0; ti < ggml_polar_type_count(); ++ti) {
        const struct ggml_polar_type_info * info = ggml_polar_get_type_info(ti);
        const struct ggml_polar_cpu_type *  t    = ggml_polar_cpu_type_get((enum ggml_polar_type) ti);
        uint8_t *                           want = exact((size_t) BLOCKS * info->type_size);
        uint8_t *                           got  = exact((size_t) BLOCKS * info->type_size);
        for (int trial = 0; trial < 4; ++trial) {
            for (int i = 0; i < BLOCKS * 64; ++i) {
                const float scale = scales[(i / 64 + trial) % (sizeof(scales) / sizeof(scales[0]))];
                x[i] = rng_normal() * scale;
                if (trial == 1 && rng_u32() % 13 == 0) {
                    x[i] = specials[rng_u32() % (sizeof(specials) / sizeof(specials[0]))];
                }
            }
            if (trial == 3) { // re-encode decoded values
                info->from_float_ref(x, want, BLOCKS * 64);
                info->to_float(want, decoded, BLOCKS * 64);
                memcpy(x, decoded, sizeof(float) * BLOCKS * 64);
            }
            info->from_float_ref(x, want, BLOCKS * 64);
            memset(got, 0xa5, (size_t) BLOCKS * info->type_size);
            for (int b0 = 0; b0 < BLOCKS; b0 += 1 + trial) { // rows of 1 to 4 blocks
                const int nb = BLOCKS - b0 < 1 + trial ? BLOCKS - b0 : 1 + trial;
                ggml_polar_cpu_quantize_row(t, x + b0 * 64, got + b0 * info->type_size, nb * 64);
            }
            for (int b = 0; b < BLOCKS; ++b) {
                if (memcmp(got + b * info->type_size, want + b * info->type_size, info->type_size) != 0) {
                    printf("%s quantize_row (trial %d): block %d differs from the reference\n", info->name, trial, b);
                    ++failures;
                    break;
                }
            }
        }
        free(want);
        free(got);
    }
    free(x);
    free(decoded);
    return failures;
}

int main(void) {
    enum { ROWS = 37, MAX_BLK = 4 };    // 37 rows: full lane groups and a partial one on every ISA
    int            failures = 0;
    const int      lanes    = ggml_polar_cpu_lanes();
    float *        tile     = exact(sizeof(float) * 64 * lanes);

    for (int ti = 0; ti < ggml_polar_type_count(); ++ti) {
        const struct ggml_polar_type_info * info = ggml_polar_get_type_info(ti);
        const struct ggml_polar_cpu_type *  t    = ggml_polar_cpu_type_get((enum ggml_polar_type) ti);
        const size_t                        ts   = info->type_size;
        if (!t) {
            printf("%s: no cpu type\n", info->name);
            ++failures;
            continue;
        }
        for (int trial = 0; trial < 3; ++trial) {
            const int nblk   = 1 + trial % MAX_BLK;         // head sizes 64, 128, 192
            const int n      = ROWS * nblk * 64;
            float *   values = exact(sizeof(float) * n);
            uint8_t * blocks = exact((size_t) n / 64 * ts);
            float *   ref    = exact(sizeof(float) * n);
            float *   got    = exact(sizeof(float) * n);
            float *   q      = exact(sizeof(float) * nblk * 64);
            if (trial < 2) { // encoded Gaussian rows, some scaled far up and down, plus special values
                for (int i = 0; i < n; ++i) {
                    const float scale = (i / 64) % 7 == 3 ? 3e4f : ((i / 64) % 7 == 5 ? 1e-7f : 1.0f);
                    values[i] = rng_normal() * scale;
                }
                values[5] = NAN;
                values[70] = INFINITY;
                values[140] = -INFINITY;
                info->from_float_ref(values, blocks, n);
            } else {         // arbitrary bytes: every code and radius pattern
                for (size_t i = 0; i < (size_t) n / 64 * ts; ++i) {
                    blocks[i] = (uint8_t) rng_u32();
                }
            }
            info->to_float(blocks, ref, n);

            // row-major decode
            ggml_polar_cpu_dequantize_row(t, blocks, got, n);
            for (int i = 0; i < n; ++i) {
                if (!same_value(got[i], ref[i])) {
                    printf("%s dequantize_row: value %d: %.9g != %.9g\n", info->name, i, got[i], ref[i]);
                    ++failures;
                    break;
                }
            }

            // tiles of whole rows (nblk blocks each), both layouts
            failures += check_tiles(t, info->name, blocks, (size_t) nblk * ts, ROWS, nblk, ref);

            // lanes: blocks of rows (stride = a row), first block of each row, transposed
            const size_t row_bytes = (size_t) nblk * ts;
            for (int r0 = 0; r0 < ROWS; r0 += lanes) {
                const int nl = ROWS - r0 < lanes ? ROWS - r0 : lanes;
                ggml_polar_cpu_decode_lanes(t, blocks + r0 * row_bytes + ts * (size_t) (nblk - 1), row_bytes, nl, tile);
                for (int r = 0; r < nl; ++r) {
                    for (int v = 0; v < 64; ++v) {
                        const float want = ref[(r0 + r) * nblk * 64 + (nblk - 1) * 64 + v];
                        if (!same_value(tile[v * lanes + r], want)) {
                            printf("%s decode_lanes: row %d value %d: %.9g != %.9g\n", info->name, r0 + r, v,
                                   tile[v * lanes + r], want);
                            ++failures;
                            r = nl;
                            break;
                        }
                    }
                }
            }

            // dot products of every row with one query
            for (int i = 0; i < nblk * 64; ++i) {
                q[i] = rng_normal();
            }
            float scores[ROWS];
            ggml_polar_cpu_dot_rows(t, blocks, row_bytes, ROWS, nblk, q, scores);
            for (int r = 0; r < ROWS; ++r) {
                float want;
                info->vec_dot(nblk * 64, &want, 0, blocks + r * row_bytes, 0, q, 0, 1);
                double mag = 0.0;
                for (int i = 0; i < nblk * 64; ++i) {
                    mag += fabs((double) ref[r * nblk * 64 + i] * q[i]);
                }
                const int ok = isfinite(want) ? fabs((double) scores[r] - want) <= ldexp(mag, -22)
                                              : !isfinite(scores[r]);
                if (!ok) {
                    printf("%s dot_rows: row %d: %.9g vs %.9g (bound %.3g)\n", info->name, r, scores[r], want,
                           ldexp(mag, -22));
                    ++failures;
                }
            }
            free(values); free(blocks); free(ref); free(got); free(q);
        }
    }
    free(tile);
    failures += check_attention();
    failures += check_partners();
    failures += check_encoder();
    printf("%s %d lanes: %d failures\n", ggml_polar_cpu_isa(), lanes, failures);
    return failures != 0;
}
