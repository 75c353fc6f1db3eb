"""benchmarks/probe_lowbit_gemm.py: its MatMulNBits packing against hand-computed bytes and, in
ONNX Runtime, against numpy's product; the students' one-layer graph against numpy; 2-bit recorded
as refused, not raised."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import probe_lowbit_gemm as probe  # noqa: E402

pytest.importorskip("onnxruntime")


def test_pack_nbits_by_hand():
    # one row, K = 32: codes -1, 0, 1, 1, then zeros; 4 bits: stored code + 8, two per byte, low first
    codes = np.zeros((1, 32), np.int8)
    codes[0, :4] = [-1, 0, 1, 1]
    packed, zero = probe.pack_nbits(codes, 4)
    assert packed.shape == (1, 1, 16) and zero.shape == (1, 1)
    assert packed[0, 0, 0] == (8 << 4) | 7 and packed[0, 0, 1] == (9 << 4) | 9
    assert (packed[0, 0, 2:] == 0x88).all() and zero[0, 0] == 8  # one block: its zero point, low nibble
    # 8 bits: one per byte, + 128; two blocks of 32 along K -> two zero points, one byte each
    packed8, zero8 = probe.pack_nbits(np.concatenate([codes, -codes], axis=1), 8)
    assert packed8.shape == (1, 2, 32) and list(packed8[0, 0, :4]) == [127, 128, 129, 129]
    assert list(packed8[0, 1, :4]) == [129, 128, 127, 127] and list(zero8[0]) == [128, 128]
    with pytest.raises(ValueError, match="multiple of 32"):
        probe.pack_nbits(np.zeros((1, 40), np.int8), 4)


def test_candidates_compute_numpys_product():
    # several blocks along K and rows that are not a multiple of any kernel tile
    codes = probe.ternary_codes(24, 64, seed=3)
    alpha = 0.07
    sessions, refused = probe.open_sessions(probe.candidates(codes, alpha), threads=1)
    assert set(refused) == {"MatMulNBits 2 bits, accuracy 0", "MatMulNBits 2 bits, accuracy 4"}
    assert all("4b and 8b" in msg for msg in refused.values())
    x = np.random.default_rng(0).normal(0, 1.0, (5, 64)).astype(np.float32)
    exact = x.astype(np.float64) @ (codes.astype(np.float64) * alpha).T
    for name in ("fp32", "MatMulNBits 4 bits, accuracy 0", "MatMulNBits 8 bits, accuracy 0"):
        np.testing.assert_allclose(sessions[name].run(None, {"x": x})[0], exact, atol=1e-5, err_msg=name)
    # the students' layer: 8-bit codes of x at the fixed step 2.5 / 127 (saturating), times the codes
    step = np.float32(2.5 / 127)
    u = np.clip(np.rint(x / step), -128, 127)
    want = (u.astype(np.float64) @ codes.T.astype(np.float64)) * float(step) * alpha
    got = sessions["students (static int8)"].run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - exact).max() > 1e-3  # 8-bit x: not the float product, so the check can tell
    # the int8-compute routes: within half an activation step per weight
    for name in ("int8 quantize_dynamic", "MatMulNBits 4 bits, accuracy 4"):
        y = sessions[name].run(None, {"x": x})[0]
        assert np.abs(y - exact).max() <= np.abs(x).max() / 127 * alpha * 64, name


@pytest.mark.parametrize("view", [False, True])
def test_script_writes_its_record(tmp_path, view):
    import avx2_only
    if view and avx2_only.unsupported_reason() is not None:
        pytest.skip(f"no AVX2-only view here: {avx2_only.unsupported_reason()}")
    out = tmp_path / "probe.json"
    args = [sys.executable, os.path.join("benchmarks", "probe_lowbit_gemm.py"), "--products", "FFN out",
            "--rows", "3", "--rounds", "2", "--calls", "2", "--out", str(out)] + (["--avx2_only"] if view else [])
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rec = json.loads(out.read_text())
    assert rec["cpuid"]["avx2_only"] is view
    if view:  # what the process saw, recorded: the AVX2 kernels ran
        assert rec["cpuid"]["cpuid_seen"]["AVX2"] and not rec["cpuid"]["cpuid_seen"]["AVX512F"]
    (row,) = rec["rows"]
    assert (row["K"], row["N"], row["M"]) == (1536, 384, 3)
    assert set(row["ms"]) == set(row["max_error"]) == set(probe.candidates(np.zeros((384, 1536), np.int8), 1.0)) - set(
        rec["refused"])
    assert row["max_error"]["fp32"] < 1e-3 and all(t > 0 for t in row["ms"].values())
