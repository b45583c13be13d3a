"""Compiled trees (lleaves): a model's forest compiled to native code, checked against LightGBM
before it serves."""
