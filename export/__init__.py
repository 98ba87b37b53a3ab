"""The exporter (installed as ``qffs_lava.export``): model.pt -> integer SNN parameters -> net.h5."""
