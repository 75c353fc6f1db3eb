"""Turn a finished (or running) train.py / finetune.py output folder into a results row.

    python benchmarks/collect_run.py --run runs/stsb_228_lr1e-4 --teacher_metric 0.85703 \
        --out benchmarks/results/stsb_distill.json

Reads run.json (the flags), metrics.json (every evaluation) and state.json, and writes the
best and final dev metrics, the number of evaluations, the wall time between the first and
last log line, and the command that reproduces the run.
"""
import argparse
import json
import os
import sys
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import git_commit  # noqa: E402


def _log_span(path):
    stamps = []
    with open(path) as f:
        for line in f:
            try:
                stamps.append(datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
            except ValueError:
                continue
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="output folder of train.py or finetune.py")
    ap.add_argument("--teacher_metric", type=float, default=None, help="the teacher's dev value of the selection metric")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    flags = json.load(open(os.path.join(args.run, "run.json")))
    hist = json.load(open(os.path.join(args.run, "metrics.json")))
    entry = "train.py" if "teacher_model" in flags else "finetune.py"
    log = os.path.join(args.run, "train.log" if entry == "train.py" else "finetune.log")
    best = max(hist, key=lambda r: r["select"])
    cmd = ["python", entry] + [f"--{k}" if v is True else f"--{k} {v}" for k, v in sorted(flags.items())
                               if v not in (None, False)]
    commit = git_commit()
    row = {"task": flags["task_name"], "entry": entry, "best": best, "final": hist[-1], "evaluations": len(hist),
           "teacher_select": args.teacher_metric, "wall_seconds": _log_span(log) if os.path.isfile(log) else None,
           "finished": os.path.isfile(os.path.join(args.run, "state.json")) and hist[-1]["step"] == json.load(
               open(os.path.join(args.run, "state.json")))["step"],
           "flags": flags, "command": " ".join(cmd), "machine": f"{os.cpu_count()} cores, CPU, GRAPH_MODE",
           "commit": commit, "note": args.note}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(row, f, indent=2)
    print(json.dumps({k: row[k] for k in ("task", "evaluations", "wall_seconds")}, indent=1))
    print("best:", {k: v for k, v in best.items() if isinstance(v, float)})


if __name__ == "__main__":
    sys.exit(main())
