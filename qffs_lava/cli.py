"""Command-line entry points: argument parsing over the library, nothing more.

Each command's defaults are the library's: qffs-train's options are TrainConfig's fields,
qffs-run's take the defaults of `run`. A library error names parameters; a command prints it
as one line naming its own flags (`--float-epochs` for float_epochs) on stderr and exits with
code 2; Ctrl-C exits with 130 (SIGTERM 143, SIGHUP 129). The library's log messages and QffsWarnings are lines
on the stream each command names (qffs_lava.messages), at INFO; -v/--verbose adds DEBUG; qffs-run's --quiet
leaves WARNING (qffs-train's hides the progress bars alone: its INFO lines are its results). The exporter's
command, qffs-export (export/cli.py), is made of the same parts: `command`, `new_parser` and the option types.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

from qffs_lava import __version__
from qffs_lava.distributed import leave, lost_peer, rank_prefix
from qffs_lava.errors import QffsError
from qffs_lava.messages import command_messages
from qffs_lava.signals import end_process, exit_code, finished, raise_if_stopped, signal_of, stop_signals_raise


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


def steps_or_auto(text: str):
    """An argparse type: a whole number of steps >= 1, or 'auto'."""
    if text == "auto":
        return text
    try:
        return integer_at_least(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 or auto, got {text!r}") from None


def bits(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= 8:
        raise argparse.ArgumentTypeError(f"bits must be an integer in 1..8, got {text!r}")
    return value


def output_bits(text: str):
    """Output bits: 1..8, or "float" (a full-precision output that never fires)."""
    return "float" if text == "float" else bits(text)  # ann.models.FLOAT (not imported: the CLI starts light)


def bits_list(text: str) -> List:
    """Bits per activation layer; the last, the output's, may be "float"."""
    parts = text.split(",")
    return [bits(part) for part in parts[:-1]] + [output_bits(parts[-1])]


def weight_bits(text: str) -> Optional[int]:
    if text == "none":
        return None
    value = bits(text)
    if value < 2:
        raise argparse.ArgumentTypeError("weight bits must be 2..8 (weights are signed) or none")
    return value


def arch_name(text: str) -> str:
    """A built-in architecture, or MODULE:FUNCTION / file.py:FUNCTION / torchvision:NAME."""
    from qffs_lava.ann.archs import ARCHS

    if text not in ARCHS and ":" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a built-in architecture ({', '.join(ARCHS)}) nor "
                                         "MODULE:FUNCTION (e.g. mypackage.models:build, models.py:build, "
                                         "torchvision:resnet18)")
    return text


def numbers(text: str) -> List[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None


def share(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


# Parsers and errors ----------------------------------------------------------------------------------


class CommandParser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line, as the commands' own are, not its usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def new_parser(prog: str, description: str, epilog: str = "") -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog, description=description, epilog=epilog)
    parser.add_argument("--version", action="version", version=f"%(prog)s (qffs-lava) {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also the debug messages")
    return parser


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=integer_at_least(1), default=None,
                        help="PyTorch CPU threads (default: PyTorch's choice, one per core). On a machine where "
                             "other jobs hold cores, --threads 1 can be several times faster")


def set_threads(threads: Optional[int]) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def flag_for(parser: argparse.ArgumentParser) -> Callable[[str, Optional[Any]], str]:
    """How a library error's parameter reads on this command line: its flag (with the value, unless the flag
    alone sets it), a positional argument's name, or the parameter's own name if the command has none."""
    actions = {action.dest: action for action in parser._actions}

    def show(name: str, value: Optional[Any]) -> str:
        action = actions.get(name)
        if action is None:
            return name if value is None else f"{name}={value!r}"
        if not action.option_strings:
            return action.metavar or action.dest
        flag = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
        takes_value = action.nargs != 0
        return f"{flag} {value}" if takes_value and value is not None else flag

    return show


def command(build: Callable[[], argparse.ArgumentParser], says_on: str = "stderr", quiet: int = logging.WARNING):
    """A CLI main(argv) -> exit code from a parser builder and the function that acts on the parsed arguments:
    QffsError -> 'error: ...' (its parameters shown as this command's flags) on stderr and 2; Ctrl-C, SIGTERM,
    SIGHUP -> their cleanup, then 130, 143, 129 (qffs_lava.signals); output to a closed pipe -> 141, quietly; under
    torchrun, a rank whose peer failed -> one line and 1 (the failed rank's line says why).

    While it acts, the library's messages are lines on sys.<says_on> (`messages.command_messages`) at INFO;
    -v/--verbose: DEBUG; --quiet, where the command has it: `quiet`."""

    def decorate(act: Callable[[argparse.Namespace, argparse.ArgumentParser], None]):
        def main(argv: Optional[List[str]] = None) -> int:
            """argv None: this process is the command (its console script): it ends here, and a stop signal
            at any moment ends it with 128 + the signal; a list: called from Python, which gets its handlers
            back."""
            with stop_signals_raise(whole_process=argv is None):
                code = _run(argv)
                if argv is None:
                    end_process(code)
            return code

        def _run(argv: Optional[List[str]]) -> int:
            parser = None
            try:  # a Ctrl-C while the parser's imports load is a Ctrl-C too
                parser = build()
                args = parser.parse_args(argv)
                level = logging.DEBUG if args.verbose else quiet if getattr(args, "quiet", False) else logging.INFO
                with command_messages(says_on, level):
                    act(args, parser)
                raise_if_stopped()  # a stop whose interrupt was swallowed on the way is still the command's end
                leave()  # under torchrun, the ranks leave their process group together
                finished()
                return 0
            except QffsError as err:
                finished()
                print(f"error: {rank_prefix()}{err.render(flag_for(parser)) if parser else err}", file=sys.stderr)
                return 2
            except KeyboardInterrupt as err:
                finished()
                stopped = "" if signal_of(err) == signal.SIGINT else f" by {signal.Signals(signal_of(err)).name}"
                print(f"{rank_prefix()}interrupted{stopped}", file=sys.stderr)
                return exit_code(err)
            except BrokenPipeError:  # whoever read the output went away (`| head`): stop quietly, as `cat` does
                finished()
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that nothing writes there again
                return 128 + signal.SIGPIPE
            except RuntimeError as err:
                if not lost_peer(err):
                    raise
                finished()
                print(f"error: {rank_prefix()}stopped: another rank failed (its error is above)", file=sys.stderr)
                return 1

        main.__name__, main.__doc__, main.build_parser = act.__name__, act.__doc__, build
        return main

    return decorate


def defaults_of(function: Callable) -> dict:
    """A function's keyword defaults, by parameter name."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


# qffs-train --------------------------------------------------------------------------------------------

DATA_DIR_HELP = ("the folder holding the datasets in torchvision's layout (make data lays out MNIST and Fashion-MNIST "
                 "there)")
DOWNLOAD_HELP = "let torchvision download the dataset (needs internet)"


def add_data_dir_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--data-dir", default=default, help=f"{DATA_DIR_HELP} (default: %(default)s)")

#: qffs-train's option for each TrainConfig field but dataset and arch: (flag, argparse keywords). The defaults
#: are TrainConfig's; None for the epochs and the batch size means the dataset's schedule (the epilog).
TRAIN_OPTIONS = {
    "data_dir": ("--data-dir", dict(help=DATA_DIR_HELP)),
    "download": ("--download", dict(action="store_true", help=DOWNLOAD_HELP)),
    "act_bits": ("--act-bits", dict(type=bits, help="hidden activation bits")),
    "out_bits": ("--out-bits", dict(type=output_bits, help="output layer bits, or 'float': a full-precision output "
                                    "whose neurons integrate without firing, the prediction read from their "
                                    "potentials")),
    "layer_bits": ("--layer-bits", dict(type=bits_list, help="bits per activation layer, comma-separated, output "
                                                             "last, which may be 'float' (overrides the two above)")),
    "weight_bits": ("--weight-bits", dict(type=weight_bits, help="'8' quantizes weights with LSQ too, so the "
                                          "exported integers are the trained ones (none: float weights as in the "
                                          "paper)")),
    "distill": ("--distill", dict(action="store_true", help="during LSQ fine-tuning, also match the float model's "
                                                            "softmax (knowledge distillation)")),
    "float_epochs": ("--float-epochs", dict(type=integer_at_least(0), help="epochs of float training (0 with "
                                                                           "--init: keep its weights)")),
    "qat_epochs": ("--qat-epochs", dict(type=integer_at_least(0), help="epochs of LSQ fine-tuning (0 with --init: "
                                        "keep the model file's, e.g. to add only the hardware-exact phase to a "
                                        "model trained without it)")),
    "hardware_epochs": ("--hardware-epochs", dict(type=integer_at_least(0), help="epochs of hardware-exact "
                        "fine-tuning, after which the exported network is the trained one (0: skip the phase; the "
                        "export then rounds the LSQ model)")),
    "batch_size": ("--batch-size", dict(type=integer_at_least(1), help="training batch size")),
    "lr": ("--lr", dict(type=float, help="float training learning rate (AdamW, cosine schedule)")),
    "qat_lr": ("--qat-lr", dict(type=float, help="LSQ fine-tuning learning rate")),
    "hardware_lr": ("--hardware-lr", dict(type=float, help="hardware-exact fine-tuning learning rate")),
    "weight_decay": ("--weight-decay", dict(type=float, help="AdamW weight decay of weights (not of LSQ steps, "
                                                             "batchnorm parameters and biases)")),
    "validation": ("--validation", dict(type=share, help="share of the training split held out from all training "
                                        "(the same images for every seed); the hardware-exact phase keeps its "
                                        "epoch with the best validation accuracy, epoch 0 (the LSQ model's integer "
                                        "network) included")),
    "seed": ("--seed", dict(type=int, help="seed of the weights' initialisation, the batches and the "
                                           "augmentation; the same seed gives the same model file on a CPU")),
    "init": ("--init", dict(help="start from this file instead of a fresh model: a qffs model file, or the state "
                                 "dict of a float model trained in plain PyTorch (torch.save(model.state_dict(), "
                                 "path)) for the model --arch builds; with --float-epochs 0 LSQ fine-tunes it as it "
                                 "is")),
    "small_input_stem": ("--small-input-stem", dict(action="store_true", help="torchvision ResNets: a 3x3 stride-1 "
                         "stem conv and no max pool, for 32x32 images (the usual CIFAR stem)")),
    "pool": ("--pool", dict(choices=["max", "avg"], help="lenet, vgg11, vgg16: max pooling (event max pooling in the "
                            "SNN) or average pooling (folded into the next synapse; the paper's pooling ablation)")),
    "input_norm": ("--input-norm", dict(type=numbers, help="the input normalization the model was trained with, "
                                        "x' = (x - mean) / std for dataset values x in [0, 1]: MEAN,STD for every "
                                        "channel, or the channels' means then their standard deviations (e.g. "
                                        "0.1307,0.3081 for MNIST); recorded in the model file and folded into the "
                                        "network at export")),
    "device": ("--device", dict(choices=["cpu", "cuda"], help="where to train (cpu is deterministic; cuda for a "
                                                              "GPU, e.g. for vgg11/vgg16; under torchrun each rank "
                                                              "its own GPU)")),
    "input_size": ("--input-size", dict(type=integer_at_least(8), help="image folders: the side S of the S x S "
                                        "images the model sees, each image resized and cropped to it as --augment "
                                        "says; qffs-train says what the images are and what they become")),
    "augment": ("--augment", dict(help="image folders: none (each image resized to S on its short side, then its "
                                  "centre S x S); crop-flip (that, then CIFAR's random crops of the image "
                                  "zero-padded by S/8 pixels, and horizontal flips); imagenet (ImageNet's random "
                                  "resized crops, scale 0.08-1, and flips; evaluated on the centre S x S of the "
                                  "image resized to S / 0.875). Recorded in the model file: qffs-export and "
                                  "qffs-run read the folder as it says")),
    "workers": ("--workers", dict(type=integer_at_least(0), help="DataLoader worker processes reading the data "
                                  "(default: 0 for the built-in datasets, which are in memory; up to 8 for image "
                                  "folders)")),
    "sync_bn": ("--sync-bn", dict(action="store_true", help="under torchrun: batchnorm statistics over every rank's "
                                                            "batch (SyncBatchNorm), not each rank's own")),
    "amp": ("--amp", dict(choices=["bf16", "fp16"], help="mixed precision (autocast) in the float and LSQ phases; "
                                                         "the hardware-exact phase stays fp32, its integers exact; "
                                                         "fp16 adds a gradient scaler, which --resume restores")),
}


def dataset_name(text: str) -> str:
    """argparse type of qffs-train's and qffs-run's --dataset: a built-in name or folder:PATH."""
    from qffs_lava.ann.datasets import DATASETS, FOLDER_PREFIX

    if text in DATASETS or (text.startswith(FOLDER_PREFIX) and len(text) > len(FOLDER_PREFIX)):
        return text
    raise argparse.ArgumentTypeError(f"unknown dataset {text!r}: choose from {', '.join(DATASETS)}, or "
                                     f"{FOLDER_PREFIX}PATH for an image folder")


def _train_parser() -> argparse.ArgumentParser:
    from qffs_lava.ann.archs import ARCH_HELP
    from qffs_lava.ann.datasets import DATASETS
    from qffs_lava.ann.folders import AUGMENTATIONS, DEFAULT_INPUT_SIZE, SMALL_IMAGES
    from qffs_lava.ann.train import DEFAULT_SCHEDULE, TrainConfig

    schedule = ", ".join(f"{' '.join(d) if isinstance(d, tuple) else d} {f}+{q}+{h} (batch {b})"
                         for d, (f, q, h, b) in DEFAULT_SCHEDULE.items())
    parser = new_parser(
        "qffs-train",
        "Train a float model, fine-tune it with LSQ into a quantized ANN (2-bit hidden activations and a 3-bit "
        "output layer by default), then fine-tune the integer network qffs-export will write (hardware-exact: "
        "Loihi 2's weight grid, thresholds and biases in the forward pass), and save it as a model file that "
        "qffs-export reads. Seeded and deterministic on CPU.",
        f"Epochs (float+QAT+hardware-exact) and batch size where not given: {schedule}. "
        "Example: qffs-train --dataset digits --arch mlp --out digits.pt")
    parser.add_argument("--dataset", required=True, type=dataset_name, metavar="DATASET",
                        help=f"the dataset to train on: {', '.join(DATASETS)} (digits is bundled with "
                             "scikit-learn and needs no download), or folder:PATH, your own images in "
                             "torchvision's ImageFolder layout (PATH/train/CLASS/*, PATH/val/CLASS/*)")
    parser.add_argument("--arch", required=True, type=arch_name,
                        help=f"built-in: {ARCH_HELP}. Or your own PyTorch model: MODULE:FUNCTION or "
                             "path/to/file.py:FUNCTION, a function (or class) that returns an nn.Module, called "
                             "with num_classes and in_channels where it takes them (the current folder is "
                             "importable), traced with torch.fx; torchvision:NAME for torchvision's models "
                             "(e.g. torchvision:resnet18, num_classes from the dataset)")
    parser.add_argument("--out", required=True, help="the model file to write (e.g. model.pt)")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    chosen_by_images = {"input_size": ("the images' own side where they share a size, else their median short side, "
                                       f"at most {DEFAULT_INPUT_SIZE}"),
                        "augment": f"crop-flip for S up to {SMALL_IMAGES}, imagenet above"}
    for name, (flag, options) in TRAIN_OPTIONS.items():
        default, options = fields[name].default, dict(options)
        if name == "augment":
            options["choices"] = list(AUGMENTATIONS)
        if default is None and name.endswith(("epochs", "batch_size")):
            options["help"] += " (default: the dataset's schedule, below)"
        elif name in chosen_by_images:
            options["help"] += f" (default: {chosen_by_images[name]})"
        elif default is not None and default is not False:
            options["help"] += f" (default: {default})"
        parser.add_argument(flag, dest=name, default=default, **options)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run whose checkpoint is beside --out (OUT.checkpoint.pt, written after "
                             "every epoch), with the options it was started with")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (the epoch lines stay)")
    add_threads_option(parser)
    return parser


@command(_train_parser, says_on="stdout", quiet=logging.INFO)
def train_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """qffs-train: train and write a model file."""
    from qffs_lava.ann.train import TrainingInterrupted, train

    set_threads(args.threads)
    try:
        train(args.dataset, args.arch, out=args.out, progress=not args.quiet, resume=args.resume,
              **{name: getattr(args, name) for name in TRAIN_OPTIONS})
    except TrainingInterrupted as interrupted:
        print(str(interrupted) + (f"; resume with:\n  {resume_command()}" if interrupted.resumable else ""),
              file=sys.stderr)
        raise


def resume_command() -> str:
    """This qffs-train command line with --resume (under torchrun, torchrun's with this rank count)."""
    argv = sys.argv[1:] + ([] if "--resume" in sys.argv[1:] else ["--resume"])
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    return (f"torchrun --nproc_per_node {ranks} " if ranks > 1 else "") + shlex.join(["qffs-train", *argv])


# qffs-inspect -----------------------------------------------------------------------------------------


def _inspect_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        "qffs-inspect",
        "Print a net.h5's per-layer table, each layer's neurons, synapses and weight memory with the totals, each "
        "neuron layer's worst-case |v| and the largest |v| seen on the fidelity samples, its metadata and whether "
        "it fits Loihi 2's ranges.")
    parser.add_argument("net", help="a net.h5 written by qffs-export")
    parser.add_argument("--lava", action="store_true",
                        help="also build it as a Lava QffsNetwork Process and print the Lava view: each layer's "
                             "Lava Processes, its (W, H, C) shape and message bits")
    return parser


@command(_inspect_parser)
def inspect_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """qffs-inspect: describe a net.h5."""
    from qffs_lava.ir.loihi import loihi_problems
    from qffs_lava.ir.netfile import read_net
    from qffs_lava.reports import layer_table, membrane_table, resource_table

    network = read_net(args.net)
    print(layer_table(network))
    print(resource_table(network))
    print(membrane_table(network))
    if args.lava:
        from qffs_lava.backends.lava.runner import lava_view

        print(lava_view(network))
    for key, value in network.meta.items():
        print(f"{key}: {value}")
    problems = loihi_problems(network)
    print("Loihi 2 ranges: " + ("ok" if not problems else "EXCEEDED\n  " + "\n  ".join(problems)))


# qffs-run ---------------------------------------------------------------------------------------------


def _run_parser() -> argparse.ArgumentParser:
    from qffs_lava.ann.datasets import DATASETS, SPLITS, load_dataset
    from qffs_lava.backends import BACKENDS, RunOptions, names_with
    from qffs_lava.dynamics import ABLATIONS
    from qffs_lava.evaluate import run
    from qffs_lava.ir.network import MODES

    defaults = defaults_of(run)
    parser = new_parser(
        "qffs-run",
        "Run a net.h5 on a batch of inputs and report accuracy and agreement with the integer quantized ANN "
        "after every time step t = 1..T, and the step from which the spiking network equals the QANN on every "
        "sample.",
        "Backends: " + "; ".join(f"{name}: {backend.summary}" for name, backend in BACKENDS.items())
        + ". Example: qffs-run digits.h5 --dataset digits --steps 8 --plot digits.png")
    parser.add_argument("net", help="a net.h5 written by qffs-export")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=dataset_name, metavar="DATASET",
                        help=f"evaluate on a dataset split: {', '.join(DATASETS)}, or folder:PATH, an image folder "
                             "(its val/ is the test split), read a batch at a time at the network's input size "
                             "and channels (grey or RGB), evaluation-transformed as the network was trained (its "
                             "meta's augment; none for a network trained on a built-in dataset)")
    source.add_argument("--inputs", help=".npy array of dataset values (floats in [0,1] for images), (N, *shape)")
    parser.add_argument("--labels", help=".npy array of N integer labels for --inputs")
    data = defaults_of(load_dataset)
    add_data_dir_option(parser, data["data_dir"])
    parser.add_argument("--download", action="store_true", default=data["download"], help=DOWNLOAD_HELP)
    parser.add_argument("--split", default="test", choices=list(SPLITS),
                        help="the dataset split to run on (default: test)")
    parser.add_argument("--samples", type=integer_at_least(1), default=None, help="only the first N samples")
    parser.add_argument("--steps", type=steps_or_auto, default=defaults["steps"],
                        help=f"T, synchronous time steps (default {defaults['steps']}; at least the K steps the "
                             "input lasts), or auto: run each batch until every sample in it has settled (no "
                             "neuron spikes again), so that T need not be guessed; the report says the T reached. "
                             "The torch backend stops a settled batch, the Lava backends run the bound and report "
                             "the same numbers")
    parser.add_argument("--max-steps", type=integer_at_least(1), default=defaults["max_steps"],
                        help="with --steps auto, the bound on T (default: the step by which QFFS's dynamics have "
                             "settled every sample, from the network's depth and zMax; an ablation may need more)")
    parser.add_argument("--backend", default=defaults["backend"], choices=list(BACKENDS),
                        help=f"what runs the network (default {defaults['backend']}; the list is below)")
    parser.add_argument("--mode", default=defaults["mode"], choices=list(MODES),
                        help="sync: synchronous steps; pipelined: one step of delay per synapse, as Lava and Loihi "
                             "run (default: the backend's own: sync for torch; the Lava backends run pipelined only; "
                             "results are reported in synchronous steps either way)")
    parser.add_argument("--batch-size", "--batch", dest="batch_size", type=integer_at_least(1),
                        default=defaults["batch_size"],
                        help=f"qann and torch backends: samples per batch (default {defaults['batch_size']}; "
                             "larger batches fall out of the CPU cache)")
    parser.add_argument("--device", default=defaults["device"], choices=["cpu", "cuda"],
                        help="where the qann and torch backends run (default cpu; cuda for a GPU)")
    parser.add_argument("--workers", type=integer_at_least(1), default=defaults["workers"],
                        help=f"Lava backends: run chunks of {RunOptions.chunk} samples in N Lava runtimes at once, "
                             "each in its own worker process (default: one per core and chunk, as many as the free "
                             "memory holds; results do not depend on it). A runtime is one process per layer, "
                             "synapse and pool, about 30 MB each, and its channels in /dev/shm: a ResNet-20 at "
                             "--lava-batch 32 is 54 processes and about 2 GB per worker; qffs-run says what it "
                             "will hold before it starts")
    parser.add_argument("--lava-batch", type=integer_at_least(1), default=defaults["lava_batch"],
                        help="Lava backends: B samples side by side in one Lava network, each Process B times as "
                             "wide for nearly the cost of one (default 32; 1: the per-sample network, the one that "
                             "maps to Loihi 2; the spikes are the same)")
    ablating, counting = ", ".join(names_with("ablations")), ", ".join(names_with("costs"))
    parser.add_argument("--ablate", action="append", default=list(defaults["ablate"]), choices=list(ABLATIONS),
                        help="leave out one of QFFS's mechanisms, as in the paper's ablation study "
                             f"({ablating}; repeat for several): negative-spikes (Algorithm 1 never sends -1), "
                             "count-bound (no zMax), precharge (v starts at 0, not th // 2)")
    parser.add_argument("--stats", action="store_true",
                        help="count the work: per layer and in total, per sample, for each t, positive and negative "
                             "spikes, synaptic operations (SOPs: spikes x fan-out) and the ANN's multiply-"
                             f"accumulates (MACs) for the same network ({counting}; in the JSON too)")
    parser.add_argument("--per-class", action="store_true",
                        help="also report each class's accuracy and the confusion matrix at T (needs labels; the "
                             "--json report has them whenever there are labels)")
    parser.add_argument("--json", help="write the full report (per-step figures, counts, predictions, each sample's "
                                       "settled_at and decided_at, the confusion matrix) here")
    parser.add_argument("--plot", help="write accuracy and agreement against t, and the histogram of the samples' "
                                       "settle and decided steps, here, in the format the suffix names "
                                       "(.png, .pdf, .svg, .jpg, ...)")
    parser.add_argument("--no-loihi-check", dest="loihi_check", action="store_false",
                        help="run a network outside Loihi 2's ranges on the Lava backends anyway (values saturate)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, and of the messages on stderr only "
                                                             "the notes and warnings")
    add_threads_option(parser)
    return parser


@command(_run_parser)
def run_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """qffs-run: run a net.h5 and report accuracy against time steps."""
    from qffs_lava.backends import get_backend
    from qffs_lava.evaluate import run
    from qffs_lava.fileio import check_outputs
    from qffs_lava.reports import plot_accuracy, plot_format, run_table, write_json

    if args.labels and not args.inputs:
        parser.error("--labels goes with --inputs")
    if args.per_class and args.inputs and not args.labels:
        parser.error("--per-class needs labels: give --labels with --inputs")
    if args.plot and not get_backend(args.backend).time_steps:
        parser.error(f"--plot needs a spiking backend; {args.backend} has no time steps")
    check_outputs({"json": args.json, "plot": args.plot},
                  {"net": args.net, "inputs": args.inputs, "labels": args.labels})
    if args.plot:
        plot_format(args.plot)  # before anything runs
    from qffs_lava.distributed import world

    set_threads(args.threads)
    result = run(args.net, Path(args.inputs) if args.inputs else args.dataset, args.labels, args.steps, args.backend,
                 args.mode, split=args.split, samples=args.samples, data_dir=args.data_dir, download=args.download,
                 batch_size=args.batch_size, device=args.device, workers=args.workers, lava_batch=args.lava_batch,
                 ablate=args.ablate, stats=args.stats, loihi_check=args.loihi_check, progress=not args.quiet,
                 max_steps=args.max_steps)
    if not world().main:  # under torchrun, rank 0 reports
        return
    print(run_table(result, per_class=args.per_class))
    if args.json:
        write_json(args.json, result.to_dict())
        print(f"wrote {args.json}")
    if args.plot:
        plot_accuracy(args.plot, {args.backend: result}, title=f"{Path(args.net).name} on {result.inputs}")
        print(f"wrote {args.plot}")
