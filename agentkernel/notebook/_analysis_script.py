"""The scripted model of ``notebooks/analysis.ipynb``: an agent exploring a DataFrame with the
notebook tools, so the notebook runs offline (nbclient, nbval) on the real Claude Code CLI.

Every rule may be used any number of times (the notebook is run more than once on one server
when its outputs are regenerated), so each tool follow-up is matched on what that tool's
result says, not on being a follow-up.
"""

from __future__ import annotations

from ..testing import Reply, text, tool_use

LABEL = "[scripted model]"
_TOOL = "mcp__agentkernel__"
"""How Claude Code names the session's Python tools."""


def analysis_script() -> list[Reply]:
    return [
        # 1. Look before touching: the read tools (allowed by allow-reads).
        Reply(
            match="What is in the sales table",
            blocks=[tool_use(f"{_TOOL}list_variables", {})],
            times=0,
        ),
        Reply(
            match="sales: DataFrame",
            blocks=[tool_use(f"{_TOOL}inspect_variable", {"name": "sales"})],
            times=0,
        ),
        Reply(
            match="summary statistics",
            blocks=[
                text(
                    f"{LABEL} `sales` is a DataFrame of 6 orders in 3 regions (North, South, "
                    "West) with `units` (integers) and `price` (floats); nothing is missing. "
                    "Units range from 3 to 12."
                )
            ],
            times=0,
        ),
        # 2. Change the live data: run_python (kind execute, allowed by allow-all here).
        Reply(
            match="Add a revenue column",
            blocks=[
                tool_use(
                    f"{_TOOL}run_python",
                    {
                        "code": "sales['revenue'] = sales.units * sales.price\n"
                        "sales.groupby('region').revenue.sum()"
                    },
                )
            ],
            times=0,
        ),
        Reply(
            match="Name: revenue",
            blocks=[text(f"{LABEL} Added `revenue`; North sells the most (52.5).")],
            times=0,
        ),
        # 3. The user's own Python function as a tool.
        Reply(
            match="Which region sells best",
            blocks=[tool_use(f"{_TOOL}top_regions", {"n": 1})],
            times=0,
        ),
        Reply(match='["North"]', blocks=[text(f"{LABEL} North, by revenue.")], times=0),
        # 4. A headless run asks nobody: the change is denied and nothing happens.
        Reply(
            match="Drop the price column",
            blocks=[tool_use(f"{_TOOL}run_python", {"code": "del sales['price']"})],
            times=0,
        ),
        Reply(
            match="was denied",
            blocks=[text(f"{LABEL} I was not allowed to change `sales`, so it is unchanged.")],
            times=0,
        ),
    ]
