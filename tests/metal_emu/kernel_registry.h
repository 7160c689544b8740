// What the emulated device and the kernel library share (issue 18): the arguments a dispatch binds, the function
// constants a pipeline sets and the kernels by host_name. Plain C++: the device code includes it without the
// metal_stdlib stand-in, the kernel library through kernel_abi.h.
#pragma once

#include "simt.h"

#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <string>

namespace emu {

constexpr int MAX_BUFFERS     = 32;
constexpr int MAX_THREADGROUP = 8;

// What an encoder bound for one dispatch.
struct call {
    void * buffers[MAX_BUFFERS]         = {};
    void * tg_memory[MAX_THREADGROUP]   = {};
};

// Function constants: gen_kernels.py turns `constant T name [[function_constant(i)]];` into a global of type T bound
// to index i here; a pipeline sets its values (set_function_constant) before it runs.
struct fc_binding {
    int          index;
    void *       addr;
    size_t       size;
    fc_binding * next;
    fc_binding(int i, void * a, size_t n) : index(i), addr(a), size(n), next(head()) { head() = this; }
    static fc_binding *& head() {
        static fc_binding * h = nullptr;
        return h;
    }
};

// Sets every constant bound to index (size: the value's bytes, which must be the constant's); returns how many.
inline int set_function_constant(int index, const void * value, size_t size) {
    int n = 0;
    for (fc_binding * b = fc_binding::head(); b; b = b->next) {
        if (b->index == index) {
            if (b->size != size) {
                throw simt::error("function constant " + std::to_string(index) + " set with the wrong size");
            }
            std::memcpy(b->addr, value, size);
            ++n;
        }
    }
    return n;
}

// A kernel by its host_name; gen_kernels.py writes one beside each instantiation (where the source's macros still
// stand), and they register themselves.
struct kernel_entry {
    const char *   name;
    void (*run)(const call & c);
    kernel_entry * next;
    kernel_entry(const char * n, void (*r)(const call &)) : name(n), run(r), next(head()) { head() = this; }
    static kernel_entry *& head() {
        static kernel_entry * h = nullptr;
        return h;
    }
};

inline const kernel_entry * find_kernel(const char * name) {
    for (const kernel_entry * k = kernel_entry::head(); k; k = k->next) {
        if (std::strcmp(k->name, name) == 0) {
            return k;
        }
    }
    return nullptr;
}

inline int kernel_count() {
    int n = 0;
    for (const kernel_entry * k = kernel_entry::head(); k; k = k->next) {
        ++n;
    }
    return n;
}

} // namespace emu
