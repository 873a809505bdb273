"""The `search` environment family for the registry (toolgym.envs.families): a task's record rebuilds its corpus
from the underlying tool-use environment's database, and episodes are verified by answer and evidence."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from toolgym.domains.registry import load_domain
from toolgym.envs.environment import EnvironmentRecord
from toolgym.envs.families import TrailNote, unwrap
from toolgym.search.corpus import corpus_for
from toolgym.search.questions import Question
from toolgym.search.tools import TOOLS, FindArgs, OpenArgs, SearchArgs, SearchEnvironment
from toolgym.search.verify import verify_search
from toolgym.tasks.model import Task
from toolgym.tasks.verify import Verdict


class SearchFamily:
    """Multi-hop questions over a document corpus rendered from a tool-use environment's entity graph."""

    def open(self, record: EnvironmentRecord) -> SearchEnvironment:
        question = record.params.get("question")
        answer_page = Question.model_validate(question).answer_page if question else None
        title = f"the {load_domain(record.spec or record.domain).spec.title} knowledge base"
        return SearchEnvironment(corpus_for(record), title, answer_page)

    def title(self, env: Any) -> str:
        return unwrap(env).title

    def verify(self, task: Task, env: Any, answer: str) -> Verdict:
        return verify_search(task, unwrap(env), answer)

    def describe_call(self, name: str, arguments: Any) -> TrailNote | None:
        """A search, open or find call as a trail line; None for another tool or arguments the tool would refuse."""
        if name not in TOOLS:
            return None
        try:
            args = TOOLS[name][0].model_validate(arguments or {})
        except ValidationError:
            return None
        if isinstance(args, SearchArgs):
            return TrailNote("search", f'search "{args.query}" (top {args.k})')
        if isinstance(args, OpenArgs):
            return TrailNote("open", f"open {args.page} part {args.part}", args.page)
        if isinstance(args, FindArgs):
            return TrailNote("find", f'find "{args.text}" in {args.page}', args.page)
        return None


FAMILY = SearchFamily()
