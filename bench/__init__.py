"""fade_triton benchmark suite: ``python -m bench --preset quick`` (see bench/README.md)."""
