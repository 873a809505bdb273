"""Evaluation report: results.json, trajectories.jsonl, matplotlib plots and one self-contained HTML page."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

from jinja2 import Environment
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from pydantic_core import to_jsonable_python

from toolgym.agent.rollout import INVALID_CALL
from toolgym.agent.trajectory import ContextEvent, Trajectory
from toolgym.eval.metrics import OVERALL, EvalRun, GroupMetrics
from toolgym.jsonl import write_jsonl
from toolgym.policy.chat_format import IM_START, SPECIAL_TOKENS
from toolgym.envs.families import describe_call

_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)  # an unterminated call runs to the end
_MARKUP = re.compile("|".join([re.escape(IM_START) + r"[a-z]*\n?",
                               *(re.escape(t) for t in [*SPECIAL_TOKENS, "<tools>", "</tools>"])]))
_MAX_PART_CHARS = 10_000  # a huge tool result is cut in the viewer (trajectories.jsonl keeps it whole)
_DPI = 110
_WIDTH = 7.5  # inches: every plot is this wide, so one legend layout fits all
_EMPTY = "\u2014"  # what a missing value shows as

OUTCOMES: dict[str, str] = {
    "unparseable": "#cf222e", "unknown tool": "#fb8f44", "invalid arguments": "#d4a72c", "tool error": "#8250df",
    "success": "#1a7f37",
}
"""Tool-call outcomes, worst first, with their plot colours; `valid` calls are those that reached a tool."""
_UNKNOWN_TOOL = re.compile(r"unknown tool\b")
_INVALID_ARGUMENTS = re.compile(r"(invalid|bad) arguments for |arguments of \S+ must be a JSON object")


class RunTrajectory(Trajectory):
    """A trajectory tagged with the evaluation run it belongs to: one line of trajectories.jsonl."""

    run: str


def strip_markup(text: str) -> str:
    """`text` without chat-template control tokens (`<|im_start|>role`, `<|im_end|>`, `<tool_call>`...): a model
    that has not learned the format writes them into its replies, and the page shows what it meant."""
    return _MARKUP.sub("", text)


def display(value: Any) -> str:
    """A table cell or chip as a person reads it: no None/null, no raw dicts, floats to at most three decimals."""
    if value is None:
        return _EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {display(v)}" for k, v in value.items()) or _EMPTY
    if isinstance(value, (list, tuple)):
        return ", ".join(display(v) for v in value) or _EMPTY
    return str(value)


def _duration(seconds: float) -> str:
    """Seconds as `2 min 05 s` (or `4.2 s` under a minute)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def timings_rows(timings: Mapping[str, float]) -> list[dict[str, str]]:
    """One row per stage (wall time and share of the total) plus a total row: the page's wall-time table."""
    total = sum(timings.values())
    rows = [{"stage": stage, "wall time": _duration(s), "seconds": f"{s:.1f}",
             "share": f"{100 * s / total:.0f}%" if total else _EMPTY} for stage, s in timings.items()]
    return [*rows, {"stage": "total", "wall time": _duration(total), "seconds": f"{total:.1f}",
                    "share": "100%" if total else _EMPTY}]


def _call_outcome(message: dict[str, Any]) -> str:
    """The outcome of the tool call a tool message answers (see OUTCOMES)."""
    if message.get("name") == INVALID_CALL:
        return "unparseable"
    result = _jsonish(message.get("content"))
    error = result.get("error") if isinstance(result, dict) else None
    if not isinstance(error, str):
        return "success"
    if _UNKNOWN_TOOL.match(error):
        return "unknown tool"
    if _INVALID_ARGUMENTS.match(error):
        return "invalid arguments"
    return "tool error"


def call_outcomes(trajectories: list[Trajectory]) -> Counter[str]:
    """Tool calls per outcome over the tool results kept in the trajectories' messages (a context summary or reset
    drops older results, so those runs count only the calls still in context)."""
    return Counter(_call_outcome(m) for t in trajectories for m in t.messages if m.get("role") == "tool")


def outcome_rows(counts: Mapping[str, Counter[str]]) -> list[dict[str, str]]:
    """The page's tool-call outcome table from run name -> `call_outcomes`: per run, calls, valid calls (those that
    reached a tool) and each outcome as `count (share)`."""
    rows = []
    for run, found in counts.items():
        total = sum(found.values())

        def cell(n: int) -> str:
            return f"{n} ({100 * n / total:.0f}%)" if total else "0"

        rows.append({"run": run, "calls": str(total), "valid": cell(found["tool error"] + found["success"]),
                     **{name: cell(found[name]) for name in OUTCOMES}})
    return rows


def _jsonish(value: Any) -> Any:
    """Parse a JSON string when it is one, so tool calls and results can be pretty-printed; else return it as is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _pretty(value: Any) -> str:
    """Readable, size-capped text of a tool call or result for the viewer."""
    value = _jsonish(value)
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    if len(text) > _MAX_PART_CHARS:
        return f"{text[:_MAX_PART_CHARS]}\n... ({len(text) - _MAX_PART_CHARS} more characters in trajectories.jsonl)"
    return text


def _message_parts(message: dict[str, Any]) -> list[tuple[str, str]]:
    """Split a message into ("text" | "call" | "result", text) parts: prose, tool calls and tool results; prose and
    calls lose chat-template markup, tool results are shown as the tool returned them."""
    content = message.get("content") or ""
    if message.get("role") == "tool":
        return [("result", _pretty(content))]
    if not isinstance(content, str):
        return [("text", _pretty(content))]
    parts: list[tuple[str, str]] = []
    pos = 0
    for match in _TOOL_CALL.finditer(content):
        if prose := strip_markup(content[pos : match.start()]).strip():
            parts.append(("text", prose))
        parts.append(("call", _pretty(strip_markup(match.group(1)).strip())))
        pos = match.end()
    if prose := strip_markup(content[pos:]).strip():
        parts.append(("text", prose))
    for call in message.get("tool_calls") or []:
        fn = call.get("function", call)
        parts.append(("call", _pretty({"name": fn.get("name"), "arguments": _jsonish(fn.get("arguments"))})))
    return parts


@dataclass(frozen=True)
class TrailStep:
    """One step of an episode's reading trail: a call its family describes (envs.families.describe_call) or a context
    event (`summary`, `reset`) placed before the turn it preceded."""

    turn: int
    kind: str
    text: str
    page: str | None = None


def _event_step(event: ContextEvent) -> TrailStep:
    what = "context summarized" if event.kind == "summary" else "context reset (discard-all)"
    return TrailStep(event.turn, event.kind, f"{what}: {event.tokens_before:,} -> {event.tokens_after:,} tokens")


def reading_trail(t: Trajectory) -> list[TrailStep]:
    """The episode's described calls (search, open, find) in order with its context summaries and resets where they
    happened (from the turn records, so calls a summary or reset dropped from the messages still show); [] when the
    episode made no such call."""
    steps: list[TrailStep] = []
    for turn in t.turns:
        steps += [_event_step(e) for e in t.events if e.turn == turn.index]
        for call in turn.tool_calls:
            note = describe_call(call.name, call.arguments)
            if note is not None:
                steps.append(TrailStep(turn.index, note.kind, note.text, note.page))
    if all(s.kind in ("summary", "reset") for s in steps):
        return []
    last = t.turns[-1].index if t.turns else -1
    return steps + [_event_step(e) for e in t.events if e.turn > last]


def opened_pages(trail: Sequence[TrailStep]) -> list[str]:
    """The pages an episode read (opened or searched within), in the order it first read each."""
    return list(dict.fromkeys(s.page for s in trail if s.page is not None))


def _episode_view(run: str, t: Trajectory) -> dict[str, Any]:
    """Everything the viewer template shows for one episode."""
    trail = reading_trail(t)
    return {
        "run": run,
        "t": t,
        "search": f"{t.task_id} {t.verdict}".lower(),
        "answer": strip_markup(t.final_answer).strip(),
        "trail": trail,
        "pages": opened_pages(trail),
        "messages": [
            {"role": m.get("role", "?"), "name": m.get("name") or "", "parts": _message_parts(m)} for m in t.messages
        ],
    }


def _png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes (Figure without pyplot renders through Agg, so no display is needed)."""
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def _colours(runs: list[EvalRun]) -> dict[str, str]:
    """One distinct colour per run (CSS hex), the same in every plot and on the page's run cards."""
    n = len(runs)
    if n <= 10:
        palette = [to_hex(f"C{i}") for i in range(n)]
    elif n <= 20:
        palette = [to_hex(colormaps["tab20"](i)) for i in range(n)]
    else:
        palette = [to_hex(colormaps["turbo"](i / (n - 1))) for i in range(n)]
    return {run.name: colour for run, colour in zip(runs, palette)}


def _figure(height: float) -> Figure:
    """A plot canvas whose constrained layout keeps labels, titles and an outside legend from overlapping."""
    return Figure(figsize=(_WIDTH, height), layout="constrained")


def _legend_below(fig: Figure, ax: Axes) -> None:
    """The legend in as many columns as fit the width, under the plot (never over the data)."""
    handles, labels = ax.get_legend_handles_labels()
    longest = max(len(label) for label in labels)
    # a column is about 5.2 pt per character at fontsize "small" plus 34 pt of handle and padding; 72 pt an inch
    ncols = max(1, min(len(labels), int(_WIDTH * 72 // (5.2 * longest + 34))))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="small", frameon=False)


def _run_bars_height(runs: list[EvalRun]) -> float:
    """Height of a plot with one horizontal bar row per run."""
    return 1.3 + 0.3 * len(runs)


def _plot_pass_by_domain(runs: list[EvalRun], metrics: list[dict[str, GroupMetrics]]) -> Figure:
    """Grouped bars of pass@1 per domain, one bar per run (clean vs noisy, single vs heavy)."""
    groups = sorted({d for m in metrics for d in m if d != OVERALL}) + [OVERALL]
    colours = _colours(runs)
    width = 0.8 / len(runs)
    fig = _figure(3.6 + 0.2 * len(runs) / 2)
    ax = fig.subplots()
    for i, (run, m) in enumerate(zip(runs, metrics)):
        xs = [g + (i - (len(runs) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [m[d].pass_at_1 if d in m else 0.0 for d in groups], width, label=run.name, color=colours[run.name])
    ax.set_xticks(range(len(groups)), [g.replace("_", " ") for g in groups], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pass@1")
    ax.set_title("pass@1 by domain")
    ax.grid(axis="y", alpha=0.3)
    if all(m[d].pass_at_1 == 0 for m in metrics for d in m):
        ax.text(0.5, 0.55, "no episode passed in any run:\nsee gold-chain progress and tool-call outcomes",
                transform=ax.transAxes, ha="center", va="center", color="#656d76")
    _legend_below(fig, ax)
    return fig


def _plot_pass_hat_curve(runs: list[EvalRun], metrics: list[dict[str, GroupMetrics]]) -> Figure:
    """pass^k for k = 1..K per run: how fast reliability decays when every one of k trials must pass."""
    colours = _colours(runs)
    fig = _figure(3.6 + 0.2 * len(runs) / 2)
    ax = fig.subplots()
    for run, m in zip(runs, metrics):
        curve = m[OVERALL].pass_hat_curve
        ax.plot(range(1, len(curve) + 1), curve, marker="o", label=run.name, color=colours[run.name])
    ax.set_xticks(range(1, max(run.k for run in runs) + 1))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("k")
    ax.set_ylabel("pass^k")
    ax.set_title("pass^k (all k trials pass)")
    ax.grid(alpha=0.3)
    _legend_below(fig, ax)
    return fig


def _run_axis(ax: Axes, runs: list[EvalRun]) -> None:
    """Run names down the y axis, first run on top."""
    ax.set_yticks(range(len(runs)), [run.name for run in runs])
    ax.invert_yaxis()


def _plot_cost(runs: list[EvalRun], metrics: list[dict[str, GroupMetrics]]) -> Figure:
    """Average turns and tokens per episode for each run: what a condition costs."""
    colours = [_colours(runs)[run.name] for run in runs]
    fig = _figure(_run_bars_height(runs))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, field, label, fmt in zip(axes, ("avg_turns", "avg_tokens"), ("turns", "tokens"), ("%.1f", "%.0f")):
        bars = ax.barh(range(len(runs)), [getattr(m[OVERALL], field) for m in metrics], color=colours)
        ax.bar_label(bars, fmt=fmt, fontsize="small", padding=2)
        ax.set_xlabel(f"average {label} per episode")
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.2)
    _run_axis(axes[0], runs)
    fig.suptitle("cost per episode")
    return fig


def _plot_progress(runs: list[EvalRun], metrics: list[dict[str, GroupMetrics]]) -> Figure:
    """Mean gold-chain progress beside pass@1 per run: progress moves long before pass rates leave zero."""
    fig = _figure(_run_bars_height(runs) + 0.3)
    ax = fig.subplots()
    rows = range(len(runs))
    progress = ax.barh([r - 0.17 for r in rows], [m[OVERALL].avg_progress for m in metrics], 0.34, color="#0969da",
                       label="gold-chain progress (mean share of the gold calls made)")
    passed = ax.barh([r + 0.17 for r in rows], [m[OVERALL].pass_at_1 for m in metrics], 0.34, color="#8c959f",
                     label="pass@1")
    for bars in (progress, passed):
        ax.bar_label(bars, fmt="%.2f", fontsize="x-small", padding=2)
    _run_axis(ax, runs)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("share")
    ax.set_title("gold-chain progress and pass@1 per run")
    ax.grid(axis="x", alpha=0.3)
    _legend_below(fig, ax)
    return fig


def _plot_call_outcomes(runs: list[EvalRun], metrics: list[dict[str, GroupMetrics]]) -> Figure:
    """Each run's tool calls split by outcome (unparseable ... success), as shares, with the call count."""
    fig = _figure(_run_bars_height(runs) + 0.3)
    ax = fig.subplots()
    counts = [call_outcomes(run.trajectories) for run in runs]
    totals = [sum(c.values()) for c in counts]
    left = [0.0] * len(runs)
    for name, colour in OUTCOMES.items():
        shares = [c[name] / total if total else 0.0 for c, total in zip(counts, totals)]
        ax.barh(range(len(runs)), shares, 0.6, left=left, color=colour, label=name)
        left = [a + b for a, b in zip(left, shares)]
    for row, total in enumerate(totals):
        ax.text(1.01, row, f"{total} calls" if total else "no tool calls", va="center", fontsize="x-small")
    _run_axis(ax, runs)
    ax.set_xlim(0, 1.16)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("share of tool calls")
    ax.set_title("tool-call outcomes per run")
    _legend_below(fig, ax)
    return fig


_PLOTS = {
    "pass_at_1_by_domain": (_plot_pass_by_domain, "pass@1 by domain"),
    "pass_hat_k": (_plot_pass_hat_curve, "pass^k by k"),
    "progress": (_plot_progress, "gold-chain progress and pass@1 per run"),
    "tool_call_outcomes": (_plot_call_outcomes, "tool-call outcomes per run"),
    "cost": (_plot_cost, "average turns and tokens"),
}


def draw_plots(runs: list[EvalRun], metrics: list[dict[str, GroupMetrics]]) -> dict[str, tuple[Figure, str]]:
    """The report's figures (stem -> (figure, caption)); pass^k is left out when every run has k = 1."""
    return {stem: (draw(runs, metrics), caption) for stem, (draw, caption) in _PLOTS.items()
            if stem != "pass_hat_k" or max(run.k for run in runs) > 1}


_TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#f6f8fa; --pass:#1a7f37; --fail:#cf222e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: #fff; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.sub { color: var(--muted); margin: 0 0 16px; }
.runs { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.run-card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; background: var(--bg); min-width: 170px; }
.run-card b { display: block; font-size: 15px; }
.run-card span { color: var(--muted); font-size: 12.5px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: var(--bg); font-weight: 600; position: sticky; top: 0; }
th.l, td.run, td.dom { text-align: left; }
tr.overall td { font-weight: 600; border-bottom: 2px solid #8c959f; }
td.run { vertical-align: top; font-weight: 600; border-bottom: 2px solid #8c959f; white-space: normal; min-width: 140px; }
table.small { width: auto; min-width: 50%; }
td.rate { background: rgba(26,127,55,var(--a)); }
.extra { display: flex; flex-wrap: wrap; gap: 6px; margin: 0; padding: 0; list-style: none; font-size: 12.5px; }
.extra li { border: 1px solid var(--line); border-radius: 12px; padding: 1px 9px; }
.extra b { color: var(--muted); font-weight: 600; margin-right: 4px; }
.headline { font-size: 15px; border-left: 4px solid #2a7; padding: 6px 12px; background: #f3faf6; }
.plots { display: grid; grid-template-columns: 1fr; gap: 16px; max-width: 900px; }
.plots figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px; background: #fff; }
.plots img { display: block; width: 100%; height: auto; }
.plots figcaption { color: var(--muted); font-size: 12.5px; text-align: center; }
.filters { display: flex; flex-wrap: wrap; align-items: center; gap: 10px; padding: 10px 12px; background: var(--bg);
  border: 1px solid var(--line); border-radius: 8px; position: sticky; top: 0; z-index: 2; margin-bottom: 10px; }
.filters input[type=search] { flex: 1; min-width: 180px; }
.filters input, .filters select, .filters button { font: inherit; padding: 3px 8px; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
.filters .count { color: var(--muted); margin-left: auto; }
details.ep { border: 1px solid var(--line); border-radius: 8px; margin: 6px 0; background: #fff; }
details.ep > summary { cursor: pointer; padding: 7px 12px; display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
details.ep[open] > summary { border-bottom: 1px solid var(--line); background: var(--bg); border-radius: 8px 8px 0 0; }
summary .task { font-weight: 600; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
summary .k { color: var(--muted); font-size: 12.5px; }
.badge { font-size: 11.5px; font-weight: 700; padding: 1px 7px; border-radius: 10px; color: #fff; letter-spacing: .03em; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.badge.run { background: #fff; color: var(--fg); border: 1px solid var(--line); font-weight: 600; }
.ep-body { padding: 10px 14px 14px; }
.verdict { border-left: 4px solid var(--pass); background: #f0fff4; padding: 6px 10px; margin: 0 0 10px; white-space: pre-wrap; }
.verdict.fail { border-color: var(--fail); background: #fff5f5; }
.meta { color: var(--muted); font-size: 12.5px; margin-bottom: 10px; }
.msg { border-left: 4px solid #8c959f; background: var(--bg); border-radius: 4px; padding: 6px 10px; margin: 6px 0; }
.msg .role { font-size: 11.5px; font-weight: 700; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); }
.msg.system { border-color: #8c959f; background: #f6f8fa; }
.msg.user { border-color: #0969da; background: #eef5ff; }
.msg.assistant { border-color: #1a7f37; background: #effaf1; }
.msg.tool { border-color: #bf8700; background: #fff8e6; }
.msg .text { white-space: pre-wrap; overflow-wrap: anywhere; }
pre { margin: 4px 0; padding: 6px 8px; border-radius: 4px; font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace;
  white-space: pre-wrap; overflow-wrap: anywhere; max-height: 360px; overflow: auto; }
pre.call { background: #f3efff; border: 1px solid #d8ccff; }
pre.call::before { content: "tool call"; display: block; color: #6639ba; font-weight: 700; }
pre.result { background: #fffdf5; border: 1px solid #eedc9a; }
.events { width: auto; font-size: 12.5px; margin: 8px 0; }
.events th:first-child, .events td:first-child { text-align: left; }
.answer { white-space: pre-wrap; }
.trail { font-size: 12.5px; margin: 0 0 10px; }
.trail ol { margin: 4px 0; padding-left: 28px; }
.trail li.summary, .trail li.reset { list-style: none; margin: 4px 0 4px -20px; padding: 2px 8px; font-weight: 600;
  border-left: 4px solid #8250df; background: #f3efff; }
.trail li.reset { border-color: var(--fail); background: #fff5f5; }
.trail .turn { color: var(--muted); margin-right: 6px; }
</style></head>
<body><main>
<h1>{{ title }}</h1>
<p class="sub">Generated {{ generated_at }} &middot; {{ total }} episodes in {{ runs|length }} run(s)</p>
<div class="runs">
{% for r in runs %}<div class="run-card"><b><span class="swatch" style="background:{{ r.colour }}"></span>{{ r.name }}</b>
<span>policy {{ r.policy }} &middot; k={{ r.k }} &middot; {{ r.n_episodes }} episodes</span></div>
{% endfor %}</div>
{% if extra %}<ul class="extra">{% for key, value in extra.items() %}<li><b>{{ key }}</b>{{ value }}</li>{% endfor %}</ul>{% endif %}
{% if headline %}<p class="headline">{{ headline }}</p>{% endif %}
{% macro table(name, rows) %}<h2>{{ name }}</h2>
<table class="small"><thead><tr>{% for key in rows[0] %}<th{% if loop.first %} class="l"{% endif %}>{{ key }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in rows %}<tr>{% for value in row.values() %}<td{% if loop.first %} class="dom"{% endif %}>{{ value }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{% endmacro %}
{% for name, rows in tables.items() %}{{ table(name, rows) }}{% endfor %}
<h2>Summary</h2>
<table>
<thead><tr><th class="l">Run</th><th class="l">Domain</th><th>Tasks</th><th>Trials</th><th>pass@1</th><th>95% CI</th><th>pass@k</th><th>pass^k</th><th>k</th>
<th>Reward</th><th>Progress</th><th>Turns</th><th>Tokens</th><th>Tool calls</th></tr></thead>
<tbody>
{% for r in runs %}{% for domain, m in r.metrics.items() %}
<tr{% if domain == overall %} class="overall"{% endif %}>{% if loop.first %}<td class="run" rowspan="{{ r.metrics|length }}">
<span class="swatch" style="background:{{ r.colour }}"></span>{{ r.name }}</td>{% endif %}<td class="dom">{{ domain }}</td>
<td>{{ m.n_tasks }}</td><td>{{ m.n_trials }}</td>
{% for v in (m.pass_at_1, m.pass_at_k, m.pass_hat_k) %}<td class="rate" style="--a:{{ '%.2f' % (0.28 * v) }}">{{ '%.1f' % (100 * v) }}%</td>{% if loop.first %}<td>{{ '%.1f' % (100 * m.pass_at_1_ci[0]) }}&ndash;{{ '%.1f' % (100 * m.pass_at_1_ci[1]) }}%</td>{% endif %}{% endfor %}
<td>{{ r.k }}</td><td>{{ '%.3f' % m.avg_reward }}</td><td>{{ '%.3f' % m.avg_progress }}</td><td>{{ '%.1f' % m.avg_turns }}</td><td>{{ '%.0f' % m.avg_tokens }}</td><td>{{ '%.1f' % m.avg_tool_calls }}</td></tr>
{% endfor %}{% endfor %}
</tbody></table>

{% for name, rows in run_tables.items() %}{{ table(name, rows) }}{% endfor %}

<h2>Plots</h2>
<div class="plots">
{% for p in plots %}<figure><img src="data:image/png;base64,{{ p.data }}" alt="{{ p.caption }}"><figcaption>{{ p.caption }} ({{ p.file }})</figcaption></figure>
{% endfor %}</div>

<h2>Episodes</h2>
<div class="filters">
<select id="f-run"><option value="">all runs</option>{% for r in runs %}<option>{{ r.name }}</option>{% endfor %}</select>
<select id="f-domain"><option value="">all domains</option>{% for d in domains %}<option>{{ d }}</option>{% endfor %}</select>
<label><input type="checkbox" id="f-fail"> failures only</label>
<input type="search" id="f-text" placeholder="task id or verifier text">
<button type="button" id="f-open">expand shown</button><button type="button" id="f-close">collapse all</button>
<span class="count" id="f-count">{{ total }} of {{ total }} episodes</span>
</div>
{% for e in episodes %}{% set t = e.t %}
<details class="ep" data-run="{{ e.run }}" data-domain="{{ t.domain }}" data-passed="{{ 1 if t.passed else 0 }}" data-search="{{ e.search }}">
<summary><span class="badge {{ 'pass' if t.passed else 'fail' }}">{{ 'PASS' if t.passed else 'FAIL' }}</span>
<span class="task">{{ t.task_id }}</span><span class="badge run">{{ e.run }}</span>
<span class="k">{{ t.domain }} &middot; trial {{ t.trial }} &middot; reward {{ '%.2f' % t.reward }} &middot; {{ t.termination }}
&middot; {{ t.n_turns }} turns &middot; {{ t.n_tool_calls }} tool calls &middot; {{ t.n_tokens }} tokens</span></summary>
<div class="ep-body">
<div class="verdict{% if not t.passed %} fail{% endif %}">{{ t.verdict or ('passed' if t.passed else 'no verifier text') }}</div>
{% if t.noise or t.error %}<div class="meta">{% if t.noise %}noise: {% for k, v in t.noise.items() %}{{ k }}={{ '%.2f' % v }} {% endfor %}{% endif %}{% if t.error %}error: {{ t.error }}{% endif %}</div>{% endif %}
{% if e.trail %}<details class="trail" open><summary>reading trail: {{ e.pages|length }} page(s) opened, in order: {{ e.pages|join(", ") or "none" }}</summary>
<ol>{% for s in e.trail %}<li class="{{ s.kind }}"><span class="turn">turn {{ s.turn }}</span>{{ s.text }}</li>{% endfor %}</ol></details>{% endif %}
{% for m in e.messages %}<div class="msg {{ m.role }}"><div class="role">{{ m.role }}{% if m.name %} &middot; {{ m.name }}{% endif %}</div>
{% for kind, text in m.parts %}{% if kind == 'text' %}<div class="text">{{ text }}</div>{% else %}<pre class="{{ kind }}">{{ text }}</pre>{% endif %}{% endfor %}</div>
{% endfor %}
{% if t.events and not e.trail %}<table class="events"><tr><th>context event</th><th>turn</th><th>tokens before</th><th>tokens after</th></tr>
{% for ev in t.events %}<tr><td>{{ ev.kind }}</td><td>{{ ev.turn }}</td><td>{{ ev.tokens_before }}</td><td>{{ ev.tokens_after }}</td></tr>{% endfor %}</table>{% endif %}
{% if e.answer %}<div class="msg assistant"><div class="role">final answer</div><div class="answer">{{ e.answer }}</div></div>{% endif %}
</div></details>
{% endfor %}
</main>
<script>
(() => {
  const $ = id => document.getElementById(id);
  const eps = Array.from(document.querySelectorAll("details.ep"));
  function apply() {
    const run = $("f-run").value, dom = $("f-domain").value, fails = $("f-fail").checked;
    const text = $("f-text").value.trim().toLowerCase();
    let shown = 0;
    for (const ep of eps) {
      const d = ep.dataset;
      const ok = (!run || d.run === run) && (!dom || d.domain === dom) && (!fails || d.passed === "0")
        && (!text || d.search.includes(text));
      ep.hidden = !ok;
      shown += ok;
    }
    $("f-count").textContent = shown + " of " + eps.length + " episodes";
  }
  for (const id of ["f-run", "f-domain", "f-fail", "f-text"]) $(id).addEventListener("input", apply);
  $("f-open").addEventListener("click", () => eps.forEach(ep => { if (!ep.hidden) ep.open = true; }));
  $("f-close").addEventListener("click", () => eps.forEach(ep => { ep.open = false; }));
})();
</script>
</body></html>
"""


def training_curve_png(rows: list[dict[str, Any]]) -> bytes:
    """Reward and trainer idle fraction per RL step (rows of a run's metrics.jsonl)."""
    fig = _figure(3.9)
    ax = fig.subplots()
    steps = [r["step"] for r in rows]
    rollout = [(r["step"], r["rollout_reward"]) for r in rows if r.get("rollout_reward") is not None]
    if rollout:
        ax.plot(*zip(*rollout), marker="o", label="mean reward of all rollouts since the last step")
    ax.plot(steps, [r["reward"] for r in rows], marker=".", alpha=0.6, label="mean reward of trained groups")
    ax.plot(steps, [r.get("trainer_idle_fraction", 0.0) for r in rows], linestyle="--", label="trainer idle fraction")
    ax.set_xlabel("RL step")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title("training curve")
    _legend_below(fig, ax)
    return _png(fig)


def series_plot_png(rows: Sequence[Mapping[str, Any]], x: str, metrics: Mapping[str, str], series: str,
                    title: str) -> bytes:
    """One panel per metric (row key -> axis label), one line per value of `series` against `x`: a sweep's figure.
    Rows whose `x` is None (a condition the sweep does not vary) are dashed horizontal lines at their value. Earlier
    series are drawn wider and each has its own marker, so series with equal values stay visible under each other."""
    names = list(dict.fromkeys(row[series] for row in rows))
    fig = _figure(3.9)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (key, label) in zip(axes, metrics.items()):
        for i, name in enumerate(names):
            style = {"color": f"C{i % 10}", "label": name, "linewidth": 1.2 + 2.4 * (len(names) - 1 - i) / len(names)}
            mine = [row for row in rows if row[series] == name]
            points = sorted((row[x], row[key]) for row in mine if row[x] is not None)
            if points:
                ax.plot(*zip(*points), marker="osD^v<>ph*"[i % 10], markersize=9 - 4 * i / len(names), **style)
            for row in (row for row in mine if row[x] is None):
                ax.axhline(row[key], linestyle="--", **style)
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _legend_below(fig, axes[0])
    return _png(fig)


def write_report(
    runs: list[EvalRun], out_dir: Path, title: str = "toolgym evaluation", extra: dict[str, Any] | None = None,
    figures: dict[str, tuple[bytes, str]] | None = None, headline: str | None = None,
    tables: dict[str, list[dict[str, Any]]] | None = None, data: dict[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
) -> Path:
    """Write results.json, trajectories.jsonl, plots/*.png and a self-contained report.html; return the HTML path.

    `figures` adds extra PNGs (stem -> (png bytes, caption)), e.g. a training curve; `headline` is a sentence shown
    first; `tables` adds titled tables (rows of the same keys), e.g. RL minus SFT per condition; `data` goes to
    results.json only (machine-readable figures the tables show); `timings` (stage -> seconds) becomes a wall-time
    table and results.json's `timings_s`. Missing values show as a dash, never as None or null."""
    if not runs:
        raise ValueError("write_report needs at least one run")
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    metrics = [run.metrics() for run in runs]
    extra = to_jsonable_python(extra or {})
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    plots = []
    drawn = {stem: (_png(fig), caption) for stem, (fig, caption) in draw_plots(runs, metrics).items()}
    for stem, (png, caption) in {**drawn, **(figures or {})}.items():
        (out_dir / "plots" / f"{stem}.png").write_bytes(png)
        plots.append({"file": f"plots/{stem}.png", "caption": caption, "data": base64.b64encode(png).decode("ascii")})

    write_jsonl(
        out_dir / "trajectories.jsonl",
        (RunTrajectory(**dict(t), run=run.name) for run in runs for t in run.trajectories),
    )
    outcomes = {run.name: call_outcomes(run.trajectories) for run in runs}
    results = {
        "title": title,
        "generated_at": generated_at,
        "extra": extra,
        "headline": headline,
        "tables": to_jsonable_python(tables or {}),
        **({"timings_s": dict(timings)} if timings else {}),
        **to_jsonable_python(data or {}),
        "runs": [
            {
                "name": run.name,
                "policy": run.policy,
                "k": run.k,
                "n_episodes": len(run.trajectories),
                "metrics": {domain: g.model_dump() for domain, g in m.items()},
                "tool_call_outcomes": {name: outcomes[run.name][name] for name in OUTCOMES},
            }
            for run, m in zip(runs, metrics)
        ],
        "plots": [p["file"] for p in plots],
        "trajectories": "trajectories.jsonl",
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")

    shown_tables = {name: [{key: display(value) for key, value in row.items()} for row in rows]
                    for name, rows in (tables or {}).items() if rows}
    if timings:
        shown_tables["Wall time per stage"] = timings_rows(timings)
    colours = _colours(runs)
    page = Environment(autoescape=True).from_string(_TEMPLATE).render(
        title=title,
        generated_at=generated_at,
        extra={key: display(value) for key, value in extra.items() if value is not None},
        headline=headline,
        tables=shown_tables,
        run_tables={"Tool-call outcomes (valid: the call reached a tool)": outcome_rows(outcomes)},
        overall=OVERALL,
        total=sum(len(run.trajectories) for run in runs),
        runs=[
            {"name": run.name, "policy": run.policy, "k": run.k, "n_episodes": len(run.trajectories),
             "colour": colours[run.name], "metrics": m}
            for run, m in zip(runs, metrics)
        ],
        domains=sorted({d for run in runs for d in run.domains()}),
        plots=plots,
        episodes=[_episode_view(run.name, t) for run in runs for t in run.trajectories],
    )
    html = out_dir / "report.html"
    html.write_text(page)
    return html
