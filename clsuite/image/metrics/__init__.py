"""Metrics: pure functions of prediction-record tables (never of live models)."""
