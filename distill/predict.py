"""Test-time inference for any network with the HigherHRNet output contract (teacher and students).

A model maps a normalised (B, 3, H, W) batch to `[out_1/4 (B, J+T, H/4, W/4), out_1/2 (B, J, H/2, W/2)]`
(T = J per-joint tag maps, or 1 shared map). `Predictor` runs the official `tools/valid.py` pipeline:

    for s in sorted(scales, reverse=True):          # e.g. [2, 1, 0.5], or just [1]
        resize_for_test(image, input_size, s, min(scales))      -> official affine warp, multiple of 64
        /255, ImageNet mean/std
        forward(x) and, with flip test, forward(flip(x))         -> outputs cast to float32
        aggregate_single_scale(...)                              -> heatmaps projected to the scale-1
                                                                    base size; tags [orig, flipped]
    heatmaps averaged over scales, tags from scale 1 (`combine_scales`)
    AECodec.decode -> people in map pixels -> image pixels (official `get_final_preds`)

Images that share a resized size go through the network as one batch (`predict_batch`). The device is
the model's (or `device=`); `channels_last` and autocast (`autocast_dtype=torch.bfloat16`, or float16
on CUDA) are options. Network outputs are always cast back to float32 before aggregation.

Like the official code, the image centre/scale used to map people back is that of the last (smallest)
scale processed; for the official scale sets it equals the scale-1 one exactly.

`evaluate_model(predictor, data_root, split)` runs a COCO-format split and returns the 10 COCO stats.
"""
from __future__ import annotations

import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.allocator import keep_freed_memory_unless_disabled
from distill.amp import amp_dtype, autocast, module_device
from distill.codec import AECodec
from distill.data.coco import CocoKeypointDataset
from distill.data.images import read_image_file
from distill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from distill.evaluate import coco_keypoint_eval, people_to_results
from distill.geometry import InferenceResize, inference_resize, resize_for_test
from distill.inference import OutputLayout, aggregate_single_scale, combine_scales
from distill.keypoints import KeypointSpec
from distill.progress import progress

__all__ = ["Prediction", "Predictor", "evaluate_model", "infer_layout", "read_image"]

TIMING_KEYS = ("preprocess", "network", "aggregate", "decode")


def read_image(path: str | Path) -> np.ndarray:
    """(h, w, 3) uint8 RGB, read as the official code does (IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION); truncated
    or corrupt JPEGs raise `ImageReadError` (see distill.data.images) instead of decoding into grey rows."""
    return read_image_file(path)


def infer_layout(model: nn.Module, num_joints: int, outputs: Sequence[torch.Tensor] | None = None) -> OutputLayout | None:
    """Which outputs carry heatmaps/tags: the contract `model.output_layout` (every teacher and student
    declares one), else, for foreign networks only, from the channel counts of `outputs` (J: heatmaps only;
    2J: per-joint tags; J+1: shared tag)."""
    layout = getattr(model, "output_layout", None)
    if isinstance(layout, OutputLayout):
        return layout
    if outputs is None:
        return None
    tags, per_joint = [], []
    for i, out in enumerate(outputs):
        extra = out.shape[1] - num_joints
        if extra not in (0, 1, num_joints):
            raise ValueError(f"output {i} has {out.shape[1]} channels; expected {num_joints} heatmaps "
                             f"(+ {num_joints} or 1 tag maps)")
        tags.append(extra > 0)
        if extra:
            per_joint.append(extra == num_joints)
    if not any(tags):
        raise ValueError("no network output carries tag maps")
    if len(set(per_joint)) > 1:
        raise ValueError("outputs disagree on per-joint vs shared tag maps")
    return OutputLayout(num_joints, (True,) * len(outputs), tuple(tags), per_joint[0])


@dataclass
class Prediction:
    """One image's result.

    people: (N, J, 3+L) float32 (x, y, heatmap value, tags...) in original-image pixels.
    people_map: the same in the frame of the final maps (`map_size`, (w, h)), as decoded.
    scores: (N,) float32 person scores. heatmaps (J, H, W) / tags (T, H, W, L): float32 CPU tensors
    when asked for (`return_maps=True`), else None.
    """

    people: np.ndarray
    people_map: np.ndarray
    scores: np.ndarray
    resize: InferenceResize
    map_size: tuple[int, int]
    heatmaps: torch.Tensor | None = None
    tags: torch.Tensor | None = None

    def to_results(self, image_id: Any, category_id: int = 1) -> list[dict[str, Any]]:
        """COCO result dicts (keypoints in image pixels)."""
        return people_to_results(self.people_map, self.scores, image_id, self.resize, self.map_size, category_id)


@dataclass
class _ImageState:
    hw: tuple[int, int]
    base: InferenceResize  # scale-1 resize: its size is the projection target
    per_scale: list = field(default_factory=list)  # (scale, heatmaps (1,J,H,W), tags (1,T,H,W,L))
    last_resize: InferenceResize | None = None


class Predictor:
    """Official test-time inference around a frozen model (see the module docstring).

    The model is moved to `device` (default: where its parameters are) and, with `channels_last`,
    converted to that memory format, in place. It should be in eval() mode (a warning is given once
    otherwise). `max_batch` caps images per forward; `fuse_flip` runs original and flipped images in
    one forward (faster on GPUs; BN in eval mode makes it equivalent up to float round-off).
    `decode_overrides` go to `AECodec.for_keypoints` (e.g. `refine=False`, `threads=4`).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: KeypointSpec | None = None,
        *,
        input_size: int = 512,
        flip: bool = True,
        scales: Sequence[float] = (1.0,),
        project: bool = True,
        device: str | torch.device | None = None,
        channels_last: bool = False,
        autocast_dtype: torch.dtype | None = None,
        layout: OutputLayout | None = None,
        max_batch: int = 32,
        fuse_flip: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        timing: bool = False,
        **decode_overrides: Any,
    ) -> None:
        self.spec = spec or KeypointSpec.coco()
        self.input_size = int(input_size)
        self.flip = bool(flip)
        self.scales = sorted((float(s) for s in scales), reverse=True)
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"scales must be positive, got {list(scales)}")
        if len(self.scales) > 1 and 1.0 not in self.scales:
            raise ValueError(f"multi-scale test needs scale 1 among the scales (tags come from it), got {list(scales)}")
        self.project = bool(project)
        self.device = torch.device(device) if device is not None else module_device(model)
        self.autocast_dtype = amp_dtype(autocast_dtype, self.device)
        self.channels_last = bool(channels_last)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.max_batch = max(1, int(max_batch))
        self.fuse_flip = bool(fuse_flip)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.decode_overrides = decode_overrides
        self.layout = layout or infer_layout(model, self.spec.num_joints)
        self._codec: AECodec | None = None
        self.timing = bool(timing)
        self.timings: dict[str, float] = dict.fromkeys(TIMING_KEYS, 0.0)
        self.images_timed = 0
        self._warned_training = False
        self._warn_coarse_projection()
        if self.device.type == "cpu":
            keep_freed_memory_unless_disabled()  # reuse the per-image map buffers (scripts/bench_allocator.py --predict)

    def _warn_coarse_projection(self) -> None:
        """The official parser projects the maps to the input size before its 5-pixel NMS. From maps at 1/4 of the
        input (a model without a 1/2 output) that is a 4x blow-up in which one joint leaves several peaks: about
        0.1 AP lost on `step_s` (docs/learning.md, session 29). Say so once; the result stays the official one."""
        strides = self.layout.strides if self.layout is not None else ()
        if self.project and strides and min(strides) >= 4:
            warnings.warn(f"Predictor: the model's finest output is at 1/{min(strides)} of the input; projecting it to "
                          "the input size before the official NMS costs AP on such models (docs/learning.md, session "
                          "29). Decoding at heatmap resolution (`--decode improved`, or project=False) avoids it.",
                          stacklevel=3)

    # ------------------------------------------------------------------------------------ pieces
    @property
    def codec(self) -> AECodec:
        if self._codec is None:
            if self.layout is None:
                raise RuntimeError("the output layout is not known yet (run a forward pass first)")
            overrides = dict(self.decode_overrides)
            if self.layout.tag_dim > 1:  # D-dim tags: people keyed by the whole D-vector of their seed joint
                overrides["match"] = {"key_dims": self.layout.tag_dim, **(overrides.get("match") or {})}
            self._codec = AECodec.for_keypoints(self.spec, tag_per_joint=self.layout.tag_per_joint, **overrides)
        return self._codec

    def reset_timings(self) -> None:
        self.timings = dict.fromkeys(TIMING_KEYS, 0.0)
        self.images_timed = 0

    def _tick(self, key: str, t0: float) -> float:
        """Add the time since t0 to `key` (synchronising CUDA first) and return the new start."""
        if not self.timing:
            return t0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[key] += now - t0
        return now

    def normalize(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-size (H, W, 3) uint8 RGB images -> (B, 3, H, W) float32 on the device: /255, mean/std."""
        x = torch.from_numpy(np.ascontiguousarray(np.stack(images))).to(self.device)
        x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255)
        x = x.sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def preprocess(self, image: np.ndarray, scale: float = 1.0, min_scale: float | None = None
                   ) -> tuple[torch.Tensor, InferenceResize]:
        """Official test resize + normalisation of one image -> ((1, 3, H, W) input, its resize)."""
        resized, resize = resize_for_test(image, self.input_size, scale, min(self.scales) if min_scale is None else min_scale)
        return self.normalize([resized]), resize

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The network on a normalised batch, under the configured autocast; float32 outputs."""
        if self.model.training and not self._warned_training:
            warnings.warn("Predictor: the model is in training mode (BN uses batch statistics); call .eval()",
                          RuntimeWarning, stacklevel=2)
            self._warned_training = True
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.autocast_dtype):
            outputs = self.model(x)
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        outputs = [o.float() for o in outputs]
        if self.layout is None:
            self.layout = infer_layout(self.model, self.spec.num_joints, outputs)
        return outputs

    def _forward_pair(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        if not self.flip:
            return self.forward(x), None
        xf = torch.flip(x, [3])
        if self.fuse_flip:
            both = self.forward(torch.cat([x, xf]))
            b = x.shape[0]
            return [o[:b] for o in both], [o[b:] for o in both]
        return self.forward(x), self.forward(xf)

    # ------------------------------------------------------------------------------------- maps
    @torch.inference_mode()
    def predict_maps(self, images: Sequence[np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor, InferenceResize]]:
        """Final heatmaps (1, J, H, W) and tags (1, T, H, W, L) on the device, with the resize that maps
        the map frame (w, h) = (W, H) back to the image, for each image."""
        states = []
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 RGB images, got {image.shape} {image.dtype}")
            h, w = image.shape[:2]
            states.append(_ImageState((h, w), inference_resize(w, h, self.input_size, 1.0, min(self.scales))))
        for s in self.scales:
            t0 = time.perf_counter()
            groups: dict[tuple, list[tuple[int, np.ndarray]]] = defaultdict(list)
            for i, image in enumerate(images):
                resized, resize = resize_for_test(image, self.input_size, s, min(self.scales))
                states[i].last_resize = resize
                groups[(resized.shape[:2], states[i].base.size)].append((i, resized))
            t0 = self._tick("preprocess", t0)
            for (_, base_wh), members in groups.items():
                for start in range(0, len(members), self.max_batch):
                    chunk = members[start:start + self.max_batch]
                    t0 = time.perf_counter()
                    x = self.normalize([r for _, r in chunk])
                    t0 = self._tick("preprocess", t0)
                    outs, outs_flip = self._forward_pair(x)
                    t0 = self._tick("network", t0)
                    heat, tags = aggregate_single_scale(
                        outs, outs_flip, self.layout, self.spec.flip_index if self.flip else None,
                        (base_wh[1], base_wh[0]) if self.project else None)
                    for k, (i, _) in enumerate(chunk):
                        states[i].per_scale.append((s, heat[k:k + 1], tags[k:k + 1]))
                    self._tick("aggregate", t0)
        t0 = time.perf_counter()
        results = []
        for st in states:
            per_scale = st.per_scale
            if not self.project and len(per_scale) > 1:  # official: resize to the first (largest) scale's maps
                hw = tuple(per_scale[0][1].shape[-2:])
                per_scale = [(s, F.interpolate(h, size=hw, mode="bilinear", align_corners=False),
                              _resize_tags(t, hw)) for s, h, t in per_scale]
            heat, tags = combine_scales(per_scale)
            size = (int(heat.shape[-1]), int(heat.shape[-2]))
            results.append((heat, tags, InferenceResize(size, st.last_resize.center, st.last_resize.scale)))
        self._tick("aggregate", t0)
        return results

    # ---------------------------------------------------------------------------------- predict
    def decode_maps(self, heat: torch.Tensor, tags: torch.Tensor, resize: InferenceResize,
                    return_maps: bool = False) -> Prediction:
        """People from one image's final maps (as `predict_maps` returns them), in image coordinates."""
        decoded = self.codec.decode(heat, tags)[0]
        return Prediction(
            people=resize.to_image(decoded.people), people_map=decoded.people, scores=decoded.scores,
            resize=resize, map_size=resize.size,
            heatmaps=heat[0].float().cpu() if return_maps else None,
            tags=tags[0].float().cpu() if return_maps else None,
        )

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray], return_maps: bool = False) -> list[Prediction]:
        """People per image (RGB uint8 arrays of any sizes; same-size ones share forward passes)."""
        if len(images) == 0:
            return []
        maps = self.predict_maps(images)
        t0 = time.perf_counter()
        preds = [self.decode_maps(heat, tags, resize, return_maps) for heat, tags, resize in maps]
        self._tick("decode", t0)
        self.images_timed += len(images)
        return preds

    def predict(self, image: np.ndarray, return_maps: bool = False) -> Prediction:
        return self.predict_batch([image], return_maps)[0]

    def __call__(self, image: np.ndarray, return_maps: bool = False) -> Prediction:
        return self.predict(image, return_maps)


def _resize_tags(tags: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, T, H, W, L) -> (B, T, h, w, L), bilinear per tag slice."""
    if tuple(tags.shape[2:4]) == tuple(hw):
        return tags
    b, t, _, _, l = tags.shape
    flat = tags.permute(0, 4, 1, 2, 3).reshape(b, l * t, *tags.shape[2:4])
    out = F.interpolate(flat, size=hw, mode="bilinear", align_corners=False)
    return out.reshape(b, l, t, *hw).permute(0, 2, 3, 4, 1)


def _chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def evaluate_model(
    predictor: Predictor,
    data_root: str | Path,
    split: str = "val2017",
    *,
    annotation_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 1,
    results_file: str | Path | None = None,
    show_progress: bool = True,
) -> dict[str, float]:
    """COCO keypoint AP of `predictor` on a COCO-format split (all images, as the official test set).

    The model is put in eval() mode for the run and its previous mode restored. `limit` evaluates the
    first N images only (the stats are then over those images). Returns the 10 COCO stats by name.
    """

    ds = CocoKeypointDataset(data_root, split, annotation_file=annotation_file, image_dir=image_dir,
                             remove_images_without_annotations=False, augment=False)
    if ds.num_joints != predictor.spec.num_joints:
        raise ValueError(f"{ds.annotation_file}: {ds.num_joints} joints, the predictor expects "
                         f"{predictor.spec.num_joints}")
    indices = list(range(len(ds) if limit is None else min(limit, len(ds))))
    was_training = predictor.model.training
    predictor.model.eval()
    results: list[dict[str, Any]] = []
    try:
        bar = progress(_chunks(indices, max(1, batch_size)), desc=f"eval {split}",
                       total=-(-len(indices) // max(1, batch_size)), enabled=show_progress, unit="batch")
        for chunk in bar:
            preds = predictor.predict_batch([ds.load_image(i) for i in chunk])
            for i, pred in zip(chunk, preds):
                results += pred.to_results(ds.ids[i], ds.category_id)
    finally:
        predictor.model.train(was_training)
    return coco_keypoint_eval(ds.annotation_file, results, results_file,
                              image_ids=[ds.ids[i] for i in indices], keypoint_names=list(ds.spec.names))
