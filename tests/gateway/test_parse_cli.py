"""`mycelium gateway parse` prints the parser's reading: the CLI contract of DESIGN.md §10."""

from __future__ import annotations

import json
import subprocess
import sys


def _mycelium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mycelium.cli import main; main()", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_parse_json_is_one_object_with_the_contract_fields() -> None:
    done = _mycelium("gateway", "parse", "vendo 3 manojos de albahaca a 2 euros", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "intent": "offer", "item": "albahaca", "quantity": 3.0, "unit": "bunch",
        "price": 2.0, "currency": "EUR", "lang": "es",
    }


def test_parse_lang_option_and_its_refusal() -> None:
    done = _mycelium("gateway", "parse", "tenho dois quilos de mel", "--lang", "pt", "--json")
    assert json.loads(done.stdout)["quantity"] == 2.0
    bad = _mycelium("gateway", "parse", "hello", "--lang", "fr")
    assert bad.returncode != 0
    assert bad.stderr.strip().startswith("error: --lang must be one of en, es, pt")
    assert "Traceback" not in bad.stderr
