# The kubetune operator image: `kubetune operator ...` (kopf), with a CPU build of torch
# for `algorithm: bayesian` (Optuna's GP sampler runs in the operator, not in trials).
#
#   docker build -t kubetune/operator:latest .
#   kind load docker-image kubetune/operator:latest && kubectl apply -k manifests/
#
# The trial image is a different one: trial_image/Dockerfile.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/kubetune
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY trial_image/kubetune_trial/ trial_image/kubetune_trial/
# The `operator` extra: kopf, the Kubernetes client, prometheus-client; and torch from
# PyTorch's CPU index (a fraction of the CUDA build's size; the GP needs no GPU).
RUN /opt/kubetune/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu \
 && /opt/kubetune/bin/pip install ".[operator]" \
 && /opt/kubetune/bin/python -c "import kubetune.cli, kopf, kubernetes, optuna, torch"

FROM python:3.11-slim
# A fixed numeric UID, so that the pod's runAsNonRoot can verify it.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin kubetune
COPY --from=build /opt/kubetune /opt/kubetune
# PYTHONDONTWRITEBYTECODE: the pod's root filesystem is read-only.
ENV PATH=/opt/kubetune/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["kubetune"]
CMD ["--help"]
