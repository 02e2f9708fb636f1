// The storage account batchfn lives in: Functions host storage (Durable task hub tables,
// queues and blobs), the app's containers and queues (names as in shared/contract/layout.py),
// the Flex Consumption deployment package container and the
// container where Event Grid leaves drop events it could not deliver.
param name string
param location string
param tags object = {}
param deploymentContainerName string

// shared/contract/layout.py: REGISTRY, ASSETS, DATA, JOBS, STATE; DROP_CONTAINER;
// ENVIRONMENTS_CONTAINER (built environments the scoring hosts pack and unpack).
var appContainers = [
  'batchfn-registry'
  'batchfn-assets'
  'batchfn-data'
  'batchfn-jobs'
  'batchfn-state'
  'batchfn-drop'
  'batchfn-environments'
]
// shared/contract/layout.py: MINIBATCH_QUEUE and its POISON_SUFFIX twin.
var appQueues = [
  'minibatches'
  'minibatches-poison'
  // One queue (and its poison twin) per scoring profile with an app of its own
  // (shared/contract/layout.py: minibatch_queue_for): declared whether or not it is deployed.
  'minibatches-gpu-t4'
  'minibatches-gpu-t4-poison'
  'minibatches-gpu-a100'
  'minibatches-gpu-a100-poison'
  'minibatches-cpu'
  'minibatches-cpu-poison'
]
var deadLetterContainerName = 'batchfn-drop-deadletter'


resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches storage over its public endpoint; shared keys are disabled, so every request needs an Entra ID token with a data role
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; blob public access itself is disabled (allowBlobPublicAccess: false)
  // checkov:skip=CKV_AZURE_206: LRS keeps the default deployment cheap; job inputs and outputs are reproducible. Change sku.name to Standard_ZRS or Standard_GRS for production
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // Identity only: the app, the deployment and the CLI's user-delegation SAS use Entra ID.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // Flex Consumption without VNet integration reaches storage over public endpoints.
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobServices 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobServices
  name: deploymentContainerName
  properties: { publicAccess: 'None' }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobServices
  name: deadLetterContainerName
  properties: { publicAccess: 'None' }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in appContainers: {
  parent: blobServices
  name: container
  properties: { publicAccess: 'None' }
}]

resource queueServices 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queue in appQueues: {
  parent: queueServices
  name: queue
}]

output name string = storage.name
output dropContainerName string = 'batchfn-drop'
output deadLetterContainerName string = deadLetterContainer.name
