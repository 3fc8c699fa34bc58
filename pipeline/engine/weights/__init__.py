"""Weights and where they come from: model sources, loading from a folder or the hub cache,
checkpoint files.
"""
