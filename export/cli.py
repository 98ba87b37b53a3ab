"""qffs-export: argument parsing over `export`, nothing more, made as the library's commands are (qffs_lava.cli):
its defaults are `export`'s, a library error reaches the user naming its own flags, and what `export` logs (the
layer table, the fidelity, the line naming the file written) is its output on stdout."""

from __future__ import annotations

import argparse

from qffs_lava.cli import (add_data_dir_option, add_threads_option, command, dataset_name, defaults_of,
                           integer_at_least, new_parser, set_threads)


def _export_parser() -> argparse.ArgumentParser:
    from qffs_export.exporter import export

    defaults = defaults_of(export)
    parser = new_parser(
        "qffs-export",
        "Convert a quantized model file (from qffs-train) into an integer QFFS spiking network in lava-dl netx's "
        "HDF5 layout (net.h5). Checks Loihi 2's ranges, prints a per-layer table, and measures the integer QANN "
        "against the model on the dataset's test split.",
        "Example: qffs-export digits.pt digits.h5")
    parser.add_argument("model_path", metavar="model", help="model file written by qffs-train")
    parser.add_argument("net_path", metavar="net", help="net.h5 to write (replaced atomically)")
    parser.add_argument("--samples", type=integer_at_least(0), default=defaults["samples"],
                        help="measure fidelity on the first N test samples (default: the whole test split; "
                             "0: no dataset needed, fidelity not measured)")
    add_data_dir_option(parser, defaults["data_dir"])
    parser.add_argument("--dataset", type=dataset_name, metavar="folder:PATH", default=defaults["dataset"],
                        help="for a model trained on an image folder that has moved: its new place, whose val/ the "
                             "fidelity is measured on (its classes must be the model's; default: the folder the "
                             "model file records)")
    parser.add_argument("--no-loihi-check", dest="loihi_check", action="store_false",
                        help="export even if weights, threshold, bias or membrane exceed Loihi 2's ranges (warns)")
    add_threads_option(parser)
    return parser


@command(_export_parser, says_on="stdout")
def export_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """qffs-export: write a net.h5."""
    from qffs_export.exporter import export

    set_threads(args.threads)
    export(args.model_path, args.net_path, samples=args.samples, data_dir=args.data_dir, loihi_check=args.loihi_check,
           dataset=args.dataset)
