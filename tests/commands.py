"""The commands as a user runs them, in this process: their output and exit code, and a one-line refusal."""

import contextlib
import io
import os
import subprocess

import torch
from qffs_export.cli import export_main

import qffs_lava.cli as cli_module


def cli(command, *args, cwd=None):
    """Run a command's main (what the qffs-train/-export/-run scripts call) in this process, as a user would.

    Returns (returncode, stdout, stderr) like subprocess.run; argparse's exit becomes the code.
    """
    main = {"qffs-train": cli_module.train_main, "qffs-export": export_main, "qffs-run": cli_module.run_main}[command]
    out, err = io.StringIO(), io.StringIO()
    here, threads = os.getcwd(), torch.get_num_threads()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit_:
                code = exit_.code
    finally:
        os.chdir(here)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def assert_refused(result, message):
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, argparse's errors too

