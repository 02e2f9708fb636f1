output "resource_group" {
  value = azurerm_resource_group.main.name
}

output "function_app_name" {
  value = azapi_resource.function_app.name
}

output "function_app_hostname" {
  value = azapi_resource.function_app.output.properties.defaultHostName
}

output "batchfn_url" {
  description = "What BATCHFN_URL should be for the batchfn CLI and client."
  value       = "https://${azapi_resource.function_app.output.properties.defaultHostName}"
}

output "storage_account_name" {
  value = azurerm_storage_account.main.name
}

output "identity_client_id" {
  description = "The control app's identity."
  value       = azurerm_user_assigned_identity.control.client_id
}

output "scoring_identity_client_id" {
  value = azurerm_user_assigned_identity.scoring.client_id
}

output "registry_name" {
  value = azurerm_container_registry.main.name
}

output "registry_login_server" {
  description = "Where az acr build pushes the scoring image."
  value       = azurerm_container_registry.main.login_server
}

output "container_apps_environment" {
  value = azapi_resource.container_apps_environment.name
}

output "scoring_app_name" {
  description = "Empty until scoring_image is set."
  value       = var.scoring_image == "" ? "" : azapi_resource.scoring_app["main"].name
}

output "scoring_profile_app_names" {
  description = "The scoring apps of scoring_profiles; empty until scoring_image is set."
  value       = [for key, app in azapi_resource.scoring_app : app.name if key != "main"]
}

output "event_grid_system_topic" {
  value = azurerm_eventgrid_system_topic.storage.name
}

output "events_topic_name" {
  value = azurerm_eventgrid_topic.lifecycle.name
}

output "events_topic_endpoint" {
  description = "Where jobs' lifecycle events are published (CloudEvents 1.0): subscribe to this topic."
  value       = azurerm_eventgrid_topic.lifecycle.endpoint
}
