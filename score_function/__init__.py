"""Thin Azure Functions handlers: parse the trigger, call ``shared``, shape the response."""
