"""`distill visualize` and the drawing functions behind it (also used by the bench report).

    distill visualize --model student:step_s:runs/x/model.pt --input photos/ --out vis/
    distill visualize --model teacher:tiny:state_dict.pt --input img.jpg --out vis/ --panels

For each image, OUT/<stem>.png holds the predicted skeletons drawn over the image; with `--panels`, a
side-by-side of overlay | heatmaps (max over joints) | tags. Predictions come from the shared
`Predictor` (official test-time path, flip test on), so the picture is exactly what is evaluated.

Drawing functions (RGB uint8 images in, new RGB uint8 images out; the input is never modified):
    draw_people(image, people, spec)      skeleton limbs (spec.skeleton) and joints of (N, J, 3+) people
    side_by_side(images, titles)          panels scaled to one height, each under a title bar
    heatmap_panel(image, heatmaps)        max over joints, colour-mapped, blended over the image
    tag_panel(image, tags, heatmaps)      tag value (channel 0, first pass) where joints are detected
Colours: one hue per person (`color_by_person=True`), its left-side limbs and joints in a light tint,
right-side ones in a dark shade, centre ones (face, shoulder and hip lines) in the plain hue; with
`color_by_person=False` the classic left = orange / right = blue / centre = green scheme.
"""
from __future__ import annotations

import colorsys
import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from distill.data.images import IMAGE_SUFFIXES, list_images
from distill.errors import DataError
from distill.geometry import affine_transform
from distill.keypoints import KeypointSpec

__all__ = [
    "IMAGE_SUFFIXES", "draw_people", "list_images", "heatmap_panel", "joint_sides", "person_colors", "side_by_side",
    "tag_panel", "visualize_image",
]

LEFT, CENTRE, RIGHT = -1, 0, 1
_FIXED_SIDE_COLORS = {LEFT: (255, 140, 0), RIGHT: (30, 120, 255), CENTRE: (40, 200, 60)}  # RGB

# ------------------------------------------------------------------------------------------ colours


def joint_sides(spec: KeypointSpec) -> list[int]:
    """LEFT / RIGHT / CENTRE per joint, from the names ('left_*', 'l_*', ...; unsided -> CENTRE)."""
    sides = []
    for j, name in enumerate(spec.names):
        n = name.lower()
        if spec.flip_index[j] == j:
            sides.append(CENTRE)
        elif "left" in n or n.startswith(("l_", "l-")):
            sides.append(LEFT)
        elif "right" in n or n.startswith(("r_", "r-")):
            sides.append(RIGHT)
        else:
            sides.append(CENTRE)
    return sides


def person_colors(n: int) -> list[tuple[int, int, int]]:
    """n well-separated saturated RGB colours (golden-ratio hue steps)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((0.07 + i * 0.618034) % 1.0, 0.85, 1.0)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _shade(color: tuple[int, int, int], side: int) -> tuple[int, int, int]:
    c = np.asarray(color, np.float64)
    if side == LEFT:      # light tint
        c = c + (255 - c) * 0.45
    elif side == RIGHT:   # dark shade
        c = c * 0.55
    return tuple(int(round(v)) for v in c)  # type: ignore[return-value]


def _limb_side(sides: Sequence[int], a: int, b: int) -> int:
    sa, sb = sides[a], sides[b]
    return sa if sa == sb else CENTRE


# ------------------------------------------------------------------------------------------ drawing
def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def draw_people(
    image_rgb: np.ndarray,
    people: np.ndarray,
    spec: KeypointSpec | None = None,
    score_thr: float = 0.0,
    color_by_person: bool = True,
    min_joint_value: float = 0.0,
    *,
    scores: Sequence[float] | np.ndarray | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """The image with each person's skeleton drawn on a copy (same shape, uint8 RGB).

    people: (N, J, 3+) rows (x, y, value, ...) in image pixels (e.g. `Prediction.people`, or COCO
    ground truth reshaped to (N, J, 3) with value = visibility). A joint is drawn when its value is
    > `min_joint_value`; a limb when both its joints are. People whose score is below `score_thr` are
    skipped; the score is `scores[i]` when given (e.g. `Prediction.scores`), else the mean joint value.
    """
    spec = spec or KeypointSpec.coco()
    out = _as_rgb_uint8(image_rgb).copy()
    people = _to_numpy(people)
    if people.size == 0:
        return out
    if people.ndim != 3 or people.shape[1] != spec.num_joints or people.shape[2] < 3:
        raise ValueError(f"people must be (N, {spec.num_joints}, 3+), got {people.shape}")
    h, w = out.shape[:2]
    t = thickness or max(1, int(round(min(h, w) / 240)))
    radius = t + 1
    sides = joint_sides(spec)
    person_score = (np.asarray(scores, np.float64) if scores is not None else people[:, :, 2].mean(axis=1))
    palette = person_colors(len(people))
    order = np.argsort(person_score, kind="stable")  # best people last = on top
    for i in order:
        if person_score[i] < score_thr:
            continue
        p = people[i]
        ok = (p[:, 2] > min_joint_value) & np.isfinite(p[:, :2]).all(axis=1)

        def color(side: int) -> tuple[int, int, int]:
            return _shade(palette[i], side) if color_by_person else _FIXED_SIDE_COLORS[side]

        for a, b in spec.skeleton:  # 1-based joint ids
            a, b = a - 1, b - 1
            if not (0 <= a < len(p) and 0 <= b < len(p) and ok[a] and ok[b]):
                continue
            pa = (int(round(float(p[a, 0]))), int(round(float(p[a, 1]))))
            pb = (int(round(float(p[b, 0]))), int(round(float(p[b, 1]))))
            cv2.line(out, pa, pb, color(_limb_side(sides, a, b)), t + 1, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            c = (int(round(float(p[j, 0]))), int(round(float(p[j, 1]))))
            cv2.circle(out, c, radius + 1, (0, 0, 0), -1, cv2.LINE_AA)
            cv2.circle(out, c, radius, color(sides[j]), -1, cv2.LINE_AA)
    return out


def _title_bar(width: int, height: int, text: str) -> np.ndarray:
    bar = np.full((height, width, 3), 32, np.uint8)
    if text:
        font = cv2.FONT_HERSHEY_SIMPLEX
        scale = height / 40.0
        thick = max(1, int(round(height / 24)))
        (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
        while tw > width - 8 and scale > 0.3:
            scale *= 0.9
            (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
        cv2.putText(bar, text, (4, (height + th) // 2), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return bar


def side_by_side(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, *,
                 height: int | None = None, gap: int = 4, bar_height: int | None = None) -> np.ndarray:
    """Panels scaled to one height (default: the first image's) in a row, each under a title bar."""
    if not images:
        raise ValueError("side_by_side needs at least one image")
    titles = list(titles) if titles is not None else [""] * len(images)
    if len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    images = [_as_rgb_uint8(im) for im in images]
    height = int(height or images[0].shape[0])
    bar_h = int(bar_height or max(18, min(40, height // 12)))
    columns = []
    for im, title in zip(images, titles):
        h, w = im.shape[:2]
        if h != height:
            w = max(1, int(round(w * height / h)))
            im = cv2.resize(im, (w, height), interpolation=cv2.INTER_AREA if h > height else cv2.INTER_LINEAR)
        columns.append(np.concatenate([_title_bar(w, bar_h, title), im]))
    spacer = np.full((height + bar_h, gap, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for k, col in enumerate(columns):
        if k:
            parts.append(spacer)
        parts.append(col)
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def _to_image_frame(plane: np.ndarray, image_hw: tuple[int, int], map_to_image: np.ndarray | None,
                    interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """A (H, W) map plane in the image frame: warped by the 2x3 map->image affine, else resized."""
    h, w = image_hw
    plane = np.ascontiguousarray(plane, dtype=np.float32)
    if map_to_image is not None:
        return cv2.warpAffine(plane, np.asarray(map_to_image, np.float64), (w, h), flags=interpolation,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if plane.shape != (h, w):
        return cv2.resize(plane, (w, h), interpolation=interpolation)
    return plane


def _colormap(values01: np.ndarray, cmap: int = cv2.COLORMAP_JET) -> np.ndarray:
    u8 = np.clip(values01 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, cmap), cv2.COLOR_BGR2RGB)


def heatmap_panel(image: np.ndarray, heatmaps: Any, *, alpha: float = 0.6,
                  map_to_image: np.ndarray | None = None) -> np.ndarray:
    """Max over joints of (J, H, W) heatmaps (clipped to [0, 1]), colour-mapped and blended over the
    image. The maps are resized to the image, or warped with `map_to_image` (2x3 affine from the map
    frame to image pixels, e.g. `prediction_affine(pred)`)."""
    image = _as_rgb_uint8(image)
    maps = _to_numpy(heatmaps)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"heatmaps must be (J, H, W), got {maps.shape}")
    heat = np.clip(_to_image_frame(maps.max(axis=0), image.shape[:2], map_to_image), 0.0, 1.0)
    colour = _colormap(heat).astype(np.float32)
    weight = (alpha * (0.35 + 0.65 * heat))[..., None]  # hot places stand out, the image stays readable
    return np.clip(image * (1 - weight) + colour * weight + 0.5, 0, 255).astype(np.uint8)


def tag_panel(image: np.ndarray, tags: Any, heatmaps: Any = None, *, det_thr: float = 0.1,
              map_to_image: np.ndarray | None = None) -> np.ndarray:
    """Tag values where joints are detected, colour-coded over a dimmed grey image.

    tags: (T, H, W) or (T, H, W, L) (T = J per-joint maps or 1 shared map; L tag values, e.g. the
    [original, flipped] passes: the first is shown). With per-joint tags and `heatmaps` (J, H, W), each
    pixel shows the tag of its strongest joint, so one person reads as one colour; the mask is the
    heatmap max (full colour from `det_thr` x 3 up). Colours span the 2..98 % range of the shown tags.
    """
    image = _as_rgb_uint8(image)
    t = _to_numpy(tags)
    if t.ndim == 4:
        t = t[..., 0]
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"tags must be (T, H, W) or (T, H, W, L), got {_to_numpy(tags).shape}")
    if heatmaps is not None:
        hm = _to_numpy(heatmaps)
        if hm.ndim == 2:
            hm = hm[None]
        if hm.shape[-2:] != t.shape[-2:]:
            raise ValueError(f"heatmaps {hm.shape} and tags {t.shape} differ in size")
        if t.shape[0] == hm.shape[0] and t.shape[0] > 1:
            best = hm.argmax(axis=0)
            tag = np.take_along_axis(t, best[None], axis=0)[0]
        else:
            tag = t[0]
        mask = np.clip(hm.max(axis=0) / max(3 * det_thr, 1e-6), 0.0, 1.0)
    else:
        tag = t[0]
        mask = np.ones_like(tag)
    shown = tag[mask > 0.33] if (mask > 0.33).any() else tag.reshape(-1)
    lo, hi = np.percentile(shown, [2, 98]) if shown.size else (0.0, 1.0)
    norm = (tag - lo) / max(float(hi - lo), 1e-6)
    norm_img = _to_image_frame(np.clip(norm, 0, 1), image.shape[:2], map_to_image)
    mask_img = np.clip(_to_image_frame(mask, image.shape[:2], map_to_image), 0, 1)[..., None]
    colour = _colormap(norm_img, cv2.COLORMAP_TURBO).astype(np.float32)
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB).astype(np.float32) * 0.45
    return np.clip(grey * (1 - mask_img) + colour * mask_img + 0.5, 0, 255).astype(np.uint8)


def prediction_affine(pred: Any) -> np.ndarray:
    """2x3 affine from a `Prediction`'s map frame (its heatmaps / tags) to original-image pixels."""

    return affine_transform(pred.resize.center, pred.resize.scale, pred.map_size, inverse=True)


def visualize_image(image: np.ndarray, pred: Any, spec: KeypointSpec, *, score_thr: float = 0.1,
                    min_joint_value: float = 0.0, panels: bool = False, title: str = "") -> np.ndarray:
    """The overlay for one `Prediction` (and with `panels`, overlay | heatmaps | tags)."""
    overlay = draw_people(image, pred.people, spec, score_thr, min_joint_value=min_joint_value, scores=pred.scores)
    if not panels:
        return overlay
    if pred.heatmaps is None or pred.tags is None:
        raise ValueError("panels need the maps: predict with return_maps=True")
    affine = prediction_affine(pred)
    shown = int((np.asarray(pred.scores) >= score_thr).sum())
    return side_by_side(
        [overlay, heatmap_panel(image, pred.heatmaps, map_to_image=affine),
         tag_panel(image, pred.tags, pred.heatmaps, map_to_image=affine)],
        [f"{title} {shown} people (score >= {score_thr:g})".strip(), "heatmaps (max over joints)",
         "tags (strongest joint, 1st pass)"])


# ---------------------------------------------------------------------------------------------- CLI
def spec_from_annotations(path: Path) -> KeypointSpec:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        category = doc["categories"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise DataError(f"{path}: cannot read a keypoint category from it: {exc}") from None
    return KeypointSpec.from_category(category, str(path))
