"""Where an ONNX model's time goes: ONNX Runtime's kernel profile, grouped by what the kernels do.

    python benchmarks/bench_inference.py --rounds 0 --work_dir DIR    # build the ONNX files once
    python benchmarks/profile_onnx.py --work_dir DIR --write_docs     # profile them

For each ONNX artifact of bench_inference.py (same files, same session options, same inputs) and
each shape, --calls profiled calls after 5 warm-up calls; every kernel's time is summed per call
and put in one of these groups:

  weight products     matrix products with a weight matrix (MatMulIntegerToFloat, MatMulInteger,
                      DynamicQuantizeMatMul, MatMul, Gemm ... whose second input is an initializer);
                      DynamicQuantizeMatMul includes its own activation quantization
  attention products  matrix products of two activations (Q.K^T, P.V)
  quantization        QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, Clip and the per-call
                      range search (Abs, ReduceMax, Min, Div)
  other               LayerNorm, GELU, softmax, embedding gathers, layout (Transpose, Reshape ...)

Kernel times only: the time ONNX Runtime spends between kernels is not in them, and profiling
slows small kernels down, so the totals sit above bench_inference.py's latencies. The groups' shares
are the point. Results: benchmarks/results/onnx_profile_cpu_<isa>.json (one per CPU class, as
for the latency benchmark); --write_docs puts every class's table into docs/deployment.md, --render
only does that. --avx2_only profiles on an AVX2-only view of this CPU (benchmarks/avx2_only.py:
ONNX Runtime's AVX2 kernels on this CPU's cores; results ..._avx2view.json).
"""
import argparse
import collections
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from avx2_only import describe, reexec_if_asked  # noqa: E402
from bench_inference import (FILES, INPUTS, ISA_NAMES, RESULTS, ROOT, cpu_info, isa_class,  # noqa: E402
                             load_results, replace_between)

ONNX_ARTIFACTS = [a for a, f in FILES.items() if f.endswith(".onnx")]
PRODUCTS = {"MatMul", "FusedMatMul", "Gemm", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
            "QGemm", "QLinearMatMul", "MatMulNBits"}
QUANTIZATION = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Clip", "Abs", "ReduceMax", "Min",
                "Div"}
GROUPS = ("weight products", "attention products", "quantization", "other")
DOC = os.path.join(ROOT, "docs", "deployment.md")


def group_of(op_type: str, weight_input: bool) -> str:
    """The group of one kernel. weight_input: its second input is an initializer (a weight matrix)."""
    if op_type in PRODUCTS:
        return "weight products" if weight_input else "attention products"
    return "quantization" if op_type in QUANTIZATION else "other"


def summarize(events, weight_nodes, warmup: int) -> dict:
    """ONNX Runtime profile events -> kernel ms per call, by group and by operator type.

    events: the profile's JSON list; weight_nodes: names of the optimized graph's nodes whose second
    input is an initializer; warmup: how many of the profiled calls (the first) to leave out."""
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    if len(runs) <= warmup:
        raise ValueError(f"the profile holds {len(runs)} calls, not more than the {warmup} warm-up calls")
    start, calls = runs[warmup], len(runs) - warmup
    by_op, by_group, nodes = collections.Counter(), collections.Counter(), 0
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < start:
            continue
        op = e["args"]["op_name"]
        by_op[op] += e["dur"]
        by_group[group_of(op, e["name"][:-len("_kernel_time")] in weight_nodes)] += e["dur"]
        nodes += 1
    per_call = lambda us: round(us / calls / 1000, 4)  # noqa: E731  us summed over calls -> ms per call
    return {"calls": calls, "kernel_ms": per_call(sum(by_op.values())), "nodes_per_call": nodes // calls,
            "groups_ms": {g: per_call(by_group[g]) for g in GROUPS},
            "ops_ms": {op: per_call(us) for op, us in by_op.most_common()}}


def profile(path: str, calls: int, inputs, warmup: int = 5) -> dict:
    """{"BxS": summarize(...)} for one ONNX file: a fresh profiling session per shape."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from src.deploy import session_options
    rng = np.random.RandomState(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for b, s in inputs:
            opts = session_options()
            opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")  # the graph the profile names
            opts.log_severity_level = 3  # errors only: ONNX Runtime warns that such a dump is hardware-specific
            opts.enable_profiling = True
            opts.profile_file_prefix = os.path.join(tmp, f"profile_{b}x{s}")
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            graph = onnx.load(opts.optimized_model_filepath, load_external_data=False).graph
            inits = {i.name for i in graph.initializer}
            weight_nodes = {n.name for n in graph.node if len(n.input) > 1 and n.input[1] in inits}
            feed = {"input_ids": rng.randint(1000, 30000, (b, s)).astype(np.int32),
                    "input_mask": np.ones((b, s), np.int32), "segment_ids": np.zeros((b, s), np.int32)}
            for _ in range(warmup + calls):
                sess.run(None, feed)
            with open(sess.end_profiling()) as f:
                out[f"{b}x{s}"] = summarize(json.load(f), weight_nodes, warmup)
    return out


def render(record: dict) -> str:
    """Markdown: per model, artifact and shape, kernel ms per call by group (and its share)."""
    cpu = record["cpu"]
    lines = [f"ONNX Runtime {record['onnxruntime']}, {cpu['model']} ({ISA_NAMES[isa_class(cpu)]}), {cpu['cores']} "
             f"cores, {record['calls']} profiled calls per shape, commit {record['commit']}, kernel ms per call "
             "(share of the kernel time):", "",
             "| model | artifact | shape | nodes | kernel ms | " + " | ".join(GROUPS) + " |",
             "|---|---|---|---:|---:|" + "---:|" * len(GROUPS)]
    for row in record["rows"]:
        for shape, p in row["shapes"].items():
            cells = [f"{p['groups_ms'][g]:.2f} ({100 * p['groups_ms'][g] / p['kernel_ms']:.0f}%)" for g in GROUPS]
            lines.append(f"| {row['model']} | {row['artifact']} | {shape.replace('x', ' x ')} | {p['nodes_per_call']} | "
                         f"{p['kernel_ms']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work_dir", default=os.path.join(ROOT, "runs", "bench_inference"),
                    help="bench_inference.py's --work_dir, holding <model>/<artifact>.onnx")
    ap.add_argument("--models", nargs="+", default=["MiniLM-L6"])
    ap.add_argument("--artifacts", nargs="+", default=["2-2-8 ONNX (learned)", "int8 ONNX (dynamic)"],
                    choices=ONNX_ARTIFACTS)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--out", default=None, help="default: benchmarks/results/onnx_profile_cpu_<isa>.json")
    ap.add_argument("--write_docs", action="store_true", help="put the tables into docs/deployment.md")
    ap.add_argument("--render", action="store_true", help="only rewrite the tables from the results files")
    ap.add_argument("--avx2_only", action="store_true", help="profile on an AVX2-only view of this CPU")
    args = ap.parse_args(argv)
    reexec_if_asked(args.avx2_only and not args.render, __file__, argv)
    if args.render:
        write_docs()
        return
    paths = [(m, a, os.path.join(args.work_dir, m, FILES[a])) for m in args.models for a in args.artifacts]
    missing = [p for _, _, p in paths if not os.path.isfile(p)]
    if missing:
        sys.exit(f"not found: {', '.join(missing)} (build them with: python benchmarks/bench_inference.py "
                 f"--rounds 0 --work_dir {args.work_dir})")
    cpu = cpu_info(args.avx2_only)
    rows = []
    for m, a, p in paths:
        rows.append({"model": m, "artifact": a, "file": FILES[a], "shapes": profile(p, args.calls, INPUTS)})
        print(f"{m} {a}: " + ", ".join(f"{k} {v['kernel_ms']:.2f} ms" for k, v in rows[-1]["shapes"].items()),
              flush=True)
    import onnxruntime
    from common import provenance, write_result
    out = args.out or os.path.join(RESULTS, f"onnx_profile_cpu_{isa_class(cpu)}.json")
    record = {"benchmark": "ONNX Runtime kernel profile: kernel ms per call, by group and by operator type "
                           "(benchmarks/profile_onnx.py's docstring has the groups)",
              "cpu": cpu, "cpuid": describe(), "onnxruntime": onnxruntime.__version__, "calls": args.calls,
              "rows": rows}
    write_result(out, record)
    record.update(provenance())  # the commit the table names, as written beside the numbers
    print(render(record))
    if args.write_docs:
        write_docs()


def write_docs() -> None:
    """docs/deployment.md: one profile table per CPU class (onnx_profile_cpu_<isa>.json)."""
    records = load_results("onnx_profile_cpu")
    if not records:
        raise SystemExit(f"no onnx_profile_cpu_<isa>.json in {RESULTS} (run the profile first)")
    replace_between(DOC, "<!-- profile:begin -->", "<!-- profile:end -->", "\n\n".join(render(r) for r in records))


if __name__ == "__main__":
    main()
