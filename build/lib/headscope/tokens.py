"""Tokenization made visible: every position of the model's real input, BOS included, with whitespace shown.

Llama-style tokenizers split digits, emit a bare space token and prepend BOS; a table built here from the real input
ids cannot count positions one token early.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from headscope.errors import InputError

if TYPE_CHECKING:
    from headscope.backends.base import Backend

VISIBLE_WHITESPACE = {" ": "·", "\n": "↵", "\t": "→", "\r": "⏎"}
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
SENTENCEPIECE_SPACE = "▁"


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable stand-in characters of byte-level BPE back to bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


def token_text(raw: str, byte_level: bool) -> str:
    """The text a raw token stands for: 'Ġ5' -> ' 5' (byte-level BPE), '▁5' -> ' 5', '<0x0A>' -> newline.

    Bytes that are only part of a UTF-8 character are shown as \\xNN escapes rather than replacement characters.
    """
    match = _BYTE_TOKEN.match(raw)
    if match:
        return bytes([int(match.group(1), 16)]).decode("utf-8", errors="backslashreplace")
    if byte_level:
        decoder = _byte_decoder()
        if all(ch in decoder for ch in raw):
            return bytes(decoder[ch] for ch in raw).decode("utf-8", errors="backslashreplace")
    return raw.replace(SENTENCEPIECE_SPACE, " ")


# Characters that draw nothing (or nothing distinguishable from a space) outside the categories checked below:
# variation selectors (U+FE0F turns ❤ into an emoji), the grapheme joiner, Hangul fillers, the blank Braille cell.
_INVISIBLE_EXTRA = frozenset(
    [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0), 0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0x180E]
)
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp"})  # format, control, spaces, separators


def is_invisible(ch: str) -> bool:
    """True for a character that shows as nothing or as a plain-looking blank: zero-width and format characters
    (U+200B, RTL/LTR marks, U+FEFF), controls, spaces other than ' ', variation selectors."""
    if ch == " ":
        return False
    return ord(ch) in _INVISIBLE_EXTRA or unicodedata.category(ch) in _INVISIBLE_CATEGORIES


def reveal_invisible(text: str) -> str:
    """Invisible characters as ⟨U+XXXX⟩, so that a token or an answer holding one never looks empty or identical to
    another (U+FE0F, U+200B, U+200F, U+00A0 ...). Space, newline and tab are left alone."""
    return "".join(
        f"⟨U+{ord(ch):04X}⟩" if ch not in "\n\t" and is_invisible(ch) else ch for ch in text
    )


# The markers themselves, typed or predicted as text, are shown by code point: a literal '·' must not read as a space.
_MARKERS = frozenset([*VISIBLE_WHITESPACE.values(), "∅"])


def display_form(text: str) -> str:
    """Whitespace made visible (space ·, newline ↵, tab →, carriage return ⏎) and invisible characters shown as
    ⟨U+XXXX⟩ (a lone U+FE0F token would otherwise be a blank chip). Empty text shows as ∅; the marker characters
    themselves, when they are the text, as ⟨U+00B7⟩ and so on."""
    if text == "":
        return "∅"
    return reveal_invisible("".join(
        f"⟨U+{ord(ch):04X}⟩" if ch in _MARKERS else VISIBLE_WHITESPACE.get(ch, ch) for ch in text))


def is_whitespace_token(text: str) -> bool:
    return text != "" and text.strip() == ""


@dataclass(frozen=True)
class TokenInfo:
    """One position of the model's input."""

    position: int  # index in the model's real input, BOS included
    id: int
    raw: str  # the tokenizer's own string, e.g. 'Ġ5' or '▁5'
    text: str  # the text it stands for, e.g. ' 5'
    display: str  # text with whitespace made visible, e.g. '·5'
    special: bool  # BOS/EOS and other special tokens
    char_start: int | None  # span in the prompt (None for tokens the tokenizer added, e.g. BOS)
    char_end: int | None

    def to_json(self) -> dict:
        return {"position": self.position, "id": self.id, "text": self.text, "display": self.display,
                "special": self.special}


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt as the model sees it: tokens[pos] with BOS at position 0 where the model prepends one."""

    prompt: str
    tokens: tuple[TokenInfo, ...]
    bos_prepended: bool

    @property
    def ids(self) -> list[int]:
        return [t.id for t in self.tokens]

    def __len__(self) -> int:
        return len(self.tokens)


_BYTE_LEVEL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _is_byte_level(tokenizer: object) -> bool:
    """Whether a tokenizer is byte-level BPE (GPT-2 style 'Ġ'); remembered per tokenizer object, since reading the
    vocabulary costs tens of milliseconds on every prompt otherwise."""
    try:
        return _BYTE_LEVEL[tokenizer]
    except (KeyError, TypeError):
        pass
    vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
    byte_level = "Ġ" in vocab or "Ċ" in vocab
    with contextlib.suppress(TypeError):
        _BYTE_LEVEL[tokenizer] = byte_level
    return byte_level


class TokenDescriber:
    """Turns ids into TokenInfo for one tokenizer (detects byte-level BPE once)."""

    def __init__(self, model: Backend) -> None:
        self.model = model
        self.byte_level = _is_byte_level(model.tokenizer)
        self.special_ids = model.special_ids()

    def describe(self, ids: list[int], spans: list[tuple[int, int] | None] | None = None) -> tuple[TokenInfo, ...]:
        raws = self.model.raw_tokens(ids)
        out = []
        for position, (token_id, raw) in enumerate(zip(ids, raws, strict=True)):
            special = token_id in self.special_ids
            text = raw if special else token_text(raw, self.byte_level)
            span = spans[position] if spans is not None else None
            out.append(TokenInfo(
                position=position,
                id=int(token_id),
                raw=raw,
                text=text,
                display=text if special else display_form(text),
                special=special,
                char_start=span[0] if span else None,
                char_end=span[1] if span else None,
            ))
        return tuple(out)

    def one(self, token_id: int) -> TokenInfo:
        return self.describe([token_id])[0]


def tokenize_prompt(model: Backend, prompt: str, describer: TokenDescriber | None = None) -> TokenizedPrompt:
    """The model's real input for `prompt`, position by position, with character spans."""
    if prompt is None or prompt == "":
        raise InputError("The prompt is empty: type some text to tokenize.")
    ids, spans = model.encode_with_offsets(prompt)
    all_spans: list[tuple[int, int] | None] = list(spans)
    if model.prepends_bos:
        ids = [model.tokenizer.bos_token_id, *ids]
        all_spans = [None, *all_spans]
    if len(ids) > model.info.n_ctx:
        raise InputError(
            f"The prompt is {len(ids)} tokens long but {model.info.name} reads at most {model.info.n_ctx} "
            "(its context length): shorten it."
        )
    describer = describer or TokenDescriber(model)
    return TokenizedPrompt(prompt=prompt, tokens=describer.describe(ids, all_spans), bos_prepended=model.prepends_bos)


def continuation_ids(model: Backend, prefix: str, continuation: str) -> tuple[list[int], bool]:
    """Token ids of `continuation` as the tokenizer would emit them right after `prefix`.

    Tokenized in context, because tokenizing an answer on its own can add a leading-space marker (SentencePiece) or
    miss a merge. Returns (ids, merged); merged is True when the continuation fuses with the prefix's last token, in
    which case the ids are those of the continuation tokenized alone.
    """
    before = model.encode(prefix) if prefix else []
    after = model.encode(prefix + continuation)
    if after[: len(before)] == before and len(after) > len(before):
        return after[len(before):], False
    return model.encode(continuation), True
