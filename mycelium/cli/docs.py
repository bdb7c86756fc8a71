"""``mycelium doc …``: put, get, list, delete documents (DESIGN.md §10).

Each command is one call of :mod:`mycelium.node.ops`: through a running node's control
API if there is one, else on the store opened directly (``open_local_soil``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from mycelium.cli.common import (
    HomeOption,
    JsonOption,
    emit,
    fail,
    node_paths,
    passphrase,
    user_errors,
)

doc_app = typer.Typer(help="Documents: put, get, list, delete.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(doc_app, name="doc")


def _call(home: str | None, op: str, **args: Any) -> dict[str, Any]:
    from mycelium.node.client import call_op

    return call_op(node_paths(home), op, passphrase, **args)


#: Bound on what ``--data @FILE`` / ``--data -`` reads: far above any document the
#: store accepts (the payload limit refuses it with its own reason), far below memory.
MAX_DATA_BYTES = 16 << 20


def _read_data(data: str) -> str:
    """``--data`` as curl takes it: inline JSON, ``@FILE``, or ``-`` for stdin (a single
    shell argument is capped near 128 KiB, and scripts pipe)."""
    if data == "-":
        text = sys.stdin.read(MAX_DATA_BYTES + 1)
        source = "stdin"
    elif data.startswith("@"):
        path = Path(data[1:]).expanduser()
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read(MAX_DATA_BYTES + 1)
        except OSError as exc:
            fail(f"--data {data}: cannot read {path}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            fail(f"--data {data}: {path} is not UTF-8 text")
        source = str(path)
    else:
        return data
    if len(text) > MAX_DATA_BYTES:
        fail(f"--data {source} is larger than {MAX_DATA_BYTES} bytes")
    return text


def _fields(data: str) -> dict[str, Any]:
    try:
        value = json.loads(_read_data(data))
    except json.JSONDecodeError as exc:
        fail(f"--data is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})")
    if not isinstance(value, dict) or not value:
        fail("--data must be a non-empty JSON object of field values")
    return value


@doc_app.command("put")
@user_errors
def put(
    space: str = typer.Argument(..., help="Space id or unique name."),
    collection: str = typer.Argument(..., help="Collection, e.g. products, diary, health."),
    doc_id: str = typer.Argument(..., help="Document id."),
    data: str = typer.Option(..., "--data", help='Fields as JSON, e.g. {"title": "Tomatoes"}; '
                             "null deletes a field. @FILE reads the JSON from a file, - from "
                             "stdin."),
    home: str | None = HomeOption, as_json: bool = JsonOption,
) -> None:
    """Set fields of a document (creating it if needed)."""
    out = _call(home, "doc_put", space=space, coll=collection, doc_id=doc_id, data=_fields(data))
    emit(out, as_json, f"saved {collection}/{doc_id} (seq {out['seq']})")


@doc_app.command("get")
@user_errors
def get(
    space: str = typer.Argument(..., help="Space id or unique name."),
    collection: str = typer.Argument(...),
    doc_id: str = typer.Argument(...),
    home: str | None = HomeOption, as_json: bool = JsonOption,
) -> None:
    """Print one document."""
    out = _call(home, "doc_get", space=space, coll=collection, doc_id=doc_id)
    if out["doc"] is None and not as_json:
        fail(f"no document {collection}/{doc_id}")
    emit(out, as_json, _render_doc(out["doc"]) if out["doc"] is not None else "")


@doc_app.command("list")
@user_errors
def list_docs(
    space: str = typer.Argument(..., help="Space id or unique name."),
    collection: str = typer.Argument(...),
    home: str | None = HomeOption, as_json: bool = JsonOption,
) -> None:
    """List the documents of a collection."""
    out = _call(home, "doc_list", space=space, coll=collection)
    human = "\n".join(_render_doc(d, one_line=True) for d in out["docs"]) or "no documents"
    emit(out, as_json, human)


@doc_app.command("delete")
@user_errors
def delete(
    space: str = typer.Argument(..., help="Space id or unique name."),
    collection: str = typer.Argument(...),
    doc_id: str = typer.Argument(...),
    home: str | None = HomeOption, as_json: bool = JsonOption,
) -> None:
    """Delete a document (a tombstone that syncs like any write)."""
    out = _call(home, "doc_delete", space=space, coll=collection, doc_id=doc_id)
    emit(out, as_json, f"deleted {collection}/{doc_id}")


def _render_doc(doc: dict[str, Any], one_line: bool = False) -> str:
    fields = {k: v for k, v in doc.items() if k != "_id"}
    if one_line:
        return f"{doc['_id']}  " + "  ".join(f"{k}={v}" for k, v in fields.items())
    return "\n".join([f"_id: {doc['_id']}", *(f"{k}: {v}" for k, v in fields.items())])
