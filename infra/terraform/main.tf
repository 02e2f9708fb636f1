# batchfn in Azure: one code base as two Function apps over one storage account.
#   control: Flex Consumption (HTTP API, orchestration, blob drop), BATCHFN_ROLE=control;
#   scoring: Azure Container Apps with a serverless GPU workload profile (kind: functionapp,
#            the image of infra/docker/Dockerfile), BATCHFN_ROLE=scoring.
# Each app runs as its own user-assigned identity with least-privilege roles; every
# connection is identity based (the storage account refuses keys).
# The same deployment as infra/bicep; see docs/deploy-azure.md.

terraform {
  required_version = ">= 1.6"
  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.47+: storage queues by storage_account_id (management plane, no shared key needed).
      version = ">= 4.47, < 5.0"
    }
    # ARM resources as Bicep declares them: the Flex app (azurerm's resource injects an
    # AzureWebJobsStorage setting), the Container Apps environment with serverless GPU
    # profiles and the scoring app (azurerm_container_app has no `kind`).
    azapi = {
      source  = "Azure/azapi"
      version = ">= 2.2, < 3.0"
    }
  }
}

provider "azurerm" {
  features {
    storage {
      # The account refuses shared keys and its containers and queues are managed through
      # ARM (storage_account_id): azurerm makes no data-plane call on it, so neither a key
      # nor the deployer's network path to the data plane is needed.
      data_plane_available = false
    }
  }
  # Null falls back to ARM_SUBSCRIPTION_ID / the az CLI's current subscription.
  subscription_id = var.subscription_id
  # Should a data-plane call be made after all, with Entra ID (shared keys are off).
  storage_use_azuread = true
}

provider "azapi" {
  subscription_id = var.subscription_id
}

data "azurerm_client_config" "current" {}

locals {
  tags  = { "azd-env-name" = var.environment_name, application = "batchfn" }
  token = substr(sha1("${data.azurerm_client_config.current.subscription_id}/${var.environment_name}/${var.location}"), 0, 13)
  names = {
    resource_group             = var.resource_group_name != "" ? var.resource_group_name : "rg-${var.environment_name}"
    control_identity           = "id-batchfn-${local.token}"
    scoring_identity           = "id-batchfn-scoring-${local.token}"
    storage                    = "stbatchfn${local.token}"
    log_analytics              = "log-batchfn-${local.token}"
    app_insights               = "appi-batchfn-${local.token}"
    plan                       = "plan-batchfn-${local.token}"
    function_app               = "func-batchfn-${local.token}"
    system_topic               = "evgt-batchfn-${local.token}"
    events_topic               = "evgt-batchfn-jobs-${local.token}"
    registry                   = "crbatchfn${local.token}"
    container_apps_environment = "cae-batchfn-${local.token}"
    scoring_app                = "ca-scoring-${local.token}"
  }
  deployment_container_name = "app-package-${substr(local.token, 0, 12)}"
}

resource "azurerm_resource_group" "main" {
  name     = local.names.resource_group
  location = var.location
  tags     = local.tags
}

# One identity per app: each app's storage connections, registry pulls and telemetry
# authenticate with it (roles in rbac.tf).
resource "azurerm_user_assigned_identity" "control" {
  name                = local.names.control_identity
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "scoring" {
  name                = local.names.scoring_identity
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}
