"""The embedded broker of `vwm up`: Knative Eventing's Trigger semantics without Kubernetes.

In production the Knative Broker routes CloudEvents to the functions and this package is not
deployed; in the embedded default it will do the same job in-process, with the same meaning:
`filters` (which events a subscription gets) and `delivery` (retries, backoff, per-attempt
timeout, dead-letter sink). Its queue in the database and its delivery loop come next; see
docs/broker.md. Pure code: nothing here does I/O.
"""
