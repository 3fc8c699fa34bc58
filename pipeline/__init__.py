"""Pipeline: the generators behind one torch-free API.

``pipeline.api`` is the only part the consumer imports (no torch);
``pipeline.engine`` is the SDXL + IP-Adapter generator; ``pipeline.builtin``
holds the built-in generators (``builtin:tiny``, ``builtin:blank``).
"""
