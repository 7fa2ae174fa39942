# The Secrets the functions read (infra/knative/functions.yaml): the database URL as
# VWM_DATABASE_URL, the harness token key, mounted as the file VWM_TOKEN_KEY_FILE names, and,
# only when S3 keys are given, the keys of the skills bucket (else the pods' IAM role is used).

resource "random_password" "token_key" {
  length  = 64
  special = false
}

resource "kubernetes_secret_v1" "database" {
  metadata {
    name      = "vwm-database"
    namespace = var.namespace
    labels    = { "app.kubernetes.io/part-of" = "vwm" }
  }
  data = {
    url = local.database_url
  }

  depends_on = [kubernetes_manifest.setup]
}

resource "kubernetes_secret_v1" "token_key" {
  metadata {
    name      = "vwm-token-key"
    namespace = var.namespace
    labels    = { "app.kubernetes.io/part-of" = "vwm" }
  }
  data = {
    key = coalesce(var.token_key, random_password.token_key.result)
  }

  depends_on = [kubernetes_manifest.setup]
}

resource "kubernetes_secret_v1" "s3" {
  count = var.s3_access_key_id == null && var.s3_secret_access_key == null ? 0 : 1

  metadata {
    name      = "vwm-s3"
    namespace = var.namespace
    labels    = { "app.kubernetes.io/part-of" = "vwm" }
  }
  data = {
    access-key-id     = var.s3_access_key_id
    secret-access-key = var.s3_secret_access_key
  }

  lifecycle {
    # (A variable's validation may name another variable only from Terraform 1.9 on.)
    precondition {
      condition     = var.s3_access_key_id != null && var.s3_secret_access_key != null
      error_message = "Give s3_access_key_id and s3_secret_access_key together, or neither."
    }
  }

  depends_on = [kubernetes_manifest.setup]
}
