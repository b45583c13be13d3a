"""The A/B log: every logged prediction and its outcome, appended to blobs for the A/B report."""
