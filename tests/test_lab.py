"""The app's handler functions, called directly: shapes, determinism, timings, bad input."""

import io
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from diffusion import lab
from diffusion.images import OutputFiles, grid_array
from diffusion.inputs import InputError, Limits, check_work, class_context
from diffusion.pipeline import Pipeline
from diffusion.registry import ModelRegistry
from diffusion.unet import UNet

from .conftest import tiny_config

GOOD = dict(model="tiny", sampler="ddim", steps=5, eta=0.0, guidance_scale=2.0, seed=1, random_seed=False,
            num_images=4, class_mode="class", class_a="class 1", class_b="class 2", mix=0.5)


@pytest.fixture
def registry(checkpoints):
    return ModelRegistry(checkpoints, precision="fp32")


@pytest.fixture
def outputs(tmp_path):
    return OutputFiles(tmp_path / "outputs", keep=50)


def test_generate_streams_and_finishes(registry, outputs):
    updates = list(lab.generate_stream(registry, outputs, **GOOD))
    assert len(updates) == 5  # one live frame per step, the last with the results
    assert all(u.final is None for u in updates[:-1])
    last = updates[-1]
    assert last.final.dtype == np.uint8 and last.final.ndim == 3 and last.seed == 1
    assert "5 steps" in last.status and "steps/s" in last.status
    assert Image.open(last.png_path).size[0] > 16
    gif = Image.open(last.gif_path)
    assert gif.n_frames == 5
    again = list(lab.generate_stream(registry, outputs, **GOOD))[-1]
    assert np.array_equal(again.final, last.final)  # fixed seed -> same images


def test_random_seed_is_reported(registry, outputs):
    a = list(lab.generate_stream(registry, outputs, **{**GOOD, "random_seed": True}))[-1]
    assert f"seed {a.seed}" in a.status
    fixed = list(lab.generate_stream(registry, outputs, **{**GOOD, "seed": a.seed}))[-1]
    assert np.array_equal(fixed.final, a.final)  # the reported seed reproduces the random result


def test_class_panel_modes(registry, outputs):
    pipe = registry.get("tiny")
    assert class_context(pipe, "class", "class 2", "class 0", 0.3) == [0.0, 0.0, 1.0]
    assert class_context(pipe, "mix", "class 2", "class 0", 0.25) == [0.25, 0.0, 0.75]
    assert class_context(pipe, "none", None, None, 0.5) == [0.0, 0.0, 0.0]
    mixed = list(lab.generate_stream(registry, outputs, **{**GOOD, "class_mode": "mix"}))[-1]
    plain = list(lab.generate_stream(registry, outputs, **GOOD))[-1]
    assert not np.array_equal(mixed.final, plain.final)


def test_ddpm_with_fewer_steps(registry, outputs):
    last = list(lab.generate_stream(registry, outputs, **{**GOOD, "sampler": "ddpm", "steps": 10}))[-1]
    assert "DDPM · 10 steps" in last.status


def test_dpm_solver_pp_in_the_app(registry, outputs):
    last = list(lab.generate_stream(registry, outputs, **{**GOOD, "sampler": "dpm++", "steps": 6}))[-1]
    assert "DPM++ · 6 steps" in last.status and last.final is not None


def test_compare_races_from_the_same_noise(registry, outputs):
    updates = list(lab.compare_stream(registry, "tiny", 50, 5, 0.0, 2.0, 3, False, 2, "class", "class 0",
                                      "class 1", 0.5))
    last = updates[-1]
    assert "DDIM took" in last.readout and "x faster" in last.readout
    assert "step 5/5" in last.ddim_status and "step 50/50" in last.ddpm_status
    assert 0 < last.ddim_seconds < last.ddpm_seconds
    assert f"{last.ddpm_seconds / last.ddim_seconds:.1f}x faster" in last.readout
    assert [caption.split(" steps")[0] for _, caption in last.strip] == ["DDIM 5", "DDIM 10", "DDIM 20", "DDIM 50"]
    # DDIM finishes first in the race: when it is done, DDPM is still running.
    first_done = next(u for u in updates if "✓" in u.ddim_status)
    assert "✓" not in first_done.ddpm_status
    # the strip's 5-step result is the DDIM result of the race's noise with 5 steps
    pipe = registry.get("tiny")
    x_T = pipe.noise(2, seed=3)
    again = pipe.generate([[1.0, 0, 0]] * 2, sampler="ddim", steps=5, guidance_scale=2.0, seed=3, x_T=x_T)
    assert np.array_equal(last.strip[0][0], grid_array(again, Limits().display_size // 2))


def test_compare_readout_when_ddim_is_the_slower_one(registry):
    """DDPM with 1 step against DDIM with 20 and eta 0.5: the readout says slower, and no deterministic path."""
    last = list(lab.compare_stream(registry, "tiny", 1, 20, 0.5, 1.0, 3, False, 1, "class", "class 0", "class 1",
                                   0.5))[-1]
    assert last.ddim_seconds > last.ddpm_seconds
    assert f"{last.ddim_seconds / last.ddpm_seconds:.1f}x slower" in last.readout and "faster" not in last.readout
    assert "fresh noise (eta = 0.5)" in last.readout and "deterministic" not in last.readout


def test_forward_process(registry, outputs):
    pipe = registry.get("tiny")
    examples = lab.example_choices(pipe)
    assert examples[0] == "class 0 #0" and len(examples) == 6
    r = lab.forward_process(registry, outputs, "tiny", examples[2], None, 0, 0)
    assert "t = 0 of 50" in r.info and "class context: class 1" in r.info
    clean_vs_t0 = np.abs(r.x0.astype(int) - r.x_t.astype(int)).mean()
    r_late = lab.forward_process(registry, outputs, "tiny", examples[2], None, 49, 0)
    assert clean_vs_t0 < np.abs(r_late.x0.astype(int) - r_late.x_t.astype(int)).mean()
    assert Image.open(r.gif_path).n_frames == 40


def test_forward_with_upload(registry, outputs, tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
    r = lab.forward_process(registry, outputs, "tiny", None, str(path), 10, 0)
    assert "no class context" in r.info


@pytest.mark.parametrize("deep", [np.uint16, np.int32, np.float32])
def test_an_upload_deeper_than_8_bits_is_scaled_not_clipped(registry, tmp_path, deep):
    """A 16-bit PNG (PIL mode I;16), a 32-bit integer and a float image in [0, 1] read as their 8-bit equivalent
    (PIL's convert("L") alone clips 16-bit values at 255: an almost white image)."""
    levels = np.tile(np.linspace(0, 255, 16).round(), (16, 1))  # (16, 16) grey ramp, the tiny model's size
    shallow, path = tmp_path / "8bit.png", tmp_path / ("deep.png" if deep == np.uint16 else "deep.tiff")
    Image.fromarray(levels.astype(np.uint8)).save(shallow)
    deep_values = {np.uint16: levels * 257, np.int32: levels * 257, np.float32: levels / 255}[deep]
    Image.fromarray(deep_values.astype(deep)).save(path)
    pipe = registry.get("tiny")
    want, got = (lab.source_image(pipe, None, str(f), Limits())[0] for f in (shallow, path))
    assert (got - want).abs().max() * 127.5 < 0.51  # within rounding of one grey level


@pytest.mark.parametrize("bad, message", [
    (dict(steps=0), "steps must be an integer from 1 to 50"),
    (dict(steps=10**9), "steps must be an integer from 1 to 50"),
    (dict(steps=2.5), "steps must be an integer"),
    (dict(guidance_scale=math.nan), "guidance scale must be a number from 0 to 20"),
    (dict(guidance_scale=math.inf), "guidance scale"),
    (dict(eta=-0.1), "eta must be a number from 0 to 1"),
    (dict(class_a="unicorn"), "class must be one of class 0, class 1, class 2"),
    (dict(class_mode="mix", class_b=None), "second class must be one of"),
    (dict(class_mode="all"), "class mode must be one of class, mix, none"),
    (dict(num_images=10**6), "number of images must be an integer from 1 to 16"),
    (dict(sampler="euler"), "sampler must be one of ddim, ddpm"),
    (dict(seed=-5), "seed must be an integer from 0"),
    (dict(seed="12"), "seed must be an integer"),
    (dict(model="../../etc/passwd"), "unknown model"),
    (dict(model="x" * 500), "model name too long"),
    (dict(model=""), "choose a model"),
    (dict(num_images=16, sampler="ddpm", steps=50, mix=0.5), None),
])
def test_bad_input_gets_a_clear_error(registry, outputs, bad, message):
    args = {**GOOD, **bad}
    if message is None:  # within limits: runs
        assert list(lab.generate_stream(registry, outputs, **args))[-1].final is not None
        return
    with pytest.raises(InputError, match=message):
        list(lab.generate_stream(registry, outputs, **args))


def test_work_cap(registry, outputs):
    flops = registry.get("tiny").flops_per_image
    limits = lambda passes: Limits(max_tflop=passes * flops / 1e12)  # noqa: E731 - a cap of this many image passes
    args = {**GOOD, "steps": 50, "num_images": 16}  # 800 image passes unguided, 1600 guided
    with pytest.raises(InputError, match="too much work"):
        list(lab.generate_stream(registry, outputs, **args, limits=limits(100)))
    with pytest.raises(InputError, match=r"x 2 \(guidance\) x .* at most 31 steps for 16 images"):
        list(lab.generate_stream(registry, outputs, **args, limits=limits(1000)))
    last = list(lab.generate_stream(registry, outputs, **{**args, "guidance_scale": 1.0}, limits=limits(1000)))[-1]
    assert last.final is not None  # without guidance the same request is half the work
    images = []  # and so is asking for no class: nothing to guide toward, one pass per step at any guidance
    hook = registry.get("tiny").model.register_forward_hook(lambda m, a, out: images.append(a[0].shape[0]))
    last = list(lab.generate_stream(registry, outputs, **{**args, "class_mode": "none"}, limits=limits(1000)))[-1]
    hook.remove()
    assert last.final is not None and sum(images) == 800
    # an unconditional model makes one pass per step at any guidance scale
    config = tiny_config(num_classes=0)
    unconditional = Pipeline(UNet(config.unet), config)
    cap = Limits(max_tflop=800 * unconditional.flops_per_image / 1e12)
    check_work(unconditional, 16, 50, 2.0, cap)
    with pytest.raises(InputError, match=r"16 images x 51 steps x 0\.\d+ GFLOP .* at most 50 steps for 16 images"):
        check_work(unconditional, 16, 51, 2.0, cap)


def test_work_cap_counts_the_comparison_strip_apart(registry):
    flops = registry.get("tiny").flops_per_image
    # 2 images x (50 + 5 chosen + 85 in the strip of DDIM 5, 10, 20, 50) steps x 2 (guidance) = 560 image passes
    args = ("tiny", 50, 5, 0.0, 2.0, 3, False, 2, "class", "class 0", "class 1", 0.5)
    with pytest.raises(InputError, match=r"2 images x \(55 DDPM \+ DDIM steps \+ 85 for the DDIM strip\) x 2 "
                                         r"\(guidance\) .* at most 15 DDPM \+ DDIM steps for 2 images"):
        list(lab.compare_stream(registry, *args, limits=Limits(max_tflop=400 * flops / 1e12)))
    with pytest.raises(InputError, match="2 images leave no room for even one DDPM"):
        list(lab.compare_stream(registry, *args, limits=Limits(max_tflop=300 * flops / 1e12)))
    assert list(lab.compare_stream(registry, *args, limits=Limits(max_tflop=560 * flops / 1e12)))[-1].strip


def test_a_model_too_large_for_the_cap_is_refused_with_a_reason(registry, outputs):
    limits = Limits(max_tflop=0.5 * registry.get("tiny").flops_per_image / 1e12)
    with pytest.raises(InputError, match="this model is too large for this server: one step over one image is"):
        lab.forward_process(registry, outputs, "tiny", "class 0 #0", None, 10, 0, limits=limits)
    with pytest.raises(InputError, match=r"too large for this server: one step over one image x 2 \(guidance\) is"):
        list(lab.generate_stream(registry, outputs, **{**GOOD, "num_images": 1}, limits=limits))


def png_with_a_broken_chunk() -> bytes:
    """A real PNG of noise whose IDAT length is off: decoding runs past the image data into bytes it reads as a
    chunk with a garbage type, and Pillow raises SyntaxError ("broken PNG file"), not OSError."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[data.find(b"IDAT") - 1] ^= 0x55  # the low byte of the IDAT chunk's length
    with pytest.raises(SyntaxError):
        Image.open(io.BytesIO(bytes(data))).load()
    return bytes(data)


@pytest.mark.parametrize("content, message", [
    (b"not an image at all", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "not an image"),
    (png_with_a_broken_chunk, "not an image"),
])
def test_bad_uploads(registry, outputs, tmp_path, content, message):
    path = tmp_path / "upload.png"
    path.write_bytes(content() if callable(content) else content)
    with pytest.raises(InputError, match=message):
        lab.forward_process(registry, outputs, "tiny", None, str(path), 10, 0)


def test_error_messages_hide_server_paths_but_not_repo_ids():
    from diffusion.inputs import hide_paths

    assert hide_paths("/srv/app/checkpoints/m/config.json: missing") == "m/config.json: missing"
    assert hide_paths("'/home/u/.cache/x/model.safetensors' is truncated") == "'x/model.safetensors' is truncated"
    for kept in ("cannot download 'me/does-not-exist' from the Hub", "a Hub repo id (owner/name)", "runs/x/model"):
        assert hide_paths(kept) == kept


def test_oversized_upload(registry, outputs, tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(big)
    with pytest.raises(InputError, match="at most 1000000 pixels"):
        lab.forward_process(registry, outputs, "tiny", None, str(big), 10, 0, limits=Limits(max_upload_pixels=10**6))
    with pytest.raises(InputError, match="at most 0 MB"):
        lab.forward_process(registry, outputs, "tiny", None, str(big), 10, 0, limits=Limits(max_upload_bytes=10))


def test_concurrent_requests_load_a_model_once_and_a_failed_load_can_be_retried(checkpoints, monkeypatch):
    registry = ModelRegistry(checkpoints, precision="fp32")
    real_load, loads, fail = registry._load, [], [True]

    def slow_load(name):
        loads.append(name)
        time.sleep(0.2)  # every other request arrives while this one loads
        if fail[0]:
            fail[0] = False
            raise OSError("disk hiccup")
        return real_load(name)

    monkeypatch.setattr(registry, "_load", slow_load)
    with pytest.raises(OSError, match="disk hiccup"):
        registry.get("tiny")
    with ThreadPoolExecutor(8) as pool:
        pipes = list(pool.map(lambda _: registry.get("tiny"), range(8)))
    assert loads == ["tiny", "tiny"] and all(p is pipes[0] for p in pipes)  # the failure, then one load for all 8
    assert registry.get("tiny") is pipes[0] and registry._loading == {}


def test_model_info(registry, outputs):
    pipe = registry.get("tiny")
    assert "3 classes" in lab.model_summary(pipe) and lab.model_summary(pipe).endswith("fp32 on cpu (asked for)")
    assert lab.evaluation_rows(pipe) == []
    s = pipe.config.sampling  # tuned timesteps are DDIM's only: the summary says which grid the default runs on
    s.steps, s.spacing, s.tuned_timesteps = 5, "quadratic", {"5": [3, 10, 20, 35, 49]}
    for sampler, grid in [("ddim", "tuned"), ("dpm++", "quadratic"), ("ddpm", "quadratic")]:
        s.sampler = sampler
        assert f"{sampler.upper()} 5 steps ({grid} timesteps)" in lab.model_summary(pipe)


GOOD_ROW = dict(sampler="ddim", steps=20, eta=0.0, guidance_scale=1.25, seconds_per_image=0.02, fd_ratio=1.7,
                accuracy=0.95)


@pytest.mark.parametrize("evaluation, rows", [
    ({"rows": None}, 0), ({"rows": 5}, 0), ({"rows": "ddim"}, 0), ([1, 2], 0),
    ({"rows": [{**GOOD_ROW, "sampler": 1}, GOOD_ROW, None, {**GOOD_ROW, "steps": "many"}]}, 1),
])
def test_a_malformed_evaluation_file_leaves_the_model_usable(checkpoints, evaluation, rows):
    (checkpoints / "tiny" / "evaluation.json").write_text(json.dumps(evaluation))
    registry = ModelRegistry(checkpoints, precision="fp32")
    pipe = registry.get("tiny")
    assert len(lab.evaluation_rows(pipe)) == rows  # malformed rows skipped, the good one kept


def test_example_files_with_odd_names_are_skipped(checkpoints):
    examples = checkpoints / "tiny" / "examples"
    for odd in ("\u00b2_1.png", "x_1.png", "7_1.png", "_1.png"):  # superscript two, no class, class out of range
        Image.new("L", (8, 8)).save(examples / odd)
    pipe = ModelRegistry(checkpoints, precision="fp32").get("tiny")
    assert len(lab.example_choices(pipe)) == 6  # the six real ones only


def test_a_broken_model_directory_does_not_stop_the_app(checkpoints):
    broken = checkpoints / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"unet": {"dropout": "lots"}}')
    registry = ModelRegistry(checkpoints)
    assert registry.names() == ["tiny"]  # skipped, the rest is served


def test_output_files_are_bounded(tmp_path):
    outputs = OutputFiles(tmp_path / "out", keep=3)
    paths = []
    for i in range(6):
        p = outputs.path("x", ".png")
        p.write_bytes(b"png")
        paths.append(p)
    (tmp_path / "out" / ".y.png.tmp").write_bytes(b"in flight")
    outputs.path("x", ".png")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert len(names - {".y.png.tmp"}) <= 3 and ".y.png.tmp" in names  # other writes are left alone
    assert paths[-1].name in names and paths[0].name not in names
