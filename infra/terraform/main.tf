# batchfn in Azure: a Flex Consumption Function App over one storage account, with a
# user-assigned identity and identity-based connections only (the account refuses keys).
# The same deployment as infra/bicep; see docs/deploy-azure.md.

terraform {
  required_version = ">= 1.6"
  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.47+: storage queues by storage_account_id (management plane, no shared key needed).
      version = ">= 4.47, < 5.0"
    }
  }
}

provider "azurerm" {
  features {}
  # Null falls back to ARM_SUBSCRIPTION_ID / the az CLI's current subscription.
  subscription_id = var.subscription_id
  # The storage account has shared key access disabled: data-plane calls use Entra ID.
  storage_use_azuread = true
}

data "azurerm_client_config" "current" {}

locals {
  tags  = { "azd-env-name" = var.environment_name, application = "batchfn" }
  token = substr(sha1("${data.azurerm_client_config.current.subscription_id}/${var.environment_name}/${var.location}"), 0, 13)
  names = {
    resource_group = var.resource_group_name != "" ? var.resource_group_name : "rg-${var.environment_name}"
    identity       = "id-batchfn-${local.token}"
    storage        = "stbatchfn${local.token}"
    log_analytics  = "log-batchfn-${local.token}"
    app_insights   = "appi-batchfn-${local.token}"
    plan           = "plan-batchfn-${local.token}"
    function_app   = "func-batchfn-${local.token}"
    system_topic   = "evgt-batchfn-${local.token}"
  }
  deployment_container_name = "app-package-${substr(local.token, 0, 12)}"
}

resource "azurerm_resource_group" "main" {
  name     = local.names.resource_group
  location = var.location
  tags     = local.tags
}

# The identity the Function App runs as: host storage, app storage, deployment package and
# Application Insights all authenticate with it.
resource "azurerm_user_assigned_identity" "app" {
  name                = local.names.identity
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags
}
