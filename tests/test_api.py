"""The library API in-process, as a notebook calls it: fine-tune, distil, evaluate, export."""
import csv
import json
import os

import numpy as np
import pytest

from conftest import minilm_slice


@pytest.mark.slow
def test_api_pipeline_in_one_process(tmp_path, glue_dir, graph):
    from src import api
    from src.checkpoint import import_hf
    from src.config import QuantConfig
    from src.glue import convert
    hf = minilm_slice(str(tmp_path / "minilm2"))
    import_hf(hf, "sts-b", str(tmp_path / "bb.ckpt"))
    convert("sts-b", glue_dir, os.path.join(hf, "vocab.txt"), str(tmp_path / "data"), 32, limit=48, progress=False)
    data = str(tmp_path / "data")

    teacher = api.finetune("sts-b", str(tmp_path / "bb.ckpt"), api.Job(data, str(tmp_path / "teacher")),
                           train=api.task_train_config("sts-b", distill=False, max_steps=2, batch_size=16))
    assert teacher["step"] == 2 and teacher["best"] is not None
    job = api.Job(data, str(tmp_path / "student"), eval_batch_size=16)
    student = api.distill("sts-b", str(tmp_path / "teacher" / "best.ckpt"), job, quant=QuantConfig(),
                          train=api.task_train_config("sts-b", max_steps=2, batch_size=16, eval_steps=1))
    # the records decide the length; the task table the learning rate
    cfg = json.load(open(tmp_path / "student" / "best.json"))
    assert cfg["train"]["max_seq_length"] == 32 and cfg["train"]["learning_rate"] == 1e-4
    assert [h["step"] for h in student["history"]] == [1, 2]

    # evaluate: the training run's best, recomputed from the file, and Pearson against numpy on the
    # gold scores read from the tsv itself
    # (the batches of the training run's evaluations: 8-bit activation ranges are per batch)
    res = api.evaluate(str(tmp_path / "student" / "best.ckpt"), data, batch_size=16)
    assert res["task"] == "sts-b" and res["quant"] == "2-2-8"
    best = max(student["history"], key=lambda h: h["select"])  # selection metric: mean of the two correlations
    assert res["select"] == pytest.approx(student["best"], abs=1e-6)
    assert res["pearson"] == pytest.approx(best["pearson"], abs=1e-6)
    from src.deploy import load_predictor
    from src.trainer import predict_records
    scores, _ = predict_records(load_predictor(str(tmp_path / "student" / "best.ckpt")), data, "sts-b", 16,
                                "mindrecord")
    with open(os.path.join(glue_dir, "STS-B", "dev.tsv"), newline="") as f:
        gold = [float(r[-1]) for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    assert res["pearson"] == pytest.approx(np.corrcoef(np.asarray(scores).reshape(-1), gold[:len(scores)])[0, 1],
                                           abs=1e-5)

    # the same folder with another configuration is another run: refused, nothing touched
    with pytest.raises(FileExistsError, match="different run"):
        api.distill("sts-b", str(tmp_path / "teacher" / "best.ckpt"), api.Job(data, str(tmp_path / "student"),
                    resume=True), quant=QuantConfig(act_mode="learned"),
                    train=api.task_train_config("sts-b", max_steps=2, batch_size=16, eval_steps=1))
    # ... and records of another length are named
    with pytest.raises(ValueError, match="max_seq_length 32"):
        api.evaluate(str(tmp_path / "student" / "best.ckpt"), data, max_seq_length=64)

    written = api.export(str(tmp_path / "student" / "best.ckpt"), str(tmp_path / "exp" / "s"), formats=["MINDIR"])
    # the backbone's vocab.txt (import_hf put it beside bb.ckpt) came along through both runs
    assert sorted(os.path.basename(p) for p in written) == ["s.json", "s.manifest.json", "s.mindir", "s.size.json",
                                                            "s.tbq", "vocab.txt"]
    assert (tmp_path / "exp" / "vocab.txt").read_bytes() == open(os.path.join(hf, "vocab.txt"), "rb").read()
    assert api.evaluate(str(tmp_path / "exp" / "s.tbq"), data, batch_size=16)["pearson"] == res["pearson"]


def test_runs_refuse_a_teacher_and_student_of_two_vocabularies(tmp_path):
    from src.api import _vocab_beside
    for name, words in (("t", "[PAD]\na\n"), ("s", "[PAD]\nb\n"), ("u", "[PAD]\na\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "vocab.txt").write_text(words)
    (tmp_path / "none").mkdir()
    t, s, u = (str(tmp_path / n / "best.ckpt") for n in "tsu")
    assert _vocab_beside(t, None) == str(tmp_path / "t" / "vocab.txt")
    assert _vocab_beside(t, u) == str(tmp_path / "t" / "vocab.txt")  # the same words: fine
    assert _vocab_beside(str(tmp_path / "none" / "best.ckpt"), t) == str(tmp_path / "t" / "vocab.txt")
    assert _vocab_beside(str(tmp_path / "none" / "best.ckpt")) is None
    with pytest.raises(ValueError, match="do not share one vocabulary"):
        _vocab_beside(t, s)
