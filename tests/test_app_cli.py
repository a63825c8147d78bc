"""The command-line convention across apps: -h everywhere, --dry-run on every trainer, and every
command line in README.md and docs/ naming an app and options that exist."""

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
APPS = sorted(p.name for p in (ROOT / "apps").iterdir() if (p / "__main__.py").is_file())
TRAINERS = ("pggan_train", "mask2image_train", "segmenter_train", "augment_eval", "compare_unconditional",
            "compare_translation")


# Each app's __main__ run as `python apps/NAME -h` runs it, all in one subprocess: torch is imported once.
HELP_SCRIPT = """
import contextlib, io, json, runpy, sys
out = {}
for app in sys.argv[1:]:
    sys.argv = [app, "-h"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        try:
            runpy.run_path(f"apps/{app}", run_name="__main__")
            code = 0
        except SystemExit as exit:
            code = exit.code or 0
    out[app] = [code, buffer.getvalue()]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def help_texts():
    proc = subprocess.run([sys.executable, "-c", HELP_SCRIPT, *APPS], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("app", APPS)
def test_every_app_answers_dash_h(app, help_texts):
    code, text = help_texts[app]
    assert code == 0 and text.startswith(f"Usage: {app} ") and "-h, --help" in text
    assert ("--dry-run" in text) == (app in TRAINERS)


DRY_RUNS = {
    "pggan_train": (["--arch", "dcgan", "--kimg", "3", "--batch", "8"],
                    lambda c: c["arch"] == "dcgan" and c["loop"]["total_kimg"] == 3 and c["batch_size"] == 8),
    "mask2image_train": (["--kimg", "0.5", "--arch", "spade"],
                         lambda c: c["loop"]["total_kimg"] == 0.5 and c["arch"] == "spade" and c["resolution"] == 64),
    "segmenter_train": (["--phantoms", "8", "--out", "seg"], lambda c: c["phantom_count"] == 8 and c["threads"] == 1),
    "augment_eval": (["--ratios", "0,1", "--batch", "16", "--resolution", "16"],
                     lambda c: c["ratios"] == [0, 1] and c["train"]["batch_size"] == 16 and c["train"]["resolution"] == 16),
    "compare_unconditional": (["--kimg", "2", "--archs", "pggan,lapgan", "--set", "lapgan.ngf=8"],
                              lambda c: c["compare"]["budget_kimg"] == 2 and set(c["runs"]) == {"pggan", "lapgan"}
                              and c["runs"]["lapgan"]["loop"]["total_kimg"] == 2),
    "compare_translation": (["--kimg", "2", "--archs", "ours,spade", "--ngf", "8", "--set", "spade.lr_d=0.001"],
                            lambda c: c["compare"]["checkpoints"] == [0.25, 0.5, 1.0] and set(c["runs"]) == {"ours", "spade"}
                            and {(r["loop"]["total_kimg"], r["ngf"], r["tick_kimg"]) for r in c["runs"].values()} == {(2, 8, 0.5)}
                            and c["runs"]["spade"]["lr_d"] == 0.001),
}


@pytest.mark.parametrize("app", TRAINERS)
def test_dry_run_prints_the_configuration_and_writes_nothing(app, load_app, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LESION_GAN_CACHE", str(tmp_path / "cache"))
    args, check = DRY_RUNS[app]
    result = CliRunner().invoke(load_app(app).main, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert check(json.loads(result.stdout))
    assert list(tmp_path.iterdir()) == []


def test_pggan_train_rejects_an_option_its_architecture_lacks(load_app):
    result = CliRunner().invoke(load_app("pggan_train").main, ["--arch", "lapgan", "--fmap-base", "64", "--dry-run"])
    assert result.exit_code == 2 and "--fmap-base is a PGGAN option; --arch lapgan does not use it" in result.output


def command_lines(text: str):
    """(app, arguments) of every ``apps/NAME ...`` line in the fenced blocks of a Markdown text."""
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        for line in block.replace("\\\n", " ").splitlines():
            match = re.search(r"apps/(\w+)(.*)", line.split(" # ")[0])
            if match:
                yield match.group(1), match.group(2).split()


def markdown_command_lines():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for app, args in command_lines(path.read_text()):
            yield pytest.param(app, args, id=f"{path.name}:{app} {' '.join(args)}"[:100])


def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"-h", "--help"}


@pytest.mark.parametrize(("app", "args"), list(markdown_command_lines()))
def test_documented_command_lines_use_existing_apps_and_options(app, args, load_app):
    assert app in APPS, f"apps/{app} does not exist"
    module = load_app(app)
    command = getattr(module, "main", None) or module.cli
    if isinstance(command, click.Group):
        name = next(arg for arg in args if not arg.startswith("-"))
        assert name in command.commands, f"{app} has no command {name}"
        command = command.commands[name]
    for arg in args:
        option = arg.strip("[]").split("=")[0]
        if option.startswith("-") and option not in ("-", "--", "..."):
            assert option in _options(command), f"apps/{app} has no option {option}"


def test_the_documentation_check_sees_a_wrong_option():
    lines = list(command_lines("```bash\nuv run apps/pggan_train --kimg 3 \\\n    --nope  # --kimg\n```\n"))
    assert lines == [("pggan_train", ["--kimg", "3", "--nope"])]
