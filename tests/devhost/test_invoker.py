"""The invoker: sync and async functions, context, timeout, one log line per call."""

from __future__ import annotations

import asyncio
import logging
import time

import azure.functions as func
import pytest

from devhost.invoker import FunctionTimeoutError, Invoker, function_name


def test_sync_and_async_functions_and_context(caplog: pytest.LogCaptureFixture) -> None:
    def add(a: int, b: int) -> int:
        return a + b

    async def named(context: func.Context) -> str:
        return f"{context.function_name}:{context.invocation_id}"

    invoker = Invoker()
    caplog.set_level(logging.INFO, logger="devhost.invocations")
    try:
        assert asyncio.run(invoker.invoke(add, {"a": 1, "b": 2}, detail="d")) == 3
        assert asyncio.run(invoker.invoke(named, {}, invocation_id="abc")) == "named:abc"
    finally:
        invoker.shutdown()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("Executed function=add id=")
    assert "outcome=Succeeded" in lines[0] and "detail='d'" in lines[0]
    assert "function=named id=abc outcome=Succeeded" in lines[1]
    assert function_name(add) == "add"


def test_failure_is_logged_and_reraised(caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> None:
        raise KeyError("k")

    invoker = Invoker()
    try:
        with pytest.raises(KeyError):
            asyncio.run(invoker.invoke(fail, {}, invocation_id="x1"))
    finally:
        invoker.shutdown()
    [record] = [r for r in caplog.records if r.name == "devhost.invocations"]
    assert "function=fail id=x1 outcome=Failed" in record.getMessage()
    assert "error=KeyError" in record.getMessage()
    assert record.exc_info is not None
    assert invoker.active == 0


def test_function_timeout() -> None:
    async def slow_async() -> None:
        await asyncio.sleep(5)

    def slow_sync() -> None:
        time.sleep(0.6)

    invoker = Invoker(function_timeout=0.2)
    try:
        for slow in (slow_async, slow_sync):
            started = time.monotonic()
            with pytest.raises(FunctionTimeoutError):
                asyncio.run(invoker.invoke(slow, {}))
            assert time.monotonic() - started < 0.5
    finally:
        invoker.shutdown()
