"""Collation into :class:`bevsimdet.data.batch.Batch` and a seeded DataLoader.

The sampler hands the dataset ``(index, (seed, epoch))`` keys, so every random augmentation
depends on (seed, epoch, index) only: the same whatever ``num_workers`` is, and reproducible when
training resumes at a given epoch (``set_epoch``).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bevsimdet.data.batch import Batch


def collate(items: Sequence[Any]) -> Batch:
    """Stack per-sample :class:`~bevsimdet.data.dataset.SampleItem` s into a :class:`Batch`
    (points stay a list; ``None`` if any sample has no points)."""
    if not items:
        raise ValueError("cannot collate an empty list of samples")
    has_points = all(it.points is not None for it in items)
    return Batch(
        images=torch.stack([it.images for it in items]),
        intrinsics=torch.stack([it.intrinsics for it in items]),
        cam2ego=torch.stack([it.cam2ego for it in items]),
        img_aug=torch.stack([it.img_aug for it in items]),
        bev_aug=torch.stack([it.bev_aug for it in items]),
        points=[it.points for it in items] if has_points else None,
        gt_boxes=[it.gt_boxes for it in items],
        gt_labels=[it.gt_labels for it in items],
        meta=[it.meta for it in items],
    )


class SeededSampler(Sampler):
    """Yields ``(index, (seed, epoch))``; shuffles with a permutation fixed by (seed, epoch).

    With ``num_replicas > 1`` each rank takes every ``num_replicas``-th index of the (padded)
    order, as ``DistributedSampler`` does. Each pass advances the epoch unless :meth:`set_epoch`
    sets it.
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0):
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.size // self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, tuple[int, int]]]:
        epoch = self.epoch
        self.epoch += 1
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.num_replicas > 1 and order:
            order += order[: len(self) * self.num_replicas - len(order)]
            order = order[self.rank :: self.num_replicas]
        return iter([(i, (self.seed, epoch)) for i in order])


def _worker_init(worker_id: int) -> None:
    # one thread per worker: the workers already run in parallel
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int,
    distributed: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset`` collating into :class:`Batch`; with ``distributed`` (and
    ``torch.distributed`` initialised) each rank reads its own shard."""
    dist = distributed and torch.distributed.is_available() and torch.distributed.is_initialized()
    sampler = SeededSampler(
        len(dataset),
        shuffle=shuffle,
        seed=seed,
        num_replicas=torch.distributed.get_world_size() if dist else 1,
        rank=torch.distributed.get_rank() if dist else 0,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=drop_last,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )
