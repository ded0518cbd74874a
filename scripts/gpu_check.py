#!/usr/bin/env python
"""One prepared GPU check: teacher, students, training, caching, data loading and decoding on one GPU.

    python scripts/gpu_check.py --out gpu_check.json          # on a CUDA machine, about 6-8 minutes
    python scripts/gpu_check.py --dry-run --out /tmp/dry.json # every step at tiny sizes on the CPU
    python scripts/gpu_check.py --only student_budget --out gpu_budget.json   # the opt-in section, its own call

Prints one markdown table and writes one JSON (atomically). Every timing is a median over repeats after
warm-up, timed with CUDA events on a GPU (perf_counter on the CPU). Sections:

* env: torch, CUDA, GPU name, the peak bf16 dense TFLOP/s assumed (table below, or --peak-tflops);
* teacher higherhrnet_w32_512 forward at 512x512, batch 1/32/64 x fp32, bf16 autocast, bf16 +
  channels_last, and torch.compile (bf16 + channels_last, in a time-boxed subprocess; skipped with the
  reason when it fails or runs out of time): images/s and the fraction of the physical limit
  (true FLOPs per image x images/s / peak);
* students step_s, step_m, hrnet_w16, timm_mobilenetv3_large_100 at batch 32 bf16 + channels_last:
  images/s, and the teacher/student FLOPs ratio beside the student/teacher speed ratio;
* Trainer.train_step images/s at 512, batch 32, bf16: the teacher from scratch, step_s on ground truth,
  step_s distilled from an online W32 teacher (batches prefetched: GPU work only);
* the training data pipeline (augmentation + targets) at 512 with 8 and 16 DataLoader workers, beside
  the train steps, so the table shows whether GPU training is bound by data loading;
* distill cache-teacher images/s (W32-512, random weights, bf16) on the COCO mini set;
* decode ms/image at 512x704 with 10 people: GPU NMS/top-k + CPU matching against the CPU decoder,
  same people checked; Predictor end to end images/s on the COCO mini val images;
* a 3-minute GPU training of the synthetic teacher, then its AP on the synthetic val split;
* opt-in, `--only student_budget` (a second device call, about 6 minutes): the demo's `step_s` distillation (its
  data, shipped teacher, cache and KD recipe) at 4x the demo's epochs, time-boxed to 5 minutes of training, with
  the val AP every 20 epochs and the final AP on a held-out seed-7 split: whether the demo's 0.45 target is a
  matter of training steps (issue "Distillation that visibly works").

Targets (read off the table, never asserted): teacher bf16 batch 64 >= 1000 images/s on H100/H200;
step_s train step >= 5x the teacher's; GPU decode <= CPU decode with the same people.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.amp import autocast  # noqa: E402
from distill.atomic import write_json_atomic  # noqa: E402

TEACHER = "higherhrnet_w32_512"
STUDENTS = ["step_s", "step_m", "hrnet_w16", "timm_mobilenetv3_large_100"]
# Dense bf16 tensor-core peaks (vendor data sheets, TFLOP/s, no sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}
OPT_IN_SECTIONS = ("student_budget",)  # run only when named in --only (they do not fit one call with the rest)
DEFAULT_COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"


# ----------------------------------------------------------------------------------------- settings
class Sizes:
    """Full sizes on a GPU; tiny ones for --dry-run (CPU, seconds)."""

    def __init__(self, dry: bool) -> None:
        self.dry = dry
        self.input = 64 if dry else 512
        self.batches = [1, 2] if dry else [1, 32, 64]
        self.compile_batches = [2] if dry else [32, 64]
        self.student_batch = 2 if dry else 32
        self.train_batch = 2 if dry else 32
        self.warmup = 0 if dry else 10
        self.repeats = 1 if dry else 20
        self.train_steps = 1 if dry else 10
        self.workers = [0, 1] if dry else [8, 16]
        self.loader_batches = 2 if dry else 12
        self.decode_hw = (64, 88) if dry else (512, 704)
        self.decode_repeats = 2 if dry else 20
        self.compile_timeout = 0 if dry else 170
        self.train_minutes = 0.05 if dry else 3.0
        self.synth_train, self.synth_val, self.synth_size = (8, 2, 96) if dry else (1000, 200, 256)
        self.synth_input = 64 if dry else 256
        self.cache_limit = 4 if dry else 0
        # student_budget: the demo's step_s recipe at 4x its epochs (80 = 9,600 steps of batch 4), time-boxed
        self.budget_epochs, self.budget_eval_every = (2, 1) if dry else (80, 20)
        self.budget_minutes = 0.1 if dry else 5.0
        self.budget_data = (8, 2, 64, 64) if dry else (480, 60, 256, 256)  # train, val, image size, input size
        self.budget_heldout = 2 if dry else 200


# ------------------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> float:
    """Median ms of fn() after warm-up: CUDA events on a GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


def true_flops(model: torch.nn.Module, size: int) -> float:
    from distill.flops import count_macs

    return float(count_macs(model, size).flops_true)


def peak_tflops(name: str, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "--peak-tflops"
    for key, value in PEAK_BF16_TFLOPS.items():  # longest names first where they share a prefix
        if key in name:
            return value, f"data sheet ({key}, dense bf16)"
    return None, "unknown GPU: pass --peak-tflops"


# -------------------------------------------------------------------------------------- sections
def forward_row(model: torch.nn.Module, batch: int, mode: str, s: Sizes, device: torch.device) -> dict[str, Any]:
    amp = "none" if mode == "fp32" else "bf16"
    net = model.to(device).eval()
    if mode == "bf16+cl":
        net = net.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, s.input, s.input, device=device)
    if mode == "bf16+cl":
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.inference_mode(), autocast(device, amp):
            net(x)

    try:
        ms = timed(step, device, s.repeats, s.warmup)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"batch": batch, "mode": mode, "skipped": "out of GPU memory"}
    finally:
        model.to(memory_format=torch.contiguous_format)
    return {"batch": batch, "mode": mode, "ms": ms, "img_s": batch * 1e3 / ms}


def compile_subprocess(s: Sizes) -> list[dict[str, Any]]:
    """torch.compile of the teacher (bf16 + channels_last) in one child process, killed at the time box;
    each batch size it finished in time is a row, the others say why they are missing."""
    if s.dry or s.compile_timeout <= 0:
        return [{"batch": b, "mode": "compile", "skipped": "dry run (compile is GPU-only here)"}
                for b in s.compile_batches]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-child", ",".join(map(str, s.compile_batches))]
    reason = None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=s.compile_timeout, cwd=REPO)
        out, err = proc.stdout, proc.stderr
        if proc.returncode != 0:
            tail = (err or out).strip().splitlines()[-1:] or ["no output"]
            reason = f"failed: {tail[0][:200]}"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        reason = f"did not finish within {s.compile_timeout} s"
    done = {r["batch"]: r for r in (json.loads(ln) for ln in out.splitlines() if ln.startswith("{"))}
    return [done.get(b) or {"batch": b, "mode": "compile", "skipped": reason or "no result"}
            for b in s.compile_batches]


def compile_child(batches: list[int]) -> None:
    from teachers import build_teacher

    s = Sizes(dry=False)
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    model = build_teacher(TEACHER).to(device).eval().to(memory_format=torch.channels_last)
    net = torch.compile(model)
    for batch in batches:
        t0 = time.perf_counter()
        x = torch.randn(batch, 3, s.input, s.input, device=device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(device, "bf16"):
            net(x)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0

        def step() -> None:
            with torch.inference_mode(), autocast(device, "bf16"):
                net(x)

        ms = timed(step, device, s.repeats, s.warmup)
        print(json.dumps({"batch": batch, "mode": "compile", "ms": ms, "img_s": batch * 1e3 / ms,
                          "compile_s": compile_s}), flush=True)


def section_teacher(s: Sizes, device: torch.device, peak: float | None, report: dict[str, Any]) -> None:
    from teachers import build_teacher

    model = build_teacher(TEACHER)
    flops = true_flops(model, s.input)
    rows = []
    for b in s.batches:
        for mode in ("fp32", "bf16", "bf16+cl"):
            rows.append(forward_row(model, b, mode, s, device))
            _log(f"teacher b{b} {mode}: {rows[-1].get('img_s', 0):.1f} img/s")
    model.to("cpu")
    torch.cuda.empty_cache() if device.type == "cuda" else None
    for r in compile_subprocess(s):
        rows.append(r)
        _log(f"teacher b{r['batch']} compile: {r.get('img_s', r.get('skipped'))}")
    for r in rows:
        if "img_s" in r and peak:
            r["fraction_of_peak"] = flops * r["img_s"] / (peak * 1e12)
    report["teacher"] = {"name": TEACHER, "input": s.input, "true_gflops_per_image": flops / 1e9, "rows": rows}


def section_students(s: Sizes, device: torch.device, report: dict[str, Any]) -> None:
    from students import build_student
    from teachers import build_teacher

    teacher = build_teacher(TEACHER)
    t_flops = true_flops(teacher, s.input)
    t_row = forward_row(teacher, s.student_batch, "bf16+cl", s, device)
    teacher.to("cpu")
    rows = []
    for name in STUDENTS:
        model = build_student(name)
        flops = true_flops(model, s.input)
        r = forward_row(model, s.student_batch, "bf16+cl", s, device)
        model.to("cpu")
        r.update(name=name, true_gflops_per_image=flops / 1e9, flops_ratio=t_flops / flops,
                 speed_ratio=r["img_s"] / t_row["img_s"] if "img_s" in r and "img_s" in t_row else None)
        rows.append(r)
        _log(f"student {name}: {r.get('img_s', 0):.1f} img/s, FLOPs {r['flops_ratio']:.1f}x fewer")
    report["students"] = {"batch": s.student_batch, "teacher_img_s": t_row.get("img_s"), "rows": rows}


def _train_config(kind: str, name: str, data: Path, s: Sizes, device: torch.device, work: Path,
                  teacher_weights: Path | None = None, workers: int = 0) -> Any:
    from distill.config import load_config

    over = [f"model.kind={kind}", f"model.name={name}", f"data.root={data}", f"data.input_size={s.input}",
            f"data.workers={workers}", "optim.epochs=1", f"optim.batch_size={s.train_batch}",
            f"train.out={work / f'train_{kind}_{name}_{int(teacher_weights is not None)}'}", "train.eval_every=0",
            "train.tensorboard=false", f"train.device={device.type}", "train.amp=bf16",
            f"train.channels_last={str(device.type == 'cuda').lower()}", "loss.push_factor=1e-2",
            "loss.pull_factor=1e-2"]
    if kind == "teacher":
        over.append("model.init=kaiming")
    if teacher_weights is not None:
        over += [f"teacher.name={TEACHER}", f"teacher.weights={teacher_weights}", "teacher.mode=online",
                 "loss.alpha=0.5", "loss.kd_type=softmax", "loss.kd_temperature=0.1"]
    return load_config(None, over)


def section_train(s: Sizes, device: torch.device, data: Path, work: Path, report: dict[str, Any]) -> None:
    from distill.train import Trainer
    from teachers import build_teacher

    teacher_weights = work / "w32_random.pt"  # speed does not depend on the weights' values
    torch.save(build_teacher(TEACHER).state_dict(), teacher_weights)
    rows = []
    for label, kind, name, kd in [("teacher W32 from scratch", "teacher", TEACHER, False),
                                  ("step_s ground truth", "student", "step_s", False),
                                  ("step_s KD, online W32", "student", "step_s", True)]:
        trainer = Trainer(_train_config(kind, name, data, s, device, work, teacher_weights if kd else None),
                          resume=False)
        batches = []
        for batch in trainer.loader:
            batches.append(batch)
            if len(batches) >= 2:
                break
        i = iter(range(10**9))
        ms = timed(lambda: trainer.train_step(batches[next(i) % len(batches)]), device, s.train_steps,
                   max(1, s.warmup // 4))
        rows.append({"row": label, "ms": ms, "img_s": s.train_batch * 1e3 / ms})
        _log(f"train step {label}: {rows[-1]['img_s']:.1f} img/s")
        del trainer, batches
        torch.cuda.empty_cache() if device.type == "cuda" else None
    teacher_ips = rows[0]["img_s"]
    for r in rows:
        r["vs_teacher"] = r["img_s"] / teacher_ips
    report["train_step"] = {"input": s.input, "batch": s.train_batch, "amp": "bf16", "rows": rows}


def section_data(s: Sizes, data: Path, report: dict[str, Any]) -> None:
    from distill.codec.targets import TargetConfig
    from distill.data.coco import CocoKeypointDataset

    ds = CocoKeypointDataset(data, "train2017", input_size=s.input, output_sizes=[s.input // 4, s.input // 2],
                             target_config=TargetConfig(), seed=0)
    rows = []
    for workers in s.workers:
        n = s.loader_batches * s.train_batch
        sampler = [i % len(ds) for i in range(n)]
        loader = torch.utils.data.DataLoader(ds, batch_size=s.train_batch, sampler=sampler, num_workers=workers,
                                             drop_last=True)
        it = iter(loader)
        next(it)  # workers started, first batch out: then time the steady state
        t0 = time.perf_counter()
        count = 0
        for batch in it:
            count += int(batch[0].shape[0])
        wall = time.perf_counter() - t0
        rows.append({"workers": workers, "img_s": count / wall if wall > 0 else float("nan")})
        _log(f"data pipeline {workers} workers: {rows[-1]['img_s']:.1f} img/s")
    report["data_pipeline"] = {"input": s.input, "cpus": os.cpu_count(), "rows": rows}


def section_cache(s: Sizes, device: torch.device, data: Path, work: Path, report: dict[str, Any]) -> None:
    from distill.data.coco import CocoKeypointDataset
    from distill.teacher_cache import build_store, weights_identity
    from teachers import build_teacher, get_teacher_config

    model = build_teacher(TEACHER).eval()
    ds = CocoKeypointDataset(data, "train2017", input_size=s.input, augment=False)
    if s.cache_limit:
        ds.ids = ds.ids[: s.cache_limit]
    t0 = time.perf_counter()
    summary = build_store(work / "cache", model, ds, teacher_cfg=get_teacher_config(TEACHER),
                          weights=weights_identity(model, None, random_init=True, seed=0), input_size=s.input, device=device,
                          batch_size=8, amp="bf16", workers=0 if s.dry else 8, show_progress=False)
    wall = time.perf_counter() - t0
    model.to("cpu")
    report["cache_teacher"] = {"images": summary.images_total, "seconds": wall,
                               "img_s": summary.images_total / wall, "mib_per_image":
                               summary.store_bytes / 2**20 / max(1, summary.images_total)}
    _log(f"cache-teacher: {report['cache_teacher']['img_s']:.1f} img/s")


def section_decode(s: Sizes, device: torch.device, data: Path, report: dict[str, Any]) -> None:
    from distill.codec.decode import DecodeParams, decode
    sys.path.insert(0, str(REPO / "tests"))  # the fake maps are test code
    from fake_maps import fake_outputs
    from distill.predict import Predictor, evaluate_model
    from teachers import build_teacher

    h, w = s.decode_hw
    heat, tags = fake_outputs(h, w, 10, seed=0)
    cpu_ms = timed(lambda: decode(heat, tags, DecodeParams(ties="index", topk="numpy")), torch.device("cpu"), s.decode_repeats, 1)
    want = decode(heat, tags, DecodeParams(ties="index", topk="numpy"))
    heat_d, tags_d = torch.from_numpy(heat).to(device), torch.from_numpy(tags).to(device)
    dev_ms = timed(lambda: decode(heat_d, tags_d, DecodeParams(ties="index", topk="torch")), device, s.decode_repeats, 1)
    got = decode(heat_d, tags_d, DecodeParams(ties="index", topk="torch"))
    same = len(want) == len(got) and all(np.array_equal(a.people, b.people) and np.array_equal(a.scores, b.scores)
                                         for a, b in zip(want, got))
    people = int(want[0].people.shape[0])
    _log(f"decode {h}x{w}: cpu {cpu_ms:.1f} ms, {device.type} top-k {dev_ms:.1f} ms, same people {same}")

    model = build_teacher(TEACHER).eval()
    predictor = Predictor(model, input_size=s.input, device=device, channels_last=device.type == "cuda",
                          autocast_dtype=torch.bfloat16 if device.type == "cuda" else None)
    limit = 4 if s.dry else None
    evaluate_model(predictor, data, "val2017", limit=2, show_progress=False)  # warm-up (cuDNN, allocator)
    t0 = time.perf_counter()
    evaluate_model(predictor, data, "val2017", limit=limit, show_progress=False)
    wall = time.perf_counter() - t0
    from distill.data.coco import CocoKeypointDataset

    n = len(CocoKeypointDataset(data, "val2017", augment=False, remove_images_without_annotations=False))
    n = min(n, limit) if limit else n
    model.to("cpu")
    report["decode"] = {"map_hw": [h, w], "people": people, "cpu_ms": cpu_ms, "device_topk_ms": dev_ms,
                        "same_people": same, "predictor_images": n, "predictor_img_s": n / wall,
                        "predictor_setting": "W32-512 random weights, flip test, bf16 + channels_last on GPU, "
                                             "batch 1, includes image reading and COCO eval"}


def section_synthetic_training(s: Sizes, device: torch.device, work: Path, report: dict[str, Any]) -> None:
    from distill.config import load_config
    from distill.data.synthetic import generate_dataset
    from distill.train import Trainer

    data = work / "synth"
    t0 = time.perf_counter()
    generate_dataset(data, seed=0, num_train=s.synth_train, num_val=s.synth_val, image_size=s.synth_size,
                     progress=False)
    gen_s = time.perf_counter() - t0
    cfg = load_config(REPO / "configs" / "train" / "synth_teacher.yaml", [
        f"data.root={data}", f"data.input_size={s.synth_input}", f"data.workers={0 if s.dry else 8}",
        f"train.out={work / 'synth_teacher'}", "train.eval_every=0", "train.tensorboard=false",
        f"train.device={device.type}", "train.amp=bf16", f"train.max_minutes={s.train_minutes}",
        f"optim.batch_size={2 if s.dry else 32}", "optim.epochs=100"])
    trainer = Trainer(cfg, resume=False)
    result = trainer.fit()
    stats = trainer.evaluate()
    report["synthetic_training"] = {"minutes": s.train_minutes, "steps": result["steps"],
                                    "img_s": result["images_per_second"], "AP": stats["AP"],
                                    "AP50": stats["AP50"], "val_images": s.synth_val, "dataset_seed": 0,
                                    "generate_seconds": gen_s, "config": cfg.to_dict()}
    _log(f"synthetic teacher, {s.train_minutes} min: {result['steps']} steps, AP {stats['AP']:.3f}")


def section_student_budget(s: Sizes, device: torch.device, work: Path, report: dict[str, Any]) -> None:
    """Is the demo's `step_s` target (AP >= 0.45) a matter of steps? The demo's data, shipped teacher, cache and
    KD recipe, at 4x the demo's epochs on the GPU, scored on the demo's val split as the training goes and at
    the end on a held-out seed-7 split. Not in the default run (it would not fit one device call with the rest):
    `--only student_budget`."""
    from dataclasses import replace as dc_replace

    from distill.config import TeacherSection
    from distill.data.synthetic import ensure_dataset
    from distill.demo import STUDENT_RECIPES, TEACHER, DemoSettings, _cache_teacher, _run_config
    from distill.predict import Predictor, evaluate_model
    from distill.codec.decode import decode_mode
    from teachers.pretrained import shipped_teacher
    from distill.train import Trainer

    n_train, n_val, image_size, input_size = s.budget_data
    demo = DemoSettings(out=str(work / "demo"), train_images=n_train, val_images=n_val, image_size=image_size,
                        input_size=input_size, workers=0 if s.dry else 8, device=device.type,
                        amp="none" if s.dry else "bf16", batch_size=2 if s.dry else 32)
    ensure_dataset(work / "demo" / "data", seed=demo.seed, num_train=n_train, num_val=n_val, image_size=image_size,
                   progress=False)
    heldout = work / "heldout_seed7"
    ensure_dataset(heldout, seed=7, num_train=1, num_val=s.budget_heldout, image_size=image_size, progress=False)
    shipped = shipped_teacher(TEACHER)
    t0 = time.perf_counter()
    _cache_teacher(demo, shipped.weights, work / "demo" / "teacher_cache")
    cache_s = time.perf_counter() - t0
    teacher = TeacherSection(name=TEACHER, weights=str(shipped.weights), mode="cached",
                             store=str(work / "demo" / "teacher_cache"))
    cfg = _run_config(demo, "step_s", STUDENT_RECIPES["step_s"], s.budget_epochs, teacher)
    cfg = dc_replace(cfg, train=dc_replace(cfg.train, eval_every=s.budget_eval_every, tensorboard=False,
                                           max_minutes=s.budget_minutes, channels_last=not s.dry))
    trainer = Trainer(cfg, resume=False)
    result = trainer.fit()
    curve = [json.loads(f.read_text()) for f in sorted(trainer.out.glob("eval_epoch*.json"))]
    predictor = Predictor(trainer.final_model.eval(), trainer.dataset.spec, input_size=input_size, flip=True, device=device,
                          **decode_mode("official"))
    held = evaluate_model(predictor, heldout, "val2017", show_progress=False)
    report["student_budget"] = {
        "epochs": s.budget_epochs, "demo_epochs": 20, "steps": result["steps"], "minutes_cap": s.budget_minutes,
        "train_seconds": result["train_seconds"], "img_s": result["images_per_second"], "cache_seconds": cache_s,
        "val_curve": [{"epoch": c.get("epoch"), "step": c.get("step"), "AP": c.get("AP")} for c in curve],
        "val_AP": curve[-1]["AP"] if curve else None, "heldout_seed7_AP": held["AP"],
        "teacher_sha256": shipped.record["sha256"], "config": cfg.to_dict()}
    _log(f"step_s at {s.budget_epochs} epochs: {result['steps']} steps, val AP "
         f"{report['student_budget']['val_AP']}, held-out AP {held['AP']:.3f}")


# -------------------------------------------------------------------------------------------- report
def _log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _f(x: Any, fmt: str = ".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt)


def table(report: dict[str, Any]) -> str:
    env = report["env"]
    lines = [f"GPU check {report['date']}: {env['device_name']}, torch {env['torch']}, CUDA {env['cuda']}, "
             f"peak bf16 {_f(env['peak_bf16_tflops'], '.0f')} TFLOP/s ({env['peak_source']})"
             + (" - DRY RUN (tiny sizes, CPU)" if report["dry_run"] else ""), "",
             "| section | setting | ms | images/s | note |", "|---|---|---:|---:|---|"]
    t = report.get("teacher")
    if t:
        for r in t["rows"]:
            note = r.get("skipped") or (f"{100 * r['fraction_of_peak']:.1f}% of peak" if "fraction_of_peak" in r else "")
            if "compile_s" in r:
                note += f", compiled in {r['compile_s']:.0f} s"
            lines.append(f"| teacher {t['name']} ({t['true_gflops_per_image']:.1f} true GFLOPs) | b{r['batch']} "
                         f"{r['mode']} | {_f(r.get('ms'))} | {_f(r.get('img_s'))} | {note} |")
    st = report.get("students")
    if st:
        for r in st["rows"]:
            lines.append(f"| student {r['name']} | b{st['batch']} bf16+cl | {_f(r.get('ms'))} | {_f(r.get('img_s'))} | "
                         f"{_f(r['flops_ratio'])}x fewer FLOPs, {_f(r.get('speed_ratio'))}x faster |")
    tr = report.get("train_step")
    if tr:
        for r in tr["rows"]:
            lines.append(f"| train_step {tr['input']} b{tr['batch']} bf16 | {r['row']} | {_f(r['ms'])} | "
                         f"{_f(r['img_s'])} | {_f(r['vs_teacher'], '.2f')}x teacher |")
    dp = report.get("data_pipeline")
    if dp:
        for r in dp["rows"]:
            lines.append(f"| data pipeline {dp['input']} ({dp['cpus']} CPUs) | {r['workers']} workers | - | "
                         f"{_f(r['img_s'])} | augmentation + targets |")
    c = report.get("cache_teacher")
    if c:
        lines.append(f"| cache-teacher W32 bf16 | {c['images']} COCO mini images | - | {_f(c['img_s'])} | "
                     f"{c['mib_per_image']:.2f} MiB/image |")
    d = report.get("decode")
    if d:
        hw = "x".join(map(str, d["map_hw"]))
        lines.append(f"| decode {hw}, 10 people drawn | CPU (numpy) | {_f(d['cpu_ms'])} | - | "
                     f"{d['people']} people decoded |")
        lines.append(f"| decode {hw}, 10 people drawn | {report['env']['device']} top-k + CPU matching | "
                     f"{_f(d['device_topk_ms'])} | - | same people: {d['same_people']} |")
        lines.append(f"| Predictor end to end | {d['predictor_images']} COCO mini val images | - | "
                     f"{_f(d['predictor_img_s'])} | {d['predictor_setting']} |")
    sy = report.get("synthetic_training")
    if sy:
        lines.append(f"| synthetic teacher training | {sy['minutes']} min, {sy['steps']} steps | - | {_f(sy['img_s'])} | "
                     f"val AP {sy['AP']:.3f} (seed {sy['dataset_seed']}, {sy['val_images']} images) |")
    sb = report.get("student_budget")
    if sb:
        curve = ", ".join(f"{c['step']}: {c['AP']:.3f}" for c in sb["val_curve"] if c.get("AP") is not None)
        lines.append(f"| step_s, the demo's recipe at {sb['epochs']} epochs (demo: {sb['demo_epochs']}) | "
                     f"{sb['steps']} steps | - | {_f(sb['img_s'])} | val AP by step {curve}; held-out (seed 7) AP "
                     f"{sb['heldout_seed7_AP']:.3f} |")
    for name, err in report.get("errors", {}).items():
        lines.append(f"| {name} | FAILED | - | - | {err} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="every step at tiny sizes on the CPU (seconds)")
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON report (written atomically)")
    p.add_argument("--coco-mini", type=Path, default=DEFAULT_COCO_MINI,
                   help="COCO-format root for caching, data loading and Predictor timing (default ../shared's "
                        "coco-mini; a synthetic set when absent)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of the GPU")
    p.add_argument("--only", nargs="+", default=None,
                   choices=["teacher", "students", "train", "data", "cache", "decode", "synthetic",
                            "student_budget"],
                   help="run these sections only; student_budget (5 min on a GPU) runs only when named here")
    p.add_argument("--compile-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compile_child is not None:
        compile_child([int(b) for b in args.compile_child.split(",")])
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; run with --dry-run to check the script on the CPU")
    args.out.parent.mkdir(parents=True, exist_ok=True)  # fail now, not after minutes of measuring
    s = Sizes(args.dry_run)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    peak, source = peak_tflops(name, args.peak_tflops)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "dry_run": args.dry_run,
        "env": {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device.type, "device_name": name,
                "peak_bf16_tflops": peak, "peak_source": source, "cpus": os.cpu_count()},
        "errors": {},
    }
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        coco = args.coco_mini
        if not (coco / "annotations" / "person_keypoints_train2017.json").is_file():
            from distill.data.synthetic import generate_dataset

            _log(f"{coco} not found: using a synthetic COCO-format set instead")
            coco = work / "coco_stand_in"
            generate_dataset(coco, seed=1, num_train=8 if s.dry else 80, num_val=2 if s.dry else 40,
                             image_size=96 if s.dry else 512, progress=False)
        report["env"]["coco_data"] = str(coco)
        sections: list[tuple[str, Callable[[], None]]] = [
            ("teacher", lambda: section_teacher(s, device, peak, report)),
            ("students", lambda: section_students(s, device, report)),
            ("train", lambda: section_train(s, device, coco, work, report)),
            ("data", lambda: section_data(s, coco, report)),
            ("cache", lambda: section_cache(s, device, coco, work, report)),
            ("decode", lambda: section_decode(s, device, coco, report)),
            ("synthetic", lambda: section_synthetic_training(s, device, work, report)),
            ("student_budget", lambda: section_student_budget(s, device, work, report)),
        ]
        for key, fn in sections:
            if (args.only and key not in args.only) or (not args.only and key in OPT_IN_SECTIONS):
                continue
            t0 = time.perf_counter()
            try:
                fn()
            except Exception as exc:  # one broken section must not lose the others' numbers
                traceback.print_exc()
                report["errors"][key] = f"{type(exc).__name__}: {str(exc)[:300]}"
            report.setdefault("section_seconds", {})[key] = time.perf_counter() - t0
            write_json_atomic(args.out, report, indent=2)  # partial results survive a later crash
    report["total_seconds"] = time.perf_counter() - t_start
    write_json_atomic(args.out, report, indent=2)
    print(table(report))
    print(f"\nwrote {args.out} ({report['total_seconds']:.0f} s)")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
