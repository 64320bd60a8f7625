"""Benchmarks of gan_jax (see README.md); a package so tests can import them."""
