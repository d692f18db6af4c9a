"""ptycholib: physics-informed neural-network ptychography with PyTorch and TensorFlow backends."""

__version__ = "0.1.0"
