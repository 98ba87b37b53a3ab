"""make paper's words (bench/paper_report.py): a sweep is called the paper's shape only where its accuracy gain is
more than the seeds' measured spread, each step of it is told apart from the seeds' spread, and a float output is
compared with the same allowance."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from paper_report import noise_words, seed_range, shape  # noqa: E402

MNIST = ("mnist", "lenet")


def run(hidden, out, qann, settled, seed=0):
    return {"dataset": "mnist", "arch": "lenet", "hidden_bits": hidden, "out_bits": out, "seed": seed,
            "qann_accuracy": qann, "settled_mean": settled, "float_accuracy": 0.9935}


def test_seed_range_is_the_widest_spread_over_seeds_of_one_configuration():
    runs = [run(2, 3, 0.990, 6), run(2, 3, 0.985, 6, seed=1), run(2, 3, 0.992, 6, seed=2),
            run(2, "float", 0.991, 5), run(2, "float", 0.990, 5, seed=1), run(3, 3, 0.80, 8)]
    assert seed_range(runs, MNIST) == 100 * (0.992 - 0.985)
    assert seed_range(runs, ("fashionmnist", "resnet8")) is None
    assert seed_range([run(2, 3, 0.99, 6), run(3, 3, 0.5, 8)], MNIST) is None  # two configurations, not two seeds


def test_a_gain_within_the_seeds_spread_is_not_called_the_papers_shape():
    sweep = [run(1, 3, 0.9886, 6.7), run(2, 3, 0.9922, 6.3), run(3, 3, 0.9914, 8.1)]  # +0.28 points, longer
    said = shape(sweep, "hidden_bits", 0.2)
    assert "This is the paper's shape" in said and "only 1/3 -> 2/3 is a difference this run can tell" in said
    assert "Beyond 2/3 the accuracy is flat" in said and "0.13 points from the float ANN's 99.35%" in said
    lost = shape([run(1, 3, 0.95, 6), run(2, 3, 0.99, 7), run(3, 3, 0.97, 8)], "hidden_bits", 0.5)
    assert "Not the paper's shape: more bits lose accuracy" in lost and "2/3 -> 3/3 -2.00" in lost
    within = shape(sweep, "hidden_bits", 0.5)
    assert "does not rise by more than seeds alone move it" in within and "+0.28" in within
    assert "not measured yet" in shape(sweep, "hidden_bits", None)
    assert "Not the paper's shape" in shape([run(1, 3, 0.95, 8), run(4, 3, 0.99, 7)], "hidden_bits", 0.1)


def test_a_float_output_is_more_accurate_only_beyond_the_seeds_spread():
    sweep = [run(2, 3, 0.9922, 6.3), run(2, "float", 0.9938, 5.1)]  # +0.16 points, sooner
    assert "as in the paper's Figure 7" in shape(sweep, "out_bits", 0.1)
    within = shape(sweep, "out_bits", 0.3)
    assert "as accurate (+0.16 points, within the 0.30" in within and "found it both" in within
    assert "less accurate" in shape([run(2, 3, 0.99, 6), run(2, "float", 0.98, 5)], "out_bits", None)


def test_the_loss_without_noise_handling_is_set_beside_the_papers_figure_3_by_its_size():
    def measured(qann, without):
        return {**run(2, 3, qann, 6), "accuracy_by_step": [qann], "noise_off": {"accuracy_by_step": [without]}}

    far = noise_words([measured(0.92, 0.83), measured(0.93, 0.90)])
    assert "As in the paper's Figure 3" in far and "loses up to 9.00 points" in far and "-9.00, -3.00" in far
    small = noise_words([measured(0.99, 0.9972), measured(0.99, 0.9880)])
    assert "Unlike the paper's Figure 3" in small and "at most 0.20 points" in small
    assert "loses nothing without them" in noise_words([measured(0.99, 0.9910)])
