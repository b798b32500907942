"""Approval and question widgets: the buttons that answer a turn while its cell still runs.

They are stock ipywidgets, so a click is the standard widget message and any front end (or a
test) can send it. To click a button from outside a front end:

1. Find the button's comm id: it is the ``comm_id`` of the iopub ``comm_open`` message (target
   ``jupyter.widget``) whose ``data.state`` has ``_model_name == "ButtonModel"`` and, from the
   start, one of these classes in ``data.state._dom_classes``: ``agentkernel-allow``,
   ``agentkernel-allow-always``, ``agentkernel-deny``; for questions ``agentkernel-option``
   (``description`` is the option's label), ``agentkernel-submit`` and ``agentkernel-decline``.
2. Send on the shell channel a ``comm_msg`` with content
   ``{"comm_id": <id>, "data": {"method": "custom", "content": {"event": "click"}}}``.

Text boxes (deny reason: class ``agentkernel-reason``; free-text answers:
``agentkernel-answer``) and checkboxes (``agentkernel-choice``) are set the same way with
``{"method": "update", "state": {"value": ...}, "buffer_paths": []}``. The text boxes are
`TextBox` widgets: their own front end sends each edit as a custom message ``{"value": ...}``
instead, which a browser delivers at once while the cell runs (a state update it holds back).

The kernel handles the click while the cell awaits (ipykernel dispatches comm messages between
the cell's awaits); the handler resolves the event's decision, which the backend is waiting on.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from agentkernel.events import Decision, PermissionRequest, Question
from agentkernel.render import tool_input_html

from ._widget import TextBox

__all__ = ["ApprovalPrompt", "DecisionCard", "QuestionPrompt", "close_tree"]

_BORDER = "1px solid rgba(191,135,0,0.6)"


def close_tree(widget: widgets.Widget) -> None:
    """Close a widget, its layout and style, and every widget below it, so no model outlives
    the turn in the front end or in a saved widget state."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    for part in (getattr(widget, "layout", None), getattr(widget, "style", None)):
        if isinstance(part, widgets.Widget):
            part.close()
    widget.close()


def _button(label: str, cls: str, style: str = "", tooltip: str = "") -> widgets.Button:
    return widgets.Button(
        description=label, button_style=style, tooltip=tooltip or label, _dom_classes=[cls]
    )


def _outcome_html(decision: Decision | None, *, late: bool) -> str:
    if decision is None:
        return ""
    prefix = "Already decided: " if late else ""
    if decision.behavior == "allow":
        words = "Always allowed" if decision.always else "Allowed"
        if decision.answers:
            words = "Answered: " + "; ".join(decision.answers.values())
        return f'<span style="color:#2da44e">✔ {prefix}{html.escape(words)}</span>'
    reason = f": {decision.reason}" if decision.reason else ""
    return f'<span style="color:#d1242f">✖ {prefix}Denied{html.escape(reason)}</span>'


class DecisionCard(widgets.VBox):
    """The card a pending decision shows in the cell (an approval or a question): what is
    asked, the controls, and a line that shows the outcome."""

    event: PermissionRequest | Question

    def __init__(self, info: str, controls: list[widgets.Widget]) -> None:
        self._outcome = widgets.HTML()
        self._controls = controls
        super().__init__(
            [widgets.HTML(info), *controls, self._outcome],
            _dom_classes=["agentkernel-prompt"],
            layout=widgets.Layout(border=_BORDER, padding="2px 8px", margin="6px 0"),
        )

    @property
    def settled(self) -> bool:
        return bool(self._outcome.value)

    def settle(self, *, late: bool = False) -> None:
        """Disable the controls and show how the event was decided (by whoever decided it)."""
        for control in self._walk(self._controls):
            control.disabled = True
        self._outcome.value = _outcome_html(self.event.decision, late=late)

    def stop(self) -> None:
        """The turn was interrupted while this waited: no control works any more."""
        for control in self._walk(self._controls):
            control.disabled = True
        self._outcome.value = (
            '<span style="color:#bf8700">■ Stopped: the turn was interrupted</span>'
        )

    def _walk(self, items: list[widgets.Widget]) -> list[widgets.Widget]:
        found = []
        for item in items:
            found.append(item)
            found += self._walk(list(getattr(item, "children", ())))
        return [w for w in found if hasattr(w, "disabled")]

    def _resolved(self, accepted: bool) -> None:
        self.settle(late=not accepted)


class ApprovalPrompt(DecisionCard):
    """Allow / Always allow / Deny (with an optional reason) for one permission request.
    ``show_input`` repeats the tool's input (leave it off under the tool's own card)."""

    def __init__(self, request: PermissionRequest, *, show_input: bool = True) -> None:
        self.event = request
        self.reason = TextBox(
            placeholder="Reason (optional, sent with Deny)", _dom_classes=["agentkernel-reason"]
        )
        self.allow = _button("Allow", "agentkernel-allow", "success", "Allow this call once")
        self.allow_always = _button(
            "Always allow",
            "agentkernel-allow-always",
            "info",
            "Allow it for the rest of the session",
        )
        self.deny = _button(
            "Deny", "agentkernel-deny", "danger", "Refuse; the agent sees the reason"
        )
        self.allow.on_click(lambda _: self._resolved(request.allow()))
        self.allow_always.on_click(lambda _: self._resolved(request.allow_always()))
        self.deny.on_click(lambda _: self._resolved(request.deny(self.reason.text.strip())))
        why = f"<div><i>{html.escape(request.reason)}</i></div>" if request.reason else ""
        info = f'<div style="font-weight:600">Allow {html.escape(request.tool_name)}?</div>{why}'
        if show_input:
            info += tool_input_html(request)
        buttons = widgets.HBox([self.allow, self.allow_always, self.deny, self.reason])
        super().__init__(info, [buttons])


class QuestionPrompt(DecisionCard):
    """The agent's questions: one button per option (checkboxes when several may be chosen),
    a free-text answer per question, Submit and Decline.

    With a single single-choice question, clicking an option answers at once. Otherwise option
    buttons select, and Submit sends each question's free text, or else its selection.
    ``show_question`` repeats the question and the options' descriptions (leave it off under
    the question's own card; a lone question then shows only its controls).
    """

    def __init__(self, question: Question, *, show_question: bool = True) -> None:
        self.event = question
        self._detailed = show_question or len(question.questions) > 1
        self._chosen: dict[str, list[str]] = {}  # question -> labels chosen, in option order
        self._free: dict[str, TextBox] = {}
        items = question.questions
        immediate = len(items) == 1 and not items[0].get("multi_select")
        controls: list[widgets.Widget] = []
        for item in items:
            controls.append(self._question_controls(item, immediate=immediate))
        self.submit = _button("Submit", "agentkernel-submit", "primary", "Send these answers")
        self.decline = _button("Decline", "agentkernel-decline", "", "Do not answer")
        self.submit.on_click(lambda _: self._resolved(question.answer(self._answers())))
        self.decline.on_click(lambda _: self._resolved(question.decline()))
        controls.append(widgets.HBox([self.submit, self.decline]))
        title = "The agent asks" if show_question else "Your answer"
        super().__init__(f'<div style="font-weight:600">{title}</div>', controls)

    def _question_controls(self, item: dict[str, Any], *, immediate: bool) -> widgets.VBox:
        text = str(item.get("question", ""))
        header = str(item.get("header", "") or "")
        self._chosen[text] = []
        title = f"<b>{html.escape(header)}</b> " if header else ""
        rows: list[widgets.Widget] = []
        if self._detailed:
            rows.append(widgets.HTML(f"<div>{title}{html.escape(text)}</div>"))
        options = [o for o in item.get("options", []) or [] if isinstance(o, dict)]
        if item.get("multi_select"):
            for option in options:
                box = widgets.Checkbox(
                    description=str(option.get("label", "")),
                    indent=False,
                    value=False,
                    _dom_classes=["agentkernel-choice"],
                )
                box.observe(self._toggle(text, box, options), names="value")
                rows.append(self._with_description(box, option))
        else:
            buttons = []
            for option in options:
                label = str(option.get("label", ""))
                button = _button(
                    label, "agentkernel-option", "", str(option.get("description", ""))
                )
                button.on_click(self._pick(text, label, buttons, immediate=immediate))
                buttons.append(button)
            rows.append(widgets.HBox(buttons))
            described = [o for o in options if o.get("description")]
            if described and self._detailed:
                rows.append(widgets.HTML(self._descriptions(described)))
        free = TextBox(placeholder="Or type an answer", _dom_classes=["agentkernel-answer"])
        self._free[text] = free
        rows.append(free)
        return widgets.VBox(rows)

    @staticmethod
    def _with_description(box: widgets.Checkbox, option: dict[str, Any]) -> widgets.Widget:
        description = str(option.get("description", "") or "")
        if not description:
            return box
        note = widgets.HTML(f'<span style="opacity:0.7">{html.escape(description)}</span>')
        return widgets.HBox([box, note])

    @staticmethod
    def _descriptions(options: list[dict[str, Any]]) -> str:
        rows = "".join(
            f"<li><b>{html.escape(str(o.get('label', '')))}</b>: "
            f"{html.escape(str(o.get('description', '')))}</li>"
            for o in options
        )
        return f'<ul style="margin:2px 0;opacity:0.8">{rows}</ul>'

    def _toggle(self, text: str, box: widgets.Checkbox, options: list[dict[str, Any]]) -> Any:
        def changed(change: dict[str, Any]) -> None:
            chosen = set(self._chosen[text]) - {box.description}
            if change["new"]:
                chosen.add(box.description)
            labels = [str(o.get("label", "")) for o in options]
            self._chosen[text] = [label for label in labels if label in chosen]

        return changed

    def _pick(self, text: str, label: str, group: list[widgets.Button], *, immediate: bool) -> Any:
        def clicked(button: widgets.Button) -> None:
            if immediate:
                self._resolved(self.event.answer({text: label}))  # type: ignore[union-attr]
                return
            self._chosen[text] = [label]
            for other in group:
                other.button_style = "info" if other is button else ""

        return clicked

    def _answers(self) -> dict[str, str]:
        answers = {}
        for text, chosen in self._chosen.items():
            free = self._free[text].text.strip()
            answers[text] = free or ", ".join(chosen)
        return answers
