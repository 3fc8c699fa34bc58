"""The torch-free pipeline API: the spec, the generator interface, errors, configuration, the
factory and input decoding; the only part of ``pipeline`` the consumer imports.
"""
