"""CKV_BATCHFN_1: the GPU app scales on its mini-batch queue by a rule it declares.

Container Apps skips the azure-queue scale rule it would generate for a Functions app whose
storage connection uses a user-assigned identity, so a Functions app (kind functionapp)
must declare its own, identity based, with the generated ones turned off. Checked in Bicep
(Microsoft.App/containerApps) and Terraform (azapi_resource of that type); each framework's
runner loads this file, so each check registers only where it is not yet.
"""

from __future__ import annotations

from typing import Any

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck as BicepCheck
from checkov.bicep.checks.resource.registry import registry as bicep_registry
from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck as TfCheck
from checkov.terraform.checks.resource.registry import resource_registry as tf_registry

ID = "CKV_BATCHFN_1"
NAME = ("Ensure a Functions app on Container Apps declares an identity-based azure-queue "
        "scale rule (allowScalingRuleOverride) instead of relying on generated rules")
CONTAINER_APPS = "Microsoft.App/containerApps"


def _first(value: Any) -> Any:
    """Terraform's parser wraps attribute values in one-element lists."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def scale_rule_result(app: Any) -> CheckResult:
    """PASSED for a Functions app (kind functionapp) whose scale block turns the generated
    rules off and declares an azure-queue rule with a queue, an account and an identity,
    and no secret; UNKNOWN for any other container app."""
    app = _first(app)
    if not isinstance(app, dict) or _first(app.get("kind")) != "functionapp":
        return CheckResult.UNKNOWN
    template = _first(_first(app.get("properties", {})).get("template", {}))
    scale = _first(template.get("scale", {})) if isinstance(template, dict) else {}
    if not isinstance(scale, dict) or _first(scale.get("allowScalingRuleOverride")) is not True:
        return CheckResult.FAILED
    rules = scale.get("rules") or []
    if isinstance(rules, list) and len(rules) == 1 and isinstance(rules[0], list):
        rules = rules[0]
    for rule in rules if isinstance(rules, list) else []:
        custom = _first(_first(rule).get("custom", {})) if isinstance(_first(rule), dict) else {}
        if not isinstance(custom, dict) or _first(custom.get("type")) != "azure-queue":
            continue
        metadata = _first(custom.get("metadata", {}))
        if (isinstance(metadata, dict) and metadata.get("queueName")
                and metadata.get("accountName") and _first(custom.get("identity"))
                and not custom.get("auth")):
            return CheckResult.PASSED
    return CheckResult.FAILED


class BicepScaleRule(BicepCheck):
    def __init__(self) -> None:
        super().__init__(name=NAME, id=ID, categories=(CheckCategories.GENERAL_SECURITY,),
                         supported_resources=(CONTAINER_APPS,))

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        if "condition" in conf and "config" in conf:  # `resource ... = if (...) {...}`
            conf = conf["config"]
        return scale_rule_result(conf)


class TerraformScaleRule(TfCheck):
    def __init__(self) -> None:
        super().__init__(name=NAME, id=ID, categories=(CheckCategories.GENERAL_SECURITY,),
                         supported_resources=("azapi_resource",))

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        kind = str(_first(conf.get("type")) or "")
        if not kind.startswith(CONTAINER_APPS + "@"):
            return CheckResult.UNKNOWN
        return scale_rule_result(conf.get("body"))


if bicep_registry.get_check_by_id(ID) is None:
    bicep_check = BicepScaleRule()
if tf_registry.get_check_by_id(ID) is None:
    terraform_check = TerraformScaleRule()
