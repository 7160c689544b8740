// PolarQuant kernels for ggml-metal: the KV-cache write (set_rows), the context-shift copies (cpy), the f16
// conversion flash attention uses for batches, and flash-attention vec instances for single-token decode.
//
// ggml-metal's embed step inlines only its own headers, so this file reaches the Metal compiler flattened: at
// configure time ggml_polar/metal/flatten.cmake replaces the polar includes below with the generated codebooks,
// the block layouts, the codec and the generated instance list. The codec is the C reference's own source
// (polar-codec.h): encode and decode are the same float32 operations in the same order as on the CPU.
#include "common.h"
#include "dequantize.h"
#include "fa_vec_common.metal"

#include "polar-codec.h"

// ---------------------------------------------------------------------------------------------------------------
// Device functions with ggml-metal's contracts: quantize one block; dequantize 16 values (il in [0, 4)) or 4
// values (il in [0, 16)) of a block at random; decode a whole block for the bulk conversions.
// ---------------------------------------------------------------------------------------------------------------

// 16 decoded values as the caller's 4x4 type (float or half: one rounding, in the conversion)
template <typename T4x4>
T4x4 pq_to_4x4(thread const float * v) {
    return (T4x4) float4x4(float4(v[0],  v[1],  v[2],  v[3]),  float4(v[4],  v[5],  v[6],  v[7]),
                           float4(v[8],  v[9],  v[10], v[11]), float4(v[12], v[13], v[14], v[15]));
}

// The four device functions of one PQ_FOREACH_TYPE entry, over its kind's block codec (polar-codec.h).
#define PQ_METAL_TYPE(name, NAME, kind, ggml_id)                                                                \
    void quantize_##name(device const float * src, device block_##name & dst) {                                 \
        PQ_QUANTIZE_BLOCK_##kind(name, src, (device uint8_t *) &dst);                                           \
    }                                                                                                           \
    void decode_block_##name(device const block_##name * x, thread float * y) {                                 \
        PQ_DECODE_BLOCK_##kind(name, (device const uint8_t *) x, y);                                            \
    }                                                                                                           \
    template <typename T4x4>                                                                                    \
    void dequantize_##name(device const block_##name * x, short il, thread T4x4 & reg) {                        \
        float v[16];                                                                                            \
        PQ_DECODE_SPAN_##kind(name, (device const uint8_t *) x, 16 * il, 4, v);                                 \
        reg = pq_to_4x4<T4x4>(v);                                                                               \
    }                                                                                                           \
    template <typename T4>                                                                                      \
    void dequantize_##name##_t4(device const block_##name * x, short il, thread T4 & reg) {                     \
        float v[4];                                                                                             \
        PQ_DECODE_SPAN_##kind(name, (device const uint8_t *) x, 4 * il, 2, v);                                  \
        reg = (T4) float4(v[0], v[1], v[2], v[3]);                                                              \
    }

PQ_FOREACH_TYPE(PQ_METAL_TYPE)

// ---------------------------------------------------------------------------------------------------------------
// The cache write: row i01 of src0 (f32) goes to row src1[i01] of dst, one thread per 64-value block.
// ---------------------------------------------------------------------------------------------------------------

template <typename TI, typename block_t, void (*quantize)(device const float *, device block_t &)>
kernel void kernel_set_rows_pq(
        constant ggml_metal_kargs_set_rows & args,
        device const void * src0,
        device const void * src1,
        device      float * dst,
        uint3 tgpig [[threadgroup_position_in_grid]],
        uint  tiitg [[thread_index_in_threadgroup]],
        uint3 tptg  [[threads_per_threadgroup]]) {
    const int32_t i03 = tgpig.z;
    const int32_t i02 = tgpig.y;
    const int32_t i01 = tgpig.x*tptg.y + tiitg/tptg.x;
    if (i01 >= args.ne01) {
        return;
    }

    const int32_t i12 = i03 % args.ne12;
    const int32_t i11 = i02 % args.ne11;
    const TI      i1  = *((device const TI *) ((device const char *) src1 + i01*args.nb10 + i11*args.nb11 + i12*args.nb12));

    device block_t     * dst_row = (device block_t     *) ((device char       *) dst  + i1*args.nb1   + i02*args.nb2  + i03*args.nb3);
    device const float * src_row = (device const float *) ((device const char *) src0 + i01*args.nb01 + i02*args.nb02 + i03*args.nb03);

    for (int ib = tiitg % tptg.x; ib < args.nk0; ib += tptg.x) {
        quantize(src_row + PQ_BLOCK*ib, dst_row[ib]);
    }
}

typedef decltype(kernel_set_rows_pq<int64_t, block_pq46, quantize_pq46>) set_rows_pq_t;

// ---------------------------------------------------------------------------------------------------------------
// Context shift: f32 -> polar (one thread per block) and polar -> f32 (one thread per 16 values), with the
// dispatch and arguments of ggml_metal_op_cpy.
// ---------------------------------------------------------------------------------------------------------------

// dst may have another shape than src: the byte offset in dst of src row (i01, i02, i03)'s first element, from its
// flat element index; dst's element size nb0 covers per_nb0 elements (a block for a polar dst, 1 for f32)
static inline int64_t pq_cpy_dst_offset(constant ggml_metal_kargs_cpy & args, int32_t i01, int32_t i02, int32_t i03,
                                        int64_t per_nb0) {
    const int64_t n  = ((int64_t) i03*args.ne02*args.ne01 + (int64_t) i02*args.ne01 + i01)*args.ne00;
    const int64_t i3 = n / ((int64_t) args.ne2*args.ne1*args.ne0);
    const int64_t i2 = (n - i3*args.ne2*args.ne1*args.ne0) / ((int64_t) args.ne1*args.ne0);
    const int64_t i1 = (n - i3*args.ne2*args.ne1*args.ne0 - i2*args.ne1*args.ne0) / args.ne0;
    const int64_t i0 = (n - i3*args.ne2*args.ne1*args.ne0 - i2*args.ne1*args.ne0 - i1*args.ne0) / per_nb0;
    return i3*args.nb3 + i2*args.nb2 + i1*args.nb1 + i0*args.nb0;
}

template <typename block_t, void (*quantize)(device const float *, device block_t &)>
kernel void kernel_cpy_f32_pq(
        constant ggml_metal_kargs_cpy & args,
        device const char * src0,
        device       char * dst,
        uint3   tgpig [[threadgroup_position_in_grid]],
        ushort3 tpitg [[thread_position_in_threadgroup]],
        ushort3 ntg   [[threads_per_threadgroup]]) {
    const int32_t i03 = tgpig[2];
    const int32_t i02 = tgpig[1];
    const int32_t i01 = ntg[1] == 1 ? tgpig[0] % args.ne01 : tgpig[0]*ntg[1] + tpitg.y;
    const int32_t iw0 = ntg[1] == 1 ? tgpig[0] / args.ne01 : 0;
    const int32_t ib  = iw0*ntg[0] + tpitg.x; // block of the row
    if (i01 >= args.ne01 || ib >= args.nk0) {
        return;
    }

    device block_t     * dst_row = (device block_t     *) (dst + pq_cpy_dst_offset(args, i01, i02, i03, PQ_BLOCK));
    device const float * src     = (device const float *) (src0 + i03*args.nb03 + i02*args.nb02 + i01*args.nb01 + (ib*PQ_BLOCK)*args.nb00);

    quantize(src, dst_row[ib]);
}

typedef decltype(kernel_cpy_f32_pq<block_pq46, quantize_pq46>) cpy_f32_pq_t;

template <typename block_t, void (*dequantize)(device const block_t *, short, thread float4x4 &)>
kernel void kernel_cpy_pq_f32(
        constant ggml_metal_kargs_cpy & args,
        device const char * src0,
        device       char * dst,
        uint3   tgpig [[threadgroup_position_in_grid]],
        ushort3 tpitg [[thread_position_in_threadgroup]],
        ushort3 ntg   [[threads_per_threadgroup]]) {
    const int32_t i03 = tgpig[2];
    const int32_t i02 = tgpig[1];
    const int32_t i01 = ntg[1] == 1 ? tgpig[0] % args.ne01 : tgpig[0]*ntg[1] + tpitg.y;
    const int32_t iw0 = ntg[1] == 1 ? tgpig[0] / args.ne01 : 0;
    const int32_t i16 = iw0*ntg[0] + tpitg.x; // 16-value chunk of the row
    if (i01 >= args.ne01 || i16 >= args.nk0) {
        return;
    }

    device const block_t * src_row = (device const block_t *) (src0 + i03*args.nb03 + i02*args.nb02 + i01*args.nb01);
    device float4x4      * dst_row = (device float4x4      *) (dst  + pq_cpy_dst_offset(args, i01, i02, i03, 1));

    float4x4 v;
    dequantize(src_row + i16/(PQ_BLOCK/16), i16 % (PQ_BLOCK/16), v);
    dst_row[i16] = v;
}

typedef decltype(kernel_cpy_pq_f32<block_pq46, dequantize_pq46>) cpy_pq_f32_t;

// ---------------------------------------------------------------------------------------------------------------
// Flash attention for batches reads K and V dequantized to contiguous f16 (ggml_metal_op_flash_attn_ext's
// use_kv_f16 route): one thread per block, a whole block decoded in one pass.
// ---------------------------------------------------------------------------------------------------------------

template <typename block_t, void (*decode_block)(device const block_t *, thread float *)>
kernel void kernel_flash_attn_ext_kv_pq_f16(
        constant ggml_metal_kargs_flash_attn_ext_kv_f16 & args,
        device const char * x,
        device       half * x_dst,
        uint gid [[thread_position_in_grid]]) {
    if (gid >= (uint) args.nblocks) {
        return;
    }

    const uint nb = args.ne0/PQ_BLOCK;
    const uint i0 = gid % nb;
    uint       ib = gid / nb;
    const uint i1 = ib % args.ne1;
    ib /= args.ne1;
    const uint i2 = ib % args.ne2;
    const uint i3 = ib / args.ne2;

    float v[PQ_BLOCK];
    decode_block((device const block_t *) (x + i0*args.nb0 + i1*args.nb1 + i2*args.nb2 + i3*args.nb3), v);

    device half4 * dst = (device half4 *) x_dst + (PQ_BLOCK/4)*gid;
    for (short i = 0; i < PQ_BLOCK/4; ++i) {
        dst[i] = half4(v[4*i + 0], v[4*i + 1], v[4*i + 2], v[4*i + 3]);
    }
}

typedef decltype(kernel_flash_attn_ext_kv_pq_f16<block_pq46, decode_block_pq46>) kv_pq_f16_t;

// The f16 side of an asymmetric pair (f16 K with polar V, or the reverse) on the same route: a contiguous copy,
// one thread per value, so both sides reach the attention kernel with the same layout.
kernel void kernel_flash_attn_ext_kv_f16_f16(
        constant ggml_metal_kargs_flash_attn_ext_kv_f16 & args,
        device const char * x,
        device       half * x_dst,
        uint gid [[thread_position_in_grid]]) {
    if (gid >= (uint) args.nblocks) {
        return;
    }

    const uint i0 = gid % args.ne0;
    uint       ib = gid / args.ne0;
    const uint i1 = ib % args.ne1;
    ib /= args.ne1;
    const uint i2 = ib % args.ne2;
    const uint i3 = ib / args.ne2;

    x_dst[gid] = *((device const half *) (x + i0*args.nb0 + i1*args.nb1 + i2*args.nb2 + i3*args.nb3));
}

// Exact rows (ggml_flash_attn_ext_set_exact_rows): an op that has them always takes the f16 route, and once K and V
// are converted, each used slot's f16 row is written over the row of its cell; one thread per value. Any cache type.
kernel void kernel_flash_attn_ext_kv_exact_f16(
        constant ggml_metal_kargs_flash_attn_ext_kv_exact & args,
        device const char * cells,
        device const char * rows,
        device       half * x_f16,
        uint gid [[thread_position_in_grid]]) {
    if (gid >= (uint) args.nvalues) {
        return;
    }

    const uint i0 = gid % args.ne0;
    uint       ir = gid / args.ne0;
    const uint j  = ir % args.n_slots;
    ir /= args.n_slots;
    const uint i2 = ir % args.ne2;
    const uint i3 = ir / args.ne2;

    const int32_t cell = ((device const int32_t *) (cells + i3*args.nb_cells1))[j];
    if (cell < 0 || cell >= args.n_cells) {
        return; // an unused slot, or a cell past this view of the cache
    }

    x_f16[((i3*args.ne2 + i2)*(uint) args.n_cells + (uint) cell)*args.ne0 + i0] =
        *((device const half *) (rows + i0*args.nb0 + j*args.nb1 + i2*args.nb2 + i3*args.nb3));
}

// ---------------------------------------------------------------------------------------------------------------
// Flash-attention vec kernels (single-token decode): upstream's template with the polar t4 decoders, for head sizes
// 64, 128 and 256 at the default threads-per-element; asymmetric pairs with f16 and q8_0 on the other side.
// ---------------------------------------------------------------------------------------------------------------

#define FA_TYPES \
           half4,  \
           half4,  \
           half4,  \
    float,         \
    float, float4, \
           float4

typedef decltype(kernel_flash_attn_ext_vec<FA_TYPES, half4, 1, dequantize_f16_t4, half4, 1, dequantize_f16_t4, 128, 128, 4>) flash_attn_ext_vec_t;

#include "polar-instances.metal"

#undef FA_TYPES
