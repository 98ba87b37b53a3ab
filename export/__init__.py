"""The exporter (installed as ``qffs_export``): model.pt -> net.h5 with its fidelity report, and qffs-export.

    exporter.py   export (qffs.export): the library's conversion (qffs_lava.convert) checked against Loihi 2,
                  measured against the model on its test split, and written as net.h5
    cli.py        the qffs-export command line

Its modules log under "qffs_export", which the library's handler serves as it serves "qffs_lava"
(qffs_lava.messages): `logging.getLogger("qffs_export").setLevel(logging.WARNING)` silences the export's table.
"""

from qffs_lava.messages import serve

serve(__name__)
