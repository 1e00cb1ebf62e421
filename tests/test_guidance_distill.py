"""Guidance distillation (Meng et al. 2023): the grown network starts as its teacher, a distilled network guides in
one pass inside its range and falls back to two outside it, and a short run on the real digits learns the guided
output, exports a model that says what it is, and resumes."""

from __future__ import annotations

import json

import pytest
import torch

from diffusion import Pipeline
from diffusion.checkpoint import load_model_dir, save_model_dir
from diffusion.config import ConfigError, DiffusionConfig
from diffusion.data import to_model_range
from diffusion.distill import DistillConfig, Distiller, grow_guidance_input, main
from diffusion.guidance import make_denoiser, passes_per_guided_step, passes_per_image
from diffusion.model_card import model_card
from diffusion.samplers import make_plan
from diffusion.training import TrainingError
from diffusion.unet import UNet
from tests.conftest import needs_cxx, randomised, tiny_config


def distilled_pair(w_range=(1.0, 3.0)) -> tuple[DiffusionConfig, UNet, DiffusionConfig, UNet]:
    """A random teacher and its grown student, whose guidance embedding is made random too (as if trained)."""
    config = tiny_config()
    teacher = randomised(UNet(config.unet)).eval()
    grown, student = grow_guidance_input(config, teacher, list(w_range))
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        for p in student.guidance_mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return config, teacher, grown, student.eval()


def test_the_grown_student_predicts_what_its_teacher_does_at_every_w():
    config = tiny_config()
    teacher = randomised(UNet(config.unet)).eval()
    grown, student = grow_guidance_input(config, teacher, [1, 3])
    assert grown.unet.guidance_range == [1.0, 3.0] and config.unet.guidance_range is None  # the teacher's is kept
    x, t, ctx = torch.randn(3, 1, 16, 16), torch.tensor([3, 20, 49]), torch.eye(3)
    with torch.no_grad():
        for w in (None, torch.full((3,), 1.0), torch.tensor([0.5, 2.0, 7.0])):
            torch.testing.assert_close(student.eval()(x, t, ctx, guidance=w), teacher(x, t, ctx))
    with pytest.raises(TrainingError, match="distilled already"):
        grow_guidance_input(grown, student, [1, 3])
    with pytest.raises(TrainingError, match="unconditional"):
        unconditional = tiny_config(num_classes=0)
        grow_guidance_input(unconditional, UNet(unconditional.unet), [1, 3])


def test_guidance_input_is_checked():
    _, teacher, grown, student = distilled_pair()
    x, t, ctx = torch.randn(2, 1, 16, 16), torch.tensor([3, 20]), torch.eye(3)[:2]
    with pytest.raises(ValueError, match="not guidance-distilled"):
        teacher(x, t, ctx, guidance=torch.ones(2))
    with pytest.raises(ValueError, match=r"guidance must have shape \(B,\)"):
        student(x, t, ctx, guidance=torch.ones(3))
    for bad in ([3, 1], [1], [1, float("inf")], "1-3", [True, 3]):
        data = grown.to_dict()
        data["unet"]["guidance_range"] = bad
        with pytest.raises(ConfigError, match="guidance_range"):
            DiffusionConfig.from_dict(data)
    assert DiffusionConfig.from_dict(json.loads(json.dumps(grown.to_dict()))) == grown  # travels in config.json


def test_a_distilled_network_guides_in_one_pass_inside_its_range_and_in_two_outside_it():
    config, _, grown, student = distilled_pair()
    schedule = Pipeline(student, grown, precision="fp32").schedule
    ctx = torch.eye(3)[[0, 2]]
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([30, 30])
    calls = []
    hook = student.register_forward_hook(lambda m, args, kwargs, out: calls.append(
        (args[0].shape[0], kwargs.get("guidance"))), with_kwargs=True)

    def out(w, interval=None, t=t, context=ctx):
        calls.clear()
        denoise = make_denoiser(student, schedule, context, guidance_scale=w, clip_x0=False,
                                guidance_interval=interval, guidance_range=grown.unet.guidance_range)
        return denoise(x, t)[0]

    with torch.no_grad():
        inside = out(2.5)
        assert len(calls) == 1 and calls[0][0] == 2 and calls[0][1].tolist() == [2.5, 2.5]  # one pass of B

        def x0_at(w):
            return schedule.split_prediction(x, t, student(x, t, ctx, guidance=torch.full((2,), w)), "v")[0]

        torch.testing.assert_close(inside, x0_at(2.5))
        # outside the guidance interval: w = 1, the conditional prediction, still one pass
        torch.testing.assert_close(out(2.5, interval=(0, 10)), x0_at(1.0))
        # outside the distilled range: classifier-free guidance from the network's own two predictions at w = 1
        outside = out(5.0)
        assert [n for n, _ in calls] == [4] and calls[0][1] is None
        cond, uncond = x0_at(1.0), out(1.0, context=torch.zeros_like(ctx))
        torch.testing.assert_close(outside, uncond + 5.0 * (cond - uncond), atol=1e-5, rtol=1e-5)
    hook.remove()
    assert passes_per_guided_step(2.5, True, [1, 3]) == 1 and passes_per_guided_step(5.0, True, [1, 3]) == 2
    assert passes_per_guided_step(2.5, True, None) == 2
    plan = make_plan("ddim", schedule, 6, "trailing")
    assert passes_per_image(plan, 2.5, None, [1, 3]) == 6 and passes_per_image(plan, 5.0, None, [1, 3]) == 12
    assert passes_per_image(plan, 5.0, None, [1, 3], conditional=False) == 6  # no class: nothing to guide


@pytest.mark.parametrize("w", [2.5, 5.0])  # inside the distilled range, outside it
def test_a_row_with_no_class_gets_the_same_x0_whatever_else_is_in_its_batch(w):
    """A batch with no class in it skips the unconditional pass, but a distilled network still gets w (its no-class
    prediction depends on it): a no-class row must not change with the rows beside it."""
    config, _, grown, student = distilled_pair()
    schedule = Pipeline(student, grown, precision="fp32").schedule
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([30, 30])
    with torch.no_grad():
        def x0(context):
            return make_denoiser(student, schedule, context, guidance_scale=w, clip_x0=False,
                                 guidance_range=grown.unet.guidance_range)(x, t)[0][0]

        alone, beside_a_class = x0(torch.zeros(2, 3)), x0(torch.eye(3)[[1, 2]] * torch.tensor([[0.0], [1.0]]))
        torch.testing.assert_close(alone, beside_a_class, atol=1e-5, rtol=1e-5)
        at_one = make_denoiser(student, schedule, torch.zeros(2, 3), guidance_scale=1.0, clip_x0=False,
                               guidance_range=grown.unet.guidance_range)(x, t)[0][0]
    if w == 2.5:  # the distilled network's no-class prediction does depend on w
        assert (alone - at_one).abs().max() > 1e-3


def test_the_pipeline_of_a_distilled_model_runs_one_pass_per_guided_step(tmp_path):
    _, _, grown, student = distilled_pair()
    pipe = Pipeline.from_pretrained(save_model_dir(tmp_path / "gd", grown, student.state_dict()), precision="fp32")
    images = []
    hook = pipe.model.register_forward_hook(lambda m, args, out: images.append(args[0].shape[0]))
    pipe.generate([0, 1, 2], steps=5, guidance_scale=2.0, seed=0)
    assert images == [3] * 5
    images.clear()
    pipe.generate([0, 1, 2], steps=5, guidance_scale=4.0, seed=0)
    assert images == [6] * 5
    hook.remove()
    from diffusion.lab import model_summary
    assert "guidance-distilled: one pass per guided step for w in [1, 3]" in model_summary(pipe)


def fixed_batch_loss(d: Distiller) -> float:
    g = torch.Generator().manual_seed(123)
    x0 = to_model_range(d.data.images[:64])
    t = torch.randint(0, d.config.num_timesteps, (64,), generator=g)
    w = 1 + 2 * torch.rand(64, generator=g)
    with torch.no_grad():
        return float(d.guidance_loss(x0, d.data.context[:64], t, w, torch.randn(x0.shape, generator=g)))


def test_distilling_the_guidance_on_digits_learns_it_exports_and_resumes(tmp_path):
    config = tiny_config(num_classes=10)  # the digits' ten classes
    teacher_dir = save_model_dir(tmp_path / "teacher", config, randomised(UNet(config.unet)).state_dict())
    (teacher_dir / "examples").mkdir()
    (teacher_dir / "examples" / "0_0.png").write_bytes(b"a real example image")
    cfg = DistillConfig(model=str(teacher_dir), guidance=[1.0, 3.0], output_dir=str(tmp_path / "run"), max_steps=30,
                        batch_size=32, lr=3e-4, warmup_steps=0, ema_decay=0.0, log_every=10, save_every=10,
                        progress=False, precision="fp32")
    d = Distiller(cfg)
    before = fixed_batch_loss(d)
    out = d.run()
    assert fixed_batch_loss(d) < 0.7 * before
    exported, student = load_model_dir(out)
    assert exported.unet.guidance_range == [1.0, 3.0]
    exported.unet.guidance_range = None
    assert exported == config  # everything else travels unchanged, the data set's example images too
    assert (out / "examples" / "0_0.png").read_bytes() == b"a real example image"
    record = json.loads((out / "training.json").read_text())["distillation"]
    assert record["guidance_range"] == [1.0, 3.0] and record["steps"] == 30 and "student_grids" not in record
    log = [json.loads(line) for line in (tmp_path / "run" / "distill_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and "denoising_loss" not in log[0]
    card = model_card(out)
    assert "Guidance distillation (Meng et al. 2023) for guidance scales 1 to 3" in card
    assert "a guidance-scale input for w in [1, 3]" in card
    assert f"; {sum(p.numel() for p in student.parameters())} parameters" in card  # counted, not "?"

    cfg.max_steps, cfg.resume = 32, True
    resumed = Distiller(cfg)
    assert resumed.step == 30
    torch.testing.assert_close(resumed.ema.model.state_dict(), student.state_dict())
    resumed.run()
    with pytest.raises(TrainingError, match="start a new --output-dir"):  # another range is another run
        Distiller(DistillConfig(model=str(teacher_dir), guidance=[1.0, 4.0], output_dir=str(tmp_path / "run"),
                                resume=True))


def test_bad_guidance_arguments_are_clear_errors(tmp_path, capsys):
    config = tiny_config(num_classes=10)
    teacher_dir = save_model_dir(tmp_path / "teacher", config, randomised(UNet(config.unet)).state_dict())
    with pytest.raises(SystemExit):
        main(["--model", str(teacher_dir), "--steps", "5", "--guidance", "1", "3"])
    assert "give one of them" in capsys.readouterr().err
    for lo, hi in [("3", "1"), ("1", "inf")]:
        assert main(["--model", str(teacher_dir), "--guidance", lo, hi, "--output-dir", str(tmp_path / "o")]) == 2
        assert "--guidance must be two finite numbers" in capsys.readouterr().err


@needs_cxx
def test_a_compiled_distilled_network_needs_no_compile_after_warm_up(tmp_path, monkeypatch):
    """warm_up compiles both paths of a guidance-distilled network (one pass with its guidance input, and the plain
    conditional / two-pass path) for every batch size: no request waits for a compile, and the images are eager's."""
    _, _, grown, student = distilled_pair()
    directory = save_model_dir(tmp_path / "gd", grown, student.state_dict())
    eager = Pipeline.from_pretrained(directory, precision="fp32")
    compiled = Pipeline.from_pretrained(directory, precision="fp32", compile=True)
    assert compiled.warm_up() > 0 and compiled.compiled
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    for labels, w in (([0, 1, 2], 2.0), ([1], 1.0), ([0, 2, 1, 0, 2], 2.5), ([0, 1], 5.0)):
        torch.testing.assert_close(compiled.generate(labels, steps=4, guidance_scale=w, seed=5),
                                   eager.generate(labels, steps=4, guidance_scale=w, seed=5), atol=1e-4, rtol=0)
