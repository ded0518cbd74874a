"""Teacher outputs for distillation: one interface, two modes.

    teacher = OnlineTeacher(model, amp="bf16")          # frozen teacher runs on the student's batch
    teacher = CachedTeacher(TeacherStore("runs/cache"))  # precomputed maps, warped per sample
    targets = teacher.targets_for(batch)                 # [ (B, J+T, S/4, S/4), (B, J, S/2, S/2) ] float32

Both return the teacher's outputs in the teacher's order (lowest resolution first), output k at
S / stride_k for the input size S (1/4: J heatmaps + T tags; 1/2: J heatmaps for HigherHRNet), which are
the student's output resolutions when the student has the same heads.

`batch` is what a DataLoader over `AugMetaDataset(dataset)` yields: `(images, heatmaps, masks, indices,
meta)`, i.e. the usual `CocoKeypointDataset` sample plus a `meta` dict (collated) with, per sample,
"index", "image_id", "flip" (bool), "affines" ((n_res, 2, 3) float64, original pixels -> each of the
dataset's output resolutions, BEFORE the flip, as `apply_augmentation` builds them), "output_sizes" and
"input_size". `OnlineTeacher` only needs `images` (it also accepts a bare image tensor).

The returned maps are aligned with the augmented image exactly like the ground-truth targets:

* Online: the teacher sees the very tensor the student sees, so its output k is at S / stride_k by
  construction.
* Cached: for output k the stored map (canonical frame, see `distill.teacher_cache`) is warped with
  M = A_k @ F_k^-1, A_k = the sample's affine to output k (the dataset's own matrix when it has that
  resolution, else the exact rescaling of another one), F_k = the frame's affine to the stored map k
  (both in the "coordinate == pixel index" convention of cv2.warpAffine and of the official training
  targets), by `cv2.warpAffine` (INTER_LINEAR, BORDER_CONSTANT 0) to (R_k, R_k). With `flip`, then, as
  the GT gets it: columns mirrored (x -> R_k - 1 - x) and channels permuted with the flip index,
  heatmaps and, with per-joint tags, tag channels (new channel j = old channel flip_index[j]).
  Precision: OpenCV interpolates multi-channel maps at source positions quantised to 1/32 pixel
  (INTER_BITS = 5), i.e. within 1/64 px of the exact position (the same as the image warp); values
  are read from float16 and returned as float32. Outside the cached frame the maps are 0 (`valid_masks_for`
  tells where the frame was).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np
import torch

from distill.amp import amp_dtype, autocast
from distill.errors import AEDistillError
from distill.teacher_cache.frame import CacheFrame
from distill.teacher_cache.layout import StoreError
from distill.teacher_cache.reader import TeacherStore


@runtime_checkable
class TeacherTargets(Protocol):
    """Anything that gives the teacher's maps for an augmented training batch."""

    def targets_for(self, batch: Any) -> list[torch.Tensor]:
        """Teacher outputs at the student's output resolutions, lowest first, float32 on the teacher's device."""
        ...


def _images_of(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, TrainBatch):
        return batch.images
    if isinstance(batch, dict):
        return batch["image"] if "image" in batch else batch["images"]
    return batch[0]


def _meta_of(batch: Any) -> dict[str, Any]:
    if isinstance(batch, TrainBatch):
        return batch.meta
    if isinstance(batch, dict) and "meta" in batch:
        return batch["meta"]
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[-1], dict):
        return batch[-1]
    raise AEDistillError(
        "CachedTeacher needs the augmentation of every sample: wrap the dataset in "
        "distill.teacher_cache.targets.AugMetaDataset so batches end with a `meta` dict (image_id, affines, flip)")


class OnlineTeacher:
    """The frozen teacher run on the student's augmented batch (eval mode, no gradients, optional autocast).

    `torch.no_grad` rather than `inference_mode`: inference tensors cannot be saved for backward, so a loss
    such as `(student * teacher).sum()` would fail with them.
    """

    def __init__(self, model: torch.nn.Module, amp: str | None = None, device: str | torch.device | None = None,
                 channels_last: bool = False) -> None:
        """`channels_last`: run the teacher in that memory format, as the student is (on a CPU with bf16 the
        synthetic teacher's forward takes about half the time: 56 vs 105 ms for a batch of 4 at 256)."""
        self.model = model.eval()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        if device is not None:
            self.model.to(device)
        first = next(self.model.parameters(), None)
        self.device = torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
        amp_dtype(amp, self.device)  # validates `amp` for this device
        self.amp = amp

    def targets_for(self, batch: Any) -> list[torch.Tensor]:
        if self.model.training:  # someone called .train() on a parent module: BN must stay frozen
            self.model.eval()
        x = _images_of(batch).to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast(self.device, self.amp):
            outs = self.model(x)
        return [o.float() for o in outs]


# ------------------------------------------------------------------------------------------------ warping
def channel_permutation(channels: int, num_joints: int, flip_index: Sequence[int], tags: int) -> list[int]:
    """Channel order after a horizontal flip: heatmaps by the flip index, per-joint tags too, a shared tag kept."""
    flip_index = [int(i) for i in flip_index]
    if len(flip_index) != num_joints:
        raise ValueError(f"flip index has {len(flip_index)} entries for {num_joints} joints")
    perm = list(flip_index)
    if tags == num_joints:
        perm += [num_joints + i for i in flip_index]
    else:
        perm += [num_joints + t for t in range(tags)]
    if len(perm) != channels:
        raise ValueError(f"{channels} channels do not split into {num_joints} heatmaps + {tags} tags")
    return perm


def sample_to_map_affine(frame: CacheFrame, map_hw: tuple[int, int], sample_affine: np.ndarray) -> np.ndarray:
    """(2, 3) matrix taking stored-map pixels to the sample's output pixels: A @ F^-1."""
    f = np.eye(3)
    f[:2] = frame.output_affine(map_hw[1], map_hw[0])
    a = np.eye(3)
    a[:2] = np.asarray(sample_affine, dtype=np.float64)[:2]
    return (a @ np.linalg.inv(f))[:2]


def warp_cached_maps(maps: np.ndarray, frame: CacheFrame, sample_affine: np.ndarray, out_size: int | tuple[int, int],
                     flip: bool = False, perm: Sequence[int] | None = None, crop: bool = True) -> np.ndarray:
    """Warp stored (C, H, W) maps of one image onto an augmented sample's (C, R_h, R_w) output (float32)."""
    out_w, out_h = (out_size, out_size) if isinstance(out_size, (int, np.integer)) else (out_size[1], out_size[0])
    out_w, out_h = int(out_w), int(out_h)
    c, h, w = maps.shape
    m = sample_to_map_affine(frame, (h, w), sample_affine)
    if crop:
        # Only the window of the stored map that the output can sample (plus a 2-px margin) is read, converted
        # and transposed; shifting the matrix by the integer window origin leaves every sample position
        # unchanged (also in cv2's fixed point), so the result is identical to warping the whole map.
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[-1, -1], [out_w, -1], [-1, out_h], [out_w, out_h]], np.float64) @ inv[:, :2].T + inv[:, 2]
        x0, y0 = (max(0, int(np.floor(v)) - 2) for v in corners.min(0))
        x1, y1 = min(w, int(np.ceil(corners[:, 0].max())) + 3), min(h, int(np.ceil(corners[:, 1].max())) + 3)
        if x1 <= x0 or y1 <= y0:
            return np.zeros((c, out_h, out_w), np.float32)
        maps = maps[:, y0:y1, x0:x1]
        m = m.copy()
        m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    src = np.ascontiguousarray(np.transpose(maps, (1, 2, 0)), dtype=np.float32)
    dst = np.empty((out_h, out_w, c), np.float32)
    for lo in range(0, c, 512):  # OpenCV handles at most 512 channels per call
        part = cv2.warpAffine(np.ascontiguousarray(src[..., lo:lo + 512]), m, (out_w, out_h),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        dst[..., lo:lo + 512] = part.reshape(out_h, out_w, -1)
    out = np.transpose(dst, (2, 0, 1))
    if flip:
        out = out[:, :, ::-1]
        if perm is not None:
            out = out[list(perm)]
    return np.ascontiguousarray(out)


def frame_valid_mask(frame: CacheFrame, map_hw: tuple[int, int], sample_affine: np.ndarray,
                     out_size: int | tuple[int, int], flip: bool = False) -> np.ndarray:
    """(R_h, R_w) float32 in [0, 1]: 1 where the sample's output pixel lies inside the cached frame."""
    ones = np.ones((1,) + tuple(map_hw), np.float32)
    return warp_cached_maps(ones, frame, sample_affine, out_size, flip)[0]


class CachedTeacher:
    """Teacher maps read from a `TeacherStore` and warped with each sample's augmentation.

    `expect_*` check the store's identity on open (see `TeacherStore.check_matches`). `device`: where
    `targets_for` puts the stacked tensors. `num_outputs`: warp at most the first n teacher outputs (lowest
    resolution first); a student with a 1/4-only head reads no 1/2 map, so its loader need not warp one.
    """

    def __init__(self, store: TeacherStore | str, device: str | torch.device = "cpu", *, expect_teacher: Any = None,
                 expect_weights: str | None = None, expect_input_size: int | None = None,
                 expect_dataset: Any = None, flip_index: Sequence[int] | None = None,
                 num_outputs: int | None = None) -> None:
        self.store = store if isinstance(store, TeacherStore) else TeacherStore(store)
        total = len(self.store.outputs)
        if num_outputs is not None and int(num_outputs) < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        self.num_outputs = total if num_outputs is None else min(int(num_outputs), total)
        if any(x is not None for x in (expect_teacher, expect_weights, expect_input_size, expect_dataset)):
            self.store.check_matches(teacher=expect_teacher, weights_path=expect_weights, input_size=expect_input_size,
                                     dataset=expect_dataset)
        self.device = torch.device(device)
        self.num_joints = self.store.num_joints
        self.flip_index = list(self.store.flip_index)
        if flip_index is not None and list(flip_index) != self.flip_index:
            raise StoreError(f"{self.store.root}: store flip index {self.flip_index} differs from the dataset's "
                             f"{list(flip_index)}")
        self.perms = [channel_permutation(o["channels"], o["heatmaps"], self.flip_index, o["tags"])
                      for o in self.store.outputs]

    def check_input_size(self, input_size: int) -> None:
        """Every teacher output must have an integer size at this input size (input / stride)."""
        bad = [o["stride"] for o in self.store.outputs if int(input_size) % o["stride"]]
        if bad:
            raise StoreError(f"{self.store.root}: input size {input_size} is not a multiple of the teacher strides {bad}")

    def output_geometry(self, affines: Sequence[np.ndarray], output_sizes: Sequence[int],
                        input_size: int | None = None) -> list[tuple[int, np.ndarray]]:
        """(R_k, A_k) per teacher output k: its size input_size / stride_k and the sample's affine to it.

        When the dataset has that resolution its own matrix is used (bit-identical to the GT's); otherwise it is
        the scaling of another resolution's matrix (the per-resolution matrices are exact scalings of each
        other). Without `input_size`, the dataset's outputs must be the teacher's outputs, in order.
        """
        sizes = [int(r) for r in output_sizes]
        mats = [np.asarray(a, np.float64)[:2] for a in affines]
        if input_size is None:
            if len(sizes) != len(self.store.outputs):
                raise StoreError(f"the sample has {len(sizes)} output resolutions, the teacher store "
                                 f"{len(self.store.outputs)}; pass the input size to derive the others")
            return list(zip(sizes, mats))
        out = []
        for o in self.store.outputs:
            r = int(input_size) // o["stride"]
            if r in sizes:
                out.append((r, mats[sizes.index(r)]))
            else:
                out.append((r, mats[0] * (r / sizes[0])))
        return out

    def sample_targets(self, image_id: Any, affines: Sequence[np.ndarray], flip: bool, output_sizes: Sequence[int],
                       input_size: int | None = None, with_valid: bool = False) -> Any:
        """Per teacher output k: (C_k, R_k, R_k) float32 maps for one augmented sample (and the valid masks)."""
        n = self.num_outputs
        maps = self.store.maps(image_id, check_finite=True, outputs=n)
        frame = self.store.frame(image_id)
        geo = self.output_geometry(affines, output_sizes, input_size)[:n]
        out = [warp_cached_maps(m, frame, a, r, bool(flip), p) for m, (r, a), p in zip(maps, geo, self.perms)]
        if not with_valid:
            return out
        valid = [frame_valid_mask(frame, m.shape[1:], a, r, bool(flip)) for m, (r, a) in zip(maps, geo)]
        return out, valid

    def targets_for_sample(self, sample: Any, with_valid: bool = False) -> Any:
        """For a `distill.data.coco.TrainingSample` (from `dataset.make_sample`)."""
        sizes = [h.shape[-1] for h in sample.heatmaps]
        return self.sample_targets(sample.image_id, sample.affines, sample.params.flip, sizes,
                                   int(sample.image.shape[-1]), with_valid)

    @staticmethod
    def _sample_meta(meta: dict[str, Any], b: int) -> tuple[Any, np.ndarray, bool, list[int], int | None]:
        def item(v: Any) -> Any:
            return v.item() if isinstance(v, torch.Tensor) and v.ndim == 0 else v

        image_id = item(meta["image_id"][b])
        a = meta["affines"][b]
        a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        r = meta["output_sizes"][b]
        r = [int(v) for v in (r.tolist() if isinstance(r, torch.Tensor) else r)]
        input_size = int(item(meta["input_size"][b])) if "input_size" in meta else None
        return image_id, a, bool(item(meta["flip"][b])), r, input_size

    def _per_sample(self, batch: Any, with_valid: bool = False) -> list[Any]:
        meta = _meta_of(batch)
        out = []
        for b in range(len(meta["image_id"])):
            image_id, a, flip, sizes, input_size = self._sample_meta(meta, b)
            out.append(self.sample_targets(image_id, list(a), flip, sizes, input_size, with_valid))
        return out

    def targets_for(self, batch: Any) -> list[torch.Tensor]:
        meta = _meta_of(batch)
        if "teacher" in meta:  # warped in the DataLoader workers (AugMetaDataset(..., teacher=...))
            return [t.to(self.device, non_blocking=True).float() for t in meta["teacher"]]
        per = self._per_sample(batch)
        return [torch.from_numpy(np.stack([p[k] for p in per])).to(self.device, non_blocking=True)
                for k in range(len(per[0]))]

    def valid_masks_for(self, batch: Any) -> list[torch.Tensor]:
        """(B, R_k, R_k) float32 per output: where the cached frame covers the sample (elsewhere maps are 0)."""
        meta = _meta_of(batch)
        masks = []
        for b in range(len(meta["image_id"])):
            image_id, a, flip, sizes, input_size = self._sample_meta(meta, b)
            frame, shapes = self.store.frame(image_id), self.store.entry(image_id)["shapes"]
            geo = self.output_geometry(list(a), sizes, input_size)[:self.num_outputs]
            masks.append([frame_valid_mask(frame, tuple(s[1:]), ak, r, flip) for s, (r, ak) in zip(shapes, geo)])
        return [torch.from_numpy(np.stack([m[k] for m in masks])).to(self.device) for k in range(len(masks[0]))]


# ------------------------------------------------------------------------------------------------ dataset
class TrainBatch(NamedTuple):
    """One training sample, and (after the DataLoader's default collate, which keeps the type) one batch.

    A tuple, so `images, heatmaps, masks, indices, meta = batch` works too. Batched shapes: images (B, 3, S, S);
    per output size R (lowest first): heatmaps (B, J, R, R), masks (B, R, R), indices (B, max_people, J, 2);
    meta: the augmentation of each sample (see `AugMetaDataset`), collated per key."""

    images: torch.Tensor
    heatmaps: list[torch.Tensor]
    masks: list[torch.Tensor]
    indices: list[torch.Tensor]
    meta: dict[str, Any]


class AugMetaDataset(torch.utils.data.Dataset):
    """Wraps a `CocoKeypointDataset`: samples become `TrainBatch(image, heatmaps, masks, indices, meta)`.

    `meta` carries what a `CachedTeacher` needs to align its maps (see the module docstring). With
    `teacher=CachedTeacher(...)` the warping happens here, i.e. in the DataLoader workers, and
    `meta["teacher"]` holds the float32 maps (`CachedTeacher.targets_for` then just moves them).
    Bad images are skipped like `CocoKeypointDataset.sample` does when `skip_bad_images` is set.
    """

    def __init__(self, dataset: Any, teacher: CachedTeacher | None = None) -> None:
        self.dataset = dataset
        self.teacher = teacher
        if teacher is not None:
            teacher.check_input_size(dataset.input_size)
            if list(dataset.flip_index) != teacher.flip_index:
                raise StoreError(f"dataset flip index {list(dataset.flip_index)} differs from the teacher store's "
                                 f"{teacher.flip_index}")

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> TrainBatch:
        s = self.dataset.make_sample_skipping(index)
        meta: dict[str, Any] = {
            "index": int(s.index),
            "image_id": s.image_id,
            "flip": bool(s.params.flip),
            "affines": torch.from_numpy(np.stack([np.asarray(a, np.float64)[:2] for a in s.affines])),
            "output_sizes": torch.tensor([int(h.shape[-1]) for h in s.heatmaps]),
            "input_size": int(s.image.shape[-1]),
            # False for an image whose annotations a label-scarce run hides: only the teacher's terms apply
            "labelled": bool(getattr(self.dataset, "is_labelled", lambda i: True)(s.index)),
        }
        if self.teacher is not None:
            self.teacher.store.check_image_file(s.image_id, self.dataset.image_path(s.index))
            maps = self.teacher.targets_for_sample(s)
            meta["teacher"] = [torch.from_numpy(m) for m in maps]
        return TrainBatch(*s.as_tuple(), meta)


__all__ = [
    "AugMetaDataset", "CachedTeacher", "TrainBatch", "OnlineTeacher", "TeacherTargets", "channel_permutation", "frame_valid_mask",
    "sample_to_map_affine", "warp_cached_maps",
]
