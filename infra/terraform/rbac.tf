# Role assignments: the app's identity on its storage account and Application Insights,
# and optionally a user (the deployer) with the same storage data roles.
#
# Storage Blob Data Owner includes
# Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action, so the app
# can sign the user-delegation SAS URLs its upload grants hand out (shared/assets.py,
# shared/jobs/uploads.py) without the separate Storage Blob Delegator role.

locals {
  storage_data_roles = toset([
    "Storage Blob Data Owner",
    "Storage Queue Data Contributor",
    # Durable Functions' Azure Storage provider keeps instance and history tables.
    "Storage Table Data Contributor",
  ])
}

resource "azurerm_role_assignment" "app_storage" {
  for_each             = local.storage_data_roles
  scope                = azurerm_storage_account.main.id
  role_definition_name = each.value
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "app_metrics_publisher" {
  scope                = azurerm_application_insights.main.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "user_storage" {
  for_each             = var.principal_id == "" ? toset([]) : local.storage_data_roles
  scope                = azurerm_storage_account.main.id
  role_definition_name = each.value
  principal_id         = var.principal_id
  principal_type       = var.principal_type
}
