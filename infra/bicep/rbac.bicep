// Role assignments, one identity per app, each with what its role needs and no more.
//
// Control app (HTTP API, orchestrator, blob drop): Storage Blob Data Owner, Queue and Table
// Data Contributor on the account (the Durable task hub, host keys, registry, job state),
// Monitoring Metrics Publisher, EventGrid Data Sender on the jobs' lifecycle events topic. Blob Data Owner includes
// Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action, so the
// app signs the user-delegation SAS URLs its upload grants hand out.
//
// Scoring app (mini-batch queue trigger): a custom role, Storage Blob Data Contributor
// without deleting or leasing containers (scoringBlobActions), on the account under a
// condition: nothing in the host's secrets, the registry container, the control
// app's deployment package or the Durable task hub's containers, and read-only on assets.
// Jobs read datastores and write to batchfn-jobs, datastores or a drop's _output/; an
// operator's datastores are containers named in an app setting (BATCHFN_DATASTORES), so the
// grant is account-wide with those exceptions, and batchfn's allow-list
// (shared/control/datastores.py) keeps jobs out of every other container. The role includes
// generateUserDelegationKey (a replica may sign short-lived read SAS URLs for its worker
// processes; such a SAS never grants more than the signer has). Queue Data Contributor on
// the mini-batch queue and its poison twin only (the host moves a message it gave up on to
// the poison queue; the control app records it), AcrPull on the registry,
// Monitoring Metrics Publisher. No table role: it never touches the task hub.
//
// Optional user (principalId): what the CLI's users need beside the API: read outputs too
// large for the API (batchfn-jobs, batchfn-data) and drop files to start jobs (batchfn-drop).
param storageAccountName string
param applicationInsightsName string
param registryName string
param eventsTopicName string
param controlPrincipalId string
param scoringPrincipalId string

@description('Object id of a user or group given the CLI user\'s roles; empty: none.')
param userPrincipalId string = ''
param userPrincipalType string = 'User'

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // Durable Functions' Azure Storage provider keeps instance and history tables.
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
}
var controlStorageRoles = [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]
// shared/contract/layout.py: MINIBATCH_QUEUE, its poison twin (the host moves failed messages there),
// and the same two of each scoring profile's app.
var scoringQueueGrants = [
  { queue: 'minibatches', role: roles.storageQueueDataContributor }
  { queue: 'minibatches-poison', role: roles.storageQueueDataContributor }
  { queue: 'minibatches-gpu-t4', role: roles.storageQueueDataContributor }
  { queue: 'minibatches-gpu-t4-poison', role: roles.storageQueueDataContributor }
  { queue: 'minibatches-gpu-a100', role: roles.storageQueueDataContributor }
  { queue: 'minibatches-gpu-a100-poison', role: roles.storageQueueDataContributor }
  { queue: 'minibatches-cpu', role: roles.storageQueueDataContributor }
  { queue: 'minibatches-cpu-poison', role: roles.storageQueueDataContributor }
]
var userContainerGrants = [
  { container: 'batchfn-jobs', role: roles.storageBlobDataReader }
  { container: 'batchfn-data', role: roles.storageBlobDataReader }
  { container: 'batchfn-drop', role: roles.storageBlobDataContributor }
]
// Containers the scoring identity never reads or writes: the Functions host's keys, the
// endpoint/deployment registry, the control app's code package and the Durable task hub
// (host.json hubName "batchfn"); and batchfn-assets, which it only reads.
var scoringBlobCondition = '''
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
'''

// What the scoring role may do with blobs: Storage Blob Data Contributor's actions less
// deleting a container and taking a lease on one (it creates output containers, reads and
// writes blobs, signs read SAS URLs for its workers). The condition below narrows where.
var scoringBlobActions = [
  'Microsoft.Storage/storageAccounts/blobServices/containers/read'
  'Microsoft.Storage/storageAccounts/blobServices/containers/write'
  'Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action'
]
var scoringBlobDataActions = [
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action'
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource eventsTopic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: eventsTopicName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource scoringQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [for grant in scoringQueueGrants: {
  name: '${storageAccountName}/default/${grant.queue}'
}]

resource userContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for grant in userContainerGrants: {
  name: '${storageAccountName}/default/${grant.container}'
}]

// --- control app ------------------------------------------------------------------------

// Jobs' lifecycle events: the control app publishes to the topic, and only to it.
resource controlEventsSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventsTopic.id, controlPrincipalId, roles.eventGridDataSender)
  scope: eventsTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
    principalId: controlPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource controlStorageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in controlStorageRoles: {
  name: guid(storage.id, controlPrincipalId, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: controlPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource controlMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, controlPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: controlPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- scoring app ------------------------------------------------------------------------

resource scoringBlobRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'batchfn-scoring-blobs')
  properties: {
    roleName: 'batchfn scoring blobs ${uniqueString(resourceGroup().id)}'
    description: 'batchfn scoring app: read and write blobs, create containers, sign read SAS URLs; no container delete or lease.'
    type: 'CustomRole'
    assignableScopes: [resourceGroup().id]
    permissions: [
      {
        actions: scoringBlobActions
        notActions: []
        dataActions: scoringBlobDataActions
        notDataActions: []
      }
    ]
  }
}

resource scoringBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, scoringPrincipalId, scoringBlobRole.id)
  scope: storage
  properties: {
    roleDefinitionId: scoringBlobRole.id
    principalId: scoringPrincipalId
    principalType: 'ServicePrincipal'
    condition: scoringBlobCondition
    conditionVersion: '2.0'
  }
}

resource scoringQueueRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (grant, i) in scoringQueueGrants: {
  name: guid(scoringQueues[i].id, scoringPrincipalId, grant.role)
  scope: scoringQueues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.role)
    principalId: scoringPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource scoringAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, scoringPrincipalId, roles.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: scoringPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource scoringMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, scoringPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: scoringPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- optional user ----------------------------------------------------------------------

resource userContainerRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (grant, i) in userContainerGrants: if (!empty(userPrincipalId)) {
  name: guid(userContainers[i].id, userPrincipalId, grant.role)
  scope: userContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.role)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}]
