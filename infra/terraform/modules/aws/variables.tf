variable "name" {
  description = "The prefix of every resource's name, e.g. vwm."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.name))
    error_message = "Use 1-31 lower-case letters, digits and '-', starting with a letter."
  }
}

variable "skills_bucket_name" {
  description = "The S3 bucket that holds skill packages; globally unique."
  type        = string
}

variable "create_database" {
  description = "Whether to create the RDS PostgreSQL instance (false: the database runs elsewhere)."
  type        = bool
  default     = true
}

variable "vpc_id" {
  description = "The VPC of the database."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Private subnets for the database, in at least two availability zones."
  type        = list(string)
  default     = []
}

variable "allowed_cidr_blocks" {
  description = "Networks that may connect to the database on 5432."
  type        = list(string)
  default     = []
}

variable "database_name" {
  description = "The database to create."
  type        = string
  default     = "vwm"
}

variable "database_username" {
  description = "The database's master user."
  type        = string
  default     = "vwm"
}

variable "database_password" {
  description = "The master user's password."
  type        = string
  sensitive   = true
  default     = null
}

variable "instance_class" {
  description = "The RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "allocated_storage_gb" {
  description = "The storage in GiB; it grows on its own up to four times this."
  type        = number
  default     = 50
}

variable "engine_version" {
  description = "The PostgreSQL major version."
  type        = string
  default     = "17"
}

variable "multi_az" {
  description = "Whether the instance has a standby in another availability zone."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Whether the instance refuses to be deleted."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "How many days of automated backups to keep."
  type        = number
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "RDS keeps 1 to 35 days of backups."
  }
}
