# bulklabel image: the embedded classifier now, the GPU workers once they land.
FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bulklabel bulklabel
COPY worker worker
COPY producer producer
RUN pip install ".[parquet]"
ENTRYPOINT ["bulklabel"]
CMD ["--help"]
