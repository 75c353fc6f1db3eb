"""Dev metric of a trained student from every file kind: checkpoint, packed .tbq, frozen MINDIR,
integer ONNX, and the ONNX and MINDIR with calibrated activation ranges (the same records, batches
and metric code as eval.py).

    python benchmarks/deploy_accuracy.py --checkpoint runs/bench/sts-b/RUN/best.ckpt \
        --data_dir runs/bench/sts-b/data-128 --output_dir runs/deploy/sts-b

Exports the checkpoint with export.py's code into --output_dir (unless the files are there),
evaluates each file, and appends one JSON line to --results: the metrics per file kind and
their largest difference from the checkpoint's, plus the examples whose prediction differs
(classification; with the checkpoint's margin there and its rank among all margins, to tell a
near-tie from a real error) or the largest score difference (regression).

--teacher CKPT adds what a user would deploy instead of the student (``alternatives`` in the
record): the fp32 teacher as ONNX, and ONNX Runtime's int8 ``quantize_dynamic`` and
``quantize_static`` of it (static ranges from the same training batches the calibrated student
uses), each with its dev metric, its size and its largest metric difference from the fp32 ONNX.

--avx2_only runs it all on an AVX2-only view of this CPU (benchmarks/avx2_only.py): the metrics
that an AVX2-only CPU's kernels give (ONNX Runtime's AVX2 integer GEMM sums in saturating int16),
recorded with what the process saw (``cpuid``).
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def changed_predictions(ref, got) -> list:
    """The examples whose class differs between the reference logits and another file's [N, C]:
    each with the reference's margin (its top logit minus the runner-up: how far the example is
    from the decision boundary) and that margin's rank in the set (0: the smallest)."""
    import numpy as np
    top2 = np.sort(ref, axis=-1)[:, -2:]  # [N, 2]
    margin = top2[:, 1] - top2[:, 0]  # [N]
    rank = np.argsort(np.argsort(margin, kind="stable"), kind="stable")
    return [{"example": int(i), "checkpoint_margin": float(margin[i]), "margin_rank": int(rank[i])}
            for i in np.nonzero(got.argmax(-1) != ref.argmax(-1))[0]]


def alternatives(teacher: str, data_dir: str, out_dir: str, n_batches: int, batch_size: int) -> dict:
    """Dev metrics and sizes of the teacher's fp32 ONNX and of ONNX Runtime's int8 routes for it."""
    import numpy as np
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from bench_inference import open_model, quantize_static_int8
    from src import api
    from src.checkpoint import load_network
    from src.config import get_task
    from src.metrics import compute_metrics
    from src.trainer import predict_records
    _, run = load_network(teacher)
    base = os.path.join(out_dir, "teacher")
    files = {"teacher fp32 ONNX": base + ".onnx", "teacher int8 ONNX (dynamic)": base + "_int8_dynamic.onnx",
             "teacher int8 ONNX (static)": base + "_int8_static.onnx"}
    if not os.path.isfile(base + ".manifest.json"):
        api.export(teacher, base, formats=("ONNX",), packed=False)
    if not os.path.isfile(files["teacher int8 ONNX (dynamic)"]):
        quantize_dynamic(base + ".onnx", files["teacher int8 ONNX (dynamic)"], weight_type=QuantType.QInt8)
    if not os.path.isfile(files["teacher int8 ONNX (static)"]):
        batch = run.train.batch_size if run.train is not None else 32
        quantize_static_int8(base + ".onnx", files["teacher int8 ONNX (static)"],
                             api.sample_batches(data_dir, run.task, batch, n_batches))
    out, logits = {}, {}
    for kind, path in files.items():
        t0 = time.time()
        lg, labels = predict_records(open_model(path), data_dir, run.task, batch_size, "mindrecord")
        m = compute_metrics(run.task, lg, labels)
        logits[kind] = lg
        out[kind] = {"file": os.path.abspath(path), "bytes": os.path.getsize(path), "seconds": round(time.time() - t0, 1),
                     **{k: v for k, v in m.items() if k != "select"}}
        print(f"{kind:28s} " + " ".join(f"{k} {v:.5f}" for k, v in m.items() if isinstance(v, float)), flush=True)
    ref = out["teacher fp32 ONNX"]
    for kind, d in out.items():
        d["max_metric_diff_from_fp32"] = max(abs(d[k] - ref[k]) for k in get_task(run.task).metrics)
        d["max_logit_diff_from_fp32"] = float(np.abs(logits[kind] - logits["teacher fp32 ONNX"]).max())
    return {"teacher": os.path.abspath(teacher), "files": out}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--eval_batch_size", type=int, default=32)
    ap.add_argument("--calibration_batches", type=int, default=16,
                    help="also ONNX and MINDIR models with activation ranges calibrated on this many training batches "
                         "of --data_dir (export.py --calibration_data); 0: not")
    ap.add_argument("--teacher", default=None,
                    help="the fp32 teacher checkpoint: also its fp32 ONNX and ONNX Runtime's int8 routes for it")
    ap.add_argument("--avx2_only", action="store_true", help="run on an AVX2-only view of this CPU")
    ap.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results", "deploy_accuracy.jsonl"))
    args = ap.parse_args(argv)
    from avx2_only import describe, reexec_if_asked
    reexec_if_asked(args.avx2_only, __file__, argv)
    import numpy as np
    from common import provenance
    from src.config import get_task
    from src import api
    from src.deploy import load_predictor
    from src.metrics import compute_metrics
    from src.trainer import predict_records, set_context
    set_context("CPU", 0, "graph")
    base = os.path.join(args.output_dir, "student")
    if not os.path.isfile(base + ".manifest.json"):
        api.export(args.checkpoint, base)
    kinds = {"checkpoint": args.checkpoint, "tbq": base + ".tbq", "frozen MINDIR": base + ".mindir",
             "ONNX": base + ".onnx"}
    if args.calibration_batches:
        calibrated = os.path.join(args.output_dir, "calibrated")
        if not os.path.isfile(calibrated + ".mindir"):
            api.export(args.checkpoint, calibrated, formats=("ONNX", "MINDIR"), packed=False,
                       calibration_data=args.data_dir, calibration_batches=args.calibration_batches)
        kinds["ONNX (calibrated)"] = calibrated + ".onnx"
        kinds["MINDIR (calibrated)"] = calibrated + ".mindir"
    out, logits = {}, {}
    for kind, path in kinds.items():
        t0 = time.time()
        model = load_predictor(path)
        lg, labels = predict_records(model, args.data_dir, model.run.task, args.eval_batch_size, "mindrecord")
        m = compute_metrics(model.run.task, lg, labels)
        logits[kind] = lg
        out[kind] = {"file": os.path.abspath(path), "bytes": os.path.getsize(path), "seconds": round(time.time() - t0, 1),
                     **{k: v for k, v in m.items() if k != "select"}}
        print(f"{kind:18s} " + " ".join(f"{k} {v:.5f}" for k, v in m.items() if isinstance(v, float)), flush=True)
    task = model.run.task
    spec = get_task(task)
    ref = logits["checkpoint"]
    for kind in kinds:
        d = out[kind]
        d["max_metric_diff"] = max(abs(d[k] - out["checkpoint"][k]) for k in spec.metrics)
        d["max_logit_diff"] = float(np.abs(logits[kind] - ref).max())
        if not spec.is_regression:
            d["changed"] = changed_predictions(ref, logits[kind])
            d["predictions_changed"] = len(d["changed"])
    record = {"task": task, "quant": model.run.quant.name, "checkpoint": os.path.abspath(args.checkpoint),
              "data_dir": os.path.abspath(args.data_dir), "results": out, "cpuid": describe(), **provenance()}
    if args.teacher:
        record["alternatives"] = alternatives(args.teacher, args.data_dir, args.output_dir,
                                              args.calibration_batches or 16, args.eval_batch_size)
    os.makedirs(os.path.dirname(args.results) or ".", exist_ok=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
