"""The HTTP edge every blueprint shares: JSON errors, bounded bodies and parameters, download
headers, and logs that never carry a query string or a key."""

from __future__ import annotations

import json
import logging

import azure.functions as func
import pytest

from functions.http_edge import api_errors, attachment, query_int, read_json
from shared.contract.errors import InvalidRequest, PayloadTooLarge


def request(url: str = "http://host/api/x", body: bytes = b"",
            params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest("POST", url, body=body, params=params or {})


def test_an_unexpected_failure_is_a_json_500_logged_without_query_or_key(caplog):
    @api_errors
    def broken(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("bug")

    with caplog.at_level(logging.ERROR, logger="batchfn.http"):
        answer = broken(request("http://host/api/jobs/j1?code=SECRET-KEY&x=1"))
    assert answer.status_code == 500
    assert json.loads(answer.get_body())["error"]["code"] == "internal_error"
    assert "POST /api/jobs/j1" in caplog.text and "SECRET" not in caplog.text


def test_a_known_error_is_its_json_status():
    @api_errors
    def refusing(req: func.HttpRequest) -> func.HttpResponse:
        raise InvalidRequest("no", code="invalid_thing")

    answer = refusing(request())
    assert answer.status_code == 400
    assert json.loads(answer.get_body()) == {"error": {"code": "invalid_thing", "message": "no"}}


@pytest.mark.parametrize("body", [
    b"", b"   ", b"[]", b"1", b"null", b"{bad", b"\xff", b'{"a": NaN}', b'{"a": Infinity}',
    b"[" * 5000 + b"]" * 5000, b'{"a":' + b"[" * 33 + b"]" * 33 + b"}",
    b'{"a": 1' + b"0" * 5000 + b"}",
])
def test_bodies_that_are_not_a_json_object_within_bounds_are_400(body):
    with pytest.raises(InvalidRequest) as refused:
        read_json(request(body=body))
    assert refused.value.code == "invalid_json"


def test_body_size_and_depth_limits():
    assert read_json(request(body=b'{"a":' + b"[" * 31 + b"]" * 31 + b"}")) == {
        "a": json.loads(b"[" * 31 + b"]" * 31)}
    with pytest.raises(PayloadTooLarge):
        read_json(request(body=b'{"a": "' + b"x" * 100 + b'"}'), max_bytes=64)


def test_query_numbers_are_whole_and_in_range():
    assert query_int(request(params={"top": "5"}), "top", minimum=1, maximum=10) == 5
    assert query_int(request(), "top", minimum=1, maximum=10) is None
    for value in ("0", "11", "1.5", "1e3", "x", "9" * 5000, "-1", "x" * 300):
        with pytest.raises(InvalidRequest):
            query_int(request(params={"top": value}), "top", minimum=1, maximum=10)


def test_download_names_are_safe_in_the_header():
    assert attachment("predictions.csv") == (
        "attachment; filename=\"predictions.csv\"; filename*=UTF-8''predictions.csv")
    header = attachment('résumé "final".csv')
    assert header.isascii() and '\\"' not in header and "\n" not in header
    assert header.endswith("UTF-8''r%C3%A9sum%C3%A9%20%22final%22.csv")
    assert 'filename="r_sum_ _final_.csv"' in header
