"""Running a stage in several processes: data-parallel training and split generation.

``covertune train`` and ``covertune generate`` run unchanged in one process. Launched by
``torchrun --nproc-per-node N``, ``accelerate launch --num-processes N`` or ``covertune <stage>
--num-gpus N`` (which re-executes itself through ``torch.distributed.run``), each process reads the
launcher's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); accelerate's ``PartialState``
joins them into one process group (NCCL on CUDA GPUs, gloo on the CPU). One process, the main one,
writes covertune's outputs; the others wait for it at a barrier.

Everything here is a no-op in one process, so stages call it unconditionally.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from typing import Any, Sequence

log = logging.getLogger(__name__)

# Stages that run in several processes; every other command runs in one.
# NVLink multicast stays off in every process covertune starts (a shared host's GPUs can be put out of
# service by multicast/multimem features); a value the user set is kept.
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def world_size() -> int:
    """How many processes the launcher started (1 when covertune runs on its own)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_distributed() -> bool:
    return world_size() > 1


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0) if is_distributed() else 0


def local_rank() -> int:
    """This process's index on its host: the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def state():
    """accelerate's PartialState: the process group, joined on first use (gloo without CUDA)."""
    from accelerate import PartialState

    import torch

    return PartialState(cpu=not torch.cuda.is_available())


def barrier() -> None:
    """Every process waits here until all have arrived (nothing in one process)."""
    if is_distributed():
        state().wait_for_everyone()


@contextlib.contextmanager
def main_first():
    """The main process runs the block first (a download, the embedded model's one-time conversion),
    the others after it, reading what it made."""
    if not is_distributed():
        yield
        return
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def split(items: Sequence) -> list:
    """This process's contiguous share of ``items`` (accelerate's split_between_processes); all of
    them in one process."""
    if not is_distributed():
        return list(items)
    with state().split_between_processes(list(items)) as share:
        return list(share)


def gather(obj: Any) -> list:
    """``obj`` of every process, in rank order (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    from accelerate.utils import gather_object

    state()
    return gather_object([obj])


def broadcast(obj: Any) -> Any:
    """The main process's ``obj``, in every process (``obj`` itself in one process)."""
    if not is_distributed():
        return obj
    import torch.distributed as dist

    state()
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def finish() -> None:
    """Leave the process group (at the end of a stage that ran in several processes)."""
    if not is_distributed():
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def quiet_other_processes() -> None:
    """Only the main process logs at INFO; the others say warnings and errors, with their rank."""
    if not is_distributed() or is_main():
        return
    logging.getLogger().setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [rank {rank()}] %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))


# ---------------------------------------------------------------- the --num-gpus shortcut


def check_num_gpus(n: int, stage: str) -> None:
    """``--num-gpus n`` can run here: n GPUs visible and covertune not already under a launcher (whether
    ``stage`` may run in several processes at all: covertune.registry.check_distributed)."""
    import torch

    if n < 1:
        raise ValueError(f"--num-gpus must be at least 1, got {n}")
    if is_distributed():
        raise ValueError("--num-gpus: this process is already one of several started by a launcher "
                         f"(WORLD_SIZE={world_size()}); drop --num-gpus, or run without the launcher")
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n > 1 and found == 0:
        raise ValueError(f"--num-gpus {n}: no CUDA GPU here; to try several processes on the CPU (gloo) "
                         f"run `torchrun --standalone --nproc-per-node {n} -m covertune {stage} ...`")
    if n > found and found:
        raise ValueError(f"--num-gpus {n}: only {found} CUDA GPU(s) visible (CUDA_VISIBLE_DEVICES="
                         f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); ask for at most {found}")


def launch_command(n: int, argv: Sequence[str]) -> list[str]:
    """The command ``covertune ... --num-gpus n`` re-executes: torch.distributed.run starting n
    processes on this host, each running ``covertune`` with ``argv`` (without --num-gpus)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
            "-m", "covertune", *argv]


def strip_num_gpus(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--num-gpus N`` / ``--num-gpus=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--num-gpus":
            skip = True
        elif not a.startswith("--num-gpus="):
            out.append(a)
    return out


def child_env(env: dict | None = None) -> dict:
    """The environment of a process covertune starts: the caller's, with NVLink multicast off."""
    env = dict(os.environ if env is None else env)
    for key, value in MULTICAST_OFF.items():
        env.setdefault(key, value)
    return env


def relaunch(n: int, argv: Sequence[str]) -> int:
    """Run ``covertune argv`` in n processes (one per GPU) and return the launcher's exit status."""
    cmd = launch_command(n, strip_num_gpus(argv))
    log.info("starting %d processes: %s", n, " ".join(cmd))
    return subprocess.run(cmd, env=child_env()).returncode
