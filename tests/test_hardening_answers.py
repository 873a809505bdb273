"""Class 5 of issue 17: hedged yes/no answers state nothing; tool arguments need real dates, and a boolean is not an
integer id."""

from __future__ import annotations

import pytest

from toolgym.domains import load_domain
from toolgym.envs.environment import Environment
from toolgym.tasks.verify import fact_in_answer


@pytest.mark.parametrize("fact,answer,stated", [
    ("yes", "Yes, it is refundable.", True),
    ("no", "No, the card is not active.", True),
    ("yes", "It could be yes or no.", False),
    ("no", "Yes. Or no.", False),
    ("true", "true/false", False),
    ("yes", "no", False),
    ("cancelled", "It is cancelled, not confirmed.", True),  # only yes/no facts have an opposite
    ("12.50", "Either 12.50 or 13", True),
])
def test_a_yes_no_fact_must_be_asserted_not_hedged(fact, answer, stated):
    assert fact_in_answer(fact, answer) is stated


@pytest.fixture(scope="module")
def bank():
    domain = load_domain("bank")
    env = Environment(domain, sorted(domain.tools))
    yield env
    env.close()


def _new_customer(**change):
    return {"name": "Ann Lee", "phone": "555-010-0101", "email": "ann@example.com", "address": "1 Main St",
            "city": "Springfield", "date_of_birth": "1990-02-28", "credit_score": 700, "segment": "standard", **change}


@pytest.mark.parametrize("bad_date", ["2023-02-30", "2023-13-01", "0000-01-01", "2023-00-10"])
def test_a_date_that_is_not_on_the_calendar_is_refused(bank, bad_date):
    before = bank.conn.execute('SELECT COUNT(*) FROM "customer"').fetchone()[0]
    result = bank.call("create_customer", _new_customer(date_of_birth=bad_date))
    assert not result.ok and "not a real date" in result.error and "date_of_birth" in result.error
    assert bank.conn.execute('SELECT COUNT(*) FROM "customer"').fetchone()[0] == before


def test_a_real_date_is_accepted(bank):
    result = bank.call("create_customer", _new_customer(email="leap@example.com", phone="555-010-0199",
                                                        date_of_birth="2000-02-29"))
    assert result.ok, result.error


@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_is_not_an_integer_id(bank, flag):
    result = bank.call("get_customer", {"customer_id": flag})
    assert not result.ok and "boolean is not a number" in result.error
    assert bank.call("get_customer", {"customer_id": 1}).ok
