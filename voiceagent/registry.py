"""Find backends by name through entry points.

A package adds a backend by declaring, in its own pyproject::

    [project.entry-points."voiceagent.stt"]
    mystt = "my_package.stt:MySTT"

The target is called with the backend options as keyword arguments. A backend declares them
as a pydantic model in its ``Options`` attribute (a :class:`BackendOptions`); they are
validated before anything loads, and a misspelled or mistyped one is a :class:`ConfigError`
of one line naming the valid options. Instances are cached per (kind, name, options) so a
model loads once per process and every session shares it; :func:`aclose` releases them at
shutdown.

A name ``backend:plugin`` is backend ``backend`` with the option ``plugin`` (``livekit:openai.LLM``
is the ``livekit`` adapter wrapping LiveKit's OpenAI plugin), so a command line can name a
backend that fronts many.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)

Kind = Literal["vad", "stt", "llm", "tts", "turn", "completeness"]
KINDS: tuple[Kind, ...] = ("vad", "stt", "llm", "tts", "turn", "completeness")

_lock = threading.Lock()
_instances: dict[tuple[str, str, str], Any] = {}

OptionsT = TypeVar("OptionsT", bound=BaseModel)


class BackendOptions(BaseModel):
    """Base of a backend's options: an unknown name is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def validate_options(model: type[OptionsT], options: Mapping[str, Any], what: str) -> OptionsT:
    """``options`` as ``model``, or a one-line :class:`ConfigError` that starts with ``what``
    (the backend) and names the valid options."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise ConfigError(f"{what}: {_describe(exc, list(model.model_fields))}") from None


def _describe(exc: ValidationError, valid: list[str]) -> str:
    unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
    parts = [f"{e['loc'][0]}={e['input']!r}: {e['msg']}"
             for e in exc.errors() if e["type"] != "extra_forbidden" and e["loc"]]
    if unknown:
        parts.insert(0, f"no option {', '.join(unknown)} (valid options: {', '.join(valid)})")
    return "; ".join(parts)


def _checked_options(factory: Any, options: dict[str, Any], what: str) -> dict[str, Any]:
    """The options as the factory's ``Options`` model reads them; a factory without one is
    checked against its signature."""
    model = getattr(factory, "Options", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return validate_options(model, options, what).model_dump(exclude_unset=True)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to check against
        return options
    try:
        signature.bind(**options)
    except TypeError as exc:
        valid = [name for name, p in signature.parameters.items()
                 if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        raise ConfigError(f"{what}: {exc} (valid options: {', '.join(valid)})") from None
    return options


def group(kind: Kind) -> str:
    return f"voiceagent.{kind}"


def available(kind: Kind) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group(kind)))


def load_factory(kind: Kind, name: str) -> Any:
    if kind not in KINDS:
        raise ConfigError(f"unknown backend kind {kind!r}; expected one of {', '.join(KINDS)}")
    matches = [ep for ep in entry_points(group=group(kind)) if ep.name == name]
    if not matches:
        names = ", ".join(available(kind)) or "none installed"
        raise ConfigError(f"no {kind} backend named {name!r} (available: {names})")
    try:
        return matches[0].load()
    except ImportError as exc:
        raise BackendUnavailable(
            f"{kind} backend {name!r} cannot be imported: {exc}") from exc


def get(kind: Kind, name: str, **options: Any) -> Any:
    """The shared instance of backend ``name`` with ``options`` (created on first use)."""
    name, _, plugin = name.partition(":")
    if plugin:
        options = {"plugin": plugin, **options}
    factory = load_factory(kind, name)
    options = _checked_options(factory, options, f"{kind} backend {name!r}")
    key = (kind, name, json.dumps(options, sort_keys=True, default=str))
    with _lock:
        if key not in _instances:
            _instances[key] = factory(**options)
        return _instances[key]


def resolve(kind: Kind, spec: Any, **options: Any) -> Any:
    """A backend from a name (looked up here) or an object used as it is."""
    if isinstance(spec, str):
        return get(kind, spec, **options)
    if spec is None:
        raise ConfigError(f"no {kind} backend configured")
    return spec


async def aclose(backends: Iterable[object]) -> None:
    """Release backends when the process shuts down: each one's ``aclose()`` (where it has
    one) is awaited once, and the registry forgets the ones it made."""
    closed: set[int] = set()
    for backend in backends:
        if id(backend) in closed:
            continue
        closed.add(id(backend))
        with _lock:
            for key in [k for k, v in _instances.items() if v is backend]:
                del _instances[key]
        close = getattr(backend, "aclose", None)
        if close is None:
            continue
        try:
            await close()
        except Exception:  # one backend failing to close must not keep the others open
            log.exception("closing %s failed", type(backend).__name__)
