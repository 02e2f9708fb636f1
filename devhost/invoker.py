"""Calling user functions the way the Python worker does, with one log line per invocation."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import threading
import time
import typing
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import azure.functions as func

log = logging.getLogger("devhost.invocations")


class FunctionTimeoutError(TimeoutError):
    """The invocation ran past host.json's `functionTimeout`."""


def function_name(function: Any) -> str:
    """The Functions name of a registered function (or a plain callable's name)."""
    get_name = getattr(function, "get_function_name", None)
    if get_name is not None:
        return str(get_name())
    return str(getattr(function, "__name__", type(function).__name__))


def user_function(function: Any) -> Callable[..., Any]:
    """The callable behind a registered function (a plain callable is its own)."""
    get_user = getattr(function, "get_user_function", None)
    return get_user() if get_user is not None else function


class InvocationContext(func.Context):
    """The `context` argument the worker passes to functions that declare one."""

    def __init__(self, invocation_id: str, name: str, directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = name
        self._function_directory = directory
        self._thread_local_storage = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> threading.local:
        return self._thread_local_storage

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> func.TraceContext | None:
        return None

    @property
    def retry_context(self) -> func.RetryContext | None:
        return None


@functools.cache
def _wants_context(callable_: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(callable_).parameters
    except (TypeError, ValueError):
        return False
    parameter = parameters.get("context")
    if parameter is None:
        return False
    annotation = parameter.annotation
    if isinstance(annotation, str):  # `from __future__ import annotations`
        try:
            annotation = typing.get_type_hints(callable_).get("context", annotation)
        except Exception:  # noqa: BLE001 - unresolvable names: judge by the text
            return annotation.rsplit(".", 1)[-1] == "Context"
    return annotation is inspect.Parameter.empty or (
        isinstance(annotation, type) and issubclass(annotation, func.Context))


def default_thread_count() -> int:
    """The worker's pool size: PYTHON_THREADPOOL_THREAD_COUNT, else min(32, cpus + 4)."""
    configured = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return min(32, (os.cpu_count() or 1) + 4)


class Invoker:
    """Runs user functions: coroutines on the event loop, plain functions in a thread pool."""

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        function_timeout: float | None = None,
        function_directory: str = "",
    ) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers or default_thread_count(), thread_name_prefix="devhost-fn"
        )
        self._timeout = function_timeout
        self._directory = function_directory or os.getcwd()
        # Invocations started and not yet returned (a stuck sync one blocks a clean exit).
        self.active = 0

    async def invoke(
        self,
        function: Any,
        kwargs: dict[str, Any],
        *,
        detail: str = "",
        invocation_id: str | None = None,
    ) -> Any:
        """Call `function` with `kwargs`; log the outcome; return its value or re-raise."""
        name = function_name(function)
        target = user_function(function)
        invocation_id = invocation_id or str(uuid.uuid4())
        if "context" not in kwargs and _wants_context(target):
            kwargs = {**kwargs, "context": InvocationContext(invocation_id, name, self._directory)}
        started = time.perf_counter()
        self.active += 1
        try:
            if inspect.iscoroutinefunction(target):
                call = target(**kwargs)
            else:
                loop = asyncio.get_running_loop()
                call = loop.run_in_executor(self._executor, functools.partial(target, **kwargs))
            if self._timeout is None:
                result = await call
            else:
                try:
                    result = await asyncio.wait_for(call, self._timeout)
                except TimeoutError as exc:
                    raise FunctionTimeoutError(
                        f"{name} ran longer than functionTimeout ({self._timeout:g}s)"
                    ) from exc
        except BaseException as exc:
            elapsed = (time.perf_counter() - started) * 1000
            log.error(
                "Executed function=%s id=%s outcome=Failed duration_ms=%.1f error=%s detail=%r",
                name, invocation_id, elapsed, type(exc).__name__, detail,
                exc_info=not isinstance(exc, asyncio.CancelledError),
            )
            raise
        finally:
            self.active -= 1
        elapsed = (time.perf_counter() - started) * 1000
        log.info(
            "Executed function=%s id=%s outcome=Succeeded duration_ms=%.1f detail=%r",
            name, invocation_id, elapsed, detail,
        )
        return result

    def shutdown(self, wait: bool = True) -> None:
        """Stop the thread pool; with `wait`, after the running calls return."""
        self._executor.shutdown(wait=wait, cancel_futures=True)
