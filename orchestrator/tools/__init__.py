"""Tools that workers may call through the LLM gateway's tool-calling interface."""
