"""Domain specs: built-ins are big enough; broken specs report every problem with its YAML path, nothing half-built."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from toolgym.domains import SpecError, builtin_names, compile_spec, load_domain
from toolgym.domains.registry import BUILTIN_DIR
from toolgym.rl.switchboard import SPEC as SWITCHBOARD_SPEC

from conftest import DOMAINS


def test_at_least_eight_builtin_domains_each_with_sixty_tools():
    assert len(builtin_names()) >= 8
    for name in builtin_names():
        d = load_domain(name)
        assert len(d.tools) >= 60, name
        assert sum(t.kind == "action" for t in d.tools.values()) >= 5, name
        assert sum(1 for e in d.spec.entities if e.persona) == 1, name


@pytest.mark.parametrize("name", DOMAINS)
def test_every_tool_schema_is_openai_function_shaped(name):
    for tool in load_domain(name).tools.values():
        schema = tool.openai_schema()
        fn = schema["function"]
        assert schema["type"] == "function" and fn["name"] == tool.name
        assert set(fn["parameters"]["required"]) <= set(fn["parameters"]["properties"])
        assert fn["parameters"]["additionalProperties"] is False


def _food() -> dict:
    return yaml.safe_load((BUILTIN_DIR / "food_delivery.yaml").read_text())


def test_broken_spec_reports_every_problem_with_its_path():
    raw = _food()
    raw["entities"][2]["fields"][0]["ref"] = "restaurnt"          # unknown entity in a reference
    raw["actions"][0]["effects"][0]["values"]["totl"] = 1           # effect on a missing field
    raw["actions"][1]["load"][0]["entity"] = "ordr"                 # load of an unknown entity
    raw["actions"][2]["params"][1]["ref"] = "promo_code.nope"       # parameter typed by a missing field
    with pytest.raises(SpecError) as err:
        compile_spec(raw)
    paths = {p.path for p in err.value.problems}
    assert "entities[2].fields[0].ref" in paths
    assert "actions[0].effects[0].values.totl" in paths
    assert "actions[1].load[0].entity" in paths
    assert "actions[2].params[1].ref" in paths
    assert len(err.value.problems) >= 4


def test_schema_errors_carry_yaml_paths():
    raw = _food()
    raw["entities"][0]["fields"][1]["type"] = "text"
    del raw["actions"][0]["intent"]
    with pytest.raises(SpecError) as err:
        compile_spec(raw)
    paths = {p.path for p in err.value.problems}
    assert "entities[0].fields[1].type" in paths
    assert "actions[0].intent" in paths


def test_unreachable_tool_is_reported():
    raw = _food()
    raw["entities"] = [e for e in raw["entities"] if e["name"] != "promo_code"] + [{
        "name": "voucher", "description": "no way to find one", "rows": 5, "creatable": False,
        "fields": [{"name": "amount", "type": "float"}]}]
    raw["actions"] = [a for a in raw["actions"] if a["name"] != "apply_promo_code"]
    with pytest.raises(SpecError) as err:
        compile_spec(raw)
    assert any("unreachable tool 'get_voucher'" in p.message for p in err.value.problems)


def test_reference_cycles_and_bad_states_are_rejected():
    raw = _food()
    raw["entities"][1]["fields"].append({"name": "favourite_item_id", "type": "ref", "ref": "menu_item"})
    raw["entities"][0]["status"]["initial"] = "pending"
    raw["entities"][0]["status"]["transitions"][0]["to"] = "frozen"
    with pytest.raises(SpecError) as err:
        compile_spec(raw)
    text = str(err.value)
    assert "reference cycle" in text
    assert "entities[0].status.initial" in text
    assert "'frozen' is not a state" in text


def test_compiling_a_broken_spec_leaves_nothing_behind(tmp_path: Path):
    raw = _food()
    good = compile_spec(copy.deepcopy(raw))
    raw["actions"][0]["require"][0]["left"] = "$nobody.status"
    with pytest.raises(SpecError):
        compile_spec(raw)
    assert "place_order" in good.tools   # the earlier compile is untouched; no partial Domain is returned


def test_records_of_a_custom_domain_find_their_spec_file():
    from toolgym.envs.environment import Environment, EnvironmentRecord

    spec = SWITCHBOARD_SPEC
    env = Environment(load_domain(str(spec)), ["red", "blue", "get_press"], env_id="custom")
    record = EnvironmentRecord.model_validate_json(env.record().model_dump_json())
    assert record.domain == "switchboard" and record.spec == str(spec.resolve())
    rebuilt = Environment.from_record(record)
    assert rebuilt.call("red").ok and rebuilt.tool_names == env.tool_names
    builtin = Environment(load_domain("bank"), sorted(load_domain("bank").tools)[:3])
    assert builtin.record().spec is None
