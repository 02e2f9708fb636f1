"""The throughput series: one sample per progress change, bounded, evenly thinned."""

from __future__ import annotations

from shared.control.throughput import MAX_SAMPLES, add_sample, throughput_view


def _at(second: int) -> str:
    return f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}.000Z"


def test_samples_accumulate_and_a_same_time_sample_replaces_the_newest():
    samples = add_sample([], _at(1), 3, 0)
    samples = add_sample(samples, _at(2), 5, 1)
    samples = add_sample(samples, _at(2), 6, 1)
    assert samples == [[_at(1), 3, 0], [_at(2), 6, 1]]
    assert add_sample(samples, None, 9, 9) == samples


def test_a_long_run_stays_bounded_keeping_its_first_and_newest_samples():
    samples: list = []
    for second in range(3000):
        samples = add_sample(samples, _at(second), second, 0)
        assert len(samples) <= MAX_SAMPLES
    assert samples[0] == [_at(0), 0, 0] and samples[-1] == [_at(2999), 2999, 0]
    gaps = [b[1] - a[1] for a, b in zip(samples, samples[1:], strict=False)]
    assert max(gaps[:-1]) <= 2 * min(gaps[:-1])  # spread evenly over the run
    assert len(samples) > MAX_SAMPLES // 2


def test_view_names_the_fields():
    view = throughput_view(_at(0), _at(1), 10, [[_at(1), 4, 1]])
    assert view == {"planned_at": _at(0), "first_completed_at": _at(1), "unit": "files",
                    "inputs": 10, "samples": [{"at": _at(1), "succeeded": 4, "failed": 1}]}
