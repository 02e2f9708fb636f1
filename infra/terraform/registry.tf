# The container registry the scoring image is built into (az acr build) and pulled from.
# No admin user (anonymous pull stays off, its default): the scoring app pulls with its
# identity (AcrPull).

resource "azurerm_container_registry" "main" {
  #checkov:skip=CKV_AZURE_139:az acr build and the scoring app's image pulls reach the registry over its public endpoint; every push and pull needs an Entra ID token with an AcrPush/AcrPull role (no admin user, no anonymous pull). Use Premium with a private endpoint to close it
  #checkov:skip=CKV_AZURE_163:Image vulnerability scanning is Microsoft Defender for Containers, a subscription-wide plan this deployment does not switch on
  #checkov:skip=CKV_AZURE_164:Signed images (content trust) need Premium; the registry holds only the image built from this repository
  #checkov:skip=CKV_AZURE_165:Geo-replication needs Premium; the scoring image can be rebuilt from the repository at any time
  #checkov:skip=CKV_AZURE_166:Quarantine needs Premium and a scanner that releases images; none is deployed
  #checkov:skip=CKV_AZURE_167:Untagged-manifest retention needs Premium; each build pushes a tag you choose
  #checkov:skip=CKV_AZURE_233:Zone redundancy needs Premium; the scoring image can be rebuilt from the repository at any time
  #checkov:skip=CKV_AZURE_237:Dedicated data endpoints need Premium and matter only behind a firewall
  name                          = local.names.registry
  resource_group_name           = azurerm_resource_group.main.name
  location                      = azurerm_resource_group.main.location
  sku                           = var.registry_sku
  admin_enabled                 = false
  public_network_access_enabled = true
  tags                          = local.tags
}
