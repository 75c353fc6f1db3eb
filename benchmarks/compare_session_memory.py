"""ONNX Runtime's memory settings for the exported models: latency and peak memory per setting.

    python benchmarks/compare_session_memory.py --files cal=DIR/MiniLM-L6/student_calibrated.onnx \
        int8=DIR/MiniLM-L6/int8_dynamic.onnx --rounds 3 --out benchmarks/results/onnx_session_memory_cpu.json

Every (file, setting) runs in a fresh process (bench_inference.py's worker: 5 warm-up and --calls
timed calls at 1 x 128, 8 x 128 and 1 x 32, then the process's peak resident memory), the pairs in
an order rotated between rounds; the result is the median over rounds. The settings are
src.deploy.session_options' ``arena``: ``shared`` (what predict.py and eval.py use: one arena on ONNX
Runtime's environment that grows by exactly what is asked), ``session`` (the session's own arena,
ONNX Runtime's default) and ``none``. Pause other work.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_inference import cpu_info, run_worker  # noqa: E402
from common import named_files, write_result  # noqa: E402
from src.deploy import ARENAS  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="+", required=True, help="name=path.onnx ...")
    ap.add_argument("--arenas", nargs="+", default=list(ARENAS), choices=list(ARENAS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    files = named_files(ap, args.files, (".onnx",))
    if args.rounds < 1 or args.calls < 5:
        ap.error(f"--rounds must be >= 1 and --calls >= 5, got {args.rounds} and {args.calls}")
    jobs = [(f, a) for f in files for a in args.arenas]
    runs = {job: [] for job in jobs}
    for r in range(args.rounds):
        for f, a in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
            res = run_worker(files[f], args.calls, a)
            runs[(f, a)].append(res)
            print(f"round {r + 1} {f} {a}: " + " ".join(f"{k} {v:.2f} ms" for k, v in res["latency_ms"].items())
                  + f"  peak {res['peak_rss_MB']:.0f} MB", flush=True)
    rows = [{"file": f, "arena": a,
             "latency_ms": {k: statistics.median(x["latency_ms"][k] for x in rs) for k in rs[0]["latency_ms"]},
             "peak_rss_MB": statistics.median(x["peak_rss_MB"] for x in rs),
             "rounds": [{"latency_ms": x["latency_ms"], "peak_rss_MB": x["peak_rss_MB"]} for x in rs]}
            for (f, a), rs in runs.items()]
    write_result(args.out, {"benchmark": "ONNX Runtime memory settings: median latency over rounds, peak RSS",
                            "files": {k: os.path.abspath(v) for k, v in files.items()}, "cpu": cpu_info(),
                            "rounds": args.rounds, "calls": args.calls, "rows": rows})


if __name__ == "__main__":
    main()
