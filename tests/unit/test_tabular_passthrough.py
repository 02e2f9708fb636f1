"""Input columns carried to the output, and failures reported from inside run()."""

from __future__ import annotations

import pandas as pd
import pytest

from shared.contract.errors import InvalidRequest
from shared.contract.settings import check_passthrough_columns
from shared.worker.encoding import LIST_COLUMN
from shared.worker.tabular import failures
from shared.worker.tabular.failures import FailedInput, NoCollector
from shared.worker.tabular.passthrough import PassthroughError, attach_passthrough

INPUTS = pd.DataFrame({"customer_id": ["c1", "c2", "c3"], "region": ["eu", "us", "eu"],
                       "amount": [10.0, 20.0, 30.0]}, index=[7, 8, 9])


def test_passthrough_columns_come_first_row_by_row():
    result = pd.DataFrame({"score": [0.1, 0.2, 0.3]})

    output = attach_passthrough(INPUTS, result, ["customer_id", "region"])

    assert output.to_dict("list") == {"customer_id": ["c1", "c2", "c3"],
                                      "region": ["eu", "us", "eu"], "score": [0.1, 0.2, 0.3]}


def test_a_list_return_becomes_the_result_column():
    output = attach_passthrough(INPUTS, ["a", "b", "c"], ["customer_id"])
    assert list(output.columns) == ["customer_id", LIST_COLUMN]
    assert output[LIST_COLUMN].tolist() == ["a", "b", "c"]


def test_a_column_run_returns_itself_is_kept_as_returned():
    result = pd.DataFrame({"customer_id": ["C1", "C2", "C3"], "score": [1, 2, 3]})
    output = attach_passthrough(INPUTS, result, ["customer_id", "region"])
    assert list(output.columns) == ["region", "customer_id", "score"]
    assert output["customer_id"].tolist() == ["C1", "C2", "C3"]


def test_a_missing_column_is_a_clear_error():
    with pytest.raises(PassthroughError, match=r"passthrough column\(s\) id, zone not in the "
                                               r"input; its columns are: customer_id, region, "
                                               r"amount"):
        attach_passthrough(INPUTS, [1, 2, 3], ["id", "region", "zone"])


def test_rows_that_do_not_line_up_are_a_clear_error():
    with pytest.raises(PassthroughError, match="run\\(\\) returned 2 rows for 3 input rows"):
        attach_passthrough(INPUTS, pd.DataFrame({"p": [1, 2]}), ["customer_id"])


@pytest.mark.parametrize(("value", "expected"), [
    (None, ()), ("", ()), ("id", ("id",)), (" id , region ", ("id", "region")),
    (["id", "region"], ("id", "region")),
])
def test_passthrough_setting_accepts_lists_and_comma_separated_text(value, expected):
    assert check_passthrough_columns(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    (5, "a list of column names"),
    (["id", ""], "non-empty strings"),
    (["id", 3], "non-empty strings"),
    ("id,id", "each column once"),
    ([f"c{i}" for i in range(65)], "at most 64 columns"),
    (["x" * 257], "at most 256 characters"),
])
def test_bad_passthrough_settings_are_refused(value, message):
    with pytest.raises(InvalidRequest, match=message) as caught:
        check_passthrough_columns(value)
    assert caught.value.code == "invalid_setting"


def test_failures_reported_inside_run_reach_the_collector_in_order():
    with failures.collecting() as collector:
        assert failures.is_collecting()
        failures.report(FailedInput.make("a.txt", "unsupported"))
        failures.report(FailedInput.make("b.csv", "bad value", row=4))
    assert not failures.is_collecting()
    assert [(f.file, f.row) for f in collector.items] == [("a.txt", None), ("b.csv", 4)]


def test_a_failure_without_a_collector_raises_its_message():
    with pytest.raises(NoCollector, match=r"^b.csv row 4 \(\+2 rows\): bad value$"):
        failures.report(FailedInput.make("b.csv", "bad value", row=4, rows=3))


def test_collectors_do_not_nest():
    with failures.collecting(), pytest.raises(RuntimeError, match="already being collected"):
        with failures.collecting():
            pass
    assert not failures.is_collecting()
