"""`distill compare-tags --dims D ...`: students trained for every tag layout T x D at one budget, one table.

For each tag-map choice (`per-joint`: T = J, `shared`: T = 1), each D in `dims` and each seed, a student is
trained with the recipe `config` (a run config, e.g. configs/train/synth_step_s_kd.yaml) and the overrides
`model.tag_maps`, `model.tag_dim`, `train.seed`, `train.out` (plus the caller's `--set` overrides, the same for
every run: equal budgets by construction). A finished run (its model.pt and a config.json equal to the one this
sweep would write) is reused, so a rerun only trains what is missing; a folder holding a run of other settings
is refused. Every student is then scored on the val split (official test path, `decode` mode) and timed: network
(CPU, batch 1) and grouping (decode of its own maps) ms per image.

Output (`OUT/`): `tag_sweep.md` (rows per T x D: tag channels T*D, AP mean ± std over seeds and per seed, AR,
params, GMACs, network ms, grouping ms), `tag_sweep.json` (every number), `tag_sweep.png` (AP against tag
channels, log x; error bars = std over seeds). With `teacher`, the teacher's own tags reduced to D channels
(`distill.teacher_tag_pca`: as is = J channels, mean = 1, PCA 1 x D for each D of the sweep) are decoded on
the same val images and drawn as a second series: what the teacher's tags are worth at each tag width,
beside what a student trained with that width reaches. Written atomically.
"""
from __future__ import annotations

import io
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from distill.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from distill.bench import _timed_predictor_class, time_cpu_network
from distill.codec.decode import decode_mode
from distill.compare_tags import load_model_spec
from distill.config import load_config
from distill.data.coco import CocoKeypointDataset
from distill.errors import AEDistillError, ensure_writable_dir
from distill.flops import count_macs
from distill.losses import DISTANCE_TAG_KD
from distill.models import contract_of, load_model
from distill.predict import evaluate_model
from distill.teacher_tag_pca import teacher_reduction_rows
from distill.train import train

MAPS = {"per-joint": 0, "shared": 1}  # model.tag_maps: 0 = the config's per-joint maps (T = J), 1 = shared


class SweepError(AEDistillError):
    """A tag sweep that cannot run as asked."""


@dataclass(frozen=True)
class SweepRun:
    maps: str
    tag_dim: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.maps}_d{self.tag_dim}_seed{self.seed}"


def plan(maps: Sequence[str], dims: Sequence[int], seeds: Sequence[int]) -> list[SweepRun]:
    bad = [m for m in maps if m not in MAPS]
    if bad or not maps:
        raise SweepError(f"--maps: expected some of {list(MAPS)}, got {list(maps)}")
    if not dims or any(int(d) < 1 for d in dims):
        raise SweepError(f"--dims: tag lengths must be >= 1, got {list(dims)}")
    if not seeds:
        raise SweepError("--seeds: at least one seed")
    return [SweepRun(m, int(d), int(s)) for m in maps for d in dims for s in seeds]


def run_config(recipe: Path, run: SweepRun, out: Path, overrides: Sequence[str]) -> Any:
    tag_maps = [f"model.tag_maps={MAPS[run.maps]}"] if MAPS[run.maps] else ["model.overrides.tag_per_joint=true"]
    return load_config(recipe, [*overrides, *tag_maps, f"model.tag_dim={run.tag_dim}", f"train.seed={run.seed}",
                                f"train.out={out / run.name}", "train.eval_every=0"])


_COMPARED = ("model", "data", "loss", "optim", "teacher")
_TAG_KEYS = ("tag_maps", "tag_dim")


def check_tag_kd(cfg: Any, run: SweepRun, recipe: str | Path) -> None:
    """Tag KD for D > 1 must compare distances: a 1-D teacher and a D-dim student share those, not tag values."""
    if cfg.loss.tag_kd_weight > 0 and run.tag_dim > 1 and cfg.loss.tag_kd_type not in DISTANCE_TAG_KD:
        raise SweepError(f"{recipe}: loss.tag_kd_type {cfg.loss.tag_kd_type!r} compares tag values, which a 1-D "
                         f"teacher and a D = {run.tag_dim} student do not share; use loss.tag_kd_type=relational "
                         "or person (distances) or loss.tag_kd_weight=0 for a tag-length sweep")


def _recorded(folder: Path) -> dict[str, Any] | None:
    """The resolved config a finished run recorded, or None when the folder holds no finished run."""
    if not (folder / "model.pt").is_file() or not (folder / "config.json").is_file():
        return None
    return json.loads((folder / "config.json").read_text())


def _finished(cfg: Any) -> bool:
    folder = Path(cfg.train.out)
    stored = _recorded(folder)
    if stored is None:
        return False
    want = json.loads(json.dumps(cfg.to_dict()))
    for section in _COMPARED:
        if stored.get(section) != want.get(section):
            raise SweepError(f"{folder}: holds a finished run with other {section} settings than this sweep's; "
                             "use another --out or delete the folder")
    return True


def _without_tag_layout(model: dict[str, Any]) -> dict[str, Any]:
    overrides = {k: v for k, v in (model.get("overrides") or {}).items() if k not in ("tag_per_joint", "tag_dim")}
    return {**{k: v for k, v in model.items() if k not in _TAG_KEYS}, "overrides": overrides}


def same_run(folder: Path, cfg: Any, run: SweepRun) -> bool:
    """Is the finished run in `folder` (trained elsewhere, e.g. by `distill train`) this planned run?

    Its recorded config must equal the planned one in every compared section and the seed; the tag layout
    is compared as built (the model's contract), not as spelled, so a per-joint 1-D recipe run without tag
    overrides is the sweep's `per-joint_d1` run."""
    stored = _recorded(folder)
    if stored is None:
        return False
    want = json.loads(json.dumps(cfg.to_dict()))
    if stored.get("train", {}).get("seed") != run.seed:
        return False
    if any(stored.get(s) != want.get(s) for s in _COMPARED if s != "model"):
        return False
    if _without_tag_layout(stored.get("model", {})) != _without_tag_layout(want["model"]):
        return False
    lay = contract_of(load_model(f"student:{cfg.model.name}:{folder / 'model.pt'}"))
    return (lay.tag_maps == 1) == (run.maps == "shared") and lay.tag_dim == run.tag_dim


def score_run(cfg: Any, folder: Path, val_split: str, limit: int | None, decode: str, repeats: int
              ) -> dict[str, Any]:
    """AP/AR on the val split, params, GMACs, network and grouping ms of the student trained in `folder`."""

    model = load_model(f"student:{cfg.model.name}:{folder / 'model.pt'}").eval()
    size = int(cfg.data.input_size)
    ds = CocoKeypointDataset(cfg.data.root, val_split, augment=False, remove_images_without_annotations=False)
    predictor = _timed_predictor_class()(model, ds.spec, input_size=size, **decode_mode(decode))
    stats = evaluate_model(predictor, cfg.data.root, val_split, limit=limit, show_progress=False)
    macs = count_macs(model, size)
    lay = contract_of(model)
    return {"AP": stats["AP"], "AR": stats["AR"], "AP50": stats["AP50"], "tag_maps": lay.tag_maps,
            "tag_dim": lay.tag_dim, "tag_channels": lay.tag_channels, "params_m": macs.params / 1e6,
            "gmacs": macs.macs_paper / 1e9,
            "net_ms": statistics.median(time_cpu_network(model, size, repeats, 1, show_progress=False)),
            "group_ms": statistics.median(p["decode"] for p in predictor.per_image)}


def run_sweep(recipe: str | Path, out: str | Path, *, maps: Sequence[str] = ("per-joint", "shared"),
              dims: Sequence[int] = (1, 2, 4, 8), seeds: Sequence[int] = (0, 1, 2), overrides: Sequence[str] = (),
              val_split: str = "val2017", limit: int | None = None, decode: str = "official", repeats: int = 5,
              teacher: str | None = None, fit_images: int = 64, adopt: Sequence[str | Path] = (),
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train (or reuse) and score every run of the plan; returns the per-layout rows (see the module doc).

    `teacher`: a model spec (`CFG:WEIGHTS`) whose tag reductions join the report (official decoding,
    the students' input size and val images; PCA fitted on `fit_images` training images). `adopt`: folders
    of finished runs trained elsewhere; one that is a planned run (`same_run`) is scored in place of
    training it (the report names the folder)."""

    out = Path(out)
    ensure_writable_dir(out, "--out")
    runs = plan(maps, dims, seeds)
    per_run = []
    for k, run in enumerate(runs, 1):
        cfg = run_config(Path(recipe), run, out, overrides)
        check_tag_kd(cfg, run, recipe)
        folder = Path(cfg.train.out)
        finished = _finished(cfg)
        adopted = None if finished else next((Path(a) for a in adopt if same_run(Path(a), cfg, run)), None)
        if adopted is not None:
            folder = adopted
            log(f"[{k}/{len(runs)}] {run.name}: adopting {folder}")
        elif finished:
            log(f"[{k}/{len(runs)}] {run.name}: reusing {folder}")
        else:
            log(f"[{k}/{len(runs)}] {run.name}: training {folder}")
            train(cfg)
        per_run.append({**asdict(run), "run": run.name, "folder": str(folder),
                        **score_run(cfg, folder, val_split, limit, decode, repeats)})
    rows = []
    for m in maps:
        for d in dims:
            group = [r for r in per_run if r["maps"] == m and r["tag_dim"] == int(d)]
            aps = [r["AP"] for r in group]
            rows.append({
                "maps": m, "tag_dim": int(d), "tag_channels": group[0]["tag_channels"], "seeds": [r["seed"] for r in group],
                "AP_mean": statistics.mean(aps), "AP_std": statistics.stdev(aps) if len(aps) > 1 else 0.0,
                "AP_per_seed": aps, "AR_mean": statistics.mean(r["AR"] for r in group),
                "params_m": group[0]["params_m"], "gmacs": group[0]["gmacs"],
                "net_ms": statistics.median(r["net_ms"] for r in group),
                "group_ms": statistics.median(r["group_ms"] for r in group)})
    teacher_rows: list[dict[str, Any]] = []
    if teacher is not None:
        log(f"teacher tag reductions: {teacher}")
        teacher_rows, pca = teacher_reduction_rows(
            load_model_spec(teacher, "teacher"), cfg.data.root, split=val_split, fit_split=cfg.data.train_split,
            fit_images=fit_images, input_size=int(cfg.data.input_size), dims=dims, limit=limit)
        teacher_rows = [{**r, "explained_variance_cumulative": float(pca.explained[:int(r["tag_channels"])].sum())}
                        if r["row"].startswith("PCA") else r for r in teacher_rows]
    write_report(rows, per_run, out, teacher_rows=teacher_rows, recipe=str(recipe), overrides=list(overrides),
                 decode=decode, teacher=teacher)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| tag maps T | D | tag channels T·D | AP mean ± std | AP per seed | AR | params M | GMACs | network ms | "
             "grouping ms |", "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = "J (per joint)" if r["maps"] == "per-joint" else "1 (shared)"
        lines.append(f"| {t} | {r['tag_dim']} | {r['tag_channels']} | {r['AP_mean']:.3f} ± {r['AP_std']:.3f} | "
                     + " / ".join(f"{a:.3f}" for a in r["AP_per_seed"])
                     + f" | {r['AR_mean']:.3f} | {r['params_m']:.3f} | {r['gmacs']:.3f} | {r['net_ms']:.1f} | "
                     f"{r['group_ms']:.1f} |")
    return "\n".join(lines)


def format_teacher_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| teacher tags | tag channels | AP | AP50 | AR |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['row']} | {r['tag_channels']} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['AR']:.3f} |" for r in rows]
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], teacher_rows: Sequence[dict[str, Any]] = ()) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for m, marker in (("per-joint", "o"), ("shared", "s")):
        sel = [r for r in rows if r["maps"] == m]
        if sel:
            ax.errorbar([r["tag_channels"] for r in sel], [r["AP_mean"] for r in sel], yerr=[r["AP_std"] for r in sel],
                        marker=marker, capsize=3, label=f"{m} maps (T = {'J' if m == 'per-joint' else 1})")
    pca = [r for r in teacher_rows if r["row"].startswith("PCA")]
    if pca:
        ax.plot([r["tag_channels"] for r in pca], [r["AP"] for r in pca], "^--", color="gray",
                label="teacher, its tags reduced by PCA to 1 x D")
    for r in teacher_rows:
        if not r["row"].startswith("PCA") and r["row"] != "first (1 x 1)":
            ax.scatter([r["tag_channels"]], [r["AP"]], marker="*", s=90, color="black", zorder=3)
            ax.annotate(r["row"].replace(" (1 x 1)", ""), (r["tag_channels"], r["AP"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("tag channels T·D (log)")
    ax.set_ylabel("AP (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def write_report(rows: Sequence[dict[str, Any]], per_run: Sequence[dict[str, Any]], out: Path,
                 teacher_rows: Sequence[dict[str, Any]] = (), **meta: Any) -> None:
    table = format_table(rows)
    if teacher_rows:
        table += "\n\n" + format_teacher_table(teacher_rows)
    write_text_atomic(out / "tag_sweep.md", table + "\n")
    write_json_atomic(out / "tag_sweep.json", {**meta, "rows": list(rows), "teacher_rows": list(teacher_rows),
                                               "runs": list(per_run)})
    write_bytes_atomic(out / "tag_sweep.png", plot(rows, teacher_rows))
    print(table)

