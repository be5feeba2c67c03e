"""Loss modules that hold their hyper-parameters in one validated record.

Each loss has one frozen dataclass of hyper-parameters (``SupConConfig``,
``ClassBalancedConfig``, ...), validated once when it is built. The function
builds it once per call; the module builds it once in ``__init__`` and keeps it
as ``config``. A module's hyper-parameters read as attributes
(``loss.temperature``); assigning one builds a new, validated record.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

__all__ = ["ConfiguredModule"]


class ConfiguredModule(nn.Module):
    """An ``nn.Module`` whose hyper-parameters are the fields of ``self.config``."""

    config: Any

    def __getattr__(self, name: str) -> Any:
        config = self.__dict__.get("config")
        if config is not None and name in _field_names(config):
            return getattr(config, name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        config = self.__dict__.get("config")
        if config is not None and name in _field_names(config):
            super().__setattr__("config", dataclasses.replace(config, **{name: value}))
            return
        super().__setattr__(name, value)

    def extra_repr(self) -> str:
        config = self.__dict__.get("config")
        if config is None:
            return ""
        return ", ".join(
            f"{field.name}={getattr(config, field.name)!r}"
            for field in dataclasses.fields(config)
            if field.repr
        )


def _field_names(config: Any) -> frozenset[str]:
    return frozenset(field.name for field in dataclasses.fields(config) if field.init)
