"""Running on a device: device and dtype choice, placement, schedulers, the stoppable denoising
loop.
"""
