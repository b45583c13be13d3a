"""The A/B report behind ``python -m scorefn report``.

- :mod:`.stats` - metrics, intervals, tests and verdicts: pure functions on numpy arrays;
- :mod:`.data` - reading the prediction and outcome logs, and the join;
- :mod:`.render` - HTML and Markdown with plots;
- :mod:`.report` - the analysis (a plain dict) and :func:`make_report`, which does it all.
"""
