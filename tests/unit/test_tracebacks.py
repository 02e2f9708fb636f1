"""Readable tracebacks: the user's frames kept, the host's trimmed, the size bounded.

The tracebacks are real: a scoring script is written to a folder of its own and called the
way the worker calls it, by a caller that stands for the host.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

from shared.scoring import tracebacks
from shared.scoring.tracebacks import FrameKinds, readable_traceback

SCRIPT = '''
import json
import helpers

def init():
    pass

def run(mini_batch):
    return helpers.parse(mini_batch)

def ping(n):
    return pong(n) if n < 30 else 1 / 0

def pong(n):
    return ping(n + 1)

def chained(mini_batch):
    try:
        return {}["missing"]
    except KeyError as exc:
        raise RuntimeError("could not score " + mini_batch[0]) from exc
'''
HELPERS = '''
import json

def parse(mini_batch):
    return [json.loads(open(path).read()) for path in mini_batch]
'''


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("user-code")
    (folder / "score.py").write_text(SCRIPT)
    (folder / "helpers.py").write_text(HELPERS)
    return folder


@pytest.fixture(scope="module")
def script(code: Path):
    sys.path.insert(0, str(code))
    try:
        spec = importlib.util.spec_from_file_location("score_tb", code / "score.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("helpers", None)


# This test module stands for the host: its frames are the ones to trim.
HOST = FrameKinds(host_roots=(str(Path(__file__).parent) + "/",))


def _host_calls(function, *args) -> str:
    try:
        function(*args)
    except BaseException:  # noqa: BLE001 - what the worker does
        return traceback.format_exc()
    raise AssertionError("expected a failure")


def test_keeps_user_frames_drops_host_frames_and_folds_library_frames(script, code, tmp_path):
    bad = tmp_path / "bad & <odd> \"name\".json"
    bad.write_text("{not json")
    full = _host_calls(script.run, [str(bad)])
    text = readable_traceback(full, HOST)
    assert text.startswith("Traceback (most recent call last):")
    assert __file__ in full and __file__ not in text  # the host's frame is gone
    assert f'File "{code / "score.py"}", line 9, in run' in text
    assert "return helpers.parse(mini_batch)" in text
    assert f'File "{code / "helpers.py"}", line 5, in parse' in text
    assert "json/__init__.py" not in text.splitlines()[-8:][0]  # folded
    assert "library frame" in text
    # The innermost frame is kept wherever it is: that is where the error was raised.
    assert 'json/decoder.py", line' in text
    assert text.splitlines()[-1].startswith("json.decoder.JSONDecodeError: Expecting")
    assert len(text) < len(full)


def test_chained_exceptions_keep_both_parts(script):
    text = readable_traceback(_host_calls(script.chained, ["a.png"]), HOST)
    assert "KeyError: 'missing'" in text
    assert "The above exception was the direct cause of the following exception:" in text
    assert text.count("Traceback (most recent call last):") == 2
    assert text.endswith("RuntimeError: could not score a.png")
    assert __file__ not in text


def test_deep_recursion_keeps_both_ends_within_the_frame_limit(script):
    text = readable_traceback(_host_calls(script.ping, 0), HOST)
    frames = [line for line in text.splitlines() if line.strip().startswith("File ")]
    assert len(frames) == tracebacks.MAX_FRAMES
    assert "more frames (recursion)" in text
    assert text.endswith("ZeroDivisionError: division by zero")
    assert "1 / 0" in text and frames[0].endswith("in ping") and frames[1].endswith("in pong")


def test_faulthandler_dump_keeps_the_thread_running_user_code(script, code):
    with tempfile.TemporaryFile("w+") as out:
        faulthandler.dump_traceback(out, all_threads=True)
        out.seek(0)
        dump = out.read()
    # A dump taken here shows this test module as the "user" code: pretend it is.
    kinds = FrameKinds(host_roots=(str(code) + "/",))
    text = readable_traceback(dump, kinds)
    assert text.startswith("Current thread 0x") or "Current thread 0x" in text
    assert f'File "{__file__}", line' in text
    assert "library frame" in text or "_pytest" not in text


def test_a_stack_dump_of_host_and_library_frames_only_keeps_the_current_thread():
    dump = (
        "Fatal Python error: Segmentation fault\n\n"
        "Thread 0x00007f01 (most recent call first):\n"
        '  File "/usr/lib/python3.11/threading.py", line 320 in wait\n\n'
        "Current thread 0x00007f02 (most recent call first):\n"
        '  File "/opt/host/shared/worker/serve.py", line 280 in _run\n'
        '  File "/usr/lib/python3.11/multiprocessing/process.py", line 108 in run\n'
    )
    kinds = FrameKinds(host_roots=("/opt/host/shared/",), library_roots=("/usr/lib/python3.11/",))
    text = readable_traceback(dump, kinds)
    assert text.startswith("Fatal Python error: Segmentation fault")
    assert "Current thread 0x00007f02" in text and "Thread 0x00007f01" not in text
    assert "worker.py" not in text
    assert 'multiprocessing/process.py", line 108 in run' in text  # innermost left


def test_user_frames_in_a_stack_dump_are_kept_and_other_threads_dropped():
    dump = (
        "Thread 0x00007f01 (most recent call first):\n"
        '  File "/usr/lib/python3.11/threading.py", line 320 in wait\n\n'
        "Current thread 0x00007f02 (most recent call first):\n"
        '  File "/usr/lib/python3.11/time.py", line 1 in sleep\n'
        '  File "/work/code/sleepy.py", line 12 in run\n'
        '  File "/opt/host/shared/worker/serve.py", line 280 in _run\n'
        '  File "/usr/lib/python3.11/multiprocessing/process.py", line 108 in run\n'
        '  File "/usr/lib/python3.11/multiprocessing/spawn.py", line 1 in main\n'
    )
    kinds = FrameKinds(host_roots=("/opt/host/shared/",), library_roots=("/usr/lib/python3.11/",))
    assert readable_traceback(dump, kinds).splitlines() == [
        "Current thread 0x00007f02 (most recent call first):",
        '  File "/usr/lib/python3.11/time.py", line 1 in sleep',
        '  File "/work/code/sleepy.py", line 12 in run',
        "  ... 2 library frames ...",
    ]


def test_syntax_error_on_import_shows_the_file_and_line_not_the_import_machinery(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def run(:\n    pass\n")
    spec = importlib.util.spec_from_file_location("broken_tb", broken)
    module = importlib.util.module_from_spec(spec)
    text = readable_traceback(_host_calls(spec.loader.exec_module, module), HOST)
    assert "importlib" not in text
    assert f'File "{broken}", line 1' in text
    assert text.splitlines()[-1].startswith("SyntaxError:")


def test_text_without_frames_is_kept_and_nothing_stays_none():
    assert readable_traceback("ValueError: boom") == "ValueError: boom"
    assert readable_traceback(None) is None
    assert readable_traceback("  \n") is None


def test_size_is_bounded_keeping_the_end():
    message = "ValueError: " + "x" * 50
    huge = "Traceback (most recent call last):\n" + "".join(
        f'  File "/work/code/m{i}.py", line {i}, in f{i}\n    {"y" * 400}\n' for i in range(15)
    ) + "\n".join([message] * 40)
    text = readable_traceback(huge, FrameKinds(host_roots=(), library_roots=()), max_chars=2000)
    assert len(text) <= 2000
    assert text.startswith("... (") and "characters cut" in text.splitlines()[0]
    assert text.endswith(message)
    assert all(len(line) <= tracebacks.MAX_LINE for line in text.splitlines())
    assert "... 20 lines ..." in text
