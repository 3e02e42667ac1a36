"""Architectures torchvision does not ship (built here, loaded with real weights by the zoo)."""
