"""The exporter (installed as ``qffs_export``): model.pt -> net.h5, with its fidelity report; the conversion is the
library's (qffs_lava.convert)."""
