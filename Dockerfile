# bulklabel image: classify, worker, submit, status, results, scheduler, exporter; `celery flower` too.
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bulklabel bulklabel
COPY worker worker
COPY producer producer
# GPU images (the default) carry TensorFlow's CUDA libraries; EXTRAS=parquet makes a CPU-only one.
# Flower (a few MB) is installed too, so the same image runs the 'flower' service of
# docker-compose.yml and deploy/k8s/optional/flower.yaml: `celery flower` (see deploy/README.md).
ARG EXTRAS=parquet,gpu
RUN pip install ".[${EXTRAS}]" "flower>=2.0"
ENTRYPOINT ["bulklabel"]
CMD ["--help"]
