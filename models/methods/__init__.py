"""Training methods for binary networks, as plug-ins of one interface (``base.Method``), registered by name.

``create_method(name, **options)`` builds one; its options are its ``__init__`` keyword arguments, checked like
model arguments. Importing this package registers every method; the imports are explicit.
"""

from __future__ import annotations

from typing import Any

from bnnflow.errors import ConfigError
from bnnflow.models.methods.base import Method
from bnnflow.models.registry import resolve_args, signature_defaults

_methods: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Register a method class under its ``name``; a second registration of a name is an error."""
    if not cls.name or cls.name in _methods:
        raise ValueError(f"method {cls.__name__} has no name or its name {cls.name!r} is taken")
    _methods[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    return sorted(_methods)


def method_defaults(name: str) -> dict[str, Any]:
    """The method's options with their defaults, after checking the name exists."""
    if name not in _methods:
        raise ConfigError(f"method.name = {name!r} is not a training method (known: {', '.join(list_methods())})")
    return signature_defaults(_methods[name].__init__)


def create_method(name: str, **options: Any) -> Method:
    """Build a registered method; unknown options or values of the wrong type are ``ConfigError``s."""
    resolved = resolve_args("method.options", name, method_defaults(name), options)
    try:
        method = _methods[name](**resolved)
    except ValueError as err:
        raise ConfigError(f"method {name}: {err}") from None
    method._options = resolved
    return method


# the method modules, imported last: they import register_method from here
from bnnflow.models.methods import baselines, dwr, ftbnn, rbnn, rbonn, rebnn  # noqa: E402,F401,I001

__all__ = ["Method", "create_method", "list_methods", "method_defaults", "register_method"]
