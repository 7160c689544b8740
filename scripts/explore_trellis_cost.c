// Exploration: what a bitshift-trellis block codec (QTIP-style, tail-biting) would cost the CPU per 64-value block,
// to encode (the cache write) and to decode (the flash-attention read), against the shipped polar types of the same
// size: pq22, pq27 and pq32 (2.25, 2.75 and 3.25 bits per value). A cost model, not a codec: the table is a fixed
// stand-in (Gaussian quantiles permuted by a hash), so its quality is the Python prototype's business; the relative
// MSE printed here is a sanity figure only.
//
// The codec, for parameters (L, k, V): a state of L bits; 64/V steps; each step shifts in k new bits,
// next = ((s << k) | b) & (2^L - 1), and emits V values table[s*V .. s*V + V-1] (a float table of 2^L * V entries).
// Tail-biting: the state of step 0 follows the state of the last step, (s_0 >> k) == (s_last & (2^(L-k) - 1)).
// Block: the fp16 scale (2 bytes, little-endian: the least-squares scale <x,y>/<y,y> of the unit-scale decode y),
// then the N = (64/V) * k code bits, N/8 bytes. Configurations: (8,2,1) 18 bytes, (8,5,2) 22, (8,3,1) 26, and at
// 18 bytes (6,2,1) and (10,2,1), for what the number of states costs.
//
// Bit layout (LSB-first in the code bytes): step i's k new bits sit at bit q_i = N - (i+1)*k, so step i's state is
// the L-bit window that starts at bit q_i (its newest bits lowest, its older bits above them, where step i-1's window
// starts). One unaligned 32-bit load at byte q_i/8, a shift by q_i%8 and a mask give a state. The last step's window
// starts at bit 0; the first few steps' windows (q_i + L > N) run past the end into the stream's first bits: the
// decoders read those as two fields (lanes) or from a local copy with the first 4 bytes appended (scalar).
//
// Encoder: s = rms(x), u = x/s; Viterbi on squared error, twice: pass 1 from any state to any state; o = the low
// L-k bits of pass 1's last state; pass 2 from the states with s_0 >> k == o to those with s_last's low bits == o.
// (scripts/explore_trellis.py runs pass 1 on the block rotated by half, which chooses a better o for the same
// work: the same search over other values.)
// The predecessors of next state ns are (ns >> k) | (p << (L-k)) for p < 2^k: they depend on ns >> k alone, so the
// min over them can be taken once per ns >> k (2^(L-k) minima over 2^k costs: one pass over the costs) instead of
// once per state (2^L minima over 2^k costs). Three encoders, byte-identical (ties to the lowest p and the lowest
// end state): "plain" (scalar, the min per next state), "shared" (scalar, the min per ns >> k) and "SIMD" (shared,
// across the states: AVX2, or AVX-512 where the build has it; the AVX-512 path has only been compiled, with
// -march=skylake-avx512, not run).
// Decoders: a lane decoder with the shipped decoders' interface (one block per lane, val[v] = value v of every
// lane), in two forms: "gather" loads each step's 32-bit word from every lane (a gather per step), "words" gathers
// the block's words once (as the shipped decoders do) and cuts the states out of them; then a table gather and the
// lane's scale. And a scalar row decoder, which the checks compare against.
//   cc -O3 -march=native -ffp-contract=off -Iggml_polar -Iggml_polar/cpu scripts/explore_trellis_cost.c
//      ggml_polar/ggml-polar.c -lm -o build/explore_trellis_cost && build/explore_trellis_cost
#define _POSIX_C_SOURCE 199309L // clock_gettime under -std=c11

#include "polar-cpu-decode.c"
#include "polar-cpu-encode.c" // the shipped encoders, compiled here with the same flags (-ffp-contract=off)

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

// The vector operations the encoder needs beyond polar-simd-mappings.h.
#if defined(__AVX512F__)
static inline pq_vf vsub(pq_vf a, pq_vf b) { return _mm512_sub_ps(a, b); }
static inline pq_vf vperm(pq_vi idx, pq_vf t) { return _mm512_permutexvar_ps(idx, t); }
#elif defined(__AVX2__)
static inline pq_vf vsub(pq_vf a, pq_vf b) { return _mm256_sub_ps(a, b); }
static inline pq_vf vperm(pq_vi idx, pq_vf t) { return _mm256_permutevar8x32_ps(t, idx); }
#else
#error "this cost model needs AVX2 or AVX-512: build it with -march=native on x86-64"
#endif

#define MAX_STATES 1024 // L <= 10
#define MAX_STEPS  PQ_BLOCK

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec * 1e-9;
}

// ---------------------------------------------------------------------------------------------------------------
// Data: a deterministic Gaussian source and the stand-in table
// ---------------------------------------------------------------------------------------------------------------

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float uniform01(void) { // (0, 1)
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return ((float) ((rng_state * 0x2545f4914f6cdd1dull) >> 40) + 0.5f) / 16777216.0f;
}

static float gaussian(void) {
    return sqrtf(-2.0f * logf(uniform01())) * cosf(6.28318530718f * uniform01());
}

// The standard normal quantile (Abramowitz and Stegun 26.2.23, error below 4.5e-4: plenty for a stand-in).
static float normal_quantile(double p) {
    const double q   = p < 0.5 ? p : 1.0 - p;
    const double t   = sqrt(-2.0 * log(q));
    const double num = 2.515517 + t * (0.802853 + t * 0.010328);
    const double den = 1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308));
    const double z   = t - num / den;
    return (float) (p < 0.5 ? -z : z);
}

// A bijection of [0, 2^bits): odd multiplies and xor-shifts, each invertible modulo 2^bits.
static uint32_t permute_index(uint32_t i, int bits) {
    const uint32_t mask = (1u << bits) - 1;
    for (int r = 0; r < 3; ++r) {
        i = (i * 0x9e3779b1u) & mask;
        i ^= i >> (bits / 2 + 1);
    }
    return i;
}

// table[i] (the decoder's layout, state * V + v) = the Gaussian quantile of rank permute(i); planar[v * 2^L + s] is
// the same table by value position, for the encoder's loads across states.
static void make_table(int L, int V, float * table, float * planar) {
    const int n = (1 << L) * V, bits = L + (V == 2);
    for (int i = 0; i < n; ++i) {
        table[i] = normal_quantile((permute_index((uint32_t) i, bits) + 0.5) / n);
        planar[(i % V) * (1 << L) + i / V] = table[i];
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Encoder pieces shared by the three searches
// ---------------------------------------------------------------------------------------------------------------

// u = x / rms(x); returns rms(x).
static float unit_scale(const float * x, float * u) {
    float ss = 0.0f;
    for (int i = 0; i < PQ_BLOCK; ++i) {
        ss += x[i] * x[i];
    }
    const float rms = sqrtf(ss / PQ_BLOCK);
    const float inv = rms > 0.0f ? 1.0f / rms : 0.0f;
    for (int i = 0; i < PQ_BLOCK; ++i) {
        u[i] = x[i] * inv;
    }
    return rms;
}

// Squared error of state s at a step whose V unit-scale values are u: the same operations, in the same order, as
// emit_vec's lanes.
PQ_INLINE float emit(int V, const float * P, int S, const float * u, int s) {
    float d = u[0] - P[s];
    float e = d * d;
    for (int v = 1; v < V; ++v) {
        d = u[v] - P[v * S + s];
        e = e + d * d;
    }
    return e;
}

PQ_INLINE pq_vf emit_vec(int V, const float * P, int S, const float * u, int s0) {
    pq_vf d = vsub(pq_splat(u[0]), pq_load(P + s0));
    pq_vf e = pq_mul(d, d);
    for (int v = 1; v < V; ++v) {
        d = vsub(pq_splat(u[v]), pq_load(P + v * S + s0));
        e = pq_add(e, pq_mul(d, d));
    }
    return e;
}

// Step 0's costs are set; o >= 0 leaves only the start states s with s >> k == o (the rest cost +Inf).
static void restrict_start(float * cost, int S, int k, int o) {
    for (int s = 0; o >= 0 && s < S; ++s) {
        if (s >> k != o) {
            cost[s] = INFINITY;
        }
    }
}

// The cheapest end state (the lowest on ties); o >= 0: among those whose low L-k bits are o.
static int pick_end(const float * cost, int S, int nj, int o) {
    const int first = o < 0 ? 0 : o, stride = o < 0 ? 1 : nj;
    int       best  = first;
    for (int s = first + stride; s < S; s += stride) {
        if (cost[s] < cost[best]) {
            best = s;
        }
    }
    return best;
}

// ---------------------------------------------------------------------------------------------------------------
// The three Viterbi passes: o < 0 is pass 1 (free), o >= 0 pass 2 (tail-biting on o). Each writes the path's states.
// ---------------------------------------------------------------------------------------------------------------

// Plain: for every next state, the min over its 2^k predecessors; a backpointer per step and state.
PQ_INLINE void viterbi_plain(int L, int k, int V, const float * P, const float * u, int o, uint16_t * path) {
    const int S = 1 << L, nj = 1 << (L - k), np = 1 << k, steps = PQ_BLOCK / V;
    float     a[MAX_STATES], b[MAX_STATES];
    uint8_t   bp[MAX_STEPS * MAX_STATES];
    float *   cost = a, * next = b;
    for (int s = 0; s < S; ++s) {
        cost[s] = emit(V, P, S, u, s);
    }
    restrict_start(cost, S, k, o);
    for (int i = 1; i < steps; ++i) {
        for (int ns = 0; ns < S; ++ns) {
            const int j    = ns >> k;
            float     best = cost[j];
            int       arg  = 0;
            for (int p = 1; p < np; ++p) {
                const float c = cost[j | p << (L - k)];
                if (c < best) {
                    best = c, arg = p;
                }
            }
            next[ns]          = best + emit(V, P, S, u + i * V, ns);
            bp[i * S + ns]    = (uint8_t) arg;
        }
        float * t = cost;
        cost = next, next = t;
    }
    int s = pick_end(cost, S, nj, o);
    for (int i = steps - 1; i > 0; --i) {
        path[i] = (uint16_t) s;
        s       = s >> k | bp[i * S + s] << (L - k);
    }
    path[0] = (uint16_t) s;
}

// Shared: the min over the 2^k predecessors once per j = ns >> k, then every state adds its own error.
PQ_INLINE void viterbi_shared(int L, int k, int V, const float * P, const float * u, int o, uint16_t * path) {
    const int S = 1 << L, nj = 1 << (L - k), np = 1 << k, steps = PQ_BLOCK / V;
    float     cost[MAX_STATES], m[MAX_STATES];
    uint8_t   bp[MAX_STEPS * MAX_STATES];
    for (int s = 0; s < S; ++s) {
        cost[s] = emit(V, P, S, u, s);
    }
    restrict_start(cost, S, k, o);
    for (int i = 1; i < steps; ++i) {
        for (int j = 0; j < nj; ++j) {
            float best = cost[j];
            int   arg  = 0;
            for (int p = 1; p < np; ++p) {
                if (cost[j + p * nj] < best) {
                    best = cost[j + p * nj], arg = p;
                }
            }
            m[j]              = best;
            bp[i * nj + j]    = (uint8_t) arg;
        }
        for (int ns = 0; ns < S; ++ns) {
            cost[ns] = m[ns >> k] + emit(V, P, S, u + i * V, ns);
        }
    }
    int s = pick_end(cost, S, nj, o);
    for (int i = steps - 1; i > 0; --i) {
        path[i] = (uint16_t) s;
        s       = s >> k | bp[i * nj + (s >> k)] << (L - k);
    }
    path[0] = (uint16_t) s;
}

// The shared minima of jw consecutive j from j0 (the lowest p on ties: only a strictly smaller cost replaces the
// running minimum), their p stored to bp. jw is PQ_LANES, or 8 where nj == 8 (L - k == 3) would overrun AVX-512's
// 16 lanes: then one 256-bit vector, widened (AVX2 runs that path too, so it is checked here).
PQ_INLINE pq_vf reduce_lanes(const float * cost, int j0, int nj, int np, uint32_t * bp) {
    pq_vf best = pq_load(cost + j0);
    pq_vi arg  = pq_splat_i(0);
    for (int p = 1; p < np; ++p) {
        const pq_vf c  = pq_load(cost + j0 + p * nj);
        const pq_vm lt = pq_lt(c, best);
        best = pq_select(lt, c, best);
        arg  = pq_select_i(lt, pq_splat_i(p), arg);
    }
    pq_store_u32(bp + j0, arg);
    return best;
}

static inline pq_vf reduce8(const float * cost, int np, uint32_t * bp) {
    __m256  best = _mm256_loadu_ps(cost);
    __m256i arg  = _mm256_setzero_si256();
    for (int p = 1; p < np; ++p) {
        const __m256 c  = _mm256_loadu_ps(cost + 8 * p);
        const __m256 lt = _mm256_cmp_ps(c, best, _CMP_LT_OQ);
        best = _mm256_blendv_ps(best, c, lt);
        arg  = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(arg),
                                                    _mm256_castsi256_ps(_mm256_set1_epi32(p)), lt));
    }
    _mm256_storeu_si256((__m256i *) bp, arg);
#if defined(__AVX512F__)
    return _mm512_castps256_ps512(best); // lanes 8-15 undefined: the permutes below never pick them
#else
    return best;
#endif
}

// SIMD: the shared pass across the states. The jw minima of j0 .. j0+jw-1 stay in a register and feed their
// jw * 2^k next states, PQ_LANES at a time: lane r of group t (states (j0 << k) + t*PQ_LANES + r) takes the minimum
// of j0 + ((t*PQ_LANES + r) >> k), a permute. The costs are double-buffered: a step reads all of the last step's.
PQ_INLINE void viterbi_simd(int L, int k, int V, const float * P, const float * u, int o, uint16_t * path) {
    const int   S = 1 << L, nj = 1 << (L - k), np = 1 << k, steps = PQ_BLOCK / V;
    const int   jw = nj < PQ_LANES ? 8 : PQ_LANES;
    float       buf[2][MAX_STATES];
    uint32_t    bp[MAX_STEPS * MAX_STATES / 4]; // nj <= 256 minima per step
    const pq_vi iota = pq_lane_offsets(1, PQ_LANES);
    float *     cost = buf[0], * next = buf[1];
    for (int s0 = 0; s0 < S; s0 += PQ_LANES) {
        pq_store(cost + s0, emit_vec(V, P, S, u, s0));
    }
    restrict_start(cost, S, k, o);
    for (int i = 1; i < steps; ++i) {
        uint32_t * bpi = bp + i * nj;
        for (int j0 = 0; j0 < nj; j0 += jw) {
            const pq_vf m = nj == 8 ? reduce8(cost, np, bpi) : reduce_lanes(cost, j0, nj, np, bpi);
            for (int t = 0; t < (jw << k) / PQ_LANES; ++t) {
                const int   s0   = (j0 << k) + t * PQ_LANES;
                const pq_vf best = vperm(pq_srl(pq_add_i(iota, pq_splat_i(t * PQ_LANES)), k), m);
                pq_store(next + s0, pq_add(best, emit_vec(V, P, S, u + i * V, s0)));
            }
        }
        float * tmp = cost;
        cost = next, next = tmp;
    }
    int s = pick_end(cost, S, nj, o);
    for (int i = steps - 1; i > 0; --i) {
        path[i] = (uint16_t) s;
        s       = s >> k | (int) bp[i * nj + (s >> k)] << (L - k);
    }
    path[0] = (uint16_t) s;
}

// ---------------------------------------------------------------------------------------------------------------
// The block encoder: scale, two passes, then the least-squares scale and the bits
// ---------------------------------------------------------------------------------------------------------------

enum { ENC_PLAIN, ENC_SHARED, ENC_SIMD };

PQ_INLINE void viterbi(int kind, int L, int k, int V, const float * P, const float * u, int o, uint16_t * path) {
    if (kind == ENC_PLAIN) {
        viterbi_plain(L, k, V, P, u, o, path);
    } else if (kind == ENC_SHARED) {
        viterbi_shared(L, k, V, P, u, o, path);
    } else {
        viterbi_simd(L, k, V, P, u, o, path);
    }
}

// The fp16 least-squares scale of x on the path's unit-scale values, then step i's k new bits (the low k bits of
// its state) at bit N - (i+1)*k: the last step first, at bit 0.
PQ_INLINE void trellis_pack(int L, int k, int V, const float * P, const float * x, const uint16_t * path,
                            uint8_t * blk) {
    const int S = 1 << L, steps = PQ_BLOCK / V;
    float     xy = 0.0f, yy = 0.0f;
    for (int i = 0; i < steps; ++i) {
        for (int v = 0; v < V; ++v) {
            const float y = P[v * S + path[i]];
            xy += x[i * V + v] * y;
            yy += y * y;
        }
    }
    const float    scale = yy > 0.0f ? xy / yy : 0.0f;
    const uint16_t h     = (uint16_t) (pq_fp16_from_radius(fabsf(scale)) | (scale < 0.0f ? 0x8000 : 0));
    blk[0] = (uint8_t) h, blk[1] = (uint8_t) (h >> 8);
    uint8_t * out  = blk + 2;
    uint32_t  acc  = 0;
    int       fill = 0;
    for (int i = steps - 1; i >= 0; --i) {
        acc |= (uint32_t) (path[i] & ((1 << k) - 1)) << fill;
        for (fill += k; fill >= 8; fill -= 8, acc >>= 8) {
            *out++ = (uint8_t) acc;
        }
    }
}

PQ_INLINE void trellis_encode(int kind, int L, int k, int V, const float * P, const float * x, uint8_t * blk,
                              uint16_t * path) {
    const int steps = PQ_BLOCK / V;
    float     u[PQ_BLOCK];
    if (unit_scale(x, u) > 0.0f) {
        viterbi(kind, L, k, V, P, u, -1, path);
        viterbi(kind, L, k, V, P, u, path[steps - 1] & ((1 << (L - k)) - 1), path);
    } else {
        memset(path, 0, sizeof(uint16_t) * steps); // all-zero states are a tail-biting path
    }
    trellis_pack(L, k, V, P, x, path, blk);
}

// ---------------------------------------------------------------------------------------------------------------
// Decoders
// ---------------------------------------------------------------------------------------------------------------

// Scalar, one block: the code bytes and their first 4 again, so that every window is one unaligned load.
PQ_INLINE void trellis_decode_block(int L, int k, int V, const float * T, const uint8_t * blk, float * y) {
    const int N = PQ_BLOCK / V * k, nb = N / 8;
    uint8_t   buf[32 + 4];
    memcpy(buf, blk + 2, (size_t) nb);
    memcpy(buf + nb, blk + 2, 4);
    const float scale = pq_fp16_to_f32((uint16_t) (blk[0] | blk[1] << 8));
    for (int i = 0; i < PQ_BLOCK / V; ++i) {
        const int q = N - (i + 1) * k;
        uint32_t  w;
        memcpy(&w, buf + (q >> 3), 4); // little-endian host
        const uint32_t s = (w >> (q & 7)) & ((1u << L) - 1);
        for (int v = 0; v < V; ++v) {
            y[i * V + v] = T[s * V + v] * scale;
        }
    }
}

// The V values of every lane's state s, times the lane's scale (V is 1 or 2: table index s << (V - 1)).
PQ_INLINE void emit_lanes(int V, const float * T, pq_vi s, pq_vf scale, pq_vf * val) {
    const pq_vi at = V == 1 ? s : pq_sll(s, V - 1);
    for (int v = 0; v < V; ++v) {
        val[v] = pq_mul(pq_gather_f32(T + v, at), scale);
    }
}

// Lanes, "gather": each step's 32-bit word from every lane's block (the word at byte q/8, moved back so that it ends
// inside the block); a wrapping window is the stream's last word's top bits and its first word's bottom bits.
PQ_INLINE void trellis_lanes_gather(int L, int k, int V, const float * T, const uint8_t * x, pq_vi offsets,
                                    pq_vf * val) {
    const int       N = PQ_BLOCK / V * k, nb = N / 8;
    const uint8_t * code  = x + 2;
    const pq_vi     mask  = pq_splat_i((1 << L) - 1);
    const pq_vf     scale = pq_fp16_lanes(pq_and(pq_gather_u32(x, offsets), pq_splat_i(0xffff)));
    PQ_UNROLL
    for (int i = 0; i < PQ_BLOCK / V; ++i) {
        const int q = N - (i + 1) * k;
        pq_vi     s;
        if (q + L <= N) {
            const int at = pq_min(q >> 3, nb - 4);
            s = pq_srl(pq_gather_u32(code + at, offsets), q - 8 * at);
        } else {
            s = pq_or(pq_srl(pq_gather_u32(code + nb - 4, offsets), q - (N - 32)),
                      pq_sll(pq_gather_u32(code, offsets), N - q));
        }
        emit_lanes(V, T, pq_and(s, mask), scale, val + i * V);
    }
}

// Lanes, "words": the block's words gathered once (pq_words_load, as the shipped decoders), the states cut out of
// them with pq_field; a wrapping window is two fields.
PQ_INLINE void trellis_lanes_words(int L, int k, int V, const float * T, const uint8_t * x, pq_vi offsets,
                                   pq_vf * val) {
    const int N = PQ_BLOCK / V * k;
    pq_words  b;
    pq_words_load(&b, x, offsets, 2 + N / 8);
    const pq_vf scale = pq_fp16_lanes(pq_field(&b, 0, 16));
    PQ_UNROLL
    for (int i = 0; i < PQ_BLOCK / V; ++i) {
        const int q = N - (i + 1) * k;
        pq_vi     s;
        if (q + L <= N) {
            s = pq_field(&b, 16 + q, L);
        } else {
            s = pq_or(pq_field(&b, 16 + q, N - q), pq_sll(pq_field(&b, 16, q + L - N), N - q));
        }
        emit_lanes(V, T, s, scale, val + i * V);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The configurations, each with its functions and its table's layout as constants
// ---------------------------------------------------------------------------------------------------------------

typedef void (*block_enc_fn)(const float * x, uint8_t * blk, uint16_t * path);
typedef void (*row_fn)(const float * x, void * y, int64_t n);
typedef void (*block_dec_fn)(const uint8_t * blk, float * y);

#define TRELLIS_CONFIGS(X) X(8, 2, 1, PQ22) X(8, 5, 2, PQ27) X(8, 3, 1, PQ32) X(6, 2, 1, PQ22) X(10, 2, 1, PQ22)

#define TRELLIS_ENCODER(L, K, V, KIND, kind)                                                                     \
    static void enc_##kind##_##L##_##K##_##V(const float * x, uint8_t * blk, uint16_t * path) {                     \
        trellis_encode(KIND, L, K, V, planar_##L##_##K##_##V, x, blk, path);                                       \
    }                                                                                                              \
    static void rows_##kind##_##L##_##K##_##V(const float * x, void * y, int64_t n) {                               \
        uint16_t path[MAX_STEPS];                                                                                  \
        for (int64_t ib = 0; ib < n / PQ_BLOCK; ++ib) {                                                            \
            enc_##kind##_##L##_##K##_##V(x + ib * PQ_BLOCK, (uint8_t *) y + ib * (2 + (PQ_BLOCK / V) * K / 8), path); \
        }                                                                                                          \
    }
#define TRELLIS_FUNCS(L, K, V, SHIPPED)                                                                           \
    static float table_##L##_##K##_##V[(1 << L) * V], planar_##L##_##K##_##V[(1 << L) * V];                        \
    TRELLIS_ENCODER(L, K, V, ENC_PLAIN, plain)                                                                     \
    TRELLIS_ENCODER(L, K, V, ENC_SHARED, shared)                                                                   \
    TRELLIS_ENCODER(L, K, V, ENC_SIMD, simd)                                                                       \
    static void dec_##L##_##K##_##V(const uint8_t * blk, float * y) {                                              \
        trellis_decode_block(L, K, V, table_##L##_##K##_##V, blk, y);                                              \
    }                                                                                                              \
    static void gather_##L##_##K##_##V(const uint8_t * x, pq_vi offsets, pq_vf * val) {                            \
        trellis_lanes_gather(L, K, V, table_##L##_##K##_##V, x, offsets, val);                                     \
    }                                                                                                              \
    static void words_##L##_##K##_##V(const uint8_t * x, pq_vi offsets, pq_vf * val) {                             \
        trellis_lanes_words(L, K, V, table_##L##_##K##_##V, x, offsets, val);                                      \
    }
TRELLIS_CONFIGS(TRELLIS_FUNCS)

struct config {
    int                  L, k, V;
    enum ggml_polar_type shipped;
    float *              table, * planar;
    block_enc_fn         enc[3];
    row_fn               rows[3];
    block_dec_fn         dec;
    pq_lanes_fn          gather, words;
};

#define TRELLIS_ENTRY(L, K, V, SHIPPED)                                                                           \
    { L, K, V, GGML_POLAR_TYPE_##SHIPPED, table_##L##_##K##_##V, planar_##L##_##K##_##V,                            \
      { enc_plain_##L##_##K##_##V, enc_shared_##L##_##K##_##V, enc_simd_##L##_##K##_##V },                         \
      { rows_plain_##L##_##K##_##V, rows_shared_##L##_##K##_##V, rows_simd_##L##_##K##_##V },                      \
      dec_##L##_##K##_##V, gather_##L##_##K##_##V, words_##L##_##K##_##V },
static const struct config configs[] = { TRELLIS_CONFIGS(TRELLIS_ENTRY) };
enum { NCONFIG = sizeof(configs) / sizeof(configs[0]) };

static int config_size(const struct config * c) { return 2 + (PQ_BLOCK / c->V) * c->k / 8; }

static const row_fn shipped_rows[GGML_POLAR_TYPE_COUNT] = {
    [GGML_POLAR_TYPE_PQ22] = ggml_polar_cpu_quantize_row_pq22,
    [GGML_POLAR_TYPE_PQ27] = ggml_polar_cpu_quantize_row_pq27,
    [GGML_POLAR_TYPE_PQ32] = ggml_polar_cpu_quantize_row_pq32,
};

// ---------------------------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------------------------

// The lane decoders on PQ_LANES consecutive blocks (each lane its own block) against the scalar decoder.
static int check_lanes(const struct config * c, const uint8_t * blocks, int r0) {
    const int   size    = config_size(c);
    const pq_vi offsets = pq_lane_offsets((size_t) size, PQ_LANES);
    pq_vf       vg[PQ_BLOCK], vw[PQ_BLOCK];
    c->gather(blocks + (size_t) r0 * size, offsets, vg);
    c->words(blocks + (size_t) r0 * size, offsets, vw);
    for (int r = 0; r < PQ_LANES; ++r) {
        float y[PQ_BLOCK];
        c->dec(blocks + (size_t) (r0 + r) * size, y);
        for (int i = 0; i < PQ_BLOCK; ++i) {
            if (pq_lane(vg[i], r) != y[i] || pq_lane(vw[i], r) != y[i]) {
                fprintf(stderr, "L=%d k=%d V=%d block %d value %d: lanes %g %g, scalar %g\n", c->L, c->k, c->V,
                        r0 + r, i, (double) pq_lane(vg[i], r), (double) pq_lane(vw[i], r), (double) y[i]);
                return 0;
            }
        }
    }
    return 1;
}

// On nblk Gaussian blocks: the three encoders' bytes agree; the path is tail-biting; the scalar decoder gives exactly
// table[state] * scale along the path, and the lane decoders what the scalar one gives. Returns the relative MSE of
// the decode, or -1 on a failed check.
static double check_config(const struct config * c, const float * x, int nblk) {
    const int size = config_size(c), steps = PQ_BLOCK / c->V, lo = (1 << (c->L - c->k)) - 1;
    uint8_t * blocks = malloc((size_t) size * nblk);
    double    err = 0.0, ref = 0.0;
    int       ok  = 1;
    for (int ib = 0; ib < nblk && ok; ++ib) {
        const float * xb = x + (size_t) ib * PQ_BLOCK;
        uint8_t       blk[3][32];
        uint16_t      path[3][MAX_STEPS];
        for (int e = 0; e < 3; ++e) {
            c->enc[e](xb, blk[e], path[e]);
        }
        memcpy(blocks + (size_t) ib * size, blk[2], (size_t) size);
        if (memcmp(blk[0], blk[1], (size_t) size) || memcmp(blk[0], blk[2], (size_t) size)) {
            fprintf(stderr, "L=%d k=%d V=%d block %d: the encoders' bytes differ\n", c->L, c->k, c->V, ib);
            ok = 0;
        }
        if (path[2][0] >> c->k != (path[2][steps - 1] & lo)) {
            fprintf(stderr, "L=%d k=%d V=%d block %d: the path is not tail-biting\n", c->L, c->k, c->V, ib);
            ok = 0;
        }
        float y[PQ_BLOCK];
        c->dec(blk[2], y);
        const float scale = pq_fp16_to_f32((uint16_t) (blk[2][0] | blk[2][1] << 8));
        for (int i = 0; i < PQ_BLOCK && ok; ++i) {
            const float want = c->table[path[2][i / c->V] * c->V + i % c->V] * scale;
            if (y[i] != want) {
                fprintf(stderr, "L=%d k=%d V=%d block %d value %d: decoded %g, the path gives %g\n", c->L, c->k, c->V,
                        ib, i, (double) y[i], (double) want);
                ok = 0;
            }
            err += (double) (xb[i] - y[i]) * (xb[i] - y[i]);
            ref += (double) xb[i] * xb[i];
        }
    }
    for (int r0 = 0; r0 + PQ_LANES <= nblk && ok; r0 += PQ_LANES) {
        ok = check_lanes(c, blocks, r0);
    }
    free(blocks);
    return ok ? err / ref : -1.0;
}

// The shipped type's relative MSE on the same blocks (its reference encoder and decoder).
static double shipped_rel_mse(enum ggml_polar_type t, const float * x, int nblk) {
    const struct ggml_polar_type_info * info = ggml_polar_get_type_info(t);
    uint8_t * q = malloc(info->type_size * (size_t) nblk);
    float *   y = malloc(sizeof(float) * PQ_BLOCK * (size_t) nblk);
    info->from_float_ref(x, q, (int64_t) nblk * PQ_BLOCK);
    info->to_float(q, y, (int64_t) nblk * PQ_BLOCK);
    double err = 0.0, ref = 0.0;
    for (int i = 0; i < nblk * PQ_BLOCK; ++i) {
        err += (double) (x[i] - y[i]) * (x[i] - y[i]);
        ref += (double) x[i] * x[i];
    }
    free(q);
    free(y);
    return err / ref;
}

// ---------------------------------------------------------------------------------------------------------------
// Timing: each measurement repeats its loop until it has run MIN_SECONDS
// ---------------------------------------------------------------------------------------------------------------

#define MIN_SECONDS 0.1
#define ROW_BLOCKS  3 // a cache row of SmolLM2's K or V: 3 KV heads of 64

// Seconds per block for a row encoder over nblk blocks, ROW_BLOCKS at a time (the cache write's rows).
static double time_encode(row_fn f, const float * x, uint8_t * y, int nblk, int size) {
    int          reps = 0;
    const double t0   = now();
    double       dt;
    do {
        for (int r = 0; r + ROW_BLOCKS <= nblk; r += ROW_BLOCKS) {
            f(x + (size_t) r * PQ_BLOCK, y + (size_t) r * size, ROW_BLOCKS * PQ_BLOCK);
        }
        ++reps;
    } while ((dt = now() - t0) < MIN_SECONDS);
    return dt / ((double) reps * nblk);
}

// Seconds per block for a lane decoder over nblk blocks of `size` bytes, rows one block apart, the values summed so
// that nothing is optimized away (as explore_adaptive_decode.c times them).
static double time_lanes(pq_lanes_fn lanes, const uint8_t * blocks, int nblk, int size, float * sink) {
    const pq_vi offsets = pq_lane_offsets((size_t) size, PQ_LANES);
    pq_vf       acc     = pq_splat(0.0f);
    int         reps    = 0;
    const double t0     = now();
    double       dt;
    do {
        for (int r0 = 0; r0 + PQ_LANES <= nblk; r0 += PQ_LANES) {
            pq_vf val[PQ_BLOCK];
            lanes(blocks + (size_t) r0 * size, offsets, val);
            for (int v = 0; v < PQ_BLOCK; ++v) {
                acc = pq_add(acc, val[v]);
            }
        }
        ++reps;
    } while ((dt = now() - t0) < MIN_SECONDS);
    *sink += pq_lane(acc, 0);
    return dt / ((double) reps * nblk);
}

// Seconds per block for the scalar row decoder.
static double time_rows_decode(block_dec_fn dec, const uint8_t * blocks, int nblk, int size, float * sink) {
    float        y[PQ_BLOCK];
    int          reps = 0;
    const double t0   = now();
    double       dt;
    do {
        for (int r = 0; r < nblk; ++r) {
            dec(blocks + (size_t) r * size, y);
            *sink += y[r & (PQ_BLOCK - 1)];
        }
        ++reps;
    } while ((dt = now() - t0) < MIN_SECONDS);
    return dt / ((double) reps * nblk);
}

// ---------------------------------------------------------------------------------------------------------------

enum { NROUND = 3, ENC_BLOCKS = 3 * 256, DEC_BLOCKS = 4096 * 3, CHECK_BLOCKS = 3000, TOKEN_BLOCKS = 180 };

static const char * type_name(enum ggml_polar_type t) { return ggml_polar_get_type_info(t)->name; }

typedef double timings[NROUND][NCONFIG][4];

// The checks' table; returns whether every check held.
static int run_checks(const float * x) {
    printf("Checks on %d blocks: relative MSE sum (x-y)^2 / sum x^2 (stand-in table)\n"
           "| config | bytes | plain == shared == SIMD bytes, decodes == path | trellis rel. MSE | shipped "
           "| rel. MSE |\n"
           "|---|---:|---|---:|---|---:|\n", CHECK_BLOCKS);
    int ok = 1;
    for (int c = 0; c < NCONFIG; ++c) {
        const struct config * cf  = &configs[c];
        const double          mse = check_config(cf, x, CHECK_BLOCKS);
        ok &= mse >= 0.0;
        printf("| L=%d k=%d V=%d | %d | %s | %.4f | %s | %.4f |\n", cf->L, cf->k, cf->V, config_size(cf),
               mse >= 0.0 ? "yes" : "NO", mse, type_name(cf->shipped), shipped_rel_mse(cf->shipped, x, CHECK_BLOCKS));
    }
    return ok;
}

// Every round times, per config: the encoders (shipped, plain, shared, SIMD) and the decoders (shipped lanes,
// trellis gather lanes, words lanes, scalar rows), on the same Gaussian rows.
static void measure(const float * x, timings enc, timings dec, float * sink) {
    uint8_t * enc_out = malloc(64 * (size_t) DEC_BLOCKS);
    uint8_t * trellis_blocks[NCONFIG], * shipped_blocks[NCONFIG];
    for (int c = 0; c < NCONFIG; ++c) {
        const struct config * cf = &configs[c];
        trellis_blocks[c] = malloc((size_t) config_size(cf) * DEC_BLOCKS);
        shipped_blocks[c] = malloc(ggml_polar_get_type_info(cf->shipped)->type_size * (size_t) DEC_BLOCKS);
        cf->rows[ENC_SIMD](x, trellis_blocks[c], (int64_t) DEC_BLOCKS * PQ_BLOCK);
        shipped_rows[cf->shipped](x, shipped_blocks[c], (int64_t) DEC_BLOCKS * PQ_BLOCK);
    }
    for (int r = 0; r < NROUND; ++r) {
        for (int c = 0; c < NCONFIG; ++c) {
            const struct config * cf   = &configs[c];
            const int             size = config_size(cf);
            const int             ts   = (int) ggml_polar_get_type_info(cf->shipped)->type_size;
            enc[r][c][0] = time_encode(shipped_rows[cf->shipped], x, enc_out, ENC_BLOCKS, ts);
            for (int e = 0; e < 3; ++e) {
                enc[r][c][1 + e] = time_encode(cf->rows[e], x, enc_out, ENC_BLOCKS, size);
            }
            dec[r][c][0] = time_lanes(ggml_polar_cpu_type_get(cf->shipped)->lanes, shipped_blocks[c], DEC_BLOCKS, ts,
                                      sink);
            dec[r][c][1] = time_lanes(cf->gather, trellis_blocks[c], DEC_BLOCKS, size, sink);
            dec[r][c][2] = time_lanes(cf->words, trellis_blocks[c], DEC_BLOCKS, size, sink);
            dec[r][c][3] = time_rows_decode(cf->dec, trellis_blocks[c], DEC_BLOCKS, size, sink);
        }
    }
    for (int c = 0; c < NCONFIG; ++c) {
        free(trellis_blocks[c]);
        free(shipped_blocks[c]);
    }
    free(enc_out);
}

static void print_timings(timings enc, timings dec) {
    printf("\nEncode, ns per 64-value block (rows of %d blocks; ratio: x the shipped encoder of the same size)\n"
           "| round | config | shipped | ns | trellis plain (scalar) | x | shared (scalar) | x | SIMD | x |\n"
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n", ROW_BLOCKS);
    for (int r = 0; r < NROUND; ++r) {
        for (int c = 0; c < NCONFIG; ++c) {
            const double * t = enc[r][c];
            printf("| %d | L=%d k=%d V=%d | %s | %.0f | %.0f | %.1fx | %.0f | %.1fx | %.0f | %.1fx |\n", r + 1,
                   configs[c].L, configs[c].k, configs[c].V, type_name(configs[c].shipped), t[0] * 1e9, t[1] * 1e9,
                   t[1] / t[0], t[2] * 1e9, t[2] / t[0], t[3] * 1e9, t[3] / t[0]);
        }
    }
    printf("\nDecode, ns per block (lane decoders: %d blocks at once, rows one block apart; x the shipped ->lanes)\n"
           "| round | config | shipped | lanes ns | trellis lanes, gather per step | x | words once | x |"
           " scalar row decoder |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n", PQ_LANES);
    for (int r = 0; r < NROUND; ++r) {
        for (int c = 0; c < NCONFIG; ++c) {
            const double * t = dec[r][c];
            printf("| %d | L=%d k=%d V=%d | %s | %.2f | %.2f | %.2fx | %.2f | %.2fx | %.2f |\n", r + 1, configs[c].L,
                   configs[c].k, configs[c].V, type_name(configs[c].shipped), t[0] * 1e9, t[1] * 1e9, t[1] / t[0],
                   t[2] * 1e9, t[2] / t[0], t[3] * 1e9);
        }
    }
}

// The cache write of one token: TOKEN_BLOCKS blocks at the best round's ns per block.
static void print_per_token(timings enc) {
    printf("\nCache write per token (%d blocks: SmolLM2's 30 layers x 3 KV heads, K and V), best of %d rounds, us\n"
           "| config | shipped | shipped us | trellis SIMD us | trellis shared (scalar) us |\n"
           "|---|---|---:|---:|---:|\n",
           TOKEN_BLOCKS, NROUND);
    for (int c = 0; c < NCONFIG; ++c) {
        double best[4] = { 1e9, 1e9, 1e9, 1e9 };
        for (int r = 0; r < NROUND; ++r) {
            for (int e = 0; e < 4; ++e) {
                best[e] = fmin(best[e], enc[r][c][e]);
            }
        }
        printf("| L=%d k=%d V=%d | %s | %.1f | %.1f | %.1f |\n", configs[c].L, configs[c].k, configs[c].V,
               type_name(configs[c].shipped), best[0] * TOKEN_BLOCKS * 1e6, best[3] * TOKEN_BLOCKS * 1e6,
               best[2] * TOKEN_BLOCKS * 1e6);
    }
}

int main(void) {
    for (int c = 0; c < NCONFIG; ++c) {
        make_table(configs[c].L, configs[c].V, configs[c].table, configs[c].planar);
    }
    float * x = malloc(sizeof(float) * PQ_BLOCK * DEC_BLOCKS);
    for (int i = 0; i < PQ_BLOCK * DEC_BLOCKS; ++i) {
        x[i] = gaussian();
    }
    printf("%s, %d lanes; Gaussian blocks\n\n", PQ_ISA, PQ_LANES);
    const int ok = run_checks(x);
    timings   enc, dec;
    float     sink = 0.0f;
    measure(x, enc, dec, &sink);
    print_timings(enc, dec);
    print_per_token(enc);
    fprintf(stderr, "(checksum %g)\n", (double) sink);
    free(x);
    return ok ? 0 : 1;
}
