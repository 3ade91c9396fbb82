"""The Trainer on the real data layer (tiny synthetic world, train-time augmentation, a worker
process) with a small stand-in model: an interrupted + resumed run equals a straight one."""

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

pytest.importorskip("bevsimdet.data.dataset")

from test_engine_toy import state_equal  # noqa: E402

from bevsimdet.config import load_config  # noqa: E402
from bevsimdet.data.batch import Batch  # noqa: E402
from bevsimdet.engine.build import build_optimizer, build_scheduler  # noqa: E402
from bevsimdet.engine.config import TrainConfig  # noqa: E402
from bevsimdet.engine.trainer import Trainer  # noqa: E402


class BoxCounter(nn.Module):
    """Predicts each sample's number of GT boxes from its (augmented) images and points."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4 + 3, 1)

    def forward(self, batch: Batch) -> Tensor:
        b, n = batch.images.shape[:2]
        img = F.avg_pool2d(batch.images.flatten(0, 1), 8)
        feat = self.conv(img).mean(dim=(2, 3)).view(b, n, -1).mean(1)
        pts = torch.stack([p[:, :3].mean(0) / 50.0 for p in batch.points])
        return self.head(torch.cat([feat, pts], 1)).squeeze(1)


class CountObjective:
    weights = {"count": 1.0}

    def terms(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        pred = model(batch)
        target = torch.tensor([float(len(g)) for g in batch.gt_boxes]) / 50.0
        return {"count": F.mse_loss(pred, target)}, pred


def trainer(work_dir, dataroot, info_dir, max_steps):
    from bevsimdet.data.dataset import build_dataset
    from bevsimdet.data.loader import build_dataloader

    cfg = load_config(None, [f"data.dataroot={dataroot}", f"data.info_dir={info_dir}"])
    loader = build_dataloader(build_dataset(cfg.data, "mini_train", train=True), 2, shuffle=True, seed=3, num_workers=1)
    torch.manual_seed(0)
    model = BoxCounter()
    tc = TrainConfig(lr=1e-2)
    opt = build_optimizer(tc, model)
    return Trainer(model, CountObjective(), loader, opt, build_scheduler(tc, opt, 8), work_dir=work_dir, max_steps=max_steps,
                   accum_steps=2, grad_clip=5.0, checkpoint_interval=1, seed=3, progress=False, tensorboard=False)


@pytest.mark.slow
def test_exact_resume_with_real_loader(tiny_world, tiny_infos, tmp_path):
    info_dir = tiny_infos["mini_train"].parent
    straight = trainer(tmp_path / "a", tiny_world, info_dir, 8)  # 16 batches: crosses into epoch 2
    straight.fit()
    first = trainer(tmp_path / "b", tiny_world, info_dir, 5)
    first.fit()
    second = trainer(tmp_path / "b", tiny_world, info_dir, 8)
    second.resume(tmp_path / "b" / "checkpoints" / "latest.safetensors")
    second.fit()
    assert straight.epoch == second.epoch == 1
    assert state_equal(straight.model.state_dict(), second.model.state_dict())
