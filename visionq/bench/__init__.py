"""Benchmarks that print figures: the detector alone, and the whole service under load."""
