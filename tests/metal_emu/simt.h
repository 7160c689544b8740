// A SIMT executor for Metal kernel source compiled as C++ (issue 18): runs one threadgroup at a time, each thread
// of it a fiber, so that threadgroup_barrier and the simdgroup collectives are real synchronization points among
// the threads, as on a GPU. Between two synchronization points the threads run one after another, simdgroup by
// simdgroup in an order the caller picks (in order, reversed, shuffled), the lanes of a simdgroup last to first (a
// GPU runs them in lockstep; simt.cpp, thread_sequence): a kernel whose result depends on that order has a race.
//
// What it reports as an error (simt::error, with the threadgroup and the thread): a threadgroup barrier that some
// thread of the group does not reach (it returned, or waits at a collective), lanes of one simdgroup that wait at
// different collectives, and a deadlock. Lanes that returned take no part in later collectives (Metal's inactive
// lanes); lanes that are still running must all reach the same collective.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace simt {

constexpr int SIMD_WIDTH = 32;

struct error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct dim3 {
    uint32_t x = 1, y = 1, z = 1;
    uint32_t count() const { return x * y * z; }
};

// Where the running thread is: what Metal passes as attribute arguments ([[thread_position_in_grid]], ...).
struct thread_ids {
    dim3     grid_groups;       // threadgroups_per_grid
    dim3     group_threads;     // threads_per_threadgroup
    dim3     group;             // threadgroup_position_in_grid
    dim3     local;             // thread_position_in_threadgroup
    uint32_t index_in_group;    // thread_index_in_threadgroup
    uint32_t simd_lane;         // thread_index_in_simdgroup
    uint32_t simd_group;        // simdgroup_index_in_threadgroup
    uint32_t simd_groups;       // simdgroups_per_threadgroup
    dim3     global() const {   // thread_position_in_grid
        return { group.x * group_threads.x + local.x, group.y * group_threads.y + local.y,
                 group.z * group_threads.z + local.z };
    }
};

enum class order { in_order, reversed, shuffled }; // of the simdgroups

// The ids of the thread running now (only inside run_groups).
const thread_ids & current();

// Runs body once per thread of every threadgroup of the grid, a threadgroup at a time. Threads of one group run
// in the given order between synchronization points (seed: the shuffle's). Throws simt::error.
void run_groups(dim3 groups, dim3 threads, order ord, uint32_t seed, const std::function<void()> & body);

// From a signal handler that caught the running thread's fault: stop that thread, and the run with an error
// (run_groups throws it). Returns false, doing nothing, when no kernel thread runs.
bool fail_running_thread(const char * why);

// threadgroup_barrier: every thread of the group must reach it.
void group_barrier();

// A simdgroup collective, the building block of simd_sum, simd_shuffle, ...: the lane deposits `in` (size bytes),
// waits until every running lane of its simdgroup has deposited, and then `combine` (the same for every lane: its
// address tells collectives apart) computes each lane's result from all lanes' inputs. arg is a per-lane argument
// (a shuffle's source lane, ...).
struct lane_slot {
    alignas(16) unsigned char in[64];
    alignas(16) unsigned char out[64];
    uint32_t arg;
    bool     active;
};
using combine_fn = void (*)(lane_slot * lanes, int n_lanes);
void simd_collective(combine_fn combine, const void * in, void * out, size_t size, uint32_t arg);

// Typed collectives on top of it.
template <typename T> T collective(combine_fn combine, const T & x, uint32_t arg = 0) {
    static_assert(sizeof(T) <= sizeof(lane_slot::in), "a collective's value is at most 64 bytes");
    T r;
    simd_collective(combine, &x, &r, sizeof(T), arg);
    return r;
}

template <typename T> inline T lane_in(const lane_slot & s) { T v; std::memcpy(&v, s.in, sizeof(T)); return v; }
template <typename T> inline void lane_out(lane_slot & s, const T & v) { std::memcpy(s.out, &v, sizeof(T)); }

// Reductions over the active lanes, in lane order (each lane gets the same bits).
template <typename T, typename Op> void combine_reduce(lane_slot * lanes, int n, Op op) {
    bool have = false;
    T    acc{};
    for (int i = 0; i < n; ++i) {
        if (lanes[i].active) {
            acc  = have ? op(acc, lane_in<T>(lanes[i])) : lane_in<T>(lanes[i]);
            have = true;
        }
    }
    for (int i = 0; i < n; ++i) {
        if (lanes[i].active) {
            lane_out(lanes[i], acc);
        }
    }
}

// Each lane gets the value of the lane its arg names (its own when that lane is out of range or inactive: Metal
// leaves those undefined, and a kernel must not depend on them).
template <typename T> void combine_pick(lane_slot * lanes, int n) {
    for (int i = 0; i < n; ++i) {
        if (lanes[i].active) {
            const uint32_t src = lanes[i].arg;
            lane_out(lanes[i], src < (uint32_t) n && lanes[src].active ? lane_in<T>(lanes[src]) : lane_in<T>(lanes[i]));
        }
    }
}

// Each lane gets the value of the first active lane (simd_broadcast_first).
template <typename T> void combine_first(lane_slot * lanes, int n) {
    int first = 0;
    while (first < n && !lanes[first].active) {
        ++first;
    }
    for (int i = 0; i < n; ++i) {
        if (lanes[i].active) {
            lane_out(lanes[i], lane_in<T>(lanes[first]));
        }
    }
}

} // namespace simt
