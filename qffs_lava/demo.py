"""`make demo`: the QFFS neuron on the paper's two occasional-noise examples (section 4.3).

An ANN input of 0.4 over 10 steps should give 4 spikes (threshold 1, scaled here to
10 so the half-threshold pre-charge is an integer). The QFFS neuron ends at 4 in both
cases: late spikes follow in the extended steps, wrong spikes are cancelled.
"""

import numpy as np

from qffs_lava.dynamics import NeuronParams, neuron_init, neuron_step

EXAMPLES = {
    "-1 x9 then +13 (too few spikes in the window)": [-10] * 9 + [130],
    "+1 x8 then -2 x2 (too many spikes in the window)": [10] * 8 + [-20] * 2,
}


def trace(inputs, threshold=10, z_max=10, idle_steps=5):
    """Spikes, v and z of one QFFS neuron per step, with idle steps after the input."""
    params = NeuronParams(threshold=threshold, z_max=z_max, v_init=threshold // 2)
    state = neuron_init(np.zeros(1, dtype=np.int64), params)
    rows = []
    for current in inputs + [0] * idle_steps:
        spike, state = neuron_step(np.array([current]), state, params)
        rows.append((current, int(spike[0]), int(state.v[0]), int(state.z[0])))
    return rows


def main():
    for title, inputs in EXAMPLES.items():
        print(f"\n{title}: sum of inputs {sum(inputs)}, threshold 10, pre-charge 5")
        print(f"{'t':>3} {'input':>6} {'spike':>6} {'v':>5} {'z':>3}")
        for t, (current, spike, v, z) in enumerate(trace(inputs), start=1):
            note = "   (input off)" if t == len(inputs) + 1 else ""
            print(f"{t:>3} {current:>6} {spike if spike <= 0 else '+1':>6} {v:>5} {z:>3}{note}")
    print("\nBoth end at z = 4 = floor((40 + 5) / 10): the quantized ANN's activation.")
    print("The full pipeline demo (train, export, Lava) arrives with the later issues.")


if __name__ == "__main__":
    main()
