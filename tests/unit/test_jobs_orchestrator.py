"""The job orchestrator's decisions, driven with a recording context (no host needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import functions.orchestration as orchestration

ORCHESTRATOR = orchestration.batch_job._function.get_user_function().orchestrator_function


class RecordingContext:
    instance_id = "job-1"
    current_utc_datetime = datetime(2024, 1, 1, tzinfo=UTC)

    def __init__(self, state=None):
        self.state = state
        self.continued_with = None

    def get_input(self):
        return self.state

    def call_activity(self, name, input_=None):
        return ("activity", name, input_)

    def call_activity_with_retry(self, name, retry_options, input_=None):
        return ("activity", name, input_)

    def create_timer(self, fire_at):
        return ("timer", (fire_at - self.current_utc_datetime).total_seconds())

    def continue_as_new(self, state):
        self.continued_with = state


def _drive(context, answers):
    """Run the generator, answering activities from `answers[name]` (a list per name)."""
    steps = []
    generator = ORCHESTRATOR(context)
    value = None
    error = None
    try:
        while True:
            step = generator.throw(error) if error else generator.send(value)
            steps.append(step)
            value = answers[step[1]].pop(0) if step[0] == "activity" else None
            error, value = (value, None) if isinstance(value, Exception) else (None, value)
    except StopIteration as stop:
        return steps, stop.value


def test_plan_poll_then_finalize():
    steps, result = _drive(RecordingContext(), {
        "plan_job": [{"ok": True}],
        "check_progress": [{"action": "wait"}, {"action": "finalize", "outcome": "completed"}],
        "finalize_job": [{"status": "Completed"}],
    })
    assert [s[1] if s[0] == "activity" else "timer" for s in steps] == [
        "plan_job", "check_progress", "timer", "check_progress", "finalize_job"]
    assert steps[2][1] == 0.2
    assert steps[-1][2] == {"job": "job-1", "outcome": "completed"}
    assert result == {"status": "Completed"}


def test_failed_plan_ends_without_polling():
    steps, result = _drive(RecordingContext(), {"plan_job": [{"ok": False, "reason": "x"}]})
    assert len(steps) == 1 and result["ok"] is False


def test_continues_as_new_after_a_generation_of_polls():
    context = RecordingContext({"planned": True, "polls": 7})
    waits = [{"action": "wait"}] * orchestration.POLLS_PER_GENERATION
    steps, _ = _drive(context, {"check_progress": list(waits)})
    assert steps[0][1] == "check_progress"  # no replanning after continue_as_new
    assert context.continued_with == {"planned": True,
                                      "polls": 7 + orchestration.POLLS_PER_GENERATION}


def test_an_activity_failing_every_retry_fails_the_job():
    steps, result = _drive(RecordingContext(), {
        "plan_job": [{"ok": True}],
        "check_progress": [RuntimeError("storage down")],
        "fail_job": [{"status": "Failed"}],
    })
    assert steps[-1][1] == "fail_job" and "storage down" in steps[-1][2]["reason"]
    assert result == {"status": "Failed"}
