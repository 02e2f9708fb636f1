# The scoring apps: the same code base as the control app, built into a container image
# (infra/docker/Dockerfile) and run by Azure Container Apps as Functions apps
# (kind: functionapp) on serverless GPU workload profiles. Each serves BATCHFN_ROLE=scoring:
# the mini-batch queue trigger, nothing else (the poison queues are the control app's).
# Each scales on its mini-batch queue's depth by a rule declared here (minReplicas while it
# is empty, 0 scaling to zero; one replica per scoring_worker_slots waiting messages, up to
# scoring_max_replicas), not by the rules Container Apps would generate from the triggers:
# it skips those for a Functions app whose storage connection uses a user-assigned
# identity, so mini-batches could wait forever (docs/deploy-azure.md).
#
# The main app reads `minibatches` on scoring_workload_profile. Each profile of
# scoring_profiles (gpu-t4, gpu-a100, cpu) gets an app of its own reading
# `minibatches-<profile>` (BATCHFN_SCORING_PROFILE): computes whose size maps to that
# profile run there.
#
# azapi declares the environment and the app as infra/bicep/app/scoring-app.bicep does:
# azurerm_container_app has no `kind`, and the serverless GPU profile types are newer than
# azurerm's list of workload profiles.

locals {
  # shared/contract/layout.py: MINIBATCH_QUEUE and minibatch_queue_for(profile), each app's
  # queue below. The poison queues are the control app's.
  minibatch_queue = "minibatches"
  # One replica takes a whole serverless GPU, so it gets the profile's CPU and memory too.
  scoring_profiles = {
    "Consumption-GPU-NC8as-T4"  = { name = "gpu-t4", cpu = 8, memory = "56Gi" }
    "Consumption-GPU-NC24-A100" = { name = "gpu-a100", cpu = 24, memory = "220Gi" }
    "Consumption"               = { name = "Consumption", cpu = 4, memory = "8Gi" }
  }
  # The workload profile type of each compute profile (shared/contract/compute_spec.py), and
  # the short name of its app (Container Apps names have at most 32 characters).
  compute_profiles = {
    "gpu-t4"   = { type = "Consumption-GPU-NC8as-T4", suffix = "t4" }
    "gpu-a100" = { type = "Consumption-GPU-NC24-A100", suffix = "a100" }
    "cpu"      = { type = "Consumption", suffix = "cpu" }
  }
  # The compute profile of the main app's workload profile; the control app routes each
  # compute's mini-batches by these (BATCHFN_SCORING_PROFILES).
  main_scoring_profile = [for name, profile in local.compute_profiles : name
  if profile.type == var.scoring_workload_profile][0]
  profile_apps = [for profile in var.scoring_profiles : profile
  if profile != local.main_scoring_profile]
  gpu_types = [for type in distinct(concat([var.scoring_workload_profile],
  [for profile in local.profile_apps : local.compute_profiles[profile].type])) : type if type != "Consumption"]
  gpu_profiles = [for type in local.gpu_types :
  { name = local.scoring_profiles[type].name, workloadProfileType = type }]
  # The main app, then one per profile app: name, workload profile, warm replicas, and the
  # profile it serves ("" for the main app: no BATCHFN_SCORING_PROFILE setting).
  scoring_apps = merge({
    main = {
      name        = local.names.scoring_app
      workload    = var.scoring_workload_profile
      minReplicas = var.scoring_min_replicas
      profile     = ""
      queue       = local.minibatch_queue
    }
    }, { for profile in local.profile_apps : profile => {
      name        = "${local.names.scoring_app}-${local.compute_profiles[profile].suffix}"
      workload    = local.compute_profiles[profile].type
      minReplicas = lookup(var.scoring_profile_min_replicas, profile, 0)
      profile     = profile
      queue       = "${local.minibatch_queue}-${profile}"
  } })

  # What the scoring role reads (see docs/deploy-azure.md). Storage: blobs and queues only.
  scoring_app_settings = {
    BATCHFN_ROLE                         = "scoring"
    FUNCTIONS_WORKER_RUNTIME             = "python"
    AzureWebJobsStorage__accountName     = azurerm_storage_account.main.name
    AzureWebJobsStorage__blobServiceUri  = azurerm_storage_account.main.primary_blob_endpoint
    AzureWebJobsStorage__queueServiceUri = azurerm_storage_account.main.primary_queue_endpoint
    AzureWebJobsStorage__credential      = "managedidentity"
    AzureWebJobsStorage__clientId        = azurerm_user_assigned_identity.scoring.client_id
    # Host keys live in the app's Container Apps secrets, never in the storage account.
    AzureWebJobsSecretStorageType = "containerapp"
    # A replica holds at most scoring_worker_slots mini-batches (infra/docker/Dockerfile).
    AzureFunctionsJobHost__extensions__queues__batchSize         = "1"
    AzureFunctionsJobHost__extensions__queues__newBatchThreshold = tostring(var.scoring_worker_slots - 1)
    APPLICATIONINSIGHTS_CONNECTION_STRING                        = azurerm_application_insights.main.connection_string
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING                    = "ClientId=${azurerm_user_assigned_identity.scoring.client_id};Authorization=AAD"
  }
}

resource "azapi_resource" "container_apps_environment" {
  type      = "Microsoft.App/managedEnvironments@2024-10-02-preview"
  name      = local.names.container_apps_environment
  parent_id = azurerm_resource_group.main.id
  location  = azurerm_resource_group.main.location
  tags      = local.tags

  body = {
    properties = {
      # Logs reach Log Analytics through the diagnostic setting below: no workspace key.
      appLogsConfiguration = { destination = "azure-monitor" }
      workloadProfiles = concat(
        [{ name = "Consumption", workloadProfileType = "Consumption" }],
        local.gpu_profiles,
      )
      zoneRedundant = false
    }
  }
}

resource "azurerm_monitor_diagnostic_setting" "container_apps_environment" {
  name                       = "to-log-analytics"
  target_resource_id         = azapi_resource.container_apps_environment.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category_group = "allLogs"
  }
}

resource "azapi_resource" "scoring_app" {
  for_each  = var.scoring_image == "" ? {} : local.scoring_apps
  type      = "Microsoft.App/containerApps@2026-03-02-preview"
  name      = each.value.name
  parent_id = azurerm_resource_group.main.id
  location  = azurerm_resource_group.main.location
  tags      = local.tags
  # allowScalingRuleOverride needs this API version, which azapi releases may not embed a
  # schema for yet: ARM validates the body instead.
  schema_validation_enabled = false

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.scoring.id]
  }

  body = {
    kind = "functionapp"
    properties = {
      managedEnvironmentId = azapi_resource.container_apps_environment.id
      workloadProfileName  = local.scoring_profiles[each.value.workload].name
      configuration = {
        activeRevisionsMode = "Single"
        # Functions on Container Apps scales from its triggers only with ingress on; inside
        # the environment is enough (the app serves GET /api/health and nothing else).
        ingress = {
          external      = false
          targetPort    = 80
          allowInsecure = false
          transport     = "auto"
        }
        registries = [
          {
            server   = azurerm_container_registry.main.login_server
            identity = azurerm_user_assigned_identity.scoring.id
          }
        ]
      }
      template = {
        containers = [
          {
            name  = "scoring"
            image = var.scoring_image
            resources = {
              cpu    = local.scoring_profiles[each.value.workload].cpu
              memory = local.scoring_profiles[each.value.workload].memory
            }
            # A profile app also gets BATCHFN_SCORING_PROFILE; the main app's is empty: left out.
            env = [for name, value in merge(local.scoring_app_settings, { BATCHFN_SCORING_PROFILE = each.value.profile }) :
            { name = name, value = value } if value != ""]
          }
        ]
        scale = {
          minReplicas = each.value.minReplicas
          maxReplicas = var.scoring_max_replicas
          # The rules below replace the generated ones (none would be made: see the top).
          allowScalingRuleOverride = true
          rules = [
            {
              name = "minibatch-queue"
              custom = {
                # KEDA's azure-queue scaler, reading the queue as the scoring identity: a
                # replica per queueLength messages, one per worker slot.
                type = "azure-queue"
                metadata = {
                  accountName = azurerm_storage_account.main.name
                  queueName   = each.value.queue
                  queueLength = tostring(var.scoring_worker_slots)
                }
                identity = azurerm_user_assigned_identity.scoring.id
              }
            }
          ]
        }
      }
    }
  }

  # The image pull and the queue listeners need AcrPull and the storage roles first.
  depends_on = [
    azurerm_role_assignment.scoring_blobs,
    azurerm_role_assignment.scoring_queues,
    azurerm_role_assignment.scoring_acr_pull,
    azurerm_role_assignment.scoring_metrics_publisher,
  ]
}
