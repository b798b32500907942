"""The Agent kernel against the Jupyter messaging protocol (`jupyter_kernel_test`).

The kernel spec comes from the repository's data files (``share/jupyter``, through
``JUPYTER_PATH``) and its agent from a scripted model server, so the user's Jupyter setup and
the network are never touched. Python runs in ``%%python`` cells; a plain cell is a prompt.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import jupyter_kernel_test
from jupyter_client.blocking.client import BlockingKernelClient

from agentkernel.testing import Reply, ScriptedModelServer, text

SHARE = Path(__file__).resolve().parent.parent / "share" / "jupyter"


class AgentKernelProtocolTests(jupyter_kernel_test.KernelTests):
    kernel_name = "agent"
    language_name = "markdown"
    file_extension = ".md"

    code_hello_world = "%%python\nprint('hello, world')"
    code_stderr = "%%python\nimport sys\nprint('oops', file=sys.stderr)"
    code_page_something = "%%python\nprint?"
    code_generate_error = "%%python\nraise ValueError('expected')"
    code_execute_result: ClassVar[list[dict[str, str]]] = [
        {"code": "%%python\n6 * 7", "result": "42"},
        {"code": "%%python\n'agent'.upper()", "result": "'AGENT'"},
    ]
    code_display_data: ClassVar[list[dict[str, str]]] = [
        {
            "code": "%%python\nfrom IPython.display import HTML, display\n"
            "display(HTML('<b>bold</b>'))",
            "mime": "text/html",
        }
    ]
    code_clear_output = "%%python\nfrom IPython.display import clear_output\nclear_output()"
    code_history_pattern = "%%python\n6 *"
    # Not "range": it fails the same way for ipykernel's own python3 kernel (ipykernel 7.4,
    # IPython 9.18: a range of the current session comes back empty).
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "%agent new"

    completion_samples: ClassVar[list[dict[str, Any]]] = [
        {"text": "%agent ne", "matches": {"new"}},
        {"text": "%agent s", "matches": {"sessions", "show", "stats"}},
        {"text": "%%python\nimport jupyter_kernel_te", "matches": {"jupyter_kernel_test"}},
        {"text": "Tell me a story", "matches": set()},
    ]
    complete_code_samples: ClassVar[list[str]] = [
        "Explain this code",
        "for each file: summarise it",
        "def f(",
        "%%python\nx = 1",
        "%agent help",
    ]
    incomplete_code_samples: ClassVar[list[str]] = [
        "%%python\nfor i in range(3):",
        "%%python\nvalues = [1,",
    ]
    invalid_code_samples: ClassVar[list[str]] = ["%%python\nx = 1 +"]

    kc: BlockingKernelClient
    _server: ClassVar[ScriptedModelServer]
    _env: ClassVar[Any]
    _tmp: ClassVar[tempfile.TemporaryDirectory[str]]

    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory()
        cls._server = ScriptedModelServer([Reply(match="hello", blocks=[text("Hello there.")])])
        cls._server.start()
        config = Path(cls._tmp.name) / "claude-config"
        config.mkdir()
        cls._env = mock.patch.dict(
            os.environ,
            {
                **cls._server.claude_env(),
                "CLAUDE_CONFIG_DIR": str(config),
                "CLAUDE_CODE_MAX_RETRIES": "0",
                "JUPYTER_PATH": str(SHARE),
                "JUPYTER_DATA_DIR": str(Path(cls._tmp.name) / "data"),
                "AGENTKERNEL_STORE": str(Path(cls._tmp.name) / "sessions.db"),
            },
        )
        cls._env.start()
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()
        finally:
            cls._env.stop()
            cls._server.stop()
            cls._tmp.cleanup()

    def reply(self, msg_id: str) -> dict[str, Any]:
        reply = self.get_non_kernel_info_reply(timeout=30)
        assert reply is not None and reply["parent_header"]["msg_id"] == msg_id
        return reply["content"]

    def test_kernel_info_describes_the_agent_kernel(self) -> None:
        self.flush_channels()
        content = self.kc.kernel_info(reply=True, timeout=30)["content"]
        self.assertEqual(content["implementation"], "agentkernel")
        info = content["language_info"]
        self.assertEqual(info["mimetype"], "text/markdown")
        self.assertEqual(info["codemirror_mode"], "markdown")
        self.assertEqual(info["pygments_lexer"], "markdown")
        self.assertIn("%%python", content["banner"])

    def test_a_prompt_is_a_turn(self) -> None:
        self.flush_channels()
        outputs: list[dict[str, Any]] = []
        # allow_stdin=False: a headless front end, so no widget messages (not in msgspec v5).
        reply = self.kc.execute_interactive(
            "hello, agent", allow_stdin=False, timeout=60, output_hook=outputs.append
        )
        self.assertEqual(reply["content"]["status"], "ok")
        shown = "".join(
            m["content"].get("text", "") + str(m["content"].get("data", "")) for m in outputs
        )
        self.assertIn("Hello there.", shown)

    def test_agent_line_magics(self) -> None:
        self.flush_channels()
        reply, outputs = self.execute_helper("%agent help")
        self.assertEqual(reply["content"]["status"], "ok")
        self.assertIn("Start a new session", "".join(m["content"].get("text", "") for m in outputs))

    def test_completion_positions(self) -> None:
        self.flush_channels()
        content = self.reply(self.kc.complete("%agent his", 10))
        self.assertEqual((content["matches"], content["cursor_start"]), (["history"], 7))
        code = "%%python\nimport jupyter_kernel_te"
        content = self.reply(self.kc.complete(code, len(code)))
        self.assertEqual(content["cursor_start"], code.index("jupyter"))
        self.kc.execute_interactive("%%python\nbasket_total = 4.55", timeout=30)
        prompt = "How much is {basket_to"
        content = self.reply(self.kc.complete(prompt, len(prompt)))
        self.assertEqual(content["matches"], ["basket_total"])
        self.assertEqual(content["cursor_start"], prompt.index("basket"))

    def test_inspection(self) -> None:
        self.flush_channels()
        content = self.reply(self.kc.inspect("%agent history", 9))
        self.assertIn("The turns of a session.", content["data"]["text/plain"])
        content = self.reply(self.kc.inspect("Summarise the notebook", 3))
        self.assertTrue(content["found"])
        self.assertIn("A prompt", content["data"]["text/plain"])
        content = self.reply(self.kc.inspect("%%python\nlen", 12))
        self.assertIn("Return the number of items", content["data"]["text/plain"])
        self.kc.execute_interactive("%%python\nbasket = {'fig': 2.5}", timeout=30)
        content = self.reply(self.kc.inspect("What is in {basket}?", 14))
        self.assertIn("dict", content["data"]["text/plain"])
