"""`make peers`: QFFS against the converters users know, on one float network, accuracy and cost against T.

For average pooling and for max pooling, in turn:
1. Trains the float LeNet of bench/peer_models.py on MNIST in plain PyTorch (the training split
   less the tenth qffs-train holds out for validation, seed 0, AdamW 1e-3 with a cosine schedule,
   batch 64) and saves its state dict.
2. Converts it with SpikingJelly's `ann2snn.Converter` (mode "99.9%", the normalization its
   tutorial recommends; it fuses batchnorm itself), with sinabs' `from_model` (batchnorm folded
   first; its default MultiSpike IAF neurons, which need no weight normalization, and
   `SpikingMaxPooling2dLayer` in place of max pooling), and with QFFS through the project's CLI
   (`qffs-train --arch bench/peer_models.py:lenet_avg --init` that state dict, then qffs-export
   and `qffs-run --stats`).
3. Runs each on the MNIST test split, the peers for T = 1..256 with the image as analog input at
   every step (as both libraries do by default) and the sum of the last layer's outputs as the
   prediction, QFFS for T = 1..16; counts spikes and synaptic operations as docs/costs.md
   defines them (costs.connections: spikes times the fan-out of the synapse they cross, average
   pooling part of it; the analog input one event per nonzero pixel per step).
Writes bench/peers.json, bench/peers.png and the README's bench:peers block. The peers are an
optional extra (`pip install -e '.[peers]'`, which `make peers` runs); one that does not import
is reported and skipped. About 2 hours on a 2-core CPU (the peers' 256-step runs on 10,000 images).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import multiprocessing
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from peer_models import lenet
from run_bench import README, ROOT, duration, pct, replace_block, run
from torch import nn
from tqdm import tqdm

from qffs_lava.ann.datasets import load_dataset, split_validation
from qffs_lava.costs import connections
from qffs_lava.evaluate import holds_from_step
from qffs_lava.reports import write_json

RUNS = ROOT / "runs" / "peers"
PEER_STEPS = 256
QFFS_STEPS = 16
TABLE_STEPS = (2, 4, 8, 16, 32, 64)
BATCH, LR, SEED = 64, 1e-3, 0


# The float network --------------------------------------------------------------------------------------


def train_float(model: nn.Module, label: str, train_x, train_y, epochs: int, log: Callable[[str], None]) -> nn.Module:
    """`model` trained in plain PyTorch: AdamW, cosine schedule, cross-entropy, seed SEED."""
    generator = torch.Generator().manual_seed(SEED)
    batches = (len(train_x) + BATCH - 1) // BATCH
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * batches)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        for start in tqdm(range(0, len(train_x), BATCH), desc=f"{label} epoch {epoch}", leave=False, disable=None):
            index = order[start:start + BATCH]
            loss = F.cross_entropy(model(train_x[index]), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        log(f"{label} epoch {epoch}/{epochs}, last loss {loss.item():.4f}")
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)]).eq(y).double()
                     .mean())


def fold_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """The same function with each batchnorm folded into the conv or linear before it (w * g/s, (b - m) g/s + beta)."""
    layers: List[nn.Module] = []
    for module in copy.deepcopy(model):
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            synapse = layers[-1]
            scale = module.weight.data / torch.sqrt(module.running_var + module.eps)
            synapse.weight.data *= scale.reshape(-1, *([1] * (synapse.weight.dim() - 1)))
            synapse.bias.data = (synapse.bias.data - module.running_mean) * scale + module.bias.data
        else:
            layers.append(module)
    return nn.Sequential(*layers).eval()


# Cost accounting for a converted Sequential -----------------------------------------------------------------


def structural(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The module's connections as a linear map with all-one weights (average pooling summing its window)."""
    if isinstance(module, nn.Conv2d):
        ones = torch.ones(module.weight.shape, dtype=torch.float64)
        return lambda x: F.conv2d(x, ones, None, module.stride, module.padding, module.dilation, module.groups)
    if isinstance(module, nn.Linear):
        ones = torch.ones(module.weight.shape, dtype=torch.float64)
        return lambda x: x @ ones.T
    if isinstance(module, nn.AvgPool2d):
        k = module.kernel_size
        return lambda x: F.avg_pool2d(x, k, module.stride) * (k * k if isinstance(k, int) else k[0] * k[1])
    if isinstance(module, nn.Flatten):
        return lambda x: x.flatten(1)
    raise ValueError(f"no structural map for {module}")


def synapse_sources(ann: nn.Sequential, input_shape) -> Dict[int, torch.Tensor]:
    """Per spike source of the BN-folded LeNet (-1: the input; a ReLU, or a max pool, by index), the fan-out of
    each of its neurons through the modules up to the next conv or linear (docs/costs.md)."""
    shapes, x = [], torch.zeros((1,) + tuple(input_shape))
    for module in ann:
        x = module(x)
        shapes.append(tuple(x.shape[1:]))
    sources = [-1] + [i for i, m in enumerate(ann) if isinstance(m, (nn.ReLU, nn.MaxPool2d))]
    fan_outs = {}
    for source in sources:
        path = []
        for module in list(ann)[source + 1:]:
            if isinstance(module, (nn.ReLU, nn.MaxPool2d)):
                break
            path.append(structural(module))
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                break
        if path and isinstance(ann[source + len(path)], (nn.Conv2d, nn.Linear)):
            shape = tuple(input_shape) if source < 0 else shapes[source]

            def linear_map(x, path=path):
                for step in path:
                    x = step(x)
                return x

            fan_outs[source] = connections(linear_map, shape)
    return fan_outs


@dataclass
class Converted:
    """A converted network: its spiking modules by the ANN index they replace, and how it runs.

    simulate(x, tap) -> (T, batch, classes) outputs; time_in_batch: its modules see (batch * T, ...) at once
    (sinabs) rather than one step per call (SpikingJelly); binary: a module's nonzero output is one spike
    (SpikingJelly's max pools pass scaled spikes), else its value is the number of spikes (sinabs' MultiSpike).
    """

    modules: Dict[int, nn.Module]
    simulate: Callable
    time_in_batch: bool
    binary: bool


class Tap:
    """Forward hooks on a converted network's spiking modules: per step, the spikes each source sent and the
    SOPs they cost (spikes times fan-out)."""

    def __init__(self, converted: Converted, fan_outs: Dict[int, torch.Tensor], steps: int):
        self.fan_outs, self.steps = fan_outs, steps
        self.time_in_batch, self.binary = converted.time_in_batch, converted.binary
        modules = converted.modules
        self.spikes, self.sops = np.zeros(steps), np.zeros(steps)
        self.t = 0
        self.handles = [module.register_forward_hook(self._hook(source)) for source, module in modules.items()]

    def _hook(self, source: int):
        def hook(module, inputs, output):
            counts = (output.detach() != 0 if self.binary else output.detach().abs()).to(torch.float64)
            if self.time_in_batch:  # (batch * T, ...) -> per step (T, ...)
                counts = counts.reshape(-1, self.steps, *counts.shape[1:]).sum(0)
            else:  # one step
                counts = counts.sum(0, keepdim=True)
            slot = slice(None) if self.time_in_batch else slice(self.t, self.t + 1)
            self.spikes[slot] += counts.flatten(1).sum(1).numpy()
            if source in self.fan_outs:
                self.sops[slot] += (counts * self.fan_outs[source]).flatten(1).sum(1).numpy()
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


def input_sops(x: torch.Tensor, fan_out: torch.Tensor) -> float:
    """The analog input's SOPs per step, summed over x: one event per nonzero pixel, times its fan-out."""
    return float(((x != 0).to(torch.float64) * fan_out).sum())


# The peers ------------------------------------------------------------------------------------------------


def ann2snn(ann: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """SpikingJelly's ann2snn with mode "99.9%": each ReLU becomes scaler -> IF neuron (threshold 1, reset by
    subtraction) -> scaler, scaled by the 99.9th percentile of its activation on the calibration images."""
    from spikingjelly.activation_based import ann2snn as converter

    loader = [(calibration[i:i + 1000], None) for i in range(0, len(calibration), 1000)]
    with torch.no_grad():
        return converter.Converter(dataloader=loader, mode="99.9%")(copy.deepcopy(ann).eval()).eval()


def stepwise(snn: nn.Module) -> Callable:
    """simulate(x, tap): a SpikingJelly network from its reset state, one step per call for tap.steps steps (the
    tap told each step): the outputs, (T, batch, classes)."""
    from spikingjelly.activation_based import functional

    def simulate(x: torch.Tensor, tap) -> torch.Tensor:
        functional.reset_net(snn)
        outputs = []
        with torch.no_grad():
            for t in range(tap.steps):
                tap.t = t
                outputs.append(snn(x))
        return torch.stack(outputs)

    return simulate


def spikingjelly(ann: nn.Sequential, calibration: torch.Tensor):
    """The LeNet through ann2snn, its IF neurons and max pools tapped by the ANN index they replace."""
    from spikingjelly.activation_based import neuron

    snn = ann2snn(ann, calibration)
    neurons = [m for m in snn.modules() if isinstance(m, neuron.IFNode)]
    pools = [m for m in snn.modules() if isinstance(m, nn.MaxPool2d)]
    relus = [i for i, m in enumerate(ann) if isinstance(m, nn.ReLU)]
    pool_at = [i for i, m in enumerate(ann) if isinstance(m, nn.MaxPool2d)]
    modules = {**dict(zip(relus, neurons)), **dict(zip(pool_at, pools))}
    return Converted(modules, stepwise(snn), time_in_batch=False, binary=True)


class _TimeMaxPool(nn.Module):
    """sinabs' SpikingMaxPooling2dLayer (it takes one sample's (T, C, H, W)) over a (batch * T, C, H, W) input."""

    def __init__(self, kernel: int, steps: int):
        super().__init__()
        from sinabs.layers import SpikingMaxPooling2dLayer

        self.pool, self.steps = SpikingMaxPooling2dLayer((kernel, kernel)), steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bt, c, h, w = x.shape
        batch = bt // self.steps
        y = self.pool(x.reshape(batch, self.steps, c, h, w).transpose(0, 1).reshape(self.steps, batch * c, h, w))
        return y.reshape(self.steps, batch, c, *y.shape[-2:]).transpose(0, 1).reshape(bt, c, *y.shape[-2:])


def sinabs_model(ann: nn.Sequential, steps: int):
    """sinabs' from_model: each ReLU becomes an IAFSqueeze neuron (threshold 1, MultiSpike: floor(v) spikes a
    step, reset by subtraction, v >= -1); max pools become SpikingMaxPooling2dLayer."""
    import sinabs

    network = sinabs.from_model(ann, input_shape=(1, 28, 28), num_timesteps=steps)
    model = network.spiking_model
    for i, module in enumerate(model):
        if isinstance(module, nn.MaxPool2d):
            model[i] = _TimeMaxPool(module.kernel_size, steps)
    modules = {i: m for i, m in enumerate(model) if isinstance(m, (sinabs.layers.IAFSqueeze, _TimeMaxPool))}

    def simulate(x: torch.Tensor, tap: Tap) -> torch.Tensor:
        network.reset_states()
        batch = x.shape[0]
        with torch.no_grad():
            out = model(x.unsqueeze(1).expand(batch, steps, *x.shape[1:]).reshape(batch * steps, *x.shape[1:]))
        return out.reshape(batch, steps, -1).transpose(0, 1)  # (T, batch, classes)

    return Converted(modules, simulate, time_in_batch=True, binary=False)


def run_peer(name: str, build, ann: nn.Sequential, test_x, test_y, batch: int, log) -> Dict:
    """Accuracy (from the summed outputs) and spikes and SOPs per sample, cumulative, for T = 1..PEER_STEPS."""
    started = time.perf_counter()
    fan_outs = synapse_sources(ann, test_x.shape[1:])
    converted = build()
    tap = Tap(converted, fan_outs, PEER_STEPS)
    correct, input_events = np.zeros(PEER_STEPS), 0.0
    try:
        for start in tqdm(range(0, len(test_x), batch), desc=name, leave=False, disable=None):
            x, y = test_x[start:start + batch], test_y[start:start + batch]
            outputs = converted.simulate(x, tap).cumsum(0)
            correct += outputs.argmax(2).eq(y).sum(1).numpy()
            input_events += input_sops(x, fan_outs[-1])
    finally:
        tap.remove()
    n = len(test_x)
    sops = np.cumsum(tap.sops + input_events) / n
    result = {"accuracy_by_step": (correct / n).tolist(), "sops_by_step": sops.tolist(),
              "spikes_by_step": (np.cumsum(tap.spikes) / n).tolist(), "seconds": time.perf_counter() - started}
    log(f"{name}: accuracy at T = 16, 64, 256: " + ", ".join(pct(result["accuracy_by_step"][t - 1])
                                                              for t in (16, 64, 256)))
    return result


def guarded(name: str, measure_peer: Callable[[], Dict], log: Callable[[str], None]) -> Dict:
    """measure_peer()'s figures, or {"error": why} where the peer does not import or fails: said, and the bench
    carries on."""
    try:
        return measure_peer()
    except ImportError as err:
        log(f"{name}: skipped, it does not import ({err}); pip install -e '.[peers]'")
        return {"error": f"does not import: {err}"}
    except Exception as err:  # noqa: BLE001 - a peer's failure is reported, the bench carries on
        log(f"{name}: failed ({type(err).__name__}: {err})")
        return {"error": f"{type(err).__name__}: {err}"}


def peer_converters(calibration: torch.Tensor) -> Dict[str, tuple]:
    """name -> (build function, the network it converts, batch size)."""
    return {
        "SpikingJelly ann2snn (99.9%)": (lambda ann: spikingjelly(ann, calibration), 1000),
        "sinabs from_model": (lambda ann: sinabs_model(ann, PEER_STEPS), 40),
    }


# QFFS through the CLI -----------------------------------------------------------------------------------


def run_qffs(pool: str, state_dict: Path, samples: Optional[int], qat_epochs: int) -> Dict:
    """qffs-train from the float state dict (LSQ, then the hardware-exact phase), qffs-export, qffs-run --stats."""
    name = RUNS / f"qffs_{pool}"
    rel = name.relative_to(ROOT)
    train = run(f"qffs-train --dataset mnist --arch bench/peer_models.py:lenet_{pool} "
                f"--init {state_dict.relative_to(ROOT)} --float-epochs 0 --qat-epochs {qat_epochs} --out {rel}.pt "
                "--threads 2 --quiet", cwd=ROOT)
    run(f"qffs-export {rel}.pt {rel}.h5", cwd=ROOT)
    limit = f" --samples {samples}" if samples else ""
    simulated = run(f"qffs-run {rel}.h5 --dataset mnist --steps {QFFS_STEPS}{limit} --stats --threads 2 "
                    f"--json {rel}_run.json --quiet", cwd=ROOT)
    report = json.loads(Path(f"{name}_run.json").read_text())
    return {"accuracy_by_step": report["accuracy_by_step"], "sops_by_step": report["costs"]["total"]["sops"],
            "spikes_by_step": report["costs"]["total"]["spikes"], "qann_accuracy": report["qann_accuracy"],
            "seconds": simulated["seconds"], "train_seconds": train["seconds"],
            "commands": [train["command"], simulated["command"]],
            "cost_table": simulated["stdout"][simulated["stdout"].index("cost per sample"):].split("\nwall time")[0]}


# Measuring, the table and the plot --------------------------------------------------------------------------


def steps_within(accuracy_by_step: List[float], target: float, points: float) -> Optional[int]:
    """The first T from which the accuracy stays within `points` of the target at every later T measured."""
    return holds_from_step([a >= target - points / 100 for a in accuracy_by_step])


def measure(samples: Optional[int], float_epochs: int, qat_epochs: int, pools: List[str], log) -> Dict:
    RUNS.mkdir(parents=True, exist_ok=True)
    (train_x, train_y), _ = split_validation(*load_dataset("mnist", "train", ROOT / "data"), 0.1)
    test_x, test_y = load_dataset("mnist", "test", ROOT / "data")
    if samples:
        test_x, test_y = test_x[:samples], test_y[:samples]
    results = {"date": datetime.date.today().isoformat(), "threads": torch.get_num_threads(),
               "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} cores, torch {torch.__version__}",
               "samples": len(test_x), "float_epochs": float_epochs, "qat_epochs": qat_epochs, "pools": {}}
    for pool in pools:
        started = time.perf_counter()
        torch.manual_seed(SEED)
        ann = train_float(lenet(10, 1, pool), f"float LeNet ({pool} pooling)", train_x, train_y, float_epochs,
                          log)
        state_dict = RUNS / f"float_{pool}.pt"
        torch.save(ann.state_dict(), state_dict)
        folded = fold_batchnorm(ann)
        entry = {"float_accuracy": accuracy(ann, test_x, test_y), "float_train_seconds": time.perf_counter() - started,
                 "folded_accuracy": accuracy(folded, test_x, test_y), "converters": {}}
        log(f"float LeNet ({pool} pooling): {pct(entry['float_accuracy'])}")
        for name, (build, batch) in peer_converters(train_x[:10000]).items():
            entry["converters"][name] = guarded(
                name, lambda: run_peer(name, lambda: build(folded), folded, test_x, test_y, batch, log), log)
        entry["converters"]["QFFS"] = run_qffs(pool, state_dict, samples, qat_epochs)
        for figures in entry["converters"].values():
            if "accuracy_by_step" in figures:
                figures["within_0.5"] = steps_within(figures["accuracy_by_step"], entry["float_accuracy"], 0.5)
                figures["within_0.1"] = steps_within(figures["accuracy_by_step"], entry["float_accuracy"], 0.1)
        results["pools"][pool] = entry
    return results


def targets(entry: Dict) -> Dict:
    """QFFS within 0.5 points of the float ANN at a T at least 4 times smaller than the best peer's, with fewer
    SOPs per sample at its T than that peer at its own."""
    qffs = entry["converters"]["QFFS"]
    peers = {n: f for n, f in entry["converters"].items() if n != "QFFS" and f.get("within_0.5")}
    if qffs.get("within_0.5") is None or not peers:
        return {"met": False, "why": "QFFS or every peer never came within 0.5 points"}
    best = min(peers, key=lambda n: peers[n]["within_0.5"])
    t_qffs, t_peer = qffs["within_0.5"], peers[best]["within_0.5"]
    sops_qffs, sops_peer = qffs["sops_by_step"][t_qffs - 1], peers[best]["sops_by_step"][t_peer - 1]
    return {"best_peer": best, "qffs_steps": t_qffs, "peer_steps": t_peer, "qffs_sops": sops_qffs,
            "peer_sops": sops_peer, "steps_met": 4 * t_qffs <= t_peer, "sops_met": sops_qffs < sops_peer,
            "met": 4 * t_qffs <= t_peer and sops_qffs < sops_peer}


def _sops(value: float) -> str:
    return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{value / 1e3:.1f} k"


def table(entry: Dict) -> str:
    header = ("| converter | " + " | ".join(f"T = {t}" for t in TABLE_STEPS)
              + " | T within 0.5 | within 0.1 | SOPs per sample at T within 0.5 |")
    lines = [header, "|" + "---|" * (len(TABLE_STEPS) + 4)]
    for name, figures in entry["converters"].items():
        if "error" in figures:
            lines.append(f"| {name} | {figures['error']} |" + " |" * (len(TABLE_STEPS) + 2))
            continue
        acc = figures["accuracy_by_step"]
        cells = [pct(acc[t - 1]) if t <= len(acc) else "-" for t in TABLE_STEPS]
        t5, t1 = figures["within_0.5"], figures["within_0.1"]
        limit = f"not by {len(acc)}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {t5 or limit} | {t1 or limit} | "
                     + (_sops(figures["sops_by_step"][t5 - 1]) if t5 else "-") + " |")
    return "\n".join(lines)


def readme_block(results: Dict) -> str:
    split = "the whole MNIST test split" if results["samples"] == 10000 else \
        f"the first {results['samples']} images of the MNIST test split"
    parts = [f"Measured {results['date']} by `{results['command']}` ({results['machine']}, {results['threads']} "
             f"threads) on {split}; accuracy at T steps, and the first T from which each stays within 0.5 and "
             "within 0.1 points of the float LeNet it was converted from:"]
    for pool, entry in results["pools"].items():
        goal = entry["targets"]
        parts.append(f"**{pool} pooling** (float LeNet {pct(entry['float_accuracy'])}):\n\n{table(entry)}")
        qffs = entry["converters"]["QFFS"]
        equal = steps_within(qffs["accuracy_by_step"], qffs["qann_accuracy"], 0.1)
        parts.append(f"QFFS's own QANN (the integer network it was exported from): {pct(qffs['qann_accuracy'])}; "
                     "the SNN is within 0.1 points of it "
                     + (f"from T = {equal}." if equal else f"at no T up to {len(qffs['accuracy_by_step'])}."))
        if "best_peer" in goal:
            parts.append(
                f"Targets: QFFS within 0.5 points at T = {goal['qffs_steps']}, the best peer ({goal['best_peer']}) "
                f"at T = {goal['peer_steps']}: {goal['peer_steps'] / goal['qffs_steps']:.1f}x fewer steps "
                f"({'met' if goal['steps_met'] else 'NOT met'}: at least 4x); {_sops(goal['qffs_sops'])} against "
                f"{_sops(goal['peer_sops'])} SOPs per sample ({'met' if goal['sops_met'] else 'NOT met'}: fewer).")
        else:
            parts.append(f"Targets: not met ({goal['why']}).")
    return "\n\n".join(parts)


def stats_block(results: Dict) -> str:
    """The README's --stats example: the max-pooling QFFS LeNet's per-layer costs, as qffs-run prints them."""
    qffs = results["pools"][list(results["pools"])[-1]]["converters"]["QFFS"]
    return (f"Measured {results['date']} by `{results['command']}` ({results['threads']} threads) on its max-pooling "
            "LeNet: "
            f"`{qffs['commands'][1].replace(' --quiet', '')}` ends with\n\n```\n{qffs['cost_table']}\n```")


def plot(results: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results["pools"]), figsize=(11, 7.5), constrained_layout=True, squeeze=False)
    for column, (pool, entry) in enumerate(results["pools"].items()):
        top, bottom = axes[0][column], axes[1][column]
        for name, figures in entry["converters"].items():
            if "accuracy_by_step" in figures:
                steps = range(1, len(figures["accuracy_by_step"]) + 1)
                top.plot(steps, [100 * a for a in figures["accuracy_by_step"]], label=name)
                bottom.plot(steps, figures["sops_by_step"], label=name)
        top.axhline(100 * entry["float_accuracy"], color="gray", linestyle="--", label="float ANN")
        top.set(xscale="log", ylim=(50, 100), xlabel="time steps T", ylabel="accuracy (%)",
                title=f"MNIST LeNet, {pool} pooling")
        bottom.set(xscale="log", yscale="log", xlabel="time steps T", ylabel="SOPs per sample (cumulative)")
        for ax in (top, bottom):
            ax.grid(alpha=0.3, which="both")
        top.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=None,
                        help="only the first N test images, for every converter (default: the whole split)")
    parser.add_argument("--check", action="store_true",
                        help="a quick check of the whole path: write runs/peers/peers.json and .png only")
    parser.add_argument("--float-epochs", type=int, default=4, help="float training epochs (default 4)")
    parser.add_argument("--qat-epochs", type=int, default=4, help="QFFS's LSQ fine-tuning epochs (default 4)")
    parser.add_argument("--pools", nargs="+", default=["avg", "max"], choices=["avg", "max"],
                        help="the poolings to compare (default both)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = measure(args.samples, args.float_epochs, args.qat_epochs, args.pools,
                      lambda text: print(text, flush=True))
    results["command"] = "make peers" + (f' PEERS_ARGS="{" ".join(sys.argv[1:])}"' if sys.argv[1:] else "")
    for entry in results["pools"].values():
        entry["targets"] = targets(entry)
    if args.check or args.pools != ["avg", "max"]:  # nothing in bench/ or the README
        write_json(RUNS / "peers.json", results)
        plot(results, RUNS / "peers.png")
        print(readme_block(results) + "\n\n" + stats_block(results))
        print("a quick check: wrote runs/peers/peers.json and runs/peers/peers.png only")
        return
    write_json(ROOT / "bench" / "peers.json", results)
    plot(results, ROOT / "bench" / "peers.png")
    text = replace_block(README.read_text(), "peers", readme_block(results))
    README.write_text(replace_block(text, "stats", stats_block(results)))
    print(readme_block(results))
    trainings = sum(e["converters"]["QFFS"]["train_seconds"] for e in results["pools"].values())
    print(f"wrote bench/peers.json, bench/peers.png and the README's bench:peers block (QFFS trainings "
          f"{duration(trainings)})")


if __name__ == "__main__":
    main()
