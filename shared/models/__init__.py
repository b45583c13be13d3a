"""Models: LightGBM's C library, a loaded model and its feature schema, the blob store that loads
and refreshes them, compiled trees."""
