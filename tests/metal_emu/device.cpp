// ggml-metal-device.m for an emulated device (issue 18): the same header (ggml-metal-device.h), implemented in C++
// over host memory and the SIMT executor, so that upstream's device-independent Metal host code (ggml-metal.cpp,
// ggml-metal-ops.cpp, ggml-metal-device.cpp, ...) runs unchanged on Linux.
//
// - pipelines are kernels of the emulator's kernel library (gen_kernels.py) found by their host_name, with the
//   function-constant values they were compiled with;
// - buffers are host memory with an inaccessible page after them, and so is each threadgroup memory block: a kernel
//   that reads or writes past the end stops with an error naming it;
// - an encoder runs each dispatch when it is encoded, threadgroup by threadgroup, every thread a fiber, in each thread
//   order of GGML_METAL_EMU_ORDERS (default: in_order,reversed,shuffled), and requires the same bytes in every bound
//   buffer after each: a missing barrier or a race shows as an error;
// - ggml_metal_device_supports_op is upstream's own, compiled from the patched .m (supports_op.inc, cut out by
//   CMakeLists.txt), so the emulator answers what a Mac would, within the ops its kernel library runs (the rest go
//   to the CPU).
#include "emu_device.h"
#include "kernel_registry.h"

#include "ggml-metal-device.h"
#include "ggml-metal-fusion.h"
#include "ggml-metal-impl.h"
#include "ggml-metal-common.h"
#include "ggml-backend-impl.h"
#include "ggml-impl.h"

#include <signal.h>
#include <ucontext.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <initializer_list>
#include <string>
#include <vector>

namespace {

constexpr size_t MAX_THREADGROUP_MEMORY = 32 * 1024; // what Apple GPUs give a threadgroup
constexpr int    MAX_THREADS_PER_GROUP  = 1024;

size_t page_size() {
    static const size_t p = (size_t) sysconf(_SC_PAGESIZE);
    return p;
}

size_t round_up(size_t n, size_t to) {
    return (n + to - 1) / to * to;
}

// Host memory whose end abuts an inaccessible page; its start is aligned to `align` bytes, so at most align - 1
// bytes past the end go unnoticed.
struct guarded_memory {
    void *    map      = nullptr;
    size_t    map_size = 0;
    uint8_t * data     = nullptr;
    size_t    size     = 0;
    uint8_t * guard    = nullptr;

    guarded_memory(size_t n, size_t align) : size(n) {
        const size_t body = round_up(std::max<size_t>(round_up(n, align), 1), page_size());
        map_size          = body + page_size();
        map = mmap(nullptr, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED) {
            map = nullptr;
            return;
        }
        guard = (uint8_t *) map + body;
        mprotect(guard, page_size(), PROT_NONE);
        data = guard - round_up(n, align);
    }
    ~guarded_memory() {
        if (map) {
            munmap(map, map_size);
        }
    }
    guarded_memory(const guarded_memory &) = delete;
    guarded_memory & operator=(const guarded_memory &) = delete;
};

// A kernel that touches a guard page faults; the handler stops the kernel's thread with an error naming what it
// overran, and the dispatch fails with it.
const char * g_running_kernel = nullptr;
const uint8_t * g_tg_guards[emu::MAX_THREADGROUP] = {}; // the running dispatch's threadgroup memory guard pages
char g_fault[256];

#if defined(__x86_64__) && defined(__linux__)
// x86 traps an integer division by zero, which a GPU (and arm64) does not: upstream's kernels take `i % args.ne32`
// even when there is no mask and ne32 is 0, and never use the result. While a kernel runs, the handler completes
// such a div/idiv (opcode F7, ModRM reg 6 or 7) the arm64 way, quotient 0 and remainder the dividend, and goes on.
bool finish_division_by_zero(ucontext_t * uc) {
    greg_t *        r = uc->uc_mcontext.gregs;
    const uint8_t * p = (const uint8_t *) r[REG_RIP];
    size_t          n = 0;
    bool            wide = false;
    while (p[n] == 0x66 || (p[n] & 0xf0) == 0x40) { // operand-size and REX prefixes
        wide |= (p[n] & 0xf8) == 0x48;
        ++n;
    }
    if (p[n] != 0xf7 || ((p[n + 1] >> 3) & 7) < 6) {
        return false;
    }
    const uint8_t modrm = p[n + 1], mod = modrm >> 6, rm = modrm & 7;
    n += 2;
    if (mod != 3 && rm == 4) {
        n += 1 + (mod == 0 && (p[n] & 7) == 5 ? 4 : 0); // SIB, with a disp32 when it has no base
    }
    n += mod == 1 ? 1 : mod == 2 ? 4 : mod == 0 && rm == 5 ? 4 : 0;
    r[REG_RDX] = wide ? r[REG_RAX] : (greg_t) (uint32_t) r[REG_RAX];
    r[REG_RAX] = 0;
    r[REG_RIP] += (greg_t) n;
    return true;
}
#endif

void on_fault(int sig, siginfo_t * info, void * context) {
#if defined(__x86_64__) && defined(__linux__)
    if (sig == SIGFPE && g_running_kernel && info->si_code == FPE_INTDIV &&
        finish_division_by_zero((ucontext_t *) context)) {
        return;
    }
#else
    (void) context;
#endif
    if (g_running_kernel && sig != SIGFPE) {
        const uint8_t * addr = (const uint8_t *) info->si_addr;
        int tg = -1;
        for (int i = 0; i < emu::MAX_THREADGROUP; ++i) {
            if (g_tg_guards[i] && addr >= g_tg_guards[i] && addr < g_tg_guards[i] + page_size()) {
                tg = i;
            }
        }
        if (tg >= 0) {
            snprintf(g_fault, sizeof(g_fault), "accessed %zu bytes past the end of threadgroup memory %d",
                     (size_t) (addr - g_tg_guards[tg]) + 1, tg);
        } else {
            snprintf(g_fault, sizeof(g_fault), "accessed %p, outside its buffers and threadgroup memory", info->si_addr);
        }
        simt::fail_running_thread(g_fault); // returns only when no kernel thread runs
    }
    signal(sig, SIG_DFL); // the fault repeats and ends the process
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa = {};
        sa.sa_sigaction = on_fault;
        sa.sa_flags     = SA_SIGINFO | SA_NODEFER; // a handler that leaves by longjmp must not leave the signal blocked
        sigaction(SIGSEGV, &sa, nullptr);
        sigaction(SIGBUS, &sa, nullptr);
        sigaction(SIGFPE, &sa, nullptr);
    });
}

const struct {
    const char * name;
    simt::order  order;
} ORDER_NAMES[] = { { "in_order", simt::order::in_order }, { "reversed", simt::order::reversed },
                    { "shuffled", simt::order::shuffled } };

const char * order_name(simt::order o) {
    for (const auto & n : ORDER_NAMES) {
        if (n.order == o) {
            return n.name;
        }
    }
    return "?";
}

// GGML_METAL_EMU_ORDERS: the thread orders every dispatch runs in (comma-separated).
std::vector<simt::order> thread_orders() {
    const char * env = getenv("GGML_METAL_EMU_ORDERS");
    const std::string spec = env ? env : "in_order,reversed,shuffled";
    std::vector<simt::order> out;
    size_t start = 0;
    while (start <= spec.size()) {
        const size_t end  = std::min(spec.find(',', start), spec.size());
        const std::string name = spec.substr(start, end - start);
        const auto * known = std::find_if(std::begin(ORDER_NAMES), std::end(ORDER_NAMES),
                                          [&](const auto & n) { return name == n.name; });
        if (known == std::end(ORDER_NAMES)) {
            GGML_ABORT("GGML_METAL_EMU_ORDERS: unknown thread order '%s' (in_order, reversed, shuffled)", name.c_str());
        }
        out.push_back(known->order);
        start = end + 1;
    }
    return out;
}

} // namespace

//
// function constants and pipelines
//

using constant_values = std::map<int, std::vector<uint8_t>>;

struct ggml_metal_cv {
    constant_values values;
};

ggml_metal_cv_t ggml_metal_cv_init(void) {
    return new ggml_metal_cv();
}

void ggml_metal_cv_free(ggml_metal_cv_t cv) {
    delete cv;
}

static void cv_set(ggml_metal_cv_t cv, const void * value, size_t size, int32_t idx) {
    cv->values[idx].assign((const uint8_t *) value, (const uint8_t *) value + size);
}

void ggml_metal_cv_set_int16(ggml_metal_cv_t cv, int16_t value, int32_t idx) { cv_set(cv, &value, sizeof(value), idx); }
void ggml_metal_cv_set_int32(ggml_metal_cv_t cv, int32_t value, int32_t idx) { cv_set(cv, &value, sizeof(value), idx); }
void ggml_metal_cv_set_bool (ggml_metal_cv_t cv, bool    value, int32_t idx) { cv_set(cv, &value, sizeof(value), idx); }

struct ggml_metal_pipeline {
    std::string               name;
    const emu::kernel_entry * kernel = nullptr;
    constant_values           constants;
};

ggml_metal_pipeline_t ggml_metal_pipeline_init(void) {
    return new ggml_metal_pipeline();
}

void ggml_metal_pipeline_free(ggml_metal_pipeline_t pipeline) {
    delete pipeline;
}

int ggml_metal_pipeline_max_theads_per_threadgroup(struct ggml_metal_pipeline_with_params pipeline) {
    GGML_UNUSED(pipeline);
    return MAX_THREADS_PER_GROUP;
}

//
// library: the kernels compiled into this emulator
//

struct ggml_metal_library {
    ggml_metal_device_t    dev;
    ggml_metal_pipelines_t pipelines;
    std::mutex             lock;
};

ggml_metal_library_t ggml_metal_library_init(ggml_metal_device_t dev) {
    ggml_metal_library_t lib = new ggml_metal_library();
    lib->dev       = dev;
    lib->pipelines = ggml_metal_pipelines_init();
    GGML_LOG_INFO("%s: emulated Metal library: %d kernels\n", __func__, emu::kernel_count());
    return lib;
}

ggml_metal_library_t ggml_metal_library_init_from_source(ggml_metal_device_t dev, const char * source, bool verbose) {
    GGML_UNUSED(dev);
    GGML_UNUSED(source);
    GGML_UNUSED(verbose);
    GGML_LOG_ERROR("%s: the emulated Metal device cannot compile Metal source at run time\n", __func__);
    return nullptr;
}

void ggml_metal_library_free(ggml_metal_library_t lib) {
    if (lib) {
        ggml_metal_pipelines_free(lib->pipelines);
        delete lib;
    }
}

ggml_metal_device_t ggml_metal_library_get_device(ggml_metal_library_t lib) {
    return lib->dev;
}

static ggml_metal_pipeline_with_params no_pipeline() {
    return { nullptr, 0, 0, 0, 0, false, false };
}

struct ggml_metal_pipeline_with_params ggml_metal_library_get_pipeline(ggml_metal_library_t lib, const char * name) {
    std::lock_guard<std::mutex> guard(lib->lock);
    ggml_metal_pipeline_with_params res = no_pipeline();
    res.pipeline = ggml_metal_pipelines_get(lib->pipelines, name);
    return res;
}

struct ggml_metal_pipeline_with_params ggml_metal_library_compile_pipeline(ggml_metal_library_t lib, const char * base,
                                                                           const char * name, ggml_metal_cv_t cv) {
    std::lock_guard<std::mutex> guard(lib->lock);
    ggml_metal_pipeline_with_params res = no_pipeline();
    res.pipeline = ggml_metal_pipelines_get(lib->pipelines, name);
    if (res.pipeline) {
        return res;
    }
    const emu::kernel_entry * kernel = emu::find_kernel(base);
    if (!kernel) {
        GGML_LOG_ERROR("%s: kernel '%s' (pipeline '%s') is not in the emulator's kernel library\n", __func__, base, name);
        return res;
    }
    res.pipeline            = ggml_metal_pipeline_init();
    res.pipeline->name      = name;
    res.pipeline->kernel    = kernel;
    if (cv) {
        res.pipeline->constants = cv->values;
    }
    ggml_metal_pipelines_add(lib->pipelines, name, res.pipeline);
    return res;
}

//
// buffers
//

// What ggml_metal_buffer_id.metal points at: one buffer's host memory.
struct emu_region {
    uint8_t * data;
    size_t    size;
};

struct ggml_metal_buffer {
    ggml_metal_device_t             dev;
    std::unique_ptr<guarded_memory> memory; // owned memory (ggml_metal_buffer_init); null for a mapped one
    emu_region                      region;
};

ggml_metal_buffer_t ggml_metal_buffer_init(ggml_metal_device_t dev, size_t size, bool shared) {
    GGML_UNUSED(shared);
    auto memory = std::make_unique<guarded_memory>(size, 64);
    if (!memory->data) {
        GGML_LOG_ERROR("%s: error: failed to allocate buffer, size = %8.2f MiB\n", __func__, size / 1024.0 / 1024.0);
        return nullptr;
    }
    ggml_metal_buffer_t buf = new ggml_metal_buffer();
    buf->dev    = dev;
    buf->region = { memory->data, size };
    buf->memory = std::move(memory);
    return buf;
}

ggml_metal_buffer_t ggml_metal_buffer_map(ggml_metal_device_t dev, void * ptr, size_t size, size_t max_tensor_size) {
    GGML_UNUSED(max_tensor_size);
    ggml_metal_buffer_t buf = new ggml_metal_buffer();
    buf->dev    = dev;
    buf->region = { (uint8_t *) ptr, size };
    return buf;
}

void ggml_metal_buffer_free(ggml_metal_buffer_t buf) {
    delete buf;
}

void * ggml_metal_buffer_get_base(ggml_metal_buffer_t buf) {
    return buf->region.data;
}

bool ggml_metal_buffer_is_shared(ggml_metal_buffer_t buf) {
    GGML_UNUSED(buf);
    return true;
}

void ggml_metal_buffer_memset_tensor(ggml_metal_buffer_t buf, struct ggml_tensor * tensor, uint8_t value, size_t offset, size_t size) {
    GGML_UNUSED(buf);
    memset((char *) tensor->data + offset, value, size);
}

void ggml_metal_buffer_set_tensor(ggml_metal_buffer_t buf, struct ggml_tensor * tensor, const void * data, size_t offset, size_t size) {
    GGML_UNUSED(buf);
    memcpy((char *) tensor->data + offset, data, size);
}

void ggml_metal_buffer_get_tensor(ggml_metal_buffer_t buf, const struct ggml_tensor * tensor, void * data, size_t offset, size_t size) {
    GGML_UNUSED(buf);
    memcpy(data, (const char *) tensor->data + offset, size);
}

bool ggml_metal_buffer_cpy_tensor(ggml_metal_buffer_t buf_dst, const struct ggml_tensor * src, struct ggml_tensor * dst) {
    GGML_UNUSED(buf_dst);
    memcpy(dst->data, src->data, ggml_nbytes(src));
    return true;
}

void ggml_metal_buffer_clear(ggml_metal_buffer_t buf, uint8_t value) {
    memset(buf->region.data, value, buf->region.size);
}

struct ggml_metal_buffer_id ggml_metal_buffer_get_id(ggml_metal_buffer_t buf, const struct ggml_tensor * t) {
    const int64_t offs = (int64_t) ((const uint8_t *) t->data - buf->region.data);
    if (offs >= 0 && offs + (int64_t) ggml_nbytes(t) <= (int64_t) buf->region.size) {
        return { &buf->region, (size_t) offs };
    }
    GGML_LOG_ERROR("%s: error: tensor '%s' buffer is nil\n", __func__, t->name);
    return { nullptr, 0 };
}

//
// encoder: each dispatch runs when it is encoded
//

struct ggml_metal_encoder {
    emu_cmd_buf *                           cmd;
    const ggml_metal_pipeline *             pipeline = nullptr;
    emu::call                               call;
    const emu_region *                      regions[emu::MAX_BUFFERS] = {};
    std::vector<std::vector<uint8_t>>       bytes; // set_bytes copies, alive until the encoder ends
    size_t                                  tg_size[emu::MAX_THREADGROUP] = {};
    std::vector<simt::order>                orders;
};

ggml_metal_encoder_t ggml_metal_encoder_init(ggml_metal_cmd_buf_t cmd_buf_raw, bool concurrent) {
    GGML_UNUSED(concurrent); // dispatches run one after another: a valid schedule of a concurrent encoder
    ggml_metal_encoder_t enc = new ggml_metal_encoder();
    enc->cmd    = (emu_cmd_buf *) cmd_buf_raw;
    enc->orders = thread_orders();
    return enc;
}

void ggml_metal_encoder_free(ggml_metal_encoder_t encoder) {
    delete encoder;
}

void ggml_metal_encoder_debug_group_push(ggml_metal_encoder_t encoder, const char * name) {
    GGML_UNUSED(encoder);
    GGML_UNUSED(name);
}

void ggml_metal_encoder_debug_group_pop(ggml_metal_encoder_t encoder) {
    GGML_UNUSED(encoder);
}

static void fail(ggml_metal_encoder_t enc, const std::string & what) {
    if (enc->cmd->error.empty()) {
        enc->cmd->error = what;
        GGML_LOG_ERROR("emulated Metal device: %s\n", what.c_str());
    }
}

void ggml_metal_encoder_set_pipeline(ggml_metal_encoder_t encoder, struct ggml_metal_pipeline_with_params pipeline) {
    // a Mac aborts here; the emulator fails the computation, so that a test run goes on to its next case
    encoder->pipeline = pipeline.pipeline;
    if (!pipeline.pipeline) {
        fail(encoder, "nil Metal pipeline (a kernel the emulator's library does not have; see the log above)");
    }
}

static bool valid_index(ggml_metal_encoder_t enc, int idx, int n, const char * what) {
    if (idx < 0 || idx >= n) {
        fail(enc, std::string(what) + " index " + std::to_string(idx) + " out of range");
        return false;
    }
    return true;
}

void ggml_metal_encoder_set_bytes(ggml_metal_encoder_t encoder, void * data, size_t size, int idx) {
    if (!valid_index(encoder, idx, emu::MAX_BUFFERS, "set_bytes")) {
        return;
    }
    // 16-byte aligned storage, as Metal's argument buffers are
    encoder->bytes.emplace_back(round_up(size, 16) + 16);
    std::vector<uint8_t> & copy = encoder->bytes.back();
    uint8_t * p = (uint8_t *) round_up((size_t) copy.data(), 16);
    memcpy(p, data, size);
    encoder->call.buffers[idx] = p;
    encoder->regions[idx]      = nullptr;
}

void ggml_metal_encoder_set_buffer(ggml_metal_encoder_t encoder, struct ggml_metal_buffer_id buffer, int idx) {
    if (!valid_index(encoder, idx, emu::MAX_BUFFERS, "set_buffer")) {
        return;
    }
    const emu_region * region = (const emu_region *) buffer.metal;
    if (!region || buffer.offs > region->size) {
        fail(encoder, "buffer " + std::to_string(idx) + " bound outside any device buffer");
        return;
    }
    encoder->call.buffers[idx] = region->data + buffer.offs;
    encoder->regions[idx]      = region;
}

void ggml_metal_encoder_set_threadgroup_memory_size(ggml_metal_encoder_t encoder, size_t size, int idx) {
    GGML_ASSERT(size % 16 == 0);
    if (valid_index(encoder, idx, emu::MAX_THREADGROUP, "threadgroup memory")) {
        encoder->tg_size[idx] = size;
    }
}

// The bytes of every device buffer a dispatch binds (each buffer once).
static std::vector<const emu_region *> bound_regions(const ggml_metal_encoder * enc) {
    std::vector<const emu_region *> out;
    for (const emu_region * r : enc->regions) {
        if (r && std::find(out.begin(), out.end(), r) == out.end()) {
            out.push_back(r);
        }
    }
    return out;
}

// A bound buffer across the runs of one dispatch: its bytes before, the pages the first order's run changed and what
// it left there. Later orders restore only those pages and are compared page by page; the records are reused from
// dispatch to dispatch, so a large buffer (a model's KV cache) costs a copy and a comparison per run, no allocation.
struct region_record {
    static constexpr size_t PAGE = 4096;
    std::vector<uint8_t> before;
    std::vector<size_t>  changed; // offsets of the pages the first order changed
    std::vector<uint8_t> first;   // their bytes after it, page after page

    void take_before(const emu_region * r) {
        before.assign(r->data, r->data + r->size);
        changed.clear();
        first.clear();
    }
    void take_first(const emu_region * r) {
        for (size_t at = 0; at < r->size; at += PAGE) {
            const size_t n = std::min(PAGE, r->size - at);
            if (memcmp(r->data + at, before.data() + at, n) != 0) {
                changed.push_back(at);
                first.insert(first.end(), r->data + at, r->data + at + n);
            }
        }
    }
    void restore(const emu_region * r) const {
        for (size_t at : changed) {
            memcpy(r->data + at, before.data() + at, std::min(PAGE, r->size - at));
        }
    }
    // the first byte at which the region differs from what the first order left, or SIZE_MAX
    size_t first_difference(const emu_region * r) const {
        size_t page = 0, offset = 0;
        for (size_t at = 0; at < r->size; at += PAGE) {
            const size_t    n    = std::min(PAGE, r->size - at);
            const uint8_t * want = before.data() + at;
            if (page < changed.size() && changed[page] == at) {
                want = first.data() + offset;
                offset += n;
                ++page;
            }
            if (memcmp(r->data + at, want, n) != 0) {
                return at + (std::mismatch(r->data + at, r->data + at + n, want).first - (r->data + at));
            }
        }
        return SIZE_MAX;
    }
};

// Where byte `at` of a region is for the kernel: the buffer index bound nearest below it, and the offset from there.
static std::string binding_of(const ggml_metal_encoder * enc, const emu_region * region, size_t at) {
    int    best = -1;
    size_t offs = 0;
    for (int i = 0; i < emu::MAX_BUFFERS; ++i) {
        const size_t start = (const uint8_t *) enc->call.buffers[i] - region->data;
        if (enc->regions[i] == region && start <= at && (best < 0 || start > offs)) {
            best = i;
            offs = start;
        }
    }
    return best < 0 ? "at byte " + std::to_string(at) + " of a bound buffer"
                    : "at byte " + std::to_string(at - offs) + " of buffer " + std::to_string(best);
}

// One run of the dispatch in one thread order, with fresh threadgroup memory.
static void run_once(ggml_metal_encoder_t enc, simt::dim3 groups, simt::dim3 threads, simt::order ord) {
    std::vector<std::unique_ptr<guarded_memory>> tg;
    emu::call call = enc->call;
    for (int i = 0; i < emu::MAX_THREADGROUP; ++i) {
        if (enc->tg_size[i]) {
            tg.push_back(std::make_unique<guarded_memory>(enc->tg_size[i], 16)); // the sizes are multiples of 16
            memset(tg.back()->data, 0xcd, enc->tg_size[i]); // not zero: a kernel must not rely on it
            call.tg_memory[i] = tg.back()->data;
            g_tg_guards[i]    = tg.back()->guard;
        }
    }
    const emu::kernel_entry * kernel = enc->pipeline->kernel;
    g_running_kernel = enc->pipeline->name.c_str();
    struct done { // also when the run throws
        ~done() {
            g_running_kernel = nullptr;
            std::fill(std::begin(g_tg_guards), std::end(g_tg_guards), nullptr);
        }
    } clear;
    simt::run_groups(groups, threads, ord, 7, [&] { kernel->run(call); });
}

static void dispatch(ggml_metal_encoder_t enc, simt::dim3 groups, simt::dim3 threads) {
    const ggml_metal_pipeline * p = enc->pipeline;
    if (!p) {
        return fail(enc, "dispatch without a pipeline");
    }
    size_t tg_total = 0;
    for (size_t s : enc->tg_size) {
        tg_total += s;
    }
    if (tg_total > MAX_THREADGROUP_MEMORY) {
        return fail(enc, p->name + ": " + std::to_string(tg_total) + " bytes of threadgroup memory (at most 32 KiB)");
    }
    for (const auto & c : p->constants) {
        emu::set_function_constant(c.first, c.second.data(), c.second.size());
    }
    const std::vector<const emu_region *> regions = bound_regions(enc);
    const bool compare = enc->orders.size() > 1; // one order: nothing to compare with, no record needed
    static thread_local std::vector<region_record> records;
    records.resize(std::max(records.size(), regions.size()));
    for (size_t i = 0; i < enc->orders.size(); ++i) {
        for (size_t r = 0; compare && r < regions.size(); ++r) {
            if (i == 0) {
                records[r].take_before(regions[r]);
            } else {
                records[r].restore(regions[r]);
            }
        }
        run_once(enc, groups, threads, enc->orders[i]);
        for (size_t r = 0; compare && r < regions.size(); ++r) {
            if (i == 0) {
                records[r].take_first(regions[r]);
                continue;
            }
            const size_t at = records[r].first_difference(regions[r]);
            if (at != SIZE_MAX) {
                return fail(enc, p->name + ": threads in " + order_name(enc->orders[i]) + " order wrote other bytes than " +
                                 order_name(enc->orders[0]) + " (a race or a missing barrier), first " +
                                 binding_of(enc, regions[r], at));
            }
        }
    }
}

void ggml_metal_encoder_dispatch_threadgroups(ggml_metal_encoder_t encoder, int tg0, int tg1, int tg2, int tptg0, int tptg1, int tptg2) {
    if (!encoder->cmd->error.empty()) {
        return; // the command buffer failed: later work is not run
    }
    if (tg0 <= 0 || tg1 <= 0 || tg2 <= 0 || tptg0 <= 0 || tptg1 <= 0 || tptg2 <= 0) {
        if (tg0 == 0 || tg1 == 0 || tg2 == 0) {
            return; // an empty grid: nothing to run
        }
        return fail(encoder, "dispatch with a negative size");
    }
    try {
        dispatch(encoder, { (uint32_t) tg0, (uint32_t) tg1, (uint32_t) tg2 }, { (uint32_t) tptg0, (uint32_t) tptg1, (uint32_t) tptg2 });
    } catch (const std::exception & e) {
        fail(encoder, encoder->pipeline->name + ": " + e.what());
    }
}

void ggml_metal_encoder_memory_barrier(ggml_metal_encoder_t encoder) {
    GGML_UNUSED(encoder); // every dispatch has finished when the next is encoded
}

void ggml_metal_encoder_end_encoding(ggml_metal_encoder_t encoder) {
    encoder->bytes.clear();
}

//
// device
//

struct ggml_metal_rsets {};

ggml_metal_rsets_t ggml_metal_rsets_init(ggml_metal_device_t dev) {
    GGML_UNUSED(dev);
    return new ggml_metal_rsets();
}

void ggml_metal_rsets_free(ggml_metal_rsets_t rsets) {
    delete rsets;
}

struct ggml_metal_device {
    ggml_metal_library_t           library = nullptr;
    ggml_metal_device_props        props   = {};
    struct ggml_metal_fusion_info * finfo  = nullptr;
    emu_cmd_buf                    queue; // a stand-in for the command queue's identity
};

const char * ggml_metal_device_id_token(enum ggml_metal_device_id id) {
    GGML_UNUSED(id);
    return "emulated";
}

ggml_metal_device_t ggml_metal_device_init(int device, int n_devices) {
    GGML_UNUSED(n_devices);
    install_fault_handler();
    ggml_metal_device_t dev = new ggml_metal_device();
    ggml_metal_device_props & p = dev->props;
    p.device      = device;
    p.device_phys = 0;
    p.device_virt = device;
    snprintf(p.name, sizeof(p.name), "MTL%d", device);
    snprintf(p.desc, sizeof(p.desc), "emulated Metal device (tests/metal_emu)");
    p.max_buffer_size            = (size_t) 1 << 40;
    p.max_working_set_size       = (size_t) 16 << 30;
    p.max_theadgroup_memory_size = MAX_THREADGROUP_MEMORY;
    p.has_simdgroup_reduction    = true;
    p.has_simdgroup_mm           = true;
    p.has_unified_memory         = true;
    p.has_bfloat                 = false;
    p.has_tensor                 = false;
    p.use_residency_sets         = false;
    p.use_shared_buffers         = true;
    p.supports_gpu_family_apple7 = true;
    p.device_id                  = GGML_METAL_DEVICE_GENERIC;
    p.gpu_family                 = 7;
    p.op_offload_min_batch_size  = getenv("GGML_OP_OFFLOAD_MIN_BATCH") ? atoi(getenv("GGML_OP_OFFLOAD_MIN_BATCH")) : 32;
    {
        const char * val = getenv("GGML_METAL_FUSION_DEBUG");
        dev->finfo = ggml_metal_fusion_info_init(getenv("GGML_METAL_FUSION_DISABLE") == nullptr, val ? atoi(val) : 0);
    }
    dev->library = ggml_metal_library_init(dev);
    GGML_LOG_INFO("%s: GPU name:   %s (%s)\n", __func__, p.name, p.desc);
    return dev;
}

void ggml_metal_device_free(ggml_metal_device_t dev) {
    ggml_metal_fusion_info_free(dev->finfo);
    ggml_metal_library_free(dev->library);
    delete dev;
}

void * ggml_metal_device_get_obj(ggml_metal_device_t dev) {
    return dev;
}

void * ggml_metal_device_get_queue(ggml_metal_device_t dev) {
    return &dev->queue;
}

ggml_metal_library_t ggml_metal_device_get_library(ggml_metal_device_t dev) {
    return dev->library;
}

void ggml_metal_device_rsets_add(ggml_metal_device_t dev, ggml_metal_rset_t rset) { GGML_UNUSED(dev); GGML_UNUSED(rset); }
void ggml_metal_device_rsets_rm (ggml_metal_device_t dev, ggml_metal_rset_t rset) { GGML_UNUSED(dev); GGML_UNUSED(rset); }
void ggml_metal_device_rsets_keep_alive(ggml_metal_device_t dev) { GGML_UNUSED(dev); }

// Events order command buffers on a GPU; here every command has finished when its call returns.
struct ggml_metal_event {};

void ggml_metal_event_encode_signal(ggml_metal_event_t ev, ggml_metal_cmd_buf_t cmd_buf) { GGML_UNUSED(ev); GGML_UNUSED(cmd_buf); }
void ggml_metal_event_encode_wait  (ggml_metal_event_t ev, ggml_metal_cmd_buf_t cmd_buf) { GGML_UNUSED(ev); GGML_UNUSED(cmd_buf); }

ggml_metal_event_t ggml_metal_device_event_init(ggml_metal_device_t dev) {
    GGML_UNUSED(dev);
    return new ggml_metal_event();
}

void ggml_metal_device_event_free(ggml_metal_device_t dev, ggml_metal_event_t ev) {
    GGML_UNUSED(dev);
    delete ev;
}

void ggml_metal_device_event_synchronize(ggml_metal_device_t dev, ggml_metal_event_t ev) {
    GGML_UNUSED(dev);
    GGML_UNUSED(ev);
}

void ggml_metal_device_get_memory(ggml_metal_device_t dev, size_t * free, size_t * total) {
    *total = dev->props.max_working_set_size;
    *free  = *total;
}

const struct ggml_metal_device_props * ggml_metal_device_get_props(ggml_metal_device_t dev) {
    return &dev->props;
}

struct ggml_metal_fusion_info * ggml_metal_device_get_fusion_info(ggml_metal_device_t dev) {
    return dev->finfo;
}

// upstream's ggml_metal_device_supports_op and the helpers before it, as the patched .m has them
#define ggml_metal_device_supports_op ggml_metal_device_supports_op_upstream
#include "supports_op.inc"
#undef ggml_metal_device_supports_op

// Whether the emulator's kernel library has a kernel named by these parts, "_" between them (as upstream's pipeline
// getters name them: kernel_cpy_<src>_<dst>, kernel_set_rows_<src>_<idx>_<dst>, ...).
static bool emu_has_kernel(std::initializer_list<std::string> parts) {
    std::string name;
    for (const std::string & part : parts) {
        name += (name.empty() ? "" : "_") + part;
    }
    return emu::find_kernel(name.c_str()) != nullptr;
}

// The ops the emulator's kernel library runs: the polar kernels, upstream's flash attention at head sizes 64, 128 and
// 256 (fa_aux, fa_f16, fa_vec_f16), upstream's f32/f16 copies and set_rows, and the ops that run no kernel. A model's
// other ops, which a Mac runs from kernel files the emulator does not compile, are declined, so the scheduler gives
// them to the CPU as it does any op a GPU backend declines; test-backend-ops' polar cases are all within these.
static bool emu_library_runs(const struct ggml_tensor * op) {
    switch (op->op) {
        case GGML_OP_NONE:
        case GGML_OP_RESHAPE:
        case GGML_OP_VIEW:
        case GGML_OP_PERMUTE:
        case GGML_OP_TRANSPOSE:
            return true;
        case GGML_OP_SET_ROWS:
            return emu_has_kernel({ "kernel_set_rows", ggml_type_name(op->src[0]->type),
                                    ggml_type_name(op->src[1]->type), ggml_type_name(op->type) });
        case GGML_OP_CPY:
            return emu_has_kernel({ "kernel_cpy", ggml_type_name(op->src[0]->type), ggml_type_name(op->type) });
        case GGML_OP_FLASH_ATTN_EXT: {
            // the head sizes of the fa_f16 and fa_vec_f16 shards (CMakeLists.txt); not looked up in the library,
            // since the break builds of test_metal_emu.py compile only the decode kernels their cases need
            const int64_t   dk = op->src[1]->ne[0];
            const ggml_type k  = op->src[1]->type;
            const ggml_type v  = op->src[2]->type;
            const bool head_size = dk == op->src[2]->ne[0] && (dk == 64 || dk == 128 || dk == 256);
            return head_size && (ggml_is_polar(k) || ggml_is_polar(v) || (k == GGML_TYPE_F16 && v == GGML_TYPE_F16));
        }
        default:
            return false;
    }
}

bool ggml_metal_device_supports_op(ggml_metal_device_t dev, const struct ggml_tensor * op) {
    return ggml_metal_device_supports_op_upstream(dev, op) && emu_library_runs(op);
}
