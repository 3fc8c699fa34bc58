"""The SDXL + IP-Adapter engine: the generator and its text, reference-picture, runtime and
weights modules.
"""
