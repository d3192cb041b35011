"""Display forms of tokens: whitespace made visible, byte-level and SentencePiece markers shown the same way."""

import pytest

from headscope.tokens import display_form, is_whitespace_token, token_text


@pytest.mark.parametrize(
    ("text", "shown"),
    [(" ", "·"), ("\n", "↵"), ("\t", "→"), (" 5", "·5"), ("a\n\tb", "a↵→b"), ("", "∅"), ("  ", "··")],
)
def test_display_form_makes_whitespace_visible(text, shown):
    assert display_form(text) == shown


@pytest.mark.parametrize(
    ("raw", "byte_level", "text"),
    [
        ("Ġ5", True, " 5"),  # byte-level BPE space
        ("Ġ", True, " "),
        ("Ċ", True, "\n"),
        ("ĉ", True, "\t"),
        ("ĠĠ", True, "  "),
        ("▁5", False, " 5"),  # SentencePiece space
        ("▁", False, " "),
        ("<0x0A>", False, "\n"),  # SentencePiece byte fallback
        ("<0x09>", False, "\t"),
        ("hello", True, "hello"),
    ],
)
def test_token_text_decodes_markers(raw, byte_level, text):
    assert token_text(raw, byte_level) == text


def test_byte_level_and_sentencepiece_spaces_display_identically():
    assert display_form(token_text("Ġfive", True)) == display_form(token_text("▁five", False)) == "·five"


def test_partial_utf8_byte_is_escaped_not_replaced():
    # 'â' stands for byte 0xE2, the first byte of a three-byte character: shown as an escape, never as U+FFFD
    assert token_text("â", True) == "\\xe2"
    assert "\ufffd" not in token_text("â", True)


def test_whitespace_token_detection():
    assert is_whitespace_token(" ")
    assert is_whitespace_token("\n")
    assert not is_whitespace_token(" 5")
    assert not is_whitespace_token("")


@pytest.mark.parametrize(("literal", "whitespace"), [("·", " "), ("↵", "\n"), ("→", "\t"), ("⏎", "\r")])
def test_a_literal_marker_character_never_looks_like_the_whitespace_it_marks(literal, whitespace):
    # '1·2' typed (or a predicted '·' token) must not read as '1 2', the very trap the prompt tester shows
    assert display_form(f"1{literal}2") != display_form(f"1{whitespace}2")
    assert display_form(literal) == f"⟨U+{ord(literal):04X}⟩"


def test_a_literal_empty_set_sign_differs_from_an_empty_token():
    assert display_form("∅") != display_form("")
