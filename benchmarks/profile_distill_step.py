"""Where the time of a distillation step goes: MindSpore's profiler, summed by op type.

    python benchmarks/profile_distill_step.py --seq_length 128 --out benchmarks/results/distill_profile_cpu.json

Same network and batch as bench_distill_speed.py (MiniLM-L6-shaped teacher + 2-2-8 student,
GRAPH_MODE); --warmup untimed steps, then --steps steps under mindspore.Profiler. Writes the
per-step milliseconds of every op type (sum of its kernels' compute time), its share of all
kernel time, and the wall time of the profiled steps.
"""
import argparse
import csv
import glob
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_distill_speed import build_step, random_batch  # noqa: E402
from common import write_result  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"])
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--seq_length", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--quant", default="2-2-8")
    ap.add_argument("--top", type=int, default=25, help="op types listed on stdout")
    ap.add_argument("--out", default="benchmarks/results/distill_profile_cpu.json")
    args = ap.parse_args(argv)

    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target=args.device_target)
    step, cfg = build_step(args.quant)
    batch = random_batch(np.random.RandomState(0), cfg, args.batch_size, args.seq_length)
    for _ in range(args.warmup):
        step(*batch)[0].asnumpy()
    with tempfile.TemporaryDirectory() as tmp:
        prof = ms.Profiler(output_path=tmp)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(*batch)[0].asnumpy()
        wall = (time.perf_counter() - t0) / args.steps
        prof.analyse()
        found = glob.glob(os.path.join(tmp, "**", "cpu_op_type_info_*.csv"), recursive=True)
        if not found:
            raise FileNotFoundError(f"the profiler wrote no cpu_op_type_info csv under {tmp}")
        with open(found[0]) as f:
            per_type = {r["op_type"]: float(r["total_compute_time"]) / args.steps for r in csv.DictReader(f)}
    total = sum(per_type.values())
    ops = sorted(({"op_type": k, "ms_per_step": round(v, 2), "share": round(v / total, 4)}
                  for k, v in per_type.items()), key=lambda r: -r["ms_per_step"])
    for r in ops[:args.top]:
        print(f"{r['op_type']:24s} {r['ms_per_step']:9.1f} ms {100 * r['share']:5.1f}%")
    print(f"kernel time {total:.0f} ms per step; wall {1000 * wall:.0f} ms per step")
    write_result(args.out, {
        "benchmark": "op-type profile of the distillation step", "quant": args.quant,
        "batch_size": args.batch_size, "seq_length": args.seq_length, "profiled_steps": args.steps,
        "wall_ms_per_step": round(1000 * wall, 1), "kernel_ms_per_step": round(total, 1), "ops": ops})


if __name__ == "__main__":
    main()
