"""Dock widgets (Qt): thin layers over the algorithm modules."""
