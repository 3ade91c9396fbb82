"""Schema of the ``train:`` config section (owned by engine/).

Steps count *optimizer updates*: one step consumes ``accum_steps`` micro-batches of
``batch_size`` samples on every process, so the effective batch is
``batch_size * accum_steps * world_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class ScheduleConfig:
    """Learning-rate schedule.

    * ``cosine``: linear warm-up from ``warmup_ratio * lr`` over ``warmup_steps``, then cosine
      annealing to ``min_lr_ratio * lr`` (BEVFusion camera+LiDAR recipe).
    * ``cyclic``: one mmcv-style cycle: cosine rise from ``lr`` to ``target_ratio[0] * lr`` over
      ``step_ratio_up`` of the run, then cosine fall to ``target_ratio[1] * lr``; with
      ``cyclic_momentum`` Adam's beta1 falls to ``beta1 * 0.85 / 0.95`` while the LR rises and
      returns to ``beta1`` (BEVFusion camera-only / SimDistill recipe).
    * ``constant``: ``lr`` throughout (after the optional warm-up).
    """

    type: Literal["cosine", "cyclic", "constant"] = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float = 1.0 / 3.0
    min_lr_ratio: float = 1e-3
    target_ratio: tuple[float, float] = (5.0, 1e-4)
    step_ratio_up: float = 0.4
    cyclic_momentum: bool = True


@dataclass
class InitFromConfig:
    """Start the model from (part of) another run's checkpoint (staged training: LiDAR-only ->
    fusion -> student). Skipped by ``--resume``: the resumed state wins.

    * ``path``: a checkpoint (its EMA weights when it has them) or weight file; null: off.
    * ``prefix_map``: *this model's* module prefix -> the checkpoint's prefix; each key takes the
      longest prefix it lies under, keys outside every prefix keep their initialisation. Empty:
      every key from the same name, e.g. ``{lidar_encoder: lidar_encoder, decoder: decoder,
      head: head}`` loads a LiDAR-only run into a fusion model's LiDAR branch, decoder and head.
    * ``strict``: every mapped key must exist in both with the same shape (a one-line error
      otherwise); false loads what fits and reports the rest.

    The report (loaded / missing / unexpected / shape-mismatched keys) goes to
    ``<work_dir>/init_report.json``.
    """

    path: str | None = None
    prefix_map: dict[str, str] = field(default_factory=dict)
    strict: bool = True


@dataclass
class TrainConfig:
    batch_size: int = 2  # samples per process per micro-batch
    lr: float = 2e-4
    epochs: int = 1
    max_steps: int | None = None  # when set, overrides epochs
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    # parameter-name prefix -> LR multiplier; the longest matching prefix wins
    lr_mult: dict[str, float] = field(default_factory=dict)
    grad_clip: float | None = 35.0  # max global grad norm; null disables clipping
    accum_steps: int = 1
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    amp: bool = True  # mixed precision: CUDA autocast in amp_dtype; CPU: bf16 (where native) only with amp_dtype bfloat16
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    channels_last: bool = False  # NHWC weights and activations (engine.precision.to_channels_last)
    ema_decay: float | None = None  # e.g. 0.999; validation then uses the EMA weights
    num_workers: int = 2
    find_unused_parameters: bool = False  # DDP: set when some parameters get no gradient
    log_interval: int = 10  # steps between log.jsonl / TensorBoard rows
    checkpoint_interval: int = 100  # steps between checkpoints (latest + step-numbered)
    keep_checkpoints: int = 3  # step-numbered checkpoints kept (latest and best always kept)
    val_interval: int = 0  # steps between validations; 0: only at the end of training
    validate: bool = True  # validate during/after training (needs a val split with annotations)
    val_split: str | None = None  # defaults to data.val_split
    best_metric: str = "NDS"  # validation metric that selects checkpoints/best.safetensors
    device: str = "auto"  # auto | cpu | cuda
    dist_timeout_s: float = 1800.0  # collectives (barriers, result gathering) fail after this
    init_from: InitFromConfig = field(default_factory=InitFromConfig)  # staged training (see InitFromConfig)
