"""The public API: `import qffs_lava as qffs` gives the verbs, lightly; the README's Python example runs as it
stands; a Python run's JSON is qffs-run's; the backends' seams hold (no name tests outside the registry)."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from importlib.metadata import EntryPoint, distribution
from pathlib import Path

import numpy as np
import pytest

import qffs_lava as qffs
from qffs_lava.backends import BACKENDS, RunOptions, simulate
from qffs_lava.backends.base import OPTION_NEEDS
from qffs_lava.dynamics import without
from qffs_lava.errors import ParameterError
from qffs_lava.cli import run_main

REPO = Path(__file__).resolve().parents[1]
VERBS = ["train", "from_torch", "export", "read_net", "load_dataset", "run", "TorchNetwork", "QffsNetwork"]


def test_import_loads_neither_torch_nor_lava():
    code = ("import sys, qffs_lava; heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lava')); "
            "print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_verbs_are_at_the_top_each_with_an_example():
    assert set(VERBS) <= set(qffs.__all__)
    for name in qffs.__all__:  # each the library's (or the exporter's) own object of that name
        value = getattr(qffs, name)
        if name == "BACKENDS":
            assert value is BACKENDS
        else:
            assert value.__name__ == name and value.__module__.split(".")[0] in ("qffs_lava", "qffs_export"), name
    for name in VERBS:
        doc = getattr(qffs, name).__doc__ or ""
        assert "Example" in doc and ">>> " in doc and "qffs." in doc, f"{name}'s docstring has no example"
    with pytest.raises(AttributeError):
        qffs.no_such_verb  # noqa: B018


def pyproject_table(header: str) -> dict:
    """The name = "value" lines of one table of pyproject.toml (e.g. project.scripts)."""
    lines = (REPO / "pyproject.toml").read_text().splitlines()
    start = lines.index(f"[{header}]") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    return dict(re.fullmatch(r'([\w-]+) = "([^"]*)"', line).groups() for line in lines[start:end]
                if line and not line.startswith("#"))


@pytest.mark.e2e
def test_the_library_never_imports_the_exporter():
    """The exporter (qffs_export) is built on the library, never the other way round: the trainer runs the
    conversion (qffs_lava.convert) without it, and no file of the library names it."""
    code = ("import sys, qffs_lava.ann.train, qffs_lava.convert.network, qffs_lava.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'qffs_export'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    naming = [str(p.relative_to(REPO)) for p in (REPO / "qffs_lava").rglob("*.py") if "qffs_export" in p.read_text()]
    assert not naming


def test_the_installed_metadata_is_pyproject_tomls():
    """The console scripts and the verbs other packages add (qffs.export) reach the package through its installed
    metadata: where this fails, pyproject.toml changed after the install (pip install -e . again; make does)."""
    installed = distribution("qffs-lava").entry_points
    for group, table in [("console_scripts", "project.scripts"),
                         (qffs.VERBS_GROUP, f'project.entry-points."{qffs.VERBS_GROUP}"')]:
        assert {point.name: point.value for point in installed.select(group=group)} == pyproject_table(table), \
            f"{group}: the installed metadata is not pyproject.toml's: pip install -e . again"


def test_every_console_script_is_its_command():
    for script, target in pyproject_table("project.scripts").items():
        main = EntryPoint(script, target, "console_scripts").load()
        assert main.build_parser().prog == script


def test_qffs_export_is_the_exporters_export_added_through_an_entry_point():
    from qffs_export.exporter import export

    declared = pyproject_table(f'project.entry-points."{qffs.VERBS_GROUP}"')
    assert declared == {"export": "qffs_export.exporter:export"}
    assert EntryPoint("export", declared["export"], qffs.VERBS_GROUP).load() is export
    assert qffs.export is export and "export" in qffs.__all__ and "export" in dir(qffs)


def test_a_verb_whose_package_is_not_installed_says_so(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])
    monkeypatch.delitem(vars(qffs), "export", raising=False)
    with pytest.raises(AttributeError, match="qffs_lava.export is the exporter's verb, which is not installed: "
                                             "no installed package has the entry point 'export' in the group "
                                             "'qffs_lava.verbs'; install qffs-lava again"):
        qffs.export  # noqa: B018
    assert not hasattr(qffs, "export") and "export" not in dir(qffs)


def readme_python_snippets():
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


@pytest.mark.slow  # 30 s on 2 idle cores, minutes under load: the API example trains on the default schedule
@pytest.mark.lava
def test_every_python_snippet_in_the_readme_runs_as_printed(tmp_path):
    """In order, each in a Python of its own, in a folder that has the repository's examples/ and data/ (the
    README's commands run in the repository's folder): the own-model example, the Python API example (which
    writes digits.h5 and the Lava run's JSON), the QffsNetwork recipe (which reads digits.h5).

    The same calls run in `make test` in shorter forms: from_torch and training a module (test_torch_import.py),
    train, export, qffs.run on torch and Lava with stats and to_json (conftest.py's digits model, test_api.py,
    test_lava_equivalence.py), the QffsNetwork recipe with its own source and sink (test_lava_network.py)."""
    for name in ("examples", "data"):
        (tmp_path / name).symlink_to(REPO / name)
    snippets = readme_python_snippets()
    assert len(snippets) == 3
    outputs = []
    for snippet in snippets:
        result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"{snippet}\n{result.stderr[-3000:]}"
        outputs.append(result.stdout)
    assert "'qann':" in outputs[0] and (tmp_path / "custom.pt").is_file()
    written = json.loads((tmp_path / "digits_lava.json").read_text())
    assert written["backend"] == "lava" and written["samples"] == 40 and "costs" in written
    assert "QffsNeuron" in outputs[1] and "accuracy " in outputs[2]


def test_what_the_readme_writes_in_the_repository_is_ignored_by_git():
    names = ["digits.pt", "digits.h5", "digits_lava.json", "custom.pt", "mnist.png", "mnist.json", "x.npy"]
    ignored = subprocess.run(["git", "check-ignore", *names], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert ignored == names


def test_to_json_is_what_qffs_run_json_writes(digits_net, tmp_path):
    """The same run from Python and from the command line: equal reports but for the wall time."""
    assert run_main([str(digits_net), "--dataset", "digits", "--samples", "30", "--steps", "6", "--stats",
                     "--quiet", "--json", str(tmp_path / "cli.json")]) == 0
    images, labels = qffs.load_dataset("digits", "test")
    result = qffs.run(str(digits_net), images[:30], labels[:30], steps=6, stats=True, progress=False,
                      description="digits test split")
    cli, python = json.loads((tmp_path / "cli.json").read_text()), json.loads(result.to_json())
    assert cli.pop("seconds") > 0 and python.pop("seconds") > 0
    assert cli == python
    assert qffs.RunResult.from_dict(json.loads(result.to_json())) == result


def library_files():
    return sorted(p for folder in ("qffs_lava", "export") for p in (REPO / folder).rglob("*.py"))


def test_no_backend_name_is_tested_outside_the_registry():
    """What differs between backends is each backend's attributes; nothing compares a backend's name."""
    names = "|".join(re.escape(name) for name in BACKENDS)
    compared = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    loop = re.compile(r"\bfor\s+[\w, ]+\s+in\b")  # iterating over names is no test of one
    found = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in library_files()
             for n, line in enumerate(p.read_text().splitlines(), 1) if compared.search(loop.sub("", line))]
    assert not found, "\n".join(found)


#: A value other than the default for each option a backend may not honour (backends.base.OPTION_NEEDS).
ASKED = {"batch_size": 7, "workers": 2, "chunk": 7, "lava_batch": 2, "mechanisms": without("precharge"),
         "record_spikes": True, "count_costs": True, "activity": True, "until_settled": True}

#: qffs.run's arguments for those of the options it takes.
RUN_ASKS = {"workers": {"workers": 2}, "lava_batch": {"lava_batch": 2}, "mechanisms": {"ablate": ["precharge"]},
            "count_costs": {"stats": True}, "batch_size": {"batch_size": 7}}


def test_every_backend_honours_an_option_or_refuses_it(digits_net):
    """For every backend in the registry and every option, an option it has no capability for is refused by
    `backends.simulate` and by `qffs.run` (named as each names it) before anything runs; one it has passes the
    check."""
    network = qffs.read_net(digits_net)
    x = qffs.load_dataset("digits", "test")[0][:3]
    assert set(ASKED) == set(OPTION_NEEDS)
    refused = 0
    for name, backend in BACKENDS.items():
        for option, (capability, what) in OPTION_NEEDS.items():
            options = RunOptions(**{option: ASKED[option]})
            if getattr(backend, capability):
                if not backend.missing():
                    backend.check(options, network, 8)
                continue
            refused += 1
            with pytest.raises(ParameterError, match=rf"^{option}\b.* is for backends that {re.escape(what)} "
                                                     rf"\(.*\); the {name} backend does not$"):
                simulate(network, x, 8, name, **{option: ASKED[option]})
            if option in RUN_ASKS:
                argument = next(iter(RUN_ASKS[option]))
                with pytest.raises(ParameterError, match=rf"^{argument}\b.* is for backends that"):
                    qffs.run(network, x, None, 8, name, progress=False, **RUN_ASKS[option])
    assert refused >= 12  # qann: 8 options; torch: 3; lava and lava-float: 2 each; loihi2: 2


def test_run_reads_what_qffs_run_reads(digits_net, tmp_path):
    """qffs.run takes a dataset's name, a .npy file (a Path, or a str ending .npy) with labels in another, and
    arrays, each giving the same numbers; labels beside a dataset, and a missing file, are refused by name."""
    x, y = qffs.load_dataset("digits", "test")
    np.save(tmp_path / "x.npy", x[:20].numpy())
    np.save(tmp_path / "y.npy", y[:20].numpy())
    keys = ("samples", "accuracy_by_step", "predictions", "labels")
    arrays = qffs.run(digits_net, x[:20], y[:20], steps=6, progress=False).to_dict()
    named = qffs.run(digits_net, "digits", steps=6, samples=20, progress=False)
    assert named.inputs == "digits test split"
    files = (tmp_path / "x.npy", tmp_path / "y.npy")
    for source, labels in (files, tuple(map(str, files))):
        from_files = qffs.run(digits_net, source, labels, steps=6, progress=False)
        assert from_files.inputs == str(tmp_path / "x.npy")
        assert all(from_files.to_dict()[key] == arrays[key] for key in keys)
    assert all(named.to_dict()[key] == arrays[key] for key in keys)
    with pytest.raises(ParameterError, match="^labels go with inputs from a .npy file or an array"):
        qffs.run(digits_net, "digits", y, steps=6, progress=False)
    with pytest.raises(qffs.QffsError, match=f"^inputs {re.escape(str(tmp_path))}/z.npy does not exist$"):
        qffs.run(digits_net, tmp_path / "z.npy", steps=6, progress=False)
    with pytest.raises(ParameterError, match="^dataset: unknown dataset 'digts'"):
        qffs.run(digits_net, "digts", steps=6, progress=False)


def test_no_layer_kind_is_tested_outside_the_ir():
    """Layers and synapses are told apart by their types' methods (visit) and classes, in qffs_lava/ir only."""
    kinds = "dense|conv|maxpool|flatten|input"
    compared = re.compile(rf"""((?<!dtype)\.kind|\[["']type["']\])\s*(==|!=|in\b|not in\b)"""
                          rf"""|["']({kinds})["']\s*(==|!=)""")
    found = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in library_files() if "ir" not in p.parts
             for n, line in enumerate(p.read_text().splitlines(), 1) if compared.search(line)]
    assert not found, "\n".join(found)


def test_no_file_refers_to_a_document_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    found = [name for name in tracked if (REPO / name).is_file() and (REPO / name).suffix in (".py", ".md", ".json",
                                                                                                ".toml", "")
             and "DESIGN" + ".md" in (REPO / name).read_text(errors="replace")]
    assert not found


@pytest.mark.lava
def test_stats_on_lava_with_two_workers_in_a_process_that_trained_first(tmp_path):
    """Training runs autograd; the Lava workers forked afterwards run no torch, and the costs counted from their
    tallies equal the torch simulator's (pipelined), layer by layer and step by step."""
    script = f"""
import torch
import qffs_lava as qffs
from qffs_lava.backends import simulate
qffs.train("digits", "mlp", out="{tmp_path}/m.pt", progress=False, float_epochs=1,
           qat_epochs=1, hardware_epochs=0)
network = qffs.export("{tmp_path}/m.pt", "{tmp_path}/m.h5")
images, _ = qffs.load_dataset("digits", "test")
tallied = simulate(network, images[:24], 6, "lava", workers=2, chunk=12, count_costs=True)
counted = simulate(network, images[:24], 6, "torch", mode="pipelined", count_costs=True)
assert tallied.costs == counted.costs and torch.equal(tallied.output_counts, counted.output_counts)
assert tallied.costs.sops.sum() > 0
print("ok", int(tallied.costs.sops.sum()))
"""
    threads = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}  # PyTorch's own
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=threads)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


def test_lava_workers_return_numpy_tallies(digits_net, tmp_path):
    """What a worker sends back is numpy only: the recorded output, per-layer tallies and per-step activity."""
    from qffs_lava.backends.lava.runner import _run_chunk

    network = qffs.read_net(digits_net)
    x = qffs.load_dataset("digits", "test")[0][:3].numpy()
    recorded, tallies, active = _run_chunk(network, x, tmp_path / "chunk", None, 4, BACKENDS["lava"], False, True,
                                           True, 2)
    assert set(recorded) == {network.output_index} and set(tallies) == set(range(1, len(network.layers)))
    for positive, negative in tallies.values():
        assert isinstance(positive, np.ndarray) and isinstance(negative, np.ndarray)
    assert isinstance(active, np.ndarray) and active.dtype == bool and active.shape == (3, 4 + network.pipeline_depth)
