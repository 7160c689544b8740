// What the emulated device (device.cpp) and the emulated backend context (context.cpp) share (issue 18).
#pragma once

#include <string>

// A command buffer of the emulated device: dispatches run when they are encoded, and the first error of a kernel
// (or of a dispatch that cannot run) is kept here, so that the graph's computation fails with it.
struct emu_cmd_buf {
    std::string error;
};
