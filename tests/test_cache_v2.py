"""Teacher store format v2 (quantised + zstd per image): error bounds, round trip, store read-back, damage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill.cache_codec import decode_image, encode_image, heat_peak
from distill.data.coco import CocoKeypointDataset
from distill.teacher_cache import StoreError, TeacherStore, build_store, weights_identity
from teachers import build_teacher, get_teacher_config

INPUT = 64


def _maps(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    heat4 = np.abs(rng.normal(0, 0.02, (4, 16, 20))) - 0.01  # background noise with small negatives
    heat4[:, 5:8, 6:9] += rng.uniform(0.3, 1.0, (4, 1, 1))
    tags4 = np.cumsum(rng.normal(0, 0.1, (4, 16, 20)), axis=2)  # smooth tag fields
    heat2 = np.abs(rng.normal(0, 0.02, (4, 32, 40)))
    heat2[:, 10:14, 12:16] += 0.8
    return [np.concatenate([heat4, tags4]).astype(np.float32), heat2.astype(np.float32)]


@pytest.mark.parametrize("seed", range(4))
def test_errors_stay_within_their_bounds(seed: int) -> None:
    maps = _maps(seed)
    blob, err = encode_image(maps, [4, 4])
    out = decode_image(blob, [m.shape for m in maps], [4, 4])
    for m, d, h in zip(maps, out, (4, 4)):
        assert d.shape == m.shape and d.dtype == np.float32
        e = np.abs(d - m).reshape(m.shape[0], -1).max(axis=1)
        peak = m[:h].reshape(h, -1).max(axis=1)
        assert np.array_equal(heat_peak(m[:h].reshape(h, -1)), peak)  # real peaks: the peak is the maximum
        assert np.all(e[:h] <= peak / 255 * (1 + 1e-5))  # heatmaps: 1/255 of each map's peak
        rng = np.ptp(m[h:].reshape(m.shape[0] - h, -1), axis=1) if m.shape[0] > h else np.zeros(0)
        assert np.all(e[h:] <= rng / 510 * (1 + 1e-5) + 1e-7)  # tags: half a step of 255 over the range
    assert err.heat_rel <= 1 / 255 * (1 + 1e-5) and err.tag_abs > 0
    assert len(blob) < sum(m.nbytes for m in maps) / 4  # float32 in, well under 8 bits per value out


def test_strongly_negative_heatmaps_use_16_bits_and_keep_the_bound() -> None:
    m = np.zeros((2, 8, 8), np.float32)
    m[:, 3, 3] = 0.5
    m[:, 0, :] = -3.0  # far below zero: 8 bits of peak/127.5 steps cannot reach it
    (d,) = decode_image(encode_image([m], [2])[0], [m.shape], [2])
    assert np.abs(d - m).max() <= 0.5 / 255 * (1 + 1e-5)


@pytest.fixture(scope="module")
def stores(make_synthetic_dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = make_synthetic_dataset(seed=0, num_train=5, num_val=2, image_size=128)
    torch.manual_seed(0)
    model = build_teacher("tiny").eval()
    ds = CocoKeypointDataset(root, "train2017", input_size=INPUT, output_sizes=(INPUT // 4, INPUT // 2))
    out = tmp_path_factory.mktemp("v2")
    for v in (1, 2):
        build_store(out / f"v{v}", model, ds, teacher_cfg=get_teacher_config("tiny"),
                    weights=weights_identity(model, None, random_init=True, seed=0), input_size=INPUT,
                    shard_size=2, show_progress=False, format_version=v)
    return out / "v1", out / "v2"


def test_v2_store_reads_back_the_v1_maps_within_the_bound(stores: tuple[Path, Path]) -> None:
    v1, v2 = TeacherStore(stores[0]), TeacherStore(stores[1], verify="sha256")
    assert v2.version == 2 and v1.version == 1 and v1.ids == v2.ids
    heatmaps = [o["heatmaps"] for o in v2.outputs]
    for image_id in v2.ids:
        for a, b, h in zip(v1.maps(image_id), v2.maps(image_id), heatmaps):
            a = a.astype(np.float32)
            assert a.shape == b.shape
            peak = heat_peak(a[:h].reshape(h, -1))[:, None, None]
            # float16 (v1) and the quantised float32 maps of the same network outputs
            assert np.all(np.abs(a[:h] - b[:h]) <= peak / 255 * 1.01 + 2e-3)
    worst = v2.worst_error()
    assert 0 < worst["heat_rel"] <= 1 / 255 * (1 + 1e-3)  # up to float32 rounding of q * step + lo
    assert v2.nbytes() < v1.nbytes()


def test_v2_damage_names_the_file_and_image(stores: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(stores[1], bad)
    blob = next((bad / "shards").glob("*.bin"))
    data = bytearray(blob.read_bytes())
    data[10:40] = b"\x00" * 30  # same size, corrupt content: only decoding notices
    blob.write_bytes(bytes(data))
    store = TeacherStore(bad)  # size check passes
    with pytest.raises(StoreError, match=r"shard-0000\d\.bin: image id .* blob does not decode"):
        for image_id in store.ids:
            store.maps(image_id)
    with pytest.raises(StoreError, match="sha256"):
        TeacherStore(bad, verify="sha256")


def _cli_build(root: Path, out: Path, *extra: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "distill.cli", "cache-teacher", "--teacher", "tiny", "--random-init",
            "--data", str(root), "--split", "train2017", "--input-size", str(INPUT), "--out", str(out),
            "--shard-size", "2", "--workers", "0", "--no-progress", "--format", "2", *extra]


def test_two_processes_build_the_same_store_as_one(make_synthetic_dataset, tmp_path: Path) -> None:
    """--num-parts 2: two processes at once, each its own shards, lock and part index; the last one writes
    index.json. Every shard file is byte-identical to a one-process build's, and so is the file list."""
    import json
    import os
    import subprocess

    root = make_synthetic_dataset(seed=0, num_train=7, num_val=2, image_size=128)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli_build(root, tmp_path / "one"), check=True, env=env, capture_output=True)
    procs = [subprocess.Popen(_cli_build(root, tmp_path / "two", "--num-parts", "2", "--part", str(i)), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert any("the store is complete" in o for o, _ in outs)
    one, two = tmp_path / "one" / "shards", tmp_path / "two" / "shards"
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and len(names) == 8  # 4 shards: .bin + .json each
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    index = [json.loads((tmp_path / d / "index.json").read_text()) for d in ("one", "two")]
    files = [{k: [f["sha256"] for f in s["files"]] for k, s in ix["shards"].items()} for ix in index]
    assert files[0] == files[1] and index[1]["complete"] and index[1]["parts"] == 2
    assert TeacherStore(tmp_path / "two", verify="sha256").ids == TeacherStore(tmp_path / "one").ids


def test_a_missing_part_is_named(make_synthetic_dataset, tmp_path: Path) -> None:
    import subprocess

    root = make_synthetic_dataset(seed=0, num_train=5, num_val=2, image_size=128)
    subprocess.run(_cli_build(root, tmp_path / "s", "--num-parts", "2", "--part", "1"), check=True, capture_output=True)
    with pytest.raises(StoreError, match="built in parts .* not merged yet"):
        TeacherStore(tmp_path / "s")


def test_estimate_prints_the_projection_and_builds_nothing(make_synthetic_dataset, tmp_path: Path) -> None:
    import re
    import subprocess

    root = make_synthetic_dataset(seed=0, num_train=5, num_val=2, image_size=128)
    out = subprocess.run(_cli_build(root, tmp_path / "s", "--estimate"), check=True, capture_output=True, text=True).stdout
    m = re.search(r"\((\d+) images, format v2.*: ([0-9.]+) MiB/image", out)
    assert m and int(m.group(1)) == 5 and float(m.group(2)) > 0, out
    assert not (tmp_path / "s").exists()


def test_more_tag_bits_smaller_tag_error() -> None:
    maps = _maps(1)
    errs = []
    for bits in (8, 12, 16):
        blob, err = encode_image(maps, [4, 4], tag_bits=bits)
        out = decode_image(blob, [m.shape for m in maps], [4, 4])
        tag_range = np.ptp(maps[0][4:].reshape(4, -1), axis=1).max()
        assert err.tag_abs <= tag_range / (2 * (2 ** bits - 1)) * (1 + 1e-3) + 1e-7
        assert np.abs(out[0][4:] - maps[0][4:]).max() == pytest.approx(err.tag_abs)
        errs.append(err.tag_abs)
    assert errs[0] > errs[1] > errs[2]
    with pytest.raises(ValueError, match="tag_bits"):
        encode_image(maps, [4, 4], tag_bits=17)
