"""Tools that workers may call through the LLM gateway's tool-calling interface."""

from orchestrator.tools.toolbox import SandboxToolBox, toolbox_from_env

__all__ = ["SandboxToolBox", "toolbox_from_env"]
