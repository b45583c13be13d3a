"""Development tools: a local Azure Functions host for ``function_app.py`` and an Azurite
launcher. Not deployed; nothing in ``shared/`` or ``score_function/`` imports this."""
