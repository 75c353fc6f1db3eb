"""The main job on its built-in default: MiniLM-L6 backbone -> SST-2 teacher -> 2-2-8 student.

    python scripts/quickstart.py --data_dir GLUE_DIR [--output_dir runs/quickstart]

Runs the commands a user would (import_hf, convert_glue, finetune.py, train.py, eval.py,
export.py) on a short schedule chosen to finish in under 20 minutes on 2 CPU cores, then prints
the teacher's and the ternary student's metric on the full dev set, the file sizes and the CPU
latency of both models. Each finished step leaves a marker, so running it again after an
interruption continues where it stopped (a step cut short starts again from its beginning).

GLUE_DIR is a folder in the standard GLUE layout (``SST-2/train.tsv``, ``SST-2/dev.tsv``); the
environment variable GLUE_DIR is used when --data_dir is not given.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_HELP = ("a GLUE folder in the standard layout (SST-2/train.tsv and SST-2/dev.tsv): pass --data_dir "
             "or set GLUE_DIR. GLUE is downloadable from https://gluebenchmark.com/tasks (or with the "
             "download_glue_data.py script of the GLUE baselines); docs/training.md has the folder tree")

# The default schedule (measured in benchmarks/results/quickstart.json): SST-2 at length 64 on
# length-grouped batches of 32; the teacher fine-tuned for 1000 steps at lr 1e-4, the student
# distilled for 450 steps at lr 2e-4 (both schedules decay to 0 at their last step). 600 / 300
# steps left the teacher more than 5 points below the full recipe's in 6 of 11 runs.
DEFAULTS = dict(task_name="sst-2", max_seq_length=64, bucket_width=16, teacher_lr=1e-4, teacher_steps=1000,
                student_lr=2e-4, student_steps=450)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default=os.environ.get("GLUE_DIR"), help="GLUE folder (default: $GLUE_DIR)")
    ap.add_argument("--output_dir", default=os.path.join(ROOT, "runs", "quickstart"))
    ap.add_argument("--task_name", default=DEFAULTS["task_name"])
    ap.add_argument("--hf_dir", default=None, help="Hugging Face BERT folder (default: all-MiniLM-L6-v2 package)")
    ap.add_argument("--max_seq_length", type=int, default=DEFAULTS["max_seq_length"])
    ap.add_argument("--bucket_width", type=int, default=DEFAULTS["bucket_width"],
                    help="length-grouped batches (0: pad every batch to --max_seq_length)")
    ap.add_argument("--teacher_lr", type=float, default=DEFAULTS["teacher_lr"])
    ap.add_argument("--teacher_steps", type=int, default=DEFAULTS["teacher_steps"])
    ap.add_argument("--student_lr", type=float, default=DEFAULTS["student_lr"])
    ap.add_argument("--student_steps", type=int, default=DEFAULTS["student_steps"])
    ap.add_argument("--limit", type=int, default=0, help="first N examples per split (smoke tests)")
    ap.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"])
    ap.add_argument("--overwrite", action="store_true", help="start again from nothing")
    args = ap.parse_args(argv)
    for name in ("max_seq_length", "teacher_steps", "student_steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.bucket_width < 0:
        ap.error(f"--bucket_width must be >= 0 (0: no length buckets), got {args.bucket_width}")
    if not args.data_dir:
        ap.error(f"no GLUE folder: {GLUE_HELP}")
    task_dir = _task_folder(args.data_dir, args.task_name)
    missing = [f for f in ("train.tsv", "dev.tsv") if not os.path.isfile(os.path.join(task_dir, f))]
    if missing:
        ap.error(f"{task_dir} has no {' or '.join(missing)}: --data_dir must be {GLUE_HELP}")
    return args


def _task_folder(data_dir: str, task: str) -> str:
    sys.path.insert(0, ROOT)
    from src.config import get_task
    return os.path.join(data_dir, get_task(task).folder)


def steps(n: int):
    """Train for n steps whatever the data size: the learning rate decays to 0 at step n, and the
    model is evaluated once per epoch and at the end (not at the task table's step interval, which
    train.py would use for SST-2: every 300 steps)."""
    return ["--epoch_size", "1000", "--max_steps", str(n), "--eval_step", "0"]


def steps_of(args, out):
    """(name, command) of every step, in order."""
    py = sys.executable
    dev = ["--device_target", args.device_target]
    data, backbone = os.path.join(out, "data"), os.path.join(out, "backbone")
    teacher, student, export = (os.path.join(out, d) for d in ("teacher", "student", "export"))
    hf = ["--hf_dir", args.hf_dir] if args.hf_dir else []
    # Few lengths (the default: up to 64 in steps of 16): one static graph each, faster steps than
    # one open graph (docs/performance.md), each keeping its memory; more lengths: one open graph
    lengths = -(-args.max_seq_length // args.bucket_width) if args.bucket_width > 0 else 1
    buckets = ["--bucket_width", str(args.bucket_width), "--bucket_graphs", "static" if lengths <= 4 else "open"]
    return [
        ("import", [py, "scripts/import_hf.py", *hf, "--task_name", args.task_name,
                    "--output", os.path.join(backbone, "backbone.ckpt"), "--overwrite"]),
        ("convert", [py, "scripts/convert_glue.py", "--task_name", args.task_name, "--data_dir", args.data_dir,
                     "--vocab_file", os.path.join(backbone, "vocab.txt"), "--output_dir", data,
                     "--max_seq_length", str(args.max_seq_length), "--overwrite"]
         + (["--limit", str(args.limit)] if args.limit else [])),
        ("finetune", [py, "finetune.py", *dev, "--task_name", args.task_name,
                      "--model", os.path.join(backbone, "backbone.ckpt"), "--data_dir", data,
                      "--output_dir", teacher, "--learning_rate", str(args.teacher_lr),
                      *steps(args.teacher_steps), *buckets, "--overwrite"]),
        ("distil", [py, "train.py", *dev, "--task_name", args.task_name,
                    "--teacher_model", os.path.join(teacher, "best.ckpt"), "--data_dir", data,
                    "--output_dir", student, "--learning_rate", str(args.student_lr),
                    *steps(args.student_steps), *buckets, "--token_mean", "--overwrite"]),
        ("eval", [py, "eval.py", *dev, "--checkpoint", os.path.join(student, "best.ckpt"), "--data_dir", data,
                  "--output_file", os.path.join(student, "eval.json")]),
        # the ONNX model with activation ranges calibrated on the training data: the fast one
        ("export", [py, "export.py", *dev, "--checkpoint", os.path.join(student, "best.ckpt"),
                    "--output", os.path.join(export, "student"), "--calibration_data", data]),
        # the teacher as fp32 ONNX: the latency baseline of the summary
        ("export_teacher", [py, "export.py", *dev, "--checkpoint", os.path.join(teacher, "best.ckpt"),
                            "--output", os.path.join(export, "teacher"), "--file_format", "ONNX", "--no_packed"]),
    ]


def main(argv=None):
    args = parse_args(argv)
    out = os.path.abspath(args.output_dir)
    if args.overwrite and os.path.isdir(out):
        import shutil
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "export"), exist_ok=True)
    env = dict(os.environ, GLOG_v=os.environ.get("GLOG_v", "3"))
    t0 = time.time()
    for name, cmd in steps_of(args, out):
        marker = os.path.join(out, f".{name}.done")
        if os.path.isfile(marker):
            print(f"== {name}: done before, skipped", flush=True)
            continue
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        if rc != 0:
            print(f"quickstart: step {name} failed (exit {rc}); fix it and run again to continue", file=sys.stderr)
            return rc
        open(marker, "w").close()
    summary = summarize(out, args, time.time() - t0)
    from src.config import atomic_write_text  # summarize() put ROOT on sys.path
    atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=2) + "\n")
    print("\n" + summary["table"])
    print(f"\nTry the student (from {ROOT}):\n  {summary['try']}")
    return 0


def onnx_latency_ms(path: str, length: int, calls: int = 20) -> float:
    """Median latency of one sentence pair of ``length`` tokens (batch 1) in ONNX Runtime."""
    import numpy as np
    sys.path.insert(0, ROOT)
    from src.deploy import OnnxPredictor
    pred = OnnxPredictor(path)
    ids = np.random.RandomState(0).randint(1000, 20000, (1, length)).astype(np.int32)
    mask, seg = np.ones_like(ids), np.zeros_like(ids)
    for _ in range(3):
        pred(ids, mask, seg)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        pred(ids, mask, seg)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def summarize(out, args, seconds):
    sys.path.insert(0, ROOT)
    from src.config import get_task
    sel = get_task(args.task_name).select
    best = lambda d: max(json.load(open(os.path.join(out, d, "metrics.json"))), key=lambda r: r["select"])  # noqa: E731
    t = best("teacher")
    s = json.load(open(os.path.join(out, "student", "eval.json")))  # eval.py on the student's best.ckpt
    size = lambda *p: os.path.getsize(os.path.join(out, *p))  # noqa: E731
    files = {"teacher_checkpoint": size("teacher", "best.ckpt"), "teacher_onnx": size("export", "teacher.onnx"),
             "student_packed": size("export", "student.tbq"), "student_onnx": size("export", "student.onnx")}
    lat = {"teacher_onnx": onnx_latency_ms(os.path.join(out, "export", "teacher.onnx"), args.max_seq_length),
           "student_onnx": onnx_latency_ms(os.path.join(out, "export", "student.onnx"), args.max_seq_length)}
    mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
    rows = [
        ("", "teacher (fp32)", "student (2-2-8)"),
        (f"{args.task_name} dev {sel} ({s['examples']} examples)", f"{100 * t[sel]:.2f}",
         f"{100 * s[sel]:.2f} ({100 * (s[sel] - t[sel]):+.2f})"),
        ("checkpoint / packed 2-bit file", mb(files["teacher_checkpoint"]), mb(files["student_packed"])),
        ("ONNX file", mb(files["teacher_onnx"]), mb(files["student_onnx"])),
        (f"ONNX Runtime latency, 1 x {args.max_seq_length} tokens",
         f"{lat['teacher_onnx']:.1f} ms", f"{lat['student_onnx']:.1f} ms"),
    ]
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"{r[0]:<{width}}  {r[1]:>15}  {r[2]:>18}" for r in rows)
    table += f"\n(this invocation: {seconds / 60:.1f} min; files in {out})"
    return {"task": args.task_name, "metric": sel, "teacher": t, "student": s, "files_bytes": files,
            "latency_ms_batch1": lat, "seq_length": args.max_seq_length,
            "schedule": {k: getattr(args, k) for k in DEFAULTS}, "limit": args.limit,
            "wall_seconds_this_invocation": round(seconds, 1), "table": table,
            "try": try_command(args.task_name, os.path.join(out, "export", "student.onnx"))}


def try_command(task: str, model: str) -> str:
    """A shell command that runs the exported model on one example of the task's shape (predict.py
    reads the vocab.txt that export.py put beside the model)."""
    import shlex
    from src.config import get_task
    pair = get_task(task).columns[1] is not None
    text = "A man is playing a guitar.\\tA man plays the guitar.\\n" if pair else "a gripping , funny film\\n"
    py = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT + os.sep) else sys.executable
    return f"printf '{text}' | {shlex.quote(py)} predict.py --model {shlex.quote(model)} --input -"


if __name__ == "__main__":
    sys.exit(main())
