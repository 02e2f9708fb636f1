# Blob drop on Flex Consumption: Flex runs blob triggers only with the Event Grid source, so
# BlobCreated events of drop markers (batchfn-drop/<endpoint>/<folder>/_start) are pushed
# to the blobs extension's webhook. Data files dropped beside a marker fire nothing.
# The webhook needs the app's blobs_extension system key, which exists only once the
# published code has started: the first apply creates the system topic, a second one with
# subscribe_blob_drop reads the key from the app's host keys and subscribes. Event Grid
# validates the endpoint when subscribing. Events it cannot deliver (after the retries) are
# dead-lettered as blobs, written with the system topic's own identity.

locals {
  # functions/blob_drop.py
  blob_drop_function = "blob_drop"
  # shared/control/blob_drop.py: a job starts from the marker blob named _start.
  marker_suffix = "/_start"
}

resource "azurerm_eventgrid_system_topic" "storage" {
  name                = local.names.system_topic
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  source_resource_id  = azurerm_storage_account.main.id
  topic_type          = "Microsoft.Storage.StorageAccounts"
  tags                = local.tags

  identity {
    type = "SystemAssigned"
  }
}

# The topic writes undeliverable events into the dead-letter container, and nowhere else.
resource "azurerm_role_assignment" "dead_letter_writer" {
  scope                = azurerm_storage_container.dead_letter.resource_manager_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_eventgrid_system_topic.storage.identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

data "azurerm_function_app_host_keys" "control" {
  count               = var.subscribe_blob_drop ? 1 : 0
  name                = azapi_resource.function_app.name
  resource_group_name = azurerm_resource_group.main.name
}

resource "azurerm_eventgrid_system_topic_event_subscription" "blob_drop" {
  count                 = var.subscribe_blob_drop ? 1 : 0
  name                  = "blob-drop"
  system_topic          = azurerm_eventgrid_system_topic.storage.name
  resource_group_name   = azurerm_resource_group.main.name
  event_delivery_schema = "EventGridSchema"
  included_event_types  = ["Microsoft.Storage.BlobCreated"]

  webhook_endpoint {
    url                  = "https://${azapi_resource.function_app.output.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${local.blob_drop_function}&code=${data.azurerm_function_app_host_keys.control[0].blobs_extension_key}"
    max_events_per_batch = 1
  }

  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${local.drop_container}/blobs/"
    subject_ends_with   = local.marker_suffix
  }

  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }

  dead_letter_identity {
    type = "SystemAssigned"
  }

  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.main.id
    storage_blob_container_name = azurerm_storage_container.dead_letter.name
  }

  depends_on = [azurerm_role_assignment.dead_letter_writer]
}

# Jobs' lifecycle events: an Event Grid custom topic taking CloudEvents 1.0, which the
# control app publishes to with its identity (EventGrid Data Sender, rbac.tf) at
# BATCHFN_EVENTGRID_ENDPOINT. Subscriptions are the user's: a webhook, a storage queue, a
# function (docs/deploy-azure.md). Keys are off: only Entra ID publishes.
resource "azurerm_eventgrid_topic" "lifecycle" {
  #checkov:skip=CKV_AZURE_193:The Flex Consumption control app publishes without a virtual network; keys are off, so only identities granted EventGrid Data Sender can publish
  name                          = local.names.events_topic
  resource_group_name           = azurerm_resource_group.main.name
  location                      = azurerm_resource_group.main.location
  input_schema                  = "CloudEventSchemaV1_0"
  local_auth_enabled            = false
  public_network_access_enabled = true
  tags                          = local.tags

  identity {
    type = "SystemAssigned"
  }
}
