"""scorefn's command line: ``python -m scorefn --help``."""
