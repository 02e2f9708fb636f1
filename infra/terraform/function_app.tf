# The control app: a Function App on a Flex Consumption plan (Linux, Python 3.11) serving
# BATCHFN_ROLE=control (HTTP API, orchestration, blob drop; the scoring app runs the
# mini-batch queues on Container Apps), as the control identity. All storage connections are
# identity based: no keys anywhere.
#
# The app is the same Microsoft.Web/sites resource as infra/bicep/app/function-app.bicep,
# declared through azapi: azurerm_function_app_flex_consumption adds an AzureWebJobsStorage
# setting of its own (hashicorp/terraform-provider-azurerm#29149, #29693), which the host
# then reads instead of the identity-based AzureWebJobsStorage__* settings.

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
  # What the control role reads. The connection "AzureWebJobsStorage" is both the host's
  # storage (Durable task hub, keys, blob trigger receipts) and batchfn's own
  # (shared/storage/account.py reads the same settings).
  control_app_settings = {
    BATCHFN_ROLE                              = "control"
    BATCHFN_DATASTORES                        = var.datastores
    BATCHFN_EVENTGRID_ENDPOINT                = azurerm_eventgrid_topic.lifecycle.endpoint
    # The planner's caps on one job, checked before any of its mini-batches is sent.
    BATCHFN_MAX_FILES_PER_JOB                 = tostring(var.max_files_per_job)
    BATCHFN_MAX_ROWS_PER_JOB                  = tostring(var.max_rows_per_job)
    BATCHFN_MAX_MINI_BATCHES_PER_JOB          = tostring(var.max_mini_batches_per_job)
    BATCHFN_INPUT_ALIASES                     = var.input_aliases
    BATCHFN_SCORING_PROFILES                  = join(",", concat([local.main_scoring_profile], local.profile_apps))
    AzureWebJobsStorage__accountName          = azurerm_storage_account.main.name
    AzureWebJobsStorage__blobServiceUri       = azurerm_storage_account.main.primary_blob_endpoint
    AzureWebJobsStorage__queueServiceUri      = azurerm_storage_account.main.primary_queue_endpoint
    AzureWebJobsStorage__tableServiceUri      = azurerm_storage_account.main.primary_table_endpoint
    AzureWebJobsStorage__credential           = "managedidentity"
    AzureWebJobsStorage__clientId             = azurerm_user_assigned_identity.control.client_id
    APPLICATIONINSIGHTS_CONNECTION_STRING     = azurerm_application_insights.main.connection_string
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${azurerm_user_assigned_identity.control.client_id};Authorization=AAD"
  }
}

resource "azapi_resource" "function_app" {
  type      = "Microsoft.Web/sites@2024-04-01"
  name      = local.names.function_app
  parent_id = azurerm_resource_group.main.id
  location  = azurerm_resource_group.main.location
  tags      = local.tags

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.control.id]
  }

  body = {
    kind = "functionapp,linux"
    properties = {
      serverFarmId = azurerm_service_plan.main.id
      httpsOnly    = true
      siteConfig = {
        minTlsVersion = "1.2"
        ftpsState     = "Disabled"
        http20Enabled = true
      }
      functionAppConfig = {
        deployment = {
          storage = {
            type  = "blobContainer"
            value = "${azurerm_storage_account.main.primary_blob_endpoint}${azurerm_storage_container.deployment.name}"
            authentication = {
              type                           = "UserAssignedIdentity"
              userAssignedIdentityResourceId = azurerm_user_assigned_identity.control.id
            }
          }
        }
        scaleAndConcurrency = {
          instanceMemoryMB     = var.instance_memory_mb
          maximumInstanceCount = var.maximum_instance_count
        }
        runtime = {
          name    = "python"
          version = "3.11"
        }
      }
    }
  }

  response_export_values = ["properties.defaultHostName"]

  # The host reads its storage the moment the app starts: grant the roles first.
  depends_on = [
    azurerm_role_assignment.control_storage,
    azurerm_role_assignment.control_metrics_publisher,
  ]
}

resource "azapi_update_resource" "function_app_settings" {
  type      = "Microsoft.Web/sites/config@2024-04-01"
  name      = "appsettings"
  parent_id = azapi_resource.function_app.id
  body = {
    properties = local.control_app_settings
  }
}

# Publishing uses Entra ID (az / func with your login), never basic-auth credentials.
resource "azapi_update_resource" "function_app_publishing" {
  for_each  = toset(["ftp", "scm"])
  type      = "Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01"
  name      = each.value
  parent_id = azapi_resource.function_app.id
  body = {
    properties = { allow = false }
  }
}
