"""The quickstart as a newcomer runs it: a fresh clone, `bash scripts/quickstart.sh`, timed from
the clone to the printed table (setup included), repeated --runs times.

    python benchmarks/bench_quickstart.py --data_dir GLUE_DIR --work_dir ../runs/quickstart_bench

Each run clones the committed HEAD into its own folder (no .venv: scripts/setup.sh creates it; pip
downloads or reuses its cache like on any machine), runs the quickstart there and reads its
summary. Appends one record per run to benchmarks/results/quickstart.json as soon as it finishes,
so an interrupted series keeps its finished runs; the series of earlier commits stay in the file
(``earlier``, newest first). Run it with the machine otherwise idle.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from src.config import atomic_write_text  # noqa: E402  (no MindSpore import: config is plain Python)


_PEAK_OF_CHILDREN = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
                     "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
                     "sys.exit(rc)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default=os.environ.get("GLUE_DIR"), help="GLUE folder (default: $GLUE_DIR)")
    ap.add_argument("--work_dir", required=True, help="where the clones go (outside the repository)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--teacher_reference", type=float, default=None,
                    help="the full fine-tuning recipe teacher's dev metric (x100), for the 5-point check")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "quickstart.json"))
    args = ap.parse_args(argv)
    if not args.data_dir:
        ap.error("--data_dir (or GLUE_DIR) is required")
    from bench_inference import cpu_info
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    record = {"benchmark": "bash scripts/quickstart.sh on a fresh clone (setup included), wall time and dev metrics",
              "machine": f"{os.uname().machine}, {os.cpu_count()} cores", "cpu": cpu_info(), "commit": commit,
              "command": "python benchmarks/bench_quickstart.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "targets": {"wall_minutes_max": 20, "student_gap_max_points": 2.0, "teacher_gap_max_points": 5.0},
              "teacher_reference": args.teacher_reference, "runs": []}
    if os.path.isfile(args.out):
        with open(args.out) as f:
            old = json.load(f)
        earlier = old.pop("earlier", [])
        if old.get("commit") == commit:  # continue the series of this commit
            record["runs"] = old["runs"]
        else:  # a new series; the earlier ones stay in the file, newest first
            earlier.insert(0, old)
        record["earlier"] = earlier
    for i in range(len(record["runs"]), args.runs):
        clone = os.path.join(os.path.abspath(args.work_dir), f"{commit}-run{i + 1}")
        if os.path.isdir(clone):
            subprocess.run(["rm", "-rf", clone], check=True)
        t0 = time.time()
        subprocess.run(["git", "clone", "-q", ROOT, clone], check=True)
        log = os.path.join(os.path.abspath(args.work_dir), f"{commit}-run{i + 1}.log")
        peak_file = os.path.join(os.path.abspath(args.work_dir), f"{commit}-run{i + 1}.peak_kib")
        with open(log, "w") as f:
            # through a small parent whose finished children's peak resident memory (the largest
            # process of the quickstart, KiB) is written afterwards
            rc = subprocess.call([sys.executable, "-c", _PEAK_OF_CHILDREN, peak_file,
                                  "bash", "scripts/quickstart.sh", "--data_dir", os.path.abspath(args.data_dir)],
                                 cwd=clone, stdout=f, stderr=subprocess.STDOUT)
        wall = time.time() - t0
        if rc != 0:
            raise SystemExit(f"run {i + 1} failed (exit {rc}); see {log}")
        with open(os.path.join(clone, "runs", "quickstart", "summary.json")) as f:
            s = json.load(f)
        sel = s["metric"]
        run = {"wall_minutes": round(wall / 60, 2), "teacher": round(100 * s["teacher"][sel], 2),
               "student": round(100 * s["student"][sel], 2), "files_bytes": s["files_bytes"],
               "latency_ms_batch1": s["latency_ms_batch1"], "schedule": s["schedule"], "log": log,
               "load_average_at_end": list(os.getloadavg())}
        with open(peak_file) as f:
            run["peak_rss_MB_largest_process"] = round(int(f.read()) / 1024, 1)
        run["student_gap"] = round(run["teacher"] - run["student"], 2)
        record["runs"].append(run)
        atomic_write_text(args.out, json.dumps(record, indent=2))
        print(json.dumps(run), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
