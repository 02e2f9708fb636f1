"""CKV_BATCHFN_4: azurerm makes no data-plane call on a storage account without shared keys.

The account refuses shared keys and is managed through ARM (storage_account_id), so the
provider's `features.storage.data_plane_available` is false: a plan needs neither a key
nor the deployer's network path to the account's data plane.
"""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.provider.base_check import BaseProviderCheck
from checkov.terraform.checks.provider.registry import provider_registry

ID = "CKV_BATCHFN_4"


def _first(value: Any) -> Any:
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


class StorageDataPlaneOff(BaseProviderCheck):
    def __init__(self) -> None:
        super().__init__(name="Ensure azurerm's storage data plane is off (shared keys are off)",
                         id=ID, categories=(CheckCategories.GENERAL_SECURITY,),
                         supported_provider=("azurerm",))

    def scan_provider_conf(self, conf: dict[str, Any]) -> CheckResult:
        features = _first(conf.get("features", {}))
        storage = _first(features.get("storage", {})) if isinstance(features, dict) else {}
        if isinstance(storage, dict) and _first(storage.get("data_plane_available")) is False:
            return CheckResult.PASSED
        return CheckResult.FAILED


if provider_registry.get_check_by_id(ID) is None:
    provider_check = StorageDataPlaneOff()
