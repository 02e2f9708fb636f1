// The control app: a Function App on a Flex Consumption plan (Linux, Python 3.11) serving
// BATCHFN_ROLE=control (HTTP API, orchestration, blob drop; the scoring app runs the
// mini-batch queues on Container Apps), as the control identity. All storage connections are
// identity based: no keys anywhere.
param planName string
param name string
param location string
param tags object = {}
param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string
param identityId string
param identityClientId string

@allowed([2048, 4096])
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Flex Consumption refuses fewer than 40.')
param maximumInstanceCount int = 100

@description('Datastores jobs may read and write beside workspaceblobstore: name=container pairs, comma separated (BATCHFN_DATASTORES).')
param datastores string = ''

@description('The Event Grid topic jobs\' lifecycle events are published to (BATCHFN_EVENTGRID_ENDPOINT).')
param eventsTopicEndpoint string

@minValue(1)
@description('BATCHFN_MAX_FILES_PER_JOB: most input files of one job.')
param maxFilesPerJob int = 1000000

@minValue(1)
@description('BATCHFN_MAX_ROWS_PER_JOB: most rows of one tabular job.')
param maxRowsPerJob int = 1000000000

@minValue(1)
@description('BATCHFN_MAX_MINI_BATCHES_PER_JOB: most mini-batches of one job.')
param maxMiniBatchesPerJob int = 1000000

@description('Input URLs that stand for a datastore path or a data asset (BATCHFN_INPUT_ALIASES).')
param inputAliases string = ''

@description('The main scoring app\'s profile, then those with scoring apps of their own (BATCHFN_SCORING_PROFILES).')
param scoringProfiles string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption exists only in some regions and keeps instances running; batch jobs survive an instance loss through queue redelivery
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

// The connection "AzureWebJobsStorage" is both the host's storage (Durable task hub, keys,
// blob trigger receipts) and batchfn's own (shared/storage/account.py reads the same settings).
var storageSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
}
var roleSettings = {
  BATCHFN_ROLE: 'control'
  BATCHFN_DATASTORES: datastores
  BATCHFN_EVENTGRID_ENDPOINT: eventsTopicEndpoint
  // The planner's caps on one job, checked before any of its mini-batches is sent.
  BATCHFN_MAX_FILES_PER_JOB: string(maxFilesPerJob)
  BATCHFN_MAX_ROWS_PER_JOB: string(maxRowsPerJob)
  BATCHFN_MAX_MINI_BATCHES_PER_JOB: string(maxMiniBatchesPerJob)
  BATCHFN_INPUT_ALIASES: inputAliases
  BATCHFN_SCORING_PROFILES: scoringProfiles
}
var monitoringSettings = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the batchfn API is called from users' machines (CLI, client); requests need a function key
  // checkov:skip=CKV_AZURE_17: callers authenticate with function keys (or Entra ID via App Service auth), not client certificates
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales to zero by design; queue messages and Durable state carry work across instances
  // checkov:skip=CKV_AZURE_213: App Service health check does not apply to Flex Consumption; the app serves GET /api/health for probes
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }

  resource appSettings 'config' = {
    name: 'appsettings'
    properties: union(roleSettings, storageSettings, monitoringSettings)
  }

  // Publishing uses Entra ID (az / func with your login), never basic-auth credentials.
  resource ftpCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'ftp'
    properties: { allow: false }
  }

  resource scmCredentials 'basicPublishingCredentialsPolicies' = {
    name: 'scm'
    properties: { allow: false }
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
