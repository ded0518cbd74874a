"""What does 1-D tag reduction cost?  `distill compare-tags` answers it in one table.

    distill compare-tags --teacher tiny:/path/state_dict.pt --data /data/coco --split val2017 \
        --fit-split train2017 --fit-images 64 --input-size 512 --out runs/compare_tags \
        [--students 17tag=student:step_s:runs/demo/step_s_kd_seed0/model.pt \
                    1tag=student:step_s_1tag:runs/demo/step_s_1tag_kd_seed0/model.pt]

Teacher part: COCO AP of the teacher with its J per-joint tag maps (the normal decode), and of the SAME
network with its tags reduced to ONE map by the `first`, `mean` and `pca` rules of `TagReducer` before
grouping. The reduction is a `Predictor` variant (`TagReducingPredictor`): after the network, per pass
(original and flipped), the J tag channels of every tag-carrying output (the 1/4 output) are reduced to
one channel; the flipped pass's channels are first put back in original joint order (`flip_index`), as
the normal aggregation does. Aggregation and decoding then see T = 1: one shared tag map, with the two
passes [orig, flip] as the 2 tag dimensions, exactly as for a student with `tag_per_joint=False`.
(The reduction is per pixel and affine, so reducing before the bilinear resizes of the aggregation
equals reducing after them up to float round-off; `first` is bit-identical to decoding channel 0.)

PCA fit (`fit_tag_reducer`): the teacher runs on the first `fit_images` TRAINING images of the same
dataset that have visible joints (official test-time resize, `input_size`, no flip, one scale); the GT
joints of the annotations are mapped through that same test-time affine onto the grid of the 1/4 tag
output, truncated to integer pixels (as the training targets are), and `TagReducer.fit` gets
`(tags, joint_index)` pairs, i.e. the J-dim tag vectors at the visible GT joints that fall in the map.
The fitted `mean`/`component` (and the explained variance ratio) are stored in the output json.

Student part (optional): AP of each student through the normal `Predictor`; the budgets read from the
run folders (`config.json`, `train_summary.json` next to `model.pt`) are printed next to them, and a
line flags whether they differ.

Output: one markdown table (rows: teacher 17 tags, teacher->first/mean/pca, students; columns: tag maps,
AP, AP50, AP75, AR, delta AP vs the J-tag row of the same model) printed and written atomically to
`OUT/compare_tags.md` and `OUT/compare_tags.json`. `compare_tags(...)` is the function API.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from distill.atomic import write_json_atomic, write_text_atomic
from distill.codec.decode import decode_mode
from distill.data.coco import CocoKeypointDataset
from distill.errors import AEDistillError
from distill.geometry import affine_transform
from distill.inference import OutputLayout
from distill.keypoints import KeypointSpec
from distill.models import KINDS, load_model, parse_model_spec
from distill.predict import Predictor, evaluate_model
from distill.progress import progress
from distill.tag_reduction import TAG_RULES, TagReducer

__all__ = [
    "SEED_STUDY_NOTE", "TagReducingPredictor", "compare_tags", "fit_tag_reducer", "format_table",
    "load_pca_state", "load_model_spec", "run_budget",
]

SEED_STUDY_NOTE = (
    "Context (the seed study's figure, NOT measured here): on the real HigherHRNet-W48, 17 tag maps "
    "gave 69.8 AP; reduced to one map by `first` 62.1 AP and by `mean` 59.3 AP."
)
TABLE_STATS = ("AP", "AP50", "AP75", "AR")
MD_NAME, JSON_NAME = "compare_tags.md", "compare_tags.json"


class CompareTagsError(AEDistillError):
    """Bad arguments for compare-tags (a model spec, a student label, an unfitted reducer...)."""


# ------------------------------------------------------------------------------------------ the hook
def shared_tag_layout(layout: OutputLayout) -> OutputLayout:
    """The layout of the same outputs once their per-joint tags are reduced to one map."""
    return replace(layout, tag_per_joint=False)


class TagReducingPredictor(Predictor):
    """`Predictor` whose network tags (T = J) are reduced to one map (T = 1) right after each pass.

    Every output that carries tags (per the network's `OutputLayout`) gets its J tag channels replaced by
    `reducer.reduce(...)` (1 channel); for the flipped pass the channels are first permuted by the flip
    index, so the reducer always sees the joints in original order. Everything after (aggregation,
    multi-scale, decode) is the unchanged test-time path, with a shared-tag layout and codec.
    """

    def __init__(self, model: nn.Module, reducer: TagReducer, spec: KeypointSpec | None = None, **kwargs: Any) -> None:
        if not reducer.fitted:
            raise CompareTagsError(f"{reducer!r} is not fitted: fit it on training images or load its state first")
        super().__init__(model, spec, **kwargs)
        self.reducer = reducer
        self.net_layout: OutputLayout | None = self.layout
        if self.layout is not None:
            self._check_net_layout(self.layout)
            self.layout = shared_tag_layout(self.layout)
        self._codec = None

    def _check_net_layout(self, layout: OutputLayout) -> None:
        if not layout.tag_per_joint:
            raise CompareTagsError("tag reduction needs a network with per-joint tag maps (T = J); this one "
                                   "already predicts one shared tag map")

    def reduce_outputs(self, outputs: Sequence[torch.Tensor], flipped: bool = False) -> list[torch.Tensor]:
        """Network outputs with each tag block (B, J, h, w) replaced by its reduction (B, 1, h, w)."""
        layout = self.net_layout
        assert layout is not None
        j = layout.num_joints
        reduced = []
        for i, out in enumerate(outputs):
            if not layout.tag_outputs[i]:
                reduced.append(out)
                continue
            offset = j if layout.heatmap_outputs[i] else 0
            tags = out[:, offset:]
            if tags.shape[1] != j:
                raise CompareTagsError(f"output {i} has {tags.shape[1]} tag channels, expected J = {j}")
            if flipped:
                tags = tags[:, list(self.spec.flip_index)]
            reduced.append(torch.cat([out[:, :offset], self.reducer.reduce(tags).to(out.dtype)], dim=1))
        return reduced

    def _forward_pair(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        outs, outs_flip = super()._forward_pair(x)
        if self.net_layout is None:  # inferred by the first forward (channel counts): that is the network's
            self._check_net_layout(self.layout)
            self.net_layout = self.layout
            self.layout = shared_tag_layout(self.layout)
            self._codec = None
        return (self.reduce_outputs(outs),
                None if outs_flip is None else self.reduce_outputs(outs_flip, flipped=True))


# ------------------------------------------------------------------------------------------ PCA fit
def gt_joint_index(joints: np.ndarray, resize: Any, map_wh: tuple[int, int]) -> torch.Tensor:
    """(1, P, K, 2) int64 `(y*w + x, 1)` of the visible GT joints (image pixels, (P, K, 3)) mapped through the
    test-time affine of `resize` onto a (w, h) map grid (integer pixels by truncation, as the training
    targets); joints that are invisible or fall outside the map get (0, 0)."""
    w, h = map_wh
    p, k = joints.shape[:2]
    index = torch.zeros(1, max(p, 1), k, 2, dtype=torch.int64)
    if p == 0:
        return index
    a = affine_transform(resize.center, resize.scale, (w, h))
    xy = joints[..., :2] @ a[:, :2].T + a[:, 2]
    x, y = xy[..., 0], xy[..., 1]
    ok = (joints[..., 2] > 0) & (x >= 0) & (y >= 0) & (x < w) & (y < h)
    xi = np.where(ok, x, 0).astype(np.int64)
    yi = np.where(ok, y, 0).astype(np.int64)
    index[0, :p, :, 0] = torch.from_numpy(np.where(ok, yi * w + xi, 0))
    index[0, :p, :, 1] = torch.from_numpy(ok.astype(np.int64))
    return index


@torch.inference_mode()
def fit_tag_reducer(
    model: nn.Module,
    data_root: str | Path,
    split: str = "train2017",
    *,
    num_images: int = 64,
    input_size: int = 512,
    rule: str = "pca",
    device: str | torch.device | None = None,
    show_progress: bool = False,
) -> tuple[TagReducer, dict[str, Any]]:
    """Fit a `TagReducer(rule)` on the teacher's tags at GT joints of the first `num_images` training images
    with at least one visible joint inside the map. Returns (reducer, info about the fit)."""

    reducer = TagReducer(rule)  # type: ignore[arg-type]
    ds = CocoKeypointDataset(data_root, split, augment=False, remove_images_without_annotations=True)
    predictor = Predictor(model, ds.spec, input_size=input_size, flip=False, device=device)
    was_training = model.training
    model.eval()
    items: list[tuple[torch.Tensor, torch.Tensor]] = []
    looked = 0
    try:
        bar = progress(range(len(ds)), desc=f"fit {rule} on {split}", total=len(ds), enabled=show_progress)
        for i in bar:
            if len(items) >= num_images:
                break
            joints = ds.get_joints(i)
            if joints.shape[0] == 0 or not (joints[..., 2] > 0).any():
                continue
            looked += 1
            x, resize = predictor.preprocess(ds.load_image(i))
            outs = predictor.forward(x)
            layout = predictor.layout
            t = next(k for k, has in enumerate(layout.tag_outputs) if has)
            out = outs[t]
            tags = out[:, layout.num_joints if layout.heatmap_outputs[t] else 0:].float().cpu()
            if tags.shape[1] != layout.num_joints:
                raise CompareTagsError(f"the teacher has {tags.shape[1]} tag maps; reduction needs J = {layout.num_joints}")
            index = gt_joint_index(joints, resize, (int(tags.shape[-1]), int(tags.shape[-2])))
            if int(index[..., 1].sum()) == 0:
                continue
            items.append((tags, index))
    finally:
        model.train(was_training)
    if rule == "pca" and not items:
        raise CompareTagsError(f"{ds.annotation_file}: no training image with visible joints to fit PCA on")
    reducer.fit(items)
    info = {"rule": rule, "fit_split": split, "fit_images": len(items), "images_looked_at": looked,
            "input_size": int(input_size),
            "joint_vectors": int(sum(int(ix[..., 1].sum()) for _, ix in items))}
    if rule == "pca":
        info.update(num_samples=reducer.num_samples, explained_variance_ratio=reducer.explained_variance_ratio)
    return reducer, info


def pca_state_json(reducer: TagReducer, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    state = reducer.state_dict()
    return {"mean": [float(v) for v in state["mean"]], "component": [float(v) for v in state["component"]],
            **dict(info or {})}


def load_pca_state(source: str | Path | Mapping[str, Any]) -> TagReducer:
    """A `TagReducer('pca')` from a compare_tags.json (its "pca" entry) or from the entry itself."""
    data: Any = source
    if not isinstance(source, Mapping):
        data = json.loads(Path(source).read_text())
    if "pca" in data and isinstance(data["pca"], Mapping):
        data = data["pca"]
    return TagReducer.from_state_dict("pca", {"mean": torch.tensor(data["mean"], dtype=torch.float32),
                                              "component": torch.tensor(data["component"], dtype=torch.float32)})


# ------------------------------------------------------------------------------------------ models
def _full_spec(text: str, default_kind: str) -> str:
    """'[teacher|student:]NAME[:CKPT]' -> 'KIND:NAME[:CKPT]' (the `--teacher CFG:WEIGHTS` form has no kind)."""
    head = text.split(":", 1)[0].strip().lower()
    return text if head in KINDS else f"{default_kind}:{text}"


def spec_weights(text: str, default_kind: str = "student") -> Path | None:
    return parse_model_spec(_full_spec(text, default_kind)).weights


def load_model_spec(text: str, default_kind: str = "teacher") -> nn.Module:
    """Build and load `[teacher|student:]NAME[:CKPT]` in eval mode, through `distill.models` (a model.pt's
    stored overrides, e.g. tag_per_joint=False, are applied there)."""
    return load_model(parse_model_spec(_full_spec(text, default_kind))).eval()


def run_budget(ckpt: str | Path | None) -> dict[str, Any] | None:
    """Training budget of the run folder that holds `ckpt` (config.json / train_summary.json), if any."""
    if not ckpt:
        return None
    run_dir = Path(ckpt).parent
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        return None
    cfg = json.loads(cfg_file.read_text())
    optim, train, data = cfg.get("optim", {}), cfg.get("train", {}), cfg.get("data", {})
    budget: dict[str, Any] = {
        "run": str(run_dir), "epochs": optim.get("epochs"), "batch_size": optim.get("batch_size"),
        "lr": optim.get("lr"), "max_steps": train.get("max_steps") or None, "input_size": data.get("input_size"),
        "train_data": f"{data.get('root')}/{data.get('train_split')}",
    }
    summary = run_dir / "train_summary.json"
    if summary.is_file():
        steps = json.loads(summary.read_text()).get("steps")
        budget["steps"] = steps
        if steps is not None and budget["batch_size"]:
            budget["images_seen"] = int(steps) * int(budget["batch_size"])
    return budget


def _budget_text(b: Mapping[str, Any] | None) -> str:
    if not b:
        return "no run config found"
    parts = [f"epochs={b['epochs']}", f"batch={b['batch_size']}", f"lr={b['lr']:g}" if b.get("lr") is not None else "lr=?"]
    if b.get("max_steps"):
        parts.append(f"max_steps={b['max_steps']}")
    if b.get("steps") is not None:
        parts.append(f"steps={b['steps']}")
    if b.get("images_seen") is not None:
        parts.append(f"images={b['images_seen']}")
    parts.append(f"input={b['input_size']}")
    return ", ".join(parts)


_BUDGET_KEYS = ("epochs", "batch_size", "lr", "max_steps", "steps", "input_size", "train_data")


def budgets_equal(budgets: Sequence[Mapping[str, Any] | None]) -> bool | None:
    """True/False when all budgets are known and (dis)agree on the keys that matter; None if any is unknown."""
    if len(budgets) < 2 or any(b is None for b in budgets):
        return None
    first = budgets[0]
    return all(all(b.get(k) == first.get(k) for k in _BUDGET_KEYS) for b in budgets[1:])  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ the study
def _tag_layout(predictor: Predictor) -> tuple[int, int]:
    """(T tag maps, D channels per map) of the predictor's network."""
    if predictor.layout is None:  # nothing evaluated yet: one dry pass tells the channel counts
        predictor._forward_pair(torch.zeros(1, 3, 64, 64, device=predictor.device))
    layout = predictor.layout
    return (layout.num_joints if layout.tag_per_joint else 1), int(layout.tag_dim)


def _row(name: str, model: str, reduction: str | None, tag_layout: tuple[int, int], stats: Mapping[str, float]
         ) -> dict[str, Any]:
    """One table row; `tag_layout` = (T tag maps, D channels per map) of the decoded network."""
    tag_maps, tag_dim = tag_layout
    return {"row": name, "model": model, "reduction": reduction, "tag_maps": int(tag_maps), "tag_dim": int(tag_dim),
            "stats": {k: float(v) for k, v in stats.items()}, **{k: float(stats[k]) for k in TABLE_STATS},
            "delta_AP": None}


def _layout_text(row: Mapping[str, Any]) -> str:
    """'17' for 1-D tags, '17 x 2' for T maps of D > 1 channels."""
    d = int(row.get("tag_dim", 1))
    return f"{row['tag_maps']}" if d == 1 else f"{row['tag_maps']} x {d}"


def _parse_students(students: Any) -> list[tuple[str, Any]]:
    if not students:
        return []
    if isinstance(students, Mapping):
        return list(students.items())
    out = []
    for item in students:
        if isinstance(item, tuple):
            out.append(item)
            continue
        label, sep, spec = str(item).partition("=")
        if not sep or not label or not spec:
            raise CompareTagsError(f"bad --students entry {item!r}: expected LABEL=student:NAME[:CKPT]")
        out.append((label, spec))
    labels = [lab for lab, _ in out]
    if len(set(labels)) != len(labels):
        raise CompareTagsError(f"student labels must be distinct, got {labels}")
    return out


def compare_tags(
    teacher: str | nn.Module,
    data_root: str | Path,
    split: str = "val2017",
    *,
    limit: int | None = None,
    input_size: int = 512,
    fit_split: str = "train2017",
    fit_images: int = 64,
    rules: Sequence[str] = TAG_RULES,
    students: Mapping[str, str | nn.Module] | Sequence[str] | None = None,
    out: str | Path | None = None,
    device: str | torch.device | None = None,
    flip: bool = True,
    batch_size: int = 1,
    pca: TagReducer | None = None,
    show_progress: bool = False,
    print_table: bool = False,
    decode: str = "official",
    known_stats: Mapping[str, Mapping[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """The compare-tags study; returns the table rows (dicts, in table order).

    `teacher`/student values: a model spec string (`[teacher:]CFG:WEIGHTS`, `student:NAME:CKPT`) or a
    built model. `pca`: a fitted reducer to use instead of fitting one on `fit_split`. With `out`, writes
    `compare_tags.md` and `compare_tags.json` there (atomically). Each row: row, model, reduction, tag_maps,
    AP, AP50, AP75, AR, delta_AP, stats (all 10 COCO stats); the pca row also has `pca_state`, student
    rows `budget`. `decode`: the decode mode of every row (official or improved). `known_stats`: COCO stats
    already measured on this split with these settings (key 'teacher' or a student label), used instead of
    evaluating that model again (the demo passes its benchmark's; they are identical, see tests/test_demo.py).
    """
    known = dict(known_stats or {})
    for r in rules:
        if r not in TAG_RULES:
            raise CompareTagsError(f"unknown tag reduction rule {r!r}; choose from {TAG_RULES}")
    teacher_text = teacher if isinstance(teacher, str) else None
    t_model = load_model_spec(teacher, "teacher") if isinstance(teacher, str) else teacher
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    t_model.eval()
    common = dict(input_size=input_size, flip=flip, device=device, **decode_mode(decode))
    ev = dict(limit=limit, batch_size=batch_size, show_progress=show_progress)

    rows: list[dict[str, Any]] = []
    base = Predictor(t_model, **common)
    stats = known["teacher"] if "teacher" in known else evaluate_model(base, data_root, split, **ev)
    j, d = _tag_layout(base)
    if d != 1:
        raise CompareTagsError(f"the teacher has {d}-D tags; the reductions {TAG_RULES} map "
                               "1-D per-joint tag maps to one map")
    if j == 1:
        raise CompareTagsError("the teacher predicts one shared tag map already; nothing to reduce")
    rows.append(_row(f"teacher {j} tags", "teacher", None, (j, d), stats))

    pca_info: dict[str, Any] | None = None
    for rule in rules:
        if rule == "pca":
            if pca is None:
                pca, info = fit_tag_reducer(t_model, data_root, fit_split, num_images=fit_images,
                                            input_size=input_size, device=device, show_progress=show_progress)
            else:
                info = {"rule": "pca", "fit_split": None, "note": "given, not fitted here"}
            reducer = pca
            pca_info = pca_state_json(pca, info)
        else:
            reducer = TagReducer(rule)  # type: ignore[arg-type]
        predictor = TagReducingPredictor(t_model, reducer, **common)
        stats = evaluate_model(predictor, data_root, split, **ev)
        row = _row(f"teacher→{rule}", "teacher", rule, _tag_layout(predictor), stats)
        if rule == "pca":
            row["pca_state"] = pca_info
        rows.append(row)
    for row in rows[1:]:
        row["delta_AP"] = row["AP"] - rows[0]["AP"]

    student_rows = []
    for label, spec in _parse_students(students):
        s_model = load_model_spec(spec, "student") if isinstance(spec, str) else spec
        predictor = Predictor(s_model.eval(), **common)
        stats = known[label] if label in known else evaluate_model(predictor, data_root, split, **ev)
        row = _row(f"student {label}", "student", None, _tag_layout(predictor), stats)
        row["spec"] = spec if isinstance(spec, str) else None
        row["budget"] = run_budget(spec_weights(spec, "student")) if isinstance(spec, str) else None
        student_rows.append(row)
    ref = next((r for r in student_rows if r["tag_maps"] > 1), None)
    for row in student_rows:
        row["delta_AP"] = None if ref is None else row["AP"] - ref["AP"]
    rows += student_rows

    meta = {"teacher": teacher_text, "data": str(data_root), "split": split, "limit": limit,
            "input_size": int(input_size), "flip": bool(flip), "fit_split": fit_split, "fit_images": int(fit_images)}
    if out is not None or print_table:
        text = format_report(rows, meta)
        if print_table:
            print(text)
        if out is not None:
            out = Path(out)
            write_text_atomic(out / MD_NAME, text + "\n")
            write_json_atomic(out / JSON_NAME, {"meta": meta, "rows": rows, "pca": pca_info,
                                                "seed_study_note": SEED_STUDY_NOTE}, indent=2)
    return rows


# ------------------------------------------------------------------------------------------ output
def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The markdown table: one row per model/reduction; ΔAP vs the J-tag row of the same model."""
    lines = ["| model | tag maps | AP | AP50 | AP75 | AR | ΔAP |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['row']} | {_layout_text(r)} | " + " | ".join(_fmt(r[k]) for k in TABLE_STATS)
                     + f" | {_fmt(r['delta_AP'], signed=True)} |")
    return "\n".join(lines)


def display_spec(spec: str, cwd: Path | None = None) -> str:
    """A KIND:NAME:PATH spec with PATH relative to `cwd` when it lies below it (reports pasted into a README must
    not carry the machine's absolute paths)."""
    parsed = parse_model_spec(spec)
    if parsed.weights is None or not parsed.weights.is_absolute():
        return spec
    try:
        rel = parsed.weights.resolve().relative_to((cwd or Path.cwd()).resolve())
    except ValueError:
        return spec
    return f"{parsed.kind}:{parsed.name}:{rel.as_posix()}"


def format_report(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    lim = f", first {meta['limit']} images" if meta.get("limit") else ""
    teacher = display_spec(meta["teacher"]) if meta.get("teacher") else "teacher"
    out = [f"## Tag reduction: {teacher} on {meta['split']}{lim}, input {meta['input_size']}"
           f"{', flip test' if meta.get('flip') else ''}", "", format_table(rows), ""]
    pca_row = next((r for r in rows if r.get("reduction") == "pca"), None)
    if pca_row and pca_row.get("pca_state"):
        s = pca_row["pca_state"]
        evr = s.get("explained_variance_ratio")
        out.append(f"PCA fitted on {s.get('fit_images')} {s.get('fit_split')} images "
                   f"({s.get('num_samples', '?')} tag vectors at GT joints)"
                   + (f", first component explains {100 * evr:.1f}% of the tag variance" if evr is not None else "")
                   + "; mean/component stored in compare_tags.json.")
    students = [r for r in rows if r["model"] == "student"]
    if students:
        for r in students:
            out.append(f"- {r['row']} ({_layout_text(r)} tag maps) budget: {_budget_text(r.get('budget'))}")
        eq = budgets_equal([r.get("budget") for r in students])
        out.append({True: "Student budgets are equal.", None: "Student budgets could not all be read (unknown).",
                    False: "**WARNING: student training budgets differ; the 1-tag vs 17-tag gap is confounded.**"}[eq])
        out.append("ΔAP of a student row: vs the student with per-joint tags.")
    out.append("")
    out.append(SEED_STUDY_NOTE)
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ CLI
