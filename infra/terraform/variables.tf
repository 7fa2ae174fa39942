# -- where ---------------------------------------------------------------------------------------

variable "aws_region" {
  description = "The AWS region of the skills bucket and, with database_mode = \"rds\", the database."
  type        = string
}

variable "kubeconfig_path" {
  description = "The kubeconfig of the cluster to install into."
  type        = string
  default     = "~/.kube/config"
}

variable "kube_context" {
  description = "The kubeconfig context to use; null: its current context."
  type        = string
  default     = null
}

variable "namespace" {
  description = "The namespace of the control plane, its Broker and every session."
  type        = string
  default     = "vwm"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "The namespace must be a DNS-1035 label: lower-case letters, digits and '-', at most 63 characters, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = { "app.kubernetes.io/part-of" = "vwm" }
}

# -- what --------------------------------------------------------------------------------------

variable "functions_image" {
  description = "The functions image (infra/docker/functions.Dockerfile), by tag or digest, e.g. registry.example.com/vwm/functions:0.1.0."
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[\\w][\\w.-]{0,127}|@sha256:[0-9a-f]{64})$", var.functions_image))
    error_message = "Name the functions image with a tag or a digest, never implicitly :latest."
  }
}

variable "harness_image" {
  description = "The harness image (infra/docker/harness.Dockerfile) new sessions run, by tag or digest; running sessions keep theirs."
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[\\w][\\w.-]{0,127}|@sha256:[0-9a-f]{64})$", var.harness_image))
    error_message = "Name the harness image with a tag or a digest, never implicitly :latest."
  }
}

variable "dead_letter_image" {
  description = "The image of the dead-letter sink (infra/knative/dead-letters.yaml): any CloudEvent receiver that records what it gets; Knative's event_display logs each event. Pin it by digest from your eventing release."
  type        = string
  default     = "gcr.io/knative-releases/knative.dev/eventing/cmd/event_display"
}

variable "settings" {
  description = "Control-plane settings (VWM_* variables, docs/operations.md) that replace or add to those of infra/knative/config.yaml, e.g. { VWM_SESSION_VOLUME_SIZE = \"20Gi\" }."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.settings) : can(regex("^VWM_[A-Z0-9_]+$", name))])
    error_message = "Every setting is a VWM_* variable."
  }
}

# -- Knative -------------------------------------------------------------------------------------

variable "knative_operator_version" {
  description = "The Knative Operator's Helm chart version (https://knative.github.io/operator)."
  type        = string
  default     = "v1.23.0"
}

variable "knative_serving_version" {
  description = "The Knative Serving version the operator installs."
  type        = string
  default     = "1.23"
}

variable "knative_eventing_version" {
  description = "The Knative Eventing version the operator installs."
  type        = string
  default     = "1.22"
}

# -- the database --------------------------------------------------------------------------------

variable "database_mode" {
  description = "Where PostgreSQL runs: \"rds\" (managed AWS RDS, modules/aws) or \"in-cluster\" (a Helm chart in the namespace, for trials)."
  type        = string
  default     = "rds"

  validation {
    condition     = contains(["rds", "in-cluster"], var.database_mode)
    error_message = "database_mode must be \"rds\" or \"in-cluster\"."
  }
}

variable "database_name" {
  description = "The database VWM uses (its schemas: shared, vwm, vw_telemetry)."
  type        = string
  default     = "vwm"
}

variable "database_username" {
  description = "The database user VWM connects as."
  type        = string
  default     = "vwm"
}

variable "rds_vpc_id" {
  description = "The VPC of the RDS instance (database_mode = \"rds\"): the cluster's VPC."
  type        = string
  default     = null
}

variable "rds_subnet_ids" {
  description = "Private subnets for the RDS instance, in at least two availability zones."
  type        = list(string)
  default     = []
}

variable "rds_allowed_cidr_blocks" {
  description = "Networks that may connect to the database on 5432: the cluster's node or pod networks."
  type        = list(string)
  default     = []
}

variable "rds_instance_class" {
  description = "The RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "rds_allocated_storage_gb" {
  description = "The RDS storage in GiB."
  type        = number
  default     = 50

  validation {
    condition     = var.rds_allocated_storage_gb >= 20
    error_message = "RDS for PostgreSQL needs at least 20 GiB."
  }
}

variable "rds_engine_version" {
  description = "The PostgreSQL major version on RDS."
  type        = string
  default     = "17"
}

variable "rds_multi_az" {
  description = "Whether the RDS instance has a standby in another availability zone."
  type        = bool
  default     = true
}

variable "rds_deletion_protection" {
  description = "Whether the RDS instance refuses to be deleted (turn off before destroying)."
  type        = bool
  default     = true
}

variable "in_cluster_postgres_chart_version" {
  description = "The version of the Bitnami PostgreSQL chart (database_mode = \"in-cluster\")."
  type        = string
  default     = "16.7.4"
}

# -- secrets and storage -------------------------------------------------------------------------

variable "token_key" {
  description = "The key harness tokens are derived from (at least 32 bytes); null: one is generated. Changing it invalidates every running session's token."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.token_key == null || length(coalesce(var.token_key, "x")) >= 32
    error_message = "The token key needs at least 32 characters (openssl rand -base64 48)."
  }
}

variable "skills_bucket_name" {
  description = "The S3 bucket that holds skill packages; globally unique."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.skills_bucket_name))
    error_message = "An S3 bucket name: 3-63 lower-case letters, digits, '.' and '-'."
  }
}

variable "s3_access_key_id" {
  description = "An access key id for the skills bucket, with s3_secret_access_key (the Secret vwm-s3); null: the functions use their pods' AWS identity (an IAM role through IRSA), which is better."
  type        = string
  default     = null
  sensitive   = true
}

variable "s3_secret_access_key" {
  description = "The secret of s3_access_key_id."
  type        = string
  default     = null
  sensitive   = true
}
