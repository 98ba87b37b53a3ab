"""Benchmark: per-step cost of a QffsNeuron process against lava-nc's LIF fixed_pt model.

Both neurons get the same shape and the same graded input from a RingBuffer source, run
the same number of steps in Lava's CPU simulator (Loihi2SimCfg, fixed_pt), and the best
of a few repeats is reported per step. The ratio QffsNeuron / LIF has a target of at
most 1.2. Run it as `python bench/lava_neuron_speed.py [--shape 28 28 16] [--steps 500]`.
"""

import argparse
import time

import numpy as np

from qffs_lava.backends.lava.adapter import import_lava


def time_steps(build, data: np.ndarray, steps: int, repeats: int) -> float:
    """Best wall time per step, over `repeats` runs of `steps` steps after 10 warm-up steps, of the
    Processes that build(port) connects to a RingBuffer source sending `data` (Loihi2SimCfg, fixed_pt)."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer

    best = float("inf")
    for _ in range(repeats):
        source = RingBuffer(data=data)
        build(source.s_out)
        try:
            source.run(condition=RunSteps(num_steps=10), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))  # warm-up
            start = time.perf_counter()
            source.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
            best = min(best, (time.perf_counter() - start) / steps)
        finally:
            source.stop()
    return best


def measure(shape=(28, 28, 16), steps: int = 500, repeats: int = 3) -> dict:
    """Best per-step time of LIF (fixed_pt) and of QffsNeuron on the same shape and input, and the ratio."""
    import_lava()
    from lava.proc.lif.process import LIF

    from qffs_lava.backends.lava.procs.process import QffsNeuron

    shape = tuple(shape)
    data = np.random.default_rng(0).integers(-300, 300, size=shape + (64,)).astype(np.int32)

    def feeding(make_neuron):
        return lambda port: port.connect(make_neuron().a_in)

    lif = time_steps(feeding(lambda: LIF(shape=shape, du=4095, dv=0, vth=1000, bias_mant=0, bias_exp=0)), data,
                     steps, repeats)
    qffs = time_steps(feeding(lambda: QffsNeuron(shape=shape, threshold=1000, v_init=500, z_max=3, bias=10,
                                                 bias_start=2, bias_steps=3, reset_interval=20)), data, steps, repeats)
    return {"shape": list(shape), "steps": steps, "lif_step_s": lif, "qffs_step_s": qffs, "ratio": qffs / lif}


def report(figures: dict) -> str:
    return (f"shape {tuple(figures['shape'])}, {figures['steps']} steps, fixed_pt: "
            f"LIF {figures['lif_step_s'] * 1e3:.3f} "
            f"ms per step, QffsNeuron {figures['qffs_step_s'] * 1e3:.3f} ms per step, ratio "
            f"{figures['ratio']:.2f} (target <= 1.2)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[28, 28, 16], help="neuron shape (default 28 28 16)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(report(measure(args.shape, args.steps, args.repeats)))


if __name__ == "__main__":
    main()
