"""Compare a registration file with what the config says it should be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .generate import RegistrationSpec, build_registration, load_registration


def differences(spec: RegistrationSpec, path: Path) -> list[str]:
    """Sentences describing every way the registration differs from the config; [] if it agrees."""
    if not path.is_file():
        return [f"{path} does not exist; run `unityplan registration generate`."]
    try:
        actual = load_registration(path)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    for token in ("as_token", "hs_token"):
        value = actual.get(token)
        if not isinstance(value, str) or len(value) < 32:
            problems.append(f"{token} is missing or shorter than 32 characters.")
    if actual.get("as_token") and actual.get("as_token") == actual.get("hs_token"):
        problems.append("as_token and hs_token are the same; they must differ.")
    expected = build_registration(
        spec, str(actual.get("as_token", "")), str(actual.get("hs_token", ""))
    )
    for key, want in expected.items():
        have = actual.get(key)
        if key in ("as_token", "hs_token", "namespaces"):
            continue
        if have != want:
            problems.append(f"{key} is {have!r}, the config wants {want!r}.")
    namespaces = actual.get("namespaces")
    have_namespaces: dict[str, Any] = namespaces if isinstance(namespaces, dict) else {}
    for kind, want_entries in expected["namespaces"].items():
        have_entries = have_namespaces.get(kind) or []
        if _normalised(have_entries) != _normalised(want_entries):
            problems.append(
                f"namespaces.{kind} is {_describe(have_entries)}, "
                f"the config wants {_describe(want_entries)}."
            )
    return problems


def _normalised(entries: Any) -> list[tuple[str, bool]]:
    if not isinstance(entries, list):
        return [("<not a list>", False)]
    return sorted(
        (str(e.get("regex")), bool(e.get("exclusive"))) for e in entries if isinstance(e, dict)
    )


def _describe(entries: Any) -> str:
    pairs = _normalised(entries)
    if not pairs:
        return "empty"
    return ", ".join(
        f"{regex} ({'exclusive' if exclusive else 'shared'})" for regex, exclusive in pairs
    )
