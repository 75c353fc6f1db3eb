"""Fine-tune the full-precision teacher on a GLUE task (the step before distillation).

    python finetune.py --task_name sts-b --model out/backbone.ckpt \
        --data_dir data/sts-b-128 --output_dir out/teacher --learning_rate 5e-5 --epoch_size 5

--model is a float checkpoint, e.g. one written by scripts/import_hf.py.
"""
import argparse
import logging
import sys

from src import cli

logger = logging.getLogger("finetune")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_task_args(ap)
    cli.add_device_args(ap)
    cli.add_data_args(ap)
    ap.add_argument("--model", required=True, type=cli.checkpoint_file,
                    help="float checkpoint to fine-tune (.ckpt, its .json beside)")
    cli.add_train_args(ap, lr=5e-5, epochs=3)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup_logging()
    import mindspore as ms
    from src.checkpoint import load_network
    from src.cell_wrapper import TaskLoss, TrainOneStep, build_optimizer
    from src.config import RunConfig
    from src.glue import check_labels_usable
    from src.trainer import start_run, total_steps, train_and_report

    # configs (and device, data-parallel ranks, records check)
    rank, group, tcfg = start_run(args)
    check_labels_usable(args.data_dir, reads_labels=True)

    # network (dropout as its config says, 0.1 for BERT)
    ms.set_seed(tcfg.seed)
    net, m_run = load_network(args.model)
    if m_run.task != args.task_name:
        raise ValueError(f"{args.model} has a {m_run.task} head, not {args.task_name}")
    if not m_run.quant.is_float:
        raise ValueError(f"{args.model} is quantized ({m_run.quant.name}); fine-tune a float model")
    run = RunConfig(task=args.task_name, model=m_run.model, quant=m_run.quant, train=tcfg)

    # optimizer and train cell
    steps = total_steps(args.data_dir, tcfg, group)
    cell = TrainOneStep(TaskLoss(net), build_optimizer(net, tcfg, steps), tcfg.clip_norm, tcfg=tcfg)
    logger.info("fine-tuning %s from %s, %d steps", args.task_name, args.model, steps)

    # loop
    # (one network in the loss: length buckets need one static graph per length, see LoopSpec)
    return train_and_report(args, cell, net, run, rank, group, "finetune.log", open_length=False)


if __name__ == "__main__":
    sys.exit(cli.run_main(main, "finetune"))
