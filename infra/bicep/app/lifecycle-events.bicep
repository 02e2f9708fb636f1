// Jobs' lifecycle events: an Event Grid custom topic taking CloudEvents 1.0, which the
// control app publishes to with its identity (EventGrid Data Sender, granted in
// rbac.bicep) at BATCHFN_EVENTGRID_ENDPOINT. Subscriptions are the user's: a webhook, a
// storage queue, a function (docs/deploy-azure.md). Keys are off: only Entra ID publishes.
param name string
param location string
param tags object = {}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  // checkov:skip=CKV_AZURE_193: the Flex Consumption control app publishes without a virtual network; keys are off, so only identities granted EventGrid Data Sender can publish
  name: name
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output name string = topic.name
output endpoint string = topic.properties.endpoint
