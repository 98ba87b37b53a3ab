"""`make bench`: measure every figure the README states, with the commands it shows, and write them into it.

Runs the README's commands in runs/bench/ (data/ is linked there, so the commands read as
a user types them): the digits MLP, the MNIST LeNet and the Fashion-MNIST ResNet and
LeNet are trained, exported and run on the torch backend over their whole test splits,
MNIST and Fashion-MNIST also on the Lava backend; then the speed benchmarks, a run on a
busy machine, `make demo` and the test suite. Every README block between
`<!-- bench:NAME -->` and `<!-- /bench:NAME -->` is rewritten from these measurements,
and bench/results.json keeps them all with the date, the machine and the thread count;
bench/mnist_lenet.png and bench/fashionmnist_resnet8.png are the accuracy curves.
About 80 minutes on a 2-core CPU, the trainings most of it. Models already in
runs/bench/ are reused (delete them to train again).
"""

import argparse
import datetime
import json
import multiprocessing
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import lava_neuron_speed
import lava_speed
import sim_speed
import torch

from qffs_lava.ann.checkpoint import phase_seconds, read_metrics
from qffs_lava.ann.datasets import load_dataset
from qffs_lava.ann.modelfile import read_model_file
from qffs_lava.reports import plot_accuracy, write_json
from qffs_lava.results import RunResult
from qffs_lava.ir.netfile import read_net

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "bench"
BIN = Path(sys.executable).parent
README = ROOT / "README.md"
STEPS = 16
#: The models the README shows, trained with its commands: name -> (dataset, architecture).
MODELS = {"digits_mlp": ("digits", "mlp"), "mnist_lenet": ("mnist", "lenet"),
          "fashionmnist_resnet8": ("fashionmnist", "resnet8"), "fashionmnist_lenet": ("fashionmnist", "lenet")}


def run(command: str, cwd: Path = RUNS) -> dict:
    """Run one command as the README shows it; its output and wall time. Stops the bench if it fails."""
    args = shlex.split(command)
    executable = BIN / args[0]
    args[0] = str(executable) if executable.exists() else args[0]
    print(f"$ {command}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"`{command}` failed with code {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return {"command": command, "seconds": seconds, "stdout": result.stdout}


def model_figures(name: str, dataset: str, arch: str, options: str = "") -> dict:
    """Train (unless runs/bench/NAME.pt exists; `options` added to the README's command) and export; the
    accuracies the two commands measured."""
    train = f"qffs-train --dataset {dataset} --arch {arch} --out {name}.pt --threads 2 --quiet{options}"
    figures = {"dataset": dataset, "arch": arch, "train_command": train}
    if not (RUNS / f"{name}.pt").exists():
        run(train)
    content = read_model_file(RUNS / f"{name}.pt")
    seconds = phase_seconds(read_metrics(RUNS / f"{name}.metrics.jsonl"))
    accuracy = content["accuracy"]
    figures.update(float_accuracy=accuracy["float"], lsq_accuracy=accuracy["lsq"],
                   integer_before=accuracy["integer_before"], agreement_before=accuracy["agreement_before"],
                   train_seconds=sum(seconds.values()), phase_seconds=seconds,
                   hardware_epochs=content["train"]["hardware_epochs"], train_threads=content["train"]["threads"],
                   validation=accuracy["validation"], validation_images=content["train"]["validation_images"],
                   hardware_epoch_kept=content["train"]["hardware_epoch_kept"])
    exported = run(f"qffs-export {name}.pt {name}.h5")
    meta = read_net(RUNS / f"{name}.h5").meta
    figures.update(export_command=exported["command"], export_seconds=exported["seconds"],
                   **{k: meta[k] for k in ("qann_forward", "qann_accuracy", "int_qann_accuracy", "qann_agreement",
                                           "preactivation_max_difference", "count_mismatch", "fidelity_samples")})
    return figures


def run_figures(name: str, dataset: str, backend: str = "torch", samples: int = 0) -> dict:
    """qffs-run on the test split (or its first `samples`); the report without per-sample lists."""
    limit = f" --samples {samples}" if samples else ""
    choice = f" --backend {backend}" if backend != "torch" else ""
    out = f"{name}_{backend}.json"
    result = run(f"qffs-run {name}.h5 --dataset {dataset}{limit} --steps {STEPS}{choice} --json {out} --quiet")
    report = json.loads((RUNS / out).read_text())
    per_sample = ("output_counts", "labels", "predictions", "qann_predictions")
    figures = {k: v for k, v in report.items() if k not in per_sample}
    figures.update(command=result["command"], wall_seconds=result["seconds"])
    return figures


def same_predictions(name: str) -> int:
    """How many of the Lava run's predictions equal the torch run's on the same samples."""
    lava, torch_run = (json.loads((RUNS / f"{name}_{backend}.json").read_text())["predictions"]
                       for backend in ("lava", "torch"))
    return sum(a == b for a, b in zip(lava, torch_run))


def busy_machine(name: str, dataset: str) -> dict:
    """The torch backend on 2000 samples while another process holds a core: default threads against one."""
    spinner = multiprocessing.Process(target=_spin, daemon=True)
    spinner.start()
    try:
        figures = {}
        for label, option in (("default", ""), ("one", " --threads 1")):
            result = run(f"qffs-run {name}.h5 --dataset {dataset} --samples 2000 --steps {STEPS}{option} --quiet")
            figures[label] = {"command": result["command"], "seconds": result["seconds"]}
    finally:
        spinner.terminate()
    return figures


def _spin():
    while True:
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-tests", action="store_true", help="do not time the test suite")
    parser.add_argument("--readme-only", action="store_true",
                        help="measure nothing: rewrite the README's figures from bench/results.json")
    args = parser.parse_args()
    if args.readme_only:
        update_readme(json.loads((ROOT / "bench" / "results.json").read_text()))
        return
    RUNS.mkdir(parents=True, exist_ok=True)
    if not (RUNS / "data").exists():
        (RUNS / "data").symlink_to(ROOT / "data")
    results = {"date": datetime.date.today().isoformat(),
               "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} cores, Python "
                          f"{platform.python_version()}, torch {torch.__version__}",
               "threads": torch.get_num_threads()}
    for name, (dataset, arch) in MODELS.items():
        results[name] = model_figures(name, dataset, arch)
        results[name]["torch"] = run_figures(name, dataset)
    for name, dataset in (("digits_mlp", "digits"), ("mnist_lenet", "mnist"), ("fashionmnist_resnet8", "fashionmnist")):
        results[name]["lava"] = run_figures(name, dataset, "lava")  # the whole test split
        results[name]["lava"]["same_as_torch"] = same_predictions(name)
    for name, dataset in (("mnist_lenet", "mnist"), ("fashionmnist_resnet8", "fashionmnist")):
        x, _ = load_dataset(dataset, "test", ROOT / "data")
        print(f"$ python bench/sim_speed.py {name}.h5 --dataset {dataset}", flush=True)
        results[name]["sim_speed"] = sim_speed.measure(read_net(RUNS / f"{name}.h5"), x[:256], STEPS)
    print("$ python bench/lava_neuron_speed.py", flush=True)
    results["lava_neuron_speed"] = lava_neuron_speed.measure()
    print("$ python bench/lava_speed.py mnist_lenet.h5 --dataset mnist --samples 200 --workers 2", flush=True)
    x, _ = load_dataset("mnist", "test", ROOT / "data")
    results["lava_speed"] = lava_speed.measure(read_net(RUNS / "mnist_lenet.h5"), x[:200].numpy(), STEPS, workers=2)
    results["busy_machine"] = busy_machine("mnist_lenet", "mnist")
    results["demo"] = run("make demo", cwd=ROOT)["seconds"]
    for name, title in (("mnist_lenet", "MNIST LeNet"), ("fashionmnist_resnet8", "Fashion-MNIST ResNet-8")):
        curves = {f"{backend} ({results[name][backend]['samples']} samples)": RunResult.from_dict(json.loads(
            (RUNS / f"{name}_{backend}.json").read_text())) for backend in ("torch", "lava")}
        plot_accuracy(ROOT / "bench" / f"{name}.png", curves, title=f"{title} (2-bit hidden, 3-bit output), QFFS SNN")
    write_json(ROOT / "bench" / "results.json", results)
    update_readme(results)
    if not args.skip_tests:  # last, so that a failing test loses no measurement
        results["tests"] = run("make test", cwd=ROOT)["seconds"]
        write_json(ROOT / "bench" / "results.json", results)
        update_readme(results)
    print(f"wrote bench/results.json, the plots, and the figures in {README.name}")


# The README's blocks ------------------------------------------------------------------------------------


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    if minutes >= 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.0f} s"


def per_step(report: dict, steps=(1, 2, 3, 4, 8)) -> str:
    return " / ".join(pct(report["accuracy_by_step"][t - 1]) for t in steps)


def equal_from(report: dict) -> str:
    step = report["equal_from_step"]
    return f"t = {step}" if step else f"not by t = {report['steps']}"


def model_table(r: dict, header: tuple, row) -> str:
    """A markdown table with one row, row(figures), per trained model."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row(r[name])) + " |" for name in MODELS])


def block_train(r: dict) -> str:
    return model_table(r, ("command", "float test acc.", "QANN test acc. (2-bit hidden, 3-bit out, hardware-exact)",
                           "training time (hardware-exact phase)"),
                       lambda m: (f"`{m['train_command'].replace(' --quiet', '')}`", pct(m["float_accuracy"]),
                                  pct(m["qann_accuracy"]),
                                  f"{duration(m['train_seconds'])} ({duration(m['phase_seconds']['hardware'])})"))


def block_export(r: dict) -> str:
    return model_table(r, ("command", "QANN acc. as trained", "integer QANN acc.", "top-1 agreement",
                           "largest pre-activation difference", "test images"),
                       lambda m: (f"`{m['export_command']}`", pct(m["qann_accuracy"]),
                                  pct(m["int_qann_accuracy"]), pct(m["qann_agreement"]),
                                  f"{max(m['preactivation_max_difference'].values()):.1g}",
                                  str(m["fidelity_samples"])))


def block_hardware(r: dict) -> str:
    return model_table(r, ("model", "LSQ QANN (no phase)", "its integer network, agreement",
                           "hardware-exact QANN = integer network", "change", "agreement",
                           "kept epoch of the phase (validation acc.: before, kept)", "phase time"),
                       lambda m: (f"{m['dataset']} {m['arch']}", pct(m["lsq_accuracy"]),
                                  f"{pct(m['integer_before'])}, {pct(m['agreement_before'])}",
                                  pct(m["qann_accuracy"]), f"{100 * (m['qann_accuracy'] - m['lsq_accuracy']):+.2f}",
                                  pct(m["qann_agreement"]),
                                  f"{m['hardware_epoch_kept']} of {m['hardware_epochs']} "
                                  f"({pct(m['validation']['integer_before'])}, {pct(m['validation']['qann'])}; "
                                  f"{m['validation_images']} images)",
                                  duration(m["phase_seconds"]["hardware"])))


def speed_text(figures: dict) -> str:
    return (f"{figures['sync_ratio']:.2f} (synchronous) and {figures['pipelined_ratio']:.2f} (pipelined, T + D "
            f"steps)")


def block_run(r: dict) -> str:
    mnist, resnet, digits = r["mnist_lenet"], r["fashionmnist_resnet8"], r["digits_mlp"]
    t = mnist["torch"]
    return (f"`{t['command'].replace(' --json mnist_lenet_torch.json --quiet', '')}` on the full "
            f"{t['samples']}-image test split took {duration(t['wall_seconds'])}: accuracy at t = 1 / 2 / 3 / 4 / 8 "
            f"{per_step(t)}; predictions equal the integer QANN's on every sample from "
            f"t = {next(i + 1 for i, a in enumerate(t['agreement_by_step']) if a == 1.0)}, output counts from "
            f"{equal_from(t)}. On digits, counts equal the QANN's from {equal_from(digits['torch'])}. The "
            f"simulator's cost, `python bench/sim_speed.py NET.h5 --dataset DATASET` (batch 256, T = {STEPS}, "
            f"{mnist['sim_speed']['threads']} threads), as time(T steps) / (T x one integer-QANN forward pass), "
            f"target at most 2: MNIST LeNet {speed_text(mnist['sim_speed'])}; Fashion-MNIST ResNet-8 "
            f"{speed_text(resnet['sim_speed'])}.")


def block_threads(r: dict) -> str:
    busy = r["busy_machine"]
    return (f"Measured by `make bench` with a busy loop holding one of the 2 cores: "
            f"`{busy['default']['command'].replace(' --quiet', '')}` took {duration(busy['default']['seconds'])} "
            f"with PyTorch's default threads and {duration(busy['one']['seconds'])} with `--threads 1`.")


def block_lava(r: dict) -> str:
    lines = []
    for name, label in (("digits_mlp", "digits MLP"), ("mnist_lenet", "MNIST LeNet"),
                        ("fashionmnist_resnet8", "Fashion-MNIST ResNet-8")):
        lava = r[name]["lava"]
        n = lava["samples"]
        same = lava["same_as_torch"]
        lines.append(f"- {label}: `{lava['command'].replace(f' --json {name}_lava.json --quiet', '')}` took "
                     f"{duration(lava['wall_seconds'])} ({lava['seconds'] / n:.2f} s per sample); its predictions "
                     f"at t = {STEPS} equal the torch backend's on {same}/{n}, and equal the QANN's on every sample "
                     f"from {equal_from(lava)}.")
    neuron = r["lava_neuron_speed"]
    shape = "x".join(map(str, neuron["shape"]))
    lines.append(f"- `python bench/lava_neuron_speed.py`: a QffsNeuron step costs {neuron['qffs_step_s'] * 1e3:.2f} "
                 f"ms, lava-nc's LIF `fixed_pt` {neuron['lif_step_s'] * 1e3:.2f} ms on {shape} neurons (ratio "
                 f"{neuron['ratio']:.2f}, target at most 1.2).")
    if "lava_speed" in r:
        workers, cost = r["lava_speed"]["workers"], r["lava_speed"]["step_cost"]
        lines.append(f"- `python bench/lava_speed.py mnist_lenet.h5 --dataset mnist --samples 200 --workers 2`: "
                     f"`--workers 1` ran {workers['workers_1_samples_per_s']:.2f} samples/s, `--workers 2` "
                     f"{workers['workers_2_samples_per_s']:.2f} samples/s, {workers['speedup']:.2f} times as fast "
                     f"(target at least 1.6), with identical results. One Lava step of the QffsNetwork took "
                     f"{cost['qffs_step_s'] * 1e3:.1f} ms, of a stock lava-nc network of the same layers (Dense/Conv "
                     f"into LIF, max pools as 2x2 stride-2 convs) {cost['stock_step_s'] * 1e3:.1f} ms: ratio "
                     f"{cost['ratio']:.2f} (target at most 1.2).")
    return "\n".join(lines)


def block_results(r: dict, name: str) -> str:
    m = r[name]
    t, lava = m["torch"], m["lava"]
    rows = ["| | accuracy |", "|---|---|",
            f"| float model | {pct(m['float_accuracy'])} |",
            f"| QANN after LSQ fine-tuning (2-bit hidden, 3-bit output) | {pct(m['lsq_accuracy'])} |",
            f"| QANN after hardware-exact fine-tuning | {pct(m['qann_accuracy'])} |",
            f"| integer QANN (net.h5) | {pct(m['int_qann_accuracy'])} (top-1 agreement with the trained QANN "
            f"{pct(m['qann_agreement'])}) |",
            f"| SNN, torch, t = 1 / 2 / 3 / 4 / 8 | {per_step(t)} |",
            f"| SNN, torch, t = {STEPS} | {pct(t['accuracy_by_step'][-1])} (output counts equal the integer QANN's on "
            f"every sample from {equal_from(t)}) |",
            f"| SNN, Lava `fixed_pt`, {lava['samples']} images, t = {STEPS} | {pct(lava['accuracy'])} "
            f"(QANN on those: {pct(lava['qann_accuracy'])}) |"]
    return "\n".join(rows)


def block_fashion_lenet(r: dict) -> str:
    m = r["fashionmnist_lenet"]
    t = m["torch"]
    return (f"For comparison, the LeNet on Fashion-MNIST: float {pct(m['float_accuracy'])}, QANN "
            f"{pct(m['lsq_accuracy'])} after LSQ and {pct(m['qann_accuracy'])} after hardware-exact fine-tuning, "
            f"integer QANN {pct(m['int_qann_accuracy'])}, SNN at t = 1 / 2 / 3 / 4 / 8 "
            f"{per_step(t)}, equal to the QANN on every sample from {equal_from(t)}.")


def block_setup(r: dict) -> str:
    text = f"Measured by `make bench` ({r['date']}, {r['machine']}): `make demo` took {duration(r['demo'])}"
    if "tests" in r:
        text += f" and `make test` {duration(r['tests'])}"
    return text + ", with .venv already built."


BLOCKS = {
    "setup": block_setup, "train": block_train, "hardware": block_hardware, "export": block_export, "run": block_run,
    "threads": block_threads, "lava": block_lava,
    "results-mnist": lambda r: block_results(r, "mnist_lenet"),
    "results-fashion": lambda r: block_results(r, "fashionmnist_resnet8"),
    "fashion-lenet": block_fashion_lenet,
}


def replace_block(text: str, name: str, body: str) -> str:
    """The README text with the lines between <!-- bench:NAME --> and <!-- /bench:NAME --> replaced by body."""
    pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(\n<!-- /bench:{name} -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"README.md has no block <!-- bench:{name} --> ... <!-- /bench:{name} -->")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def update_readme(results: dict) -> None:
    text = README.read_text()
    for name, render in BLOCKS.items():
        text = replace_block(text, name, render(results))
    README.write_text(text)


if __name__ == "__main__":
    main()
