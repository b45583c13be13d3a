"""The demo `make demo` runs: models, HTTP, queue and A/B parts."""
