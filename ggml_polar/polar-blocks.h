// PolarQuant block layouts: one header for C, C++, Metal and CUDA.
//
// Every polar type stores 64 values per ggml block (PQ_BLOCK), so a head of 64 is one whole block.
// Blocks are byte arrays only: sizes are odd (31, 37, ...), so nothing may need alignment, and backends read the
// radius bytes one at a time. Codes are an LSB-first bit stream: level 1 (angles of value pairs) for the whole
// block first, then level 2, and so on; node j of level l sits at bit code_offset[l] + j * bits[l].
#pragma once

#include "polar-codebooks.h"

#if defined(__METAL_VERSION__)
#define PQ_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#elif defined(__cplusplus)
#include <cstdint>
#define PQ_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#include <stdint.h>
#define PQ_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

// Layout of a recursive-polar type (generated initializers: PQ38P_DESC, PQ27_DESC, ...).
typedef struct {
    int32_t levels;                       // a group is 2^levels values
    int32_t groups;                       // groups per block, each with its own radius
    int32_t radius_format;                // PQ_RADIUS_FP16 (2 bytes, little-endian) or PQ_RADIUS_LOG8 (1 byte)
    int32_t type_size;                    // bytes per block
    int32_t bits[PQ_MAX_LEVELS];          // bits per angle, level 1 first
    int32_t code_offset[PQ_MAX_LEVELS];   // bit offset of each level's codes in qs
    int32_t table_offset[PQ_MAX_LEVELS];  // each level's centroids in pq_cos / pq_sin
    int32_t bound_offset[PQ_MAX_LEVELS];  // each level's decision boundaries in pq_bound
} pq_tree_desc;

// Layout of a trellis type (generated initializers: PQT22_DESC, ...): 64/V steps of k bits, each step's L-bit window
// of the circular code stream a state whose V values are pq_trellis[table_offset + state * V ...].
typedef struct {
    int32_t L;                            // state bits (at most 8: a window lies inside two bytes)
    int32_t k;                            // bits per step
    int32_t V;                            // values per step
    int32_t type_size;                    // bytes per block
    int32_t table_offset;                 // the type's 2^L * V values in pq_trellis
} pq_trellis_desc;

// Block layouts, one per PQ_FOREACH_TYPE entry (block_pq46, ...), and each tree type's layout descriptor as a
// constant (pq46_desc, ...), defined here once for the C library, the CPU paths and the Metal kernels.
// A tree block: the radii (fp16, little-endian, or 8-bit log norms), then the code stream.
#define PQ_DECLARE_BLOCK_TREE(name, NAME)                                                        \
    typedef struct {                                                                             \
        uint8_t r[NAME##_RADIUS_BYTES];                                                          \
        uint8_t qs[NAME##_CODE_BYTES];                                                           \
    } block_##name;                                                                              \
    PQ_TABLE pq_tree_desc name##_desc = NAME##_DESC;
// The key mode: 8-bit log norm, then one sign bit per value (hyperspherical angles at one bit each).
#define PQ_DECLARE_BLOCK_KEY(name, NAME)                                                         \
    typedef struct {                                                                             \
        uint8_t r;                                                                               \
        uint8_t signs[PQ_BLOCK / 8];                                                             \
    } block_##name;
// A trellis block: the fp16 scale (little-endian, signed), then the code stream.
#define PQ_DECLARE_BLOCK_TRELLIS(name, NAME)                                                     \
    typedef struct {                                                                             \
        uint8_t d[2];                                                                            \
        uint8_t qs[NAME##_CODE_BYTES];                                                           \
    } block_##name;                                                                              \
    PQ_TABLE pq_trellis_desc name##_desc = NAME##_DESC;
#define PQ_DECLARE_BLOCK(name, NAME, kind, ggml_id)                                              \
    PQ_DECLARE_BLOCK_##kind(name, NAME)                                                          \
    PQ_STATIC_ASSERT(sizeof(block_##name) == NAME##_TYPE_SIZE, "wrong " #name " block size/padding");

PQ_FOREACH_TYPE(PQ_DECLARE_BLOCK)

// The paper's configuration: 4 groups of 16 values, bits 4/2/2/2, an fp16 radius per group.
PQ_STATIC_ASSERT(PQ38P_TYPE_SIZE * 8 == 62 * (PQ_BLOCK / 16), "pq38p must be exactly 62 bits per 16 values");
