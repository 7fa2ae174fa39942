# VWM itself: the manifests of infra/knative (not cluster/, which knative.tf covers), with their
# ${...} placeholders filled in, in three steps: the namespace, accounts, settings and Broker;
# the migration Job, which must finish before the functions roll; then the Services, Triggers
# and the tick.

locals {
  manifest_dir = "${path.module}/../knative"
  template_values = {
    namespace         = var.namespace
    functions_image   = var.functions_image
    harness_image     = var.harness_image
    dead_letter_image = var.dead_letter_image
    # The bucket modules/aws makes under this name (its output skills_bucket_name), in the
    # provider's region; it exists before the functions roll (the migration waits for module.aws).
    skills_bucket_name = var.skills_bucket_name
    aws_region         = var.aws_region
  }
  documents = flatten([
    for file in sort(fileset(local.manifest_dir, "*.yaml")) : [
      for text in split("\n---\n", templatefile("${local.manifest_dir}/${file}", local.template_values)) :
      yamldecode(text) if trimspace(replace(text, "/(?m)^\\s*#.*$/", "")) != ""
    ]
  ])
  # The ConfigMap gets var.settings over its own data.
  rendered = [
    for doc in local.documents :
    doc.kind == "ConfigMap" && doc.metadata.name == "vwm-config" ? merge(doc, { data = merge(doc.data, var.settings) }) : doc
  ]
  serving_kinds = ["Service", "Trigger", "PingSource"]
  setup = {
    for doc in local.rendered : "${doc.kind}/${doc.metadata.name}" => doc
    if !contains(concat(local.serving_kinds, ["Job"]), doc.kind)
  }
  serving = {
    for doc in local.rendered : "${doc.kind}/${doc.metadata.name}" => doc
    if contains(local.serving_kinds, doc.kind)
  }
  migrate_job = one([for doc in local.rendered : doc if doc.kind == "Job"])
}

resource "kubernetes_manifest" "setup" {
  for_each = local.setup
  manifest = each.value

  depends_on = [kubernetes_manifest.knative_serving, kubernetes_manifest.knative_eventing]
}

# A Job's pod template cannot change: each functions image gets its own Job.
resource "kubernetes_manifest" "migrate" {
  manifest = merge(local.migrate_job, {
    metadata = merge(local.migrate_job.metadata, {
      name = "vwm-migrate-${substr(sha256(var.functions_image), 0, 10)}"
    })
  })

  wait {
    condition {
      type   = "Complete"
      status = "True"
    }
  }

  timeouts {
    create = "15m"
  }

  depends_on = [
    kubernetes_secret_v1.database,
    helm_release.postgres,
    module.aws,
  ]
}

resource "kubernetes_manifest" "serving" {
  for_each = local.serving
  manifest = each.value

  depends_on = [
    kubernetes_manifest.migrate,
    kubernetes_secret_v1.token_key,
    # Optional in the pods: one made after them would go unseen until their next revision.
    kubernetes_secret_v1.s3,
  ]
}
