"""A document corpus rendered from an environment's entity graph: one page per database row (title, prose facts,
links to the rows it references and to the rows that reference it, neutral notes), near-duplicate distractor pages,
and a SQLite FTS5 index ranked by BM25. Seeded: the same database and config give the same pages and page ids."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field

from toolgym.domains.database import decode_row
from toolgym.domains.model import Domain
from toolgym.domains.spec import EntitySpec
from toolgym.envs.environment import Environment, EnvironmentRecord
from toolgym.tasks.text import fmt, words


class CorpusConfig(BaseModel):
    """What shapes a corpus beyond its database: stored in a search environment's record so it rebuilds exactly."""

    seed: int = 0
    distractor_rate: float = Field(0.25, ge=0.0, le=1.0)
    """Share of real pages that get a near-duplicate distractor (similar title, some facts changed)."""
    part_chars: int = Field(900, ge=200)
    """A page is served in parts of about this many characters (`open(page, part)`)."""
    note_sentences: int = Field(12, ge=0)
    """Neutral sentences per page (records boilerplate) that make pages long without adding facts."""


NOTES = [
    "This page was compiled from the operational records and is refreshed whenever the record changes.",
    "Entries on this page are reviewed periodically by the records team for completeness.",
    "Values shown here reflect the most recent synchronisation with the source system.",
    "Related pages are listed so that readers can follow references between records.",
    "Questions about the accuracy of this page should be raised with the data stewards.",
    "Historical revisions of this page are retained for audit purposes and are not shown here.",
    "Formatting of amounts and dates follows the house style used across all record pages.",
    "This record may be referenced by reports, statements and correspondence sent to customers.",
    "Pages with similar titles can describe different records; compare the facts before relying on one.",
    "Some records are archived copies kept for reference; their facts may differ from the live record.",
    "Links between records are maintained automatically when a referenced record changes.",
    "Readers should cite the page identifier when referring to this record in tickets.",
    "The facts section lists every stored attribute of the record in plain sentences.",
    "Automated checks confirm that each reference on this page points at an existing record.",
]
SUFFIXES = [" North", " East", " West", " Annex", " Plaza", " II", " Central", " South"]
_FACT = re.compile(r"^The (?P<field>[a-z0-9 ]+) of this (?P<entity>[a-z0-9 ]+) is (?P<value>.*)\.$")
_BACKLINKS = re.compile(r"^(?P<plural>[A-Za-z0-9 ]+) whose (?P<field>[a-z0-9 ]+) is this [a-z0-9 ]+: (?P<items>.*)\.$")
_LINK = re.compile(r"(?P<title>[^;]+?) \(page (?P<page>p\d+)\)")


@dataclass
class PageRecord:
    """A page before rendering: the row it describes (None for a distractor), its facts and its links."""

    entity: str
    row_id: int | None
    title: str
    facts: dict[str, Any]
    links: dict[str, int]
    """Reference field -> referenced row id."""
    page_id: str = ""


@dataclass
class ParsedPage:
    """What a reader takes from an opened page's text: its entity, facts, forward links and backlinks."""

    entity: str = ""
    facts: dict[str, str] | None = None
    backlinks: dict[tuple[str, str], list[str]] | None = None
    """(plural words, field words) -> page ids of the rows that reference this one through that field."""


def parse_page_text(text: str) -> ParsedPage:
    """Facts and backlinks of page text (one or several parts): the format `render_page` writes."""
    parsed = ParsedPage(facts={}, backlinks={})
    for line in text.splitlines():
        if m := _FACT.match(line):
            parsed.entity = m["entity"]
            parsed.facts[m["field"]] = m["value"]
        elif m := _BACKLINKS.match(line):
            pages = [link["page"] for link in _LINK.finditer(m["items"])]
            parsed.backlinks.setdefault((m["plural"].lower(), m["field"]), []).extend(pages)
    return parsed


def link_target(value: str) -> str | None:
    """The page id a forward-link fact points at ("Elm Street (page p00042)" -> "p00042")."""
    m = _LINK.fullmatch(value)
    return m["page"] if m else None


def entity_fields(spec: EntitySpec) -> list[tuple[str, str]]:
    """(field, type) of an entity's scalar columns, status included (references excluded)."""
    out = [(f.name, f.type) for f in spec.fields if f.type != "ref"]
    if spec.status:
        out.append((spec.status.field, "enum"))
    return out


def references(domain: Domain) -> list[tuple[str, str, str]]:
    """Every foreign key of the domain as (entity, field, referenced entity)."""
    return [(e.name, f.name, f.ref) for e in domain.spec.entities for f in e.fields if f.type == "ref" and f.ref]


def _title(spec: EntitySpec, row: dict[str, Any]) -> str:
    label = row.get(spec.label) if spec.label else None
    return f"{words(spec.name).title()} {fmt(label) if label is not None else row['id']}"


def _similar(label: str, rng: random.Random) -> str:
    """A label one small change away: one digit changed, else a place-like suffix added."""
    digits = [i for i, c in enumerate(label) if c.isdigit()]
    if digits:
        i = rng.choice(digits)
        return label[:i] + str((int(label[i]) + rng.randrange(1, 10)) % 10) + label[i + 1:]
    return label + rng.choice(SUFFIXES)


def _chunks(lines: list[str], size: int) -> list[str]:
    parts, current = [], ""
    for line in lines:
        if current and len(current) + len(line) + 1 > size:
            parts.append(current)
            current = ""
        current += line + "\n"
    return [*parts, current] if current else parts


class Corpus:
    """Pages of one database in an in-memory SQLite store with an FTS5 (BM25) index; read-only once built."""

    def __init__(self, domain: Domain, db: sqlite3.Connection, config: CorpusConfig):
        self.domain, self.config = domain, config
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        self.conn.executescript(
            "CREATE TABLE page (page_id TEXT PRIMARY KEY, title TEXT, entity TEXT, row_id INTEGER, facts TEXT, "
            "n_parts INTEGER);"
            "CREATE TABLE part (page_id TEXT, part INTEGER, text TEXT, PRIMARY KEY (page_id, part));"
            "CREATE VIRTUAL TABLE page_fts USING fts5(page_id UNINDEXED, title, body);")
        self._build(db)

    def _records(self, db: sqlite3.Connection, rng: random.Random) -> list[PageRecord]:
        records = []
        for name in self.domain.entity_order():
            spec = self.domain.entities[name]
            refs = [f.name for f in spec.fields if f.type == "ref"]
            rows = [decode_row(spec, r) for r in db.execute(f'SELECT * FROM "{name}" ORDER BY "id"')]
            real = [PageRecord(name, row["id"], _title(spec, row), {f: row[f] for f, _ in entity_fields(spec)},
                               {f: row[f] for f in refs if row[f] is not None}) for row in rows]
            records += real
            for original in rng.sample(real, round(len(real) * self.config.distractor_rate)):
                facts = {f: (rng.choice(rows)[f] if rng.random() < 0.5 else v) for f, v in original.facts.items()}
                row = {**facts, "id": original.row_id}
                if spec.label in facts:
                    row[spec.label] = facts[spec.label] = _similar(fmt(original.facts[spec.label]), rng)
                records.append(PageRecord(name, None, _title(spec, row), facts, original.links))
        return records

    def _build(self, db: sqlite3.Connection) -> None:
        rng = random.Random(self.config.seed)
        records = self._records(db, rng)
        for i, n in enumerate(rng.sample(range(len(records)), len(records))):
            records[i].page_id = f"p{n:05d}"
        by_row = {(r.entity, r.row_id): r for r in records if r.row_id is not None}
        backlinks: dict[tuple[str, int], dict[tuple[str, str], list[PageRecord]]] = {}
        for r in records:
            if r.row_id is None:
                continue
            for field, target in r.links.items():
                ref = next(f.ref for f in self.domain.entities[r.entity].fields if f.name == field)
                backlinks.setdefault((ref, target), {}).setdefault((r.entity, field), []).append(r)
        for r in records:
            lines = self.render_page(r, by_row, backlinks.get((r.entity, r.row_id), {}) if r.row_id else {}, rng)
            parts = _chunks(lines, self.config.part_chars)
            self.conn.execute("INSERT INTO page VALUES (?, ?, ?, ?, ?, ?)",
                              (r.page_id, r.title, r.entity, r.row_id, json.dumps(r.facts, default=str), len(parts)))
            self.conn.executemany("INSERT INTO part VALUES (?, ?, ?)",
                                  [(r.page_id, i + 1, p) for i, p in enumerate(parts)])
            self.conn.execute("INSERT INTO page_fts VALUES (?, ?, ?)", (r.page_id, r.title, "\n".join(lines[1:])))
        self.conn.execute("CREATE VIRTUAL TABLE page_vocab USING fts5vocab(page_fts, 'row')")
        self.common = {t for (t,) in self.conn.execute("SELECT term FROM page_vocab WHERE doc > ?", (len(records) // 2,))}
        self.conn.commit()

    def render_page(self, r: PageRecord, by_row: dict[tuple[str, int], PageRecord],
                    backlinks: dict[tuple[str, str], list[PageRecord]], rng: random.Random) -> list[str]:
        """A page's lines: title, a description, one sentence per fact and link, backlinks, neutral notes."""
        spec = self.domain.entities[r.entity]
        noun = words(r.entity)
        lines = [r.title, f"{r.title} is a {noun} in the records of {self.domain.spec.title}. {spec.description}",
                 "", "Facts"]
        lines += [f"The {words(f)} of this {noun} is {fmt(v)}." for f, v in r.facts.items()]
        if r.links:
            lines += ["", "Related pages"]
            for field, target in r.links.items():
                ref = next(f.ref for f in spec.fields if f.name == field)
                page = by_row[(ref, target)]
                lines.append(f"The {words(field.removesuffix('_id'))} of this {noun} is {page.title} "
                             f"(page {page.page_id}).")
        if backlinks:
            lines += ["", "Linked from"]
            for (child, field), pages in sorted(backlinks.items()):
                items = "; ".join(f"{p.title} (page {p.page_id})" for p in pages)
                plural = words(self.domain.entities[child].plural_name).capitalize()
                lines.append(f"{plural} whose {words(field.removesuffix('_id'))} is this {noun}: {items}.")
        if self.config.note_sentences:
            lines += ["", "Notes", " ".join(rng.sample(NOTES, min(self.config.note_sentences, len(NOTES))))]
        return lines

    def search(self, query: str, k: int) -> list[dict[str, str]]:
        """The `k` best pages for the words of `query` (any word may match; BM25, titles weighted 4x). Words on more
        than half the pages (stop words of this corpus) are dropped: they rank nothing and match everything."""
        terms = [t for t in re.findall(r"\w+", query.lower()) if t not in self.common][:48]
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in dict.fromkeys(terms))
        rows = self.conn.execute(
            "SELECT page_id, title, snippet(page_fts, 2, '', '', ' ... ', 16) FROM page_fts WHERE page_fts MATCH ? "
            "ORDER BY bm25(page_fts, 0.0, 4.0, 1.0), page_id LIMIT ?", (match, k)).fetchall()
        return [{"page": p, "title": t, "snippet": s} for p, t, s in rows]

    def page(self, page_id: str) -> tuple[str, int] | None:
        """(title, number of parts) of a page, None if there is no such page."""
        row = self.conn.execute("SELECT title, n_parts FROM page WHERE page_id = ?", (page_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def part(self, page_id: str, part: int) -> str | None:
        row = self.conn.execute("SELECT text FROM part WHERE page_id = ? AND part = ?", (page_id, part)).fetchone()
        return row[0] if row else None

    def text(self, page_id: str) -> str:
        """A page's whole text (all parts)."""
        return "".join(t for (t,) in self.conn.execute(
            "SELECT text FROM part WHERE page_id = ? ORDER BY part", (page_id,)))

    def page_of(self, entity: str, row_id: int) -> str:
        """The page id of a database row."""
        return self.conn.execute("SELECT page_id FROM page WHERE entity = ? AND row_id = ?",
                                 (entity, row_id)).fetchone()[0]

    def pages_of(self, entity: str) -> list[tuple[str, int | None, dict[str, Any]]]:
        """(page id, row id or None for a distractor, facts) of every page about `entity`."""
        return [(p, r, json.loads(f)) for p, r, f in self.conn.execute(
            "SELECT page_id, row_id, facts FROM page WHERE entity = ? ORDER BY page_id", (entity,))]

    def stats(self) -> dict[str, float]:
        """Page count, distractor count and mean page length in characters."""
        n, distractors = self.conn.execute("SELECT COUNT(*), SUM(row_id IS NULL) FROM page").fetchone()
        chars = self.conn.execute("SELECT SUM(LENGTH(text)) FROM part").fetchone()[0]
        return {"pages": n, "distractors": distractors, "mean_chars": chars / n}


def corpus_for(record: EnvironmentRecord) -> Corpus:
    """The corpus of a search environment record: its underlying tool-use environment's database rendered with the
    record's `params["corpus"]` config; built once per process per (domain, data seed, config)."""
    config = CorpusConfig.model_validate(record.params.get("corpus", {}))
    return _cached_corpus(record.domain, record.spec, record.data_seed, record.initial_hash, config.model_dump_json())


@lru_cache(maxsize=4)
def _cached_corpus(domain: str, spec: str | None, data_seed: int, initial_hash: str | None, config_json: str) -> Corpus:
    tool_record = EnvironmentRecord(id="corpus", domain=domain, spec=spec, data_seed=data_seed, tools=[],
                                    initial_hash=initial_hash)
    env = Environment.from_record(tool_record)
    try:
        return Corpus(env.domain, env.reader, CorpusConfig.model_validate_json(config_json))
    finally:
        env.close()
