// batchfn in Azure: one code base as two Function apps over one storage account.
//   control: Flex Consumption (HTTP API, orchestration, blob drop), BATCHFN_ROLE=control;
//   scoring: Azure Container Apps with a serverless GPU workload profile (kind: functionapp,
//            the image of infra/docker/Dockerfile), BATCHFN_ROLE=scoring.
// Each app runs as its own user-assigned identity with least-privilege roles; every
// connection is identity based (the storage account refuses keys).
// Deploy with: az deployment sub create --location <region> --template-file main.bicep
//              --parameters main.parameters.json   (see docs/deploy-azure.md)
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('Name of the environment; prefixes the resource group and seeds the resource names.')
param environmentName string

@minLength(1)
@description('Region for every resource. It must offer Flex Consumption (az functionapp list-flexconsumption-locations) and the scoring workload profile (az containerapp env workload-profile list-supported -l <region>).')
param location string

@description('Resource group to create; defaults to rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of a user or group that gets what the batchfn CLI\'s user needs in storage (read large outputs, drop files). Empty: none.')
param principalId string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
@description('Kind of principal principalId names.')
param principalType string = 'User'

@allowed([2048, 4096])
@description('Memory of each control app instance in MB.')
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Most instances the control app scales out to (Flex Consumption takes 40 at least).')
param maximumInstanceCount int = 100

@minValue(1)
@description('Most input files one job may have (BATCHFN_MAX_FILES_PER_JOB); a larger input fails its job before any mini-batch is sent.')
param maxFilesPerJob int = 1000000

@minValue(1)
@description('Most rows one tabular job may have (BATCHFN_MAX_ROWS_PER_JOB), counted as planned (a parquet file: as its footer claims).')
param maxRowsPerJob int = 1000000000

@minValue(1)
@description('Most mini-batches (queue messages) one job may have (BATCHFN_MAX_MINI_BATCHES_PER_JOB).')
param maxMiniBatchesPerJob int = 1000000

@description('Datastores jobs may read and write beside workspaceblobstore (the container batchfn-data): name=container pairs, comma separated, naming containers of this storage account (docs/security.md). Empty: only workspaceblobstore.')
param datastores string = ''

@description('Subscribe the blob-drop container to Event Grid. Needs the control app\'s code published (docs/deploy-azure.md, step 5): the webhook key is read from the app\'s host keys.')
param subscribeBlobDrop bool = false

@allowed(['Consumption-GPU-NC8as-T4', 'Consumption-GPU-NC24-A100', 'Consumption'])
@description('Workload profile of the scoring app: a serverless NVIDIA T4 (16 GB) or A100 (80 GB) GPU per replica, or Consumption (CPU only, 4 vCPU / 8 GiB).')
param scoringWorkloadProfile string = 'Consumption-GPU-NC8as-T4'

@description('The scoring image, <registry login server>/batchfn-scoring:<tag>. Empty on the first deployment (the registry does not exist yet): everything but the scoring app is created.')
param scoringImage string = ''

@minValue(1)
@maxValue(100)
@description('Most scoring replicas (GPUs) at once; batchfn\'s instance_count cannot go past it. Keep it within your serverless GPU quota.')
param scoringMaxReplicas int = 4

@minValue(1)
@maxValue(16)
@description('Mini-batches one scoring replica runs at once; set it to your GPU deployments\' max_concurrency_per_instance.')
param scoringWorkerSlots int = 1

@allowed(['Basic', 'Standard', 'Premium'])
@description('Container registry SKU; Premium adds artifact streaming for faster GPU cold starts.')
param registrySku string = 'Basic'

@allowed(['gpu-t4', 'gpu-a100', 'cpu'])
@description('Scoring profiles that get a scoring app of their own beside the main one: computes whose size maps to one (gpu-t4: a T4 GPU, gpu-a100: an A100 GPU, cpu: CPU only) run there (docs/concepts.md). Empty: every compute runs on the main scoring app, and a size that needs another profile is refused at compute create.')
param scoringProfiles array = []

@minValue(0)
@maxValue(100)
@description('Replicas the main scoring app keeps warm: the min_instances of the computes it serves (0 scales to zero).')
param scoringMinReplicas int = 0

@description('Replicas each profile app keeps warm, by profile (e.g. {"gpu-a100": 1}): the min_instances of the computes of that size. A profile not named keeps none.')
param scoringProfileMinReplicas object = {}

@description('Input URLs that stand for a datastore path or a data asset: <URL prefix>=<target> pairs separated by ";" (BATCHFN_INPUT_ALIASES, docs/security.md). Empty: none.')
param inputAliases string = ''

var tags = { 'azd-env-name': environmentName, application: 'batchfn' }
var token = toLower(uniqueString(subscription().id, environmentName, location))
var names = {
  resourceGroup: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  controlIdentity: 'id-batchfn-${token}'
  scoringIdentity: 'id-batchfn-scoring-${token}'
  storage: 'stbatchfn${take(token, 13)}'
  logAnalytics: 'log-batchfn-${token}'
  appInsights: 'appi-batchfn-${token}'
  plan: 'plan-batchfn-${token}'
  functionApp: 'func-batchfn-${token}'
  systemTopic: 'evgt-batchfn-${token}'
  eventsTopic: 'evgt-batchfn-jobs-${token}'
  registry: 'crbatchfn${token}'
  containerAppsEnvironment: 'cae-batchfn-${token}'
  scoringApp: 'ca-scoring-${token}'
}
var deploymentContainerName = 'app-package-${take(token, 12)}'
// The compute profile (contract/compute_spec.py) of the main scoring app's workload profile;
// the control app routes each compute's mini-batches by these (BATCHFN_SCORING_PROFILES).
var mainScoringProfile = {
  'Consumption-GPU-NC8as-T4': 'gpu-t4'
  'Consumption-GPU-NC24-A100': 'gpu-a100'
  Consumption: 'cpu'
}[scoringWorkloadProfile]
var profileApps = filter(scoringProfiles, profile => profile != mainScoringProfile)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module controlIdentity 'app/identity.bicep' = {
  name: 'control-identity'
  scope: rg
  params: {
    name: names.controlIdentity
    location: location
    tags: tags
  }
}

module scoringIdentity 'app/identity.bicep' = {
  name: 'scoring-identity'
  scope: rg
  params: {
    name: names.scoringIdentity
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: names.storage
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: names.logAnalytics
    applicationInsightsName: names.appInsights
    location: location
    tags: tags
  }
}

module registry 'app/registry.bicep' = {
  name: 'registry'
  scope: rg
  params: {
    name: names.registry
    location: location
    tags: tags
    sku: registrySku
  }
}

module lifecycleEvents 'app/lifecycle-events.bicep' = {
  name: 'lifecycle-events'
  scope: rg
  params: {
    name: names.eventsTopic
    location: location
    tags: tags
  }
}

module rbac 'rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    registryName: registry.outputs.name
    eventsTopicName: lifecycleEvents.outputs.name
    controlPrincipalId: controlIdentity.outputs.principalId
    scoringPrincipalId: scoringIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module functionApp 'app/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    planName: names.plan
    name: names.functionApp
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    identityId: controlIdentity.outputs.id
    identityClientId: controlIdentity.outputs.clientId
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    datastores: datastores
    eventsTopicEndpoint: lifecycleEvents.outputs.endpoint
    maxFilesPerJob: maxFilesPerJob
    maxRowsPerJob: maxRowsPerJob
    maxMiniBatchesPerJob: maxMiniBatchesPerJob
    inputAliases: inputAliases
    scoringProfiles: join(concat([mainScoringProfile], profileApps), ',')
  }
  // The host reads its storage the moment the app starts: grant the roles first.
  dependsOn: [rbac]
}

module scoringApp 'app/scoring-app.bicep' = {
  name: 'scoring-app'
  scope: rg
  params: {
    environmentName: names.containerAppsEnvironment
    appName: names.scoringApp
    location: location
    tags: tags
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    storageAccountName: storage.outputs.name
    registryLoginServer: registry.outputs.loginServer
    identityId: scoringIdentity.outputs.id
    identityClientId: scoringIdentity.outputs.clientId
    workloadProfileType: scoringWorkloadProfile
    image: scoringImage
    maxReplicas: scoringMaxReplicas
    minReplicas: scoringMinReplicas
    workerSlots: scoringWorkerSlots
    profileApps: profileApps
    profileMinReplicas: scoringProfileMinReplicas
  }
  // The image pull and the queue listeners need AcrPull and the storage roles first.
  dependsOn: [rbac]
}

module eventGrid 'app/event-grid.bicep' = {
  name: 'event-grid'
  scope: rg
  params: {
    systemTopicName: names.systemTopic
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    dropContainerName: storage.outputs.dropContainerName
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    functionAppName: functionApp.outputs.name
    subscribeBlobDrop: subscribeBlobDrop
  }
}

output AZURE_LOCATION string = location
output RESOURCE_GROUP string = rg.name
output FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_HOSTNAME string = functionApp.outputs.defaultHostName
output BATCHFN_URL string = 'https://${functionApp.outputs.defaultHostName}'
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output IDENTITY_CLIENT_ID string = controlIdentity.outputs.clientId
output SCORING_IDENTITY_CLIENT_ID string = scoringIdentity.outputs.clientId
output REGISTRY_NAME string = registry.outputs.name
output REGISTRY_LOGIN_SERVER string = registry.outputs.loginServer
output CONTAINER_APPS_ENVIRONMENT string = scoringApp.outputs.environmentName
output SCORING_APP_NAME string = scoringApp.outputs.appName
output SCORING_PROFILE_APP_NAMES array = scoringApp.outputs.profileAppNames
output EVENT_GRID_SYSTEM_TOPIC string = eventGrid.outputs.systemTopicName
output EVENTS_TOPIC_NAME string = lifecycleEvents.outputs.name
output EVENTS_TOPIC_ENDPOINT string = lifecycleEvents.outputs.endpoint
