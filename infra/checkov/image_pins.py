"""CKV_BATCHFN_2 and CKV_BATCHFN_3: the scoring image is built from pinned inputs.

The base image is named by digest (a tag moves), and every `pip install -r` installs a
lock with --require-hashes (a requirement without its hash could be any file).
"""

from __future__ import annotations

import re
from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.dockerfile.base_dockerfile_check import BaseDockerfileCheck
from checkov.dockerfile.registry import registry

BASE_ID = "CKV_BATCHFN_2"
HASHES_ID = "CKV_BATCHFN_3"
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}(\s|$)")
_PIP_FROM_FILE = re.compile(r"\bpip3? install\b[^&;|]*?\s-r\s")


class BaseImageDigest(BaseDockerfileCheck):
    def __init__(self) -> None:
        super().__init__(name="Ensure the base image is pinned by digest", id=BASE_ID,
                         categories=(CheckCategories.SUPPLY_CHAIN,),
                         supported_instructions=("FROM",))

    def scan_resource_conf(self, conf: list[Any]) -> tuple[CheckResult, list[Any] | None]:
        for instruction in conf:
            if not _DIGEST.search(instruction["value"]):
                return CheckResult.FAILED, [instruction]
        return CheckResult.PASSED, None


class LockedRequirements(BaseDockerfileCheck):
    def __init__(self) -> None:
        super().__init__(name="Ensure pip installs requirement files with --require-hashes",
                         id=HASHES_ID, categories=(CheckCategories.SUPPLY_CHAIN,),
                         supported_instructions=("RUN",))

    def scan_resource_conf(self, conf: list[Any]) -> tuple[CheckResult, list[Any] | None]:
        for instruction in conf:
            for command in re.split(r"&&|;|\|\|", instruction["value"]):
                if _PIP_FROM_FILE.search(command) and "--require-hashes" not in command:
                    return CheckResult.FAILED, [instruction]
        return CheckResult.PASSED, None


if registry.get_check_by_id(BASE_ID) is None:
    base_image_check = BaseImageDigest()
if registry.get_check_by_id(HASHES_ID) is None:
    hashes_check = LockedRequirements()
