"""`distill oracle`: the accuracy ceiling of the decoding path, given perfect network outputs.

Per image (only the annotation file is read; image sizes come from it): the official test resize
for the input size; every labelled joint (v > 0) of every non-crowd person with keypoints mapped
into the 1/2-resolution output frame; heatmaps rendered there (sigma 2, as the encoder does);
perfect tags (joint channel j holds (person index + 1) * 2 in a radius-3 disc around that person's
joint j; one tag dim, no flip). Then exactly the test-time path: bilinear projection to the input
size, decode (adjust, refine), inverse affine, COCOeval.

Imperfect-map variants, defined per image so every decoder sees the same maps:
  --tag-noise SIGMA   adds numpy.random.default_rng([S, image_id]).normal(0, SIGMA, (J, h/2, w/2)) to the
                      1/2-resolution tag maps (float64, added, cast back to float32), before the projection;
  --heatmap-jitter J  adds default_rng([S + 1000003, image_id]).uniform(0, J, (J, h/2, w/2)) to the
                      1/2-resolution heatmaps the same way (it breaks the exact ties of the projected peaks);
with S = --noise-seed. `--max-people N` is the decoder's person limit (and top-k per joint); `--decode improved`
decodes with the improved preset (plateau de-duplication, DARK sub-pixel steps, grouping on the 1/2-resolution
maps without the projection; docs/decoding.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.codec.decode import DECODE_MODES, DecodeParams, decode
from distill.codec.matching import MatchParams
from distill.codec.targets import render_heatmaps
from distill.data.coco import _read_json, annotation_path, validate_coco_keypoints
from distill.evaluate import coco_keypoint_eval, people_to_results
from distill.geometry import affine_transform, inference_resize
from distill.inference import _resize
from distill.keypoints import KeypointSpec
from distill.progress import progress

TAG_DISC_RADIUS = 3


def perfect_tags(joints: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(J, H, W) tag maps: (p + 1) * 2 in a radius-3 disc around person p's joint j (later people on top)."""
    h, w = hw
    num_joints = joints.shape[1]
    tags = np.zeros((num_joints, h, w), dtype=np.float32)
    r = TAG_DISC_RADIUS
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = dx**2 + dy**2 <= r * r
    dy, dx = dy[disc], dx[disc]
    for p, person in enumerate(joints):
        for j, (x, y, v) in enumerate(person):
            if v <= 0:
                continue
            xs, ys = int(x) + dx, int(y) + dy
            ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
            tags[j, ys[ok], xs[ok]] = (p + 1) * 2
    return tags


JITTER_SEED_OFFSET = 1000003


def oracle_maps(image: dict[str, Any], anns: list[dict[str, Any]], num_joints: int, input_size: int,
                tag_noise: float = 0.0, heatmap_jitter: float = 0.0, noise_seed: int = 0, project: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Perfect (or, with noise, imperfect) heatmaps (1, J, H, W) and tags (1, J, H, W, 1) at the input size
    (`project=False`: at the 1/2 resolution they are rendered at), and the resize."""
    resize = inference_resize(int(image["width"]), int(image["height"]), input_size)
    in_w, in_h = resize.size
    out_hw = (in_h // 2, in_w // 2)
    to_output = affine_transform(resize.center, resize.scale, (out_hw[1], out_hw[0]))
    people = [a for a in anns if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
    joints = np.zeros((len(people), num_joints, 3))
    for p, ann in enumerate(people):
        k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(num_joints, 3)
        joints[p, :, :2] = k[:, :2] @ to_output[:, :2].T + to_output[:, 2]
        joints[p, :, 2] = k[:, 2]
    heat_np = render_heatmaps(joints, out_hw, 2.0)
    tags_np = perfect_tags(joints, out_hw)
    if tag_noise > 0:
        noise = np.random.default_rng([noise_seed, int(image["id"])]).normal(0.0, tag_noise, tags_np.shape)
        tags_np = (tags_np.astype(np.float64) + noise).astype(np.float32)
    if heatmap_jitter > 0:
        jitter = np.random.default_rng([noise_seed + JITTER_SEED_OFFSET, int(image["id"])]).uniform(
            0.0, heatmap_jitter, heat_np.shape)
        heat_np = (heat_np.astype(np.float64) + jitter).astype(np.float32)
    heat = torch.from_numpy(heat_np)[None]
    tags = torch.from_numpy(tags_np)[None]
    if project:
        heat = _resize(heat, (in_h, in_w))
        tags = _resize(tags, (in_h, in_w))
    return heat, tags[..., None], resize


def run_oracle(data: Path, split: str, input_size: int = 512, adjust: bool = True, refine: bool = True,
               results_file: Path | None = None, show_progress: bool = True, tag_noise: float = 0.0,
               heatmap_jitter: float = 0.0, noise_seed: int = 0, max_people: int = 30,
               mode_name: str = "official", decode_overrides: dict[str, Any] | None = None) -> dict[str, float]:
    """COCO stats of the decoder on the oracle's maps; `mode_name` a `--decode` preset, `decode_overrides`
    further DecodeParams fields (experiments)."""
    mode = DECODE_MODES[mode_name]
    ann_file = annotation_path(data, split)
    dataset = _read_json(ann_file)
    category = validate_coco_keypoints(dataset, str(ann_file))
    spec = KeypointSpec.from_category(category, str(ann_file))
    anns_by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in dataset["annotations"]:
        if ann.get("category_id") == category["id"]:
            anns_by_image.setdefault(ann["image_id"], []).append(ann)

    params = DecodeParams(
        match=MatchParams(num_joints=spec.num_joints, joint_order=spec.grouping_order, max_num_people=max_people),
        adjust=adjust, refine=refine, **{**mode.overrides, **(decode_overrides or {})}
    )
    results = []
    for image in progress(dataset["images"], f"oracle {split}", enabled=show_progress, unit="img"):
        heat, tags, resize = oracle_maps(image, anns_by_image.get(image["id"], []), spec.num_joints, input_size,
                                         tag_noise, heatmap_jitter, noise_seed, mode.project)
        (out,) = decode(heat, tags, params)
        map_size = (int(heat.shape[-1]), int(heat.shape[-2]))
        results += people_to_results(out.people, out.scores, image["id"], resize, map_size, category_id=category["id"])
    return coco_keypoint_eval(ann_file, results, results_file, keypoint_names=spec.names)
