# The Secrets the functions read (infra/knative/functions.yaml): the database URL as
# VWM_DATABASE_URL, and the harness token key, mounted as the file VWM_TOKEN_KEY_FILE names.

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
