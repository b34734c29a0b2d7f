"""Every model call goes through the gateway (litellm), never around it."""
