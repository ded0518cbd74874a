#!/usr/bin/env python
"""The teacher's J per-joint 1-D tag maps reduced to ONE shared map of D channels by PCA, decoded: AP vs D.

PCA is fitted on the teacher's J-dim tag vectors at the visible ground-truth joints of training images (the
1/4 tag output, no flip; `compare_tags.gt_joint_index`), all components at once. At test time every pixel's
J-dim tag vector of each pass (original, flipped) is projected on the first D components, giving a shared
map of D channels per pass, which the decoder groups with D-dim distances (people keyed by the whole
vector). Rows: the teacher as is (17 x 1), `first` and `mean` (1 x 1), PCA for each D; explained variance per
component. Projections are scaled by 1/sqrt(J) (see `reduce_tags`), as `TagReducer("pca")` does. The network runs once per val image;
every row decodes the same maps.

    python scripts/teacher_tag_pca.py --data runs/study/data --input-size 256 --dims 1 2 3 4 6 8 --fit-images 64
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.atomic import write_json_atomic
from distill.compare_tags import gt_joint_index
from distill.data.coco import CocoKeypointDataset
from distill.codec import AECodec
from distill.evaluate import coco_keypoint_eval, people_to_results
from distill.models import load_model
from distill.predict import Predictor
from distill.progress import progress
from distill.tag_reduction import sample_tag_vectors

TEACHER = "teacher:higherhrnet_w16_synth:teachers/pretrained/higherhrnet_w16_synth.pt"


def fit_pca(model: torch.nn.Module, data: Path, split: str, input_size: int, images: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(mean (J,), components (J, J) columns by decreasing variance, explained variance ratios, vectors)."""
    ds = CocoKeypointDataset(data, split, augment=False, remove_images_without_annotations=True)
    pred = Predictor(model, ds.spec, input_size=input_size, flip=False)
    vecs = []
    for i in progress(range(min(images, len(ds))), desc="fit", unit="img"):
        joints = ds.get_joints(i)
        if joints.shape[0] == 0 or not (joints[..., 2] > 0).any():
            continue
        x, resize = pred.preprocess(ds.load_image(i))
        out = pred.forward(x)[0]
        j = pred.layout.num_joints
        tags = out[:, j:].float().cpu()
        index = gt_joint_index(joints, resize, (int(tags.shape[-1]), int(tags.shape[-2])))
        vecs.append(sample_tag_vectors(tags, index).double().numpy())
    v = np.concatenate(vecs)
    mean = v.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.cov(v - mean, rowvar=False))
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
    return mean, evecs, evals / evals.sum(), len(v)


def reduce_tags(tags: torch.Tensor, mean: np.ndarray, comps: np.ndarray, d: int) -> torch.Tensor:
    """(1, J, H, W, P) per-joint 1-D tags of P passes -> (1, 1, H, W, P*D): each pass's J-vector projected.

    Scaled by 1/sqrt(J): one person's J tags agree (v ~ t * ones), so people t apart are sqrt(J) * t apart in the
    J-dim space; the scaling keeps the decoder's tag threshold (1) meaning what it means for the 1-D tags."""
    _, j, h, w, p = tags.shape
    v = tags[0].permute(1, 2, 3, 0).double().numpy()  # (H, W, P, J)
    z = (v - mean) @ comps[:, :d] / np.sqrt(j)  # (H, W, P, D)
    return torch.from_numpy(z.reshape(h, w, p * d).astype(np.float32))[None, None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=TEACHER)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val2017")
    ap.add_argument("--fit-split", default="train2017")
    ap.add_argument("--fit-images", type=int, default=64)
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--dims", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model).eval()
    mean, comps, ratio, n_vec = fit_pca(model, args.data, args.fit_split, args.input_size, args.fit_images)
    ds = CocoKeypointDataset(args.data, args.split, augment=False, remove_images_without_annotations=False)
    pred = Predictor(model, ds.spec, input_size=args.input_size)
    idx = list(range(len(ds) if args.limit is None else min(args.limit, len(ds))))
    maps = [pred.predict_maps([ds.load_image(i)])[0] for i in progress(idx, desc="network", unit="img")]
    j = ds.num_joints

    def score(label: str, make: Any, per_joint: bool, d: int) -> dict[str, Any]:
        codec = AECodec.for_keypoints(ds.spec, tag_per_joint=per_joint, match={"key_dims": d})
        results = []
        for i, (heat, tags, resize) in zip(idx, maps):
            out = codec.decode(heat, make(tags))[0]
            results += people_to_results(out.people, out.scores, ds.ids[i], resize, resize.size, ds.category_id)
        st = coco_keypoint_eval(ds.annotation_file, results, image_ids=[ds.ids[i] for i in idx],
                                keypoint_names=list(ds.spec.names))
        print(f"| {label} | {st['AP']:.4f} | {st['AP50']:.4f} | {st['AR']:.4f} |", flush=True)
        return {"row": label, "tag_channels": (j if per_joint else 1) * d, **st}

    print(f"\nPCA fitted on {n_vec} tag vectors at GT joints of {args.fit_images} {args.fit_split} images; explained "
          "variance per component: " + ", ".join(f"{r:.3f}" for r in ratio[:8]))
    print("\n| tags | AP | AP50 | AR |\n|---|---:|---:|---:|")
    rows = [score(f"teacher as is ({j} x 1)", lambda t: t, True, 1),
            score("first (1 x 1)", lambda t: t[:, :1], False, 1),
            score("mean (1 x 1)", lambda t: t.mean(dim=1, keepdim=True), False, 1)]
    for d in args.dims:
        rows.append(score(f"PCA (1 x {d})", lambda t, d=d: reduce_tags(t, mean, comps, d), False, d))
    if args.out:
        write_json_atomic(args.out, {"model": args.model, "data": str(args.data), "split": args.split,
                                     "images": len(idx), "explained_variance_ratio": ratio.tolist(),
                                     "fit_vectors": n_vec, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
