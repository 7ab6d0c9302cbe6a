"""The backbone registry: the one list of backbone names, which ``model.backbone`` is validated against.

It imports no torch, so that :mod:`learec.config` can check a name without loading the networks. A built-in
backbone is listed here by the module that defines it; that module registers its class (``@register(name)``)
when first imported, i.e. when the backbone is first built. A backbone defined elsewhere (a plugin, a test)
registers its class with ``@register("name")`` before the config naming it is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from learec.models.base import Backbone

# ``model.backbone: pop`` is the popularity baseline: a valid name that has no network to register
NO_NETWORK = "pop"

_BUILTIN_MODULES = {
    "gru4rec": "learec.models.gru4rec",
    "caser": "learec.models.caser",
    "nextitnet": "learec.models.nextitnet",
    "sasrec": "learec.models.sasrec",
}

_B = TypeVar("_B", bound="type[Backbone]")


class BackboneRegistry(Mapping[str, "type[Backbone]"]):
    """``name -> Backbone class``; a built-in class is imported on first access."""

    def __init__(self, builtin_modules: Mapping[str, str]) -> None:
        self._modules = dict(builtin_modules)
        self._classes: dict[str, type[Backbone]] = {}

    def register(self, name: str) -> Callable[[_B], _B]:
        """Class decorator: ``@register("mybackbone")`` makes ``model.backbone: mybackbone`` valid."""
        if name == NO_NETWORK:
            raise ValueError(f"'{NO_NETWORK}' is the popularity baseline; register the backbone under another name")

        def deco(cls: _B) -> _B:
            held = self._classes.get(name)
            # a re-imported module registers its class again: only a different class is a clash
            if held is not None and held.__qualname__ != cls.__qualname__:
                raise ValueError(f"backbone {name!r} is already registered ({held.__module__}.{held.__qualname__})")
            self._classes[name] = cls
            return cls

        return deco

    def unregister(self, name: str) -> None:
        """Forget a registered class (tests); a built-in name stays listed."""
        self._classes.pop(name, None)

    def choices(self) -> list[str]:
        """Every valid ``model.backbone``: the registered names, then ``pop``."""
        return [*self, NO_NETWORK]

    def __getitem__(self, name: str) -> type[Backbone]:
        if name not in self._classes and name in self._modules:
            importlib.import_module(self._modules[name])  # the module registers its class
        return self._classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self._modules or name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._modules) | set(self._classes)))

    def __len__(self) -> int:
        return len(set(self._modules) | set(self._classes))


BACKBONES = BackboneRegistry(_BUILTIN_MODULES)
register = BACKBONES.register
