"""The running app under bad input and load: every bad value on every endpoint and parameter gets a clear error,
the server keeps answering correctly, and 32 concurrent clients are all served or told the queue is busy."""

import importlib.util
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app import LAUNCH, build_demo
from diffusion.registry import ModelRegistry

from .conftest import make_checkpoints
from .test_app import raw_call

INTERNAL = "Sorry, that failed"  # what user_errors says when a handler crashed: must never happen for bad input
GENERATE = dict(model="tiny", sampler="ddim", steps=4, eta=0.0, guidance_scale=2.0, seed=5, random_seed=False,
                num_images=2, class_mode="class", class_a="class 1", class_b="class 2", mix=0.5)
COMPARE = dict(model="tiny", ddpm_steps=10, ddim_steps=4, eta=0.0, guidance_scale=2.0, seed=5, random_seed=False,
               num_images=2, class_mode="class", class_a="class 1", class_b="class 2", mix=0.5)
FORWARD = dict(model="tiny", example="class 1 #0", upload=None, t=10, seed=0)
BACK = dict(model="tiny", example="class 1 #0", upload=None, t=10, seed=0, sampler="ddim", steps=5,
            toward="its own class", guidance_scale=2.0)
TRIP = dict(model="tiny", example="class 1 #0", upload=None, steps=5, toward="its own class", seed=0)
FILL = dict(model="tiny", example="class 1 #0", upload=None, region="top half", sampler="ddim", steps=5, resample=2,
            toward="its own class", guidance_scale=2.0, seed=0)
INTERPOLATE = dict(model="tiny", class_from="class 1", seed_from=0, class_to="class 2", seed_to=1, frames=4,
                   path="slerp", ddim_steps=5, ddpm_steps=5, guidance_scale=2.0)


def start(root, **kwargs):
    demo = build_demo(ModelRegistry(root, precision="fp32"), **kwargs)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, ssr_mode=False, **LAUNCH)
    return demo


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_checkpoints(tmp_path_factory.mktemp("fuzz") / "checkpoints")


@pytest.fixture(scope="module")
def server(root):
    demo = start(root)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.local_url, verbose=False)


@pytest.fixture(scope="module")
def baseline(client):
    """A normal /generate result, compared byte for byte after the abuse."""
    return np.asarray(Image.open(client.predict(*GENERATE.values(), api_name="/generate")[2]))


def call(client, api, defaults, **bad):
    return client.predict(*{**defaults, **bad}.values(), api_name=api)


def assert_clear_error(client, api, defaults, **bad):
    """The server (not the client library) refuses the input with a message, and did not crash on it."""
    with pytest.raises(AppError) as info:
        call(client, api, defaults, **bad)
    message = str(info.value)
    assert INTERNAL not in message and "Traceback" not in message and len(message) > 15, message
    return message


BAD = [
    # /generate: every parameter
    ("/generate", GENERATE, dict(model="nope")), ("/generate", GENERATE, dict(model="")),
    ("/generate", GENERATE, dict(model=None)), ("/generate", GENERATE, dict(model="a" * 10_000)),
    ("/generate", GENERATE, dict(model="../../../etc")), ("/generate", GENERATE, dict(model="https://x.io/a/b")),
    ("/generate", GENERATE, dict(model="owner/../../x")), ("/generate", GENERATE, dict(model="/etc/passwd")),
    ("/generate", GENERATE, dict(sampler="euler")), ("/generate", GENERATE, dict(sampler=None)),
    ("/generate", GENERATE, dict(sampler=3)), ("/generate", GENERATE, dict(steps=0)),
    ("/generate", GENERATE, dict(steps=-3)), ("/generate", GENERATE, dict(steps=10**9)),
    ("/generate", GENERATE, dict(steps=51)), ("/generate", GENERATE, dict(steps=2.5)),
    ("/generate", GENERATE, dict(steps="ten")), ("/generate", GENERATE, dict(steps=None)),
    ("/generate", GENERATE, dict(steps=[4])), ("/generate", GENERATE, dict(eta=-1)),
    ("/generate", GENERATE, dict(eta=7)), ("/generate", GENERATE, dict(eta="0")),
    ("/generate", GENERATE, dict(guidance_scale=-1)), ("/generate", GENERATE, dict(guidance_scale=1e300)),
    ("/generate", GENERATE, dict(guidance_scale="high")), ("/generate", GENERATE, dict(seed=-1)),
    ("/generate", GENERATE, dict(seed=2**40)), ("/generate", GENERATE, dict(seed="x")),
    ("/generate", GENERATE, dict(seed=1e20)), ("/generate", GENERATE, dict(random_seed="yes")),
    ("/generate", GENERATE, dict(num_images=0)), ("/generate", GENERATE, dict(num_images=10_000)),
    ("/generate", GENERATE, dict(num_images="many")), ("/generate", GENERATE, dict(class_mode="all")),
    ("/generate", GENERATE, dict(class_mode=None)), ("/generate", GENERATE, dict(class_a="dragon")),
    ("/generate", GENERATE, dict(class_a="")), ("/generate", GENERATE, dict(class_a="x" * 5000)),
    ("/generate", GENERATE, dict(class_mode="mix", class_b="dragon")),
    ("/generate", GENERATE, dict(class_mode="mix", mix=1.5)), ("/generate", GENERATE, dict(mix="half")),
    ("/generate", GENERATE, dict(num_images=16, steps=50, sampler="ddpm", model="tiny", seed=1,
                                 guidance_scale=11)),
    # /compare
    ("/compare", COMPARE, dict(ddpm_steps=0)), ("/compare", COMPARE, dict(ddpm_steps=10**6)),
    ("/compare", COMPARE, dict(ddim_steps=-1)), ("/compare", COMPARE, dict(ddim_steps="fast")),
    ("/compare", COMPARE, dict(num_images=5)), ("/compare", COMPARE, dict(eta=2)),
    ("/compare", COMPARE, dict(model="nobody/nothing")), ("/compare", COMPARE, dict(class_a=None)),
    ("/compare", COMPARE, dict(seed=-7)),
    # /forward
    ("/forward", FORWARD, dict(t=-1)), ("/forward", FORWARD, dict(t=50)), ("/forward", FORWARD, dict(t=10**12)),
    ("/forward", FORWARD, dict(t="late")), ("/forward", FORWARD, dict(example="no such image")),
    ("/forward", FORWARD, dict(example=None)), ("/forward", FORWARD, dict(seed=-2)),
    ("/forward", FORWARD, dict(model="x/" + "y" * 200)),
    # /denoise_back and /round_trip
    ("/denoise_back", BACK, dict(t=50)), ("/denoise_back", BACK, dict(t=-5)), ("/denoise_back", BACK, dict(steps=0)),
    ("/denoise_back", BACK, dict(sampler="heun")), ("/denoise_back", BACK, dict(toward="dragon")),
    ("/denoise_back", BACK, dict(toward=None)), ("/denoise_back", BACK, dict(guidance_scale=-3)),
    ("/denoise_back", BACK, dict(example=None)), ("/round_trip", TRIP, dict(steps=1)),
    ("/round_trip", TRIP, dict(steps=10**9)), ("/round_trip", TRIP, dict(toward="")),
    ("/round_trip", TRIP, dict(seed=-1)), ("/round_trip", TRIP, dict(example="class 9 #9")),
    # /interpolate
    ("/interpolate", INTERPOLATE, dict(class_from="dragon")), ("/interpolate", INTERPOLATE, dict(class_to=None)),
    ("/interpolate", INTERPOLATE, dict(seed_from=-1)), ("/interpolate", INTERPOLATE, dict(seed_to=2**40)),
    ("/interpolate", INTERPOLATE, dict(frames=1)), ("/interpolate", INTERPOLATE, dict(frames=17)),
    ("/interpolate", INTERPOLATE, dict(path="zigzag")), ("/interpolate", INTERPOLATE, dict(ddim_steps=0)),
    ("/interpolate", INTERPOLATE, dict(ddpm_steps=-1)), ("/interpolate", INTERPOLATE, dict(ddpm_steps=51)),
    ("/interpolate", INTERPOLATE, dict(guidance_scale=-1)),
    ("/interpolate", INTERPOLATE, dict(model="nobody/nothing")),
    # /fill_in
    ("/fill_in", FILL, dict(region="elsewhere")), ("/fill_in", FILL, dict(region=None)),
    ("/fill_in", FILL, dict(steps=0)), ("/fill_in", FILL, dict(steps=10**9)), ("/fill_in", FILL, dict(sampler="heun")),
    ("/fill_in", FILL, dict(toward="dragon")), ("/fill_in", FILL, dict(example=None)),
    ("/fill_in", FILL, dict(seed=-3)), ("/fill_in", FILL, dict(guidance_scale=-1)),
    ("/fill_in", FILL, dict(resample=0)), ("/fill_in", FILL, dict(resample=11)),
    ("/fill_in", FILL, dict(sampler="dpm++")),
]


@pytest.mark.parametrize("api, defaults, bad", BAD, ids=[f"{a}:{list(b)[0]}={str(list(b.values())[0])[:20]}"
                                                          for a, _, b in BAD])
def test_bad_input_gets_a_clear_error(client, api, defaults, bad):
    assert_clear_error(client, api, defaults, **bad)


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("position", [2, 3, 4, 5, 11])
def test_non_finite_numbers(server, value, position):
    """NaN/inf can only arrive as raw JSON text (JSON clients refuse to send them)."""
    data = ['"tiny"', '"ddim"', "4", "0.0", "2.0", "5", "false", "2", '"class"', '"class 1"', '"class 2"', "0.5"]
    data[position] = value
    text = raw_call(server.local_url, "generate", '{"data": [%s]}' % ", ".join(data))
    assert "event: error" in text or "HTTP 4" in text


finite_outside = st.one_of(
    st.integers(max_value=0), st.integers(min_value=51, max_value=10**15),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not (1 <= v <= 50 and v == int(v))),
    st.text(max_size=30), st.none(), st.lists(st.integers(), max_size=3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=finite_outside)
def test_hypothesis_steps(client, steps):
    assert_clear_error(client, "/generate", GENERATE, steps=steps)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=0, max_size=120).filter(lambda s: s.strip() != "tiny"))
def test_hypothesis_model_names(client, name):
    message = assert_clear_error(client, "/generate", GENERATE, model=name)
    assert "unknown model" in message or "choose a model" in message or "too long" in message \
        or "cannot download" in message or "offline" in message or "not found" in message


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mix=st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not 0 <= v <= 1),
       class_b=st.text(max_size=20).filter(lambda s: s not in ("class 0", "class 1", "class 2")))
def test_hypothesis_class_mix(client, mix, class_b):
    assert_clear_error(client, "/generate", GENERATE, class_mode="mix", mix=mix, class_b=class_b)


def test_bad_uploads(client, tmp_path):
    cases = {"text.png": b"hello, not an image", "empty.png": b"", "truncated.png": b"\x89PNG\r\n\x1a\n\x00\x00",
             "script.png": b"<script>alert(1)</script>"}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        message = assert_clear_error(client, "/forward", FORWARD, upload=handle_file(str(path)))
        assert "not an image" in message or "not a readable file" in message
    bomb = tmp_path / "bomb.png"
    Image.new("L", (6000, 6000)).save(bomb, optimize=True)  # small file, 36 M pixels once decoded
    assert "pixels" in assert_clear_error(client, "/forward", FORWARD, upload=handle_file(str(bomb)))


def test_enormous_upload_is_refused_by_the_server(server, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x00" * (LAUNCH["max_file_size"] + 1))
    with open(big, "rb") as f:
        r = httpx.post(f"{server.local_url}gradio_api/upload", files={"files": ("big.png", f, "image/png")},
                       timeout=60)
    assert r.status_code == 413 and "maximum allowed size" in r.text


def test_server_still_correct_after_the_abuse(client, baseline):
    # runs after the tests above (file order): same answer, byte for byte
    again = np.asarray(Image.open(client.predict(*GENERATE.values(), api_name="/generate")[2]))
    assert np.array_equal(again, baseline)
    *_, info, _ = client.predict(*FORWARD.values(), api_name="/forward")
    assert "t = 10 of 50" in info


# ---- load ---------------------------------------------------------------------------------------------------------

def load_driver():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "load.py"
    spec = importlib.util.spec_from_file_location("bench_load", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


REQUEST = ["tiny", "ddim", 4, 0.0, 2.0, 0, True, 2, "class", "class 0", "class 1", 0.5]


def test_32_concurrent_clients_are_all_served(server, baseline):
    load = load_driver()
    rss_before = load.peak_rss_mb()
    result = load.run_load(server.local_url, REQUEST, clients=32, requests=3, timeout_s=300)
    s = result.summary()
    print(f"\nload: {s} peak RSS {load.peak_rss_mb():.0f} MB (before {rss_before:.0f} MB)")
    assert result.errors == []
    assert s["completed"] + s["busy"] == 96 and s["completed"] >= 64
    assert load.peak_rss_mb() < rss_before + 1500  # bounded: no per-request leak of images or models


def test_a_small_queue_refuses_with_busy_and_recovers(root):
    load = load_driver()
    demo = start(root, queue_size=2)
    try:
        slow = ["tiny", "ddpm", 50, 0.0, 2.0, 0, True, 16, "class", "class 0", "class 1", 0.5]
        result = load.run_load(demo.local_url, slow, clients=16, requests=2, timeout_s=300)
        assert result.errors == [] and result.busy > 0 and result.completed > 0
        client = Client(demo.local_url, verbose=False)
        assert "DDIM · 4 steps" in call(client, "/generate", GENERATE)[1]
    finally:
        demo.close()
