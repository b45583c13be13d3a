"""Scoring: one request from its body to its predictions (decode -> route -> predict -> result)."""
