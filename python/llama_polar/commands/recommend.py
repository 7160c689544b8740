"""What to run for a budget of bits per value: the measured cache configuration with the lowest mean KLD within it
(llama_polar.recommend). The earlier lines say what was measured; the last line is a shell fragment, environment
assignments then llama.cpp's cache arguments, for llama-cli, llama-server, llama-perplexity and the other tools:

  llama-polar recommend --bits 3.75
  eval "$(llama-polar recommend --bits 4.25 | tail -1 | sed 's/ -ctk/ build\\/bin\\/llama-cli -m m.gguf -ctk/')"
  llama-polar recommend --bits 3.25 --report build/my-report/report.json     # measurements of your own model
  llama-polar recommend --bits 3.75 --model my-model.gguf                     # types per layer for your model

The measurements default to the project's report (SmolLM2-135M at 8192 tokens, read token by token as generation
reads the cache), shipped with the package beside a report of Gemma-3-270M (for --model gemma-3-270m-q4_k_m.gguf);
`llama-polar report --out DIR` measures another model or text, and --report reads what it wrote.

Types per layer (LLAMA_KV_LAYER_TYPES) are chosen for one model. With --model the report's configurations with types
per layer compete when the report is of that model; for another model, recommend measures how much each layer's K
and V cost in the simulator (llama_polar.layer_types, about 20 minutes for a 135M model on two cores; the
sensitivities are saved beside the model and reused) and spends the budget where they cost most: its KLD is then the
cost model's prediction, not a measurement.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from llama_polar import recommend
from llama_polar.report import run_words


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", type=float, required=True, help="the budget: bits per cached value, K and V averaged")
    ap.add_argument("--report", type=Path,
                    help="a report.json of llama-polar report (default: the project's, shipped with the package: "
                         "the one of --model's file where there is one, else SmolLM2-135M's)")
    ap.add_argument("--centers", type=Path,
                    help="calibrated key centers of the model (llama-polar calibrate): +calib configurations compete too")
    ap.add_argument("--model", type=Path, help="the GGUF model the configuration is for: types per layer compete")
    ap.add_argument("--ctx", type=int, default=8192,
                    help="context the bits are counted at, for types per layer chosen here (default %(default)s)")
    ap.add_argument("--sensitivity", type=Path,
                    help="where the model's layer sensitivities are kept (default: beside the model)")
    args = ap.parse_args(argv)
    if not args.bits > 0:
        ap.error(f"--bits must be positive, not {args.bits:g}")
    if args.model is not None and not args.model.is_file():
        ap.error(f"--model {args.model}: no such file")
    args.report = args.report or recommend.packaged(args.model.name if args.model else None)
    try:
        report = json.loads(args.report.read_text())
        same_model = args.model is not None and args.model.name == report["model"]
        rows = recommend.candidates(report, calibrated=args.centers is not None, per_layer=same_model)
    except (OSError, ValueError, KeyError, TypeError) as e:
        ap.error(f"{args.report}: not a report of llama-polar report ({e})")
    if args.model is not None and not same_model:
        return per_layer(args, ap)
    run = recommend.measurement(report)
    best = recommend.choose(rows, args.bits)
    ratio = f", {best.vs_q4_0:.2f}x q4_0's" if best.vs_q4_0 is not None else ""
    tail = f", 99.9th percentile {best.kld_p999:.3f}" if best.kld_p999 is not None else ""
    print(f"measured: {report['model']}, {report['text']}, {run_words(run)} "
          f"({run.get('date', report['date'])}, {args.report.name})")
    print(f"{best.spec}: {best.bits:.3f} bits/value, mean KLD {best.kld:.4f}{ratio}{tail}")
    if best.vs_q4_0 is not None and best.vs_q4_0 > 1:
        print(f"note: worse than q4_0 (4.5 bits/value): within {args.bits:g} bits nothing measured beats it")
    print(recommend.fragment(best.spec, args.centers))
    return 0


def per_layer(args, ap) -> int:
    """Types per layer for a model the report did not measure: its sensitivities (measured once, then read), the
    budget spent over its layers."""
    from llama_polar import cache_config, layer_types
    path = args.sensitivity or args.model.with_name(args.model.stem + ".layer-sensitivity.json")
    if path.exists():
        sens = layer_types.Sensitivity.load(path)
        if sens.model != args.model.name:
            ap.error(f"{path}: the sensitivities of {sens.model}, not of {args.model.name}")
        print(f"sensitivities: {path} ({sens.model})")
    else:
        print(f"measuring each layer's K and V cost in the simulator ({layer_types.CALIBRATION}) ...", flush=True)
        try:
            sens = layer_types.calibrate(args.model)
        except ValueError as e:
            ap.error(f"{args.model}: {e}")
        sens.save(path)
        print(f"sensitivities: {path}")
    spec = layer_types.allocate(sens, args.bits, args.ctx)       # ValueError (exit 1) if the budget is too small
    cfg = cache_config.parse(spec)
    kld = sens.predicted(cfg.layer_types(sens.n_layer))
    print(f"{spec}: {cfg.bits(args.ctx, n_layer=sens.n_layer):.3f} bits/value at {args.ctx} tokens, mean KLD "
          f"{kld:.4f} predicted (cost model over the simulator's sensitivities; {sens.base} everywhere: "
          f"{sens.base_kld:.4f} measured there)")
    print(recommend.fragment(spec, args.centers))
    return 0
