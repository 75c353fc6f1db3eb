"""Entry-point plumbing: sizes validated before any work, framework errors keep their traceback."""
import numpy as np
import pytest
import mindspore as ms

from src import cli


@pytest.mark.parametrize("flag,value", [("--train_batch_size", "0"), ("--train_batch_size", "-3"),
                                        ("--eval_batch_size", "0"), ("--max_steps", "-1"),
                                        ("--eval_step", "-5"), ("--bucket_width", "-16"),
                                        ("--save_ckpt_step", "-1"), ("--max_ckpt_num", "0"),
                                        ("--scale_window", "0"), ("--compute_type", "bf16")])
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

    def ctrl_c():
        raise KeyboardInterrupt
    caplog.clear()
    assert cli.run_main(ctrl_c, "t") == 130  # the shell's code for SIGINT, one line, no traceback
    assert caplog.text.strip().endswith("interrupted") and "Traceback" not in caplog.text


def test_export_accepts_the_model_zoo_spellings():
    import export
    ours = export.parse_args(["--checkpoint", "s.ckpt", "--output", "out/s", "--file_format", "MINDIR"])
    zoo = export.parse_args(["--ckpt_file", "s.ckpt", "--file_name", "out/s", "--file_format", "MINDIR"])
    assert vars(ours) == vars(zoo) and zoo.checkpoint == "s.ckpt" and zoo.output == "out/s"


def test_export_output_with_an_artifact_extension_names_the_files_themselves():
    import export
    for given, base in (("out/student.onnx", "out/student"), ("out/s.MINDIR", "out/s"), ("out/s.tbq", "out/s"),
                        ("out/student", "out/student"), ("out/v1.2", "out/v1.2")):
        assert export.parse_args(["--checkpoint", "s.ckpt", "--output", given]).output == base


def test_train_and_eval_accept_the_model_zoo_spellings(tmp_path):
    import eval as eval_py
    import train
    common = ["--task_name", "sts-b", "--data_dir", "d", "--output_dir", "o"]
    ours = train.parse_args(common + ["--teacher_model", "t.ckpt", "--student_model", "s.ckpt", "--eval_step", "50"])
    zoo = train.parse_args(common + ["--teacher_model_dir", "t.ckpt", "--student_model_dir", "s.ckpt",
                                     "--eval_ckpt_step", "50"])
    assert vars(ours) == vars(zoo) and zoo.eval_step == 50 and zoo.teacher_model == "t.ckpt"
    # model_zoo's switches: the values that mean what this project does are accepted and change nothing
    zoo = train.parse_args(common + ["--teacher_model", "t.ckpt", "--student_model", "s.ckpt", "--eval_step", "50",
                                     "--do_eval", "True", "--do_shuffle", "true", "--enable_data_sink", "False",
                                     "--data_sink_steps", "100"])
    assert vars(ours) == vars(zoo)
    ours = eval_py.parse_args(["--checkpoint", "m.onnx", "--data_dir", "d", "--eval_batch_size", "8"])
    zoo = eval_py.parse_args(["--ckpt_file", "m.onnx", "--data_dir", "d", "--batch_size", "8"])
    assert vars(ours) == vars(zoo) and zoo.eval_batch_size == 8
    run = tmp_path / "run"  # model_zoo's eval takes a folder: here a run folder means its best.ckpt
    run.mkdir()
    (run / "best.ckpt").write_bytes(b"")
    assert eval_py.parse_args(["--model_dir", str(run), "--data_dir", "d"]).checkpoint == str(run / "best.ckpt")


@pytest.mark.parametrize("flag,value,reason", [("--do_eval", "False", "always on"),
                                               ("--do_shuffle", "False", "always shuffled"),
                                               ("--enable_data_sink", "True", "no data sink"),
                                               ("--do_eval", "maybe", "expected True or False"),
                                               ("--data_sink_steps", "0", "must be >= 1")])
def test_model_zoo_switches_that_mean_something_else_are_refused(flag, value, reason, capsys):
    import finetune
    with pytest.raises(SystemExit) as e:
        finetune.parse_args(["--task_name", "sts-b", "--model", "m.ckpt", "--data_dir", "d", "--output_dir", "o",
                             flag, value])
    assert e.value.code == 2 and reason in capsys.readouterr().err


def test_a_run_folder_means_its_best_checkpoint_any_other_folder_is_refused(tmp_path, capsys):
    import train
    run = tmp_path / "teacher"
    run.mkdir()
    (run / "best.ckpt").write_bytes(b"")
    common = ["--task_name", "sts-b", "--data_dir", "d", "--output_dir", "o"]
    assert train.parse_args(common + ["--teacher_model_dir", str(run)]).teacher_model == str(run / "best.ckpt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        train.parse_args(common + ["--teacher_model", str(empty)])
    assert "without best.ckpt" in capsys.readouterr().err


def test_mixed_precision_flags_reach_the_train_config():
    import train
    args = train.parse_args(["--task_name", "sts-b", "--teacher_model", "t.ckpt", "--data_dir", "d", "--output_dir", "o",
                             "--compute_type", "fp16", "--loss_scale_value", "1024", "--scale_window", "10"])
    t = cli.train_config(args)
    assert (t.compute_type, t.loss_scale, t.loss_scale_window) == ("fp16", 1024.0, 10)
    assert cli.train_config(train.parse_args(["--task_name", "sts-b", "--teacher_model", "t.ckpt", "--data_dir", "d",
                                              "--output_dir", "o"])).compute_type == "fp32"


def test_progress_rate_forgets_compilation_and_pauses_and_eta_passes_a_day():
    """The logged samples/s is over the last 5 log intervals (hand-computed), not since the start:
    a 20 s first step (compilation) or a 10-minute pause stops counting once 5 newer intervals are
    logged. The ETA's hours do not wrap at a day."""
    from src.logs import Throughput, format_duration
    meter = Throughput(window=5)
    assert meter.update(32, 20.0) == pytest.approx(1.6)  # first step: 32 samples in 20 s
    assert meter.update(64, 21.0) == pytest.approx(32.0 / 1.0)  # 32 samples in the next second
    assert meter.update(96, 621.0) == pytest.approx(64.0 / 601.0)  # a 600 s pause in that interval
    samples, seconds = 96, 621.0
    for _ in range(4):
        samples, seconds = samples + 32, seconds + 1.0
        rate = meter.update(samples, seconds)
    assert rate == pytest.approx(32 * 5 / 604.0)  # the 600 s interval still among the last 5
    rate = meter.update(samples + 32, seconds + 1.0)
    assert rate == pytest.approx(32.0)  # now only steady 1 s intervals
    assert format_duration(0) == "0:00:00"
    assert format_duration(3599.6) == "1:00:00"
    assert format_duration(90061) == "25:01:01"  # a day, an hour, a minute, a second


# task -> lr, epochs, bucket width, evaluation interval of its measured default recipe (docs/results.md)
MEASURED_RECIPES = {"cola": (1e-4, 12.0, 16, 200), "mrpc": (1e-4, 6.0, 0, 0), "sst-2": (1e-4, 1.0, 0, 300),
                    "rte": (5e-5, 3.0, 0, 0), "sts-b": (1e-4, 3.0, 16, 0)}


@pytest.mark.parametrize("task", sorted(MEASURED_RECIPES))
def test_train_schedule_defaults_are_the_measured_recipes_and_flags_override_them(task):
    """Without schedule flags, train.py runs the recipe docs/results.md measured per task (values
    written out above, not read from the task table), with the token-mean loss exactly when the
    batches are length buckets; given flags win; finetune.py keeps 3 padded epochs at 5e-5."""
    import finetune
    import train
    from src import api
    lr, epochs, width, every = MEASURED_RECIPES[task]
    common = ["--task_name", task, "--data_dir", "d", "--output_dir", "o"]
    args = train.parse_args(common + ["--teacher_model", "t.ckpt"])
    saved = cli.run_identity(args)  # what a resume compares: the numbers, not "the table's"
    assert (saved["epoch_size"], saved["bucket_width"], saved["eval_step"], saved["token_mean"]) == (
        epochs, width, every, width > 0)
    t, d = cli.train_config(args), cli.distill_config(args)
    assert (t.learning_rate, t.epochs, t.bucket_width, t.eval_steps, d.token_mean) == (lr, epochs, width, every,
                                                                                      width > 0)
    # the library's defaults are the same recipe
    t = api.task_train_config(task)
    assert (t.learning_rate, t.epochs, t.bucket_width, t.eval_steps) == (lr, epochs, width, every)
    assert api.default_distill_config(t).token_mean is (width > 0)
    flags = ["--epoch_size", "0.5", "--learning_rate", "2e-5", "--eval_step", "7", "--bucket_width", "8"]
    args = train.parse_args(common + ["--teacher_model", "t.ckpt"] + flags)
    t = cli.train_config(args)
    assert (t.learning_rate, t.epochs, t.eval_steps, t.bucket_width, args.token_mean) == (2e-5, 0.5, 7, 8, True)
    assert train.parse_args(common + ["--teacher_model", "t.ckpt", "--bucket_width", "0"]).token_mean is False
    assert train.parse_args(common + ["--teacher_model", "t.ckpt", "--bucket_width", "0", "--token_mean"]).token_mean
    assert train.parse_args(common + ["--teacher_model", "t.ckpt", "--no_token_mean"]).token_mean is False
    t = cli.train_config(finetune.parse_args(common + ["--model", "m.ckpt"]))
    assert (t.learning_rate, t.epochs, t.bucket_width, t.eval_steps) == (5e-5, 3.0, 0, 0)


def test_every_way_to_evaluate_uses_the_same_batch_of_32():
    """With per-batch activation ranges a quantized model's metric depends on its batch: the entry
    points, predict.py and the library (a notebook's api.evaluate / api.Job) must agree."""
    import inspect
    import eval as eval_py
    import finetune
    import predict
    import train
    from src import api
    data = ["--data_dir", "d", "--output_dir", "o", "--task_name", "sts-b"]
    assert train.parse_args(data + ["--teacher_model", "t.ckpt"]).eval_batch_size == 32
    assert finetune.parse_args(data + ["--model", "m.ckpt"]).eval_batch_size == 32
    assert eval_py.parse_args(["--checkpoint", "m.ckpt", "--data_dir", "d"]).eval_batch_size == 32
    assert predict.parse_args(["--model", "m.onnx", "--input", "x.tsv", "--output", "y.txt"]).batch_size == 32
    assert api.Job("d", "o").eval_batch_size == 32
    assert inspect.signature(api.evaluate).parameters["batch_size"].default == 32


def test_a_device_this_machine_lacks_is_named_not_mistaken_for_a_device_switch():
    """MindSpore's 'Unsupported device target' (no CUDA / CANN here) was reported as 'this process
    already runs on CPU:0': the user must learn that the device is missing. (The suite runs on CPU
    machines; on a machine with a GPU runtime this call would succeed or refuse the switch.)"""
    from src.trainer import set_context
    set_context("CPU")
    with pytest.raises(RuntimeError, match="--device_target GPU: MindSpore cannot run on GPU on this machine"):
        set_context("GPU")
    set_context("CPU")  # the process still runs on CPU


def test_an_output_dir_that_is_a_file_is_refused_with_its_name(tmp_path):
    from src.trainer import prepare_output_dir
    (tmp_path / "afile").write_text("keep me")
    with pytest.raises(FileExistsError, match="--output_dir .*afile is a file, not a folder"):
        prepare_output_dir(str(tmp_path / "afile"), {"run": 1}, resume=False, overwrite=True)
    assert (tmp_path / "afile").read_text() == "keep me"  # --overwrite never deletes a file that is not a run

