"""`llmwatch score` end to end through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmwatch.cli import main


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_toxicity_rows_keep_ids_and_order(tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", [{"id": "a", "text": "you are a moron"}, {"text": "have a lovely day"}])
    assert main(["score", "--detector", "toxicity", "--input", str(source), "--output", str(tmp_path / "o.jsonl")]) == 0
    rows = read(tmp_path / "o.jsonl")
    assert [r["id"] for r in rows] == ["a", 2]  # the line number when a row has no id
    assert rows[0]["label"] == "toxic" and rows[1]["label"] == "ok"
    assert all(0 <= r["score"] <= 1 for r in rows)


def test_grounding_rows(tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", [
        {"id": 1, "context": ["The Eiffel Tower opened in 1889."], "question": "When?", "response": "It opened in 1889."},
        {"id": 2, "context": "The Eiffel Tower opened in 1889.", "response": "It opened in 1925 in Lyon."},
        {"id": 3, "context": [], "response": "It opened in 1925."},
    ])
    assert main(["score", "--detector", "grounding", "--input", str(source), "--output", str(tmp_path / "o.jsonl")]) == 0
    supported, invented, no_context = read(tmp_path / "o.jsonl")
    assert supported["label"] == "supported" and invented["label"] == "unsupported"
    assert invented["details"]["unsupported"][0]["missing"] == ["1925", "lyon"]
    assert (no_context["score"], no_context["label"]) == (None, "not_applicable")


@pytest.mark.parametrize(
    ("detector", "content", "message"),
    [
        ("toxicity", '{"text": "ok"}\nnot json\n', "in.jsonl:2: not JSON"),
        ("grounding", '{"context": "c"}\n', "in.jsonl:1: missing field response"),
        ("toxicity", '["a list"]\n', "in.jsonl:1: expected a JSON object"),
        ("grounding", '{"context": 5, "response": "r"}\n', "line 1: `context` must be a string or a list of strings"),
    ],
)
def test_bad_input_is_named_and_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], detector: str, content: str, message: str
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(content)
    output = tmp_path / "o.jsonl"
    assert main(["score", "--detector", detector, "--input", str(source), "--output", str(output)]) == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [source]
