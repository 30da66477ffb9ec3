# The image Foundry's KubeRay manifests run (control.kuberay.manifests.IMAGE):
#
#   docker build -t ghcr.io/foundry/foundry:0.1.0 .
#
# FROM the Ray image of the Ray and Python versions pyproject.toml pins (ray==2.60.0, Python
# 3.11): every pod of a RayService runs this image, and Ray refuses to join nodes of different
# versions. Foundry goes in with its `gpu` extra (CUDA vLLM, which brings its own torch).
# Nothing secret is baked in: the endpoint's API key reaches the pods from a Kubernetes Secret
# ($FOUNDRY_ENDPOINT_KEY), model weights from a volume.
# tests/unit/test_dockerfile.py keeps these versions in step with pyproject.toml.
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-gpu
ARG RAY_VERSION

ENV FOUNDRY_HOME=/home/ray/.foundry \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /home/ray/foundry
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users serve ./serve
COPY --chown=ray:users tune ./tune
COPY --chown=ray:users control ./control
COPY --chown=ray:users pipelines ./pipelines

RUN pip install ".[gpu]" \
    && python -c "import ray, serve.endpoint, control.kuberay; assert ray.__version__ == '${RAY_VERSION}', ray.__version__"
