# The Knative Operator, then Knative Serving and Eventing with what VWM needs (the same settings
# as infra/knative/cluster/*.yaml, which a kubectl install applies; tests/infra keeps them equal).
#
# The Knative kinds only exist once the operator runs: on a new cluster apply in two steps
# (docs/operations.md): first -target=kubernetes_manifest.knative_serving
# -target=kubernetes_manifest.knative_eventing, then everything.

locals {
  # config-features: a session is a Knative Service with its own PVC (writable) and the
  # harness's uid in the pod securityContext.
  serving_features = {
    "kubernetes.podspec-persistent-volume-claim" = "enabled"
    "kubernetes.podspec-persistent-volume-write" = "enabled"
    "kubernetes.podspec-securitycontext"         = "enabled"
  }
  # config-defaults: agent runs are long; VWM_SESSION_REQUEST_TIMEOUT_S and the prompts
  # function's timeoutSeconds stay at or under the maximum.
  serving_defaults = {
    "revision-timeout-seconds"                = "300"
    "max-revision-timeout-seconds"            = "86400"
    "revision-response-start-timeout-seconds" = "300"
  }
  eventing_features = {
    "delivery-timeout" = "enabled"
  }
}

resource "helm_release" "knative_operator" {
  name             = "knative-operator"
  repository       = "https://knative.github.io/operator"
  chart            = "knative-operator"
  version          = var.knative_operator_version
  namespace        = "knative-operator"
  create_namespace = true
  wait             = true
}

resource "kubernetes_namespace_v1" "knative_serving" {
  metadata {
    name = "knative-serving"
  }
}

resource "kubernetes_namespace_v1" "knative_eventing" {
  metadata {
    name = "knative-eventing"
  }
}

resource "kubernetes_manifest" "knative_serving" {
  manifest = {
    apiVersion = "operator.knative.dev/v1beta1"
    kind       = "KnativeServing"
    metadata = {
      name      = "knative-serving"
      namespace = kubernetes_namespace_v1.knative_serving.metadata[0].name
    }
    spec = {
      version = var.knative_serving_version
      ingress = {
        kourier = { enabled = true }
      }
      config = {
        network  = { "ingress-class" = "kourier.ingress.networking.knative.dev" }
        features = local.serving_features
        defaults = local.serving_defaults
      }
    }
  }

  depends_on = [helm_release.knative_operator]
}

resource "kubernetes_manifest" "knative_eventing" {
  manifest = {
    apiVersion = "operator.knative.dev/v1beta1"
    kind       = "KnativeEventing"
    metadata = {
      name      = "knative-eventing"
      namespace = kubernetes_namespace_v1.knative_eventing.metadata[0].name
    }
    spec = {
      version            = var.knative_eventing_version
      defaultBrokerClass = "MTChannelBasedBroker"
      config = {
        features = local.eventing_features
      }
    }
  }

  depends_on = [helm_release.knative_operator]
}
