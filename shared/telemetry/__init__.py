"""Telemetry: OpenTelemetry metrics and traces of every scoring, exported to Application Insights."""
