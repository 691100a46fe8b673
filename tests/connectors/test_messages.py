"""What the built-in connectors say to people is in both message catalogs, and the English
catalog says exactly what the connector's own fallback text says."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from connectors.base import Message
from offboarding.notification.rendering import default_templates_dir

CONNECTORS = Path(__file__).resolve().parents[2] / "connectors"


def said_by_connectors() -> dict[str, str]:
    """Every `Message.of("id", "default", ...)` in connectors/, by id."""
    found: dict[str, str] = {}
    for module in sorted(CONNECTORS.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "of"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "Message"
            ):
                key, default = (ast.literal_eval(arg) for arg in node.args[:2])
                assert found.get(key, default) == default, f"{key} has two default texts"
                found[key] = default
    return found


def catalog(language: str) -> dict[str, str]:
    """Every connector catalog of one language, merged (a key may be defined once)."""
    merged: dict[str, str] = {}
    for path in sorted((default_templates_dir() / "connectors").glob(f"*.{language}.json")):
        phrases = json.loads(path.read_text())
        assert not merged.keys() & phrases.keys(), (
            f"{path.name} redefines {merged.keys() & phrases.keys()}"
        )
        merged.update(phrases)
    return merged


def params(phrase: str) -> list[str]:
    return sorted(re.findall(r"%\((\w+)\)s", phrase))


def test_the_english_catalog_is_the_connectors_own_text() -> None:
    assert catalog("en") == said_by_connectors()


@pytest.mark.parametrize("language", ["nl"])
def test_every_message_is_translated_with_the_same_parameters(language: str) -> None:
    english, translated = catalog("en"), catalog(language)
    assert translated.keys() == english.keys()
    for key, phrase in english.items():
        # a translation may use a parameter's own translation, `<name>_<language>`
        # (free text from the configuration, such as a manual step's Dutch wording)
        wanted = params(phrase)
        used = [p.removesuffix(f"_{language}") for p in params(translated[key])]
        assert sorted(used) == wanted, key


def test_a_message_without_parameters_keeps_its_percent_signs() -> None:
    assert Message.plain("100% done").text == "100% done"
    assert Message.of("x", "%(n)s of 100%%", n="5").text == "5 of 100%"
    assert Message.of("x", "%(missing)s", n="5").text == "%(missing)s"  # never raises
