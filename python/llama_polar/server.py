"""llama-cpp-python's OpenAI-compatible server (llama_cpp.server) on the polar build, with cache types by name.

    python -m llama_polar.server --model model.gguf --type_k pq46 --type_v pq46 --flash_attn true
    llama-polar serve --model model.gguf --type_k pq46 --type_v pq46 --flash_attn true      (the same)

Every option of `python -m llama_cpp.server` works (--n_ctx, --host, --port, --n_threads, --config_file, ...), and
so do its environment variables (MODEL, TYPE_K, ...). --type_k and --type_v (and type_k/type_v in a config file's
models) also take cache type names: pq46, q8_0, f16, ...; ids still work. Before any model loads, the server stops
with one clear message for an unknown type, a polar (or quantized V) cache without --flash_attn true, and a head
size the type's blocks do not divide. Needs the server extra: pip install "llama-polar[server]".
"""
from __future__ import annotations

import argparse
import os
import sys
from functools import lru_cache
from pathlib import Path

from .paths import LibraryError

SERVER_PACKAGES = "uvicorn, fastapi, pydantic-settings, sse-starlette, starlette-context"


def _server_modules():
    """llama_cpp.server and uvicorn, after llama_polar.llama has pointed llama_cpp at the polar build."""
    from . import llama as polar_llama      # first: LibraryError if llama_cpp already loaded another build

    try:
        import uvicorn
        from llama_cpp.server import app, cli, settings
    except ImportError as e:
        raise LibraryError(f"the server needs llama-cpp-python's server extra ({SERVER_PACKAGES}): "
                           f"pip install \"llama-polar[server]\" ({e})") from e
    return polar_llama, uvicorn, app, cli, settings


def _cache_type(polar_llama, value, field: str):
    """A type_k/type_v value from the command line ("pq46", "48"), a config file or the environment -> its id."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    return polar_llama.resolve_cache_type(value, field)


@lru_cache(maxsize=None)
def settings_classes():
    """(Settings, ModelSettings, ConfigFileSettings): llama_cpp.server's, with type_k/type_v by name and checked."""
    from typing import List, Optional, Union

    from pydantic import Field, field_validator, model_validator

    polar_llama, _, _, _, upstream = _server_modules()
    names = ", ".join(polar_llama.cache_types())

    class ModelSettings(upstream.ModelSettings):
        # str first: llama_cpp.server.cli makes the command-line option of a Union field its first type
        type_k: Optional[Union[str, int]] = Field(default=None, description=f"K cache type: {names}, or an id")
        type_v: Optional[Union[str, int]] = Field(default=None, description=f"V cache type: {names}, or an id")

        @field_validator("type_k", "type_v", mode="after")
        @classmethod
        def _by_name(cls, value, info):
            return _cache_type(polar_llama, value, info.field_name)

        @model_validator(mode="after")
        def _supported(self):
            if self.hf_model_repo_id is None and (self.type_k is not None or self.type_v is not None):
                if not Path(self.model).is_file():
                    raise ValueError(f"model {self.model!r} is not a file")
                polar_llama.check_cache_types(self.model, self.type_k, self.type_v, self.flash_attn,
                                              "pass --flash_attn true (flash_attn: true in a config file)")
            return self

    class Settings(upstream.ServerSettings, ModelSettings):
        pass

    class ConfigFileSettings(upstream.ConfigFileSettings):
        models: List[ModelSettings] = Field(default=[], description="Model configs")

    return Settings, ModelSettings, ConfigFileSettings


def _problem(e: Exception) -> str:
    """A pydantic ValidationError as its messages (with the field, unless the message names it); else str(e)."""
    errors = getattr(e, "errors", None)
    if not callable(errors):
        return str(e)
    messages = []
    for err in errors():
        msg, field = err["msg"].removeprefix("Value error, "), ".".join(map(str, err.get("loc", ())))
        messages.append(msg if not field or msg.startswith(err["loc"][-1]) else f"{field}: {msg}")
    return "; ".join(messages)


def load_settings(args, config_file: str | None):
    """(ServerSettings, [ModelSettings]) from the command line, or from a JSON/YAML config file (as upstream)."""
    Settings, ModelSettings, ConfigFileSettings = settings_classes()
    _, _, _, cli, upstream = _server_modules()
    if not config_file:
        server = cli.parse_model_from_args(upstream.ServerSettings, args)
        return server, [cli.parse_model_from_args(ModelSettings, args)]
    path = Path(config_file)
    if not path.is_file():
        raise ValueError(f"config file {config_file} not found")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        config = ConfigFileSettings.model_validate(yaml.safe_load(path.read_text()))
    else:
        config = ConfigFileSettings.model_validate_json(path.read_text())
    return upstream.ServerSettings.model_validate(config.model_dump(exclude={"models"})), config.models


def main(argv=None, prog=None) -> int:
    _, uvicorn, app, cli, _ = _server_modules()
    Settings, _, _ = settings_classes()
    ap = argparse.ArgumentParser(prog=prog or "python -m llama_polar.server", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_args_from_model(ap, Settings)
    ap.add_argument("--config_file", type=str, help="a JSON or YAML config file (llama_cpp.server's format)")
    args = ap.parse_args(argv)
    try:
        server, models = load_settings(args, os.environ.get("CONFIG_FILE", args.config_file))
    except ValueError as e:                         # pydantic's ValidationError is one
        ap.error(_problem(e))
    uvicorn.run(app.create_app(server_settings=server, model_settings=models),
                host=os.getenv("HOST", server.host), port=int(os.getenv("PORT", server.port)),
                ssl_keyfile=server.ssl_keyfile, ssl_certfile=server.ssl_certfile)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LibraryError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
