"""scorefn's scoring core: model store, scorer, payload formats, router and telemetry.

Nothing here needs the Azure Functions host; heavy modules (numpy, lightgbm, the
storage SDK) are imported by the submodules that use them, never by this package.
"""
