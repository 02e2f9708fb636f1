# The Function App on a Flex Consumption plan (Linux, Python 3.11), running as the
# user-assigned identity. All storage connections are identity based: no keys anywhere.

resource "azurerm_service_plan" "main" {
  #checkov:skip=CKV_AZURE_225:Zone redundancy on Flex Consumption exists only in some regions and keeps instances running; batch jobs survive an instance loss through queue redelivery
  #checkov:skip=CKV_AZURE_211:FC1 is the only Flex Consumption SKU; it bills per execution, there is no larger tier to choose
  #checkov:skip=CKV_AZURE_212:Flex Consumption scales to zero by design; queue messages and Durable state carry work across instances
  name                = local.names.plan
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  os_type             = "Linux"
  sku_name            = "FC1"
  tags                = local.tags
}

locals {
  # The connection "AzureWebJobsStorage" is both the host's storage (Durable task hub, keys,
  # blob trigger receipts) and batchfn's own (shared/storage.py reads the same settings).
  storage_settings = {
    AzureWebJobsStorage__accountName     = azurerm_storage_account.main.name
    AzureWebJobsStorage__blobServiceUri  = azurerm_storage_account.main.primary_blob_endpoint
    AzureWebJobsStorage__queueServiceUri = azurerm_storage_account.main.primary_queue_endpoint
    AzureWebJobsStorage__tableServiceUri = azurerm_storage_account.main.primary_table_endpoint
    AzureWebJobsStorage__credential      = "managedidentity"
    AzureWebJobsStorage__clientId        = azurerm_user_assigned_identity.app.client_id
  }
  monitoring_settings = {
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${azurerm_user_assigned_identity.app.client_id};Authorization=AAD"
  }
}

resource "azurerm_function_app_flex_consumption" "app" {
  name                = local.names.function_app
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  service_plan_id     = azurerm_service_plan.main.id
  https_only          = true
  tags                = local.tags

  runtime_name           = "python"
  runtime_version        = "3.11"
  instance_memory_in_mb  = var.instance_memory_mb
  maximum_instance_count = var.maximum_instance_count

  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${azurerm_storage_account.main.primary_blob_endpoint}${azurerm_storage_container.deployment.name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.app.id

  # Publishing uses Entra ID (az / func with your login), never basic-auth credentials.
  webdeploy_publish_basic_authentication_enabled = false

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  site_config {
    minimum_tls_version                    = "1.2"
    http2_enabled                          = true
    application_insights_connection_string = azurerm_application_insights.main.connection_string
  }

  app_settings = merge(
    # The provider injects an AzureWebJobsStorage connection string setting unless one is
    # given; an empty one makes the host use the identity-based AzureWebJobsStorage__* set
    # (hashicorp/terraform-provider-azurerm#29149, the Azure-Samples Flex quickstarts do the same).
    { AzureWebJobsStorage = "" },
    local.storage_settings,
    local.monitoring_settings,
  )

  # The host reads its storage the moment the app starts: grant the roles first.
  depends_on = [
    azurerm_role_assignment.app_storage,
    azurerm_role_assignment.app_metrics_publisher,
  ]
}
