"""The running app, driven over HTTP by gradio_client (as any API user would) and by a real headless browser."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app import LAUNCH, build_demo
from diffusion.registry import ModelRegistry

from .conftest import make_checkpoints

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CONTEXT = ["class", "class 1", "class 2", 0.5]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = make_checkpoints(tmp_path_factory.mktemp("app") / "checkpoints")
    demo = build_demo(ModelRegistry(root, precision="fp32"))
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, ssr_mode=False, **LAUNCH)
    try:
        yield demo
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.local_url, verbose=False)


def generate(client, **overrides):
    args = dict(model="tiny", sampler="ddim", steps=5, eta=0.0, guidance_scale=2.0, seed=3, random_seed=False,
                num_images=4, class_mode="class", class_a="class 1", class_b="class 2", mix=0.5)
    args.update(overrides)
    return client.predict(*args.values(), api_name="/generate")


def test_endpoints_are_named(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/generate", "/compare", "/forward", "/denoise_back", "/round_trip", "/fill_in", "/interpolate",
            "/select_model", "/load_model"} <= names


def test_generate_over_http(client):
    live, status, final, png, gif, seed = generate(client)
    assert "DDIM · 5 steps" in status and seed == 3
    assert Image.open(final).size[0] > 100 and Image.open(live).size[0] > Image.open(final).size[0]  # x_t | x0
    assert Image.open(png).format == "PNG" and Image.open(gif).n_frames == 5
    again = generate(client)
    assert np.array_equal(np.asarray(Image.open(again[2])), np.asarray(Image.open(final)))  # same seed, same image


def test_generate_streams_every_step(client):
    job = client.submit("tiny", "ddim", 5, 0.0, 2.0, 3, False, 2, *CONTEXT, api_name="/generate")
    outputs = job.outputs() if job.result() else []
    assert len(outputs) == 5 and "step 1/5" in outputs[0][1]


def test_compare_over_http(client):
    ddim, ddpm, ddim_status, ddpm_status, readout, strip = client.predict(
        "tiny", 50, 10, 0.0, 2.0, 0, False, 2, *CONTEXT, api_name="/compare")
    assert "DDIM took" in readout and "x faster" in readout
    assert "step 10/10" in ddim_status and "step 50/50" in ddpm_status
    assert len(strip) == 4 and strip[0]["caption"].startswith("DDIM 5 steps")


def test_forward_over_http(client, tmp_path):
    x0, xt, px0, noise, info, gif = client.predict("tiny", "class 2 #1", None, 25, 0, api_name="/forward")
    assert "t = 25 of 50" in info and Image.open(gif).n_frames == 40
    upload = tmp_path / "mine.png"
    Image.fromarray(np.full((30, 30), 200, np.uint8)).save(upload)
    *_, info, _ = client.predict("tiny", None, handle_file(str(upload)), 10, 0, api_name="/forward")
    assert "no class context" in info


def test_the_way_back_over_http(client):
    image, info = client.predict("tiny", "class 2 #1", None, 25, 0, "ddim", 10, "its own class", 2.0,
                                 api_name="/denoise_back")
    assert "DDIM from t = 25" in info and "toward its own class, class 2" in info and Image.open(image).size[0] > 20
    noise, back, info = client.predict("tiny", "class 2 #1", None, 6, "class 0", 0, api_name="/round_trip")
    assert "DDIM inversion, 6 steps" in info and "toward class 0" in info
    assert Image.open(noise).size == Image.open(back).size


def test_fill_in_over_http(client):
    masked, filled, info = client.predict("tiny", "class 2 #1", None, "3 in 4 pixels", "ddpm", 8, 3, "class 0", 2.0,
                                          4, api_name="/fill_in")
    assert ("**DDPM 8 steps** toward class 0, guidance 2, each but the last (to clean data) taken 3 times (RePaint "
            "resampling): the 3 in 4") in info
    assert Image.open(masked).size == Image.open(filled).size


def test_interpolate_over_http(client):
    ddim, ddpm, info, gif = client.predict("tiny", "class 0", 0, "class 2", 1, 5, "lerp", 6, 4, 2.0,
                                           api_name="/interpolate")
    assert "**DDIM 6 (eta 0)**, 5 frames from seed 0 to seed 1 along a lerp path, class 0 to class 2" in info
    assert "**DDPM 4** from the same x_T's" in info and "Lerp's x_T halfway has standard deviation" in info
    assert Image.open(ddim).size == Image.open(ddpm).size and Image.open(gif).format == "GIF"
    _, ddpm, info, _ = client.predict("tiny", "no class", 0, "no class", 1, 3, "slerp", 6, 0, 2.0,
                                      api_name="/interpolate")
    assert ddpm is None and "DDPM" not in info and "no class, guidance 1:" in info


def test_select_model_over_http(client):
    info, class_a, *_ = client.predict("tiny", api_name="/select_model")
    assert "3 classes" in info


def test_selecting_a_model_sets_its_saved_sampler_and_noise(tmp_path):
    """The Generate tab starts from the sampler and eta in the model's config.json (what evaluated best)."""
    from app import Handlers
    from diffusion.checkpoint import load_config

    root = make_checkpoints(tmp_path / "checkpoints")
    config = load_config(root / "tiny")
    config.sampling.sampler, config.sampling.eta = "dpm++", 0.5
    config.to_json_file(root / "tiny" / "config.json")
    controls = Handlers(ModelRegistry(root, precision="fp32")).select_model("tiny")
    *_, sampler, eta, toward, back_steps, i_from, i_to, i_ddim_steps, i_ddpm_steps = controls
    assert (sampler.value, eta.value, toward.value) == ("dpm++", 0.5, "its own class")
    assert (back_steps.maximum, back_steps.value) == (50, 50)  # the tiny model's T
    assert i_from.choices == i_to.choices and [c[0] for c in i_to.choices][-2:] == ["class 2", "no class"]
    assert (i_ddim_steps.maximum, i_ddim_steps.value, i_ddpm_steps.maximum, i_ddpm_steps.value) == (50, 20, 50, 50)
    handlers = Handlers(ModelRegistry(root, precision="fp32"))
    # Switching to another sampler starts it deterministic; back to the saved one restores its eta.
    assert handlers.sampler_noise("tiny", "ddim").value == 0.0
    assert handlers.sampler_noise("tiny", "dpm++").value == 0.5


def test_loading_a_hub_model_adds_it_to_the_model_list(tmp_path, monkeypatch):
    """Load model with a Hub repo id (the download replaced by the tiny model): the returned model list holds it;
    no name at all is a clear error."""
    import huggingface_hub
    from app import Handlers
    from diffusion.inputs import InputError

    root = make_checkpoints(tmp_path / "checkpoints")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(root / "tiny"))
    handlers = Handlers(ModelRegistry(root, precision="fp32"))
    dropdown, info, *_ = handlers.load_model(" someone/tiny-model ")
    assert "someone/tiny-model" in [c[0] if isinstance(c, tuple) else c for c in dropdown.choices]
    assert dropdown.value == "someone/tiny-model" and "3 classes" in info
    for nothing in (None, "", "  "):
        with pytest.raises(InputError, match="choose a model"):
            handlers.load_model(nothing)


BAD_GENERATE = [
    (dict(steps=0), "steps must be an integer from 1 to 50|less than minimum"),
    (dict(steps=10**9), "greater than maximum"),
    (dict(class_a="unicorn"), "class must be one of"),
    (dict(num_images=1000), "greater than maximum"),
    (dict(sampler="euler"), "not in the list of choices"),
    (dict(model="../../etc/passwd"), "unknown model"),
    (dict(model="https://example.com/evil"), "unknown model"),
    (dict(seed=-1), "less than minimum"),
]


@pytest.mark.parametrize("bad, message", BAD_GENERATE)
def test_bad_input_errors_and_server_survives(client, bad, message):
    with pytest.raises(AppError, match=message):
        generate(client, **bad)
    assert "DDIM · 5 steps" in generate(client)[1]  # still serving normal requests


def raw_call(url: str, api: str, body: str) -> str:
    """POST a raw JSON text (which may hold NaN/Infinity, which JSON clients cannot send) and read the event stream."""
    import httpx

    r = httpx.post(f"{url.rstrip('/')}/gradio_api/call/{api}", content=body,
                   headers={"Content-Type": "application/json"}, timeout=30)
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.text}"
    event_id = r.json()["event_id"]
    return httpx.get(f"{url.rstrip('/')}/gradio_api/call/{api}/{event_id}", timeout=60).text


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e309"])
def test_non_finite_numbers_over_raw_http(server, client, value):
    body = ('{"data": ["tiny", "ddim", 5, 0.0, %s, 3, false, 2, "class", "class 1", "class 2", 0.5]}' % value)
    text = raw_call(server.local_url, "generate", body)
    assert "event: error" in text or "HTTP 4" in text
    assert "DDIM · 5 steps" in generate(client)[1]


def test_bad_upload_is_refused(client, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not a png")
    with pytest.raises(AppError, match="not an image"):
        client.predict("tiny", None, handle_file(str(junk)), 10, 0, api_name="/forward")


def test_offline_hub_model_is_explained(client):
    with pytest.raises(AppError, match="offline|cannot download|not found"):
        client.predict("someone/not-cached", api_name="/load_model")


def chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_generate(url: str, screenshot: str, status: str, then=None) -> None:
    """Headless Chromium opens the page, clicks Generate and waits for the result image and a status that starts
    with `status` (the sampler the page started from); saves a screenshot in artifacts/, then runs then(page) if
    given. Needs Debian's chromium (installed by .ci/run) and the playwright package."""
    playwright = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium on this machine: apt-get install -y chromium")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="networkidle")
            page.get_by_role("button", name="Generate", exact=True).click()
            result = page.locator("[data-testid='image'] img, .image-container img").last
            page.wait_for_function(
                "() => [...document.querySelectorAll('img')].some(i => i.src.includes('.png') && i.naturalWidth > 50)",
                timeout=60_000)
            page.get_by_text(status).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
            assert result.count() >= 1
            if then is not None:
                then(page)
        finally:
            browser.close()
    assert (ARTIFACTS / screenshot).stat().st_size > 10_000


def test_browser_generate_shows_the_result(server):
    browser_generate(server.local_url, "browser-generate.png", "DDIM · 5 steps")


def switch_to_ddim(page) -> None:
    """The shipped model's dpm++ starts at eta 1; picking DDIM sets eta to 0 (deterministic DDIM)."""
    eta = page.get_by_label("number input for Noise (eta), DDIM and dpm++")
    assert eta.input_value() == "1"
    page.get_by_label("ddim", exact=True).check()
    page.wait_for_function(f"() => document.querySelector({eta_selector!r}).value === '0'", timeout=30_000)


eta_selector = "input[type=number][aria-label='number input for Noise (eta), DDIM and dpm++']"


def interpolate_in_the_browser(page) -> None:
    """The Interpolate tab, with the controls the model set (its first class at both ends, seeds 0 and 1): both
    rows of frames and the readout appear."""
    page.get_by_role("tab", name="Interpolate").click()
    page.get_by_role("button", name="Interpolate", exact=True).click()
    page.get_by_text("from the same x_T's:").first.wait_for(timeout=120_000)
    assert page.get_by_text("along a slerp path, T-shirt/top to T-shirt/top").count() >= 1
    page.wait_for_function(
        "() => document.querySelectorAll(\"img[alt*='DDIM (eta 0)'], img[alt*='DDPM from the same']\").length >= 2"
        " || [...document.querySelectorAll('img')].filter(i => i.naturalWidth > 300).length >= 2", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "browser-interpolate-shipped.png"), full_page=True)


def fill_in_in_the_browser(page) -> None:
    """The Forward process tab's Fill in, with the controls the model set (its first example, the top half,
    DDIM 50 resampled 5 times): the readout says what ran."""
    page.get_by_role("tab", name="Forward process").click()
    page.get_by_role("button", name="Fill it in").click()
    page.get_by_text("taken 5 times (RePaint resampling): the top half").first.wait_for(timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "browser-fill-in-shipped.png"), full_page=True)


def test_browser_on_the_shipped_models():
    """The app as `python app.py` serves it (the shipped checkpoints/), in a real browser."""
    root = Path(__file__).resolve().parent.parent / "checkpoints"
    registry = ModelRegistry(root)
    assert registry.default() == "fashion-mnist"
    demo = build_demo(registry)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, ssr_mode=False, **LAUNCH)
    try:
        # the page starts from the default model's saved sampler: DPM-Solver++(2M) SDE, 20 steps
        browser_generate(demo.local_url, "browser-generate-shipped.png", "DPM++ · 20 steps",
                         then=lambda page: (switch_to_ddim(page), interpolate_in_the_browser(page),
                                            fill_in_in_the_browser(page)))
    finally:
        demo.close()
