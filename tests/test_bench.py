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


def test_every_benchmark_file_has_a_run_function():
    """`bevsimdet bench` calls ``run(quick=...)`` of each file; a file without one would stop it."""
    import inspect

    from bevsimdet.bench import discover, load

    paths = discover()
    assert {p.stem for p in paths} >= {"bench_sim", "bench_eval", "bench_models", "bench_export", "bench_gcm", "bench_engine"}
    for path in paths:
        run = getattr(load(path), "run", None)
        assert callable(run) and "quick" in inspect.signature(run).parameters, path.name
