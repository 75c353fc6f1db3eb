"""Entry-point plumbing: sizes validated before any work, framework errors keep their traceback."""
import numpy as np
import pytest
import mindspore as ms

from src import cli


@pytest.mark.parametrize("flag,value", [("--train_batch_size", "0"), ("--train_batch_size", "-3"),
                                        ("--eval_batch_size", "0"), ("--max_steps", "-1"),
                                        ("--eval_step", "-5"), ("--bucket_width", "-16"),
                                        ("--save_ckpt_step", "-1"), ("--max_ckpt_num", "0")])
def test_zero_or_negative_sizes_are_refused_by_the_parser(flag, value, capsys):
    import train
    argv = ["--task_name", "sts-b", "--teacher_model", "t.ckpt", "--data_dir", "d", "--output_dir", "o", flag, value]
    with pytest.raises(SystemExit) as e:
        train.parse_args(argv)
    assert e.value.code == 2
    assert flag in capsys.readouterr().err


def test_project_errors_are_one_line_framework_errors_keep_their_traceback(caplog):
    def ours():
        raise ValueError("records folder x holds task cola, not sst-2")
    assert cli.run_main(ours, "t") == 2
    assert "holds task cola" in caplog.text

    def framework():  # an error raised inside MindSpore itself (a shape error in an op)
        ms.ops.matmul(ms.Tensor(np.ones((2, 3), np.float32)), ms.Tensor(np.ones((4, 5), np.float32))).asnumpy()
    with pytest.raises((ValueError, RuntimeError)):
        cli.run_main(framework, "t")


def test_export_accepts_the_model_zoo_spellings():
    import export
    ours = export.parse_args(["--checkpoint", "s.ckpt", "--output", "out/s", "--file_format", "MINDIR"])
    zoo = export.parse_args(["--ckpt_file", "s.ckpt", "--file_name", "out/s", "--file_format", "MINDIR"])
    assert vars(ours) == vars(zoo) and zoo.checkpoint == "s.ckpt" and zoo.output == "out/s"
