// ggml-metal-context.m for the emulated device (issue 18): the same header (ggml-metal-context.h) in C++. A graph is
// encoded by upstream's ggml_metal_op_encode, node by node, into one command buffer whose dispatches run as they are
// encoded (device.cpp); the first kernel error fails the computation with GGML_STATUS_FAILED.
#include "emu_device.h"

#include "ggml-metal-context.h"
#include "ggml-metal-common.h"
#include "ggml-metal-device.h"
#include "ggml-metal-fusion.h"
#include "ggml-metal-ops.h"
#include "ggml-backend-impl.h"
#include "ggml-impl.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

struct ggml_metal {
    char                           name[128];
    ggml_metal_device_t            dev;
    ggml_metal_library_t           lib;
    ggml_metal_event_t             ev_cpy;
    struct ggml_metal_fusion_info * finfo;
    bool                           use_concurrency;
    bool                           use_graph_optimize;
    int                            debug_graph;
    ggml_abort_callback            abort_callback;
    void *                         abort_callback_data;
    emu_cmd_buf                    cmd;
};

ggml_metal_t ggml_metal_init(ggml_metal_device_t dev) {
    ggml_metal_t ctx = new ggml_metal();
    ctx->dev    = dev;
    ctx->lib    = ggml_metal_device_get_library(dev);
    ctx->ev_cpy = ggml_metal_device_event_init(dev);
    ctx->finfo  = ggml_metal_device_get_fusion_info(dev);
    snprintf(ctx->name, sizeof(ctx->name), "%s", ggml_metal_device_get_props(dev)->name);
    ctx->use_concurrency    = getenv("GGML_METAL_CONCURRENCY_DISABLE") == nullptr;
    ctx->use_graph_optimize = getenv("GGML_METAL_GRAPH_OPTIMIZE_DISABLE") == nullptr;
    const char * debug = getenv("GGML_METAL_GRAPH_DEBUG");
    ctx->debug_graph = debug ? atoi(debug) : 0;
    return ctx;
}

void ggml_metal_free(ggml_metal_t ctx) {
    ggml_metal_device_event_free(ctx->dev, ctx->ev_cpy);
    delete ctx;
}

const char * ggml_metal_get_name(ggml_metal_t ctx) {
    return ctx->name;
}

void ggml_metal_synchronize(ggml_metal_t ctx) {
    GGML_UNUSED(ctx); // every command ran when it was encoded
}

// The tensor's device buffer (device.cpp): an async copy is the buffer's own, done at once.
static ggml_metal_buffer_t buffer_of(const struct ggml_tensor * t) {
    return (ggml_metal_buffer_t) (t->view_src ? t->view_src->buffer : t->buffer)->context;
}

void ggml_metal_set_tensor_async(ggml_metal_t ctx, struct ggml_tensor * tensor, const void * data, size_t offset, size_t size) {
    GGML_UNUSED(ctx);
    ggml_metal_buffer_set_tensor(buffer_of(tensor), tensor, data, offset, size);
}

void ggml_metal_get_tensor_async(ggml_metal_t ctx, const struct ggml_tensor * tensor, void * data, size_t offset, size_t size) {
    GGML_UNUSED(ctx);
    ggml_metal_buffer_get_tensor(buffer_of(tensor), tensor, data, offset, size);
}

bool ggml_metal_cpy_tensor_async(ggml_metal_t ctx_src, ggml_metal_t ctx_dst, const struct ggml_tensor * src, struct ggml_tensor * dst) {
    GGML_UNUSED(ctx_src);
    GGML_UNUSED(ctx_dst);
    return ggml_metal_buffer_cpy_tensor(buffer_of(dst), src, dst);
}

enum ggml_status ggml_metal_graph_compute(ggml_metal_t ctx, struct ggml_cgraph * gf) {
    if (gf->n_nodes == 0) {
        return GGML_STATUS_SUCCESS;
    }
    ctx->cmd.error.clear();
    ggml_metal_op_t ctx_op = ggml_metal_op_init(ctx->dev, &ctx->cmd, gf, ctx->finfo, 0, gf->n_nodes,
                                                ctx->use_concurrency, false, ctx->debug_graph);
    for (int idx = 0; idx < ggml_metal_op_n_nodes(ctx_op); ++idx) {
        if (ctx->abort_callback && ctx->abort_callback(ctx->abort_callback_data)) {
            ggml_metal_op_free(ctx_op);
            return GGML_STATUS_ABORTED;
        }
        const int res = ggml_metal_op_encode(ctx_op, idx);
        if (res == 0 || !ctx->cmd.error.empty()) {
            break;
        }
        idx += res - 1;
    }
    ggml_metal_op_free(ctx_op);
    return ctx->cmd.error.empty() ? GGML_STATUS_SUCCESS : GGML_STATUS_FAILED;
}

void ggml_metal_graph_optimize(ggml_metal_t ctx, struct ggml_cgraph * gf) {
    if (ctx->use_graph_optimize) {
        ggml_graph_optimize(gf);
    }
}

void ggml_metal_event_record(ggml_metal_t ctx, ggml_metal_event_t ev) {
    ggml_metal_event_encode_signal(ev, &ctx->cmd);
}

void ggml_metal_event_wait(ggml_metal_t ctx, ggml_metal_event_t ev) {
    ggml_metal_event_encode_wait(ev, &ctx->cmd);
}

ggml_metal_event_t ggml_metal_get_ev_cpy(ggml_metal_t ctx) {
    return ctx->ev_cpy;
}

void ggml_metal_set_n_cb(ggml_metal_t ctx, int n_cb) {
    GGML_UNUSED(ctx);
    GGML_UNUSED(n_cb); // one command buffer, encoded by the calling thread
}

void ggml_metal_set_abort_callback(ggml_metal_t ctx, ggml_abort_callback abort_callback, void * user_data) {
    ctx->abort_callback      = abort_callback;
    ctx->abort_callback_data = user_data;
}

bool ggml_metal_supports_family(ggml_metal_t ctx, int family) {
    return family <= ggml_metal_device_get_props(ctx->dev)->gpu_family;
}

void ggml_metal_capture_next_compute(ggml_metal_t ctx) {
    GGML_UNUSED(ctx);
}
