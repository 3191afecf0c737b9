"""Rendering: maps to pixels and pixels to PNG. Only this package knows about pixels."""
