"""The reference picture: framing it around the face, the image processor, the IP-Adapters and
their scale.
"""
