"""The kernel library of the Metal emulator (issue 18): Metal kernel source (the embedded text a Mac compiles)
rewritten as C++ for the metal_stdlib stand-in, plus a table of its kernels by host_name, each entry calling the
kernel with its arguments in declaration order (tests/metal_emu/kernel_abi.h).

  python tests/metal_emu/gen_kernels.py SOURCE.metal OUT.cpp [--only REGEX ...] [--namespace NAME]

--only keeps the kernels whose host_name matches REGEX (re.fullmatch) and drops the other instantiations: compiling
every flash-attention instance as C++ takes minutes.

What the rewrite changes, and only that: [[host_name]] on explicit instantiations and [[threadgroup(i)]] on
parameters are dropped (the stand-in defines their keywords away), and each function constant becomes a global
bound to its index (emu::fc_binding), so that a pipeline can set it.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ATTRIBUTES = {
    "thread_position_in_grid": "grid_pos",
    "threadgroup_position_in_grid": "group_pos",
    "thread_position_in_threadgroup": "local_pos",
    "thread_index_in_threadgroup": "local_index",
    "threads_per_threadgroup": "group_size",
    "threadgroups_per_grid": "grid_groups",
    "thread_index_in_simdgroup": "simd_lane",
    "simdgroup_index_in_threadgroup": "simd_group",
    "simdgroups_per_threadgroup": "simd_groups",
    "threads_per_simdgroup": "simd_width",
    "thread_execution_width": "simd_width",
}

KERNEL = re.compile(r"\bkernel\s+void\s+(\w+)\s*\(")
INSTANCE = re.compile(r'template\s*\[\[\s*host_name\(\s*"([^"]+)"\s*\)\s*\]\]\s*kernel\s+\w+\s+(\w+)\s*<([^;]*)>\s*;')
HOST_NAME = re.compile(r'\[\[\s*host_name\(\s*"[^"]*"\s*\)\s*\]\]')
THREADGROUP_ATTRIBUTE = re.compile(r"\[\[\s*threadgroup\(\d+\)\s*\]\]")
FUNCTION_CONSTANT = re.compile(r"\bconstant\s+(\w+)\s+(\w+)\s*\[\[\s*function_constant\(([^\]]*)\)\s*\]\]\s*;")
ATTRIBUTE = re.compile(r"\[\[\s*(\w+)\s*(?:\(\s*(\d+)\s*\))?\s*\]\]")


def split_top_level(text: str) -> list[str]:
    """The comma-separated items of a parameter list, commas inside <>, () or [] left alone."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def parameter_list(text: str, open_paren: int) -> str:
    depth = 0
    for i in range(open_paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_paren + 1:i]
    raise ValueError("unbalanced parentheses in a kernel signature")


def kernel_params(params: str) -> list[str]:
    """Each parameter as an emu::param initializer: buffers numbered in declaration order."""
    out, buffer = [], 0
    for p in split_top_level(params):
        m = ATTRIBUTE.search(p)
        if not m or m.group(1) == "buffer":
            index = int(m.group(2)) if m else buffer
            buffer = index + 1
            out.append(f"{{emu::pk::buffer, {index}}}")
        elif m.group(1) == "threadgroup":
            out.append(f"{{emu::pk::tg_memory, {int(m.group(2))}}}")
        elif m.group(1) in ATTRIBUTES:
            out.append(f"{{emu::pk::{ATTRIBUTES[m.group(1)]}, 0}}")
        else:
            raise ValueError(f"unknown kernel parameter attribute: {p}")
    return out


def kernels(text: str) -> dict[str, tuple[list[str], bool]]:
    """Every kernel function: its parameters and whether it is a template."""
    text = re.sub(r"/\*.*?\*/", " ", re.sub(r"//[^\n]*", "", text), flags=re.S)  # comments hold commas too
    found = {}
    for m in KERNEL.finditer(text):
        before = text[:m.start()].rstrip()
        is_template = re.search(r"template\s*<[^;{}]*>\s*$", before) is not None
        found[m.group(1)] = (kernel_params(parameter_list(text, m.end() - 1)), is_template)
    return found


def entry(n: int, host: str, fn: str, params: list[str]) -> str:
    return (f'static const emu::kernel_entry emu_kernel_{n}("{host}", [](const emu::call & c) {{ '
            f'emu::invoke(&{fn}, c, {{{", ".join(params)}}}); }});')


def without_stand_in_attributes(text: str) -> str:
    """What the stand-in cannot express, dropped: [[host_name]] on explicit instantiations (clang rejects it there)
    and [[threadgroup(i)]] (its keyword is defined away)."""
    return THREADGROUP_ATTRIBUTE.sub("", HOST_NAME.sub("", text))


def keeps(only: str | list[str] | None, host: str) -> bool:
    """Whether a kernel is compiled: its host name matches every pattern of only (none: every kernel)."""
    patterns = [only] if isinstance(only, str) else only or []
    return all(re.fullmatch(p, host) for p in patterns)


def rewrite(text: str, only: str | list[str] | None = None) -> tuple[str, int]:
    """The source as C++ with its kernels (those only matches) registered by host_name; and how many."""
    defs = kernels(text)
    count = 0

    def instance(m: re.Match) -> str:
        nonlocal count
        host, name, args = m.groups()
        if not keeps(only, host):
            return ""
        count += 1
        # beside the instantiation, where the macros its arguments use are still defined
        return f"{m.group(0)} {entry(count, host, f'{name}<{args.strip()}>', defs[name][0])}"

    text = without_stand_in_attributes(INSTANCE.sub(instance, text))
    text = FUNCTION_CONSTANT.sub(
        lambda m: f"static {m[1]} {m[2]}; static emu::fc_binding {m[2]}_binding({m[3]}, &{m[2]}, sizeof({m[2]}));",
        text)
    plain = [(name, params) for name, (params, is_template) in defs.items() if not is_template]
    for name, params in plain:
        if not keeps(only, name):
            continue
        count += 1
        text += "\n" + entry(count, name, name, params)
    return text, count


def library(text: str, only: str | list[str] | None = None, namespace: str | None = None) -> str:
    """namespace: where the source goes, so that several kernel files (each with its own copy of the common
    headers) link into one library."""
    source, count = rewrite(text, only)
    if namespace:
        source = f"namespace {namespace} {{\n{source}\n}} // namespace {namespace}"
    return "\n".join([
        "// Generated by tests/metal_emu/gen_kernels.py: the kernel source as C++, its kernels registered by host_name.",
        '#include "metal_stdlib"',
        '#include "kernel_abi.h"',
        "",
        source,
        "",
        f"// {count} kernels",
        "",
    ])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", action="append", help="host names to keep (a regular expression; when given more "
                        "than once, a kernel is kept if it matches each)")
    parser.add_argument("--namespace", help="the C++ namespace of this kernel file's code")
    args = parser.parse_args(argv[1:])
    args.out.write_text(library(args.source.read_text(), args.only, args.namespace))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
