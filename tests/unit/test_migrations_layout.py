"""The migration files: one package per scope, file vNNN is the version NNN it registers (no DB)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from db.migrations import (
    MIGRATIONS,
    MODULE_NAME,
    PACKAGES,
    DatabaseTooNew,
    Scope,
    _register,
    migrations_for,
    newest_version,
)

REPO = Path(__file__).resolve().parents[2]
SCOPES: tuple[Scope, ...] = ("global", "public", "territory")


def _folder(package: ModuleType) -> Path:
    assert package.__file__ is not None
    return Path(package.__file__).parent


@pytest.mark.parametrize("scope", SCOPES)
def test_every_file_registers_the_version_of_its_number(scope: Scope) -> None:
    package = PACKAGES[scope]
    folder = _folder(package)
    files = sorted(p.stem for p in folder.glob("*.py") if p.name != "__init__.py")
    for stem in files:
        assert MODULE_NAME.fullmatch(stem), f"{folder / stem}.py is not named vNNN_name"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) in ([], ["__pycache__"])

    migrations = migrations_for(scope)
    registered = {m.module.rpartition(".")[2]: m for m in migrations}
    assert sorted(registered) == files, f"{package.__name__}.MODULES does not list every file"
    for stem, migration in registered.items():
        assert migration.module == f"{package.__name__}.{stem}"
        assert migration.version == int(stem[1:4])
        assert migration.name == stem[5:].replace("_", " ")
        assert migration.apply is getattr(package, stem).upgrade
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert newest_version(scope) == len(migrations)


def test_the_shipped_versions_are_still_registered() -> None:
    # What databases already record in their schema_migrations; these must never change meaning.
    shipped: dict[Scope, list[tuple[int, str]]] = {
        "global": [(1, "foundation")],
        "public": [(1, "badge definitions")],
        "territory": [
            (1, "foundation"),
            (2, "event spine"),
            (3, "transaction digest"),
            (4, "courses and badges"),
            (5, "gated rooms"),
            (6, "forum"),
            (7, "media"),
            (8, "course materials"),
        ],
    }
    for scope, versions in shipped.items():
        registered = [(m.version, m.name) for m in migrations_for(scope)]
        assert registered[: len(versions)] == versions
    assert {m.scope for m in MIGRATIONS} == set(SCOPES)


def test_a_module_outside_its_scope_package_or_misnamed_is_refused() -> None:
    for name in (
        "db.migrations.territory_schema.v9_short",
        "db.migrations.territory_schema.v009",
        "db.migrations.public_schema.v009_elsewhere",
    ):
        module = ModuleType(name)
        with pytest.raises(RuntimeError, match="vNNN_name"):
            _register("territory", PACKAGES["territory"], [module])


def test_database_too_new_says_what_to_do() -> None:
    error = DatabaseTooNew("territory_dk", 9, 8)
    assert str(error) == (
        "The territory_dk schema is at version 9, newer than this code knows (8): "
        "upgrade unityplan, or restore a backup made by this version."
    )
    assert (error.schema, error.version, error.known) == ("territory_dk", 9, 8)


def test_the_scope_packages_are_in_the_wheel() -> None:
    # pyproject lists packages explicitly; one left out is missing from `pip install .` (the image).
    packages = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"][
        "packages"
    ]
    for package in PACKAGES.values():
        assert package.__name__ in packages, f"pyproject.toml does not list {package.__name__}"
