"""headscope's CLI run in this process (headscope.cli.main, what `python -m headscope` calls): a process per case would
spend seconds importing torch (and loading the embedded model again) for what the command prints. The real process's
exit code and stderr are checked by the real-process cases in tests/model/test_cli_bad_input.py and test_cli_tokens.py's
table and unknown-option cases (and, in the slow run and .ci/run, by the installed package's command)."""

from dataclasses import dataclass

from headscope.cli import main


@dataclass(frozen=True)
class Ran:
    """What a finished command left: the names of subprocess.CompletedProcess, so a case reads the same either way."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(capsys, argv: list[str]) -> Ran:
    """Run the CLI on `argv` in this process; its exit code and what it wrote to stdout and stderr."""
    capsys.readouterr()  # what earlier code printed is not this command's
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit with code 2, one line on stderr and nothing on stdout. Returns that line."""
    ran = run_cli(capsys, argv)
    assert ran.returncode == 2, ran
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert ran.stdout == ""
    return lines[0]
