"""Evaluation: pass@k / pass^k against hand-computed values, grouping by task and domain, and the report files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from toolgym.agent.trajectory import ContextEvent, TokenSegment, Trajectory, TurnRecord
from toolgym.eval import OVERALL, EvalRun, pass_at_k, pass_hat_k
from toolgym.eval.screenshot import find_chromium, screenshot

XSS = "<script>alert(1)</script>"


def test_pass_at_k_and_pass_hat_k_hand_computed():
    assert pass_hat_k(4, 2, 2) == pytest.approx(1 / 6)  # C(2,2)/C(4,2)
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4) and pass_hat_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(3, 1, 2) == pytest.approx(2 / 3) and pass_hat_k(3, 1, 2) == 0.0
    for n, k in [(1, 1), (4, 1), (4, 4), (8, 3)]:
        assert pass_at_k(n, n, k) == 1.0 and pass_hat_k(n, n, k) == 1.0
        assert pass_at_k(n, 0, k) == 0.0 and pass_hat_k(n, 0, k) == 0.0


@pytest.mark.parametrize("n,c,k", [(4, 2, 5), (4, 2, 0), (4, 5, 2), (4, -1, 2), (0, 0, 1), (4.0, 2, 2), (4, True, 1)])
def test_metrics_reject_bad_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)
    with pytest.raises(ValueError):
        pass_hat_k(n, c, k)


def _traj(task_id: str, domain: str, trial: int, passed: bool, turns: int = 2, tokens: int = 10, calls: int = 1,
          messages: list[dict] | None = None, **kw) -> Trajectory:
    """A synthetic episode with the given number of turns, tokens and tool calls."""
    return Trajectory(
        task_id=task_id, domain=domain, trial=trial, passed=passed, reward=1.0 if passed else 0.0,
        progress=1.0 if passed else 0.25,
        turns=[TurnRecord(index=i, version=0, n_tokens=1, finish_reason="stop") for i in range(turns)],
        segments=[TokenSegment(token_ids=list(range(tokens)), loss_mask=[1] * tokens)],
        n_tool_calls=calls, messages=messages or [{"role": "user", "content": f"do {task_id}"}], **kw,
    )


def _outcomes(task_id: str, domain: str, passes: list[bool], **kw) -> list[Trajectory]:
    return [_traj(task_id, domain, i, p, **kw) for i, p in enumerate(passes)]


MESSAGES = [
    {"role": "system", "content": "You are a helpful airline agent."},
    {"role": "user", "content": f"Cancel booking 7 please {XSS}"},
    {"role": "assistant", "content": 'Let me look.\n<tool_call>{"name": "get_booking", "arguments": {"booking_id": 7}}</tool_call>'},
    {"role": "tool", "name": "get_booking", "content": '{"booking_id": 7, "status": "<b>confirmed</b>"}'},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "cancel_booking", "arguments": '{"booking_id": 7}'}}]},
    {"role": "tool", "name": "cancel_booking", "content": "503 Service Unavailable"},
    {"role": "assistant", "content": "Booking 7 is cancelled."},
]


def _run(name: str = "clean", k: int = 2) -> EvalRun:
    """airline: A (2/4 pass), B (4/4); bank: C (0/4); costs differ per domain."""
    trajectories = (
        _outcomes("A", "airline", [True, False, True, False], turns=2, tokens=10, calls=1, messages=MESSAGES,
                  verdict=f"answer lacks refund amount {XSS}",
                  events=[ContextEvent(kind="summary", turn=3, tokens_before=900, tokens_after=200)],
                  noise={"tool": 0.5}, termination="max_turns")
        + _outcomes("B", "airline", [True] * 4, turns=4, tokens=30, calls=3)
        + _outcomes("C", "bank", [False] * 4, turns=6, tokens=50, calls=5)
    )
    return EvalRun(name=name, policy="scripted", k=k, trajectories=trajectories)


def test_eval_run_groups_by_task_and_domain():
    m = _run().metrics()
    assert set(m) == {"airline", "bank", OVERALL}
    air, bank, overall = m["airline"], m["bank"], m[OVERALL]
    assert (air.n_tasks, air.n_trials, overall.n_tasks, overall.n_trials) == (2, 8, 3, 12)
    assert air.pass_at_1 == pytest.approx(0.75)
    assert air.pass_at_k == pytest.approx((5 / 6 + 1) / 2)
    assert air.pass_hat_k == pytest.approx((1 / 6 + 1) / 2)
    assert air.pass_hat_curve == pytest.approx([0.75, (1 / 6 + 1) / 2])
    assert (bank.pass_at_1, bank.pass_at_k, bank.pass_hat_k) == (0.0, 0.0, 0.0)
    # overall is the mean over the 3 tasks (0.5), not over the 2 domains (0.375)
    assert overall.pass_at_1 == pytest.approx(0.5)
    assert overall.pass_at_k == pytest.approx((5 / 6 + 1 + 0) / 3)
    assert overall.pass_hat_k == pytest.approx((1 / 6 + 1 + 0) / 3)
    assert (air.avg_turns, air.avg_tokens, air.avg_tool_calls, air.avg_reward) == (3.0, 20.0, 2.0, 0.75)
    assert (air.avg_progress, bank.avg_progress) == (pytest.approx(0.8125), 0.25)
    assert (overall.avg_turns, overall.avg_tokens, overall.avg_tool_calls) == (4.0, 30.0, 3.0)


def test_each_task_uses_its_own_trial_count():
    run = EvalRun(name="r", policy="p", k=2,
                  trajectories=_outcomes("A", "d", [True, False, True, False]) + _outcomes("D", "d", [True, False, False]))
    m = run.metrics()[OVERALL]
    assert m.pass_at_k == pytest.approx((5 / 6 + 2 / 3) / 2)
    assert m.pass_hat_k == pytest.approx((1 / 6 + 0) / 2)
    assert m.pass_at_1 == pytest.approx((0.5 + 1 / 3) / 2)


def test_fewer_trials_than_k_is_an_error():
    run = EvalRun(name="r", policy="p", k=3, trajectories=_outcomes("A", "d", [True, True]))
    with pytest.raises(ValueError, match="fewer trials"):
        run.metrics()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[list[EvalRun], Path]:
    pytest.importorskip("matplotlib")
    pytest.importorskip("jinja2")
    from toolgym.eval.report import write_report

    noisy = _run("noisy:all")
    noisy.trajectories[1].passed = True  # task A: 3/4 pass under noise
    runs = [_run("clean"), noisy, _run("heavy@4", k=4)]
    out = tmp_path_factory.mktemp("report")
    html = write_report(runs, out, title="unit report", extra={"seed": 7, "out": out})
    return runs, html


def test_report_results_json_and_trajectories(report):
    from toolgym.eval.report import RunTrajectory
    from toolgym.jsonl import read_jsonl

    runs, html = report
    out = html.parent
    results = json.loads((out / "results.json").read_text())
    assert results["title"] == "unit report" and results["extra"] == {"seed": 7, "out": str(out)}
    assert [r["name"] for r in results["runs"]] == ["clean", "noisy:all", "heavy@4"]
    for run, saved in zip(runs, results["runs"]):
        assert (saved["policy"], saved["k"], saved["n_episodes"]) == (run.policy, run.k, 12)
        assert saved["metrics"] == {d: g.model_dump(mode="json") for d, g in run.metrics().items()}
    assert results["runs"][0]["metrics"][OVERALL]["pass_at_1"] == pytest.approx(0.5)
    assert results["runs"][2]["metrics"][OVERALL]["pass_hat_curve"] == pytest.approx([0.5, 7 / 18, 1 / 3, 1 / 3])
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    assert len(lines) == 36 and json.loads(lines[12])["run"] == "noisy:all"
    back = list(read_jsonl(out / "trajectories.jsonl", RunTrajectory))
    assert back[0].messages == MESSAGES and back[0].n_tokens == 10


def test_report_html_embeds_plots_and_escapes_messages(report):
    _, html = report
    page = html.read_text()
    assert page.count('<img src="data:image/png;base64,') == 5
    assert XSS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;confirmed&lt;/b&gt;" in page  # tool result, pretty-printed and escaped
    assert "cancel_booking" in page and "get_booking" in page  # both tool-call styles shown
    assert page.count('<details class="ep"') == 36
    assert "summary" in page and "max_turns" in page and "answer lacks refund amount" in page


def test_report_pngs_are_real_images(report):
    from matplotlib.image import imread

    _, html = report
    pngs = sorted((html.parent / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["cost.png", "pass_at_1_by_domain.png", "pass_hat_k.png", "progress.png",
                                      "tool_call_outcomes.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        pixels = imread(png)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300 and pixels.var() > 0


def test_chromium_screenshot_of_report(report, tmp_path):
    if find_chromium() is None:
        pytest.skip("chromium not installed")
    from matplotlib.image import imread

    _, html = report
    png = screenshot(html, tmp_path / "report.png")
    assert png.is_file() and png.stat().st_size > 20_000
    pixels = imread(png)
    assert pixels.shape[:2] == (2000, 1280) and pixels.var() > 0


def _airline_env():
    from toolgym.domains import load_domain
    from toolgym.envs.environment import Environment

    domain = load_domain("airline")
    return Environment(domain, list(domain.tools), data_seed=0)


def test_call_outcomes_classify_what_the_environment_returned():
    """Each outcome from a real environment's answer to a real parsed model turn, so a changed error text fails."""
    from toolgym.agent.rollout import tool_messages
    from toolgym.agent.toolcall import parse_assistant
    from toolgym.eval.report import OUTCOMES, call_outcomes, outcome_rows

    calls = [("get_passenger", {"passenger_id": 1}), ("get_passenger", {"passenger_id": 2}),
             ("get_pilot", {"pilot_id": 1}), ("get_passenger", {"passenger_id": "abc"}),
             ("get_passenger", {"passenger_id": 999_999})]
    text = "\n".join(f'<tool_call>{json.dumps({"name": n, "arguments": a})}</tool_call>' for n, a in calls)
    env = _airline_env()
    try:
        messages = tool_messages(env, parse_assistant(text + '\n<tool_call>{"name": "get_passenger", "argu'))
    finally:
        env.close()
    trajectory = _traj("A", "airline", 0, False, messages=[{"role": "user", "content": "hi"}, *messages])
    counts = call_outcomes([trajectory])
    assert dict(counts) == {"success": 2, "unknown tool": 1, "invalid arguments": 1, "tool error": 1,
                            "unparseable": 1}
    row = outcome_rows({"r": counts})[0]
    assert (row["calls"], row["valid"], row["success"], row["unparseable"]) == ("6", "3 (50%)", "2 (33%)", "1 (17%)")
    assert list(row)[3:] == list(OUTCOMES)


def _failing_runs(n: int, name_length: int) -> list[EvalRun]:
    """`n` runs whose every episode fails with some gold-chain progress; long run names, as the demo's are."""
    runs = []
    for i in range(n):
        name = f"run {i} " + "held-out basic clean, free decoding"[: max(0, name_length - 6)]
        trajectories = [_traj(f"T{j}", ("airline", "bank", "food_delivery")[j % 3], 0, False, messages=MESSAGES,
                              calls=2) for j in range(6)]
        for j, t in enumerate(trajectories):
            t.progress = ((i + j) % 4) / 4
        runs.append(EvalRun(name=name, policy="p", k=1, trajectories=trajectories))
    return runs


def test_progress_and_outcome_plots_show_runs_where_nothing_passed():
    pytest.importorskip("matplotlib")
    from toolgym.eval.report import OUTCOMES, draw_plots

    runs = _failing_runs(3, 10)
    metrics = [run.metrics() for run in runs]
    assert all(m[OVERALL].pass_at_1 == 0 for m in metrics)
    figures = draw_plots(runs, metrics)
    assert "pass_hat_k" not in figures  # k = 1 everywhere: one point per run says nothing
    progress_ax = figures["progress"][0].axes[0]
    widths = [bar.get_width() for bar in progress_ax.containers[0]]
    assert widths == pytest.approx([m[OVERALL].avg_progress for m in metrics]) and max(widths) > 0
    outcome_ax = figures["tool_call_outcomes"][0].axes[0]
    shares = {c.get_label(): [bar.get_width() for bar in c] for c in outcome_ax.containers}
    # MESSAGES: get_booking answered with a row (success), cancel_booking with a 503 text (success: it ran)
    assert list(shares) == list(OUTCOMES) and shares["success"] == pytest.approx([1.0] * 3)
    texts = [t.get_text() for t in figures["pass_at_1_by_domain"][0].axes[0].texts]
    assert any("no episode passed" in t for t in texts)


def _overlaps(fig) -> list[str]:
    """Pairs of drawn texts (titles, axis and tick labels, bar labels, legends) whose boxes overlap, and legends
    drawn over an axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()

    def in_view(labels, axis: int, limits) -> list:
        """Tick labels drawn: visible, non-empty, at a tick inside the axis' view limits."""
        low, high = sorted(limits)
        return [t for t in labels if t.get_visible() and t.get_text() and low <= t.get_position()[axis] <= high]

    boxes = []
    for ax in fig.axes:
        texts = [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        drawn = [*in_view(ax.get_xticklabels(), 0, ax.get_xlim()), *in_view(ax.get_yticklabels(), 1, ax.get_ylim()),
                 *(t for t in texts if t.get_visible() and t.get_text())]
        boxes += [(f"{t.get_text()!r}", t.get_window_extent(renderer).shrunk(0.98, 0.9)) for t in drawn]
    if fig._suptitle is not None:
        boxes.append((fig._suptitle.get_text(), fig._suptitle.get_window_extent(renderer)))
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    found = [f"{a} / {b}" for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
             if box_a.overlaps(box_b)]
    for legend in legends:
        box = legend.get_window_extent(renderer)
        found += [f"legend over axes {i}" for i, ax in enumerate(fig.axes) if box.overlaps(ax.get_window_extent())]
        found += [f"legend / {name}" for name, other in boxes if box.overlaps(other)]
    return found


@pytest.mark.parametrize("n_runs,name_length", [(2, 8), (13, 40)])
def test_plot_labels_and_legends_do_not_overlap(n_runs, name_length):
    """Rendered like the demo's report (13 runs, names up to 40 characters): no text over another, no legend over
    the data."""
    pytest.importorskip("matplotlib")
    from toolgym.eval.report import draw_plots

    runs = _failing_runs(n_runs, name_length)
    runs[0].trajectories[0].passed = True
    for stem, (fig, _) in draw_plots(runs, [run.metrics() for run in runs]).items():
        assert _overlaps(fig) == [], stem


def test_report_tables_are_readable(tmp_path):
    """Timings as a stage table, missing values as a dash, mappings as `key: value`: never None, null or a dict."""
    pytest.importorskip("jinja2")
    from toolgym.eval.report import write_report

    html = write_report([_run()], tmp_path, extra={"stopped_reason": None, "sizes": {"train": 8, "heldout": 2}},
                        tables={"sweep": [{"strategy": "none", "threshold": None, "pass@1": 0.123456, "tokens": 1234.5}]},
                        timings={"tasks": 22.3, "sft": 190.0})
    page = html.read_text()
    visible = re.sub(r"<[^>]+>", " ", page[page.index("<body>") : page.index("<h2>Plots</h2>")])
    assert "None" not in visible and "null" not in visible and "{" not in visible
    assert "stopped_reason" not in visible and "train: 8; heldout: 2" in visible
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    assert ["none", "\u2014", "0.123", "1,234"] == cells[:4]
    assert ["tasks", "22.3 s", "22.3", "11%", "sft", "3 min 10 s", "190.0", "89%", "total", "3 min 32 s", "212.3",
            "100%"] == cells[4:16]
    assert json.loads((tmp_path / "results.json").read_text())["timings_s"] == {"tasks": 22.3, "sft": 190.0}


def test_displayed_replies_have_no_chat_template_tokens(tmp_path):
    pytest.importorskip("jinja2")
    from html import escape

    from toolgym.eval.report import write_report
    from toolgym.policy.chat_format import SPECIAL_TOKENS

    messages = [
        {"role": "user", "content": "Find card 7"},
        {"role": "assistant", "content": 'Done. "8455; name.\n<|im_start|>assistant\n<tool_call>{"name": "create_card", '
                                         '"arguments": {"account_id": "CN-466'},
        {"role": "assistant", "content": "<tool_response>card 7 expires 2027-01<|im_end|>\n</tools>"},
    ]
    trajectory = _traj("A", "bank", 0, False, messages=messages, final_answer="card 7 expires 2027-01</tool_call>")
    html = write_report([EvalRun(name="r", policy="p", k=1, trajectories=[trajectory])], tmp_path)
    page = html.read_text()
    for token in [*SPECIAL_TOKENS, "<tools>", "</tools>"]:
        assert escape(token) not in page, token
    assert 'Done. &#34;8455; name.' in page and "card 7 expires 2027-01" in page
    call = re.search(r'<pre class="call">([^<]*)</pre>', page).group(1)
    assert "create_card" in call and "CN-466" in call  # the unterminated call is shown as a call
