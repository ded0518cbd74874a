"""A teacher's J per-joint 1-D tag maps reduced to ONE shared map of D channels by PCA, decoded: AP vs D.

Why: the tag-dimension sweep compares students trained with T x D tags; this gives the teacher's side of the
same chart (what its own tags are worth at D channels) without training anything.

PCA is fitted on the teacher's J-dim tag vectors at the visible ground-truth joints of training images (the
1/4 tag output, no flip; `compare_tags.gt_joint_index`), all components at once. At test time every pixel's
J-dim tag vector of each pass (original, flipped) is projected on the first D components, giving a shared
map of D channels per pass, which the decoder groups with D-dim distances (people keyed by the whole
vector). Projections are scaled by 1/sqrt(J) (see `TagPCA.project`), as `TagReducer("pca")` does. The
network runs once per val image; every row decodes the same maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from distill.codec import AECodec
from distill.compare_tags import gt_joint_index
from distill.data.coco import CocoKeypointDataset
from distill.evaluate import coco_keypoint_eval, people_to_results
from distill.predict import Predictor
from distill.progress import progress
from distill.tag_reduction import sample_tag_vectors


@dataclass(frozen=True)
class TagPCA:
    """PCA of J-dim tag vectors: mean (J,), components (J, J) as columns by decreasing variance."""

    mean: np.ndarray
    components: np.ndarray
    explained: np.ndarray  # variance ratio per component
    num_vectors: int

    def project(self, tags: torch.Tensor, d: int) -> torch.Tensor:
        """(1, J, H, W, P) per-joint 1-D tags of P passes -> (1, 1, H, W, P*D): each pass's J-vector projected.

        Scaled by 1/sqrt(J): one person's J tags agree (v ~ t * ones), so people t apart are sqrt(J) * t apart
        in the J-dim space; the scaling keeps the decoder's tag threshold (1) meaning what it means for 1-D tags."""
        _, j, h, w, p = tags.shape
        if not 1 <= d <= j:
            raise ValueError(f"PCA dimension D must lie in [1, J={j}], got {d}")
        v = tags[0].permute(1, 2, 3, 0).double().cpu().numpy()  # (H, W, P, J)
        z = (v - self.mean) @ self.components[:, :d] / np.sqrt(j)  # (H, W, P, D)
        return torch.from_numpy(z.reshape(h, w, p * d).astype(np.float32))[None, None]


def fit_tag_pca(model: torch.nn.Module, data: str | Path, split: str, input_size: int, images: int,
                show_progress: bool = False) -> TagPCA:
    """PCA of the model's tag vectors at the visible GT joints of the first `images` images of `split`."""
    ds = CocoKeypointDataset(data, split, augment=False, remove_images_without_annotations=True)
    pred = Predictor(model, ds.spec, input_size=input_size, flip=False)
    vecs = []
    for i in progress(range(min(images, len(ds))), desc="fit", unit="img", enabled=show_progress):
        joints = ds.get_joints(i)
        if joints.shape[0] == 0 or not (joints[..., 2] > 0).any():
            continue
        x, resize = pred.preprocess(ds.load_image(i))
        out = pred.forward(x)[0]
        tags = out[:, pred.layout.num_joints:].float().cpu()
        index = gt_joint_index(joints, resize, (int(tags.shape[-1]), int(tags.shape[-2])))
        vecs.append(sample_tag_vectors(tags, index).double().numpy())
    if not vecs:
        raise ValueError(f"{data}/{split}: no image with visible joints among the first {images} to fit the PCA on")
    v = np.concatenate(vecs)
    mean = v.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.cov(v - mean, rowvar=False))
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
    return TagPCA(mean, evecs, evals / max(float(evals.sum()), 1e-12), len(v))


def teacher_reduction_rows(model: torch.nn.Module, data: str | Path, *, split: str = "val2017",
                           fit_split: str = "train2017", fit_images: int = 64, input_size: int = 256,
                           dims: Sequence[int] = (1, 2, 4, 8), limit: int | None = None,
                           show_progress: bool = False, log: Callable[[str], None] = lambda s: None,
                           ) -> tuple[list[dict[str, Any]], TagPCA]:
    """Rows (row, tag_channels, COCO stats) for the teacher as is, `first`, `mean` and PCA 1 x D per D."""
    model.eval()
    pca = fit_tag_pca(model, data, fit_split, input_size, fit_images, show_progress)
    ds = CocoKeypointDataset(data, split, augment=False, remove_images_without_annotations=False)
    pred = Predictor(model, ds.spec, input_size=input_size)
    j = pred.layout.num_joints
    if pred.layout.tag_maps != j or pred.layout.tag_dim != 1:
        raise ValueError(f"the teacher must have {j} per-joint 1-D tag maps to be reduced, has "
                         f"{pred.layout.tag_maps} x {pred.layout.tag_dim}")
    idx = list(range(len(ds) if limit is None else min(limit, len(ds))))
    with torch.no_grad():
        maps = [pred.predict_maps([ds.load_image(i)])[0]
                for i in progress(idx, desc="teacher", unit="img", enabled=show_progress)]

    def score(label: str, make: Callable[[torch.Tensor], torch.Tensor], per_joint: bool, d: int) -> dict[str, Any]:
        codec = AECodec.for_keypoints(ds.spec, tag_per_joint=per_joint, match={"key_dims": d})
        results = []
        for i, (heat, tags, resize) in zip(idx, maps):
            out = codec.decode(heat, make(tags))[0]
            results += people_to_results(out.people, out.scores, ds.ids[i], resize, resize.size, ds.category_id)
        st = coco_keypoint_eval(ds.annotation_file, results, image_ids=[ds.ids[i] for i in idx],
                                keypoint_names=list(ds.spec.names))
        log(f"| {label} | {st['AP']:.4f} | {st['AP50']:.4f} | {st['AR']:.4f} |")
        return {"row": label, "tag_channels": (j if per_joint else 1) * d, **st}

    rows = [score(f"teacher as is ({j} x 1)", lambda t: t, True, 1),
            score("first (1 x 1)", lambda t: t[:, :1], False, 1),
            score("mean (1 x 1)", lambda t: t.mean(dim=1, keepdim=True), False, 1)]
    for d in dims:
        rows.append(score(f"PCA (1 x {d})", lambda t, d=d: pca.project(t, d), False, d))
    return rows, pca
