"""Source registry: the config's `type:` names a class here.

Each source module registers itself with `@register`; `source_class` imports the known modules on
first use so that a config can name a type without the caller importing it.
"""

from __future__ import annotations

import importlib

from connector.sources.base import Source

_REGISTRY: dict[str, type[Source]] = {}
_MODULES = {
    "excel": "connector.sources.excel",
    "csv": "connector.sources.excel",
    "salesforce": "connector.sources.salesforce",
    "odk_central": "connector.sources.odk_central",
    "kobo": "connector.sources.kobo",
}


def register(cls: type[Source]) -> type[Source]:
    _REGISTRY[cls.type_name] = cls
    return cls


def source_class(type_name: str) -> type[Source]:
    """The class for a config `type:`; KeyError with a message listing the known types."""
    if type_name not in _REGISTRY and type_name in _MODULES:
        try:
            importlib.import_module(_MODULES[type_name])
        except ModuleNotFoundError:
            pass
    if type_name not in _REGISTRY:
        known = ", ".join(sorted({t for t in _MODULES if _module_available(t)} | set(_REGISTRY)))
        raise KeyError(f"unknown source type {type_name!r}; known types: {known}")
    return _REGISTRY[type_name]


def _module_available(type_name: str) -> bool:
    return importlib.util.find_spec(_MODULES[type_name]) is not None


__all__ = ["Source", "register", "source_class"]
