"""The unittest runner the supervisor starts inside a sandbox (`python -c <this file> RESULT_FILE NAME...`): it runs
the named tests (modules, classes or methods) with the workspace first on sys.path and writes each test method's
outcome ("pass", "fail", "error", "skip") as JSON to RESULT_FILE. A name that cannot even be loaded is reported
under its own name as "error", with the reason under "_errors". Standard library only.
"""

import json
import sys
import traceback
import unittest


def flatten(suite):
    """The test cases of a (nested) suite."""
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def case_id(test):
    """The id of the test method a result belongs to (a subtest reports its parent's)."""
    return getattr(test, "test_case", test).id()


def main():
    result_file, names = sys.argv[1], sys.argv[2:]
    outcomes, errors = {}, {}
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name in names:
        try:
            loaded = loader.loadTestsFromName(name)
        except Exception:
            outcomes[name] = "error"
            errors[name] = traceback.format_exc(limit=3)[-2000:]
            continue
        for test in flatten(loaded):
            if type(test).__name__ == "_FailedTest":
                outcomes[name] = "error"
                errors[name] = str(getattr(test, "_exception", ""))[-2000:]
            else:
                outcomes[test.id()] = "pass"
                suite.addTest(test)
    result = unittest.TestResult()
    suite.run(result)
    for kind, items in (("fail", result.failures), ("error", result.errors),
                        ("fail", [(t, "unexpected success") for t in result.unexpectedSuccesses])):
        for test, text in items:
            outcomes[case_id(test)] = kind
            errors.setdefault(case_id(test), text[-2000:])
    for test, _ in result.skipped:
        if outcomes.get(case_id(test)) == "pass":
            outcomes[case_id(test)] = "skip"
    with open(result_file, "w") as f:
        json.dump({"outcomes": outcomes, "errors": errors}, f)


if __name__ == "__main__":
    main()
