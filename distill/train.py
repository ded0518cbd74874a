"""One training loop for teachers (from scratch) and students (ground truth and/or distillation).

    distill train configs/train/step_s_kd.yaml --set optim.epochs=20 --set train.out=runs/x

Readable by design (torchvision-references style): build data, model, teacher, loss, optimiser;
then epochs of steps with AMP, channels_last, TensorBoard, a progress bar, periodic COCO
evaluation through the shared codec, and atomic checkpoints every `train.ckpt_every` steps.

Exact resume: the data order of epoch e is a permutation drawn from (seed, e), every sample's
augmentation is drawn from (seed, e, index) (see `CocoKeypointDataset.rng`), and a checkpoint stores
model, optimiser, scheduler, scaler, the step within the epoch and the RNG states. A resumed run skips
the batches already done and continues with exactly the losses of an uninterrupted one (on CPU).

DDP: start with `torchrun --nproc_per_node N -m distill.cli train CFG`; each rank takes its slice of
the epoch permutation; rank 0 writes checkpoints, TensorBoard and evaluations.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import os
import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from distill.allocator import keep_freed_memory_unless_disabled
from distill.amp import AmpError, amp_dtype, autocast, module_device
from distill.atomic import atomic_path, try_exclusive_lock, write_json_atomic
from distill.codec.decode import decode_mode
from distill.codec.targets import TargetConfig
from distill.config import ConfigError, RunConfig, validate
from distill.data.coco import CocoKeypointDataset, _read_json, annotation_path, validate_coco_keypoints
from distill.data.labels import choose_labelled, read_pseudo_labels
from distill.data.unlabelled import add_unlabelled_split
from distill.data.transforms import AugmentConfig
from distill.errors import CheckpointError, OutputError, TrainingDiverged, ensure_writable_dir
from distill.evaluate import require_scorable
from distill.losses import DistillLoss, LossConfig
from distill.feature_kd import FeatureTap, feature_kd_loss, tap_names
from distill.inherit import inherit_weights
from distill.models import build_model, contract_of, initialise, load_weights, trained_teacher_config
from distill.precise_bn import recompute_bn_statistics
from distill.predict import Predictor, evaluate_model
from distill.progress import progress
from distill.tag_reduction import TagReducer
from distill.teacher_cache.targets import AugMetaDataset, CachedTeacher, OnlineTeacher, TrainBatch

CHECKPOINT = "last.pt"
MODEL_FILE = "model.pt"
RUN_LOCK = ".train.lock"  # flock held by the one process training into the folder
TRAINER_LOSS_KEYS = ("feature_kd_weight", "feature_kd_at", "kd_until")  # loss-section keys the Trainer applies itself

# ------------------------------------------------------------------------------------------ building


def save_model_file(path: Path, model: nn.Module, cfg: RunConfig, extra: dict[str, Any] | None = None) -> None:
    """A self-describing weights file that `load_weights` (and official-style loaders) read.

    Refuses non-finite weights: a diverged model is never written over a good file."""
    _refuse_non_finite(model, path)
    # "overrides" carries the tag-layout shorthands too, so `load_model` rebuilds exactly this model.
    payload = {"state_dict": model.state_dict(), "model": {**asdict(cfg.model), "overrides": cfg.model.model_overrides()},
               **(extra or {})}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def output_strides(model: nn.Module, input_size: int) -> list[int]:
    """Output sizes of the model for a square input (one dry forward on a 1-image batch, on its device)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        outs = model(torch.zeros(1, 3, input_size, input_size, device=module_device(model)))
    model.train(was)
    return [int(o.shape[-1]) for o in outs]


class EpochSampler(torch.utils.data.Sampler[int]):
    """Epoch e visits a permutation drawn from (seed, e); rank r takes every world-th index.

    `skip_batches` drops the first batches of the current epoch (resume mid-epoch).
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.epoch = 0
        self.skip = 0
        self.batches_per_epoch = size // (batch_size * world)
        if self.batches_per_epoch == 0:
            raise ConfigError(f"dataset of {size} images is smaller than one global batch ({batch_size} x {world})")

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.size, generator=g).tolist()
        used = perm[: self.batches_per_epoch * self.batch_size * self.world]
        mine = used[self.rank :: self.world]
        return iter(mine[self.skip * self.batch_size :])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip) * self.batch_size


class MixedEpochSampler(EpochSampler):
    """Batches of `batch_size` labelled images followed by `extra` unlabelled ones (`data.unlabelled_per_batch`).

    An epoch is one pass over the labelled images, in the order EpochSampler would visit a dataset of those images
    alone, so the ground truth reaches the model as in a run on the labelled images only and the teacher's images
    come on top (the usual protocol of semi-supervised training). The unlabelled images follow their own seeded
    permutations, one after the other, as many as the epoch needs. Indices are the dataset's; the DataLoader's
    batch size is `batch_size + extra`.
    """

    def __init__(self, labelled: list[int], unlabelled: list[int], batch_size: int, extra: int, seed: int,
                 rank: int = 0, world: int = 1) -> None:
        super().__init__(len(labelled), batch_size, seed, rank, world)
        if extra < 1 or not unlabelled:
            raise ConfigError(f"data.unlabelled_per_batch = {extra} needs >= 1 and unlabelled images "
                              f"(got {len(unlabelled)})")
        self.labelled, self.unlabelled, self.extra = list(labelled), list(unlabelled), int(extra)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = self.batches_per_epoch
        lab = [self.labelled[i] for i in torch.randperm(len(self.labelled), generator=g).tolist()]
        lab = lab[: n * self.batch_size * self.world][self.rank :: self.world]
        g_un = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 500_000_017)
        need, stream = n * self.extra * self.world, []
        while len(stream) < need:
            stream += [self.unlabelled[i] for i in torch.randperm(len(self.unlabelled), generator=g_un).tolist()]
        un = stream[:need][self.rank :: self.world]
        out: list[int] = []
        for b in range(self.skip, n):
            out += lab[b * self.batch_size:(b + 1) * self.batch_size] + un[b * self.extra:(b + 1) * self.extra]
        return iter(out)

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip) * (self.batch_size + self.extra)


def lr_factor(step: int, steps_per_epoch: int, cfg: RunConfig) -> float:
    """The lr multiplier at `step`: the official step shape (x gamma at each milestone, fractions of the
    epochs) or a cosine from 1 to `min_lr_factor` over all epochs; optional linear warm-up on top."""
    o = cfg.optim
    if o.schedule == "cosine":
        progress = min(1.0, step / max(1, o.epochs * steps_per_epoch))
        factor = o.min_lr_factor + (1 - o.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    elif o.schedule == "step":
        epoch = step // steps_per_epoch
        factor = o.gamma ** sum(epoch >= round(m * o.epochs) for m in o.milestones)
    else:
        raise ConfigError(f"optim.schedule must be 'step' or 'cosine', got {o.schedule!r}")
    if cfg.optim.warmup_steps and step < cfg.optim.warmup_steps:
        factor *= (step + 1) / cfg.optim.warmup_steps
    return factor


def augment_config(cfg: RunConfig) -> AugmentConfig:
    """The run's augmentation from its `data.aug_*` keys (errors name the key)."""
    d = cfg.data
    if len(d.aug_scale) != 2:
        raise ConfigError(f"data.aug_scale must be [min, max], got {d.aug_scale}")
    try:
        return AugmentConfig(min_scale=d.aug_scale[0], max_scale=d.aug_scale[1], max_rotation=d.aug_rotation,
                             max_translate=d.aug_translate, flip_prob=d.aug_flip)
    except ValueError as exc:
        raise ConfigError(f"data.aug_*: {exc}") from None


def _fused_adam_ok(model: nn.Module) -> bool:
    """torch's fused Adam/AdamW takes float parameters on one CPU or CUDA device."""
    params = list(model.parameters())
    devices = {p.device for p in params}
    return bool(params) and len(devices) == 1 and next(iter(devices)).type in ("cpu", "cuda") and all(
        p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) for p in params)


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """Adam (official; `weight_decay` is L2 added to the gradient) or AdamW (decoupled decay, which
    skips biases and BatchNorm/1-D parameters, as usual)."""
    o = cfg.optim
    # One fused kernel for all parameters: the same update up to rounding (tests/test_recipes.py), 3.3 vs 16.8 ms
    # per step for step_s on one CPU thread, where the per-parameter loop was ~4% of a training step.
    fused = {"fused": True} if _fused_adam_ok(model) else {}
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, **fused)
    if o.name == "adamw":
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        return torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, **fused)
    raise ConfigError(f"optim.name must be 'adam' or 'adamw', got {o.name!r}")


class ModelEma:
    """Exponential moving average of a model's weights (buffers copied), updated after every step.

    Why: a from-scratch teacher trained for minutes at a constant lr oscillates around its optimum; the
    average of the recent weights is a better (and smoother) model to evaluate, ship and distil from.
    The effective decay ramps up as min(decay, (1 + n) / (10 + n)) so early averages are not dominated
    by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1) (or 0 for off), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["module"])


# ------------------------------------------------------------------------------------------ the run
def loss_config(cfg: RunConfig, num_joints: int, tag_dim: int = 1) -> LossConfig:
    """The `LossConfig` of a run: its `loss` section; the KD terms only when a teacher is configured; `tag_dim`
    (D, channels per tag map) from the model's output contract."""
    use_teacher = bool(cfg.teacher.name)
    section = asdict(cfg.loss)  # its fields are LossConfig fields by name (tested)
    section["heatmap_factors"] = tuple(section["heatmap_factors"])
    for key in TRAINER_LOSS_KEYS:  # not DistillLoss settings: the Trainer applies them (feature KD, KD schedule)
        section.pop(key)
    if not use_teacher:
        section.update(alpha=0.0, tag_kd_weight=0.0)
    # the dataset encodes per-joint indices; T = 1 students use index mod H*W
    return LossConfig(**section, num_joints=num_joints, tag_index_layout="per_joint", tag_dim=int(tag_dim))


class Trainer:
    """Holds everything one run needs; `fit()` runs it to the end (resuming when possible)."""

    def __init__(self, cfg: RunConfig, resume: bool = True) -> None:
        self.cfg = validate(cfg, "run config")
        self.out = Path(cfg.train.out)
        self.rank, self.world, self.local_rank = _dist_env()
        self._run_lock = None
        if self.rank == 0:  # before any work: a run that cannot save is not started
            ensure_writable_dir(self.out, "train.out")
            # one process per run folder: a second one would overwrite the first one's checkpoints and results
            self._run_lock = try_exclusive_lock(self.out / RUN_LOCK)
            if self._run_lock is None:
                raise OutputError(f"{self.out}: another `distill train` process is training into this folder "
                                  f"(it holds {self.out / RUN_LOCK}); wait for it or choose another train.out")
        try:
            self._setup(cfg, resume)
        except BaseException:
            self.release()  # a run refused while being set up (bad config, changed settings) frees its folder
            raise

    def _setup(self, cfg: RunConfig, resume: bool) -> None:
        """Model, data, teacher, optimiser and the resumed state, once the run folder is ours."""
        self.distributed = self.world > 1
        self.device = _pick_device(cfg.train.device, self.local_rank)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        keep_freed_memory_unless_disabled()  # before the first batch: the DataLoader workers fork with these settings
        _seed_everything(cfg.train.seed + self.rank)

        self.model = build_model(cfg.model.kind, cfg.model.name, cfg.model.model_overrides())
        initialise(self.model, cfg.model.init)
        if cfg.model.init_from:
            self.inherited = inherit_weights(self.model, cfg.model.init_from, cfg.model.init_from_prefix)
            if self.rank == 0:
                print(f"[{self.out.name}] {self.inherited.summary()}", flush=True)
        if cfg.model.weights:
            load_weights(self.model, cfg.model.weights)
        self.model.to(self.device)
        self.num_joints = int(self.model.num_joints)
        self.output_sizes = output_strides(self.model, cfg.data.input_size)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)


        self.dataset = CocoKeypointDataset(
            cfg.data.root, cfg.data.train_split, input_size=cfg.data.input_size, output_sizes=self.output_sizes,
            target_config=TargetConfig(max_people=cfg.data.max_people), seed=cfg.train.seed,
            augment_config=augment_config(cfg), skip_bad_images=cfg.data.skip_bad_images,
        )
        if self.dataset.num_joints != self.num_joints:
            raise ConfigError(f"{self.dataset.annotation_file}: {self.dataset.num_joints} joints, but model "
                              f"{cfg.model.name} predicts {self.num_joints}")
        if cfg.train.eval_every and self.rank == 0:  # an empty val split would "score" AP 0 after the whole run
            self._check_val_split()
        if cfg.data.unlabelled_split:  # before the teacher: a cached store must hold these images too
            add_unlabelled_split(self.dataset, cfg.data.root, cfg.data.unlabelled_split)
        self.teacher, cached = self._build_teacher()  # a cached store checks the whole split, before any subset
        self.passes_labelled = self._apply_label_fraction()
        self.cached_teacher = cached
        self.train_set = AugMetaDataset(self.dataset, cached)
        extra = cfg.data.unlabelled_per_batch
        if extra:  # label-scarce run: each batch = batch_size labelled images + `extra` unlabelled ones
            hidden = self.dataset.unlabelled_ids
            self.sampler = MixedEpochSampler([i for i, x in enumerate(self.dataset.ids) if x not in hidden],
                                             [i for i, x in enumerate(self.dataset.ids) if x in hidden],
                                             cfg.optim.batch_size, extra, cfg.train.seed, self.rank, self.world)
        else:
            self.sampler = EpochSampler(len(self.dataset), cfg.optim.batch_size, cfg.train.seed, self.rank,
                                        self.world)
        self.images_per_step = (cfg.optim.batch_size + extra) * self.world
        self.loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=cfg.optim.batch_size + extra, sampler=self.sampler, num_workers=cfg.data.workers,
            drop_last=True, persistent_workers=False, pin_memory=self.device.type == "cuda",
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch

        self.tag_reducer = TagReducer(cfg.loss.tag_reduction) if cfg.teacher.name else None
        losses = loss_config(cfg, self.num_joints, contract_of(self.model).tag_dim)
        self.criterion = DistillLoss(losses, self.tag_reducer)
        # `loss.kd_until`: the teacher's terms apply for that fraction of the epochs, the ground truth alone after
        self.kd_epochs = round(cfg.loss.kd_until * cfg.optim.epochs) if cfg.teacher.name else 0
        self.criterion_gt = None
        if cfg.teacher.name and self.kd_epochs < cfg.optim.epochs:
            self.criterion_gt = DistillLoss(replace(losses, alpha=0.0, tag_kd_weight=0.0), self.tag_reducer)
        self.optimizer = build_optimizer(self.model, cfg)
        lr_factor(0, self.steps_per_epoch, cfg)  # validates the schedule before any work
        self.ema = ModelEma(self.model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        # after the EMA copy, which must not carry the hook
        self.feature_taps: list[tuple[FeatureTap, FeatureTap]] = []  # (student, teacher) per named layer
        if cfg.loss.feature_kd_weight > 0:
            try:
                self.feature_taps = [(FeatureTap(self.model, name), FeatureTap(self.teacher.model, name))
                                     for name in tap_names(cfg.loss.feature_kd_at)]
            except ValueError as exc:
                raise ConfigError(f"loss.feature_kd_at: {exc}") from None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.steps_per_epoch, cfg))
        try:
            self.amp_dtype = amp_dtype(cfg.train.amp, self.device)
        except AmpError as exc:
            raise ConfigError(f"train.amp: {exc}") from None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)

        self.net: nn.Module = self.model
        if self.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)

        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self._fit_t0: float | None = None
        # Wall time and images of earlier sessions of this run (from the checkpoint), so that a resumed run's
        # summary reports the whole run, and resuming a finished run does not overwrite it with ~0 s.
        self.seconds_before = 0.0
        self.images_before = 0
        self._images_now = 0
        self.history: list[dict[str, float]] = []
        self.resumes: list[dict[str, Any]] = []  # resume overrides: {"step", "changes": {key: [old, new]}}
        self.best_ap = -1.0
        if resume and (self.out / CHECKPOINT).exists():
            self._load_checkpoint(self.out / CHECKPOINT)
        self.writer = None
        if self.rank == 0:
            write_json_atomic(self.out / "config.json", {**cfg.to_dict(), "resumed_with_changes": self.resumes}
                              if self.resumes else cfg.to_dict(), indent=2)
            if cfg.train.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.global_step or None)

    # ------------------------------------------------------------------------------------ pieces
    def _build_teacher(self) -> tuple[Any, Any]:
        t = self.cfg.teacher
        if not t.name:
            return None, None
        if t.mode == "cached":
            if not t.store:
                raise ConfigError("teacher.mode is 'cached' but teacher.store is empty")
            cached = CachedTeacher(t.store, expect_teacher=trained_teacher_config(t.name, t.weights or None),
                                   expect_weights=t.weights or None,
                                   expect_input_size=self.cfg.data.input_size, expect_dataset=self.dataset,
                                   num_outputs=self.cfg.loss.kd_outputs or len(self.output_sizes))
            return cached, cached
        if t.mode != "online":
            raise ConfigError(f"teacher.mode must be 'online' or 'cached', got {t.mode!r}")
        if not t.weights:
            raise ConfigError("teacher.weights is empty: a teacher needs trained weights")
        teacher = build_model("teacher", trained_teacher_config(t.name, t.weights))
        load_weights(teacher, t.weights)
        return OnlineTeacher(teacher, amp=None if self.cfg.train.amp == "none" else self.cfg.train.amp,
                             device=self.device, channels_last=self.cfg.train.channels_last), None

    def _apply_label_fraction(self) -> bool:
        """`data.label_fraction` < 1 or `data.unlabelled_split`: hide or drop the unlabelled images; True when the
        loss must be told which images of a batch are labelled (unlabelled images kept for the teacher)."""
        d = self.cfg.data
        ds = self.dataset
        if d.label_fraction >= 1 and not d.unlabelled_split:
            return False
        annotated = [i for i in ds.ids if i not in ds.unannotated_ids]
        kept = choose_labelled(annotated, d.label_fraction, d.label_seed) if d.label_fraction < 1 else annotated
        if d.unlabelled == "drop":  # (config: never with an unlabelled split)
            ds.keep_only(kept)
            what = f"the other {len(annotated) - len(kept)} are dropped"
        else:
            ds.hide_annotations(set(annotated) - set(kept))
            hidden = ds.unlabelled_ids
            parts = ([f"{len(annotated) - len(kept)} with hidden annotations"] if d.label_fraction < 1 else []) + (
                [f"{len(ds.unannotated_ids)} of split {d.unlabelled_split!r}"] if d.unlabelled_split else [])
            what = f"{len(hidden)} unlabelled images ({' + '.join(parts)}) "
            if d.unlabelled == "teacher":
                what += "are trained on the teacher's terms alone"
            else:
                pseudo = read_pseudo_labels(d.pseudo_labels, hidden, ds.num_joints, d.pseudo_min_score,
                                            d.pseudo_min_joint_score)
                ds.set_pseudo_annotations(pseudo)
                people = sum(len(v) for v in pseudo.values())
                what += f"take {people} people ({people / max(1, len(hidden)):.2f} an image) from {d.pseudo_labels}"
        if self.rank == 0:
            print(f"[{self.out.name}] label fraction {d.label_fraction:g} (label seed {d.label_seed}): {len(kept)} of "
                  f"{len(annotated)} training images keep their annotations; {what}", flush=True)
        return d.unlabelled == "teacher"

    def _autocast(self) -> Any:
        return autocast(self.device, self.amp_dtype)

    def _maybe_fit_tag_reducer(self) -> None:
        """A PCA tag reduction is fitted once, on teacher tags at GT joints of training batches."""
        if self.tag_reducer is None or self.tag_reducer.rule != "pca" or self.tag_reducer.fitted:
            return
        items = []
        self.sampler.set_epoch(0)
        for i, batch in enumerate(self.loader):
            t_out = self.teacher.targets_for(batch)[0]
            items.append((t_out[:, self.num_joints:].float().cpu(), batch.indices[0]))
            if i >= 7:
                break
        self.tag_reducer.fit(items)

    # ------------------------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "history": self.history, "best_ap": self.best_ap, "config": self.cfg.to_dict(), "resumes": self.resumes,
            "train_seconds": self._run_seconds(), "images_seen": self.images_before + self._images_now,
            "tag_reducer": self.tag_reducer.state_dict() if self.tag_reducer else {},
            "ema": self.ema.state_dict() if self.ema else {},
            "rng": {"torch": torch.get_rng_state(), "numpy": _np_state(), "python": repr(random.getstate())},
        }

    def _times_from_old_summary(self, step: int) -> None:
        summary = self.out / "train_summary.json"
        try:
            record = json.loads(summary.read_text())
            if int(record["steps"]) == step:
                self.seconds_before = float(record["train_seconds"])
                self.images_before = round(float(record["images_per_second"]) * self.seconds_before)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no usable summary: the time of the earlier sessions is unknown (counted as 0, as before)

    def _run_seconds(self) -> float:
        """Wall seconds of the whole run: earlier sessions (checkpoint) + this one's fit so far."""
        return self.seconds_before + (time.perf_counter() - self._fit_t0 if self._fit_t0 else 0.0)

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        _refuse_non_finite(self.model, self.out / CHECKPOINT)  # keep the last good checkpoint to resume from
        with atomic_path(self.out / CHECKPOINT) as tmp:
            torch.save(self._state(), tmp)

    def _load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # truncated, not a torch file, or a pickle with code: never run it
            first = (str(exc).splitlines() or ["empty file"])[0][:200]
            raise CheckpointError(f"{path}: cannot be read as a training checkpoint ({type(exc).__name__}: "
                                  f"{first}); remove it or pass --no-resume") from None
        if not isinstance(state, dict) or not {"model", "optimizer", "config", "global_step"} <= set(state):
            raise CheckpointError(f"{path}: not a training checkpoint of this project (expected a dict with model, "
                                  "optimizer, config, global_step); remove it or pass --no-resume")
        if state.get("config", {}).get("model") != self.cfg.to_dict()["model"]:
            raise ConfigError(f"{path} was written for model {state.get('config', {}).get('model')}, "
                              f"not {self.cfg.to_dict()['model']}; use another train.out or remove it")
        changed = resume_conflicts(state["config"], self.cfg.to_dict())
        self.resumes = list(state.get("resumes", []))
        if changed and not self.cfg.train.resume_override:
            listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ConfigError(
                f"{path}: resuming would silently keep the checkpoint's settings, but the config changed ({listed}). "
                "Resume with the original values, pass --set train.resume_override=true to apply the new ones from "
                f"step {state['global_step']} on, start over with --no-resume, or start a new run from these weights "
                f"with --set model.weights={self.out / MODEL_FILE} and another train.out")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        self.best_ap = float(state["best_ap"])
        self.seconds_before = float(state.get("train_seconds", 0.0))  # absent in checkpoints before session 19
        self.images_before = int(state.get("images_seen", 0))
        if "train_seconds" not in state:  # an older checkpoint: the summary of a finished run still has the time
            self._times_from_old_summary(int(state["global_step"]))
        if self.tag_reducer is not None and state["tag_reducer"]:
            self.tag_reducer.load_state_dict(state["tag_reducer"])
        if self.ema is not None:
            if not state.get("ema"):
                raise ConfigError(f"{path} has no EMA weights but train.ema_decay is {self.cfg.train.ema_decay}; "
                                  "resume with ema_decay=0 or use another train.out")
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if changed:
            self._apply_changes(state, changed)

    def _apply_changes(self, state: dict[str, Any], changed: dict[str, tuple[Any, Any]]) -> None:
        """Resume override: what the restored optimiser/schedule/position would otherwise keep is set to the
        new config (the loss, data and schedule shape already follow it), and the change is recorded."""
        o = self.cfg.optim
        for group in self.optimizer.param_groups:
            group["initial_lr"] = o.lr
            if "optim.weight_decay" in changed and group.get("weight_decay", 0.0) > 0:
                group["weight_decay"] = o.weight_decay
        self.scheduler.base_lrs = [o.lr for _ in self.optimizer.param_groups]
        factor = lr_factor(self.global_step, self.steps_per_epoch, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = o.lr * factor
        if "optim.batch_size" in changed:  # keep the samples already seen this epoch, in the new batch size
            old_bs = int(changed["optim.batch_size"][0])
            self.step_in_epoch = min(self.step_in_epoch * old_bs // o.batch_size, self.steps_per_epoch)
        self.resumes.append({"step": self.global_step, "changes": {k: [a, b] for k, (a, b) in changed.items()}})
        print(f"[{self.out.name}] resumed at step {self.global_step} with changed settings: "
              + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()), flush=True)

    # ------------------------------------------------------------------------------------ loop
    def _loader_reads_teacher(self, needed: bool) -> None:
        """Past `loss.kd_until` no step reads the cached teacher's maps, so the loader stops warping them (the
        workers are forked per epoch and see the change). Unlabelled images keep them: only the teacher covers
        those."""
        if self.cached_teacher is not None:
            self.train_set.teacher = self.cached_teacher if needed else None

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        images, heatmaps, masks, indices = batch.images, batch.heatmaps, batch.masks, batch.indices
        to = lambda xs: [x.to(self.device, non_blocking=True) for x in xs]  # noqa: E731
        images = images.to(self.device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        teacher_outputs = None
        kd_on = self.teacher is not None and self.global_step // self.steps_per_epoch < self.kd_epochs
        if kd_on:
            teacher_outputs = [t.to(self.device) for t in self.teacher.targets_for(batch)]
        with self._autocast():
            outputs = self.net(images)
        criterion = self.criterion if kd_on or self.criterion_gt is None else self.criterion_gt
        # The loss reads autocast's bf16 outputs as they are: it copies the heatmaps to contiguous float32 once and
        # gathers the tags before converting them (a whole-output `.float()` here was a second copy per step).
        labelled = batch.meta["labelled"].to(self.device) if self.passes_labelled else None
        loss, logs = criterion(list(outputs), to(heatmaps), to(masks), to(indices), teacher_outputs, labelled)
        if self.feature_taps and kd_on:
            feature_kd = torch.stack([feature_kd_loss(s.take(), t.take()).mean() for s, t in self.feature_taps]).mean()
            loss = loss + self.cfg.loss.feature_kd_weight * feature_kd
            logs["feature_kd"] = float(feature_kd.detach())
            logs["total"] = float(loss.detach())
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss.item()} at step {self.global_step}; lower optim.lr or check data")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        return logs

    def release(self) -> None:
        """Give up the run folder's lock (also released by the OS when the process ends)."""
        if self._run_lock is not None:
            self._run_lock.close()
            self._run_lock = None

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        self._maybe_fit_tag_reducer()
        max_steps = cfg.train.max_steps or cfg.optim.epochs * self.steps_per_epoch
        t0 = self._fit_t0 = time.perf_counter()
        self._images_now = 0
        out_of_time = False
        while self.epoch < cfg.optim.epochs and self.global_step < max_steps and not out_of_time:
            self.dataset.set_epoch(self.epoch)
            self.sampler.set_epoch(self.epoch, self.step_in_epoch)
            self._loader_reads_teacher(self.epoch < self.kd_epochs or self.passes_labelled)
            self.net.train()
            bar = progress(self.loader, f"epoch {self.epoch + 1}/{cfg.optim.epochs}", enabled=self.rank == 0,
                           unit="batch")
            for batch in bar:
                logs = self.train_step(batch)
                self.step_in_epoch += 1
                self.global_step += 1
                self._images_now += self.images_per_step
                self.history.append({"step": self.global_step, **logs})
                if self.writer and self.global_step % max(1, cfg.train.log_every) == 0:
                    for k, v in logs.items():
                        self.writer.add_scalar(f"{'train' if k != 'lr' else 'opt'}/{k}", v, self.global_step)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{logs['total']:.4g}")
                if cfg.train.ckpt_every and self.global_step % cfg.train.ckpt_every == 0:
                    self.save_checkpoint()
                if self.global_step >= max_steps:
                    break
                if cfg.train.max_minutes and time.perf_counter() - t0 >= cfg.train.max_minutes * 60:
                    out_of_time = True
                    break
            if self.step_in_epoch >= self.steps_per_epoch:
                self.epoch += 1
                self.step_in_epoch = 0
                self._log_epoch(t0, self._images_now)
                last = self.epoch >= cfg.optim.epochs or self.global_step >= max_steps
                if last and cfg.train.precise_bn_batches:
                    self.precise_bn()
                if cfg.train.eval_every and (self.epoch % cfg.train.eval_every == 0 or last):
                    self.evaluate()
                self.save_checkpoint()
        wall = time.perf_counter() - t0
        self.save_checkpoint()  # also when stopped by max_steps mid-epoch, so the run can continue
        if self.distributed:
            self._check_replicas_agree()
        total_seconds, total_images = self.seconds_before + wall, self.images_before + self._images_now
        result = {"steps": self.global_step, "train_seconds": total_seconds,
                  "images_per_second": total_images / total_seconds if total_seconds > 0 else 0.0,
                  "session_seconds": wall,
                  "final_loss": self.history[-1]["total"] if self.history else None}
        if self.rank == 0:
            save_model_file(self.out / MODEL_FILE, self.final_model, cfg,
                            {"tag_reducer": self.tag_reducer.state_dict() if self.tag_reducer else {},
                             "ema": self.ema is not None})
            write_json_atomic(self.out / "train_summary.json", {**result, "best_ap": self.best_ap}, indent=2)
        if self.writer:
            self.writer.close()
        return result

    def precise_bn(self) -> int:
        """Re-estimate the final model's BN statistics on `train.precise_bn_batches` augmented training batches.

        The batches come from the dataset without the teacher's maps (not needed), with augmentations of epochs
        the training never drew (passes over the data until the count is reached), in an order seeded by the
        run's seed and rank, so a rerun gives the same statistics."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.train.seed + 1_000_003 * (self.rank + 1))

        def batches() -> Iterator[torch.Tensor]:
            dataset = copy.copy(self.dataset)  # its own epoch counter: the run's dataset is left as it is
            for k in itertools.count():
                dataset.set_epoch(cfg.optim.epochs + 1 + k)
                loader = torch.utils.data.DataLoader(
                    _ImagesOnly(dataset), batch_size=cfg.optim.batch_size, shuffle=True, generator=gen,
                    num_workers=cfg.data.workers, drop_last=True)
                if len(loader) == 0:  # fewer images than a batch: nothing to average (and no endless loop)
                    return
                yield from loader

        fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        t0 = time.perf_counter()
        used = recompute_bn_statistics(self.final_model, batches(), cfg.train.precise_bn_batches, self._autocast(),
                                       fmt)
        if self.rank == 0:
            print(f"[{self.out.name}] precise BN: statistics from {used} training batches "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
        return used

    @property
    def final_model(self) -> nn.Module:
        """The weights a run evaluates and ships: the EMA when on, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    def _log_epoch(self, t0: float, images_seen: int) -> None:
        """One plain line per epoch (the progress bar is silent when output is not a terminal)."""
        if self.rank != 0:
            return
        recent = self.history[-self.steps_per_epoch:]
        mean = lambda k: sum(h.get(k, 0.0) for h in recent) / max(1, len(recent))  # noqa: E731
        names = ("hm_4", "hm_2", "push", "pull", "tag_kd", "feature_kd")
        terms = " ".join(f"{k}={mean(k):.4g}" for k in names if k in recent[-1])
        elapsed = time.perf_counter() - t0
        print(f"[{self.out.name}] epoch {self.epoch}/{self.cfg.optim.epochs} step {self.global_step} "
              f"loss={mean('total'):.4g} {terms} lr={recent[-1]['lr']:.3g} "
              f"{images_seen / max(elapsed, 1e-9):.1f} img/s {elapsed / 60:.1f} min", flush=True)

    def _check_replicas_agree(self) -> None:
        """DDP invariant: every rank ends with the same weights (a cheap checksum, all-gathered)."""
        checksum = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).sum().reshape(1)
        gathered = [torch.zeros_like(checksum) for _ in range(self.world)]
        dist.all_gather(gathered, checksum)
        if any(not torch.equal(g, gathered[0]) for g in gathered):
            raise RuntimeError(f"DDP replicas diverged: parameter checksums {[g.item() for g in gathered]}")

    def _check_val_split(self) -> None:
        path = annotation_path(self.cfg.data.root, self.cfg.data.val_split)
        data = _read_json(path)
        validate_coco_keypoints(data, str(path))
        require_scorable(data, f"{path} (data.val_split; set train.eval_every=0 to train without evaluation)")

    def evaluate(self) -> dict[str, float]:
        """COCO AP on the val split through the shared test-time path (rank 0 only)."""
        if self.rank != 0:
            return {}

        predictor = Predictor(self.final_model, self.dataset.spec, input_size=self.cfg.data.input_size, flip=True,
                              device=self.device, **decode_mode(self.cfg.train.eval_decode))
        stats = evaluate_model(predictor, self.cfg.data.root, self.cfg.data.val_split,
                               limit=self.cfg.data.eval_images or None, show_progress=False)
        train_note = ""
        if self.cfg.data.eval_train_images:  # under- vs over-fitting: the same test on training images
            on_train = evaluate_model(predictor, self.cfg.data.root, self.cfg.data.train_split,
                                      limit=self.cfg.data.eval_train_images, show_progress=False)
            stats = {**stats, "train_AP": on_train["AP"], "train_AR": on_train["AR"]}
            train_note = f" train AP={on_train['AP']:.3f}"
        self.model.train()
        self.best_ap = max(self.best_ap, stats["AP"])
        record = {**stats, "step": self.global_step, "epoch": self.epoch,
                  "train_seconds": self._run_seconds()}
        write_json_atomic(self.out / f"eval_epoch{self.epoch:03d}.json", record, indent=2)
        print(f"[{self.out.name}] eval after epoch {self.epoch} step {self.global_step}: AP={stats['AP']:.3f} "
              f"AP50={stats['AP50']:.3f} AR={stats['AR']:.3f}{train_note}", flush=True)
        if self.writer:
            for k, v in stats.items():
                self.writer.add_scalar(f"val/{k}", v, self.global_step)
            self._log_images()
        return stats

    def _log_images(self) -> None:
        """Predicted heatmaps (max over joints) and tag map 0 of one training sample."""
        image, *_ = self.dataset.sample(0)
        self.model.eval()
        with torch.no_grad():
            out = self.model(image[None].to(self.device))[0][0].float().cpu()
        self.model.train()
        heat = out[: self.num_joints].amax(0).clamp(0, 1)
        tag = out[self.num_joints]
        tag = (tag - tag.min()) / (tag.max() - tag.min() + 1e-6)
        self.writer.add_image("pred/heatmaps_max", heat[None], self.global_step)
        self.writer.add_image("pred/tag0", tag[None], self.global_step)


# ------------------------------------------------------------------------------------------ helpers
# Keys that say how a run is executed or watched, not what it trains: free to change on resume.
RESUME_FREE_KEYS = frozenset({
    "train.out", "train.max_steps", "train.max_minutes", "train.eval_every", "train.ckpt_every", "train.log_every",
    "train.threads", "train.device", "train.tensorboard", "train.eval_decode", "train.channels_last", "train.resume_override",
    "train.precise_bn_batches", "data.workers", "data.eval_images",
    "data.eval_train_images", "data.skip_bad_images", "data.val_split", "teacher.store",
})


class _ImagesOnly(torch.utils.data.Dataset):
    """The augmented images of a training dataset (precise BN needs no targets)."""

    def __init__(self, dataset: CocoKeypointDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.dataset.make_sample_skipping(index).image


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "overrides":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_conflicts(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings that differ between a checkpoint's config and the one resuming it (and that matter).

    Resuming restores the optimiser, schedule, data order and step counters of the checkpoint, so a changed
    lr, batch size, epoch count, loss or dataset would be recorded in config.json but not be what ran."""
    a, b = _flatten(saved), _flatten(current)
    keys = sorted((set(a) | set(b)) - RESUME_FREE_KEYS)
    return {k: (a.get(k), b.get(k)) for k in keys if k in a and a.get(k) != b.get(k)}


def _refuse_non_finite(model: nn.Module, path: Path) -> None:
    from teachers.checkpoint import non_finite_entries

    bad = non_finite_entries(model.state_dict())
    if bad:
        raise TrainingDiverged(f"not writing {path}: {len(bad)} weight tensor(s) hold NaN/inf (first: {bad[0]}); "
                                 "the run diverged (lower optim.lr); the previous file, if any, is kept")


def _dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no GPU is available")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _np_state() -> Any:
    return np.random.get_state()[1].tolist()[:4]  # recorded for inspection; data randomness is per sample


def train(cfg: RunConfig, resume: bool = True) -> dict[str, Any]:
    trainer = Trainer(cfg, resume=resume)
    try:
        summary = trainer.fit()
        if trainer.distributed and dist.is_initialized():
            # Rank 0 still writes files after the last collective; a rank that tears gloo down while its peer is
            # busy can abort at exit ("terminate called without an active exception"). Leave together.
            dist.barrier()
        return summary
    finally:
        trainer.release()
        if trainer.distributed and dist.is_initialized():
            dist.destroy_process_group()
