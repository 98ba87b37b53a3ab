"""`make paper`: the paper's experiments (Li, Ma, Furber 2022) run on the data we have, beside its numbers.

1. Bit precision (the paper's Figures 6, 8 and 9) with and without the noise handling (Figure 3): each
   configuration of SWEEPS is trained with qffs-train (the README's command with --act-bits, --out-bits and
   --seed), exported and run on the torch backend over its whole test split with `--steps auto --stats`
   (accuracy at every t until every sample has settled, each sample's settle and decision steps, SOPs), and
   again with negative spikes and the count bound left out (`--ablate`, as many steps, 16 at least).
2. Other converters on the residual network (Figure 5): bench/peers.py's SpikingJelly and sinabs conversions
   of one float ResNet-8, and QFFS from the same float weights.
3. Direct training (Figure 1): bench/direct.py's LeNet and ResNet-8 trained as SNNs with surrogate gradients.

Resumable: each configuration keeps its folder under runs/paper/ (its model file, net.h5, run reports and
result.json, written last); a configuration with its result.json is not run again, and an interrupted
training continues from its checkpoint (`qffs-train --resume`). Each finished part is also written into
bench/paper.json at once, and a part recorded there is taken as done, so a clone of the repository continues
where the committed file stops (`--again` measures everything on this machine). Writes bench/paper.json,
bench/paper_*.png, docs/paper.md and the README's bench:paper block. `--check` runs the whole path on the digits
dataset with one epoch per phase, into runs/paper-check/ (nothing in bench/, docs/ or the README), in minutes.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch
from paper_report import at, readme_block, report
from run_bench import README, ROOT, RUNS as BENCH_RUNS, replace_block

from qffs_lava.ann.checkpoint import checkpoint_path, phase_seconds, read_metrics
from qffs_lava.ann.modelfile import read_model_file
from qffs_lava.latency import summary
from qffs_lava.reports import write_json

BIN = Path(sys.executable).parent
NOISE_HANDLING = ("negative-spikes", "count-bound")
NOISE_OFF_STEPS = 16  # at least; as many as the QFFS run took to settle
Bits = Union[int, str]


@dataclass(frozen=True)
class Config:
    """One trained network: dataset, architecture, hidden and output bits ("float": a read-out), seed."""

    dataset: str
    arch: str
    hidden_bits: int
    out_bits: Bits
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.arch}_h{self.hidden_bits}_o{self.out_bits}_s{self.seed}"


#: network -> sweep -> the (hidden bits, output bits) it trains (the paper's Figures 9(B), 8 and 9(A); 7).
SWEEPS = {
    ("mnist", "lenet"): {"hidden": [(1, 3), (2, 3), (3, 3), (4, 3)],
                         "output": [(2, 2), (2, 3), (2, 4), (2, "float")],
                         "all": [(2, 2), (3, 3), (4, 4)]},
    ("fashionmnist", "resnet8"): {"float": [(2, 3), (2, "float"), (3, "float")]},
}
#: The configurations trained with every seed of SEEDS, to show the spread.
SEEDED = [(2, 3), (2, "float")]
SEEDS = (0, 1, 2)
#: make bench's models (runs/bench/), trained with the same command at seed 0: reused, not trained again.
BENCH_MODELS = {Config("mnist", "lenet", 2, 3, 0): "mnist_lenet", Config("mnist", "lenet", 2, "float", 0):
                "mnist_lenet_float", Config("fashionmnist", "resnet8", 2, 3, 0): "fashionmnist_resnet8",
                Config("fashionmnist", "resnet8", 2, "float", 0): "fashionmnist_resnet8_float"}


@dataclass(frozen=True)
class Settings:
    """Where make paper works and how it trains: the full run, or --check's tiny one."""

    runs: Path
    epochs: str  # qffs-train's epoch options ("": the dataset's schedule)
    dataset: Optional[str]  # every network on this dataset in place of its own (--check: digits)
    seeds: tuple
    reuse_bench: bool
    float_epochs: Optional[int]  # the peers' float ResNet-8 (None: qffs-train's float epochs)
    direct_epochs: Optional[int]  # direct training (None: qffs-train's float + LSQ + hardware-exact epochs)
    peer_samples: Optional[int]  # the peers' test images (None: the whole split)
    record: Path  # paper.json: every finished part, written as each finishes
    take_recorded: bool  # a part `record` holds (from an earlier make paper, or a commit) is done


FULL = Settings(ROOT / "runs" / "paper", "", None, SEEDS, True, None, None, 1000, ROOT / "bench" / "paper.json", True)
CHECK = Settings(ROOT / "runs" / "paper-check", " --float-epochs 1 --qat-epochs 1 --hardware-epochs 1", "digits",
                 (0, 1), False, 1, 1, 100, ROOT / "runs" / "paper-check" / "paper.json", False)


@functools.lru_cache(maxsize=None)
def recorded(settings: Settings) -> Dict:
    """The parts `settings.record` held when make paper started (runs by configuration name, "peers", "direct" by
    network), where they count as done; else none."""
    if not (settings.take_recorded and settings.record.exists()):
        return {"runs": {}, "peers": [], "direct": {}, "since": None}
    held = json.loads(settings.record.read_text())
    return {"runs": {Config(**{f: r[f] for f in Config.__dataclass_fields__}).name: r for r in held.get("runs", [])},
            "peers": held.get("peers", []), "peers_seconds": held.get("peers_seconds", 0),
            "direct": {(d["dataset"], d["arch"]): d for d in held.get("direct", [])},
            "since": held["date"].split(" to ")[0]}


def configs(settings: Settings) -> List[Config]:
    """Every configuration once, seed 0 of every sweep first, then the other seeds of SEEDED."""
    found: Dict[Config, None] = {}
    for (dataset, arch), sweeps in SWEEPS.items():
        for points in sweeps.values():
            for hidden, out in points:
                found[Config(settings.dataset or dataset, arch, hidden, out, settings.seeds[0])] = None
    for seed in settings.seeds[1:]:
        for dataset, arch in SWEEPS:
            for hidden, out in SEEDED:
                found[Config(settings.dataset or dataset, arch, hidden, out, seed)] = None
    return list(found)


# Running commands --------------------------------------------------------------------------------------------


class Commands:
    """The commands running now, and whether make paper is stopping: once it is, no command starts, and each
    that runs has had one SIGTERM from make paper (a lock makes the two one step, so none slips between them). The
    commands run in sessions of their own, so that a Ctrl-C reaches them once, through make paper; SIGTERM, which
    every command takes as its stop, because a make paper started in the background of a script ignores SIGINT,
    and so would the Python commands it starts."""

    lock = threading.Lock()
    running: set = set()
    stopping = False

    @classmethod
    def stop(cls) -> None:
        with cls.lock:
            cls.stopping = True
            for process in cls.running:
                process.send_signal(signal.SIGTERM)


def run(command: str, cwd: Path, log) -> Dict:
    """One command as a user types it, in `cwd`: its wall time and peak memory (the child's max RSS, MiB)."""
    args = shlex.split(command)
    executable = BIN / args[0]
    args[0] = str(executable) if executable.exists() else args[0]
    log(f"$ (cd {os.path.relpath(cwd)} && {command})")
    started = time.perf_counter()
    with open(cwd / "commands.log", "a") as output:
        output.write(f"$ {command}\n")
        output.flush()
        with Commands.lock:
            if Commands.stopping:
                raise Stopped(command)
            process = subprocess.Popen(args, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
            Commands.running.add(process)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # a Ctrl-C or SIGTERM in this thread: stop every command, and outlive this one
            Commands.stop()
            status, usage = wait_out(process)
            raise
        finally:
            with Commands.lock:
                Commands.running.discard(process)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise (Stopped if Commands.stopping else RuntimeError)(
            f"`{command}` failed with code {code} (its output: {cwd / 'commands.log'})")
    return {"command": command, "seconds": time.perf_counter() - started, "peak_memory_mib": usage.ru_maxrss / 1024}


def wait_out(process: subprocess.Popen):
    """(status, usage) of a command that has been sent its stop signal, however often this process is interrupted
    meanwhile: none of make paper's commands outlives it."""
    while True:
        try:
            _, status, usage = os.wait4(process.pid, 0)
            return status, usage
        except KeyboardInterrupt:
            continue


class Stopped(Exception):
    """A command not started, or ended, because make paper is stopping."""


def train_command(config: Config, settings: Settings) -> str:
    out_bits = "" if config.out_bits == 3 else f" --out-bits {config.out_bits}"
    act_bits = "" if config.hidden_bits == 2 else f" --act-bits {config.hidden_bits}"
    seed = f" --seed {config.seed}" if config.seed else ""
    return (f"qffs-train --dataset {config.dataset} --arch {config.arch}{act_bits}{out_bits}{seed}{settings.epochs} "
            "--out model.pt --threads 1 --quiet")


def resuming(train: str, folder: Path, out: str) -> str:
    """A qffs-train command, continuing the run a stop interrupted where its checkpoint is in the folder."""
    return train + (" --resume" if (folder / checkpoint_path(out)).exists() else "")


def train(config: Config, folder: Path, settings: Settings, log) -> Dict:
    """The model file: make bench's where it trained the same configuration, else qffs-train's (resumed from
    its checkpoint after an interruption)."""
    bench = BENCH_RUNS / f"{BENCH_MODELS.get(config)}.pt"
    if not (folder / "model.pt").exists():
        if settings.reuse_bench and config in BENCH_MODELS and bench.exists():
            shutil.copy2(bench, folder / "model.pt")
            shutil.copy2(bench.with_suffix(".metrics.jsonl"), folder / "model.metrics.jsonl")
            log(f"{config.name}: make bench's {bench.relative_to(ROOT)}")
        else:
            trained = run(resuming(train_command(config, settings), folder, "model.pt"), folder, log)
            write_json(folder / "train.json", trained)
    content = read_model_file(folder / "model.pt")
    seconds = phase_seconds(read_metrics(folder / "model.metrics.jsonl"))
    trained = json.loads((folder / "train.json").read_text()) if (folder / "train.json").exists() else {}
    return {"train_command": trained.get("command", f"make bench: {bench.stem}"),
            "float_accuracy": content["accuracy"]["float"], "train_seconds": sum(seconds.values()),
            "phase_seconds": seconds, "train_peak_memory_mib": trained.get("peak_memory_mib"),
            "train_threads": content["train"]["threads"]}


def commands(config: Config, folder: Path):
    """(the file it writes, the command) after training, in order: the export, the run until every sample has
    settled, and the run without the noise handling for as many steps (16 at least), which may never settle."""
    yield "model.h5", "qffs-export model.pt model.h5 --threads 1"
    yield "qffs.json", (f"qffs-run model.h5 --dataset {config.dataset} --steps auto --stats --threads 1 "
                        "--json qffs.json --quiet")
    steps = max(NOISE_OFF_STEPS, json.loads((folder / "qffs.json").read_text())["steps"])
    yield "noise_off.json", (f"qffs-run model.h5 --dataset {config.dataset} --steps {steps} "
                             + "".join(f"--ablate {a} " for a in NOISE_HANDLING) + "--threads 1 --json noise_off.json "
                             "--quiet")


def measure(config: Config, settings: Settings, log) -> Optional[Dict]:
    """Train, export and run one configuration (each step skipped where its file is there; nothing where its result
    is there or recorded): its result. log None: only read the result if it is done (else None)."""
    folder = settings.runs / config.name
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    if config.name in recorded(settings)["runs"] or log is None:
        return recorded(settings)["runs"].get(config.name)
    workspace(folder)
    started = time.perf_counter()
    result = {**asdict(config), **train(config, folder, settings, log)}
    steps = {}
    for out, command in commands(config, folder):
        if not (folder / out).exists():
            steps[out] = run(command, folder, log)
    qffs = json.loads((folder / "qffs.json").read_text())
    off = json.loads((folder / "noise_off.json").read_text())
    settled, decided = summary(qffs["settled_at"]), summary(qffs["decided_at"])
    result.update(
        qann_accuracy=qffs["qann_accuracy"], samples=qffs["samples"], accuracy_by_step=qffs["accuracy_by_step"],
        steps=qffs["steps"], equal_from_step=qffs["equal_from_step"],
        settled_mean=settled["mean"], settled_p99=settled["p99"], settled_max=settled["max"],
        decided_mean=decided["mean"], decided_p99=decided["p99"], decided_max=decided["max"],
        sops_per_sample=qffs["costs"]["total"]["sops"][-1], sops_by_step=qffs["costs"]["total"]["sops"],
        noise_off={"accuracy_by_step": off["accuracy_by_step"], "steps": off["steps"],
                   "settled": sum(s is not None for s in off["settled_at"])},
        seconds={"train": result["train_seconds"], **{out: step["seconds"] for out, step in steps.items()},
                 "measured": time.perf_counter() - started})
    write_json(done, result)
    log(f"{config.name}: QANN {100 * result['qann_accuracy']:.2f}%, SNN at t = 4 "
        f"{100 * at(result['accuracy_by_step'], 4):.2f}%, settled mean "
        f"{result['settled_mean']:.2f} (p99 {result['settled_p99']}), without the noise handling at T = {off['steps']} "
        f"{100 * off['accuracy_by_step'][-1]:.2f}%")
    return result


def workspace(folder: Path) -> Path:
    """`folder`, made, with data/ linked into it (the commands read the datasets as a user's would)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "data").exists():
        (folder / "data").symlink_to(ROOT / "data")
    return folder


def peers(settings: Settings, log) -> Dict:
    """The converters on the float ResNet-8 (bench/paper_peers.py, one thread), in runs/paper/peers_resnet8/: one
    entry per converter, and the command's wall time (command.json, written last, marks it done). log None: only
    read what is done (no entries where it is not)."""
    folder = settings.runs / "peers_resnet8"
    dataset = settings.dataset or "fashionmnist"
    done = folder / "command.json"
    if not done.exists():
        if recorded(settings)["peers"] or log is None:
            return {"peers": recorded(settings)["peers"], "peers_seconds": recorded(settings).get("peers_seconds", 0)}
        workspace(folder)
        options = "".join(f" --{name} {value}" for name, value in (("float-epochs", settings.float_epochs),
                                                                    ("samples", settings.peer_samples)) if value)
        write_json(done, run(f"python {ROOT / 'bench' / 'paper_peers.py'} --dataset {dataset} --out .{options}",
                             folder, log))
    figures = json.loads((folder / "peers.json").read_text())
    return {"peers": [{"dataset": dataset, "arch": "resnet8", "converter": name,
                       "float_accuracy": figures["float_accuracy"], **converter}
                      for name, converter in figures["converters"].items()],
            "peers_seconds": json.loads(done.read_text())["seconds"]}


def direct(settings: Settings, network: tuple, log) -> Optional[Dict]:
    """One network of SWEEPS trained directly as an SNN (bench/direct.py, one thread), in runs/paper/direct_ARCH/:
    its figures, with the command's wall time and peak memory (command.json, written last, marks it done). log
    None: only read it if it is done (else None)."""
    dataset, arch = settings.dataset or network[0], network[1]
    folder = settings.runs / f"direct_{arch}"
    done = folder / "command.json"
    if not done.exists():
        if (dataset, arch) in recorded(settings)["direct"] or log is None:
            return recorded(settings)["direct"].get((dataset, arch))
        workspace(folder)
        epochs = f" --epochs {settings.direct_epochs}" if settings.direct_epochs else ""
        command = (f"python {ROOT / 'bench' / 'direct.py'} --dataset {dataset} --arch {arch} --out .{epochs} "
                   "--threads 1")
        write_json(done, run(command, folder, log))
    return {**json.loads((folder / "direct.json").read_text()), **json.loads(done.read_text())}


def directs(settings: Settings) -> List[Dict]:
    """Every network's direct training that is done."""
    return [d for d in (direct(settings, network, None) for network in SWEEPS) if d]


def measure_all(settings: Settings, jobs: int, log, recording: Callable[[], None]) -> Dict:
    """Direct training, the peers and every configuration, `jobs` at a time (each a command of one thread),
    `recording` what is finished after each part. On Ctrl-C or SIGTERM nothing more starts and every running
    command is stopped; the next make paper continues."""
    todo = configs(settings)
    log(f"{len(todo)} configurations, {sum(measure(c, settings, None) is not None for c in todo)} done before "
        f"(in {os.path.relpath(settings.runs)}/ or {os.path.relpath(settings.record)}); {jobs} commands at a time")
    pool = ThreadPoolExecutor(jobs)

    def then_record(part, *args):
        value = part(*args)
        recording()
        return value

    try:
        direct_runs = [pool.submit(then_record, direct, settings, network, log) for network in SWEEPS]
        peer_runs = pool.submit(then_record, peers, settings, log)
        runs = [pool.submit(then_record, measure, c, settings, log) for c in todo]
        return {"runs": [r.result() for r in runs], **peer_runs.result(),
                "direct": [r.result() for r in direct_runs]}
    except BaseException:
        Commands.stop()
        raise
    finally:
        pool.shutdown(cancel_futures=True)


def finished(settings: Settings) -> Dict:
    """What make paper has finished so far, read from its folders; nothing is run."""
    runs = [measure(c, settings, None) for c in configs(settings)]
    return {"runs": [r for r in runs if r], **peers(settings, None), "direct": directs(settings)}


def record(settings: Settings, command: str, lock=threading.Lock()) -> Dict:
    """paper.json's contents, from what is finished now, written to `settings.record` (one thread at a time)."""
    with lock:
        today = datetime.date.today().isoformat()
        since = recorded(settings)["since"] or today
        results = {"date": today if since == today else f"{since} to {today}", "command": command,
                   "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} cores, torch {torch.__version__}",
                   "expected": len(configs(settings)), **finished(settings)}
        write_json(settings.record, results)
    return results


def say(text: str, lock=threading.Lock()) -> None:
    """One line of progress, whole, whichever thread says it."""
    with lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="the whole path on digits, one epoch per phase, into runs/paper-check/ (minutes)")
    parser.add_argument("--jobs", type=int, default=2, help="commands run at once, one thread each (default 2)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="the folder the configurations keep their files in (default: runs/paper/, with --check "
                             "runs/paper-check/); with --check, the report is written there too")
    parser.add_argument("--again", action="store_true",
                        help="measure on this machine the parts bench/paper.json already records (by default a part "
                             "it records, from an earlier make paper or a commit, is done)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write the report from what make paper has finished so far, saying what "
                             "it has not")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs: at least 1 command at a time, got {args.jobs}")
    settings = CHECK if args.check else FULL
    if args.runs:
        settings = replace(settings, runs=args.runs.resolve(),
                           record=args.runs.resolve() / "paper.json" if args.check else settings.record)
    settings = replace(settings, take_recorded=settings.take_recorded and not args.again)
    settings.runs.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill and schedulers stop it as Ctrl-C does
    options = " ".join(["--check"] * args.check + ([f"--runs {args.runs}"] if args.runs else []))  # what it measures
    command = "make paper" + (f' PAPER_ARGS="{options}"' if options else "")
    if not args.report_only:
        try:
            measure_all(settings, args.jobs, say, functools.partial(record, settings, command))
        except (KeyboardInterrupt, Stopped):
            print(f"make paper stopped; what it finished is kept in {settings.runs}/ and "
                  f"{os.path.relpath(settings.record)}, and make paper again continues from there", file=sys.stderr)
            return 130
    results = record(settings, command)
    sweeps = {(settings.dataset or dataset, arch): named for (dataset, arch), named in SWEEPS.items()}
    if args.check:
        (settings.runs / "paper.md").write_text(report(results, sweeps, settings.runs, "."))
        print(f"a check: wrote {settings.runs}/paper.json, paper.md and its plots only")
        return 0
    (ROOT / "docs" / "paper.md").write_text(DOC_HEAD + report(results, sweeps, ROOT / "bench", "../bench"))
    README.write_text(replace_block(README.read_text(), "paper", readme_block(results, sweeps)))
    print(readme_block(results, sweeps))
    print("wrote bench/paper.json, bench/paper_*.png, docs/paper.md and the README's bench:paper block")
    return 0


DOC_HEAD = """# The paper's experiments, run on the data we have

`make paper` (bench/paper.py) trains, exports and runs every configuration below, resumably (each keeps its
folder under runs/paper/ and is recorded in bench/paper.json as it finishes; a second `make paper`, or one in a
clone, continues where the first stopped, and `PAPER_ARGS=--again` measures everything anew), and writes this page,
bench/paper.json and the plots beside them. `make paper PAPER_ARGS=--check` runs the same path on the digits
dataset with one epoch per phase in minutes (`make test-slow` runs it).

"""


if __name__ == "__main__":
    sys.exit(main())
