// The container registry the scoring image is built into (az acr build) and pulled from.
// No admin user (anonymous pull stays off, its default): the scoring app pulls with its
// identity (AcrPull).
param name string
param location string
param tags object = {}

@allowed(['Basic', 'Standard', 'Premium'])
@description('Basic is enough for one image; Premium adds artifact streaming (faster GPU cold starts), private endpoints and retention policies.')
param sku string = 'Basic'

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_139: az acr build and the scoring app's image pulls reach the registry over its public endpoint; every push and pull needs an Entra ID token with an AcrPush/AcrPull role (no admin user, no anonymous pull). Use Premium with a private endpoint to close it
  // checkov:skip=CKV_AZURE_163: Image vulnerability scanning is Microsoft Defender for Containers, a subscription-wide plan this deployment does not switch on
  // checkov:skip=CKV_AZURE_166: Quarantine needs Premium and a scanner that releases images; none is deployed
  // checkov:skip=CKV_AZURE_233: Zone redundancy needs Premium; the scoring image can be rebuilt from the repository at any time
  name: name
  location: location
  tags: tags
  sku: { name: sku }
  properties: {
    adminUserEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

output name string = registry.name
output loginServer string = registry.properties.loginServer
