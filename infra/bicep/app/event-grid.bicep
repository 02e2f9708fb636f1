// Blob drop on Flex Consumption: Flex runs blob triggers only with the Event Grid source, so
// BlobCreated events of drop markers (batchfn-drop/<endpoint>/<folder>/_start) are pushed
// to the blobs extension's webhook. Data files dropped beside a marker fire nothing.
// The webhook needs the app's blobs_extension system key, which exists only once the
// published code has started: the first deployment creates the system topic, a second one
// with subscribeBlobDrop reads the key from the app's host keys and subscribes. ARM
// evaluates a list function in a conditional resource even when the resource is not
// deployed, so the key is read inside `subscribeBlobDrop ? ... : ''`: never without it. Event Grid
// validates the endpoint when subscribing. Events it cannot deliver (after the retries) are
// dead-lettered as blobs, written with the system topic's own identity.
param systemTopicName string
param location string
param tags object = {}
param storageAccountName string
param dropContainerName string
param deadLetterContainerName string
param functionAppName string

@description('Name of the blob-triggered function (functions/blob_drop.py).')
param functionName string = 'blob_drop'

@description('Subscribe the drop container (the control app\'s code must be published first).')
param subscribeBlobDrop bool = false

// shared/control/blob_drop.py: a job starts from the marker blob named _start.
var markerSuffix = '/_start'
var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  name: '${storageAccountName}/default/${deadLetterContainerName}'
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// The topic writes undeliverable events into the dead-letter container, and nowhere else.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, systemTopic.id, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource blobDropSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (subscribeBlobDrop) {
  parent: systemTopic
  name: 'blob-drop'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: subscribeBlobDrop ? format('https://{0}/runtime/webhooks/blobs?functionName=Host.Functions.{1}&code={2}', functionApp.properties.defaultHostName, functionName, listKeys('${functionApp.id}/host/default', '2024-04-01').systemKeys.blobs_extension) : ''
        maxEventsPerBatch: 1
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated']
      subjectBeginsWith: '/blobServices/default/containers/${dropContainerName}/blobs/'
      subjectEndsWith: markerSuffix
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
  dependsOn: [deadLetterWriter]
}

output systemTopicName string = systemTopic.name
