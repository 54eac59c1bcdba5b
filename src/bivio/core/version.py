"""bivio's version, in the core so that every layer can name it (the start-up banner)."""

__version__ = "0.1.0"
