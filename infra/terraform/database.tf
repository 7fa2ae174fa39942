# PostgreSQL in the cluster (database_mode = "in-cluster"): one Bitnami PostgreSQL with a
# persistent volume, for trials and small installs; production uses RDS (aws.tf).

resource "random_password" "database" {
  length  = 40
  special = false # it goes into a URL
}

resource "helm_release" "postgres" {
  count = var.database_mode == "in-cluster" ? 1 : 0

  name       = "vwm-postgres"
  repository = "oci://registry-1.docker.io/bitnamicharts"
  chart      = "postgresql"
  version    = var.in_cluster_postgres_chart_version
  namespace  = var.namespace
  wait       = true

  set {
    name  = "auth.username"
    value = var.database_username
  }
  set {
    name  = "auth.database"
    value = var.database_name
  }
  set_sensitive {
    name  = "auth.password"
    value = random_password.database.result
  }
  set_sensitive {
    name  = "auth.postgresPassword"
    value = random_password.database.result
  }

  depends_on = [kubernetes_manifest.setup]
}

locals {
  database_host = (
    var.database_mode == "rds"
    ? module.aws.database_host
    : "vwm-postgres-postgresql.${var.namespace}.svc.cluster.local"
  )
  database_port = var.database_mode == "rds" ? module.aws.database_port : 5432
  # SQLAlchemy + pg8000 (docs/control-plane.md).
  database_url = format(
    "postgresql+pg8000://%s:%s@%s:%d/%s",
    var.database_username,
    random_password.database.result,
    coalesce(local.database_host, "unset"),
    coalesce(local.database_port, 5432),
    var.database_name,
  )
}
