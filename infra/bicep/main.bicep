// batchfn in Azure: a Flex Consumption Function App over one storage account, with a
// user-assigned identity and identity-based connections only (the account refuses keys).
// Deploy with: az deployment sub create --location <region> --template-file main.bicep
//              --parameters main.parameters.json   (see docs/deploy-azure.md)
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('Name of the environment; prefixes the resource group and seeds the resource names.')
param environmentName string

@minLength(1)
@description('Region for every resource. Flex Consumption is not offered in every region: az functionapp list-flexconsumption-locations.')
param location string

@description('Resource group to create; defaults to rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of a user or group that gets the same storage data roles as the app (for the batchfn CLI and Storage Explorer). Empty: none.')
param principalId string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
@description('Kind of principal principalId names.')
param principalType string = 'User'

@allowed([2048, 4096])
@description('Memory of each Function App instance in MB; scoring scripts that load torch models want 4096.')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Most instances the app scales out to; batchfn\'s instance_count cannot go past it.')
param maximumInstanceCount int = 100

@secure()
@description('The app\'s blobs_extension system key. Empty on the first deployment; set it on the second to subscribe the blob-drop container to Event Grid (docs/deploy-azure.md, step 4).')
param blobsExtensionKey string = ''

var tags = { 'azd-env-name': environmentName, application: 'batchfn' }
var token = toLower(uniqueString(subscription().id, environmentName, location))
var names = {
  resourceGroup: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  identity: 'id-batchfn-${token}'
  storage: 'stbatchfn${take(token, 13)}'
  logAnalytics: 'log-batchfn-${token}'
  appInsights: 'appi-batchfn-${token}'
  plan: 'plan-batchfn-${token}'
  functionApp: 'func-batchfn-${token}'
  systemTopic: 'evgt-batchfn-${token}'
}
var deploymentContainerName = 'app-package-${take(token, 12)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: names.identity
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

module rbac 'rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
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
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
  // The host reads its storage the moment the app starts: grant the roles first.
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
    functionAppHostName: functionApp.outputs.defaultHostName
    blobsExtensionKey: blobsExtensionKey
  }
}

output AZURE_LOCATION string = location
output RESOURCE_GROUP string = rg.name
output FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_HOSTNAME string = functionApp.outputs.defaultHostName
output BATCHFN_URL string = 'https://${functionApp.outputs.defaultHostName}'
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output IDENTITY_CLIENT_ID string = identity.outputs.clientId
output EVENT_GRID_SYSTEM_TOPIC string = eventGrid.outputs.systemTopicName
