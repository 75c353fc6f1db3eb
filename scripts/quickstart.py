"""The main job on its built-in default: MiniLM-L6 backbone -> STS-B teacher -> 2-2-8 student.

    python scripts/quickstart.py [--data_dir GLUE_DIR] [--output_dir runs/quickstart]

Runs the same commands a user would (import, convert, finetune.py, train.py, eval.py,
export.py) with a reduced schedule (about 15 minutes on 2 CPU cores), then prints the
teacher's and the ternary student's dev metric and the model sizes. Each finished step
leaves a marker, so running it again after an interruption continues where it stopped.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_GLUE = os.path.join(os.path.dirname(ROOT), "shared", "data", "glue")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default=SHARED_GLUE if os.path.isdir(SHARED_GLUE) else None,
                    help="GLUE folder (default: ../shared/data/glue when present)")
    ap.add_argument("--output_dir", default=os.path.join(ROOT, "runs", "quickstart"))
    ap.add_argument("--task_name", default="sts-b")
    ap.add_argument("--hf_dir", default=None, help="Hugging Face BERT folder (default: all-MiniLM-L6-v2 package)")
    ap.add_argument("--max_seq_length", type=int, default=64)
    ap.add_argument("--teacher_steps", type=int, default=100)
    ap.add_argument("--student_steps", type=int, default=40)
    ap.add_argument("--student_lr", type=float, default=None, help="default: train.py's for the task")
    ap.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"])
    ap.add_argument("--overwrite", action="store_true", help="start again from nothing")
    args = ap.parse_args(argv)
    if not args.data_dir:
        ap.error("--data_dir is required (a GLUE folder holding STS-B/train.tsv and dev.tsv)")
    out = os.path.abspath(args.output_dir)
    if args.overwrite and os.path.isdir(out):
        import shutil
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)
    py = sys.executable
    dev = ["--device_target", args.device_target]
    data = os.path.join(out, "data")
    teacher, student = os.path.join(out, "teacher"), os.path.join(out, "student")
    hf = ["--hf_dir", args.hf_dir] if args.hf_dir else []
    steps = [
        ("import", [py, "scripts/import_hf.py", *hf, "--task_name", args.task_name,
                    "--output", os.path.join(out, "backbone", "backbone.ckpt"), "--overwrite"]),
        ("convert", [py, "scripts/convert_glue.py", "--task_name", args.task_name, "--data_dir", args.data_dir,
                     "--vocab_file", os.path.join(out, "backbone", "vocab.txt"), "--output_dir", data,
                     "--max_seq_length", str(args.max_seq_length), "--overwrite"]),
        ("finetune", [py, "finetune.py", *dev, "--task_name", args.task_name,
                      "--model", os.path.join(out, "backbone", "backbone.ckpt"), "--data_dir", data,
                      "--output_dir", teacher, "--learning_rate", "5e-5", "--epoch_size", "1",
                      "--max_steps", str(args.teacher_steps), "--overwrite"]),
        ("distil", [py, "train.py", *dev, "--task_name", args.task_name,
                    "--teacher_model", os.path.join(teacher, "best.ckpt"), "--data_dir", data,
                    "--output_dir", student, "--epoch_size", "1",
                    "--max_steps", str(args.student_steps), "--overwrite"]
                   + (["--learning_rate", str(args.student_lr)] if args.student_lr is not None else [])),
        ("eval", [py, "eval.py", *dev, "--checkpoint", os.path.join(student, "best.ckpt"), "--data_dir", data]),
        ("export", [py, "export.py", *dev, "--checkpoint", os.path.join(student, "best.ckpt"),
                    "--output", os.path.join(out, "export", "student")]),
    ]
    env = dict(os.environ, GLOG_v=os.environ.get("GLOG_v", "3"))
    t0 = time.time()
    for name, cmd in steps:
        marker = os.path.join(out, f".{name}.done")
        if os.path.isfile(marker):
            print(f"== {name}: done before, skipped", flush=True)
            continue
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        if name == "export":
            os.makedirs(os.path.join(out, "export"), exist_ok=True)
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        if rc != 0:
            print(f"quickstart: step {name} failed (exit {rc}); fix it and run again to continue", file=sys.stderr)
            return rc
        open(marker, "w").close()
    summary = summarize(out, args.task_name, time.time() - t0)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    return 0


def summarize(out, task, seconds):
    sys.path.insert(0, ROOT)
    from src.config import get_task
    sel = get_task(task).select
    best = lambda d: max(json.load(open(os.path.join(out, d, "metrics.json"))), key=lambda r: r["select"])  # noqa: E731
    t, s = best("teacher"), best("student")
    ckpt = os.path.join(out, "student", "best.ckpt")
    packed = os.path.join(out, "export", "student.tbq")
    onnx_file = os.path.join(out, "export", "student.onnx")
    line = (f"{task} dev {sel}: teacher (fp32) {t[sel]:.4f}  ternary student (2-2-8) {s[sel]:.4f} | "
            f"fp32 checkpoint {os.path.getsize(ckpt) / 1e6:.1f} MB, packed {os.path.getsize(packed) / 1e6:.1f} MB "
            f"({os.path.getsize(ckpt) / os.path.getsize(packed):.1f}x smaller), integer ONNX "
            f"{os.path.getsize(onnx_file) / 1e6:.1f} MB")
    print("\n" + line + "\n")
    return {"task": task, "metric": sel, "teacher": t, "student": s, "fp32_checkpoint_bytes": os.path.getsize(ckpt),
            "packed_bytes": os.path.getsize(packed), "onnx_bytes": os.path.getsize(onnx_file), "wall_seconds_this_invocation": round(seconds, 1), "summary": line}


if __name__ == "__main__":
    sys.exit(main())
