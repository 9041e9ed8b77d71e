"""What a user sees in the terminal: no C++ log noise, cheap checks first, honest counts."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import run_cli

NOISE = ("I0000", "E0000", "W0000", "WARNING: All log messages", "cuInit", "Captures:")


def _quiet_env():
    return {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TLTOOL_DEBUG")}


@pytest.mark.slow
def test_predict_prints_no_tensorflow_log_lines(fitted_run, tiny_data):
    image = os.path.join(tiny_data, "apple", "apple_0.png")
    done = subprocess.run([sys.executable, "-m", "tltool", "predict", fitted_run, image], capture_output=True,
                          text=True, env=_quiet_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(NOISE)] == []
    assert "apple_0.png:" in done.stdout
    verbose = subprocess.run([sys.executable, "-m", "tltool", "--verbose", "predict", fitted_run, image],
                             capture_output=True, text=True, env=_quiet_env(), timeout=300)
    assert any(line.startswith(NOISE) for line in verbose.stderr.splitlines())  # still there when asked for


@pytest.mark.slow
def test_lr_find_prints_no_tensorflow_log_lines(tiny_data, backbone_file, tmp_path):
    done = subprocess.run([sys.executable, "-m", "tltool", "lr-find", tiny_data, "-b", "vgg16", "--weights",
                           backbone_file, "--image-size", "32", "--batch-size", "4", "--out", str(tmp_path / "lr")],
                          capture_output=True, text=True, env=_quiet_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(NOISE)] == []
    assert "suggested learning rate" in done.stdout


@pytest.mark.slow
def test_bad_paths_are_refused_before_tensorflow_loads(tmp_path):
    code = ("import sys\nfrom click.testing import CliRunner\nfrom tltool.cli import cli\n"
            f"r = CliRunner().invoke(cli, ['predict', {str(tmp_path / 'nope')!r}, 'x.jpg'])\n"
            f"e = CliRunner().invoke(cli, ['evaluate', {str(tmp_path)!r}, {str(tmp_path / 'nodata')!r}])\n"
            "print(r.exit_code, e.exit_code, 'tensorflow' in sys.modules)\nprint(r.output, e.output)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    first = done.stdout.splitlines()[0]
    assert first == "2 2 False", done.stdout + done.stderr
    assert "no such file or folder" in done.stdout


def test_top_k_zero_is_refused(fitted_run, tiny_data):
    result = run_cli("predict", fitted_run, tiny_data, "--top-k", "0")
    assert result.exit_code == 2 and "--top-k 0" in result.output


def test_tltool_marker_files_are_not_counted_as_ignored(tiny_data, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(tiny_data, data)
    (data / ".tltool-example").write_text("{}")
    result = run_cli("inspect", data)
    assert result.exit_code == 0, result.output
    assert "0 hidden ignored" in result.output
    (data / ".DS_Store").write_text("junk")
    assert "1 hidden ignored" in run_cli("inspect", data).output


def test_validate_reports_every_backbone_problem_with_its_key_path(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: bad\nphases:\n"
                      "  - {name: a, epochs: 1, trainable: {last_groups: 40}}\n"
                      "  - {name: b, epochs: 1, trainable: {groups: [stage9]}}\n"
                      "  - {name: c, epochs: 1, trainable: {from_layer: nope}}\n")
    result = run_cli("recipes", "validate", recipe, "--backbone", "mobilenetv2")
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert [e.split(": ")[2] for e in errors] == ["phases[0].trainable.last_groups", "phases[1].trainable.groups",
                                                  "phases[2].trainable.from_layer"]
    assert "has 18 groups, not 40" in errors[0]


def _commands():
    import click

    from tltool.cli import cli

    for name, command in sorted(cli.commands.items()):
        subs = command.commands.items() if isinstance(command, click.Group) else [(None, command)]
        for sub, leaf in subs:
            yield " ".join(filter(None, [name, sub])), leaf


def test_each_short_flag_means_one_thing_in_every_command():
    import click

    meaning = {}
    for _, command in _commands():
        for param in command.params:
            if isinstance(param, click.Option):
                longs = tuple(o for o in param.opts if o.startswith("--"))
                for short in (o for o in param.opts if not o.startswith("--")):
                    meaning.setdefault(short, set()).add(longs)
    assert {short: longs for short, longs in meaning.items() if len(longs) > 1} == {}


def test_help_shows_the_default_of_every_option_the_recipe_decides():
    import click

    for name, command in _commands():
        for param in command.params:
            if isinstance(param, click.Option) and {"--batch-size", "--epochs", "--seed", "--val-split",
                                                    "--aspect", "--image-size"} & set(param.opts):
                assert param.show_default or "[default" in param.help, (name, param.opts)
