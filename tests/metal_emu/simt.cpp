// The SIMT executor (simt.h): fibers, one per thread of a threadgroup, and a scheduler that runs them to their
// next synchronization point and then resolves it. A fiber starts once on ucontext and then runs one thread after
// another; switches are _setjmp/_longjmp, which (unlike swapcontext) make no system call, since a flash-attention
// kernel switches at every simdgroup function.
#undef _FORTIFY_SOURCE // its longjmp check rejects jumps between stacks
#include "simt.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <memory>
#include <random>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

namespace simt {
namespace {

// Kernels keep their "registers" (arrays of a few KiB, FA's score and output rows) on the fiber's stack.
constexpr size_t STACK_BYTES = 256 * 1024;

// A fiber's stack, with an inaccessible page below it: an overflow faults instead of writing over another fiber.
class fiber_stack {
  public:
    fiber_stack() {
        guard_ = (size_t) sysconf(_SC_PAGESIZE);
        base_  = mmap(nullptr, guard_ + STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base_ == MAP_FAILED || mprotect(base_, guard_, PROT_NONE) != 0) {
            throw error("cannot map a fiber stack");
        }
    }
    ~fiber_stack() { munmap(base_, guard_ + STACK_BYTES); }
    fiber_stack(const fiber_stack &)             = delete;
    fiber_stack & operator=(const fiber_stack &) = delete;
    void * top_region() const { return (char *) base_ + guard_; }

  private:
    void * base_  = nullptr;
    size_t guard_ = 0;
};

enum class state { runnable, at_barrier, at_collective, finished };

struct fiber {
    ucontext_t              ctx;     // for its start only
    bool                    started = false;
    jmp_buf                 resume;  // where it goes on when the scheduler picks it
    std::unique_ptr<fiber_stack> stack;
    thread_ids              ids;
    state                   st = state::runnable;
    // at a collective: what it waits for, and where its result goes
    combine_fn              combine = nullptr;
    const void *            in      = nullptr;
    void *                  out     = nullptr;
    size_t                  size    = 0;
    uint32_t                arg     = 0;
    std::string             failure; // an exception thrown inside the fiber, rethrown by the scheduler
};

// The fibers of this host thread, kept from one dispatch to the next (dropped after an error: a fiber may then be
// stopped inside a kernel).
struct group_run {
    std::vector<std::unique_ptr<fiber>> fibers;
    jmp_buf            scheduler;
    fiber *            running = nullptr;
    const std::function<void()> * body = nullptr;
    size_t             size    = 0; // threads in the current group
    fiber & thread(size_t i) { return *fibers[i]; }
};

thread_local std::unique_ptr<group_run> g_pool;
thread_local group_run * g_run = nullptr; // the pool while run_groups runs

std::string where(const thread_ids & t) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "threadgroup (%u,%u,%u), thread %u (simdgroup %u, lane %u)", t.group.x,
                  t.group.y, t.group.z, t.index_in_group, t.simd_group, t.simd_lane);
    return buf;
}

// Back to the scheduler until it resumes this fiber.
void yield_to_scheduler() {
    if (_setjmp(g_run->running->resume) == 0) {
        _longjmp(g_run->scheduler, 1);
    }
}

// A fiber's life: one thread of a group after another, each time the scheduler starts it anew.
void fiber_main() {
    for (;;) {
        fiber * f = g_run->running;
        try {
            (*g_run->body)();
        } catch (const std::exception & e) {
            f->failure = e.what();
        }
        f->st = state::finished;
        yield_to_scheduler();
    }
}

void run_fiber(group_run & run, fiber & f) {
    run.running = &f;
    if (_setjmp(run.scheduler) == 0) {
        if (!f.started) {
            f.started = true;
            setcontext(&f.ctx);
        }
        _longjmp(f.resume, 1);
    }
    run.running = nullptr;
    if (!f.failure.empty()) {
        throw error(where(f.ids) + ": " + f.failure);
    }
}

// Resolves the collectives that every running lane of a simdgroup has reached; returns whether any was.
bool resolve_collectives(group_run & run, uint32_t simd_groups) {
    bool progress = false;
    for (uint32_t sg = 0; sg < simd_groups; ++sg) {
        const size_t first = (size_t) sg * SIMD_WIDTH;
        const size_t last  = std::min(first + SIMD_WIDTH, run.size);
        bool         all_there = true, any = false;
        combine_fn   combine   = nullptr;
        for (size_t i = first; i < last; ++i) {
            const fiber & f = run.thread(i);
            if (f.st == state::finished) {
                continue;
            }
            if (f.st != state::at_collective) {
                all_there = false;
                continue;
            }
            if (combine && f.combine != combine) {
                throw error(where(f.ids) + ": lanes of one simdgroup wait at different simdgroup functions");
            }
            combine = f.combine;
            any     = true;
        }
        if (!any || !all_there) {
            continue;
        }
        lane_slot lanes[SIMD_WIDTH] = {};
        for (size_t i = first; i < last; ++i) {
            fiber &     f = run.thread(i);
            lane_slot & s = lanes[i - first];
            s.active      = f.st == state::at_collective;
            if (s.active) {
                std::memcpy(s.in, f.in, f.size);
                s.arg = f.arg;
            }
        }
        combine(lanes, (int) (last - first));
        for (size_t i = first; i < last; ++i) {
            fiber & f = run.thread(i);
            if (f.st == state::at_collective) {
                std::memcpy(f.out, lanes[i - first].out, f.size);
                f.st = state::runnable;
            }
        }
        progress = true;
    }
    return progress;
}

// Releases a threadgroup barrier once every thread waits at it; throws if a thread never will.
bool resolve_barrier(group_run & run) {
    const fiber * waiting = nullptr;
    for (size_t i = 0; i < run.size; ++i) {
        if (run.thread(i).st == state::at_barrier) {
            waiting = &run.thread(i);
        }
    }
    if (!waiting) {
        return false;
    }
    for (size_t i = 0; i < run.size; ++i) {
        const fiber & f = run.thread(i);
        if (f.st == state::finished) {
            throw error(where(f.ids) + " returned while " + where(waiting->ids) +
                        " waits at a threadgroup barrier: every thread of the group must reach it");
        }
        if (f.st == state::at_collective) {
            throw error(where(f.ids) + " waits at a simdgroup function while " + where(waiting->ids) +
                        " waits at a threadgroup barrier");
        }
    }
    for (size_t i = 0; i < run.size; ++i) {
        run.thread(i).st = state::runnable;
    }
    return true;
}

void run_group(group_run & run, const std::vector<size_t> & sequence, uint32_t simd_groups) {
    for (;;) {
        bool any_left = false;
        for (size_t i : sequence) {
            fiber & f = run.thread(i);
            if (f.st == state::runnable) {
                run_fiber(run, f);
            }
            any_left |= f.st != state::finished;
        }
        if (!any_left) {
            return;
        }
        if (!resolve_collectives(run, simd_groups) && !resolve_barrier(run)) {
            throw error(where(run.thread(0).ids) + "'s group: no thread can go on (a deadlock)");
        }
    }
}

// The order threads run in between two synchronization points: simdgroup by simdgroup, the simdgroups in the given
// order, the lanes of each from the last to the first. A GPU runs a simdgroup's lanes in lockstep, every lane's
// step before any lane's next one, and kernels rely on it: upstream's flash-attention vec kernel has lane 0 write
// the simdgroup's sums over scratch memory the other lanes have just read, with no barrier between. Lane 0 last
// keeps such reads before the write; races between simdgroups (a missing threadgroup_barrier) still show.
std::vector<size_t> thread_sequence(size_t n, order ord, std::mt19937 & rng) {
    const size_t groups = (n + SIMD_WIDTH - 1) / SIMD_WIDTH;
    std::vector<size_t> sg(groups);
    for (size_t i = 0; i < groups; ++i) {
        sg[i] = ord == order::reversed ? groups - 1 - i : i;
    }
    if (ord == order::shuffled) {
        std::shuffle(sg.begin(), sg.end(), rng);
    }
    std::vector<size_t> seq;
    for (size_t g : sg) {
        const size_t first = g * SIMD_WIDTH, last = std::min(first + SIMD_WIDTH, n);
        for (size_t i = last; i-- > first;) {
            seq.push_back(i);
        }
    }
    return seq;
}

} // namespace

const thread_ids & current() {
    if (!g_run || !g_run->running) {
        throw error("a Metal thread function was called outside a kernel run");
    }
    return g_run->running->ids;
}

void group_barrier() {
    current();
    g_run->running->st = state::at_barrier;
    yield_to_scheduler();
}

void simd_collective(combine_fn combine, const void * in, void * out, size_t size, uint32_t arg) {
    current();
    fiber & f = *g_run->running;
    f.st      = state::at_collective;
    f.combine = combine;
    f.in      = in;
    f.out     = out;
    f.size    = size;
    f.arg     = arg;
    yield_to_scheduler();
}

bool fail_running_thread(const char * why) {
    if (!g_run || !g_run->running) {
        return false;
    }
    fiber * f   = g_run->running;
    f->failure  = why;
    f->st       = state::finished;
    _longjmp(g_run->scheduler, 1);
}

void run_groups(dim3 groups, dim3 threads, order ord, uint32_t seed, const std::function<void()> & body) {
    const uint32_t n = threads.count();
    if (n == 0 || n > 1024) {
        throw error("threads per threadgroup must be 1..1024, not " + std::to_string(n));
    }
    if (g_run) {
        throw error("run_groups does not nest");
    }
    if (!g_pool) {
        g_pool.reset(new group_run());
    }
    group_run & run = *g_pool;
    run.body = &body;
    run.size = n;
    while (run.fibers.size() < n) {
        run.fibers.emplace_back(new fiber());
        fiber & f = *run.fibers.back();
        f.stack.reset(new fiber_stack());
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp   = f.stack->top_region();
        f.ctx.uc_stack.ss_size = STACK_BYTES;
        f.ctx.uc_link          = nullptr;
        makecontext(&f.ctx, fiber_main, 0);
    }
    const uint32_t simd_groups = (n + SIMD_WIDTH - 1) / SIMD_WIDTH;
    std::mt19937   rng(seed);
    g_run = &run;
    try {
        for (uint32_t gz = 0; gz < groups.z; ++gz) {
            for (uint32_t gy = 0; gy < groups.y; ++gy) {
                for (uint32_t gx = 0; gx < groups.x; ++gx) {
                    for (uint32_t i = 0; i < n; ++i) {
                        fiber & f = run.thread(i);
                        f.ids     = { groups, threads, { gx, gy, gz },
                                      { i % threads.x, (i / threads.x) % threads.y, i / (threads.x * threads.y) },
                                      i, i % SIMD_WIDTH, i / SIMD_WIDTH, simd_groups };
                        f.st = state::runnable;
                        f.failure.clear();
                    }
                    run_group(run, thread_sequence(n, ord, rng), simd_groups);
                }
            }
        }
    } catch (...) {
        g_run = nullptr;
        g_pool.reset(); // fibers may be stopped inside the kernel: start afresh
        throw;
    }
    g_run = nullptr;
}

} // namespace simt
