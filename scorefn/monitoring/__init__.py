"""Drift monitoring on the command line: references, reports and simulations."""
