"""Progressive rollouts: the controller that promotes or rolls back a candidate model, and its statistics."""
