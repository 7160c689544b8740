"""What to run for a budget of bits per value: the measured cache configuration with the lowest mean KLD within it
(llama_polar.recommend). The earlier lines say what was measured; the last line is a shell fragment, environment
assignments then llama.cpp's cache arguments, for llama-cli, llama-server, llama-perplexity and the other tools:

  llama-polar recommend --bits 3.75
  eval "$(llama-polar recommend --bits 4.25 | tail -1 | sed 's/ -ctk/ build\\/bin\\/llama-cli -m m.gguf -ctk/')"
  llama-polar recommend --bits 3.25 --report build/my-report/report.json     # measurements of your own model

The measurements default to the project's report (SmolLM2-135M at 8192 tokens), shipped with the package;
`llama-polar report --out DIR` measures another model or text, and --report reads what it wrote.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from llama_polar import recommend


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", type=float, required=True, help="the budget: bits per cached value, K and V averaged")
    ap.add_argument("--report", type=Path, default=recommend.PACKAGED,
                    help="a report.json of llama-polar report (default: the project's, shipped with the package)")
    ap.add_argument("--centers", type=Path,
                    help="calibrated key centers of the model (llama-polar calibrate): +calib configurations compete too")
    args = ap.parse_args(argv)
    if not args.bits > 0:
        ap.error(f"--bits must be positive, not {args.bits:g}")
    try:
        report = json.loads(args.report.read_text())
        rows = recommend.candidates(report, calibrated=args.centers is not None)
    except (OSError, ValueError, KeyError, TypeError) as e:
        ap.error(f"{args.report}: not a report of llama-polar report ({e})")
    run = recommend.measurement(report)
    best = recommend.choose(rows, args.bits)
    ratio = f", {best.vs_q4_0:.2f}x q4_0's" if best.vs_q4_0 is not None else ""
    tail = f", 99.9th percentile {best.kld_p999:.3f}" if best.kld_p999 is not None else ""
    print(f"measured: {report['model']}, {report['text']}, {run['chunks']} chunks of {run['ctx']} tokens "
          f"({report['date']}, {args.report.name})")
    print(f"{best.spec}: {best.bits:.3f} bits/value, mean KLD {best.kld:.4f}{ratio}{tail}")
    if best.vs_q4_0 is not None and best.vs_q4_0 > 1:
        print(f"note: worse than q4_0 (4.5 bits/value): within {args.bits:g} bits nothing measured beats it")
    print(recommend.fragment(best.spec, args.centers))
    return 0
