"""``data.sampler: cbgs``: class-balanced resampling of the training keyframes.

Synthetic class sets for the arithmetic (fast), the tiny simulated world for the real info
records, and the toy trainer for exact resume.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from bevsimdet.data.loader import ClassBalancedSampler, SeededSampler, build_dataloader, class_balanced_counts
from bevsimdet.engine.config import TrainConfig
from bevsimdet.errors import ConfigError, DataError
from test_engine_toy import ToyDataset, collate, make_trainer, state_equal

# 200 samples: class 0 in all, 1 in every 2nd, 2 in every 20th, 3 in every 40th; 4 in none;
# samples 0..9 hold nothing of a detection class at all
CAR, PED, BUS, TRAILER = 0, 1, 2, 3


def synthetic_sets(n: int = 200) -> list[frozenset[int]]:
    sets = []
    for i in range(n):
        held = {CAR} | ({PED} if i % 2 == 0 else set()) | ({BUS} if i % 20 == 3 else set()) | ({TRAILER} if i % 40 == 7 else set())
        sets.append(frozenset() if i < 10 else frozenset(held))
    return sets


def holding_share(order: list[int], sets: list[frozenset[int]]) -> dict[int, float]:
    """Per class, the fraction of the drawn samples that hold it."""
    counts = Counter(c for i in order for c in sets[i])
    return {c: counts[c] / len(order) for c in sorted(counts)}


def test_counts_follow_the_cbgs_rule():
    sets = synthetic_sets()
    draws = class_balanced_counts(sets)
    n = {c: sum(c in s for s in sets) for c in (CAR, PED, BUS, TRAILER)}
    total = sum(n.values())
    assert sorted(draws) == [CAR, PED, BUS, TRAILER]  # absent class 4 takes no share
    for c, (holding, k) in draws.items():
        assert holding == [i for i, s in enumerate(sets) if c in s]
        assert k == int(n[c] * (0.25 / (n[c] / total)))
        assert abs(k - total / 4) <= 1


def test_class_shares_even_out():
    sets = synthetic_sets()
    sampler = ClassBalancedSampler(sets, seed=3)
    order = [i for i, _ in sampler]
    assert len(order) == len(sampler) == sum(k for _, k in sampler.draws.values())
    assert all(sets[i] for i in order)  # samples without any class are never drawn
    before = holding_share([i for i in range(len(sets))], sets)
    after = holding_share(order, sets)
    # before: trailer in 1 of 40 samples, car in all; after: every class in >= about a quarter
    assert before[TRAILER] < 0.03 and after[TRAILER] > 0.2 and after[BUS] > 0.2
    assert max(after.values()) / min(after.values()) < 5 < max(before.values()) / min(before.values())


def test_order_is_a_function_of_seed_and_epoch():
    sets = synthetic_sets()
    a, b = ClassBalancedSampler(sets, seed=1), ClassBalancedSampler(sets, seed=1)
    a0, a1 = list(a), list(a)
    assert a0 == list(b) and a1 == list(b)
    assert [k for _, k in a1] == [(1, 1)] * len(a1)
    assert [i for i, _ in a0] != [i for i, _ in a1] and len(a0) == len(a1)
    a.set_epoch(0)
    assert list(a) == a0
    assert [i for i, _ in ClassBalancedSampler(sets, seed=2)] != [i for i, _ in a0]


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_are_disjoint_and_cover_the_epoch(ranks):
    sets = synthetic_sets()
    whole = ClassBalancedSampler(sets, seed=5).epoch_order(0)
    shards = [[i for i, _ in ClassBalancedSampler(sets, seed=5, num_replicas=ranks, rank=r)] for r in range(ranks)]
    per_rank = -(-len(whole) // ranks)
    assert all(len(s) == per_rank for s in shards)
    # rank r holds positions r, r + ranks, ...: dealing them back gives the epoch, padded with its head
    dealt = [shards[p % ranks][p // ranks] for p in range(per_rank * ranks)]
    assert dealt == whole + whole[: per_rank * ranks - len(whole)]


def test_build_dataloader_and_errors():
    class Tiny(ToyDataset):
        def sample_classes(self) -> list[frozenset[int]]:
            return synthetic_sets(len(self))

    ds = Tiny(40)
    loader = build_dataloader(ds, 4, shuffle=True, seed=0, num_workers=0, sampler="cbgs")
    assert isinstance(loader.sampler, ClassBalancedSampler) and len(loader) == -(-len(loader.sampler) // 4)
    assert isinstance(build_dataloader(ds, 4, shuffle=True, seed=0, num_workers=0).sampler, SeededSampler)
    with pytest.raises(ConfigError, match="unshuffled"):
        build_dataloader(ds, 4, shuffle=False, seed=0, num_workers=0, sampler="cbgs")
    with pytest.raises(DataError, match="no annotated object") as e:
        ClassBalancedSampler([frozenset()] * 5, seed=0)
    assert "\n" not in str(e.value)


class IndexedToy(ToyDataset):
    """The toy regression data with class sets, read through the sampler's ``(index, key)``."""

    def sample_classes(self) -> list[frozenset[int]]:
        return [frozenset({0} | ({1} if i % 4 == 0 else set())) for i in range(len(self))]

    def __getitem__(self, key: tuple[int, tuple[int, int]]) -> tuple[Tensor, Tensor]:
        return super().__getitem__(key[0])


def cbgs_trainer(work_dir, max_steps: int):
    t = make_trainer(work_dir, max_steps=max_steps, accum_steps=2, checkpoint_interval=1, train=TrainConfig(lr=1e-2, grad_clip=1.0))
    ds = IndexedToy(10)
    t.loader = DataLoader(ds, batch_size=2, sampler=ClassBalancedSampler(ds.sample_classes(), seed=0), collate_fn=collate)
    return t


def test_resume_mid_epoch_replays_the_same_order(tmp_path):
    straight = cbgs_trainer(tmp_path / "straight", 8)
    straight.fit()
    first = cbgs_trainer(tmp_path / "split", 8)
    # a CBGS epoch here: 13 (sample, class) pairs, 2 classes -> 2 x 6 draws = 6 micro-batches of 2
    first.max_steps = 2  # stop mid-epoch, after 4 of them
    first.fit()
    resumed = cbgs_trainer(tmp_path / "split", 8)
    assert len(resumed.loader) == 6
    assert resumed.resume(tmp_path / "split" / "checkpoints" / "latest.safetensors") == 2
    assert (resumed.epoch, resumed.micro) == (0, 4)
    resumed.fit()
    assert state_equal(straight.model.state_dict(), resumed.model.state_dict())


def test_simulated_world(tiny_world, tiny_infos):
    """The class sets come from the info records; in the simulated worlds every keyframe holds
    every class (a dense 360-degree street), so CBGS balances nothing there and only lengthens the
    epoch to one draw per (sample, class) pair."""
    from bevsimdet.data.dataset import NuScenesDataset

    ds = NuScenesDataset(tiny_infos["mini_train"], tiny_world, image_size=(64, 128), load_points=False)
    sets = ds.sample_classes()
    assert sets == [frozenset(int(c) for c in ds.gt_of(s)[1]) for s in ds.samples] == ds.sample_classes_reference()
    from bevsimdet.data.infos import SampleView

    assert isinstance(ds.samples, SampleView)  # the columnar arrays' answer, also on a subset view
    full = ds.samples
    ds.samples = full.subset([3, 0, 1])
    assert ds.sample_classes() == ds.sample_classes_reference() == [sets[3], sets[0], sets[1]]
    ds.samples = full
    sampler = ClassBalancedSampler(sets, seed=0)
    pairs = sum(len(s) for s in sets)
    assert 0 <= pairs - len(sampler) < len(sampler.draws)
    shares_before = holding_share(list(range(len(sets))), sets)
    shares_after = holding_share([i for i, _ in sampler], sets)
    # never less balanced than before: the spread of the shares does not grow
    assert np.ptp(list(shares_after.values())) <= np.ptp(list(shares_before.values())) + 1e-9
