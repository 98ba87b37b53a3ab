"""Command-line entry points. Each turns a QffsError into one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

from qffs_lava.ann.archs import ARCH_HELP, ARCHS
from qffs_lava.ann.datasets import DATASETS
from qffs_lava.dynamics import ABLATIONS
from qffs_lava.errors import QffsError
from qffs_lava.fileio import check_outputs, file_kind


def user_errors(main: Callable[[Optional[List[str]]], int]) -> Callable[[Optional[List[str]]], int]:
    """Run a CLI main: QffsError -> 'error: ...' on stderr and exit 2; Ctrl-C -> exit 130."""

    @functools.wraps(main)
    def wrapper(argv: Optional[List[str]] = None) -> int:
        try:
            return main(argv)
        except QffsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, with the rule stated in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def bits(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(f"bits must be an integer in 1..8, got {text!r}")
    return value


def arch_name(text: str) -> str:
    """A built-in architecture, or MODULE:FUNCTION / file.py:FUNCTION / torchvision:NAME."""
    if text not in ARCHS and ":" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a built-in architecture ({', '.join(ARCHS)}) nor "
                                         "MODULE:FUNCTION (e.g. mypackage.models:build, models.py:build, "
                                         "torchvision:resnet18)")
    return text


def bits_list(text: str) -> List[int]:
    return [bits(part) for part in text.split(",")]


def weight_bits(text: str) -> Optional[int]:
    if text == "none":
        return None
    value = bits(text)
    if value < 2:
        raise argparse.ArgumentTypeError("weight bits must be 2..8 (weights are signed) or none")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=integer_at_least(1), default=None,
                        help="PyTorch CPU threads (default: PyTorch's choice, one per core). On a machine where "
                             "other jobs hold cores, --threads 1 can be several times faster")


def set_threads(threads: Optional[int]) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


@user_errors
def train_main(argv: Optional[List[str]] = None) -> int:
    from qffs_lava.ann.train import DEFAULT_SCHEDULE, train

    defaults = ", ".join(f"{' '.join(d) if isinstance(d, tuple) else d} {f}+{q}+{h} (batch {b})"
                         for d, (f, q, h, b) in DEFAULT_SCHEDULE.items())
    parser = argparse.ArgumentParser(
        prog="qffs-train",
        description=(
            "Train a float model, fine-tune it with LSQ into a quantized ANN (2-bit hidden "
            "activations and a 3-bit output layer by default), then fine-tune the integer network "
            "qffs-export will write (hardware-exact: Loihi 2's weight grid, thresholds and biases in "
            "the forward pass), and save it as a model file that qffs-export reads. Seeded and "
            "deterministic on CPU."
        ),
        epilog=f"default epochs (float+QAT+hardware-exact): {defaults}. "
        "Example: qffs-train --dataset digits --arch mlp --out digits.pt",
    )
    parser.add_argument("--dataset", required=True, choices=list(DATASETS), help="digits needs no download")
    parser.add_argument("--arch", required=True, type=arch_name,
                        help=f"built-in: {ARCH_HELP}. Or your own PyTorch model: MODULE:FUNCTION or "
                             "path/to/file.py:FUNCTION, a function (or class) that returns an nn.Module, called "
                             "with num_classes and in_channels where it takes them (the current folder is "
                             "importable), traced with torch.fx; torchvision:NAME for torchvision's models "
                             "(e.g. torchvision:resnet18, num_classes from the dataset)")
    parser.add_argument("--pool", default="max", choices=["max", "avg"],
                        help="lenet, vgg11, vgg16: max pooling (default; event max pooling in the SNN) or average "
                             "pooling (folded into the next synapse; the paper's pooling ablation)")
    parser.add_argument("--small-input-stem", action="store_true",
                        help="torchvision ResNets: a 3x3 stride-1 stem conv and no max pool, for 32x32 images "
                             "(the usual CIFAR stem)")
    parser.add_argument("--out", required=True, help="the model file to write (e.g. model.pt)")
    parser.add_argument("--data-dir", default="data", help="torchvision-layout dataset folder (default: data)")
    parser.add_argument("--download", action="store_true", help="let torchvision download the dataset (needs internet)")
    parser.add_argument("--act-bits", type=bits, default=2, help="hidden activation bits (default 2)")
    parser.add_argument("--out-bits", type=bits, default=3, help="output layer bits (default 3)")
    parser.add_argument("--layer-bits", type=bits_list, default=None,
                        help="bits per activation layer, comma-separated, output last (overrides the two above)")
    parser.add_argument("--weight-bits", type=weight_bits, default=None,
                        help="'8' quantizes weights with LSQ too, so the exported integers are the trained ones "
                             "(default: none, float weights as in the paper)")
    parser.add_argument("--distill", action="store_true",
                        help="during LSQ fine-tuning, also match the float model's softmax (knowledge distillation)")
    parser.add_argument("--float-epochs", type=integer_at_least(0), default=None,
                        help="epochs of float training (0 with --init)")
    parser.add_argument("--qat-epochs", type=integer_at_least(0), default=None,
                        help="epochs of LSQ fine-tuning (0 with --init: keep the model file's, e.g. to add only "
                             "the hardware-exact phase to a model trained without it)")
    parser.add_argument("--hardware-epochs", type=integer_at_least(0), default=None,
                        help="epochs of hardware-exact fine-tuning, after which the exported network is the "
                             "trained one (0: skip the phase; the export then rounds the LSQ model)")
    parser.add_argument("--batch-size", type=integer_at_least(1), default=None)
    parser.add_argument("--lr", type=float, default=1e-3, help="float training learning rate (AdamW, cosine)")
    parser.add_argument("--qat-lr", type=float, default=5e-4, help="LSQ fine-tuning learning rate")
    parser.add_argument("--hardware-lr", type=float, default=1e-4, help="hardware-exact fine-tuning learning rate")
    parser.add_argument("--validation", type=float, default=0.1,
                        help="share of the training split held out from all training (default 0.1, the same "
                             "images for every seed); the hardware-exact phase keeps its epoch with the best "
                             "validation accuracy, epoch 0 (the LSQ model's integer network) included")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default=None,
                        help="start from this model file instead of a fresh model: a qffs model file, or the "
                             "state dict of a float model trained in plain PyTorch (torch.save(model."
                             "state_dict(), path)) for the model --arch builds; with --float-epochs 0 LSQ "
                             "fine-tunes it as it is")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where to train (default cpu, deterministic); cuda for a GPU, e.g. for vgg11/vgg16")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    train(
        args.dataset, args.arch, out=args.out, progress=not args.quiet,
        data_dir=args.data_dir, download=args.download, act_bits=args.act_bits, out_bits=args.out_bits,
        layer_bits=args.layer_bits, weight_bits=args.weight_bits, float_epochs=args.float_epochs,
        qat_epochs=args.qat_epochs, hardware_epochs=args.hardware_epochs, batch_size=args.batch_size, lr=args.lr,
        qat_lr=args.qat_lr, hardware_lr=args.hardware_lr, validation=args.validation,
        seed=args.seed, init=args.init, device=args.device, distill=args.distill,
        small_input_stem=args.small_input_stem, pool=args.pool,
    )
    return 0


@user_errors
def export_main(argv: Optional[List[str]] = None) -> int:
    from qffs_lava.export.exporter import export

    parser = argparse.ArgumentParser(
        prog="qffs-export",
        description=(
            "Convert a quantized model file (from qffs-train) into an integer QFFS spiking network "
            "in lava-dl netx's HDF5 layout (net.h5). Checks Loihi 2's ranges, prints a per-layer "
            "table, and measures the integer QANN against the model on the dataset's test split."
        ),
        epilog="Example: qffs-export digits.pt digits.h5",
    )
    parser.add_argument("model", help="model file written by qffs-train")
    parser.add_argument("net", help="net.h5 to write (replaced atomically)")
    parser.add_argument("--samples", type=integer_at_least(0), default=None,
                        help="measure fidelity on the first N test samples (default: the whole test split; "
                             "0: no dataset needed, fidelity not measured)")
    parser.add_argument("--data-dir", default="data", help="dataset folder (default: data)")
    parser.add_argument("--no-loihi-check", action="store_true",
                        help="export even if weights, threshold, bias or membrane exceed Loihi 2's ranges (warns)")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    export(args.model, args.net, samples=args.samples, data_dir=args.data_dir, loihi_check=not args.no_loihi_check)
    return 0


@user_errors
def inspect_main(argv: Optional[List[str]] = None) -> int:
    from qffs_lava.ir.loihi import loihi_problems
    from qffs_lava.ir.netfile import read_net
    from qffs_lava.summary import layer_table, resource_table

    parser = argparse.ArgumentParser(
        prog="qffs-inspect",
        description="Print a net.h5's per-layer table, each layer's neurons, synapses and weight memory with the "
                    "totals, its metadata and whether it fits Loihi 2's ranges.",
    )
    parser.add_argument("net", help="a net.h5 written by qffs-export")
    parser.add_argument("--lava", action="store_true",
                        help="also build it as a Lava QffsNetwork Process and print the Lava view: each layer's "
                             "Lava Processes, its (W, H, C) shape and message bits")
    args = parser.parse_args(argv)
    network = read_net(args.net)
    print(layer_table(network))
    print(resource_table(network))
    if args.lava:
        from qffs_lava.backends.lava.runner import lava_view

        print(lava_view(network))
    for key, value in network.meta.items():
        print(f"{key}: {value}")
    problems = loihi_problems(network)
    print("Loihi 2 ranges: " + ("ok" if not problems else "EXCEEDED\n  " + "\n  ".join(problems)))
    return 0


def read_npy(path: str, option: str):
    """A numeric array from a .npy file, or a QffsError that says what the file is instead."""
    import numpy as np

    if not Path(path).is_file():
        raise QffsError(f"{option} {path} does not exist")
    kind = file_kind(path)
    if kind != "a NumPy .npy array":
        raise QffsError(f"{option} {path} is not a .npy file: it is {kind}; save the array with numpy.save")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):
            raise QffsError(f"{option} {path} holds Python objects, not numbers; save a numeric array") from None
        raise QffsError(f"cannot read {option} {path}: {err}") from None
    except OSError as err:
        raise QffsError(f"cannot read {option} {path}: {err}") from None


def load_inputs(args) -> tuple:
    """(x, labels, description) from --dataset or --inputs/--labels, first --samples of them."""
    from qffs_lava.ann.datasets import load_dataset

    if args.inputs is not None:
        x = read_npy(args.inputs, "--inputs")
        labels = read_npy(args.labels, "--labels") if args.labels else None
        description = str(args.inputs)
    else:
        x, labels = load_dataset(args.dataset, args.split, args.data_dir, download=args.download)
        description = f"{args.dataset} {args.split} split"
    if args.samples is not None:
        x = x[:args.samples]
        labels = labels[:args.samples] if labels is not None else None
    return x, labels, description


@user_errors
def run_main(argv: Optional[List[str]] = None) -> int:
    from qffs_lava.evaluate import BACKENDS, evaluate, format_report, plot_report, write_json
    from qffs_lava.ir.netfile import read_net
    from qffs_lava.ir.network import MODES

    parser = argparse.ArgumentParser(
        prog="qffs-run",
        description=(
            "Run a net.h5 on a batch of inputs and report accuracy and agreement with the integer "
            "quantized ANN after every time step t = 1..T, and the step from which the spiking "
            "network equals the QANN on every sample."
        ),
        epilog="Example: qffs-run digits.h5 --dataset digits --steps 8 --plot digits.png",
    )
    parser.add_argument("net", help="a net.h5 written by qffs-export")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=list(DATASETS), help="evaluate on a dataset split")
    source.add_argument("--inputs", help=".npy array of dataset values (floats in [0,1] for images), (N, *shape)")
    parser.add_argument("--labels", help=".npy array of N integer labels for --inputs")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--samples", type=integer_at_least(1), default=None, help="only the first N samples")
    parser.add_argument("--steps", type=integer_at_least(1), default=16,
                        help="T, synchronous time steps (default 16; at least the K steps the input lasts)")
    parser.add_argument("--backend", default="torch", choices=list(BACKENDS),
                        help="qann: closed form; torch: PyTorch SNN; lava/lava-float/loihi2: Lava")
    parser.add_argument("--mode", default="sync", choices=list(MODES),
                        help="torch backend: synchronous steps, or pipelined with one step of delay per hop "
                             "as Lava runs (the Lava backends are always pipelined; results are reported in "
                             "synchronous steps either way)")
    parser.add_argument("--batch", type=integer_at_least(1), default=256,
                        help="samples per batch (default 256; larger batches fall out of the CPU cache)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the qann and torch backends run (default cpu; cuda for a GPU)")
    parser.add_argument("--workers", type=integer_at_least(1), default=None,
                        help="Lava backends: run chunks of 100 samples in N Lava runtimes at once, each in its "
                             "own process (default: one per core, at most one per chunk; results do not "
                             "depend on it)")
    parser.add_argument("--ablate", action="append", default=[], choices=list(ABLATIONS),
                        help="leave out one of QFFS's mechanisms, as in the paper's ablation study (torch backend; "
                             "repeat for several): negative-spikes (Algorithm 1 never sends -1), count-bound (no "
                             "zMax), precharge (v starts at 0, not th // 2)")
    parser.add_argument("--stats", action="store_true",
                        help="count the work: per layer and in total, per sample, for each t, positive and negative "
                             "spikes, synaptic operations (SOPs: spikes x fan-out) and the ANN's multiply-"
                             "accumulates (MACs) for the same network (torch and Lava backends; in the JSON too)")
    parser.add_argument("--json", help="write the full report (per-step figures, counts, predictions) here")
    parser.add_argument("--plot", help="write accuracy and agreement against t as a PNG here")
    parser.add_argument("--no-loihi-check", action="store_true",
                        help="run a network outside Loihi 2's ranges on the Lava backends anyway (values saturate)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    if args.labels and not args.inputs:
        parser.error("--labels goes with --inputs")
    check_outputs({"--json": args.json, "--plot": args.plot},
                  {"net": args.net, "--inputs": args.inputs, "--labels": args.labels})
    set_threads(args.threads)
    if args.plot and args.backend == "qann":
        parser.error("--plot needs a spiking backend; qann has no time steps")
    network = read_net(args.net)
    x, labels, description = load_inputs(args)
    report = evaluate(network, x, labels, args.steps, args.backend, args.mode, args.batch, progress=not args.quiet,
                      loihi_check=not args.no_loihi_check, device=args.device, workers=args.workers,
                      ablate=args.ablate, stats=args.stats)
    report["net"], report["inputs"] = str(args.net), description
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    if args.plot:
        plot_report(args.plot, {args.backend: report}, title=f"{Path(args.net).name} on {description}")
        print(f"wrote {args.plot}")
    return 0
