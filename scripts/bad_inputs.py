#!/usr/bin/env python
"""Bad inputs and faults, run through the CLI the way a user meets them: one line per case.

Every case is a real `distill ...` command on a small valid workspace (a synthetic dataset, a tiny trained
teacher, its teacher store) with one thing broken. A case passes when the command

  - expected to fail: exits non-zero with exactly one message line, no Python traceback, and the message
    names what is wrong (`needle`);
  - expected to succeed (allowed-but-counted input, skipping asked for): exits 0 and says so (`needle`).

    python scripts/bad_inputs.py [--work DIR] [--only SUBSTRING] [--markdown]

Prints `| # | class | case | rc | first line of the message |` and a summary; exits 1 if any case fails
(a traceback, an exit 0 on a broken input, or a message that does not name the fault).
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
INPUT = "64"


@dataclass
class Case:
    klass: str
    name: str
    make: Callable[["Workspace"], list[str]]  # builds the broken input, returns the CLI arguments
    needle: str  # must appear in the message (or in the output, for expected successes)
    expect_ok: bool = False


class Workspace:
    """A valid dataset, a tiny trained teacher and its store; cases copy and break them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.model = root / "tiny" / "model.pt"
        self.store = root / "store"
        self.n = 0

    def setup(self) -> None:
        from distill.config import load_config
        from distill.data.synthetic import ensure_dataset
        from distill.train import train

        ensure_dataset(self.data, seed=3, num_train=4, num_val=2, image_size=96, progress=False)
        if not self.model.exists():
            train(load_config(None, ["model.kind=teacher", "model.name=tiny", f"data.root={self.data}",
                                     f"data.input_size={INPUT}", "data.workers=0", "optim.epochs=1",
                                     "optim.batch_size=2", f"train.out={self.model.parent}", "train.eval_every=0",
                                     "train.tensorboard=false", "train.threads=1"]))
        if not (self.store / "index.json").exists():
            _cli(["cache-teacher", "--teacher", "tiny", "--weights", str(self.model), "--data", str(self.data),
                  "--out", str(self.store), "--input-size", INPUT, "--workers", "0", "--no-progress"], check=True)

    def fresh(self, tag: str) -> Path:
        self.n += 1
        path = self.root / "cases" / f"{self.n:03d}_{tag}"
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def data_copy(self, tag: str) -> Path:
        out = self.fresh(tag) / "data"
        shutil.copytree(self.data, out)
        return out

    def edit_json(self, tag: str, change: Callable[[dict[str, Any]], None], split: str = "train2017") -> Path:
        root = self.data_copy(tag)
        path = root / "annotations" / f"person_keypoints_{split}.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
        return root

    def train_config(self, tag: str, root: Path | None = None, **sections: dict[str, Any]) -> Path:
        import yaml

        folder = self.fresh(tag)
        cfg = {"model": {"kind": "teacher", "name": "tiny"},
               "data": {"root": str(root or self.data), "input_size": int(INPUT), "workers": 0},
               "optim": {"epochs": 1, "batch_size": 2},
               "train": {"out": str(folder / "run"), "eval_every": 0, "tensorboard": False, "threads": 1}}
        for sec, values in sections.items():
            cfg.setdefault(sec, {}).update(values)
        path = folder / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def weights_copy(self, tag: str, change: Callable[[dict[str, Any]], None]) -> Path:
        import torch

        path = self.fresh(tag) / "model.pt"
        payload = torch.load(self.model, weights_only=True)
        change(payload)
        torch.save(payload, path)
        return path


def _cli(args: list[str], check: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode:
        raise SystemExit(f"setup failed: distill {' '.join(args)}\n{proc.stderr}")
    return proc


# ----------------------------------------------------------------------------------------------- cases
def _person_joint(data: dict[str, Any], value: list[float], ann: int = 0) -> None:
    a = [x for x in data["annotations"] if x.get("num_keypoints", 0) > 0][ann]
    j = next(k for k in range(len(a["keypoints"]) // 3) if a["keypoints"][3 * k + 2] > 0)
    a["keypoints"][3 * j: 3 * j + 3] = value
    a["num_keypoints"] = sum(1 for v in a["keypoints"][2::3] if v > 0)


def _train_on(ws: Workspace, tag: str, change: Callable[[dict[str, Any]], None]) -> list[str]:
    return ["train", str(ws.train_config(tag, ws.edit_json(tag, change)))]


def _set_first_person(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        next(a for a in d["annotations"] if a.get("num_keypoints", 0) > 0)[key] = value
    return change


def _category(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda d: change(d["categories"][0])


def _break_image(ws: Workspace, tag: str, how: str) -> Path:
    root = ws.data_copy(tag)
    jpg = sorted((root / "train2017").glob("*.jpg"))[1]
    raw = jpg.read_bytes()
    if how == "truncated":
        jpg.write_bytes(raw[: len(raw) // 2])
    elif how == "garbage":
        jpg.write_bytes(b"\x00" * 500)
    elif how == "missing":
        jpg.unlink()
    elif how == "png-named-jpg-of-other-size":
        import cv2

        cv2.imwrite(str(jpg), np.zeros((10, 12, 3), np.uint8))
    elif how == "corrupt-inside":
        mid = bytearray(raw)
        for k in range(len(raw) // 3, len(raw) // 3 + 200):
            mid[k] = 0xFF if k % 2 else 0x00
        jpg.write_bytes(bytes(mid))
    return root


def _train_set(ws: Workspace, tag: str, *sets: str) -> list[str]:
    return ["train", str(ws.train_config(tag)), *sum((["--set", s] for s in sets), [])]


def _resume_changed(ws: Workspace, tag: str, change: str) -> list[str]:
    cfg = ws.train_config(tag)
    _cli(["train", str(cfg), "--set", "train.max_steps=1"], check=True)
    return ["train", str(cfg), "--set", change]


def _file(ws: Workspace, tag: str) -> Path:
    path = ws.fresh(tag) / "a_file"
    path.write_text("x")
    return path


def _store_copy(ws: Workspace, tag: str, change: Callable[[Path], None]) -> Path:
    out = ws.fresh(tag) / "store"
    shutil.copytree(ws.store, out)
    change(out)
    return out


def _cached_train(ws: Workspace, tag: str, store: Path, data: Path | None = None) -> list[str]:
    cfg = ws.train_config(tag, data, model={"kind": "student", "name": "step_s"},
                          teacher={"name": "tiny", "weights": str(ws.model), "mode": "cached", "store": str(store)},
                          loss={"alpha": 0.5})
    return ["train", str(cfg)]


def _nan_into_store(store: Path) -> None:
    index = json.loads((store / "index.json").read_text())
    f = index["shards"]["0"]["files"][0]["name"]
    arr = np.load(store / f, mmap_mode="r+")
    arr[:50] = np.nan
    arr.flush()


def _truncate_shard(store: Path) -> None:
    index = json.loads((store / "index.json").read_text())
    p = store / index["shards"]["0"]["files"][1]["name"]
    p.write_bytes(p.read_bytes()[:-64])


def _other_dataset_same_ids(ws: Workspace, tag: str) -> Path:
    from distill.data.synthetic import ensure_dataset

    other = ws.fresh(tag) / "other"
    ensure_dataset(other, seed=99, num_train=4, num_val=2, image_size=96, progress=False)
    return other


def _nan_weights(p: dict[str, Any]) -> None:
    for v in p["state_dict"].values():
        if v.is_floating_point():
            v.fill_(float("nan"))


def _huge_weights(p: dict[str, Any]) -> None:
    k = next(k for k, v in p["state_dict"].items() if v.is_floating_point() and v.ndim == 4)
    p["state_dict"][k].fill_(float("inf"))


def _shape_mismatch(p: dict[str, Any]) -> None:
    import torch

    k = next(k for k, v in p["state_dict"].items() if v.ndim == 4)
    p["state_dict"][k] = torch.zeros(3, 3, 1, 1)


def _pickle_payload(ws: Workspace, tag: str) -> Path:
    path = ws.fresh(tag) / "evil.pt"
    import pickle

    class Evil:
        def __reduce__(self):  # would run `touch` if ever unpickled without weights_only
            return (subprocess.call, (["touch", str(path.parent / "PWNED")],))

    path.write_bytes(pickle.dumps({"state_dict": Evil()}))
    return path


def cases() -> list[Case]:
    m = lambda ws: f"teacher:tiny:{ws.model}"  # noqa: E731
    C = Case
    out: list[Case] = [
        # --- run config and CLI arguments -------------------------------------------------------------
        C("config", "negative lr", lambda ws: _train_set(ws, "lr", "optim.lr=-1"), "optim.lr = -1"),
        C("config", "lr NaN", lambda ws: _train_set(ws, "lrnan", "optim.lr=.nan"), "optim.lr"),
        C("config", "lr 1e6", lambda ws: _train_set(ws, "lrhuge", "optim.lr=1e6"), "optim.lr"),
        C("config", "input size not a multiple of 64", lambda ws: _train_set(ws, "in100", "data.input_size=100"),
          "multiple of 64"),
        C("config", "negative workers", lambda ws: _train_set(ws, "wk", "data.workers=-1"), "data.workers = -1"),
        C("config", "max_people 0", lambda ws: _train_set(ws, "mp", "data.max_people=0"), "data.max_people = 0"),
        C("config", "unknown kd_type", lambda ws: _train_set(ws, "kd", "loss.kd_type=kl"), "loss.kd_type"),
        C("config", "negative seed", lambda ws: _train_set(ws, "seed", "train.seed=-3"), "train.seed"),
        C("config", "epochs -1", lambda ws: _train_set(ws, "ep", "optim.epochs=-1"), "optim.epochs = -1"),
        C("config", "unknown key", lambda ws: _train_set(ws, "key", "optim.lrr=1"), "unknown field(s) 'optim.lrr'"),
        C("config", "number expected", lambda ws: _train_set(ws, "num", "optim.lr=abc"), "optim.lr"),
        C("config", "student num_deconvs 2", lambda ws: _train_set(
            ws, "nd", "model.kind=student", "model.name=step_s", "model.overrides={num_deconvs: 2}"),
          "field 'num_deconvs' must be 1"),
        C("config", "kd_outputs -1", lambda ws: _train_set(ws, "ko", "loss.kd_outputs=-1"), "loss.kd_outputs = -1"),
        C("config", "unknown teacher override", lambda ws: _train_set(ws, "to", "model.overrides={num_deconvs: 0}"),
          "unknown override(s) 'num_deconvs'"),
        C("config", "teacher override of the wrong type", lambda ws: _train_set(
            ws, "tt", "model.overrides={tag_dim: two}"), "tag_dim"),
        C("config", "unknown model name", lambda ws: _train_set(ws, "name", "model.name=nope"), "nope"),
        C("config", "model.weights missing", lambda ws: _train_set(ws, "mw", "model.weights=/nonexistent/w.pt"),
          "/nonexistent/w.pt"),
        C("config", "config file missing", lambda ws: ["train", str(ws.root / "nope.yaml")], "nope.yaml"),
        C("config", "config not YAML", lambda ws: ["train", str(_write(ws, "bad.yaml", "model: {kind: [\n"))],
          "bad.yaml"),
        C("config", "config is a list", lambda ws: ["train", str(_write(ws, "list.yaml", "- 1\n- 2\n"))], "list.yaml"),
        C("cli", "export --input-size 0", lambda ws: ["export", "--model", m(ws), "--onnx",
                                                      str(ws.fresh("ex") / "a.onnx"), "--input-size", "0"],
          "multiple of 64"),
        C("cli", "cache-teacher --input-size 100", lambda ws: ["cache-teacher", "--teacher", "tiny", "--weights",
                                                               str(ws.model), "--data", str(ws.data), "--out",
                                                               str(ws.fresh("ct") / "s"), "--input-size", "100"],
          "multiple of 64"),
        C("cli", "visualize --input-size 100", lambda ws: ["visualize", "--model", m(ws), "--input",
                                                           str(ws.data / "val2017"), "--out", str(ws.fresh("vi")),
                                                           "--input-size", "100"], "multiple of 64"),
        C("cli", "oracle --input-size 0", lambda ws: ["oracle", "--data", str(ws.data), "--input-size", "0"],
          "multiple of 64"),
        C("cli", "bench --input-size -64", lambda ws: ["bench", "--models", m(ws), "--data", str(ws.data),
                                                       "--input-size=-64", "--out", str(ws.fresh("be"))],
          "multiple of 64"),
        C("cli", "model spec with a bad kind", lambda ws: ["export", "--model", "robot:tiny", "--onnx",
                                                           str(ws.fresh("ek") / "a.onnx")], "robot"),
        # --- datasets ---------------------------------------------------------------------------------
        C("data", "visibility 5", lambda ws: _train_on(ws, "v5", lambda d: _person_joint(d, [10, 10, 5])),
          "visibility 5"),
        C("data", "visibility -1", lambda ws: _train_on(ws, "vm1", lambda d: _person_joint(d, [10, 10, -1])),
          "visibility -1"),
        C("data", "joint at x = 1e30", lambda ws: _train_on(ws, "x1e30", lambda d: _person_joint(d, [1e30, 10, 2])),
          "far outside"),
        C("data", "joint at x = -400", lambda ws: _train_on(ws, "xm400", lambda d: _person_joint(d, [-400, 10, 2])),
          "far outside"),
        C("data", "joint at x = -40 (allowed, counted)",
          lambda ws: _train_on(ws, "xm40", lambda d: _person_joint(d, [-40, 10, 2])), "lie outside their image",
          expect_ok=True),
        C("data", "num_keypoints 0 on a labelled person",
          lambda ws: _train_on(ws, "nk0", _set_first_person("num_keypoints", 0)), "'num_keypoints' is 0"),
        C("data", "num_keypoints negative", lambda ws: _train_on(ws, "nkm", _set_first_person("num_keypoints", -2)),
          "num_keypoints"),
        C("data", "keypoints too short", lambda ws: _train_on(ws, "short", _set_first_person("keypoints", [1, 2, 2])),
          "'keypoints' has 3 values"),
        C("data", "keypoints not numbers", lambda ws: _train_on(
            ws, "str", _set_first_person("keypoints", ["a"] * 51)), "finite numbers"),
        C("data", "repeated joint name", lambda ws: _train_on(
            ws, "rep", _category(lambda c: c["keypoints"].__setitem__(2, c["keypoints"][1]))), "more than once"),
        C("data", "flip pair names a missing joint", lambda ws: _train_on(
            ws, "flip", _category(lambda c: c["keypoints"].__setitem__(10, "right_wristt"))), "mirror"),
        C("data", "skeleton index out of range", lambda ws: _train_on(
            ws, "skel", _category(lambda c: c["skeleton"].append([1, 99]))), "skeleton"),
        C("data", "repeated category name", lambda ws: _train_on(ws, "catname", lambda d: d["categories"].append(
            {**d["categories"][0], "id": 7})), "category name 'person' appears more than once"),
        C("data", "duplicate image id", lambda ws: _train_on(
            ws, "dupimg", lambda d: d["images"].append(copy.deepcopy(d["images"][0]))), "image id 1 appears twice"),
        C("data", "annotation of an unknown image", lambda ws: _train_on(
            ws, "unkimg", _set_first_person("image_id", 123456)), "123456"),
        C("data", "image width 0", lambda ws: _train_on(ws, "w0", lambda d: d["images"][0].update(width=0)), "width"),
        C("data", "crowd without segmentation", lambda ws: _train_on(
            ws, "crowd", lambda d: d["annotations"][0].update(iscrowd=1, segmentation=None)), "segmentation"),
        C("data", "annotation file missing", lambda ws: ["train", str(ws.train_config("noann", ws.fresh("empty")))],
          "does not exist"),
        C("data", "annotation file not JSON", lambda ws: ["train", str(ws.train_config("notjson", _not_json(ws)))],
          "not valid JSON"),
        C("data", "top-level key missing", lambda ws: _train_on(ws, "nokey", lambda d: d.pop("categories")),
          "categories"),
        C("data", "truncated JPEG (worker)", lambda ws: ["train", str(ws.train_config(
            "trunc", _break_image(ws, "trunc", "truncated"), data={"workers": 2}))], "truncated JPEG"),
        C("data", "garbage image (worker)", lambda ws: ["train", str(ws.train_config(
            "garb", _break_image(ws, "garb", "garbage"), data={"workers": 2}))], "could not be decoded"),
        C("data", "image file missing", lambda ws: ["train", str(ws.train_config(
            "miss", _break_image(ws, "miss", "missing")))], "does not exist"),
        C("data", "image size differs from the json", lambda ws: ["train", str(ws.train_config(
            "size", _break_image(ws, "size", "png-named-jpg-of-other-size")))], "but the annotation file says"),
        C("data", "corrupt bytes inside a JPEG", lambda ws: ["train", str(ws.train_config(
            "inside", _break_image(ws, "inside", "corrupt-inside")))], "corrupt"),
        C("data", "bad image skipped when asked", lambda ws: ["train", str(ws.train_config(
            "skip", _break_image(ws, "skip", "truncated"), data={"skip_bad_images": True}))],
          "skipping unreadable image", expect_ok=True),
        C("data", "visualize a truncated JPEG", lambda ws: ["visualize", "--model", m(ws), "--input",
                                                            str(sorted((_break_image(ws, "vis", "truncated") /
                                                                        "train2017").glob("*.jpg"))[1]),
                                                            "--out", str(ws.fresh("visout")), "--input-size", INPUT],
          "truncated"),
        C("data", "val split with nobody to score", lambda ws: ["train", str(ws.train_config(
            "noval", ws.edit_json("noval", lambda d: d.update(images=[], annotations=[]), split="val2017"),
            train={"eval_every": 1}))], "nothing to score"),
        C("data", "oracle on an empty split", lambda ws: ["oracle", "--data", str(ws.edit_json(
            "orc", lambda d: d.update(images=[], annotations=[]), split="val2017")), "--input-size", INPUT],
          "nothing to score"),
        # --- unlabelled splits and pseudo-labels (docs/unlabelled.md) -------------------------------------
        C("unlabelled", "split without an image list", lambda ws: _unlabelled_train(ws, "nolist", None, []),
          "distill image-info --images"),
        C("unlabelled", "image list with width 0", lambda ws: _unlabelled_train(
            ws, "w0", lambda d: d["images"][0].update(width=0), []), "'width' must be a positive integer, got 0"),
        C("unlabelled", "pseudo-labels for other images", lambda ws: _unlabelled_train(
            ws, "pids", lambda d: None, [{"image_id": 1, "keypoints": [1.0, 1.0, 0.9] * 17, "score": 0.9}]),
          "none of its 1 results is for one of the 2 unlabelled images"),
        C("unlabelled", "image-info over a broken image", lambda ws: _image_info_broken(ws), "could not be decoded"),
        C("unlabelled", "predict journal of another model", lambda ws: _other_journal(ws, m(ws)),
          "an unfinished run with other settings"),
        # --- teacher stores ---------------------------------------------------------------------------
        C("store", "store of another dataset with the same ids",
          lambda ws: _cached_train(ws, "otherds", ws.store, _other_dataset_same_ids(ws, "otherds")), "dataset"),
        C("store", "NaN written into a shard", lambda ws: _cached_train(
            ws, "nanstore", _store_copy(ws, "nanstore", _nan_into_store)), "NaN/inf"),
        C("store", "truncated shard", lambda ws: _cached_train(
            ws, "truncstore", _store_copy(ws, "truncstore", _truncate_shard)), "truncated"),
        C("store", "store folder missing", lambda ws: _cached_train(ws, "nostore", ws.root / "no_store"),
          "not a teacher store"),
        C("store", "store of another input size", lambda ws: ["train", str(ws.train_config(
            "insize", None, model={"kind": "student", "name": "step_s"}, data={"input_size": 128},
            teacher={"name": "tiny", "weights": str(ws.model), "mode": "cached", "store": str(ws.store)},
            loss={"alpha": 0.5}))], "input"),
        C("store", "cache into a folder that is a file", lambda ws: [
            "cache-teacher", "--teacher", "tiny", "--weights", str(ws.model), "--data", str(ws.data), "--out",
            str(_file(ws, "ctfile")), "--input-size", INPUT], "a_file"),
        # --- checkpoints ------------------------------------------------------------------------------
        C("ckpt", "all-NaN weights to bench", lambda ws: [
            "bench", "--models", "teacher:tiny:" + str(ws.weights_copy("nanw", _nan_weights)), "--data", str(ws.data),
            "--input-size", INPUT, "--out", str(ws.fresh("bn"))], "NaN/inf"),
        C("ckpt", "inf weights to visualize", lambda ws: [
            "visualize", "--model", "teacher:tiny:" + str(ws.weights_copy("infw", _huge_weights)), "--input",
            str(ws.data / "val2017"), "--out", str(ws.fresh("vn")), "--input-size", INPUT], "NaN/inf"),
        C("ckpt", "shape mismatch", lambda ws: [
            "export", "--model", "teacher:tiny:" + str(ws.weights_copy("shape", _shape_mismatch)), "--onnx",
            str(ws.fresh("es") / "a.onnx")], "conv1.weight: file [3, 3, 1, 1] vs model"),
        C("ckpt", "pickle payload never runs", lambda ws: [
            "export", "--model", "teacher:tiny:" + str(_pickle_payload(ws, "evil")), "--onnx",
            str(ws.fresh("ev") / "a.onnx")], "evil.pt"),
        C("ckpt", "weights file missing", lambda ws: ["export", "--model", "teacher:tiny:/nonexistent/w.pt",
                                                      "--onnx", str(ws.fresh("em") / "a.onnx")], "/nonexistent/w.pt"),
        C("ckpt", "teacher weights missing", lambda ws: ["train", str(ws.train_config(
            "tw", None, model={"kind": "student", "name": "step_s"},
            teacher={"name": "tiny", "weights": "/nonexistent/t.pt"}, loss={"alpha": 0.5}))], "/nonexistent/t.pt"),
        C("ckpt", "resume with another lr", lambda ws: _resume_changed(ws, "rlr", "optim.lr=5e-4"), "optim.lr"),
        C("ckpt", "resume with another batch size", lambda ws: _resume_changed(ws, "rbs", "optim.batch_size=1"),
          "optim.batch_size"),
        C("ckpt", "resume with more epochs", lambda ws: _resume_changed(ws, "rep", "optim.epochs=3"), "optim.epochs"),
        C("ckpt", "garbage last.pt on resume", lambda ws: _garbage_last(ws, "glast", b"not a checkpoint"),
          "cannot be read as a training checkpoint"),
        C("ckpt", "tensor as last.pt on resume", lambda ws: _garbage_last(ws, "tlast", None),
          "not a training checkpoint"),
        C("ckpt", "loss overflows to inf", lambda ws: _train_set(ws, "div", "loss.pull_factor=1e38"), "loss is inf"),
        # --- file system ------------------------------------------------------------------------------
        C("fs", "train.out is a file", lambda ws: _train_set(ws, "outf", f"train.out={_file(ws, 'outf')}"),
          "is a file"),
        C("fs", "train.out under a file", lambda ws: _train_set(ws, "outuf", f"train.out={_file(ws, 'outuf')}/run"),
          "Not a directory"),
        C("fs", "train.out read-only", lambda ws: _train_set(ws, "ro", "train.out=/proc/aedistill_run"),
          "/proc/aedistill_run"),
        C("fs", "bench --out is a file", lambda ws: ["bench", "--models", m(ws), "--data", str(ws.data),
                                                     "--input-size", INPUT, "--out", str(_file(ws, "bo"))],
          "is a file"),
        C("fs", "export --onnx is a folder", lambda ws: ["export", "--model", m(ws), "--onnx", str(ws.fresh("eo"))],
          "is a folder"),
        C("fs", "visualize --out is a file", lambda ws: ["visualize", "--model", m(ws), "--input",
                                                         str(ws.data / "val2017"), "--out", str(_file(ws, "vo")),
                                                         "--input-size", INPUT], "is a file"),
        C("fs", "synth --out is a file", lambda ws: ["synth", "--out", str(_file(ws, "so")), "--train", "1",
                                                     "--val", "1"], "a_file"),
        C("fs", "oracle --results in a missing folder under a file", lambda ws: [
            "oracle", "--data", str(ws.data), "--input-size", INPUT, "--results", f"{_file(ws, 'or')}/r.json"],
          "a_file"),
    ]
    return out


def _unlabelled_train(ws: Workspace, tag: str, edit_list: Callable[[dict[str, Any]], None] | None,
                      pseudo: list[dict[str, Any]]) -> list[str]:
    """A copy of the data with split `extra2017` (the val images under other ids), its image list edited by
    `edit_list` (None: no list at all), and a pseudo-label run config on it."""
    from distill.data.unlabelled import make_image_info

    root = ws.data_copy(tag)
    shutil.copytree(root / "val2017", root / "extra2017")
    for k, path in enumerate(sorted((root / "extra2017").iterdir())):
        path.rename(path.with_name(f"{5000 + k}.jpg"))
    if edit_list is not None:
        doc = make_image_info(root / "extra2017", show_progress=False)
        edit_list(doc)
        (root / "annotations" / "image_info_extra2017.json").write_text(json.dumps(doc))
    results = root.parent / "pseudo.json"
    results.write_text(json.dumps(pseudo))
    cfg = ws.train_config(tag + "_cfg", root=root, data={"unlabelled_split": "extra2017", "unlabelled": "pseudo",
                                                         "pseudo_labels": str(results)})
    return ["train", str(cfg)]


def _image_info_broken(ws: Workspace) -> list[str]:
    folder = ws.fresh("iib") / "images"
    shutil.copytree(ws.data / "val2017", folder)
    (folder / "9.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return ["image-info", "--images", str(folder), "--out", str(folder.parent / "image_info.json")]


def _other_journal(ws: Workspace, model: str) -> list[str]:
    out = ws.fresh("jr") / "res.json"
    (out.parent / "res.json.partial.jsonl").write_text(json.dumps({"settings": {"model": "student:step_s:x.pt"}}) + "\n")
    return ["predict", "--model", model, "--input", str(ws.data / "val2017"), "--out", str(out), "--input-size", INPUT]


def _write(ws: Workspace, name: str, text: str) -> Path:
    path = ws.fresh(name.split(".")[0]) / name
    path.write_text(text)
    return path


def _not_json(ws: Workspace) -> Path:
    root = ws.data_copy("notjson")
    (root / "annotations" / "person_keypoints_train2017.json").write_text("{not json")
    return root


def _garbage_last(ws: Workspace, tag: str, content: bytes | None) -> list[str]:
    import torch

    cfg = ws.train_config(tag)
    run = cfg.parent / "run"
    run.mkdir()
    if content is None:
        torch.save(torch.zeros(2), run / "last.pt")
    else:
        (run / "last.pt").write_bytes(content)
    return ["train", str(cfg)]


# ------------------------------------------------------------------------------------------------ runner
def run_case(ws: Workspace, case: Case) -> tuple[bool, int, str, float]:
    t0 = time.perf_counter()
    try:
        args = case.make(ws)
    except (SystemExit, Exception) as exc:  # a broken case is reported, the list goes on
        return False, -1, f"case setup failed: {type(exc).__name__}: {exc}", 0.0
    proc = _cli(args)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error: " in ln]
    if case.expect_ok:
        ok = proc.returncode == 0 and case.needle in (proc.stdout + proc.stderr) and "Traceback" not in proc.stderr
        first = next((ln for ln in lines if case.needle in ln), lines[0] if lines else "(no output)")
        return ok, proc.returncode, first, wall
    message = errors[0] if errors else (lines[-1] if lines else "(no message)")
    detail = proc.stderr[proc.stderr.find(message):] if errors else ""  # the error line and its detail lines
    ok = (proc.returncode not in (0,) and "Traceback" not in proc.stderr and len(errors) == 1
          and case.needle in detail)
    return ok, proc.returncode, message, wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="workspace folder (default: a temporary one)")
    ap.add_argument("--only", default=None, help="run only cases whose name contains this")
    ap.add_argument("--from", dest="start", type=int, default=1, help="start at case number N (numbering of the full list)")
    args = ap.parse_args(argv)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="aedistill-bad-")
        args.work = Path(tmp.name)
    ws = Workspace(args.work)
    ws.setup()
    selected = [(i, c) for i, c in enumerate(cases(), 1) if (args.only is None or args.only in c.name) and i >= args.start]
    print("| # | class | case | rc | first line of the message |\n|---:|---|---|---:|---|")
    failed: list[str] = []
    tracebacks = silent = 0
    for i, case in selected:
        ok, rc, first, _ = run_case(ws, case)
        if not ok:
            failed.append(case.name)
            silent += int(rc == 0 and not case.expect_ok)
        tracebacks += int("Traceback" in first)
        flag = "" if ok else " **FAIL**"
        first = first.replace("|", "\\|")
        print(f"| {i} | {case.klass} | {case.name}{flag} | {rc} | {first[:220]} |", flush=True)
    print(f"\n{len(selected)} cases: {len(selected) - len(failed)} as expected, {len(failed)} not "
          f"({silent} exit 0 on broken input)")
    for name in failed:
        print(f"  not as expected: {name}")
    if tmp is not None:
        tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
