"""benchmarks/run_recipes.py: table arithmetic against hand-computed values; a smoke run of the
whole runner (fine-tune -> distil -> export -> row) that resumes without redoing anything."""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT, minilm_slice

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import recipes  # noqa: E402
import recipes_report  # noqa: E402
import run_recipes  # noqa: E402


def _row(task, recipe, seed, teacher, best, packed=5.0, **kw):
    row = dict(task=task, recipe=recipe, seed=seed, learning_rate=1e-4, epochs=3.0, metric="acc",
               teacher=teacher, best=best, final=best, fp32_MB=90.0, packed_MB=packed,
               train_flags=recipes.RECIPES[recipe][0], stage_flags=recipes.STAGES.get(recipe), augment=None)
    row.update(kw)
    return row


def test_table_mean_spread_gap_and_target(tmp_path):
    rows = [_row("rte", "2-2-8", 1, 0.574, 0.560), _row("rte", "2-2-8", 2, 0.574, 0.570),
            _row("rte", "2-2-8", 3, 0.574, 0.565), _row("mrpc", "8-8-8", 42, 0.844, 0.840, packed=23.0,
                                                          samples_per_s=12.0, runner_wall_s=120.0),
            _row("mrpc", "2-2-8", 42, 0.844, 0.800, max_steps=2),  # smoke row: never in the table
            _row("rte", "2-2-8-no-attn", 1, 0.574, 0.550),  # ablation: in the table, not the plot
            dict(_row("rte", "2-2-8", 1, 0.574, 0.580), learning_rate=5e-5)]  # second lr of a recipe
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{recipes_report.BEGIN}\nold\n{recipes_report.END}\nrest\n")
    table, svg = recipes_report.render(str(results), str(readme), str(tmp_path / "p.svg"))
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    lines = [ln for ln in table.splitlines() if ln.startswith("| rte") or ln.startswith("| mrpc")]
    assert len(lines) == 4
    mrpc, rte_lr5, rte, rte_no_attn = lines
    assert "| 5e-05, 3 | 57.40 | 58.00 |" in rte_lr5
    assert "| 2-2-8-no-attn |" in rte_no_attn and "| 55.00 |" in rte_no_attn
    # rte: mean 56.50, sample std of (56.0, 57.0, 56.5) = 0.50, gap 57.40 - 56.50 = +0.90 -> within 1
    assert "| 57.40 | 56.50 ± 0.50 (3) | 56.50 ± 0.50 (3) | +0.90 | 56.68 (lr 5e-5) | yes |" in rte
    # mrpc 8-8-8: 84.40 vs 84.00, gap +0.40; the PyTorch reference is for 2-2-8 only
    assert "| 84.40 | 84.00 | 84.00 | +0.40 | — | yes | 23.00 | 12.0 | 2.0 | 42 |" in mrpc
    # well-formed SVG with one point per Figure-1 recipe and lr + the teacher, per task: rte
    # (teacher, 2-2-8 at two lrs, labelled apart) and mrpc (teacher, 8-8-8); no ablation row
    root = ET.parse(svg).getroot()
    assert set(recipes_report.FIGURE_RECIPES) <= set(recipes.RECIPES)  # no stale name in the plot list
    circles = [e for e in root.iter() if e.tag.endswith("circle")]
    assert len(circles) == 5
    labels = [e.text or "" for e in root.iter() if e.tag.endswith("text")]
    assert not any("no-attn" in t for t in labels) and "8-8-8 (23.0 MB, 84.00)" in labels
    assert "2-2-8, lr 5e-05, 3 ep (5.0 MB, 58.00)" in labels and "2-2-8, lr 0.0001, 3 ep (5.0 MB, 56.50)" in labels


def test_students_of_different_teachers_are_never_averaged(tmp_path):
    # the same recipe, lr and epochs distilled from two teachers (a re-fine-tuned one scored
    # 28.68 instead of 30.04): two table rows with their own gaps, two teacher points in the plot
    rows = [_row("cola", "2-2-8-buckets", 1, 0.3004, 0.2499), _row("cola", "2-2-8-buckets", 2, 0.3004, 0.2633),
            _row("cola", "2-2-8-buckets", 1, 0.2868, 0.2400)]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    readme = tmp_path / "README.md"
    readme.write_text(f"{recipes_report.BEGIN}\n{recipes_report.END}\n")
    table, svg = recipes_report.render(str(results), str(readme), str(tmp_path / "p.svg"))
    lines = [ln for ln in table.splitlines() if ln.startswith("| cola")]
    assert len(lines) == 2
    # 28.68 - 24.00 = +4.68; mean(24.99, 26.33) = 25.66, 30.04 - 25.66 = +4.38
    assert "| 28.68 | 24.00 | 24.00 | +4.68 |" in lines[0] and lines[0].endswith("| 1 |")
    assert "| 30.04 | 25.66 ± 0.95 (2) | 25.66 ± 0.95 (2) | +4.38 |" in lines[1] and lines[1].endswith("| 1, 2 |")
    root = ET.parse(svg).getroot()
    labels = [e.text or "" for e in root.iter() if e.tag.endswith("text")]
    assert "fp32 teacher (90.0 MB, 28.68)" in labels and "fp32 teacher (90.0 MB, 30.04)" in labels
    assert "2-2-8-buckets, teacher 28.68 (5.0 MB, 24.00)" in labels
    assert "2-2-8-buckets, teacher 30.04 (5.0 MB, 25.66)" in labels


def test_rows_are_keyed_by_the_flags_they_ran_with(tmp_path):
    """A row whose recipe name matches but whose flags are not the registry's (measured before the
    recipe changed) is not "done" for the runner, and is its own table row, labelled with its flags."""
    ema = recipes.RECIPES["2-2-8-buckets-ema"][0]
    assert ema == ["--token_mean", "--bucket_width", "16", "--act_mode", "asymmetric_ema", "--act_ema_decay", "0.999"]
    old_flags = ["--token_mean", "--bucket_width", "16", "--act_mode", "asymmetric_ema"]
    now = _row("sts-b", "2-2-8-buckets-ema", 42, 0.857, 0.850)
    before = _row("sts-b", "2-2-8-buckets-ema", 42, 0.857, 0.836, train_flags=old_flags)
    planned = recipes.planned_key("sts-b", "2-2-8-buckets-ema", 42, 1e-4, 3.0)
    assert recipes.row_flags_key(now) == planned and recipes.row_flags_key(before) != planned
    # augmented and two-stage runs: the copies and the stage flags are part of the key
    aug = _row("cola", "2-2-8-buckets-aug", 1, 0.3, 0.25, augment={"copies": 4, "seed": 0})
    assert recipes.row_flags_key(aug) == recipes.planned_key("cola", "2-2-8-buckets-aug", 1, 1e-4, 3.0)
    assert recipes.row_flags_key(dict(aug, augment=None)) == recipes.planned_key("cola", "2-2-8-buckets", 1, 1e-4, 3.0)
    two = _row("rte", "2-2-8-two-stage", 1, 0.5, 0.5)
    assert recipes.row_flags_key(two) != recipes.planned_key("rte", "2-2-8", 1, 1e-4, 3.0)
    results, readme = tmp_path / "r.jsonl", tmp_path / "README.md"
    results.write_text("".join(json.dumps(r) + "\n" for r in (now, before)))
    readme.write_text(f"{recipes_report.BEGIN}\n{recipes_report.END}\n")
    table, _ = recipes_report.render(str(results), str(readme), str(tmp_path / "p.svg"))
    lines = [ln for ln in table.splitlines() if ln.startswith("| sts-b")]
    assert len(lines) == 2  # never one mean of the two
    assert any("| 2-2-8-buckets-ema | " in ln and "| 85.00 |" in ln for ln in lines)
    assert any("| 2-2-8-buckets-ema (ran with `--token_mean --bucket_width 16 --act_mode asymmetric_ema`) |" in ln
               and "| 83.60 |" in ln for ln in lines)


def test_bad_results_line_names_file_and_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(_row("rte", "2-2-8", 1, 0.5, 0.5)) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"r.jsonl:2: not a JSON line"):
        recipes_report.load_rows(str(p))


@pytest.mark.slow
def test_runner_smoke_and_resume(tmp_path, glue_dir):
    hf = minilm_slice(str(tmp_path / "minilm2"))
    results = tmp_path / "rows.jsonl"
    cmd = [sys.executable, "benchmarks/run_recipes.py", "--tasks", "sts-b", "--recipes", "2-2-8", "8-8-8", "2-2-8-two-stage", "2-2-8-buckets-aug",
           "--backbone", hf, "--glue_dir", glue_dir, "--work_dir", str(tmp_path / "work"), "--results", str(results),
           "--limit", "48", "--max_seq_length", "32", "--max_steps", "2", "--epoch_size", "1",
           "--teacher_bucket_width", "16"]
    env = dict(os.environ, GLOG_v="3")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = recipes_report.load_rows(str(results))
    assert [(r["task"], r["recipe"]) for r in rows] == [("sts-b", "2-2-8"), ("sts-b", "8-8-8"),
                                                        ("sts-b", "2-2-8-two-stage"), ("sts-b", "2-2-8-buckets-aug")]
    teacher_eval = json.load(open(tmp_path / "work" / "sts-b" / "teacher-ft" / "best.eval.json"))
    assert json.load(open(tmp_path / "work" / "sts-b" / "teacher-ft" / "run.json"))["bucket_width"] == 16
    assert all(r["teacher_source"].endswith("length buckets of 16") for r in rows)
    for r in rows:
        run_dir = tmp_path / "work" / "sts-b" / f"{r['recipe']}-lr0.0001-e1-s42"
        if r["recipe"] == "2-2-8-two-stage":
            run_dir = run_dir / "stage2"  # the row reports the last stage
        hist = json.load(open(run_dir / "metrics.json"))
        assert r["teacher"] == teacher_eval["pearson"] and r["final"] == hist[-1]["pearson"]
        assert r["best"] == max(hist, key=lambda h: h["select"])["pearson"]
        assert round(r["packed_MB"] * 1e6) == os.path.getsize(run_dir / "export" / "best.tbq")  # MB to 6 places
    ternary, eight, staged, augmented = rows
    # STS-B's default batching is length buckets, but a recipe without bucket flags runs padded
    plain = json.load(open(tmp_path / "work" / "sts-b" / "2-2-8-lr0.0001-e1-s42" / "run.json"))
    bucketed = json.load(open(tmp_path / "work" / "sts-b" / "2-2-8-buckets-aug-lr0.0001-e1-s42" / "run.json"))
    assert (plain["bucket_width"], plain["token_mean"], bucketed["bucket_width"], bucketed["token_mean"]) == (
        0, False, 16, True)
    assert ternary["eval_step"] is None and plain["eval_step"] == 0  # STS-B evaluates per epoch
    # the augmented recipe distils on its own records: the 48 examples plus up to 4 copies each
    aug_meta = json.load(open(tmp_path / "work" / "sts-b" / "data-32-aug4" / "meta.json"))
    assert augmented["augment"]["copies"] == 4 and ternary["augment"] is None
    assert 48 < aug_meta["splits"]["train"]["examples"] <= 48 * 5
    assert json.load(open(tmp_path / "work" / "sts-b" / "2-2-8-buckets-aug-lr0.0001-e1-s42" / "run.json")
                     )["data_dir"].endswith("data-32-aug4")
    assert ternary["packed_MB"] < eight["packed_MB"] < ternary["fp32_MB"]
    # two stages: intermediate terms only, then prediction only from stage 1's last checkpoint
    work = tmp_path / "work" / "sts-b" / "2-2-8-two-stage-lr0.0001-e1-s42"
    s1, s2 = (json.load(open(work / f"stage{k}" / "run.json")) for k in (1, 2))
    assert (s1["pred_weight"], s1["hidden_weight"], s1["attention_weight"]) == (0.0, 1.0, 1.0), s1
    assert (s2["pred_weight"], s2["hidden_weight"], s2["attention_weight"]) == (1.0, 0.0, 0.0), s2
    assert s2["student_model"] == str(work / "stage1" / "last.ckpt") and s1["student_model"] is None
    assert s1["epoch_size"] == s2["epoch_size"] == 0.5
    # everything is done: a second start adds no row and runs no training
    log = tmp_path / "work" / "sts-b" / "runner.log"
    before = log.stat().st_size
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "every requested row" in p.stderr
    assert len(recipes_report.load_rows(str(results))) == 4 and log.stat().st_size == before


def test_unknown_task_and_missing_results_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'sts-x'"):
        run_recipes.main(["--tasks", "sts-x", "--work_dir", str(tmp_path / "w"), "--results", str(tmp_path / "r.jsonl")])
    assert not (tmp_path / "w").exists() and not (tmp_path / "r.jsonl").exists()
    with pytest.raises(FileNotFoundError, match="r.jsonl does not exist"):
        run_recipes.main(["--render", "--results", str(tmp_path / "r.jsonl"), "--readme", str(tmp_path / "README.md")])


@pytest.mark.parametrize("flag,value", [("--eval_step", "-5"), ("--teacher_bucket_width", "-1")])
def test_negative_sizes_are_refused_before_any_work(tmp_path, flag, value):
    p = subprocess.run([sys.executable, "benchmarks/run_recipes.py", flag, value,
                        "--work_dir", str(tmp_path / "work"), "--results", str(tmp_path / "rows.jsonl")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and f"{flag} must be >= 0" in p.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "rows.jsonl").exists()


def test_distillation_lr_defaults_per_task_and_flag_overrides(tmp_path):
    # train.py without --learning_rate: RTE distils at 5e-5 (its best measured, README), the other
    # tasks at 1e-4; an explicit flag wins. The runner names its run folders and rows the same way.
    import train
    from src import cli

    def lr(*extra):
        a = train.parse_args(["--task_name", extra[0], "--teacher_model", "t.ckpt", "--data_dir", "d",
                              "--output_dir", "o", *extra[1:]])
        return cli.train_config(a).learning_rate

    assert (lr("rte"), lr("sts-b"), lr("mrpc"), lr("sst-2")) == (5e-5, 1e-4, 1e-4, 1e-4)
    assert (lr("rte", "--learning_rate", "2e-5"), lr("sts-b", "--learning_rate", "3e-5")) == (2e-5, 3e-5)
    from types import SimpleNamespace
    assert run_recipes.task_lr(SimpleNamespace(learning_rate=None), "rte") == 5e-5
    assert run_recipes.task_lr(SimpleNamespace(learning_rate=None), "cola") == lr("cola")
    assert run_recipes.task_lr(SimpleNamespace(learning_rate=3e-5), "rte") == 3e-5


def test_default_recipe_per_task_follows_the_task_tables_batching():
    assert {t: recipes.default_recipe(t) for t in ("sts-b", "cola", "mrpc", "sst-2", "rte")} == {
        "sts-b": "2-2-8-buckets", "cola": "2-2-8-buckets", "mrpc": "2-2-8", "sst-2": "2-2-8", "rte": "2-2-8"}
    from types import SimpleNamespace
    assert run_recipes.task_eval_step(SimpleNamespace(eval_step=None), "sst-2") == 300
    assert run_recipes.task_eval_step(SimpleNamespace(eval_step=0), "sst-2") == 0


def test_bucket_variants_of_ema_and_ste_mask_reach_the_configs():
    # The bucket variants are the base recipe's flags plus the bucket ones; parsed by train.py
    # they must set exactly the field they name (hand-written expectations, not the table's).
    import train
    from src import cli

    def configs(recipe):
        a = train.parse_args(["--task_name", "sts-b", "--teacher_model", "t.ckpt", "--data_dir", "d",
                              "--output_dir", "o", *recipes.RECIPES[recipe][0]])
        return cli.quant_config(a), cli.distill_config(a), cli.train_config(a)

    q, d, t = configs("2-2-8-buckets-ema")
    assert (q.act_mode, q.ste_mask, d.token_mean, t.bucket_width) == ("asymmetric_ema", True, True, 16)
    assert q.act_ema_decay == 0.999
    q, d, t = configs("2-2-8-buckets-ema-fast")
    assert (q.act_mode, q.act_ema_decay, d.token_mean, t.bucket_width) == ("asymmetric_ema", 0.99, True, 16)
    q, d, t = configs("2-2-8-buckets-no-ste-mask")
    assert (q.act_mode, q.ste_mask, d.token_mean, t.bucket_width) == ("symmetric", False, True, 16)
    q, d, t = configs("2-2-8-buckets")
    assert (q.act_mode, q.ste_mask, d.token_mean, t.bucket_width) == ("symmetric", True, True, 16)
