"""The built-in generators: ``builtin:blank`` (no model) and ``builtin:tiny`` (small random-
weight SDXL).
"""
