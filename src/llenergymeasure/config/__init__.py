"""Configuration: models, SSOT tables, loading, user config."""
