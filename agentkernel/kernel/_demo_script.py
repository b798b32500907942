"""The scripted model's replies for ``notebooks/agent-kernel.ipynb`` (the Agent kernel demo),
matched on that notebook's prompts. Run the notebook offline with them::

    with ScriptedModelServer(agent_kernel_script()) as server:
        ...  # start the kernel with server.claude_env() and a fresh CLAUDE_CONFIG_DIR
"""

from __future__ import annotations

from .._demo import LABEL, PACE
from ..testing import Reply, text


def agent_kernel_script() -> list[Reply]:
    """One reply per prompt cell of the demo notebook; each answers any number of runs."""
    return [
        Reply(
            match="What can you do",
            blocks=[
                text(
                    f"{LABEL} Hello! In this notebook every cell is a prompt to me, and I "
                    "remember the whole conversation. Start a cell with `%%python` to run "
                    "Python; a prompt can use your variables as `{name}`."
                )
            ],
            times=0,
            **PACE,
        ),
        Reply(
            match="most expensive",
            blocks=[
                text(f"{LABEL} The **fig**, at 2.5: more than half of the 4.55 the basket costs.")
            ],
            times=0,
            **PACE,
        ),
        Reply(
            match="first thing I asked",
            blocks=[text(f"{LABEL} You first asked what I can do in this notebook.")],
            times=0,
            **PACE,
        ),
    ]
