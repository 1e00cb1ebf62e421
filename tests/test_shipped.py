"""The models shipped in checkpoints/: each loads from its directory alone, generates, and carries its model card,
evaluation, sample grid and forward-process examples."""

import json
from pathlib import Path

import pytest

from diffusion import Pipeline
from diffusion.classifier import load_classifier
from diffusion.guidance import passes_per_guided_step
from diffusion.inputs import InputError, Limits, check_work

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(p.parent for p in (ROOT / "checkpoints").glob("*/config.json"))


def test_a_default_model_ships():
    assert (ROOT / "checkpoints" / "fashion-mnist" / "config.json").exists()


def test_the_work_cap_admits_a_full_guided_grid_of_the_default_model():
    pipe = Pipeline.from_pretrained(ROOT / "checkpoints" / "fashion-mnist")
    check_work(pipe, Limits().max_images, 500, 2.0, Limits())  # 16 images x 500 guided steps
    with pytest.raises(InputError, match="at most 505 steps for 16 images"):
        check_work(pipe, Limits().max_images, 1000, 2.0, Limits())


@pytest.mark.parametrize("directory", MODELS, ids=[p.name for p in MODELS])
def test_shipped_model(directory):
    pipe = Pipeline.from_pretrained(directory, precision="fp32")
    images = pipe.generate(list(range(len(pipe.class_names))), steps=2, seed=0)
    assert images.shape == (len(pipe.class_names), *pipe.image_shape)
    for name in ("README.md", "samples.png", "evaluation.json", "training.json"):
        assert (directory / name).is_file(), name
    card = (directory / "README.md").read_text()
    assert card.startswith("---\n") and "license:" in card and "datasets:" in card
    assert "## Evaluation" in card and "## Training" in card
    evaluation = json.loads((directory / "evaluation.json").read_text())
    settings = {(r["sampler"], r["steps"], r["eta"]) for r in evaluation["rows"]}
    assert {("ddim", 20, 0.0), ("ddim", 50, 0.0), ("ddpm", 1000, 0.0)} <= settings
    d = pipe.config.sampling
    default = [r for r in evaluation["rows"] if (r["sampler"], r["steps"], r["eta"], r["guidance_scale"]) ==
               (d.sampler, d.steps, d.eta, d.guidance_scale)]
    assert default, "the saved sampling defaults were evaluated"
    recorded = {k: evaluation[k] for k in ("spacing", "guidance_interval", "clip_x0") if k in evaluation}
    assert recorded == {k: v for k, v in (("spacing", d.spacing), ("guidance_interval", d.guidance_interval),
                                          ("clip_x0", pipe.config.clip_x0)) if k in recorded}, \
        "evaluated with the sampling settings that config.json ships"
    assert evaluation.get("tuned_timesteps") == d.tuned_timesteps, "evaluated with the DDIM grids config.json ships"
    assert all(r["accuracy"] >= 0.95 for r in default), "the defaults reach the class-accuracy target"
    if pipe.config.unet.guidance_range is not None:  # guidance-distilled: its defaults guide in one pass per step
        assert passes_per_guided_step(d.guidance_scale, True, pipe.config.unet.guidance_range) == 1
    training = json.loads((directory / "training.json").read_text())
    if pipe.config.dataset == "fashion-mnist":  # its shoes face one way: a flip-trained model draws half mirrored
        while "horizontal_flips" not in training:  # a distillation (no augmentation): the training run it started from
            training = training["init_from"]
        assert training["horizontal_flips"] is False, "the last training phase ran without flips"
    assert len(list((directory / "examples").glob("*.png"))) >= len(pipe.class_names)
    for f in directory.rglob("*"):
        assert f.stat().st_size < 50 * 2**20, f


def test_classifiers_record_their_accuracy():
    for directory in (ROOT / "checkpoints" / "classifiers").iterdir():
        clf = load_classifier(directory)
        assert clf.config.test_accuracy > 0.85 and clf.config.train_command.startswith("python -m diffusion")
