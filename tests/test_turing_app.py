"""apps/turing_test: options, clear one-line errors (through a subprocess), and the report command."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
APP = [sys.executable, str(ROOT / "apps/turing_test")]


def run(*args):
    return subprocess.run([*APP, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def load_app():
    spec = importlib.util.spec_from_file_location("turing_test_app", ROOT / "apps/turing_test/__main__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cli


def test_option_errors_in_process(tmp_path):
    cli, runner = load_app(), CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "serve" in result.output and "report" in result.output
    assert "--synthetic" in runner.invoke(cli, ["serve", "--help"]).output
    result = runner.invoke(cli, ["serve", "--db", str(tmp_path / "missing.sqlite")])
    assert result.exit_code == 1 and "give the real and synthetic folders" in result.output
    result = runner.invoke(cli, ["serve", "--real", str(tmp_path), "--db", str(tmp_path / "x.sqlite")])
    assert result.exit_code == 2 and "give both --real and --synthetic" in result.output


def test_bad_input_gives_one_line_errors(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "fake" / "a.png")
    result = run("serve", "--real", str(tmp_path / "real"), "--synthetic", str(tmp_path / "fake"), "--n", "2",
                 "--db", str(tmp_path / "s.sqlite"), "--port", "0")
    assert result.returncode == 1 and "the real folder has 0 images, the quiz needs 1" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "s.sqlite").exists()
    (tmp_path / "junk.sqlite").write_bytes(b"junk" * 100)
    result = run("report", str(tmp_path / "junk.sqlite"), "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and "junk.sqlite" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # the report imports lesion_metrics, and with it torch, in a fresh process
def test_report_command_writes_html_json_and_contact_sheet(tmp_path):
    from lesion_turing import Study, StudySpec, create_study

    rng = np.random.default_rng(0)
    for name in ("real", "fake"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    create_study(tmp_path / "s.sqlite", StudySpec(str(tmp_path / "real"), str(tmp_path / "fake"), n=4, size=16))
    study = Study(tmp_path / "s.sqlite")
    token = study.add_rater("Ada")
    for _ in range(4):
        study.answer(token, study.state(token)["item"], False, 2, None)  # everything called real
    study.close()
    result = run("report", str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["raters"][0]["specificity"]["estimate"] == 1.0 and report["raters"][0]["sensitivity"]["estimate"] == 0.0
    assert [f["said_real"] for f in report["fooled"]] == [1, 1]
    assert "Ada" in (tmp_path / "out" / "report.html").read_text()
    assert Image.open(tmp_path / "out" / "fooled.png").size == (2 * 192, 192 + 22)
