output "namespace" {
  description = "The namespace of the control plane and the sessions."
  value       = var.namespace
}

output "broker_url" {
  description = "The Broker's ingress: where other services publish VWM CloudEvents (prompt.requested ...)."
  value       = "http://broker-ingress.knative-eventing.svc.cluster.local/${var.namespace}/vwm"
}

output "function_services" {
  description = "The Knative Services of the functions; `kubectl get ksvc -n <namespace>` shows their URLs."
  value       = sort([for key, doc in local.serving : doc.metadata.name if doc.kind == "Service"])
}

output "skills_bucket_name" {
  description = "The S3 bucket of skill packages."
  value       = module.aws.skills_bucket_name
}

output "database_host" {
  description = "Where PostgreSQL runs."
  value       = local.database_host
}

output "database_url" {
  description = "The URL the functions use (also in the Secret vwm-database)."
  value       = local.database_url
  sensitive   = true
}
