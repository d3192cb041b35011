"""The independent reference for ablation numbers: plain PyTorch hooks on an untouched transformers model, its inputs
built here from the prompts' text with the Hugging Face tokenizer directly (none of headscope's helpers:
build_task_dataset, prepare_dataset, encode, member_positions, the bridge's hooks).

The models passed in must be loaded by `AutoModelForCausalLM.from_pretrained` on their own (TransformerLens replaces
the submodules of the model it wraps, so a headscope backend's `hf_model` runs TransformerLens code)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from headscope.tasks import PromptItem


def digit_items(starts: list[int], corrupted: list[str]) -> tuple[PromptItem, ...]:
    """Digit prompts "i i+1 i+2 i+3 " answered i+4 (correct) against i+3, each with a corrupted prompt of the same
    shape (single digits in another order: the sequence's signal is gone)."""
    return tuple(PromptItem(f"{i} {i + 1} {i + 2} {i + 3} ", str(i + 4), str(i + 3), corrupted_prompt=bad)
                 for i, bad in zip(starts, corrupted, strict=True))


@dataclass(frozen=True)
class PlainInputs:
    """Token ids of a dataset, as the model reads them: BOS first, then the prompt's tokens."""

    clean: torch.Tensor
    corrupted: torch.Tensor | None
    correct_ids: torch.Tensor
    incorrect_ids: torch.Tensor

    @property
    def n_prompts(self) -> int:
        return self.clean.shape[0]


def plain_inputs(tokenizer, items: tuple[PromptItem, ...]) -> PlainInputs:
    """BOS (`tokenizer.bos_token_id`) then the prompt's own tokens; an answer's id is the first token that follows
    the prompt's tokens when prompt and answer are tokenized together (the prompt's tokens must stay a prefix)."""

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    def first_answer_token(prompt: str, answer: str) -> int:
        alone, joined = ids(prompt), ids(prompt + answer)
        assert joined[:len(alone)] == alone, (prompt, answer)
        return joined[len(alone)]

    bos = [tokenizer.bos_token_id]
    corrupted = ([bos + ids(item.corrupted_prompt) for item in items]
                 if all(item.corrupted_prompt for item in items) else None)
    return PlainInputs(
        clean=torch.tensor([bos + ids(item.prompt) for item in items]),
        corrupted=None if corrupted is None else torch.tensor(corrupted),
        correct_ids=torch.tensor([first_answer_token(item.prompt, item.correct) for item in items]),
        incorrect_ids=torch.tensor([first_answer_token(item.prompt, item.incorrect) for item in items]),
    )


class HandWritten:
    """LD with a set of heads and MLPs ablated, from HF's own forward: a pre-hook on each layer's o_proj replaces the
    removed heads' slices of its input (z, the heads' outputs concatenated), a forward hook on each layer's MLP
    replaces its output. Zero: 0; mean: the position-wise mean over the corrupted prompts; resample: each prompt's
    paired corrupted prompt."""

    def __init__(self, hf, inputs: PlainInputs, method: str):
        self.hf = hf
        self.layers = hf.model.layers
        self.d_head = getattr(hf.config, "head_dim", None) or hf.config.hidden_size // hf.config.num_attention_heads
        self.inputs = inputs
        self.method = method
        self.z, self.mlp = self._corrupted_values()
        self.calls = 0

    def _corrupted_values(self):
        n = len(self.layers)
        if self.method == "zero":
            return [None] * n, [None] * n
        seen_z, seen_mlp = {}, {}
        handles = []
        for i, layer in enumerate(self.layers):
            handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
                lambda module, args, i=i: seen_z.__setitem__(i, args[0].detach().clone())))
            handles.append(layer.mlp.register_forward_hook(
                lambda module, args, out, i=i: seen_mlp.__setitem__(i, out.detach().clone())))
        try:
            with torch.no_grad():
                self.hf(self.inputs.corrupted)
        finally:
            for handle in handles:
                handle.remove()
        if self.method == "mean":
            return ([seen_z[i].mean(0, keepdim=True) for i in range(n)],
                    [seen_mlp[i].mean(0, keepdim=True) for i in range(n)])
        return [seen_z[i] for i in range(n)], [seen_mlp[i] for i in range(n)]

    def ld(self, removed) -> float:
        """Mean logit difference (correct − incorrect) at the last position with `removed` ablated: (layer, head)
        for a head, (layer, None) for the layer's MLP."""
        self.calls += 1
        handles = []
        for i, layer in enumerate(self.layers):
            heads = [head for (at, head) in removed if at == i and head is not None]
            if heads:
                def replace_z(module, args, i=i, heads=tuple(heads)):
                    z = args[0].clone()
                    for head in heads:
                        cols = slice(head * self.d_head, (head + 1) * self.d_head)
                        z[..., cols] = 0.0 if self.z[i] is None else self.z[i][..., cols].expand_as(z[..., cols])
                    return (z, *args[1:])
                handles.append(layer.self_attn.o_proj.register_forward_pre_hook(replace_z))
            if (i, None) in removed:
                def replace_mlp(module, args, out, i=i):
                    return torch.zeros_like(out) if self.mlp[i] is None else self.mlp[i].expand_as(out).clone()
                handles.append(layer.mlp.register_forward_hook(replace_mlp))
        try:
            with torch.no_grad():
                logits = self.hf(self.inputs.clean).logits[:, -1, :].double()
        finally:
            for handle in handles:
                handle.remove()
        rows = torch.arange(self.inputs.n_prompts)
        return float((logits[rows, self.inputs.correct_ids] - logits[rows, self.inputs.incorrect_ids]).mean())


def assert_same_inputs(encoded, inputs: PlainInputs) -> None:
    """headscope's encoding of the same items equals the reference's own (so the two runs see one input)."""
    assert torch.equal(encoded.clean.cpu(), inputs.clean)
    assert torch.equal(encoded.correct_ids.cpu(), inputs.correct_ids)
    assert torch.equal(encoded.incorrect_ids.cpu(), inputs.incorrect_ids)
    if inputs.corrupted is not None:
        assert torch.equal(encoded.corrupted.cpu(), inputs.corrupted)
