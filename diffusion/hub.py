"""Upload a model directory (config.json, model.safetensors, model card, sample grid) to the Hugging Face Hub.
Downloading lives in checkpoint.resolve_model_dir.

Usage: push_model_dir("runs/fmnist/model", "me/ddpm-fashion-mnist")
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import HUB_FILES, CheckpointError, is_hub_repo_id, load_model_dir


def push_model_dir(model_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                   commit_message: str = "Upload diffusion model") -> str:
    """Check that the directory loads, create the repo if needed, upload; returns the repo URL."""
    model_dir = Path(model_dir)
    if not is_hub_repo_id(repo_id):
        raise CheckpointError(f"{repo_id!r} is not a Hugging Face Hub repo id of the form 'owner/name'")
    load_model_dir(model_dir)  # refuse to upload something that does not load
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), repo_type="model", commit_message=commit_message,
                      allow_patterns=HUB_FILES)  # what resolve_model_dir downloads
    return str(url)
