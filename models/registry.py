"""The model registry: entry-point functions registered by name, as timm does.

An entry point is a plain function ``name(**kwargs) -> nn.Module`` whose keyword arguments (bit widths,
widths, input shape) are the model's configuration; ``[model] args`` in a config file is checked against its
signature, so an unknown argument is an error rather than silently ignored.
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Any, Callable

from torch import nn

from bnnflow.errors import ConfigError

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register an entry point under its function name; a second registration of a name is an error."""
    name = fn.__name__
    if name in _model_entrypoints:
        other = _model_entrypoints[name].__module__
        raise ValueError(f"model {name!r} is registered twice ({other} and {fn.__module__})")
    _model_entrypoints[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _model_entrypoints if fnmatch.fnmatch(n, pattern))


def model_defaults(name: str) -> dict[str, Any]:
    """The entry point's keyword arguments with their defaults, after checking the name exists."""
    if name not in _model_entrypoints:
        raise ConfigError(f"model.name = {name!r} is not a registered model (known: {', '.join(list_models())})")
    return signature_defaults(_model_entrypoints[name])


def resolve_model_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Defaults merged with ``args``; unknown names and values of the wrong type are config errors."""
    return resolve_args("model.args", name, model_defaults(name), args)


def signature_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """A function's keyword arguments that have defaults, with them."""
    params = inspect.signature(fn).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def resolve_args(key: str, name: str, defaults: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated from ``args``, each value checked against its default's type (an int is taken for a
    float, as TOML writes 0 for 0.0); ``key`` (``model.args``) and ``name`` make the error messages."""
    unknown = sorted(set(args) - set(defaults))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]} is not an argument of {name} (allowed: {', '.join(defaults) or 'none'})")
    resolved = dict(defaults)
    for arg, value in args.items():
        default = defaults[arg]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not None and (not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(
                default, bool)):
            raise ConfigError(f"{key}.{arg} must be {type(default).__name__}, got {value!r}")
        resolved[arg] = value
    return resolved


def create_model(name: str, *, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from ``list_models()``.
        input_shape: shape of one input sample, (C, H, W); a fact of the data set, not a setting.
        num_classes: number of output classes; likewise.
        **kwargs: the entry point's keyword arguments; unknown ones raise ``ConfigError``.

    Returns:
        The model, in training mode, with seeded-by-caller initial weights.
    """
    resolved = resolve_model_args(name, kwargs)
    try:
        return _model_entrypoints[name](input_shape=tuple(input_shape), num_classes=num_classes, **resolved)
    except ValueError as err:
        raise ConfigError(f"model {name}: {err}") from None
