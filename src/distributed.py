"""Data-parallel setup on MindSpore's own engine (communication.init + DATA_PARALLEL)."""
from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

_LAUNCHER_VARS = ("MS_WORKER_NUM", "RANK_TABLE_FILE", "OMPI_COMM_WORLD_SIZE", "RANK_SIZE")


def init_distributed(enabled: bool):
    """Returns (rank, group_size); (0, 1) when not distributed.

    With ``enabled``, the process must have been started by a launcher (msrun, mpirun, or an
    Ascend rank table): otherwise init would hang or fail obscurely, so say so instead.
    """
    if not enabled:
        return 0, 1
    if not any(v in os.environ for v in _LAUNCHER_VARS):
        raise RuntimeError("--distribute needs a launcher: start with scripts/run_distribute_train_*.sh "
                           "(msrun / mpirun / RANK_TABLE_FILE); none of "
                           f"{', '.join(_LAUNCHER_VARS)} is set")
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init
    init()
    rank, group = get_rank(), get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=group)
    logger.info("data parallel: rank %d of %d", rank, group)
    return rank, group
