"""Interleaved latency of several MINDIR files in ONE process: an A/B comparison of exports made
by different commits (e.g. before and after a change to the quantizers), call by call, so that the
machine's drift hits every file alike. Also reports which files give identical logits.

    python benchmarks/compare_mindir.py --files fp32=A/fp32.mindir before=A/student.mindir \
        after=B/student.mindir --out benchmarks/results/mindir_ab_cpu.json

Random token ids; MiniLM-L6-shaped inputs at 1 x 128, 8 x 128 and 1 x 32. Pause other work.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_result  # noqa: E402

SHAPES = ((1, 128, 30), (8, 128, 8), (1, 32, 40))  # batch, length, timed calls per file


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="+", required=True, help="name=path.mindir ...")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    files = {}
    for item in args.files:
        name, sep, path = item.partition("=")
        if not sep or not os.path.isfile(path):
            ap.error(f"--files takes name=path with an existing file, got {item!r}")
        files[name] = path
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE)
    cells = {k: ms.nn.GraphCell(ms.load(v)) for k, v in files.items()}
    rng = np.random.default_rng(0)
    result = {"files": {k: os.path.abspath(v) for k, v in files.items()}, "latency_ms": {}, "identical_logits": {}}
    for b, s, calls in SHAPES:
        args_ = [ms.Tensor(rng.integers(1000, 30000, (b, s)).astype(np.int32)),
                 ms.Tensor(np.ones((b, s), np.int32)), ms.Tensor(np.zeros((b, s), np.int32))]
        outs = {}
        for k, c in cells.items():
            for _ in range(3):  # warm-up
                outs[k] = c(*args_).asnumpy()
        times = {k: [] for k in cells}
        for _ in range(calls):
            for k, c in cells.items():
                t = time.perf_counter()
                c(*args_).asnumpy()
                times[k].append((time.perf_counter() - t) * 1e3)
        shape = f"{b}x{s}"
        result["latency_ms"][shape] = {k: float(np.median(v)) for k, v in times.items()}
        keys = list(outs)
        result["identical_logits"][shape] = [[a, c] for i, a in enumerate(keys) for c in keys[i + 1:]
                                             if np.array_equal(outs[a], outs[c])]
        print(shape, "  ".join(f"{k} {v:.1f} ms" for k, v in result["latency_ms"][shape].items()), flush=True)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
