output "skills_bucket_name" {
  description = "The skills bucket's name."
  value       = aws_s3_bucket.skills.id
}

output "skills_bucket_arn" {
  description = "The skills bucket's ARN, for the IAM policy of whatever reads and writes skills."
  value       = aws_s3_bucket.skills.arn
}

output "database_host" {
  description = "The RDS instance's host name; null when no database was created."
  value       = one(aws_db_instance.vwm[*].address)
}

output "database_port" {
  description = "The RDS instance's port; null when no database was created."
  value       = one(aws_db_instance.vwm[*].port)
}
