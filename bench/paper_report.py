"""`make paper`'s report: bench/paper.json's figures as tables, plots and plain words, beside the paper's numbers.

report(results, folder) writes folder/paper_bits.png, paper_peers.png, paper_direct.png and returns the text of
docs/paper.md; readme_block(results) the README's bench:paper block. The paper's numbers are quoted from its text
(Li, Ma, Furber 2022; ImageNet and CIFAR-10, ResNet-50 and VGG-16), labelled as the paper's.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Dict, List, Optional

from peers import steps_within
from run_bench import duration, pct

SHOWN_STEPS = (1, 2, 4, 8)
PEER_STEPS = (1, 2, 4, 8, 16, 32, 64, 128)
#: points below the QANN that the paper's Figure 3 would call far (its losses are tens of points)
FAR_BELOW = 1.0
TITLES = {("mnist", "lenet"): "MNIST LeNet", ("fashionmnist", "resnet8"): "Fashion-MNIST ResNet-8",
          ("digits", "lenet"): "digits LeNet (--check)", ("digits", "resnet8"): "digits ResNet-8 (--check)"}
#: sweep -> (title, what varies, the paper's figure and what its text says)
SWEEP_TEXT = {
    "hidden": ("hidden layers' bits, 3-bit output", "hidden_bits",
               "The paper's Figure 9(B) (VGG-16, ImageNet, float output) varies the hidden layers' bits; its text "
               "gives no numbers for it. Its Figure 6 (ResNet-50, ImageNet, all layers): \"higher activation "
               "precision ... will offer higher accuracy in the SNNs, while the number of time steps required by the "
               "SNNs is extended\"; 2 bits need \"about 7 time steps to reach the highest accuracy\"."),
    "output": ("output layer's bits, 2-bit hidden", "out_bits",
               "The paper's Figure 8 (ResNet-50, ImageNet, 2-bit hidden): \"higher precision in the output layer "
               "brings higher accuracy but longer latency\"; a 3-bit output is 1.49 points more accurate than a 2-bit "
               "one for one more time step, and needs half the steps of a 4-bit one. Its Figure 7: a full-precision "
               "output improves accuracy and latency (72.91% in 5 time steps with 2-bit hidden layers)."),
    "float": ("full-precision and 3-bit outputs", "hidden_bits",
              "The paper's Figure 7 (ResNet-50, ImageNet): a full-precision output layer \"obviously improves the "
              "inference accuracy and latency\"; 2-bit hidden layers reach 72.91% in 5 time steps, 3-bit ones 74.36% "
              "in 10. With a 3-bit output (its Table 3) the 2-bit ResNet-50 reaches 70.18% in 8 time steps."),
    "all": ("every layer's bits", "hidden_bits",
            "The paper's Figure 9(A) (VGG-16, ImageNet) varies every layer's bits, as its Figure 6 (ResNet-50) does: "
            "accuracy rises and latency grows with the bits (its text gives the trend, not the numbers)."),
}


def title(run: Dict) -> str:
    return TITLES.get((run["dataset"], run["arch"]), f"{run['dataset']} {run['arch']}")


def bits(run: Dict) -> str:
    out = "float" if run["out_bits"] == "float" else f"{run['out_bits']}-bit"
    return f"{run['hidden_bits']}-bit hidden, {out} output"


def at(accuracy_by_step: List[float], t: int) -> float:
    """Accuracy at step t of a run until settled: its last value once every sample has settled."""
    return accuracy_by_step[min(t, len(accuracy_by_step)) - 1]


def seed_zero(runs: List[Dict]) -> List[Dict]:
    return [r for r in runs if r["seed"] == min(x["seed"] for x in runs)]


def sweep_runs(runs: List[Dict], network, points) -> List[Dict]:
    """The seed-0 runs of a network at the sweep's (hidden, output) points, in the sweep's order."""
    found = {(r["hidden_bits"], r["out_bits"]): r for r in seed_zero(runs)
             if (r["dataset"], r["arch"]) == network}
    return [found[p] for p in points if p in found]


# Tables -------------------------------------------------------------------------------------------------------


def bits_table(runs: List[Dict]) -> str:
    steps = " / ".join(str(t) for t in SHOWN_STEPS)
    lines = [f"| bits | float ANN | QANN | SNN at t = {steps} | SNN settled | settled: mean / p99 | decided: mean / "
             "p99 | SOPs per sample | without noise handling, at the same T (against the QANN) |", "|---" * 9 + "|"]
    for r in runs:
        off = r["noise_off"]["accuracy_by_step"][-1]
        lines.append(
            f"| {bits(r)} | {pct(r['float_accuracy'])} | {pct(r['qann_accuracy'])} | "
            + " / ".join(pct(at(r["accuracy_by_step"], t)) for t in SHOWN_STEPS)
            + f" | {pct(r['accuracy_by_step'][-1])} (t = {r['steps']}) | {r['settled_mean']:.2f} / {r['settled_p99']} "
            f"| {r['decided_mean']:.2f} / {r['decided_p99']} | {r['sops_per_sample'] / 1e3:,.0f} k | {pct(off)} "
            f"({100 * (off - r['qann_accuracy']):+.2f}) |")
    return "\n".join(lines)


def spread(values: List[float], scale: float = 100, unit: str = "%") -> str:
    """The mean, and min-max where there are several, of values (scaled: 100 for percentages)."""
    v = [scale * x for x in values]
    mean = f"{statistics.mean(v):.2f}{unit}"
    return mean if len(v) == 1 else f"{mean} ({min(v):.2f}-{max(v):.2f}{unit})"


def seeds_table(runs: List[Dict]) -> str:
    groups: Dict[tuple, List[Dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["arch"], r["hidden_bits"], r["out_bits"]), []).append(r)
    lines = ["| network | bits | seeds | float ANN | QANN | SNN at t = 4 | SNN settled | settled mean (steps) |",
             "|---|---|---|---|---|---|---|---|"]
    for group in (g for g in groups.values() if len(g) > 1):
        lines.append(f"| {title(group[0])} | {bits(group[0])} | {', '.join(str(r['seed']) for r in group)} | "
                     f"{spread([r['float_accuracy'] for r in group])} | "
                     f"{spread([r['qann_accuracy'] for r in group])} | "
                     f"{spread([at(r['accuracy_by_step'], 4) for r in group])} | "
                     f"{spread([r['accuracy_by_step'][-1] for r in group])} | "
                     f"{spread([r['settled_mean'] for r in group], 1, '')} |")
    return "\n".join(lines) if len(lines) > 2 else NOT_YET


def peers_table(peers: List[Dict]) -> str:
    lines = ["| converter | " + " | ".join(f"T = {t}" for t in PEER_STEPS)
             + " | T within 1 point of the float ANN | SOPs per sample there |", "|---" * (len(PEER_STEPS) + 3) + "|"]
    for p in peers:
        if "error" in p:
            lines.append(f"| {p['converter']} | {p['error']} |" + " |" * (len(PEER_STEPS) + 1))
            continue
        acc = p["accuracy_by_step"]
        t = steps_within(acc, p["float_accuracy"], 1.0)
        cells = [pct(at(acc, s)) if s <= len(acc) or p["converter"] == "QFFS" else "-" for s in PEER_STEPS]
        sops = f"{at(p['sops_by_step'], t) / 1e6:.2f} M" if t else "-"
        never = (f"never: settled at {pct(acc[-1])} by T = {len(acc)}" if p["converter"] == "QFFS"
                 else f"not by T = {len(acc)}")
        lines.append(f"| {p['converter']} | " + " | ".join(cells) + f" | {t or never} | {sops} |")
    return "\n".join(lines)


def qffs_reference(runs: List[Dict], direct: Dict) -> List[Dict]:
    """QFFS's seeded 2-bit hidden, 3-bit output runs of the network `direct` trained."""
    return [r for r in runs if (r["dataset"], r["arch"], r["hidden_bits"], r["out_bits"])
            == (direct["dataset"], direct["arch"], 2, 3)]


def trained_here(runs: List[Dict]) -> List[Dict]:
    """The runs make paper trained itself (one thread beside another command, as direct training ran)."""
    return [r for r in runs if r.get("train_peak_memory_mib")]


def reused(runs: List[Dict]) -> List[Dict]:
    """The runs whose model make paper took from make bench (trained there, under other loads)."""
    return [r for r in runs if not r.get("train_peak_memory_mib")]


def direct_table(directs: List[Dict], runs: List[Dict]) -> str:
    steps = directs[0]["steps"]
    lines = [f"| network | method | accuracy at t = {steps} | accuracy settled (mean settle step) | SOPs per sample "
             f"at t = {steps} / settled | training time | peak memory of the training command |",
             "|---|---|---|---|---|---|---|"]
    for direct in directs:
        lines.append(f"| {title(direct)} | direct training (SpikingJelly IF neurons, surrogate gradients, "
                     f"T = {direct['steps']}, {direct['epochs']} epochs, one seed) | "
                     f"{pct(direct['accuracy_by_step'][-1])} | - | {direct['sops_by_step'][-1] / 1e3:,.0f} k / - | "
                     f"{duration(direct['train_seconds'])} | {direct['peak_memory_mib']:,.0f} MiB |")
        qffs = qffs_reference(runs, direct)
        if not qffs:
            lines.append(f"| {title(direct)} | QFFS (2-bit hidden, 3-bit output) | {NOT_YET} | | | | |")
            continue
        trained, seeds = trained_here(qffs), ", ".join(str(r["seed"]) for r in qffs)
        time = duration(statistics.mean(r["train_seconds"] for r in trained)) if trained else "-"
        memory = f"{statistics.mean(r['train_peak_memory_mib'] for r in trained):,.0f} MiB" if trained else "-"
        lines.append(
            f"| {title(direct)} | QFFS (2-bit hidden, 3-bit output; "
            f"{f'seeds {seeds}: mean' if len(qffs) > 1 else f'seed {seeds}'}) | "
            f"{spread([at(r['accuracy_by_step'], steps) for r in qffs])} | "
            f"{spread([r['accuracy_by_step'][-1] for r in qffs])} "
            f"({statistics.mean(r['settled_mean'] for r in qffs):.2f}) | "
            f"{statistics.mean(at(r['sops_by_step'], steps) for r in qffs) / 1e3:,.0f} k / "
            f"{statistics.mean(r['sops_per_sample'] for r in qffs) / 1e3:,.0f} k | {time} | {memory} |")
    return "\n".join(lines)


# Words --------------------------------------------------------------------------------------------------------


def trend(runs: List[Dict]) -> str:
    """How QANN accuracy, the SNN at t = 4 and the mean settle step move along a sweep, in words."""
    arrow = " -> ".join
    return (f"Along the sweep ({arrow(short(r) for r in runs)}, hidden/output bits) the QANN goes "
            f"{arrow(pct(r['qann_accuracy']) for r in runs)}, the SNN at t = 4 "
            f"{arrow(pct(at(r['accuracy_by_step'], 4)) for r in runs)} and the mean settle step "
            f"{arrow(format(r['settled_mean'], '.2f') for r in runs)}.")


def short(run: Dict) -> str:
    return f"{run['hidden_bits']}/{run['out_bits']}"


def seed_range(runs: List[Dict], network) -> Optional[float]:
    """The widest spread (largest minus smallest, in points) of QANN accuracy over the seeds of one of the network's
    configurations: how far seeds alone move it. None until some configuration has two seeds measured."""
    groups: Dict[tuple, List[float]] = {}
    for r in runs:
        if (r["dataset"], r["arch"]) == network:
            groups.setdefault((r["hidden_bits"], r["out_bits"]), []).append(r["qann_accuracy"])
    ranges = [100 * (max(v) - min(v)) for v in groups.values() if len(v) > 1]
    return max(ranges) if ranges else None


def shape(runs: List[Dict], key: str, noise: Optional[float]) -> str:
    """Whether the sweep's integer bits have the paper's shape (accuracy up and latency longer with more bits), and
    why not where they do not, with `noise` the seeds' spread (seed_range); a float output against the integer ones
    (the paper's Figure 7)."""
    ints = [r for r in runs if r["out_bits"] != "float"]
    said = []
    if len(ints) > 1:
        gain = 100 * (ints[-1]["qann_accuracy"] - ints[0]["qann_accuracy"])
        longer = ints[-1]["settled_mean"] > ints[0]["settled_mean"]
        steps = [(f"{short(a)} -> {short(b)}", 100 * (b["qann_accuracy"] - a["qann_accuracy"]))
                 for a, b in zip(ints, ints[1:])]
        if not longer:
            said.append(f"Not the paper's shape: the latency does not grow ({gain:+.2f} points of QANN accuracy).")
        elif noise is None:
            said.append(f"Latency grows as in the paper; QANN accuracy moves {gain:+.2f} points from the first to the "
                        "last, and whether that is more than seeds alone move it is not measured yet.")
        else:
            real = [(name, g) for name, g in steps if abs(g) > noise]
            step_words = (f"Step by step the QANN moves {', '.join(f'{name} {g:+.2f}' for name, g in steps)} points "
                          f"and seeds alone move it up to {noise:.2f}, so "
                          + ("no single step is a difference this run can tell" if not real else
                             "every step is one this run can tell" if len(real) == len(steps) else
                             f"only {', '.join(name for name, _ in real)} "
                             f"{'is a difference' if len(real) == 1 else 'are differences'} this run can tell") + ".")
            if gain > noise and all(g > 0 for _, g in real):
                last = ints[len(steps) - steps[::-1].index(real[-1])] if real else None
                flat = (f" Beyond {short(last)} the accuracy is flat within the seeds' spread here, where the paper's "
                        f"ImageNet networks gain with every bit: the {short(last)} QANN is already "
                        f"{100 * (last['float_accuracy'] - last['qann_accuracy']):.2f} points from the float ANN's "
                        f"{pct(last['float_accuracy'])}, which leaves more bits little to recover."
                        if real and real[-1] != steps[-1] else "")
                said.append(f"This is the paper's shape: more bits, more accuracy ({gain:+.2f} points from the first "
                            f"to the last, more than the {noise:.2f} seeds alone move it) and a longer latency. "
                            + step_words + flat)
            elif any(g < 0 for _, g in real):
                said.append(f"Not the paper's shape: more bits lose accuracy somewhere along the sweep. {step_words}")
            else:
                said.append(f"Latency grows as in the paper, but accuracy does not rise by more than seeds alone move "
                            f"it ({gain:+.2f} points, against a spread of {noise:.2f} over seeds): {title(ints[0])} "
                            f"leaves little for more bits to add (the {ints[0][key]}-bit network's QANN already has "
                            f"{pct(ints[0]['qann_accuracy'])}), where the paper's ImageNet networks gain points with "
                            f"every bit. {step_words}")
        said.append("A b-bit layer takes its input and bias over 2^b - 1 steps and sends at most 2^b - 1 spikes, so "
                    "each bit roughly doubles the steps it needs.")
    floats = [r for r in runs if r["out_bits"] == "float"]
    for f in floats:
        same = [r for r in ints if r["hidden_bits"] == f["hidden_bits"]]
        if same:
            q = same[-1]
            gain, sooner = 100 * (f["qann_accuracy"] - q["qann_accuracy"]), f["settled_mean"] < q["settled_mean"]
            within = noise is not None and abs(gain) <= noise
            accuracy = (f"as accurate ({gain:+.2f} points, within the {noise:.2f} seeds alone move it)" if within
                        else f"{'more' if gain > 0 else 'less'} accurate ({gain:+.2f} points)")
            said.append(f"The float output against the {q['out_bits']}-bit one ({f['hidden_bits']}-bit hidden): QANN "
                        f"{pct(f['qann_accuracy'])} against {pct(q['qann_accuracy'])}, settled at "
                        f"{f['settled_mean']:.2f} against {q['settled_mean']:.2f} steps on average: {accuracy} and "
                        + ("sooner" if sooner else "not sooner")
                        + (", as in the paper's Figure 7." if gain > 0 and not within and sooner
                           else "; the paper's Figure 7 found it both more accurate and sooner.")
                        + " A read-out sends no spikes, so the network settles when its last hidden layer does.")
    if len(floats) > 1:
        a, b = floats[0], floats[-1]
        gain = 100 * (b["qann_accuracy"] - a["qann_accuracy"])
        told = ("" if noise is None else f", {'within' if abs(gain) <= noise else 'beyond'} the {noise:.2f} seeds "
                "alone move it,")
        said.append(f"With float outputs, {b['hidden_bits']}-bit hidden layers against {a['hidden_bits']}-bit: "
                    f"{gain:+.2f} points{told} and "
                    f"{b['settled_mean'] / a['settled_mean']:.1f} times the mean settle step (the paper's Figure 7: "
                    "+1.45 points and twice the steps, 72.91% in 5 against 74.36% in 10).")
    return " ".join(said)


def noise_words(runs: List[Dict]) -> str:
    """The SNN without negative spikes and the count bound against its QANN (Figure 3), and with them."""
    gaps = [(r, r["noise_off"]["accuracy_by_step"][-1] - r["qann_accuracy"]) for r in runs]
    worst = min(gaps, key=lambda g: g[1])
    largest = f"the largest loss is {bits(worst[0])}'s." if worst[1] < 0 else "none is below it."
    exact = max(abs(r["accuracy_by_step"][-1] - r["qann_accuracy"]) for r in runs)
    far = -100 * worst[1] > FAR_BELOW
    paper = (f"{'As in' if far else 'Unlike'} the paper's Figure 3 (VGG-16 on ImageNet, where the SNN without them is "
             "far below its QANN at every precision above 1 bit), " + (
                 f"this network loses up to {-100 * worst[1]:.2f} points without them." if far else
                 f"this network loses at most {-100 * worst[1]:.2f} points without them: the occasional noise costs it "
                 "little accuracy." if worst[1] < 0 else "this network loses nothing without them."))
    return (f"Without negative spikes and the count bound (the paper's Figure 3 question) the SNN at the same T is "
            f"{', '.join(f'{100 * g:+.2f}' for _, g in gaps)} points from its QANN; {largest} {paper} With them "
            f"every configuration's settled SNN equals its QANN to {100 * exact:.2f} points.")


# Plots --------------------------------------------------------------------------------------------------------


def plot_bits(results: Dict, sweeps: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(network, name, points) for network, named in sweeps.items() for name, points in named.items()]
    fig, axes = plt.subplots(3, len(panels), figsize=(4.2 * len(panels), 10.5), constrained_layout=True,
                             squeeze=False)
    for column, (network, name, points) in enumerate(panels):
        runs = sweep_runs(results["runs"], network, points)
        top, middle, bottom = axes[0][column], axes[1][column], axes[2][column]
        steps = max(16, max(len(r["accuracy_by_step"]) for r in runs)) if runs else 16
        for r in runs:
            line, = top.plot(range(1, steps + 1), [100 * at(r["accuracy_by_step"], t) for t in range(1, steps + 1)],
                             marker="o", markersize=2, label=bits(r))
            off = r["noise_off"]["accuracy_by_step"]
            top.plot(range(1, len(off) + 1), [100 * a for a in off], linestyle=":",
                     color=line.get_color())
            middle.scatter(r["settled_mean"], 100 * r["accuracy_by_step"][-1], color=line.get_color())
            middle.annotate(short(r), (r["settled_mean"], 100 * r["accuracy_by_step"][-1]),
                            fontsize=8, xytext=(3, 3), textcoords="offset points")
        x = range(len(runs))
        bottom.bar([i - 0.2 for i in x], [100 * r["qann_accuracy"] for r in runs], 0.4, label="QANN")
        bottom.bar([i + 0.2 for i in x], [100 * r["noise_off"]["accuracy_by_step"][-1] for r in runs], 0.4,
                   label="SNN without noise handling, same T")
        bottom.set_xticks(list(x), [short(r) for r in runs])
        low = min([100 * r["noise_off"]["accuracy_by_step"][-1] for r in runs] + [90]) if runs else 0
        bottom.set_ylim(max(0, low - 5), 100)
        top.set(title=f"{TITLES.get(network, network)}:\n{SWEEP_TEXT[name][0]}", xlabel="time step t (synchronous)",
                ylabel="accuracy (%)")
        top.set_ylim(max(0, min(top.get_ylim()[0], 90)), 100)
        middle.set(xlabel="mean settle step", ylabel="settled SNN accuracy (%)", title="accuracy against latency")
        bottom.set(xlabel="hidden / output bits", ylabel="accuracy (%)", title="the noise handling (Figure 3)")
        if runs:
            top.legend(fontsize=7, title="dotted: without noise handling", title_fontsize=7)
            bottom.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
        else:
            top.text(0.5, 0.5, "not measured yet", transform=top.transAxes, ha="center")
        for ax in (top, middle, bottom):
            ax.grid(alpha=0.3)
    fig.suptitle("Bit precision: QFFS SNN accuracy and latency (torch simulator, full test splits, seed 0)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_peers(peers: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for p in peers:
        if "accuracy_by_step" not in p:
            continue
        steps = range(1, len(p["accuracy_by_step"]) + 1)
        left.plot(steps, [100 * (p["float_accuracy"] - a) for a in p["accuracy_by_step"]], label=p["converter"])
        right.plot(steps, p["sops_by_step"], label=p["converter"])
    left.set(xscale="log", yscale="symlog", xlabel="time steps T", ylabel="float ANN accuracy minus SNN's (points)",
             title="conversion loss against latency (the paper's Figure 5)")
    right.set(xscale="log", yscale="log", xlabel="time steps T", ylabel="SOPs per sample (cumulative)")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"Converters on one float {title(peers[0])} ({peers[0].get('samples', '?')} test images)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_direct(directs: List[Dict], runs: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(directs), figsize=(6.5 * len(directs), 4.2), constrained_layout=True,
                             squeeze=False)
    for ax, direct in zip(axes[0], directs):
        ax.plot(range(1, direct["steps"] + 1), [100 * a for a in direct["accuracy_by_step"]], marker="s",
                label=f"direct training (T = {direct['steps']})")
        for r in runs:
            if (r["dataset"], r["arch"], r["hidden_bits"]) == (direct["dataset"], direct["arch"], 2) \
                    and r["out_bits"] in (3, "float"):
                steps = range(1, max(len(r["accuracy_by_step"]), 8) + 1)
                ax.plot(steps, [100 * at(r["accuracy_by_step"], t) for t in steps], alpha=0.7, marker="o",
                        markersize=2, label=f"QFFS {bits(r)}, seed {r['seed']}")
        ax.set(xlabel="time step t", ylabel="accuracy (%)", title=f"{title(direct)}: direct training against QFFS")
        ax.set_ylim(max(0, min(ax.get_ylim()[0], 90)), 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Direct training against conversion (the paper's Figure 1)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


# The document -------------------------------------------------------------------------------------------------


NOT_YET = "Not measured yet: make paper has not reached it (a second make paper continues where this one stopped)."


def report(results: Dict, sweeps: Dict, folder: Path, images: str) -> str:
    """docs/paper.md's text; writes its plots into `folder` (named in the text as `images`/NAME). Parts make paper
    has not finished yet (results["expected"] configurations, "peers" or "direct" empty) are said to be so."""
    runs, peers, directs = results["runs"], results["peers"], results["direct"]
    done = f"{len(runs)} of {results['expected']} configurations"
    parts = [f"Measured {results['date']} by `{results['command']}` ({results['machine']}; commands of one thread, "
             f"two at a time; {done}{'' if len(runs) == results['expected'] else ' so far'}). Every accuracy is on "
             "the whole test split unless said. The paper's numbers are quoted from its text and labelled so; it "
             "measured ResNet-50 and VGG-16 on ImageNet and CIFAR-10, which this machine cannot train, so its numbers "
             "are the shape to compare with, not a target."]
    parts.append("## 1. Bit precision (the paper's Figures 6, 8, 9 and 3)\n\nEach configuration: `qffs-train` "
                 "with `--act-bits` and `--out-bits` (the dataset's schedule, seed 0), `qffs-export`, `qffs-run "
                 "--steps auto --stats` (every sample until it settles; docs/latency.md) and `qffs-run --ablate "
                 "negative-spikes --ablate count-bound` for as many steps, 16 at least (the occasional noise not "
                 "handled; such a network need not settle). \"Settled\": the accuracy once every sample has settled, "
                 "at the T the run reached.")
    if runs:
        plot_bits(results, sweeps, folder / "paper_bits.png")
        parts[-1] += f"\n\n![bit precision]({images}/paper_bits.png)"
    for network, named in sweeps.items():
        for name, points in named.items():
            heading, key, paper = SWEEP_TEXT[name]
            found = sweep_runs(runs, network, points)
            words = (" ".join(w for w in (trend(found), shape(found, key, seed_range(runs, network)),
                                        noise_words(found)) if w) if found else "")
            ours = f"{bits_table(found)}\n\n**Ours.** {words}" if found else NOT_YET
            missing = len(points) - len(found)
            if found and missing:
                ours += f" ({missing} of its {len(points)} configurations not measured yet.)"
            parts.append(f"### {TITLES.get(network, network)}: {heading}\n\n{ours}\n\n**The paper.** {paper}")
    parts.append("### Seeds\n\nThe same command with `--seed 1` and `--seed 2`: the mean and, in brackets, the "
                 "smallest and largest over the seeds. A difference between two configurations smaller than "
                 f"these ranges is not one this run can tell.\n\n{seeds_table(runs)}")
    parts.append("## 2. Other converters on the residual network (the paper's Figure 5)\n\n" + (
        peers_section(peers, folder, images) if peers else NOT_YET)
        + "\n\n**The paper.** \"Our proposed quantization framework for fast SNNs only needs 13 time steps ... to "
        "reach lossless accuracy, while other methods need at least 500 time steps\" (ResNet-50 on ImageNet).")
    parts.append("## 3. Direct training (the paper's Figure 1)\n\n" + (
        direct_section(directs, runs, folder, images) if directs else NOT_YET)
        + "\n\n**The paper.** QFFS \"pushes the latency, when using ANN-to-SNN conversion, to a level similar to "
        "that using direct training\" with \"about 2.5% higher accuracy than the best accuracy achieved by direct "
        "training\", and conversion has \"lower memory budget and shorter training time\" (its Figure 1, "
        "CIFAR-10 and ImageNet).")
    parts.append(f"`bench/paper.json` holds every figure: `runs` (one per configuration and seed), `peers` (one per "
                 f"converter) and `direct` (one per network). The commands took "
                 f"{duration(command_seconds(results))} in all (their wall times summed; two ran at a time"
                 + (", and make bench's reused models count with their training time" if reused(runs) else "") + ").")
    return "\n\n".join(parts) + "\n"


def peers_section(peers: List[Dict], folder: Path, images: str) -> str:
    plot_peers(peers, folder / "paper_peers.png")
    return (f"One float ResNet-8 (bench/peer_models.py, plain PyTorch, {pct(peers[0]['float_accuracy'])} on these "
            "images), converted by SpikingJelly's ann2snn (mode 99.9%) and by sinabs' from_model and run with the "
            "image as analog input at every step; QFFS from the same float weights (`qffs-train --arch "
            "bench/peer_models.py:resnet8 --init float.pt --float-epochs 0`: the LSQ and hardware-exact epochs of "
            "qffs-train's schedule for a user's own model on the dataset), run with `--steps auto`. The first "
            f"{peers[0].get('samples', '?')} test images (the peers' 128-step runs over the whole split would take "
            f"hours here).\n\n{peers_table(peers)}\n\n{qffs_words(peers)}\n\n![converters]({images}/paper_peers.png)")


def qffs_words(peers: List[Dict]) -> str:
    """QFFS's SNN against its own target, the QANN, and what the quantization cost against the float network."""
    qffs = next((p for p in peers if p["converter"] == "QFFS" and "qann_accuracy" in p), None)
    if qffs is None:
        return ""
    return (f"QFFS's SNN converges to its QANN ({pct(qffs['qann_accuracy'])}), not to the float network: its output "
            f"equals the QANN's on every sample from T = {qffs['equal_from_step']}, and every sample has settled by "
            f"T = {qffs['steps']}, with "
            f"{qffs['sops_by_step'][-1] / 1e6:.2f} M SOPs per sample. The conversion loses nothing; the "
            f"quantization (2-bit activations) costs {100 * (qffs['float_accuracy'] - qffs['qann_accuracy']):.2f} "
            "points against the float network, which the peers, converting the float network itself, approach "
            "only after more steps: " + "; ".join(peer_words(p) for p in peers if p is not qffs) + ". As in the "
            "paper's Figure 5, the rate-coded conversion (SpikingJelly's IF neurons, one spike a step) needs tens "
            "to hundreds of steps; sinabs' neurons send several spikes in one step (a graded message), so it needs "
            "fewer steps but more synaptic operations.")


def peer_words(peer: Dict) -> str:
    if "accuracy_by_step" not in peer:
        return f"{peer['converter']} failed ({peer['error']})"
    t = steps_within(peer["accuracy_by_step"], peer["float_accuracy"], 1.0)
    if t is None:
        return f"{peer['converter']} not within 1 point by T = {len(peer['accuracy_by_step'])}"
    return (f"{peer['converter']} within 1 point of the float network from T = {t}, with "
            f"{at(peer['sops_by_step'], t) / 1e6:.2f} M SOPs per sample by then")


def direct_section(directs: List[Dict], runs: List[Dict], folder: Path, images: str) -> str:
    plot_direct(directs, runs, folder / "paper_direct.png")
    names = " and the ".join(title(d) for d in directs)
    return (f"The {names} trained directly as {'SNNs' if len(directs) > 1 else 'an SNN'} (bench/direct.py): "
            "SpikingJelly's IF neurons with the arctan surrogate gradient in place of every ReLU of the same network, "
            f"T = {directs[0]['steps']}, as many epochs as QFFS's three phases have in all for that network, the same "
            "optimizer; against QFFS's seeded runs of the same architecture. Training time and peak memory (the "
            "training command's largest resident set): of the runs make paper trained itself, one thread each beside "
            "another command; direct training likewise, or alone where make paper had nothing else left to run (which "
            "can only favour it)"
            + (" (make bench's reused models trained under other loads)" if reused(runs) else "")
            + f".\n\n{direct_table(directs, runs)}"
            f"\n\n{' '.join(direct_words(d, runs) for d in directs)}\n\n"
            f"![direct training]({images}/paper_direct.png)")


def direct_words(direct: Dict, runs: List[Dict]) -> str:
    """QFFS at the directly trained network's T and settled, against it: accuracy, SOPs, training time, memory."""
    qffs, steps = qffs_reference(runs, direct), direct["steps"]
    if not qffs:
        return ""
    mean = statistics.mean
    theirs = direct["accuracy_by_step"][-1]
    settled = mean(r["accuracy_by_step"][-1] for r in qffs)
    seeds = [at(r["accuracy_by_step"], steps) for r in qffs]
    low, high = min(seeds), max(seeds)
    ours, where = mean(seeds), ("within the seeds' range" if low <= theirs <= high
             else f"{'below' if theirs < low else 'above'} every seed's")
    said = [f"{title(direct)}: at t = {steps} direct training has {pct(theirs)}, QFFS {pct(ours)} on average "
            f"({100 * (ours - theirs):+.2f} points; the directly trained network is {where}); settled, QFFS has "
            f"{pct(settled)} ({100 * (settled - theirs):+.2f}) at {mean(r['settled_mean'] for r in qffs):.2f} steps on "
            f"average, with {mean(r['sops_per_sample'] for r in qffs) / direct['sops_by_step'][-1]:.2f} times the "
            f"SOPs direct training spends in its {steps} steps."]
    floats = [r for r in runs if (r["dataset"], r["arch"], r["hidden_bits"], r["out_bits"])
              == (direct["dataset"], direct["arch"], 2, "float")]
    if floats:
        said.append(f"With a float output (2-bit hidden) QFFS has "
                    f"{pct(mean(at(r['accuracy_by_step'], steps) for r in floats))} at t = {steps} and "
                    f"{pct(mean(r['accuracy_by_step'][-1] for r in floats))} settled at "
                    f"{mean(r['settled_mean'] for r in floats):.2f} steps on average (seeds "
                    f"{', '.join(str(r['seed']) for r in floats)}).")
    trained = trained_here(qffs)
    if trained:
        said.append(f"QFFS trained in {mean(r['train_seconds'] for r in trained) / direct['train_seconds']:.2f} "
                    f"times direct training's time with "
                    f"{mean(r['train_peak_memory_mib'] for r in trained) / direct['peak_memory_mib']:.2f} times its "
                    "peak memory.")
    return " ".join(said)


def command_seconds(results: Dict) -> float:
    """Every command's wall time, summed: trainings, exports and runs of the configurations, the peers, direct."""
    runs = sum(sum(v for k, v in r["seconds"].items() if k != "measured") for r in results["runs"])
    return runs + results["peers_seconds"] + sum(d["seconds"] for d in results["direct"])


def readme_block(results: Dict, sweeps: Dict) -> str:
    """The README's summary: the headline of each part measured so far, and where the rest is."""
    said = [f"Measured {results['date']} by `{results['command']}` ({results['machine']}; "
            f"{duration(command_seconds(results))} of commands): {len(results['runs'])} of {results['expected']} "
            "trained configurations" + ("" if len(results["runs"]) == results["expected"] else " so far") + "."]
    lenet = sweep_runs(results["runs"], next(iter(sweeps)), next(iter(sweeps.values()))["hidden"])
    if lenet:
        said.append(f"{title(lenet[0])} with a 3-bit output, hidden bits "
                    f"{', '.join(str(r['hidden_bits']) for r in lenet)}: a settled SNN of "
                    f"{', '.join(pct(r['accuracy_by_step'][-1]) for r in lenet)}, settled on average at step "
                    f"{', '.join(format(r['settled_mean'], '.2f') for r in lenet)}.")
    converters = [p for p in results["peers"] if "accuracy_by_step" in p]
    if converters:
        said.append(f"One float {title(converters[0])} converted: " + "; ".join(
            f"{p['converter']} {pct(at(p['accuracy_by_step'], 8))} at T = 8" for p in converters) + ".")
    if results["direct"]:
        said.append(f"Trained directly as SNNs (T = {results['direct'][0]['steps']}): " + "; ".join(
            f"the {title(d)} {pct(d['accuracy_by_step'][-1])}" for d in results["direct"]) + ".")
    said.append("Every table and plot, beside the paper's numbers: [docs/paper.md](docs/paper.md).")
    return " ".join(said)
