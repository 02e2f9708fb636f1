// The scoring apps: the same code base as the control app, built into a container image
// (infra/docker/Dockerfile) and run by Azure Container Apps as Functions apps
// (kind: functionapp) on serverless GPU workload profiles. Each serves BATCHFN_ROLE=scoring:
// the mini-batch queue trigger, nothing else (the poison queues are the control app's).
// Each scales on its mini-batch queue's depth by a rule declared here (minReplicas while it
// is empty, 0 scaling to zero; one replica per workerSlots waiting messages, up to
// maxReplicas), not by the rules Container Apps would generate from the triggers: it skips
// those for a Functions app whose storage connection uses a user-assigned identity, so
// mini-batches could wait forever (docs/deploy-azure.md).
//
// The main app reads `minibatches` on workloadProfileType. Each profile of profileApps
// (gpu-t4, gpu-a100, cpu) gets an app of its own reading `minibatches-<profile>`
// (BATCHFN_SCORING_PROFILE): computes whose size maps to that profile run there.
param environmentName string
param appName string
param location string
param tags object = {}
param logAnalyticsName string
param applicationInsightsName string
param storageAccountName string
param registryLoginServer string
param identityId string
param identityClientId string

@allowed(['Consumption-GPU-NC8as-T4', 'Consumption-GPU-NC24-A100', 'Consumption'])
param workloadProfileType string = 'Consumption-GPU-NC8as-T4'

@description('The scoring image (<registry>/batchfn-scoring:<tag>); empty: the environment only, no app yet.')
param image string = ''

@minValue(1)
@maxValue(100)
param maxReplicas int = 4

@minValue(0)
@maxValue(100)
@description('Replicas the main app keeps warm (the min_instances of its computes).')
param minReplicas int = 0

@minValue(1)
@maxValue(16)
@description('Mini-batches one replica runs at once: the deployments\' max_concurrency_per_instance (GPU memory bounds it).')
param workerSlots int = 1

@allowed(['gpu-t4', 'gpu-a100', 'cpu'])
@description('Scoring profiles with an app of their own beside the main one.')
param profileApps array = []

@description('Replicas each profile app keeps warm, by profile; absent: 0.')
param profileMinReplicas object = {}

// One replica takes a whole serverless GPU, so it gets the profile's CPU and memory too.
var profiles = {
  'Consumption-GPU-NC8as-T4': { name: 'gpu-t4', cpu: '8', memory: '56Gi' }
  'Consumption-GPU-NC24-A100': { name: 'gpu-a100', cpu: '24', memory: '220Gi' }
  Consumption: { name: 'Consumption', cpu: '4', memory: '8Gi' }
}
// The workload profile type of each compute profile (shared/contract/compute_spec.py), and
// the short name of its app (Container Apps names have at most 32 characters).
var computeProfiles = {
  'gpu-t4': { type: 'Consumption-GPU-NC8as-T4', suffix: 't4' }
  'gpu-a100': { type: 'Consumption-GPU-NC24-A100', suffix: 'a100' }
  cpu: { type: 'Consumption', suffix: 'cpu' }
}
var consumptionProfile = { name: 'Consumption', workloadProfileType: 'Consumption' }
// The GPU workload profiles the environment needs: the main app's and its profile apps'.
var needsT4 = workloadProfileType == 'Consumption-GPU-NC8as-T4' || contains(profileApps, 'gpu-t4')
var needsA100 = workloadProfileType == 'Consumption-GPU-NC24-A100' || contains(profileApps, 'gpu-a100')
var t4Profiles = needsT4 ? [{ name: 'gpu-t4', workloadProfileType: 'Consumption-GPU-NC8as-T4' }] : []
var a100Profiles = needsA100 ? [{ name: 'gpu-a100', workloadProfileType: 'Consumption-GPU-NC24-A100' }] : []
var gpuProfiles = concat(t4Profiles, a100Profiles)
// The main app, then one per profile app: name, workload profile, warm replicas, settings.
// shared/contract/layout.py: MINIBATCH_QUEUE, and minibatch_queue_for(profile).
var profileAppSpecs = [for p in profileApps: {
  name: '${appName}-${computeProfiles[p].suffix}'
  queue: 'minibatches-${p}'
  workload: computeProfiles[p].type
  minReplicas: contains(profileMinReplicas, p) ? profileMinReplicas[p] : 0
  settings: [{ name: 'BATCHFN_SCORING_PROFILE', value: p }]
}]
var profileAppNames = [for p in profileApps: '${appName}-${computeProfiles[p].suffix}']
var apps = concat([{
  name: appName
  queue: 'minibatches'
  workload: workloadProfileType
  minReplicas: minReplicas
  settings: []
}], profileAppSpecs)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource environment 'Microsoft.App/managedEnvironments@2024-10-02-preview' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    // Logs reach Log Analytics through the diagnostic setting below: no workspace key.
    appLogsConfiguration: { destination: 'azure-monitor' }
    workloadProfiles: concat([consumptionProfile], gpuProfiles)
    zoneRedundant: false
  }
}

resource environmentLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: environment
  properties: {
    workspaceId: logAnalytics.id
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
  }
}

// What the scoring role reads (see docs/deploy-azure.md). Storage: blobs and queues only.
// A list, not an object turned into one: a loop over values known only at deployment
// time (endpoints, the connection string) is not allowed.
var appSettings = [
  { name: 'BATCHFN_ROLE', value: 'scoring' }
  { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'python' }
  { name: 'AzureWebJobsStorage__accountName', value: storage.name }
  { name: 'AzureWebJobsStorage__blobServiceUri', value: storage.properties.primaryEndpoints.blob }
  { name: 'AzureWebJobsStorage__queueServiceUri', value: storage.properties.primaryEndpoints.queue }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
  // Host keys live in the app's Container Apps secrets, never in the storage account.
  { name: 'AzureWebJobsSecretStorageType', value: 'containerapp' }
  // A replica holds at most workerSlots mini-batches (infra/docker/Dockerfile explains).
  { name: 'AzureFunctionsJobHost__extensions__queues__batchSize', value: '1' }
  { name: 'AzureFunctionsJobHost__extensions__queues__newBatchThreshold', value: string(workerSlots - 1) }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: applicationInsights.properties.ConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identityClientId};Authorization=AAD' }
]

resource scoringApps 'Microsoft.App/containerApps@2026-03-02-preview' = [for app in apps: if (!empty(image)) {
  name: app.name
  location: location
  tags: tags
  kind: 'functionapp'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    managedEnvironmentId: environment.id
    workloadProfileName: profiles[app.workload].name
    configuration: {
      activeRevisionsMode: 'Single'
      // Functions on Container Apps scales from its triggers only with ingress on; inside
      // the environment is enough (the app serves GET /api/health and nothing else).
      ingress: {
        external: false
        targetPort: 80
        allowInsecure: false
        transport: 'auto'
      }
      registries: [
        {
          server: registryLoginServer
          identity: identityId
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'scoring'
          image: image
          resources: {
            cpu: json(profiles[app.workload].cpu)
            memory: profiles[app.workload].memory
          }
          env: concat(appSettings, app.settings)
        }
      ]
      scale: {
        minReplicas: app.minReplicas
        maxReplicas: maxReplicas
        // The rules below replace the generated ones (none would be made: see the top).
        allowScalingRuleOverride: true
        rules: [
          {
            name: 'minibatch-queue'
            custom: {
              // KEDA's azure-queue scaler, reading the queue as the scoring identity: a
              // replica per queueLength messages, one per worker slot.
              type: 'azure-queue'
              metadata: {
                accountName: storage.name
                queueName: app.queue
                queueLength: string(workerSlots)
              }
              identity: identityId
            }
          }
        ]
      }
    }
  }
}]

output environmentName string = environment.name
output appName string = empty(image) ? '' : scoringApps[0].name
output profileAppNames array = empty(image) ? [] : profileAppNames
output workloadProfileName string = profiles[workloadProfileType].name
