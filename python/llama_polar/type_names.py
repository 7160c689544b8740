"""Type names: the polar types (the generated list, in ggml's type order), the KV-cache types llama.cpp takes, and
the one error for a name that is not among them."""
from __future__ import annotations

from typing import Collection, Iterable, Sequence

from ._codebooks import TYPE_LIST

POLAR_TYPES: tuple[str, ...] = tuple(name for name, _kind in TYPE_LIST)
# upstream's KV cache types (common/arg.cpp's kv_cache_types), then the polar ones
UPSTREAM_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
UNQUANTIZED = ("f32", "f16", "bf16")
CACHE_TYPES: tuple[str, ...] = UPSTREAM_CACHE_TYPES + POLAR_TYPES


class UnknownTypeError(ValueError):
    """Names (or ids) that are not types of the kind asked for; `unknown` holds them, `known` the choices."""

    def __init__(self, unknown: Sequence, known: Sequence, what: str = "polar type", where: str | None = None):
        self.unknown, self.known = list(unknown), list(known)
        plural = "s" if len(self.unknown) > 1 else ""
        names = ", ".join(repr(n) for n in self.unknown)
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}unknown {what}{plural} {names}; known: {', '.join(map(str, self.known))}")


def check_types(names: Iterable, known: Collection = POLAR_TYPES, what: str = "polar type",
                where: str | None = None, shown: Sequence | None = None) -> list:
    """The names as a list if every one is in `known`; else UnknownTypeError naming every one that is not, and
    listing `known` (or `shown`, the choices as the message should spell them)."""
    names = list(names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UnknownTypeError(unknown, list(known) if shown is None else shown, what, where)
    return names


def parse_types(spec: str, known: Sequence = POLAR_TYPES, what: str = "polar type") -> list[str]:
    """A comma-separated list of type names (a command line's --types), each checked against `known`."""
    return check_types([t.strip() for t in spec.split(",") if t.strip()], known, what)
