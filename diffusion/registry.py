"""The models an app can serve: every model directory under a root folder (e.g. checkpoints/) plus Hugging Face Hub
repo ids, loaded on first use and kept in a small LRU cache. Names from clients are looked up, never used as paths.

Usage: registry = ModelRegistry("checkpoints"); pipe = registry.get(registry.names()[0])
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

from .checkpoint import CONFIG_NAME, CheckpointError, is_hub_repo_id, load_config
from .pipeline import CompileError, Pipeline, Precision
from .precision import PRECISIONS


class ModelNotFound(ValueError):
    """An unknown model name; the message lists the known ones."""


class ModelRegistry:
    def __init__(self, root: str | Path = "checkpoints", hub_ids: list[str] | tuple[str, ...] = (), *,
                 device: str = "cpu", precision: Precision = "auto", max_loaded: int = 5,
                 allow_any_hub_id: bool = True, compile: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.root = Path(root)
        self.device = device
        self.precision = precision
        self.compile = compile  # torch.compile each model when it is loaded (Pipeline.warm_up compiles it then)
        self.max_loaded = max_loaded  # the default keeps every shipped model loaded, with room for a Hub model
        self.allow_any_hub_id = allow_any_hub_id
        self._local = self._discover()
        self._hub = [h for h in hub_ids if h]
        for h in self._hub:
            if not is_hub_repo_id(h):
                raise ModelNotFound(f"{h!r} is not a Hugging Face Hub repo id of the form 'owner/name'")
        self._cache: OrderedDict[str, Pipeline] = OrderedDict()
        self._lock = threading.Lock()  # guards the cache and the per-name locks, never held while loading
        self._loading: dict[str, threading.Lock] = {}

    def _discover(self) -> dict[str, Path]:
        """Sub-directories of root holding a config.json that parses as a diffusion model config."""
        found = {}
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                if (d / CONFIG_NAME).is_file():
                    try:
                        load_config(d)
                    except CheckpointError:
                        continue
                    found[d.name] = d
        return found

    def local_names(self) -> list[str]:
        """The models found under root (the shipped checkpoints), in the order the app lists them."""
        return list(self._local)

    def names(self) -> list[str]:
        return list(self._local) + [h for h in self._hub if h not in self._local]

    def default(self) -> str | None:
        names = self.names()
        return names[0] if names else None

    def get(self, name: str) -> Pipeline:
        """The loaded pipeline of a listed local model or a Hub repo id; errors say what is available."""
        if not isinstance(name, str) or not name.strip():
            raise ModelNotFound(f"choose a model: {', '.join(self.names()) or '(none found)'}")
        name = name.strip()
        if name not in self._local and not (is_hub_repo_id(name) and (self.allow_any_hub_id or name in self._hub)):
            raise ModelNotFound(f"unknown model {name[:100]!r}: choose one of {', '.join(self.names())}"
                                + (" or type a Hugging Face Hub repo id (owner/name)" if self.allow_any_hub_id
                                   else ""))
        with self._lock:
            if name in self._cache:
                self._cache.move_to_end(name)
                return self._cache[name]
            name_lock = self._loading.setdefault(name, threading.Lock())
        with name_lock:  # one load per name at a time; other models keep serving meanwhile
            with self._lock:
                if name in self._cache:
                    return self._cache[name]
            try:
                pipe = self._load(name)
            except BaseException:
                with self._lock:
                    self._loading.pop(name, None)
                raise
            with self._lock:  # cached before its per-name lock goes: a request in between must not load it again
                if name not in self._local and name not in self._hub:
                    self._hub.append(name)
                self._cache[name] = pipe
                while len(self._cache) > self.max_loaded:
                    self._cache.popitem(last=False)
                self._loading.pop(name, None)
            return pipe

    def _load(self, name: str) -> Pipeline:
        # a Hub id typed by a user is looked up on the Hub only, never as a local path
        where, source = (self._local[name], "local") if name in self._local else (name, "hub")
        pipe = Pipeline.from_pretrained(where, device=self.device, precision=self.precision, source=source,
                                        compile=self.compile)
        logging.getLogger(__name__).info("loaded %s on %s, %s", name, pipe.device, pipe.precision_reason)
        if self.compile:
            try:
                pipe.warm_up()
            except CompileError:  # serve it uncompiled rather than not at all
                logging.getLogger(__name__).warning("torch.compile failed for %s; serving it uncompiled", name,
                                                    exc_info=True)
                pipe.use_eager()
        return pipe
