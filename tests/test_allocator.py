"""distill.allocator: glibc malloc tuning applies where it can and is a no-op elsewhere; the Trainer and the Predictor apply it
unless AEDISTILL_KEEP_FREED_MEMORY=0 (its speed effect is measured by scripts/bench_allocator.py, not here)."""
from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from distill import allocator


def _run(code: str, env_value: str | None = None) -> str:
    import os

    env = dict(os.environ)
    env.pop(allocator.KEEP_FREED_MEMORY_ENV, None)
    if env_value is not None:
        env[allocator.KEEP_FREED_MEMORY_ENV] = env_value
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="glibc only")
def test_applies_on_glibc_and_is_idempotent():
    out = _run("""
        from distill.allocator import keep_freed_memory
        print(keep_freed_memory(), keep_freed_memory())
    """)
    assert out == "True True"


def test_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_applied", None)  # do not leave the faked answer behind


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="glibc only")
@pytest.mark.parametrize("env_value, expected", [(None, "True"), ("0", "None")])
def test_trainer_applies_it_unless_switched_off(tmp_path, env_value, expected):
    from distill.data.synthetic import generate_dataset

    generate_dataset(tmp_path / "data", seed=0, num_train=2, num_val=1, image_size=128, progress=False)
    out = _run(f"""
        from distill import allocator
        from distill.config import DataSection, ModelSection, OptimSection, RunConfig, TrainSection
        from distill.train import Trainer
        cfg = RunConfig(model=ModelSection("student", "step_s"),
                        data=DataSection(root={str(tmp_path / 'data')!r}, input_size=128, workers=0),
                        optim=OptimSection(epochs=1, batch_size=2),
                        train=TrainSection(out={str(tmp_path / 'run')!r}, eval_every=0, tensorboard=False))
        Trainer(cfg, resume=False).release()
        print(allocator._applied)
    """, env_value)
    assert out.splitlines()[-1] == expected


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="glibc only")
@pytest.mark.parametrize("env_value, expected", [(None, "True"), ("0", "None")])
def test_predictor_applies_it_unless_switched_off(env_value, expected):
    """Test-time inference allocates fresh multi-MB maps per image, as training does per step."""
    out = _run("""
        from distill import allocator
        from distill.predict import Predictor
        from students import build_student
        Predictor(build_student("step_s").eval(), input_size=64)
        print(allocator._applied)
    """, env_value)
    assert out.splitlines()[-1] == expected
