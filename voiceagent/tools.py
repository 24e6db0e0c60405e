"""Tools: typed Python functions the LLM may call.

The JSON schema comes from the signature (through pydantic), the description from the
docstring. Whatever goes wrong in a call (bad arguments, an exception, a time-out) comes back
as an error string for the LLM to read; it never reaches the session.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model


class FunctionTool:
    def __init__(self, fn: Callable[..., Any], name: str | None = None,
                 description: str | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.description = (description or inspect.getdoc(fn) or "").strip()
        self.args_model = _args_model(fn, self.name)

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI function spec."""
        params = self.args_model.model_json_schema()
        params.pop("title", None)
        for prop in params.get("properties", {}).values():
            prop.pop("title", None)
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": params}}

    async def invoke(self, arguments: str, timeout: float | None = None) -> tuple[str, bool]:
        """Run with the model's JSON ``arguments``; returns (result text, is_error)."""
        try:
            raw = json.loads(arguments or "{}")
            if not isinstance(raw, dict):
                raise ValueError("arguments must be a JSON object")
            args = self.args_model.model_validate(raw)
        except (ValueError, ValidationError) as exc:
            return f"Error: invalid arguments for {self.name}: {_short(exc)}", True
        kwargs = {k: getattr(args, k) for k in type(args).model_fields}
        try:
            if inspect.iscoroutinefunction(self.fn):
                call = self.fn(**kwargs)
            else:
                call = asyncio.to_thread(self.fn, **kwargs)
            result = await asyncio.wait_for(call, timeout)
        except TimeoutError:
            return f"Error: {self.name} timed out after {timeout} s", True
        except Exception as exc:
            return f"Error: {self.name} failed: {type(exc).__name__}: {exc}", True
        if isinstance(result, str):
            return result, False
        try:
            return json.dumps(result, default=str), False
        except (TypeError, ValueError):
            return str(result), False


def function_tool(fn: Callable[..., Any] | None = None, *, name: str | None = None,
                  description: str | None = None) -> Any:
    """Decorator: ``@function_tool`` or ``@function_tool(name=..., description=...)``."""
    if fn is None:
        return lambda f: FunctionTool(f, name, description)
    return FunctionTool(fn, name, description)


def as_tool(obj: FunctionTool | Callable[..., Any]) -> FunctionTool:
    return obj if isinstance(obj, FunctionTool) else FunctionTool(obj)


def _args_model(fn: Callable[..., Any], name: str) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    hints = inspect.get_annotations(fn, eval_str=True)
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {name}: *args/**kwargs cannot be described to an LLM")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    return create_model(f"{name}_args", __config__=ConfigDict(extra="forbid"), **fields)


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                         for e in exc.errors())
    return str(exc)
