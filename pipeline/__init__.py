"""Pipeline: the generators (SDXL + IP-Adapter, tiny, blank) and safe image decoding."""
