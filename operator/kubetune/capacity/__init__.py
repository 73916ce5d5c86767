"""Spot node pools and cost: GPUs exist only while trials need them.

A functional core and an imperative shell, like the rest of kubetune:

* `pools` (pure): the node pools the operator is configured with (pydantic models of the
  ConfigMap `kubetune-system/kubetune-node-pools`), where a pool's trial pods go (node
  selector, tolerations) and the Auto Scaling group tags that let a group scale from zero.
* `scaling` (pure): given a pool, its nodes, its pending trial pods and its group's
  instances, the size the group should have and which *specific* empty instances to
  remove. It never picks a node that runs anything.
* `cost` (pure): node prices (spot prices from AWS, on-demand prices from configuration),
  node run time, and the attribution of a pool's cost to experiments by their trials'
  GPU-seconds.
* `aws` (shell): boto3 calls behind a rate limiter, with botocore's retries and a
  per-pool back-off for throttling; every AWS failure becomes an `AwsError`.
* `manager` (shell): the operator's loop that reads the configuration, lists nodes and
  pods, carries out the scaling plans (cordon, re-check, terminate), accounts cost and
  tells each experiment's controller what it has cost so far.

Pools are a ConfigMap rather than a CRD: see `pools` for why.
"""
