"""The evaluator: Frechet distance, the data set classifier, and the evaluation table."""

import json

import numpy as np
import pytest
import torch

from diffusion import Pipeline
from diffusion.classifier import load_classifier, save_classifier, train_classifier
from diffusion.data import load_dataset
from diffusion.evaluate import SamplerSetting, balanced_subset, evaluate, frechet_distance, main as evaluate_main
from tests.conftest import needs_cxx


def test_frechet_distance_properties():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 8, generator=g)
    assert abs(frechet_distance(a, a)) < 1e-8
    shifted = a + 2.0
    assert frechet_distance(a, shifted) == pytest.approx(8 * 4.0, rel=1e-6)  # only the means differ
    b = torch.randn(500, 8, generator=g) * 3
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)


def test_frechet_distance_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(1)
    a = torch.randn(300, 6, generator=g) @ torch.randn(6, 6, generator=g)
    b = torch.randn(300, 6, generator=g) @ torch.randn(6, 6, generator=g) + 0.5
    ca, cb = np.cov(a.numpy().T), np.cov(b.numpy().T)
    covmean = linalg.sqrtm(ca @ cb).real
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + np.trace(ca + cb - 2 * covmean)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-5)


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory):
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = train_classifier(train, test, epochs=4, batch_size=64, width=16, log=lambda m: None)
    directory = save_classifier(tmp_path_factory.mktemp("clf") / "digits", model)
    return directory


def test_classifier_beats_chance_by_far_on_real_data(digits_classifier):
    clf = load_classifier(digits_classifier)
    assert clf.config.test_accuracy > 0.85  # chance is 0.1
    assert clf.config.hflip is False  # the data set's default (digits are not mirror-symmetric), recorded
    train = load_dataset("digits", "train")
    images, labels = balanced_subset(train, 20, seed=0)
    assert torch.bincount(labels).tolist() == [20] * 10


def test_evaluation_table(digits_classifier, tmp_path):
    # A 10-class 16x16 model on digits (random weights) gives a real, if poor, table.
    from diffusion.checkpoint import save_model_dir
    from diffusion.unet import UNet

    from .conftest import randomised, tiny_config

    config = tiny_config(num_classes=10)
    config.class_names = [str(i) for i in range(10)]
    model_dir = save_model_dir(tmp_path / "m", config, randomised(UNet(config.unet)).state_dict())
    pipe = Pipeline.from_pretrained(model_dir, precision="fp32")
    clf = load_classifier(digits_classifier)
    results = evaluate(pipe, clf, [SamplerSetting("ddim", 3), SamplerSetting("ddpm", 4)], [1.0, 2.0], per_class=5,
                       batch_size=25, log=lambda m: None)
    assert results["floor"]["frechet_distance"] > 0 and results["floor"]["real_test_accuracy"] > 0.7
    rows = results["rows"]
    assert [(r["sampler"], r["steps"], r["guidance_scale"]) for r in rows] == [
        ("ddim", 3, 1.0), ("ddim", 3, 2.0), ("ddpm", 4, 1.0), ("ddpm", 4, 2.0)]
    for r in rows:  # random weights: far from real data, at chance-level accuracy
        assert r["fd_ratio"] > 2 and 0 <= r["accuracy"] <= 0.5 and r["seconds_per_image"] > 0

    def ddim3(**kwargs):
        return evaluate(pipe, clf, [SamplerSetting("ddim", 3)], [1.0], per_class=5, batch_size=25, log=lambda m: None,
                        **kwargs)

    same, other = ddim3(sample_seed=0), ddim3(sample_seed=1)  # the samples' noise alone: same test draw and floor
    assert same["rows"][0] == {**rows[0], "seconds_per_image": same["rows"][0]["seconds_per_image"]}
    assert other["floor"] == same["floor"] and other["sample_seed"] == 1 and same["sample_seed"] == 0
    assert other["rows"][0]["frechet_distance"] != same["rows"][0]["frechet_distance"]
    out = tmp_path / "eval.json"
    assert evaluate_main(["--model", str(model_dir), "--classifier", str(digits_classifier), "--samplers", "ddim:2",
                          "--per-class", "3", "--out", str(out), "--save-to-model"]) == 0
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["steps"] == 2 and (model_dir / "evaluation.json").exists()
    assert evaluate_main(["--model", str(model_dir), "--classifier", str(digits_classifier), "--samplers", "dpm++:2",
                          "--spacing", "quadratic", "--guidance-interval", "0", "20", "--clip-x0", "off",
                          "--per-class", "3",
                          "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["sampler"] == "dpm++" and saved["spacing"] == "quadratic"
    assert saved["tuned_timesteps"] is None
    from diffusion.checkpoint import load_config

    config = load_config(model_dir)  # a tuned grid is recorded, and --untuned evaluates without it
    config.sampling.tuned_timesteps = {"2": [10, 49]}
    config.to_json_file(model_dir / "config.json")
    common = ["--model", str(model_dir), "--classifier", str(digits_classifier), "--samplers", "ddim:2",
              "--per-class", "3", "--out", str(out)]
    assert evaluate_main(common) == 0
    tuned = json.loads(out.read_text())
    assert tuned["tuned_timesteps"] == {"2": [10, 49]}
    assert evaluate_main([*common, "--untuned"]) == 0
    untuned = json.loads(out.read_text())
    assert untuned["tuned_timesteps"] is None and untuned["rows"][0]["frechet_distance"] != tuned["rows"][0][
        "frechet_distance"]
    assert saved["guidance_interval"] == [0, 20] and saved["clip_x0"] is False
    for bad in (["--samplers", "euler:3"], ["--guidance-interval", "9", "2"], ["--model", str(tmp_path / "none")],
                ["--classifier", str(tmp_path / "none")]):  # a usage error, not a traceback
        with pytest.raises(SystemExit) as exit_info:
            evaluate_main(["--model", str(model_dir), "--classifier", str(digits_classifier), *bad])
        assert exit_info.value.code == 2


def test_sampler_setting_parsing():
    assert SamplerSetting.parse("ddim:50:1") == SamplerSetting("ddim", 50, 1.0)
    assert SamplerSetting.parse("ddpm:1000").label == "DDPM 1000"
    assert SamplerSetting.parse("dpm++:20").short_label == "DPM++ 20"
    assert SamplerSetting.parse("dpm++:20:1").short_label == "DPM++ 20 eta 1"
    for bad in ("euler:10", "ddpm:20:1", "ddim"):
        with pytest.raises(ValueError, match="expected ddim:STEPS"):
            SamplerSetting.parse(bad)


def ten_class_run(tmp_path):
    """A run directory holding a randomised tiny 10-class model (the digits classifier's classes) and its config."""
    from diffusion.checkpoint import save_model_dir
    from diffusion.unet import UNet

    from .conftest import randomised, tiny_config

    config = tiny_config(num_classes=10)
    config.class_names = [str(i) for i in range(10)]
    model_dir = save_model_dir(tmp_path / "run" / "model", config, randomised(UNet(config.unet)).state_dict())
    return model_dir.parent, config


@needs_cxx
def test_compiled_release_evaluates_as_the_eager_one(digits_classifier, tmp_path):
    """release --compile compiles once and evaluates the defaults it writes (guidance picked, timesteps tuned)
    with the compiled network: the same picks and, up to float rounding, the same table as eager."""
    from diffusion.checkpoint import load_config
    from diffusion.release import release

    run, _ = ten_class_run(tmp_path)
    kwargs = dict(sweep_setting="ddim:3:0", table=["ddim:3:0", "ddpm:4"], per_class=3, tune_steps=[3],
                  classifier_dir=digits_classifier, log=lambda m: None)
    eager = release(run, tmp_path / "eager", [1.0, 2.0], **kwargs)
    compiled = release(run, tmp_path / "compiled", [1.0, 2.0], compile=True, **kwargs)
    assert load_config(tmp_path / "compiled").sampling == load_config(tmp_path / "eager").sampling
    for a, b in zip(compiled["rows"], eager["rows"]):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=0.04)  # one of 30 images may flip class
        assert a["frechet_distance"] == pytest.approx(b["frechet_distance"], rel=0.02)


def test_release_picks_defaults_and_writes_the_card(digits_classifier, tmp_path):
    from diffusion.checkpoint import load_config
    from diffusion.release import pick_best, release

    rows = [{"accuracy": 0.97, "frechet_distance": 0.5, "guidance_scale": 3.0},
            {"accuracy": 0.96, "frechet_distance": 0.3, "guidance_scale": 2.0},
            {"accuracy": 0.90, "frechet_distance": 0.1, "guidance_scale": 1.0}]
    assert pick_best(rows, 0.95)["guidance_scale"] == 2.0  # lowest FD among those accurate enough
    assert pick_best(rows, 0.99)["guidance_scale"] == 3.0  # none is: the most accurate

    run, config = ten_class_run(tmp_path)
    out = tmp_path / "shipped"
    results = release(run, out, [1.0, 2.0], sweep_setting="ddim:3:0", table=["ddim:3:0", "ddpm:4"], per_class=3,
                      spacing="quadratic", guidance_interval=[0, 30], clip_x0=False,
                      classifier_dir=digits_classifier, log=lambda m: None)
    assert len(results["guidance_sweep"]) == 2 and len(results["rows"]) == 2
    assert (results["spacing"], results["guidance_interval"], results["clip_x0"]) == ("quadratic", [0, 30], False)
    shipped = load_config(out)
    assert shipped.sampling.steps == 3 and shipped.sampling.guidance_scale in (1.0, 2.0)
    assert shipped.sampling.spacing == "quadratic" and shipped.sampling.guidance_interval == [0, 30]
    assert not shipped.clip_x0
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: mit") and "| DDIM | 3 |" in card and "floor" in card
    assert "at timesteps 0..30 (unguided above), quadratic timestep spacing, predicted x0 not clipped" in card
    assert (out / "samples.png").exists() and (out / "evaluation.json").exists()
    assert shipped.sampling.tuned_timesteps is None and results["tuned_timesteps"] is None

    # --tune-steps: grids tuned for the picked guidance are stored and the table is evaluated with them.
    results = release(run, out, [1.0, 2.0], sweep_setting="ddim:3:0", table=["ddim:3:0"], per_class=3,
                      tune_steps=[3, 5], sweep_seeds=[1, 2], classifier_dir=digits_classifier, log=lambda m: None)
    # A sweep over two seeds: each scale's row averages its two per-seed rows, and the defaults come from those.
    assert [r["seeds"] for r in results["guidance_sweep"]] == [[1, 2], [1, 2]]
    for row in results["guidance_sweep"]:
        per_seed = [r for r in results["guidance_sweep_by_seed"] if r["guidance_scale"] == row["guidance_scale"]]
        assert [r["seed"] for r in per_seed] == [1, 2]
        assert row["frechet_distance"] == pytest.approx(sum(r["frechet_distance"] for r in per_seed) / 2, abs=1e-4)
    assert load_config(out).sampling.guidance_scale == pick_best(results["guidance_sweep"], 0.95)["guidance_scale"]
    grids = load_config(out).sampling.tuned_timesteps
    assert sorted(grids) == ["3", "5"] and len(grids["3"]) == 3 and grids["5"][-1] == config.num_timesteps - 1
    assert results["tuned_timesteps"] == grids
