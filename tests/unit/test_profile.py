"""HEADSCOPE_PROFILE=1 logs one `profile <name> <seconds> <wall clock>` line per timed call (how the attention page's
browser-only seconds were found); unset, it logs nothing."""

from headscope.profile import timed


def test_timed_logs_only_when_asked(monkeypatch, capsys):
    monkeypatch.delenv("HEADSCOPE_PROFILE", raising=False)
    with timed("quiet"):
        pass
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("HEADSCOPE_PROFILE", "1")
    with timed("attention: patterns"):
        pass
    words = capsys.readouterr().err.split()
    assert words[:3] == ["profile", "attention:", "patterns"] and float(words[3]) >= 0 and float(words[4]) > 1e9
