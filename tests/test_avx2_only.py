"""benchmarks/avx2_only.py: a process under the AVX2-only view sees AVX2 and no AVX-512 (numpy's own
CPUID probe, against /proc/cpuinfo), ONNX Runtime then runs its AVX2 integer kernel (the int16
saturation that kernel is known for, against the hand-computed exact product), and a real fault
still ends the process as without the view."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import avx2_only  # noqa: E402

REASON = avx2_only.unsupported_reason()
needs_view = pytest.mark.skipif(REASON is not None, reason=f"no AVX2-only view here: {REASON}")

_PROBE = ("import json; from numpy.core._multiarray_umath import __cpu_features__ as f; "
          "print(json.dumps({k: bool(f.get(k)) for k in ('AVX2', 'FMA3', 'AVX512F', 'AVX512BW', 'AVX512VNNI')}))")


def _python(code, env=None, *args):
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@needs_view
def test_view_hides_avx512_and_keeps_avx2(tmp_path):
    flags = avx2_only._cpu_flags()
    native = json.loads(_python(_PROBE).stdout)
    # without the view numpy finds what /proc/cpuinfo lists
    assert native == {"AVX2": "avx2" in flags, "FMA3": "fma" in flags, "AVX512F": "avx512f" in flags,
                      "AVX512BW": "avx512bw" in flags, "AVX512VNNI": "avx512_vnni" in flags}
    env = avx2_only.environment(cache_dir=str(tmp_path))
    p = _python(_PROBE, env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout) == {"AVX2": True, "FMA3": True, "AVX512F": False, "AVX512BW": False,
                                    "AVX512VNNI": False}
    # the library is built once per source: a second environment reuses the same file
    assert avx2_only.environment(cache_dir=str(tmp_path))["LD_PRELOAD"] == env["LD_PRELOAD"]
    assert len(os.listdir(tmp_path)) == 1


# u8 x s8 MatMulInteger of 255s against 127s: exact 255 * 127 * 64 = 2072640. ONNX Runtime's AVX2
# kernel (no VNNI) adds each pair of products in saturating int16: 32767 per pair, 32 pairs.
_SATURATION = """
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper
b = helper.make_tensor("b", TensorProto.INT8, [64, 4], [127] * 256)
g = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "g",
                      [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, 64])],
                      [helper.make_tensor_value_info("y", TensorProto.INT32, [None, 4])], [b])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
print(int(s.run(None, {"a": np.full((8, 64), 255, np.uint8)})[0].max()))
"""


@needs_view
def test_onnxruntime_runs_its_avx2_integer_kernel_in_the_view(tmp_path):
    pytest.importorskip("onnxruntime")
    exact, saturated = 255 * 127 * 64, 32767 * 32
    p = _python(_SATURATION, avx2_only.environment(cache_dir=str(tmp_path)))
    assert p.returncode == 0, p.stderr[-2000:]
    assert int(p.stdout) == saturated
    if "avx512_vnni" in avx2_only._cpu_flags():  # this CPU's own kernel (VNNI: 32-bit sums) is exact
        assert int(_python(_SATURATION).stdout) == exact


@needs_view
def test_a_real_fault_still_ends_the_process(tmp_path):
    env = avx2_only.environment(cache_dir=str(tmp_path))
    crash = "import ctypes; ctypes.string_at(0)"
    assert _python(crash, env).returncode == -11  # SIGSEGV's default action, as without the view
    # a handler the program installs (Python's faulthandler) is still called
    p = subprocess.run([sys.executable, "-X", "faulthandler", "-c", crash], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == -11 and "Segmentation fault" in p.stderr, p.stderr[-2000:]


def test_unsupported_machines_are_named(monkeypatch):
    monkeypatch.setattr(avx2_only, "_cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(avx2_only.platform, "system", lambda: "Linux")
    monkeypatch.setattr(avx2_only.platform, "machine", lambda: "x86_64")
    assert "cpuid_fault" in avx2_only.unsupported_reason()
    with pytest.raises(avx2_only.Unsupported, match="cpuid_fault"):
        avx2_only.library()
    monkeypatch.setattr(avx2_only, "_cpu_flags", lambda: {"sse4_2"})
    assert avx2_only.unsupported_reason() == "this CPU has no AVX2"


def test_a_script_under_a_view_that_did_not_take_stops(monkeypatch):
    # under the library (active) but still seeing AVX-512: the script must not measure on
    monkeypatch.setattr(avx2_only, "active", lambda: True)
    monkeypatch.setattr(avx2_only, "seen_features", lambda: {"AVX2": True, "AVX512F": True})
    with pytest.raises(SystemExit, match="bench.py: the AVX2-only view did not take"):
        avx2_only.reexec_if_asked(True, "bench.py", [])
    monkeypatch.setattr(avx2_only, "seen_features", lambda: {"AVX2": True, "AVX512F": False})
    assert avx2_only.reexec_if_asked(True, "bench.py", []) is None  # the view took: carry on
    assert avx2_only.reexec_if_asked(False, "bench.py", []) is None  # not asked: nothing happens
