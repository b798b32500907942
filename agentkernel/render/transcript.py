"""`Transcript`: folds events into blocks, for the Markdown and HTML formats."""

from __future__ import annotations

from agentkernel.events import (
    Error,
    Event,
    FileChange,
    PermissionDecided,
    PermissionRequest,
    PlanUpdate,
    Question,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolResult,
    TurnEnded,
    TurnStarted,
    Usage,
    UsageUpdate,
)

from ._block import Block
from ._style import _MUTED, _esc
from .file import FileBlock
from .plan import PlanBlock
from .status import EndBlock, ErrorBlock, PromptBlock
from .stream import StreamBlock
from .tool import PermissionBlock, QuestionBlock, ToolBlock


class Transcript:
    """Folds events into `Block`s in display order.

    `add` returns the block an event created or changed (None when it changed nothing visible),
    so a live view can redraw only that block. Deltas grow the open text/thinking block; the
    whole-block `Text` / `Thinking` event replaces its text, so no block is shown twice.
    """

    def __init__(self, *, title: str = "", show_prompt: bool = False, quiet: bool = False) -> None:
        self.title = title
        self.show_prompt = show_prompt
        self.quiet = quiet
        self.blocks: list[Block] = []
        self.plan: PlanBlock | None = None
        self.usage = Usage()
        self.ended: TurnEnded | None = None
        self._open: dict[bool, StreamBlock] = {}  # thinking? -> open block
        self._tools: dict[str, ToolBlock] = {}
        self._requests: dict[str, Block] = {}
        self._turn_has_text = False

    def _new(self, block: Block) -> Block:
        self.blocks.append(block)
        return block

    def add(self, event: Event) -> Block | None:
        parent = self._tools.get(event.parent_tool_use_id or "")
        if parent is not None:
            # A sub-agent's event: folded into its own transcript inside the parent's card.
            if parent.nested is None:
                parent.nested = Transcript()
            parent.nested.add(event)
            return parent
        if isinstance(event, TextDelta | ThinkingDelta):
            thinking = isinstance(event, ThinkingDelta)
            block = self._open.get(thinking)
            if block is None:
                block = self._open[thinking] = StreamBlock(thinking=thinking)
                self._new(block)
            block.extend(event.text)
            self._turn_has_text |= not thinking
            return block
        if isinstance(event, Text | Thinking):
            thinking = isinstance(event, Thinking)
            block = self._open.pop(thinking, None)
            if block is None:
                block = StreamBlock(thinking=thinking)
                self._new(block)
            block.complete(event.text)
            self._turn_has_text |= not thinking
            return block
        if isinstance(event, ToolCall):
            tool = ToolBlock(event.tool_use_id, event.name, dict(event.input), event)
            self._tools[event.tool_use_id] = tool
            return self._new(tool)
        if isinstance(event, ToolResult):
            found = self._tools.get(event.tool_use_id)
            if found is None:
                found = ToolBlock(event.tool_use_id, "tool")
                self._new(found)
            found.result = event
            return found
        if isinstance(event, PermissionRequest | Question):
            return self._add_request(event)
        if isinstance(event, PermissionDecided):
            target = self._requests.get(event.request_id) or self._unasked_call(event.tool_name)
            if isinstance(target, ToolBlock | QuestionBlock | PermissionBlock):
                target.decided = event
                return target
            return self._new(PermissionBlock(event.tool_name, decided=event))
        if isinstance(event, FileChange):
            return self._new(FileBlock(event))
        if isinstance(event, PlanUpdate):
            if self.plan is None:
                self.plan = PlanBlock()
                self._new(self.plan)
            self.plan.items = [dict(i) for i in event.items]
            return self.plan
        if isinstance(event, Error):
            return self._new(ErrorBlock(event))
        if isinstance(event, UsageUpdate):
            self.usage = event.usage
            return None
        if isinstance(event, TurnStarted):
            self.plan, self._turn_has_text, self.ended = None, False, None
            if self.show_prompt or self.blocks:
                return self._new(PromptBlock(event.prompt, self.show_prompt))
            return None
        if isinstance(event, TurnEnded):
            return self._end(event)
        return None

    def _unasked_call(self, tool_name: str) -> ToolBlock | None:
        """The call a decision made without asking (a rule, the permission mode) is about: the
        first call of that tool still waiting, with no request, decision or result yet. Its
        card then says the decision once, in one place."""
        for tool in self._tools.values():
            waiting = tool.request is None and tool.decided is None and tool.result is None
            if tool.name == tool_name and waiting:
                return tool
        return None

    def _add_request(self, event: PermissionRequest | Question) -> Block:
        tool = self._tools.get(event.tool_use_id or "")
        block: Block
        if tool is not None:
            if isinstance(event, Question):
                tool.question = event
            else:
                tool.request = event
            block = tool
        elif isinstance(event, Question):
            block = self._new(QuestionBlock(event))
        else:
            block = self._new(PermissionBlock(event.tool_name, request=event))
        self._requests[event.request_id] = block
        return block

    def _end(self, event: TurnEnded) -> Block:
        for block in self._open.values():
            block.done = True
        self._open.clear()
        why = "interrupted" if event.stop_reason == "interrupted" else "not finished"
        for tool in self._tools.values():
            tool.unfinished = why if tool.result is None else ""
        self.usage, self.ended = event.usage, event
        return self._new(EndBlock(event, show_result=not self._turn_has_text))

    def interrupt(self) -> list[Block]:
        """The user stopped the turn before its closing event: every call still without a
        result says so (not "running"). Returns the blocks that changed."""
        changed: list[Block] = []
        for tool in self._tools.values():
            if tool.result is None and not tool.denied and tool.unfinished != "interrupted":
                tool.unfinished = "interrupted"
                changed.append(tool)
        return changed

    def shown(self) -> list[Block]:
        """The blocks drawn: all of them, or when ``quiet`` the last text block, errors and the
        status line."""
        if not self.quiet:
            return self.blocks
        texts = [b for b in self.blocks if isinstance(b, StreamBlock) and not b.thinking]
        last = texts[-1] if texts else None
        return [b for b in self.blocks if b is last or isinstance(b, ErrorBlock | EndBlock)]

    def markdown(self) -> str:
        parts = [f"*{self.title}*"] if self.title else []
        parts += [m for b in self.shown() if (m := b.markdown())]
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        head = ""
        if self.title:
            head = f'<div style="{_MUTED};font-size:0.85em">● {_esc(self.title)}</div>'
        body = "".join(b.html() for b in self.shown())
        return f'<div class="agentkernel-turn" style="line-height:1.45">{head}{body}</div>'
