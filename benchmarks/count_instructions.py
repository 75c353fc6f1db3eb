"""Instructions per call of the deployment files with AVX2 kernels, counted by valgrind: a look at
an AVX2-only CPU from a machine that has AVX-512, and one that this machine's noise cannot move.

    python benchmarks/bench_inference.py --rounds 0 --work_dir DIR     # build the files once
    python benchmarks/count_instructions.py --work_dir DIR --artifacts "2-2-8 ONNX (calibrated)" \\
        "int8 ONNX (dynamic)"                                 # count (minutes per MiniLM-L6 file)
    python benchmarks/count_instructions.py --work_dir DIR --models BERT-base --shapes 1x128 1x32 \\
        --artifacts ... --append                                        # add rows to the same table
    python benchmarks/count_instructions.py --work_dir DIR --artifacts "fp32 MINDIR" --shapes 1x128 \\
        1x32 --append                                  # a MINDIR in MindSpore (~10 min per shape)

valgrind runs a program tens of times slower, and float FMA code slower still: the MiniLM-L6 fp32
ONNX model's 8 x 128 count took ~50 min here (its 1 x 128 and 1 x 32 ~5 min); BERT-base asks ~7x
MiniLM-L6's instructions per call.

valgrind's CPU (VEX) implements x86-64 up to AVX2 and reports no AVX-512 in CPUID, so ONNX Runtime,
which picks its kernels from CPUID when a session starts, runs its AVX2 kernels under it, and so do
MindSpore's oneDNN kernels (an AVX-512 instruction would stop the run); each worker records the
features numpy's CPUID probe saw there, as evidence.

How a call is counted, one thread (ONNX Runtime: one intra-op thread, no spinning; MindSpore:
``threads_num(1)``), so that the count is the work, not a thread pool's waiting; same inputs as
bench_inference.py:
  .onnx    one process under `valgrind --tool=callgrind`: --warm calls (the first call's work), then
           --calls counted calls between two markers (callgrind zeroes its counters when
           os.getppid() is called and dumps them when os.getpgid() is, functions nothing else here
           calls), so the count holds those calls alone, not the start-up or the model load.
  .mindir  MindSpore runs its kernels on threads of its own, which the markers, acting on the
           calling thread, miss: two whole runs instead, --warm calls and --warm + --calls calls;
           the count is their difference. MiniLM-L6's fp32 MINDIR at 1 x 32, with MindSpore's default
           threads: two runs of the same calls differed by 0.1 M instructions in 7,400 M, calls 2-3
           and 4-5 by 0.4% (136.4 and 136.9 M per call); with one thread, the table's: 136.7 M.

What a count is and is not: instructions retired, not time. Two files that run the same GEMM
kernel (the students and int8 `quantize_dynamic` both run MLAS's u8 x s8 GEMM) spend about the
same time per GEMM instruction; elementwise passes over memory spend more time per instruction
than GEMMs, and a float FMA does 8 multiply-adds where an AVX2 u8 x s8 step does 32 in three
instructions. Read a ratio of counts as the work each file asks of an AVX2 CPU, next to the AVX2
latency table (measured on a real AVX2 CPU, older files), not as a latency.
Results: benchmarks/results/instructions_avx2_valgrind.json; --write_docs puts the table into
docs/deployment.md.
"""
import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_inference import FILES, INPUTS, cpu_info, replace_between  # noqa: E402
from common import read_result, write_result  # noqa: E402

ARTIFACTS = list(FILES)  # bench_inference.py's files, MINDIRs first
ONNX_ARTIFACTS = [a for a in FILES if FILES[a].endswith(".onnx")]
OUT = os.path.join(ROOT, "benchmarks", "results", "instructions_avx2_valgrind.json")
DOCS = os.path.join(ROOT, "docs", "deployment.md")
# numpy's names for the CPUID features that decide ONNX Runtime's int8 kernels
SEEN = ("AVX2", "FMA3", "AVX512F", "AVX512_ICL", "AVX512_SPR")


def worker(path: str, batch: int, seq: int, warm: int, calls: int) -> None:
    """Open path with one thread (.onnx as predict.py does, .mindir as bench_inference.py does),
    run warm + calls calls (.onnx: the calls between the markers), print what CPUID said."""
    import numpy as np
    rng = np.random.RandomState(0)  # bench_inference.py's inputs
    ids = rng.randint(1000, 30000, (batch, seq)).astype(np.int32)
    mask, seg = np.ones_like(ids), np.zeros_like(ids)
    if path.endswith(".mindir"):
        import mindspore as ms
        from bench_inference import open_model
        ms.set_device("CPU")
        ms.device_context.cpu.op_tuning.threads_num(1)
        run = open_model(path)
        for _ in range(warm + calls):
            run(ids, mask, seg)
    else:
        import onnxruntime as ort
        from src.deploy import onnx_feed, session_options
        opts = session_options(threads=1)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = onnx_feed(ids, mask, seg)
        for _ in range(warm):
            sess.run(["logits"], feed)
        os.getppid()  # callgrind zeroes its counters here (--zero-before)
        for _ in range(calls):
            sess.run(["logits"], feed)
        os.getpgid(0)  # ... and writes them out here (--dump-before)
    from numpy.core._multiarray_umath import __cpu_features__ as feats
    print(json.dumps({k: bool(feats.get(k)) for k in SEEN}))


def _callgrind(path: str, batch: int, seq: int, warm: int, calls: int, markers: bool) -> tuple:
    """(instructions, numpy's CPUID view) of one worker run under callgrind: with markers, those
    of its first dump (the calls between the markers), else the whole run's."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        if markers:
            cmd += ["--zero-before=*getppid", "--dump-before=*getpgid"]
        cmd += [sys.executable, os.path.abspath(__file__), "--worker", path, "--batch", str(batch),
                "--seq", str(seq), "--warm", str(warm), "--calls", str(calls)]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if p.returncode != 0:
            raise RuntimeError(f"valgrind on {path} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
        with open(out + ".1" if markers else out) as f:  # markers: the first dump, the counted calls
            text = f.read()
    total = re.search(r"^summary: (\d+)", text, re.M)
    if markers:
        m = re.search(r"^desc: Trigger: --dump-before=(\S+)", text, re.M)
        if not (m and "getpgid" in m.group(1) and total):
            raise RuntimeError(f"valgrind on {path}: no counted calls in its first dump:\n{text[:500]}")
    elif not total:
        raise RuntimeError(f"valgrind on {path}: no instruction total in its output:\n{text[:500]}")
    return int(total.group(1)), json.loads(p.stdout.strip().splitlines()[-1])


def count(path: str, batch: int, seq: int, warm: int, calls: int) -> tuple:
    """(instructions of `calls` calls after `warm` ones, numpy's CPUID view under valgrind)."""
    if not path.endswith(".mindir"):
        return _callgrind(path, batch, seq, warm, calls, markers=True)
    # MindSpore's kernels run on its own threads, outside the markers' reach: the difference of
    # two whole runs, the same start-up and warm-up in both
    base, seen = _callgrind(path, batch, seq, warm, 0, markers=False)
    total, _ = _callgrind(path, batch, seq, warm, calls, markers=False)
    return total - base, seen


def _read_table(path: str) -> dict:
    try:
        return read_result(path)
    except ValueError as e:  # missing or damaged: named, and nothing is written
        sys.exit(str(e))


def render(record: dict) -> str:
    mindspore = f", the MINDIRs with MindSpore {record['mindspore']}'s" if "mindspore" in record else ""
    lines = [f"Instructions per call with ONNX Runtime {record['onnxruntime']}'s AVX2 kernels{mindspore} (valgrind "
             f"{record['valgrind']}, CPUID as seen under it: {record['cpuid_under_valgrind']}), millions; "
             f"in brackets: the count over int8 `quantize_dynamic`'s. Commit {record['commit']}, commands: "
             + "; ".join(f"`{c}`" for c in (record.get("commands") or [record["command"]])) + ".", "",
             "| model | artifact | " + " | ".join(record["shapes"]) + " |",
             "|---|---|" + "---:|" * len(record["shapes"])]
    models = ["MiniLM-L6", "BERT-base"]
    for row in sorted(record["rows"], key=lambda r: (models.index(r["model"]), ARTIFACTS.index(r["artifact"]))):
        base = next((r["minstr"] for r in record["rows"]
                     if r["model"] == row["model"] and r["artifact"] == "int8 ONNX (dynamic)"), {})
        cells = [("not counted" if s not in row["minstr"] else f"{row['minstr'][s]:.1f}"
                  + (f" ({row['minstr'][s] / base[s]:.2f})" if s in base else "")) for s in record["shapes"]]
        lines.append(f"| {row['model']} | {row['artifact']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work_dir", help="bench_inference.py's --work_dir, holding <model>/<file>.onnx")
    ap.add_argument("--models", nargs="+", default=["MiniLM-L6"])
    ap.add_argument("--artifacts", nargs="+", default=ONNX_ARTIFACTS, choices=ARTIFACTS,
                    help="default: the ONNX files (a MINDIR is counted from two whole runs: slower)")
    ap.add_argument("--shapes", nargs="+", default=[f"{b}x{s}" for b, s in INPUTS], help="BATCHxLENGTH ...")
    ap.add_argument("--warm", type=int, default=2, help="calls before the counted ones (first-call work)")
    ap.add_argument("--calls", type=int, default=3, help="counted calls")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="valgrind processes at once")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--append", action="store_true",
                    help="keep --out's rows of other files and its notes (a table counted in parts)")
    ap.add_argument("--write_docs", action="store_true")
    ap.add_argument("--render", action="store_true", help="only rewrite the docs table from --out")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if any(not re.fullmatch(r"[1-9]\d*x[1-9]\d*", sh) for sh in args.shapes):
        ap.error(f"--shapes takes BATCHxLENGTH values such as 1x128, got {' '.join(args.shapes)}")
    if args.worker:
        return worker(args.worker, args.batch, args.seq, args.warm, args.calls)
    if args.render:
        return replace_between(DOCS, "<!-- instructions:begin -->", "<!-- instructions:end -->", render(_read_table(args.out)))
    if not args.work_dir:
        ap.error("--work_dir is required (the folder bench_inference.py --rounds 0 built)")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    import onnxruntime
    version = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    record = {"benchmark": "instructions per call with AVX2 kernels (ONNX Runtime; MindSpore for MINDIRs), "
                           "under valgrind",
              "cpu": cpu_info(), "onnxruntime": onnxruntime.__version__, "valgrind": version,
              "warm_calls": args.warm, "counted_calls": args.calls, "threads": 1,
              "shapes": args.shapes, "rows": [], "commands": []}
    if args.append and os.path.isfile(args.out):
        old = _read_table(args.out)
        if (old["onnxruntime"], old["valgrind"]) != (record["onnxruntime"], record["valgrind"]):
            sys.exit(f"{args.out} was counted with ONNX Runtime {old['onnxruntime']} and {old['valgrind']}: "
                     "not one table with this run")
        # the table's other keys (notes, what was not counted) stay; its rows of these files are replaced
        record = {**old, **{k: record[k] for k in ("benchmark", "cpu", "warm_calls", "counted_calls", "threads")}}
        record["rows"] = [r for r in old["rows"] if (r["model"], r["artifact"]) not in
                          {(m, a) for m in args.models for a in args.artifacts}]
        record["shapes"] = old["shapes"] + [sh for sh in args.shapes if sh not in old["shapes"]]
        record["commands"] = list(old.get("commands", []))
    if any(FILES[a].endswith(".mindir") for a in args.artifacts):
        import mindspore
        if record.get("mindspore", mindspore.__version__) != mindspore.__version__:
            sys.exit(f"{args.out}'s MINDIRs were counted with MindSpore {record['mindspore']}: "
                     "not one table with this run")
        record["mindspore"] = mindspore.__version__
    record["commands"].append("python " + shlex.join(sys.argv))
    paths = {}
    for model in args.models:
        for artifact in args.artifacts:
            paths[model, artifact] = os.path.join(args.work_dir, model, FILES[artifact])
            if not os.path.isfile(paths[model, artifact]):
                sys.exit(f"{paths[model, artifact]}: not found (build the files with bench_inference.py "
                         f"--rounds 0 --work_dir {args.work_dir})")
    # instruction counts do not depend on what else runs: --jobs valgrind processes at once
    shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes]
    runs = [(key, b, s) for key in paths for b, s in shapes]
    with ThreadPoolExecutor(args.jobs) as pool:
        counted = pool.map(lambda r: count(paths[r[0]], r[1], r[2], args.warm, args.calls), runs)
        for model, artifact in paths:  # in the order of runs, as they finish
            row = {"model": model, "artifact": artifact, "file": FILES[artifact], "minstr": {}}
            for b, s in shapes:
                n, seen = next(counted)
                row["minstr"][f"{b}x{s}"] = n / args.calls / 1e6
                record["cpuid_under_valgrind"] = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in seen.items())
            print(f"{model} {artifact}: " + ", ".join(f"{k} {v:.1f}" for k, v in row["minstr"].items())
                  + " M instructions per call", flush=True)
            record["rows"].append(row)
            write_result(args.out, record)  # each finished file is kept
    if args.write_docs:
        replace_between(DOCS, "<!-- instructions:begin -->", "<!-- instructions:end -->", render(_read_table(args.out)))


if __name__ == "__main__":
    main()
