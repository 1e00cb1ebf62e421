"""Model directories on disk and on the Hugging Face Hub: config.json + model.safetensors (no pickle anywhere).

A model directory holds everything needed to rebuild the network and its schedule; loading checks every tensor
name and shape strictly and names the offending file in every error. Writes are atomic (temp file, then rename).

Usage: save_model_dir("out/", config, model.state_dict()); config, model = load_model_dir("out/")
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from .config import ConfigError, DiffusionConfig
from .unet import UNet

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TRAINING_NAME = "training.json"  # how the model was trained (written by training, read by the model card)
# What a model directory holds, and all that is fetched of a Hub repo (fnmatch patterns, as huggingface_hub uses)
HUB_FILES = [CONFIG_NAME, WEIGHTS_NAME, TRAINING_NAME, "README.md", "evaluation.json", "samples.png", "examples/*.png"]
MAX_WEIGHTS_BYTES = 1 << 30  # refuse weight files over 1 GiB: far beyond any small-image model
MAX_HUB_BYTES = MAX_WEIGHTS_BYTES + (64 << 20)  # the weights plus 64 MiB for the card, examples and records
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class CheckpointError(RuntimeError):
    """A model directory or Hub repo is missing, corrupted or does not match its config; the message names the file."""


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync it, then rename it over `path`: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a model file is meant to be read by others
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model_dir(directory: str | Path, config: DiffusionConfig, state_dict: dict[str, Tensor]) -> Path:
    """Write config.json and model.safetensors (contiguous float32 CPU tensors) into `directory`."""
    directory = Path(directory)
    config.validate()
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}
    metadata = {"format": "pt", "config": json.dumps(config.to_dict())}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata=metadata))
    atomic_write(directory / CONFIG_NAME, lambda p: config.to_json_file(p))
    return directory


def load_config(directory: str | Path) -> DiffusionConfig:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        return DiffusionConfig.from_json_file(path)
    except ConfigError as e:
        raise CheckpointError(str(e)) from e


def load_model_dir(directory: str | Path, device: str | torch.device = "cpu") -> tuple[DiffusionConfig, UNet]:
    """Rebuild the network from config.json and load model.safetensors with strict name and shape checks."""
    directory = Path(directory)
    config = load_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing; a model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    if weights.stat().st_size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{weights}: {weights.stat().st_size / 2**20:.0f} MB, over the {MAX_WEIGHTS_BYTES >> 20} "
                              f"MB this tool loads")
    # Names and shapes are checked on the file's header against a network built on the meta device (no memory),
    # before anything is allocated: a config asking for billions of parameters with a small weights file is refused
    # here, and the network that is built is never larger than the (size-capped) file.
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file, truncated or corrupted ({e})") from e
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in UNet(config.unet).state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{weights}: tensors do not match {CONFIG_NAME}: missing {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                              f"{'...' if len(unexpected) > 5 else ''}")
    wrong = [f"{k}: file {shapes[k]} vs config {v}" for k, v in expected.items() if shapes[k] != v]
    if wrong:
        raise CheckpointError(f"{weights}: tensor shapes do not match {CONFIG_NAME}: {'; '.join(wrong[:5])}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file, truncated or corrupted ({e})") from e
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{weights}: non-finite values in {bad[:5]}")
    model = UNet(config.unet)
    model.load_state_dict(state, strict=True)
    return config, model.to(device).eval()


def is_hub_repo_id(name: str) -> bool:
    """True for 'owner/name' Hub ids; rejects paths, URLs and '..' tricks."""
    return bool(REPO_ID_PATTERN.match(name)) and ".." not in name and not name.endswith((".", "-"))


def resolve_model_dir(name_or_path: str | Path, revision: str | None = None, source: str = "auto") -> Path:
    """A local model directory as is, or a Hub repo id downloaded (config, weights, card, examples) into the local
    Hugging Face cache with huggingface_hub.snapshot_download. source: "auto" (a local directory if one exists,
    else the Hub), "local" or "hub" (never touches the local file system: for names that come from users)."""
    if source not in ("auto", "local", "hub"):
        raise ValueError(f"source must be 'auto', 'local' or 'hub', got {source!r}")
    if not str(name_or_path).strip():
        raise CheckpointError("empty model name: pass a model directory or a Hub repo id (owner/name)")
    path = Path(name_or_path).expanduser()
    if source != "hub" and path.is_dir():
        return path
    if source == "local":
        raise CheckpointError(f"{path}: not a directory")
    name = str(name_or_path)
    if not is_hub_repo_id(name):
        raise CheckpointError(f"{name!r} is neither a local model directory nor a Hugging Face Hub repo id of the "
                              f"form 'owner/name' (letters, digits, '-', '_', '.')")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    check_hub_size(name, revision)
    try:
        return Path(snapshot_download(repo_id=name, revision=revision, allow_patterns=HUB_FILES))
    except RepositoryNotFoundError as e:
        raise CheckpointError(f"Hugging Face Hub repo {name!r} not found (or private without a token)") from e
    except LocalEntryNotFoundError as e:
        raise CheckpointError(f"cannot download {name!r} from the Hugging Face Hub: offline and not in the local "
                              f"cache ({e.__class__.__name__})") from e
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot download {name!r} from the Hugging Face Hub: {e}") from e


def check_hub_size(repo_id: str, revision: str | None = None) -> None:
    """Before downloading anything, refuse a Hub repo whose weights exceed MAX_WEIGHTS_BYTES or whose files to fetch
    (HUB_FILES) exceed MAX_HUB_BYTES together. A repo that does not exist is left to snapshot_download's clear
    error; a repo whose file sizes cannot be read is refused. Offline this check is skipped: snapshot_download then
    reads the local cache only."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import filter_repo_objects

    if constants.is_offline_mode():
        return
    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return  # snapshot_download, which runs next, reports it
    except Exception as e:  # noqa: BLE001 - network, HTTP or parsing errors alike
        raise CheckpointError(f"cannot read the file list of {repo_id!r} on the Hugging Face Hub "
                              f"({e.__class__.__name__})") from e
    fetched = list(filter_repo_objects(info.siblings or [], allow_patterns=HUB_FILES, key=lambda f: f.rfilename))
    unknown = [f.rfilename for f in fetched if f.size is None]
    if unknown:
        raise CheckpointError(f"{repo_id}: the Hub gives no size for {unknown[:3]}; not downloaded")
    for f in fetched:
        if f.rfilename == WEIGHTS_NAME and f.size > MAX_WEIGHTS_BYTES:
            raise CheckpointError(f"{repo_id}: {WEIGHTS_NAME} is {f.size / 2**20:.0f} MB, over the "
                                  f"{MAX_WEIGHTS_BYTES >> 20} MB this tool loads")
    total = sum(f.size for f in fetched)
    if total > MAX_HUB_BYTES:
        raise CheckpointError(f"{repo_id}: the files to download come to {total / 2**20:.0f} MB, over the "
                              f"{MAX_HUB_BYTES >> 20} MB this tool fetches")
