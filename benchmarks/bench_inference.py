"""CPU inference: file size, peak memory and latency of every deployment artifact and of the
alternatives a user would pick, measured in one sitting, interleaved, each in a fresh process.

    python benchmarks/bench_inference.py                       # build the artifacts, then measure
    python benchmarks/bench_inference.py --teacher T.ckpt --student S.ckpt   # real MiniLM weights

Artifacts, for the MiniLM-L6 shape (6 x 384) and the BERT-base shape (12 x 768):
  fp32 MINDIR          the full-precision network, ms.export, run by mindspore.load + nn.GraphCell
  2-2-8 frozen MINDIR  export.py's MINDIR of the ternary student (weights fixed at q(w))
  2-2-8 frozen MINDIR (calibrated)  the same with fixed activation ranges (export.py --calibration_data)
  2-2-8 ONNX           export.py's integer ONNX model, ONNX Runtime
  2-2-8 ONNX (calibrated) the same student exported with fixed activation ranges measured on sample
                       batches (export.py --calibration_data; here 4 batches of 32 x 128 random tokens)
  2-2-8 ONNX (learned) the same student trained with --act_mode learned: fixed activation ranges, no
                       per-call range search (speed only: its clips are left at their initial values)
  fp32 ONNX            the full-precision network as ONNX (same writer, float config), ONNX Runtime
  int8 ONNX (dynamic)  onnxruntime.quantization.quantize_dynamic of the fp32 ONNX: the usual int8 route
  int8 ONNX (static)   onnxruntime.quantization.quantize_static of the fp32 ONNX (QDQ, uint8 activations,
                       int8 weights, MatMul and Gather; ranges from the calibrated student's 4 batches):
                       fixed activation ranges like the calibrated student, without distillation
Random weights unless checkpoints are given (latency and size do not depend on the values).
Each measurement: a fresh process loads the file (ONNX: with src.deploy.session_options, the options
predict.py uses, for all three ONNX files), runs 5 warm-up calls and --calls timed calls per
shape (median; fewer, at least 5, where they would take over 20 s), and reports its peak
resident memory; --rounds rounds visit the artifacts in rotated order, and the table reports
each artifact's best round (--statistic best; the median over rounds with --statistic median).
Best, because these machines switch between a fast and a slow phase for minutes at a time (the
same file 50% slower): the median over three rounds then says which files drew the slow phase
more often. Every round is kept in the results. Pause other work while it runs.

Results go to benchmarks/results/inference_cpu_<isa>.json, one file per CPU class (avx2: AVX2
only; avx512vnni: AVX-512 VNNI without AMX; amx: with AMX's int8 tiles), because ONNX Runtime's
int8 kernels differ between them. --avx2_only runs every artifact's process on an AVX2-only view
of this CPU (benchmarks/avx2_only.py: CPUID answers without AVX-512, so ONNX Runtime and MindSpore
run their AVX2 kernels, natively, on this machine's cores) and writes inference_cpu_avx2view.json;
--write_docs / --render put every class's table into docs/deployment.md and README.md.
"""
import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from avx2_only import environment, not_taken, seen_features  # noqa: E402  (standard library at import)

SHAPES = {
    "MiniLM-L6": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "BERT-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
INPUTS = [(1, 128), (8, 128), (1, 32)]
ARTIFACTS = ["fp32 MINDIR", "2-2-8 frozen MINDIR", "2-2-8 frozen MINDIR (calibrated)", "2-2-8 ONNX",
             "2-2-8 ONNX (calibrated)", "2-2-8 ONNX (learned)", "fp32 ONNX", "int8 ONNX (dynamic)",
             "int8 ONNX (static)"]
FILES = {"fp32 MINDIR": "fp32.mindir", "2-2-8 frozen MINDIR": "student.mindir",
         "2-2-8 frozen MINDIR (calibrated)": "student_calibrated.mindir", "2-2-8 ONNX": "student.onnx",
         "2-2-8 ONNX (calibrated)": "student_calibrated.onnx", "2-2-8 ONNX (learned)": "student_learned.onnx",
         "fp32 ONNX": "fp32.onnx", "int8 ONNX (dynamic)": "int8_dynamic.onnx",
         "int8 ONNX (static)": "int8_static.onnx"}


RESULTS = os.path.join(ROOT, "benchmarks", "results")
# how the per-round medians of an artifact become its table entry
STATISTICS = {"best": lambda xs: min(xs), "median": lambda xs: statistics.median(list(xs))}
STATISTIC_NAMES = {"best": "best of the rounds", "median": "median over rounds"}
# the CPU classes whose int8 GEMM kernels differ (ONNX Runtime's MLAS picks them at run time: AMX
# tiles where the CPU has them, else AVX-512 VNNI, else AVX2), in the order the tables show them
ISA_NAMES = {"avx2": "AVX2 only (no AVX-512)", "avx2view": "AVX2 kernels on an AVX-512 CPU (CPUID view)",
             "avx512vnni": "AVX-512 VNNI, no AMX", "amx": "AVX-512 VNNI + AMX"}


def isa_class(cpu: dict) -> str:
    if cpu.get("view") == "avx2_only":
        return "avx2view"
    features = cpu["features"]
    if "amx_int8" in features:
        return "amx"
    return "avx512vnni" if "avx512_vnni" in features else "avx2"


def result_path(cpu: dict) -> str:
    return os.path.join(RESULTS, f"inference_cpu_{isa_class(cpu)}.json")


def cpu_info(avx2_only: bool = False) -> dict:
    """The CPU's model, cores and vector features (/proc/cpuinfo: the hardware's, also under
    avx2_only, which records {"view": "avx2_only"}: the processes measured saw AVX2 only)."""
    flags, model = set(), platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    info = {"model": model, "cores": os.cpu_count(),
            "features": sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)}
    return dict(info, view="avx2_only") if avx2_only else info


# ------------------------------------------------------------------------------------------
# Worker: one artifact in a fresh process
# ------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: Linux carries
    ru_maxrss across fork and exec, so a worker started by a large parent would report the
    parent's size."""
    from common import proc_status_mb
    peak = proc_status_mb("VmHWM")
    if peak:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def open_model(path: str, arena: str = "shared"):
    """fn(input_ids, input_mask, segment_ids) -> logits (numpy) of any artifact here, .onnx or
    .mindir, including the ones export.py did not write (fp32 MINDIR, quantize_dynamic's int8).
    arena: ONNX files' memory setting (src.deploy.session_options; the default is what predict.py
    and eval.py use)."""
    if path.endswith(".onnx"):
        import onnxruntime as ort
        from src.deploy import onnx_feed, session_options
        sess = ort.InferenceSession(path, session_options(arena=arena), providers=["CPUExecutionProvider"])
        return lambda a, b, c: sess.run(["logits"], onnx_feed(a, b, c))[0]
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    cell = ms.nn.GraphCell(ms.load(path))
    return lambda a, b, c: cell(ms.Tensor(a), ms.Tensor(b), ms.Tensor(c)).asnumpy()


def worker(path: str, calls: int, inputs, arena: str = "shared") -> dict:
    import numpy as np
    t0 = time.perf_counter()
    fn = open_model(path, arena)
    load_s = time.perf_counter() - t0
    rng = np.random.RandomState(0)
    out = {"load_s": load_s, "latency_ms": {}}
    for b, s in inputs:
        ids = rng.randint(1000, 30000, (b, s)).astype(np.int32)
        mask = np.ones((b, s), np.int32)
        seg = np.zeros((b, s), np.int32)
        for _ in range(5):
            fn(ids, mask, seg)
        times = []
        start = time.perf_counter()
        # --calls calls, or fewer (at least 5) when they would take more than 20 s (BERT-base fp32)
        while len(times) < calls and (len(times) < 5 or time.perf_counter() - start < 20):
            t = time.perf_counter()
            fn(ids, mask, seg)
            times.append((time.perf_counter() - t) * 1000)
        out.setdefault("calls", {})[f"{b}x{s}"] = len(times)
        out["latency_ms"][f"{b}x{s}"] = statistics.median(times)
    out["peak_rss_MB"] = peak_rss_mb()
    out["cpuid_seen"] = seen_features()
    return out


def run_worker(path: str, calls: int, arena: str = "shared", avx2_only: bool = False) -> dict:
    """``worker`` in a fresh process (its own peak memory, no state from earlier models); with
    avx2_only, on the AVX2-only view of this CPU (refused if the process still sees AVX-512)."""
    env = dict(os.environ, GLOG_v="3")
    if avx2_only:
        env = environment(env)
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", path, "--calls", str(calls),
                        "--arena", arena], capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"{path} failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    failed = avx2_only and not_taken(out["cpuid_seen"])
    if failed:
        raise RuntimeError(f"{path}: {failed}")
    return out


# ------------------------------------------------------------------------------------------
# Building the artifacts
# ------------------------------------------------------------------------------------------
def _copy_shared(src, dst) -> None:
    """Copy every parameter of ``src`` that ``dst`` has by name (dst's own extras keep their init)."""
    weights = dict(src.parameters_and_names())
    for n, p in dst.parameters_and_names():
        if n in weights:
            p.set_data(weights[n].data.copy())


def calibration_batches(vocab_size: int):
    """The 4 batches of 32 x 128 random tokens both fixed-range files are calibrated on."""
    import numpy as np
    rng = np.random.RandomState(1)
    return [(rng.randint(1000, vocab_size, (32, 128)).astype(np.int32), np.ones((32, 128), np.int32),
             np.zeros((32, 128), np.int32)) for _ in range(4)]


def quantize_static_int8(fp32_path: str, out_path: str, batches) -> None:
    """ONNX Runtime's static int8 route for the float model, as its documentation gives it for x86:
    pre-processing, then QDQ with uint8 activations and int8 weights, per-tensor MinMax ranges.
    MatMul and Gather only: quantizing every operator type (its default) measured 40% slower here
    (MiniLM-L6, 1 x 128: 5.7 against 4.1 ms), wrapping Add, Softmax and LayerNorm in Q/DQ pairs."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([dict(input_ids=i, input_mask=m, segment_ids=s) for i, m, s in batches])

        def get_next(self):
            return next(self.feeds, None)
    pre = out_path + ".pre.onnx"
    # ONNX Runtime's symbolic shape inference stops at the graph's dynamic Slice of the position table
    quant_pre_process(fp32_path, pre, skip_symbolic_shape=True)
    try:
        quantize_static(pre, out_path, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gather"],
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        os.remove(pre)


def build(model_name: str, folder: str, teacher: str = None, student: str = None) -> dict:
    """Write the artifacts of one model shape into folder; returns what they were made from."""
    import numpy as np
    import mindspore as ms
    from src.checkpoint import load_network
    from src.config import BertConfig, QuantConfig, RunConfig
    from src.deploy import export_artifacts, export_mindir
    from src.onnx_export import export_onnx
    from src.tinybert_model import BertForSequenceClassification
    from onnxruntime.quantization import QuantType, quantize_dynamic
    os.makedirs(folder, exist_ok=True)
    ms.set_context(mode=ms.GRAPH_MODE)
    if teacher and student:
        tnet, trun = load_network(teacher)
        snet, srun = load_network(student)
        source = {"teacher": os.path.abspath(teacher), "student": os.path.abspath(student)}
    else:
        cfg = BertConfig(num_labels=2, **SHAPES[model_name])
        rng = np.random.RandomState(0)
        tnet = BertForSequenceClassification(cfg, QuantConfig.full_precision())
        for _, p in tnet.parameters_and_names():  # BERT-like weights: N(0, 0.05), LayerNorm 1
            p.set_data(ms.Tensor((rng.randn(*p.shape) * 0.05).astype(np.float32)))
        trun = RunConfig(task="sst-2", model=cfg, quant=QuantConfig.full_precision())
        srun = RunConfig(task="sst-2", model=cfg, quant=QuantConfig())
        snet = BertForSequenceClassification(cfg, srun.quant)
        _copy_shared(tnet, snet)
        source = {"weights": "random N(0, 0.05)"}
    # the student's weights in a network with fixed (learned) activation ranges, at their initial values
    lrun = dataclasses.replace(srun, quant=dataclasses.replace(srun.quant, act_mode="learned"))
    lnet = BertForSequenceClassification(lrun.model, lrun.quant)
    _copy_shared(snet, lnet)
    tnet.set_train(False)
    snet.set_train(False)
    lnet.set_train(False)
    export_artifacts(snet, srun, os.path.join(folder, "student"), formats=("ONNX", "MINDIR"))
    export_onnx(lnet, lrun, os.path.join(folder, "student_learned.onnx"))
    batches = calibration_batches(srun.model.vocab_size)
    if srun.quant.act_mode == "symmetric":
        export_artifacts(snet, srun, os.path.join(folder, "student_calibrated"), formats=("ONNX", "MINDIR"),
                         packed=False, calibration=batches, calibration_source="4 batches of 32 x 128 random tokens")
    export_mindir(tnet, os.path.join(folder, "fp32"))
    export_onnx(tnet, trun, os.path.join(folder, "fp32.onnx"))
    quantize_dynamic(os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8_dynamic.onnx"),
                     weight_type=QuantType.QInt8)
    quantize_static_int8(os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8_static.onnx"), batches)
    return source


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work_dir", default=os.path.join(ROOT, "runs", "bench_inference"))
    ap.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--teacher", default=None, help="MiniLM-L6: a full-precision checkpoint (default: random)")
    ap.add_argument("--student", default=None, help="MiniLM-L6: its 2-2-8 student checkpoint")
    ap.add_argument("--artifacts", nargs="+", default=ARTIFACTS, choices=ARTIFACTS)
    ap.add_argument("--rounds", type=int, default=3, help="0: only build the artifacts")
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--statistic", default="best", choices=sorted(STATISTICS),
                    help="over rounds: each artifact's best round, or the median")
    ap.add_argument("--skip_build", action="store_true", help="measure the artifacts already in --work_dir")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/inference_cpu_<isa>.json, <isa> the "
                    "CPU's int8 instruction set (avx2, avx512vnni or amx): one file per CPU class")
    ap.add_argument("--avx2_only", action="store_true", help="measure on an AVX2-only view of this CPU "
                    "(benchmarks/avx2_only.py): ONNX Runtime's and MindSpore's AVX2 kernels on these cores")
    ap.add_argument("--write_docs", action="store_true", help="put the tables into README.md and docs/deployment.md")
    ap.add_argument("--render", action="store_true", help="only rewrite the tables from --out")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--arena", default="shared", help=argparse.SUPPRESS)  # the worker's ONNX memory setting
    args = ap.parse_args(argv)
    if args.render:
        write_tables()
        return
    if args.out is None:
        args.out = result_path(cpu_info(args.avx2_only))
    if args.worker:
        print(json.dumps(worker(args.worker, args.calls, INPUTS, args.arena)))
        return
    from common import provenance
    sources = {}
    for m in args.models:
        folder = os.path.join(args.work_dir, m)
        if not args.skip_build:
            print(f"building {m} artifacts in {folder}", flush=True)
            real = m == "MiniLM-L6" and args.teacher and args.student
            sources[m] = build(m, folder, args.teacher if real else None, args.student if real else None)
    if args.rounds == 0:
        return
    jobs = [(m, a) for m in args.models for a in args.artifacts]
    runs = {job: [] for job in jobs}
    for r in range(args.rounds):
        order = jobs[r % len(jobs):] + jobs[:r % len(jobs)]  # rotated: no artifact always runs first
        for m, a in order:
            res = run_worker(os.path.join(args.work_dir, m, FILES[a]), args.calls, avx2_only=args.avx2_only)
            runs[(m, a)].append(res)
            print(f"round {r + 1} {m:9s} {a:20s} " + " ".join(f"{k} {v:7.2f} ms" for k, v in res["latency_ms"].items())
                  + f"  rss {res['peak_rss_MB']:.0f} MB", flush=True)
    rows = []
    for (m, a), rs in runs.items():
        path = os.path.join(args.work_dir, m, FILES[a])
        rows.append({"model": m, "artifact": a, "file": FILES[a], "file_MB": os.path.getsize(path) / 1e6,
                     "latency_ms": {k: STATISTICS[args.statistic](r["latency_ms"][k] for r in rs) for k in rs[0]["latency_ms"]},
                     "latency_ms_rounds": [r["latency_ms"] for r in rs],
                     "peak_rss_MB": statistics.median(r["peak_rss_MB"] for r in rs),
                     "load_s": statistics.median(r["load_s"] for r in rs)})
    import onnxruntime
    import mindspore
    record = {"date": time.strftime("%Y-%m-%d"), "benchmark": f"CPU inference latency (median of --calls calls, "
                           f"{STATISTIC_NAMES[args.statistic]}), file size (MB = 1e6 bytes), peak RSS of the process "
                           "that loads and runs the file", "statistic": args.statistic,
              "cpu": cpu_info(args.avx2_only), "cpuid_seen": runs[jobs[0]][0]["cpuid_seen"],
              "onnxruntime": onnxruntime.__version__, "mindspore": mindspore.__version__,
              "rounds": args.rounds, "calls": args.calls, "sources": sources, "rows": rows}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({**record, **provenance()}, f, indent=2)
    print(render(record))
    print(f"wrote {args.out}")
    if args.write_docs:
        write_tables()


def render(record: dict) -> str:
    """docs/deployment.md's table: every model, artifact and shape."""
    lines = ["| model | artifact | file | 1 x 128 | 8 x 128 | 1 x 32 | peak RSS |", "|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        lat = r["latency_ms"]
        lines.append(f"| {r['model']} | {r['artifact']} | {r['file_MB']:.1f} MB | {lat['1x128']:.1f} ms | "
                     f"{lat['8x128']:.1f} ms | {lat['1x32']:.1f} ms | {r['peak_rss_MB']:.0f} MB |")
    return "\n".join(lines)


def render_glance(records: list) -> str:
    """README's table: MiniLM-L6 at 1 x 128 on each CPU class, with the speed-up over the fp32 MINDIR."""
    head = "| model file (MiniLM-L6) | size | peak RSS |"
    rule = "|---|---|---|"
    cols = []
    for rec in records:
        rows = {r["artifact"]: r for r in rec["rows"] if r["model"] == "MiniLM-L6"}
        base = rows["fp32 MINDIR"]["latency_ms"]["1x128"] if "fp32 MINDIR" in rows else None
        cols.append((rows, base))
        name = ISA_NAMES[isa_class(rec["cpu"])]
        head += f" 1 x 128, {name} | vs fp32 MINDIR |"
        rule += "---|---|"
    lines = [head, rule]
    for a in ARTIFACTS:
        first = next((rows[a] for rows, _ in cols if a in rows), None)
        if first is None:
            continue
        line = f"| {a} | {first['file_MB']:.1f} MB | {first['peak_rss_MB']:.0f} MB |"
        for rows, base in cols:
            lat = rows[a]["latency_ms"]["1x128"] if a in rows else None
            line += (f" {lat:.1f} ms | {base / lat:.2f}x |" if lat and base else " | |")
        lines.append(line)
    return "\n".join(lines)


def replace_between(path: str, begin: str, end: str, text: str) -> None:
    with open(path) as f:
        page = f.read()
    if begin not in page or end not in page:
        raise ValueError(f"{path} has no {begin} ... {end} markers")
    head, rest = page.split(begin, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def load_results(prefix: str = "inference_cpu") -> list:
    """Every CPU class's latest record (benchmarks/results/<prefix>_<isa>.json), in ISA_NAMES order."""
    records = []
    for isa in ISA_NAMES:
        path = os.path.join(RESULTS, f"{prefix}_{isa}.json")
        if os.path.isfile(path):
            with open(path) as f:
                records.append(json.load(f))
    return records


def write_tables() -> None:
    """docs/deployment.md: one table per CPU class with its sitting's note; README: the glance table."""
    records = load_results()
    if not records:
        raise SystemExit(f"no results to render: none of {', '.join(f'inference_cpu_{i}.json' for i in ISA_NAMES)} "
                         f"in {RESULTS} (run the benchmark first)")
    parts = []
    for record in records:
        cpu = record["cpu"]
        isa = isa_class(cpu)
        note = (f"Measured {record.get('date', '')} on {cpu['model']}, {cpu['cores']} cores "
                f"(CPU features: {', '.join(cpu['features']) or 'none listed'}), onnxruntime {record['onnxruntime']}, "
                f"mindspore {record['mindspore']}, commit {record.get('commit', '?')}: median of {record['calls']} "
                f"calls, {STATISTIC_NAMES[record.get('statistic', 'median')].replace('rounds', str(record['rounds']) + ' rounds')}, each artifact in a fresh process, nothing else "
                f"running. Command: `{record['command']}` (`benchmarks/results/inference_cpu_{isa}.json`).")
        if cpu.get("view") == "avx2_only":
            note += (" Every process ran on the AVX2-only view of this CPU (`benchmarks/avx2_only.py`: CPUID "
                     "without AVX-512, AVX-VNNI or AMX; checked in each process), so ONNX Runtime and MindSpore "
                     "ran their AVX2 kernels on this CPU's cores.")
        parts.append(f"**{ISA_NAMES[isa]}** ({cpu['model']})\n\n" + render(record) + "\n\n" + note)
    replace_between(os.path.join(ROOT, "docs", "deployment.md"), "<!-- inference:begin -->", "<!-- inference:end -->",
                    "\n\n".join(parts))
    replace_between(os.path.join(ROOT, "README.md"), "<!-- glance:begin -->", "<!-- glance:end -->",
                    render_glance(records))


if __name__ == "__main__":
    main()
