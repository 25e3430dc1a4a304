"""Model backends behind one protocol (base.py), looked up by the name `backend:` gives.

hf.py runs transformers on CPU or GPU; vllm.py runs vLLM (the optional extra
medmerge[vllm]). A backend's module is imported only when its name is asked for, so
`backend: hf` never imports vLLM. To add a backend: a module with a class implementing
`Backend`, and its line in BACKENDS.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from medmerge.errors import ConfigError
from medmerge.eval.backends.base import Backend, Generation, LoglikRequest
from medmerge.eval.config import EngineSettings, ModelSpec

# name -> "module:class", imported on first use
BACKENDS: dict[str, str] = {
    "hf": "medmerge.eval.backends.hf:HFBackend",
    "vllm": "medmerge.eval.backends.vllm:VLLMBackend",
}


def backend_class(name: str) -> type[Backend]:
    """The class registered under `name`, its module imported now."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def load_backend(spec: ModelSpec, engine: EngineSettings, adapters: Sequence[Any] = ()) -> Backend:
    """The backend `engine.backend` names, set up from a stage config's engine settings."""
    return backend_class(engine.backend).from_engine(spec, engine, adapters)


__all__ = ["BACKENDS", "Backend", "Generation", "LoglikRequest", "backend_class", "load_backend"]
