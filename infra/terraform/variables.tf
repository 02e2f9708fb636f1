variable "subscription_id" {
  description = "Subscription to deploy to; null uses ARM_SUBSCRIPTION_ID or the az CLI's current subscription."
  type        = string
  default     = null
}

variable "environment_name" {
  description = "Name of the environment; prefixes the resource group and seeds the resource names."
  type        = string
  validation {
    condition     = length(var.environment_name) >= 1 && length(var.environment_name) <= 40
    error_message = "environment_name must have 1 to 40 characters."
  }
}

variable "location" {
  description = "Region for every resource. Flex Consumption is not offered in every region: az functionapp list-flexconsumption-locations."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group to create; empty means rg-<environment_name>."
  type        = string
  default     = ""
}

variable "principal_id" {
  description = "Object id of a user or group that gets the same storage data roles as the app (for the batchfn CLI and Storage Explorer). Empty: none."
  type        = string
  default     = ""
}

variable "principal_type" {
  description = "Kind of principal principal_id names: User, Group or ServicePrincipal."
  type        = string
  default     = "User"
  validation {
    condition     = contains(["User", "Group", "ServicePrincipal"], var.principal_type)
    error_message = "principal_type must be User, Group or ServicePrincipal."
  }
}

variable "instance_memory_mb" {
  description = "Memory of each Function App instance in MB; scoring scripts that load torch models want 4096."
  type        = number
  default     = 2048
  validation {
    condition     = contains([2048, 4096], var.instance_memory_mb)
    error_message = "instance_memory_mb must be 2048 or 4096."
  }
}

variable "maximum_instance_count" {
  description = "Most instances the app scales out to; batchfn's instance_count cannot go past it."
  type        = number
  default     = 100
  validation {
    condition     = var.maximum_instance_count >= 1 && var.maximum_instance_count <= 1000
    error_message = "maximum_instance_count must be between 1 and 1000."
  }
}

variable "blobs_extension_key" {
  description = "The app's blobs_extension system key. Empty on the first apply; set it on the second to subscribe the blob-drop container to Event Grid (docs/deploy-azure.md, step 4)."
  type        = string
  default     = ""
  sensitive   = true
}
