"""Console scripts (declared in pyproject.toml): thin wrappers around library functions."""
