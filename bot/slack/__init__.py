"""The Slack adapter: Bolt (AsyncApp) inbound, a WebClient ChatPort outbound, Block Kit."""
