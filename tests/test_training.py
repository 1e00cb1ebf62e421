"""The training loop on real data (scikit-learn digits): learning, export, exact resume, NaN handling, DDP, Hub."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import diffusion.training as training
from diffusion import Pipeline
from diffusion.training import TrainConfig, Trainer, TrainingError, learning_rate, load_state, train
from tests.conftest import needs_cxx

ROOT = Path(__file__).resolve().parent.parent


def tiny_run(out, **overrides) -> TrainConfig:
    cfg = dict(dataset="digits", max_steps=40, batch_size=32, lr=2e-3, warmup_steps=5, base_channels=16,
               channel_mult=[1, 2], num_res_blocks=1, patch_size=1, norm_groups=8, num_timesteps=100,
               output_dir=str(out), log_every=5, save_every=20, sample_every=40, progress=False, precision="fp32",
               num_threads=1)
    cfg.update(overrides)
    return TrainConfig(**cfg)


def losses(out):
    return [json.loads(line)["loss"] for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def test_training_lowers_the_loss_and_exports_a_model(tmp_path):
    model_dir = train(tiny_run(tmp_path / "run", max_steps=60, sample_every=60))
    curve = losses(tmp_path / "run")
    assert sum(curve[-3:]) / 3 < 0.6 * sum(curve[:2]) / 2
    pipe = Pipeline.from_pretrained(model_dir)
    assert pipe.config.dataset == "digits" and pipe.class_names[3] == "3"
    assert pipe.generate([0, 9], steps=5, seed=0).shape == (2, 1, 16, 16)
    record = json.loads((model_dir / "training.json").read_text())
    assert record["steps"] == 60 and record["val_loss"] is not None and record["horizontal_flips"] is False
    assert (tmp_path / "run" / "samples" / "step_0000060.png").exists()
    assert (tmp_path / "run" / "samples" / "step_0000060.gif").exists()
    assert len(list((model_dir / "examples").glob("*.png"))) == 30


@pytest.mark.parametrize("bf16_faster", [True, False])
def test_auto_precision_trains_in_what_a_timed_step_shows_faster(tmp_path, monkeypatch, bf16_faster):
    """--precision auto (the default): one timed forward and backward pass in each precision decides (here the
    timings are given, and native bf16 assumed); the steps then run in it and training.json says why."""
    import diffusion.precision as precision

    monkeypatch.setattr(precision, "_choices", {})
    monkeypatch.setattr(precision, "bf16_is_native", lambda device: True)
    timed, autocast_on = [], []
    monkeypatch.setattr(precision, "measure", lambda model, config, device, batch=32, training=False:
                        timed.append(training) or (0.1, 0.05 if bf16_faster else 0.2))
    loss = training.diffusion_loss
    monkeypatch.setattr(training, "diffusion_loss",
                        lambda *a, **k: autocast_on.append(torch.is_autocast_enabled("cpu")) or loss(*a, **k))
    assert TrainConfig().precision == "auto"
    model_dir = train(tiny_run(tmp_path / "run", precision="auto", max_steps=2, save_every=2, sample_every=2))
    assert timed == [True] and autocast_on and set(autocast_on) == {bf16_faster}
    reason = json.loads((model_dir / "training.json").read_text())["precision"]
    assert reason.startswith("bf16 autocast: 50.0 ms" if bf16_faster else "fp32: 200.0 ms")

    # --resume goes on in the precision the run trained in, whatever a new timing would say
    monkeypatch.setattr(precision, "_choices", {})
    monkeypatch.setattr(precision, "measure", lambda model, config, device, batch=32, training=False:
                        timed.append(training) or (0.1, 0.2 if bf16_faster else 0.05))
    resumed = Trainer(tiny_run(tmp_path / "run", precision="auto", max_steps=2, save_every=2, sample_every=2,
                               resume=True))
    assert timed == [True] and (resumed.autocast_dtype is torch.bfloat16) == bf16_faster
    assert resumed.precision_reason == f"{'bf16' if bf16_faster else 'fp32'}: kept from the run being resumed"


@needs_cxx
def test_compiled_training_steps_match_eager(tmp_path):
    """--compile: torch.compile of forward and backward takes the same optimiser steps as eager, up to rounding."""
    eager = Trainer(tiny_run(tmp_path / "eager"))
    compiled = Trainer(tiny_run(tmp_path / "compiled", compile=True))
    for step in range(3):
        assert math.isclose(eager.train_step(step), compiled.train_step(step), rel_tol=1e-4)
    for a, b in zip(eager.model.parameters(), compiled.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_resume_continues_exactly(tmp_path):
    straight = Trainer(tiny_run(tmp_path / "a"))
    straight.run()
    first = Trainer(tiny_run(tmp_path / "b", max_steps=40))
    first.total_steps = 40
    # Stop half way as a kill would (the 20-step checkpoint is on disk), then resume with only the output dir given.
    original = first.train_step

    def stop_at_25(step):
        if step == 25:
            raise KeyboardInterrupt
        return original(step)

    first.train_step = stop_at_25
    with pytest.raises(KeyboardInterrupt):
        first.run()
    assert load_state(tmp_path / "b")["step"] == 20
    resumed = Trainer(tiny_run(tmp_path / "b", resume=True))
    assert resumed.step == 20
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [learning_rate(19, resumed.cfg, 40)]
    resumed.run()
    assert resumed.step == 40
    logged = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == 40  # steps redone after the resume are logged once
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k  # bit-identical to the uninterrupted run
    for a, b in zip(straight.ema.model.state_dict().values(), resumed.ema.model.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_refuses_different_settings(tmp_path):
    train(tiny_run(tmp_path / "r", max_steps=20))
    with pytest.raises(TrainingError, match="settings differ.*lr"):
        Trainer(tiny_run(tmp_path / "r", resume=True, lr=1e-4))


def test_input_perturbation_is_a_run_setting(tmp_path):
    """--input-perturbation changes the training steps (the network sees other inputs), a resumed run keeps it, and
    a run saved before the setting existed resumes with its default (off)."""
    plain, perturbed = Trainer(tiny_run(tmp_path / "p", max_steps=4)), Trainer(
        tiny_run(tmp_path / "ip", max_steps=4, input_perturbation=0.1))
    assert plain.train_step(0) == perturbed.train_step(0)  # the zero-initialised output: same loss, other grads
    assert plain.train_step(1) != perturbed.train_step(1)
    train(tiny_run(tmp_path / "r", max_steps=20, input_perturbation=0.1))
    with pytest.raises(TrainingError, match="settings differ.*input_perturbation: run has 0.1, given 0.0"):
        Trainer(tiny_run(tmp_path / "r", max_steps=20, resume=True))
    state = load_state(tmp_path / "r")
    del state["config"]["input_perturbation"]
    torch.save(state, tmp_path / "r" / "state.pt")
    assert Trainer(tiny_run(tmp_path / "r", max_steps=20, resume=True)).step == 20
    with pytest.raises(TrainingError, match="--input-perturbation must be in"):
        Trainer(tiny_run(tmp_path / "bad", input_perturbation=-0.1))


def test_nan_loss_stops_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny_run(tmp_path / "n", max_steps=40))
    real_loss = training.diffusion_loss

    def poisoned(model, *args, **kwargs):
        loss = real_loss(model, *args, **kwargs)
        return loss * math.nan if trainer.step >= 30 else loss

    monkeypatch.setattr(training, "diffusion_loss", poisoned)
    before = None
    with pytest.raises(TrainingError, match="loss became nan at step 30.*intact"):
        original_save = trainer.save

        def save_and_remember():
            nonlocal before
            original_save()
            before = (tmp_path / "n" / "state.pt").read_bytes()

        trainer.save = save_and_remember
        trainer.run()
    assert load_state(tmp_path / "n")["step"] == 20
    assert (tmp_path / "n" / "state.pt").read_bytes() == before
    Pipeline.from_pretrained(tmp_path / "n" / "model")  # the exported model still loads


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(TrainingError, match="exactly one of --epochs and --max-steps"):
        Trainer(tiny_run(tmp_path, epochs=1))
    with pytest.raises(TrainingError, match="fewer than one batch"):
        Trainer(tiny_run(tmp_path, batch_size=4096))


def test_train_cli_help_and_run(tmp_path):
    from train import build_parser, main

    text = build_parser().format_help()
    for flag in ("--dataset", "--epochs", "--max-steps", "--batch-size", "--lr", "--warmup-steps", "--num-timesteps",
                 "--schedule", "--beta-start", "--beta-end", "--base-channels", "--ema-decay", "--p-uncond",
                 "--precision", "--device", "--seed", "--output-dir", "--save-every", "--sample-every", "--resume",
                 "--push-to-hub", "--upsample"):
        assert flag in text
    assert "(default: fashion-mnist)" in text
    args = ["--dataset", "digits", "--max-steps", "6", "--batch-size", "16", "--base-channels", "16",
            "--norm-groups", "8", "--patch-size", "1", "--num-timesteps", "50", "--output-dir", str(tmp_path / "c"),
            "--sample-every", "6", "--save-every", "3", "--no-progress", "--precision", "fp32",
            "--upsample", "subpixel"]
    assert main(args) == 0
    assert json.loads((tmp_path / "c" / "model" / "config.json").read_text())["unet"]["upsample"] == "subpixel"
    assert main(["--output-dir", str(tmp_path / "c"), "--resume", "--no-progress"]) == 0  # nothing left to do
    assert main(["--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--max-steps", "1"]) == 2


@pytest.mark.parametrize("changes", [
    {},
    {"max_steps": 5000, "base_channels": 32, "channel_mult": [1, 2, 2], "norm_groups": 8, "output_dir": "runs/x",
     "upsample": "subpixel"},
    {"epochs": 3, "max_steps": None, "hflip": False, "lr": 3e-4, "loss_weighting": "none", "precision": "fp32"},
    {"hflip": True, "attention_levels": [1], "init_from": "runs/a", "schedule": "linear", "beta_end": 0.03},
])
def test_the_recorded_train_command_reproduces_the_config(changes):
    """training.json records a `python train.py ...` command even when a run was started from Python."""
    import shlex

    from train import config_from_args

    cfg = TrainConfig(**changes)
    command = training.train_command(cfg)
    assert command.startswith("python train.py")
    assert config_from_args(shlex.split(command)[2:]) == cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_on_gloo(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(ROOT / "train.py"), "--dataset", "digits", "--max-steps", "8",
           "--batch-size", "32", "--base-channels", "16", "--norm-groups", "8", "--patch-size", "1",
           "--num-timesteps", "50", "--output-dir", str(out), "--sample-every", "8", "--save-every", "4",
           "--log-every", "2", "--no-progress", "--precision", "auto"]  # rank 0 decides, rank 1 takes it
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_state(out)["step"] == 8
    record = json.loads((out / "model" / "training.json").read_text())
    assert record["processes"] == 2
    assert len(losses(out)) == 4  # rank 0 alone writes the log
    Pipeline.from_pretrained(out / "model").generate([1], steps=3, seed=0)


def test_push_to_hub_uploads_the_model_dir(tmp_path, monkeypatch):
    import huggingface_hub

    from diffusion.hub import push_model_dir

    model_dir = train(tiny_run(tmp_path / "h", max_steps=5, sample_every=5, save_every=5))
    calls = {}
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: calls.setdefault("create", (repo_id, kw)) and
                        f"https://huggingface.co/{repo_id}")
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kw: calls.setdefault("upload", kw))
    url = push_model_dir(model_dir, "me/ddpm-digits")
    assert url.endswith("me/ddpm-digits") and calls["create"][0] == "me/ddpm-digits"
    assert calls["upload"]["folder_path"] == str(model_dir) and "model.safetensors" in calls["upload"]["allow_patterns"]
    from diffusion.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="not a Hugging Face Hub repo id"):
        push_model_dir(model_dir, "../../x")


def test_init_from_starts_a_new_run_from_trained_weights(tmp_path):
    source = Trainer(tiny_run(tmp_path / "src", max_steps=10))
    source.run()
    tuned = Trainer(tiny_run(tmp_path / "tuned", max_steps=10, lr=1e-4, init_from=str(tmp_path / "src")))
    assert tuned.step == 0
    for a, b in zip(source.model.state_dict().values(), tuned.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(TrainingError, match=r"neither a run directory \(state.pt\) nor a model directory"):
        Trainer(tiny_run(tmp_path / "x", init_from=str(tmp_path / "nowhere")))
    with pytest.raises(TrainingError, match="do not fit this architecture"):
        Trainer(tiny_run(tmp_path / "y", base_channels=32, init_from=str(tmp_path / "src")))


def test_init_from_a_model_directory_fine_tunes_its_exported_weights(tmp_path):
    source = Trainer(tiny_run(tmp_path / "src", max_steps=10))
    model_dir = source.run()  # config.json + model.safetensors: the EMA weights, as a shipped checkpoint holds
    tuned = Trainer(tiny_run(tmp_path / "tuned", max_steps=4, lr=1e-4, init_from=str(model_dir)))
    assert tuned.step == 0
    for net in (tuned.model, tuned.ema.model):  # both start from the exported EMA weights
        for (name, a), b in zip(source.ema.model.state_dict().items(), net.state_dict().values()):
            assert torch.equal(a, b), name
    record = json.loads((tuned.run() / "training.json").read_text())
    assert record["init_from"]["steps"] == 10  # the source's history travels with the fine-tuned model
    # A model trained for another diffusion process cannot be fine-tuned as if it were this one.
    with pytest.raises(TrainingError, match="another diffusion: schedule: model has 'cosine', this run 'linear'"):
        Trainer(tiny_run(tmp_path / "lin", schedule="linear", init_from=str(model_dir)))
    (model_dir / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(TrainingError, match="init-from .*not a readable safetensors file"):
        Trainer(tiny_run(tmp_path / "broken", init_from=str(model_dir)))


def test_init_from_grows_a_trained_model_by_attention_layers_that_start_as_the_identity(tmp_path):
    source = Trainer(tiny_run(tmp_path / "src", max_steps=10))
    source.run()
    grown = Trainer(tiny_run(tmp_path / "grown", max_steps=10, attention_levels=[1], init_from=str(tmp_path / "src")))
    new = set(grown.model.state_dict()) - set(source.model.state_dict())
    assert new and all(".attentions." in k for k in new)  # the down, middle and up attention layers of level 1
    x, t = torch.randn(4, 1, 16, 16), torch.tensor([0, 10, 50, 99])
    context = torch.eye(10)[:4]
    for old_net, new_net in ((source.model, grown.model), (source.ema.model, grown.ema.model)):
        with torch.no_grad():
            torch.testing.assert_close(new_net(x, t, context), old_net(x, t, context), rtol=0, atol=1e-6)
    grown.run()  # the new layers train: their output projections leave zero
    moved = [k for k in new if k.endswith("proj.weight") and grown.model.state_dict()[k].abs().max() > 0]
    assert moved
    # Shrinking (the source has layers this model lacks) is not growing: refused with the reason.
    with pytest.raises(TrainingError, match="do not fit this architecture.*unexpected"):
        Trainer(tiny_run(tmp_path / "shrunk", init_from=str(tmp_path / "grown")))
