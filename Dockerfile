# bulklabel image: classify, worker, submit, status, results.
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bulklabel bulklabel
COPY worker worker
COPY producer producer
# GPU images (the default) carry TensorFlow's CUDA libraries; EXTRAS=parquet makes a CPU-only one.
ARG EXTRAS=parquet,gpu
RUN pip install ".[${EXTRAS}]"
ENTRYPOINT ["bulklabel"]
CMD ["--help"]
