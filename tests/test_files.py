"""Files survive hostile content and killed processes: no pickle is executed, a SIGKILLed training run (also in the
middle of writing a checkpoint) leaves its last checkpoint intact, and --resume finishes the same run exactly."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffusion import Pipeline
from diffusion.checkpoint import CheckpointError, load_model_dir
from diffusion.training import TrainingError, load_state

ROOT = Path(__file__).resolve().parent.parent


class Trap:
    """Unpickling this creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_weights_are_never_executed(tiny_model_dir, tmp_path):
    marker = tmp_path / "pwned"
    (tiny_model_dir / "model.safetensors").write_bytes(pickle.dumps({"stem.weight": Trap(marker)}))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model_dir(tiny_model_dir)
    assert not marker.exists()


def test_pickle_files_beside_the_weights_are_ignored(tiny_model_dir, tmp_path):
    marker = tmp_path / "pwned"
    for name in ("pytorch_model.bin", "model.pt", "diffusion_pytorch_model.bin"):
        (tiny_model_dir / name).write_bytes(pickle.dumps(Trap(marker)))
    Pipeline.from_pretrained(tiny_model_dir).generate([0], steps=2, seed=0)
    assert not marker.exists()


def test_training_state_loads_with_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "state.pt").write_bytes(pickle.dumps({"step": 3, "config": Trap(marker)}))
    with pytest.raises(TrainingError, match="state.pt: cannot read the training state"):
        load_state(tmp_path)
    assert not marker.exists()
    torch.save({"step": 3, "config": Trap(marker)}, tmp_path / "state.pt")
    with pytest.raises(TrainingError, match="state.pt"):
        load_state(tmp_path)
    assert not marker.exists()


# ---- killing training -------------------------------------------------------------------------------------------

TRAIN_ARGS = ["--dataset", "digits", "--batch-size", "32", "--base-channels", "16", "--norm-groups", "8",
              "--patch-size", "1", "--num-timesteps", "100", "--channel-mult", "1", "2", "--num-res-blocks", "1",
              "--save-every", "10", "--sample-every", "1000", "--log-every", "5", "--no-progress",
              "--precision", "fp32", "--num-threads", "1"]


def train_cmd(out: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *TRAIN_ARGS, "--max-steps", str(steps), "--output-dir", str(out),
            *extra]


def run_to_end(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]


def final_weights(out: Path) -> dict:
    return load_state(out)["model"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    run_to_end(train_cmd(out, 60))
    return final_weights(out)


def wait_for(predicate, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def logged_step(out: Path) -> int:
    try:
        lines = (out / "log.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError):
        return 0


def test_sigkill_mid_run_then_resume(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(out, 60), cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: logged_step(out) >= 35)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_state(out)["step"]  # the last checkpoint is intact
    assert saved >= 30 and saved % 10 == 0
    Pipeline.from_pretrained(out / "model")
    run_to_end(train_cmd(out, 60, "--resume"))
    assert load_state(out)["step"] == 60
    for k, v in uninterrupted.items():
        assert torch.equal(v, final_weights(out)[k]), k  # the same run, continued exactly


SLOW_SAVE = """
import sys, time, pathlib
sys.path.insert(0, {root!r})
sys.argv = ["train.py"] + {args!r}
import diffusion.training as training
real = training.atomic_write
def slow(path, write):
    if path.name == "state.pt" and path.exists() and training.load_state(path.parent)["step"] >= 20:
        def half_then_wait(tmp):
            write(tmp)
            pathlib.Path({flag!r}).write_text(str(tmp))
            time.sleep(600)  # killed here: the new state is written to the temp file, not yet renamed
        return real(path, half_then_wait)
    return real(path, write)
training.atomic_write = slow
import train
sys.exit(train.main())
"""


def test_sigkill_during_a_checkpoint_write_then_resume(tmp_path, uninterrupted):
    out, flag = tmp_path / "run", tmp_path / "saving"
    script = SLOW_SAVE.format(root=str(ROOT), args=train_cmd(out, 60)[2:], flag=str(flag))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: flag.exists() or proc.poll() is not None)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Path(flag.read_text()).exists()  # the half-finished write was really under way
    assert load_state(out)["step"] == 20  # ... and the previous checkpoint is untouched
    run_to_end(train_cmd(out, 60, "--resume"))
    assert load_state(out)["step"] == 60
    assert not list(out.glob(".state.pt.*.tmp"))  # the stale temp file was cleaned up
    for k, v in uninterrupted.items():
        assert torch.equal(v, final_weights(out)[k]), k
