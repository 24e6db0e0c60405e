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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

if TYPE_CHECKING:
    from .agent_task import AgentTask
    from .runtime import SessionRuntime
    from .workflow import Workflow

T = TypeVar("T", bound=BaseModel)


@dataclass
class ToolContext:
    """What a tool may know and do about the conversation that called it. A tool receives
    it by declaring a parameter annotated ``ToolContext`` (never shown to the LLM)."""

    runtime: SessionRuntime
    turn_id: int
    #: the session's agents (None outside a session)
    workflow: Workflow | None = None
    #: set once a task it started holds the conversation: the reply that called the tool
    #: goes on without it
    suspended: asyncio.Event = field(default_factory=asyncio.Event)
    _deadline: asyncio.Timeout | None = None

    @property
    def session_id(self) -> str:
        return self.runtime.session_id

    def end_call(self, reason: str = "the agent ended the call") -> None:
        """Hang up once the reply in progress (the goodbye) has been heard."""
        self.runtime.request_hangup(reason)

    async def run_task(self, task: AgentTask[T]) -> T:
        """Hand the conversation to ``task`` until it completes; its typed result. The tool
        call stays open meanwhile (its time-out stops counting): the task talks with the
        user over as many turns as it needs, and this tool's result reaches the LLM when it
        returns."""
        if self.workflow is None:
            raise RuntimeError("run_task needs a session")
        loop = asyncio.get_running_loop()
        deadline = self._deadline
        left = None if deadline is None or deadline.when() is None else (
            deadline.when() - loop.time())  # type: ignore[operator]
        if deadline is not None:
            deadline.reschedule(None)
        try:
            return await self.workflow.run_task(task, started=self.suspended.set)
        finally:
            if deadline is not None and left is not None:
                deadline.reschedule(loop.time() + left)


class FunctionTool:
    def __init__(self, fn: Callable[..., Any], name: str | None = None,
                 description: str | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.description = (description or inspect.getdoc(fn) or "").strip()
        self.args_model, self.context_param = _args_model(fn, self.name)

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

    async def invoke(self, arguments: str, timeout: float | None = None,
                     context: ToolContext | None = None) -> tuple[str, bool]:
        """Run with the model's JSON ``arguments``; returns (result text, is_error). A tool
        that returns an agent (or a ``Handoff``) hands the conversation to it here."""
        try:
            raw = json.loads(arguments or "{}")
            if not isinstance(raw, dict):
                raise ValueError("arguments must be a JSON object")
            args = self.args_model.model_validate(raw)
        except (ValueError, ValidationError) as exc:
            return f"Error: invalid arguments for {self.name}: {_short(exc)}", True
        kwargs = {k: getattr(args, k) for k in type(args).model_fields}
        if self.context_param is not None:
            if context is None:
                return f"Error: {self.name} needs a conversation to run in", True
            kwargs[self.context_param] = context
        try:
            async with asyncio.timeout(timeout) as deadline:
                if context is not None:
                    context._deadline = deadline
                if inspect.iscoroutinefunction(self.fn):
                    result = await self.fn(**kwargs)
                else:
                    result = await asyncio.to_thread(self.fn, **kwargs)
                if context is not None and context.workflow is not None:
                    handed = await context.workflow.accept(result)
                    result = result if handed is None else handed
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


def _args_model(fn: Callable[..., Any], name: str) -> tuple[type[BaseModel], str | None]:
    """The arguments the LLM fills in, and the parameter (if any) that takes the
    :class:`ToolContext`."""
    fields: dict[str, Any] = {}
    context_param = None
    hints = inspect.get_annotations(fn, eval_str=True)
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {name}: *args/**kwargs cannot be described to an LLM")
        annotation = hints.get(param.name, Any)
        if annotation is ToolContext:
            context_param = param.name
            continue
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    model = create_model(f"{name}_args", __config__=ConfigDict(extra="forbid"), **fields)
    return model, context_param


@function_tool
def end_call(context: ToolContext) -> str:
    """End the conversation (hang up the call). Say goodbye in the same reply."""
    context.end_call()
    return "The call ends after your goodbye."


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                         for e in exc.errors())
    return str(exc)
