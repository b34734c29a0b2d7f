"""Alert intake: Alertmanager's webhook opens a thread and starts an investigation, once."""
