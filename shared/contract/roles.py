"""App roles: which part of batchfn one Functions app serves, from the app setting BATCHFN_ROLE.

One code base runs as two apps in Azure: `control` (HTTP API, orchestration, blob drop) on
Flex Consumption and `scoring` (the mini-batch queue triggers) on GPU hosts. `all` serves
both in one app, as devhost does by default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ROLE_SETTING = "BATCHFN_ROLE"
CONTROL = "control"
SCORING = "scoring"
ALL = "all"
ROLES = (CONTROL, SCORING, ALL)


class UnknownRole(ValueError):
    """BATCHFN_ROLE names no role: the app refuses to start rather than serve the wrong part."""


def app_role(env: Mapping[str, str] | None = None) -> str:
    """The role BATCHFN_ROLE names (case and surrounding blanks ignored); unset or empty: all."""
    env = os.environ if env is None else env
    raw = env.get(ROLE_SETTING, "")
    role = raw.strip().lower() or ALL
    if role not in ROLES:
        raise UnknownRole(f"{ROLE_SETTING}={raw[:100]!r} is not a batchfn role: expected "
                          f"{', '.join(ROLES)} (unset means {ALL})")
    return role


def serves(role: str, part: str) -> bool:
    """Whether an app of `role` serves `part` (control or scoring)."""
    return role in (part, ALL)
