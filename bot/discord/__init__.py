"""The Discord adapter: `/agent` app commands in, run threads and escalation buttons out.

`render` turns neutral notices into message specs (pure), `views` holds the persistent
Approve / Abort buttons, `port` is the ChatPort over discord.py's HTTP client, `app` the
client with its command tree, and `main` wires it to the environment.
"""
