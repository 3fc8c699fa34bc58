"""The reference picture on the GPU side: the image processor, the IP-Adapters and their scale.

Preparing the picture itself (decode, turn, reduce, frame) is the API's
``pipeline.api.reference``, shared by every generator.
"""
