"""`distill predict`: COCO results for a folder, the same people as the Predictor, overlays, bad images reported."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from distill.cli import main
from distill.models import build_model
from distill.predict import Predictor, read_image


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model("teacher", "tiny")
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def test_predict_folder_matches_the_predictor(tmp_path: Path, weights: Path, make_synthetic_dataset, capsys) -> None:
    data = make_synthetic_dataset(seed=8, num_train=1, num_val=3, image_size=96)
    images = tmp_path / "images"
    shutil.copytree(data / "val2017", images)
    out = tmp_path / "res.json"
    rc = main(["predict", "--model", f"teacher:tiny:{weights}", "--input", str(images), "--out", str(out),
               "--input-size", "64", "--overlays", str(tmp_path / "viz"), "--batch-size", "2", "--no-progress"])
    assert rc == 0
    results = json.loads(out.read_text())
    files = sorted(images.glob("*.jpg"))
    assert sorted(p.name for p in (tmp_path / "viz").iterdir()) == sorted(f"{p.stem}.png" for p in files)
    model = build_model("teacher", "tiny")
    model.load_state_dict(torch.load(weights, weights_only=True)["state_dict"])
    predictor = Predictor(model.eval(), input_size=64, flip=True)
    want = []
    for p in files:
        want += predictor.predict(read_image(p)).to_results(int(p.stem))
    assert len(results) == len(want) > 0
    for a, b in zip(results, want):
        assert a["image_id"] == b["image_id"] and a["category_id"] == 1 and len(a["keypoints"]) == 51
        assert a["keypoints"] == pytest.approx(b["keypoints"], abs=1e-4) and a["score"] == pytest.approx(b["score"])


def test_predict_reports_bad_images_and_refuses_random_weights(tmp_path: Path, weights: Path,
                                                                make_synthetic_dataset, capsys) -> None:
    data = make_synthetic_dataset(seed=8, num_train=1, num_val=3, image_size=96)
    images = tmp_path / "images"
    shutil.copytree(data / "val2017", images)
    bad = sorted(images.glob("*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[:400] + b"\xff\xda" + b"\x00" * 50)
    out = tmp_path / "res.json"
    rc = main(["predict", "--model", f"teacher:tiny:{weights}", "--input", str(images), "--out", str(out),
               "--input-size", "64", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "1 of 3 image(s) could not be read" in err and bad.name in err
    assert {r["image_id"] for r in json.loads(out.read_text())} <= {int(p.stem) for p in images.glob("*.jpg")} - {int(bad.stem)}
    assert main(["predict", "--model", "teacher:tiny", "--input", str(images), "--out", str(out)]) == 2
    assert "random weights" in capsys.readouterr().err


def test_an_interrupted_predict_resumes_and_gives_the_same_results(tmp_path: Path, weights: Path,
                                                                     make_synthetic_dataset, monkeypatch) -> None:
    from distill.errors import DataError
    from distill.predict_files import ResultsJournal

    data = make_synthetic_dataset(seed=9, num_train=1, num_val=5, image_size=96)
    cmd = ["predict", "--model", f"teacher:tiny:{weights}", "--input", str(data / "val2017"), "--input-size", "64",
           "--batch-size", "2", "--no-progress"]
    assert main(cmd + ["--out", str(tmp_path / "whole.json")]) == 0
    whole = json.loads((tmp_path / "whole.json").read_text())
    assert whole and not (tmp_path / "whole.json.partial.jsonl").exists()

    calls: list[int] = []
    real = Predictor.predict_batch

    def dies_on_the_second_batch(self, images, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, images, *a, **k)

    monkeypatch.setattr(Predictor, "predict_batch", dies_on_the_second_batch)
    out = tmp_path / "res.json"
    assert main(cmd + ["--out", str(out)]) != 0  # (the CLI reports "interrupted")
    journal = tmp_path / "res.json.partial.jsonl"
    assert not out.exists() and len(journal.read_text().splitlines()) == 1 + 2  # settings + the first batch
    with open(journal, "a") as fh:
        fh.write('{"image": "cut off')  # a kill in the middle of a line
    calls.clear()
    monkeypatch.setattr(Predictor, "predict_batch", lambda self, images, *a, **k: calls.append(len(images)) or
                        real(self, images, *a, **k))
    assert main(cmd + ["--out", str(out)]) == 0
    assert calls == [2, 1]  # only the 3 images not done
    assert json.loads(out.read_text()) == whole and not journal.exists()

    # a journal of other settings is refused, not mixed in
    other = tmp_path / "o.jsonl"
    ResultsJournal(other, {"model": "a"}).close()
    with pytest.raises(DataError, match="an unfinished run with other settings"):
        ResultsJournal(other, {"model": "b"})
