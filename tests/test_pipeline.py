"""Pipeline, checkpoints, guidance, Hub loading and the sampling CLI."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion import Pipeline
from diffusion.checkpoint import CheckpointError, load_model_dir, resolve_model_dir, save_model_dir
from diffusion.guidance import make_denoiser
from diffusion.sample import main as sample_main
from diffusion.unet import UNet
from tests.conftest import needs_cxx, randomised, tiny_config


def test_generate_shapes_range_and_determinism(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    a = pipe.generate([0, 1, 2], seed=3)
    assert a.shape == (3, 1, 16, 16) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, pipe.generate([0, 1, 2], seed=3))
    assert not torch.equal(a, pipe.generate([0, 1, 2], seed=4))
    ddpm = pipe.generate([0, 1], sampler="ddpm", steps=10, seed=3)
    assert torch.equal(ddpm, pipe.generate([0, 1], sampler="ddpm", steps=10, seed=3))


def test_same_noise_for_ddpm_and_ddim(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    x_T = pipe.noise(2, seed=7)
    seen = {}
    for sampler in ("ddim", "ddpm"):
        first = []
        pipe.generate([0, 1], sampler=sampler, steps=5, x_T=x_T, seed=1, callback=first.append)
        seen[sampler] = first[0].x_t
    assert torch.equal(seen["ddim"], x_T) and torch.equal(seen["ddpm"], x_T)


def test_labels_and_context_vectors(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    torch.testing.assert_close(pipe.context([2, None, -1]), torch.tensor([[0, 0, 1.0], [0, 0, 0], [0, 0, 0]]))
    torch.testing.assert_close(pipe.context(np.array([2, 0])), pipe.context([2, 0]))  # NumPy integers are indices
    torch.testing.assert_close(pipe.context([np.int64(1)]), pipe.context([1]))
    by_index = pipe.generate([1], seed=0)
    by_vector = pipe.generate([[0.0, 1.0, 0.0]], seed=0)
    assert torch.equal(by_index, by_vector)  # a one-hot context is the class index
    mixed = pipe.generate([[0.5, 0.5, 0.0]], seed=0)
    assert not torch.equal(mixed, by_index)
    for bad, message in [([3], "out of range"), ([[1.0, 0.0]], r"\(N, 3\)"), ([[float("nan"), 0, 0]], "finite"),
                         ([], r"\(N, 3\)")]:
        with pytest.raises(ValueError, match=message):
            pipe.generate(bad, seed=0)
    with pytest.raises(ValueError, match=r"\[1, 50\]"):
        pipe.generate([0], steps=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe.generate([0], guidance_scale=float("nan"))


def test_guidance_batches_both_passes_and_mixes_them(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    ctx = pipe.context([0, 2])
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([30, 30])

    def x0_of(w, context):
        return make_denoiser(pipe.model, pipe.schedule, context, guidance_scale=w, clip_x0=False)(x, t)[0]

    cond, uncond = x0_of(1.0, ctx), x0_of(1.0, torch.zeros_like(ctx))
    torch.testing.assert_close(x0_of(0.0, ctx), uncond)  # w = 0: unconditional
    torch.testing.assert_close(x0_of(3.0, ctx), uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)
    calls = []
    hook = pipe.model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    x0_of(3.0, ctx)
    hook.remove()
    assert calls == [4]  # conditional and unconditional in one batch of 2B


def test_a_context_with_no_class_runs_one_pass_at_any_guidance(tiny_model_dir):
    """All-zero rows ("no class") would mix two identical passes: one pass of B gives the same x0."""
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    none, x, t = torch.zeros(3, 3), torch.randn(3, 1, 16, 16), torch.tensor([30, 30, 30])
    calls = []
    hook = pipe.model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    x0 = make_denoiser(pipe.model, pipe.schedule, none, guidance_scale=3.0, clip_x0=False)(x, t)[0]
    hook.remove()
    assert calls == [3]
    both = pipe.model(torch.cat([x, x]), torch.cat([t, t]), torch.zeros(6, 3)).chunk(2)  # what guidance would mix
    mixed = both[1] + 3.0 * (both[0] - both[1])
    torch.testing.assert_close(x0, pipe.schedule.split_prediction(x, t, mixed, pipe.config.prediction_type)[0],
                               atol=1e-5, rtol=1e-5)
    calls.clear()
    hook = pipe.model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    one_class = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    make_denoiser(pipe.model, pipe.schedule, one_class, guidance_scale=3.0)(x[:2], t[:2])
    hook.remove()
    assert calls == [4]  # a batch with a class in any row guides every row


def test_guidance_interval_guides_only_inside_it(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    ctx = pipe.context([0, 2, 1])
    x = torch.randn(3, 1, 16, 16)

    def x0_of(w, t, interval=None):
        denoise = make_denoiser(pipe.model, pipe.schedule, ctx, guidance_scale=w, clip_x0=False,
                                guidance_interval=interval)
        return denoise(x, t)[0]

    t_in, t_out, t_mixed = torch.tensor([20, 20, 20]), torch.tensor([40, 40, 40]), torch.tensor([20, 40, 30])
    torch.testing.assert_close(x0_of(3.0, t_in, (10, 30)), x0_of(3.0, t_in))  # inside: guided
    calls = []
    hook = pipe.model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    torch.testing.assert_close(x0_of(3.0, t_out, (10, 30)), x0_of(1.0, t_out))  # outside: conditional only
    hook.remove()
    assert calls == [3, 3]  # ... in one pass of B, no unconditional pass
    mixed = x0_of(3.0, t_mixed, (10, 30))  # per image: a batch may mix timesteps inside and outside
    torch.testing.assert_close(mixed[[0, 2]], x0_of(3.0, t_mixed)[[0, 2]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[1], x0_of(1.0, t_mixed)[1], atol=1e-5, rtol=1e-5)


def test_passes_per_image_counts_the_network_work(tiny_model_dir):
    from diffusion.guidance import passes_per_image
    from diffusion.samplers import make_plan

    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    for scale, interval in [(3.0, None), (3.0, (0, 20)), (1.0, (0, 20)), (0.0, None)]:
        images = []
        hook = pipe.model.register_forward_hook(lambda m, args, out: images.append(args[0].shape[0]))
        pipe.generate([0, 1], steps=6, spacing="quadratic", guidance_scale=scale, guidance_interval=interval, seed=0)
        hook.remove()
        plan = make_plan("ddim", pipe.schedule, 6, "quadratic")
        assert sum(images) == 2 * passes_per_image(plan, scale, interval), (scale, interval)


def test_saved_eta_goes_with_the_saved_sampler(tiny_model_dir):
    """A model saved with dpm++ eta 1 samples with eta 1 by default, but sampler="ddim" alone means DDIM eta 0."""
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    pipe.config.sampling.sampler, pipe.config.sampling.eta = "dpm++", 1.0
    assert pipe.prepare([0], steps=4, seed=0)[2].sigma[0] > 0  # the saved SDE solver
    for sampler in ("ddim", "dpm++"):
        plan = pipe.prepare([0], sampler=sampler, steps=4, seed=0)[2]
        assert (plan.sigma[0] > 0) == (sampler == "dpm++"), sampler
    assert pipe.prepare([0], sampler="ddim", steps=4, eta=1.0, seed=0)[2].sigma[0] > 0  # unless eta is given


def test_saved_guidance_interval_is_the_default(tiny_model_dir, tmp_path):
    from diffusion.checkpoint import load_config

    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    T = pipe.config.num_timesteps
    everywhere = pipe.generate([0, 1], steps=5, guidance_scale=3.0, seed=4)
    nowhere = pipe.generate([0, 1], steps=5, guidance_scale=1.0, seed=4)
    pipe.config.sampling.guidance_interval = [0, 0]  # never reached by 5 trailing steps: no guidance at all
    out = pipe.save_pretrained(tmp_path / "m")
    assert load_config(out).sampling.guidance_interval == [0, 0]
    again = Pipeline.from_pretrained(out, precision="fp32")
    torch.testing.assert_close(again.generate([0, 1], steps=5, guidance_scale=3.0, seed=4), nowhere)
    torch.testing.assert_close(again.generate([0, 1], steps=5, guidance_scale=3.0, seed=4,
                                              guidance_interval=(0, T - 1)), everywhere)
    for bad in [(5, 2), (0, T), (-1, 3), (1.5, 3), [1]]:
        with pytest.raises(ValueError, match="guidance_interval"):
            again.generate([0], steps=2, guidance_interval=bad)


def test_iter_generate_from_other_threads_matches_generate(tiny_model_dir):
    """The app advances iter_generate from Gradio's worker threads: each step must carry its own inference mode."""
    import threading

    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    expected = pipe.generate([0, 2], steps=6, seed=9)
    steps = pipe.iter_generate([0, 2], steps=6, seed=9)
    last = []

    def advance(k):
        for _ in range(k):
            last.append(next(steps))

    for k in (2, 3, 1):
        worker = threading.Thread(target=advance, args=(k,))
        worker.start()
        worker.join()
    assert len(last) == 6 and last[-1].t_prev == -1
    assert torch.equal((last[-1].x_prev + 1).div(2).clamp(0, 1), expected)
    assert torch.is_grad_enabled()  # nothing leaked into this thread


def test_bf16_agrees_with_fp32(tiny_model_dir):
    fp32 = Pipeline.from_pretrained(tiny_model_dir, precision="fp32").generate([0, 1, 2], steps=5, seed=0)
    bf16 = Pipeline.from_pretrained(tiny_model_dir, precision="bf16").generate([0, 1, 2], steps=5, seed=0)
    assert float((fp32 - bf16).abs().mean()) < 0.02


@needs_cxx
def test_compiled_network_agrees_with_eager_at_every_batch_size(tiny_model_dir, monkeypatch):
    """torch.compile (inductor, dynamic batch): after warm_up, guided (2B) and unguided (B) calls of any B run without
    compiling again, with the eager module's outputs up to float rounding; the weights are shared, not copied."""
    eager = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    compiled = Pipeline.from_pretrained(tiny_model_dir, precision="fp32", compile=True)
    assert compiled.warm_up() > 0 and compiled.compiled
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)  # a request must not wait for a compile
    for labels, w in (([0, 1, 2], 2.0), ([1], 1.0), ([0, 2, 1, 0, 2], 2.0)):
        torch.testing.assert_close(compiled.generate(labels, steps=4, guidance_scale=w, seed=5),
                                   eager.generate(labels, steps=4, guidance_scale=w, seed=5), atol=1e-4, rtol=0)
    assert next(compiled.network.parameters()) is next(compiled.model.parameters())
    assert set(compiled.model.state_dict()) == set(eager.model.state_dict())  # saves as an eager model would


def test_a_failed_compile_is_a_clear_error_and_the_registry_serves_eager(tiny_model_dir, monkeypatch):
    from diffusion.pipeline import CompileError
    from diffusion.registry import ModelRegistry

    class NoCompiler(torch.nn.Module):  # what inductor raises at the first call on a machine without g++
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32", compile=True)
    pipe.network = NoCompiler(pipe.model)
    with pytest.raises(CompileError, match="could not compile.*No working C\\+\\+ compiler.*without --compile"):
        pipe.warm_up()

    monkeypatch.setattr(Pipeline, "warm_up", lambda self: (_ for _ in ()).throw(CompileError("no compiler")))
    served = ModelRegistry(tiny_model_dir.parent, precision="fp32", compile=True).get(tiny_model_dir.name)
    assert not served.compiled and served.network is served.model
    assert served.generate([0], steps=2, seed=0).shape == (1, 1, 16, 16)


def test_save_load_round_trip_is_bit_identical(tiny_model_dir, tmp_path):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    copy_dir = pipe.save_pretrained(tmp_path / "copy")
    assert sorted(p.name for p in copy_dir.iterdir()) == ["config.json", "model.safetensors"]
    again = Pipeline.from_pretrained(copy_dir, precision="fp32")
    assert again.config == pipe.config
    assert torch.equal(pipe.generate([0, 2], seed=1), again.generate([0, 2], seed=1))


def test_the_upsampling_travels_with_the_weights(tmp_path):
    """A sub-pixel decoder is rebuilt from config.json alone; a config.json written before the option existed (no
    "upsample" key) loads as the resize-then-conv decoder it was trained with."""
    config = tiny_config()
    config.unet.upsample = "subpixel"
    model = randomised(UNet(config.unet))
    loaded = Pipeline.from_pretrained(save_model_dir(tmp_path / "sub", config, model.state_dict()), precision="fp32")
    assert loaded.config.unet.upsample == "subpixel"
    x, t, c = torch.randn(2, 1, 16, 16), torch.tensor([3, 40]), torch.eye(3)[:2]
    torch.testing.assert_close(loaded.model(x, t, c), model(x, t, c), rtol=0, atol=0)

    old = save_model_dir(tmp_path / "old", tiny_config(), randomised(UNet(tiny_config().unet)).state_dict())
    data = json.loads((old / "config.json").read_text())
    del data["unet"]["upsample"]
    (old / "config.json").write_text(json.dumps(data))
    assert Pipeline.from_pretrained(old, precision="fp32").config.unet.upsample == "nearest_conv"


def corrupt(directory, how):
    weights, config = directory / "model.safetensors", directory / "config.json"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "garbage":
        weights.write_bytes(b"\x00" * 64)
    elif how == "pickle":
        torch.save({"x": torch.zeros(1)}, weights)
    elif how == "missing weights":
        weights.unlink()
    elif how == "missing config":
        config.unlink()
    elif how == "bad json":
        config.write_text("{not json")
    elif how == "unknown architecture":
        data = json.loads(config.read_text())
        config.write_text(json.dumps({**data, "architecture": "transformer"}))
    elif how == "unknown key":
        data = json.loads(config.read_text())
        config.write_text(json.dumps({**data, "colour": "red"}))
    elif how == "bad guidance interval":
        data = json.loads(config.read_text())
        data["sampling"]["guidance_interval"] = [5, 10_000]
        config.write_text(json.dumps(data))
    elif how == "wrong shape":
        state = load_file(weights)
        state["stem.weight"] = torch.zeros(3, 3, 3, 3)
        save_file(state, weights)
    elif how == "missing tensor":
        state = load_file(weights)
        del state["stem.bias"]
        save_file(state, weights)
    elif how == "mismatched config":
        data = json.loads(config.read_text())
        data["unet"]["base_channels"] = 16
        config.write_text(json.dumps(data))
    elif how == "nan weights":
        state = load_file(weights)
        state["stem.bias"][0] = float("nan")
        save_file(state, weights)


@pytest.mark.parametrize("how, file, message", [
    ("truncated", "model.safetensors", "truncated or corrupted"),
    ("garbage", "model.safetensors", "truncated or corrupted"),
    ("pickle", "model.safetensors", "truncated or corrupted"),
    ("missing weights", "model.safetensors", "missing"),
    ("missing config", "config.json", "missing"),
    ("bad json", "config.json", "not valid JSON"),
    ("unknown architecture", "config.json", "unknown architecture 'transformer'"),
    ("unknown key", "config.json", "unknown keys \\['colour'\\]"),
    ("bad guidance interval", "config.json", "guidance_interval must be two timesteps"),
    ("wrong shape", "model.safetensors", "shapes do not match.*stem.weight"),
    ("missing tensor", "model.safetensors", "missing \\['stem.bias'\\]"),
    ("mismatched config", "model.safetensors", "do not match config.json"),
    ("nan weights", "model.safetensors", "non-finite"),
])
def test_bad_checkpoints_are_refused_with_the_file_named(tiny_model_dir, how, file, message):
    corrupt(tiny_model_dir, how)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model_dir(tiny_model_dir)
    assert file in str(info.value)


def test_a_config_asking_for_a_huge_network_is_refused_before_anything_is_allocated(tiny_model_dir, monkeypatch):
    """A very wide, deep network within the config bounds (1.2 G parameters, 4.7 GB in fp32) with the tiny model's
    weights: refused on the file's header against a network built on the meta device, never on the CPU."""
    import diffusion.checkpoint as checkpoint

    data = json.loads((tiny_model_dir / "config.json").read_text())
    data["unet"].update(base_channels=256, channel_mult=[1, 2, 4, 4, 4, 4], num_res_blocks=4)
    (tiny_model_dir / "config.json").write_text(json.dumps(data))
    built_on = []

    def spy(config):
        built_on.append(torch.empty(0).device.type)  # the default device where the network is built
        assert built_on[-1] == "meta", "the network was built in memory before its weights were checked"
        return UNet(config)

    monkeypatch.setattr(checkpoint, "UNet", spy)
    with torch.device("meta"):
        params = sum(p.numel() for p in UNet(checkpoint.load_config(tiny_model_dir).unet).parameters())
    assert params > 5e8
    with pytest.raises(CheckpointError, match="do not match config.json"):
        load_model_dir(tiny_model_dir)
    assert built_on == ["meta"]


def hub_files(*files):
    """A model_info answer: siblings with these (name, size) pairs."""
    from huggingface_hub.hf_api import RepoSibling
    from types import SimpleNamespace

    return SimpleNamespace(siblings=[RepoSibling(rfilename=name, size=size) for name, size in files])


@pytest.mark.parametrize("files, message", [
    ([("config.json", 900), ("model.safetensors", 2 << 30)], "model.safetensors is 2048 MB"),
    ([("model.safetensors", 900 << 20)] + [(f"examples/{k}_0.png", 40 << 20) for k in range(5)],
     "come to 1100 MB"),
    ([("model.safetensors", 1 << 20), ("examples/0_0.png", None)], "gives no size"),
    ([("model.safetensors", 1 << 20), ("data/dump.json", 70 << 30), ("big.bin", 9 << 30)], None),  # not fetched
])
def test_hub_repos_too_large_to_fetch_are_refused_before_downloading(files, message, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    from diffusion.checkpoint import check_hub_size

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: hub_files(*files))
    if message is None:
        check_hub_size("someone/model")
    else:
        with pytest.raises(CheckpointError, match=message):
            check_hub_size("someone/model")


def test_a_hub_repo_whose_file_list_cannot_be_read_is_refused(monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    from diffusion.checkpoint import check_hub_size

    def unreachable(self, *a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(CheckpointError, match="cannot read the file list of 'someone/model'.*ConnectionError"):
        check_hub_size("someone/model")


@pytest.mark.parametrize("name", ["../etc/passwd", "https://evil.example/x", "a/b/c", "owner/..", "", " ", "/abs/path"])
def test_non_repo_ids_are_refused(name):
    with pytest.raises(CheckpointError, match="neither a local model directory nor|empty model name"):
        resolve_model_dir(name)


def test_hub_download_path(tiny_model_dir, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, allow_patterns))
        return str(tiny_model_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    pipe = Pipeline.from_pretrained("someone/ddpm-tiny")
    assert calls[0][0] == "someone/ddpm-tiny" and "model.safetensors" in calls[0][2]
    assert pipe.generate([0], seed=0).shape == (1, 1, 16, 16)


def test_hub_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CheckpointError, match="offline and not in the local cache|cannot download"):
        Pipeline.from_pretrained("nobody/not-cached-model")


def test_hub_cache_is_used_offline(tiny_model_dir, tmp_path, monkeypatch):
    """A repo already in the local Hugging Face cache loads offline through the real snapshot_download."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--cached" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, snapshot / f.name)
    (cache / "models--someone--cached" / "refs").mkdir()
    (cache / "models--someone--cached" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    pipe = Pipeline.from_pretrained("someone/cached")
    assert pipe.class_names == ["class 0", "class 1", "class 2"]


def test_sample_cli_writes_the_documented_npz(tiny_model_dir, tmp_path):
    args = ["--model", str(tiny_model_dir), "--sampler", "ddim", "--steps", "4", "--eta", "0", "--guidance-scale", "2",
            "--per-class", "3", "--seed", "0", "--precision", "fp32"]
    assert sample_main(args + ["--out", str(tmp_path / "a.npz"), "--grid", str(tmp_path / "grid.png")]) == 0
    assert sample_main(args + ["--out", str(tmp_path / "b.npz")]) == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["images"].shape == (9, 16, 16, 1) and a["images"].dtype == np.uint8
    assert a["labels"].dtype == np.int64 and a["labels"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert np.array_equal(a["images"], b["images"])  # same seed, same arguments -> identical output
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert sample_main(["--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.npz")]) == 2
    # spacing and guidance interval: guidance confined to t <= 0 (never reached by 4 trailing steps) = no guidance
    assert sample_main(args + ["--spacing", "quadratic", "--guidance-interval", "0", "0",
                               "--out", str(tmp_path / "d.npz")]) == 0
    i = args.index("--guidance-scale") + 1
    no_guidance = args[:i] + ["1"] + args[i + 1:]
    assert sample_main(no_guidance + ["--spacing", "quadratic", "--out", str(tmp_path / "e.npz")]) == 0
    assert np.array_equal(np.load(tmp_path / "d.npz")["images"], np.load(tmp_path / "e.npz")["images"])
    assert sample_main(args + ["--guidance-interval", "3", "1", "--out", str(tmp_path / "f.npz")]) == 2
