"""Tools for progressive rollouts: :mod:`.simulate`, simulated rollouts that measure how the
controller's decision rule (``shared/rollout/sequential.py``) and a peeked z test behave."""
