"""Collation into :class:`bevsimdet.data.batch.Batch` and a seeded DataLoader.

The sampler hands the dataset ``(index, (seed, epoch))`` keys, so every random augmentation
depends on (seed, epoch, index) only: the same whatever ``num_workers`` is, and reproducible when
training resumes at a given epoch (``set_epoch``).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bevsimdet.data.batch import Batch
from bevsimdet.errors import ConfigError, DataError


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
        return -(-self.epoch_size() // self.num_replicas)

    def epoch_size(self) -> int:
        """Length of one epoch's order over all ranks (before padding)."""
        return self.size

    def epoch_order(self, epoch: int) -> list[int]:
        """The dataset indices of ``epoch`` over all ranks, in order (a function of (seed, epoch))."""
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, tuple[int, int]]]:
        epoch = self.epoch
        self.epoch += 1
        order = self.epoch_order(epoch)
        if self.num_replicas > 1 and order:
            # pad to a multiple of the ranks with the order's head, then deal positions round-robin
            order += order[: len(self) * self.num_replicas - len(order)]
            order = order[self.rank :: self.num_replicas]
        return iter([(i, (self.seed, epoch)) for i in order])


def class_balanced_counts(class_sets: Sequence[Iterable[int]]) -> dict[int, tuple[list[int], int]]:
    """CBGS's per-class draw: ``{class: (indices of the samples holding it, draws)}``.

    Class ``c``, held by ``n_c`` samples, gets ``floor(n_c * (1 / K) / (n_c / D))`` draws, with
    ``D`` the sum of all ``n_c`` and ``K`` the number of classes present: about ``D / K`` each, so
    each class gets about the same number of drawn samples that hold it. ``K`` counts only the
    classes present (an absent class would otherwise shrink the epoch by ``1 / K``).
    """
    holding: dict[int, list[int]] = {}
    for index, classes in enumerate(class_sets):
        for c in sorted(set(classes)):
            holding.setdefault(int(c), []).append(index)
    total = sum(len(v) for v in holding.values())
    out = {}
    for c in sorted(holding):
        share = len(holding[c]) / total
        ratio = (1.0 / len(holding)) / share
        out[c] = (holding[c], int(len(holding[c]) * ratio))
    return out


class ClassBalancedSampler(SeededSampler):
    """CBGS (class-balanced grouping and sampling) as a sampler: every epoch draws, for each class,
    :func:`class_balanced_counts` samples holding it (with replacement), then shuffles the
    concatenation. Samples without any annotated class are never drawn.

    Draw and shuffle depend on (seed, epoch) only, so a resumed run replays the same order; the
    epoch length is the same every epoch. Ranks split the order as :class:`SeededSampler` does.

    Args:
        class_sets: per dataset index, the class labels annotated in that sample.
    """

    def __init__(self, class_sets: Sequence[Iterable[int]], *, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(len(class_sets), shuffle=True, seed=seed, num_replicas=num_replicas, rank=rank)
        self.draws = class_balanced_counts(class_sets)
        if not self.draws:
            raise DataError("data.sampler: cbgs found no annotated object of a detection class in the training split", fix="use data.sampler: random, or check the split's annotations")

    def epoch_size(self) -> int:
        return sum(n for _, n in self.draws.values())

    def epoch_order(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.seed, epoch, CBGS_STREAM])
        picks = [np.asarray(idx)[rng.integers(0, len(idx), size=n)] for idx, n in self.draws.values()]
        drawn = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
        return drawn[rng.permutation(len(drawn))].tolist()


CBGS_STREAM = 0xCB65  # separates the CBGS draw from other (seed, epoch)-keyed randomness
SAMPLERS = ("random", "cbgs")


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
    sampler: str = "random",
) -> DataLoader:
    """A DataLoader over ``dataset`` collating into :class:`Batch`; with ``distributed`` (and
    ``torch.distributed`` initialised) each rank reads its own shard.

    ``sampler``: ``random`` (every sample once per epoch, shuffled when ``shuffle``) or ``cbgs``
    (:class:`ClassBalancedSampler`; needs ``dataset.sample_classes()``, training only)."""
    dist = distributed and torch.distributed.is_available() and torch.distributed.is_initialized()
    ranks = dict(num_replicas=torch.distributed.get_world_size() if dist else 1, rank=torch.distributed.get_rank() if dist else 0)
    if sampler == "cbgs":
        if not shuffle:
            raise ConfigError("data.sampler: cbgs resamples the training split; it has no unshuffled order", fix="use sampler 'random' for evaluation loaders")
        chosen: SeededSampler = ClassBalancedSampler(dataset.sample_classes(), seed=seed, **ranks)
    elif sampler == "random":
        chosen = SeededSampler(len(dataset), shuffle=shuffle, seed=seed, **ranks)
    else:
        raise ConfigError(f"unknown data.sampler '{sampler}'", fix=f"use one of {', '.join(SAMPLERS)}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=chosen,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=drop_last,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )
