"""The exporter (installed as ``qffs_export``): model.pt -> integer SNN parameters -> net.h5."""
