// How a dispatch reaches a kernel function compiled as C++ (issue 18): the bound buffers, the threadgroup memory
// and the running thread's ids become the kernel's arguments, in the order its signature declares them.
// tests/metal_emu/gen_kernels.py reads each kernel's parameters from the source (a buffer in declaration order, a
// [[threadgroup(i)]] block, or an attribute such as [[thread_position_in_grid]]) and writes one kernel_entry per
// host_name, whose run calls invoke() with them.
#pragma once

#include "kernel_registry.h"
#include "simt.h"

#include <cstddef>
#include <initializer_list>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace emu {

enum class pk {
    buffer,          // [[buffer(i)]], or the i-th buffer parameter without an attribute
    tg_memory,       // [[threadgroup(i)]] (the keyword itself is defined away by the stand-in)
    grid_pos,        // thread_position_in_grid
    group_pos,       // threadgroup_position_in_grid
    local_pos,       // thread_position_in_threadgroup
    local_index,     // thread_index_in_threadgroup
    group_size,      // threads_per_threadgroup
    grid_groups,     // threadgroups_per_grid
    simd_lane,       // thread_index_in_simdgroup
    simd_group,      // simdgroup_index_in_threadgroup
    simd_groups,     // simdgroups_per_threadgroup
    simd_width,      // threads_per_simdgroup, thread_execution_width
};

struct param {
    pk  kind;
    int index;
};

inline simt::dim3 dim_of(pk kind) {
    const simt::thread_ids & t = simt::current();
    switch (kind) {
        case pk::grid_pos:    return t.global();
        case pk::group_pos:   return t.group;
        case pk::local_pos:   return t.local;
        case pk::group_size:  return t.group_threads;
        case pk::grid_groups: return t.grid_groups;
        case pk::local_index: return { t.index_in_group, 0, 0 };
        case pk::simd_lane:   return { t.simd_lane, 0, 0 };
        case pk::simd_group:  return { t.simd_group, 0, 0 };
        case pk::simd_groups: return { t.simd_groups, 0, 0 };
        case pk::simd_width:  return { (uint32_t) simt::SIMD_WIDTH, 0, 0 };
        default:              throw simt::error("not an attribute argument");
    }
}

// An attribute as the parameter's type: a scalar takes x, a vector its first components.
template <typename P, typename T> P attribute_vec(simt::dim3 d, const metal::vec<T, 2> &) { return P(T(d.x), T(d.y)); }
template <typename P, typename T> P attribute_vec(simt::dim3 d, const metal::vec<T, 3> &) { return P(T(d.x), T(d.y), T(d.z)); }
template <typename P> P attribute(simt::dim3 d, std::true_type /* scalar */) { return P(d.x); }
template <typename P> P attribute(simt::dim3 d, std::false_type) { return attribute_vec<P>(d, P()); }

template <typename P> P pointer_arg(void * p, std::true_type /* pointer */) { return static_cast<P>(p); }
template <typename P> P pointer_arg(void * p, std::false_type /* reference */) {
    return *static_cast<std::remove_reference_t<P> *>(p);
}

// A pointer or a reference parameter is a buffer or threadgroup memory; anything else an attribute.
template <typename P> P arg(const call & c, param p, std::true_type /* memory */) {
    void * ptr = p.kind == pk::buffer ? c.buffers[p.index] : p.kind == pk::tg_memory ? c.tg_memory[p.index] : nullptr;
    if (!ptr) {
        throw simt::error("kernel argument " + std::to_string(p.index) + " (a buffer or threadgroup memory) is not set");
    }
    return pointer_arg<P>(ptr, std::is_pointer<P>());
}
template <typename P> P arg(const call &, param p, std::false_type /* attribute */) {
    return attribute<P>(dim_of(p.kind), std::is_arithmetic<P>());
}
template <typename P> P arg(const call & c, param p) {
    return arg<P>(c, p, std::integral_constant<bool, std::is_pointer<P>::value || std::is_reference<P>::value>());
}

template <typename... P, size_t... I>
void invoke_with(void (*fn)(P...), const call & c, const param * ps, std::index_sequence<I...>) {
    fn(arg<P>(c, ps[I])...);
}

// Calls fn with the arguments ps describes (one per parameter, in order).
template <typename... P> void invoke(void (*fn)(P...), const call & c, std::initializer_list<param> ps) {
    if (ps.size() != sizeof...(P)) {
        throw simt::error("a kernel's parameter list does not match its signature");
    }
    invoke_with(fn, c, ps.begin(), std::index_sequence_for<P...>());
}

} // namespace emu
