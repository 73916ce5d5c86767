"""A real Kubernetes control plane on loopback for kubetune's tests and benchmarks.

* :mod:`tests.cluster.controlplane` -- etcd, kube-apiserver, kube-controller-manager and
  kube-scheduler as local processes (:class:`~tests.cluster.controlplane.ControlPlane`).
* :mod:`tests.cluster.process_node` -- a test-only "kubelet" that runs a pod's command as a
  local process (:class:`~tests.cluster.process_node.ProcessNode`).
* :mod:`tests.cluster.kwok` -- kwok with our own stages, for many fake nodes and pods.
* :mod:`tests.cluster.fixtures` -- the pytest fixtures built on them.

Binaries come from ``tests/cluster/build.sh`` (pinned in ``versions.env``).
"""
