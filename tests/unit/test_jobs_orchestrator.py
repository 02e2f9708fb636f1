"""The job orchestrator's decisions, driven with a recording context (no host needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import functions.orchestration as orchestration

ORCHESTRATOR = orchestration.batch_job._function.get_user_function().orchestrator_function


class FakeTask:
    """A timer or external-event task: completed by the driver, cancellable."""

    def __init__(self, kind, detail):
        self.kind, self.detail = kind, detail
        self.is_completed = False
        self.cancelled = False

    def cancel(self):
        assert not self.is_completed
        self.cancelled = True


class RecordingContext:
    instance_id = "job-1"
    current_utc_datetime = datetime(2024, 1, 1, tzinfo=UTC)

    def __init__(self, state=None):
        self.state = state
        self.continued_with = None
        self.timers = []

    def get_input(self):
        return self.state

    def call_activity(self, name, input_=None):
        return ("activity", name, input_)

    def call_activity_with_retry(self, name, retry_options, input_=None):
        return ("activity", name, input_)

    def create_timer(self, fire_at):
        timer = FakeTask("timer", (fire_at - self.current_utc_datetime).total_seconds())
        self.timers.append(timer)
        return timer

    def wait_for_external_event(self, name):
        return FakeTask("event", name)

    def task_any(self, tasks):
        return ("any", tasks)

    def continue_as_new(self, state):
        self.continued_with = state


def _drive(context, answers):
    """Run the generator, answering activities from `answers[name]` (a list per name) and
    each task_any from `answers["any"]` ("timer" or "event"; a timer fires by default)."""
    steps = []
    generator = ORCHESTRATOR(context)
    value = None
    error = None
    try:
        while True:
            step = generator.throw(error) if error else generator.send(value)
            if step[0] == "any":
                winner = (answers.get("any") or ["timer"]).pop(0)
                task = next(t for t in step[1] if t.kind == winner)
                task.is_completed = True
                steps.append(("wait", winner, step[1][0].detail))
                value = task
                continue
            steps.append(step)
            value = answers[step[1]].pop(0) if step[0] == "activity" else None
            error, value = (value, None) if isinstance(value, Exception) else (None, value)
    except StopIteration as stop:
        return steps, stop.value


DONE = {"action": "finalized", "status": "Completed", "reason": None}


def _names(steps):
    return [s[1] if s[0] == "activity" else f"{s[0]}:{s[1]}" for s in steps]


def test_plan_wait_check_then_finalize():
    steps, result = _drive(RecordingContext(), {
        "plan_job": [{"ok": True, "batches": 2}],
        "advance_job": [{"action": "wait"}, DONE],
    })
    # Nothing can be scored while planning: the first check waits for a timer or a hint.
    assert _names(steps) == ["plan_job", "wait:timer", "advance_job", "wait:timer",
                             "advance_job"]
    assert [s[2] for s in steps if s[0] == "wait"] == [0.1, 0.1]
    assert result == {"status": "Completed", "reason": None}


def test_an_empty_job_is_checked_at_once():
    steps, _ = _drive(RecordingContext(), {
        "plan_job": [{"ok": True, "batches": 0}],
        "advance_job": [DONE],
    })
    assert _names(steps) == ["plan_job", "advance_job"]


def test_a_shard_full_hint_ends_the_wait_and_cancels_the_timer():
    context = RecordingContext()
    steps, result = _drive(context, {
        "plan_job": [{"ok": True, "batches": 1}],
        "any": ["event"],
        "advance_job": [DONE],
    })
    assert _names(steps) == ["plan_job", "wait:event", "advance_job"]
    assert context.timers[0].cancelled
    assert result == {"status": "Completed", "reason": None}


def test_a_spent_hint_continues_as_new_after_its_check():
    context = RecordingContext({"planned": True, "polls": 3})
    steps, result = _drive(context, {
        "any": ["timer", "event"],
        "advance_job": [{"action": "wait"}] * 3,
    })
    assert _names(steps) == ["advance_job", "wait:timer", "advance_job", "wait:event",
                             "advance_job"]
    assert result is None and context.continued_with == {"planned": True, "polls": 5}


def test_failed_plan_ends_without_polling():
    steps, result = _drive(RecordingContext(), {"plan_job": [{"ok": False, "reason": "x"}]})
    assert len(steps) == 1 and result["ok"] is False


def test_continues_as_new_after_a_generation_of_polls():
    context = RecordingContext({"planned": True, "polls": 7})
    waits = [{"action": "wait"}] * orchestration.POLLS_PER_GENERATION
    steps, _ = _drive(context, {"advance_job": list(waits)})
    assert steps[0][1] == "advance_job"  # no replanning after continue_as_new
    assert context.continued_with == {"planned": True,
                                      "polls": 7 + orchestration.POLLS_PER_GENERATION}


def test_an_activity_failing_every_retry_fails_the_job():
    steps, result = _drive(RecordingContext(), {
        "plan_job": [{"ok": True}],
        "advance_job": [RuntimeError("storage down")],
        "fail_job": [{"status": "Failed"}],
    })
    assert steps[-1][1] == "fail_job" and "storage down" in steps[-1][2]["reason"]
    assert result == {"status": "Failed"}
