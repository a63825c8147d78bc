"""The command-line convention every app follows: options generated from config dataclasses, one
naming table, ``-h``/``--help``, ``--dry-run``, and the registry behind ``pggan_train --arch``.

Options from a dataclass (``ConfigOptions``): one option per field, ``--kebab-case`` of the field's
name (or the name ``NAMES`` gives that field), its type from the annotation (``bool`` -> ``--x/--no-x``,
``X | None`` -> X with default None, ``Literal[...]`` -> a choice, ``tuple[X, ...]`` -> a comma-separated
list, ``tuple[X, Y]`` -> two values), its shown default from the field and its help from the field's
trailing ``# comment`` (else from the naming table). Nested dataclasses (``loop``, ``schedule``,
``train``) are flattened: their fields become options of their own name, and all fields of one name
anywhere in the tree are set by that one option, since one name means one thing. Fields without a
default (positional arguments of the app) and fields no option can express (dicts, nested
containers) are left to the app.

Old spellings of renamed options (``--total-kimg``, ``--phantom-count``, ...) still work: the
command rewrites them to the current name and prints a one-line note.

Nothing here imports torch at module level, so ``-h`` of every app stays fast.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence

import click
from click.core import ParameterSource

from lesion_train.setup import apply_overrides

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 110}


@dataclasses.dataclass(frozen=True)
class Name:
    """One meaning, one option name, in every app."""

    option: str  # the name, without dashes
    meaning: str  # help text when the field has no comment of its own
    fields: tuple[str, ...] = ()  # config field names (in any config) that mean this
    old: tuple[str, ...] = ()  # earlier spellings, still accepted with a note
    choices: tuple[str, ...] | None = None


NAMES: tuple[Name, ...] = (
    Name("data", "Prepared store or raw dataset folder; default: built-in phantoms.", ("data",)),
    Name("out", "Output folder (trainers: the parent of run directories).", ("out", "run_root"), ("--run-root",)),
    Name("name", "Run name suffix.", ("name",)),
    Name("resolution", "Resolution in px (a power of two).", ("resolution",), ("-r",)),
    Name("kimg", "Training length in thousands of real images shown.", ("kimg", "total_kimg", "budget_kimg"),
         ("--total-kimg", "--budget-kimg")),
    Name("tick-kimg", "Thousands of images per tick (a log line and a grid).", ("tick_kimg", "tick_kimg_base")),
    Name("snapshot-ticks", "Ticks between snapshots.", ("snapshot_ticks",)),
    Name("batch", "Minibatch size.", ("batch_size",), ("--batch-size",)),
    Name("lr", "Learning rate.", ("lr", "lr_base")),
    Name("threads", "torch CPU threads.", ("threads", "cpu_threads"), ("--cpu-threads",)),
    Name("phantoms", "Phantom images generated when --data is not given.", ("phantom_count", "phantom_n"),
         ("--phantom-count", "--phantom-n")),
    Name("seed", "Random seed.", ("seed",)),
    Name("device", "auto, cpu, cuda or cuda:N.", ("device",)),
    Name("amp", "Mixed precision.", ("amp",), choices=("off", "bf16", "fp16")),
    Name("compile", "torch.compile the networks (for CUDA; the first steps compile).", ("compile",)),
    Name("resume", "Run directory (its newest complete snapshot) or snapshot directory to continue.", ("resume",)),
    Name("conditional", "Class-conditional on the store's diagnosis labels.", ("conditional",), ("--unconditional",)),
    Name("n-local-enhancers", "pix2pixHD local enhancers (each doubles the resolution).", ("n_local_enhancers",),
         ("--local-enhancers",)),
    Name("json", "Write every record to this JSON file.", ("output",)),
)
_BY_FIELD = {field: name for name in NAMES for field in name.fields}
# An old spelling -> the current one (an old off-switch maps to the current ``--no-`` form).
DEPRECATED = {old: "--no-conditional" if old == "--unconditional" else f"--{name.option}"
              for name in NAMES for old in name.old}


# ---------------------------------------------------------------------------------------------
# Commands: -h/--help, shown defaults, old spellings.


def _rewrite_deprecated(args: Sequence[str], command: click.Command) -> list[str]:
    """Old spellings -> current ones, each with a one-line note on stderr; a command that still
    has an option of that spelling keeps it."""
    renamed = {**DEPRECATED, **getattr(command, "renamed_options", {})}
    own = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    out = []
    for index, arg in enumerate(args):
        if arg == "--":
            out.extend(args[index:])
            break
        spelling, eq, value = arg.partition("=")
        new = renamed.get(spelling)
        if new and spelling not in own and new in own:
            click.echo(f"note: {spelling} is now {new} (the old name still works)", err=True)
            spelling = new
        out.append(spelling + eq + value)
    return out


class Command(click.Command):
    """A click command that accepts the old spellings of renamed options (``NAMES``, and its own
    ``renamed_options`` mapping of old -> current spelling)."""

    def __init__(self, *args, renamed_options: Mapping[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.renamed_options = dict(renamed_options or {})

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _rewrite_deprecated(args, self))


class Group(click.Group):
    command_class = Command
    group_class = type  # subgroups are Groups too

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _rewrite_deprecated(args, self))


def command(**kwargs) -> Callable:
    """``click.command`` with the project's settings: ``-h``/``--help``, shown defaults, old spellings."""
    return click.command(cls=Command, context_settings={**CONTEXT_SETTINGS, **kwargs.pop("context_settings", {})},
                         **kwargs)


def group(**kwargs) -> Callable:
    """``click.group`` with the settings of :func:`command`, for its subcommands too."""
    return click.group(cls=Group, context_settings={**CONTEXT_SETTINGS, **kwargs.pop("context_settings", {})},
                       **kwargs)


dry_run_option = click.option("--dry-run", is_flag=True,
                              help="Print the resolved configuration as JSON and exit; nothing is written.")


def _parse_settings(ctx, param, settings: tuple[str, ...]) -> dict:
    """``ARCH.OPTION=VALUE`` (VALUE as JSON, else a string) -> {arch: {option: value}}."""
    out: dict = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        arch, dot, option = key.partition(".")
        if not (sep and dot and option):
            raise click.BadParameter(f"{setting!r} is not ARCH.OPTION=VALUE", ctx, param)
        try:
            out.setdefault(arch, {})[option] = json.loads(value)
        except json.JSONDecodeError:
            out[arch][option] = value
    return out


def set_option(example: str) -> Callable:
    """``--set ARCH.OPTION=VALUE`` (repeatable) of the comparison apps, parsed to {arch: {option: value}}."""
    return click.option("--set", "settings", multiple=True, metavar="ARCH.OPTION=VALUE", callback=_parse_settings,
                        help=f"Change one training option of one architecture, e.g. {example} (names as in "
                             "training_options.json). Repeatable.")


_PLAN_OPTIONS = (
    click.option("--plan", "plan", is_flag=True,
                 help="Print the run's plan (per phase: FLOPs per image, memory per device; total FLOPs, wall "
                      "time) and exit; nothing is trained or written (docs/gpu.md)."),
    click.option("--plan-devices", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Devices (torchrun ranks) to plan for."),
    click.option("--plan-device-tflops", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="One device's peak TFLOPS for the wall time (default: a table of common GPUs)."),
    click.option("--plan-device-memory", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Device memory in GiB: warn about every phase that does not fit."),
)


@dataclasses.dataclass(frozen=True)
class PlanRequest:
    """What ``--plan`` and its device options asked for."""

    devices: int
    device_tflops: float | None
    device_memory_gib: float | None


def plan_options(function: Callable) -> Callable:
    """``--plan``, ``--plan-devices``, ``--plan-device-tflops``, ``--plan-device-memory``, handed to the
    command as one ``plan``: a :class:`PlanRequest`, or None without ``--plan``."""

    @functools.wraps(function)
    def command(*args, plan, plan_devices, plan_device_tflops, plan_device_memory, **kwargs):
        request = PlanRequest(plan_devices, plan_device_tflops, plan_device_memory) if plan else None
        return function(*args, plan=request, **kwargs)

    for option in reversed(_PLAN_OPTIONS):
        command = option(command)
    return command


def preview(config, dry_run: bool, plan: PlanRequest | None) -> bool:
    """Print ``config`` (``--dry-run``) or its plan (``--plan``, lesion_train.plan); True when either
    was asked for, and the command stops there."""
    if dry_run:
        print_config(config)
    elif plan is not None:
        from lesion_train.plan import describe  # torch: only when a command runs

        click.echo(describe(config, plan.devices, plan.device_tflops, plan.device_memory_gib))
    return dry_run or plan is not None


def print_config(config) -> None:
    """A configuration (or a mapping of them) as ``training_options.json`` would hold it, on stdout."""
    from lesion_train.runs import to_jsonable  # torch: only when a command runs

    def plain(value):
        if isinstance(value, Mapping):
            return {key: plain(item) for key, item in value.items()}
        return to_jsonable(value) if dataclasses.is_dataclass(value) else value

    click.echo(json.dumps(to_jsonable(plain(config)), indent=2))


# ---------------------------------------------------------------------------------------------
# Options from config dataclasses.


def field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field in the class body (its help text)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(token.start[0])
    out = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            trailing = [comments[line] for line in range(node.lineno, node.end_lineno + 1)
                        if line in comments and line in code_lines]
            if trailing:
                out[node.target.id] = " ".join(trailing)
    return out


class CommaList(click.ParamType):
    """``tuple[X, ...]``: a comma-separated list."""

    def __init__(self, item: type):
        self.item = item
        self.name = f"{item.__name__},..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self.item(part.strip()) for part in str(value).split(",") if part.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of {self.item.__name__}", param, ctx)


_SCALARS = (int, float, str)


def _kind(hint) -> tuple | None:
    """(click type, nargs, is a bool flag) for an annotation, None when no option can express it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            return None
        hint = rest[0]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return (bool, 1, True)
    if hint in _SCALARS:
        return (hint, 1, False)
    if origin is typing.Literal:
        return (click.Choice([str(a) for a in args]), 1, False)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
        return (CommaList(args[0]), 1, False)
    if origin is tuple and args and all(a in _SCALARS for a in args):
        return (tuple(args), len(args), False)
    return None


def _signature(kind: tuple) -> tuple:
    """What must agree between fields that share an option."""
    ptype, nargs, flag = kind
    return (getattr(ptype, "name", ptype), nargs, flag)


def _fields(cls: type, default, prefix: str = ""):
    """(dotted path, annotation, default, comment) of every leaf field; ``default`` is an instance
    of ``cls`` to read nested defaults from, or None for the class's own field defaults."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for field in dataclasses.fields(cls):
        if default is not None:
            value = getattr(default, field.name)
        elif field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            value = dataclasses.MISSING
        hint = hints[field.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from _fields(hint, value if value is not dataclasses.MISSING else None, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", hint, value, comments.get(field.name, "")


def _get(config, path: str):
    for part in path.split("."):
        config = getattr(config, part)
    return config


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


@dataclasses.dataclass
class Spec:
    """One generated option: its name and the fields it sets in each config class."""

    name: str
    kind: tuple
    default: object
    help: str
    commented: bool = False  # help is a field's comment (else the naming table's meaning)
    paths: dict[type, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def param(self) -> str:
        return self.name.replace("-", "_")


class Options:
    """The generated options' parsed values, handed to the command as ``options``."""

    def __init__(self, specs: Mapping[str, Spec], values: Mapping[str, object], given: Iterable[str]):
        self.specs, self.values = specs, dict(values)
        self.given = {name: self.values[name] for name in given}  # only those on the command line

    def unused(self, cls: type) -> list[str]:
        """The given options ``cls`` has no field for."""
        return [name for name in self.given if cls not in self.specs[name].paths]

    def overrides(self, cls: type, what: str | None = None) -> dict[str, object]:
        """The given options as ``{dotted field: value}`` of ``cls``; an option that ``cls`` has no
        field for is a usage error naming ``what``."""
        for name in self.unused(cls):
            raise click.UsageError(f"--{name} does not apply to {what or cls.__name__}")
        return {path: value for name, value in self.given.items() for path in self.specs[name].paths[cls]}

    def build(self, cls: type, base=None, **fields):
        """``base`` (default ``cls(**fields)``) with the given options applied."""
        config = base if base is not None else cls(**fields)
        return apply_overrides(config, self.overrides(cls))


class ConfigOptions:
    """Decorator adding one option per field of ``classes`` (see the module docstring); the command
    receives them as one ``options`` argument (:class:`Options`).

    ``exclude``: dotted paths (``train.seed``) or field names anywhere in the tree (``resume``) the
    app handles itself. ``types``: by field name, a click type (e.g. ``click.Path(exists=True)``) or
    the allowed values of a str field. ``defaults_from``: configs whose values are the shown defaults
    (e.g. every preset); where they differ, ``varying`` (a text, or a function of those values) is
    shown instead. ``help``: by option name, text a comment cannot hold (a list computed at run time)."""

    def __init__(self, *classes: type, exclude: Iterable[str] = (),
                 types: Mapping[str, click.ParamType | Sequence[str]] | None = None,
                 defaults_from: Sequence | None = None, varying: str | Callable[[list], str] = "depends",
                 help: Mapping[str, str] | None = None):
        exclude, types = set(exclude), dict(types or {})
        self.specs: dict[str, Spec] = {}
        for cls in classes:
            for path, hint, default, comment in _fields(cls, None):
                leaf = path.rsplit(".", 1)[-1]
                kind = _kind(hint)
                if kind is None or default is dataclasses.MISSING or path in exclude or leaf in exclude:
                    continue
                entry = _BY_FIELD.get(leaf)
                name = entry.option if entry else leaf.replace("_", "-")
                spec = self.specs.get(name)
                if leaf in types:
                    given = types[leaf]
                    kind = (given if isinstance(given, click.ParamType) else click.Choice(list(given)), *kind[1:])
                elif entry and entry.choices:
                    kind = (click.Choice(list(entry.choices)), *kind[1:])
                if spec is None:
                    spec = self.specs[name] = Spec(name, kind, default, entry.meaning if entry else "")
                elif _signature(spec.kind) != _signature(kind):
                    raise TypeError(f"--{name}: {path} has another type than the other fields of that name")
                if comment and not spec.commented:  # the first field comment wins over the table's meaning
                    spec.help, spec.commented = comment, True
                spec.paths.setdefault(cls, []).append(path)
        for name, text in (help or {}).items():
            self.specs[name].help = text
        self.shown = {name: self._shown(spec, defaults_from, varying) for name, spec in self.specs.items()}

    @staticmethod
    def _shown(spec: Spec, configs: Sequence | None, varying):
        if configs is None:
            return spec.default
        values = [_get(config, path) for config in configs for path in spec.paths.get(type(config), ())]
        if len({_show(value) for value in values}) == 1:
            return values[0]
        return varying(values) if callable(varying) else varying

    def __call__(self, function: Callable) -> Callable:
        specs = self.specs

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            ctx = click.get_current_context()
            values = {name: kwargs.pop(spec.param) for name, spec in specs.items()}
            given = [name for name, spec in specs.items()
                     if ctx.get_parameter_source(spec.param) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]
            return function(*args, options=Options(specs, values, given), **kwargs)

        for name, spec in reversed(list(specs.items())):
            ptype, nargs, flag = spec.kind
            shown = self.shown[name]
            # The field's own default is shown by click (a flag by its switch); any other text verbatim.
            show_default = _show(shown) not in ("", "None") if _show(shown) == _show(spec.default) else _show(shown)
            if flag:
                option = click.option(f"--{name}/--no-{name}", spec.param, default=spec.default, help=spec.help,
                                      show_default=show_default)
            else:
                default = _show(spec.default) if isinstance(ptype, CommaList) else spec.default
                option = click.option(f"--{name}", spec.param, type=ptype, nargs=nargs, default=default,
                                      help=spec.help, show_default=show_default)
            option(wrapper)
        return wrapper


# ---------------------------------------------------------------------------------------------
# Unconditional GAN architectures of ``pggan_train --arch``.


@dataclasses.dataclass(frozen=True)
class Architecture:
    """How ``pggan_train`` builds, resumes and trains one model family."""

    config: type
    preset: Callable  # (preset name, {dotted field: value}, device count) -> config
    apply_overrides: Callable  # (config, {dotted field: value}) -> config
    load_run_config: Callable  # run or snapshot directory -> config
    train: Callable  # config -> gan_loop.RunResult


@functools.cache
def architectures() -> dict[str, Architecture]:
    """PGGAN and the DCGAN/LAPGAN baselines, by ``--arch`` name."""
    from lesion_train import baselines, pggan

    registry = {"pggan": Architecture(pggan.PGGANTrainConfig,
                                      lambda name, given, devices: pggan.preset(name, devices, **given),
                                      pggan.apply_overrides, pggan.load_run_config, pggan.train_pggan)}
    for arch in baselines.ARCHS:
        registry[arch] = Architecture(baselines.BaselineTrainConfig,
                                      # The baselines' published minibatches divide over any usual device count.
                                      lambda name, given, devices, arch=arch: baselines.preset(arch, name, **given),
                                      baselines.apply_overrides, baselines.load_run_config, baselines.train_baseline)
    return registry


__all__ = ["Architecture", "CONTEXT_SETTINGS", "CommaList", "Command", "ConfigOptions", "DEPRECATED",
           "Group", "NAMES", "Name", "Options", "PlanRequest", "Spec", "architectures", "command", "dry_run_option",
           "field_comments", "group", "plan_options", "preview", "print_config", "set_option"]
