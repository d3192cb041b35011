"""Whether a model's input starts with a BOS token: decided once per model, here, and used by every backend.

Two backends over one model must feed it the same ids. TransformerLens decides per family (no BOS for Qwen2 and
GPT-NeoX) and nnsight by the tokenizer, so before this module existed the same prompt could reach a model as
`[33, 216, ...]` on one backend and `[1, 33, 216, ...]` on the other. Now the loader decides once, from the tokenizer
and the config, records the decision and its reason in ModelInfo (shown in the model card and the token strip), and
every backend builds its input from it (the bridge is fed explicit token tensors; TransformerLens never prepends).

The rule ("auto"):
1. the tokenizer adds BOS itself (`tokenizer(text)`, special tokens on): BOS first, as a plain transformers user gets;
2. the tokenizer has a BOS token that it does not add, and the model's config names that very id as its
   `bos_token_id`: BOS first (the model was set up with it; TransformerLens' default for most families, and
   headscope's behaviour for such models so far, e.g. SmolLM2 and GPT-2);
3. otherwise no BOS.
"prepend" and "none" override the rule (the user's choice; ModelRequest.bos, the CLI's --bos).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

BosChoice = Literal["auto", "prepend", "none"]
BOS_CHOICES: tuple[BosChoice, ...] = ("auto", "prepend", "none")
_PROBE_TEXT = "1 2 3"


@dataclass(frozen=True)
class BosPolicy:
    """The decision for one model: prepend `token` (id `token_id`) or nothing, and why (shown to the user)."""

    prepend: bool
    token: str | None
    token_id: int | None
    reason: str
    choice: BosChoice = "auto"

    def ids(self, ids: list[int]) -> list[int]:
        """The model's real input for prompt ids (no special tokens): BOS first where the policy prepends."""
        return [self.token_id, *ids] if self.prepend and self.token_id is not None else list(ids)


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS token first on its own (`tokenizer(text)` with special tokens)."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return False
    ids = list(tokenizer(_PROBE_TEXT)["input_ids"])
    return bool(ids) and ids[0] == bos_id


def decide_bos(tokenizer: Any, config: Any, choice: str = "auto") -> BosPolicy:
    """The BOS policy of a model from its tokenizer and config, or the user's choice (see the module docstring)."""
    if choice not in BOS_CHOICES:
        raise ValueError(f"Unknown BOS choice {choice!r}: choose one of {', '.join(BOS_CHOICES)}.")
    token = getattr(tokenizer, "bos_token", None)
    token_id = getattr(tokenizer, "bos_token_id", None)
    if choice == "none":
        return BosPolicy(False, None, None, "no BOS: chosen by the user", "none")
    if token_id is None:
        why = "the tokenizer has no BOS token"
        if choice == "prepend":
            why += " (BOS asked for, none to prepend)"
        return BosPolicy(False, None, None, f"no BOS: {why}", choice)  # type: ignore[arg-type]
    if choice == "prepend":
        return BosPolicy(True, token, int(token_id), f"BOS {token!r} first: chosen by the user", "prepend")
    if tokenizer_adds_bos(tokenizer):
        return BosPolicy(True, token, int(token_id), f"BOS {token!r} first: the tokenizer adds it")
    config_bos = getattr(config, "bos_token_id", None)
    if config_bos is not None and int(config_bos) == int(token_id):
        return BosPolicy(True, token, int(token_id),
                         f"BOS {token!r} first: the tokenizer does not add it, the model's config names it as BOS")
    return BosPolicy(False, None, None, f"no BOS: the tokenizer does not add {token!r} and the model's config does not "
                     "name it as BOS")


__all__ = ["BOS_CHOICES", "BosChoice", "BosPolicy", "decide_bos", "tokenizer_adds_bos"]
