# Blob drop on Flex Consumption: Flex runs blob triggers only with the Event Grid source, so
# BlobCreated events of the drop container are pushed to the blobs extension's webhook.
# The webhook needs the app's `blobs_extension` system key, which exists only after the code
# is published: the first apply creates the system topic, the second (with
# blobs_extension_key) the subscription. Event Grid validates the endpoint when subscribing.

locals {
  # functions/blob_drop.py
  blob_drop_function = "blob_drop"
}

resource "azurerm_eventgrid_system_topic" "storage" {
  name                = local.names.system_topic
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  source_resource_id  = azurerm_storage_account.main.id
  topic_type          = "Microsoft.Storage.StorageAccounts"
  tags                = local.tags
}

resource "azurerm_eventgrid_system_topic_event_subscription" "blob_drop" {
  count                 = var.blobs_extension_key == "" ? 0 : 1
  name                  = "blob-drop"
  system_topic          = azurerm_eventgrid_system_topic.storage.name
  resource_group_name   = azurerm_resource_group.main.name
  event_delivery_schema = "EventGridSchema"
  included_event_types  = ["Microsoft.Storage.BlobCreated"]

  webhook_endpoint {
    url                  = "https://${azurerm_function_app_flex_consumption.app.default_hostname}/runtime/webhooks/blobs?functionName=Host.Functions.${local.blob_drop_function}&code=${var.blobs_extension_key}"
    max_events_per_batch = 1
  }

  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${local.drop_container}/"
  }

  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }
}
