"""scripts/quickstart.py as a user runs it (its default task, a 2-layer MiniLM, two steps per
training): every step, the summary table, continuing after an interruption, the missing-GLUE message."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, minilm_slice


def quickstart(*args):
    env = dict(os.environ, GLOG_v="3")
    env.pop("GLUE_DIR", None)
    return subprocess.run([sys.executable, "scripts/quickstart.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)


def test_quickstart_without_glue_says_what_to_pass(tmp_path):
    p = quickstart("--output_dir", str(tmp_path / "q"))
    assert p.returncode == 2 and "--data_dir" in p.stderr and "GLUE_DIR" in p.stderr
    assert "gluebenchmark.com" in p.stderr
    p = quickstart("--output_dir", str(tmp_path / "q"), "--data_dir", str(tmp_path))  # no task folder inside
    assert p.returncode == 2 and "train.tsv" in p.stderr and str(tmp_path) in p.stderr
    for flag, value in (("--bucket_width", "-16"), ("--student_steps", "0")):  # refused before anything runs
        p = quickstart("--output_dir", str(tmp_path / "q"), flag, value)
        assert p.returncode == 2 and f"{flag} must be >= " in p.stderr, p.stderr
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
def test_quickstart_runs_every_step_and_continues_after_an_interruption(tmp_path, glue_dir):
    hf = minilm_slice(str(tmp_path / "minilm2"))
    out = tmp_path / "q"
    args = ["--data_dir", glue_dir, "--output_dir", str(out), "--hf_dir", hf, "--teacher_steps", "2", "--student_steps", "2", "--limit", "64"]
    p = quickstart(*args)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = json.load(open(out / "summary.json"))
    metric = s["metric"]
    # the student's number is eval.py's on its best checkpoint, the teacher's its best evaluation
    teacher_best = max(json.load(open(out / "teacher" / "metrics.json")), key=lambda r: r["select"])
    assert s["student"] == json.load(open(out / "student" / "eval.json"))
    assert s["teacher"][metric] == teacher_best[metric]
    assert s["files_bytes"]["student_packed"] == os.path.getsize(out / "export" / "student.tbq")
    assert s["files_bytes"]["student_onnx"] < s["files_bytes"]["teacher_onnx"] / 4
    assert all(v > 0 for v in s["latency_ms_batch1"].values())
    # 4 lengths at most (64 in steps of 16): teacher and student on one static graph per length
    for d in ("teacher", "student"):
        assert json.load(open(out / d / "best.json"))["train"]["bucket_graphs"] == "static", d
    # the student's ONNX model has fixed activation ranges, calibrated on the quickstart's training records
    from src.onnx_export import read_onnx
    meta = {p.key: p.value for p in read_onnx(str(out / "export" / "student.onnx"))[0].metadata_props}
    assert "the train split of " + str(out / "data") in json.loads(meta["calibration"])["source"]
    for line in ("teacher (fp32)", "student (2-2-8)", "packed 2-bit file", "ONNX Runtime latency"):
        assert line in p.stdout, p.stdout[-2000:]
    # the command it offers to try runs as printed (predict.py finds the vocabulary beside the model)
    lines = p.stdout.splitlines()
    cmd = lines[[i for i, ln in enumerate(lines) if ln.startswith("Try the student")][0] + 1].strip()
    assert cmd == s["try"]
    tried = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300)
    from src.config import get_task
    assert tried.returncode == 0, tried.stderr[-2000:]
    assert len(tried.stdout.split()) == 1 and tried.stdout.strip() in get_task("sst-2").labels, tried.stdout
    # an interruption after the export: a second run redoes only what has no marker
    os.remove(out / ".export_teacher.done")
    os.remove(out / "export" / "teacher.onnx")
    p = quickstart(*args)
    assert p.returncode == 0, p.stderr[-3000:]
    skipped = [ln.split(":")[0][3:] for ln in p.stdout.splitlines() if "done before, skipped" in ln]
    assert skipped == ["import", "convert", "finetune", "distil", "eval", "export"]
    assert (out / "export" / "teacher.onnx").is_file()
