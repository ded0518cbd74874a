"""Training images that nobody annotated (`data.unlabelled_split`): COCO's unlabeled2017, or any folder of images.

Session 27 measured distillation where labels are scarce by hiding the annotations of part of a labelled split
(`data.label_fraction`). Real unlabelled data has no annotation file at all, only a list of images: COCO ships
`annotations/image_info_unlabeled2017.json` (ids, file names, sizes) beside the `unlabeled2017/` folder. A split
named here is read from `<root>/annotations/image_info_<split>.json`, or, failing that, from the images of
`<root>/annotations/person_keypoints_<split>.json` (its annotations are then never read); for a plain folder,
`distill image-info` writes the first file. Its images join the training set as unlabelled: trained on with the
teacher's maps alone (`data.unlabelled: teacher`) or with the teacher's decoded people as their annotations
(`data.unlabelled: pseudo`, from `distill predict --input <root>/<split>`, whose ids follow the same file-name rule
as `distill image-info`: `distill.data.images.image_id_of`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from distill.atomic import write_json_atomic
from distill.data.coco import check_image_records
from distill.data.images import ImageReadError, image_id_of, list_images, read_image_file
from distill.errors import DataError
from distill.progress import progress


def image_info_candidates(root: str | os.PathLike[str], split: str) -> list[Path]:
    """Where a split's image list is looked for, in order."""
    ann = Path(root) / "annotations"
    return [ann / f"image_info_{split}.json", ann / f"person_keypoints_{split}.json"]


def find_image_info(root: str | os.PathLike[str], split: str) -> Path:
    """The first existing file of `image_info_candidates`, or an error that says how to make one."""
    for path in image_info_candidates(root, split):
        if path.is_file():
            return path
    first = image_info_candidates(root, split)[0]
    raise DataError(f"data.unlabelled_split {split!r}: no image list for it (looked for "
                    f"{' and '.join(str(p) for p in image_info_candidates(root, split))}); for a folder of images, "
                    f"write one with `distill image-info --images {Path(root) / split} --out {first}`")


def read_image_info(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The `images` records of a COCO JSON file (id, file_name, width, height), checked, in file order."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such image list") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise DataError(f"{path}: expected an object with a non-empty 'images' list (COCO image info)")
    check_image_records(images, str(path))
    out = [{"id": im["id"], "file_name": im["file_name"], "width": im["width"], "height": im["height"]}
           for im in images]
    return out


def add_unlabelled_split(dataset: Any, root: str | os.PathLike[str], split: str) -> int:
    """Append split `split`'s images to `dataset` (a `CocoKeypointDataset`) as unlabelled; returns their number.
    The trainer and `distill cache-teacher --unlabelled-split` both call this, so a store built with the split
    holds the same images in the same order as the run that reads it."""
    info = find_image_info(root, split)
    images = read_image_info(info)
    dataset.add_unlabelled_images(images, Path(root) / split, info)
    return len(images)


def make_image_info(image_dir: str | os.PathLike[str], show_progress: bool = True) -> dict[str, Any]:
    """A COCO image-info document for every image of a folder: ids by `image_id_of` (the rule `distill predict`
    uses), sizes read from the files (each image is decoded once, with the training reader's checks)."""
    image_dir = Path(image_dir)
    paths = list_images(image_dir)
    if len(paths) == 1 and paths[0] == image_dir:
        raise DataError(f"{image_dir}: expected a folder of images, got a file")
    by_id: dict[str, Path] = {}
    images = []
    for path in progress(paths, desc="image-info", enabled=show_progress, unit="image"):
        image_id = image_id_of(path)
        if str(image_id) in by_id:
            raise DataError(f"{by_id[str(image_id)]} and {path} give the same image id {image_id!r}; rename one")
        by_id[str(image_id)] = path
        try:
            h, w = read_image_file(path).shape[:2]
        except ImageReadError as exc:
            raise DataError(f"{exc}; remove it from {image_dir} or replace it") from None
        images.append({"id": image_id, "file_name": path.name, "width": int(w), "height": int(h)})
    return {"info": {"description": f"image list of {image_dir} (distill image-info)"}, "images": images}


def write_image_info(image_dir: str | os.PathLike[str], out: str | os.PathLike[str],
                     show_progress: bool = True) -> int:
    """`make_image_info` written atomically to `out`; returns the number of images."""
    doc = make_image_info(image_dir, show_progress)
    write_json_atomic(out, doc)
    return len(doc["images"])


__all__ = ["add_unlabelled_split", "find_image_info", "image_info_candidates", "make_image_info", "read_image_info", "write_image_info"]
