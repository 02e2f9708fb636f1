output "resource_group" {
  value = azurerm_resource_group.main.name
}

output "function_app_name" {
  value = azurerm_function_app_flex_consumption.app.name
}

output "function_app_hostname" {
  value = azurerm_function_app_flex_consumption.app.default_hostname
}

output "batchfn_url" {
  description = "What BATCHFN_URL should be for the batchfn CLI and client."
  value       = "https://${azurerm_function_app_flex_consumption.app.default_hostname}"
}

output "storage_account_name" {
  value = azurerm_storage_account.main.name
}

output "identity_client_id" {
  value = azurerm_user_assigned_identity.app.client_id
}

output "event_grid_system_topic" {
  value = azurerm_eventgrid_system_topic.storage.name
}
