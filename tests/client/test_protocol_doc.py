"""docs/PROTOCOL.md says exactly what client/protocol/ defines: message and event types with their
fields, both binary headers (field names, offsets, sizes) and the realtime error codes with their
close codes. Edit one without the other and this fails."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from client.protocol import chunks, errors, events

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end != -1 else None]


def table_rows(title: str) -> list[list[str]]:
    """The cells of the first table in a section, header and separator rows left out."""
    rows = [line.strip().strip("|").split("|") for line in section(title).splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def documented_fields(cell: str) -> set[str]:
    """The field names of a fields cell: the first `name` of each comma-separated item, with
    parenthesised explanations removed."""
    depth, flat = 0, ""
    for ch in cell:
        depth += ch == "("
        flat += ch if depth == 0 else ""
        depth -= ch == ")" and depth > 0
    names = (re.match(r"\s*`([a-z_]+)`", item) for item in flat.split(","))
    return {m.group(1) for m in names if m}


def model_fields(models) -> dict[str, set[str]]:
    return {m.model_fields["type"].default: set(m.model_fields) - {"type"} for m in models}


@pytest.mark.parametrize("title, models", [
    ("Client -> server (JSON text messages)", events.CLIENT_MESSAGES),
    ("Server -> client JSON events", events.SERVER_EVENTS),
])
def test_json_messages_match_the_models(title, models):
    documented = {row[0].strip("`"): documented_fields(row[1]) for row in table_rows(title)}
    assert documented == model_fields(models)


def struct_layout(layout: struct.Struct, names: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """(offset, size, name) of each field of a struct format, padding bytes counted as a field."""
    out, offset = [], 0
    for (count, code), name in zip(re.findall(r"(\d*)([a-zA-Z])", layout.format), names):
        size = struct.calcsize(f"<{count}{code}")
        out.append((offset, size, name))
        offset += size
    assert offset == layout.size and len(out) == len(names)
    return out


@pytest.mark.parametrize("title, layout, names", [
    ("Server -> client binary chunk messages", chunks.HEADER, chunks.HEADER_FIELDS),
    ("Client -> server binary input messages", chunks.INPUT_HEADER, chunks.INPUT_HEADER_FIELDS),
])
def test_binary_headers_match_the_structs(title, layout, names):
    rows = table_rows(title)
    documented = [(int(offset), int(size), re.match(r"[a-z_]+", field).group(0)) for offset, size, field in rows[:-1]]
    assert documented == struct_layout(layout, names)
    assert rows[-1][:2] == [str(layout.size), "…"]  # the payload follows the header


def test_magic_bytes_and_codes_are_documented():
    chunk_doc, input_doc = section("Server -> client binary chunk messages"), section("Client -> server binary input messages")
    assert f"magic `{chunks.MAGIC.decode()}`" in chunk_doc and f"magic `{chunks.INPUT_MAGIC.decode()}`" in input_doc
    for code, name in chunks.FORMAT_NAMES.items():
        assert f"{code} = {'JPEG' if name == 'jpeg' else 'fMP4'}" in chunk_doc
    for code, kind in chunks.INPUT_KINDS.items():
        assert f"{code} = {kind}" in input_doc


def test_error_codes_and_close_codes_match_the_classes():
    documented = {}
    for code, _when, session in table_rows("Errors"):
        close = re.search(r"closed, (\d+)", session)
        documented[code.strip("`")] = int(close.group(1)) if close else None
    realtime_codes = [c for c in errors.SERVER_CODES if c not in ("not_found", "conflict")]  # REST only
    assert sorted(documented) == sorted(realtime_codes)
    for code, close in documented.items():
        if close is not None:
            assert errors.ERROR_CLASSES[code].close_code == close, code
