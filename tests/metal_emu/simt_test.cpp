// Checks of the SIMT executor (simt.h), run by tests/test_metal_emu.py: synchronization, collectives, the errors
// it must report, and that running the threads in several orders exposes a missing barrier.
#include "simt.h"

#include <cstdio>
#include <functional>
#include <vector>

namespace {

int g_failures = 0;
int g_checks   = 0;

void check(bool ok, const char * what) {
    ++g_checks;
    if (!ok) {
        ++g_failures;
        std::printf("FAIL: %s\n", what);
    }
}

// Runs body over one threadgroup of n threads in every order; returns the outputs (one per order).
std::vector<std::vector<int>> each_order(uint32_t n, const std::function<void(std::vector<int> &, std::vector<int> &)> & body) {
    std::vector<std::vector<int>> outs;
    for (simt::order ord : { simt::order::in_order, simt::order::reversed, simt::order::shuffled }) {
        std::vector<int> shared(n, -1), out(n, -1);
        simt::run_groups({ 1, 1, 1 }, { n, 1, 1 }, ord, 7, [&] { body(shared, out); });
        outs.push_back(out);
    }
    return outs;
}

bool all_equal(const std::vector<std::vector<int>> & outs) {
    for (const auto & o : outs) {
        if (o != outs[0]) {
            return false;
        }
    }
    return true;
}

template <typename T> T simd_sum(T x) {
    return simt::collective(+[](simt::lane_slot * l, int n) { simt::combine_reduce<T>(l, n, [](T a, T b) { return a + b; }); }, x);
}
template <typename T> T simd_shuffle_down(T x, uint32_t d) {
    return simt::collective(&simt::combine_pick<T>, x, simt::current().simd_lane + d);
}
template <typename T> T simd_broadcast(T x, uint32_t lane) {
    return simt::collective(&simt::combine_pick<T>, x, lane);
}

void barrier_orders_writes_before_reads() {
    const auto outs = each_order(64, [](std::vector<int> & shared, std::vector<int> & out) {
        const uint32_t t = simt::current().index_in_group;
        shared[t]        = (int) t * 3;
        simt::group_barrier();
        out[t] = shared[(t + 1) % 64];
    });
    bool ok = all_equal(outs);
    for (int t = 0; t < 64; ++t) {
        ok = ok && outs[0][t] == ((t + 1) % 64) * 3;
    }
    check(ok, "with a barrier, every thread reads its neighbour's write, in every order");
}

void missing_barrier_shows_as_a_difference() {
    const auto outs = each_order(64, [](std::vector<int> & shared, std::vector<int> & out) {
        const uint32_t t = simt::current().index_in_group;
        shared[t]        = (int) t * 3;
        out[t]           = shared[(t + 1) % 64]; // no barrier: a race
    });
    check(!all_equal(outs), "without the barrier, the orders give different results");
}

void collectives() {
    std::vector<int> sums(96), down(96), bcast(96);
    simt::run_groups({ 2, 1, 1 }, { 96, 1, 1 }, simt::order::shuffled, 3, [&] {
        const simt::thread_ids & id = simt::current();
        const int                x  = (int) id.simd_lane + 100 * (int) id.simd_group;
        sums[id.index_in_group]     = simd_sum(x);
        down[id.index_in_group]     = simd_shuffle_down(x, 4);
        bcast[id.index_in_group]    = simd_broadcast(x, 5);
    });
    bool ok = true;
    for (int t = 0; t < 96; ++t) {
        const int sg = t / 32, lane = t % 32;
        ok = ok && sums[t] == 496 + 3200 * sg;
        ok = ok && down[t] == (lane + 4 < 32 ? lane + 4 : lane) + 100 * sg;
        ok = ok && bcast[t] == 5 + 100 * sg;
    }
    check(ok, "simd_sum, simd_shuffle_down and simd_broadcast per simdgroup");
}

void returned_lanes_take_no_part() {
    std::vector<float> sums(32, -1.0f);
    simt::run_groups({ 1, 1, 1 }, { 32, 1, 1 }, simt::order::reversed, 0, [&] {
        const uint32_t lane = simt::current().simd_lane;
        if (lane >= 16) {
            return;
        }
        sums[lane] = simd_sum((float) lane);
    });
    bool ok = true;
    for (int t = 0; t < 32; ++t) {
        ok = ok && sums[t] == (t < 16 ? 120.0f : -1.0f);
    }
    check(ok, "lanes that returned take no part in a later simd_sum");

    std::vector<int> first(32, -1);
    simt::run_groups({ 1, 1, 1 }, { 32, 1, 1 }, simt::order::shuffled, 5, [&] {
        const uint32_t lane = simt::current().simd_lane;
        if (lane < 5) {
            return;
        }
        first[lane] = simt::collective(&simt::combine_first<int>, (int) lane * 10);
    });
    ok = true;
    for (int t = 0; t < 32; ++t) {
        ok = ok && first[t] == (t < 5 ? -1 : 50);
    }
    check(ok, "simd_broadcast_first takes the first lane still running");
}

bool throws(const std::function<void()> & body, const char * needle) {
    try {
        simt::run_groups({ 1, 1, 1 }, { 64, 1, 1 }, simt::order::in_order, 0, body);
    } catch (const simt::error & e) {
        if (std::string(e.what()).find(needle) != std::string::npos) {
            return true;
        }
        std::printf("unexpected error: %s\n", e.what());
    }
    return false;
}

void errors() {
    check(throws([] {
              if (simt::current().index_in_group == 5) {
                  return;
              }
              simt::group_barrier();
          }, "every thread of the group must reach it"),
          "a barrier that one thread skips is an error");
    check(throws([] {
              if (simt::current().simd_lane < 8) {
                  simd_sum(1);
              } else {
                  simd_broadcast(1, 0);
              }
          }, "different simdgroup functions"),
          "lanes at different collectives are an error");
    check(throws([] {
              if (simt::current().simd_lane < 8) {
                  simd_sum(1);
              } else {
                  simt::group_barrier();
              }
          }, "waits at a simdgroup function while"),
          "lanes at a collective while the rest of their simdgroup waits at a barrier is an error");
    bool outside = false;
    try {
        simt::group_barrier();
    } catch (const simt::error &) {
        outside = true;
    }
    check(outside, "a barrier outside a kernel run is an error");
}

} // namespace

int main() {
    barrier_orders_writes_before_reads();
    missing_barrier_shows_as_a_difference();
    collectives();
    returned_lanes_take_no_part();
    errors();
    std::printf("simt: %d checks, %d failures\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
