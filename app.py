"""Diffusion Lab: a Gradio app to generate images with DDPM or DDIM, steer them by class, race DDPM against DDIM
from the same noise, interpolate between samples, and explore the forward process and the way back (denoising a
noised image, DDIM inversion, filling in part of an image).
Layout and event wiring only; the work is in diffusion.lab.

Usage: python app.py   (serves every model under checkpoints/; add Hub models with DIFFUSION_LAB_HUB_MODELS=owner/name;
DIFFUSION_LAB_COMPILE=1 runs the networks through torch.compile: 10-50 s more at start-up, faster answers after;
DIFFUSION_LAB_PRECISION=fp32 or bf16 fixes the precision, which "auto" times at start-up: diffusion/precision.py)
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import traceback

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from diffusion import lab  # noqa: E402
from diffusion.images import OutputFiles  # noqa: E402
from diffusion.inputs import CLASS_MODES, SAMPLERS, SEED_MAX, InputError, Limits, get_model  # noqa: E402
from diffusion.inpainting import REGIONS  # noqa: E402
from diffusion.interpolation import PATHS  # noqa: E402
from diffusion.registry import ModelRegistry  # noqa: E402

CHECKPOINTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")
LIMITS = Limits()
QUEUE_SIZE = 24  # requests waiting at most; more get a "queue is full, try again" answer
# show_error: Gradio's own input checks (types, slider bounds) reach API clients as readable messages; our handlers
# never leak internals (user_errors turns unexpected failures into a short generic message).
LAUNCH = dict(max_file_size=LIMITS.max_upload_bytes, show_error=True)
log = logging.getLogger("diffusion-lab")

INTRO = """# Diffusion Lab
Generate small images with a class-conditional **DDPM**, sample them with **DDPM** (ancestral, one network call per
training step) or **DDIM** (deterministic jumps over many steps), and see why DDIM is faster: the *DDPM vs DDIM* tab
races both from the same noise, and *Interpolate* shows that DDIM's starting noise is a code for its image while
DDPM's is not. The *Forward process* tab noises a real image and brings it back, toward any class, or runs DDIM's
deterministic path from the image up to its noise and down again, or fills in part of it."""

ABOUT = r"""
### What you are looking at
**Forward process.** Training images x₀ are noised in closed form: x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε, ε ~ N(0, I),
for t = 0 … T−1 (Ho et al. 2020, eq. 4). The network learns to predict the noise (here: v = √ᾱ_t ε − √(1−ᾱ_t) x₀,
an equivalent target) from x_t, t and the class.

**DDPM** reverses the chain one step at a time: x_{t−1} is drawn from the Gaussian posterior q(x_{t−1} | x_t, x̂₀),
so it needs T network calls (fewer if the chain is *respaced* over a subset of timesteps, with the betas recomputed
so every kept step has the right marginal).

**DDIM** (Song et al. 2021, eq. 12) uses the same network but a non-Markovian process with the same marginals:
x_prev = √ᾱ_prev · x̂₀ + √(1 − ᾱ_prev − σ²) · ε̂ + σ z. With η = 0 (σ = 0) the path from x_T is deterministic and
smooth, so it can jump over many timesteps at once: 20–50 calls instead of 1000. η = 1 gives DDPM's noise.

**Classifier-free guidance** (Ho & Salimans 2022) mixes the class-conditional and unconditional predictions:
ε̂ = ε̂_∅ + w (ε̂_c − ε̂_∅); w > 1 makes the class stronger, w = 0 ignores it. A *mix* of two classes feeds the
network a context vector with weights (1 − w, w) on them. A model may apply guidance only over an interval of
timesteps (Kynkäänniemi et al. 2024; shown in the model line): at the noisiest steps it would pull every sample of a
class towards the same few shapes, so those steps run one plain conditional pass instead. With *no class* there
is nothing to guide toward (ε̂_c = ε̂_∅): one pass per step at any w.

**Timestep spacing.** Which timesteps a short run visits: *trailing* spreads them evenly and starts at pure noise;
*quadratic* (DDIM paper, App. D.2) packs them at low noise, where the fine detail is settled.

**The way back** (Forward process tab). *Denoise x_t back* runs a sampler from the noised image x_t at its t instead
of from pure noise (SDEdit, Meng et al. 2022): a low t gives the image back, a high t keeps only its rough layout,
and a class other than the image's own fills what the noise erased with that class. *DDIM round trip* runs DDIM's
deterministic path the other way (DDIM inversion), from the image up to the noise x_T it would come from, then back
down: the image returns, which no DDPM chain can do, since each of its steps adds fresh noise. *Fill in* generates
one region of the image anew with any sampler (inpainting): at every step the kept pixels replace their part of the
network's prediction of x₀ (DDNM, Wang et al. 2023), so the chain keeps them on the forward process of the image, ends
on them exactly, and fills the rest to match them.

**Interpolation** (Interpolate tab). Deterministic DDIM is a fixed map from x_T to an image, so x_T is a code for
its image (DDIM paper, sec. 5.3): frames whose x_T lie on a path between two noises morph from one sample into the
other. The path is spherical (*slerp*): two Gaussian draws in d dimensions are nearly orthogonal, each of norm about
√d, and the straight line (*lerp*) between them passes through noise of norm √(d/2), standard deviation 0.71, which
the network never starts from; lerp's middle frames come out flat. DDPM's frames jump: with a cosine schedule ᾱ at
the last timestep is about 2·10⁻⁹, so x_T tells the network nothing about x₀ and DDPM's first step all but forgets it.
Its images are decided by the noise it adds on the way down, not by x_T.

Live views show **x_t** (the current sample) on the left and the network's **prediction of x₀** on the right.
"""


def user_errors(fn):
    """Turn bad input into a gr.Error with its message; any other failure into a short, safe gr.Error. The server
    keeps serving either way."""

    def convert(e: Exception) -> gr.Error:
        if isinstance(e, gr.Error):
            return e
        if isinstance(e, InputError):
            return gr.Error(str(e), title="Invalid input", print_exception=False)
        log.error("handler %s failed:\n%s", fn.__name__, traceback.format_exc())
        return gr.Error(f"Sorry, that failed ({e.__class__.__name__}). The server is still running; try other "
                        f"settings.", title="Error", print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - converted for the user
                raise convert(e) from e
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - converted for the user
            raise convert(e) from e
    return call


class Handlers:
    """Event handlers; each argument mirrors one UI input."""

    def __init__(self, registry: ModelRegistry, limits: Limits = LIMITS):
        self.registry = registry
        self.limits = limits
        self.outputs = OutputFiles()  # PNG and GIF results, in a private temporary folder

    def select_model(self, model: str):
        """Load a model (local name or Hub repo id) and refresh every model-dependent control."""
        pipe = get_model(self.registry, model, self.limits)
        names = pipe.class_names or ["(unconditional)"]
        T = pipe.config.num_timesteps
        rows = lab.evaluation_rows(pipe)
        examples = lab.example_choices(pipe)
        d = pipe.config.sampling
        return (lab.model_summary(pipe),
                gr.Dropdown(choices=names, value=names[0]),
                gr.Dropdown(choices=names, value=names[min(1, len(names) - 1)]),
                gr.Slider(maximum=T, value=min(d.steps, T)),
                gr.Slider(maximum=T, value=T),
                gr.Slider(maximum=T, value=min(50, T)),
                gr.Slider(maximum=T - 1, value=min(T // 2, T - 1)),
                gr.Slider(value=d.guidance_scale),
                gr.Dropdown(choices=examples, value=examples[0] if examples else None),
                pd.DataFrame(rows) if rows else None,
                gr.Radio(value=d.sampler),  # the sampler and noise the model evaluated best with (config.json)
                gr.Slider(value=d.eta),
                gr.Dropdown(choices=lab.toward_choices(pipe), value=lab.toward_choices(pipe)[0]),
                gr.Slider(maximum=T, value=min(50, T)),
                gr.Dropdown(choices=lab.end_choices(pipe), value=lab.end_choices(pipe)[0]),
                gr.Dropdown(choices=lab.end_choices(pipe), value=lab.end_choices(pipe)[0]),
                gr.Slider(maximum=T, value=min(20, T)),
                gr.Slider(maximum=T, value=min(100, T)))

    def sampler_noise(self, model: str, sampler: str):
        """A sampler picked by the user brings its own eta: the model's saved one for the model's saved sampler,
        else 0 (plain deterministic DDIM / DPM-Solver++), so switching dpm++ (eta 1) to DDIM gives DDIM, not a
        DDPM-like chain. DDPM ignores eta."""
        d = get_model(self.registry, model, self.limits).config.sampling
        return gr.Slider(value=d.eta if sampler == d.sampler else 0.0)

    def load_model(self, model: str):
        """select_model, and add the model (e.g. a Hub repo id just typed) to the model list: the list is read after
        the model has loaded (and so joined the registry); a bad name stops at select_model with its message."""
        controls = self.select_model(model)
        return (gr.Dropdown(choices=self.registry.names(), value=model.strip()), *controls)

    def generate(self, model: str, sampler: str, steps: int, eta: float, guidance_scale: float, seed: int,
                 random_seed: bool, num_images: int, class_mode: str, class_a: str, class_b: str, mix: float,
                 progress=gr.Progress()):
        for u in lab.generate_stream(self.registry, self.outputs, model, sampler, steps, eta, guidance_scale, seed,
                                     random_seed, num_images, class_mode, class_a, class_b, mix, self.limits,
                                     progress=lambda f, d: progress(f, desc=d)):
            if u.final is None:
                yield u.live, u.status, gr.skip(), gr.skip(), gr.skip(), u.seed
            else:
                yield u.live, u.status, u.final, u.png_path, u.gif_path, u.seed

    def compare(self, model: str, ddpm_steps: int, ddim_steps: int, eta: float, guidance_scale: float, seed: int,
                random_seed: bool, num_images: int, class_mode: str, class_a: str, class_b: str, mix: float,
                progress=gr.Progress()):
        for u in lab.compare_stream(self.registry, model, ddpm_steps, ddim_steps, eta, guidance_scale, seed,
                                    random_seed, num_images, class_mode, class_a, class_b, mix, self.limits,
                                    progress=lambda f, d: progress(f, desc=d)):
            yield (u.ddim if u.ddim is not None else gr.skip(), u.ddpm if u.ddpm is not None else gr.skip(),
                   u.ddim_status, u.ddpm_status, u.readout, u.strip)

    def forward(self, model: str, example: str | None, upload: str | None, t: int, seed: int):
        r = lab.forward_process(self.registry, self.outputs, model, example, upload, t, seed, self.limits)
        return r.x0, r.x_t, r.predicted_x0, r.predicted_noise, r.info, r.gif_path

    def denoise_back(self, model: str, example: str | None, upload: str | None, t: int, seed: int, sampler: str,
                     steps: int, toward: str, guidance_scale: float):
        r = lab.denoise_back(self.registry, model, example, upload, t, seed, sampler, steps, toward, guidance_scale,
                             self.limits)
        return r.image, r.info

    def round_trip(self, model: str, example: str | None, upload: str | None, steps: int, toward: str, seed: int):
        r = lab.ddim_round_trip(self.registry, model, example, upload, steps, toward, seed, self.limits)
        return r.noise, r.reconstruction, r.info

    def fill_in(self, model: str, example: str | None, upload: str | None, region: str, sampler: str, steps: int,
                resample: int, toward: str, guidance_scale: float, seed: int):
        r = lab.fill_in(self.registry, model, example, upload, region, sampler, steps, resample, toward,
                        guidance_scale, seed, self.limits)
        return r.masked, r.filled, r.info

    def interpolate(self, model: str, class_from: str, seed_from: int, class_to: str, seed_to: int, frames: int,
                    path: str, ddim_steps: int, ddpm_steps: int, guidance_scale: float):
        r = lab.interpolate(self.registry, self.outputs, model, class_from, seed_from, class_to, seed_to, frames, path,
                            ddim_steps, ddpm_steps, guidance_scale, self.limits)
        return r.ddim, r.ddpm, r.info, r.gif_path


def build_demo(registry: ModelRegistry, limits: Limits = LIMITS, queue_size: int = QUEUE_SIZE) -> gr.Blocks:
    # PIL refuses images over twice this many pixels before decoding them (decompression bombs); process-wide.
    Image.MAX_IMAGE_PIXELS = limits.max_upload_pixels
    h = Handlers(registry, limits)
    names = registry.names()
    default = registry.default()
    # Every streamed frame and result file is written into Gradio's cache: files older than an hour are deleted
    # every 30 minutes (a shared server's disk never fills), while defaults and examples are kept.
    with gr.Blocks(title="Diffusion Lab", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                model = gr.Dropdown(names, value=default, label="Model", allow_custom_value=True,
                                    info="a model under checkpoints/, or type a Hub repo id (owner/name)")
                load = gr.Button("Load model", size="sm")
                info = gr.Markdown()
                gr.Markdown("#### Class context")
                class_mode = gr.Radio(list(CLASS_MODES), value="class", label="Context",
                                      info="one class, a mix of two, or none (unconditional)")
                class_a = gr.Dropdown([], label="Class", allow_custom_value=True)
                class_b = gr.Dropdown([], label="Second class (mix)", allow_custom_value=True)
                mix = gr.Slider(0, 1, value=0.5, step=0.05, label="Mix weight of the second class")
                guidance = gr.Slider(0, 10, value=2.0, step=0.1, label="Guidance scale",
                                     info="1 = conditional, 0 = unconditional, > 1 = stronger class")
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=SEED_MAX)
                    random_seed = gr.Checkbox(False, label="Random seed")
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Generate"):
                        with gr.Row():
                            sampler = gr.Radio(list(SAMPLERS), value="ddim", label="Sampler",
                                               info="dpm++ = DPM-Solver++(2M), second order")
                            steps = gr.Slider(1, 1000, value=20, step=1, label="Steps",
                                              info="DDPM with fewer than T steps is respaced")
                            eta = gr.Slider(0, 1, value=0.0, step=0.05, label="Noise (eta), DDIM and dpm++",
                                            info="0 = deterministic, 1 = DDPM-like (dpm++: the SDE solver)")
                            num_images = gr.Slider(1, limits.max_images, value=8, step=1, label="Images")
                        run = gr.Button("Generate", variant="primary")
                        status = gr.Markdown()
                        with gr.Row():
                            live = gr.Image(label="Live: x_t (left) and predicted x0 (right)", format="png",
                                            interactive=False)
                            final = gr.Image(label="Result", format="png", interactive=False)
                        with gr.Row():
                            png_file = gr.File(label="PNG grid", interactive=False)
                            gif_file = gr.File(label="GIF of the reverse process", interactive=False)
                            seed_used = gr.Number(label="Seed used", precision=0, interactive=False)
                    with gr.Tab("DDPM vs DDIM"):
                        with gr.Row():
                            ddpm_steps = gr.Slider(1, 1000, value=1000, step=1, label="DDPM steps")
                            ddim_steps = gr.Slider(1, 1000, value=50, step=1, label="DDIM steps")
                            cmp_eta = gr.Slider(0, 1, value=0.0, step=0.05, label="DDIM eta")
                            cmp_images = gr.Slider(1, limits.max_compare_images, value=4, step=1, label="Images")
                        race = gr.Button("Race DDPM vs DDIM from the same noise", variant="primary")
                        with gr.Row():
                            with gr.Column():
                                ddim_status = gr.Markdown()
                                ddim_view = gr.Image(label="DDIM: x_t | predicted x0", format="png",
                                                     interactive=False)
                            with gr.Column():
                                ddpm_status = gr.Markdown()
                                ddpm_view = gr.Image(label="DDPM: x_t | predicted x0", format="png",
                                                     interactive=False)
                        readout = gr.Markdown()
                        with gr.Row():
                            strip = gr.Gallery(label="DDIM at 5, 10, 20, 50, 100 steps from the same noise",
                                               columns=5, height=220, format="png", interactive=False)
                            chart = gr.ScatterPlot(x="ms per image", y="FD / floor", color="sampler",
                                                   tooltip=["setting", "guidance", "class accuracy"],
                                                   title="Quality (Frechet distance / real-data floor, lower is "
                                                         "better) vs time", height=260)
                    with gr.Tab("Interpolate"):
                        gr.Markdown("Frames between two samples: their starting noises x_T on a path from one seed's "
                                    "noise to the other's, and the class going from one end's to the other's. "
                                    "DDIM turns the path into a morph; DDPM, from the same x_T's, jumps. Guidance: "
                                    "the side panel's.")
                        with gr.Row():
                            i_from = gr.Dropdown([], label="From: class", allow_custom_value=True)
                            i_seed_from = gr.Number(0, label="From: seed of x_T", precision=0, minimum=0,
                                                    maximum=SEED_MAX)
                            i_to = gr.Dropdown([], label="To: class", allow_custom_value=True)
                            i_seed_to = gr.Number(1, label="To: seed of x_T", precision=0, minimum=0,
                                                  maximum=SEED_MAX)
                        with gr.Row():
                            i_frames = gr.Slider(2, limits.max_frames, value=9, step=1, label="Frames")
                            i_path = gr.Radio(list(PATHS), value="slerp", label="Noise path",
                                              info="slerp keeps every x_T at the norm of N(0, I); lerp does not")
                            i_ddim_steps = gr.Slider(1, 1000, value=20, step=1, label="DDIM steps")
                            i_ddpm_steps = gr.Slider(0, 1000, value=100, step=1, label="DDPM steps",
                                                     info="0 = no DDPM row")
                        i_run = gr.Button("Interpolate", variant="primary")
                        i_ddim = gr.Image(label="DDIM (eta 0): one image per x_T", format="png", interactive=False)
                        i_ddpm = gr.Image(label="DDPM from the same x_T's", format="png", interactive=False)
                        i_info = gr.Markdown()
                        i_gif = gr.File(label="GIF of the DDIM morph", interactive=False)
                    with gr.Tab("Forward process"):
                        with gr.Row():
                            example = gr.Dropdown([], label="Real example image", allow_custom_value=True)
                            upload = gr.File(label="...or upload an image", file_types=["image"],
                                             type="filepath")
                            t = gr.Slider(0, 999, value=500, step=1, label="Noise level t")
                        show = gr.Button("Noise it", variant="primary")
                        with gr.Row():
                            f_x0 = gr.Image(label="x0", format="png", interactive=False)
                            f_xt = gr.Image(label="x_t", format="png", interactive=False)
                            f_px0 = gr.Image(label="predicted x0 (one call)", format="png", interactive=False)
                            f_noise = gr.Image(label="predicted noise | true noise", format="png",
                                               interactive=False)
                        f_info = gr.Markdown()
                        f_gif = gr.File(label="GIF of the forward process", interactive=False)
                        gr.Markdown("#### The way back: denoise x_t, or run DDIM up to noise and down again")
                        with gr.Row():
                            back_sampler = gr.Radio(list(SAMPLERS), value="ddim", label="Sampler",
                                                    info="DDIM and dpm++ deterministic (eta 0)")
                            back_steps = gr.Slider(2, 1000, value=50, step=1, label="Steps",
                                                   info="of a run from pure noise: from t, those below t")
                            toward = gr.Dropdown([], label="Denoise toward", allow_custom_value=True,
                                                 info="the example's own class, another class, or none")
                        with gr.Row():
                            back = gr.Button("Denoise x_t back")
                            trip = gr.Button("DDIM round trip: image -> noise -> image")
                        with gr.Row():
                            b_image = gr.Image(label="denoised from x_t", format="png", interactive=False)
                            b_noise = gr.Image(label="x_T found by DDIM inversion", format="png",
                                               interactive=False)
                            b_recon = gr.Image(label="DDIM from that x_T", format="png", interactive=False)
                        b_info = gr.Markdown()
                        gr.Markdown("#### Fill in: generate part of the image to match the rest (sampler, steps "
                                    "and class as above)")
                        with gr.Row():
                            region = gr.Dropdown(list(REGIONS), value="top half", label="Region to fill",
                                                 info="the rest of the image is kept exactly")
                            resample = gr.Slider(1, limits.max_resample, value=5, step=1, label="Resample (RePaint)",
                                                 info="takes of every step: the parts agree better; DDIM, DDPM")
                            fill = gr.Button("Fill it in")
                        with gr.Row():
                            p_masked = gr.Image(label="kept (grey: to fill)", format="png", interactive=False)
                            p_filled = gr.Image(label="filled in", format="png", interactive=False)
                        p_info = gr.Markdown()
                    with gr.Tab("About"):
                        gr.Markdown(ABOUT, latex_delimiters=[])

        model_outputs = [info, class_a, class_b, steps, ddpm_steps, ddim_steps, t, guidance, example, chart, sampler,
                         eta, toward, back_steps, i_from, i_to, i_ddim_steps, i_ddpm_steps]
        select = user_errors(h.select_model)
        model.change(select, [model], model_outputs, api_name="select_model")
        load.click(user_errors(h.load_model), [model], [model, *model_outputs], api_name="load_model")
        demo.load(select, [model], model_outputs, api_visibility="undocumented")
        sampler.input(user_errors(h.sampler_noise), [model, sampler], [eta], api_visibility="undocumented")

        context = [class_mode, class_a, class_b, mix]
        run.click(user_errors(h.generate),
                  [model, sampler, steps, eta, guidance, seed, random_seed, num_images, *context],
                  [live, status, final, png_file, gif_file, seed_used], api_name="generate", show_progress="minimal",
                  concurrency_id="cpu")
        race.click(user_errors(h.compare),
                   [model, ddpm_steps, ddim_steps, cmp_eta, guidance, seed, random_seed, cmp_images, *context],
                   [ddim_view, ddpm_view, ddim_status, ddpm_status, readout, strip], api_name="compare",
                   show_progress="minimal", concurrency_id="cpu")
        i_run.click(user_errors(h.interpolate),
                    [model, i_from, i_seed_from, i_to, i_seed_to, i_frames, i_path, i_ddim_steps, i_ddpm_steps,
                     guidance], [i_ddim, i_ddpm, i_info, i_gif], api_name="interpolate", concurrency_id="cpu")
        forward = user_errors(h.forward)
        forward_io = ([model, example, upload, t, seed], [f_x0, f_xt, f_px0, f_noise, f_info, f_gif])
        show.click(forward, *forward_io, api_name="forward", concurrency_id="cpu")
        t.release(forward, *forward_io, api_visibility="undocumented", concurrency_id="cpu")
        back.click(user_errors(h.denoise_back),
                   [model, example, upload, t, seed, back_sampler, back_steps, toward, guidance], [b_image, b_info],
                   api_name="denoise_back", concurrency_id="cpu")
        trip.click(user_errors(h.round_trip), [model, example, upload, back_steps, toward, seed],
                   [b_noise, b_recon, b_info], api_name="round_trip", concurrency_id="cpu")
        fill.click(user_errors(h.fill_in),
                   [model, example, upload, region, back_sampler, back_steps, resample, toward, guidance, seed],
                   [p_masked, p_filled, p_info], api_name="fill_in", concurrency_id="cpu")
    # One job at a time per event, and the events that sample share one slot ("cpu"): a job uses both cores; two
    # at once would halve both and thrash the caches.
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo


def make_registry() -> ModelRegistry:
    hub = [h.strip() for h in os.environ.get("DIFFUSION_LAB_HUB_MODELS", "").split(",") if h.strip()]
    return ModelRegistry(CHECKPOINTS, hub, precision=os.environ.get("DIFFUSION_LAB_PRECISION", "auto"),
                         compile=os.environ.get("DIFFUSION_LAB_COMPILE", "") == "1")


registry = make_registry()
demo = build_demo(registry)

if __name__ == "__main__":
    # Load the shipped models before the first visitor: precision "auto" times each on an idle machine (a timing
    # beside a running generation would be skewed, and it holds for the process), and compiling happens now.
    if registry.compile:
        print("compiling the shipped models with torch.compile (10-50 s each on a 2-core CPU)...", flush=True)
    for name in registry.local_names()[:registry.max_loaded]:
        try:
            print(f"{name}: {registry.get(name).precision_reason}", flush=True)
        except Exception as e:  # noqa: BLE001 - a broken model directory is not served; the app still starts
            print(f"{name}: not loaded: {e}", flush=True)
    demo.launch(**LAUNCH, theme=gr.themes.Soft(), footer_links=["api", "gradio"])
