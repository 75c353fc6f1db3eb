"""Peak resident memory of a distillation, evaluations included: runs train.py as a user would and
samples its memory every half second (benchmarks/results/memory.json).

    python benchmarks/bench_memory.py --teacher_model T.ckpt --data_dir D --name sts-b-padded \
        -- --task_name sts-b --bucket_width 0 --max_steps 40 --eval_step 20
    python benchmarks/bench_memory.py ... --name sts-b-lat-buckets -- --task_name sts-b --ternarizer lat \
        --bucket_width 16 --token_mean --max_steps 120 --eval_step 60
    python benchmarks/bench_memory.py --render      # docs/performance.md's table from the results file

Everything after ``--`` goes to train.py unchanged. The row keeps the peak (VmHWM of the train.py
process), the resident memory at every evaluation (from train.log's timestamps) and the
largest resident memory seen while training between them, so that one sees which phase holds
the memory. Short runs (--max_steps) with two or more evaluations reach the same plateau as a
full run: the graphs and pools are all built by the second evaluation (compare with a full run
once). Rows are appended to the results file, keyed by --name (a new measurement replaces it).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, proc_status_mb, provenance  # noqa: E402

sys.path.insert(0, ROOT)


def measure(train_args, out_dir: str, interval: float = 0.5) -> dict:
    """Run train.py with ``train_args`` into ``out_dir``; returns the memory trace summary."""
    log_path = os.path.join(out_dir, "stdout.log")
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *train_args, "--output_dir", os.path.join(out_dir, "run"),
           "--overwrite"]
    samples = []  # (seconds since start, RSS MiB)
    peak = 0.0
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, GLOG_v="3"))
        while proc.poll() is None:
            peak = max(peak, proc_status_mb("VmHWM", proc.pid))
            samples.append((time.time() - t0, proc_status_mb("VmRSS", proc.pid)))
            time.sleep(interval)
    if proc.returncode != 0:
        with open(log_path) as f:
            raise RuntimeError(f"train.py failed ({proc.returncode}):\n{f.read()[-3000:]}")
    # the evaluations' times from the log: "... INFO eval step N: ..."
    evals = []
    with open(log_path) as f:
        for line in f:
            if " INFO eval step " in line:
                stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
                evals.append((int(line.split(" eval step ")[1].split(":")[0]), stamp - t0))
    at_eval = []
    for step, when in evals:
        near = [mb for s, mb in samples if abs(s - when) <= 2.0]
        at_eval.append({"step": step, "rss_MB": round(max(near), 1) if near else None})
    return {"peak_rss_MB": round(peak, 1),
            "max_sampled_rss_MB": round(max((mb for _, mb in samples), default=0.0), 1),
            "rss_at_evaluations": at_eval, "wall_s": round(time.time() - t0, 1),
            "trace_MB_every_10s": [round(mb) for s, mb in samples[::max(1, int(10 / interval))]]}


def render(record: dict) -> str:
    """docs/performance.md's table, one line per row of the results file (GiB = 2^30 bytes)."""
    lines = ["| run | train.py flags | peak RSS | at the evaluations | commit |", "|---|---|---|---|---|"]
    for r in record["rows"]:
        at = ", ".join(f"step {e['step']}: {e['rss_MB'] / 1024:.2f}" for e in r["rss_at_evaluations"]
                       if e["rss_MB"] is not None)
        lines.append(f"| {r['name']} | `{' '.join(r['train_args'])}` | **{r['peak_rss_MB'] / 1024:.2f} GiB** | "
                     f"{at} GiB | {r['commit']} |")
    return "\n".join(lines)


def write_table(record: dict) -> None:
    from bench_inference import replace_between
    note = ("Command per row: `python benchmarks/bench_memory.py --name RUN --teacher_model $TEACHER --data_dir "
            "$RECORDS --write_docs -- FLAGS`, with $TEACHER the STS-B teacher (`scripts/import_hf.py --hf_dir "
            "$TEACHERS_DIR/sts-b`) and $RECORDS STS-B converted at length 128 (the exact commands are in "
            f"`benchmarks/results/memory.json`); {record['rows'][-1]['machine']}, other work running beside "
            "(memory does not depend on it).")
    replace_between(os.path.join(ROOT, "docs", "performance.md"), "<!-- memory:begin -->", "<!-- memory:end -->",
                    render(record) + "\n\n" + note)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", help="row key, e.g. sts-b-padded")
    ap.add_argument("--teacher_model")
    ap.add_argument("--data_dir")
    ap.add_argument("--work_dir", default=None, help="where the run is written (default: a temporary folder)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "memory.json"))
    ap.add_argument("--write_docs", action="store_true", help="put the table into docs/performance.md")
    ap.add_argument("--render", action="store_true", help="only rewrite the docs table from --out")
    args = ap.parse_args(argv)
    if args.render:
        with open(args.out) as f:
            write_table(json.load(f))
        return
    if not (args.name and args.teacher_model and args.data_dir):
        ap.error("--name, --teacher_model and --data_dir are required (or --render)")
    train_args = ["--teacher_model", args.teacher_model, "--data_dir", args.data_dir, *extra]
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_memory_")
    os.makedirs(work, exist_ok=True)
    result = measure(train_args, work)
    row = {"name": args.name, "train_args": extra, "date": time.strftime("%Y-%m-%d"), **result, **provenance()}
    print(json.dumps(row, indent=1))
    record = {"benchmark": "peak resident memory of train.py (VmHWM), evaluations included", "rows": []}
    if os.path.isfile(args.out):
        with open(args.out) as f:
            record = json.load(f)
    record["rows"] = [r for r in record["rows"] if r["name"] != args.name] + [row]
    from src.config import atomic_write_text
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.write_docs:
        write_table(record)


if __name__ == "__main__":
    main()
