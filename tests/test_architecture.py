"""The package graph of docs/architecture.md, enforced: data, models and metrics import none of each other,
apps and train may import anything, and lesion-models needs nothing but torch and safetensors."""

import ast
import pathlib
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LEAVES = ("lesion_data", "lesion_models", "lesion_metrics")


def imported_top_modules(package_dir: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for path in package_dir.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_packages_do_not_import_each_other(leaf):
    src = ROOT / "packages" / leaf.replace("_", "-") / "src" / leaf
    imported = imported_top_modules(src)
    forbidden = (set(LEAVES) | {"lesion_train"}) - {leaf}
    assert not imported & forbidden, f"{leaf} imports {sorted(imported & forbidden)}"


def test_lesion_turing_uses_only_metrics_and_data():
    # The visual-Turing-test web app is its own product: statistics from lesion-metrics, class
    # names from lesion-data, never networks or training (see docs/turing_test.md).
    imported = imported_top_modules(ROOT / "packages/lesion-turing/src/lesion_turing")
    forbidden = {"lesion_models", "lesion_train", "torch"}
    assert not imported & forbidden, f"lesion_turing imports {sorted(imported & forbidden)}"
    assert "lesion_turing" not in {m for leaf in LEAVES + ("lesion_train",)
                                   for m in imported_top_modules(ROOT / "packages" / leaf.replace("_", "-") / "src" / leaf)}


def test_lesion_models_runtime_dependencies_are_minimal():
    meta = tomllib.loads((ROOT / "packages/lesion-models/pyproject.toml").read_text())
    required = {dep.split(">")[0].split("=")[0].split("[")[0].strip() for dep in meta["project"]["dependencies"]}
    assert required <= {"torch", "safetensors"}, required
    src = ROOT / "packages/lesion-models/src/lesion_models"
    third_party = imported_top_modules(src) - {"lesion_models", "torch", "safetensors", "torchvision"}
    import sys

    assert third_party <= set(sys.stdlib_module_names), sorted(third_party - set(sys.stdlib_module_names))


def test_apps_are_click_entry_points():
    apps = [p for p in (ROOT / "apps").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    for app in apps:
        main = app / "__main__.py"
        assert main.exists(), f"{app} has no __main__.py"
        assert "click" in imported_top_modules(app), f"{app.name} does not use click"
