from bevsimdet.bench import render_markdown


def test_render_markdown_tables_and_manual_section():
    md = render_markdown(
        [("x", {"title": "X speed", "rows": [{"op": "a", "ms": 1.23456}], "notes": ["median of 5"]}), ("y", {"fps": 3.0})],
        {"cores": "2"},
        extra="hand-written GPU figures",
    )
    assert "## X speed" in md and "| op | ms |" in md and "| a | 1.235 |" in md
    assert "| fps | 3 |" in md and "- median of 5" in md
    assert md.index("<!-- manual -->") < md.index("hand-written GPU figures")
