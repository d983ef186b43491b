"""The package version, in one place (the bottom layer, so every layer may read it)."""

__version__: str = "2.0.0"
