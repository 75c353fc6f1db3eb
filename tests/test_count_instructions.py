"""benchmarks/count_instructions.py: the table's ratios against hand-computed values, and, under real
valgrind, that the count it reports is the work of the counted calls (each costs the same, and the
start-up is not in it) and that
valgrind's CPU hides AVX-512 from the CPUID probe (what makes ONNX Runtime run its AVX2 kernels)."""
import os
import shutil
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import count_instructions as ci  # noqa: E402


def test_table_divides_each_count_by_int8_dynamic_of_the_same_model():
    rows = [{"model": "MiniLM-L6", "artifact": a, "minstr": {"1x128": v, "1x32": v / 4}}
            for a, v in (("int8 ONNX (dynamic)", 40.0), ("2-2-8 ONNX (calibrated)", 30.0))]
    rows.append({"model": "BERT-base", "artifact": "int8 ONNX (dynamic)", "minstr": {"1x128": 100.0, "1x32": 20.0}})
    rows.append({"model": "BERT-base", "artifact": "2-2-8 ONNX (learned)", "minstr": {"1x128": 90.0}})
    record = {"onnxruntime": "1.23.2", "valgrind": "valgrind-3.19.0", "cpuid_under_valgrind": "AVX2 yes",
              "commit": "abc", "commands": ["x"], "shapes": ["1x128", "1x32"], "rows": rows}
    lines = ci.render(record).splitlines()
    # 30 / 40 = 0.75 at both shapes; int8 over itself 1.00; BERT-base divided by its own int8
    assert "| MiniLM-L6 | 2-2-8 ONNX (calibrated) | 30.0 (0.75) | 7.5 (0.75) |" in lines
    assert "| MiniLM-L6 | int8 ONNX (dynamic) | 40.0 (1.00) | 10.0 (1.00) |" in lines
    assert "| BERT-base | int8 ONNX (dynamic) | 100.0 (1.00) | 20.0 (1.00) |" in lines
    assert "| BERT-base | 2-2-8 ONNX (learned) | 90.0 (0.90) | not counted |" in lines
    # a model counted without int8: its counts, no ratio
    record["rows"] = [{"model": "BERT-base", "artifact": "2-2-8 ONNX (learned)", "minstr": {"1x128": 90.0}}]
    assert "| BERT-base | 2-2-8 ONNX (learned) | 90.0 | not counted |" in ci.render(record).splitlines()


def _tiny_model(path):
    import onnx
    from onnx import TensorProto, helper
    w = helper.make_tensor("w", TensorProto.FLOAT, [64, 2], np.random.RandomState(0).randn(128).tolist())
    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["input_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["f", "m"], ["g"]),
             helper.make_node("MatMul", ["g", "w"], ["logits"])]
    ins = [helper.make_tensor_value_info(n, TensorProto.INT32, ["b", 64]) for n in ("input_ids", "input_mask", "segment_ids")]
    graph = helper.make_graph(nodes, "tiny", ins, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind (Debian: apt-get install valgrind)")
def test_counted_instructions_grow_with_the_calls_and_valgrind_hides_avx512(tmp_path):
    pytest.importorskip("onnxruntime")
    path = str(tmp_path / "tiny.onnx")
    _tiny_model(path)
    (c1, seen), (c2, _), (c3, _) = (ci.count(path, 1, 64, 2, n) for n in (1, 2, 3))
    d1, d2 = c2 - c1, c3 - c2
    # every counted call costs the same, and one call's count is one call's work: the start-up and
    # the model load (hundreds of millions of instructions) are not in it, only the markers' own
    # few thousand. This tiny model's call is ~63k instructions, of which a few hundred vary from
    # call to call (seen: 701, 1.1%; the allocator): 5% still tells a call from a start-up.
    assert d1 > 0 and abs(d1 - d2) < 0.05 * d1
    assert abs(c1 - d1) < 0.1 * d1
    assert seen["AVX2"] and not seen["AVX512F"]


def test_a_mindir_is_counted_as_the_difference_of_two_whole_runs(monkeypatch):
    """MindSpore's kernels run on its own threads, which the ONNX markers miss: a MINDIR's count is a
    run of warm + calls calls minus a run of the warm calls alone (start-up and warm-up cancel)."""
    runs = []

    def fake(path, batch, seq, warm, calls, markers):  # a start-up of 5000, 7 per call
        runs.append((warm, calls, markers))
        return 5000 + 7 * (warm + calls), {"AVX2": True}
    monkeypatch.setattr(ci, "_callgrind", fake)
    assert ci.count("m.mindir", 1, 32, 2, 3) == (21, {"AVX2": True})  # 3 calls x 7, no start-up
    assert sorted(runs) == [(2, 0, False), (2, 3, False)]
    runs.clear()
    ci.count("m.onnx", 1, 32, 2, 3)  # an ONNX file: one run, its counted calls between the markers
    assert runs == [(2, 3, True)]


def test_the_mindir_worker_runs_the_file_and_reports_cpuid(tmp_path, graph):
    """The worker's MINDIR path (one MindSpore thread, bench_inference.py's loader) runs the file's
    calls and prints the CPUID view, here without valgrind: this machine's own features."""
    import json
    import subprocess
    import mindspore as ms
    from mindspore import nn, ops

    class Tiny(nn.Cell):  # logits [1, 2] from ids and mask [1, 64]
        def __init__(self):
            super().__init__()
            self.w = ms.Parameter(ms.Tensor(np.random.RandomState(0).randn(64, 2).astype(np.float32)))

        def construct(self, ids, mask, seg):
            return ops.matmul(ops.cast(ids + mask + seg, ms.float32), self.w)
    x = ms.Tensor(np.zeros((1, 64), np.int32))
    path = str(tmp_path / "tiny")
    ms.export(Tiny(), x, x, x, file_name=path, file_format="MINDIR")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "count_instructions.py"), "--worker",
                        path + ".mindir", "--batch", "1", "--seq", "64", "--warm", "1", "--calls", "2"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    from numpy.core._multiarray_umath import __cpu_features__ as feats
    assert seen == {k: bool(feats.get(k)) for k in ci.SEEN}


def test_append_keeps_the_tables_other_rows_and_notes(tmp_path, monkeypatch):
    """--append: a table counted in parts keeps its other files' rows and its notes, replaces the
    rows of the files counted again, and adds the new shapes (counts faked: no valgrind run)."""
    onnxruntime = pytest.importorskip("onnxruntime")
    import json
    (tmp_path / "MiniLM-L6").mkdir()
    for name in ("fp32.onnx", "int8_dynamic.onnx"):
        (tmp_path / "MiniLM-L6" / name).write_bytes(b"")
    out = tmp_path / "table.json"
    out.write_text(json.dumps({
        "onnxruntime": onnxruntime.__version__, "valgrind": "valgrind-test",
        "shapes": ["1x128"], "commands": ["first"], "note": "kept",
        "rows": [{"model": "MiniLM-L6", "artifact": "int8 ONNX (dynamic)", "minstr": {"1x128": 10.0}},
                 {"model": "MiniLM-L6", "artifact": "fp32 ONNX", "minstr": {"1x128": 99.0}}]}))
    monkeypatch.setattr(ci.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(ci.subprocess, "run", lambda *a, **k: type("Done", (), {"stdout": "valgrind-test\n"})())
    monkeypatch.setattr(ci, "count", lambda path, b, s, warm, calls: (6_000_000 * b * s // 32, {"AVX2": True}))
    ci.main(["--work_dir", str(tmp_path), "--artifacts", "fp32 ONNX", "--shapes", "1x32", "--calls", "3",
             "--append", "--out", str(out)])
    table = json.loads(out.read_text())
    assert table["note"] == "kept" and table["shapes"] == ["1x128", "1x32"]
    assert table["commands"][0] == "first" and len(table["commands"]) == 2
    rows = {r["artifact"]: r["minstr"] for r in table["rows"]}
    # 6e6 instructions over 3 counted calls = 2.0 M per call; the old fp32 row is replaced, int8's kept
    assert rows == {"int8 ONNX (dynamic)": {"1x128": 10.0}, "fp32 ONNX": {"1x32": 2.0}}


def test_a_damaged_or_missing_table_is_named_and_the_docs_are_left_alone(tmp_path):
    docs_before = open(ci.DOCS).read()
    bad = tmp_path / "table.json"
    bad.write_text('{"rows": [')  # cut short
    for path in (bad, tmp_path / "missing.json"):
        with pytest.raises(SystemExit, match=str(path)):
            ci.main(["--render", "--out", str(path)])
    with pytest.raises(SystemExit, match="not valid JSON"):
        ci.main(["--render", "--out", str(bad)])
    assert open(ci.DOCS).read() == docs_before
