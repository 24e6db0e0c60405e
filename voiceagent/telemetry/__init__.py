"""Exporters for operators' tools: OpenTelemetry traces (``tracing``, needs
``opentelemetry-sdk``) and Prometheus metrics (``prometheus``, needs ``prometheus-client``).
Each is imported only when it is turned on (``voiceagent/observability.py``)."""
