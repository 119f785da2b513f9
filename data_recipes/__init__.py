"""Data recipes: readers for real benchmarks (CoIN) and the built-in synthetic benchmark generator."""
