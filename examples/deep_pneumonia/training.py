"""What both training stages share: processes and devices, seeds, loaders, one step, the schedule.

Reproducibility: before every epoch (:func:`begin_epoch`) all generators are seeded from
``(seed, stage, epoch, rank)``, and the order of the training data is that of a
:class:`~torch.utils.data.DistributedSampler` seeded by ``seed`` at that epoch. An epoch
therefore depends only on the weights it starts from and these numbers, so a run
resumed from a checkpoint (:class:`~.checkpoint.Checkpointer`) continues exactly as the
uninterrupted run would have.

Several processes (``torchrun``, :func:`setup_runtime`): the process group is initialised
from the environment, each rank reads its shard of every training epoch, contrastive
losses gather embeddings across ranks, and only rank 0 validates and writes files.
"""

from __future__ import annotations

import contextlib
import os
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from contrast_attn.distributed import all_reduce_sum, rank_and_world_size

from .config import Config
from .schedule import replay

__all__ = [
    "Runtime",
    "StageStopped",
    "begin_epoch",
    "cosine_schedule",
    "global_mean",
    "make_loader",
    "progress",
    "seed_everything",
    "setup_runtime",
    "teardown",
    "train_step",
]


class StageStopped(Exception):
    """A stage stopped early as ``stop_after`` asked; its checkpoint resumes it."""


@dataclass
class Runtime:
    """Where and how this process trains.

    Attributes:
        device: the device of this process.
        rank: this process's rank (0 without ``torchrun``).
        world_size: number of processes.
        amp: automatic mixed precision (float16 autocast and a gradient scaler; CUDA only).
        threads_before: PyTorch's CPU thread count before :func:`setup_runtime` changed it.
    """

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp: bool = False
    threads_before: int | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process writes outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Float16 autocast on CUDA when AMP is on; a no-op otherwise."""
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)

    def barrier(self) -> None:
        """Wait for every process (no-op with one)."""
        if self.distributed:
            dist.barrier()

    def wrap(self, module: nn.Module, *, find_unused: bool = False) -> nn.Module:
        """``module`` on this device, in ``DistributedDataParallel`` when distributed."""
        module = module.to(self.device)
        if not self.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def setup_runtime(cfg: Config) -> Runtime:
    """Initialise the process group when launched by ``torchrun`` and pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = rank_and_world_size()
    if cfg.device in ("auto", "cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    else:
        device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    threads_before = None
    if device.type == "cpu" and cfg.threads:
        # The quick run's small convolutions gain little from more threads, and on a
        # shared or oversubscribed machine extra threads slow every step down many times.
        threads_before = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
    return Runtime(device, rank, world, cfg.amp and device.type == "cuda", threads_before)


def teardown(rt: Runtime) -> None:
    """Destroy the process group and restore the thread count that :func:`setup_runtime` set."""
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()
    if rt.threads_before is not None:
        torch.set_num_threads(rt.threads_before)


def seed_everything(*parts: int | str) -> None:
    """Seed python, numpy and torch (all devices) from a stable hash of ``parts``."""
    seed = zlib.crc32(repr(parts).encode())
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global generator, for code that uses it)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy and random follow it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002
    random.seed(seed)


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    rt: Runtime,
    *,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader[Any]:
    """A loader: shuffled, sharded over ranks and dropping the last partial batch for
    training; in order and whole for evaluation.

    ``batch_size`` is the global batch; each rank loads ``batch_size // world_size``.
    """
    if not train:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=rt.world_size, rank=rt.rank, shuffle=True, seed=seed
    )
    per_rank = max(batch_size // rt.world_size, 2)
    if len(sampler) < per_rank:
        raise ValueError(
            f"the training set has {len(dataset)} images, fewer than one batch of "  # type: ignore[arg-type]
            f"{per_rank} per process; lower the batch size"
        )
    return DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


def global_mean(values: dict[str, float], count: int, rt: Runtime) -> dict[str, float]:
    """Average per-rank sums of metrics over all ranks (``values`` are sums over ``count``)."""
    keys = sorted(values)
    totals = all_reduce_sum(torch.tensor([values[k] for k in keys] + [count], dtype=torch.float64))
    return {k: float(totals[i] / totals[-1]) for i, k in enumerate(keys)}


def progress(iterable: DataLoader[Any], desc: str, cfg: Config, rt: Runtime) -> Iterator[Any]:
    """A tqdm bar over ``iterable`` on rank 0 when ``cfg.progress`` is on."""
    yield from tqdm(iterable, desc=desc, leave=False, disable=not (cfg.progress and rt.is_main))


def begin_epoch(
    cfg: Config, rt: Runtime, loader: DataLoader[Any], stage: str, epoch: int, start: int
) -> None:
    """Seed every generator and the sampler for ``epoch`` of ``stage``.

    Raises:
        StageStopped: when ``cfg.stop_after`` epochs have run since ``start``.
    """
    if cfg.stop_after is not None and epoch - start >= cfg.stop_after:
        raise StageStopped(f"{stage} stopped after {epoch} epochs (stop_after={cfg.stop_after})")
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    seed_everything(cfg.seed, stage, epoch, rt.rank)
    if loader.generator is not None:
        # The workers' seeds of this epoch (with num_workers > 0).
        loader.generator.manual_seed(torch.initial_seed())


def train_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> None:
    """One optimiser step on ``loss`` (scaled when mixed precision is on)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def cosine_schedule(
    optimizer: torch.optim.Optimizer, epochs: int, start: int = 0
) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """Cosine decay over ``epochs`` epochs, at epoch ``start``.

    The schedule is always that of the configured total: a run resumed with more epochs
    than it was started with continues on the cosine of the new total (its learning
    rate at ``start`` is the new schedule's), so no epoch runs past the end of an old
    schedule at learning rate 0. With the same total the learning rates are exactly
    those of the uninterrupted run.
    """
    for group in optimizer.param_groups:
        group["lr"] = group.get("initial_lr", group["lr"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    return replay(scheduler, start)
