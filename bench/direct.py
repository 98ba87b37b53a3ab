"""Direct training, the paper's Figure 1 baseline: a network trained as an SNN with surrogate gradients.

    python bench/direct.py --dataset mnist --arch lenet --out runs/paper/direct [--steps 4] [--epochs N] [--samples N]

SpikingJelly's IF neurons (threshold 1, reset by subtraction, the arctan surrogate gradient) in place of every
ReLU of bench/peer_models.py's network (lenet: qffs-train's max-pooling lenet; resnet8: qffs-train's resnet8,
the residual sum into the block's second neuron), the image as analog input at each of T steps, the mean of the
last layer's outputs over T as the logits, cross-entropy; AdamW 1e-3 with a cosine schedule, batch 64, on the
training split less the tenth qffs-train holds out, for as many epochs as qffs-train's schedule for the dataset
and network has in all (float + LSQ + hardware-exact). Then the test split step by step: accuracy at t = 1..T
from the summed outputs, SOPs per sample (bench/paper_peers.SynapseTap: spikes into every conv and linear times
their fan-outs, the analog input one event per nonzero pixel per step). Writes OUT/direct.json; a checkpoint
after every epoch (OUT/direct.checkpoint.pt) lets an interrupted run continue.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from paper_peers import SynapseTap
from peer_models import lenet, resnet8
from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn
from tqdm import tqdm

from qffs_lava.ann.datasets import load_dataset, split_validation
from qffs_lava.ann.train import schedule_for
from qffs_lava.reports import write_json

BATCH, LR, SEED = 64, 1e-3, 0


NETWORKS = {"lenet": lambda classes, channels, side: lenet(classes, channels, "max", side),
            "resnet8": lambda classes, channels, side: resnet8(classes, channels)}


def spiking(model: nn.Module) -> nn.Module:
    """`model` with an IF neuron (surrogate gradient) in place of each ReLU module, in place."""
    for name, child in model.named_children():
        if isinstance(child, nn.ReLU):
            setattr(model, name, neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True))
        else:
            spiking(child)
    return model


def forward(model: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The outputs at t = 1..steps, (steps, batch, classes), from a reset network."""
    functional.reset_net(model)
    return torch.stack([model(x) for _ in range(steps)])


def train(model, train_x, train_y, steps: int, epochs: int, out: Path, log) -> float:
    """Train from the checkpoint in `out` if there is one; the seconds spent training, in all runs."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    batches = (len(train_x) + BATCH - 1) // BATCH
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * batches)
    generator = torch.Generator().manual_seed(SEED)
    checkpoint, first, seconds = out / "direct.checkpoint.pt", 1, 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint)
        for part, target in (("model", model), ("optimizer", optimizer), ("schedule", schedule)):
            target.load_state_dict(state[part])
        generator.set_state(state["generator"])
        first, seconds = state["epoch"] + 1, state["seconds"]
    for epoch in range(first, epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        for start in tqdm(range(0, len(train_x), BATCH), desc=f"direct epoch {epoch}/{epochs}", leave=False,
                          disable=None):
            index = order[start:start + BATCH]
            loss = F.cross_entropy(forward(model, train_x[index], steps).mean(0), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        seconds += time.perf_counter() - started
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule":
                    schedule.state_dict(), "generator": generator.get_state(), "epoch": epoch, "seconds": seconds},
                   out / "direct.checkpoint.partial.pt")
        (out / "direct.checkpoint.partial.pt").rename(checkpoint)
        log(f"direct training epoch {epoch}/{epochs}: last loss {loss.item():.4f}")
    return seconds


def evaluate(model, test_x, test_y, steps: int) -> dict:
    """Accuracy from the outputs summed up to t, and SOPs per sample up to t, for t = 1..steps."""
    model.eval()
    tap = SynapseTap(model, steps, time_in_batch=False, binary=True)
    correct = np.zeros(steps)
    try:
        with torch.no_grad():
            for start in range(0, len(test_x), 1000):
                x, y = test_x[start:start + 1000], test_y[start:start + 1000]
                functional.reset_net(model)
                total = 0
                for t in range(steps):
                    tap.t = t
                    total = total + model(x)
                    correct[t] += float(total.argmax(1).eq(y).sum())
    finally:
        tap.remove()
    n = len(test_x)
    return {"accuracy_by_step": (correct / n).tolist(), "sops_by_step": (np.cumsum(tap.sops) / n).tolist(),
            "samples": n}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--arch", default="lenet", choices=sorted(NETWORKS))
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", required=True, help="the folder for direct.json and the checkpoint")
    parser.add_argument("--steps", type=int, default=4, help="T, in training and test (default 4)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: qffs-train's epochs for the dataset and arch, float + LSQ + hardware-exact")
    parser.add_argument("--samples", type=int, default=None, help="only the first N test images")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # make paper's stop, as a Ctrl-C
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = args.epochs or sum(schedule_for(args.dataset, args.arch)[:3])
    (train_x, train_y), _ = split_validation(*load_dataset(args.dataset, "train", args.data_dir), 0.1)
    test_x, test_y = load_dataset(args.dataset, "test", args.data_dir)
    if args.samples:
        test_x, test_y = test_x[:args.samples], test_y[:args.samples]
    torch.manual_seed(SEED)
    model = spiking(NETWORKS[args.arch](int(train_y.max()) + 1, train_x.shape[1], train_x.shape[-1]))
    seconds = train(model, train_x, train_y, args.steps, epochs, out, lambda text: print(text, flush=True))
    result = {"dataset": args.dataset, "arch": args.arch, "steps": args.steps, "epochs": epochs,
              "train_seconds": seconds, **evaluate(model, test_x, test_y, args.steps)}
    write_json(out / "direct.json", result)
    print(f"directly trained {args.arch} (T = {args.steps}, {epochs} epochs, {seconds:.0f} s): accuracy at t = 1..T "
          + " / ".join(f"{100 * a:.2f}%" for a in result["accuracy_by_step"])
          + f", {result['sops_by_step'][-1]:,.0f} SOPs per sample")


if __name__ == "__main__":
    sys.exit(main())
