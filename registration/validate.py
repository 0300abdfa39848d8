"""Compare a registration file with what the config says it should be."""

from __future__ import annotations

from pathlib import Path

from appservice.config import Config

from .generate import build_registration, load_registration


def differences(config: Config, path: Path) -> list[str]:
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
        config, str(actual.get("as_token", "")), str(actual.get("hs_token", ""))
    )
    for key, want in expected.items():
        have = actual.get(key)
        if key in ("as_token", "hs_token"):
            continue
        if have != want:
            problems.append(f"{key} is {have!r}, the config wants {want!r}.")
    return problems
