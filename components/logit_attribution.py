"""Direct logit attribution beside the ablation heatmap: which effect the map shows (total: the sweep; direct: DLA),
the DLA map, the check that the contributions add up to the clean LD, and the scatter of direct against total effect.

A head's total effect is what ablating it costs: LD_clean − LD_ablated (positive: it helps the task). Its direct
effect is what its own output adds to the LD through the final norm and the unembedding (DLA). A head with a large
total but a small direct effect acts through later components.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from components.confidence_view import INTERVAL_COLUMNS, SHOWN, cells_frame, show_intervals
from components.heatmap import CellClick, click_from_event, layer_head_figure
from components.long_run import progress_with_cancel, say_if_stopped
from components.presentation import present_figure
from components.share import BOUND
from components.text import md, plotly_text
from headscope.ablation import SweepResult
from headscope.api import call_code
from headscope.component import Component
from headscope.confidence import RankingConfidence, ranking_confidence
from headscope.errors import HeadscopeError
from headscope.logit_attribution import DlaResult, load_dla, run_dla
from headscope.results_cache import ResultsCache
from headscope.tasks import EncodedDataset

TOTAL, DIRECT = "total effect (ablation)", "direct effect (DLA)"
EFFECTS = (TOTAL, DIRECT)
EFFECT_KEY = "effect"  # the toggle's key and URL parameter
INDIRECT_SHARE = 0.5  # a top head whose direct effect is below this share of its total effect acts through others
INDIRECT_TOP = 10  # among how many heads (largest total effect) those are looked for
DLA_PREFIX = "dla"  # the DLA run's progress, Cancel button and stopped flag (components.long_run)


def effect_choice() -> str:
    """The toggle over the heatmap: the sweep's total effects or the direct effects (DLA) of the same prompts."""
    return st.segmented_control(
        "Effect shown", EFFECTS, default=TOTAL, key=EFFECT_KEY, required=True, **BOUND,
        help=md("total effect: what ablating the component costs (the sweep) · direct effect: what its own output "
                "adds to LD at the last position through the final norm (its scale frozen from the clean run) and "
                "the unembedding, mean over the same prompts (direct logit attribution)"),
    ) or TOTAL


def dla_code(prompts: dict, only_correct: bool) -> tuple[str, ...]:
    """The notebook line of the direct effects, while the map shows them (the page's Copy as code popover is drawn
    before the toggle: the choice is read from the session or the link)."""
    shown = st.session_state.get(EFFECT_KEY) or st.query_params.get(EFFECT_KEY)
    return (call_code("dla", **prompts, only_correct=only_correct or None),) if shown == DIRECT else ()


def direct_effects(model, sweep: SweepResult, encoded: EncodedDataset | None,
                   cache: ResultsCache | None = None) -> DlaResult | None:
    """The DLA of exactly the sweep's prompts (results cache first); None, with the reason shown, where the page does
    not hold those prompts (a sweep from a link to an upload, or the last sweep after the controls changed)."""
    if sweep.unit != "head":  # direct effects are per query head; a KV-group map has one cell per group
        st.info("Direct effects are per query head: choose *Unit: Query head* above to compare them with the sweep.")
        return None
    if encoded is None or sweep.key.get("dataset_hash") != encoded.dataset.content_hash:
        st.info("Direct effects are computed on the sweep's own prompts: choose the same task and prompts above (or "
                "upload the same file) to compute them.")
        return None
    only_correct = bool(sweep.key.get("only_correct"))
    stored = load_dla(model, encoded, only_correct, cache)
    if stored is not None:
        return stored
    paused = f"{DLA_PREFIX}_paused"  # Cancel pressed: the toggle stays on direct effects, so wait for a click
    if st.session_state.get(f"{DLA_PREFIX}_cancelled"):
        st.session_state[paused] = True
    say_if_stopped(DLA_PREFIX)
    if st.session_state.get(paused):
        if not st.button("Compute direct effects", key=f"{DLA_PREFIX}_start", icon=":material/play_arrow:"):
            return None
        st.session_state.pop(paused)
    try:
        with progress_with_cancel(DLA_PREFIX, "direct logit attribution") as progress:
            return run_dla(model, encoded, only_correct=only_correct, cache=cache, progress=progress)
    except HeadscopeError as error:
        st.error(md(str(error)))
        return None


def dla_figure(dla: DlaResult, selected: Component | None = None) -> go.Figure:
    """Each head's and MLP's direct effect on LD, the sweep map's layout (a click selects the same way)."""
    return layer_head_figure(dla.head_dla, colorbar_title="direct effect on LD", center=0.0,
                             extra_column=dla.mlp_dla, selected=selected, value_format="+.3f",
                             title=f"{dla.model} · {dla.task} · direct logit attribution")


def sum_check(dla: DlaResult, sweep: SweepResult) -> None:
    """The decomposition's check, in numbers: the parts, their sum, and the clean LD beside it."""
    total = dla.total
    st.markdown(
        f"**Sum check:** heads {np.sum(dla.head_dla):+.3f} + MLPs {np.sum(dla.mlp_dla):+.3f} + embeddings "
        f"{dla.embed_dla:+.3f} + constant terms (biases) {dla.bias_dla:+.3f} = **{total:.3f}**; clean LD "
        f"{dla.clean_ld:.3f} (the sweep's {sweep.clean_ld:.3f}). {md(f'{dla.n_prompts} prompts')}, "
        f"{'cached' if dla.cached else f'{dla.seconds:.2f} s'}.")
    if dla.soft_cap:
        st.caption(f"{md(dla.model)} caps its final logits (cap {dla.soft_cap:g}): contributions are computed before "
                   "the cap and each answer's scaled by cap·tanh(l/cap)/l of its pre-cap logit l, so they add up to "
                   "the capped LD.")
    if not np.isclose(total, dla.clean_ld, rtol=1e-3, atol=1e-3 * max(1.0, abs(dla.clean_ld))):
        st.warning(f"The contributions add up to {total:.4f}, not to the clean LD {dla.clean_ld:.4f}: the "
                   "decomposition is not exact on this model.")


def total_effect(sweep: SweepResult) -> np.ndarray:
    """LD_clean − LD_ablated per head: positive where the head helps the task (the sign DLA uses)."""
    return sweep.clean_ld - sweep.ablated_ld


def indirect_heads(sweep: SweepResult, dla: DlaResult, top: int = INDIRECT_TOP,
                   share: float = INDIRECT_SHARE) -> list[Component]:
    """Among the `top` heads with the largest total effect, those whose direct effect is under `share` of it (or of
    the other sign): their effect passes through later components."""
    total = total_effect(sweep)
    order = np.argsort(-np.abs(np.nan_to_num(total)), axis=None, kind="stable")[:top]
    out = []
    for index in order:
        layer, head = divmod(int(index), sweep.n_heads)
        whole, direct = float(total[layer, head]), float(dla.head_dla[layer, head])
        if whole != 0 and direct / whole < share:
            out.append(Component(layer, head))
    return out


def direct_vs_total_figure(sweep: SweepResult, dla: DlaResult, selected: Component | None = None) -> go.Figure:
    """One point per head: total effect (x) against direct effect (y); the diagonal is 'all of it direct'. The head
    is in the hover and in customdata (a click selects it, as on the map)."""
    total = total_effect(sweep)
    layers, heads = np.meshgrid(np.arange(sweep.n_layers), np.arange(sweep.n_heads), indexing="ij")
    xs, ys = total.ravel().astype(float), dla.head_dla.ravel().astype(float)
    shown = np.isfinite(xs) & np.isfinite(ys)
    custom = np.stack([layers.ravel(), heads.ravel(), xs, ys], axis=1)[shown]
    figure = go.Figure(go.Scatter(
        x=xs[shown], y=ys[shown], mode="markers", customdata=custom,
        marker={"size": 8, "color": layers.ravel()[shown], "colorscale": "Viridis", "symbol": "square",
                "colorbar": {"title": {"text": "layer", "side": "right"}, "thickness": 12}},
        hovertemplate=("head %{customdata[0]:.0f}.%{customdata[1]:.0f}<br>total %{customdata[2]:+.3f}<br>"
                       "direct %{customdata[3]:+.3f}<extra></extra>"),
        selected={"marker": {"opacity": 1.0}}, unselected={"marker": {"opacity": 1.0}},
    ))
    span = [float(np.nanmin(np.r_[xs[shown], ys[shown], 0.0])), float(np.nanmax(np.r_[xs[shown], ys[shown], 0.0]))]
    figure.add_trace(go.Scatter(x=span, y=span, mode="lines", hoverinfo="skip", line={"dash": "dot", "color": "#888"}))
    if selected is not None and selected.is_head and selected.within(sweep.n_layers, sweep.n_heads):
        layer, head = selected.layer, selected.head
        figure.add_trace(go.Scatter(
            x=[total[layer, head]], y=[dla.head_dla[layer, head]], mode="markers", hoverinfo="skip",
            marker={"symbol": "square-open", "size": 14, "color": "#111", "line": {"width": 2}}))
    figure.update_layout(
        title={"text": plotly_text(f"Direct vs total effect per head · {sweep.method} ablation"), "font": {"size": 14}},
        xaxis={"title": "total effect: LD_clean − LD_ablated", "zeroline": True},
        yaxis={"title": "direct effect (DLA)", "zeroline": True},
        height=440, margin={"l": 60, "r": 20, "t": 50, "b": 50}, showlegend=False,
        clickmode="event+select", dragmode=False,
    )
    return figure


def direct_vs_total(sweep: SweepResult, dla: DlaResult, selected: Component | None, key: str) -> CellClick | None:
    """The scatter, with the line naming the heads that act through later components; returns a clicked head."""
    event = st.plotly_chart(present_figure(direct_vs_total_figure(sweep, dla, selected)), key=key, on_select="rerun",
                            selection_mode="points", width="stretch", config={"displaylogo": False})
    indirect = indirect_heads(sweep, dla)
    names = ", ".join(head.label for head in indirect) or "none"
    st.caption(f"Heads with a large total but a small direct effect act through later heads (or MLPs). Of the "
               f"{INDIRECT_TOP:d} heads with the largest total effect, direct effect under "
               f"{INDIRECT_SHARE:.0%} of the total: {md(names)}.")
    return click_from_event(event)


DLA_INTERVAL_COLUMNS = {
    "direct LD": st.column_config.NumberColumn("direct LD", format="%+.3f",
                                               help="mean over prompts of the head's direct effect on LD"),
    "low": INTERVAL_COLUMNS["low"], "high": INTERVAL_COLUMNS["high"],
    "in top-10": st.column_config.ProgressColumn("in top-10", format="percent", min_value=0.0, max_value=1.0,
                                                 help="share of bootstrap resamples in which this head is among the "
                                                      "10 largest |direct effects|"),
    "crosses 0": INTERVAL_COLUMNS["crosses 0"],
}


@st.cache_data(show_spinner=False, max_entries=16)
def _dla_confidence(per_prompt: np.ndarray) -> RankingConfidence:
    return ranking_confidence(per_prompt)


def dla_confidence_section(dla: DlaResult) -> None:
    """How far the direct-effect ranking can be trusted: per-head bootstrap intervals over the prompts and how often
    each head stays in the top-10 (headscope.confidence), as the sweep's Confidence section shows them."""
    st.markdown("**Direct effects: confidence**")
    if dla.per_prompt_head_dla is None or dla.n_prompts < 2:
        st.caption("Intervals need each prompt's own direct effects from at least two prompts.")
        return
    confidence = _dla_confidence(dla.per_prompt_head_dla)
    frame = cells_frame([(top.label, (top.layer, top.head)) for top in dla.top_heads(SHOWN)], confidence,
                        "direct LD")
    show_intervals(frame, confidence, "direct LD", "direct effect on LD", DLA_INTERVAL_COLUMNS, "dla", "heads")


def dla_csv(dla: DlaResult) -> str:
    """Every head's, MLP's, the embeddings' and the constant terms' direct effect, one row each."""
    rows = [{"layer": layer, "component": f"head {head}", "head": head, "direct_effect": dla.head_dla[layer, head]}
            for layer in range(dla.head_dla.shape[0]) for head in range(dla.head_dla.shape[1])]
    rows += [{"layer": layer, "component": "mlp", "head": None, "direct_effect": value}
             for layer, value in enumerate(dla.mlp_dla)]
    rows += [{"layer": None, "component": "embeddings", "head": None, "direct_effect": dla.embed_dla},
             {"layer": None, "component": "constant terms", "head": None, "direct_effect": dla.bias_dla}]
    frame = pd.DataFrame(rows)
    frame["layer"] = frame["layer"].astype("Int64")
    frame["head"] = frame["head"].astype("Int64")
    buffer = io.StringIO()
    buffer.write(f"# model={dla.model} task={dla.task} n_prompts={dla.n_prompts} clean_ld={dla.clean_ld:.6f}\n")
    frame.to_csv(buffer, index=False)
    return buffer.getvalue()
