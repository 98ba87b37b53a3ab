"""The library speaks through `logging` and `warnings`: a Python program sees it on stderr where it sets up no
logging, silences or redirects it as it does any library's, and gets it in its own handlers once; the commands
write the same lines on their own streams, at the level their --quiet and -v set."""

import functools
import logging
import subprocess
import sys
import warnings

import pytest
from qffs_export import exporter
from qffs_export.cli import export_main
from qffs_export.exporter import export

from qffs_lava import evaluate
from qffs_lava.ann import train as train_module
from qffs_lava.cli import run_main, train_main
from qffs_lava.errors import QffsError
from qffs_lava.inputs import load_inputs
from qffs_lava.ir.netfile import read_net
from qffs_lava.messages import QffsNote

SAID_THEN_SILENCED = """
import logging, sys
import qffs_lava as qffs
short = dict(progress=False, float_epochs=1, qat_epochs=1, hardware_epochs=1)
qffs.train("digits", "mlp", out="said.pt", **short)
qffs.export("said.pt", "said.h5", samples=0)
print("--- silenced", file=sys.stderr, flush=True)
for name in ("qffs_lava", "qffs_export"):
    logging.getLogger(name).setLevel(logging.WARNING)
qffs.train("digits", "mlp", out="silenced.pt", **short)
qffs.export("silenced.pt", "silenced.h5", samples=0)
"""


@pytest.mark.e2e
def test_a_python_program_sees_the_library_on_stderr_and_silences_it_with_a_level(tmp_path):
    result = subprocess.run([sys.executable, "-c", SAID_THEN_SILENCED], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    said, silenced = result.stderr.split("--- silenced\n")
    assert "float epoch 1/1: loss" in said and "hardware epoch 1/1: loss" in said and "wrote said.pt" in said
    assert "max |v| / 2^23" in said and "fidelity not measured" in said and "wrote said.h5" in said
    assert silenced == "" and result.stdout == ""
    assert (tmp_path / "silenced.h5").is_file()


def test_a_programs_own_handler_gets_the_messages_once(digits_model_file, digits_net, tmp_path, caplog, capsys):
    export(digits_model_file, tmp_path / "n.h5", samples=0)
    said = [r.getMessage() for r in caplog.records if r.name == "qffs_export.exporter" and r.levelno == logging.INFO]
    assert "max |v| / 2^23" in said[0] and said[1:] == ["fidelity not measured (0 test samples)",
                                                         f"wrote {tmp_path / 'n.h5'}"]
    assert capsys.readouterr() == ("", "")  # the library's own handler left them to the program's
    with pytest.warns(QffsNote, match="^10000 samples asked for, but digits test split has 450; running all 450$"):
        load_inputs(read_net(digits_net), "digits", samples=10000)


def speaking(function):
    """A stand-in for a command's library function (with its signature, whose defaults the command's parser reads):
    one message at each level through its module's logger, a QffsNote, then an error."""

    @functools.wraps(function)
    def speak(*args, **kwargs):
        log = logging.getLogger(function.__module__)
        log.debug("a debug message")
        log.info("an info message")
        log.warning("a warning")
        warnings.warn("a note", QffsNote)
        raise QffsError("stopped")

    return speak


EVERY = ["an info message", "warning: a warning", "note: a note"]


@pytest.mark.parametrize("main, module, name, argv, stream, flag, lines", [
    (train_main, train_module, "train", ["--dataset", "digits", "--arch", "mlp", "--out", "m.pt"], "out", [], EVERY),
    (train_main, train_module, "train", ["--dataset", "digits", "--arch", "mlp", "--out", "m.pt"], "out",
     ["--quiet"], EVERY),  # qffs-train's --quiet hides the progress bars, not the epoch lines
    (train_main, train_module, "train", ["--dataset", "digits", "--arch", "mlp", "--out", "m.pt"], "out", ["-v"],
     ["a debug message", *EVERY]),
    (export_main, exporter, "export", ["m.pt", "n.h5"], "out", [], EVERY),
    (export_main, exporter, "export", ["m.pt", "n.h5"], "out", ["--verbose"], ["a debug message", *EVERY]),
    (run_main, evaluate, "run", ["n.h5", "--dataset", "digits"], "err", [], EVERY),
    (run_main, evaluate, "run", ["n.h5", "--dataset", "digits"], "err", ["--quiet"], EVERY[1:]),
    (run_main, evaluate, "run", ["n.h5", "--dataset", "digits"], "err", ["-v"], ["a debug message", *EVERY]),
])
def test_a_command_says_the_librarys_messages_on_its_stream_at_the_level_its_flags_set(
        main, module, name, argv, stream, flag, lines, monkeypatch, capsys):
    monkeypatch.setattr(module, name, speaking(getattr(module, name)))
    assert main(argv + flag) == 2
    out, err = capsys.readouterr()
    messages, other = (out, err) if stream == "out" else (err, out)
    assert messages.splitlines() == lines + ([] if stream == "out" else ["error: stopped"])
    assert other == ("error: stopped\n" if stream == "out" else "")
    assert logging.getLogger("qffs_lava").level == logging.INFO  # as it was before the command


def test_under_torchrun_a_command_says_rank_0s_messages_alone(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(evaluate, "run", speaking(evaluate.run))
    assert run_main(["n.h5", "--dataset", "digits"]) == 2
    assert capsys.readouterr() == ("", "error: [rank 1] stopped\n")
