# The cdco image: the project and its dependencies on CPU. Used by docker-compose.yml for the worker (runs the
# deployments), the Dask scheduler and workers, and the MLflow server. Build: docker build -t cdco .
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    CDCO_HOME=/data/cdco \
    CDCO_PROJECT_DIR=/opt/cdco

WORKDIR /opt/cdco

# CPU torch first, from PyTorch's CPU index: an unpinned torch from PyPI would pull the CUDA stack.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"

# Dependencies before the sources, so editing code does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p cdco_core flows tasks bench && touch cdco_core/__init__.py flows/__init__.py tasks/__init__.py \
        bench/__init__.py \
    && pip install -e . \
    && rm -rf cdco_core flows tasks bench

COPY cdco_core cdco_core
COPY flows flows
COPY tasks tasks
COPY bench bench
COPY conf conf
COPY prefect.yaml Makefile ./
RUN pip install --no-deps -e . && useradd --create-home --uid 1000 cdco \
    && mkdir -p /data/cdco /mlartifacts && chown -R cdco /data/cdco /mlartifacts /opt/cdco
USER cdco

CMD ["cdco", "--help"]
