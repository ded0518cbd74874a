"""Run configuration: nested dataclasses filled from YAML, with `--set a.b=value` overrides.

Unknown keys and wrong types are errors that name the file and the dotted key, so a typo in a config
never silently trains the wrong thing.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from distill.data.labels import UNLABELLED_MODES
from distill.errors import AEDistillError
from distill.strict_config import from_mapping, read_yaml_mapping


class ConfigError(AEDistillError, ValueError):
    """A configuration file or override is invalid."""


@dataclass
class ModelSection:
    kind: str = "student"  # 'student' or 'teacher'
    name: str = "step_s"  # registry name or a YAML config path
    overrides: dict[str, Any] = field(default_factory=dict)
    # Weight init when training from scratch: 'default' (the builder's), 'kaiming' (Kaiming-normal
    # convs, N(0, 0.001) output layers: what the students use).
    init: str = "default"
    # Start from these weights instead (fine-tuning; strict load, official .pth or our model.pt). A resumed
    # run loads its own checkpoint over them.
    weights: str = ""
    # Start from a larger model of the same module tree (a teacher checkpoint): tensors whose name and shape
    # match are copied, the rest keep `init` (layer dropping, distill/inherit.py). Not with `weights`.
    init_from: str = ""
    # Where init_from's module tree sits in this model: "" (the same tree) or e.g. "head." (a step student whose
    # head has the teacher's head widths, `head_channels`/`deconv_channels`; SimKD-style head reuse).
    init_from_prefix: str = ""
    # The tag layout T x D, shorthands for overrides (0 = the model config's own): T = tag_maps (1 shared map,
    # or the number of joints for per-joint maps), D = tag_dim channels per map. Students and
    # teachers trained here (the official checkpoints are 17 x 1).
    tag_maps: int = 0
    tag_dim: int = 0

    def model_overrides(self) -> dict[str, Any]:
        """`overrides` plus the tag layout shorthands (tag_per_joint from tag_maps, tag_dim)."""
        out = dict(self.overrides)
        if self.tag_maps:
            out["tag_per_joint"] = self.tag_maps != 1
        if self.tag_dim:
            out["tag_dim"] = self.tag_dim
        return out


@dataclass
class TeacherSection:
    """The frozen teacher for distillation (leave `name` empty to train on ground truth only)."""

    name: str = ""
    weights: str = ""  # checkpoint path (official .pth or one of our runs' checkpoints)
    mode: str = "online"  # 'online' (run the teacher on each batch) or 'cached' (read a store)
    store: str = ""  # cache store for mode 'cached'


@dataclass
class DataSection:
    root: str = "runs/demo/data"
    train_split: str = "train2017"
    val_split: str = "val2017"
    input_size: int = 512
    workers: int = 2
    max_people: int = 30
    eval_images: int = 0  # evaluate on the first N val images (0 = all)
    # Augmentation strength (official HigherHRNet defaults and semantics, see distill.data.transforms):
    # scale range, max rotation (degrees), max translation, flip probability.
    aug_scale: list[float] = field(default_factory=lambda: [0.75, 1.5])
    aug_rotation: float = 30.0
    aug_translate: float = 40.0
    aug_flip: float = 0.5
    eval_train_images: int = 0  # also evaluate on the first N train images (under- vs over-fitting; 0 = off)
    # Unreadable/corrupt training images: False = stop with an error naming the file; True = skip them
    # (counted and warned about, replaced by the next readable image).
    skip_bad_images: bool = False
    # Label-scarce runs (distill/data/labels.py): keep the annotations of this share of the training images (a
    # prefix of a permutation seeded by label_seed, the same for every training seed) and treat the rest as
    # unlabelled: 'drop' them (ground truth only on the labelled images) or train on them with the teacher's
    # terms alone ('teacher': heatmap and feature KD; the GT and AE terms average over the labelled images), or
    # annotate them with a teacher's predictions ('pseudo': `pseudo_labels` is `distill predict`'s COCO results
    # file on the training images; people scoring >= pseudo_min_score, joints >= pseudo_min_joint_score).
    label_fraction: float = 1.0
    label_seed: int = 0
    # Images nobody annotated (distill/data/unlabelled.py), e.g. COCO's 'unlabeled2017': <root>/<split>/ with its
    # image list in <root>/annotations/image_info_<split>.json. They join the training images as unlabelled
    # (data.unlabelled 'teacher' or 'pseudo'); '' = none.
    unlabelled_split: str = ""
    unlabelled: str = "drop"
    pseudo_labels: str = ""
    # 0: the unlabelled images are part of each epoch like the others. N > 0: each batch is optim.batch_size labelled
    # images plus N unlabelled ones, and an epoch is a pass over the labelled images (the GT reaches the model as
    # in a run on the labelled images alone; the teacher's images come on top, at N / batch_size more compute).
    unlabelled_per_batch: int = 0
    pseudo_min_score: float = 0.0
    pseudo_min_joint_score: float = 0.1


@dataclass
class LossSection:
    alpha: float = 0.0
    kd_type: str = "mse"  # heatmap KD: 'mse' (FPD), 'softmax' (spatial distributions, KL) or 'target' (see losses.py)
    kd_temperature: float = 1.0
    heatmap_loss: str = "mse"  # GT heatmap term: 'mse' (official), 'weighted', 'focal' (see losses.py)
    fg_weight: float = 0.0  # foreground weight of 'weighted' / 'focal'
    tag_kd_weight: float = 0.0
    tag_kd_type: str = "absolute"  # 'absolute', 'relational', 'person' or 'centered' (see losses.tag_kd_loss)
    # Feature KD (distill/feature_kd.py): weight of the MSE between the student's and the online teacher's inputs
    # of the module named `feature_kd_at` (default: the 1/4 output conv, i.e. the features both heads read; several
    # names separated by commas give the mean of their terms, e.g. "stage3,stage4,final_layers.0").
    feature_kd_weight: float = 0.0
    feature_kd_at: str = "final_layers.0"
    # The teacher's terms (heatmap KD, tag KD, feature KD) apply for this fraction of the epochs (rounded to whole
    # epochs), the ground truth alone after: e.g. 0.667 = KD until the step schedule's first lr drop.
    kd_until: float = 1.0
    # Heatmap KD on the first `kd_outputs` outputs only (lowest resolution first; 0 = every output): 1 = the teacher's
    # 1/4 maps only, ground truth alone at 1/2 (docs/learning.md, session 29).
    kd_outputs: int = 0
    ohkm_gt: bool = False
    ohkm_kd: bool = False
    ohkm_topk: int = 8
    tag_reduction: str = "mean"
    push_factor: float = 1e-3
    pull_factor: float = 1e-3
    # AE push: 'exp' (official default, exp(-d^2)) or 'max' (official option, max(0, 1 - |d|))
    ae_loss_type: str = "exp"
    heatmap_factors: list[float] = field(default_factory=lambda: [1.0, 1.0])


@dataclass
class OptimSection:
    """Adam with the official step schedule shape (x0.1 at 200/300 and 260/300 of the epochs) by default."""

    name: str = "adam"  # 'adam' (official) or 'adamw' (decoupled weight decay)
    schedule: str = "step"  # 'step' (official milestones x gamma) or 'cosine' (to min_lr_factor x lr)
    min_lr_factor: float = 0.0  # cosine: final lr as a fraction of lr
    lr: float = 1.5e-3
    weight_decay: float = 0.0
    epochs: int = 300
    batch_size: int = 12
    milestones: list[float] = field(default_factory=lambda: [200 / 300, 260 / 300])
    gamma: float = 0.1
    warmup_steps: int = 0


@dataclass
class TrainSection:
    out: str = "runs/train"
    seed: int = 0
    device: str = "auto"  # 'auto', 'cpu', 'cuda'
    amp: str = "none"  # 'none', 'bf16', 'fp16' (fp16 on CUDA only)
    channels_last: bool = False
    log_every: int = 10
    eval_every: int = 1  # epochs (and always after the last one); 0 = never
    ckpt_every: int = 0  # steps; 0 = at epoch ends only
    max_steps: int = 0  # stop after this many optimizer steps (0 = run all epochs)
    ema_decay: float = 0.0  # EMA of the weights (e.g. 0.999); evaluated and saved in model.pt when > 0
    max_minutes: float = 0.0  # stop after this much training wall time (0 = no limit); resumable like max_steps
    threads: int = 0  # torch CPU threads (0 = torch default)
    # Resuming with changed settings (lr, batch size, loss, schedule, ...) is refused unless this is true;
    # then the new values apply from the resumed step on and config.json records what changed when.
    resume_override: bool = False
    tensorboard: bool = True
    eval_decode: str = "official"  # decoding of the training-time evaluation: 'official' or 'improved'
    # After the last epoch, re-estimate the BN running statistics of the final model as an equal-weight average
    # over this many augmented training batches (0 = off; distill/precise_bn.py, docs/learning.md session 25).
    precise_bn_batches: int = 0


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


INPUT_SIZE_MULTIPLE = 64  # the official test resize rounds to 64; every stride of our models divides it


def check_input_size(value: Any, where: str = "--input-size") -> int:
    """The one `--input-size` / `data.input_size` rule of every command: a positive multiple of 64."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % INPUT_SIZE_MULTIPLE:
        raise ConfigError(f"{where} must be a positive multiple of {INPUT_SIZE_MULTIPLE} (e.g. 256, 512), "
                          f"got {value!r}")
    return value


def input_size_arg(text: str) -> int:
    """argparse `type=` for every command's --input-size (one rule: a positive multiple of 64)."""

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    try:
        return check_input_size(value, "input size")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("model", "kind"): ("student", "teacher"), ("model", "init"): ("default", "kaiming"),
    ("teacher", "mode"): ("online", "cached"), ("loss", "kd_type"): ("mse", "softmax", "target"),
    ("loss", "heatmap_loss"): ("mse", "weighted", "focal"), ("loss", "tag_kd_type"): ("absolute", "relational", "person", "centered"),
    ("loss", "ae_loss_type"): ("exp", "max"),
    ("loss", "tag_reduction"): ("first", "mean", "pca"), ("optim", "name"): ("adam", "adamw"),
    ("optim", "schedule"): ("step", "cosine"), ("train", "amp"): ("none", "bf16", "fp16"),
    ("train", "eval_decode"): ("official", "improved"), ("data", "unlabelled"): UNLABELLED_MODES,
}


def validate(cfg: "RunConfig", source: str = "config") -> "RunConfig":
    """Every range, enum and multiple of a run config, checked before any work starts.

    Errors name the source, the dotted key, the value and what is allowed, so a bad value fails in a
    second with one line instead of deep inside torch (or, worse, trains something else).
    """
    def bad(key: str, value: Any, allowed: str) -> None:
        raise ConfigError(f"{source}: {key} = {value!r}: {allowed}")

    for (section, key), allowed in _CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            bad(f"{section}.{key}", value, f"expected one of {list(allowed)}")
    m = cfg.model
    if m.tag_maps < 0 or m.tag_dim < 0:
        bad("model.tag_maps/tag_dim", (m.tag_maps, m.tag_dim), "must be >= 1 (or 0: the model config's own)")
    if m.init_from_prefix and not m.init_from:
        bad("model.init_from_prefix", m.init_from_prefix, "needs model.init_from (the checkpoint to read)")
    if m.init_from and m.weights:
        bad("model.init_from", m.init_from, "cannot be combined with model.weights (which loads a whole model)")
    d, lo, o, t = cfg.data, cfg.loss, cfg.optim, cfg.train
    try:
        check_input_size(d.input_size, "data.input_size")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    positive = {"data.max_people": d.max_people, "optim.epochs": o.epochs, "optim.batch_size": o.batch_size,
                "loss.ohkm_topk": lo.ohkm_topk}
    for key, value in positive.items():
        if value < 1:
            bad(key, value, "must be >= 1")
    non_negative = {"data.workers": d.workers, "data.eval_images": d.eval_images,
                    "data.eval_train_images": d.eval_train_images, "optim.weight_decay": o.weight_decay,
                    "optim.warmup_steps": o.warmup_steps, "train.seed": t.seed, "train.log_every": t.log_every,
                    "train.eval_every": t.eval_every, "train.ckpt_every": t.ckpt_every,
                    "train.max_steps": t.max_steps, "train.threads": t.threads,
                    "train.precise_bn_batches": t.precise_bn_batches, "train.max_minutes": t.max_minutes,
                    "loss.tag_kd_weight": lo.tag_kd_weight, "loss.push_factor": lo.push_factor,
                    "loss.pull_factor": lo.pull_factor, "loss.fg_weight": lo.fg_weight,
                    "loss.feature_kd_weight": lo.feature_kd_weight}
    for key, value in non_negative.items():
        if not value >= 0:  # also NaN
            bad(key, value, "must be >= 0")
    if not 0 < o.lr < 1:
        bad("optim.lr", o.lr, "must be in (0, 1)")
    if not 0 < o.gamma <= 1:
        bad("optim.gamma", o.gamma, "must be in (0, 1]")
    if not 0 <= o.min_lr_factor <= 1:
        bad("optim.min_lr_factor", o.min_lr_factor, "must be in [0, 1]")
    if any(not 0 <= m <= 1 for m in o.milestones):
        bad("optim.milestones", o.milestones, "must be fractions of the epochs in [0, 1]")
    if not 0 <= lo.kd_until <= 1:
        bad("loss.kd_until", lo.kd_until, "must be a fraction of the epochs in [0, 1]")
    if lo.kd_outputs < 0:
        bad("loss.kd_outputs", lo.kd_outputs, "must be 0 (heatmap KD on every output) or the number of outputs, "
            "lowest resolution first, that get it")
    if not 0 <= lo.alpha <= 1:
        bad("loss.alpha", lo.alpha, "must be in [0, 1]")
    if not lo.kd_temperature > 0:
        bad("loss.kd_temperature", lo.kd_temperature, "must be > 0")
    if lo.heatmap_loss != "mse" and not lo.fg_weight > 0:
        bad("loss.fg_weight", lo.fg_weight, f"must be > 0 for heatmap_loss {lo.heatmap_loss!r}")
    if not lo.heatmap_factors or any(not f >= 0 for f in lo.heatmap_factors):
        bad("loss.heatmap_factors", lo.heatmap_factors, "must be a non-empty list of numbers >= 0")
    if not (t.ema_decay == 0 or 0 < t.ema_decay < 1):
        bad("train.ema_decay", t.ema_decay, "must be 0 (off) or in (0, 1)")
    if t.device not in ("auto", "cpu", "cuda") and not t.device.startswith("cuda:"):
        bad("train.device", t.device, "expected auto, cpu, cuda or cuda:N")
    if len(d.aug_scale) != 2 or not 0 < d.aug_scale[0] <= d.aug_scale[1]:
        bad("data.aug_scale", d.aug_scale, "must be [min, max] with 0 < min <= max")
    if not 0 <= d.aug_flip <= 1:
        bad("data.aug_flip", d.aug_flip, "must be in [0, 1]")
    if d.aug_rotation < 0 or d.aug_translate < 0:
        bad("data.aug_rotation/aug_translate", (d.aug_rotation, d.aug_translate), "must be >= 0")
    if lo.feature_kd_weight > 0 and not (cfg.teacher.name and cfg.teacher.mode == "online"):
        bad("loss.feature_kd_weight", lo.feature_kd_weight, "needs an online teacher (teacher.name with "
            "teacher.mode: online): features cannot be warped from a cache like outputs")
    if not 0 < d.label_fraction <= 1:
        bad("data.label_fraction", d.label_fraction, "must be in (0, 1] (the share of training images that keep "
            "their annotations)")
    if d.label_seed < 0:
        bad("data.label_seed", d.label_seed, "must be >= 0")
    has_unlabelled = d.label_fraction < 1 or bool(d.unlabelled_split)
    if d.unlabelled_split:
        if d.unlabelled not in ("teacher", "pseudo"):
            bad("data.unlabelled", d.unlabelled, f"must be 'teacher' or 'pseudo' with data.unlabelled_split "
                f"{d.unlabelled_split!r}: it says how its images are trained on")
        if d.unlabelled_split in (d.train_split, d.val_split):
            bad("data.unlabelled_split", d.unlabelled_split, "must be another split than data.train_split and "
                "data.val_split (the training split's images are there already; the val split's are scored)")
    if d.unlabelled == "teacher" and has_unlabelled:
        if not cfg.teacher.name:
            bad("data.unlabelled", d.unlabelled, "needs a teacher (teacher.name) to supervise the unlabelled images; "
                "use 'drop' to train on the labelled images alone")
        if lo.kd_until < 1:
            bad("loss.kd_until", lo.kd_until, "must be 1 with data.unlabelled 'teacher': after kd_until nothing "
                "would supervise the unlabelled images")
        if lo.kd_outputs:
            bad("loss.kd_outputs", lo.kd_outputs, "must be 0 with data.unlabelled 'teacher': the outputs without "
                "KD would have nothing to supervise the unlabelled images")
    if d.unlabelled == "pseudo" and has_unlabelled and not d.pseudo_labels:
        bad("data.pseudo_labels", d.pseudo_labels, "data.unlabelled 'pseudo' needs the teacher's predictions on the "
            "training images (`distill predict ... --out FILE`, then data.pseudo_labels=FILE)")
    if d.unlabelled_per_batch < 0:
        bad("data.unlabelled_per_batch", d.unlabelled_per_batch, "must be >= 0")
    if d.unlabelled_per_batch and not (has_unlabelled and d.unlabelled in ("teacher", "pseudo")):
        bad("data.unlabelled_per_batch", d.unlabelled_per_batch, "needs unlabelled images to add: "
            "data.label_fraction < 1 or data.unlabelled_split, with data.unlabelled 'teacher' or 'pseudo'")
    if d.pseudo_labels and d.unlabelled != "pseudo":
        bad("data.pseudo_labels", d.pseudo_labels, f"is only read with data.unlabelled 'pseudo' (got {d.unlabelled!r})")
    if not (d.pseudo_min_score >= 0 and 0 <= d.pseudo_min_joint_score <= 1):
        bad("data.pseudo_min_score/pseudo_min_joint_score", (d.pseudo_min_score, d.pseudo_min_joint_score),
            "must be >= 0 and in [0, 1]")
    if cfg.teacher.mode == "cached" and cfg.teacher.name and not cfg.teacher.store:
        bad("teacher.store", cfg.teacher.store, "a cached teacher needs the store path")
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optim.lr=3e-4' -> (['optim', 'lr'], 3e-4); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr=3e-4")
    return key.strip().split("."), yaml.safe_load(raw)


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config (or the defaults when `path` is None) and apply overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        if not Path(path).is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = read_yaml_mapping(path, ConfigError)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value
    if overrides:
        source = f"{source} (with overrides)"
    cfg = from_mapping(RunConfig, data, source, ConfigError)
    return validate(cfg, source)
