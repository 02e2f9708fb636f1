# The storage account batchfn lives in: Functions host storage (Durable task hub tables,
# queues and blobs), the app's containers and queues (names as in shared/contract/layout.py),
# the Flex Consumption deployment package container and the
# container where Event Grid leaves drop events it could not deliver.

locals {
  # shared/contract/layout.py: REGISTRY, ASSETS, DATA, JOBS, STATE; DROP_CONTAINER;
  # ENVIRONMENTS_CONTAINER (built environments the scoring hosts pack and unpack).
  app_containers = [
    "batchfn-registry",
    "batchfn-assets",
    "batchfn-data",
    "batchfn-jobs",
    "batchfn-state",
    "batchfn-drop",
    "batchfn-environments",
  ]
  drop_container = "batchfn-drop"
  # shared/contract/layout.py: MINIBATCH_QUEUE and its POISON_SUFFIX twin.
  app_queues = [
    "minibatches",
    "minibatches-poison",
    # One queue (and its poison twin) per scoring profile with an app of its own
    # (shared/contract/layout.py: minibatch_queue_for): declared whether or not it is deployed.
    "minibatches-gpu-t4",
    "minibatches-gpu-t4-poison",
    "minibatches-gpu-a100",
    "minibatches-gpu-a100-poison",
    "minibatches-cpu",
    "minibatches-cpu-poison",
  ]
  dead_letter_container = "batchfn-drop-deadletter"
}

resource "azurerm_storage_account" "main" {
  #checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches storage over its public endpoint; shared keys are disabled, so every request needs an Entra ID token with a data role
  #checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35; nested items can never be public (allow_nested_items_to_be_public = false)
  #checkov:skip=CKV_AZURE_206:LRS keeps the default deployment cheap; job inputs and outputs are reproducible. Use ZRS or GRS for production
  #checkov:skip=CKV2_AZURE_33:No private endpoint: Flex Consumption without VNet integration reaches storage publicly (see CKV_AZURE_35); docs/deploy-azure.md says how to harden
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed encryption keys; customer-managed keys need a Key Vault this deployment does not otherwise use
  #checkov:skip=CKV_AZURE_33:Queue request logging would record every host poll; enable diagnostic settings when auditing (docs/deploy-azure.md)
  # No shared keys: the app, the deployment and the CLI's user-delegation SAS all use Entra ID.
  name                             = local.names.storage
  resource_group_name              = azurerm_resource_group.main.name
  location                         = azurerm_resource_group.main.location
  account_kind                     = "StorageV2"
  account_tier                     = "Standard"
  account_replication_type         = "LRS"
  access_tier                      = "Hot"
  min_tls_version                  = "TLS1_2"
  https_traffic_only_enabled       = true
  allow_nested_items_to_be_public  = false
  shared_access_key_enabled        = false
  default_to_oauth_authentication  = true
  cross_tenant_replication_enabled = false
  public_network_access_enabled    = true
  tags                             = local.tags

  network_rules {
    default_action = "Allow"
    bypass         = ["AzureServices"]
  }

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "deployment" {
  #checkov:skip=CKV2_AZURE_21:Blob read logging records every scored file; enable diagnostic settings when auditing (docs/deploy-azure.md)
  name                  = local.deployment_container_name
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_container" "dead_letter" {
  #checkov:skip=CKV2_AZURE_21:Blob read logging records every scored file; enable diagnostic settings when auditing (docs/deploy-azure.md)
  name                  = local.dead_letter_container
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_container" "app" {
  #checkov:skip=CKV2_AZURE_21:Blob read logging records every scored file; enable diagnostic settings when auditing (docs/deploy-azure.md)
  for_each              = toset(local.app_containers)
  name                  = each.value
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_storage_queue" "app" {
  for_each           = toset(local.app_queues)
  name               = each.value
  storage_account_id = azurerm_storage_account.main.id
}
