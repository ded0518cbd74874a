"""Teacher outputs for distillation: the cached store (build, read back, refuse, resume, damage) and the
alignment of cached maps with the augmented sample (online vs cached targets)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from distill import teacher_cache as tc
from distill.cli import main as cli_main
from distill.data.coco import CocoKeypointDataset
from distill.data.transforms import AugmentParams, to_normalized_tensor
from distill.geometry import resize_for_test
from distill.teacher_cache import (
    NonFiniteOutputError, StoreError, StoreMismatchError, StoreWriter, TeacherStore, build_store, canonical_frame,
    make_header, weights_identity,
)
from distill.teacher_cache.targets import AugMetaDataset, CachedTeacher, OnlineTeacher, TeacherTargets
from teachers import build_teacher, config_from_dict, get_teacher_config

INPUT = 64  # small frames (64 x 64 or 64 x 128 for the 128-px images) keep the teacher forwards cheap


@pytest.fixture(scope="module")
def data_root(make_synthetic_dataset) -> Path:
    return make_synthetic_dataset(seed=0, num_train=6, num_val=2, image_size=128)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_teacher("tiny").eval()


def _dataset(root: Path, **kw) -> CocoKeypointDataset:
    kw.setdefault("input_size", INPUT)
    kw.setdefault("output_sizes", (INPUT // 4, INPUT // 2))
    return CocoKeypointDataset(root, "train2017", **kw)


def _build(out: Path, model: torch.nn.Module, root: Path, *, cfg=None, input_size: int = INPUT, batch_size: int = 1,
           weights=None, **kw) -> tc.BuildSummary:
    cfg = cfg or get_teacher_config("tiny")
    weights = weights or weights_identity(model, None, random_init=True, seed=0)
    return build_store(out, model, _dataset(root), teacher_cfg=cfg, weights=weights, input_size=input_size,
                       batch_size=batch_size, shard_size=2, show_progress=False, **kw)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, data_root: Path, model) -> Path:
    out = tmp_path_factory.mktemp("stores") / "ref"
    s = _build(out, model, data_root)
    assert (s.images_total, s.shards_total, s.shards_computed, s.shards_skipped) == (6, 3, 3, 0)
    return out


def _files(store: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted((store / "shards").iterdir())}


# ------------------------------------------------------------------------------------------------ store
def test_build_and_read_back(store_dir: Path, data_root: Path, model) -> None:
    store = TeacherStore(store_dir, verify="sha256")
    header = store.header
    assert header["teacher"]["name"] == "tiny" and header["teacher"]["config"] == get_teacher_config("tiny").to_dict()
    assert header["weights"]["random_init"] and "RANDOM INIT" in header["note"]
    assert header["input_size"] == INPUT and header["dtype"] == "float16" and header["amp"] is None
    assert [(o["stride"], o["channels"], o["tags"]) for o in header["outputs"]] == [(4, 34, 17), (2, 17, 0)]
    assert header["code_version"]["aedistill"] and len(header["code_version"]["sources_sha256"]) == 64
    ds = _dataset(data_root, augment=False)
    assert len(store) == len(ds) == 6
    for index, image_id in enumerate(ds.ids):
        image = ds.load_image(index)
        warped, resize = resize_for_test(image, INPUT)
        with torch.no_grad():
            outs = model(to_normalized_tensor(warped)[None])
        maps = store.maps(image_id)
        for o, m in zip(outs, maps):
            assert m.dtype == np.float16 and isinstance(m, np.memmap) and not m.flags.writeable
            np.testing.assert_array_equal(m, o[0].numpy().astype(np.float16))
        frame = store.frame(image_id)
        h, w = image.shape[:2]
        assert frame.input_size == tuple(resize.size) == canonical_frame(w, h, INPUT).input_size
        np.testing.assert_allclose(frame.affine, resize.input_affine())
        assert maps[0].shape[1:] == (frame.input_size[1] // 4, frame.input_size[0] // 4)
    with pytest.raises(StoreError, match="not in the teacher store"):
        store.maps(123456789)


def test_refuses_other_teacher_weights_input_size(store_dir: Path, data_root: Path, model) -> None:
    before = _files(store_dir)
    other = dict(get_teacher_config("tiny").to_dict(), name="tiny_wide")
    other["deconv"] = dict(other["deconv"], num_channels=[16])
    cfg2 = config_from_dict(other)
    with pytest.raises(StoreMismatchError, match=r"teacher config: store 'tiny', expected 'tiny_wide'.*deconv.num_channels: store \[8\], expected \[16\]"):
        _build(store_dir, build_teacher(cfg2), data_root, cfg=cfg2)
    torch.manual_seed(1)
    model2 = build_teacher("tiny").eval()
    with pytest.raises(StoreMismatchError, match="teacher weights: store random init"):
        _build(store_dir, model2, data_root, weights=weights_identity(model2, None, random_init=True, seed=1))
    with pytest.raises(StoreMismatchError, match="input size: store 64, expected 160"):
        _build(store_dir, model, data_root, input_size=160)
    assert _files(store_dir) == before  # nothing rewritten
    # the reading side: a trainer states what it expects
    store = TeacherStore(store_dir)
    store.check_matches(teacher="tiny", input_size=INPUT, weights_sha256=tc.state_dict_sha256(model))
    with pytest.raises(StoreMismatchError, match="teacher config: store 'tiny', expected 'higherhrnet_w32_512'"):
        store.check_matches(teacher="higherhrnet_w32_512")
    with pytest.raises(StoreMismatchError, match="input size: store 64, expected 512"):
        CachedTeacher(store, expect_input_size=512)
    with pytest.raises(StoreMismatchError, match="teacher weights"):
        store.check_matches(weights_sha256=tc.state_dict_sha256(model2))


def test_resume_after_kill(store_dir: Path, data_root: Path, model, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "resumed"
    real_commit = StoreWriter.commit
    calls = []

    def dying_commit(self, shard, records, device=""):
        calls.append(shard)
        if len(calls) == 2:  # killed while writing the second shard: a partial temp file and an uncommitted file
            (self.root / "shards" / ".shard-00001.out0.npy.abc123.tmp").write_bytes(b"partial")
            (self.root / tc.shard_file(1, 1)).write_bytes(b"renamed but never committed")
            raise KeyboardInterrupt
        return real_commit(self, shard, records, device)

    monkeypatch.setattr(StoreWriter, "commit", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        _build(out, model, data_root)
    monkeypatch.setattr(StoreWriter, "commit", real_commit)
    with pytest.raises(StoreError, match="incomplete store .1 of 3 shards"):
        TeacherStore(out)
    first = {k: v for k, v in _files(out).items() if k.startswith("shard-00000")}
    assert len(first) == 3  # out0.npy, out1.npy, .json

    s = _build(out, model, data_root)
    assert (s.shards_skipped, s.shards_computed, s.images_computed) == (1, 2, 4)
    after = _files(out)
    assert {k: after[k] for k in first} == first  # same inode and mtime: shard 0 not rewritten
    assert not [p for p in (out / "shards").iterdir() if p.name.endswith(".tmp")]
    ref, got = json.loads((store_dir / "index.json").read_text()), json.loads((out / "index.json").read_text())
    assert got["complete"]
    for k in "012":  # every map file and per-image record is byte-identical to the uninterrupted build's
        assert [f["sha256"] for f in got["shards"][k]["files"]] == [f["sha256"] for f in ref["shards"][k]["files"]]
        assert got["shards"][k]["record"]["sha256"] == ref["shards"][k]["record"]["sha256"]
        assert got["shards"][k]["images"] == ref["shards"][k]["images"]
    a, b = TeacherStore(out, verify="sha256"), TeacherStore(store_dir)
    for image_id in b.ids:
        for x, y in zip(a.maps(image_id), b.maps(image_id)):
            np.testing.assert_array_equal(x, y)
    s2 = _build(out, model, data_root)  # a complete store: nothing to do
    assert (s2.shards_skipped, s2.images_computed) == (3, 0) and _files(out) == after


def test_truncated_and_corrupt_shards(store_dir: Path, data_root: Path, model, tmp_path: Path) -> None:
    out = tmp_path / "damaged"
    shutil.copytree(store_dir, out)
    victim = out / tc.shard_file(1, 1)
    data = victim.read_bytes()
    victim.write_bytes(data[:-100])
    with pytest.raises(StoreError, match=r"shard-00001\.out1\.npy: shard file is \d+ bytes, the index says \d+ \(truncated\)"):
        TeacherStore(out)
    # a rebuild redoes exactly the damaged shard
    s = _build(out, model, data_root)
    assert (s.shards_skipped, s.shards_computed) == (2, 1)
    assert victim.read_bytes() == data
    TeacherStore(out, verify="sha256")
    # same size, flipped bytes: only the checksum sees it
    corrupt = bytearray(data)
    corrupt[-10] ^= 0xFF
    victim.write_bytes(bytes(corrupt))
    TeacherStore(out, verify="size")
    with pytest.raises(StoreError, match=r"shard-00001\.out1\.npy: sha256 .* differs from the index"):
        TeacherStore(out, verify="sha256")
    record = out / tc.shard_record(2)
    record.write_bytes(record.read_bytes()[:-1])
    with pytest.raises(StoreError, match=r"shard-00002\.json: shard file is \d+ bytes, the index says \d+ \(truncated\)"):
        TeacherStore(out, verify="none").verify(checksum=False)


class _NaNAt(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, call: int) -> None:
        super().__init__()
        self.inner, self.call, self.n = inner, call, 0

    def forward(self, x):
        outs = self.inner(x)
        self.n += 1
        if self.n == self.call:
            outs[1][0, 3, 5, 7] = float("nan")
        return outs


def test_nan_output_detected(data_root: Path, model, tmp_path: Path) -> None:
    out = tmp_path / "nan"
    ds = _dataset(data_root)
    bad_id, bad_file = ds.ids[2], ds.image_info(2)["file_name"]
    with pytest.raises(NonFiniteOutputError, match=rf"output 1 \(1/2\) for image id {bad_id} .*{bad_file}.* 1 NaN/inf"):
        _build(out, _NaNAt(model, call=3), data_root)
    index = json.loads((out / "index.json").read_text())
    assert list(index["shards"]) == ["0"] and bad_id not in index["shards"]["0"]["images"]
    assert not (out / tc.shard_file(1, 0)).exists()


def test_cli_build_resume_refuse(data_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    args = ["cache-teacher", "--teacher", "tiny", "--random-init", "--data", str(data_root), "--out", str(out),
            "--shard-size", "3", "--workers", "0", "--batch-size", "4", "--no-progress", "--input-size", str(INPUT)]
    assert cli_main(args) == 0
    text = capsys.readouterr()
    assert "6 images in 2 shards (0 already committed, 2 computed now)" in text.out
    assert "RANDOM INIT" in text.err
    assert cli_main(args) == 0
    assert "(2 already committed, 0 computed now)" in capsys.readouterr().out
    assert cli_main(args + ["--input-size", "192"]) == 2
    assert "input size: store 64, expected 192" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # weights are required unless --random-init is explicit
        cli_main(args[:3] + args[4:])


# ------------------------------------------------------------------------------------------------ targets
def _gauss(h: int, w: int, x: float, y: float, sigma: float = 2.0) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))


def _apply(mat: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ np.asarray(mat)[:2, :2].T + np.asarray(mat)[:2, 2]


@pytest.fixture(scope="module")
def gauss_store(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> tuple[Path, dict]:
    """A hand-made store (frame input 256): heatmap channel j of image i = a Gaussian at a known original-image
    point P[i][j] plus, for the GT test, Gaussians at the image's visible joints (channel 17+j of output 0 is
    the tag map, constant j + 1); output 1 holds the Gaussians at the joints."""
    size = 256
    cfg = get_teacher_config("tiny")
    ds = _dataset(data_root, input_size=size, output_sizes=(64, 128))
    header = make_header(teacher_cfg=cfg, weights={"random_init": True, "state_dict_sha256": "x"}, input_size=size,
                         amp=None, dataset=tc.dataset_identity(ds), flip_index=ds.flip_index, shard_size=len(ds))
    rng = np.random.default_rng(0)
    points, records = {}, []
    for index, image_id in enumerate(ds.ids):
        info = ds.image_info(index)
        w, h = info["width"], info["height"]
        frame = canonical_frame(w, h, size)
        p = np.stack([rng.uniform(0.25, 0.75, 17) * w, rng.uniform(0.25, 0.75, 17) * h], 1)
        points[image_id] = p
        joints = ds.get_joints(index)
        maps = []
        for k, stride in enumerate((4, 2)):
            mh, mw = frame.input_size[1] // stride, frame.input_size[0] // stride
            fa = frame.output_affine(mw, mh)
            if k == 0:
                q = _apply(fa, p)
                heat = np.stack([_gauss(mh, mw, *q[j]) for j in range(17)])
                tags = np.broadcast_to(np.arange(1, 18, dtype=np.float32)[:, None, None], (17, mh, mw))
                maps.append(np.concatenate([heat, tags]).astype(np.float16))
            else:
                heat = np.zeros((17, mh, mw))
                for person in joints:
                    q = _apply(fa, person[:, :2])
                    for j in np.nonzero(person[:, 2] > 0)[0]:
                        heat[j] = np.maximum(heat[j], _gauss(mh, mw, *q[j]))
                maps.append(heat.astype(np.float16))
        records.append((image_id, {"width": w, "height": h, "file_name": info["file_name"], "frame": frame.to_json()}, maps))
    root = tmp_path_factory.mktemp("gauss") / "store"
    writer = StoreWriter(root, header, num_shards=1)
    writer.commit(0, records)
    return root, points


def _samples(ds: CocoKeypointDataset):
    for epoch in range(4):
        ds.set_epoch(epoch)
        for index in range(len(ds)):
            yield ds.make_sample(index)


def test_cached_gaussians_land_on_the_augmented_points(gauss_store, data_root: Path) -> None:
    """Geometry: a Gaussian at a known original point warps to (augmentation of that point), sub-pixel, with the
    flip mirroring columns and permuting heatmap AND tag channels like the GT."""
    root, points = gauss_store
    ds = _dataset(data_root, input_size=256, output_sizes=(64, 128))
    teacher = CachedTeacher(root, flip_index=ds.flip_index)
    flip_index = list(ds.flip_index)
    errors, flips = [], 0
    for s in _samples(ds):
        out, valid = teacher.targets_for_sample(s, with_valid=True)
        R = 64
        maps, flipped = out[0], s.params.flip
        flips += flipped
        q = _apply(s.affines[0], points[s.image_id])
        for j in range(17):
            src = flip_index[j] if flipped else j
            x, y = q[src]
            if flipped:
                x = R - 1 - x
            if not (8 <= x <= R - 9 and 8 <= y <= R - 9):
                continue
            m = maps[j]
            iy, ix = np.unravel_index(np.argmax(m), m.shape)
            # centroid over +-7 px (a smaller window biases it by up to 0.3 px when the sample zooms in)
            win = m[iy - 7:iy + 8, ix - 7:ix + 8].astype(np.float64)
            ys, xs = np.mgrid[iy - 7:iy + 8, ix - 7:ix + 8]
            cx, cy = (win * xs).sum() / win.sum(), (win * ys).sum() / win.sum()
            errors.append(max(abs(cx - x), abs(cy - y)))
            # tag channel j holds joint src's tag value (src + 1) wherever the frame covers the sample
            inside = valid[0] > 0.999
            np.testing.assert_allclose(maps[17 + j][inside], src + 1, rtol=2e-3)
    assert flips >= 3 and len(errors) > 200
    assert max(errors) < 0.05, max(errors)  # measured: 0.027 px (cv2 1/32-px quantisation + float16)


def test_cached_maps_peak_on_the_gt_heatmaps(gauss_store, data_root: Path) -> None:
    """The brief's alignment check: cached maps holding Gaussians at the joints (at the canonical frame) peak
    within 1 px of the GT heatmap peaks of the augmented sample (GT peaks are at int(x), int(y))."""
    root, _ = gauss_store
    ds = _dataset(data_root, input_size=256, output_sizes=(64, 128))
    teacher = CachedTeacher(root)
    checked = 0
    for s in _samples(ds):
        cached = teacher.targets_for_sample(s)[1]
        R = 128
        joints = s.joints[1]
        for p in range(joints.shape[0]):
            for j in range(17):
                x, y, v = joints[p, j]
                if v <= 0 or not (3 <= x < R - 4 and 3 <= y < R - 4):
                    continue
                others = np.delete(joints[:, j], p, axis=0)
                others = others[others[:, 2] > 0]
                if len(others) and np.min(np.hypot(others[:, 0] - x, others[:, 1] - y)) < 8:
                    continue
                gx, gy = int(x), int(y)
                assert s.heatmaps[1][j, gy, gx] == pytest.approx(1.0)
                win = cached[j, gy - 3:gy + 4, gx - 3:gx + 4]
                wy, wx = np.unravel_index(np.argmax(win), win.shape)
                assert max(abs(wx - 3), abs(wy - 3)) <= 1, (s.index, p, j, wx - 3, wy - 3)
                checked += 1
    assert checked > 100


def test_online_and_cached_targets(store_dir: Path, data_root: Path, model) -> None:
    ds = _dataset(data_root)
    cached = CachedTeacher(store_dir, expect_teacher="tiny", expect_input_size=INPUT)
    online = OnlineTeacher(model)
    assert isinstance(cached, TeacherTargets) and isinstance(online, TeacherTargets)
    loader = torch.utils.data.DataLoader(AugMetaDataset(ds), batch_size=3, shuffle=False)
    batch = next(iter(loader))
    t_on, t_ca = online.targets_for(batch), cached.targets_for(batch)
    want = [(3, 34, 16, 16), (3, 17, 32, 32)]
    assert [tuple(t.shape) for t in t_on] == want == [tuple(t.shape) for t in t_ca]
    assert all(t.dtype == torch.float32 and bool(torch.isfinite(t).all()) for t in t_on + t_ca)
    assert not any(t.requires_grad for t in t_on) and not model.training
    # warping in the DataLoader workers gives the same maps
    batch_w = next(iter(torch.utils.data.DataLoader(AugMetaDataset(ds, teacher=cached), batch_size=3)))
    for a, b in zip(cached.targets_for(batch_w), t_ca):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    valid = cached.valid_masks_for(batch)
    assert [tuple(v.shape) for v in valid] == [(3, 16, 16), (3, 32, 32)]
    # where the augmentation IS the canonical frame (square image, no augmentation) cached == online up to float16
    index = next(i for i in range(len(ds)) if ds.image_info(i)["width"] == ds.image_info(i)["height"])
    s = ds.make_sample(index, AugmentParams.identity())
    with torch.no_grad():
        ref = [o[0].numpy() for o in online.targets_for(s.image[None])]
    for c, o in zip(cached.targets_for_sample(s), ref):
        np.testing.assert_allclose(c, o, rtol=1e-3, atol=1e-4)


def test_warp_window_crop_is_exact_and_store_pickles(store_dir: Path) -> None:
    """Reading only the needed window of a stored map gives bit-identical warps; a store opened in one process
    pickles without its memory maps (DataLoader workers reopen them)."""
    import pickle

    from distill.data.transforms import base_scale, get_affine_matrix, sample_augment_params
    from distill.teacher_cache.targets import warp_cached_maps

    rng = np.random.default_rng(0)
    for t in range(40):
        w, h = (640, 480) if t % 2 else (427, 640)
        frame = canonical_frame(w, h, 256)
        maps = rng.random((5, frame.input_size[1] // 4, frame.input_size[0] // 4)).astype(np.float16)
        p = sample_augment_params(rng, w, h)
        a = get_affine_matrix((w / 2 + p.dx, h / 2 + p.dy), base_scale(w, h) * p.aug_scale, (64, 64), p.rot_deg)
        np.testing.assert_array_equal(warp_cached_maps(maps, frame, a, 64, p.flip, [1, 0, 2, 4, 3]),
                                      warp_cached_maps(maps, frame, a, 64, p.flip, [1, 0, 2, 4, 3], crop=False))
    store = TeacherStore(store_dir)
    first = store.maps(store.ids[0])
    clone = pickle.loads(pickle.dumps(store))
    assert store._arrays and not clone._arrays
    for x, y in zip(first, clone.maps(store.ids[0])):
        np.testing.assert_array_equal(x, y)


def test_one_writer_per_store(store_dir: Path, data_root: Path, model) -> None:
    cfg = get_teacher_config("tiny")
    header = make_header(teacher_cfg=cfg, weights=weights_identity(model, None, random_init=True, seed=0),
                         input_size=INPUT, amp=None, dataset=tc.dataset_identity(_dataset(data_root)),
                         flip_index=_dataset(data_root).flip_index, shard_size=2)
    w = StoreWriter(store_dir, header, num_shards=3)
    try:
        with pytest.raises(StoreError, match="another `distill cache-teacher` process is writing this store"):
            _build(store_dir, model, data_root)
    finally:
        w.close()
    assert _build(store_dir, model, data_root).shards_skipped == 3


def test_cached_teacher_gives_all_teacher_outputs_for_a_single_head_dataset(store_dir: Path, data_root: Path) -> None:
    """A student with only the 1/4 head still gets [1/4, 1/2] like the online teacher: the 1/2 matrix is the
    exact rescaling of the 1/4 one."""
    cached = CachedTeacher(store_dir)
    both = _dataset(data_root)
    quarter = _dataset(data_root, output_sizes=(INPUT // 4,))
    for index in range(3):
        a = cached.targets_for_sample(both.make_sample(index))
        b = cached.targets_for_sample(quarter.make_sample(index))  # same seed -> same augmentation
        assert [x.shape for x in a] == [y.shape for y in b] == [(34, 16, 16), (17, 32, 32)]
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, atol=1e-3 * max(1.0, float(np.abs(x).max())))
    batch = next(iter(torch.utils.data.DataLoader(AugMetaDataset(quarter), batch_size=2)))
    assert [tuple(t.shape) for t in cached.targets_for(batch)] == [(2, 34, 16, 16), (2, 17, 32, 32)]


def test_nan_written_into_a_store_later_is_named_when_read(store_dir: Path, data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "nan_later"
    shutil.copytree(store_dir, out)
    store = TeacherStore(out)
    image_id = store.ids[4]
    e = store.entry(image_id)
    path = out / store.index["shards"][str(e["shard"])]["files"][1]["name"]
    arr = np.load(path, mmap_mode="r+")
    arr[e["offsets"][1] + 11] = np.inf  # same size: only a checksum or a finite check can see it
    arr.flush()
    del arr
    store = TeacherStore(out)  # the cheap size check passes
    assert store.maps(image_id)[1].shape == tuple(e["shapes"][1])
    with pytest.raises(StoreError, match=rf"{path.name}: image id {image_id} .* holds 1 NaN/inf value\(s\) in teacher output 1"):
        store.maps(image_id, check_finite=True)
    with pytest.raises(StoreError, match=f"image id {image_id}"):
        store.verify(checksum=False, finite=True)
    ds = _dataset(data_root)
    s = ds.make_sample([str(i) for i in ds.ids].index(image_id), AugmentParams.identity())
    with pytest.raises(StoreError, match="NaN/inf"):  # training reads through the finite check
        CachedTeacher(out, expect_teacher="tiny", expect_input_size=INPUT).targets_for_sample(s)


def _swap_one_image(src: Path, dst: Path, donor: Path) -> None:
    """`dst` = `src` with image 3's file replaced by the same-named image of `donor` (same size forced)."""
    shutil.copytree(src, dst)
    import cv2

    name = sorted((src / "train2017").glob("*.jpg"))[3].name
    img = cv2.imread(str(src / "train2017" / name))
    other = cv2.resize(cv2.imread(str(donor / "train2017" / name)), (img.shape[1], img.shape[0]))
    cv2.imwrite(str(dst / "train2017" / name), other)


def test_same_ids_other_images_are_refused(store_dir: Path, data_root: Path, tmp_path: Path,
                                            make_synthetic_dataset) -> None:
    from distill.teacher_cache import StoreMismatchError

    donor = make_synthetic_dataset(seed=21, num_train=6, num_val=2, image_size=128)  # same ids and file names
    # other sizes for some images: refused when the store is opened for training
    other_sizes = [i for i in range(6) if _dataset(donor).image_info(i)["width"] != _dataset(data_root).image_info(i)["width"]
                   or _dataset(donor).image_info(i)["height"] != _dataset(data_root).image_info(i)["height"]]
    if other_sizes:
        with pytest.raises(StoreMismatchError, match=r"image\(s\) differ from the store's records"):
            CachedTeacher(store_dir, expect_dataset=_dataset(donor))
    # same sizes, one image's pixels replaced: refused when that sample is read
    swapped = tmp_path / "swapped"
    _swap_one_image(data_root, swapped, donor)
    ds = _dataset(swapped)
    teacher = CachedTeacher(store_dir, expect_dataset=ds)  # ids, names and sizes all agree
    meta = AugMetaDataset(ds, teacher)
    meta[0]
    with pytest.raises(StoreMismatchError, match="is not the image the teacher store was built on"):
        meta[3]


def test_a_channels_last_online_teacher_gives_the_same_maps(data_root: Path, model) -> None:
    """channels_last changes the memory layout the convs run in (about twice as fast in bf16 on a CPU), not the maps."""
    import copy

    ds = _dataset(data_root)
    batch = next(iter(torch.utils.data.DataLoader(AugMetaDataset(ds), batch_size=2, shuffle=False)))
    plain = OnlineTeacher(copy.deepcopy(model)).targets_for(batch)
    last = OnlineTeacher(copy.deepcopy(model), channels_last=True)
    weight = next(p for p in last.model.parameters() if p.dim() == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(last.targets_for(batch), plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
