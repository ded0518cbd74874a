"""COCO-format keypoint dataset with the official HigherHRNet training pipeline.

Layout: `ROOT/annotations/person_keypoints_<split>.json` and `ROOT/<split>/<file_name>`.

Per image (as the official `CocoKeypoints`):
- the RGB uint8 image (`cv2.imread(IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION)`, BGR -> RGB);
- the ignore mask (True = use): False on the union of crowd regions and of the segmentations of persons with
  `num_keypoints == 0` (sum of `pycocotools.mask` decodes, then `m < 0.5`);
- joints (P, K, 3) float64 for the annotations with `iscrowd == 0 or num_keypoints > 0`, in annotation order.

A training sample (`__getitem__`) is `(image, heatmaps, masks, indices)`: the normalised (3, S, S) float32
image tensor and, per output size R, the (K, R, R) float32 heatmaps, the (R, R) float32 0/1 loss mask and
the (max_people, K, 2) int32 tag-loss indices (all torch tensors).

Randomness: the augmentation of sample `index` in epoch `epoch` is drawn from
`numpy.random.default_rng([seed, epoch, index])`, so a run is reproducible, DataLoader workers never repeat
each other's draws, and the sample does not depend on which worker loads it. Call `set_epoch(epoch)` before
each epoch (with `persistent_workers=True` the workers keep a copy of the dataset, so recreate the loader or
do not rely on the epoch there).

Bad input raises one `DataError` naming the file and record. The annotation file is validated when the
dataset is built (cheap checks on every record); images are checked when read (missing, undecodable,
truncated JPEG, size different from the json). With `skip_bad_images=True` an unreadable image is skipped
with a warning, `skipped` counts the distinct images skipped (per process: each DataLoader worker counts its
own) and another image (the next readable index) is returned in its place.

More persons with visible joints than `target_config.max_people`: the first ones are kept in the tag-loss
indices with one warning per dataset object (per DataLoader worker), or `TooManyPeopleError` with
`TargetConfig(on_overflow="raise")`; see `distill.codec.targets`.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from distill.codec.targets import TargetConfig, encode_targets
from distill.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentConfig,
    AugmentParams,
    apply_augmentation,
    sample_augment_params,
    to_normalized_tensor,
)
from distill.data.images import ImageReadError, read_image_file  # noqa: F401 (ImageReadError re-exported)
from distill.errors import DataError, DataWarning
from distill.keypoints import KeypointSpec

_REQUIRED_TOP_KEYS = ("images", "annotations", "categories")


def annotation_path(root: str | os.PathLike[str], split: str) -> Path:
    return Path(root) / "annotations" / f"person_keypoints_{split}.json"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist (expected a COCO keypoints json)")
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"annotation file {path} is not UTF-8 text, so not a COCO json ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"annotation file {path} is not valid JSON: {exc}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def select_keypoint_category(
    categories: list[dict[str, Any]], category: int | str | None, source: str
) -> dict[str, Any]:
    """The category whose `keypoints` define the joints (by id or name when more than one has keypoints)."""
    with_kp = [c for c in categories if c.get("keypoints")]
    if category is not None:
        key = "name" if isinstance(category, str) else "id"
        matches = [c for c in categories if c.get(key) == category]
        if not matches:
            known = [(c.get("id"), c.get("name")) for c in categories]
            raise DataError(f"{source}: no category with {key} {category!r}; categories (id, name): {known}")
        chosen = matches[0]
        if not chosen.get("keypoints"):
            raise DataError(f"{source}: category {category!r} has no 'keypoints' list of joint names")
        return chosen
    if not with_kp:
        raise DataError(
            f"{source}: no category has a 'keypoints' list; a COCO keypoint annotation file is expected"
        )
    if len(with_kp) > 1:
        known = [(c.get("id"), c.get("name")) for c in with_kp]
        raise DataError(
            f"{source}: {len(with_kp)} categories have keypoints {known}; choose one with category=<id or name>"
        )
    return with_kp[0]


def check_image_records(images: list[Any], source: str) -> set[Any]:
    """The checks every `images` record gets (annotation files and image lists alike): an integer or string id seen
    once, a file name, positive integer width and height. Returns the ids."""
    seen: set[Any] = set()
    for k, im in enumerate(images):
        where = f"{source}: images[{k}]"
        if not isinstance(im, dict):
            raise DataError(f"{where}: expected an object with id, file_name, width and height")
        image_id = im.get("id")
        if isinstance(image_id, bool) or not isinstance(image_id, (int, str)):
            raise DataError(f"{where}: 'id' must be an integer or a string, got {image_id!r}")
        if image_id in seen:
            raise DataError(f"{where}: image id {image_id!r} appears twice")
        seen.add(image_id)
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise DataError(f"{where} (image id {image_id!r}): 'file_name' must be a non-empty string")
        for key in ("width", "height"):
            if not _is_int(im.get(key)) or im[key] <= 0:
                raise DataError(f"{where} (image id {image_id!r}): '{key}' must be a positive integer, "
                                f"got {im.get(key)!r}")
    return seen


def validate_coco_keypoints(data: Any, source: str, category: int | str | None = None) -> dict[str, Any]:
    """Cheap checks on every record of a COCO keypoint file. Returns the keypoint category.

    Raises `DataError` naming the record (image id, annotation id) and what was expected.
    """
    if not isinstance(data, dict):
        raise DataError(f"{source}: top level is a {type(data).__name__}, expected a COCO json object")
    missing = [k for k in _REQUIRED_TOP_KEYS if k not in data]
    if missing:
        raise DataError(
            f"{source}: not a COCO annotation file: missing top-level key(s) {missing} "
            f"(expected {list(_REQUIRED_TOP_KEYS)}; found {sorted(data)[:10]})"
        )
    for key in _REQUIRED_TOP_KEYS:
        if not isinstance(data[key], list):
            raise DataError(f"{source}: '{key}' is a {type(data[key]).__name__}, expected a list")

    cat_ids: set[Any] = set()
    cat_names: set[Any] = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            raise DataError(f"{source}: categories[{i}] has no 'id'")
        if cat["id"] in cat_ids:
            raise DataError(f"{source}: category id {cat['id']!r} appears more than once in 'categories'")
        if cat.get("name") is not None and cat.get("name") in cat_names:
            raise DataError(f"{source}: category name {cat.get('name')!r} appears more than once in 'categories'")
        cat_ids.add(cat["id"])
        cat_names.add(cat.get("name"))
    cat = select_keypoint_category(data["categories"], category, source)
    spec = KeypointSpec.from_category(cat, source)
    num_values = 3 * spec.num_joints

    image_ids = check_image_records(data["images"], source)

    ann_ids: set[Any] = set()
    kp_rows: list[list[Any]] = []
    kp_ann: list[Any] = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann:
            raise DataError(f"{source}: annotations[{i}] has no 'id'")
        aid = ann["id"]
        where = f"{source}: annotation id {aid} (image id {ann.get('image_id')!r})"
        if aid in ann_ids:
            raise DataError(f"{source}: annotation id {aid} appears more than once")
        ann_ids.add(aid)
        if ann.get("image_id") not in image_ids:
            raise DataError(f"{where}: image id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in cat_ids:
            raise DataError(
                f"{where}: unknown category id {ann.get('category_id')!r} (known category ids: {sorted(cat_ids, key=str)})"
            )
        if ann["category_id"] != cat["id"]:
            continue  # another category: not a person of this keypoint set, ignored
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1, False, True):
            raise DataError(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
        kps = ann.get("keypoints")
        nk = ann.get("num_keypoints")
        if nk is not None and (not _is_int(nk) or nk < 0):
            raise DataError(f"{where}: 'num_keypoints' must be a non-negative integer, got {nk!r}")
        if kps is None:
            if not (iscrowd or nk == 0):
                raise DataError(f"{where}: no 'keypoints' list (expected {num_values} values = 3 x {spec.num_joints} joints)")
        elif not isinstance(kps, list) or len(kps) != num_values:
            n = len(kps) if isinstance(kps, list) else type(kps).__name__
            raise DataError(
                f"{where}: 'keypoints' has {n} values, expected {num_values} = 3 x {spec.num_joints} joints of "
                f"category {cat.get('name')!r}"
            )
        else:
            kp_rows.append(kps)
            kp_ann.append((aid, ann["image_id"], nk))
        if iscrowd or nk == 0 or (nk is None and kps is not None and not any(kps[2::3])):
            seg = ann.get("segmentation")
            if not isinstance(seg, (list, dict)):
                raise DataError(
                    f"{where}: {'crowd' if iscrowd else 'person without keypoints'} needs a 'segmentation' "
                    f"(polygons or RLE) for the ignore mask, got {type(seg).__name__}"
                )
    if kp_rows:
        try:
            arr = np.array(kp_rows, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or not np.isfinite(arr).all():
            for aid, row in zip(kp_ann, kp_rows):
                try:
                    ok = np.isfinite(np.asarray(row, dtype=np.float64)).all()
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise DataError(f"{source}: annotation id {aid[0]}: 'keypoints' must be finite numbers")
        sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
        _check_keypoint_values(arr.reshape(len(kp_rows), spec.num_joints, 3), kp_ann, sizes, source)
    return cat


class OutOfImageJointsWarning(DataWarning, UserWarning):
    """Labelled joints outside their image: allowed (COCO has a few), counted, dropped from the targets."""


def _check_keypoint_values(kps: np.ndarray, anns: list[tuple[Any, Any, Any]], sizes: dict[Any, tuple[int, int]],
                           source: str) -> None:
    """v in {0, 1, 2}; `num_keypoints` = number of joints with v > 0; labelled joints within one image size
    of their image (beyond that the annotation is broken, not a joint just outside the frame)."""
    v = kps[..., 2]
    bad_v = ~np.isin(v, (0, 1, 2))
    for row in np.flatnonzero(bad_v.any(1)):
        j = int(np.flatnonzero(bad_v[row])[0])
        raise DataError(f"{source}: annotation id {anns[row][0]}: joint {j} has visibility {v[row, j]:g}, "
                        "expected 0 (not labelled), 1 (occluded) or 2 (visible)")
    labelled = v > 0
    counts = labelled.sum(1)
    for row, (aid, _, nk) in enumerate(anns):
        if nk is not None and nk != counts[row]:
            raise DataError(f"{source}: annotation id {aid}: 'num_keypoints' is {nk} but {counts[row]} joints are "
                            "labelled (v > 0); the two must agree")
    wh = np.array([sizes[iid] for _, iid, _ in anns], dtype=np.float64)[:, None, :]  # (N, 1, 2)
    xy = kps[..., :2]
    far = labelled & ((xy < -wh) | (xy > 2 * wh)).any(-1)
    for row in np.flatnonzero(far.any(1)):
        j = int(np.flatnonzero(far[row])[0])
        w, h = sizes[anns[row][1]]
        raise DataError(f"{source}: annotation id {anns[row][0]}: joint {j} at ({xy[row, j, 0]:g}, {xy[row, j, 1]:g}) "
                        f"is far outside its {w}x{h} image (more than one image size away)")
    outside = labelled & ((xy < 0) | (xy >= wh)).any(-1)
    if outside.any():
        warnings.warn(OutOfImageJointsWarning(
            f"{source}: {int(outside.sum())} labelled joint(s) in {int(outside.any(1).sum())} annotation(s) lie "
            "outside their image (allowed; they get no heatmap peak)"), stacklevel=3)


def _segmentation_sum(seg: Any, h: int, w: int, where: str) -> np.ndarray:
    """Sum of the decoded masks of one segmentation (polygons, uncompressed or compressed RLE)."""
    m = np.zeros((h, w))
    if isinstance(seg, list) and len(seg) == 0:
        return m
    try:
        if isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes)):
            rle = dict(seg)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            rles: Any = rle
        else:
            rles = mask_utils.frPyObjects(seg, h, w)
        with warnings.catch_warnings():
            # pycocotools 2.0.x trips numpy 2's `__array__(copy=...)` DeprecationWarning on every decode.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
            if isinstance(rles, list):
                for rle in rles:
                    m += mask_utils.decode(rle)
            else:
                m += mask_utils.decode(rles)
    except Exception as exc:  # pycocotools raises assorted types on malformed input
        raise DataError(f"{where}: 'segmentation' could not be decoded ({type(exc).__name__}: {exc})") from None
    return m


@dataclass
class RawSample:
    """One image before augmentation."""

    image: np.ndarray  # (h, w, 3) uint8 RGB
    mask: np.ndarray  # (h, w) bool, True = use
    joints: np.ndarray  # (P, K, 3) float64
    image_id: Any
    path: Path


@dataclass
class TrainingSample:
    """A training sample with its intermediates (for debugging and the parity tests)."""

    image: torch.Tensor  # (3, S, S) float32, normalised
    heatmaps: list[np.ndarray]  # (K, R, R) float32 per output size
    masks: list[np.ndarray]  # (R, R) float32 per output size
    indices: list[np.ndarray]  # (max_people, K, 2) int32 per output size
    joints: list[np.ndarray]  # (P, K, 3) float64 per output size (transformed)
    image_warped: np.ndarray  # (S, S, 3) uint8
    affine_input: np.ndarray
    affines: list[np.ndarray]
    params: AugmentParams
    index: int
    image_id: Any
    extra: dict[str, Any] = field(default_factory=dict)

    def as_tuple(self) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        return (
            self.image,
            [torch.from_numpy(h) for h in self.heatmaps],
            [torch.from_numpy(m) for m in self.masks],
            [torch.from_numpy(i) for i in self.indices],
        )


class CocoKeypointDataset(torch.utils.data.Dataset):
    """COCO-format keypoint dataset producing official HigherHRNet training samples."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train2017",
        *,
        annotation_file: str | os.PathLike[str] | None = None,
        image_dir: str | os.PathLike[str] | None = None,
        category: int | str | None = None,
        remove_images_without_annotations: bool = True,
        input_size: int = 512,
        output_sizes: Sequence[int] = (128, 256),
        augment: bool = True,
        augment_config: AugmentConfig = AugmentConfig(),
        target_config: TargetConfig = TargetConfig(),
        seed: int = 0,
        skip_bad_images: bool = False,
        check_truncated_jpeg: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.annotation_file = Path(annotation_file) if annotation_file else annotation_path(root, split)
        self.image_dir = Path(image_dir) if image_dir else self.root / split
        self.input_size = int(input_size)
        self.output_sizes = [int(r) for r in output_sizes]
        if self.input_size <= 0 or not self.output_sizes or min(self.output_sizes) <= 0:
            raise ValueError(f"bad sizes: input {input_size}, outputs {output_sizes}")
        self.augment = augment
        self.augment_config = augment_config
        self.target_config = target_config
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.epoch = 0
        self.skip_bad_images = skip_bad_images
        self.check_truncated_jpeg = check_truncated_jpeg
        self.mean, self.std = tuple(mean), tuple(std)
        self.skipped = 0
        self._bad: set[int] = set()
        self._overflow_warned = False

        source = str(self.annotation_file)
        data = _read_json(self.annotation_file)
        self.category = validate_coco_keypoints(data, source, category)
        self.category_id = self.category["id"]
        self.spec = KeypointSpec.from_category(self.category, source)
        with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress lines
            self.coco = COCO()
            self.coco.dataset = data
            self.coco.createIndex()
        ids = list(self.coco.imgs.keys())
        if remove_images_without_annotations:
            ids = [i for i in ids if len(self._ann_ids(i)) > 0]
        self.ids = ids
        self.unlabelled_ids: frozenset[Any] = frozenset()
        self.pseudo_annotations: dict[Any, list[dict[str, Any]]] = {}
        # Images of an unlabelled split (`add_unlabelled_images`): id -> image record, their folder, their list's file
        self.unannotated_ids: frozenset[Any] = frozenset()
        self._extra_info: dict[Any, dict[str, Any]] = {}
        self._extra_dir: Path | None = None
        self._extra_source: Path | None = None

    # ------------------------------------------------------------------------------ label-scarce runs
    def add_unlabelled_images(self, images: Sequence[dict[str, Any]], image_dir: str | os.PathLike[str],
                              source: str | os.PathLike[str]) -> None:
        """Append images that have no annotations (an unlabelled split: `distill.data.unlabelled`), after the
        split's own. They are unlabelled for good (`hide_annotations` keeps them so); `source` is the image list
        they came from, named in errors."""
        if self._extra_info:
            raise ValueError(f"{self.annotation_file}: unlabelled images were already added (from "
                             f"{self._extra_source}); add one split")
        clash = [im["id"] for im in images if im["id"] in self.coco.imgs]
        if clash:
            raise DataError(f"{source}: image id(s) {sorted(map(str, clash))[:5]} are also images of "
                            f"{self.annotation_file}; an unlabelled split must not share ids with the training split")
        self._extra_info = {im["id"]: dict(im) for im in images}
        self._extra_dir, self._extra_source = Path(image_dir), Path(source)
        self.unannotated_ids = frozenset(self._extra_info)
        self.ids = self.ids + [im["id"] for im in images]
        self.unlabelled_ids = self.unlabelled_ids | self.unannotated_ids
        self.pseudo_annotations = {}

    def hide_annotations(self, image_ids: Iterable[Any]) -> None:
        """Treat these images as unlabelled: no joints, no ignore regions (`is_labelled` False).

        The images stay in the dataset (a teacher can still supervise them); their annotations are never read
        for training targets. See distill/data/labels.py. Images without annotations (`add_unlabelled_images`)
        stay unlabelled."""
        hidden = frozenset(image_ids)
        unknown = hidden - set(self.ids)
        if unknown:
            raise ValueError(f"{self.annotation_file}: cannot hide annotations of images not in the split: "
                             f"{sorted(map(str, unknown))[:5]}")
        self.unlabelled_ids = hidden | self.unannotated_ids
        self.pseudo_annotations = {}

    def set_pseudo_annotations(self, annotations: dict[Any, list[dict[str, Any]]]) -> None:
        """Give every hidden image the annotations a teacher predicted for it (distill/data/labels.py,
        `read_pseudo_labels`); they then count as labelled. Must cover exactly the hidden images."""
        if set(annotations) != set(self.unlabelled_ids):
            raise ValueError(f"{self.annotation_file}: pseudo-annotations must cover exactly the "
                             f"{len(self.unlabelled_ids)} unlabelled images, got {len(annotations)} images")
        self.pseudo_annotations = {
            image_id: [{**a, "id": f"pseudo-{image_id}-{k}", "category_id": self.category_id} for k, a in enumerate(anns)]
            for image_id, anns in annotations.items()}

    def keep_only(self, image_ids: Iterable[Any]) -> None:
        """Restrict the dataset to these images (in its own order), e.g. the labelled ones of a label-scarce run."""
        wanted = set(image_ids)
        unknown = wanted - set(self.ids)
        if unknown:
            raise ValueError(f"{self.annotation_file}: cannot keep images not in the split: "
                             f"{sorted(map(str, unknown))[:5]}")
        self.ids = [i for i in self.ids if i in wanted]
        self.unlabelled_ids = self.unlabelled_ids & wanted
        self.unannotated_ids = self.unannotated_ids & wanted

    def is_labelled(self, index: int) -> bool:
        """False for an image whose annotations are hidden and not replaced by a teacher's (pseudo-labels)."""
        image_id = self.ids[index]
        return image_id not in self.unlabelled_ids or image_id in self.pseudo_annotations

    # ----------------------------------------------------------------------------------- raw access
    @property
    def num_joints(self) -> int:
        return self.spec.num_joints

    @property
    def flip_index(self) -> tuple[int, ...]:
        return self.spec.flip_index

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _ann_ids(self, image_id: Any) -> list[Any]:
        return self.coco.getAnnIds(imgIds=image_id, catIds=[self.category_id], iscrowd=None)

    def image_info(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        return self._extra_info[image_id] if image_id in self._extra_info else self.coco.imgs[image_id]

    def annotations(self, index: int) -> list[dict[str, Any]]:
        """All annotations of the keypoint category for this image, in file order (crowds included); none for an
        image made unlabelled by `hide_annotations` (or the teacher's, after `set_pseudo_annotations`)."""
        if self.ids[index] in self.unlabelled_ids:
            return list(self.pseudo_annotations.get(self.ids[index], []))
        return self.coco.loadAnns(self._ann_ids(self.ids[index]))

    def image_path(self, index: int) -> Path:
        folder = self._extra_dir if self.ids[index] in self._extra_info else self.image_dir
        return folder / self.image_info(index)["file_name"]

    def load_image(self, index: int) -> np.ndarray:
        """(h, w, 3) uint8 RGB, as the official reader (IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION, BGR->RGB)."""
        info = self.image_info(index)
        path = self.image_path(index)
        what = f"image file {path} (image id {info['id']})"
        img = read_image_file(path, what, check_jpeg=self.check_truncated_jpeg)
        h, w = img.shape[:2]
        if (h, w) != (info["height"], info["width"]):
            listed_in = self._extra_source if info["id"] in self._extra_info else "the annotation file"
            raise ImageReadError(f"{what} is {w}x{h} pixels but {listed_in} says {info['width']}x{info['height']}")
        return img

    def get_mask(self, index: int, anns: list[dict[str, Any]] | None = None) -> np.ndarray:
        """(h, w) bool, True = use: the official `m < 0.5` over crowd regions and keypoint-less persons."""
        info = self.image_info(index)
        h, w = info["height"], info["width"]
        anns = self.annotations(index) if anns is None else anns
        m = np.zeros((h, w))
        for obj in anns:
            if obj.get("iscrowd", 0) or _num_keypoints(obj) == 0:
                where = f"{self.annotation_file}: annotation id {obj['id']} (image id {info['id']})"
                m += _segmentation_sum(obj["segmentation"], h, w, where)
        return m < 0.5

    def get_joints(self, index: int, anns: list[dict[str, Any]] | None = None) -> np.ndarray:
        """(P, K, 3) float64 for annotations with iscrowd == 0 or num_keypoints > 0, in annotation order."""
        anns = self.annotations(index) if anns is None else anns
        kept = [obj for obj in anns if obj.get("iscrowd", 0) == 0 or _num_keypoints(obj) > 0]
        k = self.num_joints
        joints = np.zeros((len(kept), k, 3))
        for i, obj in enumerate(kept):
            if obj.get("keypoints") is not None:
                joints[i] = np.array(obj["keypoints"], dtype=np.float64).reshape(k, 3)
        return joints

    def load_raw(self, index: int) -> RawSample:
        anns = self.annotations(index)
        image = self.load_image(index)
        return RawSample(
            image=image, mask=self.get_mask(index, anns), joints=self.get_joints(index, anns),
            image_id=self.ids[index], path=self.image_path(index),
        )

    # ------------------------------------------------------------------------------------ samples
    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The per-sample generator: independent streams for every (seed, epoch, index)."""
        e = self.epoch if epoch is None else int(epoch)
        return np.random.default_rng(np.random.SeedSequence([self.seed, e, int(index)]))

    def draw_params(self, index: int, width: int, height: int, epoch: int | None = None) -> AugmentParams:
        if not self.augment:
            return AugmentParams.identity()
        return sample_augment_params(self.rng(index, epoch), width, height, self.augment_config)

    def make_sample(self, index: int, params: AugmentParams | None = None) -> TrainingSample:
        """The training sample of `index` (with `params` given, those draws replace the random ones)."""
        raw = self.load_raw(index)
        h, w = raw.image.shape[:2]
        if params is None:
            params = self.draw_params(index, w, h)
        aug = apply_augmentation(
            raw.image, raw.mask, raw.joints, params, self.input_size, self.output_sizes,
            self.flip_index, self.augment_config.scale_type,
        )
        heatmaps, indices, dropped = encode_targets(aug.joints, self.output_sizes, self.target_config)
        if dropped and self.target_config.on_overflow == "warn" and not self._overflow_warned:
            self._overflow_warned = True
            warnings.warn(
                f"{self.annotation_file}: image id {raw.image_id} has {dropped} more person(s) with visible joints "
                f"than max_people={self.target_config.max_people}; the first {self.target_config.max_people} are "
                "kept in the tag-loss targets (warned once per dataset)",
                DataWarning, stacklevel=2,
            )
        return TrainingSample(
            image=to_normalized_tensor(aug.image, self.mean, self.std),
            heatmaps=heatmaps, masks=aug.masks, indices=indices, joints=aug.joints,
            image_warped=aug.image, affine_input=aug.affine_input, affines=aug.affines,
            params=params, index=index, image_id=raw.image_id,
            extra={"center": aug.center, "scale": aug.scale, "mask_in": raw.mask, "joints_in": raw.joints},
        )

    def make_sample_skipping(self, index: int, params: AugmentParams | None = None) -> TrainingSample:
        """`make_sample`, but with `skip_bad_images` an unreadable image is counted, warned about and
        replaced by the next readable one (with that index's own random draws)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        index %= n
        if not self.skip_bad_images:
            return self.make_sample(index, params)
        for attempt in range(n):
            i = (index + attempt) % n
            if i in self._bad:
                continue
            try:
                return self.make_sample(i, params if attempt == 0 else None)
            except ImageReadError as exc:
                self._bad.add(i)
                self.skipped += 1
                warnings.warn(f"skipping unreadable image ({self.skipped} skipped so far): {exc}",
                              DataWarning, stacklevel=2)
        raise DataError(f"{self.image_dir}: none of the {n} images could be read")

    def sample(self, index: int, params: AugmentParams | None = None):
        """`(image, [heatmaps], [masks], [indices])` for `index`; bad images skipped when configured."""
        return self.make_sample_skipping(index, params).as_tuple()

    def __getitem__(self, index: int):
        return self.sample(index)


def _num_keypoints(obj: dict[str, Any]) -> int:
    nk = obj.get("num_keypoints")
    if nk is not None:
        return int(nk)
    kps = obj.get("keypoints") or []
    return int(sum(1 for v in kps[2::3] if v > 0))
