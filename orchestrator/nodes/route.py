"""The routing node: pick the team for a request (or keep the requester's choice)."""

from __future__ import annotations

from orchestrator import prompts, protocol
from orchestrator.llm.gateway import Mode
from orchestrator.nodes.asking import Offer, decide
from orchestrator.nodes.context import ROUTER_CALL, NodeResult, StepContext, progress


async def route(ctx: StepContext) -> NodeResult:
    config = ctx.services.config
    if ctx.state.get("team") in config.teams:
        team = ctx.state["team"]
        summary = f"Team {team} (chosen by the requester)"
    else:

        def offer(mode: Mode) -> Offer:
            if mode == "tools":
                return Offer(
                    tools=protocol.router_tools(config),
                    tool_choice={"type": "function", "function": {"name": "route"}},
                )
            return Offer(response_format=protocol.router_format(config) if mode == "json" else None)

        team = await decide(
            ctx,
            index=ROUTER_CALL,
            tier=config.router_tier,
            purpose="route",
            build=lambda mode: prompts.router_messages(config, ctx.state["request"], mode),
            offer=offer,
            read=lambda reply: protocol.read_route(reply.content, reply.tool_calls, config),
        )
        summary = f"Team {team} chosen by the router"
    return NodeResult(
        node="router",
        summary=summary,
        team=team,
        updates=[{"team": team, "next": "supervisor"}],
        notices=(progress(ctx, summary, team=team),),
    )
