"""`make paper`'s converters on the residual network: SpikingJelly's and sinabs' conversions of one float
ResNet-8, and QFFS from the same float weights (the paper's Figure 5, as `make peers` does for the LeNet).

The float ResNet-8 of bench/peer_models.py is trained in plain PyTorch (bench/peers.py's recipe, the
dataset's float epochs), converted by each peer, and run for T = 1..PEER_STEPS with the image as analog input
at every step, the prediction from the summed outputs; QFFS takes the same state dict through `qffs-train
--arch bench/peer_models.py:resnet8 --init` and runs with `--steps auto --stats`. A converter that cannot take
the network is recorded with its own error. Each part keeps its file in the folder it is given, so that an
interrupted `make paper` does not redo it.

SOPs of the peers: at the input of every conv, one event per spike (SpikingJelly: a nonzero value; sinabs:
the spike count) or per nonzero analog pixel, times its fan-out (bench/peers.structural); the spikes into the
global average pool reach every output of the linear after it. The identity shortcuts (one SOP per spike) are
not counted for the peers (under 1% of a block's SOPs: a conv's fan-out is 9 x its channels).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
from peer_models import resnet8
from paper import resuming, run
from peers import Converted, accuracy, ann2snn, guarded, stepwise, structural, train_float
from run_bench import pct
from torch import nn
from tqdm import tqdm

from qffs_lava.ann.datasets import load_dataset, split_validation
from qffs_lava.ann.train import schedule_for
from qffs_lava.reports import write_json

PEER_STEPS = 128


class SynapseTap:
    """Forward hooks that count, per step, the SOPs of the spikes entering each conv and linear of a network
    (a global average pool and the linear after it: the spikes into the pool, each reaching every output of
    the linear); `binary`: a nonzero value is one spike, else its value counts them. The first layer's input is
    the analog image: one event per nonzero pixel."""

    def __init__(self, model: nn.Module, steps: int, time_in_batch: bool, binary: bool):
        self.steps, self.time_in_batch, self.binary, self.t = steps, time_in_batch, binary, 0
        self.sops, self.handles = np.zeros(steps), []
        synapses = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.AdaptiveAvgPool2d))]
        for i, module in enumerate(synapses):
            if isinstance(module, nn.AdaptiveAvgPool2d):
                fan_out = synapses[i + 1].out_features
                self.handles.append(module.register_forward_hook(self._hook(lambda x: x * fan_out, False)))
            elif not (i and isinstance(synapses[i - 1], nn.AdaptiveAvgPool2d)):
                self.handles.append(module.register_forward_hook(self._hook(structural(module), i == 0)))

    def _hook(self, fan_out: Callable[[torch.Tensor], torch.Tensor], analog: bool):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            events = (x != 0 if self.binary or analog else x.abs()).to(torch.float64)
            sops = fan_out(events).flatten(1).sum(1)  # per image (or per image and step)
            if self.time_in_batch:
                self.sops += sops.reshape(-1, self.steps).sum(0).numpy()
            else:
                self.sops[self.t] += float(sops.sum())
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


def spikingjelly(ann: nn.Module, calibration: torch.Tensor) -> Converted:
    """SpikingJelly's ann2snn (mode "99.9%"; it fuses batchnorm and traces the residual adds with torch.fx)."""
    snn = ann2snn(ann, calibration)
    return Converted({0: snn}, stepwise(snn), time_in_batch=False, binary=True)


def sinabs_model(ann: nn.Module, input_shape, steps: int) -> Converted:
    """sinabs' from_model: each ReLU an IAFSqueeze neuron (MultiSpike, reset by subtraction); batchnorm in eval
    mode stays (an affine map of each step's current, the same as folded)."""
    import sinabs

    network = sinabs.from_model(copy.deepcopy(ann).eval(), input_shape=tuple(input_shape), num_timesteps=steps)
    model = network.spiking_model

    def simulate(x: torch.Tensor, tap: SynapseTap) -> torch.Tensor:
        network.reset_states()
        batch = x.shape[0]
        with torch.no_grad():
            out = model(x.unsqueeze(1).expand(batch, steps, *x.shape[1:]).reshape(batch * steps, *x.shape[1:]))
        return out.reshape(batch, steps, -1).transpose(0, 1)

    return Converted({0: model}, simulate, time_in_batch=True, binary=False)


def run_converted(name: str, converted: Converted, test_x, test_y, batch: int, steps: int, log) -> Dict:
    """Accuracy (from the summed outputs) and SOPs per sample, cumulative, for T = 1..steps."""
    started = time.perf_counter()
    tap = SynapseTap(converted.modules[0], steps, converted.time_in_batch, converted.binary)
    correct = np.zeros(steps)
    try:
        for start in tqdm(range(0, len(test_x), batch), desc=name, leave=False, disable=None):
            x, y = test_x[start:start + batch], test_y[start:start + batch]
            correct += converted.simulate(x, tap).cumsum(0).argmax(2).eq(y).sum(1).numpy()
    finally:
        tap.remove()
    n = len(test_x)
    result = {"accuracy_by_step": (correct / n).tolist(), "sops_by_step": (np.cumsum(tap.sops) / n).tolist(),
              "samples": n, "seconds": time.perf_counter() - started}
    log(f"{name}: accuracy at T = 8, 32, {steps}: "
        + ", ".join(pct(result["accuracy_by_step"][t - 1]) for t in (8, 32, steps)))
    return result


def measure(folder: Path, dataset: str, float_epochs: Optional[int], samples: Optional[int], log) -> Dict:
    """The float ResNet-8, each peer's conversion and QFFS from the same weights. Each part is read back where
    its file is there."""
    (train_x, train_y), _ = split_validation(*load_dataset(dataset, "train", folder / "data"), 0.1)
    test_x, test_y = load_dataset(dataset, "test", folder / "data")
    if samples:
        test_x, test_y = test_x[:samples], test_y[:samples]
    epochs = float_epochs or schedule_for(dataset, "resnet8")[0]
    state_dict = folder / "float.pt"
    torch.manual_seed(0)
    ann = resnet8(10, train_x.shape[1])
    if not state_dict.exists():
        started = time.perf_counter()
        train_float(ann, "float ResNet-8", train_x, train_y, epochs, log)
        torch.save(ann.state_dict(), folder / "float.partial.pt")
        (folder / "float.partial.pt").rename(state_dict)
        write_json(folder / "float.json", {"seconds": time.perf_counter() - started, "epochs": epochs})
    ann.load_state_dict(torch.load(state_dict))
    ann.eval()
    results = {"float_accuracy": accuracy(ann, test_x, test_y), "float_epochs": epochs,
               "float_seconds": json.loads((folder / "float.json").read_text())["seconds"], "converters": {}}
    peers = {"SpikingJelly ann2snn (99.9%)": (lambda: spikingjelly(ann, train_x[:10000]), 500),
             "sinabs from_model": (lambda: sinabs_model(ann, train_x.shape[1:], PEER_STEPS), 20)}
    for name, (build, batch) in peers.items():
        saved = folder / f"{name.split()[0].lower()}.json"
        if not saved.exists():
            write_json(saved, guarded(name, lambda: run_converted(name, build(), test_x, test_y, batch, PEER_STEPS,
                                                                  log), log))
        results["converters"][name] = json.loads(saved.read_text())
    results["converters"]["QFFS"] = qffs(folder, dataset, samples, log)
    return results


def qffs(folder: Path, dataset: str, samples: Optional[int], log) -> Dict:
    """QFFS from the float state dict: qffs-train (LSQ and the hardware-exact phase), qffs-export, qffs-run."""
    limit = f" --samples {samples}" if samples else ""
    arch = os.path.relpath(Path(__file__).with_name("peer_models.py"), folder)
    commands = [("qffs.pt", f"qffs-train --dataset {dataset} --arch {arch}:resnet8 --init float.pt --float-epochs 0 "
                            "--out qffs.pt --threads 1 --quiet"),
                ("qffs.h5", "qffs-export qffs.pt qffs.h5 --threads 1"),
                ("qffs_run.json", f"qffs-run qffs.h5 --dataset {dataset}{limit} --steps auto --stats --threads 1 "
                                  "--json qffs_run.json --quiet")]
    timing = json.loads((folder / "qffs_seconds.json").read_text()) if (folder / "qffs_seconds.json").exists() else {}
    for out, command in commands:
        if not (folder / out).exists():
            timing[out] = run(resuming(command, folder, out) if out == "qffs.pt" else command, folder, log)["seconds"]
            write_json(folder / "qffs_seconds.json", timing)
    report = json.loads((folder / "qffs_run.json").read_text())
    return {"accuracy_by_step": report["accuracy_by_step"], "sops_by_step": report["costs"]["total"]["sops"],
            "qann_accuracy": report["qann_accuracy"], "equal_from_step": report["equal_from_step"],
            "samples": report["samples"], "steps": report["steps"],
            "commands": [command for _, command in commands], "seconds": timing}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashionmnist")
    parser.add_argument("--out", required=True, help="the folder (with data/ in it) for every file, and peers.json")
    parser.add_argument("--float-epochs", type=int, default=None, help="default: qffs-train's for the dataset")
    parser.add_argument("--samples", type=int, default=None, help="only the first N test images")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # make paper's stop, as a Ctrl-C
    torch.set_num_threads(args.threads)
    results = measure(Path(args.out).resolve(), args.dataset, args.float_epochs, args.samples,
                      lambda text: print(text, flush=True))
    write_json(Path(args.out) / "peers.json", results)


if __name__ == "__main__":
    sys.exit(main())
