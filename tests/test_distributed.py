"""Data parallel on MindSpore's engine: 2 CPU workers under msrun."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

HERE = os.path.dirname(os.path.abspath(__file__))


def _msrun(args, log_dir, port):
    env = dict(os.environ, GLOG_v="3", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    msrun = os.path.join(os.path.dirname(sys.executable), "msrun")
    return subprocess.run([msrun, "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
                           f"--master_port={port}", f"--log_dir={log_dir}", "--join=True", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_two_ranks_stay_identical_and_equal_one_process_over_the_global_batch(tmp_path):
    p = _msrun([os.path.join(HERE, "dist_worker.py"), str(tmp_path), "--distribute"], str(tmp_path / "logs"), 8123)
    logs = "".join(open(os.path.join(tmp_path, "logs", f)).read()[-2000:] for f in os.listdir(tmp_path / "logs"))
    assert p.returncode == 0, p.stdout[-2000:] + logs
    single = subprocess.run([sys.executable, os.path.join(HERE, "dist_worker.py"), str(tmp_path)], cwd=ROOT,
                            env=dict(os.environ, GLOG_v="3"), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    r0, r1, s = (np.load(tmp_path / f"params_{k}.npz") for k in ("0", "1", "single"))
    for n in s.files:
        np.testing.assert_array_equal(r0[n], r1[n], err_msg=n)
        np.testing.assert_allclose(r0[n], s[n], rtol=1e-4, atol=1e-6, err_msg=n)


def test_distribute_without_a_launcher_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MS_WORKER_NUM", "RANK_TABLE_FILE", "RANK_SIZE")}
    p = subprocess.run([sys.executable, "train.py", "--task_name", "sts-b", "--teacher_model", "x.ckpt", "--data_dir",
                        str(tmp_path), "--output_dir", str(tmp_path / "o"), "--distribute"], cwd=ROOT,
                       env=dict(env, GLOG_v="3"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "--distribute needs a launcher" in p.stdout


def test_launch_scripts_check_their_arguments():
    for script in ("run_distribute_train_cpu.sh", "run_distribute_train_gpu.sh"):
        p = subprocess.run(["bash", os.path.join(ROOT, "scripts", script), "x"], capture_output=True, text=True)
        assert p.returncode == 2 and "DEVICE_NUM must be a positive integer" in p.stderr
    p = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_distribute_train_ascend.sh")], capture_output=True,
                       text=True)
    assert p.returncode == 2 and "usage" in p.stderr


@pytest.mark.slow
@pytest.mark.parametrize("buckets", [False, True], ids=["padded", "length-buckets"])
def test_train_py_distribute_through_the_cpu_launcher(tmp_path, buckets, glue_dir):
    """train.py --distribute under scripts/run_distribute_train_cpu.sh: a few real steps, rank 0 writes.
    With length buckets both ranks must get batches of the same length at every step."""
    from src.checkpoint import save_network
    from src.config import QuantConfig, RunConfig
    from src.glue import convert
    from src.tinybert_model import BertForSequenceClassification
    from conftest import VOCAB, tiny_config
    import mindspore as ms
    cfg = tiny_config(1)
    cfg.vocab_size = 30522
    net = BertForSequenceClassification(cfg, QuantConfig.full_precision())
    save_network(net, str(tmp_path / "t.ckpt"), RunConfig(task="sts-b", model=cfg, quant=QuantConfig.full_precision()))
    convert("sts-b", glue_dir, VOCAB, str(tmp_path / "data"), 24, limit=32,
            progress=False)
    env = dict(os.environ, MASTER_PORT="8129" if buckets else "8127", PYTHON=sys.executable)
    p = subprocess.run(["bash", "scripts/run_distribute_train_cpu.sh", "2", "--task_name", "sts-b", "--teacher_model",
                        str(tmp_path / "t.ckpt"), "--data_dir", str(tmp_path / "data"), "--output_dir",
                        str(tmp_path / "out"), "--train_batch_size", "4", "--max_steps", "3", "--learning_rate", "1e-3"]
                       + (["--bucket_width", "8", "--token_mean"] if buckets else ["--bucket_width", "0"]),
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    logs = tmp_path / "out" / "msrun_logs"
    tail = "".join(open(logs / f).read()[-1500:] for f in os.listdir(logs)) if logs.is_dir() else ""
    assert p.returncode == 0, p.stdout[-1500:] + tail
    hist = json.load(open(tmp_path / "out" / "metrics.json"))
    assert hist[-1]["step"] == 3 and np.isfinite(hist[-1]["pearson"])
    assert sorted(f for f in os.listdir(logs) if f.startswith("worker")) == ["worker_0.log", "worker_1.log"]
