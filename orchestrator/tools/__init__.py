"""Tools that workers may call: sandboxed code (`run_code`) and MCP servers' tools.

Imported lazily, so that reading a teams file (which uses `mcp_config`) does not load the
sandbox backends or the MCP SDK.
"""

from __future__ import annotations

from typing import Any

__all__ = ["WorkerToolBox", "toolbox_from_env"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from orchestrator.tools import toolbox

        return getattr(toolbox, name)
    raise AttributeError(name)
