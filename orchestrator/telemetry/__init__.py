"""Operational telemetry: Prometheus metrics, OpenTelemetry traces, structured logs.

Submodules are imported directly (``from orchestrator.telemetry import metrics``) so a
process that only logs does not pay for the OpenTelemetry SDK import.
"""
