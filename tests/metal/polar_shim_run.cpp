// Runs the Metal polar device functions and kernels on the CPU, through the metal_stdlib stand-in, so that tests can
// compare them with the C library. Built by tests/test_metal.py from the embedded polar.metal (the exact text a Mac
// compiles, instance list removed: the kernels this program runs are instantiated here).
//
//   polar_shim_run <type> <values.f32> <blocks.bin> <query.f32> <out_dir>
//   polar_shim_run exact <out_dir>      (the exact-rows kernel on a fixed case, run_exact_rows)
// values: n floats (n a multiple of 64), quantized block by block; blocks: arbitrary block bytes to decode;
// query: 64 floats, dotted with every block as the flash-attention vec kernel does. Writes into out_dir:
//   quantize.bin    quantize_<type> on each 64 values
//   set_rows.bin    kernel_set_rows_pq writing row r to row (rows - 1 - r), one block per row
//   cpy_f32.bin     kernel_cpy_f32_pq on the same rows
//   deq4x4.f32      dequantize_<type><float4x4>, il = 0..3, of every block in blocks.bin
//   deq_t4.f32      dequantize_<type>_t4<float4>, il = 0..15
//   deq_t4.f16      dequantize_<type>_t4<half4>: what the FA vec kernel reads
//   kv_f16.f16      kernel_flash_attn_ext_kv_pq_f16 over every block
//   cpy_pq.f32      kernel_cpy_pq_f32 over every block
//   dot.f32         per block: sum over the 16 chunks of dot(float4(half4 k), float4(half4 q)), in chunk order
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

// the stand-in first, after the standard headers (it defines the address-space keywords away)
#include "metal_stdlib"
#include POLAR_EMBEDDED_SOURCE

template <typename T>
static std::vector<T> read_file(const std::string & path) {
    std::vector<T> out;
    FILE * f = std::fopen(path.c_str(), "rb");
    if (!f) {
        std::fprintf(stderr, "cannot open %s\n", path.c_str());
        std::exit(2);
    }
    T v;
    while (std::fread(&v, sizeof(T), 1, f) == 1) {
        out.push_back(v);
    }
    std::fclose(f);
    return out;
}

template <typename T>
static void write_file(const std::string & path, const std::vector<T> & data) {
    FILE * f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(data.data(), sizeof(T), data.size(), f) != data.size()) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        std::exit(2);
    }
    std::fclose(f);
}

template <typename block_t,
          void (*quantize)(device const float *, device block_t &),
          void (*deq4x4)(device const block_t *, short, thread float4x4 &),
          void (*deq_t4)(device const block_t *, short, thread float4 &),
          void (*deq_t4_half)(device const block_t *, short, thread half4 &),
          void (*decode_block)(device const block_t *, thread float *)>
static int run(const std::string & values_path, const std::string & blocks_path, const std::string & query_path,
               const std::string & out) {
    const std::vector<float> values = read_file<float>(values_path);
    const std::vector<char>  bytes  = read_file<char>(blocks_path);
    const std::vector<float> query  = read_file<float>(query_path);
    if (values.size() % PQ_BLOCK != 0 || bytes.size() % sizeof(block_t) != 0 || query.size() != PQ_BLOCK) {
        std::fprintf(stderr, "bad input sizes\n");
        return 2;
    }
    const int rows = (int) (values.size() / PQ_BLOCK);
    const int nblk = (int) (bytes.size() / sizeof(block_t));
    const std::vector<block_t> blocks((const block_t *) bytes.data(), (const block_t *) bytes.data() + nblk);

    // quantize, directly
    std::vector<block_t> q(rows);
    for (int r = 0; r < rows; ++r) {
        quantize(values.data() + PQ_BLOCK*r, q[r]);
    }
    write_file(out + "/quantize.bin", q);

    // the cache-write kernel: one block per row, row r -> row rows - 1 - r, every thread of every threadgroup
    {
        std::vector<block_t> dst(rows);
        std::vector<int64_t> idx(rows);
        for (int r = 0; r < rows; ++r) {
            idx[r] = rows - 1 - r;
        }
        ggml_metal_kargs_set_rows args = {};
        args.nk0  = 1;
        args.ne01 = rows;
        args.nb01 = PQ_BLOCK*sizeof(float);
        args.nb02 = args.nb03 = rows*PQ_BLOCK*sizeof(float);
        args.ne11 = 1;
        args.ne12 = 1;
        args.nb10 = sizeof(int64_t);
        args.nb11 = args.nb12 = rows*sizeof(int64_t);
        args.nb1  = sizeof(block_t);
        args.nb2  = args.nb3 = rows*sizeof(block_t);
        const uint nrptg = 4; // rows per threadgroup, as ggml_metal_op_set_rows picks for short rows
        for (uint tg = 0; tg < (rows + nrptg - 1)/nrptg; ++tg) {
            for (uint t = 0; t < nrptg; ++t) {
                kernel_set_rows_pq<int64_t, block_t, quantize>(args, values.data(), idx.data(), (float *) dst.data(),
                                                               uint3(tg, 0, 0), t, uint3(1, nrptg, 1));
            }
        }
        write_file(out + "/set_rows.bin", dst);
    }

    // f32 -> polar copy (context shift), one block per row
    {
        std::vector<block_t> dst(rows);
        ggml_metal_kargs_cpy args = {};
        args.nk0  = 1;
        args.ne00 = PQ_BLOCK; args.ne01 = rows; args.ne02 = 1; args.ne03 = 1;
        args.nb00 = sizeof(float); args.nb01 = PQ_BLOCK*sizeof(float);
        args.nb02 = args.nb03 = rows*PQ_BLOCK*sizeof(float);
        args.ne0  = PQ_BLOCK; args.ne1 = rows; args.ne2 = 1; args.ne3 = 1;
        args.nb0  = sizeof(block_t); args.nb1 = sizeof(block_t);
        args.nb2  = args.nb3 = rows*sizeof(block_t);
        for (int r = 0; r < rows; ++r) {
            kernel_cpy_f32_pq<block_t, quantize>(args, (const char *) values.data(), (char *) dst.data(),
                                                 uint3(r, 0, 0), ushort3(0, 0, 0), ushort3(1, 1, 1));
        }
        write_file(out + "/cpy_f32.bin", dst);
    }

    std::vector<float> d4x4, dt4, dt4h, cpy(nblk*PQ_BLOCK), dots;
    std::vector<half>  kv(nblk*PQ_BLOCK);
    half4 q4[PQ_BLOCK/4];
    for (int i = 0; i < PQ_BLOCK/4; ++i) {
        q4[i] = half4(query[4*i], query[4*i + 1], query[4*i + 2], query[4*i + 3]);
    }
    for (int b = 0; b < nblk; ++b) {
        for (short il = 0; il < PQ_BLOCK/16; ++il) {
            float4x4 m;
            deq4x4(&blocks[b], il, m);
            for (int i = 0; i < 16; ++i) {
                d4x4.push_back(m[i/4][i%4]);
            }
        }
        float dot_acc = 0.0f;
        for (short il = 0; il < PQ_BLOCK/4; ++il) {
            float4 v;
            half4  h;
            deq_t4(&blocks[b], il, v);
            deq_t4_half(&blocks[b], il, h);
            for (int i = 0; i < 4; ++i) {
                dt4.push_back(v[i]);
                dt4h.push_back((float) h[i]);
            }
            dot_acc += dot((float4) h, (float4) q4[il]);
        }
        dots.push_back(dot_acc);
    }

    // whole-cache f16 conversion: a [64, nblk] tensor, one thread per block
    {
        ggml_metal_kargs_flash_attn_ext_kv_f16 args = {};
        args.ne0 = PQ_BLOCK; args.ne1 = nblk; args.ne2 = 1; args.ne3 = 1;
        args.nb0 = sizeof(block_t); args.nb1 = sizeof(block_t);
        args.nb2 = args.nb3 = nblk*sizeof(block_t);
        args.nblocks = nblk;
        for (uint gid = 0; gid < (uint) nblk + 3; ++gid) { // past the end: the kernel must return
            kernel_flash_attn_ext_kv_pq_f16<block_t, decode_block>(args, (const char *) blocks.data(), kv.data(), gid);
        }
    }

    // polar -> f32 copy: one thread per 16 values
    {
        ggml_metal_kargs_cpy args = {};
        args.nk0  = PQ_BLOCK/16;
        args.ne00 = PQ_BLOCK; args.ne01 = nblk; args.ne02 = 1; args.ne03 = 1;
        args.nb00 = sizeof(block_t); args.nb01 = sizeof(block_t);
        args.nb02 = args.nb03 = nblk*sizeof(block_t);
        args.ne0  = PQ_BLOCK; args.ne1 = nblk; args.ne2 = 1; args.ne3 = 1;
        args.nb0  = sizeof(float); args.nb1 = PQ_BLOCK*sizeof(float);
        args.nb2  = args.nb3 = nblk*PQ_BLOCK*sizeof(float);
        for (int r = 0; r < nblk; ++r) {
            for (ushort t = 0; t < PQ_BLOCK/16; ++t) {
                kernel_cpy_pq_f32<block_t, deq4x4>(args, (const char *) blocks.data(), (char *) cpy.data(),
                                                    uint3(r, 0, 0), ushort3(t, 0, 0), ushort3(PQ_BLOCK/16, 1, 1));
            }
        }
    }

    write_file(out + "/deq4x4.f32", d4x4);
    write_file(out + "/deq_t4.f32", dt4);
    write_file(out + "/deq_t4.f16", std::vector<half>(dt4h.begin(), dt4h.end()));
    write_file(out + "/kv_f16.f16", kv);
    write_file(out + "/cpy_pq.f32", cpy);
    write_file(out + "/dot.f32", dots);
    return 0;
}

// kernel_flash_attn_ext_kv_exact_f16 on a fixed case: an f16 copy of [64, 8 cells, 2 heads, 2 streams] holding
// value i at index i, exact rows -(1 + index) laid out as llama.cpp views them ([64, 3 slots, 2 heads, 2 streams],
// heads inside a slot's row), cells {7, -1, 8} and {0, 2, 1} (-1: unused; 8: past the copy). Writes exact.f16.
static int run_exact_rows(const std::string & out) {
    const int ne0 = PQ_BLOCK, n_cells = 8, ne2 = 2, ne3 = 2, n_slots = 3;
    std::vector<half> copy(ne0*n_cells*ne2*ne3), rows(ne0*n_slots*ne2*ne3);
    for (size_t i = 0; i < copy.size(); ++i) {
        copy[i] = half((float) i);
    }
    for (size_t i = 0; i < rows.size(); ++i) {
        rows[i] = half(-1.0f - (float) i);
    }
    const int32_t cells[2][n_slots] = {{7, -1, 8}, {0, 2, 1}};

    ggml_metal_kargs_flash_attn_ext_kv_exact args = {};
    args.ne0 = ne0; args.n_slots = n_slots; args.ne2 = ne2; args.ne3 = ne3;
    args.nb0 = sizeof(half); args.nb2 = ne0*sizeof(half); args.nb1 = ne2*args.nb2; args.nb3 = n_slots*args.nb1;
    args.nb_cells1 = sizeof(cells[0]);
    args.n_cells = n_cells;
    args.nvalues = (int32_t) rows.size();
    for (uint gid = 0; gid < rows.size() + 5; ++gid) { // past the end: the kernel must return
        kernel_flash_attn_ext_kv_exact_f16(args, (const char *) cells, (const char *) rows.data(), copy.data(), gid);
    }
    write_file(out + "/exact.f16", copy);
    return 0;
}

// The command line names the type (a test harness boundary); one branch per PQ_FOREACH_TYPE entry.
#define PQ_SHIM_TYPE(name, NAME, kind, ggml_id)                                                                 \
    if (type == #name) {                                                                                        \
        return run<block_##name, quantize_##name, dequantize_##name<float4x4>, dequantize_##name##_t4<float4>,  \
                   dequantize_##name##_t4<half4>, decode_block_##name>(argv[2], argv[3], argv[4], argv[5]);    \
    }

int main(int argc, char ** argv) {
    if (argc == 3 && std::string(argv[1]) == "exact") {
        return run_exact_rows(argv[2]);
    }
    if (argc != 6) {
        std::fprintf(stderr, "usage: %s <type> <values.f32> <blocks.bin> <query.f32> <out_dir>\n", argv[0]);
        return 2;
    }
    const std::string type = argv[1];
    PQ_FOREACH_TYPE(PQ_SHIM_TYPE)
    std::fprintf(stderr, "unknown type %s\n", type.c_str());
    return 2;
}
