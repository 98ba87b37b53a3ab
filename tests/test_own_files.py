"""What a new user meets with a model of their own, their own files and a full disk (issue 26): each test runs the
user's command and checks what it now prints and exits with."""

from test_user_errors import assert_refused, cli


# 3. --arch and --init -------------------------------------------------------------------------------


def test_an_arch_that_contradicts_the_init_model_file_is_refused(digits_model_file, tmp_path):
    result = cli("qffs-train", "--dataset", "digits", "--arch", "lenet", "--init", digits_model_file,
                 "--float-epochs", "0", "--qat-epochs", "1", "--out", tmp_path / "m.pt", "--quiet")
    assert_refused(result, f"--init {digits_model_file} is a model file of the architecture 'mlp', which it brings "
                           "with it; --arch 'lenet' contradicts it: give --arch mlp")
    assert not (tmp_path / "m.pt").exists()


# 8. Nothing changes silently; 10. the report says which time it is in ---------------------------------


def test_more_samples_than_the_split_holds_are_said(digits_net):
    result = cli("qffs-run", digits_net, "--dataset", "digits", "--samples", "10000", "--steps", "4", "--quiet",
                 "--backend", "qann")
    assert result.returncode == 0, result.stderr
    assert "note: --samples 10000, but digits test split has 450; running all 450" in result.stderr
    assert "450 samples" in result.stdout


def test_a_mode_the_backend_does_not_run_is_refused(digits_net):
    assert_refused(cli("qffs-run", digits_net, "--dataset", "digits", "--backend", "lava", "--mode", "sync"),
                   "--mode sync: the lava backend runs pipelined only")
    assert_refused(cli("qffs-run", digits_net, "--dataset", "digits", "--backend", "qann", "--mode", "pipelined"),
                   "--mode pipelined: the qann backend has no time steps")


def test_workers_without_a_backend_that_has_them_is_refused(digits_net):
    assert_refused(cli("qffs-run", digits_net, "--dataset", "digits", "--workers", "3"),
                   "--workers 3 is for the lava, lava-float, loihi2 backends, which run in worker processes; the "
                   "torch backend runs in this one")


def test_the_report_says_which_time_it_is_in_and_what_was_not_reached(digits_net):
    synchronous = cli("qffs-run", digits_net, "--dataset", "digits", "--samples", "20", "--steps", "3", "--quiet")
    pipelined = cli("qffs-run", digits_net, "--dataset", "digits", "--samples", "20", "--steps", "3", "--quiet",
                    "--mode", "pipelined")
    assert "synchronous time: within a step every layer sees" in synchronous.stdout
    assert "pipelined time, as Lava and Loihi 2 run it" in pipelined.stdout and "D = 3" in pipelined.stdout
    assert "SNN == QANN on every sample: not reached by t = 3" in synchronous.stdout
    assert "from step (not reached" not in synchronous.stdout


def test_an_ablation_plot_names_the_ablation(digits_net, tmp_path, monkeypatch):
    import matplotlib.axes

    labels = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda self, *args, **kwargs: labels.append(kwargs.get("label")) or original(self, *args,
                                                                                                     **kwargs))
    result = cli("qffs-run", digits_net, "--dataset", "digits", "--samples", "20", "--steps", "4", "--quiet",
                 "--ablate", "precharge", "--plot", tmp_path / "p.png")
    assert result.returncode == 0, result.stderr
    assert labels and all(label == "torch without precharge" for label in labels)
