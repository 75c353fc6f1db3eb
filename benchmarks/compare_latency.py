"""Interleaved latency of several model files in ONE process: an A/B comparison of exports made
by different commits (e.g. before and after a change to the quantizers), in rounds, so that the
machine's drift hits every file alike (between sittings, and between the rounds of one, these
machines' speed moves by 10-20%: more than most single changes). Each round runs every file's
calls in turn, in an order rotated between rounds. Also reports which files give identical logits.

    python benchmarks/compare_latency.py --files fp32=A/fp32.mindir before=A/student.mindir \
        after=B/student.mindir --out benchmarks/results/mindir_ab_cpu.json
    python benchmarks/compare_latency.py --files before=A/student.onnx after=B/student.onnx \
        int8=B/int8_dynamic.onnx --rounds 7 --out benchmarks/results/onnx_ab_cpu.json

.mindir files run in MindSpore (mindspore.load + nn.GraphCell), .onnx files in ONNX Runtime with
the session options eval.py and predict.py use. Random token ids; MiniLM-L6-shaped inputs at
1 x 128, 8 x 128 and 1 x 32; per round and file the median of its calls, reported: the median over
rounds. Pause other work. --avx2_only runs it all on an AVX2-only view of this CPU
(benchmarks/avx2_only.py: ONNX Runtime's and MindSpore's AVX2 kernels, natively).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from avx2_only import describe, reexec_if_asked  # noqa: E402
from bench_inference import cpu_info, open_model  # noqa: E402
from common import named_files, write_result  # noqa: E402
from src.deploy import ARENAS  # noqa: E402

SHAPES = ((1, 128, 30), (8, 128, 8), (1, 32, 40))  # batch, length, timed calls per file and round


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="+", required=True, help="name=path.mindir or name=path.onnx ...")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max_token_id", type=int, default=30000, help="token ids are drawn from [1000, this) "
                    "(MiniLM-L6 and BERT-base vocabularies: 30522), or [0, this) when it is below 1000")
    ap.add_argument("--avx2_only", action="store_true", help="run on an AVX2-only view of this CPU")
    ap.add_argument("--arena", default="shared", choices=ARENAS,
                    help="the ONNX sessions' memory setting (src.deploy.session_options; \"none\": how "
                         "commits before 2026-12-06 ran them)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    reexec_if_asked(args.avx2_only, __file__, argv)
    files = named_files(ap, args.files, (".mindir", ".onnx"))
    if args.rounds < 1 or args.max_token_id < 1:
        ap.error(f"--rounds and --max_token_id must be >= 1, got {args.rounds} and {args.max_token_id}")
    runners = {k: open_model(v, arena=args.arena) for k, v in files.items()}
    rng = np.random.default_rng(0)
    result = {"files": {k: os.path.abspath(v) for k, v in files.items()}, "cpu": cpu_info(args.avx2_only),
              "cpuid": describe(), "rounds": args.rounds, "arena": args.arena,
              "latency_ms": {}, "latency_ms_rounds": {}, "identical_logits": {}}
    for b, s, calls in SHAPES:
        low = 1000 if args.max_token_id > 1000 else 0
        feed = (rng.integers(low, args.max_token_id, (b, s)).astype(np.int32), np.ones((b, s), np.int32),
                np.zeros((b, s), np.int32))  # input_ids, input_mask, segment_ids [b, s]
        outs = {}
        for k, run in runners.items():
            for _ in range(3):  # warm-up
                outs[k] = run(*feed)
        rounds = {k: [] for k in runners}
        names = list(runners)
        for r in range(args.rounds):
            # each file's calls in one block, the order rotated between rounds: alternating call by
            # call, an ONNX Runtime session's threads still spin after its call and slow the next
            # file's call (measured: 1.3x on 2 cores)
            for k in names[r % len(names):] + names[:r % len(names)]:
                times = []
                for _ in range(calls):
                    t = time.perf_counter()
                    runners[k](*feed)
                    times.append((time.perf_counter() - t) * 1e3)
                rounds[k].append(float(np.median(times)))
        shape = f"{b}x{s}"
        result["latency_ms"][shape] = {k: float(np.median(v)) for k, v in rounds.items()}
        result["latency_ms_rounds"][shape] = rounds
        keys = list(outs)
        result["identical_logits"][shape] = [[a, c] for i, a in enumerate(keys) for c in keys[i + 1:]
                                             if np.array_equal(outs[a], outs[c])]
        print(shape, "  ".join(f"{k} {v:.1f} ms" for k, v in result["latency_ms"][shape].items()), flush=True)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
