"""Plotly figure builders: a DataFrame in, a `go.Figure` out. No Streamlit here,
so pages, tests and exports share them. Every builder accepts an empty frame
and then returns a figure with a short note instead of failing."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from ui import md
from ui.names import EXAMPLE_BADGE, reg_name, round_number

TEMPLATE = "plotly_white"
pio.templates.default = TEMPLATE      # see _base
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f"]
REG_COLORS = {"l1": "#1f77b4", "log": "#d62728", "lp": "#ff7f0e", "exp": "#9467bd", "scad": "#8c564b",
              "mcp": "#e377c2"}
METHOD_COLORS = {"imp": "#2ca02c", "dense": "#7f7f7f", "random": "#bcbd22", "cs": "#17becf",
                 # pruning at init, one colour per scorer (keys without spaces: "PaI · snip", "pai·snip")
                 "pai·snip": "#393b79", "pai·grasp": "#637939", "pai·synflow": "#e6ab02",
                 "pai·magnitude": "#843c39", "pai·random": "#bcbd22"}
PHASE_FILL = {"search": "rgba(214,39,40,0.06)", "retrain": "rgba(31,119,180,0.06)",
              "train": "rgba(44,160,44,0.05)"}


TITLE_CHARS = 34      # a title line that fits a half-width figure at 1024×768 (about 270 px at 14 px)


def wrap_title(title: str, width: int = TITLE_CHARS) -> str:
    """Break a title into lines of at most `width` characters (plotly never wraps: a long
    title is cut off at the figure's edge)."""
    lines: list[str] = []
    for word in title.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines)


def _base_layout(title: str | None, height: int, title_chars: int) -> dict:
    """The layout every figure shares: height grown for a wrapped title, margins, the legend below."""
    if title:
        title = wrap_title(title, title_chars)
        lines = title.count("<br>") + 1
        height += 18 * (lines - 1)
    return dict(height=height,
                margin=dict(l=10, r=10, t=(22 + 18 * title.count("<br>") + 16) if title else 10, b=10),
                # Below the plot at the figure's bottom edge: the bottom margin grows to fit
                # it, so a legend of several rows never covers the x-axis title.
                legend=dict(orientation="h", yref="container", yanchor="bottom", y=0, xanchor="left", x=0),
                # y left to plotly ("auto": centred in the top margin); an anchored multi-line
                # title overflowed the figure's top edge.
                title=dict(text=title, x=0, xanchor="left", font=dict(size=14)) if title else None,
                hoverlabel=dict(namelength=-1))


def _our_template() -> bool:
    """Make ours the default template again; False when it was not (a figure made just before
    took the other one). A figure takes the default template when it is made, without checking
    and copying it again (template=… costs ~10 ms a figure); Streamlit sets its own default when
    imported."""
    if pio.templates.default == TEMPLATE:
        return True
    pio.templates.default = TEMPLATE
    return False


def _base(fig: go.Figure, title: str | None = None, height: int = 340, title_chars: int = TITLE_CHARS) -> go.Figure:
    if not _our_template():
        fig.update_layout(template=TEMPLATE)       # this figure was made under the other default
    fig.update_layout(**_base_layout(title, height, title_chars))
    return fig


def _spec_figure(data: list[dict], layout: dict, title: str | None = None, height: int = 340,
                 title_chars: int = TITLE_CHARS) -> go.Figure:
    """A figure made at once from plain dicts (traces and layout), as `_base` finishes one.
    The live charts are built so: plotly's make_subplots, update_* and add_vrect cost 5–20 ms
    a call, ~50 ms a tick for the Runs page's four charts (rebuilt at every new row of a live
    run), where one validated construction costs 1–3 ms a chart. Validation is skipped too (our
    own dicts; a test holds each live chart equal to its validated construction), as is setting
    the default template (a deep copy per figure; see _template_spec): ~19 → ~10 ms for the four charts."""
    data = [{k: v.to_numpy() if isinstance(v, (pd.Series, pd.Index)) else v for k, v in trace.items()}
            for trace in data]       # arrays as plotly's validation leaves them (cheap to copy and send)
    return go.Figure(dict(data=data, layout={**layout, **_base_layout(title, height, title_chars),
                                             "template": _template_spec()}), _validate=False)


class _SharedFigure(go.Figure):
    """A chart that every session watching shares (see shared_figure): its dict is made once."""

    def to_dict(self) -> dict:
        sent = self.__dict__.get("_shared_dict")
        if sent is None:
            sent = self.__dict__["_shared_dict"] = super().to_dict()
        return sent


def shared_figure(fig: go.Figure) -> go.Figure:
    """`fig` as a chart many sessions draw unchanged (a live run's charts, state.shared): its dict
    is made at the first draw and handed to every later one, where st.plotly_chart asked for a new
    copy of the whole figure (to_dict) for every session at every tick, ~0.3 ms a chart. Neither
    the figure nor the dict may be changed after that. The figure is marked in place (its class
    becomes a subclass that only adds the cache): making a new one would cost a copy per chart."""
    if type(fig) is go.Figure:
        fig.__class__ = _SharedFigure
    return fig


@functools.cache
def _template_spec() -> dict:
    """Our template as the plain dict a live chart's JSON holds, made once (see _spec_figure), and
    only what a chart of 2-D scatter traces uses: the whole template is ~550 objects that every
    figure copies when made and again each time a session sends it (every second)."""
    full = pio.templates[TEMPLATE].to_plotly_json()
    unused = ("polar", "ternary", "scene", "geo", "coloraxis", "colorscale")   # other subplot kinds; colour scales
    return {"data": {"scatter": full["data"]["scatter"]},
            "layout": {k: v for k, v in full["layout"].items() if k not in unused}}


def _subplot_axes(**subplots) -> dict:
    """The axes (domains, anchors) make_subplots lays out, made once: see _spec_figure."""
    layout = make_subplots(**subplots).to_plotly_json()["layout"]
    return {k: v for k, v in layout.items() if k.startswith(("xaxis", "yaxis"))}


def empty_figure(note: str, height: int = 220) -> go.Figure:
    """A chart with nothing to draw yet, saying why (made as the live charts are: ~5 → ~1 ms)."""
    note = dict(text=note, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14, color="#666"))
    return _spec_figure([], {"annotations": [note], "xaxis": {"visible": False}, "yaxis": {"visible": False}},
                        height=height)


def color_for(key: str, i: int = 0) -> str:
    """The colour of a method's group ("log mask"), a run label ("log mask λ=2 · …")
    or a method name; else the i-th of the palette. A class-pack example's badge does not
    change its colour: the pack's log run is drawn in log's colour like any other."""
    k = key.lower().removeprefix(f"{EXAMPLE_BADGE} · ".lower())
    for reg, c in REG_COLORS.items():
        if k.startswith(f"{reg_name(reg).lower()} mask") or k == reg:
            return c
    for m, c in METHOD_COLORS.items():
        if k.startswith(m) or k.replace(" ", "").startswith(m):
            return c
    return PALETTE[i % len(PALETTE)]


# For a second group that wants a colour already taken (log mask and log mask (warm start)):
# colours no method or penalty owns, so ℓ1 stays blue and IMP green on every page.
SPARE_COLORS = ["#6a3d9a", "#1b9e77", "#b15928", "#e7298a", "#a6761d", "#666666"]


def color_map(keys) -> dict[str, str]:
    """A colour per key: its method's or penalty's own (color_for) for the first key that
    wants it, whatever the order; later keys that want a taken colour get a spare one."""
    # in first-seen order; a column's own unique(): iterating arrow strings one by one is slow
    keys = list(keys.unique()) if isinstance(keys, pd.Series) else list(dict.fromkeys(keys))
    wanted = {k: color_for(str(k), i) for i, k in enumerate(keys)}
    out: dict = {}
    for k in keys:
        if wanted[k] not in out.values():
            out[k] = wanted[k]
    owned = set(REG_COLORS.values()) | set(METHOD_COLORS.values())
    for i, k in enumerate(keys):
        if k not in out:
            out[k] = next((c for c in SPARE_COLORS + PALETTE if c not in out.values() and c not in owned),
                          PALETTE[i % len(PALETTE)])
    return {k: out[k] for k in keys}


def _run_colors(df: pd.DataFrame) -> dict[str, str]:
    """One colour per run of the whole frame, not of the rows a figure draws, so that
    a run keeps its colour in every figure of the monitor (λ has rows for fewer runs)."""
    return color_map(df["run"])


def short(label: str, n: int = 34) -> str:
    """A run's label shortened for a legend or title, its HTML made inert (plotly renders <a href>)."""
    return md.plotly(label if len(label) <= n else label[: n - 1] + "…")


# ------------------------------------------------------------------ axes
# Plotly's automatic ticks can print the same text twice (".0%" on a 99.5–100 %
# axis) and label log axes with run-together minor digits. So every builder
# chooses its ticks here, from the range it draws.

def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5 × 10^k that is ≥ raw."""
    if not raw > 0:
        return 1.0
    e = math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * 10 ** e >= raw * (1 - 1e-9):
            return m * 10 ** e
    return 10 ** (e + 1)


def percent_axis(lo: float, hi: float, n: int = 5, pad: float = 0.0) -> dict:
    """Axis settings for fractions shown as %: a range, a 1-2-5 step giving about n
    ticks, and as many decimals as that step needs so adjacent labels always differ."""
    lo, hi = float(lo), float(hi)
    if not hi > lo:
        half = max(abs(hi) * 0.005, 0.0005)
        lo, hi = lo - half, hi + half
    span = hi - lo
    lo, hi = lo - pad * span, hi + pad * span
    # the 1-2-5 step whose tick count is closest to n
    step = min((m * 10.0 ** e for e in range(math.floor(math.log10((hi - lo) / n)) - 1,
                                              math.floor(math.log10((hi - lo) / n)) + 2) for m in (1, 2, 5)),
               key=lambda st: abs(math.log((hi - lo) / st / n)))
    decimals = max(0, -math.floor(math.log10(step * 100) + 1e-9))
    return dict(range=[lo, hi], tick0=0, dtick=step, tickformat=f".{decimals}%")


def linear_tick_labels(axis: dict) -> list[str]:
    """The labels an axis made by percent_axis shows (d3's ".N%" is Python's)."""
    lo, hi = axis["range"]
    step = axis["dtick"]
    fmt = axis["tickformat"]
    k = math.ceil(lo / step - 1e-9)
    out = []
    while k * step <= hi + 1e-12:
        out.append(format(k * step, fmt))
        k += 1
    return out


def fmt_pct(v: float) -> str:
    """0.005 → "0.5%", 0.2 → "20%", 1 → "100%": as many decimals as the value needs."""
    pp = v * 100
    decimals = max(0, -math.floor(math.log10(pp) + 1e-9)) if pp > 0 else 0
    return f"{pp:.{decimals}f}%"


def fmt_num(v: float) -> str:
    return f"{v:,.0f}" if v >= 1000 else f"{v:g}"


def log_ticks(lo: float, hi: float, percent: bool = False, max_ticks: int = 6) -> dict:
    """Explicit ticks for a log axis over [lo, hi] (data units, > 0): 1, 2, 5 × 10^k,
    only powers of 10 when those would be more than max_ticks (a short axis), every
    other power when even those are too many. Returns tickvals and ticktext."""
    lo, hi = (float(min(lo, hi)), float(max(lo, hi)))
    if not lo > 0:
        lo = hi / 1000 if hi > 0 else 1e-3
    e0, e1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    vals: list[float] = []
    for mults in ((1, 2, 5), (1, 3), (1,)):
        vals = [float(f"{m * 10.0 ** e:.12g}") for e in range(e0, e1 + 1) for m in mults
                if lo * (1 + 1e-6) < m * 10.0 ** e < hi * (1 - 1e-6)]      # inside: plotly drops edge ticks
        if len(vals) <= max_ticks:
            break
    if len(vals) > max_ticks:
        vals = vals[:: math.ceil(len(vals) / max_ticks)]
    if len(vals) < 2:   # less than a decade: two or three round values inside the range
        for parts in (3, 5, 8):        # the coarsest round step giving two ticks inside
            step = nice_step((hi - lo) / parts)
            vals = sorted({float(f"{k * step:.12g}") for k in range(math.floor(lo / step), math.ceil(hi / step) + 1)
                           if k > 0 and lo < k * step < hi})
            if len(vals) >= 2:
                break
    fmt = fmt_pct if percent else fmt_num
    text = [fmt(v) for v in vals]
    for d in range(1, 6):          # a narrow axis: as many decimals as it takes for labels to differ
        if len(set(text)) == len(text):
            break
        text = [f"{v:.{d}%}" if percent else f"{v:.{d + 2}g}" for v in vals]
    return dict(tickvals=vals, ticktext=text)


def axis_px_ticks(px: float, per_tick: float = 55) -> int:
    """How many labels fit along an axis of px pixels."""
    return max(2, int(px // per_tick))


# ------------------------------------------------------------------ concepts

def pipeline_dot() -> str:
    """The method as a Graphviz diagram (st.graphviz_chart renders it in the browser)."""
    return """digraph G {
  rankdir=LR; bgcolor="transparent";
  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=13, color="#bbbbbb", fillcolor="#f7f7f7",
        margin="0.18,0.1"];
  edge [color="#888888", fontname="Helvetica", fontsize=11];
  dense  [label="Dense network\\nθ₀ (saved)"];
  search [label="Search\\nmin L(m⊙θ) + λ·R(m)\\nm ∈ [0,1]", fillcolor="#fde2e1"];
  thr    [label="Threshold\\nkeep m > τ\\n(or top-k)"];
  rewind [label="Rewind\\nθ ← θ₀ on kept weights"];
  retrain[label="Retrain\\nbinary mask fixed", fillcolor="#e1ecf8"];
  ticket [label="Ticket\\nsparse & trainable", shape=box, fillcolor="#e3f3e0"];
  dense -> search -> thr -> rewind -> retrain -> ticket;
  retrain -> search [label="  next round", style=dashed, constraint=false];
}"""


PIPELINE_STEPS = [("Dense network", "θ₀ saved", "#f7f7f7"),
                  ("Search", "min L(m⊙θ) + λ·R(m), m ∈ [0,1]", "#fde2e1"),
                  ("Threshold", "keep m > τ (or top-k)", "#f7f7f7"),
                  ("Rewind", "θ ← θ₀ on kept weights", "#f7f7f7"),
                  ("Retrain", "binary mask fixed", "#e1ecf8"),
                  ("Ticket", "sparse & trainable", "#e3f3e0")]


def pipeline_html() -> str:
    """The method as boxes and arrows in HTML: the text keeps its size (15 px) and the
    boxes wrap onto a second line on a narrow screen, where a diagram scaled to the page
    width had 8 px text at 1024×768."""
    box = ("<div class='ll-step' style='flex:0 1 auto;min-width:7.5rem;max-width:12rem;padding:0.45rem 0.7rem;"
           "border:1px solid #bbb;border-radius:0.6rem;background:{bg};font-size:15px;line-height:1.3;"
           "text-align:center'><b>{title}</b><br><span style='font-size:14px;color:#444'>{text}</span></div>")
    arrow = "<div style='flex:0 0 auto;font-size:20px;color:#888'>→</div>"
    parts = [box.format(bg=bg, title=t, text=x) for t, x, bg in PIPELINE_STEPS]
    return ("<div data-testid='pipeline' style='display:flex;flex-wrap:wrap;align-items:center;gap:0.4rem;"
            "margin:0.5rem 0'>" + arrow.join(parts) +
            "<div style='flex-basis:100%;font-size:14px;color:#666'>↻ several rounds: each retrained ticket is the "
            "start of the next search.</div></div>")


def regularizer_curves(df: pd.DataFrame, title: str = "Penalty R(m) on one mask entry") -> go.Figure:
    """df: x, y, name, reference (bool: drawn dashed grey, e.g. ℓ1)."""
    if df.empty:
        return empty_figure("no penalty to draw")
    fig = go.Figure()
    for name, g in df.groupby("name", sort=False):
        ref = bool(g["reference"].iloc[0]) if "reference" in g else False
        fig.add_trace(go.Scatter(x=g["x"], y=g["y"], name=name, mode="lines",
                                 line=dict(color="#999" if ref else REG_COLORS.get(str(name).split()[0], "#d62728"),
                                           dash="dash" if ref else "solid", width=2 if ref else 3)))
    fig.update_xaxes(title="mask entry m", range=[0, 1])
    fig.update_yaxes(title="R(m), scaled to R(0)=0, R(1)=1")
    return _base(fig, title, height=320, title_chars=18)     # drawn in a narrow column of the Launch form


# ------------------------------------------------------------------ runs: curves

def _rows(df: pd.DataFrame, where: pd.Series) -> pd.DataFrame:
    """The rows where `where` holds, selected by a plain mask (a boolean Series is aligned on
    the index first: ~0.4 ms more for a metrics frame, four times at every new row)."""
    return df[where.to_numpy()]


def _groups(d: pd.DataFrame, key: str, cols: tuple[str, ...]) -> list[tuple]:
    """(key value, {column: numpy values}) per value of `key`, in first-seen order and rows in
    frame order, without a value (NaN) left out: `d.groupby(key, sort=False)` as the live charts
    use it, without a frame per group (pandas' groupby cost ~0.5 ms a chart, at every new row)."""
    if d.empty:
        return []
    codes, uniques = pd.factorize(d[key].to_numpy())
    arrays = {c: d[c].to_numpy() for c in cols}
    if len(uniques) == 1 and (codes == 0).all():
        return [(uniques[0], arrays)]
    return [(u, {c: a[codes == i] for c, a in arrays.items()}) for i, u in enumerate(uniques)]


def _phase_bands(df: pd.DataFrame, axes: tuple[str, ...] = ("",)) -> list[dict]:
    """Shapes shading the search / retrain / train segments of a single run, in each of the
    subplots `axes` ("" for x/y, "2" for x2/y2), as add_vrect draws them."""
    if df.empty or df["run_id"].nunique() != 1:
        return []
    shapes = []
    for seg, g in _groups(df, "segment", ("t", "epoch")):
        t, ep = g["t"].astype(float), g["epoch"].astype(float)
        lo, hi = float(np.nanmin(t)), float(np.nanmax(t))
        phase = seg.split()[-1]
        start = lo - (np.nanmin(ep) if not np.isnan(ep).all() else 0)
        for a in axes:
            shapes.append(dict(type="rect", x0=max(start, 0), x1=hi, xref=f"x{a}", y0=0, y1=1, yref=f"y{a} domain",
                               fillcolor=PHASE_FILL.get(phase, "rgba(0,0,0,0.03)"), line=dict(width=0),
                               layer="below"))
    return shapes


_LOSS_AXES = {True: _subplot_axes(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.62, 0.38]),
              False: _subplot_axes(rows=1, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[1.0])}
_LAM_BETA_AXES = _subplot_axes(specs=[[{"secondary_y": True}]])


def _axis(layout: dict, name: str, **settings) -> None:
    """Settings for one axis of a spec's layout ("title" as plotly's {"text": …}). The axis is
    replaced, never changed in place, so a layout may start as a copy of _LOSS_AXES and the like."""
    if "title" in settings:
        settings["title"] = dict(text=settings["title"])
    layout[name] = {**layout.get(name, {}), **settings}


def loss_figure(df: pd.DataFrame) -> go.Figure:
    """Step rows of one or more runs (columns run, t, loss_task, loss_reg): the task loss
    on top (log scale) and the regularizer term λ·R(m) below, one colour per run.
    (λ·R(m) ≥ 0 for every penalty but log_raw, whose log(m+ε) < 0: it keeps its own linear axis.)"""
    d = _rows(df, df["kind"] == "step") if not df.empty else df
    if d.empty:
        return empty_figure("no training steps recorded yet")
    has_reg = bool(d["loss_reg"].notna().any())
    layout = dict(_LOSS_AXES[has_reg])
    colors = _run_colors(df)
    data = []
    for run, g in _groups(d, "run", ("t", "loss_task", "loss_reg")):
        data.append(dict(type="scatter", x=g["t"], y=g["loss_task"], name=short(run), mode="lines",
                         line=dict(color=colors[run], width=2), legendgroup=run, xaxis="x", yaxis="y"))
        if has_reg and pd.notna(g["loss_reg"]).any():
            data.append(dict(type="scatter", x=g["t"], y=g["loss_reg"], name=f"{short(run)} · λ·R(m)", mode="lines",
                             line=dict(color=colors[run], width=2, dash="dash"), legendgroup=run,
                             showlegend=False, xaxis="x2", yaxis="y2"))
    if shapes := _phase_bands(d, ("", "2") if has_reg else ("",)):
        layout["shapes"] = shapes
    _axis(layout, "xaxis2" if has_reg else "xaxis", title="epochs (all phases)")
    loss = d["loss_task"].to_numpy(dtype=float)
    loss = loss[loss > 0]
    if loss.size:
        lo, hi = float(loss.min()) / 1.3, float(loss.max()) * 1.3
        _axis(layout, "yaxis", range=[math.log10(lo), math.log10(hi)], **log_ticks(lo, hi, max_ticks=4))
    _axis(layout, "yaxis", title="task loss (log)", type="log")
    if has_reg:
        _axis(layout, "yaxis2", title="λ·R(m)")
    return _spec_figure(data, layout, "Loss: the task (top) and the regularizer λ·R(m) (bottom)", height=380)


def accuracy_figure(df: pd.DataFrame) -> go.Figure:
    d = _rows(df, df["kind"] == "epoch") if not df.empty else df
    if d.empty:
        return empty_figure("no finished epoch yet")
    colors = _run_colors(df)
    data = []
    for run, g in _groups(d, "run", ("t", "test_acc", "val_acc")):
        data.append(dict(type="scatter", x=g["t"], y=g["test_acc"], name=f"{short(run)} · test", mode="lines+markers",
                         line=dict(color=colors[run], width=2), marker=dict(size=5), legendgroup=run))
        data.append(dict(type="scatter", x=g["t"], y=g["val_acc"], name=f"{short(run)} · validation", mode="lines",
                         line=dict(color=colors[run], width=1.5, dash="dot"), legendgroup=run))
    layout = {"shapes": shapes} if (shapes := _phase_bands(d)) else {}
    _axis(layout, "xaxis", title="epochs (all phases)")
    acc = np.concatenate([d["test_acc"].to_numpy(dtype=float), d["val_acc"].to_numpy(dtype=float)])
    acc = acc[~np.isnan(acc)]
    if acc.size:
        _axis(layout, "yaxis", **percent_axis(acc.min(), acc.max(), n=5, pad=0.08))
    _axis(layout, "yaxis", title="accuracy")
    return _spec_figure(data, layout, "Accuracy: test (solid) and validation (dotted)")


def remaining_figure(df: pd.DataFrame) -> go.Figure:
    d = _rows(df, (df["kind"] == "epoch") & df["remaining"].notna()) if not df.empty else df
    if d.empty:
        return empty_figure("no mask measurement yet")
    colors = _run_colors(df)
    data = [dict(type="scatter", x=g["t"], y=g["remaining"], name=short(run), mode="lines+markers",
                 line=dict(color=colors[run], width=2, shape="hv"), marker=dict(size=5))
            for run, g in _groups(d, "run", ("t", "remaining"))]
    layout = {"shapes": shapes} if (shapes := _phase_bands(d)) else {}
    _axis(layout, "xaxis", title="epochs (all phases)")
    _axis(layout, "yaxis", title="weights remaining (m > τ)",
          **percent_axis(0.0, float(d["remaining"].max()) * 1.05, n=5))
    return _spec_figure(data, layout, "Sparsity over time: fraction of weights still in the mask")


def lam_figure(df: pd.DataFrame) -> go.Figure:
    d = _rows(df, (df["kind"] == "step") & df["lam"].notna()) if not df.empty else df
    if d.empty:
        return empty_figure("λ is constant or not recorded")
    # continuous sparsification's mask temperature β (m = sigmoid(β·s)) shares the chart, on its own axis
    beta = d[d["beta"].notna()] if "beta" in d else d.iloc[0:0]
    layout = dict(_LAM_BETA_AXES) if not beta.empty else {}
    colors = _run_colors(df)
    data = [dict(type="scatter", x=g["t"], y=g["lam"], name=short(run), mode="lines",
                 line=dict(color=colors[run], width=2)) for run, g in _groups(d, "run", ("t", "lam"))]
    data += [dict(type="scatter", x=g["t"], y=g["beta"].astype(float), name=f"β · {short(run, 36)}", mode="lines",
                  line=dict(color=colors[run], width=1.5, dash="dot"), xaxis="x", yaxis="y2")
             for run, g in _groups(beta, "run", ("t", "beta"))]
    _axis(layout, "xaxis", title="epochs")
    lam = d["lam"].to_numpy(dtype=float)
    wide = lam.min() > 0 and lam.max() / lam.min() > 10
    if wide:
        lo, hi = float(lam.min()) / 1.3, float(lam.max()) * 1.3
        _axis(layout, "yaxis", title="λ (log)", type="log", range=[math.log10(lo), math.log10(hi)],
              **log_ticks(lo, hi, max_ticks=4))
    else:
        _axis(layout, "yaxis", title="λ", range=[0, float(lam.max()) * 1.15 or 1.0])
    if not beta.empty:
        _axis(layout, "yaxis2", title="β (log, dotted)", type="log", showgrid=False)
    layout["showlegend"] = True  # even for one line: several runs may be selected
    title = "λ during the search (adapts when a target sparsity is set)"
    return _spec_figure(data, layout, title + ("; dotted: CS temperature β" if not beta.empty else ""), height=260)


# ------------------------------------------------------------------ masks

WHEN_AXIS = "round and phase (hover: epoch)"      # short: half-width charts at 1024 px clip a long title


def when_ticks(order: list[str]) -> dict:
    """x-axis ticks for labels "round R · phase · epoch E" (in training order): one at the first
    epoch of each round's phase, "r2 search" (just "search" when there is one round). Every epoch
    written out stood on end under a half-width chart at 1024 px and squeezed its plot to ~15 px."""
    rounds = {w.split(" · ")[0] for w in order}
    vals, text, seen = [], [], set()
    for w in order:
        parts = w.split(" · ")
        if tuple(parts[:2]) in seen or len(parts) < 2:
            continue
        seen.add(tuple(parts[:2]))
        vals.append(w)
        text.append(parts[1] if len(rounds) == 1 else f"{parts[0].replace('round ', 'r')} {parts[1]}")
    return dict(type="category", categoryorder="array", categoryarray=list(order), tickmode="array",
                tickvals=vals, ticktext=text, tickangle=0 if len(vals) <= 3 else -30, title=WHEN_AXIS)


def layer_heatmap(stats: pd.DataFrame) -> go.Figure:
    """Per-layer remaining fraction (m > τ) over recorded epochs, layers × epochs."""
    if stats.empty:
        return empty_figure("no mask statistics recorded")
    layers = list(dict.fromkeys(stats["layer"]))
    order = stats.drop_duplicates("when").sort_values("order")["when"].tolist()
    piv = stats.pivot_table(index="layer", columns="when", values="frac_above", aggfunc="last")
    piv = piv.reindex(index=layers, columns=order)
    module = dict(zip(stats["layer"], stats["module"])) if "module" in stats else {}
    paths = np.array([[module.get(la, la)] * len(order) for la in layers], dtype=object)
    fig = go.Figure(go.Heatmap(z=piv.values, x=order, y=layers, zmin=0, zmax=1, colorscale="Viridis",
                               colorbar=dict(title="remaining", tickformat=".0%"), customdata=paths,
                               hovertemplate="%{y} (module %{customdata})<br>%{x}<br>remaining %{z:.1%}"
                                             "<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="layer (input → output)")
    fig.update_xaxes(**when_ticks(order))
    return _base(fig, "Remaining fraction per layer over training", height=max(260, 60 + 28 * len(layers)))


def hist_heatmap(hist: pd.DataFrame, tau: float) -> go.Figure:
    """Distribution of m over time (columns: when, t, bin_mid, fraction) with τ drawn in."""
    if hist.empty:
        return empty_figure("no histograms recorded")
    order = hist.drop_duplicates("when").sort_values("order")["when"].tolist()
    piv = hist.pivot_table(index="bin_mid", columns="when", values="fraction").reindex(columns=order)
    z = np.sqrt(piv.values)
    fig = go.Figure(go.Heatmap(z=z, x=order, y=piv.index, customdata=piv.values, colorscale="Magma",
                               reversescale=True, colorbar=dict(title="share (√)"),
                               hovertemplate="%{x}<br>m ≈ %{y:.3f}<br>share %{customdata:.1%}<extra></extra>"))
    fig.add_hline(y=tau, line=dict(color="#1f77b4", width=2, dash="dash"),
                  annotation_text=f"τ = {tau:g}", annotation_position="top left")
    fig.update_yaxes(title="mask value m", range=[0, 1])
    fig.update_xaxes(**when_ticks(order))
    return _base(fig, "Histogram of m over time (darker = more entries)", height=330)


def hist_bars(hist: pd.DataFrame, tau: float, title: str) -> go.Figure:
    if hist.empty:
        return empty_figure("no histogram at this epoch")
    fig = go.Figure(go.Bar(x=hist["bin_mid"], y=hist["fraction"], width=1 / max(1, len(hist)) * 0.95,
                           marker_color=["#d62728" if b <= tau else "#1f77b4" for b in hist["bin_mid"]],
                           hovertemplate="m ≈ %{x:.3f}<br>share %{y:.1%}<extra></extra>"))
    fig.add_vline(x=tau, line=dict(color="#333", width=2, dash="dash"), annotation_text=f"τ = {tau:g}")
    fig.update_xaxes(title="m (red pruned, blue kept)", range=[0, 1])      # fits a third of 1024 px
    fig.update_yaxes(title="share of entries (log)", type="log", range=[-4, 0.05],
                     **log_ticks(1e-4, 1.0, percent=True, max_ticks=5))
    return _base(fig, title, height=300)


def layer_lines(stats: pd.DataFrame, column: str, title: str, ytitle: str, percent: bool = True) -> go.Figure:
    d = stats[stats[column].notna()] if not stats.empty else stats
    if d.empty:
        return empty_figure(f"no {ytitle} recorded")
    fig = go.Figure()
    colors = color_map(d["layer"])
    for layer, g in d.groupby("layer", sort=False):
        g = g.sort_values("order")
        path = g["module"].iloc[0] if "module" in g else layer
        fig.add_trace(go.Scatter(x=g["when"], y=g[column], name=layer, mode="lines+markers",
                                 line=dict(color=colors[layer]), marker=dict(size=5),
                                 hovertemplate=f"{layer} (module {path})<br>%{{x}}<br>%{{y:.1%}}<extra></extra>"))
    fig.update_xaxes(**when_ticks(d.sort_values("order")["when"].unique().tolist()))
    top = float(d[column].max()) if d[column].notna().any() else 1.0
    if percent:
        fig.update_yaxes(title=ytitle, **percent_axis(0.0, max(top * 1.1, 0.05), n=4))
    else:
        fig.update_yaxes(title=ytitle, range=[0, max(top * 1.1, 1e-9)])
    return _base(fig, title, height=300)


def allocation_figure(alloc: pd.DataFrame) -> go.Figure:
    """Final per-layer remaining fraction of several runs side by side."""
    if alloc.empty:
        return empty_figure("no finished run with per-layer results selected")
    fig = go.Figure()
    colors = color_map(alloc["run"])
    layers = alloc.sort_values("order")["layer"].unique().tolist()
    for run, g in alloc.groupby("run", sort=False):
        fig.add_trace(go.Bar(x=g["layer"], y=g["remaining"], name=short(run, 60), marker_color=colors[run],
                             customdata=np.stack([g["kept"], g["total"], g["dead_units"],
                                                  g["module"] if "module" in g else g["layer"]], axis=1),
                             hovertemplate="%{x} (module %{customdata[3]})<br>%{y:.2%} remaining<br>"
                                           "%{customdata[0]:,} of %{customdata[1]:,}"
                                           "<br>dead units %{customdata[2]:.0%}<extra></extra>"))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="layer (input → output)", categoryorder="array", categoryarray=layers)
    lo = float(alloc["remaining"].replace(0, np.nan).min()) if alloc["remaining"].gt(0).any() else 0.01
    fig.update_yaxes(title="weights remaining (log)", type="log",
                     range=[math.log10(max(lo * 0.7, 1e-5)), math.log10(1.15)],
                     **log_ticks(max(lo * 0.7, 1e-5), 1.15, percent=True, max_ticks=6))
    return _base(fig, "Where the surviving weights are: remaining fraction per layer", height=360)


def iou_figure(iou: pd.DataFrame, a: str, b: str) -> go.Figure:
    if iou.empty:
        return empty_figure("these runs share no layer of the same shape")
    fig = go.Figure(go.Bar(x=iou["layer"], y=iou["iou"], marker_color=["#444" if x == "all layers" else "#17becf"
                                                                     for x in iou["layer"]],
                           text=[f"{v:.0%}" for v in iou["iou"]], textposition="outside",
                           hovertemplate="%{x}<br>IoU %{y:.1%}<extra></extra>"))
    fig.update_yaxes(title="IoU of kept weights", **percent_axis(0.0, 1.1, n=5))
    return _base(fig, f"Mask overlap (intersection over union): {short(a, 30)} vs {short(b, 30)}", height=320)


# ------------------------------------------------------------------ trade-offs

def tradeoff_figure(agg: pd.DataFrame, imp: pd.DataFrame, dense: float | None, tol: float,
                    x: str = "remaining") -> go.Figure:
    """Test accuracy against remaining weights (log axis, fewer weights to the right):
    one line per group (seeds aggregated: mean ± std bands), IMP round by round,
    the dense accuracy and the matching-ticket region (accuracy ≥ dense − tol)."""
    if agg.empty and imp.empty:
        return empty_figure("no finished run to place yet")
    fig = go.Figure()
    imp_lines = _imp_lines(imp)
    colors = color_map(list(agg["group"]) + list(imp_lines))
    if dense is not None:
        fig.add_hrect(y0=dense - tol, y1=1.0, fillcolor="rgba(44,160,44,0.08)", line_width=0, layer="below",
                      annotation_text="matching tickets", annotation_position="top right")
        fig.add_hline(y=dense, line=dict(color="#555", dash="dash"), annotation_text=f"dense {dense:.2%}",
                      annotation_position="bottom left")
    for n_line, (group, g) in enumerate(agg.groupby("group", sort=False)):
        g = g.sort_values(x)
        c = colors[group]
        if (g["n"] > 1).any():
            xs = np.concatenate([g[x].to_numpy(), g[x].to_numpy()[::-1]])
            ys = np.concatenate([(g["test_accuracy"] + g["acc_std"]).to_numpy(),
                                 (g["test_accuracy"] - g["acc_std"]).to_numpy()[::-1]])
            fig.add_trace(go.Scatter(x=xs, y=ys, fill="toself", fillcolor=_alpha(c, 0.15), line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=group))
        lam = g["lam"].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"λ={v:.3g}")
        fig.add_trace(go.Scatter(
            x=g[x], y=g["test_accuracy"], name=group, mode="lines+markers", legendgroup=group,
            # Points of several lines at one level (a ticket, its controls, IMP's round at 5 %) hid each
            # other: each line has its own shape, white outline and a smaller marker than the line
            # before it, so they nest instead of covering, and the lines are drawn above IMP's (zorder).
            line=dict(color=c, width=2), opacity=0.9, zorder=1,
            marker=dict(size=max(6, 13 - 2 * n_line), symbol=LINE_SYMBOLS[n_line % len(LINE_SYMBOLS)],
                        line=dict(width=1.5, color="white")),
            error_y=dict(type="data", array=g["acc_std"], visible=bool((g["n"] > 1).any()), color=c),
            customdata=np.stack([lam, g["n"], g["seeds"], g["remaining"]], axis=1),
            hovertemplate="%{customdata[0]}<br>remaining %{customdata[3]:.2%}<br>test acc %{y:.2%}"
                          "<br>%{customdata[1]} seed(s): %{customdata[2]}<extra>" + group + "</extra>"))
    for name, by_round in imp_lines.items():     # one dotted line per IMP setting, seeds averaged
        fig.add_trace(go.Scatter(
            x=by_round[x], y=by_round["test_accuracy"], name=name, mode="lines+markers+text",
            text=[round_label(r) for r in by_round["round"]], textposition="top center",
            line=dict(color=colors[name], width=2, dash="dot"),
            marker=dict(size=8, symbol="diamond", line=dict(width=1.5, color="white")),
            error_y=dict(type="data", array=by_round["acc_std"], visible=bool((by_round["n"] > 1).any())),
            customdata=np.stack([by_round["n"], by_round["seeds"]], axis=1),
            hovertemplate="IMP %{text}<br>test acc %{y:.2%}<br>%{customdata[0]} seed(s): %{customdata[1]}"
                          "<extra>" + md.plotly(name) + "</extra>"))
    xs = pd.concat([agg[x], imp[x]] if not imp.empty else [agg[x]]).astype(float)
    xs = xs[xs > 0]
    ys = pd.concat([agg["test_accuracy"] - agg["acc_std"], agg["test_accuracy"] + agg["acc_std"]]
                   + ([imp["test_accuracy"]] if not imp.empty else [])).astype(float)
    if dense is not None:
        ys = pd.concat([ys, pd.Series([dense - tol, dense])])
    if not xs.empty:
        lo, hi = math.log10(xs.min() / 1.5), math.log10(xs.max() * 1.5)
        if x == "remaining":
            hi = min(hi, math.log10(1.05))
            fig.update_xaxes(title="weights remaining (log scale; sparser to the right)", type="log",
                             range=[hi, lo], **log_ticks(10 ** lo, 10 ** hi, percent=True, max_ticks=8))
        else:
            fig.update_xaxes(title={"epochs_spent": "epochs of training spent finding the ticket",
                                    "wall_seconds": "seconds spent finding the ticket"}.get(x, x), type="log",
                             range=[lo, hi], **log_ticks(10 ** lo, 10 ** hi, max_ticks=8))
    if not ys.dropna().empty:
        fig.update_yaxes(**percent_axis(max(0.0, ys.min() - 0.02), min(1.005, ys.max() + 0.02), n=6))
    fig.update_yaxes(title="test accuracy")
    return _base(fig, None, height=440)


LINE_SYMBOLS = ["circle", "square", "triangle-up", "cross", "x", "star"]


def round_label(r) -> str:
    """The engine's round index r as every page names it, counted from 1 (names.snapshot_label,
    the Runs page's progress): IMP's r1 is its dense training, r2 the first pruned round."""
    return f"r{round_number(r)}"


def _imp_lines(imp: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """IMP rounds per line (data.imp_by_round), named by the line; a frame without lines is one."""
    from ui import data
    if imp.empty:
        return {}
    rows = data.imp_by_round(imp)
    return {g: r.sort_values("round") for g, r in rows.groupby("group", sort=False)}


def cost_figure(points: pd.DataFrame, imp: pd.DataFrame, cost: str) -> go.Figure:
    """Remaining weights against what it cost to get there (epochs or seconds)."""
    if points.empty and imp.empty:
        return empty_figure("no finished run yet")
    fig = go.Figure()
    if not imp.empty and "group" not in imp:
        imp = imp.assign(group="IMP rounds")
    colors = color_map(list(points["group"]) + (list(dict.fromkeys(imp["group"])) if not imp.empty else []))
    for group, g in points.groupby("group", sort=False):
        fig.add_trace(go.Scatter(x=g[cost], y=g["remaining"], name=group, mode="markers",
                                 marker=dict(size=10, color=colors[group], line=dict(width=1, color="white")),
                                 customdata=np.stack([g["test_accuracy"], g["label"].map(md.plotly)], axis=1),
                                 hovertemplate="%{customdata[1]}<br>remaining %{y:.2%}<br>test acc "
                                               "%{customdata[0]:.2%}<extra></extra>"))
    if not imp.empty:
        for _rid, g in imp.groupby("run_id", sort=False):
            g = g.sort_values("round")
            fig.add_trace(go.Scatter(x=g[cost], y=g["remaining"], name=g["group"].iloc[0], mode="lines+markers",
                                     line=dict(color=colors[g["group"].iloc[0]], dash="dot"), showlegend=False,
                                     marker=dict(symbol="diamond", size=7), customdata=g["test_accuracy"],
                                     hovertemplate="IMP round %{text}<br>remaining %{y:.2%}<br>test acc "
                                                   "%{customdata:.2%}<extra></extra>",
                                     text=[round_label(r) for r in g["round"]]))
    fig.update_xaxes(title={"epochs_spent": "epochs of training spent", "wall_seconds": "seconds spent"}[cost],
                     type="log")
    xs = pd.concat([points[cost], imp[cost]] if not imp.empty else [points[cost]]).astype(float)
    xs = xs[xs > 0]
    if not xs.empty:
        lo, hi = float(xs.min()) / 1.5, float(xs.max()) * 1.5
        fig.update_xaxes(range=[math.log10(lo), math.log10(hi)], **log_ticks(lo, hi, max_ticks=8))
    rem = pd.concat([points["remaining"], imp["remaining"]] if not imp.empty else [points["remaining"]])
    rem = rem[rem > 0].astype(float)
    fig.update_yaxes(title="weights remaining (log)", type="log")
    if not rem.empty:
        lo, hi = float(rem.min()) / 1.5, min(1.2, float(rem.max()) * 1.5)
        fig.update_yaxes(range=[math.log10(lo), math.log10(hi)], **log_ticks(lo, hi, percent=True, max_ticks=5))
    return _base(fig, "What the sparsity cost", height=360)


def _alpha(hex_color: str, a: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{a})"


# ------------------------------------------------------------------ pixels

def pixel_figure(img: pd.DataFrame, title: str, zmax: float = 1.0, colorscale: str = "Viridis",
                 height: int = 360, colorbar: bool = True) -> go.Figure:
    """An H×W frame of mask values as an image (row 0 at the top); `colorbar` False for a
    binary mask, so the picture takes the figure's whole width."""
    if img.empty:
        return empty_figure("no mask snapshot")
    fig = go.Figure(go.Heatmap(z=img.values, zmin=0, zmax=zmax, colorscale=colorscale, showscale=colorbar,
                               colorbar=dict(title="m", len=0.8),
                               hovertemplate="row %{y}, col %{x}<br>m = %{z:.3f}<extra></extra>"))
    _square(fig, img.shape)
    fig = _base(fig, title, height=height)
    if not colorbar:            # the picture alone: no side margins either
        fig.update_layout(margin=dict(l=0, r=0))
    return fig


def pixel_animation(frames: list[tuple[str, pd.DataFrame]], title: str, height: int = 420) -> go.Figure:
    """One heatmap per snapshot, with a play button and a slider over them."""
    if not frames:
        return empty_figure("no per-epoch snapshots")
    label0, img0 = frames[-1]
    heat = dict(zmin=0, zmax=1, colorscale="Viridis", colorbar=dict(title="m", len=0.8),
                hovertemplate="row %{y}, col %{x}<br>m = %{z:.3f}<extra></extra>")
    fig = go.Figure(go.Heatmap(z=img0.values, **heat),
                    frames=[go.Frame(data=[go.Heatmap(z=img.values, **heat)], name=label) for label, img in frames])
    steps = [dict(method="animate", label=label, args=[[label], dict(mode="immediate", frame=dict(duration=0),
                                                                       transition=dict(duration=0))])
             for label, _ in frames]
    fig.update_layout(
        # The step labels ("round 1 · search · epoch 3") would overlap under the slider's ticks:
        # they are drawn transparent, and the current one is written above the slider. The ▶ button
        # has a row of its own under the slider: beside it, the label ran under the button in the
        # narrow column of a 1024 px window.
        sliders=[dict(active=len(frames) - 1, steps=steps, font=dict(color="rgba(0,0,0,0)"), ticklen=4,
                      currentvalue=dict(prefix="snapshot: ", xanchor="left", font=dict(color="#333", size=13)),
                      pad=dict(t=40, b=10), len=1.0, x=0, xanchor="left", y=0, yanchor="top")],
        updatemenus=[dict(type="buttons", showactive=False, x=0, y=0, xanchor="left", yanchor="top",
                          pad=dict(t=100, r=10),
                          buttons=[dict(label="▶ play", method="animate",
                                        args=[None, dict(frame=dict(duration=500, redraw=True), fromcurrent=False,
                                                         transition=dict(duration=0))])])])
    _square(fig, img0.shape)
    return _base(fig, title, height=height)


def _square(fig: go.Figure, shape) -> None:
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", showticklabels=False,
                     showgrid=False, zeroline=False)
    fig.update_xaxes(constrain="domain", showticklabels=False, showgrid=False, zeroline=False)


def masked_samples_figure(samples: list[tuple[str, pd.DataFrame]], mask: pd.DataFrame,
                          height: int = 330, mark_px: float | None = None,
                          plot_px: float | None = None) -> go.Figure:
    """The paper's Fig. 4: sample digits (top row) and what the classifier sees through the mask
    (bottom row: the digit faded, every kept pixel a large mark on it: filled red where the
    image has ink, a blue ring where it is blank). A mark is at least KEPT_MARK_PX across
    however small the picture is drawn, so 8 kept pixels are visible from the back of a room
    (`mark_px` raises that minimum, e.g. for a projector; `plot_px` is the narrowest width the
    figure is drawn at)."""
    if not samples or mask.empty:
        return empty_figure("no samples to show")
    n = len(samples)
    fig = make_subplots(rows=2, cols=n, horizontal_spacing=0.015, vertical_spacing=0.05,
                        subplot_titles=[lbl for lbl, _ in samples] + [""] * n)
    keep = mask.values > 0
    rows, cols = np.nonzero(keep)
    h, w = keep.shape
    # A cell's size on screen: the smaller of (plot height / 2 rows) / h and, on the
    # narrowest layout (about 560 px of plot at 1024×768), its share of the width.
    cell = min((height - 60) / 2 / h, (plot_px or NARROW_PLOT_PX) / n / w)
    sparse = len(rows) <= max(12, 0.15 * keep.size)     # a few pixels: large marks; many: one square per cell
    size = max(mark_px or KEPT_MARK_PX, cell) if sparse else max(cell * 0.9, 2)
    for j, (_, img) in enumerate(samples, start=1):
        a = img.values.astype(float)
        a = a / (a.max() or 1.0)
        fig.add_trace(go.Heatmap(z=a, colorscale="Greys", zmin=0, zmax=1, showscale=False, hoverinfo="skip"),
                      row=1, col=j)
        fig.add_trace(go.Heatmap(z=a, colorscale=[[0, "#ffffff"], [1, "#b8b8b8"]], zmin=0, zmax=1, showscale=False,
                                 hoverinfo="skip"), row=2, col=j)
        ink = a[rows, cols] > 0.25
        fig.add_trace(go.Scatter(
            x=cols, y=rows, mode="markers", showlegend=False,
            marker=dict(size=size, symbol="circle" if sparse else "square",
                        color=np.where(ink, "#d62728", "rgba(0,0,0,0)"),
                        line=dict(width=2 if sparse else 1, color=np.where(ink, "#ffffff", "#1f4e9c").tolist())),
            customdata=np.where(ink, "ink", "blank"),
            hovertemplate="row %{y}, col %{x}: kept (%{customdata})<extra></extra>"), row=2, col=j)
    for i in range(1, 2 * n + 1):
        fig.layout[f"yaxis{'' if i == 1 else i}"].update(autorange="reversed", scaleanchor=f"x{'' if i == 1 else i}",
                                                         showticklabels=False, showgrid=False, zeroline=False)
        fig.layout[f"xaxis{'' if i == 1 else i}"].update(showticklabels=False, showgrid=False, zeroline=False,
                                                         range=[-0.5, w - 0.5])
    fig.update_layout(plot_bgcolor="#ffffff")
    fig = _base(fig, None, height=height)
    fig.update_layout(margin=dict(t=30))
    return fig


KEPT_MARK_PX = 11
NARROW_PLOT_PX = 560


def lam_sweep_figure(points: pd.DataFrame, what: str = "pixels") -> go.Figure:
    """The paper's Fig. 3: kept entries and test accuracy against λ, ℓ1 and log side by side."""
    if points.empty:
        return empty_figure("no finished λ sweep for this setting yet")
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"kept {what}", "test accuracy"), horizontal_spacing=0.1)
    agg = points.groupby(["regularizer", "lam"]).agg(kept=("kept", "mean"), kept_std=("kept", "std"),
                                                    acc=("test_accuracy", "mean"), acc_std=("test_accuracy", "std"),
                                                    n=("run_id", "count")).reset_index().fillna({"kept_std": 0,
                                                                                                "acc_std": 0})
    for reg, g in agg.groupby("regularizer", sort=True):
        g = g.sort_values("lam")
        c = REG_COLORS.get(reg, "#333")
        name = reg_name(reg)
        fig.add_trace(go.Scatter(x=g["lam"], y=g["kept"], name=name, legendgroup=reg, mode="lines+markers",
                                 line=dict(color=c, width=2), marker=dict(size=8),
                                 error_y=dict(type="data", array=g["kept_std"], visible=bool((g["n"] > 1).any()))),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=g["lam"], y=g["acc"], name=name, legendgroup=reg, showlegend=False,
                                 mode="lines+markers", line=dict(color=c, width=2), marker=dict(size=8),
                                 error_y=dict(type="data", array=g["acc_std"], visible=bool((g["n"] > 1).any()))),
                      row=1, col=2)
    _lam_axis(fig, agg["lam"])
    kept = agg["kept"][agg["kept"] > 0]
    if not kept.empty:
        lo_k, hi_k = max(kept.min() / 1.6, 0.8), kept.max() * 1.6
        fig.update_yaxes(type="log", row=1, col=1, title=f"kept {what} (log)",
                         range=[math.log10(lo_k), math.log10(hi_k)], **log_ticks(lo_k, hi_k, max_ticks=6))
    fig.update_yaxes(row=1, col=2, **percent_axis(max(0.0, agg["acc"].min() - agg["acc_std"].max() - 0.02), 1.005,
                                                  n=5))
    fig = _base(fig, None, height=360)
    fig.update_layout(margin=dict(t=40))
    return fig


def pareto_frontier(g: pd.DataFrame) -> pd.DataFrame:
    """The points no other point beats: none keeps as few entries or fewer with a higher
    accuracy. Sorted by kept; per penalty, this is the best accuracy reachable at each size."""
    g = g.sort_values(["kept", "test_accuracy"], ascending=[True, False])
    best, rows = -1.0, []
    for _, r in g.iterrows():
        if r["test_accuracy"] > best:
            rows.append(r)
            best = r["test_accuracy"]
    return pd.DataFrame(rows, columns=g.columns)


def pareto_figure(points: pd.DataFrame, what: str = "pixels") -> go.Figure:
    """Fig. 3 read fairly: test accuracy against kept entries, every run a dot (λ on hover),
    each penalty's Pareto frontier a line. Penalties are compared at equal size, not equal λ.
    Left: every run; right: the same, zoomed on the most accurate runs, where they differ."""
    if points.empty:
        return empty_figure("no finished λ sweep for this setting yet")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("every run", "zoom on the top accuracies"),
                        horizontal_spacing=0.1)
    for col in (1, 2):
        for reg, g in points.groupby("regularizer", sort=True):
            c = REG_COLORS.get(reg, "#333")
            name = reg_name(reg)
            lam = g["lam"].map(lambda v: f"{v:g}" if v is not None and not pd.isna(v) else "?")
            fig.add_trace(go.Scatter(x=g["kept"], y=g["test_accuracy"], name=f"{name} runs", legendgroup=reg,
                                     showlegend=col == 1, mode="markers",
                                     marker=dict(color=c, size=8, opacity=0.45), customdata=lam,
                                     hovertemplate=f"{name} λ=%{{customdata}}<br>kept %{{x}}<br>"
                                                   "test accuracy %{y:.2%}<extra></extra>"), row=1, col=col)
            front = pareto_frontier(g)
            fx, fy = front["kept"].tolist(), front["test_accuracy"].tolist()
            if fx and points["kept"].max() > fx[-1]:  # the frontier holds for larger sizes too
                fx, fy = fx + [points["kept"].max()], fy + [fy[-1]]
            fig.add_trace(go.Scatter(x=fx, y=fy, name=f"{name} frontier",
                                     legendgroup=reg, showlegend=col == 1, mode="lines+markers",
                                     line=dict(color=c, width=2, shape="hv"), marker=dict(color=c, size=9),
                                     hoverinfo="skip"), row=1, col=col)
    kept = points["kept"][points["kept"] > 0]
    if not kept.empty:
        lo_k, hi_k = max(kept.min() / 1.5, 0.8), kept.max() * 1.5
        ticks = [v for e in range(0, 9) for v in (10 ** e, 2 * 10 ** e, 5 * 10 ** e) if lo_k <= v <= hi_k]
        fig.update_xaxes(type="log", title=f"kept {what} (log)", tickvals=ticks,
                         ticktext=[f"{v:,}" for v in ticks], range=[math.log10(lo_k), math.log10(hi_k)])
    acc = points["test_accuracy"].dropna()
    top = float(acc.quantile(0.5)) if not acc.empty else 0.99
    fig.update_yaxes(title="test accuracy", tickformat=".1%", row=1, col=1,
                     range=[max(0.0, float(acc.min()) - 0.02) if not acc.empty else 0.0, 1.005])
    fig.update_yaxes(tickformat=".2%", row=1, col=2, range=[max(0.0, top - max(0.005, 1.0 - top)), 1.0005])
    fig = _base(fig, None, height=380)
    fig.update_layout(margin=dict(t=40))
    return fig


def _lam_axis(fig: go.Figure, lams: pd.Series) -> None:
    """A log λ axis labelled at the λ values that were run (plotly's own log ticks are cryptic)."""
    vals = sorted({float(v) for v in lams.dropna() if float(v) > 0})
    if not vals:
        fig.update_xaxes(title="λ")
        return
    shown = vals if len(vals) <= 8 else vals[:: math.ceil(len(vals) / 8)]
    fig.update_xaxes(title="λ", type="log", tickvals=shown, ticktext=[f"{v:g}" for v in shown],
                     range=[math.log10(vals[0] / 1.6), math.log10(vals[-1] * 1.6)])


def theory_figure(df: pd.DataFrame) -> go.Figure:
    """Planted problem: ‖m* − m̃‖₂ and support errors against λ for each penalty."""
    if df.empty:
        return empty_figure("no finished planted run yet")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("distance to the planted mask ‖m* − m̃‖₂", "support errors (missed + extra)"))
    key = "penalty" if "penalty" in df else "regularizer"
    agg = df.assign(errors=df["false_pos"] + df["false_neg"]).groupby([key, "lam"]).agg(
        dist=("dist", "mean"), errors=("errors", "mean"), exact=("exact", "mean"), n=("run_id", "count")
    ).reset_index()
    for reg, g in agg.groupby(key, sort=True):
        g = g.sort_values("lam")
        c = "#ff7f0e" if "warm" in reg else REG_COLORS.get(reg.split()[0], "#333")
        name = reg.replace("l1", "ℓ1")
        fig.add_trace(go.Scatter(x=g["lam"], y=g["dist"], name=name, legendgroup=reg, mode="lines+markers",
                                 line=dict(color=c, width=2), marker=dict(size=8)), row=1, col=1)
        fig.add_trace(go.Scatter(x=g["lam"], y=g["errors"], name=name, legendgroup=reg, showlegend=False,
                                 mode="lines+markers", line=dict(color=c, width=2),
                                 marker=dict(size=[14 if e == 1 else 8 for e in g["exact"]],
                                             symbol=["star" if e == 1 else "circle" for e in g["exact"]]),
                                 customdata=g["exact"],
                                 hovertemplate="λ=%{x:.3g}<br>%{y:.1f} support errors<br>exact recovery in "
                                               "%{customdata:.0%} of seeds<extra>" + name + "</extra>"),
                      row=1, col=2)
    _lam_axis(fig, agg["lam"])
    fig.update_yaxes(rangemode="tozero")
    fig = _base(fig, None, height=380)
    fig.update_layout(margin=dict(t=40))
    return fig


# ---------------------------------------------------------------- deploy (Runs page, Deploy tab)

IMPL_COLORS = {"dense": "#7f7f7f", "sparse": "#d62728", "onnxruntime": "#1f77b4"}


def _kb_text(kb: float) -> str:
    """Three significant digits: "52.3 KB", "998 KB", "1.02 MB" (binary units, as the Deploy tab's metrics)."""
    if kb >= 999.5:
        mb = kb / 1024
        return f"{mb:.{2 if mb < 9.995 else 1 if mb < 99.95 else 0}f} MB"
    return f"{kb:.{2 if kb < 9.995 else 1 if kb < 99.95 else 0}f} KB"


def deploy_size_figure(sizes: pd.DataFrame) -> go.Figure:
    """File size of the same model: dense fp32 vs sparse fp32 vs sparse fp16, as written and zipped.
    Columns: file, form ('as written' or 'zipped'), bytes. One horizontal bar per row, its size
    (and its fraction of the dense file) to its right, on a log axis ticked at the decades only:
    at 1024 px vertical bars side by side overlapped their labels, and 2-5-10 ticks crowded the axis."""
    if sizes.empty:
        return empty_figure("no sizes measured")
    fig = go.Figure()
    dense = sizes[(sizes["file"] == "dense fp32") & (sizes["form"] == "as written")]["bytes"]
    ref = float(dense.iloc[0]) if len(dense) else None
    for form, color in (("as written", "#1f77b4"), ("zipped", "#9ecae1")):
        g = sizes[sizes["form"] == form]
        text = [_kb_text(b / 1024) + (f" · 1/{ref / b:.{1 if ref / b < 100 else 0}f}" if ref and b < ref else "")
                for b in g["bytes"]]
        fig.add_trace(go.Bar(y=g["file"], x=g["bytes"] / 1024, name=form, orientation="h", marker_color=color,
                             text=text, textposition="outside", cliponaxis=False,
                             hovertemplate="%{y} " + form + ": %{x:,.1f} KB<extra></extra>"))
    kb = sizes["bytes"].astype(float) / 1024
    lo, hi = math.log10(max(kb.min(), 1e-3)) - 0.15, math.log10(max(kb.max(), 1e-3)) + 0.75   # room for labels
    decades = [10.0 ** k for k in range(math.ceil(lo), math.floor(hi) + 1)]
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_xaxes(title="KB (log scale)", type="log", range=[lo, hi], tickvals=decades,
                     ticktext=[f"{v:,g} KB" for v in decades])
    fig.update_yaxes(autorange="reversed")          # dense on top, as in the metrics' order
    return _base(fig, "File size: dense fp32 vs the compact sparse file", height=340)


def deploy_latency_figure(lat: pd.DataFrame) -> go.Figure:
    """Median CPU latency per call of dense PyTorch, the sparse loader and onnxruntime, one panel
    per batch size. Columns: impl, batch, threads, median_ms."""
    if lat.empty:
        return empty_figure("latency not measured yet")
    batches = sorted(lat["batch"].unique())
    fig = make_subplots(rows=1, cols=len(batches), subplot_titles=[f"batch {b}" for b in batches])
    for j, b in enumerate(batches, start=1):
        g = lat[lat["batch"] == b]
        for impl in [i for i in IMPL_COLORS if i in set(g["impl"])]:
            h = g[g["impl"] == impl].sort_values("threads")
            fig.add_trace(go.Bar(x=[f"{t} thread{'s' if t > 1 else ''}" for t in h["threads"]], y=h["median_ms"],
                                 name=impl, marker_color=IMPL_COLORS[impl], showlegend=j == 1, legendgroup=impl,
                                 hovertemplate=impl + ", %{x}: %{y:.3f} ms<extra></extra>"),
                          row=1, col=j)
        fig.update_yaxes(title="median ms per call" if j == 1 else None, rangemode="tozero", row=1, col=j)
    fig.update_layout(barmode="group")
    return _base(fig, "CPU latency (median per call; lower is better)", height=340)


# ---------------------------------------------------------------- lesson: a ticket against its controls

CONTROL_COLORS = {"ticket": "#d62728", "random": "#bcbd22", "reinit": "#9467bd", "dense": "#7f7f7f"}


def controls_figure(df: pd.DataFrame) -> go.Figure:
    """Test accuracy of a ticket and of its controls (random pruning at the ticket's per-layer
    densities, the ticket's mask re-initialised), one bar each. Columns: kind, label, test_accuracy,
    remaining."""
    if df.empty:
        return empty_figure("no ticket to compare yet")
    fig = go.Figure(go.Bar(
        x=df["label"], y=df["test_accuracy"], marker_color=[CONTROL_COLORS.get(k, "#333") for k in df["kind"]],
        text=[f"{a:.1%}" for a in df["test_accuracy"]], textposition="outside", cliponaxis=False,
        customdata=df["remaining"], hovertemplate="%{x}<br>test accuracy %{y:.2%}<br>weights remaining "
                                                  "%{customdata:.2%}<extra></extra>"))
    lo = max(0.0, float(df["test_accuracy"].min()) - 0.1)
    fig.update_yaxes(title="test accuracy", **percent_axis(lo, 1.0, n=5))
    return _base(fig, "The ticket against its controls (same size, same training)", height=360, title_chars=60)
