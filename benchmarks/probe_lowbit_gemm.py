"""Would another ONNX Runtime operator run a ternary weight faster? One weight product of the
MiniLM-L6 shapes, each way ONNX Runtime offers, timed in one process.

    python benchmarks/probe_lowbit_gemm.py                 # this CPU's kernels
    python benchmarks/probe_lowbit_gemm.py --avx2_only     # its AVX2 kernels (benchmarks/avx2_only.py)

Each candidate is a one-product graph over the same ternary codes {-1, 0, 1} (scale alpha) and
an fp32 input x [M, K]:

  students (static int8)   QuantizeLinear(x, fixed scale, zero point 128) -> MatMulIntegerToFloat:
                           the students' layer (src/onnx_export.py), u8 x s8 GEMM
  int8 quantize_dynamic    DynamicQuantizeMatMul: what quantize_dynamic writes, u8 x s8 GEMM
  fp32                     MatMul with the fp32 weights alpha * codes
  MatMulNBits b bits       ONNX Runtime's low-bit weight operator (com.microsoft): the codes packed
                           at b bits per weight (zero point 2^(b-1)), blocks of 32 along K;
                           accuracy_level 0: fp32 compute, 4: int8 compute on x quantized per block

MatMulNBits with 2 bits, the ternary codes' own width, is tried as well: ONNX Runtime 1.23 refuses
it when the session is made (its message is recorded). Every candidate's output is checked against
numpy before it is timed (fp32 and accuracy-level-0 routes: x @ (alpha * codes)^T to 1e-4 relative;
the students' route: its integer definition; int8 routes: within their quantization error).
Rows M: 32, 128 and 1024, the products of a 1 x 32, 1 x 128 and 8 x 128 batch; (K, N): the QKV
product (384, 1152) and the two FFN products (384, 1536), (1536, 384). Rounds visit the candidates
in rotated order; per round the median of --calls calls, reported: the median over rounds.
Pause other work. Results: benchmarks/results/lowbit_gemm_probe_<isa>.json.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from avx2_only import describe, reexec_if_asked  # noqa: E402
from bench_inference import RESULTS, cpu_info, isa_class  # noqa: E402
from common import write_result  # noqa: E402

PRODUCTS = {"QKV": (384, 1152), "FFN in": (384, 1536), "FFN out": (1536, 384)}
ROWS = (32, 128, 1024)
BLOCK = 32
X_RANGE = 2.5  # the students' activation clip: x's codes are round(x * 127 / 2.5)


def ternary_codes(n: int, k: int, seed: int = 0) -> np.ndarray:
    """[N, K] int8 in {-1, 0, 1}, about a third zeros (TWN keeps ~60% of the weights)."""
    return np.random.default_rng(seed).choice(np.array([-1, 0, 1], np.int8), size=(n, k), p=[0.3, 0.4, 0.3])


def pack_nbits(codes: np.ndarray, bits: int, block: int = BLOCK):
    """MatMulNBits' layout for signed codes [N, K]: (B uint8 [N, K/block, block*bits/8], zero points
    uint8 [N, ceil(K/block * bits / 8)]), values stored as code + 2^(bits-1), the lowest bits first."""
    n, k = codes.shape
    if k % block or 8 % bits:
        raise ValueError(f"K={k} must be a multiple of {block} and bits ({bits}) divide 8")
    zp, per_byte, blocks = 1 << (bits - 1), 8 // bits, k // block
    q = (codes.astype(np.int32) + zp).astype(np.uint8).reshape(n, blocks, block // per_byte, per_byte)
    packed = np.zeros(q.shape[:3], np.uint8)
    for j in range(per_byte):
        packed |= (q[..., j] << (bits * j)).astype(np.uint8)
    zero = np.zeros((n, (blocks * bits + 7) // 8), np.uint8)
    for b in range(blocks):
        zero[:, b * bits // 8] |= np.uint8(zp << (b * bits % 8))
    return packed, zero


def _model(nodes, inits, k: int, n: int):
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(nodes, "product", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", n])],
                              [numpy_helper.from_array(np.asarray(v), name) for name, v in inits.items()])
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                   helper.make_opsetid("com.microsoft", 1)])


def candidates(codes: np.ndarray, alpha: float) -> dict:
    """name -> ONNX model computing y [M, N] ~= x [M, K] @ (alpha * codes)^T."""
    from onnx import helper
    n, k = codes.shape
    x_scale = np.float32(X_RANGE / 127)
    out = {
        "students (static int8)": _model(
            [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["u"]),
             helper.make_node("MatMulIntegerToFloat", ["u", "w", "xs", "ws", "xz"], ["y"], domain="com.microsoft")],
            {"xs": x_scale, "xz": np.uint8(128), "w": np.ascontiguousarray(codes.T), "ws": np.float32(alpha)}, k, n),
        "int8 quantize_dynamic": _model(
            [helper.make_node("DynamicQuantizeMatMul", ["x", "w", "ws", "wz"], ["y"], domain="com.microsoft")],
            {"w": np.ascontiguousarray(codes.T), "ws": np.float32(alpha), "wz": np.int8(0)}, k, n),
        "fp32": _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       {"w": np.ascontiguousarray(codes.T.astype(np.float32) * np.float32(alpha))}, k, n),
    }
    for bits in (2, 4, 8):
        packed, zero = pack_nbits(codes, bits)
        scales = np.full(n * (k // BLOCK), alpha, np.float32)
        for level in (0, 4):
            out[f"MatMulNBits {bits} bits, accuracy {level}"] = _model(
                [helper.make_node("MatMulNBits", ["x", "b", "s", "z"], ["y"], domain="com.microsoft", K=k, N=n,
                                  bits=bits, block_size=BLOCK, accuracy_level=level)],
                {"b": packed, "s": scales, "z": zero.reshape(-1)}, k, n)
    return out


def reference(name: str, x: np.ndarray, codes: np.ndarray, alpha: float):
    """(numpy's y in float64, the tolerance on max |y - ref| for this candidate)."""
    w = codes.astype(np.float64) * alpha
    exact = x.astype(np.float64) @ w.T
    step = X_RANGE / 127
    if name.startswith("students"):  # its integer definition: float32 x / step, round half to even,
        u = np.clip(np.rint(x / np.float32(step)), -128, 127).astype(np.float64)  # saturate at the u8 range
        return (u @ codes.T.astype(np.float64)) * np.float32(step) * np.float32(alpha), 1e-4 * np.abs(exact).max()
    if name == "fp32" or name.endswith("accuracy 0"):
        return exact, 1e-4 * np.abs(exact).max()
    # int8 activations from the input's own range: each x moves by at most half a step
    # (range / 255 for int8's asymmetric u8, max|x| / 127 per block for MatMulNBits)
    half_step = np.abs(x).max() / 127
    return exact, half_step * np.abs(w).sum(axis=1).max()


def open_sessions(models: dict, threads: int):
    """name -> session, and name -> ONNX Runtime's message for the ones it refuses."""
    import onnxruntime as ort
    from src.deploy import session_options
    sessions, refused = {}, {}
    for name, model in models.items():
        try:
            opts = session_options(threads)
            opts.log_severity_level = 4  # a refusal is recorded below, not printed as an error
            sessions[name] = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own exception types
            refused[name] = " ".join(str(e).split())
    return sessions, refused


def measure(sessions: dict, x: np.ndarray, rounds: int, calls: int) -> dict:
    names = list(sessions)
    per_round = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sess = sessions[name]
            for _ in range(3):
                sess.run(None, {"x": x})
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                sess.run(None, {"x": x})
                times.append(time.perf_counter() - t)
            per_round[name].append(statistics.median(times) * 1e3)
    return {name: round(statistics.median(v), 4) for name, v in per_round.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    ap.add_argument("--products", nargs="+", choices=list(PRODUCTS), default=list(PRODUCTS))
    ap.add_argument("--rows", nargs="+", type=int, default=list(ROWS), help="M: the batch's tokens")
    ap.add_argument("--avx2_only", action="store_true", help="run on an AVX2-only view of this CPU")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/lowbit_gemm_probe_<isa>.json")
    args = ap.parse_args(argv)
    reexec_if_asked(args.avx2_only, __file__, argv)
    import onnxruntime as ort
    cpu = cpu_info(args.avx2_only)
    alpha = 0.05
    rows, refused = [], {}
    for product in args.products:
        k, n = PRODUCTS[product]
        codes = ternary_codes(n, k)
        sessions, refused = open_sessions(candidates(codes, alpha), args.threads)
        for m in args.rows:
            x = np.random.default_rng(m).normal(0, 0.8, (m, k)).astype(np.float32)
            errors = {}
            for name, sess in sessions.items():
                ref, tol = reference(name, x, codes, alpha)
                errors[name] = float(np.abs(sess.run(None, {"x": x})[0] - ref).max())
                if errors[name] > tol:
                    raise SystemExit(f"{name} at {product} M={m}: max error {errors[name]:.3g} over {tol:.3g}")
            ms = measure(sessions, x, args.rounds, args.calls)
            rows.append({"product": product, "K": k, "N": n, "M": m, "ms": ms, "max_error": errors})
            base = ms["students (static int8)"]
            print(f"{product} ({k}x{n}) M={m}: " + ", ".join(f"{a} {t:.3f} ms ({t / base:.2f}x)" for a, t in ms.items()),
                  flush=True)
    out = args.out or os.path.join(RESULTS, f"lowbit_gemm_probe_{isa_class(cpu)}.json")
    write_result(out, {"benchmark": "lowbit_gemm_probe", "cpu": cpu, "cpuid": describe(), "onnxruntime": ort.__version__,
                       "rounds": args.rounds, "calls": args.calls, "threads": args.threads, "block_size": BLOCK,
                       "refused": refused, "rows": rows})


if __name__ == "__main__":
    main()
