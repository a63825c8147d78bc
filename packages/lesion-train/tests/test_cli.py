import dataclasses
import json
from typing import Literal

import click
import pytest
from click.testing import CliRunner
from lesion_train import cli
from lesion_train.setup import apply_overrides


@dataclasses.dataclass
class Inner:
    total_kimg: float = 2.0  # how long
    seed: int = 0
    name: str = "inner"


@dataclasses.dataclass
class Outer:
    source: str  # no default: the app's argument, not an option
    data: str | None = None  # where the images are
    cpu_threads: int = 0
    conditional: bool = False  # labels or not
    mode: Literal["a", "b"] = "a"
    ratios: tuple[float, ...] = (0.0, 0.5)
    scale: tuple[float, float] = (0.8, 1.2)
    table: dict = dataclasses.field(default_factory=dict)
    name: str = "outer"
    loop: Inner = dataclasses.field(default_factory=lambda: Inner(seed=7))


def command_for(*classes, **kwargs):
    seen = {}

    @cli.command()
    @cli.ConfigOptions(*classes, **kwargs)
    def main(options):
        seen["options"] = options

    return main, seen


def test_options_follow_the_fields_and_the_naming_table():
    main, _ = command_for(Outer)
    options = {param.name: param for param in main.params}
    # Renamed by the table, nested fields flattened, no option for dicts or fields without a default.
    assert set(options) == {"data", "threads", "conditional", "mode", "ratios", "scale", "name", "kimg", "seed"}
    assert options["kimg"].opts == ["--kimg"] and options["threads"].opts == ["--threads"]
    assert options["conditional"].secondary_opts == ["--no-conditional"]
    assert options["mode"].type.choices == ("a", "b") and options["scale"].nargs == 2
    assert options["seed"].default == 7  # a nested default comes from the parent's default_factory
    assert options["data"].help == "where the images are" and options["kimg"].help == "how long"
    assert options["threads"].help == cli._BY_FIELD["cpu_threads"].meaning  # no comment: the table's meaning


def test_parsed_values_build_the_config_back():
    main, seen = command_for(Outer)
    result = CliRunner().invoke(main, ["--kimg", "3", "--ratios", "1,2.5", "--scale", "0.5", "2", "--conditional",
                                       "--name", "x", "--mode", "b"])
    assert result.exit_code == 0, result.output
    options = seen["options"]
    config = options.build(Outer, source="s")
    assert config.loop.total_kimg == 3.0 and config.ratios == (1.0, 2.5) and config.scale == (0.5, 2.0)
    assert config.conditional and config.mode == "b" and config.loop.seed == 7
    # One name, one option: --name sets every field called name.
    assert config.name == "x" and config.loop.name == "x"
    # Only what was typed overrides a base (e.g. a preset).
    assert set(options.given) == {"kimg", "ratios", "scale", "conditional", "name", "mode"}
    assert options.values["threads"] == 0 and "threads" not in options.given


def test_old_spellings_still_work_with_a_note():
    main, seen = command_for(Outer)
    result = CliRunner().invoke(main, ["--total-kimg=4", "--cpu-threads", "2", "--unconditional"])
    assert result.exit_code == 0, result.output
    assert seen["options"].given == {"kimg": 4.0, "threads": 2, "conditional": False}
    assert "--total-kimg is now --kimg" in result.stderr and "--cpu-threads is now --threads" in result.stderr
    assert "--total-kimg" not in CliRunner().invoke(main, ["-h"]).output  # hidden from the help


def test_a_command_keeps_its_own_option_of_an_old_spelling():
    @cli.command()
    @click.option("--batch-size", type=int)
    @click.option("--batch", type=int)
    def main(batch_size, batch):
        click.echo(f"{batch_size} {batch}")

    result = CliRunner().invoke(main, ["--batch-size", "3"])
    assert result.output.strip() == "3 None" and "note" not in result.stderr


def test_after_a_double_dash_nothing_is_rewritten():
    @cli.command()
    @click.option("--kimg", type=float)
    @click.argument("rest", nargs=-1)
    def main(kimg, rest):
        click.echo(json.dumps([kimg, list(rest)]))

    assert json.loads(CliRunner().invoke(main, ["--", "--total-kimg"]).output) == [None, ["--total-kimg"]]


def test_exclude_types_and_shown_defaults():
    configs = [Outer("s"), dataclasses.replace(Outer("s"), cpu_threads=4)]
    main, _ = command_for(Outer, exclude=("loop.seed", "name"), types={"data": click.Path(exists=True)},
                          defaults_from=configs, varying="from --preset")
    options = {param.name: param for param in main.params}
    assert "seed" not in options and "name" not in options and "kimg" in options
    assert isinstance(options["data"].type, click.Path)
    assert options["threads"].show_default == "from --preset" and options["kimg"].show_default is True


def test_fields_of_one_name_must_agree_on_the_type():
    @dataclasses.dataclass
    class Clash:
        seed: str = "0"
        loop: Inner = dataclasses.field(default_factory=Inner)

    with pytest.raises(TypeError, match="--seed"):
        cli.ConfigOptions(Clash)


def test_an_option_a_config_lacks_is_a_usage_error():
    main, seen = command_for(Outer, Inner)
    assert CliRunner().invoke(main, ["--mode", "b"]).exit_code == 0
    with pytest.raises(click.UsageError, match="--mode does not apply to --arch x"):
        seen["options"].overrides(Inner, "--arch x")
    assert CliRunner().invoke(main, ["--seed", "1"]).exit_code == 0
    assert seen["options"].overrides(Inner) == {"seed": 1}
    assert seen["options"].overrides(Outer) == {"loop.seed": 1}


def test_replace_sets_dotted_fields_and_names_unknown_ones():
    config = apply_overrides(Outer("s"), {"loop.total_kimg": 9.0, "name": "y"})
    assert config.loop.total_kimg == 9.0 and config.name == "y" and config.loop.seed == 7
    with pytest.raises(ValueError, match="no option nope"):
        apply_overrides(Outer("s"), {"nope": 1})


def test_every_architecture_builds_its_presets():
    for arch, entry in cli.architectures().items():
        for preset in ("cpu", "gpu"):
            config = entry.preset(preset, {"loop.total_kimg": 1.0}, 1)
            assert isinstance(config, entry.config) and config.loop.total_kimg == 1.0, arch


def test_a_field_comment_wins_over_the_table_meaning_across_configs():
    @dataclasses.dataclass
    class Commented:
        seed: int = 1  # seed of everything

    options = cli.ConfigOptions(Inner, Commented).specs
    assert options["seed"].help == "seed of everything" and options["kimg"].help == "how long"
    assert cli.ConfigOptions(Inner).specs["seed"].help == cli._BY_FIELD["seed"].meaning
