"""Drive a real ipykernel through jupyter_client the way a front end does."""

from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient


@dataclass
class CellRun:
    """What one execute_request produced."""

    msg_id: str
    reply: dict[str, Any] | None = None
    iopub: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return (self.reply or {}).get("content", {}).get("status", "pending")

    @property
    def stdout(self) -> str:
        return "".join(
            m["content"]["text"]
            for m in self.iopub
            if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
        )

    @property
    def error(self) -> str:
        """Error messages, and stderr (where IPython prints a UsageError)."""
        errors = [m["content"] for m in self.iopub if m["msg_type"] == "error"]
        stderr = "".join(
            m["content"]["text"]
            for m in self.iopub
            if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"
        )
        return "\n".join([*(f"{e['ename']}: {e['evalue']}" for e in errors), stderr]).strip()

    def outputs(self, mime: str = "text/plain") -> list[str]:
        """Every display_data / execute_result payload of one MIME type, in order."""
        found = []
        for m in self.iopub:
            if m["msg_type"] in ("display_data", "execute_result", "update_display_data"):
                data = m["content"].get("data", {})
                if mime in data:
                    found.append(data[mime])
        return found

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [m for m in self.iopub if m["msg_type"] in types]

    def provenance(self) -> list[dict[str, Any]]:
        """The turn provenance (the ``agentkernel`` output metadata) of every display and
        display update, in order: the last is what the saved output ends up recording (a
        headless turn displays it once; a live view puts it in the update that replaces the
        widget)."""
        return [
            m["content"]["metadata"]["agentkernel"]
            for m in self.of_type("display_data", "update_display_data")
            if "agentkernel" in m["content"].get("metadata", {})
        ]


class KernelDriver:
    """Sends execute requests and collects their iopub messages; lets a test act while a cell
    is still running (send comm messages, interrupt)."""

    def __init__(self, client: BlockingKernelClient) -> None:
        self.client = client

    def start(self, code: str, *, allow_stdin: bool = False, cell_id: str | None = None) -> CellRun:
        """Send an execute_request; ``cell_id`` goes in its metadata as JupyterLab sends it."""
        if cell_id is None:
            msg_id = self.client.execute(code, allow_stdin=allow_stdin, stop_on_error=False)
            return CellRun(msg_id)
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": allow_stdin,
            "stop_on_error": False,
        }
        msg = self.client.session.msg("execute_request", content, metadata={"cellId": cell_id})
        self.client.shell_channel.send(msg)
        return CellRun(msg["header"]["msg_id"])

    def pump(self, run: CellRun, until: float = 0.1) -> None:
        """Collect iopub messages for `run` for `until` seconds."""
        deadline = time.monotonic() + until
        while time.monotonic() < deadline:
            try:
                msg = self.client.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == run.msg_id:
                run.iopub.append(msg)

    def wait_for(self, run: CellRun, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        """Pump until an iopub message of `run` satisfies `predicate`; return it."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for msg in run.iopub[seen:]:
                if predicate(msg):
                    return msg
            seen = len(run.iopub)
            self.pump(run, 0.05)
        raise TimeoutError(f"no matching iopub message in {timeout} s; got {len(run.iopub)}")

    def finish(self, run: CellRun, timeout: float = 120.0) -> CellRun:
        """Wait for the execute_reply and the idle status that closes the cell."""
        run.reply = self.client.get_shell_msg(timeout=timeout)
        while run.reply["parent_header"].get("msg_id") != run.msg_id:
            run.reply = self.client.get_shell_msg(timeout=timeout)
        self.wait_for(
            run,
            lambda m: m["msg_type"] == "status" and m["content"]["execution_state"] == "idle",
            timeout,
        )
        return run

    def run(
        self,
        code: str,
        *,
        allow_stdin: bool = False,
        timeout: float = 120.0,
        cell_id: str | None = None,
    ) -> CellRun:
        return self.finish(self.start(code, allow_stdin=allow_stdin, cell_id=cell_id), timeout)

    def prepare(self, *lines: str) -> None:
        """Run `lines` (``%load_ext``, ``%config``) as a notebook's first cells: a test that
        relies on them fails at the first that errors, with that line and its error."""
        for line in lines:
            ran = self.run(line)
            assert ran.status == "ok", f"{line}: {ran.error}"

    def announce_widget_support(self) -> None:
        """What a front end with a widget manager (JupyterLab, Notebook 7) does on connecting:
        open the ``jupyter.widget.control`` comm to fetch the kernel's widgets."""
        content = {"comm_id": uuid.uuid4().hex, "target_name": "jupyter.widget.control", "data": {}}
        self.client.shell_channel.send(self.client.session.msg("comm_open", content))

    def send_comm(self, comm_id: str, data: dict[str, Any]) -> str:
        """A comm_msg on the shell channel, exactly as a front end sends a widget event; its
        msg_id (the parent of whatever the kernel outputs while handling it)."""
        msg = self.client.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.client.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    # -- playing a widget front end -----------------------------------------------------------

    def draw_until(self, run: CellRun, predicate: Any, timeout: float = 120.0) -> dict[str, Any]:
        """Pump like a widget front end until `predicate` holds: each live-view block says it
        was drawn as soon as it opens, as JupyterLab's does. (A view that reports late, after
        the turn's probe, makes the cell fall back to text and ask on stdin, as for a console:
        a test that reports only once the approval card is there races a slow agent.)"""

        def drawn(msg: dict[str, Any]) -> bool:
            self._report_drawn(msg)
            return predicate(msg)

        return self.wait_for(run, drawn, timeout)

    def report_drawn(self, run: CellRun) -> None:
        """Every live-view block `run` opened so far says it was drawn."""
        for msg in run.iopub:
            self._report_drawn(msg)

    def _report_drawn(self, msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "comm_open" and _state(msg).get("_model_name") == "AnyModel":
            self.send_comm(
                msg["content"]["comm_id"], {"method": "custom", "content": {"rendered": True}}
            )

    def click(self, comm_id: str) -> str:
        """A click on the widget Button `comm_id`; the click message's msg_id."""
        return self.send_comm(comm_id, {"method": "custom", "content": {"event": "click"}})

    def type_into(self, comm_id: str, value: str) -> None:
        """A text widget's new value, as the front end syncs it."""
        self.send_comm(comm_id, {"method": "update", "state": {"value": value}, "buffer_paths": []})


def _state(msg: dict[str, Any]) -> dict[str, Any]:
    return msg["content"].get("data", {}).get("state", {})


def widget_id(run: CellRun, css_class: str, label: str | None = None) -> str:
    """The comm id of a widget `run` opened that carries `css_class` (and `label`)."""
    for msg in run.of_type("comm_open"):
        if has_widget(css_class, label)(msg):
            return msg["content"]["comm_id"]
    raise LookupError(css_class)


def has_widget(css_class: str, label: str | None = None) -> Any:
    """A `wait_for` predicate: a widget carrying `css_class` (and `label`) was opened."""

    def check(msg: dict[str, Any]) -> bool:
        state = _state(msg)
        return (
            msg["msg_type"] == "comm_open"
            and css_class in state.get("_dom_classes", [])
            and (label is None or state.get("description") == label)
        )

    return check
