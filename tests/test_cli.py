"""The commands are thin: their defaults are the library's, every option says what it does, every command
has --version, and library errors reach the user naming the command's own flags."""

import argparse
import dataclasses
import inspect

import pytest
from qffs_export.cli import export_main
from qffs_export.exporter import export

import qffs_lava
from qffs_lava.ann.train import TrainConfig
from qffs_lava.cli import TRAIN_OPTIONS, inspect_main, run_main, train_main
from qffs_lava.errors import ParameterError, QffsError
from qffs_lava.evaluate import run

COMMANDS = {"qffs-train": train_main, "qffs-export": export_main, "qffs-inspect": inspect_main,
            "qffs-run": run_main}


def parser_of(main) -> argparse.ArgumentParser:
    return main.build_parser()


def defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_qffs_train_has_an_option_for_every_training_setting_with_its_default():
    parser = parser_of(train_main)
    actions = {action.dest: action for action in parser._actions}
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("dataset", "arch"):
            assert actions[field.name].required
            continue
        assert field.name in TRAIN_OPTIONS and field.name in actions, f"no qffs-train option for {field.name}"
        assert actions[field.name].default == field.default, field.name


@pytest.mark.parametrize("main, function", [(run_main, run), (export_main, export)])
def test_qffs_run_and_export_take_the_librarys_defaults(main, function):
    actions = {action.dest: action for action in parser_of(main)._actions}
    shared = set(actions) & set(defaults(function))
    assert len(shared) >= 3
    for name in shared:
        cli, library = actions[name].default, defaults(function)[name]
        assert (list(cli) == list(library)) if isinstance(library, tuple) else cli == library, name


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_says_what_it_does_and_its_default(command):
    """Each option has a help of its own (no two of a command alike, none that only repeats its name), and names
    its default wherever the default is a value (not off, none or empty)."""
    parser = parser_of(COMMANDS[command])
    helps = [action.help for action in parser._actions]
    assert len(set(helps)) == len(helps), sorted(h for h in helps if helps.count(h) > 1)
    formatter = parser._get_formatter()
    for action in parser._actions:
        name = f"{command} {action.option_strings or action.dest}"
        assert action.help and action.help.strip(" .").lower() != action.dest.replace("_", " "), name
        if action.default not in (None, argparse.SUPPRESS) and not isinstance(action.default, (bool, list, tuple)):
            assert str(action.default) in formatter._expand_help(action), f"{name}: its default {action.default!r}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_version(command, capsys):
    with pytest.raises(SystemExit) as stop:
        COMMANDS[command](["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"{command} (qffs-lava) {qffs_lava.__version__}"


def test_a_library_error_names_python_arguments_and_the_command_its_flags(capsys):
    err = ParameterError("{} needs {} with a trained model file", ("float_epochs", 0), "init")
    assert str(err) == "float_epochs=0 needs init with a trained model file"
    assert train_main(["--dataset", "digits", "--arch", "mlp", "--out", "/tmp/x.pt", "--float-epochs", "0",
                       "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == "error: --float-epochs 0 needs --init with a trained model file or " \
                                              "state dict"
    plain = QffsError("a {brace} is only text")  # no parameters: the message as it is
    assert str(plain) == "a {brace} is only text" and plain.render(lambda n, v: "?") == str(plain)


def test_a_negative_flag_is_shown_for_its_parameter():
    err = QffsError("the network does not fit ({} exports it anyway)", ("loihi_check", False))
    assert str(err) == "the network does not fit (loihi_check=False exports it anyway)"
    from qffs_lava.cli import flag_for

    assert err.render(flag_for(parser_of(export_main))) == "the network does not fit (--no-loihi-check exports it " \
                                                           "anyway)"


@pytest.mark.e2e
def test_output_into_a_pipe_whose_reader_is_gone_ends_quietly(digits_net, tmp_path):
    """`qffs-inspect net.h5 | true` (or `| head` once head has read enough): no traceback, exit 141 as a command
    killed by SIGPIPE (the reader exits before the command has imported torch, so its first write finds no reader)."""
    import subprocess
    import sys
    from pathlib import Path

    inspect_command = Path(sys.executable).parent / "qffs-inspect"
    done = subprocess.run(["bash", "-c", f'"{inspect_command}" "{digits_net}" 2>"{tmp_path / "err"}" | true; '
                           'echo "${PIPESTATUS[0]}"'], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "141" and (tmp_path / "err").read_text() == ""


AT_FORK = """
import os, signal, sys
from qffs_lava.signals import Stopped, stop_signals_raise

os.register_at_fork(after_in_parent=lambda: signal.raise_signal(signal.SIGTERM))
try:
    with stop_signals_raise(whole_process=False):
        if os.fork() == 0:
            os._exit(0)
        os.wait()
        sum(range(10**6))
except Stopped:
    sys.exit(143)
"""


def test_a_stop_that_python_swallows_is_raised_again():
    """A stop signal whose handler runs where Python swallows exceptions (a __del__; an at-fork hook, as when a
    DataLoader forks its workers, where a SIGTERM was seen lost) is not lost: it is raised again just after."""
    import signal
    import subprocess
    import sys

    from qffs_lava.signals import Stopped, stop_signals_raise

    class Dropped:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)
            sum(range(1000))  # the handler raises in here, and Python prints "Exception ignored"

    with pytest.raises(Stopped):
        with stop_signals_raise(whole_process=False):
            Dropped()
            sum(range(10**6))
    forked = subprocess.run([sys.executable, "-c", AT_FORK], capture_output=True, text=True, timeout=60)
    assert forked.returncode == 143, forked.stderr


def _swallow(signum):
    """A library that swallows everything (a bare `except:`), as C code that clears errors does where no hook sees
    it: a Ctrl-C pressed as qffs-run imported h5py was lost so, and the run went on to exit 0."""
    import signal

    try:
        signal.raise_signal(signum)
        sum(range(1000))
    except BaseException:  # noqa: BLE001 - the point of the test
        pass


def test_a_stop_swallowed_where_no_hook_sees_it_ends_the_command_at_the_next_checkpoint(capsys):
    """Before a block that defers stops (a Lava run, a DataLoader's start) and before a command reports success,
    a stop it received and never saw raised ends it, with the stop's exit code and line."""
    import signal

    from qffs_lava.cli import command, new_parser
    from qffs_lava.signals import stops_deferred

    reached = []

    @command(lambda: new_parser("swallowing-run", "a run whose imports swallow a SIGTERM"))
    def swallowing_run(args, parser):
        _swallow(signal.SIGTERM)
        reached.append("swallowed")
        with stops_deferred():
            reached.append("a Lava run")

    @command(lambda: new_parser("swallowing-report", "a report whose last step swallows a Ctrl-C"))
    def swallowing_report(args, parser):
        reached.append("report")
        _swallow(signal.SIGINT)

    assert swallowing_run([]) == 143 and reached == ["swallowed"]
    assert capsys.readouterr().err.splitlines() == ["interrupted by SIGTERM"]
    assert swallowing_report([]) == 130 and reached == ["swallowed", "report"]
    assert capsys.readouterr().err.splitlines() == ["interrupted"]
    with stops_deferred():
        pass  # outside a command, nothing stale is raised
