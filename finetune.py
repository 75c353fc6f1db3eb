"""Fine-tune the full-precision teacher on a GLUE task (the step before distillation).

    python finetune.py --task_name sts-b --model out/backbone.ckpt \
        --data_dir data/sts-b-128 --output_dir out/teacher --learning_rate 5e-5 --epoch_size 5

--model is a float checkpoint, e.g. one written by scripts/import_hf.py.
"""
import argparse
import logging
import os
import sys

from src import cli

logger = logging.getLogger("finetune")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_task_args(ap)
    cli.add_device_args(ap)
    cli.add_data_args(ap)
    ap.add_argument("--model", required=True, help="float checkpoint to fine-tune (.ckpt, its .json beside)")
    cli.add_train_args(ap, lr=5e-5, epochs=3)
    ap.add_argument("--distribute", action="store_true", help="data parallel over the launcher's ranks")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup_logging()
    import mindspore as ms
    from src.checkpoint import load_network
    from src.cell_wrapper import TaskLoss, TrainOneStep, build_optimizer
    from src.config import RunConfig
    from src.dataset import check_records
    from src.distributed import init_distributed
    from src.trainer import LoopSpec, fit, prepare_output_dir, set_context, total_steps

    # configs
    set_context(args.device_target, args.device_id, args.mode)
    rank, group = init_distributed(args.distribute)
    meta = check_records(args.data_dir, args.task_name, args.max_seq_length)
    tcfg = cli.train_config(args, meta["max_seq_length"])

    # network (dropout as its config says, 0.1 for BERT)
    ms.set_seed(tcfg.seed)
    net, m_run = load_network(args.model)
    if m_run.task != args.task_name:
        raise ValueError(f"{args.model} has a {m_run.task} head, not {args.task_name}")
    if not m_run.quant.is_float:
        raise ValueError(f"{args.model} is quantized ({m_run.quant.name}); fine-tune a float model")
    run = RunConfig(task=args.task_name, model=m_run.model, quant=m_run.quant, train=tcfg)

    # output folder (after every input was checked, so a failed start leaves nothing)
    if rank == 0:
        prepare_output_dir(args.output_dir, cli.run_identity(args), args.resume, args.overwrite)
        cli.log_to_file(os.path.join(args.output_dir, "finetune.log"))

    # optimizer, loop
    steps = total_steps(args.data_dir, tcfg, group)
    cell = TrainOneStep(TaskLoss(net), build_optimizer(net.trainable_params(), tcfg, steps), tcfg.clip_norm)
    logger.info("fine-tuning %s from %s, %d steps", args.task_name, args.model, steps)
    state = fit(LoopSpec(cell, net, run, tcfg, args.data_dir, args.dataset_type, args.output_dir,
                         args.eval_batch_size, rank, group), resume=args.resume,
                stop_after=args.stop_after)
    if rank == 0 and state["best"] is not None:
        logger.info("done: best %s %.5f at step %s -> %s", run.task, state["best"], state["best_step"],
                    os.path.join(args.output_dir, "best.ckpt"))
    return state


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        logging.getLogger("finetune").error("%s", e)
        sys.exit(2)
