// The polar cache-write and context-shift kernels, found by host_name in the emulator's kernel library
// (gen_kernels.py --only 'kernel_(cpy|set_rows)_.*') and dispatched on the SIMT executor with several threads per
// threadgroup, in every thread order, against the C library's reference codec: the same bytes and the same values.
// The dispatch geometry is this program's (both of the kernels' row layouts); the host's own dispatch comes with
// the emulated device.
#include "metal_stdlib"
#include "kernel_abi.h"
#include "ggml-metal-impl.h" // the kernels' argument structs

extern "C" {
#include "ggml-polar.h"
}

#include <cstdio>
#include <string>
#include <vector>

namespace {

int g_failures = 0;
int g_checks   = 0;

void check(bool ok, const std::string & what) {
    ++g_checks;
    if (!ok) {
        ++g_failures;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

constexpr int ROWS  = 6;
constexpr int BLOCK = 64;
constexpr int NBLK  = 3; // blocks per row

struct geometry {
    simt::dim3 groups, threads;
};

// Runs a kernel in every thread order; the bytes of out after each must agree. Returns them.
std::vector<uint8_t> dispatch(const char * name, emu::call c, int out_index, size_t out_size, geometry g,
                              const std::string & what) {
    const emu::kernel_entry * k = emu::find_kernel(name);
    check(k != nullptr, std::string(name) + " is in the kernel library");
    std::vector<uint8_t> first;
    for (simt::order ord : { simt::order::in_order, simt::order::reversed, simt::order::shuffled }) {
        std::vector<uint8_t> out(out_size, 0xab);
        c.buffers[out_index] = out.data();
        if (k) {
            simt::run_groups(g.groups, g.threads, ord, 11, [&] { k->run(c); });
        }
        if (first.empty()) {
            first = out;
        } else {
            check(out == first, what + ": the same bytes in every thread order");
        }
    }
    return first;
}

std::vector<float> values(uint32_t seed) {
    std::vector<float> x(ROWS * NBLK * BLOCK);
    for (float & v : x) {
        seed = seed * 1664525u + 1013904223u;
        v    = (float) ((int32_t) (seed >> 8) % 2001 - 1000) / 333.0f;
    }
    return x;
}

ggml_metal_kargs_cpy cpy_args(size_t src_elem, size_t dst_elem, int nk0, size_t src_row, size_t dst_row) {
    ggml_metal_kargs_cpy a = {};
    a.nk0  = nk0;
    a.ne00 = NBLK * BLOCK; a.ne01 = ROWS; a.ne02 = 1; a.ne03 = 1;
    a.nb00 = src_elem; a.nb01 = src_row; a.nb02 = src_row * ROWS; a.nb03 = a.nb02;
    a.ne0  = NBLK * BLOCK; a.ne1 = ROWS; a.ne2 = 1; a.ne3 = 1;
    a.nb0  = dst_elem; a.nb1 = dst_row; a.nb2 = dst_row * ROWS; a.nb3 = a.nb2;
    return a;
}

void type_checks(const ggml_polar_type_info * t) {
    const std::string  name = t->name;
    const size_t       ts   = t->type_size;
    std::vector<float> x    = values(7 + (uint32_t) ts);
    std::vector<uint8_t> want(ROWS * NBLK * ts);
    t->from_float_ref(x.data(), want.data(), (int64_t) x.size());
    std::vector<float> want_f(x.size());
    t->to_float(want.data(), want_f.data(), (int64_t) x.size());

    // f32 -> polar (context shift and the cache write of ggml_cpy): one thread per block, both row layouts
    ggml_metal_kargs_cpy q = cpy_args(sizeof(float), ts, NBLK, NBLK * BLOCK * sizeof(float), NBLK * ts);
    for (geometry g : { geometry{ { ROWS * 2, 1, 1 }, { 2, 1, 1 } }, geometry{ { 2, 1, 1 }, { NBLK, 4, 1 } } }) {
        emu::call c;
        c.buffers[0] = &q;
        c.buffers[1] = x.data();
        const std::string what = "kernel_cpy_f32_" + name + " with " + std::to_string(g.threads.x) + "x" +
                                 std::to_string(g.threads.y) + " threads";
        check(dispatch(("kernel_cpy_f32_" + name).c_str(), c, 2, want.size(), g, what) == want,
              what + ": the reference encoder's bytes");
    }

    // polar -> f32: one thread per 16 values
    ggml_metal_kargs_cpy d = cpy_args(ts, sizeof(float), NBLK * BLOCK / 16, NBLK * ts, NBLK * BLOCK * sizeof(float));
    for (geometry g : { geometry{ { ROWS * 3, 1, 1 }, { 4, 1, 1 } }, geometry{ { 3, 1, 1 }, { 12, 2, 1 } } }) {
        emu::call c;
        c.buffers[0] = &d;
        c.buffers[1] = want.data();
        const std::string what = "kernel_cpy_" + name + "_f32 with " + std::to_string(g.threads.x) + "x" +
                                 std::to_string(g.threads.y) + " threads";
        const std::vector<uint8_t> got = dispatch(("kernel_cpy_" + name + "_f32").c_str(), c, 2,
                                                  want_f.size() * sizeof(float), g, what);
        check(std::memcmp(got.data(), want_f.data(), got.size()) == 0, what + ": the reference decoder's values");
    }

    // set_rows: row r to row ROWS - 1 - r, 2 rows per threadgroup, 2 threads per row striding its blocks
    std::vector<int64_t> idx(ROWS);
    for (int r = 0; r < ROWS; ++r) {
        idx[r] = ROWS - 1 - r;
    }
    ggml_metal_kargs_set_rows s = {};
    s.nk0 = NBLK; s.ne01 = ROWS;
    s.nb01 = NBLK * BLOCK * sizeof(float); s.nb02 = s.nb01 * ROWS; s.nb03 = s.nb02;
    s.ne11 = 1; s.ne12 = 1; s.nb10 = sizeof(int64_t); s.nb11 = s.nb10 * ROWS; s.nb12 = s.nb11;
    s.nb1 = NBLK * ts; s.nb2 = s.nb1 * ROWS; s.nb3 = s.nb2;
    emu::call c;
    c.buffers[0] = &s;
    c.buffers[1] = x.data();
    c.buffers[2] = idx.data();
    const std::string    what = "kernel_set_rows_f32_i64_" + name;
    std::vector<uint8_t> got  = dispatch(what.c_str(), c, 3, want.size(), { { ROWS / 2, 1, 1 }, { 2, 2, 1 } }, what);
    bool ok = true;
    for (int r = 0; r < ROWS; ++r) {
        ok = ok && std::memcmp(got.data() + idx[r] * NBLK * ts, want.data() + r * NBLK * ts, NBLK * ts) == 0;
    }
    check(ok, what + ": each row's bytes at its index");
}

} // namespace

int main() {
    int types = 0;
    for (int i = 0; i < ggml_polar_type_count(); ++i) {
        type_checks(ggml_polar_get_type_info(i));
        ++types;
    }
    std::printf("polar kernels on the SIMT executor: %d types, %d kernels in the library, %d checks, %d failures\n",
                types, emu::kernel_count(), g_checks, g_failures);
    return g_failures ? 1 : 0;
}
