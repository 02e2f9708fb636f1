// Blob drop on Flex Consumption: Flex runs blob triggers only with the Event Grid source, so
// BlobCreated events of the drop container are pushed to the blobs extension's webhook.
// The webhook needs the app's `blobs_extension` system key, which exists only after the code
// is published: the first deployment creates the system topic, the second (with
// blobsExtensionKey) the subscription. Event Grid validates the endpoint when subscribing.
param systemTopicName string
param location string
param tags object = {}
param storageAccountName string
param dropContainerName string
param functionAppHostName string

@description('Name of the blob-triggered function (functions/blob_drop.py).')
param functionName string = 'blob_drop'

@secure()
param blobsExtensionKey string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource blobDropSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (!empty(blobsExtensionKey)) {
  parent: systemTopic
  name: 'blob-drop'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionAppHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'
        maxEventsPerBatch: 1
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated']
      subjectBeginsWith: '/blobServices/default/containers/${dropContainerName}/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output systemTopicName string = systemTopic.name
