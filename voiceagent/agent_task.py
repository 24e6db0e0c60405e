"""A task: an agent that runs until it has a typed result, then returns it to its caller.

::

    class PhoneNumber(BaseModel):
        digits: str = Field(pattern=r"^[0-9]{7,15}$")

    collect_phone = AgentTask(PhoneNumber, "Ask for the caller's phone number ...")

    @function_tool
    async def take_phone(context: ToolContext) -> str:
        phone = await context.run_task(collect_phone)   # a PhoneNumber
        return f"The phone number is {phone.digits}."

The task's LLM gets a ``complete`` tool whose arguments are the result type's fields; a call
with a valid value ends the task (pydantic validates it; an invalid one is an error the LLM
reads, and the task goes on).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from .agent import Agent
from .tools import FunctionTool, ToolContext

T = TypeVar("T", bound=BaseModel)


class AgentTask(Agent, Generic[T]):
    """An :class:`Agent` whose conversation ends with a ``result_type`` value. Every other
    argument is the agent's; ``carry_over`` defaults to ``"none"`` (a task usually needs only
    its instructions). One object may run many times, one run at a time."""

    def __init__(self, result_type: type[T], instructions: str, *,
                 tools: Sequence[FunctionTool | Callable[..., Any]] = (),
                 complete_description: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("carry_over", "none")
        self.result_type = result_type
        complete = CompleteTool(self, complete_description)
        super().__init__(instructions, tools=[*tools, complete], **kwargs)


class CompleteTool(FunctionTool):
    """``complete(<the result's fields>)``: hands the task's result back."""

    def __init__(self, task: AgentTask[Any], description: str | None = None) -> None:
        self.task = task
        self.name = "complete"
        self.description = description or (
            f"Call when you have the {task.result_type.__name__}: it ends this task and "
            "returns the value to the agent that asked for it.")
        self.fn = self._complete
        self.args_model = task.result_type
        self.context_param = "context"

    async def _complete(self, context: ToolContext, **fields: Any) -> str:
        result = self.task.result_type.model_validate(fields)
        if context.workflow is None:
            raise RuntimeError("a task completes only inside a session")
        await context.workflow.complete(self.task, result)
        return "Done: the result went back to the agent that asked for it."

