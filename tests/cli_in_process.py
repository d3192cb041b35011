"""headscope's CLI run in this process (headscope.cli.main, what `python -m headscope` calls): for bad input that
fails before or soon after a model loads, a process per case would spend seconds importing torch for one line. The
real process's exit code and stderr are checked by the real-process cases in tests/model/test_cli_bad_input.py."""

from headscope.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit with code 2, one line on stderr and nothing on stdout. Returns that line."""
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert captured.out == ""
    return lines[0]
