"""The Python API, for notebooks: `import headscope as hs; model = hs.load(); model.sweep(task="digits")`.

A thin facade over the functions the command line calls (load_model, analyze_prompt, run_sweep, run_circuit,
score_heads, compute_patterns), with the same checks and one-line messages (bad input raises headscope.InputError)
and the same results cache: a sweep run here opens at once on the page, and the other way round. Each result keeps
the core's frozen dataclass in `.result` (its fields read through) and adds `.to_frame()` (pandas), `.to_json()` (the
command line's --json) and a drawing in Jupyter (`_repr_html_`: the pages' own figures, offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headscope.component import Component
from headscope.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from headscope.backends.base import Backend
    from headscope.loading import ModelRequest
    from headscope.tasks import Dataset

LOCAL_BACKENDS = ("bridge", "nnsight")
DEFAULT_TASK_PROMPTS = 16
DATAFRAME_NAME = "dataframe.csv"  # the dataset name of a DataFrame passed without one (part of its cache key)


def load(source: str = "embedded", *, device: str = "auto", dtype: str = "auto", backend: str | None = None,
         remote: bool = False, api_key: str | None = None) -> Model:
    """A model, as `--model/--device/--dtype/--backend/--remote` load it: the embedded model by default, a hub id or
    a local folder; backend "bridge" (TransformerLens, the default) or "nnsight"; remote=True runs it on NDIF through
    nnsight (the key from `api_key` or NDIF_API_KEY)."""
    from headscope.loading import ModelRequest, load_for_console

    request = ModelRequest(source, device, dtype, backend=backend_name(backend, remote, device, dtype),
                           api_key=api_key)
    return Model(load_for_console(request), request)


def backend_name(backend: str | None, remote: bool, device: str = "auto", dtype: str = "auto") -> str:
    """The backend of --backend and --remote ("ndif" is nnsight on NDIF), checked as the command line checks it."""
    if backend is not None and backend not in LOCAL_BACKENDS:
        raise InputError(f"Unknown backend {backend!r}: choose {' or '.join(LOCAL_BACKENDS)} (and remote=True for "
                         "NDIF).")
    if not remote:
        return backend or "bridge"
    if backend == "bridge":
        raise InputError("--remote runs nnsight on NDIF: leave out --backend bridge (or use --backend nnsight).")
    if device != "auto" or dtype != "auto":
        raise InputError("--device and --dtype do not apply with --remote: NDIF chooses where and in which dtype "
                         "the model runs.")
    return "ndif"


def check_prompt_source(task: str | None, has_dataset: bool, n_prompts: int | None, seed: int | None,
                        step: int | None) -> int:
    """A built-in task or a dataset, with the options that apply to it; the number of prompts of a task. Checked
    before any model loads (bad input fails fast)."""
    from headscope.tasks import check_step, check_task

    if (task is None) == (not has_dataset):
        raise InputError("Give either a built-in task (--task) or a dataset (--dataset), not both or neither.")
    for option, value in (("--step", step), ("--n-prompts", n_prompts), ("--seed", seed)):
        if value is not None and task is None:  # never silently ignored
            raise InputError(f"{option} applies to a built-in task (--task), not to a dataset file: leave it out.")
    if task is not None:
        check_step(check_task(task), step)
    count = DEFAULT_TASK_PROMPTS if n_prompts is None else n_prompts
    if not 1 <= count <= 4096:
        raise InputError(f"--n-prompts must be from 1 to 4096, got {count}.")
    return count


def read_dataset(dataset: Any, name: str | None = None) -> Dataset:
    """A dataset from a CSV/JSON file path or a pandas DataFrame (columns prompt, correct, incorrect[,
    corrupted_prompt]), checked and limited as an uploaded file is."""
    from headscope.tasks import load_dataset_file, load_dataset_text

    if isinstance(dataset, str | Path):
        return load_dataset_file(dataset)
    if hasattr(dataset, "to_csv"):
        return load_dataset_text(dataset.to_csv(index=False), name or DATAFRAME_NAME)
    raise InputError(f"dataset must be a CSV or JSON file path or a pandas DataFrame, got {type(dataset).__name__}.")


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded model and the analyses of the pages. `backend` is headscope's Backend (the one interface to the
    model's hooks and weights); `request` is what was asked for (for the notebook line of a page's Copy as code)."""

    backend: Backend
    request: ModelRequest

    @property
    def info(self):
        return self.backend.info

    def __repr__(self) -> str:
        info = self.info
        return (f"<headscope model {info.name}: {info.n_layers} layers × {info.n_heads} heads "
                f"({info.n_kv_heads} KV), {info.backend_label}>")

    def tokens(self, prompt: str, answer: str | None = None, contrast: str | None = None, *, top_k: int = 10,
               position: int | None = None) -> Tokens:
        """The prompt tester: the real input's tokens, the top-k next tokens at `position` (default: the last), the
        rank of `answer` and the logit difference answer − contrast."""
        from headscope.predict import analyze_prompt, validate_top_k

        validate_top_k(top_k)
        if prompt == "":
            raise InputError("The prompt is empty: give some text to tokenize.")
        result = analyze_prompt(self.backend, prompt, answer, contrast, top_k, position)
        return Tokens(result, self.info.backend)

    def _dataset(self, task: str | None, dataset: Any, n_prompts: int | None, seed: int | None,
                 step: int | None, name: str | None) -> Dataset:
        from headscope.tasks import build_task_dataset

        count = check_prompt_source(task, dataset is not None, n_prompts, seed, step)
        if dataset is not None:
            return read_dataset(dataset, name)
        return build_task_dataset(task, count, seed=seed or 0, model=self.backend, step=step)

    def sweep(self, task: str | None = None, *, dataset: Any = None, method: str = "mean",
              n_prompts: int | None = None, seed: int | None = None, step: int | None = None,
              only_correct: bool = False, estimate: bool = False, use_cache: bool = True, name: str | None = None,
              unit: str = "head") -> Sweep:
        """Every head and MLP ablated (`headscope ablate`): a built-in task or `dataset` (a file path or a
        DataFrame; `name` names a DataFrame in the cache). From the results cache when it holds this sweep.
        unit "kv-group" ablates the query heads of each KV group together (`--unit kv-group`)."""
        from headscope.ablation import METHODS, run_sweep

        if method not in METHODS:
            raise InputError(f"Unknown ablation method {method!r}: choose zero, mean or resample.")
        data = self._dataset(task, dataset, n_prompts, seed, step, name)
        result = run_sweep(self.backend, data, method, estimate=estimate, only_correct=only_correct,
                           use_cache=use_cache, unit=unit)
        return Sweep(result, self.info.backend)

    def circuit(self, task: str | None = None, *, dataset: Any = None, method: str = "mean",
                threshold: float = 80.0, one_pass: bool = False, n_prompts: int | None = None,
                seed: int | None = None, step: int | None = None, estimate: bool = False, use_cache: bool = True,
                name: str | None = None) -> Circuit:
        """The task's circuit by iterative pruning (`headscope circuit`), exact unless `estimate`."""
        from headscope.circuit import check_threshold, run_circuit
        from headscope.methods import get_method

        get_method(method)
        check_threshold(threshold)
        data = self._dataset(task, dataset, n_prompts, seed, step, name)
        result = run_circuit(self.backend, data, method, threshold, one_pass=one_pass, estimate=estimate,
                             use_cache=use_cache)
        return Circuit(result, self.info.backend)

    def paths(self, task: str | None = None, *, sender: Any = None, receiver: Any = None, into: str = "q",
              direction: str = "noise", method: str = "resample", dataset: Any = None, n_prompts: int | None = None,
              seed: int | None = None, step: int | None = None, use_cache: bool = True, name: str | None = None,
              ) -> Paths:
        """Path patching (`headscope paths`): `sender` (a head, its path into every later head's `into` input) or
        `receiver` (a head, or "logits": every earlier head's path into it)."""
        from headscope.path_patching import PathQuery, run_paths

        to_logits = isinstance(receiver, str) and receiver.strip().lower() == "logits"
        query = PathQuery(sender=None if sender is None else _head(sender),
                          receiver=None if receiver is None or to_logits else _head(receiver), to_logits=to_logits,
                          into=into, direction=direction, method=method)  # type: ignore[arg-type]
        query.check_options()
        data = self._dataset(task, dataset, n_prompts, seed, step, name)
        return Paths(run_paths(self.backend, data, query, use_cache=use_cache), self.info.backend,
                     self.info.heads_per_kv)

    def dla(self, task: str | None = None, *, dataset: Any = None, n_prompts: int | None = None,
            seed: int | None = None, step: int | None = None, only_correct: bool = False, use_cache: bool = True,
            name: str | None = None) -> Dla:
        """Direct logit attribution at the last position (`headscope dla`): each head's, MLP's and the embeddings'
        direct contribution to the LD; with bias_dla they sum to clean_ld."""
        from headscope.logit_attribution import run_dla

        data = self._dataset(task, dataset, n_prompts, seed, step, name)
        return Dla(run_dla(self.backend, data, only_correct=only_correct, use_cache=use_cache), self.info.backend)

    def lens(self, prompt: str, answer: str, contrast: str | None = None) -> Lens:
        """The logit lens at the prompt's last position (`headscope lens`): the answer's rank, probability and
        logit difference after the embeddings and after each layer."""
        from headscope.lens import logit_lens

        return Lens(logit_lens(self.backend, prompt, answer, contrast), self.info.backend)

    def scores(self, score: str, *, prompt: str | None = None, task: str | None = None,
               use_cache: bool = True) -> Scores:
        """One head-type score over every head (`headscope heads`): previous-token, duplicate-token, induction,
        sequence, successor or copying."""
        from headscope.heads import PATTERN_SCORE_NAMES, SCORE_NAMES
        from headscope.scores import score_heads

        if score not in SCORE_NAMES:
            raise InputError(f"Unknown score {score!r}: choose one of {', '.join(SCORE_NAMES)}.")
        if prompt == "":
            raise InputError("The prompt is empty: give some text to score the heads on, or leave out --prompt.")
        if prompt is not None and score not in PATTERN_SCORE_NAMES:
            raise InputError(f"--prompt applies to the pattern scores ({', '.join(PATTERN_SCORE_NAMES)}), not to "
                             f"{score}: leave it out.")
        if task is not None:
            from headscope.tasks import check_task

            if score != "sequence":
                raise InputError(f"--task applies to the sequence score, not to {score}: leave it out.")
            check_task(task)
        result = score_heads(self.backend, score, prompt=prompt, task=task or "digits", use_cache=use_cache)
        return Scores(result, self.info.backend)

    def patterns(self, prompt: str, heads: Any, *, single: Any = None) -> Patterns:
        """The chosen heads' attention patterns on `prompt`: heads as [(3, 24), (5, 25)] or "3.24, 5.25"; `single`
        is the head of the single-head view (default: the first)."""
        from headscope.heads import check_heads, parse_head_list
        from headscope.patterns import compute_patterns

        requested = parse_head_list(heads) if isinstance(heads, str) else tuple(_head(h) for h in heads)
        if not requested:
            raise InputError("No heads given: name at least one, e.g. heads=[(3, 24)].")
        chosen: Component = requested[0] if single is None else (
            parse_head_list(single)[0] if isinstance(single, str) else _head(single))
        if chosen not in requested:
            raise InputError(f"--single {chosen} is not among --heads ({', '.join(h.label for h in requested)}).")
        if prompt == "":
            raise InputError("The prompt is empty: give some text to show the attention patterns on.")
        check_heads(requested, self.info)
        result = compute_patterns(self.backend, prompt, requested)
        return Patterns(result, self.info.backend, result.heads.index(chosen))


def compare(*circuits: Any) -> Comparison:
    """The overlap of two or more circuits (results of model.circuit, on any models, or circuit JSON files as the
    page downloads them): shared components and the Jaccard index of every pair."""
    from headscope.circuit_compare import compare_circuits, parse_circuit_json

    sets = []
    for circuit in circuits:
        if isinstance(circuit, str | Path):
            path = Path(circuit)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise InputError(f"Cannot read {str(path)!r} as UTF-8 text: {error}.") from error
            sets.append(parse_circuit_json(text, path.name))
        else:
            sets.append(getattr(circuit, "result", circuit).circuit_set())
    return Comparison(compare_circuits(sets), "")


def _head(value: Any):
    if isinstance(value, Component):
        return value
    try:
        layer, head = value
        return Component(int(layer), int(head))
    except (TypeError, ValueError):
        raise InputError(f"A head is a (layer, head) pair such as (3, 24), got {value!r}.") from None


# ---------------------------------------------------------------------------------------------------------------
# Results: the core's dataclass, as a table, as the command line's JSON, and drawn


@dataclass(frozen=True, eq=False)
class _Shown:
    """The core's result (`result`, whose fields read through) and the backend that computed it."""

    result: Any
    backend: str

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "result":  # copy and pickle probe dunders before `result` exists
            raise AttributeError(name)
        return getattr(self.result, name)

    def to_json(self) -> dict[str, Any]:
        """What `headscope COMMAND --json` prints for this result (every field of it, the backend too)."""
        return self.result.to_json() | {"backend": self.backend}

    def to_frame(self) -> pd.DataFrame:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.result.model}: {self._summary()}>"

    def _summary(self) -> str:
        return ""


class Tokens(_Shown):
    """The prompt tester's analysis (headscope.predict.PromptAnalysis)."""

    def to_frame(self) -> pd.DataFrame:
        """One row per position of the real input (BOS included): the token and the model's top-1 prediction after
        it."""
        from headscope.frames import tokens_frame

        return tokens_frame(self.result)

    def top_k_frame(self) -> pd.DataFrame:
        from headscope.frames import top_k_frame

        return top_k_frame(self.result)

    def _summary(self) -> str:
        top = self.result.top_k[0].display if self.result.top_k else "?"
        return f"{len(self.result.tokens)} tokens, top-1 at position {self.result.position}: {top!r}"

    def _repr_html_(self) -> str:
        from headscope.frames import tokens_html

        return tokens_html(self.result)


class Sweep(_Shown):
    """An ablation sweep (headscope.ablation.SweepResult)."""

    def to_json(self, per_prompt: bool = False) -> dict[str, Any]:
        """What `headscope ablate --json` prints (`per_prompt=True`: `--per-prompt --json`, each prompt's LDs)."""
        payload = super().to_json()
        return payload if per_prompt else {k: v for k, v in payload.items() if not k.startswith("per_prompt_")}

    def to_frame(self) -> pd.DataFrame:
        """One row per head and per MLP: ablated LD, % of clean, change, normalized (with corrupted prompts)."""
        from headscope.frames import sweep_frame

        return sweep_frame(self.result)

    def figure(self, show: str = "% of clean LD", selected: Any = None):
        """The ablation page's map (a Plotly figure); `show` as the page's *Show*; `selected` a head to outline,
        as (3, 24) or a Component."""
        from headscope.figures import sweep_figure

        return sweep_figure(self.result, show, None if selected is None else _head(selected))

    def confidence(self, k: int = 10, resamples: int = 1000, seed: int = 0):
        """Bootstrap intervals of each cell's change and top-k stability over prompts (headscope.confidence); exact
        sweeps only (they keep each prompt's LDs)."""
        from headscope.confidence import ranking_confidence

        change = self.result.per_prompt_change
        if change is None:
            raise InputError("This sweep has no per-prompt values: run the exact sweep (not the estimate).")
        return ranking_confidence(change, k=k, resamples=resamples, seed=seed)

    def _summary(self) -> str:
        return f"{self.result.label}, clean LD {self.result.clean_ld:.3f}"

    def _repr_html_(self) -> str:
        from headscope.figures import figure_html

        return figure_html(self.figure())


@dataclass(frozen=True, eq=False)
class Paths(_Shown):
    """Path patching (headscope.path_patching.PathResult); heads_per_kv: the model's query heads per KV head (a
    K/V result's intervals count each group once)."""

    heads_per_kv: int = 1

    def to_json(self, per_prompt: bool = False) -> dict[str, Any]:
        """What `headscope paths --json` prints (`per_prompt=True`: also `per_prompt_ld`)."""
        from headscope.cli_paths import result_json

        return result_json(self.result, per_prompt=per_prompt) | {"backend": self.backend}

    def confidence(self, k: int = 10, resamples: int = 1000, seed: int = 0):
        """Bootstrap intervals of each path's effect (patched − the run's LD, paired per prompt) and top-k stability
        (headscope.path_confidence): the numbers `headscope paths --per-prompt` prints."""
        from headscope.path_confidence import path_confidence

        if self.result.n_prompts < 2:
            raise InputError("Intervals need at least two prompts.")
        return path_confidence(self.result, self.heads_per_kv, k=k, resamples=resamples, seed=seed)

    def to_frame(self) -> pd.DataFrame:
        """One row per partner head: the LD with only that path patched and its change from the run's LD."""
        import numpy as np
        import pandas as pd

        result = self.result
        rows = [{"layer": layer, "head": head, "ld": float(result.ld[layer, head]),
                 "change": float(result.ld[layer, head] - result.run_ld)}
                for layer in range(result.ld.shape[0]) for head in range(result.ld.shape[1])
                if not np.isnan(result.ld[layer, head])]
        return pd.DataFrame(rows)

    def _summary(self) -> str:
        query = self.result.query
        return f"{query.sender_label} → {query.receiver_label} ({query.into}, {query.direction})"

class Dla(_Shown):
    """Direct logit attribution (headscope.logit_attribution.DlaResult)."""

    def to_json(self, per_prompt: bool = False) -> dict[str, Any]:
        """What `headscope dla --json` prints (`per_prompt=True`: `--per-prompt --json`, each prompt's values)."""
        payload = super().to_json()
        return payload if per_prompt else {k: v for k, v in payload.items() if not k.startswith("per_prompt_")}

    def confidence(self, k: int = 10, resamples: int = 1000, seed: int = 0):
        """Bootstrap intervals of each head's direct effect and top-k stability over prompts (headscope.confidence)."""
        confidence = self.result.confidence(k=k, resamples=resamples, seed=seed)
        if confidence is None:
            raise InputError("Intervals need each prompt's own direct effects from at least two prompts.")
        return confidence

    def to_frame(self) -> pd.DataFrame:
        """One row per head, per MLP, the embeddings and the constant terms: the direct LD."""
        import pandas as pd

        r = self.result
        rows = [{"component": f"{layer}.{head}", "layer": layer, "head": head, "direct_ld": r.head_dla[layer, head]}
                for layer in range(r.n_layers) for head in range(r.n_heads)]
        rows += [{"component": f"MLP {layer}", "layer": layer, "head": None, "direct_ld": r.mlp_dla[layer]}
                 for layer in range(r.n_layers)]
        rows += [{"component": "embeddings", "layer": None, "head": None, "direct_ld": r.embed_dla},
                 {"component": "biases", "layer": None, "head": None, "direct_ld": r.bias_dla}]
        return pd.DataFrame(rows)

    def _summary(self) -> str:
        r = self.result
        return f"{r.task}, clean LD {r.clean_ld:.3f} = sum of direct effects {r.total:.3f}"


class Lens(_Shown):
    """The logit lens (headscope.lens.LensResult)."""

    def to_frame(self) -> pd.DataFrame:
        """One row per layer (−1: after the embeddings): rank, probability and logit difference of the answer."""
        import pandas as pd

        return pd.DataFrame([{"layer": row.layer, "rank": row.rank, "prob": row.prob, "logit_diff": row.logit_diff}
                             for row in self.result.layers])

    def _summary(self) -> str:
        first = self.result.first_top1_layer
        return f"answer {self.result.answer!r}: " + ("never top-1" if first is None else f"top-1 from layer {first}")


class Circuit(_Shown):
    """A circuit (headscope.circuit.CircuitResult)."""

    def to_frame(self) -> pd.DataFrame:
        """One row per head and per MLP: kept or removed, when, and the scores (the page's CSV)."""
        from headscope.frames import circuit_frame

        return circuit_frame(self.result)

    def figure(self, selected: Any = None):
        """The circuit page's grid (a Plotly figure); `selected` a head to outline, as (3, 24) or a Component."""
        from headscope.figures import circuit_grid

        return circuit_grid(self.result, None if selected is None else _head(selected))

    def _summary(self) -> str:
        r = self.result
        return f"{len(r.heads)} heads and {len(r.mlps)} MLPs, score {r.score:.1f}% ({r.label})"

    def _repr_html_(self) -> str:
        from headscope.figures import figure_html

        return figure_html(self.figure())


class Scores(_Shown):
    """A head-type score over every head (headscope.scores.HeadScores)."""

    def to_frame(self) -> pd.DataFrame:
        """One row per head, best first: layer, head, kv_head, score."""
        import pandas as pd

        return pd.DataFrame(self.result.rows())

    def figure(self):
        from headscope.figures import scores_figure

        return scores_figure(self.result)

    def _summary(self) -> str:
        best = ", ".join(h.label for h in self.result.top_heads(3))
        return f"{self.result.score} scores, best {best}"

    def _repr_html_(self) -> str:
        from headscope.figures import figure_html

        return figure_html(self.figure())


@dataclass(frozen=True, eq=False, repr=False)
class Patterns(_Shown):
    """Attention patterns of chosen heads (headscope.patterns.AttentionPatterns), drawn with circuitsvis offline."""

    single: int = 0  # index of the single-head view's head

    def to_frame(self) -> pd.DataFrame:
        """Long format, one row per head and causal (dest, src) pair (the page's CSV)."""
        from headscope.frames import patterns_frame

        return patterns_frame(self.result)

    def to_json(self) -> dict[str, Any]:
        """`headscope patterns --json` (without the output files), plus the pattern values."""
        r = self.result
        return {"model": r.model, "backend": self.backend, "prompt": r.prompt, "heads": [h.label for h in r.heads],
                "kv_heads": list(r.kv_heads), "tokens": [t.display for t in r.tokens], "seconds": r.seconds,
                "pattern": r.pattern.tolist()}

    def html(self) -> str:
        """The standalone offline page (`headscope patterns --html`)."""
        from headscope.patterns import standalone_html

        return standalone_html(self.result, self.single)

    def _summary(self) -> str:
        return f"{', '.join(h.label for h in self.result.heads)} on {len(self.result.tokens)} tokens"

    def _repr_html_(self) -> str:
        from headscope.figures import patterns_html

        return patterns_html(self.result, self.single)


class Comparison(_Shown):
    """Circuits compared (headscope.circuit.CircuitComparison)."""

    def to_frame(self) -> pd.DataFrame:
        """The Jaccard index of every pair, rows and columns named by the circuits' letters (A, B, …)."""
        import pandas as pd

        from headscope.circuit_compare import letter

        letters = [letter(i) for i in range(len(self.result.circuits))]
        return pd.DataFrame(self.result.jaccard, index=letters, columns=letters)

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {"circuits": [c.label for c in r.circuits], "jaccard": r.jaccard.tolist(),
                "shared": [c.label for c in sorted(r.shared)]}

    def figure(self):
        from headscope.figures import comparison_grid

        return comparison_grid(self.result)

    def __repr__(self) -> str:
        return f"<Comparison of {len(self.result.circuits)} circuits: {len(self.result.shared)} components shared>"

    def _repr_html_(self) -> str:
        from headscope.figures import figure_html

        return figure_html(self.figure()) + self.to_frame().round(3).to_html()


# ---------------------------------------------------------------------------------------------------------------
# Copy as code: the notebook lines that reproduce a page's view


def load_code(request: ModelRequest) -> str:
    """`model = hs.load(...)` for a request, naming only what differs from the defaults (never the NDIF key)."""
    args = [] if request.source == "embedded" else [repr(request.source)]
    if request.backend == "ndif":
        args.append("remote=True")
    else:
        args += [f"{name}={value!r}" for name, value, default in (("device", request.device, "auto"),
                                                                    ("dtype", request.dtype, "auto"),
                                                                    ("backend", request.backend, "bridge"))
                 if value != default]
    return f"model = hs.load({', '.join(args)})"


def call_code(analysis: str, /, *args: Any, **kwargs: Any) -> str:
    """`model.analysis(args, name=value, ...)` with Python literals; keyword arguments that are None are left out."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items() if v is not None]
    return f"model.{analysis}({', '.join(parts)})"


def notebook_code(request: ModelRequest, *calls: str) -> str:
    return "\n".join(("import headscope as hs", load_code(request), *calls))
