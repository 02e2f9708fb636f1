"""Which mini-batch queue this scoring app reads: the one of the scoring profile it serves.

An installation may deploy a scoring app per scoring profile (infra: `scoringProfiles`; a
compute's `size` picks its profile, contract/compute_spec.py). Such an app has the app
setting BATCHFN_SCORING_PROFILE and reads its profile's queue (`minibatches-<profile>`);
the main scoring app, and devhost, have none and read `minibatches`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from shared.contract.compute_spec import PROFILES
from shared.contract.layout import minibatch_queue_for

SCORING_PROFILE_SETTING = "BATCHFN_SCORING_PROFILE"


def served_queue(env: Mapping[str, str] | None = None) -> str:
    """The mini-batch queue of this scoring app; ValueError for an unknown profile."""
    env = os.environ if env is None else env
    profile = env.get(SCORING_PROFILE_SETTING, "").strip() or None
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"{SCORING_PROFILE_SETTING}={profile[:50]!r} is not a scoring "
                         f"profile: expected one of {', '.join(PROFILES)} (or none)")
    return minibatch_queue_for(profile)
