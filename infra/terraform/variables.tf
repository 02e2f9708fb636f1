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
  description = "Region for every resource. It must offer Flex Consumption (az functionapp list-flexconsumption-locations) and the scoring workload profile (az containerapp env workload-profile list-supported -l <region>)."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group to create; empty means rg-<environment_name>."
  type        = string
  default     = ""
}

variable "principal_id" {
  description = "Object id of a user or group that gets what the batchfn CLI's user needs in storage (read large outputs, drop files). Empty: none."
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
  description = "Memory of each control app instance in MB."
  type        = number
  default     = 2048
  validation {
    condition     = contains([2048, 4096], var.instance_memory_mb)
    error_message = "instance_memory_mb must be 2048 or 4096."
  }
}

variable "maximum_instance_count" {
  description = "Most instances the control app scales out to (Flex Consumption takes 40 at least)."
  type        = number
  default     = 100
  validation {
    condition     = var.maximum_instance_count >= 40 && var.maximum_instance_count <= 1000
    error_message = "maximum_instance_count must be between 40 (the Flex Consumption minimum) and 1000."
  }
}

variable "max_files_per_job" {
  description = "Most input files one job may have (BATCHFN_MAX_FILES_PER_JOB); a larger input fails its job before any mini-batch is sent."
  type        = number
  default     = 1000000
  validation {
    condition     = var.max_files_per_job >= 1
    error_message = "max_files_per_job must be at least 1."
  }
}

variable "max_rows_per_job" {
  description = "Most rows one tabular job may have (BATCHFN_MAX_ROWS_PER_JOB), counted as planned (a parquet file: as its footer claims)."
  type        = number
  default     = 1000000000
  validation {
    condition     = var.max_rows_per_job >= 1
    error_message = "max_rows_per_job must be at least 1."
  }
}

variable "max_mini_batches_per_job" {
  description = "Most mini-batches (queue messages) one job may have (BATCHFN_MAX_MINI_BATCHES_PER_JOB)."
  type        = number
  default     = 1000000
  validation {
    condition     = var.max_mini_batches_per_job >= 1
    error_message = "max_mini_batches_per_job must be at least 1."
  }
}

variable "datastores" {
  description = "Datastores jobs may read and write beside workspaceblobstore (the container batchfn-data): name=container pairs, comma separated, naming containers of this storage account (docs/security.md). Empty: only workspaceblobstore."
  type        = string
  default     = ""
}

variable "subscribe_blob_drop" {
  description = "Subscribe the blob-drop container to Event Grid. Needs the control app's code published (docs/deploy-azure.md, step 5): the webhook key is read from the app's host keys."
  type        = bool
  default     = false
}

variable "scoring_workload_profile" {
  description = "Workload profile of the scoring app: a serverless NVIDIA T4 (16 GB) or A100 (80 GB) GPU per replica, or Consumption (CPU only, 4 vCPU / 8 GiB)."
  type        = string
  default     = "Consumption-GPU-NC8as-T4"
  validation {
    condition     = contains(["Consumption-GPU-NC8as-T4", "Consumption-GPU-NC24-A100", "Consumption"], var.scoring_workload_profile)
    error_message = "scoring_workload_profile must be Consumption-GPU-NC8as-T4, Consumption-GPU-NC24-A100 or Consumption."
  }
}

variable "scoring_image" {
  description = "The scoring image, <registry login server>/batchfn-scoring:<tag>. Empty on the first apply (the registry does not exist yet): everything but the scoring app is created."
  type        = string
  default     = ""
}

variable "scoring_max_replicas" {
  description = "Most scoring replicas (GPUs) at once; batchfn's instance_count cannot go past it. Keep it within your serverless GPU quota."
  type        = number
  default     = 4
  validation {
    condition     = var.scoring_max_replicas >= 1 && var.scoring_max_replicas <= 100
    error_message = "scoring_max_replicas must be between 1 and 100."
  }
}

variable "scoring_worker_slots" {
  description = "Mini-batches one scoring replica runs at once; set it to your GPU deployments' max_concurrency_per_instance."
  type        = number
  default     = 1
  validation {
    condition     = var.scoring_worker_slots >= 1 && var.scoring_worker_slots <= 16
    error_message = "scoring_worker_slots must be between 1 and 16."
  }
}

variable "registry_sku" {
  description = "Container registry SKU; Premium adds artifact streaming for faster GPU cold starts."
  type        = string
  default     = "Basic"
  validation {
    condition     = contains(["Basic", "Standard", "Premium"], var.registry_sku)
    error_message = "registry_sku must be Basic, Standard or Premium."
  }
}

variable "scoring_profiles" {
  description = "Scoring profiles that get a scoring app of their own beside the main one: computes whose size maps to one (gpu-t4: a T4 GPU, gpu-a100: an A100 GPU, cpu: CPU only) run there (docs/concepts.md). Empty: every compute runs on the main scoring app, and a size that needs another profile is refused at compute create."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for profile in var.scoring_profiles : contains(["gpu-t4", "gpu-a100", "cpu"], profile)])
    error_message = "scoring_profiles may hold gpu-t4, gpu-a100 and cpu."
  }
}

variable "scoring_min_replicas" {
  description = "Replicas the main scoring app keeps warm: the min_instances of the computes it serves (0 scales to zero)."
  type        = number
  default     = 0
  validation {
    condition     = var.scoring_min_replicas >= 0 && var.scoring_min_replicas <= 100
    error_message = "scoring_min_replicas must be between 0 and 100."
  }
}

variable "scoring_profile_min_replicas" {
  description = "Replicas each profile app keeps warm, by profile (e.g. { gpu-a100 = 1 }): the min_instances of the computes of that size. A profile not named keeps none."
  type        = map(number)
  default     = {}
}

variable "input_aliases" {
  description = "Input URLs that stand for a datastore path or a data asset: <URL prefix>=<target> pairs separated by \";\" (BATCHFN_INPUT_ALIASES, docs/security.md). Empty: none."
  type        = string
  default     = ""
}
