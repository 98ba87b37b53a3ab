"""qffs-lava: quantized ANNs (LSQ, 2-bit) converted to fast QFFS spiking networks for Lava and Loihi 2."""

__version__ = "0.1.0"
