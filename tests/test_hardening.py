"""Hostile and broken input, overflow, atomic writes, and clean shutdown of Lava runs."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from processes import Snapshot, alive, descendants_of
from terminal import MOMENTS, ctrl_c_in_a_terminal

from qffs_lava.ann.modelfile import MODEL_FORMAT, load_model_file
from qffs_lava.backends import simulate
from qffs_lava.backends.lava.adapter import import_lava
from qffs_lava.dynamics import V_MAX, V_MIN
from qffs_lava.errors import ModelFileError, QffsError, QffsFormatError
from qffs_lava.messages import QffsNote
import qffs_lava as qffs
from qffs_lava.reports import write_json
from qffs_lava.ir.layers import DenseSynapse, InputLayer, NeuronLayer, Neurons
from qffs_lava.ir.loihi import loihi_problems
from qffs_lava.ir.netfile import read_net, write_net
from qffs_lava.ir.network import Network


def press_ctrl_c_during_a_lava_run(net, moment, workers):
    """Ctrl-C in a terminal running `qffs-run --backend lava` (3 runtimes of 100 samples of the per-sample
    network, one after the other or in 2 worker processes; T = 12, two seconds a runtime on a fast 2-core machine,
    so that the running moment comes inside one): one line, exit code 130 within a few seconds, and no process,
    shared memory or temporary file left."""
    before = Snapshot()
    qffs_run = str(Path(sys.executable).parent / "qffs-run")
    run = ctrl_c_in_a_terminal([qffs_run, str(net), "--dataset", "digits", "--samples", "300", "--backend",
                                "lava", "--lava-batch", "1", "--steps", "12", "--quiet", "--workers", str(workers)],
                               moment,
                               dict(os.environ))
    lines = [line.strip() for line in run.output.replace("^C", "").splitlines() if line.strip()]
    assert run.exit_code == 130, run.output
    assert lines == ["interrupted"], run.output
    assert run.seconds_to_exit < 10
    time.sleep(1)
    assert not [pid for pid in run.workers if alive(pid)], "processes outlived the run"
    assert not before.left()
    return run


@pytest.mark.parametrize("moment, workers", [
    (moment, workers) if (moment, workers) in {("starting", 1), ("stopping", 1)}
    else pytest.param(moment, workers, marks=pytest.mark.slow)  # make test: the first fork and a runtime's exit;
    for moment in MOMENTS for workers in (1, 2)])  # mid-run in 2 workers: test_keyboard_interrupt_inside_a_run
def test_ctrl_c_in_a_terminal_ends_a_lava_run_cleanly(digits_net, moment, workers, own_tmpdir):
    press_ctrl_c_during_a_lava_run(digits_net, moment, workers)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_in_a_terminal_ten_times_in_a_row_at_each_moment(digits_net, workers, own_tmpdir):
    for moment in MOMENTS:
        seconds = [press_ctrl_c_during_a_lava_run(digits_net, moment, workers).seconds_to_exit for _ in range(10)]
        print(f"{workers} workers, Ctrl-C while {moment}: exit 130 after {min(seconds):.2f}-{max(seconds):.2f} s "
              "(10 runs)")


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in this process, even if it was started with SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("workers", [1, 2])
def test_keyboard_interrupt_inside_a_run_stops_the_runtime(digits_net, workers, ctrl_c_raises, own_tmpdir):
    network = read_net(digits_net)
    snapshot = Snapshot()
    before = snapshot.descendants
    x = np.random.default_rng(0).integers(0, 17, size=(400, 1, 8, 8)) / 16
    me = os.getpid()

    def press_ctrl_c_once_running():
        deadline = time.monotonic() + 120
        while len(descendants_of(me)) < len(before) + 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        os.kill(me, signal.SIGINT)

    threading.Thread(target=press_ctrl_c_once_running, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        simulate(network, x, 16, "lava", chunk=400 // workers, workers=workers, lava_batch=1)  # 150 s to the end
    assert time.monotonic() - started < 100
    assert not snapshot.left()


def overflowing_network():
    """One dense layer of 2 neurons over 200 inputs at full scale: 200 * 254 * 255 per step, past 2^23."""
    weight = np.stack([np.full(200, 254), np.full(200, -256)]).astype(np.int64)
    neurons = Neurons(np.array([2**22, 2**22]), np.array([0, 0]), 1, 1)
    return Network([InputLayer((200,), 255.0), NeuronLayer((2,), (DenseSynapse(weight),), np.zeros(2, np.int64),
                                                           neurons)])


def test_overflowing_network_is_refused_for_lava_and_saturates_when_bypassed():
    network = overflowing_network()
    assert any("worst-case |v|" in p for p in loihi_problems(network))
    x = np.ones((2, 200))
    with pytest.raises(QffsFormatError, match=r"worst-case \|v\|"):
        qffs.run(network, x, None, 4, "lava", progress=False)
    torch_report = qffs.run(network, x, None, 4, "torch", "pipelined", progress=False)
    with pytest.warns(QffsNote, match="running one sample per Lava network"):
        lava_report = qffs.run(network, x, None, 4, "lava", progress=False, loihi_check=False)
    assert lava_report.output_counts == torch_report.output_counts == [[1, 0], [1, 0]]


@pytest.mark.parametrize("tag", ["fixed_pt", "floating_pt"])
def test_membrane_saturates_at_24_bits_in_the_lava_models(tag):
    import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer

    from qffs_lava.backends.lava.procs.process import QffsNeuron

    network = overflowing_network()
    source = RingBuffer(data=np.full((200, 8), 255, dtype=np.int32))
    dense = Dense(weights=network.layers[1].synapses[0].weight, num_message_bits=24)
    neuron = QffsNeuron(shape=(2,), threshold=2**22, v_init=0, z_max=1, bias=0, bias_start=1, bias_steps=1,
                        reset_interval=100)
    source.s_out.connect(dense.s_in)
    dense.a_out.connect(neuron.a_in)
    try:
        # step 1 drops the input; step 2: v = clip(12954000) = 2^23 - 1, one spike takes 2^22 off;
        # step 3: v saturates again and the count bound stops further spikes.
        source.run(condition=RunSteps(num_steps=2), run_cfg=Loihi2SimCfg(select_tag=tag))
        assert neuron.v.get().tolist() == [V_MAX - 2**22, V_MIN]
        source.run(condition=RunSteps(num_steps=1), run_cfg=Loihi2SimCfg(select_tag=tag))
        assert neuron.v.get().tolist() == [V_MAX, V_MIN]
        assert neuron.z.get().tolist() == [1, 0]
    finally:
        source.stop()


def test_a_crash_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    net_path = tmp_path / "net.h5"
    write_net(net_path, overflowing_network())
    before = net_path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)  # the file is written, then the disk turns out full
    with pytest.raises(QffsError, match=f"cannot write {net_path}: No space left on device .*; the file already "
                                        "there is as it was"):
        write_net(net_path, overflowing_network())
    monkeypatch.undo()
    assert net_path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["net.h5"]

    report = tmp_path / "report.json"
    write_json(report, {"a": 1})
    with pytest.raises(TypeError):
        write_json(report, {"not serialisable": object()})
    assert json.loads(report.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.h5", "report.json"]


def test_hostile_architecture_is_refused_before_anything_is_allocated(digits_model_file, tmp_path):
    content = torch.load(digits_model_file, weights_only=True)
    arch = json.loads(json.dumps(content["arch"]))
    nodes = {node["name"]: node for node in arch["nodes"]}
    nodes["fc1"]["out_features"] = 10**9  # a 64 GB weight if it were built
    nodes["fc1_bn"]["num_features"] = 10**9
    nodes["fc2"]["in_features"] = 10**9
    torch.save({**content, "arch": arch}, tmp_path / "huge.pt")
    with pytest.raises(ModelFileError, match=r"fc1\.weight is \(256, 64\), the architecture needs \(1000000000, 64\)"):
        load_model_file(tmp_path / "huge.pt")


@pytest.mark.e2e
def test_code_execution_payloads_never_run(tmp_path):
    marker = tmp_path / "payload-ran"

    class ShellPayload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": MODEL_FORMAT, "version": 1, "state_dict": {"w": ShellPayload()}}, path)
    with pytest.raises(ModelFileError, match="arbitrary unpickling"):
        load_model_file(path)
    result = subprocess.run([sys.executable, "-c", "import sys; from qffs_export.cli import export_main; "
                             "sys.exit(export_main())", str(path), str(tmp_path / "n.h5")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "arbitrary unpickling" in result.stderr
    assert not marker.exists()


def test_inputs_outside_the_dataset_range_are_refused(digits_net):
    network = read_net(digits_net)
    with pytest.raises(QffsError, match=r"inputs must be dataset values in \[0, 1\]"):
        qffs.run(network, np.full((2, 1, 8, 8), 16.0), None, 4, progress=False)
    with pytest.raises(QffsError, match="NaN"):
        qffs.run(network, np.full((2, 64), np.nan), None, 4, progress=False)
