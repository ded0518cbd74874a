"""`distill demo`: the whole product on the embedded synthetic dataset, end to end.

Stages, each reused when it already finished (a marker in OUT/stages/), so a rerun only does what is
missing and an interrupted training resumes from its checkpoint:

 1. data      `distill synth`: a COCO-format multi-person dataset;
 2. teacher   the small HigherHRNet shipped with the project (teachers/pretrained/, float16, hash-checked),
              loaded frozen as a user loads official weights; `--train-teacher` trains one from scratch;
 3. cache     the teacher's outputs on the train split (float16 store, warped per augmentation);
 4. students  a 17-tag and a 1-tag step student distilled from the cache with one budget; on a CPU with
              two or more cores they train side by side, one process each with half the cores (two
              1-thread runs do 1.54x the images per second of one 2-thread run: scripts/bench_demo_parallel.py);
 5. bench     AP, params, GMACs, latency of all three -> results.md/csv, flops_vs_ap.png, overlays;
 6. tags      teacher 17 tag maps vs one reduced map (first/mean/pca), students 17 vs 1 tag.

Everything lands in OUT/report/. The whole budget goes to distillation (the teacher is shipped);
defaults are sized for 15 minutes on a 2-core CPU; a GPU is used when present.
"""
from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import torch

from distill.amp import AmpError, resolve_training_amp
from distill.atomic import write_json_atomic, write_text_atomic
from distill.bench import CSV_NAME, parse_models, run_bench, write_report
from distill.evaluate import STAT_NAMES
from distill.compare_tags import compare_tags
from distill.config import RunConfig, TeacherSection, load_config
from distill.data.coco import CocoKeypointDataset
from distill.data.synthetic import ensure_dataset
from distill.models import build_model, load_weights, trained_teacher_config
from distill.progress import set_bars
from distill.registry import configs_root
from distill.teacher_cache import build_store, weights_identity
from distill.train import MODEL_FILE, train
from teachers.pretrained import shipped_teacher

TEACHER = "higherhrnet_w16_synth"
# Student epochs (480 images each: 120 steps at the recipes' batch 4 since session 22, 60 before; one CPU thread
# runs as many images/s at either batch) that fit the 15-minute budget on a 2-core CPU, side by side, sized for the slower
# of the two CPUs measured: bf16 1260 steps took 10.7-11.0 min on an AMD EPYC (session 16) but 15.6-15.9 min on an
# Intel Xeon with AMX (session 17, ~10.3 images/s each; the whole demo 18.1 min), so 900 steps there (the other
# stages take ~2.3 min); fp32 in the same ratio (bf16 + channels_last is 1.6x the images/s of the whole loop).
# Session 24: with the glibc memory reuse (distill/allocator.py) and the KD term off after the first lr drop
# (kd_until 2/3 in the recipes), 15 bf16 epochs took 8.7 min side by side on the Intel Xeon and the whole demo 10.4
# min; 20 epochs (2,400 steps): 13.8 min from a fresh clone there. fp32 unchanged (not re-measured).
STUDENT_EPOCHS = {"bf16": 20, "none": 10}
STUDENTS = ("step_s", "step_s_1tag")  # 17 per-joint tag maps, one shared tag map


@dataclass(frozen=True)
class DemoSettings:
    """The demo's budget; the defaults are sized for a 2-core CPU."""

    out: str = "runs/demo"
    seed: int = 0
    train_images: int = 480
    val_images: int = 60
    image_size: int = 256
    input_size: int = 256
    teacher_epochs: int = 14
    # None = sized to the 15-minute budget for the precision the students train in (STUDENT_EPOCHS).
    student_epochs: int | None = None
    batch_size: int = 8               # the teacher's training (--train-teacher) and caching batch
    # The students' batch: None = their recipes' own (4 since session 22: +0.037 AP at equal images on 3 seeds,
    # docs/learning.md).
    student_batch_size: int | None = None
    workers: int = 2
    device: str = "auto"
    # Students' training precision: "auto" = bf16 autocast + channels_last on a CPU that computes bf16 in
    # hardware (~1.8x the steps per minute; the accuracy check is in docs/learning.md), else fp32.
    amp: str = "auto"
    # False: load the shipped pretrained teacher; True: train one from scratch (teacher_epochs).
    train_teacher: bool = False
    # Students side by side (one process each, the cores split between them): None = on a CPU with >= 2 cores.
    parallel_students: bool | None = None


# The recipes are the config files' (loss, optimiser, schedule, model init); the demo sets only paths,
# budget and device. The students distil from the cached teacher (mode and store set here).
CONFIGS = configs_root() / "train"
TEACHER_RECIPE = CONFIGS / "synth_teacher.yaml"
STUDENT_RECIPES = {"step_s": CONFIGS / "synth_step_s_kd.yaml", "step_s_1tag": CONFIGS / "synth_step_s_1tag_kd.yaml"}


def _overrides(s: DemoSettings, name: str, epochs: int, teacher: TeacherSection | None = None,
               threads: int = 0, workers: int | None = None) -> list[str]:
    """`teacher` given: a student distilled from it, with the student batch size (None: its recipe's)."""
    out = Path(s.out)
    batch = s.batch_size if teacher is None else s.student_batch_size
    over = [f"data.root={out / 'data'}", f"data.input_size={s.input_size}",
            f"data.workers={s.workers if workers is None else workers}",
            f"optim.epochs={epochs}", *([f"optim.batch_size={batch}"] if batch else []), f"train.out={out / name}",
            f"train.seed={s.seed}", f"train.device={s.device}", "train.eval_every=0", "train.ckpt_every=50",
            "train.tensorboard=true", f"train.amp={s.amp}", f"train.channels_last={str(s.amp == 'bf16').lower()}"]
    if threads:
        over.append(f"train.threads={threads}")
    if teacher is not None:
        over += [f"teacher.name={teacher.name}", f"teacher.weights={teacher.weights}", f"teacher.mode={teacher.mode}",
                 f"teacher.store={teacher.store}"]
    return over


def _run_config(s: DemoSettings, name: str, recipe: Path, epochs: int, teacher: TeacherSection | None = None
                ) -> RunConfig:
    return load_config(recipe, _overrides(s, name, epochs, teacher))


def _train_job(recipe: str, overrides: list[str]) -> None:
    """One student's training in a process of its own (top level: it is pickled to a spawned process)."""
    set_bars(False)
    train(load_config(recipe, overrides))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Stages:
    """Runs named stages once; a finished stage leaves OUT/stages/NAME.json with its wall time."""

    def __init__(self, out: Path, settings: DemoSettings, **identity: Any) -> None:
        self.dir = out / "stages"
        self.settings = {**asdict(settings), **identity}  # e.g. the shipped teacher's sha256
        self.walls: dict[str, float] = {}
        self.groups: dict[str, str] = {}  # stage -> the name of the group it ran in side by side

    def done(self, name: str) -> bool:
        """Finished with these settings (its wall time recorded); raises if made with other settings."""
        marker = self.dir / f"{name}.json"
        if not marker.exists():
            return False
        done = json.loads(marker.read_text())
        if done.get("settings") != self.settings:
            raise SystemExit(f"{marker}: this demo folder was made with other settings; use another --out "
                             "or delete the folder")
        self.walls[name] = float(done["seconds"])
        if done.get("group"):
            self.groups[name] = done["group"]
        print(f"== {name}: reused ({done['seconds']:.0f} s when it ran)", flush=True)
        return True

    def _finish(self, name: str, seconds: float, group: str | None = None) -> None:
        self.walls[name] = seconds
        if group:
            self.groups[name] = group
        write_json_atomic(self.dir / f"{name}.json", {"seconds": seconds, "settings": self.settings,
                                                      **({"group": group} if group else {})}, indent=2)
        print(f"== {name}: {seconds:.0f} s", flush=True)

    def run(self, name: str, fn: Callable[[], Any]) -> None:
        if self.done(name):
            return
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        fn()
        self._finish(name, time.perf_counter() - t0)

    def run_side_by_side(self, group: str, jobs: dict[str, tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
        """Run the unfinished `jobs` (stage -> picklable function and its arguments) at once, one spawned
        process each; each stage is marked finished as soon as its own process ends."""
        todo = {name: job for name, job in jobs.items() if not self.done(name)}
        if not todo:
            return
        print(f"== {', '.join(todo)} (side by side)", flush=True)
        t0 = time.perf_counter()
        ctx = get_context("spawn")
        procs = {name: ctx.Process(target=fn, args=args, name=name) for name, (fn, args) in todo.items()}
        for p in procs.values():
            p.start()
        try:
            while procs:
                for name, p in list(procs.items()):
                    if p.exitcode is None:
                        continue
                    del procs[name]
                    if p.exitcode != 0:
                        raise SystemExit(f"demo stage {name} failed (exit code {p.exitcode}; its error is printed "
                                         "above); rerun to resume it from its last checkpoint")
                    self._finish(name, time.perf_counter() - t0, group)
                time.sleep(0.2)
        finally:
            for p in procs.values():  # the others, when one failed or the demo was interrupted
                p.terminate()
                p.join()

    def total_seconds(self) -> float:
        """Wall time of the whole demo: stages that ran side by side count once, as their longest."""
        alone = sum(v for k, v in self.walls.items() if k not in self.groups)
        groups: dict[str, float] = {}
        for k, g in self.groups.items():
            groups[g] = max(groups.get(g, 0.0), self.walls[k])
        return alone + sum(groups.values())


def resolve_settings(s: DemoSettings) -> DemoSettings:
    """Fill the machine-dependent defaults (side by side, precision, student epochs) with concrete values, so
    the stages record what ran: a folder trained in fp32 is not reused for a bf16 run."""
    if s.parallel_students is None:
        s = replace(s, parallel_students=_device(s) == "cpu" and _cores() >= 2)
    try:
        s = replace(s, amp=resolve_training_amp(s.amp, _device(s)))
    except AmpError as exc:
        raise SystemExit(f"--amp: {exc}") from None
    if s.student_epochs is None:
        s = replace(s, student_epochs=STUDENT_EPOCHS.get(s.amp, STUDENT_EPOCHS["none"]))
    return s


def run_demo(s: DemoSettings) -> Path:
    s = resolve_settings(s)
    print(f"== students train in {'bf16 autocast + channels_last' if s.amp == 'bf16' else 'fp32'} "
          f"(--amp {s.amp}), {s.student_epochs} epochs", flush=True)
    out = Path(s.out)
    report = out / "report"
    shipped = None
    if not s.train_teacher:
        shipped = shipped_teacher(TEACHER)  # sha256-checked against its record
    # Stages made with another shipped teacher are not reused (the cache and students depend on it).
    stages = Stages(out, s, teacher_sha256=shipped.record["sha256"] if shipped else "trained here")
    cache = out / "teacher_cache"

    stages.run("data", lambda: ensure_dataset(out / "data", seed=s.seed, num_train=s.train_images,
                                              num_val=s.val_images, image_size=s.image_size))
    if s.train_teacher:
        teacher_weights = out / "teacher" / MODEL_FILE
        stages.run("teacher", lambda: train(_run_config(s, "teacher", TEACHER_RECIPE, s.teacher_epochs)))
    else:
        assert shipped is not None
        teacher_weights = shipped.weights
        print(f"== teacher: shipped {shipped.weights.name} (sha256 {shipped.record['sha256'][:12]}..., "
              f"AP {shipped.record['headline']['AP']:.3f} on {shipped.record['headline']['split']})", flush=True)
    stages.run("cache", lambda: _cache_teacher(s, teacher_weights, cache))
    teacher_section = TeacherSection(name=TEACHER, weights=str(teacher_weights), mode="cached", store=str(cache))
    if s.parallel_students:
        threads = max(1, _cores() // len(STUDENTS))
        workers = min(s.workers, 1)  # one loader process per student: both mains and loaders share the cores
        stages.run_side_by_side("students", {f"student_{st}": (_train_job, (str(STUDENT_RECIPES[st]), _overrides(
            s, st, s.student_epochs, teacher_section, threads=threads, workers=workers))) for st in STUDENTS})
    else:
        for student in STUDENTS:
            stages.run(f"student_{student}", lambda student=student: train(_run_config(
                s, student, STUDENT_RECIPES[student], s.student_epochs, teacher_section)))
    stages.run("bench", lambda: _bench(s, teacher_weights, report))
    stages.run("tags", lambda: _compare_tags(s, teacher_weights, report))

    summary = _summary(out, report, stages)
    print(summary)
    print(f"\nReport: {report.resolve()}")
    return report


def _device(s: DemoSettings) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if s.device == "auto" else s.device


def _cache_teacher(s: DemoSettings, weights: Path, store: Path) -> None:
    cfg = trained_teacher_config(TEACHER, weights)
    model = load_weights(build_model("teacher", cfg), weights).eval()
    dataset = CocoKeypointDataset(Path(s.out) / "data", "train2017", input_size=s.input_size, augment=False)
    summary = build_store(store, model, dataset, teacher_cfg=cfg,
                          weights=weights_identity(model, weights, False, None), input_size=s.input_size,
                          device=_device(s), batch_size=s.batch_size)
    print(f"cached {summary.images_total} images, {summary.store_bytes / 2**20:.1f} MiB")


def _model_specs(s: DemoSettings, teacher_weights: Path) -> list[str]:
    out = Path(s.out)
    specs = [f"teacher={'teacher'}:{TEACHER}:{teacher_weights}"]
    for student in STUDENTS:
        specs.append(f"{student}=student:{student}:{out / student / 'model.pt'}")
    return specs


def _bench(s: DemoSettings, teacher_weights: Path, report: Path) -> None:
    rows = run_bench(parse_models(_model_specs(s, teacher_weights)), Path(s.out) / "data", "val2017",
                     input_size=s.input_size, repeats=5, overlays=4, device=_device(s))
    write_report(rows, report, title="aedistill demo: synthetic val2017")


# compare-tags row label of each benchmarked model
_TAG_ROW_LABELS = {"teacher": "teacher", "step_s": "17 tags", "step_s_1tag": "1 tag"}


def _bench_stats(s: DemoSettings, report: Path) -> dict[str, dict[str, float]]:
    """The bench stage's COCO stats (official decoding, flip, the whole val split at the demo's input size),
    by compare-tags label: the tags stage reuses them instead of evaluating the same models again."""
    with open(report / CSV_NAME, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        label = _TAG_ROW_LABELS.get(row["label"])
        if (label and row["decode"] == "official" and row["flip"] == "True" and int(row["input_size"]) == s.input_size
                and row["split"] == "val2017"):
            out[label] = {k: float(row[k]) for k in STAT_NAMES}
    return out


def _compare_tags(s: DemoSettings, teacher_weights: Path, report: Path) -> None:
    out = Path(s.out)
    compare_tags(f"teacher:{TEACHER}:{teacher_weights}", out / "data", "val2017", input_size=s.input_size,
                 fit_images=min(64, s.train_images),
                 students={"17 tags": f"student:step_s:{out / 'step_s' / 'model.pt'}",
                           "1 tag": f"student:step_s_1tag:{out / 'step_s_1tag' / 'model.pt'}"},
                 out=report, device=_device(s), known_stats=_bench_stats(s, report))


def _summary(out: Path, report: Path, stages: Stages) -> str:
    parts = ["# aedistill demo (synthetic dataset)", ""]
    for name in ("results.md", "compare_tags.md"):
        path = report / name
        if path.exists():
            parts += [path.read_text().strip(), ""]
    side = " (side by side)"
    parts.append("Stage wall times: " + ", ".join(f"{k} {v / 60:.1f} min{side if k in stages.groups else ''}"
                                                 for k, v in stages.walls.items())
                 + f"; total {stages.total_seconds() / 60:.1f} min")
    text = "\n".join(parts)
    write_text_atomic(report / "demo.md", text + "\n")
    return text
