# Role assignments, one identity per app, each with what its role needs and no more
# (the same grants as infra/bicep/rbac.bicep, which explains each of them).
#
# Control app: Storage Blob Data Owner (includes generateUserDelegationKey for the upload
# SAS URLs it signs), Queue and Table Data Contributor on the account, Monitoring Metrics
# Publisher, EventGrid Data Sender on the jobs' lifecycle events topic. Scoring app: a
# custom role, Storage Blob Data Contributor without deleting or leasing containers, on the
# account under a condition (nothing in the host's secrets, the registry container, the
# control app's package or the Durable task hub; read-only on assets), Queue Data
# Contributor on the mini-batch queues and their poison twins, AcrPull, Monitoring Metrics
# Publisher; no table role. Optional user: read large outputs, drop files.

locals {
  control_storage_roles = toset([
    "Storage Blob Data Owner",
    "Storage Queue Data Contributor",
    # Durable Functions' Azure Storage provider keeps instance and history tables.
    "Storage Table Data Contributor",
  ])
  # shared/contract/layout.py: MINIBATCH_QUEUE, its poison twin (the host moves failed messages
  # there), and the same two of each scoring profile's app.
  scoring_queue_grants = {
    "minibatches"                 = "Storage Queue Data Contributor"
    "minibatches-poison"          = "Storage Queue Data Contributor"
    "minibatches-gpu-t4"          = "Storage Queue Data Contributor"
    "minibatches-gpu-t4-poison"   = "Storage Queue Data Contributor"
    "minibatches-gpu-a100"        = "Storage Queue Data Contributor"
    "minibatches-gpu-a100-poison" = "Storage Queue Data Contributor"
    "minibatches-cpu"             = "Storage Queue Data Contributor"
    "minibatches-cpu-poison"      = "Storage Queue Data Contributor"
  }
  user_container_grants = {
    "batchfn-jobs" = "Storage Blob Data Reader"
    "batchfn-data" = "Storage Blob Data Reader"
    "batchfn-drop" = "Storage Blob Data Contributor"
  }
  # What the scoring role may do with blobs: Storage Blob Data Contributor's actions less
  # deleting a container and taking a lease on one (it creates output containers, reads and
  # writes blobs, signs read SAS URLs for its workers). The condition narrows where.
  scoring_blob_actions = [
    "Microsoft.Storage/storageAccounts/blobServices/containers/read",
    "Microsoft.Storage/storageAccounts/blobServices/containers/write",
    "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
  ]
  scoring_blob_data_actions = [
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
  ]
  # Containers the scoring identity never reads or writes: the Functions host's keys, the
  # endpoint/deployment registry, the control app's code package and the Durable task hub
  # (host.json hubName "batchfn"); and batchfn-assets, which it only reads.
  scoring_blob_condition = <<-EOT
    (
     (
      !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete'})
      AND !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'})
      AND !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write'})
      AND !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action'})
     )
     OR
     (
      @Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringNotEquals 'azure-webjobs-secrets'
      AND @Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringNotEquals 'batchfn-registry'
      AND @Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringNotLike 'app-package-*'
      AND @Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringNotEquals 'batchfn-leases'
      AND @Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringNotEquals 'batchfn-applease'
      AND @Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringNotEquals 'batchfn-largemessages'
     )
    )
    AND
    (
     (
      !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete'})
      AND !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write'})
      AND !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action'})
     )
     OR
     (
      @Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringNotEquals 'batchfn-assets'
     )
    )
  EOT
}

# --- control app --------------------------------------------------------------------------

resource "azurerm_role_assignment" "control_storage" {
  for_each             = local.control_storage_roles
  scope                = azurerm_storage_account.main.id
  role_definition_name = each.value
  principal_id         = azurerm_user_assigned_identity.control.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "control_metrics_publisher" {
  scope                = azurerm_application_insights.main.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = azurerm_user_assigned_identity.control.principal_id
  principal_type       = "ServicePrincipal"
}

# Jobs' lifecycle events: the control app publishes to the topic, and only to it.
resource "azurerm_role_assignment" "control_events_sender" {
  scope                = azurerm_eventgrid_topic.lifecycle.id
  role_definition_name = "EventGrid Data Sender"
  principal_id         = azurerm_user_assigned_identity.control.principal_id
  principal_type       = "ServicePrincipal"
}

# --- scoring app --------------------------------------------------------------------------

resource "azurerm_role_definition" "scoring_blobs" {
  name        = "batchfn scoring blobs ${local.token}"
  scope       = azurerm_resource_group.main.id
  description = "batchfn scoring app: read and write blobs, create containers, sign read SAS URLs; no container delete or lease."

  permissions {
    actions      = local.scoring_blob_actions
    data_actions = local.scoring_blob_data_actions
  }

  assignable_scopes = [azurerm_resource_group.main.id]
}

resource "azurerm_role_assignment" "scoring_blobs" {
  scope              = azurerm_storage_account.main.id
  role_definition_id = azurerm_role_definition.scoring_blobs.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.scoring.principal_id
  principal_type     = "ServicePrincipal"
  condition          = local.scoring_blob_condition
  condition_version  = "2.0"
}

resource "azurerm_role_assignment" "scoring_queues" {
  for_each             = local.scoring_queue_grants
  scope                = azurerm_storage_queue.app[each.key].resource_manager_id
  role_definition_name = each.value
  principal_id         = azurerm_user_assigned_identity.scoring.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "scoring_acr_pull" {
  scope                = azurerm_container_registry.main.id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.scoring.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "scoring_metrics_publisher" {
  scope                = azurerm_application_insights.main.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = azurerm_user_assigned_identity.scoring.principal_id
  principal_type       = "ServicePrincipal"
}

# --- optional user ------------------------------------------------------------------------

resource "azurerm_role_assignment" "user_containers" {
  for_each             = var.principal_id == "" ? {} : local.user_container_grants
  scope                = azurerm_storage_container.app[each.key].resource_manager_id
  role_definition_name = each.value
  principal_id         = var.principal_id
  principal_type       = var.principal_type
}
