"""The ``attnkit`` command line: parsing, delegation, backends, demo smoke runs."""

import os
import re
import shlex
import subprocess
import sys
import types

import keras
import matplotlib.image
import numpy as np
import pytest

from attnkit import attention_maps
from attnkit.cli import main as cli
from attnkit.cli.demos import common

BACKEND = keras.backend.backend()
OTHER_BACKEND = next(b for b in cli.BACKENDS if b != BACKEND)


def _run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _exit_code(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code, out, err


def _fake_module(monkeypatch, name, run):
    module = types.ModuleType(name)

    def add_arguments(parser):
        common.add_common_arguments(parser, epochs=3, out="attnkit-out/fake")
        parser.add_argument("--length", type=int, default=7)

    module.add_arguments = add_arguments
    module.run = run
    monkeypatch.setitem(sys.modules, name, module)
    return module


def _check_png(path):
    assert path.is_file(), path
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
    assert pixels.std() > 0.01  # something was drawn


# --help everywhere


def test_top_level_help_lists_the_commands(capsys):
    code, out, _ = _exit_code(capsys, "--help")
    assert code == 0
    for command in ("info", "demo", "bench", "show"):
        assert command in out


def test_demo_help_lists_the_demos(capsys):
    code, out, _ = _exit_code(capsys, "demo", "--help")
    assert code == 0
    for name in ("dates", "addition", "digits"):
        assert name in out


@pytest.mark.parametrize("name", ["dates", "addition", "digits"])
def test_every_demo_takes_the_common_flags(capsys, name):
    code, out, _ = _exit_code(capsys, "demo", name, "--help")
    assert code == 0
    for flag in ("--epochs", "--seed", "--out", "--backend"):
        assert flag in out, flag


def test_info_and_bench_help(capsys):
    code, out, _ = _exit_code(capsys, "info", "--help")
    assert code == 0 and "--backend" in out
    code, out, _ = _exit_code(capsys, "bench", "--help")
    assert code == 0 and "--backend" in out and "--backends" in out


@pytest.mark.parametrize("argv", [["info"], ["bench"], ["demo", "digits"], ["demo", "dates"]])
def test_every_command_offers_the_one_backend_list(capsys, argv):
    code, _, err = _exit_code(capsys, *argv, "--backend", "numpy")
    assert code == 2
    assert "argument --backend: invalid choice: 'numpy'" in err
    listed = re.search(r"\(choose from (.*)\)", err)[1]
    assert [b.strip(" '") for b in listed.split(",")] == list(cli.BACKENDS)


# info and backends


def test_info_reports_the_running_backend(capsys):
    rc, out, _ = _run(capsys, "info", "--backend", BACKEND)
    assert rc == 0
    assert f"backend   {BACKEND}" in out
    assert f"keras     {keras.__version__}" in out


def test_in_process_backend_mismatch_is_an_error(capsys):
    rc, _, err = _run(capsys, "info", "--backend", OTHER_BACKEND)
    assert rc == 2
    assert f"--backend {OTHER_BACKEND}" in err and f"runs on {BACKEND}" in err


def test_console_script_switches_backend(tmp_path):
    """`--backend` wins over KERAS_BACKEND though importing attnkit imports Keras."""
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("ATTNKIT_CLI_REEXEC", None)
    code = "import sys; from attnkit.cli.main import main; sys.exit(main())"
    result = subprocess.run(
        [sys.executable, "-c", code, "info", "--backend", OTHER_BACKEND],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"backend   {OTHER_BACKEND}" in result.stdout


# argument errors name the argument and the value


@pytest.mark.parametrize(
    "argv, match",
    [
        (
            ["--epochs", "0"],
            "argument --epochs: expected a positive integer. Received: '0'",
        ),
        (
            ["--epochs", "two"],
            "argument --epochs: expected a positive integer. Received: 'two'",
        ),
        (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
        (["--backend", "numpy"], "argument --backend: invalid choice: 'numpy'"),
        (["--nope"], "unrecognized arguments: --nope"),
    ],
)
def test_bad_demo_arguments_exit_2_naming_argument_and_value(capsys, monkeypatch, argv, match):
    _fake_module(monkeypatch, "attnkit.cli.demos.digits", run=lambda args: 0)
    code, _, err = _exit_code(capsys, "demo", "digits", *argv)
    assert code == 2
    assert match in err


def test_addition_length_below_eleven_is_refused(capsys):
    # attnkit.data.addition needs T0 >= 11 (the first marked step is drawn from [1, 9]).
    code, _, err = _exit_code(capsys, "demo", "addition", "--length", "10")
    assert code == 2
    assert "argument --length: expected an integer >= 11. Received: '10'" in err


def test_missing_command_and_unknown_demo(capsys):
    assert _exit_code(capsys)[0] == 2
    code, _, err = _exit_code(capsys, "demo", "mnist")
    assert code == 2 and "invalid choice: 'mnist'" in err


# delegation to command modules


def test_demo_delegates_to_its_module(capsys, monkeypatch, tmp_path):
    seen = {}

    def run(args):
        seen.update(vars(args))
        return 7

    _fake_module(monkeypatch, "attnkit.cli.demos.dates", run)
    rc, _, _ = _run(
        capsys,
        "demo",
        "dates",
        "--epochs",
        "2",
        "--seed",
        "5",
        "--out",
        str(tmp_path),
        "--length",
        "9",
    )
    assert rc == 7
    assert seen["epochs"] == 2 and seen["seed"] == 5 and seen["length"] == 9
    assert str(seen["out"]) == str(tmp_path)


def test_bench_delegates_to_its_module(capsys, monkeypatch):
    module = types.ModuleType("attnkit.cli.bench")
    module.add_arguments = lambda parser: parser.add_argument("--plot", action="store_true")
    module.run = lambda args: 0 if args.plot else 1
    monkeypatch.setitem(sys.modules, "attnkit.cli.bench", module)
    assert _run(capsys, "bench", "--plot")[0] == 0
    assert _run(capsys, "bench", "--backend", BACKEND)[0] == 1  # --backend added for it


def test_bench_refuses_an_unknown_implementation(capsys):
    rc, out, err = _run(capsys, "bench", "--impls", "naive", "flash")
    assert rc == 2 and not out
    assert "`--impls` must be one of ('auto', 'naive'," in err
    assert "Received: --impls='flash'" in err


# demo smoke runs: tiny data, one epoch; artefacts exist and are valid


def _show_line(stdout):
    """The `attnkit show` line a demo printed, as argv for cli.main."""
    (line,) = [x for x in stdout.splitlines() if x.strip().startswith("interactive view: ")]
    argv = shlex.split(line.split("interactive view: ", 1)[1])
    assert argv[:2] == ["attnkit", "show"]
    return argv[1:]


def _digits(capsys, out):
    argv = ["demo", "digits", "--epochs", "1", "--limit", "100", "--seed", "3"]
    rc, stdout, _ = _run(capsys, *argv, "--out", str(out))
    assert rc == 0
    show = _show_line(stdout)
    assert show[1] == str(out / "digits.keras") and show[3:5] == ["--view", "model"]
    assert np.load(show[2]).shape == (16, 8, 8, 1)  # the digits of the attention figure
    return [line for line in stdout.splitlines() if line.startswith("test accuracy: ")]


def test_demo_digits_smoke_and_same_seed_same_model(capsys, tmp_path):
    lines = _digits(capsys, tmp_path / "a")
    assert len(lines) == 1 and lines[0].endswith("/20)")  # 20% of 100 images
    _check_png(tmp_path / "a" / "digits_attention.png")
    model = keras.saving.load_model(tmp_path / "a" / "digits.keras")
    x = np.zeros((2, 8, 8, 1), "float32")
    probs = model.predict(x, verbose=0)
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    maps = attention_maps(model, x)
    assert maps["spatial_attention"].shape == (2, 2, 8, 8, 8, 8)
    # A second run with the same seed trains exactly the same model.
    assert _digits(capsys, tmp_path / "b") == lines
    again = keras.saving.load_model(tmp_path / "b" / "digits.keras")
    for wa, wb in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_demo_addition_smoke(capsys, tmp_path):
    rc, stdout, _ = _run(
        capsys,
        "demo",
        "addition",
        "--length",
        "12",
        "--epochs",
        "2",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--test-size",
        "20",
        "--out",
        str(tmp_path),
    )
    assert rc == 0
    epochs = [line for line in stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1", "epoch 2"]
    assert all("test accuracy" in line and "|error| < 0.04" in line for line in epochs)
    _check_png(tmp_path / "addition_attention.png")
    show = _show_line(stdout)  # the printed line opens the saved model on its inputs
    assert cli.main(show) == 0
    assert "addition_matrix.html" in capsys.readouterr().out
    _check_png(tmp_path / "show" / "addition_matrix.png")
    model = keras.saving.load_model(tmp_path / "addition.keras")
    assert model.predict(np.zeros((2, 14, 2), "float32"), verbose=0).reshape(2, -1).shape == (2, 1)
