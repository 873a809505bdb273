"""The context-management sweep lands in the eval report (table rows, the plot against the threshold, the command),
and a search episode's page shows the pages it opened in order with its context summaries and resets in place."""

from __future__ import annotations

import base64
import html
import json
import re

import pytest
from typer.testing import CliRunner

from toolgym.agent.trajectory import ContextEvent, Trajectory, TurnRecord
from toolgym.cli import app
from toolgym.domains import load_domain
from toolgym.envs.environment import ToolCall
from toolgym.envs.sample import EnvironmentSampler
from toolgym.eval.metrics import EvalRun
from toolgym.eval.report import write_report
from toolgym.jsonl import write_jsonl
from toolgym.search.synthesize import synthesize_search_tasks

runner = CliRunner()
THRESHOLDS = [3000, 5000]


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """`toolgym search sweep --json` on two synthesized questions: (its JSON rows, its output folder, the command)."""
    folder = tmp_path_factory.mktemp("sweep")
    env = next(EnvironmentSampler(load_domain("food_delivery"), seed=3).sample_many(1))
    write_jsonl(folder / "tasks.jsonl", synthesize_search_tasks(env, 2, seed=2)[0])
    out = folder / "report"
    result = runner.invoke(app, ["search", "sweep", "--tasks", str(folder / "tasks.jsonl"), "--n", "2",
                                 *(a for t in THRESHOLDS for a in ("--threshold", str(t))), "--reset", "150",
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


def _sweep_table(page: str) -> list[list[str]]:
    """The cells of the page's context-management sweep table, row by row."""
    table = page.split("<h2>context-management sweep</h2>", 1)[1].split("</table>", 1)[0]
    return [[html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1])]


def test_the_sweep_json_has_one_row_per_cell_with_an_interval(sweep_run):
    rows, _ = sweep_run
    assert [(r["strategy"], r["summary_threshold"], r["reset_after_turns"]) for r in rows] == [
        ("none", None, None), ("summary", 3000, None), ("summary", 5000, None), ("discard", None, 150),
        ("hybrid", 3000, 150), ("hybrid", 5000, 150)]
    by_cell = {(r["strategy"], r["summary_threshold"]): r for r in rows}
    assert by_cell[("none", None)]["pass@1"] == 0.0 and by_cell[("summary", 3000)]["pass@1"] == 1.0
    assert all(r["pass@1_ci_low"] <= r["pass@1"] <= r["pass@1_ci_high"] for r in rows)
    assert by_cell[("summary", 3000)]["summaries_per_episode"] > by_cell[("summary", 5000)]["summaries_per_episode"]


def test_the_sweep_report_holds_the_table_rows_the_plot_and_the_command(sweep_run):
    rows, out = sweep_run
    page = (out / "report.html").read_text()
    table = _sweep_table(page)
    assert [row[:3] for row in table] == [[r["strategy"], str(r["summary_threshold"] or "\u2014"),
                                           str(r["reset_after_turns"] or "\u2014")] for r in rows]
    none_row, summary_row = table[0], table[1]
    assert none_row[4] == "0" and none_row[5] == "0.00-0.00" and summary_row[4] == "1" and summary_row[5] == "1.00-1.00"
    assert [int(row[6]) for row in table] == [r["tokens_per_episode"] for r in rows]

    plot = out / "plots" / "context_sweep.png"
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert base64.b64encode(plot.read_bytes()).decode() in page and "against the summary threshold" in page

    results = json.loads((out / "results.json").read_text())
    command = results["extra"]["command"]
    assert command.startswith("toolgym search sweep --tasks ") and f"--out {out}" in command
    assert all(f"--threshold {t}" in command for t in THRESHOLDS) and "--reset 150" in command
    assert html.escape(command) in page
    assert [s["pass_at_1_ci"] for s in results["sweep"]] == [[r["pass@1_ci_low"], r["pass@1_ci_high"]] for r in rows]


def _trail_items(page: str, task_id: str, run: str) -> tuple[str, list[tuple[str, str]]]:
    """An episode's reading-trail headline and (kind, text) items, from the report page."""
    start = f'<span class="task">{task_id}</span><span class="badge run">{run}</span>'
    episode = page.split(start, 1)[1].split('<details class="ep"', 1)[0]
    trail = episode.split('<details class="trail" open><summary>', 1)[1]
    headline = html.unescape(trail.split("</summary>", 1)[0])
    items = re.findall(r'<li class="(\w+)"><span class="turn">turn \d+</span>(.*?)</li>', trail)
    return headline, [(kind, html.unescape(text)) for kind, text in items]


def _turn(index: int, *calls: ToolCall) -> TurnRecord:
    return TurnRecord(index=index, version=0, n_tokens=5, finish_reason="stop", tool_calls=list(calls))


def test_a_search_episode_page_lists_opened_pages_in_order_and_marks_summary_and_reset(tmp_path):
    def call(name: str, **arguments) -> ToolCall:
        return ToolCall(name=name, arguments=arguments)

    episode = Trajectory(
        task_id="search-7", domain="food_delivery-search",
        turns=[_turn(0, call("search", query="branch in Riverton", k=5)), _turn(1, call("open", page="p00042")),
               _turn(2, call("open", page="p00042", part=2)), _turn(3, call("find", page="p00007", text="total")),
               _turn(4, call("open", page="p00009"), call("open", part=1)), _turn(5, call("open", page="p00042")),
               _turn(6)],
        events=[ContextEvent(kind="summary", turn=3, tokens_before=9100, tokens_after=2300),
                ContextEvent(kind="reset", turn=5, tokens_before=6400, tokens_after=300)])
    page = write_report([EvalRun(name="hybrid", policy="scripted", k=1, trajectories=[episode])], tmp_path).read_text()
    headline, items = _trail_items(page, "search-7", "hybrid")
    assert headline.endswith("3 page(s) opened, in order: p00042, p00007, p00009")
    assert items == [
        ("search", 'search "branch in Riverton" (top 5)'), ("open", "open p00042 part 1"), ("open", "open p00042 part 2"),
        ("summary", "context summarized: 9,100 -> 2,300 tokens"), ("find", 'find "total" in p00007'),
        ("open", "open p00009 part 1"), ("reset", "context reset (discard-all): 6,400 -> 300 tokens"),
        ("open", "open p00042 part 1")]


def test_other_episodes_get_no_trail_but_keep_their_context_events(tmp_path):
    episode = Trajectory(task_id="tool-1", domain="airline",
                         turns=[_turn(0, ToolCall(name="get_booking", arguments={"booking_id": 7})), _turn(1)],
                         events=[ContextEvent(kind="summary", turn=1, tokens_before=900, tokens_after=200)])
    page = write_report([EvalRun(name="clean", policy="scripted", k=1, trajectories=[episode])], tmp_path).read_text()
    assert '<details class="trail"' not in page
    assert "<td>summary</td><td>1</td><td>900</td><td>200</td>" in page


def test_a_real_sweep_episode_shows_its_reader_pages_and_summaries(sweep_run):
    _, out = sweep_run
    page = (out / "report.html").read_text()
    lines = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    episode = next(t for t in lines if t["run"].startswith("summary:3000"))
    opened = [c["arguments"]["page"] for turn in episode["turns"] for c in turn["tool_calls"]
              if c["name"] in ("open", "find")]
    headline, items = _trail_items(page, episode["task_id"], episode["run"])
    assert headline.endswith("in order: " + ", ".join(dict.fromkeys(opened)))
    assert sum(kind == "summary" for kind, _ in items) == len(episode["events"]) > 1
    assert [kind for kind, _ in items if kind != "summary"] == [
        c["name"] for turn in episode["turns"] for c in turn["tool_calls"]]


def test_synth_json_is_one_array_of_rows_per_domain_and_all(tmp_path):
    result = runner.invoke(app, ["search", "synth", "-d", "food_delivery", "--n", "3", "--per-env", "3",
                                 "--out", str(tmp_path / "q.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["domain"] for r in rows] == ["food_delivery", "all"]
    written = (tmp_path / "q.jsonl").read_text().splitlines()
    assert rows[-1]["accepted"] == len(written) == sum(rows[-1][f"hops_{h}"] for h in (2, 3, 4))
    stats = json.loads((tmp_path / "q.stats.json").read_text())
    assert rows[-1]["judge_rejected_pct"] == round(100 * stats["rejection_rate"]["judge"], 1)
