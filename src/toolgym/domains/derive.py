"""Mechanical tools derived from entities: get, find-by-unique, list-by-reference, search, create, update, transitions."""

from __future__ import annotations

from toolgym.domains.model import Param, Tool
from toolgym.domains.spec import EntitySpec, FieldSpec

PAGE_PARAMS = (
    Param("limit", "int", "Page size (default 20, at most 100).", required=False, min=1, max=100),
    Param("offset", "int", "Rows to skip, for paging.", required=False, min=0, max=100000),
)


def row_outputs(entity: EntitySpec) -> frozenset[str]:
    """Semantic types a row of `entity` carries: its id, its fields, and the ids it references."""
    out = {f"{entity.name}.id"}
    for f in entity.fields:
        out.add(f"{f.ref}.id" if f.type == "ref" else f"{entity.name}.{f.name}")
    if entity.status:
        out.add(f"{entity.name}.{entity.status.field}")
    return frozenset(out)


def field_param(entity: EntitySpec, f: FieldSpec, required: bool, name: str | None = None) -> Param:
    """A parameter that carries a value of field `f` (a reference becomes the referenced entity's id)."""
    if f.type == "ref":
        return Param(name or f.name, "int", f.description or f"id of the {f.ref}", f"{f.ref}.id",
                     required=required, knowable=False)
    typ = "str" if f.type == "enum" and not f.values else f.type
    return Param(name or f.name, typ, f.description or f.name.replace("_", " "), f"{entity.name}.{f.name}",
                 required=required, knowable=True, values=tuple(f.values) if f.values else None, gen=f.gen)


def id_param(entity: EntitySpec) -> Param:
    return Param(f"{entity.name}_id", "int", f"id of the {entity.name}", f"{entity.name}.id", knowable=False)


def _words(name: str) -> str:
    return name.replace("_", " ")


def derive_tools(entity: EntitySpec) -> list[Tool]:
    """All derived tools of one entity, with default intent templates (overridable in `entity.intents`)."""
    e, plural, outs = entity.name, entity.plural_name, row_outputs(entity)
    ref = f"{{{e}_id}}"
    tools = [Tool(f"get_{e}", "get", f"Get one {_words(e)} by id. {entity.description}".strip(), (id_param(entity),),
                  outs, f"look up {ref}", entity=e)]
    for f in entity.fields:
        if f.unique:
            p = field_param(entity, f, True)
            p = Param(p.name, p.type, p.description, p.semantic, True, f.knowable, p.values, gen=f.gen)
            tools.append(Tool(f"find_{e}_by_{f.name}", "find", f"Find the {_words(e)} whose {_words(f.name)} is given.",
                              (p,), outs, f"find the {_words(e)} with {_words(f.name)} {{{f.name}}}", entity=e,
                              field=f.name))
    for f in entity.fields:
        if f.type == "ref":
            tools.append(Tool(f"list_{plural}_by_{f.name.removesuffix('_id')}", "list",
                              f"List the {_words(plural)} of one {_words(f.ref or '')}.",
                              (field_param(entity, f, True), *PAGE_PARAMS), outs,
                              f"list the {_words(plural)} of {{{f.name}}}", entity=e, field=f.name, returns_list=True))
    searchable = [f for f in entity.fields if f.searchable]
    status = entity.status
    search_params = [field_param(entity, f, False) for f in searchable]
    if status:
        search_params.append(Param(status.field, "enum", f"{_words(e)} {status.field}", f"{e}.{status.field}",
                                   required=False, values=tuple(status.states)))
    if search_params:
        tools.append(Tool(f"search_{plural}", "search", f"Search {_words(plural)} by exact field values (all optional).",
                          (*search_params, *PAGE_PARAMS), outs, f"search for {_words(plural)}", entity=e,
                          returns_list=True))
    if entity.creatable:
        params = tuple(field_param(entity, f, not f.nullable) for f in entity.fields)
        listed = "; ".join(f"{_words(p.name.removesuffix('_id'))}: {{{p.name}}}" for p in params if p.required)
        tools.append(Tool(f"create_{e}", "create", f"Create a new {_words(e)}.", params, outs,
                          f"create a new {_words(e)} ({listed})", entity=e, writes=True))
    for f in entity.fields:
        if f.updatable:
            value = field_param(entity, f, True)
            tools.append(Tool(f"update_{e}_{f.name.removesuffix('_id')}", "update",
                              f"Change the {_words(f.name)} of a {_words(e)}.", (id_param(entity), value), outs,
                              f"change the {_words(f.name)} of {ref} to {{{f.name}}}", entity=e, field=f.name,
                              writes=True))
    for t in status.transitions if status else []:
        allowed = ", ".join(t.from_)
        desc = t.description or f"{t.name.capitalize()} a {_words(e)}"
        tools.append(Tool(f"{t.name}_{e}", "transition", f"{desc} (allowed when {status.field} is {allowed}).",
                          (id_param(entity),), outs, t.intent or f"{_words(t.name)} {ref}", entity=e,
                          transition=t, writes=True))
    for tool in tools:
        tool.intent = entity.intents.get(tool.name, tool.intent)
    return tools
