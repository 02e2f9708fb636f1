"""Chaos: 2,000-file jobs finish with every file exactly once in the output or the errors
report, whatever is killed meanwhile (harness.py says what and how).

`make test` runs the short form (CHAOS_ROUNDS unset: 3 rounds of 3 faults, every kind of
fault at least once); `make chaos` runs many rounds. CHAOS_SEED replays a run: the seed
picks the faults, their order and moments, the job names and so the script's failures.
CHAOS_FAULTS=kind,kind draws faults from those kinds only (harness.FAULT_KINDS). The seed
is printed first, the tally last.
"""

from __future__ import annotations

import functools
import os
import random
import sys
import threading
import time

from tests.chaos.harness import (
    FAULT_KINDS,
    FILES,
    INPUT_FOLDER,
    Faults,
    Tally,
    check_round,
    cluster_for,
    near_end,
    retried,
    wait_terminal,
)

SHORT_ROUNDS = 3
FAULTS_PER_ROUND = 3
ROUND_TIMEOUT = 300.0


def test_chaos_rounds_lose_and_duplicate_no_file(tmp_path_factory, worker_tmp, worker_python,
                                                 capsys):
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(10**9))
    rounds = int(os.environ.get("CHAOS_ROUNDS") or SHORT_ROUNDS)
    wanted = (os.environ.get("CHAOS_FAULTS") or ",".join(FAULT_KINDS)).split(",")
    kinds_drawn = [kind for kind in FAULT_KINDS if kind in wanted]
    assert kinds_drawn, f"CHAOS_FAULTS names none of {FAULT_KINDS}"
    rng = random.Random(seed)
    tally = Tally(seed)

    def say(text: str) -> None:
        with capsys.disabled():
            print(text, flush=True)

    say(f"\nchaos: seed {seed}, {rounds} rounds (replay: CHAOS_SEED={seed} make chaos)")
    with cluster_for(tmp_path_factory.mktemp("chaos-azurite"), worker_tmp,
                     worker_python or sys.executable, seed) as cluster:
        names = cluster.upload_inputs()
        # Every kind of fault comes once among the first ones, the rest at random.
        schedule = rng.sample(kinds_drawn, len(kinds_drawn))
        schedule += rng.choices(kinds_drawn, k=rounds * FAULTS_PER_ROUND - len(schedule))
        for number in range(rounds):
            kinds = schedule[number * FAULTS_PER_ROUND:(number + 1) * FAULTS_PER_ROUND]
            started = time.monotonic()
            # A name of the seed's: the script's fates depend on the job (chaos.py).
            job = retried(functools.partial(
                cluster.client.invoke, "chaos",
                f"azureml://datastores/workspaceblobstore/paths/{INPUT_FOLDER}",
                job_name=f"chaos-{seed}-{number + 1}"), "invoking")["name"]
            ended = threading.Event()
            faults = Faults(cluster, rng, kinds, say)
            injector = threading.Thread(target=faults.run, name="chaos-faults", args=(
                job, ended.is_set, functools.partial(near_end, cluster, job)))
            say(f"round {number + 1}: job {job}, faults {kinds}")
            injector.start()
            try:
                final = wait_terminal(cluster.client, job, ROUND_TIMEOUT)
            finally:
                ended.set()
                injector.join()
            result = check_round(cluster.client, job, final, names,
                                 tmp_path_factory.mktemp("chaos-output"))
            tally.rounds += 1
            tally.faults.update(faults.injected)
            tally.files_checked += FILES
            tally.in_output += result.in_output
            tally.in_errors += result.in_errors
            tally.lost += len(result.lost)
            tally.duplicated += len(result.duplicated)
            say(f"  {result.status} in {time.monotonic() - started:.0f}s: "
                f"{result.in_output} in output, {result.in_errors} in errors report, "
                f"lost {len(result.lost)}, duplicated {len(result.duplicated)}")
            assert not faults.errors, f"seed {seed} round {number + 1}: {faults.errors}"
            assert not result.lost and not result.duplicated, (
                f"seed {seed} round {number + 1} job {job} ({result.status}: {result.reason})"
                f": lost {result.lost[:10]}, duplicated {result.duplicated[:10]}")
            assert result.status == "Completed", (
                f"seed {seed} round {number + 1} job {job}: {result.status} {result.reason}")
    say(tally.line())
    assert tally.lost == tally.duplicated == 0
