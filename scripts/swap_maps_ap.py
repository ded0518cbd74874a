"""Where does a student lose AP against its teacher: detection (heatmaps) or grouping (tags)?

Runs two models on the same images (official test path: resize, flip, projection to the input size) and
decodes every heatmap/tag pairing with the shared codec:

    A heatmaps + A tags   (model A as is)
    A heatmaps + B tags   (A's detections grouped by B's tags)
    B heatmaps + A tags
    B heatmaps + B tags   (model B as is)

If a student's AP rises most when it borrows the teacher's tags, its tags are what hold it back, and
tag distillation is the lever; if it rises most with the teacher's heatmaps, heatmap distillation is.
Both models need the same tag layout (per-joint or shared) for the swap to be meaningful.

`--b gt` makes B the ground truth, rendered exactly as `distill oracle` does (heatmaps sigma 2 and perfect
per-joint tags at 1/2 resolution, projected to the input size): "A heat + B tags" is then A's detections
grouped perfectly, and "B heat + A tags" perfect detections grouped by A's tags.

    python scripts/swap_maps_ap.py --a teacher:higherhrnet_w16_synth:runs/study/teacher/model.pt \\
        --b student:step_s:runs/study/step_s_gt_seed0/model.pt --data runs/study/data --input-size 256
"""
from __future__ import annotations

import argparse
from typing import Any

import torch

from distill.data.coco import CocoKeypointDataset
from distill.evaluate import coco_keypoint_eval
from distill.models import load_model
from distill.predict import Predictor
from distill.progress import progress


def gt_maps(ds: CocoKeypointDataset, index: int, input_size: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The oracle's perfect heatmaps and tags for one image, at the input size."""
    from distill.oracle import oracle_maps

    return oracle_maps(ds.image_info(index), ds.annotations(index), ds.spec.num_joints, input_size)


def pairings_ap(a: Predictor, b: Predictor | None, ds: CocoKeypointDataset, limit: int | None, show_progress: bool
                ) -> dict[str, dict[str, float]]:
    """`b` None: B is the ground truth (`gt_maps`)."""
    """COCO stats of the four heatmap/tag pairings over the first `limit` images of `ds`."""
    names = {("a", "a"): "A heat + A tags", ("a", "b"): "A heat + B tags",
             ("b", "a"): "B heat + A tags", ("b", "b"): "B heat + B tags"}
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names.values()}
    indices = list(range(len(ds) if limit is None else min(limit, len(ds))))
    for i in progress(indices, desc="images", enabled=show_progress, unit="img"):
        image = ds.load_image(i)
        maps = {"a": a.predict_maps([image])[0],
                "b": b.predict_maps([image])[0] if b is not None else gt_maps(ds, i, a.input_size)}
        if maps["a"][0].shape != maps["b"][0].shape:
            raise ValueError(f"image {ds.ids[i]}: the models' heatmaps differ in shape "
                             f"{tuple(maps['a'][0].shape)} vs {tuple(maps['b'][0].shape)}")
        for (hk, tk), name in names.items():
            heat, _, resize = maps[hk]
            pred = a.decode_maps(heat, maps[tk][1], resize)
            results[name] += pred.to_results(ds.ids[i], ds.category_id)
    ids = [ds.ids[i] for i in indices]
    return {name: coco_keypoint_eval(ds.annotation_file, res, image_ids=ids, keypoint_names=list(ds.spec.names))
            for name, res in results.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="model A, KIND:NAME:CKPT (e.g. the teacher)")
    p.add_argument("--b", required=True, help="model B, KIND:NAME:CKPT (e.g. a student), or 'gt' (ground truth)")
    p.add_argument("--data", required=True, help="COCO-format root")
    p.add_argument("--split", default="val2017")
    p.add_argument("--input-size", type=int, default=512)
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = CocoKeypointDataset(args.data, args.split, remove_images_without_annotations=False, augment=False)
    preds = []
    for text in (args.a, args.b) if args.b != "gt" else (args.a,):
        model = load_model(text).eval()
        preds.append(Predictor(model, ds.spec, input_size=args.input_size, flip=True, device="cpu"))
    for pr in preds:  # resolve the output layouts before comparing them
        pr.predict_maps([ds.load_image(0)])
    if args.b == "gt":
        if not preds[0].layout.tag_per_joint:
            raise SystemExit("--b gt has per-joint tags; model A has one shared tag map")
        preds.append(None)
    elif preds[0].layout.tag_per_joint != preds[1].layout.tag_per_joint:
        raise SystemExit("the two models have different tag layouts (per-joint vs shared); swapping tags "
                         "between them is not meaningful")
    stats = pairings_ap(preds[0], preds[1], ds, args.limit, not args.no_progress)
    print(f"A = {args.a}\nB = {args.b}\n")
    print("| pairing | AP | AP50 | AR | APm | APl |\n|---|---|---|---|---|---|")
    for name, s in stats.items():
        print(f"| {name} | {s['AP']:.3f} | {s['AP50']:.3f} | {s['AR']:.3f} | {s['APm']:.3f} | {s['APl']:.3f} |")


if __name__ == "__main__":
    main()
