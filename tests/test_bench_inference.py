"""benchmarks/bench_inference.py: one results file per CPU class, and the README's glance table
built from them, against hand-computed values."""
import os
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_inference as bi  # noqa: E402


def _record(features, fp32_ms, onnx_ms):
    rows = [{"model": "MiniLM-L6", "artifact": a, "file_MB": mb, "peak_rss_MB": rss,
             "latency_ms": {"1x128": ms, "8x128": 8 * ms, "1x32": ms / 4}}
            for a, mb, rss, ms in (("fp32 MINDIR", 91.2, 826, fp32_ms), ("2-2-8 ONNX", 5.7, 142, onnx_ms))]
    return {"cpu": {"model": "x", "cores": 2, "features": features}, "rows": rows}


def test_cpu_class_decides_the_results_file():
    assert bi.isa_class({"features": ["avx", "avx2"]}) == "avx2"
    assert bi.isa_class({"features": ["avx2", "avx512f", "avx512_vnni"]}) == "avx512vnni"
    # AMX's int8 tiles are a kernel class of their own (the Intel Xeon sittings)
    assert bi.isa_class({"features": ["amx_int8", "amx_tile", "avx2", "avx512_vnni"]}) == "amx"
    assert bi.result_path({"features": ["avx2"]}).endswith(os.path.join("results", "inference_cpu_avx2.json"))
    # an AVX-512 CPU measured through the AVX2-only view is a class of its own, not "avx2"
    assert bi.isa_class(bi.cpu_info(avx2_only=True)) == "avx2view"


def test_glance_table_has_one_column_pair_per_cpu_class():
    table = bi.render_glance([_record(["avx2"], 42.0, 21.0), _record(["avx512_vnni"], 45.0, 15.0)])
    lines = table.splitlines()
    assert "AVX2 only" in lines[0] and "AVX-512 VNNI" in lines[0]
    assert lines[0].index("AVX2 only") < lines[0].index("AVX-512 VNNI")
    # 42 / 21 = 2.00x on AVX2, 45 / 15 = 3.00x on VNNI
    assert lines[3] == "| 2-2-8 ONNX | 5.7 MB | 142 MB | 21.0 ms | 2.00x | 15.0 ms | 3.00x |"
    assert lines[2] == "| fp32 MINDIR | 91.2 MB | 826 MB | 42.0 ms | 1.00x | 45.0 ms | 1.00x |"


def test_onnx_profile_groups_kernels_and_leaves_out_the_warmup_calls():
    import profile_onnx as po

    def run(ts):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 900}

    def kernel(name, op, ts, dur):
        return {"cat": "Node", "name": name + "_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}
    events = [run(0), kernel("qkv", "MatMulIntegerToFloat", 10, 5000),  # warm-up call: left out
              run(1000), kernel("qkv", "MatMulIntegerToFloat", 1010, 400), kernel("pv", "MatMulIntegerToFloat", 1020, 100),
              kernel("q", "QuantizeLinear", 1030, 60), kernel("c", "Clip", 1040, 40), kernel("ln", "SkipLayerNormalization", 1050, 200),
              run(2000), kernel("qkv", "MatMulIntegerToFloat", 2010, 600), kernel("pv", "MatMulIntegerToFloat", 2020, 100),
              kernel("q", "QuantizeLinear", 2030, 60), kernel("c", "Clip", 2040, 40), kernel("ln", "SkipLayerNormalization", 2050, 200),
              {"cat": "Node", "name": "qkv_fence_before", "ts": 2011, "dur": 0, "args": {"op_name": "MatMulIntegerToFloat"}}]
    p = po.summarize(events, weight_nodes={"qkv"}, warmup=1)
    # two calls: (400 + 600) / 2 us = 0.5 ms of weight products; P.V 0.1; quantization (60 + 40) us = 0.1
    assert p["calls"] == 2 and p["nodes_per_call"] == 5
    assert p["groups_ms"] == {"weight products": 0.5, "attention products": 0.1, "quantization": 0.1, "other": 0.2}
    assert p["kernel_ms"] == 0.9 and p["ops_ms"]["Clip"] == 0.04
    with pytest.raises(ValueError, match="warm-up"):
        po.summarize(events, {"qkv"}, warmup=3)


def test_changed_predictions_carry_the_reference_margin_and_its_rank():
    import numpy as np
    import deploy_accuracy as da
    ref = np.array([[0.0, 3.0], [1.0, 1.2], [2.0, 0.5], [0.0, 0.05]], np.float32)  # margins 3, 0.2, 1.5, 0.05
    got = np.array([[0.0, 3.0], [1.3, 1.2], [2.0, 0.5], [0.1, 0.05]], np.float32)  # examples 1 and 3 flip
    out = da.changed_predictions(ref, got)
    assert [c["example"] for c in out] == [1, 3]
    assert [c["margin_rank"] for c in out] == [1, 0]  # 0.05 is the smallest margin, 0.2 the next
    assert np.allclose([c["checkpoint_margin"] for c in out], [0.2, 0.05])
    assert da.changed_predictions(ref, ref) == []


def test_compare_latency_reports_every_round_and_which_files_agree(tmp_path, pynative, monkeypatch):
    """Two exports of one network agree bit for bit, a third network does not: the report names
    exactly that pair at every shape, with one median per round and file."""
    import dataclasses
    import json
    import numpy as np
    from conftest import randomize, tiny_config
    from src.config import QuantConfig, RunConfig
    from src.onnx_export import export_onnx
    from src.tinybert_model import BertForSequenceClassification
    import compare_latency
    cfg = dataclasses.replace(tiny_config(), max_position_embeddings=128)  # the script's 128-token batches
    run = RunConfig(task="sst-2", model=cfg, quant=QuantConfig())
    paths = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        net = BertForSequenceClassification(cfg, run.quant)
        randomize(net, np.random.RandomState(seed))
        net.set_train(False)
        paths[name] = export_onnx(net, run, str(tmp_path / f"{name}.onnx"))
    out = tmp_path / "ab.json"
    arenas, real_open = [], compare_latency.open_model
    monkeypatch.setattr(compare_latency, "open_model", lambda p, arena: arenas.append(arena) or real_open(p, arena))
    compare_latency.main(["--files", *(f"{k}={v}" for k, v in paths.items()), "--rounds", "2", "--arena", "none",
                          "--max_token_id", str(cfg.vocab_size), "--out", str(out)])
    rec = json.loads(out.read_text())
    assert arenas == ["none"] * 3 and rec["arena"] == "none"  # every session opened as asked, and recorded
    assert set(rec["identical_logits"]) == {"1x128", "8x128", "1x32"}
    for shape, pairs in rec["identical_logits"].items():
        assert pairs == [["a", "b"]]
        assert all(len(rec["latency_ms_rounds"][shape][k]) == 2 for k in "abc")
        assert rec["latency_ms"][shape]["a"] == pytest.approx(np.median(rec["latency_ms_rounds"][shape]["a"]))
    assert rec["cpuid"]["avx2_only"] is False
    import avx2_only
    if avx2_only.unsupported_reason() is None:
        # --avx2_only: the same comparison in a process that sees no AVX-512 (the script re-runs
        # itself under the view), and bench_inference's worker likewise
        p = subprocess.run([sys.executable, os.path.join("benchmarks", "compare_latency.py"), "--avx2_only",
                            "--files", f"a={paths['a']}", f"c={paths['c']}", "--max_token_id", str(cfg.vocab_size),
                            "--out", str(tmp_path / "view.json")], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        view = json.loads((tmp_path / "view.json").read_text())
        assert view["cpuid"]["avx2_only"] is True and view["cpu"]["view"] == "avx2_only"
        assert view["cpuid"]["cpuid_seen"]["AVX2"] and not view["cpuid"]["cpuid_seen"]["AVX512F"]
        # recorded as typed, though the process was replaced by one under the view
        assert view["command"].startswith(f"python {os.path.join('benchmarks', 'compare_latency.py')} --avx2_only ")
        # the worker draws token ids up to 30000: a network with BERT's vocabulary
        big = dataclasses.replace(cfg, vocab_size=30522)
        net = BertForSequenceClassification(big, run.quant)
        randomize(net, np.random.RandomState(0))
        net.set_train(False)
        os.makedirs(tmp_path / "work" / "MiniLM-L6")
        path = export_onnx(net, dataclasses.replace(run, model=big),
                           str(tmp_path / "work" / "MiniLM-L6" / bi.FILES["2-2-8 ONNX"]))
        seen = bi.run_worker(path, 5, avx2_only=True)["cpuid_seen"]
        assert seen["AVX2"] and not seen["AVX512F"]
        # and the kernel profile
        args = [os.path.join("benchmarks", "profile_onnx.py"), "--avx2_only", "--work_dir", str(tmp_path / "work"),
                "--artifacts", "2-2-8 ONNX", "--calls", "2", "--out", str(tmp_path / "profile.json")]
        p = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        prof = json.loads((tmp_path / "profile.json").read_text())
        assert prof["cpu"]["view"] == "avx2_only" and prof["cpuid"]["avx2_only"] is True
        assert not prof["cpuid"]["cpuid_seen"]["AVX512F"] and prof["rows"][0]["shapes"]["1x128"]["calls"] == 2
        # the recorded command gives back the arguments, the artifact name's space included
        assert shlex.split(prof["command"]) == ["python"] + args


def test_append_result_keeps_earlier_records_and_refuses_a_non_list(tmp_path):
    import json
    from common import append_result
    path = str(tmp_path / "r.json")
    append_result(path, {"graphs": "static", "x": 1})
    append_result(path, {"graphs": "open", "x": 2})
    got = json.load(open(path))
    assert [(r["graphs"], r["x"]) for r in got] == [("static", 1), ("open", 2)]
    assert all("commit" in r and "command" in r for r in got)  # provenance on every record
    (tmp_path / "d.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="no JSON list"):
        append_result(str(tmp_path / "d.json"), {"x": 3})
    assert json.load(open(tmp_path / "d.json")) == {"rows": []}
    (tmp_path / "t.json").write_text('[{"x": 1}, {"x"')  # truncated
    with pytest.raises(ValueError, match="t.json is not valid JSON"):
        append_result(str(tmp_path / "t.json"), {"x": 3})
    assert (tmp_path / "t.json").read_text() == '[{"x": 1}, {"x"'  # left as it was


def test_speed_bench_refuses_a_results_file_it_cannot_append_to_before_measuring(tmp_path):
    import subprocess
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_distill_speed.py"), "--append",
                        "--out", str(bad)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "bad.json holds no JSON list" in p.stderr, p.stderr[-2000:]
    assert bad.read_text() == '{"rows": []}'
